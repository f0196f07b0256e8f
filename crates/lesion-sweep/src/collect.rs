//! `lesion sweep collect`: every cell of `plan.json` must be complete; then one row per cell
//! with its headline internal metric, written as `collect.csv` and `collect.json`.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use lesion_cls::cv::{CvSummary, CV_JSON};
use lesion_cls::trainer::ClsCompletion;
use lesion_core::run::{read_json, write_json, COMPLETE_FILE};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SweepError};
use crate::folder::{CellState, SweepDir};
use crate::plan::{CellId, PlanRecord, Task};

pub const COLLECT_CSV: &str = "collect.csv";
pub const COLLECT_JSON: &str = "collect.json";

/// The headline internal metric of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// seg-train: the best validation mean Jaccard (`COMPLETE.json`).
    ValJaccard,
    /// cls-train: the best validation mean AUC over melanoma and keratosis (`COMPLETE.json`).
    ValAucMean,
    /// cls-cv: melanoma AUC of all out-of-fold predictions pooled (`cv.json`); the fold mean
    /// and standard deviation beside it.
    OofMelanomaAuc,
}

impl Metric {
    pub fn of(task: Task) -> Metric {
        match task {
            Task::SegTrain => Metric::ValJaccard,
            Task::ClsTrain => Metric::ValAucMean,
            Task::ClsCv => Metric::OofMelanomaAuc,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::ValJaccard => "val-jaccard",
            Metric::ValAucMean => "val-auc-mean",
            Metric::OofMelanomaAuc => "oof-melanoma-auc",
        }
    }
}

/// One cell's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectRow {
    pub index: usize,
    pub id: CellId,
    pub overrides: BTreeMap<String, serde_json::Value>,
    pub seed: Option<u64>,
    pub fold_seed: Option<u64>,
    pub manifest: PathBuf,
    pub state: String,
    pub run: PathBuf,
    pub metric: Metric,
    /// The headline metric (None: the run could not compute it, e.g. no validation split).
    pub value: Option<f64>,
    /// cls-cv: the metric per fold, mean and sample standard deviation.
    pub fold_mean: Option<f64>,
    pub fold_std: Option<f64>,
    /// Training time the run records (every session of a resumed run; cls-cv: the last
    /// `cls cv` session).
    pub train_seconds: f64,
    /// Wall time of the cell's attempts that ended (a killed attempt's time is unknown).
    pub wall_seconds: f64,
}

/// `collect.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collected {
    pub name: String,
    pub task: Task,
    pub metric: Metric,
    pub rows: Vec<CollectRow>,
}

/// Reads every cell's result and writes `collect.csv` and `collect.json`; refuses, naming
/// them, when some cells of the plan are not complete (and then writes nothing).
pub fn collect(sweep: &SweepDir) -> Result<Collected> {
    let plan: PlanRecord = sweep.read_plan()?;
    let incomplete: Vec<String> = plan
        .cells
        .iter()
        .filter_map(|c| match sweep.state(plan.task, &c.id) {
            CellState::Complete => None,
            s => Some(format!("{} {} ({s})", c.index, c.id)),
        })
        .collect();
    if !incomplete.is_empty() {
        return Err(SweepError::file(
            sweep.root(),
            format!(
                "{} of {} cells are not complete: {}",
                incomplete.len(),
                plan.cells.len(),
                incomplete.join(", ")
            ),
        ));
    }
    let metric = Metric::of(plan.task);
    let mut rows = Vec::new();
    for c in &plan.cells {
        let run = sweep.run_dir(&c.id);
        let (value, fold_mean, fold_std, train_seconds) = match plan.task {
            Task::SegTrain => {
                let done: lesion_seg::trainer::Completion = read_json(&run.join(COMPLETE_FILE))?;
                (done.best_val_jaccard, None, None, done.seconds)
            }
            Task::ClsTrain => {
                let done: ClsCompletion = read_json(&run.join(COMPLETE_FILE))?;
                (done.best_val_auc_mean, None, None, done.seconds)
            }
            Task::ClsCv => {
                let cv: CvSummary = read_json(&run.join(CV_JSON))?;
                (
                    cv.pooled_melanoma_auc,
                    cv.melanoma_auc.as_ref().map(|s| s.mean),
                    cv.melanoma_auc.as_ref().map(|s| s.std),
                    cv.seconds,
                )
            }
        };
        let wall_seconds = sweep.read_attempts(&c.id)?.iter().filter_map(|a| a.seconds).sum();
        rows.push(CollectRow {
            index: c.index,
            id: c.id.clone(),
            overrides: c.overrides.clone(),
            seed: c.seed,
            fold_seed: c.fold_seed,
            manifest: c.manifest.clone(),
            state: CellState::Complete.word().to_string(),
            run,
            metric,
            value,
            fold_mean,
            fold_std,
            train_seconds,
            wall_seconds,
        });
    }
    let collected = Collected { name: plan.name.clone(), task: plan.task, metric, rows };
    write_csv(sweep, &collected)?;
    write_json(&sweep.root().join(COLLECT_JSON), &collected)?;
    Ok(collected)
}

/// `collect.csv`: the fixed columns, then one column per override key (sorted).
fn write_csv(sweep: &SweepDir, c: &Collected) -> Result<()> {
    let path = sweep.root().join(COLLECT_CSV);
    let keys: BTreeSet<&String> = c.rows.iter().flat_map(|r| r.overrides.keys()).collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| SweepError::file(&path, e);
    let mut head: Vec<String> = [
        "index",
        "id",
        "state",
        "metric",
        "value",
        "fold_mean",
        "fold_std",
        "seed",
        "fold_seed",
        "manifest",
        "run",
        "train_seconds",
        "wall_seconds",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    head.extend(keys.iter().map(|k| k.to_string()));
    w.write_record(&head).map_err(err)?;
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    let num = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    for r in &c.rows {
        let mut rec = vec![
            r.index.to_string(),
            r.id.to_string(),
            r.state.clone(),
            r.metric.name().to_string(),
            opt(r.value),
            opt(r.fold_mean),
            opt(r.fold_std),
            num(r.seed),
            num(r.fold_seed),
            r.manifest.display().to_string(),
            r.run.display().to_string(),
            format!("{:.1}", r.train_seconds),
            format!("{:.1}", r.wall_seconds),
        ];
        rec.extend(keys.iter().map(|k| match r.overrides.get(*k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        }));
        w.write_record(&rec).map_err(err)?;
    }
    let bytes = w.into_inner().map_err(|e| SweepError::file(&path, e.to_string()))?;
    Ok(lesion_core::run::atomic_write(&path, &bytes)?)
}
