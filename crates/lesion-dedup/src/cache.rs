//! Fingerprint cache keyed by the image file's content hash (blake3 hex).
//!
//! Layout: `root/fp-v<VERSION>/<first two hex>/<hash>.thumb`, each file the raw THUMB×THUMB grey
//! thumbnail (hashes are recomputed from it in microseconds). Files are written atomically;
//! an entry of the wrong size is ignored and rebuilt. Invariant: an entry's thumbnail is the
//! one [`Fingerprint::of_image`] computes for any file with that content hash.

use std::path::{Path, PathBuf};

use crate::fingerprint::{Fingerprint, THUMB};

/// Bumped when the thumbnail computation changes.
const CACHE_VERSION: u32 = 1;
/// Shortest content hash accepted as a key.
const MIN_KEY_LEN: usize = 16;

/// A fingerprint cache folder.
#[derive(Debug, Clone)]
pub struct FingerprintCache {
    root: PathBuf,
}

impl FingerprintCache {
    pub fn new(root: &Path) -> FingerprintCache {
        FingerprintCache { root: root.join(format!("fp-v{CACHE_VERSION}")) }
    }

    fn entry(&self, key: &str) -> Option<PathBuf> {
        let ok = key.len() >= MIN_KEY_LEN && key.bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| self.root.join(&key[..2]).join(format!("{key}.thumb")))
    }

    /// The cached fingerprint for `key`, if present and well-formed.
    pub fn get(&self, key: &str) -> Option<Fingerprint> {
        let bytes = std::fs::read(self.entry(key)?).ok()?;
        (bytes.len() == THUMB * THUMB).then(|| Fingerprint::of_thumb(bytes))
    }

    /// Stores a fingerprint (best effort is not enough: errors are returned).
    pub fn put(&self, key: &str, fp: &Fingerprint) -> lesion_data::Result<()> {
        match self.entry(key) {
            Some(p) => lesion_data::io::atomic_write(&p, &fp.thumb),
            None => Ok(()),
        }
    }
}
