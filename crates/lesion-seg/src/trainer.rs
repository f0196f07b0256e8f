//! Segmentation training on the core loop: prepares the data once, trains with Adam on the
//! dice loss (or another), validates with the official Jaccard every `val_every` epochs, keeps
//! the best checkpoint, and lowers the learning rate on a plateau. The run folder, resuming,
//! checkpoints and the loop itself are [`lesion_core`]'s.
use std::collections::HashMap;
use std::path::PathBuf;

use lesion_core::fit::{
    fit, BatchSource, EpochTotals, FitSettings, Learner, Plateau, StepOutput, ValidOutcome,
};
use lesion_core::optim::{Adam, Optimizer};
use lesion_core::plots::{plot_curves, CurvePoint};
use lesion_core::run::{self, RunOptions, Split};
use lesion_core::{Result, TrainError};
use lesion_data::cache::PreprocessCache;
use lesion_data::manifest::ManifestRow;
use lesion_data::split::{holdout, read_split_file};
use lesion_metrics::seg::{Confusion, SegScores};
use lesion_models::{Arch, SegNet};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};
use tracing::info;

use crate::augment::{sample_params, warp_batch, AugmentConfig};
use crate::config::SegTrainConfig;
use crate::dataset::{normalize, SegDataset};

/// Validation batches are larger than training ones: no activations are kept for backward.
const VAL_BATCH_FACTOR: usize = 2;

/// What to train and where.
pub struct TrainRequest<'a> {
    pub cfg: SegTrainConfig,
    pub rows: &'a [ManifestRow],
    pub cache: &'a PreprocessCache,
    pub run: RunOptions,
}

#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_val_jaccard: Option<f64>,
    pub seconds: f64,
}

/// One epoch's record in the metrics log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    /// Validation numbers are absent on epochs that were not validated.
    pub val_loss: Option<f64>,
    pub val_jaccard: Option<f64>,
    pub val_dice: Option<f64>,
    pub val_threshold_jaccard: Option<f64>,
    pub lr: f64,
    pub seconds: f64,
    /// Seconds of the epoch spent waiting for training batches (absent in older logs).
    #[serde(default)]
    pub data_wait_seconds: Option<f64>,
}

/// `COMPLETE.json` of a segmentation run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completion {
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_val_jaccard: Option<f64>,
    pub seconds: f64,
    /// Health problems of the last epoch (see `lesion_core::fit`); empty when healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn prepare(req: &TrainRequest<'_>, cfg: &SegTrainConfig, ids: &[String]) -> Result<SegDataset> {
    let by_id: HashMap<&str, &ManifestRow> = req.rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let rows: Vec<ManifestRow> = ids
        .iter()
        .map(|id| {
            by_id.get(id.as_str()).map(|r| (*r).clone()).ok_or_else(|| {
                TrainError::Config(format!("id '{id}' of the split is not in the manifest"))
            })
        })
        .collect::<Result<_>>()?;
    let prepared =
        req.cache.prepare(&rows, cfg.model.input_size as u32, cfg.data.resize, req.run.progress)?;
    SegDataset::from_prepared(&prepared)
}

/// Sets `requires_grad` on the trainable variables of the encoder of `arch` (the
/// freeze-then-unfreeze schedule); nets without a pretrained encoder are left alone. Only
/// parameters are touched, never BatchNorm running statistics (buffers must not require
/// grad). A frozen encoder's BatchNorm layers still run in training mode, so their running
/// statistics keep adapting to the new images (as smp's encoders do when frozen by
/// `requires_grad`).
fn set_encoder_trainable(vs: &VarStore, arch: Arch, trainable: bool) {
    if let Some(prefix) = arch.encoder_prefix() {
        lesion_models::state_dict::set_trainable_where(
            vs,
            |name| name.starts_with(prefix),
            trainable,
        );
    }
}

/// Mean official scores and mean loss of `net` over `data` (no augmentation).
pub struct Validation {
    pub loss: f64,
    pub mean: SegScores,
}

pub fn validate(
    net: &SegNet,
    data: &SegDataset,
    cfg: &SegTrainConfig,
    device: Device,
) -> Validation {
    let bs = cfg.train.batch_size * VAL_BATCH_FACTOR;
    let mut scores = Vec::with_capacity(data.len());
    let mut loss_sum = 0.0;
    let all: Vec<i64> = (0..data.len() as i64).collect();
    tch::no_grad(|| {
        for chunk in all.chunks(bs) {
            let b = data.batch(chunk, device);
            let logits = net.forward_t(&normalize(&b.images, cfg.model.input_norm()), false);
            loss_sum +=
                cfg.train.loss.compute(&logits, &b.masks).double_value(&[]) * chunk.len() as f64;
            scores.extend(batch_scores(&logits, &b.masks));
        }
    });
    Validation { loss: loss_sum / data.len().max(1) as f64, mean: SegScores::mean(&scores) }
}

/// Per-image official scores of thresholded logits (p > 0.5 ⇔ logit > 0) against masks.
pub fn batch_scores(logits: &Tensor, masks: &Tensor) -> Vec<SegScores> {
    let n = logits.size()[0];
    let pred = logits.gt(0.0).flatten(1, -1);
    let truth = masks.gt(0.5).flatten(1, -1);
    let count = |t: Tensor| -> Vec<i64> {
        Vec::<i64>::try_from(t.sum_dim_intlist(1, false, Kind::Int64).to_device(Device::Cpu))
            .unwrap_or_default()
    };
    let tp = count(pred.logical_and(&truth));
    let fp = count(pred.logical_and(&truth.logical_not()));
    let fnn = count(pred.logical_not().logical_and(&truth));
    let total = pred.size()[1];
    (0..n as usize)
        .filter(|&i| i < tp.len() && i < fp.len() && i < fnn.len())
        .map(|i| {
            let c = Confusion {
                tp: tp[i] as u64,
                fp: fp[i] as u64,
                fn_: fnn[i] as u64,
                tn: (total - tp[i] - fp[i] - fnn[i]) as u64,
            };
            SegScores::from_confusion(&c)
        })
        .collect()
}

/// The segmentation task as the core loop sees it.
struct SegLearner<'a> {
    cfg: &'a SegTrainConfig,
    net: SegNet,
    vs: VarStore,
    train: SegDataset,
    val: Option<SegDataset>,
    device: Device,
    weights_cache: PathBuf,
    run_dir: PathBuf,
}

/// The training batches of an epoch, built on the prefetch thread: the dataset's tensors
/// (shallow clones) and the augmentation law's settings.
struct SegBatches {
    train: SegDataset,
    augment: AugmentConfig,
    seed: u64,
    device: Device,
}

/// One training batch: warped images (0-255) and masks.
struct SegBatch {
    images: Tensor,
    masks: Tensor,
}

impl BatchSource for SegBatches {
    type Batch = SegBatch;

    fn batch(&mut self, epoch: usize, chunk: &[i64]) -> Result<SegBatch> {
        let b = self.train.batch(chunk, self.device);
        if !self.augment.enabled {
            return Ok(SegBatch { images: b.images, masks: b.masks });
        }
        let params: Vec<_> = chunk
            .iter()
            .map(|&i| sample_params(&self.augment, self.seed, epoch as u64, i as u64))
            .collect();
        let w = warp_batch(&b.images, &b.masks, &params, self.augment.interpolation);
        Ok(SegBatch { images: w.images, masks: w.masks })
    }
}

impl Learner for SegLearner<'_> {
    type Record = EpochRecord;
    type Valid = Validation;
    type Source = SegBatches;

    fn vars(&self) -> &VarStore {
        &self.vs
    }

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn batch_source(&self) -> SegBatches {
        SegBatches {
            train: self.train.shallow_clone(),
            augment: self.cfg.augment.clone(),
            seed: self.cfg.train.seed,
            device: self.device,
        }
    }

    fn init_fresh(&mut self) -> Result<()> {
        if !self.cfg.train.pretrained {
            return Ok(());
        }
        match self.cfg.model.arch {
            Arch::Vgg16Unet => {
                lesion_models::pretrained::load_vgg16_imagenet(
                    &self.vs,
                    lesion_models::vgg16_unet::Vgg16Unet::ENCODER_PREFIX,
                    &self.weights_cache,
                )?;
            }
            Arch::LiteUnet => {
                lesion_models::efficientnet::load_imagenet_backbone(
                    &self.vs,
                    lesion_models::lite_unet::ENCODER_PREFIX,
                    self.cfg.model.variant,
                    &self.weights_cache,
                )?;
            }
            Arch::Unet | Arch::CodellaFc | Arch::UnetBn => {}
        }
        Ok(())
    }

    fn begin_epoch(&mut self, epoch: usize, _opt: &mut dyn Optimizer) -> Result<()> {
        let frozen = epoch < self.cfg.train.freeze_encoder_epochs;
        set_encoder_trainable(&self.vs, self.cfg.model.arch, !frozen);
        Ok(())
    }

    fn train_step(&mut self, _epoch: usize, b: SegBatch) -> Result<StepOutput> {
        let cfg = self.cfg;
        let logits = self.net.forward_t(&normalize(&b.images, cfg.model.input_norm()), true);
        Ok(StepOutput { loss: cfg.train.loss.compute(&logits, &b.masks), correct: None })
    }

    fn valid_step(&mut self, done: usize) -> Result<ValidOutcome<Validation>> {
        let Some(val) = &self.val else { return Ok(ValidOutcome::NoValidationSet) };
        if !done.is_multiple_of(self.cfg.train.val_every) && done != self.cfg.train.epochs {
            return Ok(ValidOutcome::NotDue);
        }
        let v = validate(&self.net, val, self.cfg, self.device);
        Ok(ValidOutcome::Scored { score: Some(v.mean.jaccard), valid: v })
    }

    fn record(&self, t: &EpochTotals, val: Option<&Validation>) -> EpochRecord {
        EpochRecord {
            epoch: t.epoch,
            train_loss: t.train_loss,
            val_loss: val.map(|v| v.loss),
            val_jaccard: val.map(|v| v.mean.jaccard),
            val_dice: val.map(|v| v.mean.dice),
            val_threshold_jaccard: val.map(|v| v.mean.threshold_jaccard),
            lr: t.lr,
            seconds: t.seconds,
            data_wait_seconds: t.data_wait_seconds,
        }
    }

    fn summary(r: &EpochRecord) -> EpochTotals {
        let (epoch, train_loss, lr, seconds) = (r.epoch, r.train_loss, r.lr, r.seconds);
        let data_wait_seconds = r.data_wait_seconds;
        EpochTotals { epoch, train_loss, train_accuracy: None, lr, seconds, data_wait_seconds }
    }

    fn report(&self, r: &EpochRecord, epochs: usize) {
        let val = match (r.val_loss, r.val_jaccard, r.val_dice) {
            (Some(l), Some(j), Some(d)) => {
                format!(", val loss {l:.4}, val Jaccard {j:.4}, Dice {d:.4}")
            }
            _ => String::new(),
        };
        info!(
            "epoch {}/{epochs}: train loss {:.4}{val} ({:.1}s)",
            r.epoch, r.train_loss, r.seconds
        );
    }

    fn after_epoch(&self, records: &[EpochRecord]) -> Result<()> {
        let points: Vec<CurvePoint> = records
            .iter()
            .map(|r| CurvePoint {
                epoch: r.epoch,
                train_loss: r.train_loss,
                val_loss: r.val_loss,
                val_scores: [r.val_jaccard, r.val_dice],
            })
            .collect();
        plot_curves(&self.run_dir.join(run::CURVES_PNG), &points, ["Jaccard", "Dice"])
    }
}

/// The run's split: everything (train-on-all), a split file, or a group-aware hold-out.
fn make_split(cfg: &SegTrainConfig, rows: &[ManifestRow]) -> Result<Split> {
    Ok(if cfg.train.train_on_all {
        Split::all_train(rows)
    } else if let Some(f) = &cfg.data.split_file {
        read_split_file(f, rows)?
    } else {
        holdout(rows, cfg.data.val_fraction, cfg.data.split_seed)
    })
}

/// Trains (or resumes) a run. Returns when all epochs are done and `COMPLETE.json` is written.
pub fn train(req: TrainRequest<'_>) -> Result<TrainOutcome> {
    // Held to the end: one writer per run folder; a failed start is removed on drop.
    let (cfg, split, _lock) = run::open(&req.run, &req.cfg, |cfg| make_split(cfg, req.rows))?;
    info!(
        train = split.train.len(),
        val = split.val.len(),
        size = cfg.model.input_size,
        "preparing data"
    );
    let train_data = prepare(&req, &cfg, &split.train)?;
    let val_data = if split.val.is_empty() { None } else { Some(prepare(&req, &cfg, &split.val)?) };

    tch::manual_seed(cfg.train.seed as i64);
    let vs = VarStore::new(req.run.device);
    let net = cfg.model.build(&vs.root())?;
    info!(arch = %cfg.model.arch, params = lesion_models::trainable_parameter_count(&vs), "model built");
    let mut adam = Adam::new(cfg.adam);
    let has_val = val_data.is_some();
    let mut learner = SegLearner {
        cfg: &cfg,
        net,
        vs,
        train: train_data,
        val: val_data,
        device: req.run.device,
        weights_cache: req.run.weights_cache.clone(),
        run_dir: req.run.run_dir.clone(),
    };
    let settings = FitSettings {
        epochs: cfg.train.epochs,
        batch_size: cfg.train.batch_size,
        seed: cfg.train.seed,
        precision: cfg.train.precision,
        channels_last: cfg.train.channels_last,
        early_stop_patience: 0,
        plateau: Some(Plateau { patience: cfg.train.lr_patience, factor: cfg.train.lr_decay }),
    };
    let out = fit(&mut learner, &mut adam, &req.run, &settings)?;
    let best_val = if has_val { out.best_score() } else { None };
    let dir = req.run.run_dir.clone();
    lesion_core::fit::check_health(&req.run, &out.problems)?;
    let completion = Completion {
        epochs: out.state.epoch,
        best_epoch: out.state.best_epoch,
        best_val_jaccard: best_val,
        seconds: out.seconds,
        warnings: out.problems.clone(),
    };
    run::complete(&dir, &completion)?;
    Ok(TrainOutcome {
        run_dir: dir,
        epochs: out.state.epoch,
        best_epoch: out.state.best_epoch,
        best_val_jaccard: best_val,
        seconds: out.seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lesion_models::SegNetConfig;

    #[test]
    fn unfreezing_restores_encoder_gradients() {
        let vs = VarStore::new(Device::Cpu);
        let cfg = SegNetConfig {
            arch: Arch::Vgg16Unet,
            input_size: 32,
            width: 0.125,
            ..Default::default()
        };
        let net = cfg.build(&vs.root()).unwrap();
        let x = Tensor::randn([1, 3, 32, 32], (Kind::Float, Device::Cpu));
        let key = "encoder.block1_conv1.weight";
        for trainable in [false, true] {
            set_encoder_trainable(&vs, Arch::Vgg16Unet, trainable);
            lesion_core::optim::zero_grad(&vs);
            net.forward_t(&x, true).sum(Kind::Float).backward();
            let g = vs.variables()[key].grad();
            let has = g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0;
            assert_eq!(has, trainable, "trainable={trainable}");
        }
    }

    /// lite-unet freezes its encoder's parameters only: BatchNorm statistics stay buffers and
    /// the decoder keeps training.
    #[test]
    fn lite_unet_encoder_freezes() {
        let vs = VarStore::new(Device::Cpu);
        let cfg = SegNetConfig {
            arch: Arch::LiteUnet,
            input_size: 32,
            decoder_channels: vec![16, 8, 8, 8, 8],
            ..Default::default()
        };
        let net = cfg.build(&vs.root()).unwrap();
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let grad_of = |key: &str| {
            let g = vs.variables()[key].grad();
            g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0
        };
        for trainable in [false, true] {
            set_encoder_trainable(&vs, Arch::LiteUnet, trainable);
            lesion_core::optim::zero_grad(&vs);
            net.forward_t(&x, true).sum(Kind::Float).backward();
            assert_eq!(grad_of("encoder._conv_stem.weight"), trainable);
            assert!(grad_of("segmentation_head.weight"));
            assert!(!vs.variables()["encoder._bn0.running_mean"].requires_grad());
        }
    }
}
