//! The error of this crate: every one names the file (plan, sweep folder, cell) and the problem.
use std::path::PathBuf;

use lesion_core::TrainError;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },
    /// A run-folder helper of `lesion-core` refused (its message names the file).
    #[error(transparent)]
    Run(#[from] TrainError),
}

impl SweepError {
    pub fn file(path: impl Into<PathBuf>, problem: impl std::fmt::Display) -> Self {
        SweepError::File { path: path.into(), problem: problem.to_string() }
    }
}

pub type Result<T> = std::result::Result<T, SweepError>;
