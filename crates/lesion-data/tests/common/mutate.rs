//! Inputs for the fuzz harnesses (stable toolchain, proptest): arbitrary bytes, and mutations
//! of real small files (bit flips, byte and magic-number overwrites, insertions, removals,
//! truncations), the way a cut download, a bad disk or a hand edit damages a file. Shared by
//! the harnesses of several crates (`#[path]`-included), so each reader is fuzzed the same way.
//!
//! The property every harness checks: a reader returns `Ok` or `Err`, never panics (proptest
//! turns a panic into a failing, shrunk case), and an error is a non-empty message; readers
//! that take a file name must name it. Cases per target: `PROPTEST_CASES` (proptest's default
//! of 256 when unset), so CI runs a bounded harness and a longer run is one variable away.
#![allow(dead_code)]

use std::fmt::Display;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

/// Longest arbitrary input, in bytes.
pub const MAX_ARBITRARY_BYTES: usize = 4096;
/// Most mutations applied to one seed file.
pub const MAX_MUTATIONS: usize = 8;
/// Longest run of bytes one mutation inserts or removes.
pub const MAX_SPAN: usize = 64;
/// Values that break length and count fields: zero, sign bits, all ones, large powers of two.
const MAGIC: [u64; 10] = [
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    0x7FFF_FFFF_FFFF_FFFF,
    u64::MAX,
];

/// One damage done to a file.
#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit {
        at: Index,
        bit: u8,
    },
    SetByte {
        at: Index,
        byte: u8,
    },
    /// Overwrites 1, 2, 4 or 8 bytes (little-endian) with one of [`MAGIC`].
    Magic {
        at: Index,
        magic: Index,
        width: Index,
    },
    Insert {
        at: Index,
        bytes: Vec<u8>,
    },
    Remove {
        at: Index,
        len: usize,
    },
    Truncate {
        at: Index,
    },
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte { at, byte }),
        2 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(at, magic, width)| Mutation::Magic { at, magic, width }),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..MAX_SPAN))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<Index>(), 1..MAX_SPAN).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

/// `seed` with `mutations` applied in order (each on the result of the previous one).
pub fn apply(seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for m in mutations {
        let n = b.len();
        match m {
            Mutation::Insert { at, bytes } => {
                let i = if n == 0 { 0 } else { at.index(n + 1) };
                b.splice(i..i, bytes.iter().copied());
            }
            _ if n == 0 => {}
            Mutation::FlipBit { at, bit } => b[at.index(n)] ^= 1 << bit,
            Mutation::SetByte { at, byte } => b[at.index(n)] = *byte,
            Mutation::Magic { at, magic, width } => {
                let value = MAGIC[magic.index(MAGIC.len())].to_le_bytes();
                let width = [1, 2, 4, 8][width.index(4)];
                let i = at.index(n);
                let end = (i + width).min(n);
                b[i..end].copy_from_slice(&value[..end - i]);
            }
            Mutation::Remove { at, len } => {
                let i = at.index(n);
                b.drain(i..(i + len).min(n));
            }
            Mutation::Truncate { at } => b.truncate(at.index(n)),
        }
    }
    b
}

/// Arbitrary bytes (one case in five) or a mutated copy of one of `seeds`.
pub fn inputs(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(!seeds.is_empty(), "a fuzz target needs at least one seed file");
    let seeds = Arc::new(seeds);
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..MAX_ARBITRARY_BYTES),
        4 => (any::<Index>(), prop::collection::vec(mutation(), 1..MAX_MUTATIONS))
            .prop_map(move |(which, ms)| apply(&seeds[which.index(seeds.len())], &ms)),
    ]
}

/// The harness property on one reader's result: `Ok`, or an error whose message is not blank
/// and (when `names` is given, e.g. the file name) contains it.
pub fn outcome<T, E: Display>(
    what: &str,
    names: Option<&str>,
    result: Result<T, E>,
) -> Result<(), TestCaseError> {
    if let Err(e) = result {
        let message = e.to_string();
        prop_assert!(!message.trim().is_empty(), "{what}: an empty error message");
        if let Some(name) = names {
            prop_assert!(
                message.contains(name),
                "{what}: the error does not name {name}: {message}"
            );
        }
    }
    Ok(())
}
