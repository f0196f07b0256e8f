//! Stacking components made from classification runs: reading a cross-validation folder's
//! out-of-fold replica predictions and provenance, SVM layers on a CV's penultimate features,
//! and predicting any component on new images. The meta-learner itself is
//! [`crate::ensemble`] (no tch there).
//!
//! Component folders:
//! * a `lesion cls cv` folder (`folds.json`, `fold-<k>/` run folders, `oof-replicas.csv`);
//! * an SVM-layer folder written by [`train_svm_layer`] (`component.json` naming its CV folder,
//!   `svm-fold-<k>.json`, `oof-replicas.csv`, `folds.json`);
//! * a `lesion cls train` run folder (holdout mode only: it has no out-of-fold predictions).
//!
//! Provenance: the model of fold k of a CV (and the SVMs of fold k of an SVM layer) predicts the
//! images of fold k and was trained on the images its run folder's `split.json` lists (train and
//! validation: early stopping on validation images is also "seeing" them).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::cv::{SearchConfig, SearchResult};
use crate::ensemble::{fit_grouped_svm, Component, Provenance, ReplicaTable};
use crate::meta::TaskProbs;
use crate::pipeline::CalibratedSvm;
use crate::FeatureMatrix;
use lesion_data::cache::PreprocessCache;
use serde::{Deserialize, Serialize};
use tch::Device;
use tracing::info;

use lesion_cls::cv::{predict_pixels, PredictSettings, FOLDS_FILE, OOF_REPLICAS_CSV};
use lesion_cls::model::{load_model, ClsModel, Pixels};
use lesion_cls::tta::FeatureExport;
use lesion_core::run::{self, Split};
use lesion_core::{Result, TrainError};
use lesion_data::labels::{LabelledRow, LesionClass, NUM_CLASSES};

/// Marks (and describes) an SVM-layer component folder.
pub const COMPONENT_FILE: &str = "component.json";
/// Summary of an SVM layer's cross-validation.
pub const SVM_LAYER_JSON: &str = "svm-layer.json";

/// A CV folder's fold run folder.
pub fn fold_dir(cv_dir: &Path, fold: usize) -> PathBuf {
    cv_dir.join(format!("fold-{fold}"))
}

/// An SVM layer's fold file.
pub fn svm_fold_file(dir: &Path, fold: usize) -> PathBuf {
    dir.join(format!("svm-fold-{fold}.json"))
}

/// What an SVM layer's rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SvmRows {
    /// One training row per TTA replica (the image is the group of the C search).
    Replica,
    /// One row per image: the mean of its replicas' features.
    Image,
}

/// `component.json` of an SVM-layer folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvmLayerInfo {
    /// The cross-validation folder whose fold models give the features.
    pub cv: PathBuf,
    pub rows: SvmRows,
    pub search: SearchConfig,
}

/// What a component folder is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ComponentKind {
    Cv,
    SvmLayer(SvmLayerInfo),
    Run,
}

/// Recognises a component folder.
pub fn component_kind(dir: &Path) -> Result<ComponentKind> {
    if dir.join(COMPONENT_FILE).exists() {
        return run::read_json(&dir.join(COMPONENT_FILE));
    }
    if dir.join(FOLDS_FILE).exists() {
        return Ok(ComponentKind::Cv);
    }
    if run::is_complete(dir) {
        return Ok(ComponentKind::Run);
    }
    Err(TrainError::file(dir, "not a stacking component: expected a `lesion cls cv` folder (folds.json), an SVM-layer folder (component.json) or a complete `lesion cls train` run folder"))
}

/// The images a run folder's model was trained on (its split's train and validation ids).
pub fn run_training_ids(run_dir: &Path) -> Result<BTreeSet<String>> {
    let split: Split = run::read_json(&run_dir.join(run::SPLIT_FILE))?;
    Ok(split.train.into_iter().chain(split.val).collect())
}

/// A CV folder's fold of each image.
pub fn read_folds(dir: &Path) -> Result<BTreeMap<String, usize>> {
    run::read_json(&dir.join(FOLDS_FILE))
}

/// One line of `oof-replicas.csv`.
#[derive(Debug, Deserialize)]
struct ReplicaLine {
    image_id: String,
    fold: usize,
    replica: usize,
    melanoma: f64,
    seborrheic_keratosis: f64,
}

/// Reads a CV or SVM-layer folder as a component: its out-of-fold replica predictions, the
/// fold of each image, and the provenance (model `fold-<k>` predicted fold k's images and was
/// trained on what its run folder lists; an SVM layer adds the ids its SVMs were fitted on).
pub fn read_oof_component(dir: &Path, name: &str) -> Result<(Component, BTreeMap<String, usize>)> {
    let kind = component_kind(dir)?;
    let path = dir.join(OOF_REPLICAS_CSV);
    if !path.exists() {
        return Err(TrainError::file(&path, "missing: rerun the same `lesion cls cv` command to write it (complete folds are reused, only prediction runs)"));
    }
    let mut reader = csv::Reader::from_path(&path).map_err(|e| TrainError::file(&path, e))?;
    let mut images: BTreeMap<String, Vec<TaskProbs>> = BTreeMap::new();
    let mut fold_of: BTreeMap<String, usize> = BTreeMap::new();
    for (i, rec) in reader.deserialize::<ReplicaLine>().enumerate() {
        let line = i + 2;
        let r = rec.map_err(|e| TrainError::file(&path, format!("line {line}: {e}")))?;
        for (col, v) in [("melanoma", r.melanoma), ("seborrheic_keratosis", r.seborrheic_keratosis)]
        {
            if !(0.0..=1.0).contains(&v) {
                return Err(TrainError::file(
                    &path,
                    format!("line {line}, column {col}: probability {v} outside [0, 1]"),
                ));
            }
        }
        let reps = images.entry(r.image_id.clone()).or_default();
        if r.replica != reps.len() {
            return Err(TrainError::file(
                &path,
                format!(
                    "line {line}: replica {} of {} out of order (expected {})",
                    r.replica,
                    r.image_id,
                    reps.len()
                ),
            ));
        }
        reps.push(TaskProbs { melanoma: r.melanoma, keratosis: r.seborrheic_keratosis });
        if let Some(f) = fold_of.insert(r.image_id.clone(), r.fold) {
            if f != r.fold {
                return Err(TrainError::file(
                    &path,
                    format!("line {line}: {} in folds {f} and {}", r.image_id, r.fold),
                ));
            }
        }
    }
    let model_dir = match &kind {
        ComponentKind::SvmLayer(info) => info.cv.clone(),
        _ => dir.to_path_buf(),
    };
    let mut provenance = Provenance::default();
    for (id, &fold) in &fold_of {
        provenance.model_of.insert(id.clone(), format!("fold-{fold}"));
    }
    for fold in fold_of.values().copied().collect::<BTreeSet<_>>() {
        let mut seen = run_training_ids(&fold_dir(&model_dir, fold))?;
        if matches!(kind, ComponentKind::SvmLayer(_)) {
            let svm: SvmFold = run::read_json(&svm_fold_file(dir, fold))?;
            seen.extend(svm.trained_on);
        }
        provenance.trained_on.insert(format!("fold-{fold}"), seen);
    }
    Ok((Component { table: ReplicaTable { name: name.to_string(), images }, provenance }, fold_of))
}

/// Prediction settings of a run folder's own TTA configuration.
fn settings_of(model: &ClsModel, features: Option<FeatureExport>) -> Result<PredictSettings> {
    Ok(PredictSettings {
        mode: model.cfg.tta.replicas,
        pool: model.cfg.tta.pool,
        seed: model.cfg.tta.seed,
        features,
    })
}

fn to_task(p: &[f64; NUM_CLASSES]) -> TaskProbs {
    TaskProbs {
        melanoma: p[LesionClass::Melanoma.index()],
        keratosis: p[LesionClass::SeborrheicKeratosis.index()],
    }
}

/// The fold count of a CV folder (from its fold folders).
/// The number of folds of a CV folder (from its `folds.json`).
pub fn fold_count(cv_dir: &Path) -> Result<usize> {
    let folds = read_folds(cv_dir)?;
    let k = folds.values().copied().max().map_or(0, |m| m + 1);
    if k == 0 {
        return Err(TrainError::file(cv_dir.join(FOLDS_FILE), "no folds"));
    }
    Ok(k)
}

/// Predicts a component on `rows`: a CV folder by all its fold models (replica-wise mean), an
/// SVM layer by each fold's net + SVMs (replica-wise mean over folds), a run folder by its model.
pub fn predict_component(
    dir: &Path,
    name: &str,
    rows: &[LabelledRow],
    cache: &PreprocessCache,
    device: Device,
    progress: bool,
) -> Result<ReplicaTable> {
    LoadedComponent::load(dir, &component_kind(dir)?, device)?.predict(
        name,
        rows,
        Pixels::Cache(cache),
        device,
        progress,
    )
}

/// A component's nets in memory (a model bundle keeps them loaded between requests).
pub enum LoadedComponent {
    /// A run (one model) or a CV (its fold models): their probabilities averaged replica-wise.
    Nets(Vec<ClsModel>),
    /// An SVM layer: each fold's net and SVMs, averaged replica-wise over folds.
    SvmLayer(Vec<(ClsModel, SvmFold)>),
}

impl LoadedComponent {
    /// Loads the component in `dir` of the given kind (an SVM layer's nets come from its
    /// `kind`'s CV folder).
    pub fn load(dir: &Path, kind: &ComponentKind, device: Device) -> Result<LoadedComponent> {
        Ok(match kind {
            ComponentKind::Run => LoadedComponent::Nets(vec![load_model(dir, device)?]),
            ComponentKind::Cv => LoadedComponent::Nets(
                (0..fold_count(dir)?)
                    .map(|f| load_model(&fold_dir(dir, f), device))
                    .collect::<Result<Vec<_>>>()?,
            ),
            ComponentKind::SvmLayer(info) => LoadedComponent::SvmLayer(
                (0..fold_count(&info.cv)?)
                    .map(|f| {
                        Ok((
                            load_model(&fold_dir(&info.cv, f), device)?,
                            run::read_json::<SvmFold>(&svm_fold_file(dir, f))?,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
        })
    }

    /// The component's replica probabilities of `rows`.
    pub fn predict(
        &self,
        name: &str,
        rows: &[LabelledRow],
        pixels: Pixels<'_>,
        device: Device,
        progress: bool,
    ) -> Result<ReplicaTable> {
        match self {
            LoadedComponent::Nets(models) => {
                let first = models
                    .first()
                    .ok_or_else(|| TrainError::Config(format!("component {name} has no nets")))?;
                let s = settings_of(first, None)?;
                let p = predict_pixels(models, rows, pixels, &s, device, progress)?;
                Ok(ReplicaTable {
                    name: name.to_string(),
                    images: p
                        .predictions
                        .into_iter()
                        .map(|p| (p.id, p.replicas.iter().map(to_task).collect()))
                        .collect(),
                })
            }
            LoadedComponent::SvmLayer(folds) => {
                let k = folds.len() as f64;
                let mut sum: BTreeMap<String, Vec<TaskProbs>> = BTreeMap::new();
                for (model, svm) in folds {
                    let ex = extract(model, rows, pixels, device, progress)?;
                    for (id, reps) in svm_probs(&ex, svm)? {
                        let acc = sum.entry(id).or_insert_with(|| {
                            vec![TaskProbs { melanoma: 0.0, keratosis: 0.0 }; reps.len()]
                        });
                        for (a, r) in acc.iter_mut().zip(&reps) {
                            a.melanoma += r.melanoma / k;
                            a.keratosis += r.keratosis / k;
                        }
                    }
                }
                Ok(ReplicaTable { name: name.to_string(), images: sum })
            }
        }
    }
}

/// One fold of an SVM layer: a calibrated SVM per task (`None`: the task had too few positive
/// or negative images to search C; the net's own softmax probability is used instead).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvmFold {
    pub melanoma: Option<CalibratedSvm>,
    pub keratosis: Option<CalibratedSvm>,
    pub melanoma_search: Option<SearchResult>,
    pub keratosis_search: Option<SearchResult>,
    /// Ids of the images whose features the SVMs were fitted on.
    pub trained_on: Vec<String>,
}

/// Features and net probabilities of `rows` under the model's TTA: per image, R replica
/// feature rows and R replica probabilities.
struct Extracted {
    ids: Vec<String>,
    features: Vec<Vec<Vec<f64>>>,
    probs: Vec<Vec<[f64; NUM_CLASSES]>>,
}

fn extract(
    model: &ClsModel,
    rows: &[LabelledRow],
    pixels: Pixels<'_>,
    device: Device,
    progress: bool,
) -> Result<Extracted> {
    let s = settings_of(model, Some(FeatureExport::PerReplica))?;
    let p = predict_pixels(std::slice::from_ref(model), rows, pixels, &s, device, progress)?;
    let mut features = Vec::with_capacity(p.features.len());
    for t in &p.features {
        let size = t.size();
        let (r, f) = match size.as_slice() {
            [r, f] => (*r as usize, *f as usize),
            _ => {
                return Err(TrainError::Config(format!(
                    "feature tensor of shape {size:?}, expected R×F"
                )))
            }
        };
        let flat = Vec::<f32>::try_from(t.contiguous().view([-1])).map_err(TrainError::from)?;
        features.push(
            (0..r)
                .map(|i| flat[i * f..(i + 1) * f].iter().map(|&v| f64::from(v)).collect())
                .collect(),
        );
    }
    let ids = p.predictions.iter().map(|x| x.id.clone()).collect();
    let probs = p.predictions.into_iter().map(|x| x.replicas).collect();
    Ok(Extracted { ids, features, probs })
}

/// Design matrix of extracted features; returns rows, the image index of each row.
fn design(ex: &Extracted, how: SvmRows) -> Result<(FeatureMatrix, Vec<usize>)> {
    let mut data: Vec<Vec<f64>> = Vec::new();
    let mut image_of = Vec::new();
    for (i, reps) in ex.features.iter().enumerate() {
        match how {
            SvmRows::Replica => {
                for r in reps {
                    data.push(r.clone());
                    image_of.push(i);
                }
            }
            SvmRows::Image => {
                let n = reps.len().max(1) as f64;
                let width = reps.first().map_or(0, Vec::len);
                let mut mean = vec![0.0; width];
                for r in reps {
                    for (m, v) in mean.iter_mut().zip(r) {
                        *m += v / n;
                    }
                }
                data.push(mean);
                image_of.push(i);
            }
        }
    }
    Ok((FeatureMatrix::from_rows(&data)?, image_of))
}

/// Per image, per replica task probabilities of the SVMs (the net's softmax for a task
/// without an SVM). Every replica is scored, whatever rows the SVM was trained on.
fn svm_probs(ex: &Extracted, svm: &SvmFold) -> Result<Vec<(String, Vec<TaskProbs>)>> {
    let (x, image_of) = design(ex, SvmRows::Replica)?;
    let score = |m: &Option<CalibratedSvm>| -> Result<Option<Vec<f64>>> {
        m.as_ref().map(|m| m.predict_proba(&x)).transpose().map_err(TrainError::from)
    };
    let mel = score(&svm.melanoma)?;
    let ker = score(&svm.keratosis)?;
    let mut out: Vec<(String, Vec<TaskProbs>)> =
        ex.ids.iter().map(|id| (id.clone(), Vec::new())).collect();
    let mut replica_of_image = vec![0usize; ex.ids.len()];
    for (row, &i) in image_of.iter().enumerate() {
        let r = replica_of_image[i];
        replica_of_image[i] += 1;
        let net = to_task(&ex.probs[i][r.min(ex.probs[i].len().saturating_sub(1))]);
        let m = mel.as_ref().map_or(net.melanoma, |v| v[row]);
        let k = ker.as_ref().map_or(net.keratosis, |v| v[row]);
        out[i].1.push(TaskProbs { melanoma: m, keratosis: k });
    }
    Ok(out)
}

/// An SVM-layer request: one SVM pair per fold of `cv_dir`, fitted on that fold's training
/// images' features (from that fold's model) and scoring its test images.
pub struct SvmLayerRequest<'a> {
    pub cv_dir: PathBuf,
    pub out_dir: PathBuf,
    /// The labelled rows of the CV's manifest.
    pub rows: &'a [LabelledRow],
    pub cache: &'a PreprocessCache,
    pub device: Device,
    pub svm_rows: SvmRows,
    pub search: SearchConfig,
    pub progress: bool,
}

/// Per-fold melanoma AUC (and keratosis where defined) of an SVM layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvmLayerSummary {
    pub fold_auc_melanoma: Vec<Option<f64>>,
    pub fold_auc_keratosis: Vec<Option<f64>>,
    pub melanoma_log2_c: Vec<Option<f64>>,
    pub seconds: f64,
}

/// Trains an SVM layer over every fold of a CV folder and writes the component folder.
pub fn train_svm_layer(req: SvmLayerRequest<'_>) -> Result<SvmLayerSummary> {
    let t0 = std::time::Instant::now();
    if !matches!(component_kind(&req.cv_dir)?, ComponentKind::Cv) {
        return Err(TrainError::file(&req.cv_dir, "an SVM layer needs a `lesion cls cv` folder"));
    }
    let folds = read_folds(&req.cv_dir)?;
    let k = fold_count(&req.cv_dir)?;
    std::fs::create_dir_all(&req.out_dir).map_err(|e| TrainError::file(&req.out_dir, e))?;
    let by_id: BTreeMap<&str, &LabelledRow> =
        req.rows.iter().map(|r| (r.row.id.as_str(), r)).collect();
    let mut oof: Vec<(String, usize, Vec<[f64; NUM_CLASSES]>)> = Vec::new();
    let mut summary = SvmLayerSummary {
        fold_auc_melanoma: Vec::new(),
        fold_auc_keratosis: Vec::new(),
        melanoma_log2_c: Vec::new(),
        seconds: 0.0,
    };
    for fold in 0..k {
        let dir = fold_dir(&req.cv_dir, fold);
        let seen = run_training_ids(&dir)?;
        let train_rows: Vec<LabelledRow> =
            seen.iter().filter_map(|id| by_id.get(id.as_str()).map(|r| (*r).clone())).collect();
        let test_rows: Vec<LabelledRow> =
            req.rows.iter().filter(|r| folds.get(&r.row.id) == Some(&fold)).cloned().collect();
        if train_rows.len() != seen.len() {
            return Err(TrainError::file(
                dir.join(run::SPLIT_FILE),
                format!(
                    "{} of its {} training images are not labelled rows of the manifest",
                    seen.len() - train_rows.len(),
                    seen.len()
                ),
            ));
        }
        let model = load_model(&dir, req.device)?;
        info!(
            fold,
            train = train_rows.len(),
            test = test_rows.len(),
            "SVM layer: extracting features"
        );
        let train =
            extract(&model, &train_rows, Pixels::Cache(req.cache), req.device, req.progress)?;
        let (x, image_of) = design(&train, req.svm_rows)?;
        let classes: Vec<LesionClass> = train_rows.iter().map(|r| r.class).collect();
        let y_of =
            |c: LesionClass| -> Vec<bool> { image_of.iter().map(|&i| classes[i] == c).collect() };
        let mel = fit_grouped_svm(&x, &y_of(LesionClass::Melanoma), &image_of, &req.search)?;
        let ker =
            fit_grouped_svm(&x, &y_of(LesionClass::SeborrheicKeratosis), &image_of, &req.search)?;
        summary.melanoma_log2_c.push(mel.as_ref().map(|m| m.1.best.log2_c));
        let (melanoma, melanoma_search) = mel.map_or((None, None), |(m, s)| (Some(m), Some(s)));
        let (keratosis, keratosis_search) = ker.map_or((None, None), |(m, s)| (Some(m), Some(s)));
        let svm = SvmFold {
            melanoma,
            keratosis,
            melanoma_search,
            keratosis_search,
            trained_on: train_rows.iter().map(|r| r.row.id.clone()).collect(),
        };
        let test = extract(&model, &test_rows, Pixels::Cache(req.cache), req.device, req.progress)?;
        let probs = svm_probs(&test, &svm)?;
        let test_classes: Vec<LesionClass> = test_rows.iter().map(|r| r.class).collect();
        let pooled: Vec<[f64; NUM_CLASSES]> = probs
            .iter()
            .map(|(_, reps)| {
                let n = reps.len().max(1) as f64;
                let m = reps.iter().map(|p| p.melanoma).sum::<f64>() / n;
                let s = reps.iter().map(|p| p.keratosis).sum::<f64>() / n;
                [m, s, (1.0 - m - s).max(0.0)]
            })
            .collect();
        summary.fold_auc_melanoma.push(lesion_cls::trainer::one_vs_rest_auc(
            &test_classes,
            &pooled,
            LesionClass::Melanoma,
        ));
        summary.fold_auc_keratosis.push(lesion_cls::trainer::one_vs_rest_auc(
            &test_classes,
            &pooled,
            LesionClass::SeborrheicKeratosis,
        ));
        info!(fold, auc_melanoma = ?summary.fold_auc_melanoma.last().copied().flatten(), "SVM layer fold done");
        run::write_json(&svm_fold_file(&req.out_dir, fold), &svm)?;
        for (id, reps) in probs {
            let full: Vec<[f64; NUM_CLASSES]> = reps
                .iter()
                .map(|p| [p.melanoma, p.keratosis, (1.0 - p.melanoma - p.keratosis).max(0.0)])
                .collect();
            oof.push((id, fold, full));
        }
    }
    oof.sort_by(|a, b| a.0.cmp(&b.0));
    lesion_cls::tta::write_replicas_csv(
        &req.out_dir.join(OOF_REPLICAS_CSV),
        oof.iter().map(|(id, f, r)| (id.as_str(), *f, r.as_slice())),
    )?;
    run::write_json(&req.out_dir.join(FOLDS_FILE), &folds)?;
    summary.seconds = t0.elapsed().as_secs_f64();
    run::write_json(&req.out_dir.join(SVM_LAYER_JSON), &summary)?;
    // Written last: a folder without component.json is not (yet) a component.
    let cv = std::fs::canonicalize(&req.cv_dir).map_err(|e| TrainError::file(&req.cv_dir, e))?;
    run::write_json(
        &req.out_dir.join(COMPONENT_FILE),
        &ComponentKind::SvmLayer(SvmLayerInfo { cv, rows: req.svm_rows, search: req.search }),
    )?;
    Ok(summary)
}

/// How the meta-learner's training features are obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum StackMode {
    /// Cross-fitting: components are CV / SVM-layer folders on common folds; every image's
    /// features come from models that never saw it or its duplicate group (checked).
    Oof,
    /// The paper's scheme: the meta-learner trains on `meta_ids`, which the components predict
    /// (run folders predict them now; CV folders give their out-of-fold predictions); images the
    /// components saw in training are counted and reported. The report uses `folds` stratified
    /// folds of the meta set.
    Holdout { meta_ids: Vec<String>, folds: usize, seed: u64 },
}

/// One component as recorded in `stack.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackComponent {
    pub name: String,
    pub dir: PathBuf,
    pub kind: ComponentKind,
}

/// `stack.json`: everything `lesion stack predict` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackFile {
    pub mode: StackMode,
    pub components: Vec<StackComponent>,
    pub model: crate::ensemble::MetaModel,
    /// Images the meta-learner was trained on.
    pub images: usize,
    /// Per component, meta-training images (or duplicates) it had seen in training (holdout
    /// mode; all zero in oof mode, where any would have stopped training).
    pub overlap: BTreeMap<String, usize>,
}

pub const STACK_JSON: &str = "stack.json";
pub const STACK_REPORT_JSON: &str = "report.json";
pub const STACK_REPORT_MD: &str = "report.md";
pub const STACK_OOF_CSV: &str = "oof-stacked-isic2017.csv";
pub const STACK_TRUTH_CSV: &str = "truth-isic2017.csv";
pub const STACK_ROC_PNG: &str = "roc.png";
/// Leaks listed in full in an error message.
const LEAKS_SHOWN: usize = 5;

/// A `lesion stack train` request.
pub struct StackTrainRequest<'a> {
    pub components: Vec<PathBuf>,
    pub rows: &'a [LabelledRow],
    pub mode: StackMode,
    pub config: crate::ensemble::MetaConfig,
    pub out_dir: PathBuf,
    pub cache: &'a PreprocessCache,
    pub device: Device,
    pub progress: bool,
}

/// What `lesion stack train` produced.
pub struct StackOutcome {
    pub report: crate::ensemble::StackReport,
    pub file: StackFile,
    /// Labelled rows without a prediction from every component (left out).
    pub missing: usize,
}

/// Component names: folder names, made unique.
fn component_names(dirs: &[PathBuf]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for d in dirs {
        let base = d
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "component".into());
        let mut name = base.clone();
        let mut i = 2;
        while names.contains(&name) {
            name = format!("{base}-{i}");
            i += 1;
        }
        names.push(name);
    }
    names
}

/// Patient metadata of the rows (`age`, `sex` metadata keys).
pub fn patient_meta(rows: &[LabelledRow]) -> BTreeMap<String, crate::ensemble::PatientMeta> {
    use crate::ensemble::{PatientMeta, Sex};
    use lesion_data::labels::keys;
    rows.iter()
        .map(|r| {
            let age = r
                .row
                .meta
                .get(keys::AGE)
                .and_then(|a| a.trim().parse::<f64>().ok())
                .filter(|a| a.is_finite() && *a >= 0.0);
            let sex = match r.row.meta.get(keys::SEX).map(|s| s.trim().to_ascii_lowercase()) {
                Some(s) if s == "male" => Some(Sex::Male),
                Some(s) if s == "female" => Some(Sex::Female),
                _ => None,
            };
            (r.row.id.clone(), PatientMeta { age, sex })
        })
        .collect()
}

fn truth_of(rows: &[LabelledRow]) -> BTreeMap<String, crate::ensemble::TaskTruth> {
    rows.iter()
        .map(|r| {
            (
                r.row.id.clone(),
                crate::ensemble::TaskTruth {
                    melanoma: r.class == LesionClass::Melanoma,
                    keratosis: r.class == LesionClass::SeborrheicKeratosis,
                },
            )
        })
        .collect()
}

fn groups_of(rows: &[LabelledRow]) -> crate::ensemble::Groups {
    crate::ensemble::Groups::new(
        rows.iter().filter_map(|r| r.row.group.clone().map(|g| (r.row.id.clone(), g))).collect(),
    )
}

/// Trains the meta-learner over the components, evaluates single / average / stacked on common
/// folds, and writes the stack folder (`stack.json`, `report.{json,md}`, the out-of-fold
/// stacked ISIC CSV; `COMPLETE.json` last).
pub fn train_stack(req: StackTrainRequest<'_>) -> Result<StackOutcome> {
    use crate::ensemble::{evaluate_folds, holdout_overlap, oof_leaks, MetaModel};
    if req.components.is_empty() {
        return Err(TrainError::Config("no components".into()));
    }
    std::fs::create_dir_all(&req.out_dir).map_err(|e| TrainError::file(&req.out_dir, e))?;
    // A previous result in this folder is no longer complete once we start rewriting it.
    let complete = req.out_dir.join(run::COMPLETE_FILE);
    if complete.exists() {
        std::fs::remove_file(&complete).map_err(|e| TrainError::file(&complete, e))?;
    }
    let names = component_names(&req.components);
    let truth = truth_of(req.rows);
    let groups = groups_of(req.rows);
    let meta = patient_meta(req.rows);
    let labelled: BTreeSet<&str> = req.rows.iter().map(|r| r.row.id.as_str()).collect();
    let mut comps = Vec::new();
    let mut kinds = Vec::new();
    let mut fold_maps: Vec<Option<BTreeMap<String, usize>>> = Vec::new();
    let wanted: Vec<LabelledRow> = match &req.mode {
        StackMode::Oof => req.rows.to_vec(),
        StackMode::Holdout { meta_ids, .. } => {
            let set: BTreeSet<&str> = meta_ids.iter().map(String::as_str).collect();
            let unknown: Vec<&str> =
                set.iter().copied().filter(|id| !labelled.contains(id)).collect();
            if !unknown.is_empty() {
                return Err(TrainError::Config(format!(
                    "{} meta-split ids are not labelled rows of the manifest (first: {})",
                    unknown.len(),
                    unknown[0]
                )));
            }
            req.rows.iter().filter(|r| set.contains(r.row.id.as_str())).cloned().collect()
        }
    };
    for (dir, name) in req.components.iter().zip(&names) {
        let kind = component_kind(dir)?;
        match (&kind, &req.mode) {
            (ComponentKind::Run, StackMode::Oof) => {
                return Err(TrainError::file(dir, "a single run folder has no out-of-fold predictions: use `lesion cls cv` folders in oof mode, or --mode holdout"));
            }
            (ComponentKind::Run, StackMode::Holdout { .. }) => {
                let table =
                    predict_component(dir, name, &wanted, req.cache, req.device, req.progress)?;
                let seen = run_training_ids(dir)?;
                let model_of =
                    table.images.keys().map(|id| (id.clone(), "run".to_string())).collect();
                comps.push(Component {
                    table,
                    provenance: Provenance {
                        model_of,
                        trained_on: BTreeMap::from([("run".to_string(), seen)]),
                    },
                });
                fold_maps.push(None);
            }
            _ => {
                let (c, folds) = read_oof_component(dir, name)?;
                comps.push(c);
                fold_maps.push(Some(folds));
            }
        }
        let dir = std::fs::canonicalize(dir).map_err(|e| TrainError::file(dir, e))?;
        kinds.push(StackComponent { name: name.clone(), dir, kind });
    }
    let ids: Vec<String> = wanted
        .iter()
        .map(|r| r.row.id.clone())
        .filter(|id| comps.iter().all(|c| c.table.images.contains_key(id)))
        .collect();
    let missing = wanted.len() - ids.len();
    if ids.is_empty() {
        return Err(TrainError::Config(
            "no labelled image has a prediction from every component".into(),
        ));
    }
    if missing > 0 {
        tracing::warn!(
            missing,
            "labelled images without a prediction from every component are left out"
        );
    }
    let (fold_of, overlap) = match &req.mode {
        StackMode::Oof => {
            let leaks = oof_leaks(&comps, &ids, &groups);
            if !leaks.is_empty() {
                let shown: Vec<String> = leaks
                    .iter()
                    .take(LEAKS_SHOWN)
                    .map(|l| {
                        if l.model.is_empty() {
                            format!("{}: {} has no recorded model", l.component, l.image)
                        } else {
                            format!(
                                "{}: {} predicted by {} which trained on {}",
                                l.component, l.image, l.model, l.seen
                            )
                        }
                    })
                    .collect();
                return Err(TrainError::Config(format!("oof stacking refused: {} predictions come from models that saw the image or its duplicate group ({})", leaks.len(), shown.join("; "))));
            }
            // Common folds: the report compares methods on the same outer folds.
            let first = fold_maps
                .iter()
                .flatten()
                .next()
                .ok_or_else(|| TrainError::Config("no fold assignment".into()))?;
            for (map, c) in fold_maps.iter().zip(&kinds) {
                if let Some(map) = map {
                    if let Some(id) = ids.iter().find(|id| map.get(*id) != first.get(*id)) {
                        return Err(TrainError::file(&c.dir, format!("cross-validated on other folds than {} (image {id}): run every `lesion cls cv` with the same manifest, --folds and --seed", kinds[0].dir.display())));
                    }
                }
            }
            let fold_of: BTreeMap<String, usize> =
                ids.iter().filter_map(|id| first.get(id).map(|f| (id.clone(), *f))).collect();
            (fold_of, comps.iter().map(|c| (c.table.name.clone(), 0)).collect::<BTreeMap<_, _>>())
        }
        StackMode::Holdout { folds, seed, .. } => {
            let overlap = holdout_overlap(&comps, &ids, &groups);
            for (name, n) in &overlap {
                if *n > 0 {
                    tracing::warn!(component = %name, overlap = n, meta_images = ids.len(), "holdout meta-training images seen by this component in training: its meta features are optimistic");
                }
            }
            let id_set: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
            let meta_rows: Vec<LabelledRow> =
                wanted.iter().filter(|r| id_set.contains(r.row.id.as_str())).cloned().collect();
            let f = lesion_data::split::stratified_group_folds(&meta_rows, *folds, *seed);
            (meta_rows.iter().zip(f).map(|(r, f)| (r.row.id.clone(), f)).collect(), overlap)
        }
    };
    let tables: Vec<&ReplicaTable> = comps.iter().map(|c| &c.table).collect();
    info!(
        images = ids.len(),
        components = tables.len(),
        "stacking: evaluating single / average / stacked on common folds"
    );
    let report = evaluate_folds(&tables, &truth, &meta, &fold_of, &req.config)?;
    info!("stacking: fitting the final meta-learner on all images");
    let model = MetaModel::fit(&tables, &ids, &truth, &meta, &req.config)?;
    let file =
        StackFile { mode: req.mode.clone(), components: kinds, model, images: ids.len(), overlap };
    run::write_json(&req.out_dir.join(STACK_JSON), &file)?;
    run::write_json(&req.out_dir.join(STACK_REPORT_JSON), &report)?;
    run::atomic_write(
        &req.out_dir.join(STACK_REPORT_MD),
        report_markdown(&report, &file).as_bytes(),
    )?;
    let preds: Vec<lesion_cls::tta::ImagePrediction> = report
        .stacked_oof
        .iter()
        .map(|(id, p)| {
            let probs = [p.melanoma, p.keratosis, (1.0 - p.melanoma - p.keratosis).max(0.0)];
            lesion_cls::tta::ImagePrediction { id: id.clone(), probs, replicas: vec![probs] }
        })
        .collect();
    lesion_cls::tta::write_isic2017_csv(&req.out_dir.join(STACK_OOF_CSV), &preds)?;
    write_roc_png(&req.out_dir.join(STACK_ROC_PNG), &report, &truth)?;
    let id_set: BTreeSet<&str> = report.stacked_oof.keys().map(String::as_str).collect();
    let truth_rows: Vec<LabelledRow> =
        req.rows.iter().filter(|r| id_set.contains(r.row.id.as_str())).cloned().collect();
    lesion_cls::cv::write_truth_csv(&req.out_dir.join(STACK_TRUTH_CSV), &truth_rows)?;
    run::write_json(&complete, &serde_json::json!({ "images": ids.len(), "components": names }))?;
    Ok(StackOutcome { report, file, missing })
}

/// ROC curves of every method's pooled out-of-fold predictions, one panel per task that has
/// both classes.
fn write_roc_png(
    path: &Path,
    report: &crate::ensemble::StackReport,
    truth: &BTreeMap<String, crate::ensemble::TaskTruth>,
) -> Result<()> {
    use crate::ensemble::Task;
    let mut curves: Vec<(&str, Vec<(String, lesion_metrics::cls::RocCurve)>)> = Vec::new();
    for (task, title) in [
        (Task::Melanoma, "melanoma (pooled out-of-fold)"),
        (Task::Keratosis, "seborrheic keratosis (pooled out-of-fold)"),
    ] {
        let mut panel = Vec::new();
        for (method, preds) in &report.oof_by_method {
            let (y, score): (Vec<bool>, Vec<f64>) = preds
                .iter()
                .filter_map(|(id, p)| truth.get(id).map(|t| (t.task(task), p.task(task))))
                .unzip();
            if let (Ok(roc), Ok(auc)) = (
                lesion_metrics::cls::roc_curve(&y, &score),
                lesion_metrics::cls::roc_auc(&y, &score),
            ) {
                panel.push((format!("{method} {auc:.4}"), roc));
            }
        }
        if !panel.is_empty() {
            curves.push((title, panel));
        }
    }
    let panels: Vec<lesion_core::plots::RocPanel<'_>> = curves
        .iter()
        .map(|(title, panel)| {
            (
                *title,
                panel
                    .iter()
                    .map(|(label, roc)| lesion_core::plots::RocSeries {
                        label: label.clone(),
                        fpr: &roc.fpr,
                        tpr: &roc.tpr,
                    })
                    .collect(),
            )
        })
        .collect();
    lesion_core::plots::plot_roc(path, &panels)
}

fn fmt_scores(s: &crate::ensemble::TaskScores) -> Option<String> {
    let spread = s.spread?;
    let folds: Vec<String> =
        s.fold_aucs.iter().map(|v| v.map_or("-".into(), |x| format!("{x:.4}"))).collect();
    Some(format!(
        "{:.4} ± {:.4} | {} | {}",
        spread.mean,
        spread.std,
        s.pooled_auc.map_or("-".into(), |x| format!("{x:.4}")),
        folds.join(", ")
    ))
}

/// The report as Markdown: one row per method, mean ± sample std over folds, pooled OOF AUC,
/// per-fold AUCs.
pub fn report_markdown(report: &crate::ensemble::StackReport, file: &StackFile) -> String {
    let mut s = String::new();
    let mode = match &file.mode {
        StackMode::Oof => "oof (cross-fitted: no image's meta feature comes from a model that saw it or its duplicate group)".to_string(),
        StackMode::Holdout { .. } => "holdout (the paper's scheme)".to_string(),
    };
    s.push_str(&format!(
        "# Stacking report\n\n{} images, {} folds, mode {mode}.\n\n",
        report.images, report.folds
    ));
    s.push_str(&format!("Meta-learner: {} replica combinations per image, pooling {:?}, C = 2^U({}, {}) × {} draws scored by grouped {}-fold AUC.\n\n", file.model.config.combinations, file.model.config.pooling, file.model.config.search.log2_c_min, file.model.config.search.log2_c_max, file.model.config.search.draws, file.model.config.search.folds));
    for (task, label) in [(0, "Melanoma vs rest"), (1, "Seborrheic keratosis vs rest")] {
        let rows: Vec<(String, String)> = report
            .methods
            .iter()
            .filter_map(|m| {
                fmt_scores(if task == 0 { &m.melanoma } else { &m.keratosis })
                    .map(|t| (m.method.clone(), t))
            })
            .collect();
        if rows.is_empty() {
            s.push_str(&format!("## {label}\n\nNot defined (one class only).\n\n"));
            continue;
        }
        s.push_str(&format!("## {label} ROC AUC\n\n| method | mean ± std over folds | pooled out-of-fold | per fold |\n|---|---|---|---|\n"));
        for (m, t) in rows {
            let mark = if report.best_single.as_deref() == Some(m.as_str()) {
                " (best single)"
            } else {
                ""
            };
            s.push_str(&format!("| {m}{mark} | {t} |\n"));
        }
        s.push('\n');
    }
    let overlaps: Vec<String> =
        file.overlap.iter().filter(|(_, n)| **n > 0).map(|(c, n)| format!("{c}: {n}")).collect();
    if !overlaps.is_empty() {
        s.push_str(&format!(
            "**Warning**: meta-training images seen in a component's training: {} (of {}).\n",
            overlaps.join(", "),
            file.images
        ));
    }
    s
}

/// Predicts `rows` with a trained stack: every component predicts them, the meta-learner
/// combines. Returns the stacked predictions in row order.
pub fn predict_stack(
    stack_dir: &Path,
    rows: &[LabelledRow],
    cache: &PreprocessCache,
    device: Device,
    progress: bool,
) -> Result<Vec<lesion_cls::tta::ImagePrediction>> {
    if !run::is_complete(stack_dir) {
        return Err(TrainError::file(stack_dir, "not a complete stack folder (no COMPLETE.json: `lesion stack train` did not finish here)"));
    }
    let file: StackFile = run::read_json(&stack_dir.join(STACK_JSON))?;
    LoadedStack::load(file, device)?.predict(rows, Pixels::Cache(cache), device, progress)
}

/// A trained stack with every component's nets in memory.
pub struct LoadedStack {
    pub file: StackFile,
    components: Vec<LoadedComponent>,
}

impl LoadedStack {
    /// Loads every component of `file` (from the folders it records).
    pub fn load(file: StackFile, device: Device) -> Result<LoadedStack> {
        let components = file
            .components
            .iter()
            .map(|c| LoadedComponent::load(&c.dir, &c.kind, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(LoadedStack { file, components })
    }

    /// Every component predicts `rows`; the meta-learner combines (patient metadata from the
    /// rows, as at training). Stacked predictions in row order.
    pub fn predict(
        &self,
        rows: &[LabelledRow],
        pixels: Pixels<'_>,
        device: Device,
        progress: bool,
    ) -> Result<Vec<lesion_cls::tta::ImagePrediction>> {
        let mut tables = Vec::new();
        for (c, loaded) in self.file.components.iter().zip(&self.components) {
            info!(component = %c.name, "predicting component");
            tables.push(loaded.predict(&c.name, rows, pixels, device, progress)?);
        }
        let refs: Vec<&ReplicaTable> = tables.iter().collect();
        let ids: Vec<String> = rows.iter().map(|r| r.row.id.clone()).collect();
        let meta = patient_meta(rows);
        let probs = self.file.model.predict(&refs, &ids, &meta)?;
        Ok(ids
            .into_iter()
            .zip(probs)
            .map(|(id, p)| {
                let probs = [p.melanoma, p.keratosis, (1.0 - p.melanoma - p.keratosis).max(0.0)];
                lesion_cls::tta::ImagePrediction { id, probs, replicas: vec![probs] }
            })
            .collect())
    }
}
