//! A minimal pickle virtual machine: just the opcodes that `torch.save` emits (protocol 2, as
//! both the legacy and the zip `.pth` formats use, plus the few protocol-4 opcodes that
//! `pickle.dumps(..., protocol=4)` adds), without executing any Python.
//!
//! Why not a crate: `serde-pickle` has no persistent-id support, and the tensors of a `.pth`
//! file are exactly persistent ids (`BINPERSID`) pointing at storages.
//!
//! Globals are never imported. `REDUCE`/`NEWOBJ` build a [`Value::Call`] (callable + args) except
//! for the two callables whose meaning the torch layer needs to see through and that are safe to
//! evaluate here: `collections.OrderedDict()` becomes an empty [`Value::Dict`], and everything
//! else stays a `Call` for the caller to interpret (see `pth.rs`). `BUILD` (setting an object's
//! `__dict__`, e.g. a state dict's `_metadata`) keeps the object and drops the state, because no
//! tensor data ever lives there.

/// A pickled value. Dict keys keep insertion order (an `OrderedDict` state dict relies on it).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    /// Any integer up to 128 bits (the legacy `.pth` magic number needs 80).
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Key/value pairs in insertion order; a later `SETITEM` with an equal key replaces the value.
    Dict(Vec<(Value, Value)>),
    /// A `GLOBAL`/`STACK_GLOBAL` reference, never resolved.
    Global {
        module: String,
        name: String,
    },
    /// `callable(*args)` as recorded by `REDUCE` or `NEWOBJ`, not evaluated.
    Call {
        callable: Box<Value>,
        args: Box<Value>,
    },
    /// The result of the persistent-load callback for a `BINPERSID`/`PERSID` id.
    Persistent(Box<Value>),
}

impl Value {
    /// True when `self` is the global `module.name`.
    pub fn is_global(&self, module: &str, name: &str) -> bool {
        matches!(self, Value::Global { module: m, name: n } if m == module && n == name)
    }

    /// The integer, if this is one that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) => i64::try_from(*v).ok(),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The items of a tuple or a list.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// A short description for error messages (never the whole value: a state dict is large).
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global { .. } => "global",
            Value::Call { .. } => "call",
            Value::Persistent(_) => "persistent id",
        }
    }
}

/// Why a pickle stream could not be run. Positions are byte offsets into the stream given to
/// [`run`]; the caller adds the file name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PickleError {
    #[error("stream ends inside opcode {opcode:#04x} at byte {at}")]
    Truncated { opcode: u8, at: usize },
    #[error("unsupported pickle opcode {opcode:#04x} at byte {at}")]
    UnsupportedOpcode { opcode: u8, at: usize },
    #[error("opcode {opcode:#04x} at byte {at}: {problem}")]
    Malformed { opcode: u8, at: usize, problem: String },
    #[error("stream ends at byte {at} without STOP")]
    NoStop { at: usize },
}

/// Highest pickle protocol whose opcodes are understood (frames of protocol 4 are skipped).
pub const MAX_PROTOCOL: u8 = 5;

mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const BINFLOAT: u8 = b'G';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const PERSID: u8 = b'P';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
}

/// Bytes in a `LONG1`/`LONG4` integer that still fit an `i128`.
const MAX_LONG_BYTES: usize = 16;

/// The result of one pickle: its value and the number of bytes consumed (through `STOP`), so
/// that several pickles written back to back (as the legacy `.pth` format does) can be read in
/// turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Unpickled {
    pub value: Value,
    pub consumed: usize,
}

/// One stack slot: a value or a `MARK`.
#[derive(Debug)]
enum Slot {
    Mark,
    Value(Value),
}

struct Vm<'a, F> {
    data: &'a [u8],
    pos: usize,
    opcode: u8,
    at: usize,
    stack: Vec<Slot>,
    memo: std::collections::HashMap<u64, Value>,
    persistent_load: F,
}

impl<'a, F: FnMut(Value) -> Result<Value, String>> Vm<'a, F> {
    fn malformed(&self, problem: impl Into<String>) -> PickleError {
        PickleError::Malformed { opcode: self.opcode, at: self.at, problem: problem.into() }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or(PickleError::Truncated { opcode: self.opcode, at: self.at })?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len(&self, n: u64) -> Result<usize, PickleError> {
        usize::try_from(n).map_err(|_| self.malformed(format!("length {n} does not fit memory")))
    }

    /// A text line ending in `\n` (for `GLOBAL`), without the newline.
    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated { opcode: self.opcode, at: self.at })?;
        let text =
            String::from_utf8(rest[..n].to_vec()).map_err(|e| self.malformed(e.to_string()))?;
        self.pos += n + 1;
        Ok(text)
    }

    fn utf8(&mut self, n: usize) -> Result<Value, PickleError> {
        let bytes = self.take(n)?.to_vec();
        String::from_utf8(bytes).map(Value::Str).map_err(|e| self.malformed(e.to_string()))
    }

    fn push(&mut self, v: Value) {
        self.stack.push(Slot::Value(v));
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        match self.stack.pop() {
            Some(Slot::Value(v)) => Ok(v),
            Some(Slot::Mark) => Err(self.malformed("expected a value, found MARK")),
            None => Err(self.malformed("stack underflow")),
        }
    }

    fn top(&mut self) -> Result<&mut Value, PickleError> {
        match self.stack.last_mut() {
            Some(Slot::Value(v)) => Ok(v),
            _ => Err(PickleError::Malformed {
                opcode: self.opcode,
                at: self.at,
                problem: "expected a value on top".into(),
            }),
        }
    }

    /// Pops everything above the topmost `MARK` (and the mark), in push order.
    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let mark = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or_else(|| self.malformed("no MARK"))?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .filter_map(|s| if let Slot::Value(v) = s { Some(v) } else { None })
            .collect())
    }

    fn memo_put(&mut self, key: u64) -> Result<(), PickleError> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), PickleError> {
        let v = self
            .memo
            .get(&key)
            .cloned()
            .ok_or_else(|| self.malformed(format!("memo key {key} unset")))?;
        self.push(v);
        Ok(())
    }

    fn set_items(&mut self, pairs: Vec<Value>) -> Result<(), PickleError> {
        if pairs.len() % 2 == 1 {
            return Err(self.malformed("odd number of items for a dict"));
        }
        let target = self.top()?;
        let Value::Dict(entries) = target else {
            let kind = target.kind();
            return Err(self.malformed(format!("SETITEM(S) on a {kind}")));
        };
        let mut it = pairs.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            match entries.iter_mut().find(|(old, _)| *old == k) {
                Some(slot) => slot.1 = v,
                None => entries.push((k, v)),
            }
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        let target = self.top()?;
        match target {
            Value::List(list) => {
                list.extend(items);
                Ok(())
            }
            other => {
                let kind = other.kind();
                Err(self.malformed(format!("APPEND(S) on a {kind}")))
            }
        }
    }

    fn persistent(&mut self, pid: Value) -> Result<(), PickleError> {
        let v = (self.persistent_load)(pid)
            .map_err(|p| self.malformed(format!("persistent load: {p}")))?;
        self.push(Value::Persistent(Box::new(v)));
        Ok(())
    }

    fn long(&mut self, n: usize) -> Result<Value, PickleError> {
        if n > MAX_LONG_BYTES {
            return Err(self.malformed(format!("{n}-byte integer exceeds 128 bits")));
        }
        let bytes = self.take(n)?;
        let mut v: i128 = 0;
        for (i, &b) in bytes.iter().enumerate() {
            v |= i128::from(b) << (8 * i);
        }
        // Sign-extend two's complement when the top byte is negative.
        if n > 0 && n < MAX_LONG_BYTES && bytes[n - 1] & 0x80 != 0 {
            v -= 1i128 << (8 * n);
        }
        Ok(Value::Int(v))
    }

    fn step(&mut self) -> Result<Option<Value>, PickleError> {
        self.at = self.pos;
        self.opcode = self.u8().map_err(|_| PickleError::NoStop { at: self.pos })?;
        match self.opcode {
            op::PROTO => {
                let proto = self.u8()?;
                if proto > MAX_PROTOCOL {
                    return Err(self.malformed(format!("protocol {proto} > {MAX_PROTOCOL}")));
                }
            }
            op::FRAME => {
                self.u64()?;
            }
            op::STOP => return self.pop().map(Some),
            op::MARK => self.stack.push(Slot::Mark),
            op::POP => {
                self.stack.pop();
            }
            op::POP_MARK => {
                self.pop_mark()?;
            }
            op::DUP => {
                let v = self.top()?.clone();
                self.push(v);
            }
            op::NONE => self.push(Value::None),
            op::NEWTRUE => self.push(Value::Bool(true)),
            op::NEWFALSE => self.push(Value::Bool(false)),
            op::BININT => {
                let v = self.u32()? as i32;
                self.push(Value::Int(i128::from(v)));
            }
            op::BININT1 => {
                let v = self.u8()?;
                self.push(Value::Int(i128::from(v)));
            }
            op::BININT2 => {
                let v = self.u16()?;
                self.push(Value::Int(i128::from(v)));
            }
            op::LONG1 => {
                let n = usize::from(self.u8()?);
                let v = self.long(n)?;
                self.push(v);
            }
            op::LONG4 => {
                let n = self.u32()?;
                let n = self.len(u64::from(n))?;
                let v = self.long(n)?;
                self.push(v);
            }
            op::BINFLOAT => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                self.push(Value::Float(f64::from_be_bytes(a)));
            }
            op::BINUNICODE => {
                let n = self.u32()?;
                let n = self.len(u64::from(n))?;
                let v = self.utf8(n)?;
                self.push(v);
            }
            op::SHORT_BINUNICODE => {
                let n = usize::from(self.u8()?);
                let v = self.utf8(n)?;
                self.push(v);
            }
            op::BINUNICODE8 => {
                let n = self.u64()?;
                let n = self.len(n)?;
                let v = self.utf8(n)?;
                self.push(v);
            }
            // Python 2 `str`: bytes; torch keys written by Python 2 are ASCII, so keep them as text
            // when they are valid UTF-8.
            op::BINSTRING | op::SHORT_BINSTRING => {
                let n = if self.opcode == op::BINSTRING {
                    let n = self.u32()?;
                    self.len(u64::from(n))?
                } else {
                    usize::from(self.u8()?)
                };
                let bytes = self.take(n)?.to_vec();
                let v = match String::from_utf8(bytes) {
                    Ok(s) => Value::Str(s),
                    Err(e) => Value::Bytes(e.into_bytes()),
                };
                self.push(v);
            }
            op::SHORT_BINBYTES | op::BINBYTES | op::BINBYTES8 => {
                let n = match self.opcode {
                    op::SHORT_BINBYTES => usize::from(self.u8()?),
                    op::BINBYTES => {
                        let n = self.u32()?;
                        self.len(u64::from(n))?
                    }
                    _ => {
                        let n = self.u64()?;
                        self.len(n)?
                    }
                };
                let bytes = self.take(n)?.to_vec();
                self.push(Value::Bytes(bytes));
            }
            op::EMPTY_TUPLE => self.push(Value::Tuple(Vec::new())),
            op::TUPLE => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(items));
            }
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = usize::from(self.opcode - op::TUPLE1 + 1);
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.push(Value::Tuple(items));
            }
            op::EMPTY_LIST => self.push(Value::List(Vec::new())),
            op::LIST => {
                let items = self.pop_mark()?;
                self.push(Value::List(items));
            }
            op::APPEND => {
                let v = self.pop()?;
                self.append(vec![v])?;
            }
            op::APPENDS => {
                let items = self.pop_mark()?;
                self.append(items)?;
            }
            op::EMPTY_DICT => self.push(Value::Dict(Vec::new())),
            op::DICT => {
                let items = self.pop_mark()?;
                self.push(Value::Dict(Vec::new()));
                self.set_items(items)?;
            }
            op::SETITEM => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])?;
            }
            op::SETITEMS => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
            }
            op::BINPUT => {
                let k = self.u8()?;
                self.memo_put(u64::from(k))?;
            }
            op::LONG_BINPUT => {
                let k = self.u32()?;
                self.memo_put(u64::from(k))?;
            }
            op::MEMOIZE => {
                let k = self.memo.len() as u64;
                self.memo_put(k)?;
            }
            op::BINGET => {
                let k = self.u8()?;
                self.memo_get(u64::from(k))?;
            }
            op::LONG_BINGET => {
                let k = self.u32()?;
                self.memo_get(u64::from(k))?;
            }
            op::GLOBAL => {
                let module = self.line()?;
                let name = self.line()?;
                self.push(Value::Global { module, name });
            }
            op::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Value::Str(module), Value::Str(name)) => {
                        self.push(Value::Global { module, name })
                    }
                    _ => return Err(self.malformed("STACK_GLOBAL needs two strings")),
                }
            }
            op::REDUCE | op::NEWOBJ => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let is_empty_args = matches!(&args, Value::Tuple(a) if a.is_empty());
                let v = if callable.is_global("collections", "OrderedDict") && is_empty_args {
                    Value::Dict(Vec::new())
                } else {
                    Value::Call { callable: Box::new(callable), args: Box::new(args) }
                };
                self.push(v);
            }
            op::BUILD => {
                // The state (an object's __dict__, e.g. a state dict's `_metadata`) holds no tensors.
                self.pop()?;
                self.top()?;
            }
            op::BINPERSID => {
                let pid = self.pop()?;
                self.persistent(pid)?;
            }
            op::PERSID => {
                let pid = self.line()?;
                self.persistent(Value::Str(pid))?;
            }
            other => return Err(PickleError::UnsupportedOpcode { opcode: other, at: self.at }),
        }
        Ok(None)
    }
}

/// Runs one pickle from the start of `data` up to its `STOP`. Each persistent id is passed to
/// `persistent_load`, whose result is wrapped in [`Value::Persistent`]; an `Err(text)` from it
/// aborts the run.
pub fn run<F>(data: &[u8], persistent_load: F) -> Result<Unpickled, PickleError>
where
    F: FnMut(Value) -> Result<Value, String>,
{
    let mut vm = Vm {
        data,
        pos: 0,
        opcode: 0,
        at: 0,
        stack: Vec::new(),
        memo: Default::default(),
        persistent_load,
    };
    loop {
        if let Some(value) = vm.step()? {
            return Ok(Unpickled { value, consumed: vm.pos });
        }
    }
}

/// [`run`] for pickles without persistent ids (any id is an error).
pub fn run_plain(data: &[u8]) -> Result<Unpickled, PickleError> {
    run(data, |pid| Err(format!("unexpected persistent id ({})", pid.kind())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pickle.dumps(OrderedDict(a=1, b=[2.5, None, True]), protocol=2)` by hand:
    #[test]
    fn ordered_dict_with_list() {
        let mut p = vec![0x80, 2];
        p.extend(b"ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00b]q\x02(G");
        p.extend(2.5f64.to_be_bytes());
        p.extend(b"N\x88eu.");
        let got = run_plain(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.consumed, p.len());
        let want = Value::Dict(vec![
            (Value::Str("a".into()), Value::Int(1)),
            (
                Value::Str("b".into()),
                Value::List(vec![Value::Float(2.5), Value::None, Value::Bool(true)]),
            ),
        ]);
        assert_eq!(got.value, want);
    }

    /// The legacy `.pth` magic number: `LONG1` of 10 bytes.
    #[test]
    fn long1_magic_and_negative() {
        let magic: i128 = 0x1950a86a20f9469cfc6c;
        let mut p = vec![0x80, 2, op::LONG1, 10];
        p.extend(&magic.to_le_bytes()[..10]);
        p.push(op::STOP);
        assert_eq!(run_plain(&p).map(|u| u.value), Ok(Value::Int(magic)));
        let p = [op::LONG1, 1, 0xff, op::STOP];
        assert_eq!(run_plain(&p).map(|u| u.value), Ok(Value::Int(-1)));
        let p = [op::BININT, 0xfe, 0xff, 0xff, 0xff, op::STOP];
        assert_eq!(run_plain(&p).map(|u| u.value), Ok(Value::Int(-2)));
    }

    #[test]
    fn persistent_ids_reach_the_callback() {
        let p = b"(X\x01\x00\x00\x00kK\x07tQ.";
        let got = run(p, |pid| {
            let items = pid.as_seq().map(<[Value]>::to_vec).unwrap_or_default();
            Ok(Value::Int(items.len() as i128))
        });
        assert_eq!(got.map(|u| u.value), Ok(Value::Persistent(Box::new(Value::Int(2)))));
    }

    #[test]
    fn errors_say_where() {
        assert!(matches!(
            run_plain(&[0x80, 2, 0xff]),
            Err(PickleError::UnsupportedOpcode { opcode: 0xff, at: 2 })
        ));
        assert!(matches!(run_plain(&[op::BININT2, 1]), Err(PickleError::Truncated { at: 0, .. })));
        assert!(matches!(run_plain(&[op::NONE]), Err(PickleError::NoStop { at: 1 })));
        assert!(matches!(
            run_plain(&[op::BINGET, 3, op::STOP]),
            Err(PickleError::Malformed { .. })
        ));
    }
}
