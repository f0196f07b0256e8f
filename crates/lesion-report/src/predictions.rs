//! A run's predictions of a manifest, made once and cached in the run folder:
//! `<run>/external/<hash>/` for an external set, `<run>/validation/<hash>/` for the run's own
//! validation split (`<hash>`: of the manifest file's bytes, which hold every image's content
//! hash). Each cache folder is staged and appears whole ([`lesion_core::staged`]), with
//! `source.json` written last; a later leaderboard or report reads it instead of predicting.
//!
//! Predictions come from the library functions the CLI's `predict` commands call:
//! classification by `lesion_cls::cv::predict_rows` with the run's own `[tta]` settings (a CV
//! by its fold models averaged, as `lesion cls predict --model fold-0 --model fold-1 …`), an
//! SVM head by `lesion_stack::svm_head::predict_with_head`, segmentation by
//! `lesion_seg::predict::predict_rows`; scores by the scorers of `cls eval` / `seg eval`.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use lesion_cls::cv::{self, PredictSettings};
use lesion_cls::model::{load_model, ClsModel, Pixels};
use lesion_cls::tta::{self, ImagePrediction};
use lesion_core::run::{self, RunInfo, RUN_FILE};
use lesion_core::staged::StagedDir;
use lesion_core::{Result, TrainError};
use lesion_data::cache::PreprocessCache;
use lesion_data::labels::{label_rows, LabelledRow};
use lesion_data::manifest::{Manifest, ManifestRow};
use lesion_metrics::seg::{evaluate_dirs, SegEvaluation};
use lesion_seg::predict::{self as seg_predict, PredictOptions};
use serde::{Deserialize, Serialize};
use tch::Device;
use tracing::info;

use crate::source::{fold_dirs, RunKind};

/// The cache folder of a run's external predictions (one subfolder per manifest hash).
pub const EXTERNAL_DIR: &str = "external";
/// The cache folder of a run's validation-split predictions.
pub const VALIDATION_DIR: &str = "validation";
/// Written last into a cache folder: what it holds.
pub const SOURCE_JSON: &str = "source.json";
/// ISIC 2017 prediction CSV (`image_id,melanoma,seborrheic_keratosis`).
pub const PREDICTIONS_CSV: &str = "predictions.csv";
/// All three class probabilities.
pub const PREDICTIONS_FULL_CSV: &str = "predictions.full.csv";
/// ISIC 2017 truth CSV of the same images.
pub const TRUTH_CSV: &str = "truth.csv";
/// Predicted masks (`<id>_segmentation.png`).
pub const MASKS_DIR: &str = "masks";
/// Truth masks in the scorer's form.
pub const TRUTH_MASKS_DIR: &str = "truth";
/// Mean and per-image segmentation scores as `lesion seg eval` writes them.
pub const SEG_SCORES_JSON: &str = "scores.json";
pub const SEG_SCORES_CSV: &str = "scores.csv";
/// The whole evaluation (per-image confusions and scores, mean), read back by the report.
pub const SEG_EVALUATION_JSON: &str = "evaluation.json";
/// Hex digits of the manifest hash that name a cache folder.
const HASH_DIGITS: usize = 16;

/// Predictions made (not read from a cache) by this process: lets tests and callers see
/// that a second pass reused the cache.
static PREDICTIONS_MADE: AtomicUsize = AtomicUsize::new(0);

/// How many prediction sets this process has computed so far (cache hits do not count).
pub fn predictions_made() -> usize {
    PREDICTIONS_MADE.load(Ordering::SeqCst)
}

/// Which images a cached prediction set is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PredictionSet {
    /// Every usable image of a manifest the run was not trained on.
    External,
    /// The run's own validation split (of the manifest its `run.json` records).
    Validation,
}

impl PredictionSet {
    fn dir_name(self) -> &'static str {
        match self {
            PredictionSet::External => EXTERNAL_DIR,
            PredictionSet::Validation => VALIDATION_DIR,
        }
    }
}

/// A manifest read once, with the hash of its bytes.
#[derive(Debug, Clone)]
pub struct ManifestData {
    pub path: PathBuf,
    pub hash: String,
    pub rows: Vec<ManifestRow>,
}

impl ManifestData {
    pub fn read(path: &Path) -> Result<ManifestData> {
        let bytes = std::fs::read(path).map_err(|e| TrainError::file(path, e))?;
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let rows = Manifest::read_csv(path)?.rows;
        Ok(ManifestData { path: path.to_path_buf(), hash: hash[..HASH_DIGITS].to_string(), rows })
    }

    /// The manifest a run folder records in its `run.json` (a CV: its first fold's).
    pub fn of_run(dir: &Path, kind: RunKind) -> Result<Option<ManifestData>> {
        let dir = crate::source::config_dir(dir, kind);
        let path = dir.join(RUN_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let info: RunInfo = run::read_json(&path)?;
        info.manifest.map(|m| ManifestData::read(&m)).transpose()
    }
}

/// Where models run and images are cached.
#[derive(Clone, Copy)]
pub struct PredictContext<'a> {
    pub cache: &'a PreprocessCache,
    pub device: Device,
    pub progress: bool,
}

/// `source.json` of a cache folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheSource {
    pub manifest: PathBuf,
    pub manifest_hash: String,
    pub set: PredictionSet,
    pub kind: RunKind,
    pub images: usize,
    pub seconds: f64,
    pub lesion_version: String,
}

/// A cache folder of predictions, and whether this call made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    pub dir: PathBuf,
    pub computed: bool,
}

/// Predictions that could be had, or why not.
#[derive(Debug, Clone, PartialEq)]
pub enum Availability {
    Ready(Cached),
    Unavailable(String),
}

/// The cache folder of `run`'s predictions of the manifest with hash `hash`.
pub fn cache_dir(run: &Path, set: PredictionSet, hash: &str) -> PathBuf {
    run.join(set.dir_name()).join(hash)
}

/// The cache folder, made by `make` (into a staging folder) unless it exists. The set folder's
/// lock is held meanwhile: two processes never predict into the same folder.
fn cached(
    run: &Path,
    set: PredictionSet,
    manifest: &ManifestData,
    kind: RunKind,
    make: impl FnOnce(&Path) -> Result<usize>,
) -> Result<Cached> {
    let dir = cache_dir(run, set, &manifest.hash);
    if dir.join(SOURCE_JSON).exists() {
        return Ok(Cached { dir, computed: false });
    }
    let set_dir = run.join(set.dir_name());
    std::fs::create_dir_all(&set_dir).map_err(|e| TrainError::file(&set_dir, e))?;
    let _lock = lesion_core::lock::RunLock::acquire(&set_dir).map_err(|e| {
        TrainError::file(&set_dir, format!("cannot lock the prediction cache ({e}); is another `lesion leaderboard` or `lesion report` predicting this run?"))
    })?;
    // Made by another process while this one waited for nothing: it holds the lock to the end.
    if dir.join(SOURCE_JSON).exists() {
        return Ok(Cached { dir, computed: false });
    }
    if dir.exists() {
        // Not made by this code (it only renames whole folders into place): start again.
        std::fs::remove_dir_all(&dir).map_err(|e| TrainError::file(&dir, e))?;
    }
    let t0 = std::time::Instant::now();
    let staged = StagedDir::begin(&dir)?;
    let images = make(staged.path())?;
    let source = CacheSource {
        manifest: manifest.path.canonicalize().unwrap_or_else(|_| manifest.path.clone()),
        manifest_hash: manifest.hash.clone(),
        set,
        kind,
        images,
        seconds: t0.elapsed().as_secs_f64(),
        lesion_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    run::write_json(&staged.path().join(SOURCE_JSON), &source)?;
    staged.commit()?;
    PREDICTIONS_MADE.fetch_add(1, Ordering::SeqCst);
    info!(run = %run.display(), images, seconds = source.seconds, "predicted {:?} set", set);
    Ok(Cached { dir, computed: true })
}

/// The classifier(s) of a run folder.
enum ClsPredictor {
    /// A run's model, or a CV's fold models (probabilities averaged).
    Nets(Vec<ClsModel>),
    /// A backbone and its SVM head.
    Head(Box<ClsModel>, Box<lesion_stack::svm_head::SvmHead>),
}

fn load_predictor(dir: &Path, kind: RunKind, device: Device) -> Result<ClsPredictor> {
    Ok(match kind {
        RunKind::ClsTrain => ClsPredictor::Nets(vec![load_model(dir, device)?]),
        RunKind::ClsCv => {
            let folds = fold_dirs(dir);
            if folds.is_empty() {
                return Err(TrainError::file(dir, "a CV folder without fold-0/"));
            }
            ClsPredictor::Nets(folds.iter().map(|f| load_model(f, device)).collect::<Result<_>>()?)
        }
        RunKind::SvmHead => {
            let head = lesion_stack::svm_head::read_head(dir)?
                .ok_or_else(|| TrainError::file(dir, "no svm-head.json"))?;
            ClsPredictor::Head(Box::new(load_model(dir, device)?), Box::new(head))
        }
        RunKind::SegTrain => {
            return Err(TrainError::file(dir, "a segmentation run has no class probabilities"))
        }
    })
}

fn predict_cls(
    predictor: &ClsPredictor,
    rows: &[LabelledRow],
    ctx: &PredictContext<'_>,
) -> Result<Vec<ImagePrediction>> {
    match predictor {
        ClsPredictor::Nets(models) => {
            let first = models
                .first()
                .ok_or_else(|| TrainError::Config("no models to predict with".into()))?;
            // The run's own TTA: what its out-of-fold predictions used.
            let settings = PredictSettings {
                mode: first.cfg.tta.replicas,
                pool: first.cfg.tta.pool,
                seed: first.cfg.tta.seed,
                features: None,
            };
            Ok(cv::predict_rows(models, rows, ctx.cache, &settings, ctx.device, ctx.progress)?
                .predictions)
        }
        ClsPredictor::Head(model, head) => {
            if head.descriptors > 0 {
                return Err(TrainError::Config(
                    "this SVM head was trained with lesion descriptors, which an external manifest does not carry".into(),
                ));
            }
            lesion_stack::svm_head::predict_with_head(
                model,
                head,
                rows,
                Pixels::Cache(ctx.cache),
                None,
                ctx.device,
                ctx.progress,
            )
        }
    }
}

/// The classification predictions of `run` (of `kind`) for `set` of `manifest`, from the
/// cache or made now. Unavailable when no row has a diagnosis (the set cannot be scored).
pub fn cls_predictions(
    run: &Path,
    kind: RunKind,
    manifest: &ManifestData,
    set: PredictionSet,
    ctx: &PredictContext<'_>,
) -> Result<Availability> {
    let (mut rows, _) = label_rows(&manifest.rows);
    if rows.is_empty() {
        return Ok(Availability::Unavailable(format!(
            "{}: no row has a diagnosis that maps to a class",
            manifest.path.display()
        )));
    }
    if set == PredictionSet::Validation {
        rows = run::validation_rows(rows, run, |r| r.row.id.as_str())?;
        if rows.is_empty() {
            return Ok(Availability::Unavailable("the run has no validation split".into()));
        }
    }
    let c = cached(run, set, manifest, kind, |stage| {
        let predictor = load_predictor(run, kind, ctx.device)?;
        let preds = predict_cls(&predictor, &rows, ctx)?;
        tta::write_isic2017_csv(&stage.join(PREDICTIONS_CSV), &preds)?;
        tta::write_full_csv(&stage.join(PREDICTIONS_FULL_CSV), &preds)?;
        cv::write_truth_csv(&stage.join(TRUTH_CSV), &rows)?;
        Ok(rows.len())
    })?;
    Ok(Availability::Ready(c))
}

/// The segmentation predictions of `run` for `set` of `manifest` (masks, truth masks and the
/// official scorer's per-image scores), from the cache or made now. Unavailable when no row
/// has a mask.
pub fn seg_predictions(
    run: &Path,
    manifest: &ManifestData,
    set: PredictionSet,
    ctx: &PredictContext<'_>,
) -> Result<Availability> {
    let mut rows: Vec<ManifestRow> =
        manifest.rows.iter().filter(|r| r.mask_path.is_some()).cloned().collect();
    if rows.is_empty() {
        return Ok(Availability::Unavailable(format!(
            "{}: no row has a mask",
            manifest.path.display()
        )));
    }
    if set == PredictionSet::Validation {
        rows = run::validation_rows(rows, run, |r| r.id.as_str())?;
        if rows.is_empty() {
            return Ok(Availability::Unavailable("the run has no validation split".into()));
        }
    }
    let c = cached(run, set, manifest, RunKind::SegTrain, |stage| {
        let model = seg_predict::load_model(run, ctx.device)?;
        let opts = PredictOptions { progress: ctx.progress, ..PredictOptions::default() };
        let masks = stage.join(MASKS_DIR);
        let truth = stage.join(TRUTH_MASKS_DIR);
        seg_predict::predict_rows(std::slice::from_ref(&model), &rows, &masks, ctx.device, &opts)?;
        seg_predict::write_truth_masks(&rows, &truth)?;
        let ev = evaluate_dirs(&truth, &masks)?;
        ev.write_json(&stage.join(SEG_SCORES_JSON))?;
        ev.write_csv(&stage.join(SEG_SCORES_CSV))?;
        run::write_json(&stage.join(SEG_EVALUATION_JSON), &ev)?;
        Ok(rows.len())
    })?;
    Ok(Availability::Ready(c))
}

/// The official scorer's evaluation kept in a segmentation cache folder.
pub fn read_seg_scores(dir: &Path) -> Result<SegEvaluation> {
    run::read_json(&dir.join(SEG_EVALUATION_JSON))
}
