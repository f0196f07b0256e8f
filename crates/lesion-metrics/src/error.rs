//! Errors of this crate. Every variant names the file or folder involved.

use std::path::PathBuf;

/// Anything that stops an evaluation or the writing of its results.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Writing a result file failed (the message names the file).
    #[error(transparent)]
    Write(#[from] lesion_data::DataError),
    /// A file or folder could not be read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not an image the decoder understands.
    #[error("could not decode image {path}: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    /// The image is not single-channel 8-bit greyscale (PIL mode `L`, or `1`).
    #[error("image {path} is not single-channel (greyscale): decoded as {color}")]
    NotSingleChannel { path: PathBuf, color: String },
    /// The prediction's size differs from its ground truth's.
    #[error(
        "image {prediction} has dimensions {pred_width}x{pred_height} (WxH); \
         expected {truth_width}x{truth_height} like its ground truth {truth}"
    )]
    SizeMismatch {
        prediction: PathBuf,
        truth: PathBuf,
        pred_width: u32,
        pred_height: u32,
        truth_width: u32,
        truth_height: u32,
    },
    /// No image in the prediction folder has a stem containing the truth's id.
    #[error("no matching prediction for ground truth {truth} (looked for '{key}' in file stems under {pred_dir})")]
    NoPrediction { truth: PathBuf, key: String, pred_dir: PathBuf },
    /// Several images in the prediction folder match the truth's id.
    #[error(
        "multiple matching predictions for ground truth {truth} (key '{key}'): {candidates:?}"
    )]
    MultiplePredictions { truth: PathBuf, key: String, candidates: Vec<PathBuf> },
    /// The ground-truth file name yields no image id.
    #[error("cannot derive an image id from ground truth file {path}")]
    UnknownTruthId { path: PathBuf },
    /// The ground-truth folder holds no image.
    #[error("no ground-truth images in {dir}")]
    NoTruthImages { dir: PathBuf },
    /// Writing the per-image CSV failed.
    #[error("CSV error writing {path}: {source}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    /// Serialising the JSON summary failed.
    #[error("JSON error writing {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}
