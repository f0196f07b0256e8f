//! `lesion sweep status`: every cell's state from its folder, its progress, and (when Slurm
//! jobs are recorded and `squeue`/`sacct` answer) its latest array task's Slurm state.
use std::collections::BTreeMap;
use std::path::Path;

use lesion_core::run::{COMPLETE_FILE, METRICS_JSONL};

use crate::error::Result;
use crate::folder::{CellState, SweepDir};
use crate::plan::{CellRecord, PlanRecord, Task};
use crate::slurm::{self, TaskState};

/// One cell's line.
#[derive(Debug, Clone)]
pub struct StatusRow {
    pub cell: CellRecord,
    pub state: CellState,
    /// Epochs logged of the configured epochs (train), or folds finished of the folds (cv).
    pub progress: Option<(usize, usize)>,
    pub slurm: Option<TaskState>,
}

/// The whole sweep.
#[derive(Debug, Clone)]
pub struct Status {
    pub plan: PlanRecord,
    pub rows: Vec<StatusRow>,
    /// Cells with a folder that the current plan no longer lists (their runs are kept).
    pub left_plan: Vec<StatusRow>,
    /// Whether Slurm states were available (jobs recorded and squeue or sacct answered).
    pub slurm_queried: bool,
}

impl Status {
    /// How many of the plan's cells are in each state (by [`CellState::word`]).
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for r in &self.rows {
            *counts.entry(r.state.word()).or_insert(0) += 1;
        }
        counts
    }
}

pub fn status(sweep: &SweepDir) -> Result<Status> {
    let plan = sweep.read_plan()?;
    let jobs = slurm::read_jobs(sweep)?;
    let states = slurm::task_states(&jobs);
    let row = |cell: CellRecord| {
        let state = sweep.state(cell.task, &cell.id);
        let progress = progress(sweep, cell.task, &cell);
        let slurm = states.as_ref().and_then(|s| s.get(&cell.id).cloned());
        StatusRow { cell, state, progress, slurm }
    };
    let rows: Vec<StatusRow> = plan.cells.iter().cloned().map(row).collect();
    let mut left_plan = Vec::new();
    for id in sweep.cells_on_disk()? {
        if plan.cells.iter().any(|c| c.id == id) {
            continue;
        }
        // A folder whose cell.json is unreadable is not a cell this program wrote.
        if let Ok(cell) = sweep.read_cell(&id) {
            left_plan.push(row(cell));
        }
    }
    Ok(Status { slurm_queried: states.is_some(), plan, rows, left_plan })
}

fn progress(sweep: &SweepDir, task: Task, cell: &CellRecord) -> Option<(usize, usize)> {
    let run = sweep.run_dir(&cell.id);
    match task {
        Task::SegTrain | Task::ClsTrain => {
            let text = std::fs::read_to_string(sweep.cell_config(&cell.id)).ok()?;
            let cfg: toml::Table = toml::from_str(&text).ok()?;
            let epochs = cfg.get("train")?.get("epochs")?.as_integer()?;
            Some((lines(&run.join(METRICS_JSONL)), usize::try_from(epochs).ok()?))
        }
        Task::ClsCv => {
            let folds = cell.folds?;
            let done = (0..folds).filter(|f| fold_done(&run, *f)).count();
            Some((done, folds))
        }
    }
}

fn fold_done(cv: &Path, fold: usize) -> bool {
    cv.join(format!("fold-{fold}")).join(COMPLETE_FILE).exists()
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}
