//! The Slurm executor: one `sbatch` script per submission, a job array over the cells to run
//! (`slurm/array-<n>.sbatch`), submitted with `sbatch --parsable`, the job recorded in
//! `slurm/jobs.json`; and the state of recorded array tasks from `squeue` / `sacct`.
//!
//! Each array task runs `lesion sweep cell SWEEP <id>` for the cell its index names (the
//! script maps array index → cell id, so a later edit of the plan, which renumbers cells,
//! cannot send a pending task to another cell). A requeued or pre-empted task runs the same
//! command again, which resumes its own cell; `--open-mode=append` keeps every try's output.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use lesion_core::run::{read_json, write_json};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SweepError};
use crate::folder::{write_if_changed, SweepDir};
use crate::plan::{CellId, CellRecord, PlanRecord};

pub const SLURM_DIR: &str = "slurm";
pub const LOGS_DIR: &str = "logs";
pub const JOBS_JSON: &str = "jobs.json";
/// The script's name: `array-<n>.sbatch`, n counting this sweep's scripts from 1.
const SCRIPT_PREFIX: &str = "array-";
const SCRIPT_EXT: &str = "sbatch";

/// What the sbatch script asks of Slurm and what each task runs.
#[derive(Debug, Clone)]
pub struct SbatchOptions {
    /// `%K` of `--array`: at most K tasks at once (None: no limit).
    pub max_parallel: Option<usize>,
    /// `--cpus-per-task`, also each cell's `--threads`.
    pub cpus_per_task: usize,
    pub partition: Option<String>,
    /// `--time` (e.g. `02:00:00`).
    pub time: Option<String>,
    /// `--mem` (e.g. `8G`).
    pub mem: Option<String>,
    /// Further `#SBATCH` lines, each e.g. `--account=lab`.
    pub extra: Vec<String>,
    /// The `lesion` binary the tasks run (absolute).
    pub exe: PathBuf,
    /// `--cache` of every cell (absolute; None: the tasks' default, under their working
    /// folder, which is the submission folder).
    pub cache: Option<PathBuf>,
    pub device: String,
}

/// One submission, as `jobs.json` keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub script: PathBuf,
    pub submitted_unix: u64,
    /// Array index → cell.
    pub tasks: BTreeMap<usize, CellId>,
}

pub fn slurm_dir(sweep: &SweepDir) -> PathBuf {
    sweep.root().join(SLURM_DIR)
}

/// The text of the sbatch script running `cells` (their plan indices are the array indices).
pub fn script(
    sweep_abs: &Path,
    plan: &PlanRecord,
    cells: &[&CellRecord],
    o: &SbatchOptions,
) -> Result<String> {
    if cells.is_empty() {
        return Err(SweepError::file(sweep_abs, "no cells to submit"));
    }
    let q = shell_quote;
    let indices: Vec<String> = cells.iter().map(|c| c.index.to_string()).collect();
    let mut array = indices.join(",");
    if let Some(k) = o.max_parallel {
        array.push_str(&format!("%{k}"));
    }
    let logs = sweep_abs.join(SLURM_DIR).join(LOGS_DIR);
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(&format!(
        "# lesion sweep {}: {} cells of {} (written by lesion; resubmit with `lesion sweep`).\n",
        plan.name,
        cells.len(),
        plan.task
    ));
    let mut directive = |d: String| s.push_str(&format!("#SBATCH {d}\n"));
    directive(format!("--job-name=lesion-{}", plan.name));
    directive(format!("--array={array}"));
    directive("--ntasks=1".into());
    directive(format!("--cpus-per-task={}", o.cpus_per_task));
    directive(format!("--output={}", logs.join("%A_%a.out").display()));
    directive("--open-mode=append".into());
    directive("--requeue".into());
    if let Some(p) = &o.partition {
        directive(format!("--partition={p}"));
    }
    if let Some(t) = &o.time {
        directive(format!("--time={t}"));
    }
    if let Some(m) = &o.mem {
        directive(format!("--mem={m}"));
    }
    for extra in &o.extra {
        if extra.contains('\n') {
            return Err(SweepError::file(sweep_abs, format!("--sbatch-arg {extra:?} spans lines")));
        }
        directive(extra.clone());
    }
    s.push_str("set -euo pipefail\nexport NO_COLOR=1\n");
    s.push_str("# Array index -> cell id (the index is the cell's position in plan.json when submitted).\n");
    s.push_str("case \"${SLURM_ARRAY_TASK_ID:?not run as a Slurm array task}\" in\n");
    for c in cells {
        s.push_str(&format!("  {}) cell={} ;;\n", c.index, c.id));
    }
    s.push_str("  *) echo \"no cell for array task $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;\nesac\n");
    // Each try's first line in the task log: when, where, which restart.
    s.push_str(concat!(
        "echo \"== $(date -u +%FT%TZ) $(hostname -s) job ${SLURM_JOB_ID:-?} ",
        "restart ${SLURM_RESTART_COUNT:-0}: cell $cell\"\n"
    ));
    let mut run = format!(
        "exec {} --quiet --threads {} sweep cell {} \"$cell\" --device {}",
        q(&o.exe.display().to_string()),
        o.cpus_per_task,
        q(&sweep_abs.display().to_string()),
        q(&o.device)
    );
    if let Some(cache) = &o.cache {
        run.push_str(&format!(" --cache {}", q(&cache.display().to_string())));
    }
    s.push_str(&run);
    s.push('\n');
    Ok(s)
}

/// Writes the next `slurm/array-<n>.sbatch` (and creates `slurm/logs/`). Returns its path.
pub fn write_script(sweep: &SweepDir, text: &str) -> Result<PathBuf> {
    let dir = slurm_dir(sweep);
    let logs = dir.join(LOGS_DIR);
    std::fs::create_dir_all(&logs).map_err(|e| SweepError::file(&logs, e))?;
    let taken = |n: usize| dir.join(format!("{SCRIPT_PREFIX}{n}.{SCRIPT_EXT}")).exists();
    let n = (1..).find(|n| !taken(*n)).unwrap_or(1);
    let path = dir.join(format!("{SCRIPT_PREFIX}{n}.{SCRIPT_EXT}"));
    write_if_changed(&path, text.as_bytes())?;
    Ok(path)
}

/// Submits `script` with `sbatch --parsable`; returns the job id.
pub fn submit(script: &Path) -> Result<String> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(script)
        .output()
        .map_err(|e| SweepError::file(script, format!("cannot run sbatch: {e}")))?;
    if !out.status.success() {
        return Err(SweepError::file(
            script,
            format!(
                "sbatch failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    // `--parsable` prints `jobid` or `jobid;cluster`.
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SweepError::file(
            script,
            format!("sbatch printed no job id: {:?}", text.trim()),
        ));
    }
    Ok(id)
}

pub fn read_jobs(sweep: &SweepDir) -> Result<Vec<JobRecord>> {
    let path = slurm_dir(sweep).join(JOBS_JSON);
    if !path.exists() {
        return Ok(Vec::new());
    }
    Ok(read_json(&path)?)
}

/// Appends `job` to `jobs.json` (the whole list rewritten atomically).
pub fn record_job(sweep: &SweepDir, job: JobRecord) -> Result<()> {
    let mut jobs = read_jobs(sweep)?;
    jobs.push(job);
    Ok(write_json(&slurm_dir(sweep).join(JOBS_JSON), &jobs)?)
}

/// The Slurm state of an array task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    /// `JOB_INDEX`.
    pub task: String,
    /// Slurm's word: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, PREEMPTED, …
    pub state: String,
}

impl TaskState {
    /// Still queued or running (a new submission leaves such a cell out).
    pub fn is_live(&self) -> bool {
        matches!(
            self.state.as_str(),
            "PENDING"
                | "RUNNING"
                | "CONFIGURING"
                | "COMPLETING"
                | "REQUEUED"
                | "RESIZING"
                | "SUSPENDED"
        )
    }
}

/// Each recorded cell's latest array task and its state (`squeue` for queued and running
/// tasks, `sacct` for finished ones). `None` when no job is recorded or neither tool runs.
pub fn task_states(jobs: &[JobRecord]) -> Option<BTreeMap<CellId, TaskState>> {
    if jobs.is_empty() {
        return None;
    }
    let ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    let list = ids.join(",");
    // `-r`: one line per array element, pending ones included.
    let queued = query("squeue", &["-h", "-r", "-j", &list, "-o", "%i|%T"]);
    let finished = query("sacct", &["-n", "-P", "-X", "-j", &list, "-o", "JobID,State"]);
    if queued.is_none() && finished.is_none() {
        return None;
    }
    let mut by_task: BTreeMap<String, String> = BTreeMap::new();
    for (task, state) in finished.into_iter().flatten() {
        by_task.insert(task, state);
    }
    // squeue knows the live state better than accounting, which may lag.
    for (task, state) in queued.into_iter().flatten() {
        by_task.insert(task, state);
    }
    let mut states = BTreeMap::new();
    for job in jobs {
        for (index, cell) in &job.tasks {
            let task = format!("{}_{index}", job.job_id);
            if let Some(state) = by_task.get(&task) {
                states.insert(cell.clone(), TaskState { task, state: state.clone() });
            }
        }
    }
    Some(states)
}

/// `tool args…`, parsed as `id|STATE` lines (a state's detail after a space, such as
/// `CANCELLED by 0`, dropped). `None` when the tool is absent or fails.
fn query(tool: &str, args: &[&str]) -> Option<Vec<(String, String)>> {
    let out = Command::new(tool).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (id, state) = l.trim().split_once('|')?;
                let state = state.split_whitespace().next()?;
                Some((id.to_string(), state.to_string()))
            })
            .collect(),
    )
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@%,".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_names_every_cell_and_the_options() {
        let cell = |index: usize, id: &str| CellRecord {
            index,
            id: CellId::parse(id).unwrap(),
            task: crate::plan::Task::SegTrain,
            overrides: Default::default(),
            manifest: "/m.csv".into(),
            manifest_blake3: String::new(),
            seed: None,
            fold_seed: None,
            folds: None,
        };
        let (a, b) = (cell(0, "aaaaaaaaaaaa"), cell(3, "bbbbbbbbbbbb"));
        let plan = PlanRecord {
            name: "s".into(),
            task: crate::plan::Task::SegTrain,
            plan: "/p.toml".into(),
            base: None,
            base_config: serde_json::Value::Null,
            external: None,
            folds: None,
            set: Default::default(),
            axes: vec![],
            cells: vec![a.clone(), b.clone()],
        };
        let o = SbatchOptions {
            max_parallel: Some(2),
            cpus_per_task: 3,
            partition: Some("cpu".into()),
            time: Some("01:00:00".into()),
            mem: None,
            extra: vec!["--account=lab".into()],
            exe: "/opt/lesion dir/lesion".into(),
            cache: None,
            device: "cpu".into(),
        };
        let text = script(Path::new("/sw/s"), &plan, &[&a, &b], &o).unwrap();
        for line in [
            "#SBATCH --array=0,3%2",
            "#SBATCH --cpus-per-task=3",
            "#SBATCH --output=/sw/s/slurm/logs/%A_%a.out",
            "#SBATCH --open-mode=append",
            "#SBATCH --requeue",
            "#SBATCH --partition=cpu",
            "#SBATCH --time=01:00:00",
            "#SBATCH --account=lab",
            "  3) cell=bbbbbbbbbbbb ;;",
            "exec '/opt/lesion dir/lesion' --quiet --threads 3 sweep cell /sw/s \"$cell\" --device cpu",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(!text.contains("--mem"));
        assert!(script(Path::new("/sw/s"), &plan, &[], &o).is_err());
    }
}
