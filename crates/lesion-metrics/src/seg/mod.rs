//! Segmentation scoring, as `isic_challenge_scoring.segmentation` 5.6.0.
//!
//! Invariants reproduced from the reference:
//! * truth and prediction are binarised with `value > 128` ([`MASK_THRESHOLD`]);
//! * metrics are computed per image from its confusion matrix, with the
//!   reference's "freebie" conventions for empty denominators;
//! * the summary is the unweighted (macro) mean over images;
//! * the challenge score is the mean of `threshold_jaccard`.

mod load;
mod pairs;
mod report;

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::MetricsError;

pub use load::{load_mask, GreyMask};
pub use pairs::{
    is_image_file, list_images, pair_images, ImagePair, ID_SUFFIXES, IMAGE_EXTENSIONS,
    SKIPPED_NAMES,
};

/// Jaccard values below this count as 0 in `threshold_jaccard` (ISIC 2018).
pub const THRESHOLD_JACCARD: f64 = 0.65;
/// A mask pixel is foreground when its 8-bit value is strictly above this.
pub const MASK_THRESHOLD: u8 = 128;

/// Pixel counts of one binary comparison. `tp + tn + fp + fn_` is the number
/// of pixels compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub tp: u64,
    pub tn: u64,
    pub fp: u64,
    pub fn_: u64,
}

impl Confusion {
    /// Counts from 8-bit masks, each binarised with `> 128`.
    /// The slices must have equal lengths (pixels past the shorter are ignored).
    pub fn from_masks(truth: &[u8], pred: &[u8]) -> Confusion {
        debug_assert_eq!(truth.len(), pred.len());
        let mut c = Confusion::default();
        for (&t, &p) in truth.iter().zip(pred) {
            c.add(t > MASK_THRESHOLD, p > MASK_THRESHOLD);
        }
        c
    }

    /// Counts from boolean masks (`true` = lesion).
    /// The slices must have equal lengths (pixels past the shorter are ignored).
    pub fn from_bool(truth: &[bool], pred: &[bool]) -> Confusion {
        debug_assert_eq!(truth.len(), pred.len());
        let mut c = Confusion::default();
        for (&t, &p) in truth.iter().zip(pred) {
            c.add(t, p);
        }
        c
    }

    /// Adds one pixel.
    #[inline]
    pub fn add(&mut self, truth: bool, pred: bool) {
        match (truth, pred) {
            (true, true) => self.tp += 1,
            (false, false) => self.tn += 1,
            (false, true) => self.fp += 1,
            (true, false) => self.fn_ += 1,
        }
    }

    /// Number of pixels counted.
    pub fn total(&self) -> u64 {
        self.tp + self.tn + self.fp + self.fn_
    }
}

impl std::ops::Add for Confusion {
    type Output = Confusion;
    fn add(self, o: Confusion) -> Confusion {
        Confusion {
            tp: self.tp + o.tp,
            tn: self.tn + o.tn,
            fp: self.fp + o.fp,
            fn_: self.fn_ + o.fn_,
        }
    }
}

/// The six per-image metrics of the reference. Every field lies in `[0, 1]`
/// (NaN only for `accuracy` of a zero-pixel image, or in the mean of nothing).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SegScores {
    pub accuracy: f64,
    pub sensitivity: f64,
    pub specificity: f64,
    pub jaccard: f64,
    pub threshold_jaccard: f64,
    pub dice: f64,
}

fn ratio(num: u64, den: u64) -> f64 {
    num as f64 / den as f64
}

impl SegScores {
    /// Metrics of one confusion matrix, with the reference's conventions:
    /// sensitivity is 1 when `tp + fn_ == 0`, specificity 1 when
    /// `tn + fp == 0`, jaccard and dice 1 when `tp + fp + fn_ == 0`;
    /// `threshold_jaccard` is jaccard if `>= THRESHOLD_JACCARD`, else 0.
    pub fn from_confusion(c: &Confusion) -> SegScores {
        let accuracy = ratio(c.tp + c.tn, c.total());
        let sensitivity = if c.tp + c.fn_ == 0 { 1.0 } else { ratio(c.tp, c.tp + c.fn_) };
        let specificity = if c.tn + c.fp == 0 { 1.0 } else { ratio(c.tn, c.tn + c.fp) };
        let errors_and_hits = c.tp + c.fp + c.fn_;
        let jaccard = if errors_and_hits == 0 { 1.0 } else { ratio(c.tp, errors_and_hits) };
        let dice =
            if errors_and_hits == 0 { 1.0 } else { ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn_) };
        let threshold_jaccard = if jaccard >= THRESHOLD_JACCARD { jaccard } else { 0.0 };
        SegScores { accuracy, sensitivity, specificity, jaccard, threshold_jaccard, dice }
    }

    /// Unweighted mean of each field (the reference's macro average).
    /// An empty slice gives NaN in every field.
    pub fn mean(all: &[SegScores]) -> SegScores {
        let n = all.len() as f64;
        let avg = |f: fn(&SegScores) -> f64| all.iter().map(f).sum::<f64>() / n;
        SegScores {
            accuracy: avg(|s| s.accuracy),
            sensitivity: avg(|s| s.sensitivity),
            specificity: avg(|s| s.specificity),
            jaccard: avg(|s| s.jaccard),
            threshold_jaccard: avg(|s| s.threshold_jaccard),
            dice: avg(|s| s.dice),
        }
    }
}

/// Scores of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageScore {
    pub id: String,
    pub confusion: Confusion,
    pub scores: SegScores,
}

/// Result of scoring a folder. `per_image` is in truth-file name order and
/// never empty when produced by [`evaluate_dirs`]; `mean` is
/// `SegScores::mean` of its scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegEvaluation {
    pub per_image: Vec<ImageScore>,
    pub mean: SegScores,
}

impl SegEvaluation {
    /// Builds the evaluation (and its mean) from per-image scores.
    pub fn from_scores(per_image: Vec<ImageScore>) -> SegEvaluation {
        let scores: Vec<SegScores> = per_image.iter().map(|s| s.scores).collect();
        SegEvaluation { mean: SegScores::mean(&scores), per_image }
    }

    /// The challenge score: mean `threshold_jaccard`.
    pub fn overall(&self) -> f64 {
        self.mean.threshold_jaccard
    }
}

/// Loads and scores one pair; errors name the offending file.
pub fn score_pair(pair: &ImagePair) -> Result<ImageScore, MetricsError> {
    let truth = load_mask(&pair.truth)?;
    let pred = load_mask(&pair.prediction)?;
    if (pred.width, pred.height) != (truth.width, truth.height) {
        return Err(MetricsError::SizeMismatch {
            prediction: pair.prediction.clone(),
            truth: pair.truth.clone(),
            pred_width: pred.width,
            pred_height: pred.height,
            truth_width: truth.width,
            truth_height: truth.height,
        });
    }
    let confusion = Confusion::from_masks(&truth.pixels, &pred.pixels);
    Ok(ImageScore { id: pair.id.clone(), confusion, scores: SegScores::from_confusion(&confusion) })
}

/// Scores every ground-truth mask in `truth_dir` against its prediction in
/// `pred_dir` (pairing rules in [`pair_images`]), in parallel. On failure the
/// error of the first failing truth file in name order is returned.
pub fn evaluate_dirs(truth_dir: &Path, pred_dir: &Path) -> Result<SegEvaluation, MetricsError> {
    let pairs = pair_images(truth_dir, pred_dir)?;
    let results: Vec<Result<ImageScore, MetricsError>> = pairs.par_iter().map(score_pair).collect();
    let per_image = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(SegEvaluation::from_scores(per_image))
}
