//! lesion-dedup: exact and near-duplicate detection for dermoscopy manifests.
//!
//! Pipeline: fingerprint every image ([`fingerprint`], cached by content hash in [`cache`]),
//! find candidate pairs whose perceptual hashes are within a Hamming radius with a
//! multi-index hash ([`search`], sub-quadratic), confirm them with a crop-searching
//! correlation of the thumbnails ([`confirm`]), apply a person's decisions, and join the
//! confirmed pairs into groups by union-find ([`groups`]).

pub mod confirm;
pub mod error;
pub mod fingerprint;

pub use error::{DedupError, Result};
pub mod bench;
pub mod cache;
pub mod check;
pub mod groups;
pub mod pipeline;
pub mod report;
pub mod search;
pub mod transform;
