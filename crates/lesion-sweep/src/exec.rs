//! Running cells: [`run_cell`] runs one (what `lesion sweep cell` and every executor call),
//! [`run_local`] runs many with local workers sharing the cores.
//!
//! A cell runs as a child process of the `lesion` binary (`seg train`, `cls train` or `cls cv`)
//! whose output is appended to the cell's `log.txt`. One attempt at a time per cell: the
//! attempt holds the cell folder's [`RunLock`] (and the child its run folder's), so a cell
//! locked by a live process is reported busy, never started twice. On Linux the child gets
//! `PR_SET_PDEATHSIG = SIGKILL`: it dies with the thread that started it, so a killed driver
//! leaves no orphan training (and holding a run lock).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lesion_core::lock::{self, RunLock};
use lesion_core::run::{CONFIG_FILE, RUN_FILE, SPLIT_FILE};
use tracing::warn;

use crate::error::{Result, SweepError};
use crate::folder::{Attempt, AttemptOutcome, SweepDir};
use crate::plan::{hash_file, CellRecord, Task};

/// Environment variable that sizes rayon's pool in the child (image preprocessing), so a
/// cell's preprocessing keeps to its share of the cores as libtorch does.
const RAYON_THREADS_ENV: &str = "RAYON_NUM_THREADS";
/// Turns off the log's ANSI colours (<https://no-color.org>).
const NO_COLOR_ENV: &str = "NO_COLOR";

/// How cells are run: the `lesion` binary and the runtime options every cell gets.
#[derive(Debug, Clone)]
pub struct CellRunner {
    /// The `lesion` binary (the CLI passes its own `current_exe`).
    pub exe: PathBuf,
    /// libtorch (and rayon) threads of each cell; 0 = the child's defaults.
    pub threads: usize,
    /// `--cache` of every cell (None: the child's default).
    pub cache: Option<PathBuf>,
    /// `--device` of every cell.
    pub device: String,
}

/// How one call of [`run_cell`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CellOutcome {
    /// Nothing to do: the run was complete.
    AlreadyComplete,
    /// This call ran the cell to completion.
    Completed { seconds: f64 },
    /// This call's attempt ended without completing the run; its output is in `log`.
    Failed { outcome: AttemptOutcome, log: PathBuf },
    /// Another live process holds the cell (pid when recorded): not started twice.
    Busy { pid: Option<u32> },
    /// Refused before any attempt (e.g. the manifest changed since the plan was expanded).
    Refused { reason: String },
}

impl CellOutcome {
    /// The run is complete after this call.
    pub fn is_complete(&self) -> bool {
        matches!(self, CellOutcome::AlreadyComplete | CellOutcome::Completed { .. })
    }
}

impl std::fmt::Display for CellOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CellOutcome::AlreadyComplete => f.write_str("already complete"),
            CellOutcome::Completed { seconds } => write!(f, "complete in {seconds:.1}s"),
            CellOutcome::Failed { outcome, log } => {
                write!(f, "failed ({outcome}); log: {}", log.display())
            }
            CellOutcome::Busy { pid: Some(pid) } => write!(f, "running in process {pid}"),
            CellOutcome::Busy { pid: None } => f.write_str("running in another process"),
            CellOutcome::Refused { reason } => write!(f, "refused: {reason}"),
        }
    }
}

/// Runs cell `cell` once: nothing when complete, busy when another process holds it;
/// otherwise starts its run (or resumes an interrupted one) in a child process and waits.
/// `Err` only for the sweep folder's own files.
pub fn run_cell(sweep: &SweepDir, cell: &CellRecord, runner: &CellRunner) -> Result<CellOutcome> {
    let task = cell.task;
    let dir = sweep.cell_dir(&cell.id);
    let config = sweep.cell_config(&cell.id);
    if !config.exists() {
        return Err(SweepError::file(&config, "missing: the cell folder was not written (run `lesion sweep PLAN.toml` for this sweep first)"));
    }
    let run = sweep.run_dir(&cell.id);
    if task.is_complete(&run) {
        return Ok(CellOutcome::AlreadyComplete);
    }
    let _lock = match RunLock::acquire(&dir) {
        Ok(l) => l,
        Err(e) => match lock::holder(&dir) {
            Some(pid) => return Ok(CellOutcome::Busy { pid }),
            None => return Err(e.into()),
        },
    };
    // Checked again under the lock: another process may have finished it meanwhile.
    if task.is_complete(&run) {
        return Ok(CellOutcome::AlreadyComplete);
    }
    if let Some(pid) = lock::holder(&run) {
        return Ok(CellOutcome::Busy { pid });
    }
    // The id was computed from the manifest's content: a changed manifest is another cell.
    match hash_file(&cell.manifest) {
        Ok(h) if h == cell.manifest_blake3 => {}
        Ok(_) => {
            return Ok(CellOutcome::Refused {
                reason: format!(
                    "{}: changed since the plan was expanded (the cell's id hashes its content); expand the plan again",
                    cell.manifest.display()
                ),
            })
        }
        Err(e) => return Ok(CellOutcome::Refused { reason: e.to_string() }),
    }
    let args = child_args(task, cell, &config, &run, runner)?;
    let log_path = sweep.log(&cell.id);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| SweepError::file(&log_path, e))?;
    let mut attempts = sweep.read_attempts(&cell.id)?;
    let started_unix =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut command = vec![runner.exe.display().to_string()];
    command.extend(args.iter().cloned());
    {
        use std::io::Write;
        let header = format!(
            "\n== attempt {} at unix {started_unix}: {}\n",
            attempts.len() + 1,
            command.join(" ")
        );
        log.write_all(header.as_bytes()).map_err(|e| SweepError::file(&log_path, e))?;
    }
    attempts.push(Attempt {
        started_unix,
        seconds: None,
        outcome: None,
        command,
        threads: runner.threads,
        host: hostname(),
        slurm_job: slurm_job(),
    });
    sweep.write_attempts(&cell.id, &attempts)?;

    let t0 = Instant::now();
    let mut cmd = Command::new(&runner.exe);
    // The log is a file: no terminal colour codes in it.
    cmd.args(&args).stdin(Stdio::null()).env(NO_COLOR_ENV, "1");
    if runner.threads > 0 {
        cmd.env(RAYON_THREADS_ENV, runner.threads.to_string());
    }
    let err_log = log.try_clone().map_err(|e| SweepError::file(&log_path, e))?;
    cmd.stdout(log).stderr(err_log);
    die_with_parent(&mut cmd);
    let outcome = match cmd.spawn().and_then(|mut child| child.wait()) {
        Err(e) => AttemptOutcome::SpawnFailed(e.to_string()),
        Ok(status) => exit_outcome(status, task.is_complete(&run)),
    };
    let seconds = t0.elapsed().as_secs_f64();
    if let Some(last) = attempts.last_mut() {
        last.seconds = Some(seconds);
        last.outcome = Some(outcome.clone());
    }
    sweep.write_attempts(&cell.id, &attempts)?;
    Ok(match outcome {
        AttemptOutcome::Success => CellOutcome::Completed { seconds },
        outcome => CellOutcome::Failed { outcome, log: log_path },
    })
}

fn exit_outcome(status: std::process::ExitStatus, complete: bool) -> AttemptOutcome {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return AttemptOutcome::Signal(sig);
        }
    }
    match status.code() {
        Some(0) if complete => AttemptOutcome::Success,
        Some(0) => AttemptOutcome::NotComplete,
        Some(code) => AttemptOutcome::Exit(code),
        None => AttemptOutcome::Exit(-1),
    }
}

/// The child's arguments: a new run, the resume of an interrupted one, or (cls-cv) the same
/// `cls cv` command, which continues an interrupted cross-validation by itself.
fn child_args(
    task: Task,
    cell: &CellRecord,
    config: &Path,
    run: &Path,
    r: &CellRunner,
) -> Result<Vec<String>> {
    let mut a: Vec<String> = vec!["--quiet".into()];
    if r.threads > 0 {
        a.extend(["--threads".into(), r.threads.to_string()]);
    }
    let path = |p: &Path| p.display().to_string();
    let train = match task {
        Task::SegTrain => Some("seg"),
        Task::ClsTrain => Some("cls"),
        Task::ClsCv => None,
    };
    match train {
        Some(family) => {
            a.extend([family.into(), "train".into()]);
            if resumable(run) {
                a.extend(["--resume".into(), path(run)]);
            } else {
                if run.exists() {
                    // Killed before its start was recorded: nothing to resume. Safe to remove:
                    // this process holds the cell's lock and nothing holds the run's.
                    warn!("{}: an unfinished start (no {CONFIG_FILE}/{SPLIT_FILE}/{RUN_FILE}); starting it again", run.display());
                    std::fs::remove_dir_all(run).map_err(|e| SweepError::file(run, e))?;
                }
                a.extend(["--config".into(), path(config), "--out".into(), path(run)]);
            }
            a.extend(["--manifest".into(), path(&cell.manifest)]);
        }
        None => {
            a.extend(["cls".into(), "cv".into(), "--manifest".into(), path(&cell.manifest)]);
            a.extend(["--config".into(), path(config), "--out".into(), path(run)]);
            if let Some(k) = cell.folds {
                a.extend(["--folds".into(), k.to_string()]);
            }
            if let Some(s) = cell.fold_seed {
                a.extend(["--seed".into(), s.to_string()]);
            }
        }
    }
    if let Some(cache) = &r.cache {
        a.extend(["--cache".into(), path(cache)]);
    }
    a.extend(["--device".into(), r.device.clone()]);
    Ok(a)
}

/// A train run folder that recorded its start (config, split, run record): `--resume` takes
/// it (from its last checkpoint, or epoch 0 when it has none).
fn resumable(run: &Path) -> bool {
    [CONFIG_FILE, SPLIT_FILE, RUN_FILE].iter().all(|f| run.join(f).exists())
}

/// On Linux: the child gets SIGKILL when the thread that spawned it ends (the parent-death
/// signal follows the spawning thread, so callers wait for the child on that thread), and
/// does not start at all if its parent already died between fork and exec.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls only the
    // async-signal-safe prctl and getppid; it allocates nothing (raw OS errors only).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
}

/// `JOB_TASK` of a Slurm array task (or the job id alone), when run by Slurm.
fn slurm_job() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok();
    match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID")) {
        (Some(job), Some(task)) => Some(format!("{job}_{task}")),
        _ => var("SLURM_JOB_ID"),
    }
}

/// A local run's events, for the caller to print.
#[derive(Debug)]
pub enum LocalEvent<'a> {
    Started { cell: &'a CellRecord, worker: usize },
    Finished { cell: &'a CellRecord, outcome: &'a CellOutcome },
}

/// Runs `cells` with `jobs` workers (each a thread that runs one cell at a time with
/// [`run_cell`]); a failing cell does not stop the others. Returns each cell's outcome, in
/// `cells`' order.
pub fn run_local(
    sweep: &SweepDir,
    cells: &[CellRecord],
    runner: &CellRunner,
    jobs: usize,
    on_event: &(dyn Fn(LocalEvent<'_>) + Sync),
) -> Vec<CellOutcome> {
    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Option<CellOutcome>>> = Mutex::new(vec![None; cells.len()]);
    std::thread::scope(|s| {
        for worker in 0..jobs.max(1).min(cells.len().max(1)) {
            let (next, outcomes) = (&next, &outcomes);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(cell) = cells.get(i) else { break };
                on_event(LocalEvent::Started { cell, worker });
                let outcome = run_cell(sweep, cell, runner)
                    .unwrap_or_else(|e| CellOutcome::Refused { reason: e.to_string() });
                on_event(LocalEvent::Finished { cell, outcome: &outcome });
                if let Ok(mut o) = outcomes.lock() {
                    o[i] = Some(outcome);
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
    outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or(CellOutcome::Refused { reason: "not run (a worker ended early)".into() })
        })
        .collect()
}

/// Threads per local worker: the cores shared out, at least one (`threads` × `jobs` ≤ cores
/// whenever `jobs` ≤ cores). A requested `threads` (non-zero) is kept if it fits, refused
/// otherwise.
pub fn threads_per_worker(
    cores: usize,
    jobs: usize,
    threads: usize,
) -> std::result::Result<usize, String> {
    let jobs = jobs.max(1);
    if jobs > cores {
        return Err(format!(
            "--jobs {jobs} is more than the {cores} cores: each worker needs at least one"
        ));
    }
    if threads == 0 {
        return Ok((cores / jobs).max(1));
    }
    if threads * jobs > cores {
        return Err(format!(
            "--threads {threads} × --jobs {jobs} = {} threads is more than the {cores} cores (leave --threads out: each worker then gets {})",
            threads * jobs,
            (cores / jobs).max(1)
        ));
    }
    Ok(threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_the_cores() {
        assert_eq!(threads_per_worker(16, 4, 0), Ok(4));
        assert_eq!(threads_per_worker(2, 2, 0), Ok(1));
        assert_eq!(threads_per_worker(3, 2, 0), Ok(1));
        assert_eq!(threads_per_worker(8, 1, 0), Ok(8));
        assert_eq!(threads_per_worker(8, 2, 3), Ok(3));
        assert!(threads_per_worker(2, 2, 2).unwrap_err().contains("more than the 2 cores"));
        assert!(threads_per_worker(2, 3, 0).unwrap_err().contains("--jobs 3"));
    }

    #[test]
    fn child_arguments_start_resume_or_continue() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let cfg = dir.path().join("config.toml");
        let cell = CellRecord {
            index: 0,
            id: crate::plan::CellId::parse("0123456789ab").unwrap(),
            task: Task::SegTrain,
            overrides: Default::default(),
            manifest: dir.path().join("m.csv"),
            manifest_blake3: String::new(),
            seed: None,
            fold_seed: Some(3),
            folds: Some(4),
        };
        let r = CellRunner {
            exe: "lesion".into(),
            threads: 2,
            cache: Some(dir.path().join("c")),
            device: "cpu".into(),
        };
        let s = |a: Vec<String>| a.join(" ");
        let new = s(child_args(Task::SegTrain, &cell, &cfg, &run, &r).unwrap());
        assert!(
            new.starts_with("--quiet --threads 2 seg train --config ") && new.contains("--out"),
            "{new}"
        );
        // A start killed before its records: removed, started again.
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join(CONFIG_FILE), "").unwrap();
        let again = s(child_args(Task::ClsTrain, &cell, &cfg, &run, &r).unwrap());
        assert!(again.contains("cls train --config") && !run.exists(), "{again}");
        std::fs::create_dir_all(&run).unwrap();
        for f in [CONFIG_FILE, SPLIT_FILE, RUN_FILE] {
            std::fs::write(run.join(f), "").unwrap();
        }
        let resume = s(child_args(Task::SegTrain, &cell, &cfg, &run, &r).unwrap());
        assert!(resume.contains("seg train --resume") && !resume.contains("--config"), "{resume}");
        assert!(resume.contains("--manifest") && resume.ends_with("--device cpu"), "{resume}");
        let cv = s(child_args(Task::ClsCv, &cell, &cfg, &run, &r).unwrap());
        assert!(cv.contains("cls cv --manifest") && cv.contains("--folds 4 --seed 3"), "{cv}");
        assert!(run.exists(), "a cross-validation folder is never removed");
    }
}
