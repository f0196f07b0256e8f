//! `lesion bench seg|cls|dedup`: our throughput (measured by `lesion_seg::bench` /
//! `lesion_cls::bench`) side by side with the PyTorch reference scripts in `bench/` (same nets,
//! same shapes, same thread count), and their ratio.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use lesion_cls::bench::{self as cls_bench, ClsBenchSpec};
use lesion_core::device::{device_name, parse_device};
use lesion_core::precision::Precision;
use lesion_core::reference::{self, peak_rss_mib};
use lesion_models::efficientnet::LiteVariant;
use lesion_models::Arch;
use lesion_seg::bench::{self as seg_bench, SegBenchSpec};

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
    /// The whole pipeline against a PyTorch user's pipeline, both as processes timed from
    /// their start: segmentation training from the image files (cold cache; first and steady
    /// epochs; ours with batches in line and prefetched, with the data-wait share), a cold
    /// start to one mask at the image's size, classification TTA ×8 from the files; peak RSS
    /// of each process tree.
    E2e(E2eBenchArgs),
}

#[derive(Args)]
pub struct E2eBenchArgs {
    /// Images with masks (e.g. `lesion data import ph2 … -o ph2.csv`: PH2's 150 BMPs).
    #[arg(long)]
    pub manifest: PathBuf,
    /// The segmentation recipe whose net, input size, batch, optimiser and augmentation both
    /// sides use (its validation split is dropped: every image trains).
    #[arg(long, default_value = "configs/ph2-unet.toml")]
    pub seg_config: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// libtorch threads per side (0 = the cores).
    #[arg(long, default_value_t = 0)]
    pub torch_threads: usize,
    /// The PyTorch side's DataLoader worker processes (0 = the cores).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Our prefetch depth in the "after" run.
    #[arg(long, default_value_t = lesion_core::run::DEFAULT_PREFETCH)]
    pub prefetch: usize,
    /// (c): the manifest's first N images.
    #[arg(long, default_value_t = 50)]
    pub cls_images: usize,
    #[arg(long, default_value_t = 192)]
    pub cls_size: i64,
    /// Scratch folder (kept for inspection).
    #[arg(long, default_value = "bench-e2e")]
    pub work: PathBuf,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Python with torch (default $LESION_PYTHON, then python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    #[arg(long, default_value = lesion_pipeline::e2e::REFERENCE_SCRIPT)]
    pub script: PathBuf,
    /// Our forward passes' precision (both configs' `train.precision`).
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
    /// Our weights channels-last (`train.channels_last`).
    #[arg(long)]
    pub channels_last: bool,
    /// The PyTorch side's precision (default: ours, like for like).
    #[arg(long, value_enum)]
    pub reference_precision: Option<Precision>,
    /// The PyTorch side's layout: `same` as ours, or the user's default `contiguous`.
    #[arg(long, value_enum, default_value_t = ReferenceLayout::Same)]
    pub reference_layout: ReferenceLayout,
}

/// The memory layout of the PyTorch side of `bench e2e`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReferenceLayout {
    /// As ours (`--channels-last` or not).
    Same,
    /// PyTorch's default NCHW.
    Contiguous,
}

#[derive(Args)]
pub struct SegBenchArgs {
    /// Comma-separated architectures.
    #[arg(long, value_delimiter = ',', default_value = "unet,unet-bn")]
    pub archs: Vec<Arch>,
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
    #[command(flatten)]
    pub precision: PrecisionArgs,
    #[command(flatten)]
    pub reference: ReferenceArgs,
}

/// Numerics of both sides of a benchmark.
#[derive(Args)]
pub struct PrecisionArgs {
    /// Forward + loss under autocast at this precision (PyTorch: `torch.autocast`); fp16 also
    /// scales the loss (`torch.amp.GradScaler`).
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
    /// Channels-last (NHWC) weights and inputs (PyTorch: `memory_format=torch.channels_last`).
    #[arg(long)]
    pub channels_last: bool,
}

impl PrecisionArgs {
    fn describe(&self) -> String {
        let layout = if self.channels_last { "channels-last" } else { "NCHW" };
        format!("precision {}, {layout}", self.precision)
    }
}

/// The PyTorch side of a benchmark.
#[derive(Args)]
pub struct ReferenceArgs {
    /// cpu | cuda | cuda:N | auto
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Python with torch for the reference (default $LESION_PYTHON, then python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The reference script (default bench/seg_reference.py or bench/cls_reference.py).
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// Skip the PyTorch reference.
    #[arg(long)]
    pub no_reference: bool,
    /// Also print a Markdown table.
    #[arg(long)]
    pub markdown: bool,
}

impl ReferenceArgs {
    fn script(&self, default: &str) -> PathBuf {
        self.script.clone().unwrap_or_else(|| PathBuf::from(default))
    }
}

const SEG_REFERENCE: &str = "bench/seg_reference.py";
const CLS_REFERENCE: &str = "bench/cls_reference.py";

pub fn run(cmd: BenchCommand, _g: &GlobalOpts) -> Result<()> {
    let a = match cmd {
        BenchCommand::Seg(a) => a,
        BenchCommand::Dedup(d) => return crate::data::bench_dedup(d),
        BenchCommand::Cls(c) => return run_cls(c),
        BenchCommand::E2e(e) => return run_e2e(e),
    };
    let r = &a.reference;
    let device = parse_device(&r.device)?;
    println!(
        "segmentation benchmark: {}², batch {}, {}, {} warm-up + {} timed steps, {} torch threads, device {}",
        a.size,
        a.batch,
        a.precision.describe(),
        a.warmup,
        a.steps,
        tch::get_num_threads(),
        device_name(device)
    );
    let mut rows = Vec::new();
    let python = reference::python(r.python.as_deref());
    for &arch in &a.archs {
        let spec = SegBenchSpec {
            arch,
            size: a.size,
            batch: a.batch,
            base: a.base,
            warmup: a.warmup,
            steps: a.steps,
            precision: a.precision.precision,
            channels_last: a.precision.channels_last,
        };
        let ours = seg_bench::measure(&spec, device)?;
        let theirs = if r.no_reference {
            None
        } else {
            Some(seg_bench::reference(&spec, &python, &r.script(SEG_REFERENCE), &r.device)?)
        };
        println!(
            "{:11} train {:7.2} img/s{}   inference {:7.2} img/s{}{}",
            arch.name(),
            ours.train_images_per_s,
            theirs
                .as_ref()
                .map(|t| format!(
                    " (PyTorch {:.2}, ratio {:.2})",
                    t.train_images_per_s,
                    ours.train_images_per_s / t.train_images_per_s
                ))
                .unwrap_or_default(),
            ours.infer_images_per_s,
            theirs
                .as_ref()
                .map(|t| format!(
                    " (PyTorch {:.2}, ratio {:.2})",
                    t.infer_images_per_s,
                    ours.infer_images_per_s / t.infer_images_per_s
                ))
                .unwrap_or_default(),
            ours.peak_rss_mib.map(|m| format!("   peak RSS {m:.0} MiB")).unwrap_or_default(),
        );
        rows.push((ours, theirs));
    }
    if r.markdown {
        println!("\n| net | lesion train img/s | PyTorch train img/s | ratio | lesion infer img/s | PyTorch infer img/s | ratio |\n|---|---|---|---|---|---|---|");
        for (o, t) in &rows {
            let (tt, ti) = t
                .as_ref()
                .map(|t| (t.train_images_per_s, t.infer_images_per_s))
                .unwrap_or((f64::NAN, f64::NAN));
            println!(
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                o.arch,
                o.train_images_per_s,
                tt,
                o.train_images_per_s / tt,
                o.infer_images_per_s,
                ti,
                o.infer_images_per_s / ti
            );
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ClsBenchArgs {
    /// EfficientNet-Lite variant: lite0, lite1 or lite2.
    #[arg(long, default_value = "lite0", value_parser = parse_lite)]
    pub variant: LiteVariant,
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
    #[command(flatten)]
    pub precision: PrecisionArgs,
    #[command(flatten)]
    pub reference: ReferenceArgs,
}

fn parse_lite(s: &str) -> Result<LiteVariant> {
    match s.trim().trim_start_matches("efficientnet-") {
        "lite0" => Ok(LiteVariant::Lite0),
        "lite1" => Ok(LiteVariant::Lite1),
        "lite2" => Ok(LiteVariant::Lite2),
        other => bail!("unknown variant '{other}' (expected lite0, lite1 or lite2)"),
    }
}

fn run_cls(a: ClsBenchArgs) -> Result<()> {
    let r = &a.reference;
    let device = parse_device(&r.device)?;
    let variant = a.variant;
    println!(
        "classification benchmark: {} ({} classes), {}², batch {}, TTA {} replicas, {}, {} warm-up + {} timed steps, {} torch threads, device {}",
        variant.name(),
        lesion_cls::config::CLASSES,
        a.size,
        a.batch,
        a.tta,
        a.precision.describe(),
        a.warmup,
        a.steps,
        tch::get_num_threads(),
        device_name(device)
    );
    let spec = ClsBenchSpec {
        variant,
        size: a.size,
        batch: a.batch,
        warmup: a.warmup,
        steps: a.steps,
        tta: a.tta,
        precision: a.precision.precision,
        channels_last: a.precision.channels_last,
    };
    let ours = cls_bench::measure(&spec, device)?;
    let python = reference::python(r.python.as_deref());
    let theirs = if r.no_reference {
        None
    } else {
        Some(cls_bench::reference(&spec, &python, &r.script(CLS_REFERENCE), &r.device)?)
    };
    let cmp = |o: f64, t: Option<f64>| {
        t.map(|t| format!(" (PyTorch {t:.2}, ratio {:.2})", o / t)).unwrap_or_default()
    };
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
    if r.markdown {
        let nan = f64::NAN;
        let (tt, ti, tx) = theirs
            .as_ref()
            .map(|t| (t.train_images_per_s, t.infer_images_per_s, t.tta_images_per_s))
            .unwrap_or((nan, nan, nan));
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

fn run_e2e(a: E2eBenchArgs) -> Result<()> {
    use lesion_core::run::RunConfig;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let or_cores = |n: usize| if n == 0 { cores } else { n };
    let spec = lesion_pipeline::e2e::E2eSpec {
        lesion: std::env::current_exe()?,
        python: reference::python(a.python.as_deref()),
        script: a.script,
        manifest: a.manifest,
        seg_config: lesion_seg::SegTrainConfig::from_toml_file(&a.seg_config)?,
        epochs: a.epochs,
        threads: or_cores(a.torch_threads),
        workers: or_cores(a.workers),
        prefetch: a.prefetch,
        cls_images: a.cls_images,
        cls_size: a.cls_size,
        work: a.work,
        precision: a.precision,
        channels_last: a.channels_last,
        reference_precision: a.reference_precision.unwrap_or(a.precision),
        reference_channels_last: a.channels_last && a.reference_layout == ReferenceLayout::Same,
    };
    if spec.epochs < 2 {
        bail!("--epochs must be at least 2 (the steady epochs are those after the first)");
    }
    println!(
        "end-to-end benchmark: {} torch threads per side, {} DataLoader workers, {} epochs, load {}",
        spec.threads,
        spec.workers,
        spec.epochs,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    let report = lesion_pipeline::e2e::measure(&spec)?;
    println!("{}", lesion_pipeline::e2e::markdown(&report));
    if let Some(path) = a.json {
        lesion_core::run::write_json(&path, &report)?;
        println!("figures: {}", path.display());
    }
    Ok(())
}
