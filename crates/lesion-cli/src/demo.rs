//! `lesion demo`: a real end-to-end run. Without --data it draws a seeded synthetic
//! dermoscopy set (skin, vignette, hairs, irregular pigmented lesions with exact masks);
//! with --data it imports a real data set (PH2, ISIC, or a folder). Then it trains a small
//! U-Net on the CPU, predicts the held-out images at their original size, scores them as the
//! official ISIC scorer does, and prints where everything is.
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use lesion_data::import::ImportOptions;
use lesion_data::manifest::{Manifest, ManifestRow};
use lesion_data::synth::{self, SynthConfig};
use lesion_models::Arch;
use lesion_train::device::parse_device;
use lesion_train::predict::{self, PredictOptions};
use lesion_train::trainer::{self, TrainRequest};
use lesion_train::SegTrainConfig;

use crate::GlobalOpts;

/// Marks a folder as the demo's own, so that a rerun may replace it.
const MARKER: &str = ".lesion-demo";
/// Side of the synthetic images (they are resized to --size for training).
const SYNTH_SIDE: u32 = 256;

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
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// The demo's training recipe: a small U-Net that learns in minutes on two cores.
pub fn demo_config(a: &DemoArgs) -> SegTrainConfig {
    let mut cfg = SegTrainConfig::default();
    cfg.model.arch = Arch::Unet;
    cfg.model.input_size = a.size;
    cfg.model.base = a.base;
    cfg.model.dropout = 0.1;
    cfg.train.epochs = a.epochs;
    cfg.train.batch_size = 8;
    cfg.train.seed = a.seed;
    cfg.adam.lr = 2e-3;
    cfg.data.split_seed = a.seed;
    cfg
}

fn prepare_out(out: &Path) -> Result<()> {
    if out.exists() {
        let empty = std::fs::read_dir(out)?.next().is_none();
        if !empty && !out.join(MARKER).exists() {
            bail!("{}: exists and was not made by `lesion demo`; pick another --out", out.display());
        }
        std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join(MARKER), b"made by lesion demo\n")?;
    Ok(())
}

pub fn run(a: DemoArgs, g: &GlobalOpts) -> Result<()> {
    let t0 = Instant::now();
    let device = parse_device(&a.device)?;
    prepare_out(&a.out)?;
    let manifest_path = a.out.join("manifest.csv");
    let rows: Vec<ManifestRow> = match &a.data {
        None => {
            println!("[1/5] drawing {} synthetic dermoscopy images ({SYNTH_SIDE}×{SYNTH_SIDE})", a.images);
            let cfg = SynthConfig { count: a.images, width: SYNTH_SIDE, height: SYNTH_SIDE, seed: a.seed };
            synth::generate(&cfg, &a.out.join("data"))?.rows
        }
        Some(root) => {
            println!("[1/5] importing {}", root.display());
            let opts = ImportOptions { skip_bad: true, require_masks: true, ..Default::default() };
            crate::data::import_any("auto", root, &opts, g)?.manifest.rows
        }
    };
    if rows.len() < 10 {
        bail!("need at least 10 images with masks, found {}", rows.len());
    }
    Manifest::new(rows.clone()).write_csv(&manifest_path)?;

    let cfg = demo_config(&a);
    let run_dir = a.out.join("run");
    println!(
        "[2/5] training a U-Net (base {}, {}², {} epochs) on {} images, {} held out",
        a.base,
        a.size,
        a.epochs,
        rows.len() - (rows.len() as f64 * cfg.data.val_fraction).round() as usize,
        (rows.len() as f64 * cfg.data.val_fraction).round() as usize
    );
    let cache = lesion_data::cache::PreprocessCache::new(&a.out.join("cache"));
    let outcome = trainer::train(TrainRequest {
        cfg,
        rows: &rows,
        run_dir: run_dir.clone(),
        device,
        cache: &cache,
        resume: false,
        weights_cache: crate::weights_cache(),
        command: std::env::args().collect(),
        progress: !g.quiet,
        manifest: Some(manifest_path.clone()),
    })?;

    println!("[3/5] predicting the held-out images at their original size");
    let val_rows = crate::seg::rows_of_val_split(rows, &run_dir)?;
    let model = predict::load_model(&run_dir, device)?;
    let pred_dir = a.out.join("pred");
    let opts = PredictOptions { overlays: true, progress: !g.quiet, ..Default::default() };
    predict::predict_rows(std::slice::from_ref(&model), &val_rows, &pred_dir, device, &opts)?;

    println!("[4/5] scoring with the official ISIC definitions");
    let truth_dir = a.out.join("truth");
    predict::write_truth_masks(&val_rows, &truth_dir)?;
    let ev = lesion_metrics::seg::evaluate_dirs(&truth_dir, &pred_dir)?;
    ev.write_csv(&a.out.join("scores.csv"))?;
    ev.write_json(&a.out.join("scores.json"))?;
    crate::seg::print_scores(&ev);

    println!("[5/5] done in {:.0}s (training {:.0}s, best epoch {})", t0.elapsed().as_secs_f64(), outcome.seconds, outcome.best_epoch);
    println!("outputs in {}:", a.out.display());
    println!("  manifest.csv         the imported images");
    println!("  run/                 config.toml, split.json, metrics.csv, curves.png, checkpoints/");
    println!("  pred/                ISIC submission masks (<id>_segmentation.png)");
    println!("  pred/overlays/       prediction (green) and truth (magenta) contours");
    println!("  scores.csv/.json     per-image and mean official metrics");
    Ok(())
}
