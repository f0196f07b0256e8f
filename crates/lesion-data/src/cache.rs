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
//! is rebuilt. The key trusts the manifest's `content_hash` for the image (it is not re-hashed).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, GrayImage, RgbImage};
use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::import::progress_bar;
use crate::io::{binarize_mask, content_hash, load_mask, load_rgb, save_png_atomic};
use crate::manifest::ManifestRow;

/// Environment variable overriding the cache root.
pub const CACHE_ENV: &str = "LESION_CACHE";
/// Cache root used when [`CACHE_ENV`] is unset (relative to the working directory).
pub const DEFAULT_CACHE_DIR: &str = ".cache/lesion";
/// File names inside an entry folder.
const IMAGE_FILE: &str = "image.png";
const MASK_FILE: &str = "mask.png";
/// Bumped when the cached content changes meaning (resizing code, thresholds).
const CACHE_FORMAT_VERSION: u32 = 1;
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
    pub size: u32,
    pub method: ResizeMethod,
}

impl CacheKey {
    /// Folder name of the entry: `<key>_<size>_<method>`.
    pub fn dir_name(&self) -> String {
        let material = format!(
            "lesion-cache-v{CACHE_FORMAT_VERSION}|image:{}|mask:{}",
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

/// How many entries were reused and how many built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: usize,
    pub misses: usize,
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
}

impl PreprocessCache {
    pub fn new(root: &Path) -> Self {
        PreprocessCache { root: root.to_path_buf() }
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

    /// The key of a row (hashes the mask file, if any). A row without a content hash (a manifest
    /// not written by an importer that read the images, e.g. `lesion data recod` without them)
    /// is an error: all such rows would share one entry and silently train on one image.
    pub fn key_for(&self, row: &ManifestRow, size: u32, method: ResizeMethod) -> Result<CacheKey> {
        if row.content_hash.is_empty() {
            return Err(DataError::InvalidArgument(format!(
                "manifest row {:?} ({}) has no content_hash: the manifest was written without reading its images (e.g. `lesion data recod` without --images); recreate it with the images present",
                row.id,
                row.image_path.display()
            )));
        }
        let mask_hash = match &row.mask_path {
            Some(m) => Some(content_hash(m)?),
            None => None,
        };
        Ok(CacheKey { image_hash: row.content_hash.clone(), mask_hash, size, method })
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
        let hits = AtomicUsize::new(0);
        let pb = progress_bar(rows.len(), &format!("preparing {size}px"), progress);
        let samples: Result<Vec<PreparedSample>> = rows
            .par_iter()
            .map(|row| {
                let r = self.prepare_one(row, size, method);
                if let Ok((_, true)) = &r {
                    hits.fetch_add(1, Ordering::Relaxed);
                }
                pb.inc(1);
                r.map(|(s, _)| s)
            })
            .collect();
        pb.finish_and_clear();
        let samples = samples?;
        let hits = hits.into_inner();
        let stats = CacheStats { hits, misses: samples.len() - hits };
        tracing::debug!(hits = stats.hits, misses = stats.misses, root = %self.root.display(), "cache prepare");
        Ok(Prepared { samples, stats })
    }

    /// One sample; the flag says whether it came from the cache.
    fn prepare_one(
        &self,
        row: &ManifestRow,
        size: u32,
        method: ResizeMethod,
    ) -> Result<(PreparedSample, bool)> {
        let key = self.key_for(row, size, method)?;
        let dir = self.entry_dir(&key);
        let image_path = dir.join(IMAGE_FILE);
        let mask_path = dir.join(MASK_FILE);
        if let Some(sample) = read_entry(row, size, &image_path, &mask_path) {
            return Ok((sample, true));
        }
        let image = resize_rgb(&row.image_path, &load_rgb(&row.image_path)?, size, method)?;
        let mask = match &row.mask_path {
            Some(mp) => Some(resize_mask(mp, &load_mask(mp)?, size)?),
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
        match load_mask(mask_path) {
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

    fn mtimes(root: &Path) -> Vec<(PathBuf, SystemTime)> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(root).unwrap() {
            for f in std::fs::read_dir(e.unwrap().path()).unwrap() {
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
        assert_eq!(first.stats, CacheStats { hits: 0, misses: 2 });
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
        assert_eq!(second.stats, CacheStats { hits: 2, misses: 0 });
        assert_eq!(mtimes(cache_dir.path()), before, "second prepare rewrote files");
        assert_eq!(second.samples, first.samples);

        // Another size or method is another entry.
        let third = cache.prepare_with_stats(&rows, 8, ResizeMethod::Bilinear, false).unwrap();
        assert_eq!(third.stats.misses, 2);
        assert_eq!(std::fs::read_dir(cache_dir.path()).unwrap().count(), 4);
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
