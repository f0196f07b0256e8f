//! What the leaderboard and the report read: run folders of every kind (recognised by the
//! files their trainers write), sweep folders expanded to their cells, and a stack folder's
//! members. Only the fields needed are read, and extra fields are ignored, so that folders
//! written by newer versions (or the sweep driver's own records) still read.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use lesion_cls::config::ClsTrainConfig;
use lesion_cls::cv::{CV_JSON, FOLDS_FILE};
use lesion_core::run::{self, CONFIG_FILE};
use lesion_core::{Result, TrainError};
use lesion_seg::SegTrainConfig;
use lesion_stack::stacking::{ComponentKind, StackFile, COMPONENT_FILE, STACK_JSON};
use lesion_stack::svm_head::{FEATURES_FILE, SVM_HEAD_FILE};
use serde::{Deserialize, Serialize};

/// A sweep folder's expanded plan.
pub const PLAN_FILE: &str = "plan.json";
/// A sweep folder's cells, one folder each.
pub const CELLS_DIR: &str = "cells";
/// A cell's record in its folder.
pub const CELL_FILE: &str = "cell.json";
/// A cell's run folder in its cell folder.
pub const CELL_RUN_DIR: &str = "run";
/// The first fold's run folder of a CV folder (it holds the config every fold shares).
pub const FIRST_FOLD_DIR: &str = "fold-0";

/// What wrote a run folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    /// `lesion seg train`.
    SegTrain,
    /// `lesion cls train`.
    ClsTrain,
    /// `lesion cls cv`: fold run folders, out-of-fold predictions, `cv.json`.
    ClsCv,
    /// `lesion stack svm-head`: an SVM head on a frozen backbone, with an out-of-fold estimate.
    SvmHead,
}

/// The two tasks; runs of different tasks are ranked apart (their metrics do not compare).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    Classification,
    Segmentation,
}

impl RunKind {
    pub fn task(self) -> Task {
        match self {
            RunKind::SegTrain => Task::Segmentation,
            RunKind::ClsTrain | RunKind::ClsCv | RunKind::SvmHead => Task::Classification,
        }
    }

    /// The command that writes such a folder.
    pub fn name(self) -> &'static str {
        match self {
            RunKind::SegTrain => "seg train",
            RunKind::ClsTrain => "cls train",
            RunKind::ClsCv => "cls cv",
            RunKind::SvmHead => "svm head",
        }
    }
}

impl std::fmt::Display for RunKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum RunState {
    /// `COMPLETE.json` (a CV: `cv.json`) written: the run finished.
    Complete,
    /// A process holds the folder's lock now.
    Running { pid: Option<u32> },
    /// Started, not finished, nobody working on it: killed or failed.
    Interrupted { detail: Option<String> },
    /// A sweep cell whose run folder does not exist yet.
    NotStarted,
    /// A sweep cell its driver recorded as failed.
    Failed { reason: String },
}

impl RunState {
    pub fn is_complete(&self) -> bool {
        matches!(self, RunState::Complete)
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunState::Complete => f.write_str("complete"),
            RunState::Running { pid: Some(p) } => write!(f, "running (process {p})"),
            RunState::Running { pid: None } => f.write_str("running"),
            RunState::Interrupted { detail: Some(d) } => write!(f, "incomplete ({d})"),
            RunState::Interrupted { detail: None } => f.write_str("incomplete"),
            RunState::NotStarted => f.write_str("not started"),
            RunState::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

/// One run to list: a loose run folder or a sweep cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The folder's name (loose runs) or `<sweep>/<cell id>`; unique among the entries.
    pub name: String,
    /// The sweep it belongs to.
    pub sweep: Option<String>,
    /// The run folder (absent for a cell not started).
    pub dir: PathBuf,
    /// `None` only for a cell not started whose plan names no known task.
    pub kind: Option<RunKind>,
    pub state: RunState,
    /// A sweep cell's config overrides (dotted key → value); `None` for loose runs.
    pub overrides: Option<BTreeMap<String, String>>,
}

/// A sweep folder given as input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    pub name: String,
    pub dir: PathBuf,
    /// The external manifest its plan names, if any.
    pub external: Option<PathBuf>,
}

/// Every input, expanded.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub entries: Vec<Entry>,
    pub sweeps: Vec<Sweep>,
}

/// `plan.json`, as far as it is read here.
#[derive(Debug, Deserialize)]
struct PlanFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    task: Option<String>,
    #[serde(default, alias = "external_manifest")]
    external: Option<PathBuf>,
    #[serde(default)]
    cells: Vec<PlanCell>,
}

#[derive(Debug, Deserialize)]
struct PlanCell {
    id: String,
    #[serde(default)]
    overrides: BTreeMap<String, serde_json::Value>,
    /// The seed axis (`train.seed`), which the plan keeps beside the overrides.
    #[serde(default)]
    seed: Option<u64>,
    /// The fold-assignment seed of a CV cell.
    #[serde(default)]
    fold_seed: Option<u64>,
}

impl PlanCell {
    /// What distinguishes the cell: its overrides, then its seeds (two cells that differ only
    /// by seed must not read the same).
    fn shown_overrides(&self) -> BTreeMap<String, String> {
        let mut shown: BTreeMap<String, String> =
            self.overrides.iter().map(|(k, v)| (k.clone(), show_value(v))).collect();
        if let Some(seed) = self.seed {
            shown.insert(SEED_KEY.to_string(), seed.to_string());
        }
        if let Some(seed) = self.fold_seed {
            shown.insert(FOLD_SEED_KEY.to_string(), seed.to_string());
        }
        shown
    }
}

/// How a cell's seed axes are shown among its overrides.
const SEED_KEY: &str = "seed";
const FOLD_SEED_KEY: &str = "fold_seed";

/// Recognises a run folder by the files its trainer writes: an SVM head (`svm-head.json` or
/// its features), a CV (`folds.json`, `cv.json` or `fold-0/`), else a training run whose
/// `config.toml` parses as exactly one task's config.
pub fn detect_kind(dir: &Path) -> Result<RunKind> {
    if !dir.is_dir() {
        return Err(TrainError::file(dir, "no such run folder"));
    }
    if dir.join(COMPONENT_FILE).exists() {
        return Err(TrainError::file(
            dir,
            "an SVM-layer folder (component.json), not a run: list its CV folder instead",
        ));
    }
    if dir.join(SVM_HEAD_FILE).exists() || dir.join(FEATURES_FILE).exists() {
        return Ok(RunKind::SvmHead);
    }
    if dir.join(FOLDS_FILE).exists()
        || dir.join(CV_JSON).exists()
        || dir.join(FIRST_FOLD_DIR).is_dir()
    {
        return Ok(RunKind::ClsCv);
    }
    let path = dir.join(CONFIG_FILE);
    if !path.exists() {
        return Err(TrainError::file(
            dir,
            "not a run folder: no config.toml (seg/cls train), folds.json (cls cv), svm-head.json (svm head) or plan.json (sweep)",
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::file(&path, e))?;
    // Both configs refuse unknown keys and every key is written out, so at most one parses.
    let cls = toml::from_str::<ClsTrainConfig>(&text);
    let seg = toml::from_str::<SegTrainConfig>(&text);
    match (cls, seg) {
        (Ok(_), _) => Ok(RunKind::ClsTrain),
        (Err(_), Ok(_)) => Ok(RunKind::SegTrain),
        (Err(c), Err(s)) => Err(TrainError::file(
            &path,
            format!("neither a classification config ({c}) nor a segmentation config ({s})"),
        )),
    }
}

/// The state of an existing run folder of `kind`.
pub fn run_state(dir: &Path, kind: RunKind) -> RunState {
    let complete = match kind {
        RunKind::ClsCv => dir.join(CV_JSON).exists(),
        _ => run::is_complete(dir),
    };
    if complete {
        return RunState::Complete;
    }
    if let Some(pid) = lesion_core::lock::holder(dir) {
        return RunState::Running { pid };
    }
    if kind == RunKind::ClsCv {
        let folds = fold_dirs(dir);
        // A fold trains with the CV folder's lock held, but may be the one locked.
        if let Some(pid) = folds.iter().find_map(|f| lesion_core::lock::holder(f)) {
            return RunState::Running { pid };
        }
        let done = folds.iter().filter(|f| run::is_complete(f)).count();
        let total = lesion_stack::stacking::fold_count(dir).ok();
        let detail = match total {
            Some(k) => format!("{done} of {k} folds complete"),
            None => format!("{done} folds complete"),
        };
        return RunState::Interrupted { detail: Some(detail) };
    }
    RunState::Interrupted { detail: None }
}

/// A CV folder's `fold-<i>` folders, in fold order (stops at the first missing index).
pub fn fold_dirs(dir: &Path) -> Vec<PathBuf> {
    (0..).map(|i| lesion_stack::stacking::fold_dir(dir, i)).take_while(|d| d.is_dir()).collect()
}

/// The folder holding a run's `config.toml` (a CV's first fold; the folds share it).
pub fn config_dir(dir: &Path, kind: RunKind) -> PathBuf {
    match kind {
        RunKind::ClsCv => dir.join(FIRST_FOLD_DIR),
        _ => dir.to_path_buf(),
    }
}

/// The kind a sweep's `task` names (`seg-train`, `cls-cv`, …; read leniently, since it only
/// labels cells that have no run folder yet).
fn kind_of_task(task: &str) -> Option<RunKind> {
    let t = task.to_ascii_lowercase();
    if t.contains("seg") {
        Some(RunKind::SegTrain)
    } else if t.contains("cv") {
        Some(RunKind::ClsCv)
    } else if t.contains("head") {
        Some(RunKind::SvmHead)
    } else if t.contains("cls") {
        Some(RunKind::ClsTrain)
    } else {
        None
    }
}

/// A value of a config override as shown: strings bare, anything else as JSON.
fn show_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What `cell.json` says of a failed cell (its `state` and `error`, when present).
fn cell_failure(cell_dir: &Path) -> Option<String> {
    let text = std::fs::read(cell_dir.join(CELL_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let state = v.get("state").or_else(|| v.get("status"))?;
    let failed = match state {
        serde_json::Value::String(s) => s.eq_ignore_ascii_case("failed"),
        serde_json::Value::Object(o) => o
            .get("state")
            .or_else(|| o.get("kind"))
            .and_then(|s| s.as_str())
            .is_some_and(|s| s.eq_ignore_ascii_case("failed")),
        _ => false,
    };
    failed.then(|| {
        v.get("error")
            .or_else(|| state.get("error"))
            .and_then(|e| e.as_str())
            .unwrap_or("recorded as failed in cell.json")
            .to_string()
    })
}

/// Reads a sweep folder: one entry per cell of its plan, in plan order.
fn read_sweep(dir: &Path) -> Result<(Sweep, Vec<Entry>)> {
    let plan: PlanFile = run::read_json(&dir.join(PLAN_FILE))?;
    let name = plan.name.clone().unwrap_or_else(|| folder_name(dir));
    let planned_kind = plan.task.as_deref().and_then(kind_of_task);
    let mut entries = Vec::with_capacity(plan.cells.len());
    for cell in &plan.cells {
        let cell_dir = dir.join(CELLS_DIR).join(&cell.id);
        let run_dir = cell_dir.join(CELL_RUN_DIR);
        let failure = cell_failure(&cell_dir);
        let (kind, state) = if run_dir.is_dir() && has_any_file(&run_dir) {
            let kind = detect_kind(&run_dir)?;
            let state = match (run_state(&run_dir, kind), failure) {
                (RunState::Interrupted { .. }, Some(reason)) => RunState::Failed { reason },
                (s, _) => s,
            };
            (Some(kind), state)
        } else {
            let state = match failure {
                Some(reason) => RunState::Failed { reason },
                None => RunState::NotStarted,
            };
            (planned_kind, state)
        };
        entries.push(Entry {
            name: format!("{name}/{}", cell.id),
            sweep: Some(name.clone()),
            dir: run_dir,
            kind,
            state,
            overrides: Some(cell.shown_overrides()),
        });
    }
    let external = plan.external.map(|p| if p.is_relative() { dir.join(p) } else { p });
    Ok((Sweep { name, dir: dir.to_path_buf(), external }, entries))
}

fn has_any_file(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name() != lesion_core::lock::LOCK_FILE)))
        .unwrap_or(false)
}

fn folder_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .as_deref()
        .unwrap_or(dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// Expands the inputs (run folders and sweep folders) into entries. The same run folder
/// given twice (or also as a sweep cell) is listed once; names are made unique.
pub fn collect(paths: &[PathBuf]) -> Result<Inputs> {
    let mut out = Inputs::default();
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut add = |out: &mut Inputs, mut e: Entry| {
        let key = e.dir.canonicalize().unwrap_or_else(|_| e.dir.clone());
        if !seen.insert(key) {
            return;
        }
        if names.contains(&e.name) {
            e.name = e.dir.display().to_string();
        }
        names.insert(e.name.clone());
        out.entries.push(e);
    };
    for p in paths {
        if !p.exists() {
            return Err(TrainError::file(p, "no such run or sweep folder"));
        }
        if p.join(PLAN_FILE).exists() {
            let (sweep, entries) = read_sweep(p)?;
            out.sweeps.push(sweep);
            for e in entries {
                add(&mut out, e);
            }
        } else {
            let kind = detect_kind(p)?;
            let state = run_state(p, kind);
            let e = Entry {
                name: folder_name(p),
                sweep: None,
                dir: p.clone(),
                kind: Some(kind),
                state,
                overrides: None,
            };
            add(&mut out, e);
        }
    }
    Ok(out)
}

/// The run folders a stack folder (`lesion stack train`) was built from, canonicalised: its
/// components, an SVM layer counted as the CV folder whose fold nets give its features.
pub fn stack_members(stack_dir: &Path) -> Result<Vec<PathBuf>> {
    let file: StackFile = run::read_json(&stack_dir.join(STACK_JSON))?;
    Ok(file
        .components
        .iter()
        .map(|c| {
            let dir = match &c.kind {
                ComponentKind::SvmLayer(info) => info.cv.clone(),
                _ => c.dir.clone(),
            };
            let dir = if dir.is_relative() { stack_dir.join(dir) } else { dir };
            dir.canonicalize().unwrap_or(dir)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_of_plan_names() {
        assert_eq!(kind_of_task("seg-train"), Some(RunKind::SegTrain));
        assert_eq!(kind_of_task("cls-cv"), Some(RunKind::ClsCv));
        assert_eq!(kind_of_task("cls_train"), Some(RunKind::ClsTrain));
        assert_eq!(kind_of_task("other"), None);
    }

    #[test]
    fn a_sweep_lists_every_cell_and_a_failed_one_says_why() {
        let tmp = tempfile::tempdir().unwrap();
        let plan = serde_json::json!({
            "name": "s", "task": "cls-cv", "external": null, "extra": 1,
            "cells": [
                {"index": 0, "id": "a1", "overrides": {"train.epochs": 2, "model.arch": "lite0"}},
                {"index": 1, "id": "b2", "overrides": {}}
            ]
        });
        std::fs::write(tmp.path().join(PLAN_FILE), plan.to_string()).unwrap();
        let b2 = tmp.path().join(CELLS_DIR).join("b2");
        std::fs::create_dir_all(&b2).unwrap();
        std::fs::write(b2.join(CELL_FILE), r#"{"state":"failed","error":"out of memory"}"#)
            .unwrap();
        let inputs = collect(&[tmp.path().to_path_buf()]).unwrap();
        assert_eq!(inputs.entries.len(), 2);
        let a = &inputs.entries[0];
        assert_eq!(
            (a.name.as_str(), a.kind, &a.state),
            ("s/a1", Some(RunKind::ClsCv), &RunState::NotStarted)
        );
        let o = a.overrides.as_ref().unwrap();
        assert_eq!((o["train.epochs"].as_str(), o["model.arch"].as_str()), ("2", "lite0"));
        assert_eq!(inputs.entries[1].state, RunState::Failed { reason: "out of memory".into() });
        assert!(collect(&[tmp.path().join("nope")]).unwrap_err().to_string().contains("nope"));
    }
}
