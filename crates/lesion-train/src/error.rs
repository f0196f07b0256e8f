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
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Stack(#[from] lesion_stack::StackError),
}

impl TrainError {
    pub fn file(path: impl Into<PathBuf>, problem: impl std::fmt::Display) -> Self {
        TrainError::File { path: path.into(), problem: problem.to_string() }
    }
}

pub type Result<T> = std::result::Result<T, TrainError>;
