//! Run folders. A run folder holds `config.toml`, `run.json` (commit, seed, command, device),
//! `split.json`, `metrics.csv` + `metrics.jsonl`, `curves.png`, `checkpoints/`, and — only
//! once training has finished — `COMPLETE.json`. A folder without `COMPLETE.json` is an
//! interrupted run: `--resume` continues it; nothing reads it as finished.
use std::path::{Path, PathBuf};

pub use lesion_data::split::Split;
use serde::{Deserialize, Serialize};
use tch::Device;
use tracing::info;

use crate::error::{Result, TrainError};
pub use crate::lock::RunLock;

pub const CONFIG_FILE: &str = "config.toml";
pub const RUN_FILE: &str = "run.json";
pub const RESUMED_RUN_FILE: &str = "run-resumed.json";
pub const SPLIT_FILE: &str = "split.json";
pub const METRICS_CSV: &str = "metrics.csv";
pub const METRICS_JSONL: &str = "metrics.jsonl";
pub const CURVES_PNG: &str = "curves.png";
pub const COMPLETE_FILE: &str = "COMPLETE.json";

/// Who, what and where of a run, for reproducibility.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub lesion_version: String,
    pub git_commit: Option<String>,
    pub command: Vec<String>,
    pub seed: u64,
    pub device: String,
    pub torch_threads: i32,
    pub started_unix: u64,
    pub train_images: usize,
    pub val_images: usize,
    /// The manifest the run was trained from (absolute), so `--resume` needs nothing else.
    #[serde(default)]
    pub manifest: Option<PathBuf>,
    /// The config the run (re)started with, as TOML: what `--resume` compares `config.toml`
    /// with ([`crate::resume`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// What a (re)started run records about itself.
pub struct RunStart<'a> {
    pub command: &'a [String],
    pub seed: u64,
    pub device: tch::Device,
    pub split: &'a Split,
    pub manifest: Option<&'a Path>,
    /// A resumed run writes `run-resumed.json` and keeps the original `run.json`.
    pub resume: bool,
    /// The run's config as TOML.
    pub config: Option<&'a str>,
}

/// Writes `run.json` (or `run-resumed.json`) for a run starting now, atomically.
pub fn record_start(dir: &Path, start: &RunStart<'_>) -> Result<()> {
    let info = RunInfo {
        lesion_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: git_commit(),
        command: start.command.to_vec(),
        seed: start.seed,
        device: crate::device::device_name(start.device),
        torch_threads: tch::get_num_threads(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        train_images: start.split.train.len(),
        val_images: start.split.val.len(),
        manifest: start
            .manifest
            .map(|m| std::fs::canonicalize(m).unwrap_or_else(|_| m.to_path_buf())),
        config: start.config.map(str::to_string),
    };
    write_json(&dir.join(if start.resume { RESUMED_RUN_FILE } else { RUN_FILE }), &info)
}

/// What every task's training request shares: where the run lives and how it starts.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub run_dir: PathBuf,
    pub device: Device,
    /// Continue the run in `run_dir` from its last checkpoint (its own config is used).
    pub resume: bool,
    /// Where pretrained weights are cached.
    pub weights_cache: PathBuf,
    /// Recorded in `run.json`.
    pub command: Vec<String>,
    pub progress: bool,
    /// Recorded in `run.json` (for `--resume`).
    pub manifest: Option<PathBuf>,
    /// Refuse to mark the run complete when its health checks failed (diverging loss,
    /// collapsed predictions); otherwise they are warnings kept in `COMPLETE.json`.
    pub strict: bool,
    /// With `resume`: continue with a `config.toml` edited since the run started (the change
    /// is recorded in `config-changes.json`); without it such a resume is refused.
    pub accept_config_change: bool,
    /// Training batches built ahead of the step on a prefetch thread (0: in line). Changes
    /// speed only, never results (see `fit`).
    pub prefetch: usize,
}

/// Batches prefetched when prefetching pays: one in the queue and one being built is enough to
/// hide a batch's build behind a step; more only holds memory.
pub const DEFAULT_PREFETCH: usize = 2;

/// The prefetch depth a run gets unless told: [`DEFAULT_PREFETCH`] on CUDA (the CPU is free
/// while the GPU computes), 0 on the CPU. Why: on the 2-core reference machine the step waited
/// for data 0.2-0.5 % of each epoch with batches built in line, and a prefetch thread competing
/// with the step's threads made the epoch slower in all four comparisons of `lesion bench e2e`
/// (1-12 %, BENCHMARKS.md "End to end"). A CPU with a core to spare was not measured, and a
/// process cannot see the cores its sweep siblings use: ask with `--prefetch N`.
pub fn default_prefetch(device: Device) -> usize {
    if device.is_cuda() {
        DEFAULT_PREFETCH
    } else {
        0
    }
}

impl RunOptions {
    /// A fresh (not resumed) run in `run_dir` on `device`, quiet, recording no command or
    /// manifest: what library callers and tests start from.
    pub fn new(
        run_dir: impl Into<PathBuf>,
        device: Device,
        weights_cache: impl Into<PathBuf>,
    ) -> Self {
        RunOptions {
            run_dir: run_dir.into(),
            device,
            resume: false,
            weights_cache: weights_cache.into(),
            command: Vec::new(),
            progress: false,
            manifest: None,
            strict: false,
            accept_config_change: false,
            prefetch: DEFAULT_PREFETCH,
        }
    }
}

/// A task's training configuration, stored in a run folder as `config.toml`: the one TOML
/// reader and writer of both tasks (unknown keys are refused by the configs' serde attributes;
/// errors name the file).
pub trait RunConfig: Sized + Clone + Serialize + serde::de::DeserializeOwned {
    /// Checks the values; errors say which key and why.
    fn validate(&self) -> Result<()>;
    /// The training seed (recorded in `run.json`).
    fn seed(&self) -> u64;
    /// Sets the run's seeds: the training seed (initialisation, batch order, augmentation) and
    /// the seed of the validation split, so that runs of one config with different seeds are
    /// different draws of the whole experiment (`--seed` of the training commands).
    fn set_seed(&mut self, seed: u64);
    /// Makes paths written relative to the config file (`dir`) absolute.
    fn resolve_relative_paths(&mut self, _dir: &Path) {}

    /// Reads, resolves and validates a config file.
    fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::file(path, e))?;
        let mut cfg: Self = toml::from_str(&text).map_err(|e| TrainError::file(path, e))?;
        if let Some(dir) = path.parent() {
            cfg.resolve_relative_paths(dir);
        }
        cfg.validate().map_err(|e| TrainError::file(path, e))?;
        Ok(cfg)
    }

    /// The config as TOML, every key written out.
    fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| TrainError::Config(e.to_string()))
    }
}

/// Opens a run folder and records its start. A new run validates `cfg`, creates the folder
/// (which must be absent or empty) and writes `config.toml` and `split.json` (`make_split`);
/// a resumed one reads both back, so `cfg` is ignored, and refuses a complete run. Returns the
/// config and split the run trains with, and the folder's [`RunLock`]: keep it for the whole
/// run (a second run in the folder is refused meanwhile; a new run that fails before its first
/// checkpoint removes what it wrote when the lock is dropped). Temporary files left by a
/// killed writer are removed. Invariant: the training split is not empty.
pub fn open<C: RunConfig>(
    opts: &RunOptions,
    cfg: &C,
    make_split: impl FnOnce(&C) -> Result<Split>,
) -> Result<(C, Split, RunLock)> {
    let dir = &opts.run_dir;
    let (cfg, split, lock) = if opts.resume {
        if !dir.is_dir() {
            return Err(TrainError::file(dir, "no run folder here to resume"));
        }
        let lock = RunLock::acquire(dir)?;
        if is_complete(dir) {
            return Err(TrainError::file(dir, "this run is already complete; nothing to resume"));
        }
        crate::lock::clean_temp_files(dir)?;
        let cfg = C::from_toml_file(&dir.join(CONFIG_FILE))?;
        let split: Split = read_json(&dir.join(SPLIT_FILE))?;
        (cfg, split, lock)
    } else {
        cfg.validate()?;
        let created = !dir.exists();
        let mut lock = create_locked(dir)?;
        lock.remove_if_start_fails(created);
        let split = make_split(cfg)?;
        atomic_write(&dir.join(CONFIG_FILE), cfg.to_toml()?.as_bytes())?;
        write_json(&dir.join(SPLIT_FILE), &split)?;
        (cfg.clone(), split, lock)
    };
    if split.train.is_empty() {
        return Err(TrainError::Config("the training split is empty".into()));
    }
    // Every resume check before the first write (`run-resumed.json` included).
    if opts.resume {
        crate::resume::check(dir, &cfg, opts.accept_config_change)?;
    }
    let config = cfg.to_toml()?;
    record_start(
        dir,
        &RunStart {
            command: &opts.command,
            seed: cfg.seed(),
            device: opts.device,
            split: &split,
            manifest: opts.manifest.as_deref(),
            resume: opts.resume,
            config: Some(&config),
        },
    )?;
    info!(
        train = split.train.len(),
        val = split.val.len(),
        resume = opts.resume,
        "run {}",
        dir.display()
    );
    Ok((cfg, split, lock))
}

/// Marks a run complete: removes temporary files left in it, then writes its
/// `COMPLETE.json`, always the run's last write. Call while holding the run's [`RunLock`].
pub fn complete<T: Serialize>(dir: &Path, completion: &T) -> Result<()> {
    crate::lock::clean_temp_files(dir)?;
    write_json(&dir.join(COMPLETE_FILE), completion)
}

pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    lesion_data::io::atomic_write(path, bytes).map_err(TrainError::from)
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| TrainError::file(path, e))?;
    atomic_write(path, &text)
}

/// Reads a JSON file this program wrote; a file that is not JSON (cut, overwritten) is
/// reported as corrupt, one of another shape as unexpected, both naming the file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).map_err(|e| TrainError::file(path, e))?;
    serde_json::from_slice(&text).map_err(|e| {
        let problem = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => format!(
                "corrupt (not valid JSON: {e}); restore it, or recreate it with the command that wrote it"
            ),
            _ => format!("unexpected contents ({e}); was it edited?"),
        };
        TrainError::file(path, problem)
    })
}

/// The git commit of the code: of the working directory when it is a checkout, else of the
/// checkout the running binary was built in (`target/release/lesion` inside it), with
/// `+dirty` when modified; `None` outside any checkout.
pub fn git_commit() -> Option<String> {
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf));
    std::iter::once(None).chain(exe_dir.map(Some)).find_map(|dir| commit_in(dir.as_deref()))
}

fn commit_in(dir: Option<&Path>) -> Option<String> {
    let git = |args: &[&str]| {
        let mut cmd = std::process::Command::new("git");
        if let Some(d) = dir {
            cmd.arg("-C").arg(d);
        }
        cmd.args(args).output().ok()
    };
    let out = git(&["rev-parse", "HEAD"])?;
    if !out.status.success() {
        return None;
    }
    let mut commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        commit.push_str("+dirty");
    }
    Some(commit)
}

pub fn is_complete(dir: &Path) -> bool {
    dir.join(COMPLETE_FILE).exists()
}

/// A loud notice when the model at `path` (a run folder or a checkpoint in one) comes from a
/// run without `COMPLETE.json` (killed, failed, or still training: then with the pid holding
/// its lock); `None` for a complete run.
pub fn incomplete_notice(path: &Path) -> Option<String> {
    let run_dir = crate::checkpoint::resolve_model(path).map(|m| m.run_dir).ok()?;
    if is_complete(&run_dir) {
        return None;
    }
    let state = match crate::lock::holder(&run_dir) {
        Some(Some(pid)) => format!("it is still training (process {pid})"),
        Some(None) => "it is still training".to_string(),
        None => "it was interrupted or failed".to_string(),
    };
    Some(format!(
        "{}: incomplete run (no {COMPLETE_FILE}): {state}; predicting with its best checkpoint so far, which is not the finished model (resume it with --resume to finish it)",
        run_dir.display()
    ))
}

/// The folder of a new run: `runs_root/<name>` must not exist yet, unless it is empty (its
/// lock file aside).
fn create_run_dir(path: &Path) -> Result<PathBuf> {
    if path.exists() {
        let empty = std::fs::read_dir(path)
            .map(|mut d| d.all(|e| e.is_ok_and(|e| e.file_name() == crate::lock::LOCK_FILE)))
            .unwrap_or(false);
        if !empty {
            return Err(TrainError::file(
                path,
                "run folder exists and is not empty; use --resume to continue it or pick another --out",
            ));
        }
    }
    std::fs::create_dir_all(path).map_err(|e| TrainError::file(path, e))?;
    Ok(path.to_path_buf())
}

/// The folder of a new run, created if missing and locked, then checked empty under the lock
/// (locked before the check: of two runs started together, one is refused).
pub fn create_locked(dir: &Path) -> Result<RunLock> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::file(dir, e))?;
    let lock = RunLock::acquire(dir)?;
    create_run_dir(dir)?;
    Ok(lock)
}

/// A trained model read back from its run folder: the run's config and the model built from
/// it with the chosen checkpoint's weights. `vars` owns the weights; keep it alive with `model`.
pub struct Trained<C, M> {
    pub run_dir: PathBuf,
    pub cfg: C,
    pub model: M,
    pub vars: tch::nn::VarStore,
}

/// Loads a trained model from a run folder (its `config.toml` and best checkpoint) or from a
/// checkpoint file whose run folder is two levels up: the one loader of both tasks.
pub fn load_trained<C: RunConfig, M>(
    path: &Path,
    device: Device,
    build: impl FnOnce(&C, &tch::nn::VarStore) -> Result<M>,
) -> Result<Trained<C, M>> {
    let crate::checkpoint::ModelSource { run_dir, weights } =
        crate::checkpoint::resolve_model(path)?;
    let cfg = C::from_toml_file(&run_dir.join(CONFIG_FILE))?;
    let vars = tch::nn::VarStore::new(device);
    let model = build(&cfg, &vars)?;
    crate::checkpoint::load_model(&weights, &vars)?;
    Ok(Trained { run_dir, cfg, model, vars })
}

/// What a run folder records for `--resume`: its config and the manifest it was trained from
/// (`None` when `run.json` records none). A `run.json` that exists but cannot be read is an
/// error naming it, never taken as "no manifest".
pub fn recorded<C: RunConfig>(dir: &Path) -> Result<(C, Option<PathBuf>)> {
    let cfg = C::from_toml_file(&dir.join(CONFIG_FILE))?;
    let info_path = dir.join(RUN_FILE);
    let manifest =
        if info_path.exists() { read_json::<RunInfo>(&info_path)?.manifest } else { None };
    Ok((cfg, manifest))
}

/// The rows of `rows` in the validation split of the run folder `run`, in `rows`' order.
/// Every validation id must be among the rows: a manifest lacking some is an error that
/// names how many and the first, never a silently smaller set.
pub fn validation_rows<T>(rows: Vec<T>, run: &Path, id: impl Fn(&T) -> &str) -> Result<Vec<T>> {
    let path = run.join(SPLIT_FILE);
    let split: Split = read_json(&path)?;
    let val: std::collections::BTreeSet<&str> = split.val.iter().map(String::as_str).collect();
    let kept: Vec<T> = rows.into_iter().filter(|r| val.contains(id(r))).collect();
    if kept.len() != val.len() {
        let have: std::collections::BTreeSet<&str> = kept.iter().map(&id).collect();
        let missing: Vec<&&str> = val.iter().filter(|v| !have.contains(**v)).collect();
        return Err(TrainError::file(
            &path,
            format!(
                "{} of the {} validation ids are not in the manifest (first: {})",
                missing.len(),
                val.len(),
                missing.first().map(|s| s.to_string()).unwrap_or_default()
            ),
        ));
    }
    Ok(kept)
}
