//! Pairing ground-truth masks with prediction files (`iter_image_pairs`).
//!
//! Official rule (ISIC ids): the id is the first `ISIC_[0-9]{7}` in the truth
//! file's stem, and a prediction matches when its stem contains the id's
//! 7-digit number. Extension for other datasets (e.g. PH2
//! `IMD002_lesion.bmp`): the id is the stem without a trailing
//! `_segmentation`, `_lesion` or `_mask` (any case), and a prediction matches
//! when its stem contains the whole id. Exactly one prediction must match.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use regex::Regex;

use crate::MetricsError;

/// Files in the truth folder that the official scorer skips by name.
pub const SKIPPED_NAMES: [&str; 2] = ["ATTRIBUTION.txt", "LICENSE.txt"];
/// Extensions (lower-case) of files considered images; all others are ignored.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["png", "bmp", "jpg", "jpeg", "gif", "tif", "tiff", "webp"];
/// Suffixes removed from a non-ISIC truth stem to get its id (compared case-insensitively).
pub const ID_SUFFIXES: [&str; 3] = ["_segmentation", "_lesion", "_mask"];
/// The official id pattern.
const ISIC_ID_PATTERN: &str = r"ISIC_([0-9]{7})";

/// One ground-truth mask and the prediction it is scored against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePair {
    /// Image id (`ISIC_0000123`, or e.g. `IMD002`).
    pub id: String,
    pub truth: PathBuf,
    pub prediction: PathBuf,
}

/// How a truth id is looked up among prediction stems.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TruthId {
    id: String,
    /// Substring a prediction stem must contain.
    key: String,
}

fn isic_regex() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| Regex::new(ISIC_ID_PATTERN).ok()).as_ref()
}

fn stem_of(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

fn truth_id(path: &Path) -> Result<TruthId, MetricsError> {
    let stem = stem_of(path);
    if let Some(caps) = isic_regex().and_then(|re| re.captures(&stem)) {
        if let (Some(whole), Some(number)) = (caps.get(0), caps.get(1)) {
            return Ok(TruthId {
                id: whole.as_str().to_string(),
                key: number.as_str().to_string(),
            });
        }
    }
    let lower = stem.to_ascii_lowercase();
    let id = ID_SUFFIXES
        .iter()
        .find(|suffix| lower.ends_with(*suffix))
        .map_or(stem.as_str(), |suffix| &stem[..stem.len() - suffix.len()])
        .to_string();
    if id.is_empty() {
        return Err(MetricsError::UnknownTruthId { path: path.to_path_buf() });
    }
    Ok(TruthId { key: id.clone(), id })
}

/// True for a regular, non-hidden file with an image extension that is not
/// one of [`SKIPPED_NAMES`].
pub fn is_image_file(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.starts_with('.') || SKIPPED_NAMES.contains(&name.as_str()) || !path.is_file() {
        return false;
    }
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// Image files directly in `dir`, sorted by file name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, MetricsError> {
    let io_err = |source| MetricsError::Io { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let path = entry.map_err(io_err)?.path();
        if is_image_file(&path) {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Pairs every truth image in `truth_dir` (sorted by name) with its unique
/// prediction in `pred_dir`. Fails on the first truth (in name order) that
/// has zero or several matching predictions, or when `truth_dir` has no image.
pub fn pair_images(truth_dir: &Path, pred_dir: &Path) -> Result<Vec<ImagePair>, MetricsError> {
    let truths = list_images(truth_dir)?;
    if truths.is_empty() {
        return Err(MetricsError::NoTruthImages { dir: truth_dir.to_path_buf() });
    }
    let preds: Vec<(String, PathBuf)> =
        list_images(pred_dir)?.into_iter().map(|p| (stem_of(&p), p)).collect();
    truths
        .into_iter()
        .map(|truth| {
            let tid = truth_id(&truth)?;
            let mut candidates: Vec<PathBuf> = preds
                .iter()
                .filter(|(stem, _)| stem.contains(&tid.key))
                .map(|(_, p)| p.clone())
                .collect();
            match candidates.len() {
                0 => Err(MetricsError::NoPrediction {
                    truth,
                    key: tid.key,
                    pred_dir: pred_dir.to_path_buf(),
                }),
                1 => Ok(ImagePair { id: tid.id, truth, prediction: candidates.remove(0) }),
                _ => Err(MetricsError::MultiplePredictions { truth, key: tid.key, candidates }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let t = truth_id(Path::new("a/ISIC_0000123_segmentation.png")).ok();
        assert_eq!(t, Some(TruthId { id: "ISIC_0000123".into(), key: "0000123".into() }));
        for (file, id) in [
            ("IMD002_lesion.bmp", "IMD002"),
            ("x_1_Segmentation.png", "x_1"),
            ("abc_mask.png", "abc"),
            ("plain.png", "plain"),
        ] {
            let t = truth_id(Path::new(file)).ok().map(|t| (t.id, t.key));
            assert_eq!(t, Some((id.to_string(), id.to_string())), "{file}");
        }
        assert!(truth_id(Path::new("_mask.png")).is_err());
    }
}
