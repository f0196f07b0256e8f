//! lesion-data: dataset importers (ISIC 2016/2017/2018, ISIC 2018 Task 3 and ISIC 2019
//! one-hot ground truths, PH2, metadata tables, plain folders), the CSV manifest, the one
//! documented mapping from diagnoses to the ISIC 2017 classes ([`labels`]), a resize cache
//! for training inputs, and a seeded synthetic dermoscopy generator.
//!
//! Every error names the file it concerns (see [`DataError`]); every file written goes
//! through [`io::atomic_write`] so that a killed run never leaves a half-written file
//! under a final name.

pub mod cache;
pub mod error;
pub mod import;
pub mod io;
pub mod manifest;
pub mod mask;
pub mod par;
pub mod stamp;
pub mod synth;

pub use error::{DataError, Result};
pub mod audit;
pub mod import_tables;
pub mod labels;
pub mod recipe;
pub mod recod;
pub mod split;
