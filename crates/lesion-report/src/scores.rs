//! Classification scores as the ISIC 2017 scorer gives them (`lesion_metrics::cls`, the code
//! of `lesion cls eval`), and per-image tables of truth and scores for the statistics.
use std::collections::HashMap;
use std::path::Path;

use lesion_core::{Result, TrainError};
use lesion_metrics::cls::{
    evaluate_2017_defined, read_2017_csv, Cls2017Outcome, COLUMN_MELANOMA, DECISION_THRESHOLD,
};
use serde::{Deserialize, Serialize};

/// The two scored tasks of ISIC 2017 Part 3 (the one enum, `lesion_metrics::cls::Task`).
pub use lesion_metrics::cls::Task as ClsTask;

/// ROC AUCs of both tasks; `None` where a task is undefined (its truth holds one class, e.g.
/// keratosis on melanoma-only PH2). `mean` is the mean of the defined tasks (the 2017 score
/// when both are).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ClsAucs {
    pub melanoma: Option<f64>,
    pub keratosis: Option<f64>,
    pub mean: Option<f64>,
}

impl ClsAucs {
    pub fn new(melanoma: Option<f64>, keratosis: Option<f64>) -> ClsAucs {
        let defined: Vec<f64> = [melanoma, keratosis].into_iter().flatten().collect();
        let mean =
            (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
        ClsAucs { melanoma, keratosis, mean }
    }

    pub fn task(&self, t: ClsTask) -> Option<f64> {
        match t {
            ClsTask::Melanoma => self.melanoma,
            ClsTask::Keratosis => self.keratosis,
        }
    }
}

/// What the 2017 scorer made of a prediction CSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredAucs {
    pub auc: ClsAucs,
    pub images: usize,
    /// The task the truth cannot score, and why.
    pub undefined: Option<String>,
}

/// Scores `pred` against `truth` (ISIC 2017 CSVs) with the 2017 scorer, as `lesion cls eval`
/// does; a task with one class only is left undefined.
pub fn score_2017(truth: &Path, pred: &Path) -> Result<ScoredAucs> {
    Ok(match evaluate_2017_defined(truth, pred)? {
        Cls2017Outcome::Complete(ev) => ScoredAucs {
            auc: ClsAucs {
                melanoma: Some(ev.melanoma.scores.auc),
                keratosis: Some(ev.seborrheic_keratosis.scores.auc),
                mean: Some(ev.mean.auc),
            },
            images: ev.count,
            undefined: None,
        },
        Cls2017Outcome::Partial(p) => {
            let auc = Some(p.scored.scores.auc);
            let auc = if p.task == COLUMN_MELANOMA {
                ClsAucs::new(auc, None)
            } else {
                ClsAucs::new(None, auc)
            };
            ScoredAucs {
                auc,
                images: p.count,
                undefined: Some(format!("{} undefined: {}", p.undefined.task, p.undefined.reason)),
            }
        }
    })
}

/// Per-image truth (`> 0.5`, as the scorer binarises it) and scores of a prediction table,
/// in the truth file's order. Invariant: every vector has `ids.len()` entries.
#[derive(Debug, Clone, PartialEq)]
pub struct ClsTable {
    pub ids: Vec<String>,
    truth: [Vec<bool>; 2],
    score: [Vec<f64>; 2],
}

impl ClsTable {
    /// Reads a truth and a prediction CSV (ISIC 2017) of the same images.
    pub fn read(truth: &Path, pred: &Path) -> Result<ClsTable> {
        let t = read_2017_csv(truth)?;
        let p = read_2017_csv(pred)?;
        let at: HashMap<&str, usize> =
            p.ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        if p.ids.len() != t.ids.len() {
            return Err(TrainError::file(
                pred,
                format!(
                    "{} predictions for the {} images of {}",
                    p.ids.len(),
                    t.ids.len(),
                    truth.display()
                ),
            ));
        }
        let mut table = ClsTable {
            ids: t.ids.clone(),
            truth: [Vec::new(), Vec::new()],
            score: [Vec::new(), Vec::new()],
        };
        for (k, id) in t.ids.iter().enumerate() {
            let i = *at.get(id.as_str()).ok_or_else(|| {
                TrainError::file(pred, format!("no prediction for {id} (in {})", truth.display()))
            })?;
            table.truth[0].push(t.melanoma[k] > DECISION_THRESHOLD);
            table.truth[1].push(t.keratosis[k] > DECISION_THRESHOLD);
            table.score[0].push(p.melanoma[i]);
            table.score[1].push(p.keratosis[i]);
        }
        Ok(table)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn truth(&self, t: ClsTask) -> &[bool] {
        &self.truth[t.index()]
    }

    pub fn score(&self, t: ClsTask) -> &[f64] {
        &self.score[t.index()]
    }

    /// Whether the task has both classes here (an AUC is defined).
    pub fn defined(&self, t: ClsTask) -> bool {
        let truth = self.truth(t);
        truth.iter().any(|&x| x) && truth.iter().any(|&x| !x)
    }

    /// The rows of `ids` (those present), in `ids`' order.
    pub fn restrict(&self, ids: &[String]) -> ClsTable {
        let at: HashMap<&str, usize> =
            self.ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        let mut out = ClsTable {
            ids: Vec::new(),
            truth: [Vec::new(), Vec::new()],
            score: [Vec::new(), Vec::new()],
        };
        for id in ids {
            if let Some(&i) = at.get(id.as_str()) {
                out.ids.push(id.clone());
                for k in 0..2 {
                    out.truth[k].push(self.truth[k][i]);
                    out.score[k].push(self.score[k][i]);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_of_the_defined_tasks() {
        assert_eq!(ClsAucs::new(Some(0.75), Some(0.25)).mean, Some(0.5));
        assert_eq!(ClsAucs::new(Some(0.8), None).mean, Some(0.8));
        assert_eq!(ClsAucs::new(None, None).mean, None);
    }
}
