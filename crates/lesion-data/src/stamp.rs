//! File stamps: what the preprocessing cache learned about a source file (its blake3 hash and
//! pixel size), kept with the file's identity when it was learned (byte length, modification
//! time and, on Unix, change time, inode and device). While the identity is unchanged the facts
//! are trusted without reading the file (one `stat` and one small read); any change makes the
//! file read and hashed again.
//!
//! Invariant: a stamp is written only for a file whose identity was the same before and after
//! it was read, and whose modification time is older than [`RACY_WINDOW`]: a file modified in
//! the same clock tick as it was stamped could otherwise change again without changing its
//! identity (git's "racy clean" problem). Such a file is simply hashed on every check until it
//! is old enough. Stamps are written atomically; an unreadable or foreign stamp is ignored.

use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::io::{atomic_write, hash_bytes, header_dims, read_bytes};

/// A file modified less than this long ago is not stamped (see the module invariant).
pub const RACY_WINDOW: Duration = Duration::from_secs(2);
/// Bumped when the stamp's content changes meaning.
const STAMP_VERSION: u32 = 1;
/// Hex characters of the path hash used as a stamp's file name (128 bits).
const NAME_HEX_LEN: usize = 32;

/// What is known about a file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFacts {
    /// blake3 hex of the file's bytes.
    pub hash: String,
    /// Pixel size from the image header.
    pub width: u32,
    pub height: u32,
}

/// Where the facts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactsSource {
    /// A stamp whose identity matched: the file was not read.
    Stamp,
    /// The file was read and hashed.
    Hashed,
}

/// A file's identity: any write to it changes at least one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    len: u64,
    mtime_s: i64,
    mtime_ns: u32,
    /// Change time, inode and device (Unix; 0 elsewhere): a write that restores the
    /// modification time (`touch -r`, `cp -p` over the file) still changes the change time.
    ctime_s: i64,
    ctime_ns: u32,
    ino: u64,
    dev: u64,
}

/// Seconds and nanoseconds of `t` relative to the Unix epoch (negative before it).
fn split_time(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            (-i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos())
        }
    }
}

impl Identity {
    fn of(meta: &Metadata) -> Identity {
        let (mtime_s, mtime_ns) = meta.modified().map(split_time).unwrap_or((0, 0));
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Identity {
                len: meta.len(),
                mtime_s,
                mtime_ns,
                ctime_s: meta.ctime(),
                ctime_ns: u32::try_from(meta.ctime_nsec()).unwrap_or(0),
                ino: meta.ino(),
                dev: meta.dev(),
            }
        }
        #[cfg(not(unix))]
        {
            Identity { len: meta.len(), mtime_s, mtime_ns, ctime_s: 0, ctime_ns: 0, ino: 0, dev: 0 }
        }
    }
}

/// One stamp file.
#[derive(Debug, Serialize, Deserialize)]
struct Stamp {
    version: u32,
    /// The absolute path of the stamped file (guards against a foreign stamp).
    path: PathBuf,
    identity: Identity,
    facts: FileFacts,
}

/// Stamps of source files, one small JSON file each under a folder.
#[derive(Debug, Clone)]
pub struct StampStore {
    dir: PathBuf,
}

impl StampStore {
    pub fn new(dir: &Path) -> Self {
        StampStore { dir: dir.to_path_buf() }
    }

    fn stamp_path(&self, abs: &Path) -> PathBuf {
        let hex = blake3::hash(abs.as_os_str().as_encoded_bytes()).to_hex();
        self.dir.join(format!("{}.json", &hex.as_str()[..NAME_HEX_LEN]))
    }

    /// The facts of `path`: from its stamp when the file's identity is unchanged, else read,
    /// hashed and stamped. A missing or unreadable file, or one whose header is not an image,
    /// is an error naming it.
    pub fn facts(&self, path: &Path) -> Result<(FileFacts, FactsSource)> {
        let meta = std::fs::metadata(path).map_err(|e| DataError::read(path, e))?;
        if !meta.is_file() {
            return Err(DataError::Read {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        let identity = Identity::of(&meta);
        let abs = std::path::absolute(path).map_err(|e| DataError::read(path, e))?;
        let stamp_path = self.stamp_path(&abs);
        if let Some(facts) = read_stamp(&stamp_path, &abs, identity) {
            return Ok((facts, FactsSource::Stamp));
        }
        let bytes = read_bytes(path)?;
        let dims = header_dims(path, &bytes)?;
        let facts = FileFacts { hash: hash_bytes(&bytes), width: dims.width, height: dims.height };
        let after = std::fs::metadata(path).map(|m| Identity::of(&m)).ok();
        let old_enough = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age >= RACY_WINDOW);
        if after == Some(identity) && old_enough {
            let stamp = Stamp { version: STAMP_VERSION, path: abs, identity, facts: facts.clone() };
            // Best effort: a stamp only saves work, its absence costs a re-hash.
            match serde_json::to_vec(&stamp) {
                Ok(json) => {
                    if let Err(e) = atomic_write(&stamp_path, &json) {
                        tracing::debug!("stamp not written: {e}");
                    }
                }
                Err(e) => tracing::debug!("stamp not encoded: {e}"),
            }
        }
        Ok((facts, FactsSource::Hashed))
    }
}

/// The facts of a stamp that belongs to `abs` and whose identity is `identity`.
fn read_stamp(stamp_path: &Path, abs: &Path, identity: Identity) -> Option<FileFacts> {
    let bytes = std::fs::read(stamp_path).ok()?;
    let stamp: Stamp = serde_json::from_slice(&bytes).ok()?;
    (stamp.version == STAMP_VERSION && stamp.path == abs && stamp.identity == identity)
        .then_some(stamp.facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, RgbImage};
    use std::fs::File;

    /// Moves a file's modification time out of the racy window.
    fn age(path: &Path) {
        let old = SystemTime::now() - Duration::from_secs(3600);
        File::options().write(true).open(path).unwrap().set_modified(old).unwrap();
    }

    fn png(path: &Path, w: u32, shade: u8) {
        crate::io::save_png_atomic(
            path,
            &DynamicImage::ImageRgb8(RgbImage::from_pixel(w, 3, image::Rgb([shade; 3]))),
        )
        .unwrap();
    }

    #[test]
    fn unchanged_file_comes_from_its_stamp_and_any_change_is_rehashed() {
        let dir = tempfile::tempdir().unwrap();
        let store = StampStore::new(&dir.path().join("stamps"));
        let f = dir.path().join("a.png");
        png(&f, 5, 10);
        // Fresh file: inside the racy window, hashed and not stamped. Dated an hour ahead so
        // that it stays inside the window however slowly a loaded machine runs the test.
        let fresh = SystemTime::now() + Duration::from_secs(3600);
        File::options().write(true).open(&f).unwrap().set_modified(fresh).unwrap();
        assert_eq!(store.facts(&f).unwrap().1, FactsSource::Hashed);
        assert_eq!(store.facts(&f).unwrap().1, FactsSource::Hashed);
        age(&f);
        let (facts, src) = store.facts(&f).unwrap();
        assert_eq!(src, FactsSource::Hashed);
        assert_eq!((facts.width, facts.height), (5, 3));
        assert_eq!(facts.hash, crate::io::content_hash(&f).unwrap());
        assert_eq!(store.facts(&f).unwrap(), (facts.clone(), FactsSource::Stamp));
        // Same size, content replaced, modification time put back: the change time differs.
        let before = std::fs::metadata(&f).unwrap().modified().unwrap();
        png(&f, 5, 200);
        File::options().write(true).open(&f).unwrap().set_modified(before).unwrap();
        let (again, src) = store.facts(&f).unwrap();
        assert_eq!(src, FactsSource::Hashed);
        assert_ne!(again.hash, facts.hash);
        // Gone: an error naming the file.
        std::fs::remove_file(&f).unwrap();
        let e = store.facts(&f).unwrap_err().to_string();
        assert!(e.contains("a.png") && e.contains("not found"), "{e}");
    }
}
