//! Comparing runs, as the paper's Part 3 compared a hundred models: the leaderboard (one row
//! per run of `seg train`, `cls train`, `cls cv`, `stack svm-head` or sweep cell, with its
//! config difference, internal and external metrics and wall time) and the static HTML
//! report built on it (the Fig. 1 panel of internal vs external AUC, ROC curves with
//! bootstrap bands, DeLong confidence intervals and the paired test, calibration,
//! segmentation failures and every run's learning curves).
//!
//! - [`source`]: recognising run folders, expanding sweep folders, a stack's members;
//! - [`config_diff`]: `config.toml` flattened to dotted keys, the keys that vary;
//! - [`internal`]: what each trainer recorded as its internal metrics;
//! - [`predictions`]: a run's predictions of a manifest, made by the library prediction
//!   functions and cached in the run folder (`external/<hash>/`, `validation/<hash>/`);
//! - [`scores`]: ISIC 2017 scores by the scorer `lesion cls eval` uses, per-image tables;
//! - [`leaderboard`]: the table (markdown, CSV, JSON);
//! - [`report`]: the HTML report (plots by [`svg`], page by [`html`]), statistics from
//!   [`lesion_metrics::stats`].
pub mod config_diff;
pub mod html;
pub mod internal;
pub mod leaderboard;
pub mod predictions;
pub mod report;
pub mod scores;
pub mod source;
pub mod svg;

pub use leaderboard::{
    build as build_leaderboard, Format, Leaderboard, LeaderboardRequest, SortKey,
};
pub use predictions::PredictContext;
pub use report::{write_report, ReportOutcome, ReportRequest};
