//! The classification trainer: EfficientNet-Lite from ImageNet weights with a new 3-class
//! head, softmax cross-entropy (optionally inverse-frequency class weights), Adam / AdamW /
//! RMSProp with their state in every checkpoint, a frozen-backbone warm-up, validation mean
//! AUC each epoch with early stopping, and the same run folder as segmentation
//! (`config.toml`, `run.json`, `split.json`, `metrics.csv` + `.jsonl`, `checkpoints/{last,best}`,
//! `COMPLETE.json` at the very end) so that `--resume` continues after any kill.
//!
//! Determinism: batch order, augmentation and dropout draws are pure functions of
//! (seed, epoch, sample), so a resumed run repeats an uninterrupted one.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use lesion_data::cache::PreprocessCache;
use lesion_metrics::cls::roc_auc;
use serde::{Deserialize, Serialize};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Reduction, Tensor};
use tracing::{info, warn};

use crate::checkpoint::{self, CheckpointPaths};
use crate::cls::augment::{augment_batch, normalize, sample_params, to_unit, ClsAugParams};
use crate::cls::config::{BatchNormMode, ClassWeighting, ClsTrainConfig, OptimizerKind};
use crate::cls::labels::{LabelledRow, LesionClass, NUM_CLASSES};
use crate::cls::net::{self, ClsNet};
use crate::cls::rmsprop::RmsProp;
use crate::cls::sgd::Sgd;
use crate::dataset::{epoch_order, rgb_to_chw};
use crate::error::{Result, TrainError};
use crate::optim::Adam;
use crate::run::{self, Split};

/// Validation batches may be larger than training ones (no activations kept for backward).
const VAL_BATCH_FACTOR: usize = 2;
/// CrossEntropy's "no ignored class" index.
const NO_IGNORE_INDEX: i64 = -100;
/// Checkpoint key prefixes and counters (the `model.` / `meta.epoch` keys match
/// [`crate::checkpoint`], so [`checkpoint::load_model`] reads these checkpoints too).
const MODEL: &str = "model.";
const ADAM_M: &str = "adam_m.";
const ADAM_V: &str = "adam_v.";
const RMS_MS: &str = "rms_ms.";
const RMS_MOM: &str = "rms_mom.";
const SGD_BUF: &str = "sgd_buf.";
const META_EPOCH: &str = "meta.epoch";
const META_STEP: &str = "meta.opt_step";
const META_BEST: &str = "meta.best_score";
const META_BEST_EPOCH: &str = "meta.best_epoch";
const META_LR: &str = "meta.lr";
const META_STALE: &str = "meta.stale_validations";

/// Images (u8, N×3×S×S at the cache size) and their classes. Invariant: `ids`, `classes` and
/// the first dimension of `images` have the same length.
pub struct ClsDataset {
    pub ids: Vec<String>,
    pub classes: Vec<LesionClass>,
    pub images: Tensor,
    pub size: i64,
}

impl ClsDataset {
    /// Resizes (through the cache) and stacks the rows' images.
    pub fn prepare(rows: &[LabelledRow], size: i64, resize: crate::config::Resize, cache: &PreprocessCache, progress: bool) -> Result<Self> {
        let manifest_rows: Vec<_> = rows.iter().map(|r| r.row.clone()).collect();
        let prepared = cache.prepare(&manifest_rows, size as u32, crate::trainer::resize_method(resize), progress)?;
        let s = size as usize;
        let mut buf = Vec::with_capacity(rows.len() * 3 * s * s);
        for p in &prepared {
            if p.image.dimensions() != (size as u32, size as u32) {
                return Err(TrainError::Config(format!("{}: prepared image is not {size}×{size}", p.id)));
            }
            buf.extend_from_slice(&rgb_to_chw(&p.image));
        }
        let n = rows.len() as i64;
        Ok(Self {
            ids: rows.iter().map(|r| r.row.id.clone()).collect(),
            classes: rows.iter().map(|r| r.class).collect(),
            images: Tensor::from_slice(&buf).view([n, 3, size, size]),
            size,
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// u8 images of the given indices.
    pub fn images_at(&self, indices: &[i64]) -> Tensor {
        self.images.index_select(0, &Tensor::from_slice(indices))
    }

    pub fn labels_at(&self, indices: &[i64], device: Device) -> Tensor {
        let l: Vec<i64> = indices.iter().map(|&i| self.classes[i as usize].index() as i64).collect();
        Tensor::from_slice(&l).to_device(device)
    }
}

/// A classifier: the net and its variables.
pub struct ClsModel {
    pub cfg: ClsTrainConfig,
    pub net: ClsNet,
    pub vs: VarStore,
}

impl ClsModel {
    /// Builds the net (random 3-class head) on `device`.
    pub fn build(cfg: &ClsTrainConfig, device: Device) -> Result<Self> {
        let vs = VarStore::new(device);
        let net = ClsNet::build(cfg, &vs.root())?;
        Ok(Self { cfg: cfg.clone(), net, vs })
    }

    /// Logits of a normalised batch; `train` switches BatchNorm batch statistics, dropout and
    /// (EfficientNet-Lite) drop-connect together.
    pub fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if let Some(lite) = self.net.lite() {
            return Ok(lite.forward_t(x, train));
        }
        self.head_of(&self.net.features_t(x, train), train)
    }

    /// Training-time logits of a normalised batch under the configured BatchNorm mode.
    pub fn train_logits(&self, x: &Tensor) -> Result<Tensor> {
        match self.cfg.train.batchnorm {
            BatchNormMode::Train => self.logits(x, true),
            BatchNormMode::Frozen => self.head_of(&self.net.features_t(x, false), true),
        }
    }

    /// Head dropout (active when `dropout_on`) and the classifier, on penultimate features.
    fn head_of(&self, features: &Tensor, dropout_on: bool) -> Result<Tensor> {
        let (w, b) = self.head()?;
        Ok(features.dropout(net::head_dropout(&self.cfg), dropout_on).linear(&w, Some(&b)))
    }

    /// The classifier's weight and bias.
    fn head(&self) -> Result<(Tensor, Tensor)> {
        let vars = self.vs.variables();
        let prefix = self.net.head_prefix();
        let w = vars.get(&format!("{prefix}weight")).ok_or_else(|| TrainError::Config("model has no classifier weight".into()))?;
        let b = vars.get(&format!("{prefix}bias")).ok_or_else(|| TrainError::Config("model has no classifier bias".into()))?;
        Ok((w.shallow_clone(), b.shallow_clone()))
    }

    /// Evaluation-mode logits and penultimate features of a [0, 1] batch (normalised here).
    /// The logits are the classifier applied to the features (dropout is off in evaluation).
    pub fn eval_with_features(&self, unit: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = normalize(unit, self.cfg.model.normalization);
        let f = self.net.features_t(&x, false);
        let (w, b) = self.head()?;
        Ok((f.linear(&w, Some(&b)), f))
    }
}

/// Loads a trained classifier from a run folder (its `config.toml` and best checkpoint) or a
/// checkpoint file whose run folder is two levels up.
pub fn load_model(path: &Path, device: Device) -> Result<ClsModel> {
    let checkpoint::ModelSource { run_dir, weights } = checkpoint::resolve_model(path)?;
    let cfg = ClsTrainConfig::from_toml_file(&run_dir.join(run::CONFIG_FILE))?;
    let model = ClsModel::build(&cfg, device)?;
    checkpoint::load_model(&weights, &model.vs)?;
    Ok(model)
}

/// The optimiser in use (its state is checkpointed).
pub enum ClsOptimizer {
    /// `decoupled_wd` > 0: AdamW's p ← p·(1 − lr·wd) before each Adam step.
    Adam { adam: Adam, decoupled_wd: f64 },
    RmsProp(RmsProp),
    Sgd(Sgd),
}

impl ClsOptimizer {
    pub fn new(cfg: &ClsTrainConfig) -> Self {
        match cfg.train.optimizer {
            OptimizerKind::Adam => ClsOptimizer::Adam { adam: Adam::new(cfg.adam), decoupled_wd: 0.0 },
            OptimizerKind::Adamw => {
                let inner = crate::optim::AdamConfig { weight_decay: 0.0, ..cfg.adam };
                ClsOptimizer::Adam { adam: Adam::new(inner), decoupled_wd: cfg.adam.weight_decay }
            }
            OptimizerKind::Rmsprop => ClsOptimizer::RmsProp(RmsProp::new(cfg.rmsprop)),
            OptimizerKind::Sgd => ClsOptimizer::Sgd(Sgd::new(cfg.sgd)),
        }
    }

    pub fn lr(&self) -> f64 {
        match self {
            ClsOptimizer::Adam { adam, .. } => adam.cfg.lr,
            ClsOptimizer::RmsProp(r) => r.lr,
            ClsOptimizer::Sgd(o) => o.lr,
        }
    }

    pub fn set_lr(&mut self, lr: f64) {
        match self {
            ClsOptimizer::Adam { adam, .. } => adam.cfg.lr = lr,
            ClsOptimizer::RmsProp(r) => r.lr = lr,
            ClsOptimizer::Sgd(o) => o.lr = lr,
        }
    }

    fn step_count(&self) -> i64 {
        match self {
            ClsOptimizer::Adam { adam, .. } => adam.step,
            ClsOptimizer::RmsProp(r) => r.step,
            ClsOptimizer::Sgd(o) => o.step,
        }
    }

    pub fn step(&mut self, vs: &VarStore) {
        match self {
            ClsOptimizer::Adam { adam, decoupled_wd } => {
                if *decoupled_wd > 0.0 {
                    let factor = 1.0 - adam.cfg.lr * *decoupled_wd;
                    tch::no_grad(|| {
                        for mut p in vs.trainable_variables() {
                            if p.grad().defined() {
                                let _ = p.g_mul_scalar_(factor);
                            }
                        }
                    });
                }
                adam.step(vs);
            }
            ClsOptimizer::RmsProp(r) => r.step(vs),
            ClsOptimizer::Sgd(o) => o.step(vs),
        }
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let dump = |prefix: &str, m: &BTreeMap<String, Tensor>| m.iter().map(|(k, t)| (format!("{prefix}{k}"), t.shallow_clone())).collect::<Vec<_>>();
        match self {
            ClsOptimizer::Adam { adam, .. } => dump(ADAM_M, &adam.m).into_iter().chain(dump(ADAM_V, &adam.v)).collect(),
            ClsOptimizer::RmsProp(r) => dump(RMS_MS, &r.ms).into_iter().chain(dump(RMS_MOM, &r.mom)).collect(),
            ClsOptimizer::Sgd(o) => dump(SGD_BUF, &o.buf),
        }
    }

    fn restore(&mut self, all: &BTreeMap<String, Tensor>, device: Device, step: i64) {
        let take = |prefix: &str| -> BTreeMap<String, Tensor> {
            all.iter().filter_map(|(k, t)| k.strip_prefix(prefix).map(|n| (n.to_string(), t.to_device(device)))).collect()
        };
        match self {
            ClsOptimizer::Adam { adam, .. } => {
                adam.m = take(ADAM_M);
                adam.v = take(ADAM_V);
                adam.step = step;
            }
            ClsOptimizer::RmsProp(r) => {
                r.ms = take(RMS_MS);
                r.mom = take(RMS_MOM);
                r.step = step;
            }
            ClsOptimizer::Sgd(o) => {
                o.buf = take(SGD_BUF);
                o.step = step;
            }
        }
    }
}

/// Trainer counters saved beside the weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClsTrainState {
    /// Completed epochs.
    pub epoch: usize,
    /// Best validation mean AUC so far (−∞ before any).
    pub best_score: f64,
    pub best_epoch: usize,
    pub lr: f64,
    /// Validations since the last improvement (early stopping counter).
    pub stale_validations: usize,
}

fn scalar(v: f64) -> Tensor {
    Tensor::from_slice(&[v]).to_kind(Kind::Double)
}

/// Saves weights, optimiser state and counters atomically.
pub fn save_training(path: &Path, vs: &VarStore, opt: &ClsOptimizer, state: &ClsTrainState) -> Result<()> {
    let mut out: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (format!("{MODEL}{n}"), t)).collect();
    out.extend(opt.state());
    out.push((META_EPOCH.into(), scalar(state.epoch as f64)));
    out.push((META_STEP.into(), scalar(opt.step_count() as f64)));
    out.push((META_BEST.into(), scalar(state.best_score)));
    out.push((META_BEST_EPOCH.into(), scalar(state.best_epoch as f64)));
    out.push((META_LR.into(), scalar(state.lr)));
    out.push((META_STALE.into(), scalar(state.stale_validations as f64)));
    checkpoint::write_tensors_atomic(path, &out)
}

/// Restores a checkpoint written by [`save_training`].
pub fn load_training(path: &Path, vs: &VarStore, opt: &mut ClsOptimizer) -> Result<ClsTrainState> {
    checkpoint::load_model(path, vs)?;
    let all: BTreeMap<String, Tensor> = Tensor::read_safetensors(path).map_err(|e| TrainError::file(path, e))?.into_iter().collect();
    let get = |k: &str| -> Result<f64> { all.get(k).map(|t| t.double_value(&[0])).ok_or_else(|| TrainError::file(path, format!("missing '{k}'"))) };
    let step = get(META_STEP)? as i64;
    opt.restore(&all, vs.device(), step);
    let state = ClsTrainState {
        epoch: get(META_EPOCH)? as usize,
        best_score: get(META_BEST)?,
        best_epoch: get(META_BEST_EPOCH)? as usize,
        lr: get(META_LR)?,
        stale_validations: get(META_STALE)? as usize,
    };
    opt.set_lr(state.lr);
    Ok(state)
}

/// One epoch's record in `metrics.csv` / `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClsEpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    /// Melanoma-vs-rest ROC AUC (absent when the validation set lacks a class for it).
    pub val_auc_melanoma: Option<f64>,
    pub val_auc_keratosis: Option<f64>,
    /// Mean of the AUCs that are defined (the early-stopping score).
    pub val_auc_mean: Option<f64>,
    pub lr: f64,
    pub backbone_frozen: bool,
    pub seconds: f64,
}

/// Written last: the run is finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClsCompletion {
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_val_auc_mean: Option<f64>,
    pub stopped_early: bool,
    pub seconds: f64,
}

fn write_metrics(dir: &Path, records: &[ClsEpochRecord]) -> Result<()> {
    let mut jsonl = Vec::new();
    for r in records {
        serde_json::to_writer(&mut jsonl, r).map_err(|e| TrainError::file(dir.join(run::METRICS_JSONL), e))?;
        jsonl.push(b'\n');
    }
    run::atomic_write(&dir.join(run::METRICS_JSONL), &jsonl)?;
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in records {
        w.serialize(r).map_err(|e| TrainError::file(dir.join(run::METRICS_CSV), e))?;
    }
    let bytes = w.into_inner().map_err(|e| TrainError::file(dir.join(run::METRICS_CSV), e.to_string()))?;
    run::atomic_write(&dir.join(run::METRICS_CSV), &bytes)
}

/// Reads `metrics.jsonl` (missing = no records); errors name the line.
pub fn read_metrics(dir: &Path) -> Result<Vec<ClsEpochRecord>> {
    let path = dir.join(run::METRICS_JSONL);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::file(&path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| TrainError::file(&path, format!("line {}, column {}: {e}", i + 1, e.column()))))
        .collect()
}

/// Per-class weights for the loss (None = unweighted).
pub fn class_weights(classes: &[LesionClass], how: ClassWeighting) -> Option<[f64; NUM_CLASSES]> {
    match how {
        ClassWeighting::None => None,
        ClassWeighting::InverseFrequency => {
            let mut counts = [0usize; NUM_CLASSES];
            for c in classes {
                counts[c.index()] += 1;
            }
            let n = classes.len() as f64;
            Some(counts.map(|c| if c == 0 { 0.0 } else { n / (NUM_CLASSES as f64 * c as f64) }))
        }
    }
}

/// Validation numbers of one pass (no augmentation, resize of the whole cached image).
#[derive(Debug, Clone, PartialEq)]
pub struct ClsValidation {
    pub loss: f64,
    pub accuracy: f64,
    pub auc_melanoma: Option<f64>,
    pub auc_keratosis: Option<f64>,
}

impl ClsValidation {
    pub fn mean_auc(&self) -> Option<f64> {
        let v: Vec<f64> = [self.auc_melanoma, self.auc_keratosis].into_iter().flatten().collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// One-vs-rest ROC AUC of `class`, `None` when the labels lack positives or negatives.
pub fn one_vs_rest_auc(classes: &[LesionClass], probs: &[[f64; NUM_CLASSES]], class: LesionClass) -> Option<f64> {
    let truth: Vec<bool> = classes.iter().map(|&c| c == class).collect();
    let score: Vec<f64> = probs.iter().map(|p| p[class.index()]).collect();
    roc_auc(&truth, &score).ok()
}

pub fn validate(model: &ClsModel, data: &ClsDataset, batch_size: usize, device: Device) -> Result<ClsValidation> {
    let all: Vec<i64> = (0..data.len() as i64).collect();
    let mut probs: Vec<[f64; NUM_CLASSES]> = Vec::with_capacity(data.len());
    let mut loss_sum = 0.0;
    let size = model.cfg.model.input_size;
    tch::no_grad(|| -> Result<()> {
        for chunk in all.chunks(batch_size.max(1)) {
            let x = augment_batch(&to_unit(&data.images_at(chunk), device), &vec![ClsAugParams::IDENTITY; chunk.len()], size);
            let logits = model.logits(&normalize(&x, model.cfg.model.normalization), false)?;
            let labels = data.labels_at(chunk, device);
            loss_sum += logits.cross_entropy_loss::<Tensor>(&labels, None, Reduction::Sum, NO_IGNORE_INDEX, 0.0).double_value(&[]);
            let p = Vec::<f32>::try_from(logits.softmax(-1, Kind::Float).to_device(Device::Cpu).flatten(0, -1))?;
            for row in p.chunks_exact(NUM_CLASSES) {
                probs.push([f64::from(row[0]), f64::from(row[1]), f64::from(row[2])]);
            }
        }
        Ok(())
    })?;
    let correct = probs.iter().zip(&data.classes).filter(|(p, c)| argmax(p) == c.index()).count();
    Ok(ClsValidation {
        loss: loss_sum / data.len().max(1) as f64,
        accuracy: correct as f64 / data.len().max(1) as f64,
        auc_melanoma: one_vs_rest_auc(&data.classes, &probs, LesionClass::Melanoma),
        auc_keratosis: one_vs_rest_auc(&data.classes, &probs, LesionClass::SeborrheicKeratosis),
    })
}

fn argmax(p: &[f64; NUM_CLASSES]) -> usize {
    let mut best = 0;
    for i in 1..NUM_CLASSES {
        if p[i] > p[best] {
            best = i;
        }
    }
    best
}

/// What to train and where.
pub struct ClsTrainRequest<'a> {
    pub cfg: ClsTrainConfig,
    /// Labelled rows to train on (and to split for validation unless `val_fraction` is 0).
    pub rows: &'a [LabelledRow],
    pub run_dir: PathBuf,
    pub device: Device,
    pub cache: &'a PreprocessCache,
    /// Continue the run in `run_dir` from its last checkpoint (its own config is used).
    pub resume: bool,
    /// Where the ImageNet weights are cached.
    pub weights_cache: PathBuf,
    pub command: Vec<String>,
    pub progress: bool,
    pub manifest: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClsTrainOutcome {
    pub run_dir: PathBuf,
    pub completion: ClsCompletion,
}

/// Trains (or resumes) a run; returns when `COMPLETE.json` is written.
pub fn train(req: ClsTrainRequest<'_>) -> Result<ClsTrainOutcome> {
    let dir = req.run_dir.clone();
    let paths = CheckpointPaths::new(&dir);
    let (cfg, split) = if req.resume {
        if run::is_complete(&dir) {
            return Err(TrainError::file(&dir, "this run is already complete; nothing to resume"));
        }
        let cfg = ClsTrainConfig::from_toml_file(&dir.join(run::CONFIG_FILE))?;
        let split: Split = run::read_json(&dir.join(run::SPLIT_FILE))?;
        (cfg, split)
    } else {
        req.cfg.validate()?;
        run::create_run_dir(&dir)?;
        let cfg = req.cfg.clone();
        let split = if cfg.data.val_fraction > 0.0 {
            crate::cls::cv::stratified_split(req.rows, cfg.data.val_fraction, cfg.data.split_seed)
        } else {
            Split { train: req.rows.iter().map(|r| r.row.id.clone()).collect(), val: Vec::new() }
        };
        run::atomic_write(&dir.join(run::CONFIG_FILE), cfg.to_toml()?.as_bytes())?;
        run::write_json(&dir.join(run::SPLIT_FILE), &split)?;
        (cfg, split)
    };
    if split.train.is_empty() {
        return Err(TrainError::Config("the training split is empty".into()));
    }
    run::record_start(
        &dir,
        &run::RunStart { command: &req.command, seed: cfg.train.seed, device: req.device, split: &split, manifest: req.manifest.as_deref(), resume: req.resume },
    )?;

    let by_id: HashMap<&str, &LabelledRow> = req.rows.iter().map(|r| (r.row.id.as_str(), r)).collect();
    let pick = |ids: &[String]| -> Result<Vec<LabelledRow>> {
        ids.iter().map(|id| by_id.get(id.as_str()).map(|r| (*r).clone()).ok_or_else(|| TrainError::Config(format!("id '{id}' of the split is not among the labelled rows")))).collect()
    };
    let train_rows = pick(&split.train)?;
    let val_rows = pick(&split.val)?;
    let cache_size = cfg.cache_size();
    info!(train = train_rows.len(), val = val_rows.len(), size = cfg.model.input_size, cache_size, "preparing data");
    let train_data = ClsDataset::prepare(&train_rows, cache_size, cfg.data.resize, req.cache, req.progress)?;
    let val_data = if val_rows.is_empty() { None } else { Some(ClsDataset::prepare(&val_rows, cache_size, cfg.data.resize, req.cache, req.progress)?) };

    tch::manual_seed(cfg.train.seed as i64);
    let model = ClsModel::build(&cfg, req.device)?;
    let mut opt = ClsOptimizer::new(&cfg);
    let initial_lr = match cfg.train.optimizer {
        OptimizerKind::Rmsprop => cfg.rmsprop.lr,
        OptimizerKind::Sgd => cfg.sgd.lr,
        _ => cfg.adam.lr,
    };
    let mut state = ClsTrainState { epoch: 0, best_score: f64::NEG_INFINITY, best_epoch: 0, lr: initial_lr, stale_validations: 0 };
    let mut records = Vec::new();
    if req.resume && paths.last.exists() {
        state = load_training(&paths.last, &model.vs, &mut opt)?;
        records = read_metrics(&dir)?;
        records.retain(|r| r.epoch <= state.epoch);
        info!(epoch = state.epoch, "resumed from {}", paths.last.display());
    } else {
        if req.resume {
            warn!("no checkpoint in {}; starting from epoch 0", dir.display());
        }
        if cfg.model.pretrained {
            net::load_pretrained(&cfg, &model.net, &model.vs, &req.weights_cache)?;
        }
    }
    let weights = class_weights(&train_data.classes, cfg.train.class_weighting).map(|w| Tensor::from_slice(&w.map(|v| v as f32)).to_device(req.device));
    let bs = cfg.train.batch_size;
    let stopped_early = loop {
        let epoch = state.epoch;
        if epoch >= cfg.train.epochs {
            break false;
        }
        if cfg.train.patience > 0 && state.stale_validations >= cfg.train.patience {
            break true;
        }
        let t0 = Instant::now();
        let frozen = epoch < cfg.train.freeze_backbone_epochs;
        net::set_backbone_trainable(&model.net, &model.vs, !frozen);
        if !frozen && cfg.train.unfreeze_from_block > 0 {
            net::freeze_below_block(&model.net, &model.vs, cfg.train.unfreeze_from_block);
        }
        match cfg.train.optimizer {
            OptimizerKind::Rmsprop => opt.set_lr(cfg.rmsprop.lr_at(epoch)),
            OptimizerKind::Sgd => opt.set_lr(cfg.sgd.lr_at(epoch)),
            OptimizerKind::Adam | OptimizerKind::Adamw => {}
        }
        tch::manual_seed(crate::augment::mix_seed(cfg.train.seed, epoch as u64, 0) as i64);
        let order = epoch_order(train_data.len(), cfg.train.seed, epoch as u64);
        let (mut loss_sum, mut correct) = (0.0, 0i64);
        for chunk in order.chunks(bs) {
            let params: Vec<_> = chunk.iter().map(|&i| sample_params(&cfg.augment, cfg.train.seed, epoch as u64, i as u64)).collect();
            let x = augment_batch(&to_unit(&train_data.images_at(chunk), req.device), &params, cfg.model.input_size);
            let labels = train_data.labels_at(chunk, req.device);
            let logits = model.train_logits(&normalize(&x, cfg.model.normalization))?;
            let loss = logits.cross_entropy_loss(&labels, weights.as_ref(), Reduction::Mean, NO_IGNORE_INDEX, 0.0);
            Adam::zero_grad(&model.vs);
            loss.backward();
            opt.step(&model.vs);
            let l = loss.double_value(&[]);
            if !l.is_finite() {
                return Err(TrainError::Config(format!("epoch {}: loss became {l}; lower the learning rate", epoch + 1)));
            }
            loss_sum += l * chunk.len() as f64;
            correct += logits.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64).int64_value(&[]);
        }
        let done = epoch + 1;
        let val = match &val_data {
            Some(v) => Some(validate(&model, v, bs * VAL_BATCH_FACTOR, req.device)?),
            None => None,
        };
        let record = ClsEpochRecord {
            epoch: done,
            train_loss: loss_sum / train_data.len() as f64,
            train_accuracy: correct as f64 / train_data.len() as f64,
            val_loss: val.as_ref().map(|v| v.loss),
            val_accuracy: val.as_ref().map(|v| v.accuracy),
            val_auc_melanoma: val.as_ref().and_then(|v| v.auc_melanoma),
            val_auc_keratosis: val.as_ref().and_then(|v| v.auc_keratosis),
            val_auc_mean: val.as_ref().and_then(ClsValidation::mean_auc),
            lr: opt.lr(),
            backbone_frozen: frozen,
            seconds: t0.elapsed().as_secs_f64(),
        };
        info!(
            "epoch {done}/{}: train loss {:.4} acc {:.3}{} ({:.1}s{})",
            cfg.train.epochs,
            record.train_loss,
            record.train_accuracy,
            val.as_ref().map(|v| format!(", val loss {:.4} acc {:.3} AUC mel {} sk {}", v.loss, v.accuracy, fmt_opt(v.auc_melanoma), fmt_opt(v.auc_keratosis))).unwrap_or_default(),
            record.seconds,
            if frozen { ", backbone frozen" } else { "" }
        );
        let score = record.val_auc_mean;
        records.push(record);
        state.epoch = done;
        // Best = highest validation mean AUC; without validation, the last epoch.
        let improved = match (&val_data, score) {
            (None, _) => true,
            (Some(_), Some(s)) => s > state.best_score,
            (Some(_), None) => state.best_epoch == 0,
        };
        if improved {
            state.best_score = score.unwrap_or(state.best_score);
            state.best_epoch = done;
            state.stale_validations = 0;
            checkpoint::save_model(&paths.best, &model.vs)?;
        } else {
            state.stale_validations += 1;
        }
        state.lr = opt.lr();
        // The log first, then the checkpoint: `--resume` drops log lines past the checkpoint's
        // epoch, so a kill between the two never loses or misreports an epoch.
        write_metrics(&dir, &records)?;
        save_training(&paths.last, &model.vs, &opt, &state)?;
    };
    if stopped_early {
        info!(best_epoch = state.best_epoch, "validation mean AUC stalled for {} epochs; stopping early", cfg.train.patience);
    }
    let seconds: f64 = records.iter().map(|r| r.seconds).sum();
    let best_val = state.best_score.is_finite().then_some(state.best_score);
    let completion = ClsCompletion { epochs: state.epoch, best_epoch: state.best_epoch, best_val_auc_mean: best_val, stopped_early, seconds };
    run::write_json(&dir.join(run::COMPLETE_FILE), &completion)?;
    Ok(ClsTrainOutcome { run_dir: dir, completion })
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_unfreeze() {
        let cfg = ClsTrainConfig { model: crate::cls::config::ClsModelConfig { input_size: 64, pretrained: false, ..Default::default() }, ..Default::default() };
        let m = ClsModel::build(&cfg, Device::Cpu).unwrap();
        let frozen = net::freeze_below_block(&m.net, &m.vs, 12);
        let vars = m.vs.variables();
        assert!(frozen > 0);
        assert!(!vars["_conv_stem.weight"].requires_grad() && !vars["_blocks.11._project_conv.weight"].requires_grad());
        assert!(vars["_blocks.12._project_conv.weight"].requires_grad() && vars["_conv_head.weight"].requires_grad() && vars["_fc.weight"].requires_grad());
    }

    #[test]
    fn resnet_backbone_trains_features_and_freezes_by_stage() {
        use crate::cls::net::ClsArch;
        let mut cfg = ClsTrainConfig::default();
        cfg.model.arch = ClsArch::Resnet50;
        cfg.model.input_size = 32;
        cfg.model.pretrained = false;
        cfg.validate().unwrap();
        let m = ClsModel::build(&cfg, Device::Cpu).unwrap();
        let x = Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let (logits, f) = m.eval_with_features(&x).unwrap();
        assert_eq!(logits.size(), [2, NUM_CLASSES as i64]);
        assert_eq!(f.size(), [2, 2048]);
        let frozen = net::freeze_below_block(&m.net, &m.vs, 3);
        let vars = m.vs.variables();
        assert!(frozen > 0);
        assert!(!vars["conv1.weight"].requires_grad() && !vars["layer2.0.conv1.weight"].requires_grad());
        assert!(vars["layer3.0.conv1.weight"].requires_grad() && vars["fc.weight"].requires_grad());
        assert_eq!(net::set_backbone_trainable(&m.net, &m.vs, false) > 0, true);
        assert!(!vars["layer4.2.conv3.weight"].requires_grad() && vars["fc.weight"].requires_grad());
        let loss = m.train_logits(&x).unwrap().cross_entropy_for_logits(&Tensor::from_slice(&[0i64, 2]));
        loss.backward();
        assert!(vars["fc.weight"].grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    #[test]
    fn vgg16_backbone_gives_4096_features_and_rejects_block_unfreeze() {
        use crate::cls::net::ClsArch;
        let mut cfg = ClsTrainConfig::default();
        cfg.model.arch = ClsArch::Vgg16;
        cfg.model.input_size = 32;
        cfg.model.pretrained = false;
        cfg.train.unfreeze_from_block = 0;
        cfg.validate().unwrap();
        let m = ClsModel::build(&cfg, Device::Cpu).unwrap();
        let (logits, f) = m.eval_with_features(&Tensor::rand([1, 3, 32, 32], (Kind::Float, Device::Cpu))).unwrap();
        assert_eq!((logits.size(), f.size()), (vec![1, NUM_CLASSES as i64], vec![1, 4096]));
        assert!(m.vs.variables().contains_key("classifier.6.weight"));
        cfg.train.unfreeze_from_block = 2;
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn inverse_frequency_weights() {
        use LesionClass::*;
        let w = class_weights(&[Melanoma, Nevus, Nevus, Nevus], ClassWeighting::InverseFrequency).unwrap();
        assert!((w[0] - 4.0 / 3.0).abs() < 1e-12 && w[1] == 0.0 && (w[2] - 4.0 / 9.0).abs() < 1e-12);
        assert!(class_weights(&[Melanoma], ClassWeighting::None).is_none());
    }
}
