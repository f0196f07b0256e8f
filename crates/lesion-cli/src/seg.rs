//! `lesion seg …`.
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use lesion_core::run::{self, RunConfig};
use lesion_data::import::{import, ImportOptions, SourceKind};
use lesion_data::manifest::{Manifest, ManifestRow};
use lesion_models::{Arch, SegNetConfig};
use lesion_seg::predict::{self, PostProcess, PredictOptions, SegTta};
use lesion_seg::trainer::{self, TrainRequest};
use lesion_seg::SegTrainConfig;

use crate::{GlobalOpts, TrainRunArgs};

/// Where `seg train` puts a new run unless told.
const DEFAULT_RUN: &str = "runs/seg";

#[derive(Subcommand)]
pub enum SegCommand {
    /// Print a training config with every default written out (edit it, pass it to `train`).
    Config {
        /// Start from this architecture's defaults (unet | codella-fc | unet-bn | vgg16-unet |
        /// lite-unet).
        #[arg(long, default_value = "unet")]
        arch: Arch,
    },
    /// Train a segmentation net; writes a run folder (config, split, metrics, curves, checkpoints).
    Train(TrainArgs),
    /// Predict ISIC submission masks with one model or an ensemble (probabilities averaged).
    Predict(PredictArgs),
    /// Score predicted masks against the truth exactly as the official ISIC scorer does.
    Eval(EvalArgs),
    /// Write the ground-truth masks of a manifest (optionally only a run's validation images)
    /// as ISIC-style single-channel 0/255 PNGs (`<id>_segmentation.png`), the form the scorer
    /// reads; e.g. PH2's 24-bit BMP masks.
    Truth {
        #[arg(long)]
        manifest: PathBuf,
        /// Only the validation images of this run folder's split.
        #[arg(long)]
        split_of: Option<PathBuf>,
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Build a net and print its parameter count (and layer shapes with --verbose).
    Params {
        /// unet | codella-fc | unet-bn | vgg16-unet | lite-unet (lite0, default decoder)
        #[arg(long, default_value = "unet")]
        arch: Arch,
        #[arg(long, default_value_t = 128)]
        input_size: i64,
        #[arg(long, default_value_t = 1.0)]
        width: f64,
        #[arg(long)]
        verbose: bool,
    },
}

#[derive(Args)]
pub struct TrainArgs {
    /// The run: a manifest of images with masks, a config, a folder (or --resume).
    #[command(flatten)]
    pub run: TrainRunArgs,
    /// Override train.epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override train.train_on_all (no validation split; the paper's final models).
    #[arg(long)]
    pub train_on_all: bool,
}

#[derive(Args)]
pub struct PredictArgs {
    /// A run folder (or checkpoint file); repeat for an ensemble.
    #[arg(long = "model", required = true)]
    pub models: Vec<PathBuf>,
    /// Images to segment: a manifest CSV…
    #[arg(long, conflicts_with = "images")]
    pub manifest: Option<PathBuf>,
    /// …or a folder of images.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Only the validation images of this run folder's split (with --manifest).
    #[arg(long)]
    pub split_of: Option<PathBuf>,
    /// Output folder for `<id>_segmentation.png`.
    #[arg(long, short)]
    pub out: PathBuf,
    /// cpu | cuda | cuda:N | auto (prediction reads images at their own size: no cache).
    #[arg(long, default_value = "cpu", value_parser = crate::parse_device)]
    pub device: tch::Device,
    /// Keep only the largest connected component.
    #[arg(long)]
    pub largest_component: bool,
    /// Fill holes inside the lesion.
    #[arg(long)]
    pub fill_holes: bool,
    /// Also write overlays (prediction contour green, truth magenta) to OUT/overlays.
    #[arg(long)]
    pub overlays: bool,
    /// Test-time augmentation for every model: none | flip (mean probability over the four
    /// flips). Default: each run's `predict.tta`.
    #[arg(long)]
    pub tta: Option<SegTta>,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Folder of ground-truth masks (e.g. ISIC-2017_Validation_Part1_GroundTruth).
    pub truth: PathBuf,
    /// Folder of predicted masks.
    pub pred: PathBuf,
    /// Per-image CSV (default PRED/../scores.csv).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Summary JSON (default PRED/../scores.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run_seg(cmd: SegCommand, g: &GlobalOpts) -> Result<()> {
    match cmd {
        SegCommand::Config { arch } => {
            let mut cfg = SegTrainConfig::default();
            cfg.model.arch = arch;
            print!("{}", cfg.to_toml()?);
            Ok(())
        }
        SegCommand::Train(a) => train(a, g),
        SegCommand::Predict(a) => predict_cmd(a, g),
        SegCommand::Eval(a) => eval(a),
        SegCommand::Truth { manifest, split_of, out } => {
            let mut rows = Manifest::read_csv(&manifest)?.rows;
            if let Some(run) = &split_of {
                rows = run::validation_rows(rows, run, |r| r.id.as_str())?;
            }
            let n = predict::write_truth_masks(&rows, &out)?;
            println!("{n} truth masks -> {}", out.display());
            Ok(())
        }
        SegCommand::Params { arch, input_size, width, verbose } => {
            let cfg = SegNetConfig { arch, input_size, width, ..Default::default() };
            let summary = lesion_models::summarize(&cfg)?;
            if verbose {
                for (name, shape) in &summary.variables {
                    println!("{name:40} {shape:?}");
                }
            }
            println!(
                "{}: {} trainable parameters at {input_size}², width {width}",
                cfg.arch, summary.trainable_parameters
            );
            Ok(())
        }
    }
}

fn train(a: TrainArgs, g: &GlobalOpts) -> Result<()> {
    let (run_dir, mut cfg, manifest_path) = a.run.resolve::<SegTrainConfig>(DEFAULT_RUN)?;
    if let Some(e) = a.epochs {
        cfg.train.epochs = e;
    }
    if a.train_on_all {
        cfg.train.train_on_all = true;
    }
    let manifest = Manifest::read_csv(&manifest_path)?;
    let rows: Vec<ManifestRow> =
        manifest.rows.into_iter().filter(|r| r.mask_path.is_some()).collect();
    if rows.is_empty() {
        bail!("{}: no image with a mask", manifest_path.display());
    }
    let cache = a.run.runtime.cache();
    let run = a.run.run_options(run_dir, manifest_path, g);
    let outcome = trainer::train(TrainRequest { cfg, rows: &rows, cache: &cache, run })?;
    println!(
        "run complete: {} ({} epochs, best epoch {}{}, {:.0}s)",
        outcome.run_dir.display(),
        outcome.epochs,
        outcome.best_epoch,
        outcome
            .best_val_jaccard
            .map(|j| format!(", validation Jaccard {j:.4}"))
            .unwrap_or_default(),
        outcome.seconds
    );
    Ok(())
}

fn predict_cmd(a: PredictArgs, g: &GlobalOpts) -> Result<()> {
    let device = a.device;
    warn_incomplete(&a.models);
    let mut models =
        a.models.iter().map(|m| predict::load_model(m, device)).collect::<Result<Vec<_>, _>>()?;
    if let Some(tta) = a.tta {
        for m in &mut models {
            m.tta = tta;
        }
    }
    let mut rows = match (&a.manifest, &a.images) {
        (Some(m), _) => Manifest::read_csv(m)?.rows,
        (None, Some(dir)) => {
            import(SourceKind::Folder, dir, &ImportOptions::default())?.manifest.rows
        }
        (None, None) => bail!("give --manifest or --images"),
    };
    if let Some(run) = &a.split_of {
        rows = run::validation_rows(rows, run, |r| r.id.as_str())?;
    }
    let opts = PredictOptions {
        post: PostProcess { largest_component: a.largest_component, fill_holes: a.fill_holes },
        overlays: a.overlays,
        progress: g.progress(),
    };
    let written = predict::predict_rows(&models, &rows, &a.out, device, &opts)?;
    println!("{} masks ({}-model ensemble) -> {}", written.len(), models.len(), a.out.display());
    Ok(())
}

/// Says loudly (stderr) which models come from runs without `COMPLETE.json`. A warning, not a
/// refusal: their best checkpoint is a whole file (checkpoints are written atomically), and
/// predicting with it while a run trains is a fair way to look at it; what must not happen is
/// to take it silently for the finished model. `lesion export` refuses incomplete runs, so
/// none ends up in a bundle.
pub fn warn_incomplete(models: &[PathBuf]) {
    for m in models {
        if let Some(notice) = run::incomplete_notice(m) {
            eprintln!("warning: {notice}");
        }
    }
}

fn eval(a: EvalArgs) -> Result<()> {
    let ev = lesion_metrics::seg::evaluate_dirs(&a.truth, &a.pred)?;
    let base = a.pred.parent().unwrap_or(Path::new("."));
    let csv = a.csv.unwrap_or_else(|| base.join("scores.csv"));
    let json = a.json.unwrap_or_else(|| base.join("scores.json"));
    ev.write_csv(&csv)?;
    ev.write_json(&json)?;
    print_scores(&ev);
    println!("per-image scores: {}\nsummary: {}", csv.display(), json.display());
    Ok(())
}

pub fn print_scores(ev: &lesion_metrics::seg::SegEvaluation) {
    let m = &ev.mean;
    println!("{} images", ev.per_image.len());
    println!("  jaccard            {:.4}", m.jaccard);
    println!("  threshold_jaccard  {:.4}", m.threshold_jaccard);
    println!("  dice               {:.4}", m.dice);
    println!("  accuracy           {:.4}", m.accuracy);
    println!("  sensitivity        {:.4}", m.sensitivity);
    println!("  specificity        {:.4}", m.specificity);
}
