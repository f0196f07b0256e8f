//! The segmentation trainer: prepares the data once, trains with Adam on the dice loss (or
//! another), validates each epoch with the official Jaccard, keeps the best checkpoint, and
//! writes everything to a run folder that `--resume` can continue after any kill.
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use lesion_data::cache::{PreprocessCache, ResizeMethod};
use lesion_data::manifest::ManifestRow;
use lesion_metrics::seg::{Confusion, SegScores};
use lesion_models::{Arch, SegNet};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{nn::VarStore, Device, Kind, Tensor};
use tracing::{info, warn};

use crate::augment::{sample_params, warp_batch};
use crate::checkpoint::{self, CheckpointPaths, TrainState};
use crate::config::{Resize, SegTrainConfig};
use crate::dataset::{epoch_order, normalize, SegDataset};
use crate::error::{Result, TrainError};
use crate::optim::Adam;
use crate::run::{self, Completion, EpochRecord, Split};

/// Validation batches are larger than training ones: no activations are kept for backward.
const VAL_BATCH_FACTOR: usize = 2;

/// What to train and where.
pub struct TrainRequest<'a> {
    pub cfg: SegTrainConfig,
    pub rows: &'a [ManifestRow],
    pub run_dir: PathBuf,
    pub device: Device,
    pub cache: &'a PreprocessCache,
    /// Continue the run in `run_dir` from its last checkpoint (its own config is used).
    pub resume: bool,
    /// Where pretrained weights are cached (`vgg16-unet` with `pretrained = true`).
    pub weights_cache: PathBuf,
    pub command: Vec<String>,
    pub progress: bool,
    /// Recorded in `run.json` (for `--resume`).
    pub manifest: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_val_jaccard: Option<f64>,
    pub seconds: f64,
}

/// Group-aware seeded split: whole groups (or single images when a row has no group) go to
/// validation until `fraction` of the images are there.
pub fn random_split(rows: &[ManifestRow], fraction: f64, seed: u64) -> Split {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for r in rows {
        let g = r.group.clone().unwrap_or_else(|| r.id.clone());
        let i = *index.entry(g.clone()).or_insert_with(|| {
            groups.push((g, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(r.id.clone());
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    groups.shuffle(&mut rng);
    let target = (rows.len() as f64 * fraction).round() as usize;
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (_, ids) in groups {
        if val.len() < target {
            val.extend(ids);
        } else {
            train.extend(ids);
        }
    }
    train.sort();
    val.sort();
    Split { train, val }
}

/// Reads a split file: validation ids, one per line, `#` starts a comment.
pub fn read_split_file(path: &Path, rows: &[ManifestRow]) -> Result<Split> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::file(path, e))?;
    let known: BTreeSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let mut val = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let id = line.split('#').next().unwrap_or("").trim();
        if id.is_empty() {
            continue;
        }
        if !known.contains(id) {
            return Err(TrainError::file(path, format!("line {}: id '{id}' is not in the manifest", i + 1)));
        }
        val.insert(id.to_string());
    }
    let train = rows.iter().filter(|r| !val.contains(&r.id)).map(|r| r.id.clone()).collect();
    Ok(Split { train, val: val.into_iter().collect() })
}

pub fn resize_method(r: Resize) -> ResizeMethod {
    match r {
        Resize::Cubic => ResizeMethod::Cubic,
        Resize::Bilinear => ResizeMethod::Bilinear,
    }
}

fn prepare(req: &TrainRequest<'_>, cfg: &SegTrainConfig, ids: &[String]) -> Result<SegDataset> {
    let by_id: HashMap<&str, &ManifestRow> = req.rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let rows: Vec<ManifestRow> = ids
        .iter()
        .map(|id| by_id.get(id.as_str()).map(|r| (*r).clone()).ok_or_else(|| TrainError::Config(format!("id '{id}' of the split is not in the manifest"))))
        .collect::<Result<_>>()?;
    let prepared = req.cache.prepare(&rows, cfg.model.input_size as u32, resize_method(cfg.data.resize), req.progress)?;
    SegDataset::from_prepared(&prepared)
}

/// Sets `requires_grad` on the encoder's variables (freeze-then-unfreeze schedule).
fn set_encoder_trainable(vs: &VarStore, trainable: bool) {
    for (name, t) in vs.variables() {
        if name.starts_with(lesion_models::vgg16_unet::Vgg16Unet::ENCODER_PREFIX) {
            let _ = t.set_requires_grad(trainable);
        }
    }
}

/// Mean official scores and mean loss of `net` over `data` (no augmentation).
pub struct Validation {
    pub loss: f64,
    pub mean: SegScores,
}

pub fn validate(net: &SegNet, data: &SegDataset, cfg: &SegTrainConfig, device: Device) -> Validation {
    let bs = cfg.train.batch_size * VAL_BATCH_FACTOR;
    let mut scores = Vec::with_capacity(data.len());
    let mut loss_sum = 0.0;
    let all: Vec<i64> = (0..data.len() as i64).collect();
    tch::no_grad(|| {
        for chunk in all.chunks(bs) {
            let b = data.batch(chunk, device);
            let logits = net.forward_t(&normalize(&b.images, cfg.model.input_norm()), false);
            loss_sum += cfg.train.loss.compute(&logits, &b.masks).double_value(&[]) * chunk.len() as f64;
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
    let count = |t: Tensor| -> Vec<i64> { Vec::<i64>::try_from(t.sum_dim_intlist(1, false, Kind::Int64).to_device(Device::Cpu)).unwrap_or_default() };
    let tp = count(pred.logical_and(&truth));
    let fp = count(pred.logical_and(&truth.logical_not()));
    let fnn = count(pred.logical_not().logical_and(&truth));
    let total = pred.size()[1];
    (0..n as usize)
        .filter(|&i| i < tp.len() && i < fp.len() && i < fnn.len())
        .map(|i| {
            let c = Confusion { tp: tp[i] as u64, fp: fp[i] as u64, fn_: fnn[i] as u64, tn: (total - tp[i] - fp[i] - fnn[i]) as u64 };
            SegScores::from_confusion(&c)
        })
        .collect()
}

/// Trains (or resumes) a run. Returns when all epochs are done and `COMPLETE.json` is written.
pub fn train(req: TrainRequest<'_>) -> Result<TrainOutcome> {
    let dir = req.run_dir.clone();
    let paths = CheckpointPaths::new(&dir);
    let (cfg, split) = if req.resume {
        if run::is_complete(&dir) {
            return Err(TrainError::file(&dir, "this run is already complete; nothing to resume"));
        }
        let cfg = SegTrainConfig::from_toml_file(&dir.join(run::CONFIG_FILE))?;
        let split: Split = run::read_json(&dir.join(run::SPLIT_FILE))?;
        (cfg, split)
    } else {
        req.cfg.validate()?;
        run::create_run_dir(&dir)?;
        let cfg = req.cfg.clone();
        let split = if cfg.train.train_on_all {
            Split { train: req.rows.iter().map(|r| r.id.clone()).collect(), val: Vec::new() }
        } else if let Some(f) = &cfg.data.split_file {
            read_split_file(f, req.rows)?
        } else {
            random_split(req.rows, cfg.data.val_fraction, cfg.data.split_seed)
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

    info!(train = split.train.len(), val = split.val.len(), size = cfg.model.input_size, "preparing data");
    let train_data = prepare(&req, &cfg, &split.train)?;
    let val_data = if split.val.is_empty() { None } else { Some(prepare(&req, &cfg, &split.val)?) };

    tch::manual_seed(cfg.train.seed as i64);
    let vs = VarStore::new(req.device);
    let net = cfg.model.build(&vs.root())?;
    info!(arch = %cfg.model.arch, params = lesion_models::trainable_parameter_count(&vs), "model built");
    let mut adam = Adam::new(cfg.adam);
    let mut state = TrainState { epoch: 0, best_score: f64::NEG_INFINITY, best_epoch: 0, lr: cfg.adam.lr, stale_validations: 0 };
    let mut records = Vec::new();
    if req.resume && paths.last.exists() {
        state = checkpoint::load_training(&paths.last, &vs, &mut adam)?;
        records = run::read_metrics(&dir)?;
        records.retain(|r| r.epoch <= state.epoch);
        info!(epoch = state.epoch, "resumed from {}", paths.last.display());
    } else {
        if req.resume {
            warn!("no checkpoint in {}; starting from epoch 0", dir.display());
        }
        if cfg.model.arch == Arch::Vgg16Unet && cfg.train.pretrained {
            lesion_models::pretrained::load_vgg16_imagenet(&vs, lesion_models::vgg16_unet::Vgg16Unet::ENCODER_PREFIX, &req.weights_cache)?;
        }
    }

    let steps = train_data.len().div_ceil(cfg.train.batch_size);
    for epoch in state.epoch..cfg.train.epochs {
        let t0 = Instant::now();
        let frozen = cfg.model.arch == Arch::Vgg16Unet && epoch < cfg.train.freeze_encoder_epochs;
        set_encoder_trainable(&vs, !frozen);
        // Dropout draws from torch's generator: reseed per epoch so a resumed run matches.
        tch::manual_seed(crate::augment::mix_seed(cfg.train.seed, epoch as u64, 0) as i64);
        let order = epoch_order(train_data.len(), cfg.train.seed, epoch as u64);
        let bar = progress_bar(req.progress, steps as u64, epoch, cfg.train.epochs);
        let mut loss_sum = 0.0;
        for chunk in order.chunks(cfg.train.batch_size) {
            let b = train_data.batch(chunk, req.device);
            let params: Vec<_> = chunk.iter().map(|&i| sample_params(&cfg.augment, cfg.train.seed, epoch as u64, i as u64)).collect();
            let w = if cfg.augment.enabled { warp_batch(&b.images, &b.masks, &params, cfg.augment.interpolation) } else { crate::augment::Warped { images: b.images, masks: b.masks } };
            let logits = net.forward_t(&normalize(&w.images, cfg.model.input_norm()), true);
            let loss = cfg.train.loss.compute(&logits, &w.masks);
            Adam::zero_grad(&vs);
            loss.backward();
            adam.step(&vs);
            let l = loss.double_value(&[]);
            if !l.is_finite() {
                return Err(TrainError::Config(format!("epoch {}: loss became {l}; lower adam.lr", epoch + 1)));
            }
            loss_sum += l * chunk.len() as f64;
            bar.inc(1);
        }
        bar.finish_and_clear();
        let done = epoch + 1;
        let validate_now = done % cfg.train.val_every == 0 || done == cfg.train.epochs;
        let val = match (&val_data, validate_now) {
            (Some(v), true) => Some(validate(&net, v, &cfg, req.device)),
            _ => None,
        };
        let record = EpochRecord {
            epoch: done,
            train_loss: loss_sum / train_data.len() as f64,
            val_loss: val.as_ref().map(|v| v.loss),
            val_jaccard: val.as_ref().map(|v| v.mean.jaccard),
            val_dice: val.as_ref().map(|v| v.mean.dice),
            val_threshold_jaccard: val.as_ref().map(|v| v.mean.threshold_jaccard),
            lr: adam.cfg.lr,
            seconds: t0.elapsed().as_secs_f64(),
        };
        info!(
            "epoch {done}/{}: train loss {:.4}{} ({:.1}s)",
            cfg.train.epochs,
            record.train_loss,
            val.as_ref().map(|v| format!(", val loss {:.4}, val Jaccard {:.4}, Dice {:.4}", v.loss, v.mean.jaccard, v.mean.dice)).unwrap_or_default(),
            record.seconds
        );
        records.push(record);
        state.epoch = done;
        // Best = highest validation Jaccard; in train-on-all mode, the last epoch.
        let improved = match &val {
            Some(v) if v.mean.jaccard > state.best_score => {
                state.best_score = v.mean.jaccard;
                true
            }
            Some(_) => false,
            None => val_data.is_none(),
        };
        if improved {
            state.best_epoch = done;
            state.stale_validations = 0;
            checkpoint::save_model(&paths.best, &vs)?;
        } else if val.is_some() {
            state.stale_validations += 1;
            if cfg.train.lr_patience > 0 && state.stale_validations >= cfg.train.lr_patience {
                adam.cfg.lr *= cfg.train.lr_decay;
                state.stale_validations = 0;
                info!(lr = adam.cfg.lr, "validation Jaccard stalled; learning rate lowered");
            }
        }
        state.lr = adam.cfg.lr;
        // Order matters for kill-safety: the log first, then the checkpoint. A kill between the
        // two leaves a log line ahead of the checkpoint; `--resume` drops log lines past the
        // checkpoint's epoch and retrains that epoch, so log and weights always agree. (The
        // other order could lose the line of an epoch whose checkpoint survived.)
        run::write_metrics(&dir, &records)?;
        checkpoint::save_training(&paths.last, &vs, &adam, &state)?;
        if let Err(e) = crate::plots::plot_curves(&dir.join(run::CURVES_PNG), &records) {
            warn!("could not draw curves: {e}");
        }
    }
    // Summed over the log, so a resumed run counts the epochs of every session.
    let seconds: f64 = records.iter().map(|r| r.seconds).sum();
    let best_val = if val_data.is_some() && state.best_score.is_finite() { Some(state.best_score) } else { None };
    let completion = Completion { epochs: state.epoch, best_epoch: state.best_epoch, best_val_jaccard: best_val, seconds };
    run::write_json(&dir.join(run::COMPLETE_FILE), &completion)?;
    Ok(TrainOutcome { run_dir: dir, epochs: state.epoch, best_epoch: state.best_epoch, best_val_jaccard: best_val, seconds })
}

fn progress_bar(enabled: bool, len: u64, epoch: usize, epochs: usize) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} batches, {elapsed} (eta {eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("epoch {}/{}", epoch + 1, epochs));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use lesion_models::SegNetConfig;

    #[test]
    fn unfreezing_restores_encoder_gradients() {
        let vs = VarStore::new(Device::Cpu);
        let cfg = SegNetConfig { arch: Arch::Vgg16Unet, input_size: 32, width: 0.125, ..Default::default() };
        let net = cfg.build(&vs.root()).unwrap();
        let x = Tensor::randn([1, 3, 32, 32], (Kind::Float, Device::Cpu));
        let key = "encoder.block1_conv1.weight";
        for trainable in [false, true] {
            set_encoder_trainable(&vs, trainable);
            Adam::zero_grad(&vs);
            net.forward_t(&x, true).sum(Kind::Float).backward();
            let g = vs.variables()[key].grad();
            let has = g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0;
            assert_eq!(has, trainable, "trainable={trainable}");
        }
    }
}
