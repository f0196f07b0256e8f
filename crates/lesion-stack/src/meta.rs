//! Stacking helpers: the meta-learner's features are the components'
//! (melanoma, keratosis) probabilities in log2-odds, one row per image.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::matrix::FeatureMatrix;
use crate::StackError;

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

/// One component model's output. Invariant: `ids.len() == probs.len()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentPredictions {
    /// Column prefix in the meta features.
    pub name: String,
    pub ids: Vec<String>,
    pub probs: Vec<TaskProbs>,
}

/// Meta-learner input. Invariants: `matrix.rows() == ids.len()`,
/// `matrix.cols() == columns.len()`; columns are
/// `<component>.melanoma`, `<component>.keratosis` per component, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct MetaFeatures {
    pub ids: Vec<String>,
    pub columns: Vec<String>,
    pub matrix: FeatureMatrix,
}

fn check_prob(component: &str, row: usize, p: f64) -> Result<(), StackError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(StackError::Probability {
            component: component.to_string(),
            row,
            value: p,
        })
    }
}

/// Builds the log2-odds feature matrix. Every component must list the same
/// ids in the same order as the first (pool replicas first with
/// [`pool_replicas`]); probabilities must lie in `[0, 1]`.
pub fn build_meta_features(
    components: &[ComponentPredictions],
) -> Result<MetaFeatures, StackError> {
    let first = components.first().ok_or(StackError::Empty)?;
    let n = first.ids.len();
    let mut columns = Vec::with_capacity(2 * components.len());
    for c in components {
        if c.ids.len() != n || c.probs.len() != n {
            return Err(StackError::Length {
                what: "component rows",
                expected: n,
                got: if c.ids.len() != n { c.ids.len() } else { c.probs.len() },
            });
        }
        for (row, (id, want)) in c.ids.iter().zip(&first.ids).enumerate() {
            if id != want {
                return Err(StackError::IdMismatch {
                    component: c.name.clone(),
                    row,
                    expected: want.clone(),
                    got: id.clone(),
                });
            }
        }
        for (row, p) in c.probs.iter().enumerate() {
            check_prob(&c.name, row, p.melanoma)?;
            check_prob(&c.name, row, p.keratosis)?;
        }
        columns.push(format!("{}.melanoma", c.name));
        columns.push(format!("{}.keratosis", c.name));
    }
    let mut data = Vec::with_capacity(n * columns.len());
    for row in 0..n {
        for c in components {
            let p = c.probs[row];
            data.push(log2_odds(p.melanoma));
            data.push(log2_odds(p.keratosis));
        }
    }
    Ok(MetaFeatures {
        ids: first.ids.clone(),
        columns,
        matrix: FeatureMatrix::new(n, 2 * components.len(), data)?,
    })
}

/// How replica rows (test-time augmentations of one image) are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pooling {
    /// Arithmetic mean of the probabilities.
    Mean,
    /// The replica probability farthest from 0.5 in log-odds, i.e. with the
    /// largest `|log2_odds(p)|` (after clipping; each task separately). Ties
    /// keep the earliest replica, so clipped extremes (`0` vs `1e-6`) go to
    /// the first one seen.
    Extreme,
}

/// Merges rows sharing an id. Output ids are in first-appearance order;
/// each task is pooled independently.
pub fn pool_replicas(
    name: &str,
    ids: &[String],
    probs: &[TaskProbs],
    pooling: Pooling,
) -> Result<ComponentPredictions, StackError> {
    if ids.len() != probs.len() {
        return Err(StackError::Length {
            what: "replica probabilities",
            expected: ids.len(),
            got: probs.len(),
        });
    }
    let mut slot: HashMap<&str, usize> = HashMap::new();
    let mut out_ids: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<TaskProbs>> = Vec::new();
    for (row, (id, p)) in ids.iter().zip(probs).enumerate() {
        check_prob(name, row, p.melanoma)?;
        check_prob(name, row, p.keratosis)?;
        let next = out_ids.len();
        let s = *slot.entry(id.as_str()).or_insert(next);
        if s == next {
            out_ids.push(id.clone());
            rows.push(Vec::new());
        }
        rows[s].push(*p);
    }
    let pool = |values: &mut dyn Iterator<Item = f64>| -> f64 {
        match pooling {
            Pooling::Mean => {
                let (sum, count) = values.fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
                sum / count.max(1) as f64
            }
            Pooling::Extreme => {
                let mut best = f64::NAN;
                let mut best_mag = f64::NEG_INFINITY;
                for v in values {
                    let mag = log2_odds(v).abs();
                    if mag > best_mag {
                        best = v;
                        best_mag = mag;
                    }
                }
                best
            }
        }
    };
    let pooled = rows
        .iter()
        .map(|r| TaskProbs {
            melanoma: pool(&mut r.iter().map(|p| p.melanoma)),
            keratosis: pool(&mut r.iter().map(|p| p.keratosis)),
        })
        .collect();
    Ok(ComponentPredictions {
        name: name.to_string(),
        ids: out_ids,
        probs: pooled,
    })
}
