//! `lesion bench seg`: train-step and inference throughput of our nets, measured side by side
//! with the PyTorch reference script `bench/seg_reference.py` (same nets, same shapes, same
//! thread count), and their ratio.
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use lesion_models::{Arch, SegNetConfig};
use lesion_train::device::{device_name, parse_device};
use lesion_train::loss::LossKind;
use lesion_train::optim::{Adam, AdamConfig};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::GlobalOpts;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Segmentation nets: train step (forward, dice loss, backward, Adam) and inference.
    Seg(SegBenchArgs),
    /// Near-duplicate detection: quality on transformed copies, hashing and search speed.
    Dedup(crate::data::DedupBenchArgs),
}

#[derive(Args)]
pub struct SegBenchArgs {
    /// Comma-separated architectures.
    #[arg(long, default_value = "unet,unet-bn")]
    pub archs: String,
    #[arg(long, default_value_t = 128)]
    pub size: i64,
    #[arg(long, default_value_t = 8)]
    pub batch: i64,
    /// `unet` base width.
    #[arg(long, default_value_t = 32)]
    pub base: i64,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Python with torch for the reference (default $LESION_PYTHON, then python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The reference script.
    #[arg(long, default_value = "bench/seg_reference.py")]
    pub script: PathBuf,
    /// Skip the PyTorch reference.
    #[arg(long)]
    pub no_reference: bool,
    /// Also print a Markdown table.
    #[arg(long)]
    pub markdown: bool,
}

/// One measurement, as both sides report it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegBench {
    pub arch: String,
    pub train_images_per_s: f64,
    pub infer_images_per_s: f64,
    pub peak_rss_mib: Option<f64>,
}

/// Peak resident memory of this process so far (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

pub fn bench_one(arch: Arch, a: &SegBenchArgs, device: Device) -> Result<SegBench> {
    tch::manual_seed(0);
    let cfg = SegNetConfig { arch, input_size: a.size, base: a.base, ..Default::default() };
    let vs = VarStore::new(device);
    let net = cfg.build(&vs.root())?;
    let x = Tensor::randn([a.batch, 3, a.size, a.size], (Kind::Float, device));
    let y = Tensor::rand([a.batch, 1, a.size, a.size], (Kind::Float, device)).gt(0.5).to_kind(Kind::Float);
    let mut adam = Adam::new(AdamConfig { lr: 1e-5, ..Default::default() });
    let mut step = || {
        let loss = LossKind::Dice.compute(&net.forward_t(&x, true), &y);
        Adam::zero_grad(&vs);
        loss.backward();
        adam.step(&vs);
    };
    for _ in 0..a.warmup {
        step();
    }
    sync(device);
    let t = Instant::now();
    for _ in 0..a.steps {
        step();
    }
    sync(device);
    let train = (a.steps as i64 * a.batch) as f64 / t.elapsed().as_secs_f64();
    let infer = tch::no_grad(|| {
        for _ in 0..a.warmup {
            let _ = net.forward_t(&x, false);
        }
        sync(device);
        let t = Instant::now();
        for _ in 0..a.steps {
            let _ = net.forward_t(&x, false);
        }
        sync(device);
        (a.steps as i64 * a.batch) as f64 / t.elapsed().as_secs_f64()
    });
    Ok(SegBench { arch: arch.name().into(), train_images_per_s: train, infer_images_per_s: infer, peak_rss_mib: peak_rss_mib() })
}

fn reference(arch: Arch, a: &SegBenchArgs) -> Result<SegBench> {
    let python = a
        .python
        .clone()
        .or_else(|| std::env::var_os("LESION_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let out = Command::new(&python)
        .arg(&a.script)
        .args(["--arch", arch.name(), "--size", &a.size.to_string(), "--batch", &a.batch.to_string()])
        .args(["--base", &a.base.to_string(), "--warmup", &a.warmup.to_string(), "--steps", &a.steps.to_string()])
        .args(["--threads", &tch::get_num_threads().to_string(), "--device", &a.device])
        .output()
        .with_context(|| format!("running {} {}", python.display(), a.script.display()))?;
    if !out.status.success() {
        bail!("{} failed: {}", a.script.display(), String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("");
    serde_json::from_str(last).with_context(|| format!("{}: unexpected output {last:?}", a.script.display()))
}

pub fn run(cmd: BenchCommand, _g: &GlobalOpts) -> Result<()> {
    let a = match cmd {
        BenchCommand::Seg(a) => a,
        BenchCommand::Dedup(d) => return crate::data::bench_dedup(d),
    };
    let device = parse_device(&a.device)?;
    let archs: Vec<Arch> = a.archs.split(',').map(|s| s.trim().parse::<Arch>()).collect::<Result<_, _>>()?;
    println!(
        "segmentation benchmark: {}², batch {}, {} warm-up + {} timed steps, {} torch threads, device {}",
        a.size,
        a.batch,
        a.warmup,
        a.steps,
        tch::get_num_threads(),
        device_name(device)
    );
    let mut rows = Vec::new();
    for arch in archs {
        let ours = bench_one(arch, &a, device)?;
        let theirs = if a.no_reference { None } else { Some(reference(arch, &a)?) };
        println!(
            "{:11} train {:7.2} img/s{}   inference {:7.2} img/s{}{}",
            arch.name(),
            ours.train_images_per_s,
            theirs.as_ref().map(|t| format!(" (PyTorch {:.2}, ratio {:.2})", t.train_images_per_s, ours.train_images_per_s / t.train_images_per_s)).unwrap_or_default(),
            ours.infer_images_per_s,
            theirs.as_ref().map(|t| format!(" (PyTorch {:.2}, ratio {:.2})", t.infer_images_per_s, ours.infer_images_per_s / t.infer_images_per_s)).unwrap_or_default(),
            ours.peak_rss_mib.map(|m| format!("   peak RSS {m:.0} MiB")).unwrap_or_default(),
        );
        rows.push((ours, theirs));
    }
    if a.markdown {
        println!("\n| net | lesion train img/s | PyTorch train img/s | ratio | lesion infer img/s | PyTorch infer img/s | ratio |\n|---|---|---|---|---|---|---|");
        for (o, t) in &rows {
            let (tt, ti) = t.as_ref().map(|t| (t.train_images_per_s, t.infer_images_per_s)).unwrap_or((f64::NAN, f64::NAN));
            println!(
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                o.arch, o.train_images_per_s, tt, o.train_images_per_s / tt, o.infer_images_per_s, ti, o.infer_images_per_s / ti
            );
        }
    }
    Ok(())
}
