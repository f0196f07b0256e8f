//! The crate's error type. Invariant: variants about a file carry its path and their text
//! starts with `"<path>: "`.

use std::path::PathBuf;

/// Errors of duplicate detection.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// Reading, decoding or writing through the data layer failed (its message names the file).
    #[error(transparent)]
    Data(#[from] lesion_data::DataError),

    /// A table (decisions, groups) that cannot be read.
    #[error("{}: line {line}: {problem}", path.display())]
    Table { path: PathBuf, line: usize, problem: String },

    /// A cache entry that is corrupt (it is rebuilt; this is reported only when rebuilding fails).
    #[error("{}: corrupt cache entry: {problem}", path.display())]
    Cache { path: PathBuf, problem: String },

    /// A bad argument that concerns no file.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Result with [`DedupError`].
pub type Result<T> = std::result::Result<T, DedupError>;
