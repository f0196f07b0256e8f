//! Stratified, group-aware k-fold cross-validation (folds from
//! [`lesion_data::split::stratified_group_folds`]; the images of one group are always in one
//! fold) and the prediction of labelled rows with test-time augmentation.
use std::collections::BTreeMap;
use std::path::Path;

use lesion_core::run::{self, RunOptions};
use lesion_core::{Result, TrainError};
use lesion_data::cache::PreprocessCache;
use lesion_data::labels::{LabelledRow, LesionClass, NUM_CLASSES};
use lesion_data::split::stratified_group_folds;
use serde::{Deserialize, Serialize};
use tch::Device;
use tracing::info;

use crate::augment::to_unit;
use crate::config::ClsTrainConfig;
use crate::model::{load_model, ClsDataset, ClsModel, MaskUse, Pixels};
use crate::trainer::{self, one_vs_rest_auc, ClsTrainRequest};
use crate::tta::{self, FeatureExport, ForwardOut, ImagePrediction, Pool, TtaMode};

/// How to predict.
#[derive(Debug, Clone)]
pub struct PredictSettings {
    pub mode: TtaMode,
    pub pool: Pool,
    pub seed: u64,
    /// Export penultimate features (single model only).
    pub features: Option<FeatureExport>,
}

/// Predictions of an ensemble (pooled probabilities averaged over models) and, with one model
/// and `features` set, each image's R×F replica features.
pub struct Predicted {
    pub predictions: Vec<ImagePrediction>,
    pub features: Vec<tch::Tensor>,
}

/// Predicts `rows` with every model (each sees the images at its own cache size), TTA as set.
pub fn predict_rows(
    models: &[ClsModel],
    rows: &[LabelledRow],
    cache: &PreprocessCache,
    settings: &PredictSettings,
    device: Device,
    progress: bool,
) -> Result<Predicted> {
    predict_pixels(models, rows, Pixels::Cache(cache), settings, device, progress)
}

/// [`predict_rows`] with the pixels from `pixels` (files through the cache, or images
/// already decoded).
pub fn predict_pixels(
    models: &[ClsModel],
    rows: &[LabelledRow],
    pixels: Pixels<'_>,
    settings: &PredictSettings,
    device: Device,
    progress: bool,
) -> Result<Predicted> {
    if models.is_empty() {
        return Err(TrainError::Config("no models to predict with".into()));
    }
    if settings.features.is_some() && models.len() > 1 {
        return Err(TrainError::Config("feature export needs exactly one model".into()));
    }
    let mut sum: Option<Vec<ImagePrediction>> = None;
    let mut features = Vec::new();
    for m in models {
        let data = ClsDataset::prepare_from(
            rows,
            m.cfg.cache_size(),
            m.cfg.data.resize,
            pixels,
            MaskUse::of(&m.cfg),
            progress,
        )?;
        // With lesion pooling each image carries its mask as a fourth channel (0/255 → 0/1).
        let mut images = (0..data.len())
            .map(|i| Ok((data.ids[i].clone(), to_unit(&data.inputs_at(&[i as i64]), device))));
        let mut failure: Option<TrainError> = None;
        let out = tta::predict_tta(
            &mut images,
            settings.mode,
            &m.cfg.augment,
            settings.seed,
            settings.pool,
            m.cfg.model.input_size,
            |batch| match m.eval_with_features(batch) {
                Ok((logits, f)) => ForwardOut { logits, features: settings.features.map(|_| f) },
                Err(e) => {
                    failure = Some(e);
                    ForwardOut {
                        logits: tch::Tensor::zeros(
                            [batch.size()[0], NUM_CLASSES as i64],
                            (tch::Kind::Float, device),
                        ),
                        features: None,
                    }
                }
            },
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        features = out.features;
        sum = Some(match sum.take() {
            None => out.predictions,
            Some(mut acc) => {
                for (a, p) in acc.iter_mut().zip(out.predictions) {
                    for c in 0..NUM_CLASSES {
                        a.probs[c] += p.probs[c];
                    }
                    // Replica r of every model saw the same transform (same mode and seed).
                    if a.replicas.len() != p.replicas.len() {
                        return Err(TrainError::Config(format!(
                            "models gave {} and {} replicas of {}",
                            a.replicas.len(),
                            p.replicas.len(),
                            a.id
                        )));
                    }
                    for (ar, pr) in a.replicas.iter_mut().zip(&p.replicas) {
                        for c in 0..NUM_CLASSES {
                            ar[c] += pr[c];
                        }
                    }
                }
                acc
            }
        });
    }
    let mut predictions = sum.unwrap_or_default();
    for p in &mut predictions {
        let n = models.len() as f64;
        for v in p.probs.iter_mut().chain(p.replicas.iter_mut().flatten()) {
            *v /= n;
        }
    }
    Ok(Predicted { predictions, features })
}

/// Writes the ISIC 2017 ground-truth CSV of labelled rows (1.0 / 0.0 per task), atomically.
pub fn write_truth_csv(path: &Path, rows: &[LabelledRow]) -> Result<()> {
    let preds: Vec<ImagePrediction> = rows
        .iter()
        .map(|r| {
            let mut probs = [0.0; NUM_CLASSES];
            probs[r.class.index()] = 1.0;
            ImagePrediction { id: r.row.id.clone(), probs, replicas: vec![probs] }
        })
        .collect();
    tta::write_isic2017_csv(path, &preds)
}

/// One fold's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldResult {
    pub fold: usize,
    pub train_images: usize,
    pub test_images: usize,
    pub auc_melanoma: Option<f64>,
    pub auc_keratosis: Option<f64>,
    pub best_epoch: usize,
    pub train_seconds: f64,
}

/// Mean and sample standard deviation (n − 1) of the defined values (one definition, shared
/// with the stacking report).
pub use lesion_metrics::summary::Spread as MeanStd;

/// `cv.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvSummary {
    pub folds: Vec<FoldResult>,
    pub melanoma_auc: Option<MeanStd>,
    pub keratosis_auc: Option<MeanStd>,
    /// AUCs of all out-of-fold predictions pooled.
    pub pooled_melanoma_auc: Option<f64>,
    pub pooled_keratosis_auc: Option<f64>,
    pub tta: String,
    pub pool: Pool,
    pub seconds: f64,
}

/// Cross-validation request. `out_dir/fold-<i>` are ordinary run folders; a complete one is
/// reused and an interrupted one resumed, so rerunning the same command continues a CV.
pub struct CvRequest<'a> {
    pub cfg: ClsTrainConfig,
    pub rows: &'a [LabelledRow],
    pub folds: usize,
    /// Seed of the fold assignment.
    pub seed: u64,
    pub cache: &'a PreprocessCache,
    /// `run_dir` is the CV folder; each fold's run inherits the rest (`resume` is decided per
    /// fold from what its folder holds).
    pub run: RunOptions,
}

pub const FOLDS_FILE: &str = "folds.json";
pub const OOF_CSV: &str = "oof.csv";
/// Every out-of-fold replica's probabilities (`image_id,fold,replica,melanoma,…`): the
/// input of `lesion stack`.
pub const OOF_REPLICAS_CSV: &str = "oof-replicas.csv";
pub const OOF_ISIC_CSV: &str = "oof-isic2017.csv";
pub const TRUTH_ISIC_CSV: &str = "truth-isic2017.csv";
pub const CV_JSON: &str = "cv.json";

/// Whether the cross-validation folder `dir` is finished: [`run_cv`] writes `cv.json` last,
/// after every fold's run and the out-of-fold files.
pub fn is_complete(dir: &Path) -> bool {
    dir.join(CV_JSON).is_file()
}

pub fn run_cv(req: CvRequest<'_>) -> Result<CvSummary> {
    if req.folds < 2 {
        return Err(TrainError::Config(format!("need at least 2 folds, got {}", req.folds)));
    }
    req.cfg.validate()?;
    let t0 = std::time::Instant::now();
    std::fs::create_dir_all(&req.run.run_dir).map_err(|e| TrainError::file(&req.run.run_dir, e))?;
    // One CV per folder at a time (each fold's run also locks its own folder).
    let _lock = lesion_core::lock::RunLock::acquire(&req.run.run_dir)?;
    let folds_path = req.run.run_dir.join(FOLDS_FILE);
    let fold_of: BTreeMap<String, usize> = if folds_path.exists() {
        run::read_json(&folds_path)?
    } else {
        let f = stratified_group_folds(req.rows, req.folds, req.seed);
        let map: BTreeMap<String, usize> =
            req.rows.iter().zip(f).map(|(r, f)| (r.row.id.clone(), f)).collect();
        run::write_json(&folds_path, &map)?;
        map
    };
    let mode = req.cfg.tta.replicas;
    let settings =
        PredictSettings { mode, pool: req.cfg.tta.pool, seed: req.cfg.tta.seed, features: None };
    let mut results = Vec::new();
    let mut oof: Vec<(usize, LabelledRow, ImagePrediction)> = Vec::new();
    for fold in 0..req.folds {
        let fold_id = |r: &LabelledRow| fold_of.get(&r.row.id).copied();
        if req.rows.iter().any(|r| fold_id(r).is_none()) {
            return Err(TrainError::file(
                &folds_path,
                "a labelled row has no fold (the manifest changed since this CV started)",
            ));
        }
        let train_rows: Vec<LabelledRow> =
            req.rows.iter().filter(|r| fold_id(r) != Some(fold)).cloned().collect();
        let test_rows: Vec<LabelledRow> =
            req.rows.iter().filter(|r| fold_id(r) == Some(fold)).cloned().collect();
        let run_dir = req.run.run_dir.join(format!("fold-{fold}"));
        let completion = if run::is_complete(&run_dir) {
            info!(fold, "fold already trained; reusing {}", run_dir.display());
            run::read_json::<trainer::ClsCompletion>(&run_dir.join(run::COMPLETE_FILE))?
        } else {
            let resume = run_dir.join(run::CONFIG_FILE).exists();
            info!(fold, train = train_rows.len(), test = test_rows.len(), resume, "training fold");
            trainer::train(ClsTrainRequest {
                cfg: req.cfg.clone(),
                rows: &train_rows,
                cache: req.cache,
                run: RunOptions { run_dir: run_dir.clone(), resume, ..req.run.clone() },
            })?
            .completion
        };
        let model = load_model(&run_dir, req.run.device)?;
        let pred = predict_rows(
            std::slice::from_ref(&model),
            &test_rows,
            req.cache,
            &settings,
            req.run.device,
            req.run.progress,
        )?;
        let classes: Vec<LesionClass> = test_rows.iter().map(|r| r.class).collect();
        let probs: Vec<[f64; NUM_CLASSES]> = pred.predictions.iter().map(|p| p.probs).collect();
        let r = FoldResult {
            fold,
            train_images: train_rows.len(),
            test_images: test_rows.len(),
            auc_melanoma: one_vs_rest_auc(&classes, &probs, LesionClass::Melanoma),
            auc_keratosis: one_vs_rest_auc(&classes, &probs, LesionClass::SeborrheicKeratosis),
            best_epoch: completion.best_epoch,
            train_seconds: completion.seconds,
        };
        info!(fold, auc_melanoma = ?r.auc_melanoma, auc_keratosis = ?r.auc_keratosis, "fold done");
        results.push(r);
        oof.extend(test_rows.into_iter().zip(pred.predictions).map(|(row, p)| (fold, row, p)));
    }
    oof.sort_by(|a, b| a.1.row.id.cmp(&b.1.row.id));
    write_oof(&req.run.run_dir.join(OOF_CSV), &oof)?;
    tta::write_replicas_csv(
        &req.run.run_dir.join(OOF_REPLICAS_CSV),
        oof.iter().map(|(f, r, p)| (r.row.id.as_str(), *f, p.replicas.as_slice())),
    )?;
    let preds: Vec<ImagePrediction> = oof.iter().map(|o| o.2.clone()).collect();
    let rows: Vec<LabelledRow> = oof.iter().map(|o| o.1.clone()).collect();
    tta::write_isic2017_csv(&req.run.run_dir.join(OOF_ISIC_CSV), &preds)?;
    write_truth_csv(&req.run.run_dir.join(TRUTH_ISIC_CSV), &rows)?;
    let classes: Vec<LesionClass> = rows.iter().map(|r| r.class).collect();
    let probs: Vec<[f64; NUM_CLASSES]> = preds.iter().map(|p| p.probs).collect();
    let summary = CvSummary {
        melanoma_auc: MeanStd::of(
            &results.iter().filter_map(|r| r.auc_melanoma).collect::<Vec<_>>(),
        ),
        keratosis_auc: MeanStd::of(
            &results.iter().filter_map(|r| r.auc_keratosis).collect::<Vec<_>>(),
        ),
        pooled_melanoma_auc: one_vs_rest_auc(&classes, &probs, LesionClass::Melanoma),
        pooled_keratosis_auc: one_vs_rest_auc(&classes, &probs, LesionClass::SeborrheicKeratosis),
        folds: results,
        tta: req.cfg.tta.replicas.to_string(),
        pool: req.cfg.tta.pool,
        seconds: t0.elapsed().as_secs_f64(),
    };
    run::write_json(&req.run.run_dir.join(CV_JSON), &summary)?;
    Ok(summary)
}

fn write_oof(path: &Path, oof: &[(usize, LabelledRow, ImagePrediction)]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| TrainError::file(path, e);
    w.write_record(["image_id", "fold", "class", "melanoma", "seborrheic_keratosis", "nevus"])
        .map_err(err)?;
    for (fold, row, p) in oof {
        w.write_record([
            row.row.id.clone(),
            fold.to_string(),
            row.class.name().to_string(),
            format!("{:.8}", p.probs[0]),
            format!("{:.8}", p.probs[1]),
            format!("{:.8}", p.probs[2]),
        ])
        .map_err(err)?;
    }
    let bytes = w.into_inner().map_err(|e| TrainError::file(path, e.to_string()))?;
    run::atomic_write(path, &bytes)
}
