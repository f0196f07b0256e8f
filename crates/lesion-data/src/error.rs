//! The crate's one error type.
//!
//! Invariant: every variant that concerns a file carries that file's path, and its
//! `Display` text starts with `"<path>: "` followed by the problem, so that a message
//! shown to a user always says WHICH file is wrong and WHAT is wrong with it.

use std::path::{Path, PathBuf};

/// Errors of the data layer (importers, manifest, cache, synthetic generator).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder that should exist does not.
    #[error("{}: file not found", path.display())]
    Missing { path: PathBuf },

    /// Reading a file or listing a folder failed.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Writing a file (or creating its folder) failed.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file exists but is not a decodable image (corrupt, truncated, unknown format).
    #[error("{}: cannot decode image: {problem}", path.display())]
    Decode { path: PathBuf, problem: String },

    /// Encoding an image (to PNG) failed.
    #[error("{}: cannot encode image: {problem}", path.display())]
    Encode { path: PathBuf, problem: String },

    /// A mask whose size differs from its image's size.
    #[error(
        "{}: size mismatch: mask is {mask_width}x{mask_height} but its image {} is {image_width}x{image_height}",
        mask.display(),
        image.display()
    )]
    SizeMismatch {
        mask: PathBuf,
        image: PathBuf,
        mask_width: u32,
        mask_height: u32,
        image_width: u32,
        image_height: u32,
    },

    /// An image has no mask although masks were required.
    #[error("{}: no mask found for this image (looked in {})", image.display(), looked_in.display())]
    MissingMask { image: PathBuf, looked_in: PathBuf },

    /// Two files give the same sample id.
    #[error("{}: duplicate id {id:?} (already used by {})", path.display(), first.display())]
    DuplicateId { path: PathBuf, id: String, first: PathBuf },

    /// A manifest CSV that cannot be read or written.
    #[error("{}: CSV: {problem}", path.display())]
    Csv { path: PathBuf, problem: String },

    /// A spreadsheet (PH2's table) that cannot be read or understood.
    #[error("{}: spreadsheet: {problem}", path.display())]
    Spreadsheet { path: PathBuf, problem: String },

    /// A dataset folder whose layout is not the one expected.
    #[error("{}: unexpected layout: {problem}", path.display())]
    Layout { path: PathBuf, problem: String },

    /// A file that no longer matches what the manifest records about it (content hash, size).
    #[error("{}: does not match the manifest: {problem}", path.display())]
    Changed { path: PathBuf, problem: String },

    /// Resizing an image failed.
    #[error("{}: cannot resize: {problem}", path.display())]
    Resize { path: PathBuf, problem: String },

    /// A bad argument that concerns no file (e.g. an unknown source name, size 0).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl DataError {
    /// The file this error is about, when there is one (for [`crate::import::BadFile`]).
    pub fn path(&self) -> Option<&Path> {
        match self {
            DataError::Missing { path }
            | DataError::Read { path, .. }
            | DataError::Write { path, .. }
            | DataError::Decode { path, .. }
            | DataError::Encode { path, .. }
            | DataError::DuplicateId { path, .. }
            | DataError::Csv { path, .. }
            | DataError::Spreadsheet { path, .. }
            | DataError::Layout { path, .. }
            | DataError::Resize { path, .. }
            | DataError::Changed { path, .. } => Some(path),
            DataError::SizeMismatch { mask, .. } => Some(mask),
            DataError::MissingMask { image, .. } => Some(image),
            DataError::InvalidArgument(_) => None,
        }
    }

    /// Maps an I/O error while reading `path` to [`DataError::Missing`] or [`DataError::Read`].
    pub fn read(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing { path: path.to_path_buf() }
        } else {
            DataError::Read { path: path.to_path_buf(), source }
        }
    }
}

/// Result with [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;
