//! Classification scoring, as the ISIC 2017 task 3 scorer and scikit-learn.
//!
//! The curve functions reproduce scikit-learn 1.9 (`roc_curve` with
//! `drop_intermediate=False`, `roc_auc_score`, `average_precision_score`),
//! which is what `isic_challenge_scoring` 5.6.0 (`metrics.py`) calls. The
//! confusion metrics reproduce `classification.py` of that package:
//! truth and prediction are both binarised with `value > 0.5`
//! (`truth_category_probabilities.gt(0.5)` and
//! `prediction_category_probabilities.gt(0.5)`, lines 110–111), and
//! sensitivity/specificity are 1 ("freebie") when their denominator is 0.
//!
//! Invariants and conventions:
//! * inputs must be non-empty, of equal length, with finite scores
//!   (scikit-learn rejects NaN and infinities too);
//! * ROC-based quantities ([`roc_curve`], [`roc_auc`],
//!   [`specificity_at_sensitivity`]) return [`CurveError::SingleClass`] when
//!   the truth holds one class only: scikit-learn raises for the AUC and
//!   returns NaN rates (with a warning) for the curve; we reject both;
//! * [`average_precision`] follows scikit-learn on single-class truth:
//!   0 when there is no positive, 1 when every sample is positive.

mod io;
mod threshold;

use serde::{Deserialize, Serialize};

pub use threshold::{choose_threshold, OperatingPoint, ThresholdChoice, END_MARGIN};

pub use io::{
    align_2017, evaluate_2017, evaluate_2017_defined, read_2017_csv, Aligned2017,
    Cls2017Evaluation, Cls2017Outcome, Cls2017Partial, ClsError, Task2017Scores, TaskEvaluation,
    TaskTable, UndefinedTask, COLUMN_ID, COLUMN_KERATOSIS, COLUMN_MELANOMA, SPEC_AT_SENS_LEVELS,
    SUMMARY_CSV_HEADER,
};

/// The two scored tasks of ISIC 2017 Part 3: the one task enum (stacking, reports,
/// calibration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    Melanoma,
    Keratosis,
}

impl Task {
    pub const ALL: [Task; 2] = [Task::Melanoma, Task::Keratosis];

    /// The task's column in ISIC 2017 CSVs (and the scorer's task name).
    pub fn column(self) -> &'static str {
        match self {
            Task::Melanoma => COLUMN_MELANOMA,
            Task::Keratosis => COLUMN_KERATOSIS,
        }
    }

    /// In words, for reports.
    pub fn title(self) -> &'static str {
        match self {
            Task::Melanoma => "melanoma",
            Task::Keratosis => "seborrheic keratosis",
        }
    }

    /// Its position in `[melanoma, keratosis]` pairs.
    pub fn index(self) -> usize {
        match self {
            Task::Melanoma => 0,
            Task::Keratosis => 1,
        }
    }
}

/// Scores and truth values strictly above this count as positive
/// (`isic_challenge_scoring/classification.py` lines 110–111: `.gt(0.5)`).
pub const DECISION_THRESHOLD: f64 = 0.5;

/// Why a curve or a metric could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CurveError {
    /// No sample at all.
    #[error("no samples to score")]
    Empty,
    /// `truth` and `score` differ in length.
    #[error("truth has {truth} samples but score has {score}")]
    LengthMismatch { truth: usize, score: usize },
    /// A score is NaN or infinite.
    #[error("score {value} at index {index} is not finite")]
    NonFinite { index: usize, value: f64 },
    /// Every truth value is the same class, so a rate is 0/0.
    #[error("only one class present in truth (all {}); ROC is undefined", if *.positive { "positive" } else { "negative" })]
    SingleClass { positive: bool },
    /// A requested sensitivity is outside `[0, 1]`.
    #[error("level {0} is outside [0, 1]")]
    BadLevel(f64),
    /// A class has fewer samples than a statistic needs (DeLong's sample
    /// variances of placement values need two per class).
    #[error("{count} {} sample(s) but at least {needed} are needed", if *.positive { "positive" } else { "negative" })]
    TooFewInClass { positive: bool, count: usize, needed: usize },
    /// A confidence level is not strictly between 0 and 1.
    #[error("confidence level {0} is outside (0, 1)")]
    BadConfidence(f64),
    /// A bootstrap asked for fewer replicates than a percentile band needs.
    #[error("{replicates} bootstrap replicate(s) but at least {needed} are needed")]
    TooFewReplicates { replicates: usize, needed: usize },
    /// An FPR grid with fewer points than its two ends, 0 and 1.
    #[error("{grid_points} grid point(s) but at least {needed} are needed (FPR 0 and 1)")]
    TooFewGridPoints { grid_points: usize, needed: usize },
    /// A reliability diagram with no bin.
    #[error("a reliability diagram needs at least one bin")]
    NoBins,
    /// A predicted probability outside `[0, 1]`.
    #[error("probability {value} at index {index} is outside [0, 1]")]
    NotAProbability { index: usize, value: f64 },
}

/// A ROC curve, as scikit-learn's `roc_curve(..., drop_intermediate=False)`.
///
/// Invariants: the three vectors have equal length `m + 1` where `m` is the
/// number of distinct scores; point 0 is `(0, 0)` with threshold `+inf`;
/// thresholds are strictly decreasing after it; `fpr` and `tpr` are
/// non-decreasing and end at 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RocCurve {
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
    pub thresholds: Vec<f64>,
}

/// Cumulative counts at each distinct score, in decreasing score order
/// (scikit-learn's `_binary_clf_curve`).
#[derive(Debug, Clone)]
struct ClfCurve {
    /// False positives with score >= threshold, per threshold.
    fps: Vec<f64>,
    /// True positives with score >= threshold, per threshold.
    tps: Vec<f64>,
    /// Distinct scores, strictly decreasing.
    thresholds: Vec<f64>,
}

/// Equal, non-zero lengths and finite scores (shared with [`crate::stats`]).
pub(crate) fn validate(truth: &[bool], score: &[f64]) -> Result<(), CurveError> {
    if truth.len() != score.len() {
        return Err(CurveError::LengthMismatch { truth: truth.len(), score: score.len() });
    }
    if truth.is_empty() {
        return Err(CurveError::Empty);
    }
    if let Some((index, &value)) = score.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(CurveError::NonFinite { index, value });
    }
    Ok(())
}

fn binary_clf_curve(truth: &[bool], score: &[f64]) -> Result<ClfCurve, CurveError> {
    validate(truth, score)?;
    let mut order: Vec<usize> = (0..score.len()).collect();
    // Scores are finite (validated), so total_cmp is the numeric order.
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
    let mut curve = ClfCurve { fps: Vec::new(), tps: Vec::new(), thresholds: Vec::new() };
    let (mut tp, mut fp) = (0.0_f64, 0.0_f64);
    for (k, &i) in order.iter().enumerate() {
        if truth[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = order.get(k + 1).is_none_or(|&j| score[j] != score[i]);
        if last_of_tie {
            curve.tps.push(tp);
            curve.fps.push(fp);
            curve.thresholds.push(score[i]);
        }
    }
    Ok(curve)
}

/// ROC curve with every distinct threshold kept
/// (scikit-learn `roc_curve(truth, score, drop_intermediate=False)`).
///
/// Errors with [`CurveError::SingleClass`] when `truth` holds one class.
pub fn roc_curve(truth: &[bool], score: &[f64]) -> Result<RocCurve, CurveError> {
    let c = binary_clf_curve(truth, score)?;
    let total_pos = c.tps.last().copied().unwrap_or(0.0);
    let total_neg = c.fps.last().copied().unwrap_or(0.0);
    if total_pos <= 0.0 || total_neg <= 0.0 {
        return Err(CurveError::SingleClass { positive: total_pos > 0.0 });
    }
    let m = c.thresholds.len() + 1;
    let mut roc = RocCurve {
        fpr: Vec::with_capacity(m),
        tpr: Vec::with_capacity(m),
        thresholds: Vec::with_capacity(m),
    };
    roc.fpr.push(0.0);
    roc.tpr.push(0.0);
    roc.thresholds.push(f64::INFINITY);
    for ((&fp, &tp), &t) in c.fps.iter().zip(&c.tps).zip(&c.thresholds) {
        roc.fpr.push(fp / total_neg);
        roc.tpr.push(tp / total_pos);
        roc.thresholds.push(t);
    }
    Ok(roc)
}

/// Area under the ROC curve by the trapezoidal rule over distinct
/// thresholds, so tied scores count one half (scikit-learn `roc_auc_score`).
///
/// Errors with [`CurveError::SingleClass`] when `truth` holds one class
/// (scikit-learn raises `ValueError` there).
pub fn roc_auc(truth: &[bool], score: &[f64]) -> Result<f64, CurveError> {
    let roc = roc_curve(truth, score)?;
    Ok(trapezoid(&roc.fpr, &roc.tpr))
}

/// `∫ y dx` by the trapezoidal rule; `x` must be monotonic.
fn trapezoid(x: &[f64], y: &[f64]) -> f64 {
    x.windows(2).zip(y.windows(2)).map(|(xw, yw)| (xw[1] - xw[0]) * (yw[1] + yw[0]) / 2.0).sum()
}

/// Average precision, `Σ (R_k − R_{k−1}) P_k` over distinct thresholds in
/// decreasing order with `R_{−1} = 0` (scikit-learn `average_precision_score`,
/// no interpolation).
///
/// Single-class truth follows scikit-learn: 0 without positives (recall is
/// taken as 1 everywhere, precision at the top threshold is 0), 1 when all
/// samples are positive.
pub fn average_precision(truth: &[bool], score: &[f64]) -> Result<f64, CurveError> {
    let c = binary_clf_curve(truth, score)?;
    let total_pos = c.tps.last().copied().unwrap_or(0.0);
    if total_pos <= 0.0 {
        // scikit-learn: "No positive class found in y_true, recall is set to
        // one for all thresholds"; the single step is (1 - 0) * P_top = 0.
        return Ok(0.0);
    }
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for (&tp, &fp) in c.tps.iter().zip(&c.fps) {
        let recall = tp / total_pos;
        let precision = tp / (tp + fp);
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    Ok(ap)
}

/// Specificity (`1 − FPR`) at the first point of [`roc_curve`] (thresholds
/// decreasing, starting with the `(0, 0)` point) whose TPR is `>= level`.
///
/// `level` must lie in `[0, 1]`; a level of 0 gives specificity 1.
pub fn specificity_at_sensitivity(
    truth: &[bool],
    score: &[f64],
    level: f64,
) -> Result<f64, CurveError> {
    if !(0.0..=1.0).contains(&level) {
        return Err(CurveError::BadLevel(level));
    }
    let roc = roc_curve(truth, score)?;
    // The last point has TPR exactly 1, so a level in [0, 1] is always found.
    let idx = roc.tpr.iter().position(|&t| t >= level).unwrap_or(roc.tpr.len() - 1);
    Ok(1.0 - roc.fpr[idx])
}

/// Counts of one binary comparison at [`DECISION_THRESHOLD`].
/// `tp + tn + fp + fn_` is the number of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryConfusion {
    pub tp: u64,
    pub tn: u64,
    pub fp: u64,
    pub fn_: u64,
}

impl BinaryConfusion {
    /// Counts with `score > 0.5` as a positive prediction.
    /// Pairs past the shorter slice are ignored.
    pub fn at_threshold(truth: &[bool], score: &[f64]) -> BinaryConfusion {
        Self::at(truth, score, DECISION_THRESHOLD)
    }

    /// Counts with `score > threshold` as a positive prediction.
    /// Pairs past the shorter slice are ignored.
    pub fn at(truth: &[bool], score: &[f64], threshold: f64) -> BinaryConfusion {
        let mut c = BinaryConfusion::default();
        for (&t, &s) in truth.iter().zip(score) {
            match (t, s > threshold) {
                (true, true) => c.tp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fp += 1,
                (true, false) => c.fn_ += 1,
            }
        }
        c
    }

    /// `(tp + tn) / total`; NaN when empty (the reference divides by zero).
    pub fn accuracy(&self) -> f64 {
        let total = self.tp + self.tn + self.fp + self.fn_;
        (self.tp + self.tn) as f64 / total as f64
    }

    /// `tp / (tp + fn)`, or 1 when there is no positive (reference freebie).
    pub fn sensitivity(&self) -> f64 {
        ratio_or_one(self.tp, self.tp + self.fn_)
    }

    /// `tn / (tn + fp)`, or 1 when there is no negative (reference freebie).
    pub fn specificity(&self) -> f64 {
        ratio_or_one(self.tn, self.tn + self.fp)
    }
}

impl std::fmt::Display for BinaryConfusion {
    /// `sensitivity 0.9333 (14/15), specificity 0.3667 (22/60)`: rates with their counts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sensitivity {:.4} ({}/{}), specificity {:.4} ({}/{})",
            self.sensitivity(),
            self.tp,
            self.tp + self.fn_,
            self.specificity(),
            self.tn,
            self.tn + self.fp
        )
    }
}

fn ratio_or_one(num: u64, den: u64) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}
