//! `lesion sweep …`: the arguments of [`lesion_sweep`] and what it prints.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use lesion_sweep::exec::{self, CellOutcome, CellRunner, LocalEvent};
use lesion_sweep::plan::{self, CellId, CellRecord, PlanRecord};
use lesion_sweep::slurm::{self, JobRecord, SbatchOptions};
use lesion_sweep::{CellState, SweepDir};

use crate::GlobalOpts;

/// Where `lesion sweep` puts a sweep unless told: `sweeps/<name>`.
const DEFAULT_SWEEPS_DIR: &str = "sweeps";

/// Run a sweep plan (TOML: a base config, `[set]`/`[grid]`/`[[list]]` keys, seeds, folds,
/// manifests) as cells, each an ordinary run folder under the sweep folder named by a stable
/// hash; rerunning skips complete cells and resumes interrupted ones.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub command: Option<SweepCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Who runs the cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Executor {
    /// Worker threads on this machine, each running one cell at a time.
    Local,
    /// One Slurm job array (`sbatch`) over the cells not complete.
    Slurm,
}

#[derive(Args)]
pub struct RunArgs {
    /// The plan file (see the README's "Sweeps").
    #[arg(required = true)]
    pub plan: Option<PathBuf>,
    /// Sweep folder (default sweeps/<name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the cells (index, id, what varies, state) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, value_enum, default_value = "local")]
    pub executor: Executor,
    /// Local workers; each cell gets max(1, cores / jobs) threads unless --threads says.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Manifests to run the plan on, instead of its `manifests` (repeat for several).
    #[arg(long = "manifest")]
    pub manifests: Vec<PathBuf>,
    /// Preprocessing cache of every cell (default $LESION_CACHE or ./.cache/lesion).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// cpu | cuda | cuda:N | auto, for every cell.
    #[arg(long, default_value = "cpu", value_parser = device_arg)]
    pub device: String,
    #[command(flatten)]
    pub slurm: SlurmArgs,
}

#[derive(Args)]
#[command(next_help_heading = "Slurm executor")]
pub struct SlurmArgs {
    /// At most K array tasks at once (`--array=…%K`); default: no limit.
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// CPUs per array task, also each cell's --threads.
    #[arg(long, default_value_t = 1)]
    pub cpus_per_task: usize,
    #[arg(long)]
    pub partition: Option<String>,
    /// Time limit per task (e.g. 02:00:00).
    #[arg(long)]
    pub time: Option<String>,
    /// Memory per task (e.g. 8G).
    #[arg(long)]
    pub mem: Option<String>,
    /// A further #SBATCH line (e.g. --sbatch-arg=--account=lab); repeat for several.
    #[arg(long = "sbatch-arg", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
    /// Write the sbatch script only (submit it yourself with sbatch).
    #[arg(long)]
    pub no_submit: bool,
}

#[derive(Subcommand)]
pub enum SweepCommand {
    /// Each cell's state from its folder (and its Slurm array task's, when jobs are recorded
    /// and squeue/sacct answer), plus cells that left the plan.
    Status { sweep: PathBuf },
    /// Check every cell of the plan is complete and write collect.csv and collect.json (the
    /// headline internal metric per cell).
    Collect { sweep: PathBuf },
    /// Run one cell (by its index in plan.json or its id): what every executor calls. Its
    /// threads are the global --threads.
    Cell {
        sweep: PathBuf,
        /// Index in plan.json, or the 12-hex-digit cell id.
        cell: String,
        #[arg(long)]
        cache: Option<PathBuf>,
        #[arg(long, default_value = "cpu", value_parser = device_arg)]
        device: String,
    },
}

fn device_arg(s: &str) -> Result<String, lesion_core::TrainError> {
    crate::parse_device(s).map(|_| s.to_string())
}

pub fn run(a: SweepArgs, g: &GlobalOpts) -> Result<()> {
    match a.command {
        Some(SweepCommand::Status { sweep }) => status(&sweep),
        Some(SweepCommand::Collect { sweep }) => collect(&sweep),
        Some(SweepCommand::Cell { sweep, cell, cache, device }) => {
            cell_cmd(&sweep, &cell, cache, device, g)
        }
        None => run_plan(a.run, g),
    }
}

/// The running binary, to start cells with.
fn own_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running lesion binary")?;
    Ok(std::fs::canonicalize(&exe).unwrap_or(exe))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(p).with_context(|| format!("{}", p.display()))
}

fn run_plan(a: RunArgs, g: &GlobalOpts) -> Result<()> {
    let plan_path = a.plan.clone().context("a plan file is required")?;
    let plan = plan::load(&plan_path, &a.manifests)?;
    let out =
        a.out.clone().unwrap_or_else(|| Path::new(DEFAULT_SWEEPS_DIR).join(&plan.record.name));
    if a.dry_run {
        print_cells(&plan.record, &SweepDir::new(&out));
        println!("(dry run: nothing written; the sweep folder would be {})", out.display());
        return Ok(());
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = match a.executor {
        Executor::Local => {
            exec::threads_per_worker(cores, a.jobs, g.threads).map_err(anyhow::Error::msg)?
        }
        Executor::Slurm => {
            if g.threads > a.slurm.cpus_per_task {
                bail!("--threads {} is more than --cpus-per-task {}: each task's cell runs with --cpus-per-task threads", g.threads, a.slurm.cpus_per_task);
            }
            a.slurm.cpus_per_task.max(1)
        }
    };
    // plan.json first, then the cell folders.
    SweepDir::new(&out).write_plan(&plan)?;
    let sweep = SweepDir::new(absolute(&out)?);
    let cache = a.cache.as_deref().map(absolute_or_new).transpose()?;
    let record = &plan.record;
    println!(
        "sweep {} ({}): {} cells in {}",
        record.name,
        record.task,
        record.cells.len(),
        sweep.root().display()
    );
    match a.executor {
        Executor::Local => {
            let runner = CellRunner { exe: own_exe()?, threads, cache, device: a.device.clone() };
            local(&sweep, record, &runner, a.jobs)
        }
        Executor::Slurm => submit_slurm(&sweep, record, &a, threads, cache),
    }
}

/// A folder that may not exist yet, made absolute (the cache is created by its first user).
fn absolute_or_new(p: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    absolute(p)
}

fn local(sweep: &SweepDir, plan: &PlanRecord, runner: &CellRunner, jobs: usize) -> Result<()> {
    let (done, todo): (Vec<&CellRecord>, Vec<&CellRecord>) =
        plan.cells.iter().partition(|c| c.task.is_complete(&sweep.run_dir(&c.id)));
    println!(
        "{} complete, {} to run with {} worker(s) × {} thread(s)",
        done.len(),
        todo.len(),
        jobs.min(todo.len()).max(1),
        runner.threads
    );
    if todo.is_empty() {
        return Ok(());
    }
    let todo: Vec<CellRecord> = todo.into_iter().cloned().collect();
    let axes = &plan.axes;
    let on_event = |e: LocalEvent<'_>| match e {
        LocalEvent::Started { cell, worker } => {
            println!(
                "cell {} {} started (worker {worker}): {}",
                cell.index,
                cell.id,
                varying(cell, axes)
            );
        }
        LocalEvent::Finished { cell, outcome } => {
            println!("cell {} {}: {outcome}", cell.index, cell.id)
        }
    };
    let outcomes = exec::run_local(sweep, &todo, runner, jobs, &on_event);
    let not_done: Vec<(&CellRecord, &CellOutcome)> =
        todo.iter().zip(&outcomes).filter(|(_, o)| !o.is_complete()).collect();
    if not_done.is_empty() {
        println!("all {} cells complete", plan.cells.len());
        return Ok(());
    }
    for (cell, outcome) in &not_done {
        eprintln!("cell {} {}: {outcome}", cell.index, cell.id);
    }
    bail!(
        "{} of {} cells did not complete ({}); run the same command again to resume them",
        not_done.len(),
        plan.cells.len(),
        not_done
            .iter()
            .map(|(c, o)| match o {
                CellOutcome::Failed { log, .. } => format!("{} (log {})", c.id, log.display()),
                other => format!("{} ({other})", c.id),
            })
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn submit_slurm(
    sweep: &SweepDir,
    plan: &PlanRecord,
    a: &RunArgs,
    threads: usize,
    cache: Option<PathBuf>,
) -> Result<()> {
    // One submission at a time per sweep: two at once would both submit the same cells and
    // one would overwrite the other's jobs.json entry.
    let dir = slurm::slurm_dir(sweep);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let _lock = lesion_core::lock::RunLock::acquire(&dir)?;
    let jobs = slurm::read_jobs(sweep)?;
    let live = if jobs.is_empty() {
        BTreeMap::new()
    } else {
        // Without Slurm's answer a queued cell would look pending and be submitted twice.
        slurm::task_states(&jobs).with_context(|| {
            format!(
                "{}: jobs are recorded but neither squeue nor sacct answered; not submitting again (a queued cell would run twice)",
                dir.join("jobs.json").display()
            )
        })?
    };
    let mut skipped = Vec::new();
    let cells: Vec<&CellRecord> = plan
        .cells
        .iter()
        .filter(|c| {
            let state = sweep.state(c.task, &c.id);
            let queued = live.get(&c.id).filter(|t| t.is_live());
            let submit = !matches!(state, CellState::Complete | CellState::Running { .. })
                && queued.is_none();
            if !submit && state != CellState::Complete {
                let why = queued
                    .map(|t| format!("array task {} {}", t.task, t.state))
                    .unwrap_or_else(|| state.to_string());
                skipped.push(format!("{} {} ({why})", c.index, c.id));
            }
            submit
        })
        .collect();
    if !skipped.is_empty() {
        println!("not submitted again, already queued or running: {}", skipped.join(", "));
    }
    if cells.is_empty() {
        println!("nothing to submit: every cell is complete, queued or running");
        return Ok(());
    }
    let o = SbatchOptions {
        max_parallel: a.slurm.max_parallel,
        cpus_per_task: threads,
        partition: a.slurm.partition.clone(),
        time: a.slurm.time.clone(),
        mem: a.slurm.mem.clone(),
        extra: a.slurm.sbatch_args.clone(),
        exe: own_exe()?,
        cache,
        device: a.device.clone(),
    };
    let text = slurm::script(sweep.root(), plan, &cells, &o)?;
    let script = slurm::write_script(sweep, &text)?;
    println!("{} cells -> {}", cells.len(), script.display());
    if a.slurm.no_submit {
        println!("not submitted (--no-submit): sbatch {}", script.display());
        return Ok(());
    }
    let job_id = slurm::submit(&script)?;
    let submitted_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let tasks = cells.iter().map(|c| (c.index, c.id.clone())).collect();
    slurm::record_job(sweep, JobRecord { job_id: job_id.clone(), script, submitted_unix, tasks })?;
    println!(
        "submitted job array {job_id}; follow it with: lesion sweep status {}",
        sweep.root().display()
    );
    Ok(())
}

/// The cell's values of the plan's axes, `key=value …`.
fn varying(cell: &CellRecord, axes: &[String]) -> String {
    let mut parts = Vec::new();
    for axis in axes {
        let value = match axis.as_str() {
            "seed" => cell.seed.map(|s| s.to_string()),
            "fold_seed" => cell.fold_seed.map(|s| s.to_string()),
            "manifest" => Some(cell.manifest.display().to_string()),
            key => cell.overrides.get(key).map(|v| v.to_string()),
        };
        parts.push(format!("{axis}={}", value.unwrap_or_else(|| "-".into())));
    }
    if parts.is_empty() {
        "(one cell)".into()
    } else {
        parts.join(" ")
    }
}

fn print_cells(plan: &PlanRecord, sweep: &SweepDir) {
    println!(
        "sweep {} ({}): {} cells; folder {}",
        plan.name,
        plan.task,
        plan.cells.len(),
        sweep.root().display()
    );
    if !plan.set.is_empty() {
        let set: Vec<String> = plan.set.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("every cell: {}", set.join(" "));
    }
    println!("{:>5}  {:12}  {:12}  cell", "index", "id", "state");
    for c in &plan.cells {
        let state = sweep.state(c.task, &c.id);
        println!("{:>5}  {}  {:12}  {}", c.index, c.id, state.to_string(), varying(c, &plan.axes));
    }
}

fn status(path: &Path) -> Result<()> {
    let sweep = SweepDir::new(absolute(path)?);
    let s = lesion_sweep::status::status(&sweep)?;
    println!(
        "sweep {} ({}): {} cells in {}",
        s.plan.name,
        s.plan.task,
        s.plan.cells.len(),
        path.display()
    );
    let line = |r: &lesion_sweep::status::StatusRow| {
        let progress = r.progress.map(|(d, n)| format!("{d}/{n}")).unwrap_or_default();
        let slurm = r.slurm.as_ref().map(|t| format!("{} {}", t.task, t.state)).unwrap_or_default();
        format!(
            "{:>5}  {}  {:18}  {:>8}  {:24}  {}",
            r.cell.index,
            r.cell.id,
            r.state.to_string(),
            progress,
            slurm,
            varying(&r.cell, &s.plan.axes)
        )
    };
    println!(
        "{:>5}  {:12}  {:18}  {:>8}  {:24}  cell",
        "index", "id", "state", "progress", "slurm"
    );
    for r in &s.rows {
        println!("{}", line(r));
    }
    if !s.left_plan.is_empty() {
        println!("cells no longer in the plan (their folders are kept):");
        for r in &s.left_plan {
            println!("{}", line(r));
        }
    }
    if !s.slurm_queried && slurm::read_jobs(&sweep).map(|j| !j.is_empty()).unwrap_or(false) {
        println!("(Slurm jobs are recorded, but neither squeue nor sacct answered)");
    }
    for r in s.rows.iter().filter(|r| matches!(r.state, CellState::Failed { .. })) {
        println!(
            "failed: cell {} {}: log {}",
            r.cell.index,
            r.cell.id,
            sweep.log(&r.cell.id).display()
        );
    }
    let counts: BTreeMap<&str, usize> = s.counts();
    let words = ["complete", "running", "interrupted", "failed", "pending"];
    let summary: Vec<String> =
        words.iter().map(|w| format!("{w}={}", counts.get(w).unwrap_or(&0))).collect();
    println!("summary: total={} {}", s.rows.len(), summary.join(" "));
    Ok(())
}

fn collect(path: &Path) -> Result<()> {
    let sweep = SweepDir::new(absolute(path)?);
    let c = lesion_sweep::collect::collect(&sweep)?;
    println!(
        "{:>5}  {:12}  {:>16}  {:>9}  {:>9}  cell",
        "index",
        "id",
        c.metric.name(),
        "wall s",
        "train s"
    );
    let plan = sweep.read_plan()?;
    for r in &c.rows {
        let value = r.value.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        let value = match (r.fold_mean, r.fold_std) {
            (Some(m), Some(s)) => format!("{value} ({m:.3}±{s:.3})"),
            _ => value,
        };
        let cell = plan
            .cells
            .iter()
            .find(|p| p.id == r.id)
            .map(|p| varying(p, &plan.axes))
            .unwrap_or_default();
        println!(
            "{:>5}  {}  {:>16}  {:>9.1}  {:>9.1}  {cell}",
            r.index, r.id, value, r.wall_seconds, r.train_seconds
        );
    }
    println!(
        "{} complete cells -> {} and {}",
        c.rows.len(),
        path.join(lesion_sweep::collect::COLLECT_CSV).display(),
        path.join(lesion_sweep::collect::COLLECT_JSON).display()
    );
    Ok(())
}

fn cell_cmd(
    path: &Path,
    which: &str,
    cache: Option<PathBuf>,
    device: String,
    g: &GlobalOpts,
) -> Result<()> {
    let sweep = SweepDir::new(absolute(path)?);
    let cell = match CellId::parse(which) {
        Some(id) => sweep.read_cell(&id)?,
        None => {
            let index: usize = which
                .parse()
                .with_context(|| format!("{which:?} is neither a cell index nor a cell id"))?;
            let plan = sweep.read_plan()?;
            plan.cells.get(index).cloned().with_context(|| {
                format!(
                    "{}: no cell {index} (the plan has {})",
                    sweep.plan_json().display(),
                    plan.cells.len()
                )
            })?
        }
    };
    let cache = cache.as_deref().map(absolute_or_new).transpose()?;
    let runner = CellRunner { exe: own_exe()?, threads: g.threads, cache, device };
    let outcome = exec::run_cell(&sweep, &cell, &runner)?;
    println!("cell {} {}: {outcome}", cell.index, cell.id);
    if !outcome.is_complete() {
        bail!("cell {} {} did not complete: {outcome}", cell.index, cell.id);
    }
    Ok(())
}
