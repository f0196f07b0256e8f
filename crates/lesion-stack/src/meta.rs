//! The meta-learner's input unit: the components' (melanoma, keratosis)
//! probabilities, entering [`crate::ensemble`] as log2-odds.

use serde::{Deserialize, Serialize};

/// Probabilities are clipped to `[PROB_CLIP, 1 − PROB_CLIP]` before
/// [`log2_odds`], bounding it to about ±16.6.
pub const PROB_CLIP: f64 = 1e-5;

/// `log2(p / (1 − p))` of `p` clipped to `[1e-5, 1 − 1e-5]`; finite for
/// every non-NaN input, NaN for NaN.
pub fn log2_odds(p: f64) -> f64 {
    let q = p.clamp(PROB_CLIP, 1.0 - PROB_CLIP);
    (q / (1.0 - q)).log2()
}

/// One image's probabilities for the two 2017 tasks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TaskProbs {
    pub melanoma: f64,
    pub keratosis: f64,
}

impl TaskProbs {
    pub fn task(&self, task: lesion_metrics::cls::Task) -> f64 {
        match task {
            lesion_metrics::cls::Task::Melanoma => self.melanoma,
            lesion_metrics::cls::Task::Keratosis => self.keratosis,
        }
    }
}
