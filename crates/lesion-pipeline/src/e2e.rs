//! `lesion bench e2e`: what a user waits for, measured from the outside on both sides. Each
//! workload runs as a child process — our `lesion` binary, and the PyTorch pipeline a PyTorch
//! user would write (`bench/e2e_reference.py`: Pillow decoding, a `DataLoader` with worker
//! processes, the same augmentation law and nets, `torch.optim.Adam`) — timed from its spawn
//! (process start, imports, decoding and caching included), with the peak resident memory of
//! its whole process tree (the `DataLoader` workers count) sampled every [`RSS_SAMPLE`].
//!
//! (a) segmentation training on the manifest's files from a cold preprocessing cache: time to
//! the end of the first epoch, steady epochs (median), images/s; ours twice, with batches built
//! in line and prefetched, with the share of each epoch spent waiting for data;
//! (b) cold start to one mask written at the image's own size, median of [`PREDICT_REPEATS`];
//! (c) classification with 8-view TTA over the first images of the manifest, from the files.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lesion_cls::config::ClsTrainConfig;
use lesion_core::precision::Precision;
use lesion_core::run::RunConfig;
use lesion_core::{Result, TrainError};
use lesion_data::manifest::Manifest;
use lesion_seg::trainer::EpochRecord;
use lesion_seg::SegTrainConfig;
use serde::{Deserialize, Serialize};

/// How often the process tree's resident memory is sampled.
pub const RSS_SAMPLE: Duration = Duration::from_millis(20);
/// Cold starts measured per side for (b); the median is reported.
pub const PREDICT_REPEATS: usize = 3;
/// The reference script, relative to the repository root.
pub const REFERENCE_SCRIPT: &str = "bench/e2e_reference.py";
/// Batch of the PyTorch side's TTA `DataLoader` (ours batches by its own rule).
const CLS_BATCH: usize = 16;
/// `/proc/<pid>/status` reports kB.
const KIB_PER_MIB: f64 = 1024.0;

/// What to measure.
#[derive(Debug, Clone)]
pub struct E2eSpec {
    /// The `lesion` binary (ours).
    pub lesion: PathBuf,
    pub python: PathBuf,
    pub script: PathBuf,
    /// Images with masks (e.g. PH2's 150 BMPs) for (a) and (b); their diagnoses for (c).
    pub manifest: PathBuf,
    /// The segmentation recipe (its `epochs` and validation split are replaced: every image
    /// trains, no validation, as the reference does).
    pub seg_config: SegTrainConfig,
    pub epochs: usize,
    /// libtorch threads of each side (the reference's `torch.set_num_threads`).
    pub threads: usize,
    /// The reference's `DataLoader` worker processes.
    pub workers: usize,
    /// Our prefetch depth for the "after" run (the "before" run builds in line).
    pub prefetch: usize,
    /// (c): images, input size and variant.
    pub cls_images: usize,
    pub cls_size: i64,
    /// Scratch folder (created; left for inspection).
    pub work: PathBuf,
    /// Our side's precision and layout (set in both configs).
    pub precision: Precision,
    pub channels_last: bool,
    /// The PyTorch side's (`torch.autocast`, `memory_format=torch.channels_last`).
    pub reference_precision: Precision,
    pub reference_channels_last: bool,
}

/// One child process, timed from its spawn.
#[derive(Debug, Clone)]
pub struct ProcessRun {
    pub wall_s: f64,
    /// Peak of the summed resident memory of the process and its descendants, MiB.
    pub peak_rss_mib: f64,
    /// Output lines (stdout and stderr) with their time since spawn.
    pub lines: Vec<(f64, String)>,
}

impl ProcessRun {
    /// Time since spawn of the first line containing `needle`.
    fn time_of(&self, needle: &str) -> Option<f64> {
        self.lines.iter().find(|(_, l)| l.contains(needle)).map(|(t, _)| *t)
    }
}

/// (a) for one side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSide {
    pub side: String,
    pub images: usize,
    /// Spawn to the end of epoch 1 (decoding and caching included).
    pub first_epoch_s: f64,
    pub first_epoch_images_per_s: f64,
    /// Median of epochs 2.. (end to end of consecutive epochs).
    pub steady_epoch_s: Option<f64>,
    pub steady_images_per_s: Option<f64>,
    pub wall_s: f64,
    pub peak_rss_mib: f64,
    /// Ours: share of each epoch's time spent waiting for batches (epoch 1, then the mean of
    /// the others).
    pub first_epoch_wait_share: Option<f64>,
    pub steady_wait_share: Option<f64>,
}

/// (b) or (c) for one side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OneShotSide {
    pub side: String,
    /// Median wall seconds from spawn to exit.
    pub wall_s: f64,
    pub images_per_s: f64,
    pub peak_rss_mib: f64,
}

/// Everything `lesion bench e2e` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct E2eReport {
    /// Each side's precision and layout, e.g. "bf16, channels-last".
    pub ours: String,
    pub reference: String,
    pub threads: usize,
    pub workers: usize,
    pub train: Vec<TrainSide>,
    pub predict: Vec<OneShotSide>,
    pub cls_tta: Vec<OneShotSide>,
    /// `/proc/loadavg` when the run started.
    pub load_before: Option<String>,
}

fn err(what: impl std::fmt::Display) -> TrainError {
    TrainError::Config(what.to_string())
}

/// The summed `VmRSS` of `root` and its descendants, in kB (0 once it has gone).
fn tree_rss_kib(root: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // `stat`: "pid (comm) state ppid …"; comm may hold spaces, so split after its ')'.
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut total = 0;
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            total += status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        stack.extend(children.get(&pid).into_iter().flatten());
    }
    total
}

/// Runs `cmd` to completion, timing it from its spawn and sampling its tree's memory. A
/// non-zero exit is an error carrying the output's last lines.
pub fn run_measured(mut cmd: Command, what: &str) -> Result<ProcessRun> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| err(format!("{what}: cannot start: {e}")))?;
    let pid = child.id();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let readers: Vec<_> = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(std::io::Result::ok) {
                let at = start.elapsed().as_secs_f64();
                lines.lock().unwrap_or_else(|p| p.into_inner()).push((at, line));
            }
        })
    })
    .collect();
    // One sample before the sampler thread starts: on a loaded machine that thread may first
    // run after a short-lived child has exited, and a peak of 0 would be a silent wrong figure.
    let first_sample = tree_rss_kib(pid);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = first_sample;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(tree_rss_kib(pid));
                std::thread::sleep(RSS_SAMPLE);
            }
            peak
        })
    };
    let status = child.wait().map_err(|e| err(format!("{what}: {e}")));
    let wall_s = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let peak_kib = sampler.join().unwrap_or(0);
    for r in readers {
        let _ = r.join();
    }
    let mut lines = std::mem::take(&mut *lines.lock().unwrap_or_else(|p| p.into_inner()));
    // A line still in the pipe when the child exits is read after `wall_s` was taken; it was
    // written before the exit, so its time is at most `wall_s` (invariant: every line ≤ wall).
    for (at, _) in &mut lines {
        *at = at.min(wall_s);
    }
    let status = status?;
    if !status.success() {
        let tail: Vec<&str> = lines.iter().rev().take(15).rev().map(|(_, l)| l.as_str()).collect();
        return Err(err(format!("{what} failed ({status}):\n{}", tail.join("\n"))));
    }
    Ok(ProcessRun { wall_s, peak_rss_mib: peak_kib as f64 / KIB_PER_MIB, lines })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Epoch end times (since spawn) found in `run`'s output by `marker(k)`, epochs 1..=n.
fn epoch_ends(
    run: &ProcessRun,
    epochs: usize,
    marker: impl Fn(usize) -> String,
) -> Result<Vec<f64>> {
    (1..=epochs)
        .map(|k| {
            run.time_of(&marker(k)).ok_or_else(|| err(format!("no end of epoch {k} in the output")))
        })
        .collect()
}

fn train_side(
    side: &str,
    images: usize,
    run: &ProcessRun,
    ends: &[f64],
    records: Option<&[EpochRecord]>,
) -> TrainSide {
    let first = ends.first().copied().unwrap_or(run.wall_s);
    let steady = median(ends.windows(2).map(|w| w[1] - w[0]).collect());
    let share =
        |r: &EpochRecord| r.data_wait_seconds.filter(|_| r.seconds > 0.0).map(|w| w / r.seconds);
    let first_share = records.and_then(|r| r.first()).and_then(share);
    let steady_share = records.and_then(|r| {
        let v: Vec<f64> = r.iter().skip(1).filter_map(share).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    });
    TrainSide {
        side: side.into(),
        images,
        first_epoch_s: first,
        first_epoch_images_per_s: images as f64 / first,
        steady_epoch_s: steady,
        steady_images_per_s: steady.map(|s| images as f64 / s),
        wall_s: run.wall_s,
        peak_rss_mib: run.peak_rss_mib,
        first_epoch_wait_share: first_share,
        steady_wait_share: steady_share,
    }
}

fn one_shot(side: &str, images: usize, runs: &[ProcessRun]) -> OneShotSide {
    let wall = median(runs.iter().map(|r| r.wall_s).collect()).unwrap_or(f64::NAN);
    OneShotSide {
        side: side.into(),
        wall_s: wall,
        images_per_s: images as f64 / wall,
        peak_rss_mib: runs.iter().map(|r| r.peak_rss_mib).fold(0.0, f64::max),
    }
}

fn ours(spec: &E2eSpec) -> Command {
    let mut c = Command::new(&spec.lesion);
    c.args(["--quiet", "--threads", &spec.threads.to_string()]);
    c
}

fn reference(spec: &E2eSpec, mode: &str) -> Command {
    let mut c = Command::new(&spec.python);
    c.arg(&spec.script).arg(mode).args(["--threads", &spec.threads.to_string()]);
    c.args(["--precision", spec.reference_precision.name()]);
    if spec.reference_channels_last {
        c.arg("--channels-last");
    }
    c
}

/// Measures (a), (b) and (c) on both sides.
pub fn measure(spec: &E2eSpec) -> Result<E2eReport> {
    let work = &spec.work;
    std::fs::create_dir_all(work).map_err(|e| TrainError::file(work, e))?;
    let manifest = Manifest::read_csv(&spec.manifest)?;
    let rows = &manifest.rows;
    let masked = rows.iter().filter(|r| r.mask_path.is_some()).count();
    if masked != rows.len() || rows.is_empty() {
        return Err(TrainError::file(
            &spec.manifest,
            format!(
                "{masked} of {} rows have a mask: the e2e bench trains on every row",
                rows.len()
            ),
        ));
    }
    let load_before = std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_string());
    let mut cfg = spec.seg_config.clone();
    cfg.train.epochs = spec.epochs;
    cfg.data.val_fraction = 0.0;
    cfg.data.split_file = None;
    cfg.train.precision = spec.precision;
    cfg.train.channels_last = spec.channels_last;
    let seg_toml = work.join("seg.toml");
    lesion_core::run::atomic_write(&seg_toml, cfg.to_toml()?.as_bytes())?;
    let n = rows.len();
    let epoch_marker = |k: usize| format!("epoch {k}/{}: train loss", spec.epochs);

    // (a) ours, before (in line) and after (prefetch); each from its own empty cache.
    let mut train = Vec::new();
    let mut our_run = PathBuf::new();
    for (label, prefetch) in [("lesion, batches in line", 0), ("lesion, prefetch", spec.prefetch)] {
        let out = work.join(format!("seg-run-prefetch{prefetch}"));
        let cache = work.join(format!("seg-cache-prefetch{prefetch}"));
        for d in [&out, &cache] {
            remove_old(d)?;
        }
        let mut c = ours(spec);
        c.args(["seg", "train", "--manifest"]).arg(&spec.manifest);
        c.arg("--config").arg(&seg_toml).arg("--out").arg(&out).arg("--cache").arg(&cache);
        c.args(["--prefetch", &prefetch.to_string()]);
        let run = run_measured(c, label)?;
        let ends = epoch_ends(&run, spec.epochs, epoch_marker)?;
        let records = lesion_core::metrics_log::read::<EpochRecord>(&out)?;
        train.push(train_side(label, n, &run, &ends, Some(&records)));
        tracing::info!("{label}: {:?}", train.last());
        our_run = out;
    }
    // (a) PyTorch.
    let py_run = work.join("torch-run");
    let mut c = reference(spec, "seg-train");
    c.arg("--manifest").arg(&spec.manifest).arg("--out").arg(&py_run);
    c.args(["--epochs", &spec.epochs.to_string(), "--workers", &spec.workers.to_string()]);
    c.args([
        "--size",
        &cfg.model.input_size.to_string(),
        "--batch",
        &cfg.train.batch_size.to_string(),
    ]);
    c.args(["--base", &cfg.model.base.to_string(), "--depth", &cfg.model.depth.to_string()]);
    c.args(["--dropout", &cfg.model.dropout.to_string(), "--lr", &cfg.adam.lr.to_string()]);
    let run = run_measured(c, "PyTorch seg-train")?;
    let ends = epoch_ends(&run, spec.epochs, |k| format!("\"epoch\": {k},"))?;
    train.push(train_side("PyTorch DataLoader", n, &run, &ends, None));
    tracing::info!("PyTorch: {:?}", train.last());

    // (b) one image, cold process, mask at the image's own size.
    let image = &rows[0].image_path;
    let one = work.join("one-image");
    std::fs::create_dir_all(&one).map_err(|e| TrainError::file(&one, e))?;
    let name = image.file_name().ok_or_else(|| TrainError::file(image, "no file name"))?;
    let copy = one.join(name);
    std::fs::copy(image, &copy).map_err(|e| TrainError::file(image, e))?;
    let (width, height) = image::image_dimensions(image).map_err(|e| TrainError::file(image, e))?;
    let mut ours_predict = Vec::new();
    let mut torch_predict = Vec::new();
    for rep in 0..PREDICT_REPEATS {
        let out = work.join(format!("predict-ours-{rep}"));
        remove_old(&out)?;
        let mut c = ours(spec);
        c.args(["seg", "predict", "--model"]).arg(&our_run).arg("--images").arg(&one);
        c.arg("--out").arg(&out);
        ours_predict.push(run_measured(c, "lesion seg predict")?);
        check_mask(&out, width, height)?;
        let mask = work.join(format!("predict-torch-{rep}.png"));
        remove_old(&mask)?;
        let mut c = reference(spec, "seg-predict");
        c.arg("--weights").arg(py_run.join("last.pt")).arg("--image").arg(image);
        c.arg("--out").arg(&mask);
        c.args([
            "--size",
            &cfg.model.input_size.to_string(),
            "--base",
            &cfg.model.base.to_string(),
        ]);
        c.args(["--depth", &cfg.model.depth.to_string()]);
        torch_predict.push(run_measured(c, "PyTorch seg-predict")?);
        check_mask(&mask, width, height)?;
    }
    let predict =
        vec![one_shot("lesion", 1, &ours_predict), one_shot("PyTorch", 1, &torch_predict)];

    // (c) a classifier run to predict with (untimed set-up: 1 epoch, no pretrained weights,
    // so no download; the weights' values do not change the time), then TTA x8 from the files.
    let cls_manifest = work.join("cls.csv");
    Manifest::new(rows.iter().take(spec.cls_images).cloned().collect()).write_csv(&cls_manifest)?;
    let images = spec.cls_images.min(n);
    let mut cls_cfg = ClsTrainConfig::default();
    cls_cfg.model.input_size = spec.cls_size;
    cls_cfg.model.pretrained = false;
    cls_cfg.train.epochs = 1;
    cls_cfg.train.freeze_backbone_epochs = 0;
    cls_cfg.data.val_fraction = Some(0.0);
    cls_cfg.train.precision = spec.precision;
    cls_cfg.train.channels_last = spec.channels_last;
    let cls_toml = work.join("cls.toml");
    lesion_core::run::atomic_write(&cls_toml, cls_cfg.to_toml()?.as_bytes())?;
    // Trained afresh every time: a run left by an earlier bench may hold another precision
    // or layout, which its predictions would follow.
    let cls_run = work.join("cls-run");
    remove_old(&cls_run)?;
    let mut c = ours(spec);
    c.args(["cls", "train", "--manifest"]).arg(&cls_manifest).arg("--config").arg(&cls_toml);
    c.arg("--out").arg(&cls_run).arg("--cache").arg(work.join("cls-train-cache"));
    run_measured(c, "lesion cls train (set-up)")?;
    let mut ours_cls = Vec::new();
    let mut torch_cls = Vec::new();
    for rep in 0..PREDICT_REPEATS {
        let cache = work.join(format!("cls-cache-{rep}"));
        let csv = work.join(format!("cls-ours-{rep}.csv"));
        for old in [&cache, &csv, &csv.with_extension("full.csv")] {
            remove_old(old)?;
        }
        let mut c = ours(spec);
        c.args(["cls", "predict", "--model"]).arg(&cls_run).arg("--manifest").arg(&cls_manifest);
        c.args(["--tta", "fixed8", "--out"]).arg(&csv);
        c.arg("--cache").arg(&cache);
        ours_cls.push(run_measured(c, "lesion cls predict")?);
        let mut c = reference(spec, "cls-tta");
        c.arg("--manifest")
            .arg(&cls_manifest)
            .arg("--out")
            .arg(work.join(format!("cls-torch-{rep}.csv")));
        c.args(["--images", &images.to_string(), "--size", &spec.cls_size.to_string()]);
        c.args(["--batch", &CLS_BATCH.to_string(), "--workers", &spec.workers.to_string()]);
        torch_cls.push(run_measured(c, "PyTorch cls-tta")?);
    }
    let cls_tta =
        vec![one_shot("lesion", images, &ours_cls), one_shot("PyTorch", images, &torch_cls)];
    let describe =
        |p: Precision, cl: bool| format!("{}{}", p.name(), if cl { ", channels-last" } else { "" });
    Ok(E2eReport {
        ours: describe(spec.precision, spec.channels_last),
        reference: describe(spec.reference_precision, spec.reference_channels_last),
        threads: spec.threads,
        workers: spec.workers,
        train,
        predict,
        cls_tta,
        load_before,
    })
}

/// Removes what an earlier bench run left at `path` (a file or a folder of this bench's).
fn remove_old(path: &Path) -> Result<()> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else if path.exists() {
        std::fs::remove_file(path)
    } else {
        Ok(())
    };
    removed.map_err(|e| TrainError::file(path, e))
}

/// The one mask a prediction wrote (a file, or the only PNG in a folder) has the image's size.
fn check_mask(out: &Path, width: u32, height: u32) -> Result<()> {
    let file = if out.is_dir() {
        let pngs: Vec<PathBuf> = std::fs::read_dir(out)
            .map_err(|e| TrainError::file(out, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "png"))
            .collect();
        match pngs.as_slice() {
            [one] => one.clone(),
            _ => {
                return Err(TrainError::file(
                    out,
                    format!("{} masks written, expected 1", pngs.len()),
                ))
            }
        }
    } else {
        out.to_path_buf()
    };
    let dims = image::image_dimensions(&file).map_err(|e| TrainError::file(&file, e))?;
    if dims != (width, height) {
        return Err(TrainError::file(
            &file,
            format!("mask is {}x{}, the image {width}x{height}", dims.0, dims.1),
        ));
    }
    Ok(())
}

/// Ratio of our figure to PyTorch's (higher is better for rates).
fn ratio(ours: f64, theirs: f64) -> f64 {
    ours / theirs
}

/// The report as a Markdown table, ratios against the PyTorch row.
pub fn markdown(r: &E2eReport) -> String {
    let mut s = format!("ours: {}; PyTorch: {}\n\n", r.ours, r.reference);
    let torch = r.train.iter().find(|t| t.side.starts_with("PyTorch"));
    s.push_str("| (a) seg training | first epoch s (img/s) | steady epoch s (img/s) | ratio first / steady | wait share first / steady | peak RSS MiB |\n|---|---|---|---|---|---|\n");
    for t in &r.train {
        let (rf, rs) = match torch {
            Some(p) => (
                format!("{:.2}×", ratio(t.first_epoch_images_per_s, p.first_epoch_images_per_s)),
                match (t.steady_images_per_s, p.steady_images_per_s) {
                    (Some(a), Some(b)) => format!("{:.2}×", ratio(a, b)),
                    _ => "–".into(),
                },
            ),
            None => ("–".into(), "–".into()),
        };
        let pct = |v: Option<f64>| v.map(|v| format!("{:.1} %", 100.0 * v)).unwrap_or("–".into());
        s.push_str(&format!(
            "| {} | {:.2} ({:.1}) | {} | {rf} / {rs} | {} / {} | {:.0} |\n",
            t.side,
            t.first_epoch_s,
            t.first_epoch_images_per_s,
            match (t.steady_epoch_s, t.steady_images_per_s) {
                (Some(e), Some(i)) => format!("{e:.2} ({i:.1})"),
                _ => "–".into(),
            },
            pct(t.first_epoch_wait_share),
            pct(t.steady_wait_share),
            t.peak_rss_mib
        ));
    }
    for (title, rows) in [("(b) cold start → 1 mask", &r.predict), ("(c) cls TTA ×8", &r.cls_tta)]
    {
        s.push_str(&format!("\n| {title} | wall s (median of {PREDICT_REPEATS}) | images/s | ratio | peak RSS MiB |\n|---|---|---|---|---|\n"));
        let torch = rows.iter().find(|o| o.side.starts_with("PyTorch"));
        for o in rows.iter() {
            let rr =
                torch.map(|p| format!("{:.2}×", ratio(p.wall_s, o.wall_s))).unwrap_or("–".into());
            s.push_str(&format!(
                "| {} | {:.2} | {:.2} | {rr} | {:.0} |\n",
                o.side, o.wall_s, o.images_per_s, o.peak_rss_mib
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sampler counts a child's own children: a shell holding a `sleep` and a Python
    /// allocating ~100 MiB shows more than the Python alone would.
    #[test]
    fn measured_runs_time_lines_and_sum_the_process_tree() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo start; sleep 0.3; echo end"]);
        let run = run_measured(c, "sh").unwrap();
        let start = run.time_of("start").unwrap();
        let end = run.time_of("end").unwrap();
        // Line times are when a reader thread read the line: on a loaded machine a starved
        // reader may read both at once, so only their order and the wall time are certain.
        assert!(start <= end && end <= run.wall_s, "{start} {end} {}", run.wall_s);
        assert!(run.wall_s >= 0.3, "{}", run.wall_s);
        assert!(run.peak_rss_mib > 0.0);
        let mut c = Command::new("sh");
        c.args(["-c", "exit 3"]);
        let e = run_measured(c, "failing").unwrap_err().to_string();
        assert!(e.contains("failing failed"), "{e}");
    }

    #[test]
    fn tree_rss_includes_descendants() {
        // The tree is polled until both sleeps have been forked, so a slow machine only makes
        // the test wait; the shell leads its own process group, killed whole at the end so
        // that no sleep outlives the test.
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let own = || -> u64 {
            std::fs::read_to_string(format!("/proc/{}/status", child.id()))
                .unwrap()
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        let start = std::time::Instant::now();
        let (mut tree, mut shell) = (tree_rss_kib(child.id()), own());
        while tree <= shell && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
            (tree, shell) = (tree_rss_kib(child.id()), own());
        }
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = child.wait();
        assert!(tree > shell, "the two sleeps count: tree {tree} kB, shell alone {shell} kB");
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
