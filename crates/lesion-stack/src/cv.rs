//! Group k-fold and the random search of `C`.

use std::hash::Hash;

use lesion_data::par::CollectInOrder;
use lesion_metrics::cls::roc_auc;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::matrix::FeatureMatrix;
use crate::pipeline::{PipelineConfig, SvmPipeline};
use crate::StackError;

/// Lower end of the `log2 C` search range (RECOD: `C = 2^U(−16, 16)`).
pub const LOG2_C_MIN: f64 = -16.0;
/// Upper end of the `log2 C` search range.
pub const LOG2_C_MAX: f64 = 16.0;

pub use lesion_data::split::{Fold, MIN_FOLDS};

/// [`lesion_data::split::group_k_fold`] (the one splitter) with this crate's errors.
pub fn group_k_fold<G: Eq + Hash>(groups: &[G], k: usize) -> Result<Vec<Fold>, StackError> {
    if k < MIN_FOLDS {
        return Err(StackError::Param { name: "folds", value: k as f64, reason: "must be >= 2" });
    }
    let distinct = groups.iter().collect::<std::collections::HashSet<_>>().len();
    if distinct < k {
        return Err(StackError::TooFewGroups { groups: distinct, folds: k });
    }
    Ok(lesion_data::split::group_k_fold(groups, k)?)
}

fn check_lengths<G>(x: &FeatureMatrix, y: &[bool], groups: &[G]) -> Result<(), StackError> {
    if y.len() != x.rows() {
        return Err(StackError::Length { what: "labels", expected: x.rows(), got: y.len() });
    }
    if groups.len() != x.rows() {
        return Err(StackError::Length { what: "groups", expected: x.rows(), got: groups.len() });
    }
    Ok(())
}

fn fit_fold(
    x: &FeatureMatrix,
    y: &[bool],
    fold: &Fold,
    config: &PipelineConfig,
) -> Result<Vec<f64>, StackError> {
    let xt = x.select_rows(&fold.train)?;
    let yt: Vec<bool> = fold.train.iter().map(|&i| y[i]).collect();
    let model = SvmPipeline::fit(&xt, &yt, config)?;
    model.decision_function(&x.select_rows(&fold.test)?)
}

/// Out-of-fold decision values: each sample scored by the pipeline fitted
/// on the other folds of [`group_k_fold`]. Folds run in parallel.
pub fn cross_val_decision<G: Eq + Hash + Sync>(
    x: &FeatureMatrix,
    y: &[bool],
    groups: &[G],
    k: usize,
    config: &PipelineConfig,
) -> Result<Vec<f64>, StackError> {
    check_lengths(x, y, groups)?;
    let folds = group_k_fold(groups, k)?;
    let decisions: Vec<Vec<f64>> =
        folds.par_iter().map(|f| fit_fold(x, y, f, config)).collect_in_order()?;
    let mut out = vec![0.0; x.rows()];
    for (fold, d) in folds.iter().zip(decisions) {
        for (&i, v) in fold.test.iter().zip(d) {
            out[i] = v;
        }
    }
    Ok(out)
}

/// Random search settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    /// Number of `C` values drawn.
    pub draws: usize,
    /// Group k-fold folds.
    pub folds: usize,
    /// Seed of the ChaCha8 generator drawing `log2 C`.
    pub seed: u64,
    /// `log2 C ~ U[log2_c_min, log2_c_max)`.
    pub log2_c_min: f64,
    pub log2_c_max: f64,
    /// Everything but `C` (its `svm.c` is replaced by each draw).
    pub base: PipelineConfig,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            draws: 25,
            folds: 5,
            seed: 0,
            log2_c_min: LOG2_C_MIN,
            log2_c_max: LOG2_C_MAX,
            base: PipelineConfig::default(),
        }
    }
}

/// One evaluated `C`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub log2_c: f64,
    pub c: f64,
    /// Mean of `fold_aucs`.
    pub mean_auc: f64,
    /// ROC AUC of each validation fold, in fold order.
    pub fold_aucs: Vec<f64>,
}

/// All candidates (in draw order) and the best one: highest mean AUC, ties
/// broken by the smaller `C` (stronger regularisation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    pub best: Candidate,
    pub candidates: Vec<Candidate>,
}

/// The `log2 C` values [`search_c`] evaluates for `config` (deterministic
/// in `seed`).
pub fn draw_log2_c(config: &SearchConfig) -> Result<Vec<f64>, StackError> {
    if !(config.log2_c_min.is_finite()
        && config.log2_c_max.is_finite()
        && config.log2_c_min < config.log2_c_max)
    {
        return Err(StackError::Param {
            name: "log2_c_max",
            value: config.log2_c_max,
            reason: "range must be finite with min < max",
        });
    }
    if config.draws == 0 {
        return Err(StackError::Param { name: "draws", value: 0.0, reason: "must be >= 1" });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    Ok((0..config.draws).map(|_| rng.random_range(config.log2_c_min..config.log2_c_max)).collect())
}

/// Random search of `C` by mean validation ROC AUC under group k-fold.
/// Each fold fits its transforms once and solves the SVMs of all draws as one
/// warm-started path of increasing `C` ([`SvmPipeline::fit_path`]); the folds
/// run in parallel, and the result does not depend on the thread count. A
/// validation fold holding one class is an error ([`StackError::FoldMetric`]).
pub fn search_c<G: Eq + Hash + Sync>(
    x: &FeatureMatrix,
    y: &[bool],
    groups: &[G],
    config: &SearchConfig,
) -> Result<SearchResult, StackError> {
    check_lengths(x, y, groups)?;
    let log2_cs = draw_log2_c(config)?;
    let cs: Vec<f64> = log2_cs.iter().map(|l| l.exp2()).collect();
    let folds = group_k_fold(groups, config.folds)?;
    // fold_aucs[f][d]: AUC of draw d on validation fold f.
    let fold_aucs: Vec<Vec<f64>> = folds
        .par_iter()
        .enumerate()
        .map(|(f, fold)| {
            let xt = x.select_rows(&fold.train)?;
            let yt: Vec<bool> = fold.train.iter().map(|&i| y[i]).collect();
            let xv = x.select_rows(&fold.test)?;
            let truth: Vec<bool> = fold.test.iter().map(|&i| y[i]).collect();
            let path = SvmPipeline::fit_path(&xt, &yt, &config.base, &cs)?;
            // The path's models share one fit of the transforms: transform once.
            let zv = match path.first() {
                Some(model) => model.transform(&xv)?,
                None => return Err(StackError::Empty),
            };
            path.iter()
                .map(|model| {
                    let decision = model.svm.decision_function(&zv)?;
                    roc_auc(&truth, &decision)
                        .map_err(|source| StackError::FoldMetric { fold: f, source })
                })
                .collect()
        })
        .collect_in_order()?;
    let candidates: Vec<Candidate> = log2_cs
        .iter()
        .enumerate()
        .map(|(d, &l)| {
            let fold_aucs: Vec<f64> = fold_aucs.iter().map(|per_draw| per_draw[d]).collect();
            Candidate {
                log2_c: l,
                c: l.exp2(),
                mean_auc: fold_aucs.iter().sum::<f64>() / fold_aucs.len() as f64,
                fold_aucs,
            }
        })
        .collect();
    let best = candidates
        .iter()
        .max_by(|a, b| a.mean_auc.total_cmp(&b.mean_auc).then(b.log2_c.total_cmp(&a.log2_c)))
        .cloned()
        .ok_or(StackError::Empty)?;
    Ok(SearchResult { best, candidates })
}
