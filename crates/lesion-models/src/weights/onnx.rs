//! Minimal ONNX reader: only `ModelProto.graph.initializer` is decoded.
//!
//! The message structs below mirror `onnx.proto` (field numbers as there);
//! every other field is skipped by prost as unknown. Tensors stored as
//! external data are rejected; tensors of a type other than FLOAT (1) are
//! skipped.

use std::path::Path;

use prost::Message;

use super::WeightsError;

/// `TensorProto.DataType.FLOAT`.
pub const ONNX_FLOAT: i32 = 1;
/// `TensorProto.DataLocation.EXTERNAL`.
const ONNX_EXTERNAL: i32 = 1;
/// Size of one float32 in `raw_data` (little-endian).
const F32_BYTES: usize = 4;

/// `onnx.ModelProto`, reduced to the graph.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
}

/// `onnx.GraphProto`, reduced to its name and initializers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
}

/// `onnx.TensorProto`, the fields needed for float tensors.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

/// A named float32 tensor. Invariant: `data.len()` equals the product of
/// `dims` (1 for a scalar); `data` is row-major (C order) in `dims`' order.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedArray {
    pub name: String,
    pub dims: Vec<i64>,
    pub data: Vec<f32>,
}

impl NamedArray {
    /// Number of elements implied by `dims`, or `None` for a negative dim or overflow.
    pub fn element_count(dims: &[i64]) -> Option<usize> {
        dims.iter()
            .try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
    }
}

/// Reads every float32 initializer of the ONNX model at `path`, in file order.
/// Non-float initializers are skipped. Errors name `path` (and the tensor).
pub fn read_onnx_initializers(path: &Path) -> Result<Vec<NamedArray>, WeightsError> {
    let bytes = std::fs::read(path).map_err(WeightsError::io(path))?;
    initializers_from_bytes(&bytes, path)
}

/// As [`read_onnx_initializers`], from bytes already in memory; `origin` is
/// only used in error messages.
pub fn initializers_from_bytes(
    bytes: &[u8],
    origin: &Path,
) -> Result<Vec<NamedArray>, WeightsError> {
    let model = ModelProto::decode(bytes)
        .map_err(|source| WeightsError::Protobuf { path: origin.to_path_buf(), source })?;
    let graph = model.graph.ok_or_else(|| WeightsError::NoGraph { path: origin.to_path_buf() })?;
    graph
        .initializer
        .into_iter()
        .filter(|t| t.data_type == ONNX_FLOAT)
        .map(|t| tensor_to_array(t, origin))
        .collect()
}

fn tensor_to_array(t: TensorProto, origin: &Path) -> Result<NamedArray, WeightsError> {
    let bad = |problem: String| WeightsError::BadTensor {
        path: origin.to_path_buf(),
        tensor: t.name.clone(),
        problem,
    };
    if t.data_location == ONNX_EXTERNAL {
        return Err(bad("stored as external data (not supported)".into()));
    }
    let count = NamedArray::element_count(&t.dims)
        .ok_or_else(|| bad(format!("invalid dims {:?}", t.dims)))?;
    let data: Vec<f32> = if !t.raw_data.is_empty() {
        if t.raw_data.len() != count * F32_BYTES {
            return Err(bad(format!(
                "raw_data has {} bytes; dims {:?} need {}",
                t.raw_data.len(),
                t.dims,
                count * F32_BYTES
            )));
        }
        t.raw_data
            .chunks_exact(F32_BYTES)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        if t.float_data.len() != count {
            return Err(bad(format!(
                "float_data has {} values; dims {:?} need {}",
                t.float_data.len(),
                t.dims,
                count
            )));
        }
        t.float_data.clone()
    };
    Ok(NamedArray { name: t.name, dims: t.dims, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(tensors: Vec<TensorProto>) -> Vec<u8> {
        ModelProto {
            ir_version: 7,
            producer_name: "test".into(),
            graph: Some(GraphProto { name: "g".into(), initializer: tensors }),
        }
        .encode_to_vec()
    }

    fn tensor(name: &str, dims: Vec<i64>, data_type: i32) -> TensorProto {
        TensorProto {
            dims,
            data_type,
            float_data: vec![],
            name: name.into(),
            raw_data: vec![],
            data_location: 0,
        }
    }

    #[test]
    fn raw_and_float_data_round_trip() {
        let values = [1.5f32, -2.0, 0.25, 3.0, 4.0, -5.5];
        let mut raw = tensor("raw", vec![2, 3], ONNX_FLOAT);
        raw.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut listed = tensor("listed", vec![3], ONNX_FLOAT);
        listed.float_data = vec![7.0, 8.0, 9.0];
        let mut ints = tensor("ints", vec![1], 7);
        ints.raw_data = 5i64.to_le_bytes().to_vec();
        let bytes = model(vec![raw, ints, listed]);
        let got = initializers_from_bytes(&bytes, Path::new("mem.onnx")).expect("decode");
        assert_eq!(got.len(), 2, "int64 tensor must be skipped");
        assert_eq!(got[0].name, "raw");
        assert_eq!(got[0].dims, vec![2, 3]);
        assert_eq!(got[0].data, values.to_vec());
        assert_eq!(got[1].data, vec![7.0, 8.0, 9.0]);
    }

    #[test]
    fn errors_name_file_and_tensor() {
        let mut short = tensor("short", vec![2, 2], ONNX_FLOAT);
        short.raw_data = vec![0; 8];
        let err = initializers_from_bytes(&model(vec![short]), Path::new("x/model.onnx"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("x/model.onnx") && err.contains("short"), "{err}");
        let err = initializers_from_bytes(b"\xff\xff\xff", Path::new("junk.onnx"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("junk.onnx"), "{err}");
        let missing = read_onnx_initializers(Path::new("/nonexistent/m.onnx"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(missing.contains("/nonexistent/m.onnx"), "{missing}");
    }
}
