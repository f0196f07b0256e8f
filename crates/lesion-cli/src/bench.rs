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
