//! The one error type of training, prediction and evaluation runs: errors name the file and
//! the problem.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Data(#[from] lesion_data::DataError),
    #[error(transparent)]
    Model(#[from] lesion_models::ModelError),
    #[error(transparent)]
    Metrics(#[from] lesion_metrics::MetricsError),
    #[error(transparent)]
    ClsMetrics(#[from] lesion_metrics::cls::ClsError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// An error of a crate above this one (e.g. the SVM layer's), kept whole.
    #[error(transparent)]
    External(Box<dyn std::error::Error + Send + Sync>),
}

impl TrainError {
    pub fn file(path: impl Into<PathBuf>, problem: impl std::fmt::Display) -> Self {
        TrainError::File { path: path.into(), problem: problem.to_string() }
    }
}

pub type Result<T> = std::result::Result<T, TrainError>;
