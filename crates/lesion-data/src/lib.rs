//! lesion-data: dataset importers (ISIC 2016/2017/2018, PH2, plain folders), the CSV
//! manifest, a resize cache for training inputs, and a seeded synthetic dermoscopy generator.
//!
//! Every error names the file it concerns (see [`DataError`]); every file written goes
//! through [`io::atomic_write`] so that a killed run never leaves a half-written file
//! under a final name.

pub mod cache;
pub mod error;
pub mod import;
pub mod io;
pub mod manifest;
pub mod synth;

pub use error::{DataError, Result};
pub mod labels;
pub mod recod;
pub mod split;
pub mod recipe;
pub mod import_tables;
pub mod audit;
