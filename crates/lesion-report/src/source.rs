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
use lesion_sweep::folder::{CellState, SweepDir, PLAN_JSON};
use lesion_sweep::plan::{CellRecord, Task as SweepTask};
use serde::{Deserialize, Serialize};

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
        || lesion_stack::stacking::fold_dir(dir, 0).is_dir()
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
        RunKind::ClsCv => lesion_cls::cv::is_complete(dir),
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
        // The first fold holds the config every fold shares.
        RunKind::ClsCv => lesion_stack::stacking::fold_dir(dir, 0),
        _ => dir.to_path_buf(),
    }
}

/// The kind of run folder a sweep task makes.
fn kind_of_task(task: SweepTask) -> RunKind {
    match task {
        SweepTask::SegTrain => RunKind::SegTrain,
        SweepTask::ClsTrain => RunKind::ClsTrain,
        SweepTask::ClsCv => RunKind::ClsCv,
    }
}

/// What distinguishes a cell: its overrides, then its seeds (two cells that differ only by
/// seed must not read the same).
fn shown_overrides(cell: &CellRecord) -> BTreeMap<String, String> {
    let mut shown: BTreeMap<String, String> =
        cell.overrides.iter().map(|(k, v)| (k.clone(), show_value(v))).collect();
    if let Some(seed) = cell.seed {
        shown.insert(SEED_KEY.to_string(), seed.to_string());
    }
    if let Some(seed) = cell.fold_seed {
        shown.insert(FOLD_SEED_KEY.to_string(), seed.to_string());
    }
    shown
}

/// How a cell's seed axes are shown among its overrides.
const SEED_KEY: &str = "seed";
const FOLD_SEED_KEY: &str = "fold_seed";

/// A value of a config override as shown: strings bare, anything else as JSON.
fn show_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A sweep folder's cells, each in the state the sweep itself gives it
/// (`lesion_sweep::folder::SweepDir::state`: complete, running, failed attempt, interrupted,
/// pending); an interrupted CV also says how many folds are done.
fn read_sweep(dir: &Path) -> Result<(Sweep, Vec<Entry>)> {
    let sweep = SweepDir::new(dir);
    let plan = sweep.read_plan().map_err(|e| TrainError::Config(e.to_string()))?;
    let kind = kind_of_task(plan.task);
    let entries = plan
        .cells
        .iter()
        .map(|cell| {
            let run_dir = sweep.run_dir(&cell.id);
            let state = match sweep.state(plan.task, &cell.id) {
                CellState::Complete => RunState::Complete,
                CellState::Running { pid } => RunState::Running { pid },
                CellState::Failed { outcome } => RunState::Failed {
                    reason: format!("{outcome}; log: {}", sweep.log(&cell.id).display()),
                },
                CellState::Interrupted => run_state(&run_dir, kind),
                CellState::Pending => RunState::NotStarted,
            };
            Entry {
                name: format!("{}/{}", plan.name, cell.id),
                sweep: Some(plan.name.clone()),
                dir: run_dir,
                kind: Some(kind),
                state,
                overrides: Some(shown_overrides(cell)),
            }
        })
        .collect();
    Ok((Sweep { name: plan.name, dir: dir.to_path_buf(), external: plan.external }, entries))
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
        if p.join(PLAN_JSON).exists() {
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
        // A CV and its own SVM layer are one member.
        .collect::<BTreeSet<PathBuf>>()
        .into_iter()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lesion_sweep::folder::{Attempt, AttemptOutcome};

    /// A real plan (expanded by `lesion-sweep`) with three cells: one never started, one whose
    /// attempt failed (recorded in `attempts.json`, as the sweep records it), one interrupted.
    #[test]
    fn a_sweep_lists_every_cell_in_the_state_the_sweep_gives_it() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("m.csv"), "id,image_path\na,a.png\n").unwrap();
        let plan_file = tmp.path().join("plan.toml");
        std::fs::write(
            &plan_file,
            "[sweep]\nname = \"s\"\ntask = \"seg-train\"\nmanifests = [\"m.csv\"]\nseeds = [1, 2, 3]\n\
             [set]\n\"train.epochs\" = 2\n",
        )
        .unwrap();
        let plan = lesion_sweep::plan::load(&plan_file, &[]).unwrap();
        let dir = tmp.path().join("sweep");
        let sweep = SweepDir::new(&dir);
        sweep.write_plan(&plan).unwrap();
        let ids: Vec<_> = plan.record.cells.iter().map(|c| c.id.clone()).collect();
        let failed = Attempt {
            started_unix: 0,
            seconds: Some(1.0),
            outcome: Some(AttemptOutcome::Exit(3)),
            command: vec!["lesion".into()],
            threads: 1,
            host: None,
            slurm_job: None,
        };
        sweep.write_attempts(&ids[1], &[failed]).unwrap();
        std::fs::create_dir_all(sweep.run_dir(&ids[2])).unwrap();
        std::fs::write(sweep.run_dir(&ids[2]).join(CONFIG_FILE), "").unwrap();

        let inputs = collect(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(inputs.entries.len(), 3);
        let e = &inputs.entries;
        assert_eq!(e[0].name, format!("s/{}", ids[0].as_str()));
        assert_eq!((e[0].kind, &e[0].state), (Some(RunKind::SegTrain), &RunState::NotStarted));
        let o = e[0].overrides.as_ref().unwrap();
        assert_eq!((o["train.epochs"].as_str(), o["seed"].as_str()), ("2", "1"));
        match &e[1].state {
            RunState::Failed { reason } => {
                assert!(reason.contains("exit status 3") && reason.contains("log.txt"), "{reason}")
            }
            other => panic!("cell 1: {other:?}"),
        }
        assert!(matches!(e[2].state, RunState::Interrupted { .. }), "{:?}", e[2].state);
        assert!(collect(&[tmp.path().join("nope")]).unwrap_err().to_string().contains("nope"));
    }
}
