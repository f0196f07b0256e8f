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
    /// Classifier (EfficientNet-Lite): train step (forward, cross-entropy, backward, Adam),
    /// inference, and test-time-augmentation throughput.
    Cls(ClsBenchArgs),
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
    let step = || {
        let loss = LossKind::Dice.compute(&net.forward_t(&x, true), &y);
        Adam::zero_grad(&vs);
        loss.backward();
        adam.step(&vs);
    };
    let images = (a.steps as i64 * a.batch) as f64;
    let train = images / timed(device, a.warmup, a.steps, step);
    let infer = images
        / tch::no_grad(|| {
            timed(device, a.warmup, a.steps, || {
                let _ = net.forward_t(&x, false);
            })
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
        BenchCommand::Cls(c) => return run_cls(c),
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

#[derive(Args)]
pub struct ClsBenchArgs {
    /// EfficientNet-Lite variant: lite0, lite1 or lite2.
    #[arg(long, default_value = "lite0")]
    pub variant: String,
    #[arg(long, default_value_t = 224)]
    pub size: i64,
    #[arg(long, default_value_t = 16)]
    pub batch: i64,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Replicas per image for the TTA measurement (one batch of this many per image).
    #[arg(long, default_value_t = 50)]
    pub tta: i64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Python with torch for the reference (default $LESION_PYTHON, then python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The reference script.
    #[arg(long, default_value = "bench/cls_reference.py")]
    pub script: PathBuf,
    /// Skip the PyTorch reference.
    #[arg(long)]
    pub no_reference: bool,
    /// Also print a Markdown table.
    #[arg(long)]
    pub markdown: bool,
}

/// Classes of the benchmark head (melanoma, keratosis, nevus).
const CLS_BENCH_CLASSES: i64 = 3;

/// One classifier measurement, as both sides report it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClsBench {
    pub variant: String,
    pub train_images_per_s: f64,
    pub infer_images_per_s: f64,
    /// Original images per second, each seen as `--tta` replicas in one batch.
    pub tta_images_per_s: f64,
}

fn parse_lite(s: &str) -> Result<lesion_models::efficientnet::LiteVariant> {
    use lesion_models::efficientnet::LiteVariant;
    match s.trim().trim_start_matches("efficientnet-") {
        "lite0" => Ok(LiteVariant::Lite0),
        "lite1" => Ok(LiteVariant::Lite1),
        "lite2" => Ok(LiteVariant::Lite2),
        other => bail!("unknown variant '{other}' (expected lite0, lite1 or lite2)"),
    }
}

/// Times `f` over `warmup` untimed and `steps` timed calls; returns the timed seconds.
fn timed(device: Device, warmup: usize, steps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    sync(device);
    let t = Instant::now();
    for _ in 0..steps {
        f();
    }
    sync(device);
    t.elapsed().as_secs_f64()
}

pub fn bench_cls_one(a: &ClsBenchArgs, device: Device) -> Result<ClsBench> {
    use lesion_models::efficientnet::{EfficientNetConfig, HeadSpec};
    use tch::nn::ModuleT;
    if a.steps == 0 || a.batch < 1 || a.tta < 1 {
        bail!("--steps, --batch and --tta must be positive");
    }
    let variant = parse_lite(&a.variant)?;
    tch::manual_seed(0);
    let cfg = EfficientNetConfig { variant, head: HeadSpec::Classes(CLS_BENCH_CLASSES), image_size: Some(a.size), ..Default::default() };
    let vs = VarStore::new(device);
    let net = cfg.build(&vs.root())?;
    let x = Tensor::randn([a.batch, 3, a.size, a.size], (Kind::Float, device));
    let y = Tensor::randint(CLS_BENCH_CLASSES, [a.batch], (Kind::Int64, device));
    let img = Tensor::rand([1, 3, a.size, a.size], (Kind::Float, device));
    let mut adam = Adam::new(AdamConfig { lr: 1e-5, ..Default::default() });
    let secs = timed(device, a.warmup, a.steps, || {
        let loss = net.forward_t(&x, true).cross_entropy_for_logits(&y);
        Adam::zero_grad(&vs);
        loss.backward();
        adam.step(&vs);
    });
    let train = (a.steps as i64 * a.batch) as f64 / secs;
    let (infer, tta) = tch::no_grad(|| {
        let s = timed(device, a.warmup, a.steps, || {
            let _ = net.forward_t(&x, false);
        });
        let infer = (a.steps as i64 * a.batch) as f64 / s;
        // As cls::tta: the replicas of one image form one batch; softmax, pooled by mean.
        let s = timed(device, a.warmup, a.steps, || {
            let batch = img.repeat([a.tta, 1, 1, 1]);
            let _ = net.forward_t(&batch, false).softmax(1, Kind::Float).mean_dim([0i64].as_slice(), false, Kind::Float);
        });
        (infer, a.steps as f64 / s)
    });
    Ok(ClsBench { variant: a.variant.clone(), train_images_per_s: train, infer_images_per_s: infer, tta_images_per_s: tta })
}

fn cls_reference(a: &ClsBenchArgs) -> Result<ClsBench> {
    let python = a
        .python
        .clone()
        .or_else(|| std::env::var_os("LESION_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let out = Command::new(&python)
        .arg(&a.script)
        .args(["--variant", a.variant.trim().trim_start_matches("efficientnet-"), "--size", &a.size.to_string(), "--batch", &a.batch.to_string()])
        .args(["--warmup", &a.warmup.to_string(), "--steps", &a.steps.to_string(), "--tta", &a.tta.to_string()])
        .args(["--classes", &CLS_BENCH_CLASSES.to_string()])
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

fn run_cls(a: ClsBenchArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let variant = parse_lite(&a.variant)?;
    println!(
        "classification benchmark: {} ({} classes), {}², batch {}, TTA {} replicas, {} warm-up + {} timed steps, {} torch threads, device {}",
        variant.name(),
        CLS_BENCH_CLASSES,
        a.size,
        a.batch,
        a.tta,
        a.warmup,
        a.steps,
        tch::get_num_threads(),
        device_name(device)
    );
    let ours = bench_cls_one(&a, device)?;
    let theirs = if a.no_reference { None } else { Some(cls_reference(&a)?) };
    let cmp = |o: f64, t: Option<f64>| t.map(|t| format!(" (PyTorch {t:.2}, ratio {:.2})", o / t)).unwrap_or_default();
    println!(
        "{:18} train {:7.2} img/s{}   inference {:7.2} img/s{}   TTA×{} {:6.2} img/s{}{}",
        variant.name(),
        ours.train_images_per_s,
        cmp(ours.train_images_per_s, theirs.as_ref().map(|t| t.train_images_per_s)),
        ours.infer_images_per_s,
        cmp(ours.infer_images_per_s, theirs.as_ref().map(|t| t.infer_images_per_s)),
        a.tta,
        ours.tta_images_per_s,
        cmp(ours.tta_images_per_s, theirs.as_ref().map(|t| t.tta_images_per_s)),
        peak_rss_mib().map(|m| format!("   peak RSS {m:.0} MiB")).unwrap_or_default(),
    );
    if a.markdown {
        let nan = f64::NAN;
        let (tt, ti, tx) = theirs.as_ref().map(|t| (t.train_images_per_s, t.infer_images_per_s, t.tta_images_per_s)).unwrap_or((nan, nan, nan));
        println!("\n| measure | lesion img/s | PyTorch img/s | ratio |\n|---|---|---|---|");
        for (what, o, t) in [
            (format!("train (batch {})", a.batch), ours.train_images_per_s, tt),
            (format!("inference (batch {})", a.batch), ours.infer_images_per_s, ti),
            (format!("TTA ×{} (originals)", a.tta), ours.tta_images_per_s, tx),
        ] {
            println!("| {} {what} | {o:.2} | {t:.2} | {:.2} |", variant.name(), o / t);
        }
    }
    Ok(())
}
