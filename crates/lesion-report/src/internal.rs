//! A run's internal metrics and wall time, read from what its trainer wrote: a training run's
//! validation numbers of its best epoch (`metrics.jsonl`, `COMPLETE.json`), a CV's pooled
//! out-of-fold AUCs and their mean ± std over folds (`cv.json`), an SVM head's out-of-fold
//! estimate (its `COMPLETE.json`). Nothing is recomputed here.
use std::path::Path;

use lesion_cls::cv::{CvSummary, CV_JSON};
use lesion_cls::trainer::{ClsCompletion, ClsEpochRecord};
use lesion_core::metrics_log;
use lesion_core::run::{self, COMPLETE_FILE};
use lesion_core::Result;
use lesion_metrics::summary::Spread;
use lesion_seg::trainer::{Completion as SegCompletion, EpochRecord as SegEpochRecord};
use lesion_stack::svm_head::SvmHeadCompletion;
use serde::{Deserialize, Serialize};

use crate::scores::ClsAucs;
use crate::source::{fold_dirs, RunKind};

/// Which images a classification run's internal AUCs are of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InternalBasis {
    /// The run's validation split, at its best epoch, as training scored it (no TTA).
    Validation,
    /// Every image once, predicted by the fold model that did not train on it (pooled).
    OutOfFold,
}

/// A run's internal metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "kebab-case")]
pub enum Internal {
    Cls {
        basis: InternalBasis,
        auc: ClsAucs,
        /// Per-fold AUCs' mean ± std (CV and SVM head only).
        folds_melanoma: Option<Spread>,
        folds_keratosis: Option<Spread>,
    },
    Seg {
        /// Mean official Jaccard of the validation split at the best epoch (at training size).
        jaccard: Option<f64>,
    },
}

impl Internal {
    /// The number runs are ranked by: mean AUC, or Jaccard.
    pub fn headline(&self) -> Option<f64> {
        match self {
            Internal::Cls { auc, .. } => auc.mean,
            Internal::Seg { jaccard } => *jaccard,
        }
    }

    pub fn cls_aucs(&self) -> Option<&ClsAucs> {
        match self {
            Internal::Cls { auc, .. } => Some(auc),
            Internal::Seg { .. } => None,
        }
    }
}

/// Internal metrics (`None`: none recorded yet) and wall time (of an unfinished run: its
/// epochs so far).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InternalRecord {
    pub internal: Option<Internal>,
    pub seconds: Option<f64>,
}

fn epoch_seconds<'a>(records: impl IntoIterator<Item = &'a f64>) -> Option<f64> {
    let mut any = false;
    let total = records.into_iter().inspect(|_| any = true).sum::<f64>();
    any.then_some(total)
}

/// Reads the internal metrics of the run folder `dir` of `kind`.
pub fn read_internal(dir: &Path, kind: RunKind) -> Result<InternalRecord> {
    let complete = dir.join(COMPLETE_FILE);
    match kind {
        RunKind::SegTrain => {
            let records: Vec<SegEpochRecord> = metrics_log::read(dir)?;
            if complete.exists() {
                let c: SegCompletion = run::read_json(&complete)?;
                return Ok(InternalRecord {
                    internal: Some(Internal::Seg { jaccard: c.best_val_jaccard }),
                    seconds: Some(c.seconds),
                });
            }
            let best = records.iter().filter_map(|r| r.val_jaccard).fold(None, max_opt);
            Ok(InternalRecord {
                internal: Some(Internal::Seg { jaccard: best }),
                seconds: epoch_seconds(records.iter().map(|r| &r.seconds)),
            })
        }
        RunKind::ClsTrain => {
            let records: Vec<ClsEpochRecord> = metrics_log::read(dir)?;
            let (best, seconds) = if complete.exists() {
                let c: ClsCompletion = run::read_json(&complete)?;
                (records.iter().find(|r| r.epoch == c.best_epoch), Some(c.seconds))
            } else {
                let best = records.iter().filter(|r| r.val_auc_mean.is_some()).max_by(|a, b| {
                    a.val_auc_mean
                        .unwrap_or(f64::MIN)
                        .total_cmp(&b.val_auc_mean.unwrap_or(f64::MIN))
                });
                (best, epoch_seconds(records.iter().map(|r| &r.seconds)))
            };
            let auc = best
                .map(|r| ClsAucs::new(r.val_auc_melanoma, r.val_auc_keratosis))
                .unwrap_or_default();
            Ok(InternalRecord {
                internal: Some(Internal::Cls {
                    basis: InternalBasis::Validation,
                    auc,
                    folds_melanoma: None,
                    folds_keratosis: None,
                }),
                seconds,
            })
        }
        RunKind::ClsCv => {
            let summary = dir.join(CV_JSON);
            if summary.exists() {
                let s: CvSummary = run::read_json(&summary)?;
                return Ok(InternalRecord {
                    internal: Some(Internal::Cls {
                        basis: InternalBasis::OutOfFold,
                        auc: ClsAucs::new(s.pooled_melanoma_auc, s.pooled_keratosis_auc),
                        folds_melanoma: s.melanoma_auc,
                        folds_keratosis: s.keratosis_auc,
                    }),
                    seconds: Some(s.seconds),
                });
            }
            // Unfinished: only the time its folds have taken so far.
            let mut seconds = Vec::new();
            for fold in fold_dirs(dir) {
                let c = fold.join(COMPLETE_FILE);
                if c.exists() {
                    seconds.push(run::read_json::<ClsCompletion>(&c)?.seconds);
                } else {
                    let records: Vec<ClsEpochRecord> = metrics_log::read(&fold)?;
                    seconds.extend(records.iter().map(|r| r.seconds));
                }
            }
            Ok(InternalRecord { internal: None, seconds: epoch_seconds(&seconds) })
        }
        RunKind::SvmHead => {
            if !complete.exists() {
                return Ok(InternalRecord::default());
            }
            let c: SvmHeadCompletion = run::read_json(&complete)?;
            Ok(InternalRecord {
                internal: Some(Internal::Cls {
                    basis: InternalBasis::OutOfFold,
                    auc: ClsAucs::new(c.pooled_auc_melanoma, c.pooled_auc_keratosis),
                    folds_melanoma: c.auc_melanoma,
                    folds_keratosis: c.auc_keratosis,
                }),
                seconds: Some(c.seconds),
            })
        }
    }
}

fn max_opt(acc: Option<f64>, v: f64) -> Option<f64> {
    Some(acc.map_or(v, |a| a.max(v)))
}
