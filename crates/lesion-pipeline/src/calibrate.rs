//! `lesion calibrate`: a bundle's decision thresholds fitted on held-out predictions.
//!
//! The bundle's probabilities are averages of nets, SVM heads or a meta-learner; nothing makes
//! 0.5 a sensible operating point for them (a recipe's melanoma sensitivity at 0.5 was 0.20 on
//! the ISIC 2017 validation set). The user predicts held-out images with the bundle
//! (`lesion predict --bundle`), and this fits each task's threshold on those predictions and
//! the images' ground truth at a stated operating point ([`OperatingPoint`]).
//!
//! Invariants:
//! * the predictions must be the bundle's own: `prediction.json` carries the bundle's
//!   [`BundleCard::identity`] (its card without thresholds), checked here;
//! * every truth image has exactly one prediction and no prediction is unknown to the truth
//!   (never a dropped row);
//! * a task whose truth holds one class (keratosis on melanoma-only data such as PH2) keeps
//!   its threshold, and the fit says why;
//! * only `bundle.json` changes, in one atomic write; its `threshold_fit` records where the
//!   thresholds came from (files and SHA-256, counts, sensitivity and specificity there) and
//!   the thresholds they replaced.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use lesion_core::run;
use lesion_core::{Result, TrainError};
use lesion_metrics::cls::{
    align_2017, choose_threshold, BinaryConfusion, CurveError, OperatingPoint, Task,
};

use crate::bundle::{
    digest_file, utc_timestamp, Bundle, BundleCard, PredictionSummary, CARD_FILE,
    CLASSIFICATION_CSV, PREDICTION_FILE, TRAINING_IMAGES_FILE,
};

/// Below this many positives a task's fitted sensitivity moves by more than 5 points per
/// image, so the fit warns (it still fits: the user chose the data).
pub const FEW_POSITIVES: u64 = 20;

/// One task's fitted threshold and what it does on the fitting images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFit {
    pub task: Task,
    pub rule: OperatingPoint,
    pub threshold: f64,
    /// The card's threshold before this fit.
    pub previous: f64,
    pub confusion: BinaryConfusion,
    pub sensitivity: f64,
    pub specificity: f64,
}

/// Where a card's thresholds came from (`BundleCard::threshold_fit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdFit {
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub fitted: String,
    /// The `lesion predict --bundle` folder, as given.
    pub predictions: PathBuf,
    pub predictions_sha256: String,
    /// The ground-truth CSV, as given.
    pub truth: PathBuf,
    pub truth_sha256: String,
    pub images: usize,
    pub tasks: Vec<TaskFit>,
    /// Tasks left at their threshold, with the reason.
    #[serde(default)]
    pub kept: Vec<String>,
}

/// What `lesion calibrate` is asked to do.
#[derive(Debug, Clone)]
pub struct CalibrateRequest<'a> {
    pub bundle: &'a Path,
    /// A `lesion predict --bundle` output folder of this bundle.
    pub predictions: &'a Path,
    /// ISIC 2017 ground truth of the predicted images.
    pub truth: &'a Path,
    pub melanoma: OperatingPoint,
    pub keratosis: OperatingPoint,
}

/// Fits the thresholds and rewrites the bundle's card (atomically). Returns the fit.
pub fn calibrate(req: &CalibrateRequest<'_>) -> Result<ThresholdFit> {
    let bundle = Bundle::open(req.bundle)?;
    let summary_path = req.predictions.join(PREDICTION_FILE);
    let summary: PredictionSummary = run::read_json(&summary_path)?;
    if !summary.absent_classes.is_empty() {
        // Thresholds are stored in the card and applied to the bundle's three-class outputs
        // (the service's decisions); fitted on renormalised probabilities they would not fit.
        return Err(TrainError::file(
            &summary_path,
            format!(
                "predicted with absent classes ({}): its probabilities are renormalised, not the bundle's own; predict the held-out images without --absent to calibrate",
                summary.absent_classes.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let identity = bundle.card.identity()?;
    match summary.bundle_identity.as_deref() {
        Some(id) if id == identity => {}
        Some(id) => {
            return Err(TrainError::file(
                &summary_path,
                format!(
                    "made by another bundle (identity {id}), not {} (identity {identity}); \
                     predict the images with this bundle first",
                    req.bundle.display()
                ),
            ))
        }
        None => {
            return Err(TrainError::file(
                &summary_path,
                "does not say which bundle made it (written by an older lesion); predict the \
                 images again with this bundle",
            ))
        }
    }
    let csv = req.predictions.join(CLASSIFICATION_CSV);
    if !csv.is_file() {
        return Err(TrainError::file(
            &csv,
            "missing: the bundle has no classifier, or the prediction was not of this kind",
        ));
    }
    let aligned = align_2017(req.truth, &csv)?;
    // Thresholds fitted on images a model trained on are optimistic, and nothing downstream
    // could tell: refused, naming them.
    if let Some(seen) = bundle.seen_in_training(aligned.truth.ids.iter().map(String::as_str))? {
        if !seen.ids.is_empty() {
            return Err(TrainError::file(
                req.truth,
                format!(
                    "{} were used to train this bundle's models (its {TRAINING_IMAGES_FILE}); \
                     thresholds fitted on them would be optimistic: calibrate on held-out images",
                    seen.describe(aligned.truth.ids.len())
                ),
            ));
        }
    }
    let mut card = bundle.card.clone();
    let mut tasks = Vec::new();
    let mut kept = Vec::new();
    for (task, rule) in [(Task::Melanoma, req.melanoma), (Task::Keratosis, req.keratosis)] {
        let column = task.column();
        let (truth, score) = aligned.task(task);
        let slot = card.classification.thresholds.of_mut(task);
        match choose_threshold(&truth, score, rule) {
            Ok(choice) => {
                tasks.push(TaskFit {
                    task,
                    rule,
                    threshold: choice.threshold,
                    previous: *slot,
                    confusion: choice.confusion,
                    sensitivity: choice.confusion.sensitivity(),
                    specificity: choice.confusion.specificity(),
                });
                *slot = choice.threshold;
            }
            Err(e @ CurveError::SingleClass { .. }) => {
                kept.push(format!("{column}: kept at {}: {e}", *slot));
            }
            Err(e) => return Err(TrainError::file(&csv, format!("{column}: {e}"))),
        }
    }
    if tasks.is_empty() {
        return Err(TrainError::file(
            req.truth,
            format!("no task has both classes, nothing to fit ({})", kept.join("; ")),
        ));
    }
    let fit = ThresholdFit {
        fitted: utc_timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        ),
        predictions: req.predictions.to_path_buf(),
        predictions_sha256: digest_file(&csv)?.sha256,
        truth: req.truth.to_path_buf(),
        truth_sha256: digest_file(req.truth)?.sha256,
        images: aligned.truth.ids.len(),
        tasks,
        kept,
    };
    card.threshold_fit = Some(fit.clone());
    run::write_json(&req.bundle.join(CARD_FILE), &card)?;
    Ok(fit)
}

/// One task's decisions at a card's threshold (`lesion cls eval --thresholds-of BUNDLE`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskAtThreshold {
    pub task: Task,
    pub threshold: f64,
    pub confusion: BinaryConfusion,
}

/// The card's thresholds applied to a prediction CSV against its truth (joined by id, as the
/// scorer does); tasks whose truth holds one class are left out.
pub fn at_card_thresholds(
    card: &BundleCard,
    truth: &Path,
    pred: &Path,
) -> Result<Vec<TaskAtThreshold>> {
    let aligned = align_2017(truth, pred)?;
    let mut out = Vec::new();
    for task in Task::ALL {
        let (y, score) = aligned.task(task);
        if y.iter().all(|&t| t) || !y.iter().any(|&t| t) {
            continue;
        }
        let threshold = card.classification.thresholds.of(task);
        out.push(TaskAtThreshold {
            task,
            threshold,
            confusion: BinaryConfusion::at(&y, score, threshold),
        });
    }
    Ok(out)
}
