use std::path::PathBuf;

/// Errors raised while building a network or loading its weights.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("{path}: {problem}")]
    Weights { path: PathBuf, problem: String },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Reader(#[from] crate::weights::WeightsError),
}
