//! lesion-metrics: the official ISIC scoring definitions.
//!
//! [`seg`] reproduces the segmentation scorer of PyPI
//! `isic-challenge-scoring==5.6.0` (task 1 of ISIC 2017/2018): per-image
//! confusion matrices of masks binarised at `> 128`, six per-image metrics and
//! their macro average. Fixtures under `tests/fixtures/seg/` hold the numbers
//! the real scorer produced; the tests check agreement to 1e-6.
//!
//! [`stats`] holds the statistics of experiment reports: DeLong's AUC variance,
//! CI and paired test, a seeded stratified bootstrap ROC band, reliability
//! diagrams with the ECE, and least-squares regression.

pub mod error;
pub mod seg;
pub mod summary;

pub use error::MetricsError;
pub mod cls;
pub mod stats;
