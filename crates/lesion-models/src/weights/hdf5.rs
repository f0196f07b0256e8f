//! A minimal pure-Rust HDF5 reader for the files h5py writes with `libver='earliest'` (the
//! default, and what Keras 3 uses for `model.weights.h5`), returning every dataset as an `f32`
//! [`NamedArray`] named by its path (`layers/dense/vars/0`).
//!
//! Supported, as in the HDF5 file format specification (version 0/1 structures):
//! * superblock version 0 or 1 (at 0, 512, 1024, … bytes), any offset/length size of 2, 4 or 8;
//! * version-1 object headers, including continuation blocks;
//! * "old-style" groups: a symbol table message → version-1 B-tree (type 0, any level) →
//!   symbol table nodes (`SNOD`), names in the group's local heap;
//! * datasets with a scalar or simple dataspace (version 1 or 2), a little-endian IEEE `f32`/`f64`
//!   or little-endian integer (1, 2, 4, 8 bytes, signed or not) datatype, and a contiguous or
//!   compact layout (layout message version 1–4).
//!
//! Everything else is refused with a [`WeightsError::Hdf5`] naming the object and the problem:
//! chunked or filtered (compressed) storage, external files, big-endian or other datatype classes
//! (strings, compounds, …), shared (committed) datatypes, new-style groups (link messages, what
//! `libver='latest'` writes). Integers are converted to `f32` only when exactly representable
//! (|v| ≤ 2^24); otherwise the read fails rather than silently rounding. Attributes are ignored.
//!
//! The whole file is held in memory (the Keras Xception's is 86 MB); datasets are returned in
//! path order (depth first, members sorted by name, which is the B-tree's order).
use std::collections::HashSet;
use std::path::Path;

use super::{NamedArray, WeightsError};

/// The 8-byte signature that starts a superblock.
const SIGNATURE: [u8; 8] = [0x89, b'H', b'D', b'F', b'\r', b'\n', 0x1a, b'\n'];
/// The superblock may start at 0 or at 512 · 2^k bytes.
const FIRST_USERBLOCK_OFFSET: usize = 512;
/// Prefix of a version-1 object header (version, reserved, message count, reference count,
/// header size, then 4 bytes of alignment padding).
const OBJECT_HEADER_V1_PREFIX: usize = 16;
/// Each header message starts with type (2), size (2), flags (1), reserved (3).
const MESSAGE_PREFIX: usize = 8;
/// Header message types this reader looks at.
const MSG_DATASPACE: u16 = 0x0001;
const MSG_LINK_INFO: u16 = 0x0002;
const MSG_DATATYPE: u16 = 0x0003;
const MSG_LINK: u16 = 0x0006;
const MSG_EXTERNAL_FILES: u16 = 0x0007;
const MSG_LAYOUT: u16 = 0x0008;
const MSG_FILTER_PIPELINE: u16 = 0x000B;
const MSG_CONTINUATION: u16 = 0x0010;
const MSG_SYMBOL_TABLE: u16 = 0x0011;
/// Header message flag: the message is stored elsewhere and shared.
const MSG_FLAG_SHARED: u8 = 0x02;
/// Datatype classes.
const CLASS_FIXED_POINT: u8 = 0;
const CLASS_FLOATING_POINT: u8 = 1;
/// Data layout classes.
const LAYOUT_COMPACT: u8 = 0;
const LAYOUT_CONTIGUOUS: u8 = 1;
const LAYOUT_CHUNKED: u8 = 2;
/// Version-1 B-tree node type of a group (children are symbol table nodes at level 0).
const BTREE_GROUP_NODE: u8 = 0;
/// Groups nest no deeper than this (a guard against a malformed, cyclic file).
const MAX_DEPTH: usize = 64;
/// Largest integer magnitude that converts to `f32` exactly.
const F32_EXACT_INT: i128 = 1 << 24;

/// Reads every dataset of the HDF5 file at `path` (see the module docs for what is supported).
pub fn read_hdf5(path: &Path) -> Result<Vec<NamedArray>, WeightsError> {
    let bytes = std::fs::read(path).map_err(WeightsError::io(path))?;
    read_hdf5_bytes(&bytes, path)
}

/// Member of a Keras 3 `.keras` archive (a zip) that holds the weights.
pub const KERAS_WEIGHTS_MEMBER: &str = "model.weights.h5";

/// Reads the weights of a Keras 3 `.keras` archive: its `model.weights.h5` member (Keras stores
/// it uncompressed, but a deflated one reads as well), decoded by [`read_hdf5_bytes`]. Names
/// are the HDF5 paths (`layers/functional/layers/conv2d/vars/0`).
pub fn read_keras_archive(path: &Path) -> Result<Vec<NamedArray>, WeightsError> {
    let arch = |detail: String| WeightsError::Archive { path: path.to_path_buf(), detail };
    let file = std::fs::File::open(path).map_err(WeightsError::io(path))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| arch(e.to_string()))?;
    let mut member =
        zip.by_name(KERAS_WEIGHTS_MEMBER).map_err(|_| WeightsError::MemberMissing {
            path: path.to_path_buf(),
            member: KERAS_WEIGHTS_MEMBER.into(),
        })?;
    let mut bytes = Vec::with_capacity(usize::try_from(member.size()).unwrap_or(0));
    std::io::Read::read_to_end(&mut member, &mut bytes)
        .map_err(|e| arch(format!("{KERAS_WEIGHTS_MEMBER}: {e}")))?;
    read_hdf5_bytes(&bytes, &path.join(KERAS_WEIGHTS_MEMBER))
}

/// As [`read_hdf5`] from bytes in memory; `origin` names them in errors.
pub fn read_hdf5_bytes(bytes: &[u8], origin: &Path) -> Result<Vec<NamedArray>, WeightsError> {
    let file = H5File::open(bytes, origin)?;
    let mut out = Vec::new();
    let mut visited = HashSet::new();
    file.walk_group(file.root, "", 0, &mut visited, &mut out)?;
    Ok(out)
}

/// An opened file: its bytes and the sizes the superblock declares.
struct H5File<'a> {
    bytes: &'a [u8],
    origin: &'a Path,
    /// Size of addresses ("offsets"), in bytes.
    offset_size: usize,
    /// Size of lengths, in bytes.
    length_size: usize,
    /// Absolute position that addresses are relative to (the superblock's base address).
    base: usize,
    /// Object header address of the root group.
    root: u64,
}

/// A bounds-checked little-endian reader over the file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            format!("truncated: needs {n} bytes at {} (file has {})", self.pos, self.bytes.len())
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn skip(&mut self, n: usize) -> Result<(), String> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(self.uint(2)? as u16)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(self.uint(4)? as u32)
    }
    /// An unsigned little-endian integer of `n` ≤ 8 bytes.
    fn uint(&mut self, n: usize) -> Result<u64, String> {
        let s = self.take(n)?;
        Ok(s.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }
}

/// What one object header holds, as far as this reader cares.
#[derive(Default)]
struct ObjectInfo {
    /// (B-tree address, local heap address) of an old-style group.
    symbol_table: Option<(u64, u64)>,
    /// Dims of the dataspace; `Some(vec![])` for a scalar.
    dims: Option<Vec<u64>>,
    dtype: Option<DType>,
    layout: Option<Layout>,
    /// First unsupported feature seen (reported only if the object turns out to matter).
    unsupported: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DType {
    F32,
    F64,
    /// Little-endian integer of this many bytes.
    Int {
        size: usize,
        signed: bool,
    },
}

impl DType {
    fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::Int { size, .. } => size,
        }
    }
}

enum Layout {
    /// Raw data at this file address (`None`: never written).
    Contiguous(Option<u64>),
    /// Raw data inside the header message.
    Compact(Vec<u8>),
}

impl<'a> H5File<'a> {
    fn open(bytes: &'a [u8], origin: &'a Path) -> Result<Self, WeightsError> {
        let err = |problem: String| WeightsError::Hdf5 {
            path: origin.to_path_buf(),
            object: "superblock".into(),
            problem,
        };
        let mut at = 0usize;
        let start = loop {
            if bytes.get(at..at + SIGNATURE.len()) == Some(&SIGNATURE[..]) {
                break at;
            }
            at = if at == 0 { FIRST_USERBLOCK_OFFSET } else { at * 2 };
            if at >= bytes.len() {
                return Err(err("no HDF5 signature (not an HDF5 file)".into()));
            }
        };
        let mut c = Cursor { bytes, pos: start + SIGNATURE.len() };
        let version = c.u8().map_err(err)?;
        if version > 1 {
            return Err(err(format!(
                "superblock version {version} (written with libver 'v108' or later) is not supported; write the file with h5py's default libver='earliest'"
            )));
        }
        // Free-space, root symbol table and shared header versions, a reserved byte.
        c.skip(4).map_err(err)?;
        let offset_size = usize::from(c.u8().map_err(err)?);
        let length_size = usize::from(c.u8().map_err(err)?);
        if ![2, 4, 8].contains(&offset_size) || ![2, 4, 8].contains(&length_size) {
            return Err(err(format!(
                "unsupported offset/length sizes {offset_size}/{length_size}"
            )));
        }
        // Reserved, group leaf/internal node K, consistency flags.
        c.skip(1 + 2 + 2 + 4).map_err(err)?;
        if version == 1 {
            c.skip(4).map_err(err)?; // indexed storage K + reserved
        }
        let base = c.uint(offset_size).map_err(err)?;
        // Free-space info, end of file, driver info addresses.
        c.skip(3 * offset_size).map_err(err)?;
        // Root group symbol table entry: link name offset, object header address, ….
        c.skip(offset_size).map_err(err)?;
        let root = c.uint(offset_size).map_err(err)?;
        let base = usize::try_from(base).map_err(|_| err(format!("base address {base}")))?;
        Ok(Self { bytes, origin, offset_size, length_size, base, root })
    }

    fn error(&self, object: &str, problem: impl Into<String>) -> WeightsError {
        let object = if object.is_empty() { "/".to_string() } else { object.to_string() };
        WeightsError::Hdf5 { path: self.origin.to_path_buf(), object, problem: problem.into() }
    }

    fn undefined(&self, addr: u64) -> bool {
        addr == u64::MAX >> (64 - 8 * self.offset_size)
    }

    /// A cursor at file address `addr` (relative to the base address).
    fn at(&self, addr: u64) -> Result<Cursor<'a>, String> {
        let pos = usize::try_from(addr)
            .ok()
            .and_then(|a| a.checked_add(self.base))
            .filter(|&p| p <= self.bytes.len())
            .ok_or_else(|| format!("address {addr} is outside the file"))?;
        Ok(Cursor { bytes: self.bytes, pos })
    }

    /// Parses the version-1 object header at `addr`, following continuation blocks.
    fn object_info(&self, addr: u64) -> Result<ObjectInfo, String> {
        let mut c = self.at(addr)?;
        let version = c.u8()?;
        if version != 1 {
            return Err(format!(
                "object header version {version} (only version 1, libver='earliest', is supported)"
            ));
        }
        c.skip(1)?;
        let _messages = c.u16()?;
        let _refcount = c.u32()?;
        let size = c.u32()? as usize;
        let first = addr
            .checked_add(OBJECT_HEADER_V1_PREFIX as u64)
            .ok_or_else(|| "header address overflow".to_string())?;
        let mut blocks = vec![(first, size)];
        let mut info = ObjectInfo::default();
        let mut seen_blocks = HashSet::new();
        while let Some((start, len)) = blocks.pop() {
            if !seen_blocks.insert(start) {
                return Err(format!("continuation block at {start} is referenced twice"));
            }
            let mut c = self.at(start)?;
            let end =
                c.pos.checked_add(len).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
                    format!("header block at {start} of {len} bytes runs past the end of the file")
                })?;
            while c.pos + MESSAGE_PREFIX <= end {
                let kind = c.u16()?;
                let msize = usize::from(c.u16()?);
                let flags = c.u8()?;
                c.skip(3)?;
                if c.pos + msize > end {
                    return Err(format!("message type {kind:#06x} runs past its header block"));
                }
                let body = Cursor { bytes: &self.bytes[..c.pos + msize], pos: c.pos };
                if flags & MSG_FLAG_SHARED != 0
                    && matches!(kind, MSG_DATASPACE | MSG_DATATYPE | MSG_LAYOUT)
                {
                    info.unsupported
                        .get_or_insert(format!("shared (committed) message type {kind:#06x}"));
                } else {
                    self.message(kind, body, &mut info, &mut blocks)?;
                }
                c.skip(msize)?;
            }
        }
        Ok(info)
    }

    fn message(
        &self,
        kind: u16,
        mut c: Cursor<'a>,
        info: &mut ObjectInfo,
        blocks: &mut Vec<(u64, usize)>,
    ) -> Result<(), String> {
        let (o, l) = (self.offset_size, self.length_size);
        match kind {
            MSG_CONTINUATION => {
                let addr = c.uint(o)?;
                let len = usize::try_from(c.uint(l)?).map_err(|e| e.to_string())?;
                blocks.push((addr, len));
            }
            MSG_SYMBOL_TABLE => info.symbol_table = Some((c.uint(o)?, c.uint(o)?)),
            MSG_DATASPACE => info.dims = Some(self.dataspace(c)?),
            MSG_DATATYPE => match datatype(c)? {
                Ok(t) => info.dtype = Some(t),
                Err(why) => {
                    info.unsupported.get_or_insert(why);
                }
            },
            MSG_LAYOUT => match self.layout(c)? {
                Ok(layout) => info.layout = Some(layout),
                Err(why) => {
                    info.unsupported.get_or_insert(why);
                }
            },
            MSG_FILTER_PIPELINE => {
                info.unsupported.get_or_insert("filtered (compressed) storage".into());
            }
            MSG_EXTERNAL_FILES => {
                info.unsupported.get_or_insert("data in external files".into());
            }
            MSG_LINK | MSG_LINK_INFO => {
                info.unsupported.get_or_insert(
                    "new-style group (link messages, libver='latest'); write the file with libver='earliest'"
                        .into(),
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// Dims of a dataspace message (empty for a scalar).
    fn dataspace(&self, mut c: Cursor<'a>) -> Result<Vec<u64>, String> {
        let version = c.u8()?;
        let rank = usize::from(c.u8()?);
        let _flags = c.u8()?;
        match version {
            1 => c.skip(5)?,
            2 => {
                let kind = c.u8()?;
                if kind == 2 {
                    return Err("null dataspace (a dataset without data)".into());
                }
            }
            v => return Err(format!("dataspace message version {v}")),
        }
        (0..rank).map(|_| c.uint(self.length_size)).collect()
    }

    /// A layout message, or the reason it is unsupported.
    fn layout(&self, mut c: Cursor<'a>) -> Result<Result<Layout, String>, String> {
        let version = c.u8()?;
        let (class, compact_len, addr) = match version {
            1 | 2 => {
                let dimensionality = usize::from(c.u8()?);
                let class = c.u8()?;
                c.skip(5)?;
                let addr =
                    if class == LAYOUT_COMPACT { None } else { Some(c.uint(self.offset_size)?) };
                c.skip(4 * dimensionality)?;
                let compact_len =
                    if class == LAYOUT_COMPACT { Some(c.u32()? as usize) } else { None };
                (class, compact_len, addr)
            }
            3 | 4 => {
                let class = c.u8()?;
                match class {
                    LAYOUT_COMPACT => (class, Some(usize::from(c.u16()?)), None),
                    LAYOUT_CONTIGUOUS => (class, None, Some(c.uint(self.offset_size)?)),
                    _ => (class, None, None),
                }
            }
            v => return Ok(Err(format!("data layout message version {v}"))),
        };
        Ok(match class {
            LAYOUT_CONTIGUOUS => Ok(Layout::Contiguous(addr.filter(|&a| !self.undefined(a)))),
            LAYOUT_COMPACT => {
                let n = compact_len.unwrap_or(0);
                Ok(Layout::Compact(c.take(n)?.to_vec()))
            }
            LAYOUT_CHUNKED => {
                Err("chunked storage (only contiguous or compact is supported)".into())
            }
            other => Err(format!("data layout class {other}")),
        })
    }

    /// Appends the datasets under the group whose header is at `addr` (path `prefix`).
    fn walk_group(
        &self,
        addr: u64,
        prefix: &str,
        depth: usize,
        visited: &mut HashSet<u64>,
        out: &mut Vec<NamedArray>,
    ) -> Result<(), WeightsError> {
        if depth > MAX_DEPTH || !visited.insert(addr) {
            return Err(self.error(prefix, "group nesting too deep or cyclic"));
        }
        let info = self.object_info(addr).map_err(|p| self.error(prefix, p))?;
        let Some((btree, heap)) = info.symbol_table else {
            let why = info.unsupported.unwrap_or_else(|| "not a group (no symbol table)".into());
            return Err(self.error(prefix, why));
        };
        let heap_data = self.local_heap(heap).map_err(|p| self.error(prefix, p))?;
        let mut entries = Vec::new();
        self.btree_entries(btree, &mut entries, 0).map_err(|p| self.error(prefix, p))?;
        for (name_offset, header) in entries {
            let name =
                heap_name(self.bytes, heap_data, name_offset).map_err(|p| self.error(prefix, p))?;
            let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let child = self.object_info(header).map_err(|p| self.error(&path, p))?;
            if child.symbol_table.is_some() {
                self.walk_group(header, &path, depth + 1, visited, out)?;
            } else {
                out.push(self.dataset(&path, child)?);
            }
        }
        Ok(())
    }

    /// Start of the data segment of the local heap at `addr`.
    fn local_heap(&self, addr: u64) -> Result<usize, String> {
        let mut c = self.at(addr)?;
        if c.take(4)? != b"HEAP" {
            return Err(format!("no local heap at {addr}"));
        }
        c.skip(4)?; // version, reserved
        c.skip(2 * self.length_size)?; // data segment size, free list head
        let data = c.uint(self.offset_size)?;
        Ok(self.at(data)?.pos)
    }

    /// Collects (name offset, object header address) of every symbol under the group B-tree
    /// node at `addr`, in key order.
    fn btree_entries(
        &self,
        addr: u64,
        out: &mut Vec<(u64, u64)>,
        depth: usize,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("B-tree too deep (cyclic?)".into());
        }
        let (o, l) = (self.offset_size, self.length_size);
        let mut c = self.at(addr)?;
        if c.take(4)? != b"TREE" {
            return Err(format!("no B-tree node at {addr}"));
        }
        let node_type = c.u8()?;
        if node_type != BTREE_GROUP_NODE {
            return Err(format!("B-tree node type {node_type} where a group node was expected"));
        }
        let level = c.u8()?;
        let used = c.u16()?;
        c.skip(2 * o)?; // siblings
        for _ in 0..used {
            c.skip(l)?; // key (heap offset of a name)
            let child = c.uint(o)?;
            if level > 0 {
                self.btree_entries(child, out, depth + 1)?;
            } else {
                self.symbol_node(child, out)?;
            }
        }
        Ok(())
    }

    fn symbol_node(&self, addr: u64, out: &mut Vec<(u64, u64)>) -> Result<(), String> {
        let o = self.offset_size;
        let mut c = self.at(addr)?;
        if c.take(4)? != b"SNOD" {
            return Err(format!("no symbol table node at {addr}"));
        }
        c.skip(2)?; // version, reserved
        let n = c.u16()?;
        for _ in 0..n {
            let name = c.uint(o)?;
            let header = c.uint(o)?;
            c.skip(4 + 4 + 16)?; // cache type, reserved, scratch pad
            out.push((name, header));
        }
        Ok(())
    }

    fn dataset(&self, path: &str, info: ObjectInfo) -> Result<NamedArray, WeightsError> {
        if let Some(why) = info.unsupported {
            return Err(self.error(path, why));
        }
        let (Some(dims), Some(dtype), Some(layout)) = (info.dims, info.dtype, info.layout) else {
            return Err(self
                .error(path, "neither a group nor a dataset (no dataspace, datatype or layout)"));
        };
        let dims_i64 = dims
            .iter()
            .map(|&d| i64::try_from(d))
            .collect::<Result<Vec<i64>, _>>()
            .map_err(|_| self.error(path, format!("dims {dims:?} too large")))?;
        let count = NamedArray::element_count(&dims_i64)
            .ok_or_else(|| self.error(path, format!("dims {dims:?} overflow")))?;
        let nbytes = count
            .checked_mul(dtype.size())
            .ok_or_else(|| self.error(path, format!("dims {dims:?} overflow")))?;
        let raw: &[u8] = match &layout {
            Layout::Compact(data) => data,
            Layout::Contiguous(None) if count == 0 => &[],
            Layout::Contiguous(None) => {
                return Err(self.error(path, "storage never written (undefined address)"))
            }
            Layout::Contiguous(Some(addr)) => {
                self.at(*addr).and_then(|mut c| c.take(nbytes)).map_err(|p| self.error(path, p))?
            }
        };
        if raw.len() < nbytes {
            return Err(self.error(path, format!("{} bytes of data; {nbytes} expected", raw.len())));
        }
        let data = decode(&raw[..nbytes], dtype).map_err(|p| self.error(path, p))?;
        Ok(NamedArray { name: path.to_string(), dims: dims_i64, data })
    }
}

/// The NUL-terminated name at `offset` in a local heap's data segment starting at `segment`.
fn heap_name(bytes: &[u8], segment: usize, offset: u64) -> Result<String, String> {
    let start = usize::try_from(offset)
        .ok()
        .and_then(|o| o.checked_add(segment))
        .filter(|&s| s < bytes.len())
        .ok_or_else(|| format!("name offset {offset} is outside the file"))?;
    let len = bytes[start..]
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| format!("unterminated name at heap offset {offset}"))?;
    String::from_utf8(bytes[start..start + len].to_vec())
        .map_err(|_| format!("name at heap offset {offset} is not UTF-8"))
}

/// A datatype message, or the reason it is unsupported (outer error: malformed).
fn datatype(mut c: Cursor<'_>) -> Result<Result<DType, String>, String> {
    let class_version = c.u8()?;
    let class = class_version & 0x0F;
    let bits = c.take(3)?;
    let size = c.u32()? as usize;
    let little_endian = bits[0] & 0x01 == 0;
    Ok(match class {
        CLASS_FIXED_POINT => {
            let signed = bits[0] & 0x08 != 0;
            let offset = c.u16()?;
            let precision = usize::from(c.u16()?);
            if !little_endian {
                Err(format!("big-endian {size}-byte integer"))
            } else if ![1, 2, 4, 8].contains(&size) || offset != 0 || precision != 8 * size {
                Err(format!("integer of {size} bytes with {precision} bits at offset {offset}"))
            } else {
                Ok(DType::Int { size, signed })
            }
        }
        CLASS_FLOATING_POINT => {
            // Byte order: bits 0 and 6 (both clear: little-endian).
            let le = bits[0] & 0x41 == 0;
            let _offset = c.u16()?;
            let precision = usize::from(c.u16()?);
            let _exp_loc = c.u8()?;
            let exp_size = c.u8()?;
            let _mant_loc = c.u8()?;
            let mant_size = c.u8()?;
            let bias = c.u32()?;
            let ieee = |p: usize, e: u8, m: u8, b: u32| {
                precision == p && exp_size == e && mant_size == m && bias == b
            };
            if !le {
                Err(format!("big-endian or VAX {size}-byte float"))
            } else if size == 4 && ieee(32, 8, 23, 127) {
                Ok(DType::F32)
            } else if size == 8 && ieee(64, 11, 52, 1023) {
                Ok(DType::F64)
            } else {
                Err(format!("non-IEEE or {size}-byte float (only f32 and f64 are supported)"))
            }
        }
        other => Err(format!("datatype class {other} (only integers and floats are supported)")),
    })
}

/// Decodes little-endian raw data of `dtype` to `f32`; integers must convert exactly.
fn decode(raw: &[u8], dtype: DType) -> Result<Vec<f32>, String> {
    match dtype {
        DType::F32 => {
            Ok(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        }
        DType::F64 => Ok(raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect()),
        DType::Int { size, signed } => raw
            .chunks_exact(size)
            .map(|b| {
                let u = b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
                let shift = 64 - 8 * size as u32;
                let v: i128 =
                    if signed { i128::from(((u << shift) as i64) >> shift) } else { i128::from(u) };
                if v.abs() > F32_EXACT_INT {
                    Err(format!("integer {v} is not exactly representable as f32"))
                } else {
                    Ok(v as f32)
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_hdf5_is_named() {
        let err = read_hdf5_bytes(&[0u8; 2000], Path::new("x.h5"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("x.h5") && err.contains("no HDF5 signature"), "{err}");
    }

    #[test]
    fn integers_convert_exactly_or_fail() {
        let t = DType::Int { size: 2, signed: true };
        assert_eq!(decode(&[0xff, 0xff, 0x05, 0x00], t), Ok(vec![-1.0, 5.0]));
        let big = (1i64 << 25).to_le_bytes();
        let err = decode(&big, DType::Int { size: 8, signed: true }).err().unwrap_or_default();
        assert!(err.contains("not exactly representable"), "{err}");
    }
}
