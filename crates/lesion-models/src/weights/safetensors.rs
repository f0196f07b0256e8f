//! Safetensors files as `f32` [`NamedArray`]s (pure Rust, via the `safetensors` crate).
//!
//! Floating tensors (F32, F64, F16, BF16) are converted to `f32`; integer and bool tensors are
//! left out, for the same reason as in [`super::pth::StateDict::float_arrays`]: they are
//! bookkeeping (step counters), not weights. Names are returned sorted, for a deterministic order
//! (safetensors headers are JSON objects and carry no order).

use std::path::{Path, PathBuf};

use super::onnx::NamedArray;
use super::pth::{bf16_to_f32, f16_to_f32};

/// Failure to read a safetensors file; names the file.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsReadError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid safetensors file: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

/// Reads every floating tensor of the file at `path` as `f32`, sorted by name.
pub fn read_safetensors_f32(path: &Path) -> Result<Vec<NamedArray>, SafetensorsReadError> {
    let bytes = std::fs::read(path)
        .map_err(|source| SafetensorsReadError::Io { path: path.to_path_buf(), source })?;
    safetensors_bytes_f32(&bytes, path)
}

/// As [`read_safetensors_f32`] from bytes in memory; `origin` names them in errors.
pub fn safetensors_bytes_f32(
    bytes: &[u8],
    origin: &Path,
) -> Result<Vec<NamedArray>, SafetensorsReadError> {
    use ::safetensors::Dtype;
    let invalid =
        |detail: String| SafetensorsReadError::Invalid { path: origin.to_path_buf(), detail };
    let st = ::safetensors::SafeTensors::deserialize(bytes).map_err(|e| invalid(e.to_string()))?;
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let view = st.tensor(&name).map_err(|e| invalid(format!("{name}: {e}")))?;
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => {
                raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            Dtype::F16 => {
                raw.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()
            }
            Dtype::BF16 => {
                raw.chunks_exact(2).map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()
            }
            _ => continue,
        };
        let dims = view
            .shape()
            .iter()
            .map(|&d| i64::try_from(d).map_err(|_| invalid(format!("{name}: dim {d} too large"))))
            .collect::<Result<_, _>>()?;
        out.push(NamedArray { name, dims, data });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_vgg16_writer() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("t.safetensors");
        let arrays = vec![
            NamedArray { name: "b".into(), dims: vec![2], data: vec![1.5, -2.0] },
            NamedArray { name: "a".into(), dims: vec![1, 3], data: vec![0.0, 1.0, 2.0] },
        ];
        super::super::vgg16::write_safetensors(&arrays, &path).unwrap_or_else(|e| panic!("{e}"));
        let got = read_safetensors_f32(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, vec![arrays[1].clone(), arrays[0].clone()]);
        let err = safetensors_bytes_f32(b"junk", Path::new("junk.safetensors"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("junk.safetensors"), "{err}");
    }
}
