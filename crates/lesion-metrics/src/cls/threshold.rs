//! Decision thresholds chosen on held-out scores: the operating point a bundle's decisions
//! use (`lesion calibrate`).
//!
//! Decisions are `score > threshold` (the ISIC scorer's strict comparison), so a chosen
//! threshold reproduces, on the scores it was fitted on, exactly the cut its rule picked:
//! between two adjacent distinct scores it is their midpoint (neither end is favoured), above
//! the top score it is [`END_MARGIN`] above the top score (nothing positive), below the lowest
//! [`END_MARGIN`] below it (everything positive). The margin is there because prediction CSVs
//! carry 8 decimals: a probability served at full precision lies within 5e-9 of the score the
//! threshold was fitted on, and must fall on the same side.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{binary_clf_curve, BinaryConfusion, CurveError};

/// How far beyond the extreme fitted score the two end thresholds stand (twice the rounding
/// of an 8-decimal prediction CSV).
pub const END_MARGIN: f64 = 1e-8;

/// How a threshold is chosen from a ROC curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "rule", content = "level")]
pub enum OperatingPoint {
    /// Maximum of sensitivity + specificity − 1 (Youden's J; the balanced accuracy's maximum);
    /// of tied cuts, the highest threshold.
    Youden,
    /// The highest threshold whose sensitivity is at least the level (so the best specificity
    /// that keeps it): the screening operating point.
    Sensitivity(f64),
    /// The lowest threshold whose specificity is at least the level (the best sensitivity
    /// that keeps it).
    Specificity(f64),
}

impl fmt::Display for OperatingPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperatingPoint::Youden => write!(f, "youden"),
            OperatingPoint::Sensitivity(l) => write!(f, "sensitivity={l}"),
            OperatingPoint::Specificity(l) => write!(f, "specificity={l}"),
        }
    }
}

impl FromStr for OperatingPoint {
    type Err = String;

    /// `youden`, `sensitivity=L` or `specificity=L` with `L` in `[0, 1]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = "expected youden, sensitivity=L or specificity=L (L in [0, 1])";
        if s == "youden" {
            return Ok(OperatingPoint::Youden);
        }
        let (rule, level) = s.split_once('=').ok_or_else(|| format!("'{s}': {usage}"))?;
        let level: f64 = level.trim().parse().map_err(|_| format!("'{s}': {usage}"))?;
        if !(0.0..=1.0).contains(&level) {
            return Err(format!("'{s}': level {level} is outside [0, 1]"));
        }
        match rule.trim() {
            "sensitivity" => Ok(OperatingPoint::Sensitivity(level)),
            "specificity" => Ok(OperatingPoint::Specificity(level)),
            _ => Err(format!("'{s}': {usage}")),
        }
    }
}

/// A chosen threshold and what it does on the scores it was chosen on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdChoice {
    /// Decide positive when `score > threshold`.
    pub threshold: f64,
    /// Counts at that threshold on the fitting scores.
    pub confusion: BinaryConfusion,
}

/// Chooses the decision threshold of `op` on `score` against `truth`.
///
/// Errors as [`super::roc_curve`] does (empty, unequal lengths, non-finite scores, one class only)
/// and with [`CurveError::BadLevel`] for a level outside `[0, 1]`.
pub fn choose_threshold(
    truth: &[bool],
    score: &[f64],
    op: OperatingPoint,
) -> Result<ThresholdChoice, CurveError> {
    if let OperatingPoint::Sensitivity(l) | OperatingPoint::Specificity(l) = op {
        if !(0.0..=1.0).contains(&l) {
            return Err(CurveError::BadLevel(l));
        }
    }
    // The counts behind the ROC curve (scikit-learn's `_binary_clf_curve`): point k holds
    // the cumulative counts with score >= the k-th highest distinct score. Cut j = "the j
    // highest distinct scores are positive"; cut 0 has nothing positive.
    let curve = binary_clf_curve(truth, score)?;
    let positives = curve.tps.last().copied().unwrap_or(0.0) as u64;
    let negatives = curve.fps.last().copied().unwrap_or(0.0) as u64;
    if positives == 0 || negatives == 0 {
        return Err(CurveError::SingleClass { positive: positives > 0 });
    }
    let last = curve.thresholds.len();
    // Counts are whole numbers stored as f64 (exact below 2^53).
    let cuts: Vec<BinaryConfusion> = std::iter::once((0.0, 0.0))
        .chain(curve.tps.iter().copied().zip(curve.fps.iter().copied()))
        .map(|(tp, fp)| {
            let (tp, fp) = (tp as u64, fp as u64);
            BinaryConfusion { tp, fp, tn: negatives - fp, fn_: positives - tp }
        })
        .collect();
    // Youden's J times P·N, in integers: ties are exact, so the first (highest) cut wins.
    let j_of = |c: &BinaryConfusion| {
        i128::from(c.tp) * i128::from(negatives) - i128::from(c.fp) * i128::from(positives)
    };
    let cut = match op {
        OperatingPoint::Youden => {
            let mut best = 0;
            for j in 1..=last {
                if j_of(&cuts[j]) > j_of(&cuts[best]) {
                    best = j;
                }
            }
            best
        }
        // The last cut has sensitivity 1, so a level in [0, 1] is always met.
        OperatingPoint::Sensitivity(l) => {
            cuts.iter().position(|c| c.sensitivity() >= l).unwrap_or(last)
        }
        // Cut 0 has specificity 1, so some cut always meets the level.
        OperatingPoint::Specificity(l) => {
            cuts.iter().rposition(|c| c.specificity() >= l).unwrap_or(0)
        }
    };
    // Distinct scores, highest first: cut j's lowest positive score is `scores[j - 1]`.
    let scores = &curve.thresholds;
    let threshold = if cut == last {
        scores[last - 1] - END_MARGIN
    } else if cut == 0 {
        scores[0] + END_MARGIN
    } else {
        let (above, below) = (scores[cut - 1], scores[cut]);
        let mid = above / 2.0 + below / 2.0;
        // Adjacent floats: the midpoint may round up to `above`, which `>` would then exclude.
        if mid >= above {
            below
        } else {
            mid
        }
    };
    Ok(ThresholdChoice { threshold, confusion: cuts[cut] })
}
