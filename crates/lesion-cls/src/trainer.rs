//! Classification training on the core loop: a pretrained backbone (EfficientNet-Lite, ResNet,
//! VGG-16) with a new 3-class head, softmax cross-entropy (optionally inverse-frequency class
//! weights), Adam / AdamW / RMSProp / SGD, a frozen-backbone warm-up and partial unfreeze,
//! validation mean AUC each epoch with early stopping. The run folder, resuming, checkpoints
//! and the loop itself are [`lesion_core`]'s.
//!
//! Determinism: batch order, augmentation and dropout draws are pure functions of
//! (seed, epoch, sample), so a resumed run repeats an uninterrupted one.
use std::collections::HashMap;
use std::path::PathBuf;

use lesion_core::fit::{
    fit, BatchSource, EpochTotals, FitSettings, Learner, StepOutput, ValidOutcome,
};
use lesion_core::optim::Optimizer;
use lesion_core::plots::{plot_curves, CurvePoint};
use lesion_core::run::{self, RunOptions, Split};
use lesion_core::{Result, TrainError};
use lesion_data::cache::PreprocessCache;
use lesion_data::labels::{LabelledRow, LesionClass, NUM_CLASSES};
use lesion_data::split::stratified_holdout;
use lesion_metrics::cls::roc_auc;
use lesion_models::classifier::{self, model_input};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};
use tracing::{info, warn};

use crate::augment::{augment_batch, sample_params, to_unit, ClsAugParams, ClsAugmentConfig};
use crate::config::{
    ClassWeighting, ClsModelConfig, ClsTrainConfig, AUTO_VALIDATION_MIN_IMAGES, AUTO_VAL_FRACTION,
    CLASSES,
};
use crate::model::{ClsDataset, ClsModel};

/// Validation batches may be larger than training ones (no activations kept for backward).
const VAL_BATCH_FACTOR: usize = 2;
/// CrossEntropy's "no ignored class" index.
const NO_IGNORE_INDEX: i64 = -100;
/// Training images whose evaluation-mode predictions are checked for collapse each epoch.
const PROBE_IMAGES: usize = 64;
/// Predictions whose per-class standard deviation across images (averaged over the classes)
/// is below this no longer depend on the image: a collapsed model. A trained classifier's is
/// well above 0.05; a dead one's is ~0.
pub const COLLAPSE_SPREAD: f64 = 0.01;

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
    /// Spread of the evaluation-mode predictions on a fixed probe of training images (mean over
    /// classes of the probabilities' standard deviation across images); ~0 means collapse.
    #[serde(default)]
    pub pred_spread: Option<f64>,
    /// Seconds of the epoch spent waiting for training batches (absent in older logs).
    #[serde(default)]
    pub data_wait_seconds: Option<f64>,
}

/// Written last: the run is finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClsCompletion {
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_val_auc_mean: Option<f64>,
    pub stopped_early: bool,
    pub seconds: f64,
    /// Health problems of the last epoch (divergence, collapse); empty when healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
pub fn one_vs_rest_auc(
    classes: &[LesionClass],
    probs: &[[f64; NUM_CLASSES]],
    class: LesionClass,
) -> Option<f64> {
    let truth: Vec<bool> = classes.iter().map(|&c| c == class).collect();
    let score: Vec<f64> = probs.iter().map(|p| p[class.index()]).collect();
    roc_auc(&truth, &score).ok()
}

/// Evaluation-mode class probabilities (no augmentation, the whole cached image) of the images
/// `indices` of `data`, and their summed cross-entropy.
fn eval_probs(
    model: &ClsModel,
    data: &ClsDataset,
    indices: &[i64],
    batch_size: usize,
    device: Device,
) -> Result<(Vec<[f64; NUM_CLASSES]>, f64)> {
    let mut probs: Vec<[f64; NUM_CLASSES]> = Vec::with_capacity(indices.len());
    let mut loss_sum = 0.0;
    let size = model.cfg.model.input_size;
    tch::no_grad(|| -> Result<()> {
        for chunk in indices.chunks(batch_size.max(1)) {
            let x = augment_batch(
                &to_unit(&data.images_at(chunk), device),
                &vec![ClsAugParams::IDENTITY; chunk.len()],
                size,
            );
            let logits = model.logits(&model_input(&x, &model.cfg.model), false)?;
            let labels = data.labels_at(chunk, device);
            loss_sum += logits
                .cross_entropy_loss::<Tensor>(&labels, None, Reduction::Sum, NO_IGNORE_INDEX, 0.0)
                .double_value(&[]);
            let p = Vec::<f32>::try_from(
                logits.softmax(-1, Kind::Float).to_device(Device::Cpu).flatten(0, -1),
            )?;
            for row in p.chunks_exact(NUM_CLASSES) {
                probs.push([f64::from(row[0]), f64::from(row[1]), f64::from(row[2])]);
            }
        }
        Ok(())
    })?;
    Ok((probs, loss_sum))
}

/// Mean over classes of the standard deviation of the class probability across images
/// (0 when every image gets the same prediction).
pub fn prediction_spread(probs: &[[f64; NUM_CLASSES]]) -> f64 {
    if probs.is_empty() {
        return 0.0;
    }
    let n = probs.len() as f64;
    let per_class = (0..NUM_CLASSES).map(|c| {
        let mean = probs.iter().map(|p| p[c]).sum::<f64>() / n;
        (probs.iter().map(|p| (p[c] - mean).powi(2)).sum::<f64>() / n).sqrt()
    });
    per_class.sum::<f64>() / NUM_CLASSES as f64
}

/// The collapse problem of a spread, if it is one.
pub fn collapse_problem(spread: f64) -> Option<String> {
    (spread < COLLAPSE_SPREAD).then(|| {
        format!(
            "predictions collapsed: they hardly depend on the image (spread {spread:.4} < {COLLAPSE_SPREAD}); lower the learning rate or unfreeze later"
        )
    })
}

pub fn validate(
    model: &ClsModel,
    data: &ClsDataset,
    batch_size: usize,
    device: Device,
) -> Result<ClsValidation> {
    let all: Vec<i64> = (0..data.len() as i64).collect();
    let (probs, loss_sum) = eval_probs(model, data, &all, batch_size, device)?;
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
    pub cache: &'a PreprocessCache,
    pub run: RunOptions,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClsTrainOutcome {
    pub run_dir: PathBuf,
    pub completion: ClsCompletion,
}

/// The classification task as the core loop sees it.
struct ClsLearner<'a> {
    cfg: &'a ClsTrainConfig,
    model: ClsModel,
    train: ClsDataset,
    val: Option<ClsDataset>,
    /// Per-class loss weights (None = unweighted).
    weights: Option<Tensor>,
    device: Device,
    weights_cache: PathBuf,
    run_dir: PathBuf,
    /// Whether the backbone is frozen in the current epoch.
    frozen: bool,
    /// The collapse probe: training-set indices, and their spread after the last epoch.
    probe: Vec<i64>,
    spread: Option<f64>,
}

/// The training batches of an epoch, built on the prefetch thread: the images (a shallow
/// clone of the dataset's tensor), their classes and the augmentation law's settings.
struct ClsBatches {
    images: ClsDataset,
    augment: ClsAugmentConfig,
    seed: u64,
    input_size: i64,
    /// The net's input settings (colour constancy, normalisation): see `model_input`.
    model: ClsModelConfig,
    device: Device,
}

/// One training batch: normalised, augmented images and their class indices.
struct ClsBatch {
    x: Tensor,
    labels: Tensor,
}

impl BatchSource for ClsBatches {
    type Batch = ClsBatch;

    fn batch(&mut self, epoch: usize, chunk: &[i64]) -> Result<ClsBatch> {
        let params: Vec<_> = chunk
            .iter()
            .map(|&i| sample_params(&self.augment, self.seed, epoch as u64, i as u64))
            .collect();
        let x = augment_batch(
            &to_unit(&self.images.images_at(chunk), self.device),
            &params,
            self.input_size,
        );
        Ok(ClsBatch {
            x: model_input(&x, &self.model),
            labels: self.images.labels_at(chunk, self.device),
        })
    }
}

impl Learner for ClsLearner<'_> {
    type Record = ClsEpochRecord;
    type Valid = ClsValidation;
    type Source = ClsBatches;

    fn vars(&self) -> &VarStore {
        &self.model.vs
    }

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn batch_source(&self) -> ClsBatches {
        ClsBatches {
            images: self.train.shallow_clone(),
            augment: self.cfg.augment.clone(),
            seed: self.cfg.train.seed,
            input_size: self.cfg.model.input_size,
            model: self.cfg.model.clone(),
            device: self.device,
        }
    }

    fn init_fresh(&mut self) -> Result<()> {
        if self.cfg.model.pretrained {
            classifier::load_pretrained(
                &self.cfg.model,
                CLASSES,
                &self.model.net,
                &self.model.vs,
                &self.weights_cache,
            )?;
        }
        Ok(())
    }

    fn begin_epoch(&mut self, epoch: usize, opt: &mut dyn Optimizer) -> Result<()> {
        let cfg = self.cfg;
        self.frozen = epoch < cfg.train.freeze_backbone_epochs;
        classifier::set_backbone_trainable(&self.model.net, &self.model.vs, !self.frozen);
        if !self.frozen && cfg.train.unfreeze_from_block > 0 {
            classifier::freeze_below_block(
                &self.model.net,
                &self.model.vs,
                cfg.train.unfreeze_from_block,
            );
        }
        if let Some(lr) = cfg.train.optimizer.scheduled_lr(&cfg.optimizers(), epoch) {
            opt.set_lr(lr);
        }
        Ok(())
    }

    fn train_step(&mut self, _epoch: usize, b: ClsBatch) -> Result<StepOutput> {
        let labels = b.labels;
        let logits = self.model.train_logits(&b.x)?;
        let loss = logits.cross_entropy_loss(
            &labels,
            self.weights.as_ref(),
            Reduction::Mean,
            NO_IGNORE_INDEX,
            0.0,
        );
        let correct = logits.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64).int64_value(&[]);
        Ok(StepOutput { loss, correct: Some(correct) })
    }

    fn valid_step(&mut self, _done: usize) -> Result<ValidOutcome<ClsValidation>> {
        let batch = self.cfg.train.batch_size * VAL_BATCH_FACTOR;
        let (probe, _) = eval_probs(&self.model, &self.train, &self.probe, batch, self.device)?;
        self.spread = Some(prediction_spread(&probe));
        let Some(val) = &self.val else { return Ok(ValidOutcome::NoValidationSet) };
        let v =
            validate(&self.model, val, self.cfg.train.batch_size * VAL_BATCH_FACTOR, self.device)?;
        Ok(ValidOutcome::Scored { score: v.mean_auc(), valid: v })
    }

    fn record(&self, t: &EpochTotals, val: Option<&ClsValidation>) -> ClsEpochRecord {
        ClsEpochRecord {
            epoch: t.epoch,
            train_loss: t.train_loss,
            train_accuracy: t.train_accuracy.unwrap_or(0.0),
            val_loss: val.map(|v| v.loss),
            val_accuracy: val.map(|v| v.accuracy),
            val_auc_melanoma: val.and_then(|v| v.auc_melanoma),
            val_auc_keratosis: val.and_then(|v| v.auc_keratosis),
            val_auc_mean: val.and_then(ClsValidation::mean_auc),
            lr: t.lr,
            backbone_frozen: self.frozen,
            seconds: t.seconds,
            pred_spread: self.spread,
            data_wait_seconds: t.data_wait_seconds,
        }
    }

    fn summary(r: &ClsEpochRecord) -> EpochTotals {
        let (epoch, train_loss, lr, seconds) = (r.epoch, r.train_loss, r.lr, r.seconds);
        let (train_accuracy, data_wait_seconds) = (Some(r.train_accuracy), r.data_wait_seconds);
        EpochTotals { epoch, train_loss, train_accuracy, lr, seconds, data_wait_seconds }
    }

    fn health(&self, records: &[ClsEpochRecord]) -> Vec<String> {
        records.last().and_then(|r| r.pred_spread).and_then(collapse_problem).into_iter().collect()
    }

    fn report(&self, r: &ClsEpochRecord, epochs: usize) {
        let val = match (r.val_loss, r.val_accuracy) {
            (Some(l), Some(a)) => format!(
                ", val loss {l:.4} acc {a:.3} AUC mel {} sk {}",
                fmt_opt(r.val_auc_melanoma),
                fmt_opt(r.val_auc_keratosis)
            ),
            _ => String::new(),
        };
        let frozen = if r.backbone_frozen { ", backbone frozen" } else { "" };
        info!(
            "epoch {}/{epochs}: train loss {:.4} acc {:.3}{val} ({:.1}s{frozen})",
            r.epoch, r.train_loss, r.train_accuracy, r.seconds
        );
    }

    fn after_epoch(&self, records: &[ClsEpochRecord]) -> Result<()> {
        let points: Vec<CurvePoint> = records
            .iter()
            .map(|r| CurvePoint {
                epoch: r.epoch,
                train_loss: r.train_loss,
                val_loss: r.val_loss,
                val_scores: [r.val_auc_melanoma, r.val_auc_keratosis],
            })
            .collect();
        plot_curves(&self.run_dir.join(run::CURVES_PNG), &points, ["AUC melanoma", "AUC keratosis"])
    }
}

/// Trains (or resumes) a run; returns when `COMPLETE.json` is written.
pub fn train(req: ClsTrainRequest<'_>) -> Result<ClsTrainOutcome> {
    let rows = req.rows;
    if req.cfg.model.pooling.needs_mask() {
        // The trained heads (Lite's own `_fc`, the others' linear) take F features; lesion
        // pooling is for the frozen backbones of `stack svm-head`.
        return Err(TrainError::Config(
            "model.pooling = global-and-lesion is for SVM heads on a frozen backbone (`lesion stack svm-head`); fine-tuning pools globally (leave model.pooling unset)".into(),
        ));
    }
    // Held to the end: one writer per run folder; a failed start is removed on drop.
    let (cfg, split, _lock) = run::open(&req.run, &req.cfg, |cfg| {
        let fraction = cfg.data.val_fraction_for(rows.len());
        if fraction == 0.0 && rows.len() > AUTO_VALIDATION_MIN_IMAGES {
            warn!(
                images = rows.len(),
                "data.val_fraction = 0: no validation split, so a collapsing or overfitting run goes unseen (leave it unset for an automatic {AUTO_VAL_FRACTION} split)"
            );
        }
        Ok(if fraction > 0.0 {
            stratified_holdout(rows, fraction, cfg.data.split_seed)
        } else {
            Split { train: rows.iter().map(|r| r.row.id.clone()).collect(), val: Vec::new() }
        })
    })?;
    let by_id: HashMap<&str, &LabelledRow> =
        req.rows.iter().map(|r| (r.row.id.as_str(), r)).collect();
    let pick = |ids: &[String]| -> Result<Vec<LabelledRow>> {
        ids.iter()
            .map(|id| {
                by_id.get(id.as_str()).map(|r| (*r).clone()).ok_or_else(|| {
                    TrainError::Config(format!(
                        "id '{id}' of the split is not among the labelled rows"
                    ))
                })
            })
            .collect()
    };
    let train_rows = pick(&split.train)?;
    let val_rows = pick(&split.val)?;
    let cache_size = cfg.cache_size();
    info!(
        train = train_rows.len(),
        val = val_rows.len(),
        size = cfg.model.input_size,
        cache_size,
        "preparing data"
    );
    let train_data =
        ClsDataset::prepare(&train_rows, cache_size, cfg.data.resize, req.cache, req.run.progress)?;
    let val_data = if val_rows.is_empty() {
        None
    } else {
        Some(ClsDataset::prepare(
            &val_rows,
            cache_size,
            cfg.data.resize,
            req.cache,
            req.run.progress,
        )?)
    };

    tch::manual_seed(cfg.train.seed as i64);
    let model = ClsModel::build(&cfg, req.run.device)?;
    let mut opt = cfg.train.optimizer.build(&cfg.optimizers());
    let weights = class_weights(&train_data.classes, cfg.train.class_weighting)
        .map(|w| Tensor::from_slice(&w.map(|v| v as f32)).to_device(req.run.device));
    // Evenly spaced over the (id-sorted) training set.
    let n_train = train_data.len();
    let probe_len = PROBE_IMAGES.min(n_train);
    let probe = (0..probe_len).map(|i| (i * n_train / probe_len.max(1)) as i64).collect();
    let mut learner = ClsLearner {
        cfg: &cfg,
        model,
        train: train_data,
        val: val_data,
        weights,
        device: req.run.device,
        weights_cache: req.run.weights_cache.clone(),
        run_dir: req.run.run_dir.clone(),
        frozen: false,
        probe,
        spread: None,
    };
    let batch_size = cfg.train.batch_size_for(n_train);
    if batch_size != cfg.train.batch_size {
        info!(
            train = n_train,
            batch_size,
            "small training set (at most {AUTO_VALIDATION_MIN_IMAGES} images): train.small_set_batch_size applies"
        );
    }
    let settings = FitSettings {
        epochs: cfg.train.epochs,
        batch_size,
        seed: cfg.train.seed,
        precision: cfg.train.precision,
        channels_last: cfg.train.channels_last,
        early_stop_patience: cfg.train.patience,
        plateau: None,
    };
    let out = fit(&mut learner, opt.as_mut(), &req.run, &settings)?;
    lesion_core::fit::check_health(&req.run, &out.problems)?;
    let completion = ClsCompletion {
        epochs: out.state.epoch,
        best_epoch: out.state.best_epoch,
        best_val_auc_mean: out.best_score(),
        stopped_early: out.stopped_early,
        seconds: out.seconds,
        warnings: out.problems.clone(),
    };
    run::complete(&req.run.run_dir, &completion)?;
    Ok(ClsTrainOutcome { run_dir: req.run.run_dir.clone(), completion })
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_unfreeze() {
        let cfg = ClsTrainConfig {
            model: crate::config::ClsModelConfig {
                input_size: 64,
                pretrained: false,
                ..Default::default()
            },
            ..Default::default()
        };
        let m = ClsModel::build(&cfg, Device::Cpu).unwrap();
        let frozen = classifier::freeze_below_block(&m.net, &m.vs, 12);
        let vars = m.vs.variables();
        assert!(frozen > 0);
        assert!(
            !vars["_conv_stem.weight"].requires_grad()
                && !vars["_blocks.11._project_conv.weight"].requires_grad()
        );
        assert!(
            vars["_blocks.12._project_conv.weight"].requires_grad()
                && vars["_conv_head.weight"].requires_grad()
                && vars["_fc.weight"].requires_grad()
        );
    }

    #[test]
    fn resnet_backbone_trains_features_and_freezes_by_stage() {
        use lesion_models::classifier::ClsArch;
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
        let frozen = classifier::freeze_below_block(&m.net, &m.vs, 3);
        let vars = m.vs.variables();
        assert!(frozen > 0);
        assert!(
            !vars["conv1.weight"].requires_grad() && !vars["layer2.0.conv1.weight"].requires_grad()
        );
        assert!(vars["layer3.0.conv1.weight"].requires_grad() && vars["fc.weight"].requires_grad());
        assert!(classifier::set_backbone_trainable(&m.net, &m.vs, false) > 0);
        assert!(
            !vars["layer4.2.conv3.weight"].requires_grad() && vars["fc.weight"].requires_grad()
        );
        let loss =
            m.train_logits(&x).unwrap().cross_entropy_for_logits(&Tensor::from_slice(&[0i64, 2]));
        loss.backward();
        assert!(vars["fc.weight"].grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    #[test]
    fn vgg16_backbone_gives_4096_features_and_rejects_block_unfreeze() {
        use lesion_models::classifier::ClsArch;
        let mut cfg = ClsTrainConfig::default();
        cfg.model.arch = ClsArch::Vgg16;
        cfg.model.input_size = 32;
        cfg.model.pretrained = false;
        cfg.train.unfreeze_from_block = 0;
        cfg.validate().unwrap();
        let m = ClsModel::build(&cfg, Device::Cpu).unwrap();
        let (logits, f) = m
            .eval_with_features(&Tensor::rand([1, 3, 32, 32], (Kind::Float, Device::Cpu)))
            .unwrap();
        assert_eq!((logits.size(), f.size()), (vec![1, NUM_CLASSES as i64], vec![1, 4096]));
        assert!(m.vs.variables().contains_key("classifier.6.weight"));
        cfg.train.unfreeze_from_block = 2;
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn inception_v4_backbone_gives_1536_features_and_freezes_by_module() {
        use lesion_models::classifier::{ClsArch, Normalization};
        use lesion_models::inception_v4::{FEATURE_BLOCKS, MIN_INPUT_SIZE};
        let mut cfg = ClsTrainConfig::default();
        cfg.model.arch = ClsArch::InceptionV4;
        cfg.model.input_size = MIN_INPUT_SIZE;
        cfg.model.normalization = Normalization::Inception;
        cfg.model.pretrained = false;
        cfg.train.unfreeze_from_block = 18;
        cfg.validate().unwrap();
        let m = ClsModel::build(&cfg, Device::Cpu).unwrap();
        let x = Tensor::rand([2, 3, MIN_INPUT_SIZE, MIN_INPUT_SIZE], (Kind::Float, Device::Cpu));
        let (logits, f) = m.eval_with_features(&x).unwrap();
        assert_eq!((logits.size(), f.size()), (vec![2, NUM_CLASSES as i64], vec![2, 1536]));
        let frozen = classifier::freeze_below_block(&m.net, &m.vs, 18);
        let vars = m.vs.variables();
        assert!(frozen > 0);
        assert!(
            !vars["features.0.conv.weight"].requires_grad()
                && !vars["features.17.branch2.4.bn.weight"].requires_grad()
        );
        assert!(
            vars["features.18.branch1.3.conv.weight"].requires_grad()
                && vars["features.21.branch2_3b.conv.weight"].requires_grad()
                && vars["last_linear.weight"].requires_grad()
        );
        let loss =
            m.train_logits(&x).unwrap().cross_entropy_for_logits(&Tensor::from_slice(&[0i64, 2]));
        loss.backward();
        assert!(vars["last_linear.weight"].grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
        assert!(
            vars["features.21.branch0.conv.weight"].grad().abs().sum(Kind::Float).double_value(&[])
                > 0.0
        );
        cfg.train.unfreeze_from_block = FEATURE_BLOCKS;
        assert!(cfg.validate().is_err());
        cfg.train.unfreeze_from_block = 0;
        cfg.model.input_size = MIN_INPUT_SIZE - 1;
        assert!(cfg.validate().is_err());
        cfg.model.input_size = 299;
        cfg.model.pretrained = true;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("timm-layout"), "{err}");
    }

    #[test]
    fn inverse_frequency_weights() {
        use LesionClass::*;
        let w = class_weights(&[Melanoma, Nevus, Nevus, Nevus], ClassWeighting::InverseFrequency)
            .unwrap();
        assert!(
            (w[0] - 4.0 / 3.0).abs() < 1e-12 && w[1] == 0.0 && (w[2] - 4.0 / 9.0).abs() < 1e-12
        );
        assert!(class_weights(&[Melanoma], ClassWeighting::None).is_none());
    }
}
