//! The one epoch loop. A task (segmentation, classification) implements [`Learner`]: its
//! train step (a loss on a batch of training-set indices) and its validation, plus the epoch
//! record its metrics log keeps. [`fit`] owns everything else, once for every task: resuming
//! from the last checkpoint (the log is cut back to the checkpoint's epoch), seeding,
//! the epoch order, zero-grad / backward / optimiser step, the non-finite-loss stop, best
//! checkpoint selection, learning-rate decay on a plateau, early stopping, and the kill-safe
//! order of writes (log first, then checkpoint).
//!
//! Data never holds up the step: the batches of an epoch are built by the learner's
//! [`BatchSource`] on a prefetch thread, [`RunOptions::prefetch`] batches ahead (a bounded
//! queue), while the current step trains; 0 builds each batch in line (the old way). The time
//! the loop waits for a batch is kept per epoch ([`EpochTotals::data_wait_seconds`]).
//! The prefetch thread runs its torch ops on [`PREFETCH_THREADS`] intra-op thread, so it takes
//! at most one core from the step's own libtorch threads.
//!
//! Determinism: torch's generator is reseeded per epoch with `mix_seed(seed, epoch, 0)` (so
//! dropout repeats after a resume) and the batch order is [`epoch_order`]; together with the
//! task's own per-(seed, epoch, sample) augmentation draws, a resumed run repeats an
//! uninterrupted one.
use std::sync::mpsc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tch::nn::VarStore;
use tch::Tensor;
use tracing::{info, warn};

use crate::checkpoint::{self, CheckpointPaths, TrainState};
use crate::error::{Result, TrainError};
use crate::metrics_log;
use crate::optim::{zero_grad, Optimizer};
use crate::precision::{vars_to_channels_last, Autocast, GradScaler, Precision};
use crate::run::RunOptions;
use crate::seed::{epoch_order, mix_seed};

/// The `sample` key of the per-epoch torch seed.
const EPOCH_TORCH_SEED_SAMPLE: u64 = 0;
/// Training loss above this multiple of its best epoch, two epochs running, is divergence.
pub const DIVERGENCE_FACTOR: f64 = 1.15;
/// Epochs in a row above [`DIVERGENCE_FACTOR`] × the best loss that count as divergence.
pub const DIVERGENCE_EPOCHS: usize = 2;
/// ... and above the best by at least this much (in loss units): a nearly fitted small set
/// (two of five PH2 folds near 0.09 at the end of a cosine schedule) rose by up to 49 %
/// relative but at most 0.043 absolute, with nothing wrong; the ISIC 2017 collapse rose from
/// 0.96 to 1.08-1.20.
pub const DIVERGENCE_MIN_RISE: f64 = 0.05;

/// Intra-op threads of the prefetch thread's torch ops (gathers, warps: light next to a step).
pub const PREFETCH_THREADS: i32 = 1;

/// Builds training batches; one per epoch, moved to the prefetch thread, so it owns what it
/// reads (shallow clones of the dataset tensors, copies of the configs). Invariant: a batch
/// depends only on (epoch, indices), never on the order batches are built in or on torch's
/// generator, so prefetching cannot change what is trained.
pub trait BatchSource: Send {
    type Batch: Send;
    /// The batch of `indices` (into the training set) in (0-based) `epoch`.
    fn batch(&mut self, epoch: usize, indices: &[i64]) -> Result<Self::Batch>;
}

/// The batch type of a learner.
pub type BatchOf<L> = <<L as Learner>::Source as BatchSource>::Batch;

/// What a train step returns.
pub struct StepOutput {
    /// The batch's mean loss (a scalar with a graph to the trainable variables).
    pub loss: Tensor,
    /// Correct predictions in the batch, for tasks that count accuracy.
    pub correct: Option<i64>,
}

/// What a validation pass says about the epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValidOutcome<V> {
    /// The run has no validation set: every epoch is the best so far.
    NoValidationSet,
    /// Validation was not due this epoch (`val_every`).
    NotDue,
    /// Validated; `score` (higher is better) is `None` when undefined (e.g. a validation set
    /// without positives for an AUC).
    Scored { score: Option<f64>, valid: V },
}

impl<V> ValidOutcome<V> {
    pub fn valid(&self) -> Option<&V> {
        match self {
            ValidOutcome::Scored { valid, .. } => Some(valid),
            _ => None,
        }
    }
}

/// The training-set totals of one epoch, for the task's record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochTotals {
    /// 1-based number of the epoch just finished.
    pub epoch: usize,
    pub train_loss: f64,
    /// `None` when the task's steps count no correct predictions.
    pub train_accuracy: Option<f64>,
    /// The learning rate at the end of the epoch.
    pub lr: f64,
    pub seconds: f64,
    /// Seconds of the epoch's training the loop spent waiting for batches (building them, with
    /// no prefetch). `None` in records written before it was kept.
    pub data_wait_seconds: Option<f64>,
}

/// A task that [`fit`] can train.
pub trait Learner {
    /// One line of the metrics log.
    type Record: Serialize + DeserializeOwned + Clone;
    /// What one validation pass measures.
    type Valid;

    /// Builds the training batches.
    type Source: BatchSource;

    /// The variables the optimiser updates and the checkpoints hold.
    fn vars(&self) -> &VarStore;
    /// Number of training samples (indices `0..train_len()` reach [`BatchSource::batch`]).
    fn train_len(&self) -> usize;
    /// The batch builder of the epoch about to start (called after [`Learner::begin_epoch`]).
    fn batch_source(&self) -> Self::Source;
    /// Loads the pretrained weights a fresh (not resumed) run starts from.
    fn init_fresh(&mut self) -> Result<()>;
    /// Called before the first batch of (0-based) `epoch`: freezing schedules, learning-rate
    /// schedules.
    fn begin_epoch(&mut self, epoch: usize, opt: &mut dyn Optimizer) -> Result<()>;
    /// The loss of one batch (built by the epoch's [`BatchSource`]) in (0-based) `epoch`.
    fn train_step(&mut self, epoch: usize, batch: BatchOf<Self>) -> Result<StepOutput>;
    /// Validates after `epochs_done` epochs.
    fn valid_step(&mut self, epochs_done: usize) -> Result<ValidOutcome<Self::Valid>>;
    /// The log line of an epoch.
    fn record(&self, totals: &EpochTotals, valid: Option<&Self::Valid>) -> Self::Record;
    /// What the loop needs back from a log line: its epoch (to cut the log back to a
    /// checkpoint), training loss (divergence check) and seconds (the run's total).
    fn summary(record: &Self::Record) -> EpochTotals;
    /// The task's own health checks on the log so far (e.g. predictions that no longer depend
    /// on the image); each problem is one sentence. [`fit`] adds loss divergence.
    fn health(&self, _records: &[Self::Record]) -> Vec<String> {
        Vec::new()
    }
    /// Says how the epoch went (one log line).
    fn report(&self, record: &Self::Record, epochs: usize);
    /// Extra outputs after each epoch's log and checkpoint (e.g. curves); failures here are
    /// warnings, never errors.
    fn after_epoch(&self, _records: &[Self::Record]) -> Result<()> {
        Ok(())
    }
}

/// Lowers the learning rate when validation stalls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plateau {
    /// Validations without improvement before the rate is lowered (and the count restarts).
    pub patience: usize,
    pub factor: f64,
}

/// The loop's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitSettings {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// Stop when this many validations have not improved (0 = never).
    pub early_stop_patience: usize,
    pub plateau: Option<Plateau>,
    /// Forward passes (training and validation) under autocast in this precision; fp16 also
    /// scales the loss ([`GradScaler`], its state kept in the checkpoints).
    pub precision: Precision,
    /// Weights in channels-last layout (convolutions then run NHWC).
    pub channels_last: bool,
}

/// How the loop ended.
#[derive(Debug, Clone)]
pub struct FitOutcome<R> {
    pub state: TrainState,
    /// The whole log, every session of a resumed run included.
    pub records: Vec<R>,
    pub stopped_early: bool,
    /// Seconds summed over the log (every session of a resumed run).
    pub seconds: f64,
    /// Health problems of the last epoch (divergence, collapse); empty when healthy.
    pub problems: Vec<String>,
}

impl<R> FitOutcome<R> {
    /// The best validation score, `None` when nothing was ever scored.
    pub fn best_score(&self) -> Option<f64> {
        self.state.best_score.is_finite().then_some(self.state.best_score)
    }
}

/// Trains `learner` with `opt` in the run folder of `run` for `settings.epochs` epochs (or
/// until early stopping), resuming from its last checkpoint when `run.resume` is set. Writes
/// `metrics.{csv,jsonl}` and `checkpoints/{last,best}.safetensors`; the caller writes
/// `COMPLETE.json` from the outcome.
pub fn fit<L: Learner>(
    learner: &mut L,
    opt: &mut dyn Optimizer,
    run: &RunOptions,
    settings: &FitSettings,
) -> Result<FitOutcome<L::Record>> {
    let dir = &run.run_dir;
    let paths = CheckpointPaths::new(dir);
    let mut state = TrainState::fresh(opt.lr());
    let mut records: Vec<L::Record> = Vec::new();
    if run.resume && paths.last.exists() {
        let configured_lr = opt.lr();
        state = checkpoint::load_training(&paths.last, learner.vars(), opt)?;
        // The checkpoint's rate continues (plateau decays included) unless the config now sets
        // another one: a change `run::open` let through only when accepted, so it applies.
        if state.config_lr.is_some_and(|lr| lr != configured_lr) {
            info!(lr = configured_lr, "the config's learning rate changed; continuing at it");
            opt.set_lr(configured_lr);
            state.lr = configured_lr;
        }
        state.config_lr = Some(configured_lr);
        records = metrics_log::read(dir)?;
        records.retain(|r| L::summary(r).epoch <= state.epoch);
        info!(epoch = state.epoch, "resumed from {}", paths.last.display());
    } else {
        if run.resume {
            warn!("no checkpoint in {}; starting from epoch 0", dir.display());
        }
        learner.init_fresh()?;
    }
    if settings.channels_last {
        vars_to_channels_last(learner.vars());
    }
    let mut scaler = GradScaler::new(settings.precision);
    if let Some(saved) = state.grad_scaler.filter(|_| scaler.enabled) {
        scaler.state = saved;
    }
    let n = learner.train_len();
    if n == 0 {
        return Err(TrainError::Config("no training images".into()));
    }
    let bs = settings.batch_size.max(1);
    let stopped_early = loop {
        let epoch = state.epoch;
        if epoch >= settings.epochs {
            break false;
        }
        if settings.early_stop_patience > 0
            && state.stale_validations >= settings.early_stop_patience
        {
            break true;
        }
        let t0 = Instant::now();
        learner.begin_epoch(epoch, opt)?;
        tch::manual_seed(mix_seed(settings.seed, epoch as u64, EPOCH_TORCH_SEED_SAMPLE) as i64);
        let order = epoch_order(n, settings.seed, epoch as u64);
        let bar = progress_bar(run.progress, n.div_ceil(bs) as u64, epoch, settings.epochs);
        let source = learner.batch_source();
        let steps =
            Steps { device: run.device, precision: settings.precision, scaler: &mut scaler };
        let trained =
            train_epoch(learner, opt, steps, source, &order, bs, epoch, run.prefetch, &bar)?;
        bar.finish_and_clear();
        let done = epoch + 1;
        let outcome = {
            let _autocast = Autocast::enter(run.device, settings.precision)?;
            learner.valid_step(done)?
        };
        let totals = EpochTotals {
            epoch: done,
            train_loss: trained.loss_sum / trained.images.max(1) as f64,
            train_accuracy: trained.correct.map(|c| c as f64 / trained.images.max(1) as f64),
            lr: opt.lr(),
            seconds: t0.elapsed().as_secs_f64(),
            data_wait_seconds: Some(trained.data_wait.as_secs_f64()),
        };
        let record = learner.record(&totals, outcome.valid());
        learner.report(&record, settings.epochs);
        records.push(record);
        state.epoch = done;
        // Best = highest score; without a validation set, the last epoch. A scored epoch whose
        // score is undefined counts as best only while nothing is (so `best` always exists).
        let improved = match &outcome {
            ValidOutcome::NoValidationSet => true,
            ValidOutcome::NotDue => false,
            ValidOutcome::Scored { score: Some(s), .. } => *s > state.best_score,
            ValidOutcome::Scored { score: None, .. } => state.best_epoch == 0,
        };
        if improved {
            if let ValidOutcome::Scored { score: Some(s), .. } = outcome {
                state.best_score = s;
            }
            state.best_epoch = done;
            state.stale_validations = 0;
            checkpoint::save_model(&paths.best, learner.vars())?;
        } else if let ValidOutcome::Scored { .. } = outcome {
            state.stale_validations += 1;
            if let Some(p) = settings.plateau.filter(|p| p.patience > 0) {
                if state.stale_validations >= p.patience {
                    opt.set_lr(opt.lr() * p.factor);
                    state.stale_validations = 0;
                    info!(lr = opt.lr(), "validation stalled; learning rate lowered");
                }
            }
        }
        state.lr = opt.lr();
        state.grad_scaler = scaler.enabled.then_some(scaler.state);
        // Order matters for kill-safety: the log first, then the checkpoint. A kill between the
        // two leaves a log line ahead of the checkpoint; `--resume` drops log lines past the
        // checkpoint's epoch and retrains that epoch, so log and weights always agree. (The
        // other order could lose the line of an epoch whose checkpoint survived.)
        metrics_log::write(dir, &records)?;
        checkpoint::save_training(&paths.last, learner.vars(), opt, &state)?;
        if let Err(e) = learner.after_epoch(&records) {
            warn!("{e}");
        }
        for p in health(learner, &records) {
            warn!("epoch {done}: {p}");
        }
    };
    // From the whole log, so a run resumed after its last epoch is judged too.
    let problems = health(learner, &records);
    if stopped_early {
        info!(
            best_epoch = state.best_epoch,
            "validation stalled for {} epochs; stopping early", settings.early_stop_patience
        );
    }
    let seconds = records.iter().map(|r| L::summary(r).seconds).sum();
    Ok(FitOutcome { state, records, stopped_early, seconds, problems })
}

/// The training sums of one epoch.
struct EpochTrained {
    loss_sum: f64,
    /// Images of the steps taken (fp16 overflows skip steps).
    images: usize,
    /// `None` when some step counted no correct predictions.
    correct: Option<i64>,
    /// Time the loop waited for batches.
    data_wait: Duration,
}

/// How a train step runs: its device, autocast precision and loss scaler.
struct Steps<'a> {
    device: tch::Device,
    precision: Precision,
    scaler: &'a mut GradScaler,
}

/// One epoch's train steps over `order` in batches of `bs`: batches from `source`, built
/// `prefetch` ahead on a scoped thread (in line when 0). An error in a step drops the queue's
/// receiver, which ends the prefetch thread at its next send; the scope joins it.
#[allow(clippy::too_many_arguments)]
fn train_epoch<L: Learner>(
    learner: &mut L,
    opt: &mut dyn Optimizer,
    steps: Steps<'_>,
    mut source: L::Source,
    order: &[i64],
    bs: usize,
    epoch: usize,
    prefetch: usize,
    bar: &ProgressBar,
) -> Result<EpochTrained> {
    let mut sums =
        EpochTrained { loss_sum: 0.0, images: 0, correct: Some(0), data_wait: Duration::ZERO };
    let Steps { device, precision, scaler } = steps;
    let mut skipped = 0usize;
    let mut step = |learner: &mut L, chunk: &[i64], batch| -> Result<()> {
        let out = {
            let _autocast = Autocast::enter(device, precision)?;
            learner.train_step(epoch, batch)?
        };
        zero_grad(learner.vars());
        scaler.scale(&out.loss).backward();
        let finite = scaler.unscale_and_check(learner.vars());
        if finite {
            opt.step(learner.vars());
        }
        scaler.update(!finite);
        let l = out.loss.double_value(&[]);
        if !l.is_finite() || !finite {
            // fp16: an overflow skips the step and lowers the scale (as torch's GradScaler);
            // otherwise a non-finite loss ends the run.
            if scaler.enabled {
                skipped += 1;
                bar.inc(1);
                return Ok(());
            }
            return Err(TrainError::Config(format!(
                "epoch {}: loss became {l}; lower the learning rate",
                epoch + 1
            )));
        }
        sums.loss_sum += l * chunk.len() as f64;
        sums.images += chunk.len();
        sums.correct = sums.correct.zip(out.correct).map(|(a, b)| a + b);
        bar.inc(1);
        Ok(())
    };
    // The one loop over the epoch's batches, whichever way they arrive; returns the time spent
    // waiting for them.
    let mut run_steps = |next: &mut dyn FnMut(&[i64]) -> Result<BatchOf<L>>| -> Result<Duration> {
        let mut wait = Duration::ZERO;
        for chunk in order.chunks(bs) {
            let t = Instant::now();
            let batch = next(chunk)?;
            wait += t.elapsed();
            step(learner, chunk, batch)?;
        }
        Ok(wait)
    };
    let wait = if prefetch == 0 {
        run_steps(&mut |chunk| source.batch(epoch, chunk))?
    } else {
        let step_threads = tch::get_num_threads();
        let (tx, rx) = mpsc::sync_channel::<Result<BatchOf<L>>>(prefetch);
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        std::thread::scope(|scope| -> Result<Duration> {
            scope.spawn(move || {
                // `set_num_threads` also sets libtorch's process-wide default; the loop restores
                // it (for itself and MKL) once this thread has taken its own count (`ready`).
                tch::set_num_threads(PREFETCH_THREADS);
                let _ = ready_tx.send(());
                for chunk in order.chunks(bs) {
                    let batch = source.batch(epoch, chunk);
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        break;
                    }
                }
            });
            let _ = ready_rx.recv();
            tch::set_num_threads(step_threads);
            run_steps(&mut |_| {
                rx.recv().map_err(|_| {
                    TrainError::Config(
                        "the prefetch thread ended before the epoch's last batch".into(),
                    )
                })?
            })
        })?
    };
    sums.data_wait = wait;
    all_skipped(sums, skipped, order.len().div_ceil(bs), epoch)
}

/// Refuses an epoch whose every step overflowed in fp16 (nothing was trained).
fn all_skipped(
    sums: EpochTrained,
    skipped: usize,
    steps: usize,
    epoch: usize,
) -> Result<EpochTrained> {
    if skipped > 0 && skipped == steps {
        return Err(TrainError::Config(format!(
            "epoch {}: every step's gradients overflowed in fp16 (all {steps} skipped); use bf16 or fp32",
            epoch + 1
        )));
    }
    Ok(sums)
}

/// The task's health checks and loss divergence on the log so far.
fn health<L: Learner>(learner: &L, records: &[L::Record]) -> Vec<String> {
    let mut problems = learner.health(records);
    let losses: Vec<f64> = records.iter().map(|r| L::summary(r).train_loss).collect();
    problems.extend(divergence(&losses));
    problems
}

/// Whether the training loss diverged: its last [`DIVERGENCE_EPOCHS`] epochs all above
/// [`DIVERGENCE_FACTOR`] × the best earlier epoch and [`DIVERGENCE_MIN_RISE`] above it. `None`
/// when healthy.
pub fn divergence(losses: &[f64]) -> Option<String> {
    if losses.len() <= DIVERGENCE_EPOCHS {
        return None;
    }
    let (earlier, last) = losses.split_at(losses.len() - DIVERGENCE_EPOCHS);
    let (best_epoch, best) = earlier
        .iter()
        .copied()
        .enumerate()
        .fold((0, f64::INFINITY), |acc, (i, l)| if l < acc.1 { (i, l) } else { acc });
    let diverged = |l: f64| l > best * DIVERGENCE_FACTOR && l > best + DIVERGENCE_MIN_RISE;
    if best.is_finite() && last.iter().all(|&l| diverged(l)) {
        let now = last.last().copied().unwrap_or(best);
        return Some(format!(
            "training loss diverging: {now:.4} now, {best:.4} at epoch {} (above {DIVERGENCE_FACTOR} × and +{DIVERGENCE_MIN_RISE} for {DIVERGENCE_EPOCHS} epochs); lower the learning rate",
            best_epoch + 1
        ));
    }
    None
}

/// Refuses to complete a run with health problems when `strict`; otherwise they are kept in
/// its completion record. Call before writing `COMPLETE.json`.
pub fn check_health(run: &RunOptions, problems: &[String]) -> Result<()> {
    if run.strict && !problems.is_empty() {
        return Err(TrainError::file(
            &run.run_dir,
            format!("not marked complete (--strict): {}", problems.join("; ")),
        ));
    }
    Ok(())
}

fn progress_bar(enabled: bool, len: u64, epoch: usize, epochs: usize) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} batches, {elapsed} (eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("epoch {}/{}", epoch + 1, epochs));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divergence_needs_two_epochs_well_above_the_best() {
        assert!(divergence(&[1.0, 0.9, 0.8]).is_none());
        assert!(divergence(&[0.96, 1.0, 1.2]).is_none(), "one epoch above is noise");
        let d = divergence(&[1.1, 0.96, 1.2, 1.19]).unwrap();
        assert!(d.contains("epoch 2") && d.contains("1.19"), "{d}");
        assert!(divergence(&[0.9, 1.0, 1.05]).is_none(), "within 15 %");
        // Two PH2 folds' last epochs of a cosine run (measured; both warned before the floor):
        // up to 49 % above the best, but at most 0.043 in loss units.
        assert!(divergence(&[0.1095, 0.1262, 0.0876, 0.1308, 0.1232]).is_none(), "a wobble");
        assert!(divergence(&[0.0894, 0.1290, 0.1197]).is_none(), "a wobble");
        // The ISIC 2017 collapse of the architecture issue still counts.
        assert!(divergence(&[1.107, 0.992, 0.962, 1.20, 1.18]).is_some());
    }

    /// A learner whose training loss is constant and whose health check always fails: enough
    /// to drive the loop without a net.
    struct Stuck {
        vs: VarStore,
    }

    /// Batches of [`Stuck`]: the indices themselves.
    struct Indices;
    impl BatchSource for Indices {
        type Batch = Vec<i64>;
        fn batch(&mut self, _: usize, indices: &[i64]) -> Result<Vec<i64>> {
            Ok(indices.to_vec())
        }
    }

    impl Learner for Stuck {
        type Record = (usize, f64, f64);
        type Valid = ();
        type Source = Indices;

        fn vars(&self) -> &VarStore {
            &self.vs
        }
        fn train_len(&self) -> usize {
            4
        }
        fn batch_source(&self) -> Indices {
            Indices
        }
        fn init_fresh(&mut self) -> Result<()> {
            Ok(())
        }
        fn begin_epoch(&mut self, _: usize, _: &mut dyn Optimizer) -> Result<()> {
            Ok(())
        }
        fn train_step(&mut self, _: usize, _: Vec<i64>) -> Result<StepOutput> {
            let w = &self.vs.variables()["w"];
            Ok(StepOutput { loss: (w * 0.0 + 1.0).sum(tch::Kind::Float), correct: None })
        }
        fn valid_step(&mut self, _: usize) -> Result<ValidOutcome<()>> {
            Ok(ValidOutcome::NoValidationSet)
        }
        fn record(&self, t: &EpochTotals, _: Option<&()>) -> (usize, f64, f64) {
            (t.epoch, t.train_loss, t.seconds)
        }
        fn summary(r: &(usize, f64, f64)) -> EpochTotals {
            EpochTotals {
                epoch: r.0,
                train_loss: r.1,
                train_accuracy: None,
                lr: 0.0,
                seconds: r.2,
                data_wait_seconds: None,
            }
        }
        fn report(&self, _: &(usize, f64, f64), _: usize) {}
        fn health(&self, records: &[(usize, f64, f64)]) -> Vec<String> {
            records.last().map(|r| format!("sick after epoch {}", r.0)).into_iter().collect()
        }
    }

    /// Health is judged on the whole log: a run resumed after its last epoch (nothing left to
    /// train) still reports its problems, so `--strict` cannot be bypassed by a kill.
    #[test]
    fn health_survives_a_resume_with_no_epochs_left() {
        let dir = tempfile::tempdir().unwrap();
        let new = |resume| {
            let vs = VarStore::new(tch::Device::Cpu);
            let _ = vs.root().var("w", &[1], tch::nn::Init::Const(1.0));
            let run =
                RunOptions { resume, ..RunOptions::new(dir.path(), tch::Device::Cpu, dir.path()) };
            (Stuck { vs }, run)
        };
        let settings = FitSettings {
            epochs: 2,
            batch_size: 2,
            seed: 0,
            early_stop_patience: 0,
            plateau: None,
            precision: Precision::Fp32,
            channels_last: false,
        };
        let (mut l, run) = new(false);
        let mut opt = crate::optim::Adam::new(crate::optim::AdamConfig::default());
        let first = fit(&mut l, &mut opt, &run, &settings).unwrap();
        assert_eq!(
            (first.records.len(), first.problems.clone()),
            (2, vec!["sick after epoch 2".to_string()])
        );
        let (mut l, run) = new(true);
        let again = fit(&mut l, &mut opt, &run, &settings).unwrap();
        assert_eq!(again.records.len(), 2, "nothing retrained");
        assert_eq!(again.problems, first.problems);
        assert!(check_health(&RunOptions { strict: true, ..run }, &again.problems).is_err());
    }

    /// On resume the checkpoint's learning rate continues (a plateau decay survives a kill),
    /// unless the config now sets another rate (a change `run::open` accepted): that applies.
    #[test]
    fn a_changed_config_learning_rate_applies_on_resume_and_a_decay_survives_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let learner = || {
            let vs = VarStore::new(tch::Device::Cpu);
            let _ = vs.root().var("w", &[1], tch::nn::Init::Const(1.0));
            Stuck { vs }
        };
        let adam =
            |lr| crate::optim::Adam::new(crate::optim::AdamConfig { lr, ..Default::default() });
        let settings = |epochs| FitSettings {
            epochs,
            batch_size: 2,
            seed: 0,
            early_stop_patience: 0,
            plateau: None,
            precision: Precision::Fp32,
            channels_last: false,
        };
        let run = |resume| RunOptions {
            resume,
            ..RunOptions::new(dir.path(), tch::Device::Cpu, dir.path())
        };
        let mut l = learner();
        fit(&mut l, &mut adam(1e-3), &run(false), &settings(1)).unwrap();
        // As if validation had stalled: the rate was lowered to 1e-4 under a config of 1e-3.
        let last = CheckpointPaths::new(dir.path()).last;
        let decayed = TrainState { epoch: 1, lr: 1e-4, ..TrainState::fresh(1e-3) };
        checkpoint::save_training(&last, l.vars(), &adam(1e-3), &decayed).unwrap();

        let out = fit(&mut learner(), &mut adam(1e-3), &run(true), &settings(2)).unwrap();
        assert_eq!(out.state.lr, 1e-4, "an unchanged config keeps the checkpoint's rate");
        let out = fit(&mut learner(), &mut adam(5e-3), &run(true), &settings(3)).unwrap();
        assert_eq!(out.state.lr, 5e-3, "an edited (accepted) config rate applies");
        assert_eq!(out.state.config_lr, Some(5e-3));
    }
}
