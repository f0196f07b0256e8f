//! An SVM head on a pretrained backbone's features, with nothing fine-tuned: the paper's "SVM
//! layer" without the fine-tuning before it. The backbone (any `[model]` of a classification
//! config, e.g. the HAM10000 Xception or an ImageNet EfficientNet-Lite) gives each image's
//! penultimate features under test-time augmentation (one row per image: the replicas' mean),
//! optionally followed by the lesion's ABCD descriptors; a calibrated linear SVM per task
//! (melanoma, keratosis vs rest; C searched by group k-fold) maps them to probabilities.
//!
//! The folder it writes is a run folder (`config.toml`, `checkpoints/best.safetensors` with
//! the backbone as loaded, `COMPLETE.json` last) plus `svm-head.json`, so `lesion export`
//! bundles it like a fine-tuned classifier. Its honest estimate is out of fold: the same
//! features, stratified group k-fold (the one splitter), an SVM pair fitted per fold on the
//! other folds; `oof.csv` and the fold and pooled AUCs come from those, and the head kept
//! is then fitted on every image.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lesion_data::par::CollectInOrder;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::Device;
use tracing::info;

use lesion_cls::config::{ClsTrainConfig, CLASSES};
use lesion_cls::cv::{predict_pixels, write_truth_csv, PredictSettings};
use lesion_cls::model::{ClsModel, Pixels};
use lesion_cls::trainer::one_vs_rest_auc;
use lesion_cls::tta::{write_isic2017_csv, FeatureExport, ImagePrediction, Pool, TtaMode};
use lesion_core::checkpoint::{save_model, CheckpointPaths};
use lesion_core::run::{self, RunConfig, COMPLETE_FILE, CONFIG_FILE};
use lesion_core::{Result, TrainError};
use lesion_data::cache::PreprocessCache;
use lesion_data::labels::{LabelledRow, LesionClass, NUM_CLASSES};
use lesion_data::split::stratified_group_folds;
use lesion_metrics::summary::Spread;

use crate::cv::SearchConfig;
use crate::ensemble::fit_grouped_svm;
use crate::ensemble::{MetadataEncoding, Sex, AGE_SCALE};
use crate::matrix::FeatureMatrix;
use crate::pipeline::CalibratedSvm;
use crate::stacking::patient_meta;

/// `age / 100` filled in when no training image has an age.
const DEFAULT_AGE_FILL: f64 = 0.5;
/// The head's file in its folder.
pub const SVM_HEAD_FILE: &str = "svm-head.json";
/// The per-image backbone features (safetensors `features`, N×F, with `features.ids.txt`),
/// kept so that other heads on the same backbone and images need no second pass.
pub const FEATURES_FILE: &str = "features.safetensors";
/// The out-of-fold estimate's fold of each image (`{id: fold}`).
pub const FOLDS_FILE: &str = "folds.json";
/// Out-of-fold predictions (ISIC 2017 CSV) and their truth.
pub const OOF_CSV: &str = "oof.csv";
pub const TRUTH_CSV: &str = "truth.csv";

/// Image descriptors by id, appended to the features (see `lesion_seg::descriptors`).
pub type DescriptorTable = BTreeMap<String, Vec<f64>>;

/// `svm-head.json`: what turns an image into probabilities on top of the backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvmHead {
    /// `None`: too few positive or negative images for this task (probability 0 is given).
    pub melanoma: Option<CalibratedSvm>,
    pub keratosis: Option<CalibratedSvm>,
    pub tta: TtaMode,
    pub tta_seed: u64,
    /// Width of the descriptor block appended to the features (0 = none). Prediction needs
    /// the same descriptors (the bundle computes them from its own masks).
    pub descriptors: usize,
    /// Column means of the descriptors over the training images: the value given to an
    /// image without descriptors (an empty predicted mask), counted and reported.
    pub descriptor_fill: Vec<f64>,
    /// Patient metadata appended last (`age / 100` + missing flag, sex one-hot), read from
    /// the manifest's `age` / `sex` columns at prediction too.
    #[serde(default)]
    pub metadata: MetadataEncoding,
    /// `age / 100` given to an image without an age: the training images' mean.
    #[serde(default)]
    pub age_fill: f64,
    pub trained_on: Vec<String>,
}

/// `COMPLETE.json` of an SVM-head folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SvmHeadCompletion {
    pub images: usize,
    pub folds: usize,
    pub fold_auc_melanoma: Vec<Option<f64>>,
    pub fold_auc_keratosis: Vec<Option<f64>>,
    pub auc_melanoma: Option<Spread>,
    pub auc_keratosis: Option<Spread>,
    /// AUC of all out-of-fold predictions pooled (the honest single number).
    pub pooled_auc_melanoma: Option<f64>,
    pub pooled_auc_keratosis: Option<f64>,
    pub images_without_descriptors: usize,
    pub seconds: f64,
}

/// What to train.
pub struct SvmHeadRequest<'a> {
    /// The backbone's config (`[model]` with `pretrained = true`; `[data]` for the cache size).
    pub cfg: ClsTrainConfig,
    pub rows: &'a [LabelledRow],
    pub out: PathBuf,
    pub cache: &'a PreprocessCache,
    pub weights_cache: &'a Path,
    pub device: Device,
    pub folds: usize,
    pub fold_seed: u64,
    pub tta: TtaMode,
    pub tta_seed: u64,
    pub search: SearchConfig,
    pub descriptors: Option<&'a DescriptorTable>,
    /// Patient metadata appended to the features.
    pub metadata: MetadataEncoding,
    /// Reuse the features of an earlier head folder (same backbone config, TTA and images,
    /// checked) instead of extracting them again.
    pub features_from: Option<PathBuf>,
    pub progress: bool,
}

/// Writes per-image features and their ids.
fn save_features(dir: &Path, ids: &[&str], features: &[Vec<f64>]) -> Result<()> {
    let width = features.first().map_or(0, Vec::len);
    let flat: Vec<f32> = features.iter().flatten().map(|&v| v as f32).collect();
    let t = tch::Tensor::from_slice(&flat).view([features.len() as i64, width as i64]);
    lesion_core::checkpoint::write_tensors_atomic(
        &dir.join(FEATURES_FILE),
        &[("features".to_string(), t)],
    )?;
    run::atomic_write(&dir.join(FEATURES_IDS_FILE), (ids.join("\n") + "\n").as_bytes())
}

/// Ids of [`FEATURES_FILE`], one a line.
pub const FEATURES_IDS_FILE: &str = "features.ids.txt";

/// Reads the features of an earlier head folder for `ids` (in that order). The folder's
/// backbone config and TTA must equal `cfg`'s and `tta`, and it must have every id.
fn load_features(
    dir: &Path,
    cfg: &ClsTrainConfig,
    tta: TtaMode,
    ids: &[&str],
) -> Result<Vec<Vec<f64>>> {
    let theirs = ClsTrainConfig::from_toml_file(&dir.join(CONFIG_FILE))?;
    if theirs.model != cfg.model || theirs.data != cfg.data {
        return Err(TrainError::file(
            dir,
            "its backbone config differs from this one: its features are not these",
        ));
    }
    let head: SvmHead = run::read_json(&dir.join(SVM_HEAD_FILE))?;
    if head.tta != tta {
        return Err(TrainError::file(
            dir,
            format!("its features were taken with TTA {:?}, not {tta:?}", head.tta),
        ));
    }
    let ids_path = dir.join(FEATURES_IDS_FILE);
    let text = std::fs::read_to_string(&ids_path).map_err(|e| TrainError::file(&ids_path, e))?;
    let index: BTreeMap<&str, usize> = text.lines().enumerate().map(|(i, l)| (l, i)).collect();
    let path = dir.join(FEATURES_FILE);
    let tensors = tch::Tensor::read_safetensors(&path).map_err(|e| TrainError::file(&path, e))?;
    let t = tensors
        .into_iter()
        .find(|(n, _)| n == "features")
        .map(|(_, t)| t)
        .ok_or_else(|| TrainError::file(&path, "no `features` tensor"))?;
    let size = t.size();
    if size.len() != 2 || size[0] as usize != index.len() {
        return Err(TrainError::file(&path, format!("shape {size:?} for {} ids", index.len())));
    }
    let width = size[1] as usize;
    let flat = Vec::<f32>::try_from(t.contiguous().view([-1])).map_err(TrainError::from)?;
    ids.iter()
        .map(|id| {
            let i = *index
                .get(id)
                .ok_or_else(|| TrainError::file(&ids_path, format!("has no features for {id}")))?;
            Ok(flat[i * width..(i + 1) * width].iter().map(|&v| f64::from(v)).collect())
        })
        .collect()
}

/// Per image, the mean of its replicas' features (N rows of F).
fn image_features(
    model: &ClsModel,
    rows: &[LabelledRow],
    pixels: Pixels<'_>,
    tta: TtaMode,
    tta_seed: u64,
    device: Device,
    progress: bool,
) -> Result<Vec<Vec<f64>>> {
    let settings = PredictSettings {
        mode: tta,
        pool: Pool::Avg,
        seed: tta_seed,
        features: Some(FeatureExport::PerReplica),
    };
    let p = predict_pixels(std::slice::from_ref(model), rows, pixels, &settings, device, progress)?;
    p.features
        .iter()
        .map(|t| {
            let mean = t.mean_dim([0i64].as_slice(), false, tch::Kind::Float);
            let v = Vec::<f32>::try_from(mean.contiguous().view([-1])).map_err(TrainError::from)?;
            Ok(v.into_iter().map(f64::from).collect())
        })
        .collect()
}

/// Appends each row's descriptors (the fill for a row without); returns the design rows and
/// how many rows had none.
fn with_descriptors(
    features: &[Vec<f64>],
    ids: &[&str],
    table: Option<&DescriptorTable>,
    fill: &[f64],
) -> (Vec<Vec<f64>>, usize) {
    let Some(table) = table else { return (features.to_vec(), 0) };
    let mut missing = 0;
    let rows = features
        .iter()
        .zip(ids)
        .map(|(f, id)| {
            let mut r = f.clone();
            match table.get(*id) {
                Some(d) => r.extend_from_slice(d),
                None => {
                    missing += 1;
                    r.extend_from_slice(fill);
                }
            }
            r
        })
        .collect();
    (rows, missing)
}

/// Mean `age / 100` of the rows that have an age (0.5 when none has).
fn age_fill(rows: &[LabelledRow]) -> f64 {
    let ages: Vec<f64> = patient_meta(rows).values().filter_map(|m| m.age).collect();
    if ages.is_empty() {
        DEFAULT_AGE_FILL
    } else {
        ages.iter().sum::<f64>() / ages.len() as f64 / AGE_SCALE
    }
}

/// Appends the rows' encoded metadata to `x` (row i ↔ `rows[i]`).
fn with_metadata(x: &mut [Vec<f64>], rows: &[LabelledRow], enc: MetadataEncoding, fill: f64) {
    if !enc.age && !enc.sex {
        return;
    }
    let meta = patient_meta(rows);
    for (r, row) in x.iter_mut().zip(rows) {
        let m = meta.get(&row.row.id).copied().unwrap_or_default();
        if enc.age {
            r.push(m.age.map_or(fill, |a| a / AGE_SCALE));
            r.push(if m.age.is_some() { 0.0 } else { 1.0 });
        }
        if enc.sex {
            r.push(if m.sex == Some(Sex::Male) { 1.0 } else { 0.0 });
            r.push(if m.sex == Some(Sex::Female) { 1.0 } else { 0.0 });
        }
    }
}

/// Column means of the table's rows for `ids` (those present).
fn descriptor_means(table: &DescriptorTable, ids: &[&str]) -> Result<Vec<f64>> {
    let present: Vec<&Vec<f64>> = ids.iter().filter_map(|id| table.get(*id)).collect();
    let width = table.values().next().map_or(0, Vec::len);
    if present.is_empty() || width == 0 {
        return Err(TrainError::Config("no training image has descriptors".into()));
    }
    if table.values().any(|v| v.len() != width) {
        return Err(TrainError::Config("descriptor rows of different widths".into()));
    }
    let n = present.len() as f64;
    Ok((0..width).map(|j| present.iter().map(|r| r[j]).sum::<f64>() / n).collect())
}

/// What a design row gets where an image lacks a value: the descriptor means and the mean
/// `age / 100` of the rows the head is fitted on (never of the rows it scores).
struct DesignFill {
    /// Empty without descriptors.
    descriptors: Vec<f64>,
    age: f64,
}

impl DesignFill {
    fn of(rows: &[LabelledRow], table: Option<&DescriptorTable>) -> Result<Self> {
        let descriptors = match table {
            Some(t) => {
                let ids: Vec<&str> = rows.iter().map(|r| r.row.id.as_str()).collect();
                descriptor_means(t, &ids)?
            }
            None => Vec::new(),
        };
        Ok(Self { descriptors, age: age_fill(rows) })
    }
}

/// The head's design rows (row i ↔ `rows[i]`): features, then descriptors, then metadata. The
/// one place that sets the column order, for fitting and for prediction alike. Also returns how
/// many rows had no descriptors.
fn design_rows(
    features: &[Vec<f64>],
    rows: &[LabelledRow],
    table: Option<&DescriptorTable>,
    fill: &DesignFill,
    metadata: MetadataEncoding,
) -> (Vec<Vec<f64>>, usize) {
    let ids: Vec<&str> = rows.iter().map(|r| r.row.id.as_str()).collect();
    let (mut x, missing) = with_descriptors(features, &ids, table, &fill.descriptors);
    with_metadata(&mut x, rows, metadata, fill.age);
    (x, missing)
}

/// Fits the SVM pair on `(x, classes)` (one row per image).
fn fit_pair(
    x: &[Vec<f64>],
    classes: &[LesionClass],
    search: &SearchConfig,
) -> Result<(Option<CalibratedSvm>, Option<CalibratedSvm>)> {
    let m = FeatureMatrix::from_rows(x)?;
    let image_of: Vec<usize> = (0..x.len()).collect();
    let y = |c: LesionClass| -> Vec<bool> { classes.iter().map(|&k| k == c).collect() };
    let fit = |class: LesionClass| -> Result<Option<CalibratedSvm>> {
        let fitted = fit_grouped_svm(&m, &y(class), &image_of, search)?;
        if let Some((_, result)) = &fitted {
            info!(
                task = %class,
                log2_c = result.best.log2_c,
                inner_auc = result.best.mean_auc,
                "SVM head: C chosen"
            );
        }
        Ok(fitted.map(|r| r.0))
    };
    // The two tasks are independent fits; on a machine with more cores than the C search's
    // folds they run side by side (each result is the same as fitted alone).
    let (mel, ker) =
        rayon::join(|| fit(LesionClass::Melanoma), || fit(LesionClass::SeborrheicKeratosis));
    Ok((mel?, ker?))
}

/// Three-class probabilities of design rows: the calibrated task probabilities, nevus = the
/// rest (clipped at 0; melanoma and keratosis are scored independently).
fn probabilities(
    x: &[Vec<f64>],
    mel: &Option<CalibratedSvm>,
    ker: &Option<CalibratedSvm>,
) -> Result<Vec<[f64; NUM_CLASSES]>> {
    let m = FeatureMatrix::from_rows(x)?;
    let score = |s: &Option<CalibratedSvm>| -> Result<Vec<f64>> {
        match s {
            Some(s) => Ok(s.predict_proba(&m)?),
            None => Ok(vec![0.0; x.len()]),
        }
    };
    let pm = score(mel)?;
    let pk = score(ker)?;
    Ok(pm
        .iter()
        .zip(&pk)
        .map(|(&a, &b)| {
            let mut p = [0.0; NUM_CLASSES];
            p[LesionClass::Melanoma.index()] = a;
            p[LesionClass::SeborrheicKeratosis.index()] = b;
            p[LesionClass::Nevus.index()] = (1.0 - a - b).max(0.0);
            p
        })
        .collect())
}

/// One outer fold's out-of-fold fit: its test rows (indices into the request's rows) and their
/// probabilities.
struct FoldFit {
    test: Vec<usize>,
    probs: Vec<[f64; NUM_CLASSES]>,
}

/// The head kept (fitted on every image) with the fills it used.
struct KeptFit {
    melanoma: Option<CalibratedSvm>,
    keratosis: Option<CalibratedSvm>,
    /// The fills of every image.
    fill: DesignFill,
    /// Images without descriptors.
    missing: usize,
}

/// Trains the head: backbone as loaded → features → out-of-fold estimate → head on all
/// images. Writes the folder (see the module doc); `COMPLETE.json` last.
pub fn train_svm_head(req: SvmHeadRequest<'_>) -> Result<SvmHeadCompletion> {
    let t0 = std::time::Instant::now();
    if !req.cfg.model.pretrained {
        return Err(TrainError::Config(
            "an SVM head needs a pretrained backbone ([model] pretrained = true)".into(),
        ));
    }
    if req.folds == 1 {
        return Err(TrainError::Config(
            "1 fold: give at least 2 for the out-of-fold estimate, or 0 for none".into(),
        ));
    }
    // One writer per folder, as every run.
    let _lock = run::create_locked(&req.out)?;
    run::atomic_write(&req.out.join(CONFIG_FILE), req.cfg.to_toml()?.as_bytes())?;
    let model = ClsModel::build(&req.cfg, req.device)?;
    lesion_models::classifier::load_pretrained(
        &req.cfg.model,
        CLASSES,
        &model.net,
        &model.vs,
        req.weights_cache,
    )?;
    save_model(&CheckpointPaths::new(&req.out).best, &model.vs)?;
    let split =
        run::Split { train: req.rows.iter().map(|r| r.row.id.clone()).collect(), val: vec![] };
    run::write_json(&req.out.join(run::SPLIT_FILE), &split)?;

    let ids: Vec<&str> = req.rows.iter().map(|r| r.row.id.as_str()).collect();
    let features = match &req.features_from {
        Some(dir) => load_features(dir, &req.cfg, req.tta, &ids)?,
        None => {
            info!(images = req.rows.len(), "SVM head: extracting features");
            image_features(
                &model,
                req.rows,
                Pixels::Cache(req.cache),
                req.tta,
                req.tta_seed,
                req.device,
                req.progress,
            )?
        }
    };
    save_features(&req.out, &ids, &features)?;
    let classes: Vec<LesionClass> = req.rows.iter().map(|r| r.class).collect();
    // folds = 0: no out-of-fold estimate (only the head on every image, e.g. for a seed study
    // of the final head).
    let mut fold_auc_melanoma = Vec::new();
    let mut fold_auc_keratosis = Vec::new();
    let mut oof_pooled: Option<Vec<[f64; NUM_CLASSES]>> = None;
    let fold_of =
        (req.folds > 0).then(|| stratified_group_folds(req.rows, req.folds, req.fold_seed));
    if let Some(fold_of) = &fold_of {
        // The fold of each image, so that heads on the same folds can be compared fold by fold.
        let folds: BTreeMap<&str, usize> =
            ids.iter().copied().zip(fold_of.iter().copied()).collect();
        run::write_json(&req.out.join(FOLDS_FILE), &folds)?;
    }
    // The out-of-fold pairs and the head kept are independent fits: they run side by side
    // (rayon; what each returns does not depend on the threads, and results are collected in
    // fold order), so a many-core machine is not limited to the C search's inner folds.
    let fit_fold = |fold: usize, fold_of: &[usize]| -> Result<FoldFit> {
        let in_test = |i: usize| fold_of[i] == fold;
        // The fills come from the fold's training rows only: the test rows stay unseen.
        let rtr: Vec<LabelledRow> =
            (0..req.rows.len()).filter(|&i| !in_test(i)).map(|i| req.rows[i].clone()).collect();
        let fill = DesignFill::of(&rtr, req.descriptors)?;
        // One design matrix under the fold's fills, split by fold: each feature row is copied
        // once (every row's columns depend on that row and the fills only).
        let (x, _) = design_rows(&features, req.rows, req.descriptors, &fill, req.metadata);
        let (mut xtr, mut ctr, mut xte, mut test) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, row) in x.into_iter().enumerate() {
            if in_test(i) {
                test.push(i);
                xte.push(row);
            } else {
                ctr.push(classes[i]);
                xtr.push(row);
            }
        }
        let (mel, ker) = fit_pair(&xtr, &ctr, &req.search)?;
        Ok(FoldFit { test, probs: probabilities(&xte, &mel, &ker)? })
    };
    let fit_kept = || -> Result<KeptFit> {
        let fill = DesignFill::of(req.rows, req.descriptors)?;
        let (x, missing) = design_rows(&features, req.rows, req.descriptors, &fill, req.metadata);
        let (melanoma, keratosis) = fit_pair(&x, &classes, &req.search)?;
        Ok(KeptFit { melanoma, keratosis, fill, missing })
    };
    let (fold_fits, kept) = rayon::join(
        || -> Result<Vec<FoldFit>> {
            match &fold_of {
                Some(fold_of) => (0..req.folds)
                    .into_par_iter()
                    .map(|fold| fit_fold(fold, fold_of))
                    .collect_in_order(),
                None => Ok(Vec::new()),
            }
        },
        fit_kept,
    );
    let (fold_fits, kept) = (fold_fits?, kept?);
    if fold_of.is_some() {
        let mut oof: Vec<Option<[f64; NUM_CLASSES]>> = vec![None; req.rows.len()];
        for (fold, fit) in fold_fits.into_iter().enumerate() {
            let cte: Vec<LesionClass> = fit.test.iter().map(|&i| classes[i]).collect();
            fold_auc_melanoma.push(one_vs_rest_auc(&cte, &fit.probs, LesionClass::Melanoma));
            fold_auc_keratosis.push(one_vs_rest_auc(
                &cte,
                &fit.probs,
                LesionClass::SeborrheicKeratosis,
            ));
            info!(fold, auc_melanoma = ?fold_auc_melanoma.last().copied().flatten(), auc_keratosis = ?fold_auc_keratosis.last().copied().flatten(), "SVM head fold");
            for (&i, pi) in fit.test.iter().zip(fit.probs) {
                oof[i] = Some(pi);
            }
        }
        let oof: Vec<[f64; NUM_CLASSES]> = oof
            .into_iter()
            .enumerate()
            .map(|(i, p)| p.ok_or_else(|| TrainError::Config(format!("{} was in no fold", ids[i]))))
            .collect::<Result<_>>()?;
        let preds: Vec<ImagePrediction> = ids
            .iter()
            .zip(&oof)
            .map(|(id, p)| ImagePrediction { id: id.to_string(), probs: *p, replicas: vec![*p] })
            .collect();
        write_isic2017_csv(&req.out.join(OOF_CSV), &preds)?;
        write_truth_csv(&req.out.join(TRUTH_CSV), req.rows)?;
        oof_pooled = Some(oof);
    }
    let KeptFit { melanoma, keratosis, fill, missing } = kept;
    let head = SvmHead {
        melanoma,
        keratosis,
        tta: req.tta,
        tta_seed: req.tta_seed,
        descriptors: fill.descriptors.len(),
        descriptor_fill: fill.descriptors,
        metadata: req.metadata,
        age_fill: fill.age,
        trained_on: ids.iter().map(|s| s.to_string()).collect(),
    };
    run::write_json(&req.out.join(SVM_HEAD_FILE), &head)?;
    let spread = |v: &[Option<f64>]| Spread::of(&v.iter().flatten().copied().collect::<Vec<_>>());
    let completion = SvmHeadCompletion {
        images: req.rows.len(),
        folds: req.folds,
        auc_melanoma: spread(&fold_auc_melanoma),
        auc_keratosis: spread(&fold_auc_keratosis),
        fold_auc_melanoma,
        fold_auc_keratosis,
        pooled_auc_melanoma: oof_pooled
            .as_ref()
            .and_then(|o| one_vs_rest_auc(&classes, o, LesionClass::Melanoma)),
        pooled_auc_keratosis: oof_pooled
            .as_ref()
            .and_then(|o| one_vs_rest_auc(&classes, o, LesionClass::SeborrheicKeratosis)),
        images_without_descriptors: missing,
        seconds: t0.elapsed().as_secs_f64(),
    };
    run::write_json(&req.out.join(COMPLETE_FILE), &completion)?;
    Ok(completion)
}

/// Reads a folder's `svm-head.json`; `None` when it has none (a fine-tuned classifier).
pub fn read_head(dir: &Path) -> Result<Option<SvmHead>> {
    let p = dir.join(SVM_HEAD_FILE);
    if !p.exists() {
        return Ok(None);
    }
    run::read_json(&p).map(Some)
}

/// Predicts `rows` with a backbone and its head. `descriptors` must be given when the head
/// was trained with them (an image absent from the table gets the training means).
pub fn predict_with_head(
    model: &ClsModel,
    head: &SvmHead,
    rows: &[LabelledRow],
    pixels: Pixels<'_>,
    descriptors: Option<&DescriptorTable>,
    device: Device,
    progress: bool,
) -> Result<Vec<ImagePrediction>> {
    if head.descriptors > 0 && descriptors.is_none() {
        return Err(TrainError::Config(
            "this SVM head was trained with lesion descriptors: give them (a bundle computes them from its masks)".into(),
        ));
    }
    let features = image_features(model, rows, pixels, head.tta, head.tta_seed, device, progress)?;
    let ids: Vec<&str> = rows.iter().map(|r| r.row.id.as_str()).collect();
    let table = if head.descriptors > 0 { descriptors } else { None };
    let fill = DesignFill { descriptors: head.descriptor_fill.clone(), age: head.age_fill };
    let (x, _) = design_rows(&features, rows, table, &fill, head.metadata);
    let p = probabilities(&x, &head.melanoma, &head.keratosis)?;
    Ok(ids
        .iter()
        .zip(p)
        .map(|(id, p)| ImagePrediction { id: id.to_string(), probs: p, replicas: vec![p] })
        .collect())
}

/// Reads `image_id,<name…>` descriptor CSVs (from `lesion crop`); a duplicated id or a row of
/// another width is an error naming the file and line.
pub fn read_descriptors(path: &Path) -> Result<DescriptorTable> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| TrainError::file(path, e))?;
    let width = reader.headers().map_err(|e| TrainError::file(path, e))?.len().saturating_sub(1);
    let mut out = DescriptorTable::new();
    for (i, rec) in reader.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| TrainError::file(path, format!("line {line}: {e}")))?;
        let id = rec.get(0).unwrap_or_default().to_string();
        let values = rec
            .iter()
            .skip(1)
            .map(|v| {
                v.parse::<f64>().ok().filter(|x| x.is_finite()).ok_or_else(|| {
                    TrainError::file(path, format!("line {line}: {v:?} is not a finite number"))
                })
            })
            .collect::<Result<Vec<f64>>>()?;
        if values.len() != width {
            return Err(TrainError::file(
                path,
                format!("line {line}: {} values, header has {width}", values.len()),
            ));
        }
        if out.insert(id.clone(), values).is_some() {
            return Err(TrainError::file(path, format!("line {line}: id {id} appears twice")));
        }
    }
    Ok(out)
}
