//! Preprocessing cache: every sample resized once to `size`×`size` and stored as PNG.
//!
//! Layout: `root/<key>_<size>_<method>/image.png` and `.../mask.png`, where `<key>` is derived
//! from the source image's content hash and (when there is one) the mask file's content hash.
//! Images are resized with Catmull-Rom (cubic) or bilinear filtering; masks always bilinear,
//! then re-thresholded at [`crate::io::MASK_THRESHOLD`] to {0, 255}, as the RECOD Titans paper did.
//!
//! Crash safety: each PNG is written with [`atomic_write`], so a file under its final name is
//! always complete; temp files (which carry [`crate::io::TMP_MARKER`]) are never read. An entry
//! is valid only when every file it needs exists, decodes and has the right size; otherwise it
//! is rebuilt.
//!
//! The manifest is not trusted: before any entry is used, every row's files are checked
//! ([`PreprocessCache::check_row`]): the image must exist and hash to the row's `content_hash`
//! and have the row's size, the mask must exist and have the image's size. The check is cheap
//! on a warm cache: the hash and size of each file are kept in a stamp
//! ([`crate::stamp`], under `root/stamps/`) with the file's length, modification and change
//! times, so an unchanged file costs one `stat`; a changed or unstamped file is hashed again.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, GrayImage, RgbImage};
use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::import::progress_bar;
use crate::io::{binarize_mask, load_rgb, save_png_atomic};
use crate::manifest::ManifestRow;
use crate::mask::{load_mask_as, MaskLevels};
use crate::par::CollectInOrder;
use crate::stamp::{FactsSource, StampStore};

/// Environment variable overriding the cache root.
pub const CACHE_ENV: &str = "LESION_CACHE";
/// Cache root used when [`CACHE_ENV`] is unset (relative to the working directory).
pub const DEFAULT_CACHE_DIR: &str = ".cache/lesion";
/// File names inside an entry folder.
const IMAGE_FILE: &str = "image.png";
const MASK_FILE: &str = "mask.png";
/// Folder of the source files' stamps under the cache root.
const STAMPS_DIR: &str = "stamps";
/// Bumped when the cached content changes meaning (resizing code, thresholds). v2: masks are
/// checked for levels that binarise to empty (v1 entries may hold such empty masks).
const CACHE_FORMAT_VERSION: u32 = 2;
/// Hex characters of a hash quoted in a message.
const QUOTED_HASH_LEN: usize = 16;
/// Hex characters of the combined key kept in folder names (128 bits).
const KEY_HEX_LEN: usize = 32;

/// Image resampling filter: the one resize type, also the `resize` key of the training
/// configs (`"cubic"` | `"bilinear"`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeMethod {
    /// Catmull-Rom cubic (the default for images).
    #[default]
    Cubic,
    Bilinear,
}

impl ResizeMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ResizeMethod::Cubic => "cubic",
            ResizeMethod::Bilinear => "bilinear",
        }
    }

    fn filter(self) -> FilterType {
        match self {
            ResizeMethod::Cubic => FilterType::CatmullRom,
            ResizeMethod::Bilinear => FilterType::Bilinear,
        }
    }
}

impl fmt::Display for ResizeMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResizeMethod {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cubic" | "catmull-rom" | "catmullrom" => Ok(ResizeMethod::Cubic),
            "bilinear" => Ok(ResizeMethod::Bilinear),
            other => Err(DataError::InvalidArgument(format!(
                "unknown resize method {other:?} (expected cubic or bilinear)"
            ))),
        }
    }
}

/// Identity of one cache entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// blake3 hex of the source image file.
    pub image_hash: String,
    /// blake3 hex of the source mask file, when the sample has a mask.
    pub mask_hash: Option<String>,
    /// How the mask's grey levels mean lesion.
    pub mask_levels: MaskLevels,
    pub size: u32,
    pub method: ResizeMethod,
}

impl CacheKey {
    /// Folder name of the entry: `<key>_<size>_<method>`.
    pub fn dir_name(&self) -> String {
        let levels = match self.mask_levels {
            MaskLevels::Grey => "",
            MaskLevels::ZeroOne => "|levels:0/1",
        };
        let material = format!(
            "lesion-cache-v{CACHE_FORMAT_VERSION}|image:{}|mask:{}{levels}",
            self.image_hash,
            self.mask_hash.as_deref().unwrap_or("-")
        );
        let hex = blake3::hash(material.as_bytes()).to_hex();
        let short = &hex.as_str()[..KEY_HEX_LEN];
        format!("{short}_{}_{}", self.size, self.method)
    }
}

/// One sample ready for training: `image` is size×size RGB; `mask` size×size in {0, 255}.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedSample {
    pub id: String,
    pub image: RgbImage,
    pub mask: Option<GrayImage>,
}

/// How many entries were reused and how many built, and how many source files the check
/// had to read and hash (the others matched their stamps).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: usize,
    pub misses: usize,
    pub hashed: usize,
}

/// A manifest row whose files were checked against it ([`PreprocessCache::check_row`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRow {
    /// blake3 hex of the mask file, when the row has a mask.
    pub mask_hash: Option<String>,
    pub mask_levels: MaskLevels,
    /// Files read and hashed by the check (0, 1 or 2).
    pub hashed: usize,
}

/// Samples (in input order) plus cache statistics.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub samples: Vec<PreparedSample>,
    pub stats: CacheStats,
}

/// The resize cache rooted at a folder.
#[derive(Debug, Clone)]
pub struct PreprocessCache {
    root: PathBuf,
    stamps: StampStore,
}

fn short(hash: &str) -> &str {
    hash.get(..QUOTED_HASH_LEN).unwrap_or(hash)
}

fn changed(path: &Path, problem: String) -> DataError {
    DataError::Changed { path: path.to_path_buf(), problem }
}

impl PreprocessCache {
    pub fn new(root: &Path) -> Self {
        PreprocessCache {
            root: root.to_path_buf(),
            stamps: StampStore::new(&root.join(STAMPS_DIR)),
        }
    }

    /// `$LESION_CACHE` if set and non-empty, else `./.cache/lesion`.
    pub fn default_root() -> PathBuf {
        match std::env::var_os(CACHE_ENV) {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => PathBuf::from(DEFAULT_CACHE_DIR),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Checks that a row's files still are what the manifest says: the image exists, hashes to
    /// `content_hash` and has the row's size; the mask (if any) exists, has the image's size and
    /// valid levels metadata. Unchanged files are judged by their stamps (one `stat` each);
    /// others are read and hashed. A row without a content hash (a manifest not written by an
    /// importer that read the images, e.g. `lesion data recod` without them) is an error: all
    /// such rows would share one entry and silently train on one image.
    pub fn check_row(&self, row: &ManifestRow) -> Result<CheckedRow> {
        if row.content_hash.is_empty() {
            return Err(DataError::InvalidArgument(format!(
                "manifest row {:?} ({}) has no content_hash: the manifest was written without reading its images (e.g. `lesion data recod` without --images); recreate it with the images present",
                row.id,
                row.image_path.display()
            )));
        }
        let reimport = "the file was replaced or edited after the manifest was written, or the manifest was edited: import the data again";
        let (image, image_src) = self.stamps.facts(&row.image_path)?;
        let mut hashed = usize::from(image_src == FactsSource::Hashed);
        if image.hash != row.content_hash {
            return Err(changed(
                &row.image_path,
                format!(
                    "its content hash is {}… but manifest row {:?} records {}…; {reimport}",
                    short(&image.hash),
                    row.id,
                    short(&row.content_hash)
                ),
            ));
        }
        if (image.width, image.height) != (row.width, row.height) {
            return Err(changed(
                &row.image_path,
                format!(
                    "the image is {}x{} but manifest row {:?} says {}x{}; {reimport}",
                    image.width, image.height, row.id, row.width, row.height
                ),
            ));
        }
        let mask_levels = MaskLevels::of_row(row)?;
        let mask_hash = match &row.mask_path {
            Some(m) => {
                let (mask, src) = self.stamps.facts(m)?;
                hashed += usize::from(src == FactsSource::Hashed);
                if (mask.width, mask.height) != (image.width, image.height) {
                    return Err(DataError::SizeMismatch {
                        mask: m.clone(),
                        image: row.image_path.clone(),
                        mask_width: mask.width,
                        mask_height: mask.height,
                        image_width: image.width,
                        image_height: image.height,
                    });
                }
                Some(mask.hash)
            }
            None => None,
        };
        Ok(CheckedRow { mask_hash, mask_levels, hashed })
    }

    /// The key of a row, after [`PreprocessCache::check_row`].
    pub fn key_for(&self, row: &ManifestRow, size: u32, method: ResizeMethod) -> Result<CacheKey> {
        Ok(self.key_of(row, self.check_row(row)?, size, method))
    }

    fn key_of(
        &self,
        row: &ManifestRow,
        checked: CheckedRow,
        size: u32,
        method: ResizeMethod,
    ) -> CacheKey {
        CacheKey {
            image_hash: row.content_hash.clone(),
            mask_hash: checked.mask_hash,
            mask_levels: checked.mask_levels,
            size,
            method,
        }
    }

    /// Checks every row ([`PreprocessCache::check_row`], in parallel) before any is used; the
    /// first failing row (in row order) is the error, and how many others fail is logged.
    pub fn check_rows(&self, rows: &[ManifestRow]) -> Result<Vec<CheckedRow>> {
        let t0 = std::time::Instant::now();
        let results: Vec<Result<CheckedRow>> = rows.par_iter().map(|r| self.check_row(r)).collect();
        let failing = results.iter().filter(|r| r.is_err()).count();
        let mut checked = Vec::with_capacity(rows.len());
        for r in results {
            match r {
                Ok(c) => checked.push(c),
                Err(e) => {
                    if failing > 1 {
                        tracing::error!(
                            "{failing} of {} manifest rows fail the file check; the first is reported",
                            rows.len()
                        );
                    }
                    return Err(e);
                }
            }
        }
        let hashed: usize = checked.iter().map(|c| c.hashed).sum();
        tracing::debug!(
            rows = rows.len(),
            hashed,
            ms = t0.elapsed().as_millis() as u64,
            "manifest files checked"
        );
        Ok(checked)
    }

    /// Folder of an entry.
    pub fn entry_dir(&self, key: &CacheKey) -> PathBuf {
        self.root.join(key.dir_name())
    }

    /// Resized samples for `rows`, in the same order; see [`PreprocessCache::prepare_with_stats`].
    pub fn prepare(
        &self,
        rows: &[ManifestRow],
        size: u32,
        method: ResizeMethod,
        progress: bool,
    ) -> Result<Vec<PreparedSample>> {
        Ok(self.prepare_with_stats(rows, size, method, progress)?.samples)
    }

    /// Like [`PreprocessCache::prepare`], also saying how many entries were reused.
    /// Runs in parallel (rayon); the first error (in row order) is returned.
    pub fn prepare_with_stats(
        &self,
        rows: &[ManifestRow],
        size: u32,
        method: ResizeMethod,
        progress: bool,
    ) -> Result<Prepared> {
        if size == 0 {
            return Err(DataError::InvalidArgument("cache size must be > 0".into()));
        }
        let checked = self.check_rows(rows)?;
        let hashed = checked.iter().map(|c| c.hashed).sum();
        let hits = AtomicUsize::new(0);
        let pb = progress_bar(rows.len(), &format!("preparing {size}px"), progress);
        let samples: Result<Vec<PreparedSample>> = rows
            .par_iter()
            .zip(checked)
            .map(|(row, checked)| {
                let key = self.key_of(row, checked, size, method);
                let r = self.prepare_one(row, key, size, method);
                if let Ok((_, true)) = &r {
                    hits.fetch_add(1, Ordering::Relaxed);
                }
                pb.inc(1);
                r.map(|(s, _)| s)
            })
            .collect_in_order();
        pb.finish_and_clear();
        let samples = samples?;
        let hits = hits.into_inner();
        let stats = CacheStats { hits, misses: samples.len() - hits, hashed };
        tracing::debug!(hits = stats.hits, misses = stats.misses, root = %self.root.display(), "cache prepare");
        Ok(Prepared { samples, stats })
    }

    /// One sample of a checked row; the flag says whether it came from the cache.
    fn prepare_one(
        &self,
        row: &ManifestRow,
        key: CacheKey,
        size: u32,
        method: ResizeMethod,
    ) -> Result<(PreparedSample, bool)> {
        let dir = self.entry_dir(&key);
        let image_path = dir.join(IMAGE_FILE);
        let mask_path = dir.join(MASK_FILE);
        if let Some(sample) = read_entry(row, size, &image_path, &mask_path) {
            return Ok((sample, true));
        }
        let image = resize_rgb(&row.image_path, &load_rgb(&row.image_path)?, size, method)?;
        let mask = match &row.mask_path {
            Some(mp) => Some(resize_mask(mp, &load_mask_as(mp, key.mask_levels)?, size)?),
            None => None,
        };
        // The mask first, the image last: the image file is what makes an entry look present.
        if let Some(m) = &mask {
            save_png_atomic(&mask_path, &DynamicImage::ImageLuma8(m.clone()))?;
        }
        save_png_atomic(&image_path, &DynamicImage::ImageRgb8(image.clone()))?;
        Ok((PreparedSample { id: row.id.clone(), image, mask }, false))
    }
}

/// A cached entry if it is complete and sane; `None` means "rebuild it".
fn read_entry(
    row: &ManifestRow,
    size: u32,
    image_path: &Path,
    mask_path: &Path,
) -> Option<PreparedSample> {
    if !image_path.is_file() {
        return None;
    }
    let image = match load_rgb(image_path) {
        Ok(i) if i.dimensions() == (size, size) => i,
        Ok(_) | Err(_) => {
            tracing::warn!("{}: unusable cache entry, rebuilding", image_path.display());
            return None;
        }
    };
    let mask = if row.mask_path.is_some() {
        match crate::io::load_mask(mask_path) {
            Ok(m) if m.dimensions() == (size, size) => Some(m),
            Ok(_) | Err(_) => {
                tracing::warn!("{}: unusable cache entry, rebuilding", mask_path.display());
                return None;
            }
        }
    } else {
        None
    };
    Some(PreparedSample { id: row.id.clone(), image, mask })
}

fn resize_error(path: &Path, e: impl fmt::Display) -> DataError {
    DataError::Resize { path: path.to_path_buf(), problem: e.to_string() }
}

/// Resizes an RGB image to size×size (aspect ratio not kept, as in the paper).
pub fn resize_rgb(
    path: &Path,
    src: &RgbImage,
    size: u32,
    method: ResizeMethod,
) -> Result<RgbImage> {
    let mut dst = RgbImage::new(size, size);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(method.filter()));
    Resizer::new().resize(src, &mut dst, &options).map_err(|e| resize_error(path, e))?;
    Ok(dst)
}

/// Resizes a mask to size×size bilinearly, then re-thresholds at [`crate::io::MASK_THRESHOLD`] to {0, 255}.
pub fn resize_mask(path: &Path, src: &GrayImage, size: u32) -> Result<GrayImage> {
    let mut dst = GrayImage::new(size, size);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new().resize(src, &mut dst, &options).map_err(|e| resize_error(path, e))?;
    binarize_mask(&mut dst);
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{content_hash, save_png_atomic};
    use image::{Luma, Rgb};
    use std::time::SystemTime;

    fn make_row(dir: &Path, id: &str, w: u32, h: u32, with_mask: bool) -> ManifestRow {
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x * 3) as u8, (y * 2) as u8, 77]));
        let ip = dir.join(format!("{id}.png"));
        save_png_atomic(&ip, &DynamicImage::ImageRgb8(img)).unwrap();
        let mp = with_mask.then(|| {
            let m = GrayImage::from_fn(w, h, |x, _| Luma([if x < w / 2 { 255 } else { 0 }]));
            let mp = dir.join(format!("{id}_segmentation.png"));
            save_png_atomic(&mp, &DynamicImage::ImageLuma8(m)).unwrap();
            mp
        });
        ManifestRow {
            id: id.into(),
            source: "folder".into(),
            content_hash: content_hash(&ip).unwrap(),
            image_path: ip,
            mask_path: mp,
            width: w,
            height: h,
            diagnosis: None,
            group: None,
            meta: Default::default(),
        }
    }

    /// The entry folders of a cache root (not its stamps).
    fn entries(root: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.ends_with(STAMPS_DIR))
            .collect();
        v.sort();
        v
    }

    fn mtimes(root: &Path) -> Vec<(PathBuf, SystemTime)> {
        let mut v = Vec::new();
        for e in entries(root) {
            for f in std::fs::read_dir(e).unwrap() {
                let f = f.unwrap();
                v.push((f.path(), f.metadata().unwrap().modified().unwrap()));
            }
        }
        v.sort();
        v
    }

    #[test]
    fn prepare_resizes_and_reuses() {
        let src = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let rows =
            vec![make_row(src.path(), "a", 40, 30, true), make_row(src.path(), "b", 25, 50, false)];
        let cache = PreprocessCache::new(cache_dir.path());
        let first = cache.prepare_with_stats(&rows, 16, ResizeMethod::Cubic, false).unwrap();
        assert_eq!(first.stats, CacheStats { hits: 0, misses: 2, hashed: 3 });
        assert_eq!(first.samples[0].id, "a");
        assert_eq!(first.samples[0].image.dimensions(), (16, 16));
        let m = first.samples[0].mask.as_ref().unwrap();
        assert_eq!(m.dimensions(), (16, 16));
        assert!(m.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
        assert_eq!(m.get_pixel(2, 8).0[0], 255);
        assert_eq!(m.get_pixel(13, 8).0[0], 0);
        assert!(first.samples[1].mask.is_none());

        let before = mtimes(cache_dir.path());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = cache.prepare_with_stats(&rows, 16, ResizeMethod::Cubic, false).unwrap();
        assert_eq!((second.stats.hits, second.stats.misses), (2, 0));
        assert_eq!(mtimes(cache_dir.path()), before, "second prepare rewrote files");
        assert_eq!(second.samples, first.samples);

        // Another size or method is another entry.
        let third = cache.prepare_with_stats(&rows, 8, ResizeMethod::Bilinear, false).unwrap();
        assert_eq!(third.stats.misses, 2);
        assert_eq!(entries(cache_dir.path()).len(), 4);
    }

    #[test]
    fn leftover_temp_and_half_entries_are_not_trusted() {
        let src = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let rows = vec![make_row(src.path(), "a", 20, 20, true)];
        let cache = PreprocessCache::new(cache_dir.path());
        let key = cache.key_for(&rows[0], 8, ResizeMethod::Cubic).unwrap();
        let dir = cache.entry_dir(&key);
        std::fs::create_dir_all(&dir).unwrap();
        // A killed run: a half-written temp file and a mask but no image yet.
        std::fs::write(dir.join(".image.png.tmp-999-0"), b"\x89PNG half").unwrap();
        let s = cache.prepare_with_stats(&rows, 8, ResizeMethod::Cubic, false).unwrap();
        assert_eq!(s.stats.misses, 1);
        assert_eq!(s.samples[0].image.dimensions(), (8, 8));
        // A corrupt final file (should never happen) is rebuilt rather than trusted.
        std::fs::write(dir.join(IMAGE_FILE), b"garbage").unwrap();
        let s = cache.prepare_with_stats(&rows, 8, ResizeMethod::Cubic, false).unwrap();
        assert_eq!(s.stats.misses, 1);
        let s = cache.prepare_with_stats(&rows, 8, ResizeMethod::Cubic, false).unwrap();
        assert_eq!(s.stats.hits, 1);
    }

    #[test]
    fn mask_change_changes_key_and_size_zero_is_rejected() {
        let src = tempfile::tempdir().unwrap();
        let row = make_row(src.path(), "a", 20, 20, true);
        let cache = PreprocessCache::new(Path::new("/nonexistent-cache"));
        let k1 = cache.key_for(&row, 8, ResizeMethod::Cubic).unwrap();
        let m = GrayImage::from_pixel(20, 20, Luma([255]));
        save_png_atomic(row.mask_path.as_ref().unwrap(), &DynamicImage::ImageLuma8(m)).unwrap();
        let k2 = cache.key_for(&row, 8, ResizeMethod::Cubic).unwrap();
        assert_ne!(k1.dir_name(), k2.dir_name());
        assert!(k1.dir_name().ends_with("_8_cubic"));
        assert!(cache.prepare(std::slice::from_ref(&row), 0, ResizeMethod::Cubic, false).is_err());
        // A row without a content hash would share its entry with every other such row.
        let unhashed = ManifestRow { content_hash: String::new(), ..row };
        let e = cache.key_for(&unhashed, 8, ResizeMethod::Cubic).unwrap_err().to_string();
        assert!(e.contains("\"a\"") && e.contains("content_hash"), "{e}");
    }

    /// Moves a file's modification time out of the stamps' racy window.
    fn age(path: &Path) {
        let old = SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options().write(true).open(path).unwrap().set_modified(old).unwrap();
    }

    fn aged_row(dir: &Path, id: &str, w: u32, h: u32) -> ManifestRow {
        let row = make_row(dir, id, w, h, true);
        age(&row.image_path);
        age(row.mask_path.as_ref().unwrap());
        row
    }

    #[test]
    fn warm_check_reads_no_file_and_a_changed_one_is_hashed_again() {
        let src = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let rows = vec![aged_row(src.path(), "a", 20, 20), aged_row(src.path(), "b", 30, 20)];
        let cache = PreprocessCache::new(cache_dir.path());
        let cold = cache.prepare_with_stats(&rows, 8, ResizeMethod::Cubic, false).unwrap();
        assert_eq!(cold.stats, CacheStats { hits: 0, misses: 2, hashed: 4 });
        let warm = cache.prepare_with_stats(&rows, 8, ResizeMethod::Cubic, false).unwrap();
        assert_eq!(warm.stats, CacheStats { hits: 2, misses: 0, hashed: 0 });
        // Touching a file (same content) costs one re-hash, not an error.
        let f = std::fs::File::options().write(true).open(&rows[1].image_path).unwrap();
        f.set_modified(SystemTime::now() - std::time::Duration::from_secs(60)).unwrap();
        let touched = cache.prepare_with_stats(&rows, 8, ResizeMethod::Cubic, false).unwrap();
        assert_eq!(touched.stats, CacheStats { hits: 2, misses: 0, hashed: 1 });
    }

    /// Issue 13, item 5: with a warm cache, a manifest whose image is missing, truncated or
    /// replaced, or whose content_hash is made up, was trained on from the cache.
    #[test]
    fn warm_cache_refuses_missing_truncated_replaced_and_made_up_rows() {
        let src = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let rows = vec![aged_row(src.path(), "a", 20, 20), aged_row(src.path(), "b", 20, 20)];
        let cache = PreprocessCache::new(cache_dir.path());
        cache.prepare(&rows, 8, ResizeMethod::Cubic, false).unwrap();
        let a = rows[0].image_path.clone();
        let good = std::fs::read(&a).unwrap();

        // Truncated.
        std::fs::write(&a, &good[..good.len() / 2]).unwrap();
        let e = cache.prepare(&rows, 8, ResizeMethod::Cubic, false).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: ", a.display())), "{e}");
        assert!(e.contains("does not match the manifest") || e.contains("decode"), "{e}");

        // Replaced by another image of the same size.
        let other = RgbImage::from_fn(20, 20, |x, y| Rgb([(x * y) as u8, 9, 9]));
        save_png_atomic(&a, &DynamicImage::ImageRgb8(other)).unwrap();
        age(&a);
        let e = cache.prepare(&rows, 8, ResizeMethod::Cubic, false).unwrap_err().to_string();
        assert!(e.contains("a.png") && e.contains("content hash"), "{e}");

        // Missing.
        std::fs::remove_file(&a).unwrap();
        let e = cache.prepare(&rows, 8, ResizeMethod::Cubic, false).unwrap_err().to_string();
        assert!(e.contains("a.png") && e.contains("not found"), "{e}");
        std::fs::write(&a, &good).unwrap();
        age(&a);
        cache.prepare(&rows, 8, ResizeMethod::Cubic, false).unwrap();

        // A made-up content_hash, and one borrowed from another (cached) row.
        let mut made_up = rows.clone();
        made_up[0].content_hash = "0".repeat(64);
        let e = cache.prepare(&made_up, 8, ResizeMethod::Cubic, false).unwrap_err().to_string();
        assert!(e.contains("a.png") && e.contains("records 0000"), "{e}");
        let c = make_row(src.path(), "c", 20, 20, false);
        let other = RgbImage::from_fn(20, 20, |x, y| Rgb([(x + y) as u8, 1, 2]));
        save_png_atomic(&c.image_path, &DynamicImage::ImageRgb8(other)).unwrap();
        let c = ManifestRow { content_hash: crate::io::content_hash(&c.image_path).unwrap(), ..c };
        cache.prepare(std::slice::from_ref(&c), 8, ResizeMethod::Cubic, false).unwrap();
        made_up[0].content_hash = c.content_hash.clone();
        let e = cache.prepare(&made_up, 8, ResizeMethod::Cubic, false).unwrap_err().to_string();
        assert!(e.contains("a.png") && e.contains("content hash"), "{e}");

        // A manifest whose size disagrees with the image.
        let mut resized = rows.clone();
        resized[0].width = 40;
        let e = cache.prepare(&resized, 8, ResizeMethod::Cubic, false).unwrap_err().to_string();
        assert!(e.contains("20x20") && e.contains("40x20"), "{e}");
    }

    /// Issue 13, item 5: a 128² mask on a 256² image was accepted by train though import
    /// refuses it.
    #[test]
    fn mask_of_another_size_is_refused_as_import_does() {
        let src = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let mut row = make_row(src.path(), "a", 256, 256, true);
        let small = GrayImage::from_fn(128, 128, |x, _| Luma([if x < 64 { 255 } else { 0 }]));
        let mp = src.path().join("small_mask.png");
        save_png_atomic(&mp, &DynamicImage::ImageLuma8(small)).unwrap();
        row.mask_path = Some(mp);
        let cache = PreprocessCache::new(cache_dir.path());
        let e = cache.prepare(&[row], 32, ResizeMethod::Cubic, false).unwrap_err();
        assert!(matches!(e, DataError::SizeMismatch { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains("small_mask.png") && e.contains("128x128") && e.contains("256x256"));
    }

    #[test]
    fn zero_one_rows_are_read_as_lesion_and_keyed_apart() {
        let src = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let mut row = make_row(src.path(), "a", 20, 20, true);
        let m01 = GrayImage::from_fn(20, 20, |x, _| Luma([u8::from(x < 10)]));
        save_png_atomic(row.mask_path.as_ref().unwrap(), &DynamicImage::ImageLuma8(m01)).unwrap();
        let cache = PreprocessCache::new(cache_dir.path());
        // Without the row's record, a 0/1 mask is refused rather than read as empty.
        let e = cache.prepare(std::slice::from_ref(&row), 8, ResizeMethod::Cubic, false);
        assert!(e.unwrap_err().to_string().contains("--masks-01"));
        MaskLevels::ZeroOne.record(&mut row);
        let s = cache.prepare(std::slice::from_ref(&row), 8, ResizeMethod::Cubic, false).unwrap();
        let m = s[0].mask.as_ref().unwrap();
        assert_eq!((m.get_pixel(1, 4).0[0], m.get_pixel(7, 4).0[0]), (255, 0));
    }

    #[test]
    fn resize_mask_rethresholds() {
        let m = GrayImage::from_fn(10, 10, |x, _| Luma([if x < 5 { 255 } else { 0 }]));
        let r = resize_mask(Path::new("m"), &m, 7).unwrap();
        assert!(r.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
        assert_eq!(r.get_pixel(0, 0).0[0], 255);
        assert_eq!(r.get_pixel(6, 0).0[0], 0);
    }

    #[test]
    fn method_parses() {
        assert_eq!("cubic".parse::<ResizeMethod>().unwrap(), ResizeMethod::Cubic);
        assert_eq!("Bilinear".parse::<ResizeMethod>().unwrap(), ResizeMethod::Bilinear);
        assert!("lanczos".parse::<ResizeMethod>().is_err());
    }
}
