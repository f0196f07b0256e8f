//! Run folders. A run folder holds `config.toml`, `run.json` (commit, seed, command, device),
//! `split.json`, `metrics.csv` + `metrics.jsonl`, `curves.png`, `checkpoints/`, and — only
//! once training has finished — `COMPLETE.json`. A folder without `COMPLETE.json` is an
//! interrupted run: `--resume` continues it; nothing reads it as finished.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

pub const CONFIG_FILE: &str = "config.toml";
pub const RUN_FILE: &str = "run.json";
pub const RESUMED_RUN_FILE: &str = "run-resumed.json";
pub const SPLIT_FILE: &str = "split.json";
pub const METRICS_CSV: &str = "metrics.csv";
pub const METRICS_JSONL: &str = "metrics.jsonl";
pub const CURVES_PNG: &str = "curves.png";
pub const COMPLETE_FILE: &str = "COMPLETE.json";

/// One epoch's record in the metrics log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    /// Validation numbers are absent on epochs that were not validated.
    pub val_loss: Option<f64>,
    pub val_jaccard: Option<f64>,
    pub val_dice: Option<f64>,
    pub val_threshold_jaccard: Option<f64>,
    pub lr: f64,
    pub seconds: f64,
}

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
        started_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        train_images: start.split.train.len(),
        val_images: start.split.val.len(),
        manifest: start.manifest.map(|m| std::fs::canonicalize(m).unwrap_or_else(|_| m.to_path_buf())),
    };
    write_json(&dir.join(if start.resume { RESUMED_RUN_FILE } else { RUN_FILE }), &info)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<String>,
    pub val: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completion {
    pub epochs: usize,
    pub best_epoch: usize,
    pub best_val_jaccard: Option<f64>,
    pub seconds: f64,
}

pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    lesion_data::io::atomic_write(path, bytes).map_err(TrainError::from)
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| TrainError::file(path, e))?;
    atomic_write(path, &text)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).map_err(|e| TrainError::file(path, e))?;
    serde_json::from_slice(&text).map_err(|e| TrainError::file(path, e))
}

/// Rewrites both metric logs from the full record list (atomic; they are small).
pub fn write_metrics(dir: &Path, records: &[EpochRecord]) -> Result<()> {
    let mut jsonl = Vec::new();
    for r in records {
        serde_json::to_writer(&mut jsonl, r).map_err(|e| TrainError::file(dir.join(METRICS_JSONL), e))?;
        jsonl.push(b'\n');
    }
    atomic_write(&dir.join(METRICS_JSONL), &jsonl)?;
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in records {
        w.serialize(r).map_err(|e| TrainError::file(dir.join(METRICS_CSV), e))?;
    }
    let bytes = w.into_inner().map_err(|e| TrainError::file(dir.join(METRICS_CSV), e.to_string()))?;
    atomic_write(&dir.join(METRICS_CSV), &bytes)
}

/// Reads the JSONL metrics log (missing file = no records).
pub fn read_metrics(dir: &Path) -> Result<Vec<EpochRecord>> {
    let path = dir.join(METRICS_JSONL);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::file(&path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| TrainError::file(&path, format!("line {}: {e}", i + 1))))
        .collect()
}

/// The current git commit of the working directory, if any (and `+dirty` when modified).
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let mut commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
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

/// The folder of a new run: `runs_root/<name>` must not exist yet, unless it is empty.
pub fn create_run_dir(path: &Path) -> Result<PathBuf> {
    if path.exists() {
        let empty = std::fs::read_dir(path).map(|mut d| d.next().is_none()).unwrap_or(false);
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
