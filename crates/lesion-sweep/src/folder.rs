//! The sweep folder: `plan.json` (written first), `cells/<id>/{cell.json, config.toml, run/,
//! log.txt, attempts.json}`, `slurm/`, `collect.{csv,json}`; and each cell's state, read from
//! its folder and locks alone.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use lesion_core::lock;
use lesion_core::run::{atomic_write, read_json, write_json};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SweepError};
use crate::plan::{CellId, CellRecord, Plan, PlanRecord, Task};

pub const PLAN_JSON: &str = "plan.json";
pub const CELLS_DIR: &str = "cells";
pub const CELL_JSON: &str = "cell.json";
/// The cell's effective config (what its run starts from).
pub const CELL_CONFIG: &str = "config.toml";
/// The cell's run folder (for cls-cv, the cross-validation folder).
pub const RUN_DIR: &str = "run";
/// The cell's stdout and stderr, every attempt appended.
pub const LOG_FILE: &str = "log.txt";
pub const ATTEMPTS_JSON: &str = "attempts.json";

/// A sweep folder.
#[derive(Debug, Clone)]
pub struct SweepDir {
    root: PathBuf,
}

impl SweepDir {
    pub fn new(root: impl Into<PathBuf>) -> SweepDir {
        SweepDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn plan_json(&self) -> PathBuf {
        self.root.join(PLAN_JSON)
    }

    pub fn cell_dir(&self, id: &CellId) -> PathBuf {
        self.root.join(CELLS_DIR).join(id.as_str())
    }

    pub fn run_dir(&self, id: &CellId) -> PathBuf {
        self.cell_dir(id).join(RUN_DIR)
    }

    pub fn log(&self, id: &CellId) -> PathBuf {
        self.cell_dir(id).join(LOG_FILE)
    }

    pub fn cell_config(&self, id: &CellId) -> PathBuf {
        self.cell_dir(id).join(CELL_CONFIG)
    }

    pub fn attempts_json(&self, id: &CellId) -> PathBuf {
        self.cell_dir(id).join(ATTEMPTS_JSON)
    }

    /// Writes `plan.json` (first, atomically), then each cell's `cell.json` and `config.toml`.
    /// A file whose content is already the same is not rewritten; cells that left the plan
    /// keep their folders.
    pub fn write_plan(&self, plan: &Plan) -> Result<()> {
        std::fs::create_dir_all(&self.root).map_err(|e| SweepError::file(&self.root, e))?;
        write_json_if_changed(&self.plan_json(), &plan.record)?;
        for (cell, config) in plan.record.cells.iter().zip(&plan.configs) {
            let dir = self.cell_dir(&cell.id);
            std::fs::create_dir_all(&dir).map_err(|e| SweepError::file(&dir, e))?;
            write_json_if_changed(&dir.join(CELL_JSON), cell)?;
            write_if_changed(&self.cell_config(&cell.id), config.as_bytes())?;
        }
        Ok(())
    }

    pub fn read_plan(&self) -> Result<PlanRecord> {
        let path = self.plan_json();
        if !path.exists() {
            return Err(SweepError::file(&self.root, "no plan.json here: not a sweep folder (run `lesion sweep PLAN.toml --out DIR` first)"));
        }
        Ok(read_json(&path)?)
    }

    /// A cell's record as its folder keeps it (also for cells that left the plan).
    pub fn read_cell(&self, id: &CellId) -> Result<CellRecord> {
        Ok(read_json(&self.cell_dir(id).join(CELL_JSON))?)
    }

    /// The ids of every cell folder, sorted.
    pub fn cells_on_disk(&self) -> Result<BTreeSet<CellId>> {
        let dir = self.root.join(CELLS_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(BTreeSet::new()) };
        let mut ids = BTreeSet::new();
        for entry in entries {
            let entry = entry.map_err(|e| SweepError::file(&dir, e))?;
            if let Some(id) = entry.file_name().to_str().and_then(CellId::parse) {
                ids.insert(id);
            }
        }
        Ok(ids)
    }

    pub fn read_attempts(&self, id: &CellId) -> Result<Vec<Attempt>> {
        let path = self.attempts_json(id);
        if !path.exists() {
            return Ok(Vec::new());
        }
        Ok(read_json(&path)?)
    }

    /// Writes the cell's attempt log (call while holding the cell's lock: one writer).
    pub fn write_attempts(&self, id: &CellId, attempts: &[Attempt]) -> Result<()> {
        Ok(write_json(&self.attempts_json(id), &attempts)?)
    }

    /// The state of a cell, from its folder alone: complete (its run is), running (its cell
    /// or run folder is locked by a live process), failed (its last attempt ended badly),
    /// interrupted (a run folder without the end), or pending.
    pub fn state(&self, task: Task, id: &CellId) -> CellState {
        let run = self.run_dir(id);
        if task.is_complete(&run) {
            return CellState::Complete;
        }
        if let Some(pid) = lock::holder(&self.cell_dir(id)).or_else(|| lock::holder(&run)) {
            return CellState::Running { pid };
        }
        let last = self.read_attempts(id).ok().and_then(|a| a.last().cloned());
        match last.and_then(|a| a.outcome) {
            Some(outcome) if outcome != AttemptOutcome::Success => CellState::Failed { outcome },
            _ if run.exists() => CellState::Interrupted,
            _ => CellState::Pending,
        }
    }
}

/// Where a cell stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellState {
    Pending,
    /// Its cell or run folder is locked by a live process (pid when recorded).
    Running {
        pid: Option<u32>,
    },
    /// A run folder that did not finish, with no failed attempt recorded (e.g. its driver was
    /// killed): the next run resumes it.
    Interrupted,
    /// Its last attempt ended without finishing the run.
    Failed {
        outcome: AttemptOutcome,
    },
    Complete,
}

impl CellState {
    /// One word: pending, running, interrupted, failed, complete.
    pub fn word(&self) -> &'static str {
        match self {
            CellState::Pending => "pending",
            CellState::Running { .. } => "running",
            CellState::Interrupted => "interrupted",
            CellState::Failed { .. } => "failed",
            CellState::Complete => "complete",
        }
    }
}

impl std::fmt::Display for CellState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CellState::Running { pid: Some(pid) } => write!(f, "running (pid {pid})"),
            CellState::Failed { outcome } => write!(f, "failed ({outcome})"),
            other => f.write_str(other.word()),
        }
    }
}

/// One attempt at a cell, as `attempts.json` keeps it: recorded when it starts and again when
/// it ends (an attempt whose driver was killed keeps `outcome: null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub started_unix: u64,
    pub seconds: Option<f64>,
    pub outcome: Option<AttemptOutcome>,
    /// The command the cell ran.
    pub command: Vec<String>,
    pub threads: usize,
    pub host: Option<String>,
    /// `SLURM_JOB_ID` (and array task) when run by Slurm.
    pub slurm_job: Option<String>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum AttemptOutcome {
    /// Exited 0 and the run is complete.
    Success,
    /// Exited with this status.
    Exit(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Exited 0 but the run folder is not complete.
    NotComplete,
    /// The process could not start.
    SpawnFailed(String),
}

impl std::fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptOutcome::Success => f.write_str("success"),
            AttemptOutcome::Exit(code) => write!(f, "exit status {code}"),
            AttemptOutcome::Signal(sig) => write!(f, "killed by signal {sig}"),
            AttemptOutcome::NotComplete => f.write_str("exited 0 without completing its run"),
            AttemptOutcome::SpawnFailed(why) => write!(f, "could not start: {why}"),
        }
    }
}

/// Writes `bytes` to `path` atomically unless the file already holds exactly them (so a
/// rerun leaves unchanged files untouched, mtimes included).
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    Ok(atomic_write(path, bytes)?)
}

fn write_json_if_changed<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| SweepError::file(path, e))?;
    write_if_changed(path, &text)
}
