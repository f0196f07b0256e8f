//! Stacked meta-learning over component models, without leakage.
//!
//! A *component* is one model family (a fine-tuned net, an SVM layer on its features…) that
//! gave every image R ≥ 1 replica predictions (test-time augmentations), together with its
//! *provenance*: which fitted model predicted each image and which images that model was
//! trained on. The meta-learner sees, per image, rows of log2-odds of the components'
//! (melanoma, keratosis) probabilities — one row per *replica combination* (one replica drawn
//! from each component, as the RECOD 2017 system did) — plus optional patient metadata, and a
//! linear SVM per task (C by random search under group k-fold with the image as the group,
//! Platt-calibrated) scores them; an image's rows are pooled at prediction.
//!
//! Two ways to get meta-training features:
//! * `oof` (cross-fitting): every image's component predictions come from a model that was not
//!   trained on it nor on any image of its duplicate group. [`oof_leaks`] checks this from the
//!   provenance and training refuses to start when it finds one.
//! * `holdout` (the paper's scheme): components trained elsewhere predict a named split; the
//!   images of that split a component saw in training are counted by [`holdout_overlap`] and
//!   reported.
//!
//! [`evaluate_folds`] compares, on the same outer folds, each single component, the plain
//! average of the components and the stacked meta-learner (trained on the other folds' rows).
use std::collections::{BTreeMap, BTreeSet};

use lesion_metrics::cls::roc_auc;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::cv::{search_c, SearchConfig, SearchResult};
use crate::matrix::FeatureMatrix;
use crate::meta::{log2_odds, TaskProbs};
use crate::pipeline::CalibratedSvm;
use crate::StackError;

/// Replica combinations drawn per image (the paper: 100 per run).
pub const DEFAULT_COMBINATIONS: usize = 100;
/// Random `C` draws of the meta-learner (the paper: 30).
pub const DEFAULT_META_DRAWS: usize = 30;
/// Group k-fold folds of the C search and of the Platt calibration.
pub const DEFAULT_INNER_FOLDS: usize = 5;
/// Ages are divided by this before entering the meta features.
pub const AGE_SCALE: f64 = 100.0;

/// The two ISIC 2017 tasks (the one enum, `lesion_metrics::cls::Task`).
pub use lesion_metrics::cls::Task;

/// An image's ground truth for the two tasks (never both true).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskTruth {
    pub melanoma: bool,
    pub keratosis: bool,
}

impl TaskTruth {
    pub fn task(&self, task: Task) -> bool {
        match task {
            Task::Melanoma => self.melanoma,
            Task::Keratosis => self.keratosis,
        }
    }
}

/// Patient sex as the ISIC metadata writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sex {
    Male,
    Female,
}

/// Optional patient metadata of one image.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PatientMeta {
    pub age: Option<f64>,
    pub sex: Option<Sex>,
}

/// Which metadata encodings are appended to each meta row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MetadataEncoding {
    /// `age / 100` (missing: the training mean) and a missing-age indicator.
    pub age: bool,
    /// One-hot `male`, `female` (unknown: both 0).
    pub sex: bool,
}

/// One component's replica predictions. Invariant: every listed image has ≥ 1 replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaTable {
    pub name: String,
    pub images: BTreeMap<String, Vec<TaskProbs>>,
}

impl ReplicaTable {
    /// Mean over an image's replicas (the pooled single-model prediction).
    pub fn pooled(&self, id: &str) -> Option<TaskProbs> {
        let r = self.images.get(id)?;
        if r.is_empty() {
            return None;
        }
        let n = r.len() as f64;
        Some(TaskProbs {
            melanoma: r.iter().map(|p| p.melanoma).sum::<f64>() / n,
            keratosis: r.iter().map(|p| p.keratosis).sum::<f64>() / n,
        })
    }
}

/// Which fitted model predicted each image and what each model was trained on.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Provenance {
    /// Image id → key of the model whose prediction the component holds for it.
    pub model_of: BTreeMap<String, String>,
    /// Model key → ids of the images it was trained on.
    pub trained_on: BTreeMap<String, BTreeSet<String>>,
}

/// A component: predictions plus provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub table: ReplicaTable,
    pub provenance: Provenance,
}

/// Duplicate groups: image id → group key (images not listed are their own group).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Groups {
    group_of: BTreeMap<String, String>,
}

impl Groups {
    pub fn new(group_of: BTreeMap<String, String>) -> Groups {
        Groups { group_of }
    }

    /// The group key of `id` (its own id when it has none).
    pub fn of<'a>(&'a self, id: &'a str) -> &'a str {
        self.group_of.get(id).map(String::as_str).unwrap_or(id)
    }
}

/// An image whose meta feature came from a model that saw it or a duplicate of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leak {
    pub component: String,
    pub image: String,
    pub model: String,
    /// The training image that is `image` itself or in its duplicate group.
    pub seen: String,
}

/// The first training image of `model` in `id`'s duplicate group, if any.
fn seen_in_training<'a>(
    prov: &'a Provenance,
    model: &str,
    id: &str,
    groups: &Groups,
) -> Option<&'a String> {
    let train = prov.trained_on.get(model)?;
    let g = groups.of(id);
    train.iter().find(|t| groups.of(t) == g)
}

/// Every (component, image) whose prediction violates cross-fitting, for the images `ids`.
/// An image with no recorded model is a leak too (its provenance is unknown), reported with
/// `model` and `seen` empty.
pub fn oof_leaks(components: &[Component], ids: &[String], groups: &Groups) -> Vec<Leak> {
    let mut leaks = Vec::new();
    for c in components {
        for id in ids {
            let Some(model) = c.provenance.model_of.get(id) else {
                leaks.push(Leak {
                    component: c.table.name.clone(),
                    image: id.clone(),
                    model: String::new(),
                    seen: String::new(),
                });
                continue;
            };
            if let Some(seen) = seen_in_training(&c.provenance, model, id, groups) {
                leaks.push(Leak {
                    component: c.table.name.clone(),
                    image: id.clone(),
                    model: model.clone(),
                    seen: seen.clone(),
                });
            }
        }
    }
    leaks
}

/// Per component, how many of `meta_ids` (or a duplicate of them) its model saw in training.
pub fn holdout_overlap(
    components: &[Component],
    meta_ids: &[String],
    groups: &Groups,
) -> BTreeMap<String, usize> {
    let leaks = oof_leaks(components, meta_ids, groups);
    let mut out: BTreeMap<String, usize> =
        components.iter().map(|c| (c.table.name.clone(), 0)).collect();
    for l in leaks.iter().filter(|l| !l.model.is_empty()) {
        *out.entry(l.component.clone()).or_default() += 1;
    }
    out
}

/// How an image's meta rows are pooled into its prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowPooling {
    /// Mean of the rows' calibrated probabilities.
    Avg,
    /// The row probability farthest from 0.5.
    Extreme,
}

/// Meta-learner settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetaConfig {
    /// Replica combinations per image (capped by the number of distinct combinations).
    pub combinations: usize,
    pub pooling: RowPooling,
    /// C search: draws, inner folds, seed, log2 C range, standardisation / PCA.
    pub search: SearchConfig,
    pub metadata: MetadataEncoding,
    /// Seed of the replica combinations.
    pub seed: u64,
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            combinations: DEFAULT_COMBINATIONS,
            pooling: RowPooling::Avg,
            search: SearchConfig {
                draws: DEFAULT_META_DRAWS,
                folds: DEFAULT_INNER_FOLDS,
                ..SearchConfig::default()
            },
            metadata: MetadataEncoding::default(),
            seed: 0,
        }
    }
}

/// FNV-1a of an id: combinations of an image depend on (seed, id) only, not on which other
/// images are being stacked.
fn id_hash(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Replica index per component for each of an image's rows. With fewer distinct combinations
/// than asked, every combination is enumerated once (in order); otherwise `n` are drawn.
fn combinations(counts: &[usize], n: usize, seed: u64, id: &str) -> Vec<Vec<usize>> {
    let total = counts.iter().try_fold(1usize, |acc, &c| acc.checked_mul(c.max(1)));
    match total {
        Some(t) if t <= n => (0..t)
            .map(|mut k| {
                counts
                    .iter()
                    .map(|&c| {
                        let c = c.max(1);
                        let r = k % c;
                        k /= c;
                        r
                    })
                    .collect()
            })
            .collect(),
        _ => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ id_hash(id));
            (0..n.max(1))
                .map(|_| counts.iter().map(|&c| rng.random_range(0..c.max(1))).collect())
                .collect()
        }
    }
}

/// Meta rows of `ids`. Returns the matrix, each row's image index into `ids`, and column names.
/// Missing ages are filled with `age_fill`.
pub fn meta_rows(
    components: &[&ReplicaTable],
    ids: &[String],
    meta: &BTreeMap<String, PatientMeta>,
    config: &MetaConfig,
    age_fill: f64,
) -> Result<(FeatureMatrix, Vec<usize>, Vec<String>), StackError> {
    if components.is_empty() || ids.is_empty() {
        return Err(StackError::Empty);
    }
    let mut columns = Vec::new();
    for c in components {
        columns.push(format!("{}.melanoma", c.name));
        columns.push(format!("{}.keratosis", c.name));
    }
    if config.metadata.age {
        columns.push("age".into());
        columns.push("age_missing".into());
    }
    if config.metadata.sex {
        columns.push("sex_male".into());
        columns.push("sex_female".into());
    }
    let mut data = Vec::new();
    let mut image_of = Vec::new();
    for (index, id) in ids.iter().enumerate() {
        let mut reps: Vec<&Vec<TaskProbs>> = Vec::with_capacity(components.len());
        for (ci, c) in components.iter().enumerate() {
            match c.images.get(id) {
                Some(r) if !r.is_empty() => reps.push(r),
                _ => {
                    return Err(StackError::IdMismatch {
                        component: c.name.clone(),
                        row: ci,
                        expected: id.clone(),
                        got: "(no prediction)".into(),
                    })
                }
            }
        }
        let counts: Vec<usize> = reps.iter().map(|r| r.len()).collect();
        let pm = meta.get(id).copied().unwrap_or_default();
        for combo in combinations(&counts, config.combinations, config.seed, id) {
            for ((r, &k), c) in reps.iter().zip(&combo).zip(components) {
                let p = r[k];
                for v in [p.melanoma, p.keratosis] {
                    if !(0.0..=1.0).contains(&v) {
                        return Err(StackError::Probability {
                            component: c.name.clone(),
                            row: index,
                            value: v,
                        });
                    }
                    data.push(log2_odds(v));
                }
            }
            if config.metadata.age {
                data.push(pm.age.map_or(age_fill, |a| a / AGE_SCALE));
                data.push(if pm.age.is_some() { 0.0 } else { 1.0 });
            }
            if config.metadata.sex {
                data.push(if pm.sex == Some(Sex::Male) { 1.0 } else { 0.0 });
                data.push(if pm.sex == Some(Sex::Female) { 1.0 } else { 0.0 });
            }
            image_of.push(index);
        }
    }
    let cols = columns.len();
    Ok((FeatureMatrix::new(image_of.len(), cols, data)?, image_of, columns))
}

/// The fitted meta-learner of one task, or the plain average when its training images held
/// one class only (e.g. no keratosis in PH2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskModel {
    /// Boxed: the fitted SVM is far larger than the other variant (serialised the same).
    Svm { model: Box<CalibratedSvm>, search: SearchResult },
    /// Mean of the components' pooled probabilities.
    Average,
}

/// A fitted stack: component names in column order, one model per task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetaModel {
    pub components: Vec<String>,
    pub columns: Vec<String>,
    pub config: MetaConfig,
    /// Age fill value (training mean of `age / 100`; 0.5 when no age was known).
    pub age_fill: f64,
    pub melanoma: TaskModel,
    pub keratosis: TaskModel,
}

fn mean_age(ids: &[String], meta: &BTreeMap<String, PatientMeta>) -> f64 {
    let ages: Vec<f64> = ids
        .iter()
        .filter_map(|id| meta.get(id).and_then(|m| m.age))
        .map(|a| a / AGE_SCALE)
        .collect();
    if ages.is_empty() {
        0.5
    } else {
        ages.iter().sum::<f64>() / ages.len() as f64
    }
}

fn plain_average(components: &[&ReplicaTable], id: &str, task: Task) -> Option<f64> {
    let mut s = 0.0;
    for c in components {
        s += c.pooled(id)?.task(task);
    }
    Some(s / components.len() as f64)
}

impl MetaModel {
    /// Fits on the images `ids` (each needs a truth and a prediction from every component).
    pub fn fit(
        components: &[&ReplicaTable],
        ids: &[String],
        truth: &BTreeMap<String, TaskTruth>,
        meta: &BTreeMap<String, PatientMeta>,
        config: &MetaConfig,
    ) -> Result<MetaModel, StackError> {
        let age_fill = mean_age(ids, meta);
        let (x, image_of, columns) = meta_rows(components, ids, meta, config, age_fill)?;
        let mut labels = Vec::with_capacity(ids.len());
        for id in ids {
            labels.push(*truth.get(id).ok_or_else(|| StackError::IdMismatch {
                component: "truth".into(),
                row: labels.len(),
                expected: id.clone(),
                got: "(no label)".into(),
            })?);
        }
        let fit_task = |task: Task| -> Result<TaskModel, StackError> {
            let y: Vec<bool> = image_of.iter().map(|&i| labels[i].task(task)).collect();
            Ok(match fit_grouped_svm(&x, &y, &image_of, &config.search)? {
                Some((model, search)) => TaskModel::Svm { model: Box::new(model), search },
                None => TaskModel::Average,
            })
        };
        Ok(MetaModel {
            components: components.iter().map(|c| c.name.clone()).collect(),
            columns,
            config: *config,
            age_fill,
            melanoma: fit_task(Task::Melanoma)?,
            keratosis: fit_task(Task::Keratosis)?,
        })
    }

    /// Stacked probabilities of `ids`, in order. `components` must be in [`MetaModel::components`]
    /// order.
    pub fn predict(
        &self,
        components: &[&ReplicaTable],
        ids: &[String],
        meta: &BTreeMap<String, PatientMeta>,
    ) -> Result<Vec<TaskProbs>, StackError> {
        let names: Vec<String> = components.iter().map(|c| c.name.clone()).collect();
        if names != self.components {
            return Err(StackError::IdMismatch {
                component: "stack".into(),
                row: 0,
                expected: self.components.join(","),
                got: names.join(","),
            });
        }
        let (x, image_of, _) = meta_rows(components, ids, meta, &self.config, self.age_fill)?;
        let mut out = vec![TaskProbs { melanoma: 0.0, keratosis: 0.0 }; ids.len()];
        for task in Task::ALL {
            let model = match task {
                Task::Melanoma => &self.melanoma,
                Task::Keratosis => &self.keratosis,
            };
            let values: Vec<f64> = match model {
                TaskModel::Svm { model, .. } => {
                    let p = model.predict_proba(&x)?;
                    pool_rows(&p, &image_of, ids.len(), self.config.pooling)
                }
                TaskModel::Average => ids
                    .iter()
                    .map(|id| plain_average(components, id, task).unwrap_or(0.0))
                    .collect(),
            };
            for (o, v) in out.iter_mut().zip(values) {
                match task {
                    Task::Melanoma => o.melanoma = v,
                    Task::Keratosis => o.keratosis = v,
                }
            }
        }
        Ok(out)
    }
}

/// Searches C and fits a Platt-calibrated SVM on rows grouped by image (`image_of`), or `None`
/// when fewer than `search.folds` images are positive (or negative): then some validation fold
/// would hold one class and could not be scored.
///
/// Rows are first put positives-first (stable by image): [`crate::cv::group_k_fold`] deals
/// equal-size groups round-robin in first-appearance order, so this order spreads the positive
/// images evenly over the folds (each fold gets ⌊P/k⌋ or ⌈P/k⌉ of them) — a stratified group
/// k-fold. The fitted model does not depend on row order.
pub fn fit_grouped_svm(
    x: &FeatureMatrix,
    y: &[bool],
    image_of: &[usize],
    search: &SearchConfig,
) -> Result<Option<(CalibratedSvm, SearchResult)>, StackError> {
    if y.len() != x.rows() || image_of.len() != x.rows() {
        return Err(StackError::Length {
            what: "labels and groups",
            expected: x.rows(),
            got: y.len().min(image_of.len()),
        });
    }
    let images: BTreeMap<usize, bool> = image_of.iter().zip(y).map(|(&g, &v)| (g, v)).collect();
    let positives = images.values().filter(|&&v| v).count();
    if positives < search.folds || images.len() - positives < search.folds {
        return Ok(None);
    }
    let mut order: Vec<usize> = (0..x.rows()).collect();
    order.sort_by_key(|&r| (!y[r], image_of[r], r));
    let xs = x.select_rows(&order)?;
    let ys: Vec<bool> = order.iter().map(|&r| y[r]).collect();
    let gs: Vec<usize> = order.iter().map(|&r| image_of[r]).collect();
    let result = search_c(&xs, &ys, &gs, search)?;
    let mut pipe = search.base;
    pipe.svm.c = result.best.c;
    Ok(Some((CalibratedSvm::fit(&xs, &ys, &gs, search.folds, &pipe)?, result)))
}

/// Pools row probabilities per image (rows of one image need not be contiguous).
fn pool_rows(p: &[f64], image_of: &[usize], n: usize, how: RowPooling) -> Vec<f64> {
    let mut rows: Vec<Vec<f64>> = vec![Vec::new(); n];
    for (&i, &v) in image_of.iter().zip(p) {
        rows[i].push(v);
    }
    rows.into_iter()
        .map(|r| match how {
            RowPooling::Avg => r.iter().sum::<f64>() / r.len().max(1) as f64,
            RowPooling::Extreme => r.iter().copied().fold(0.5_f64, |best, v| {
                if (v - 0.5).abs() > (best - 0.5).abs() {
                    v
                } else {
                    best
                }
            }),
        })
        .collect()
}

pub use lesion_metrics::summary::Spread;

/// One method's AUCs for one task: per outer fold (None where the fold held one class), their
/// spread, and the AUC of all out-of-fold predictions pooled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskScores {
    pub fold_aucs: Vec<Option<f64>>,
    pub spread: Option<Spread>,
    pub pooled_auc: Option<f64>,
}

/// A method (a single component, the plain average, the stack) and its scores per task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodReport {
    pub method: String,
    pub melanoma: TaskScores,
    pub keratosis: TaskScores,
}

/// The comparison on common outer folds, plus every image's out-of-fold stacked prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackReport {
    pub folds: usize,
    pub images: usize,
    pub methods: Vec<MethodReport>,
    /// The single component with the highest mean melanoma AUC over folds (chosen on the same
    /// folds it is scored on, so its figure is optimistic).
    pub best_single: Option<String>,
    pub stacked_oof: BTreeMap<String, TaskProbs>,
    /// Every method's out-of-fold predictions (method name → image → probabilities), in
    /// [`StackReport::methods`] order: the input of ROC plots.
    pub oof_by_method: Vec<(String, BTreeMap<String, TaskProbs>)>,
}

fn auc_of(
    ids: &[String],
    truth: &BTreeMap<String, TaskTruth>,
    scores: &BTreeMap<String, TaskProbs>,
    task: Task,
) -> Option<f64> {
    let mut y = Vec::new();
    let mut s = Vec::new();
    for id in ids {
        y.push(truth.get(id)?.task(task));
        s.push(scores.get(id)?.task(task));
    }
    roc_auc(&y, &s).ok()
}

/// Scores per method on the outer folds `fold_of` (image → fold). The stack of fold k is fitted
/// on the other folds' images only.
pub fn evaluate_folds(
    components: &[&ReplicaTable],
    truth: &BTreeMap<String, TaskTruth>,
    meta: &BTreeMap<String, PatientMeta>,
    fold_of: &BTreeMap<String, usize>,
    config: &MetaConfig,
) -> Result<StackReport, StackError> {
    let ids: Vec<String> = fold_of.keys().cloned().collect();
    let k = fold_of.values().copied().max().map_or(0, |m| m + 1);
    let mut method_preds: Vec<(String, BTreeMap<String, TaskProbs>)> = Vec::new();
    for c in components {
        let mut m = BTreeMap::new();
        for id in &ids {
            let p = c.pooled(id).ok_or_else(|| StackError::IdMismatch {
                component: c.name.clone(),
                row: 0,
                expected: id.clone(),
                got: "(no prediction)".into(),
            })?;
            m.insert(id.clone(), p);
        }
        method_preds.push((c.name.clone(), m));
    }
    let mut avg = BTreeMap::new();
    for id in &ids {
        let mel = plain_average(components, id, Task::Melanoma).unwrap_or(0.0);
        let ker = plain_average(components, id, Task::Keratosis).unwrap_or(0.0);
        avg.insert(id.clone(), TaskProbs { melanoma: mel, keratosis: ker });
    }
    method_preds.push(("average".into(), avg));
    let mut stacked = BTreeMap::new();
    for fold in 0..k {
        let train: Vec<String> =
            ids.iter().filter(|id| fold_of.get(*id) != Some(&fold)).cloned().collect();
        let test: Vec<String> =
            ids.iter().filter(|id| fold_of.get(*id) == Some(&fold)).cloned().collect();
        if test.is_empty() {
            continue;
        }
        let model = MetaModel::fit(components, &train, truth, meta, config)?;
        for (id, p) in test.iter().zip(model.predict(components, &test, meta)?) {
            stacked.insert(id.clone(), p);
        }
    }
    method_preds.push(("stacked".into(), stacked.clone()));
    let fold_ids: Vec<Vec<String>> = (0..k)
        .map(|f| ids.iter().filter(|id| fold_of.get(*id) == Some(&f)).cloned().collect())
        .collect();
    let scores = |preds: &BTreeMap<String, TaskProbs>, task: Task| {
        let fold_aucs: Vec<Option<f64>> =
            fold_ids.iter().map(|f| auc_of(f, truth, preds, task)).collect();
        let defined: Vec<f64> = fold_aucs.iter().flatten().copied().collect();
        TaskScores {
            spread: Spread::of(&defined),
            pooled_auc: auc_of(&ids, truth, preds, task),
            fold_aucs,
        }
    };
    let methods: Vec<MethodReport> = method_preds
        .iter()
        .map(|(name, p)| MethodReport {
            method: name.clone(),
            melanoma: scores(p, Task::Melanoma),
            keratosis: scores(p, Task::Keratosis),
        })
        .collect();
    let best_single = methods[..components.len()]
        .iter()
        .filter_map(|m| m.melanoma.spread.map(|s| (m.method.clone(), s.mean)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(n, _)| n);
    Ok(StackReport {
        folds: k,
        images: ids.len(),
        methods,
        best_single,
        stacked_oof: stacked,
        oof_by_method: method_preds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(m: f64, k: f64) -> TaskProbs {
        TaskProbs { melanoma: m, keratosis: k }
    }

    #[test]
    fn combinations_enumerate_or_draw() {
        let all = combinations(&[2, 3], 10, 0, "a");
        assert_eq!(all.len(), 6);
        let set: BTreeSet<Vec<usize>> = all.into_iter().collect();
        assert_eq!(set.len(), 6);
        let drawn = combinations(&[8, 8, 8], 100, 7, "img");
        assert_eq!(drawn.len(), 100);
        assert!(drawn.iter().all(|c| c.iter().all(|&r| r < 8)));
        assert_eq!(drawn, combinations(&[8, 8, 8], 100, 7, "img"));
        assert_ne!(drawn, combinations(&[8, 8, 8], 100, 7, "other"));
    }

    #[test]
    fn rows_hold_log2_odds_and_metadata() {
        let a = ReplicaTable {
            name: "a".into(),
            images: BTreeMap::from([("x".to_string(), vec![tp(0.5, 0.2)])]),
        };
        let b = ReplicaTable {
            name: "b".into(),
            images: BTreeMap::from([("x".to_string(), vec![tp(0.8, 1e-9), tp(0.2, 0.1)])]),
        };
        let cfg = MetaConfig {
            metadata: MetadataEncoding { age: true, sex: true },
            ..MetaConfig::default()
        };
        let meta =
            BTreeMap::from([("x".to_string(), PatientMeta { age: None, sex: Some(Sex::Female) })]);
        let (x, image_of, cols) =
            meta_rows(&[&a, &b], &["x".to_string()], &meta, &cfg, 0.45).unwrap();
        assert_eq!(cols.len(), 8);
        assert_eq!(x.rows(), 2);
        assert_eq!(image_of, vec![0, 0]);
        let r0 = x.row(0);
        assert!((r0[0] - 0.0).abs() < 1e-12);
        assert!((r0[1] - (0.25f64).log2()).abs() < 1e-12);
        assert!((r0[2] - 2.0).abs() < 1e-12);
        assert!((r0[3] - log2_odds(1e-5)).abs() < 1e-9, "clipped");
        assert_eq!(&r0[4..], &[0.45, 1.0, 0.0, 1.0]);
        assert!((x.row(1)[2] + 2.0).abs() < 1e-12);
    }

    #[test]
    fn rows_refuse_bad_probabilities_and_missing_predictions() {
        let a = ReplicaTable {
            name: "a".into(),
            images: BTreeMap::from([
                ("x".to_string(), vec![tp(0.5, 1.2)]),
                ("y".to_string(), vec![tp(0.5, 0.5)]),
            ]),
        };
        let b = ReplicaTable {
            name: "b".into(),
            images: BTreeMap::from([("y".to_string(), vec![tp(0.5, 0.5)])]),
        };
        let cfg = MetaConfig::default();
        let none = BTreeMap::new();
        let err = meta_rows(&[&a], &["x".to_string()], &none, &cfg, 0.5).unwrap_err();
        assert!(
            matches!(err, StackError::Probability { ref component, .. } if component == "a"),
            "{err}"
        );
        let err = meta_rows(&[&b, &a], &["y".to_string(), "x".to_string()], &none, &cfg, 0.5)
            .unwrap_err();
        assert!(
            matches!(err, StackError::IdMismatch { ref component, ref expected, .. } if component == "b" && expected == "x"),
            "{err}"
        );
    }

    #[test]
    fn leaks_follow_duplicate_groups() {
        let table = ReplicaTable { name: "c".into(), images: BTreeMap::new() };
        let prov = Provenance {
            model_of: BTreeMap::from([
                ("a".into(), "m0".into()),
                ("b".into(), "m1".into()),
                ("c".into(), "m1".into()),
            ]),
            trained_on: BTreeMap::from([
                ("m0".into(), BTreeSet::from(["b".to_string(), "c".to_string()])),
                ("m1".into(), BTreeSet::from(["a2".to_string()])),
            ]),
        };
        let comp = Component { table, provenance: prov };
        let ids: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        // No groups: a, b, c are clean; d has no recorded model.
        let leaks = oof_leaks(std::slice::from_ref(&comp), &ids, &Groups::default());
        assert_eq!(leaks.len(), 1);
        assert_eq!(leaks[0].image, "d");
        // a and a2 are duplicates: a's model m0 did not see a2, but b's model m1 did see a2,
        // which is not in b's group; with b in a2's group, b leaks.
        let groups =
            Groups::new(BTreeMap::from([("b".into(), "g".into()), ("a2".into(), "g".into())]));
        let leaks = oof_leaks(std::slice::from_ref(&comp), &ids[..3], &groups);
        assert_eq!(
            leaks,
            vec![Leak {
                component: "c".into(),
                image: "b".into(),
                model: "m1".into(),
                seen: "a2".into()
            }]
        );
        let overlap = holdout_overlap(std::slice::from_ref(&comp), &ids[..3], &groups);
        assert_eq!(overlap.get("c"), Some(&1));
    }

    #[test]
    fn grouped_svm_search_is_stratified() {
        // 20 images × 3 rows, 5 positive images listed last: plain group k-fold in this order
        // would put all positives in one or two folds; the fit must still score every fold.
        let mut rows = Vec::new();
        let mut y = Vec::new();
        let mut image_of = Vec::new();
        for i in 0..20usize {
            let pos = i >= 15;
            for r in 0..3 {
                let v = if pos { 1.0 } else { -1.0 } + 0.3 * ((i * 7 + r * 3) % 5) as f64 - 0.6;
                rows.push(vec![v, (i % 3) as f64]);
                y.push(pos);
                image_of.push(i);
            }
        }
        let x = FeatureMatrix::from_rows(&rows).unwrap();
        let cfg = SearchConfig { draws: 3, folds: 5, ..SearchConfig::default() };
        let (model, search) =
            fit_grouped_svm(&x, &y, &image_of, &cfg).unwrap().expect("enough positives");
        assert!(search.candidates.iter().all(|c| c.fold_aucs.len() == 5));
        let p = model.predict_proba(&x).unwrap();
        assert!(roc_auc(&y, &p).unwrap() > 0.9);
        assert!(fit_grouped_svm(&x, &y, &image_of, &SearchConfig { folds: 6, ..cfg })
            .unwrap()
            .is_none());
    }

    #[test]
    fn pooling_rows() {
        let p = [0.9, 0.2, 0.6, 0.4];
        assert_eq!(
            pool_rows(&p, &[0, 1, 0, 1], 2, RowPooling::Avg),
            vec![0.75, 0.30000000000000004]
        );
        assert_eq!(pool_rows(&p, &[0, 1, 0, 1], 2, RowPooling::Extreme), vec![0.9, 0.2]);
    }
}
