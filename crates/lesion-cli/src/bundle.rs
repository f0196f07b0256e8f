//! `lesion export` (run folders → a model bundle), `lesion predict --bundle` (a bundle →
//! masks and probabilities for new images) and `lesion crop` (out-of-fold lesion crops and
//! descriptors for segmentation-informed classification). The work is
//! `lesion_pipeline::{bundle, seg_informed}`'s.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lesion_cls::tta::{Pool, TtaMode};
use lesion_data::labels::LesionClass;
use lesion_data::manifest::Manifest;
use lesion_metrics::cls::OperatingPoint;
use lesion_pipeline::bundle::{
    self, Bundle, ClsSettings, DecisionThresholds, ExportRequest, SegSettings,
};
use lesion_pipeline::calibrate::{self, CalibrateRequest};
use lesion_pipeline::seg_informed::{self, CropRequest};
use lesion_seg::crop::CropSettings;
use lesion_seg::predict::{PostProcess, SegTta, THRESHOLD};

use crate::{GlobalOpts, RuntimeArgs};

/// Image ids named in the summary line of images with input concerns (all are in the file).
const SHOWN_CONCERNS: usize = 5;

#[derive(Args)]
pub struct ExportArgs {
    /// Segmentation run folders (complete); their probabilities are averaged.
    #[arg(long = "seg", num_args = 1..)]
    pub seg: Vec<PathBuf>,
    /// Classification run folders (complete); their probabilities are averaged.
    #[arg(long = "cls", num_args = 1..)]
    pub cls: Vec<PathBuf>,
    /// Or a complete `lesion stack train` folder: its components (CVs, SVM layers, runs) and
    /// meta-learner classify.
    #[arg(long, conflicts_with = "cls")]
    pub stack: Option<PathBuf>,
    /// The bundle folder to create (must not exist, or be empty).
    #[arg(long, short)]
    pub out: PathBuf,
    /// The classifiers were trained on lesion crops (`lesion crop`) with this margin: the
    /// bundle crops new images the same way from its own masks.
    #[arg(long)]
    pub crop_margin: Option<f64>,
    /// Classifier TTA: none | fixed8 | N random replicas.
    #[arg(long, default_value = "fixed8")]
    pub tta: TtaMode,
    /// avg | max | extreme.
    #[arg(long, default_value = "avg")]
    pub pool: Pool,
    #[arg(long, default_value_t = 0)]
    pub tta_seed: u64,
    /// Keep only the largest lesion component and fill holes in predicted masks.
    #[arg(long)]
    pub clean_masks: bool,
    /// A notice carried in the card (licence, provenance); repeatable.
    #[arg(long)]
    pub notice: Vec<String>,
    /// Also trace each net into `torchscript/<seg|cls>-<i>.pt` for `torch.jit.load`
    /// (TorchServe, Triton): input float32 N×3×S×S RGB on [0, 1], normalisation inside.
    #[arg(long)]
    pub torchscript: bool,
}

#[derive(Args)]
pub struct PredictArgs {
    /// The bundle (from `lesion export`); every file is checked against its card first.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Images to predict, as a manifest (`lesion data import folder DIR -o new.csv`).
    #[arg(long, conflicts_with = "images", required_unless_present = "images")]
    pub manifest: Option<PathBuf>,
    /// Or the image files themselves (id = file name without extension).
    pub images: Vec<PathBuf>,
    /// Output folder (new): `masks/`, `classification.csv`, `classification.full.csv`,
    /// `prediction.json`.
    #[arg(long, short)]
    pub out: PathBuf,
    /// A class that cannot occur among these images (repeatable; e.g. seborrheic-keratosis
    /// for PH2, which has melanomas and nevi only): each net's probabilities are renormalised
    /// over the other classes before the average (SVM heads: the class is zeroed); recorded in
    /// `prediction.json`.
    #[arg(long, value_parser = crate::cls::parse_class)]
    pub absent: Vec<LesionClass>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Args)]
pub struct CalibrateArgs {
    /// The bundle whose decision thresholds to fit (its bundle.json is rewritten, atomically).
    #[arg(long)]
    pub bundle: PathBuf,
    /// A `lesion predict --bundle` folder of this bundle on held-out images (never images
    /// its nets trained on: thresholds fitted there are optimistic).
    #[arg(long)]
    pub predictions: PathBuf,
    /// Their ISIC 2017 ground truth (image_id,melanoma,seborrheic_keratosis).
    #[arg(long)]
    pub truth: PathBuf,
    /// Melanoma operating point: youden | sensitivity=L | specificity=L.
    #[arg(long, default_value = "youden")]
    pub melanoma: OperatingPoint,
    /// Seborrheic keratosis operating point: youden | sensitivity=L | specificity=L.
    #[arg(long, default_value = "youden")]
    pub keratosis: OperatingPoint,
}

#[derive(Args)]
pub struct CropArgs {
    /// Segmentation run folders: each image is segmented by those that never trained on it
    /// (nor on its duplicate group); give one per fold for a training set.
    #[arg(long = "seg", num_args = 1.., required = true)]
    pub seg: Vec<PathBuf>,
    #[arg(long)]
    pub manifest: PathBuf,
    /// Output folder: `images/`, `masks/`, `manifest.csv`, `descriptors.csv`, `crops.json`.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Added on every side of the (squared) lesion box, as a fraction of its side.
    #[arg(long, default_value_t = CropSettings::default().margin)]
    pub margin: f64,
    /// Segmentation TTA (none | flip), overriding each run's own `predict.tta`.
    #[arg(long)]
    pub tta: Option<SegTta>,
    /// Only check an existing crop set's out-of-fold provenance against the runs' splits.
    #[arg(long)]
    pub verify: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn export(a: ExportArgs) -> Result<()> {
    let req = ExportRequest {
        seg_runs: a.seg,
        cls_runs: a.cls,
        out: a.out.clone(),
        segmentation: SegSettings {
            threshold: THRESHOLD,
            post: PostProcess { largest_component: a.clean_masks, fill_holes: a.clean_masks },
        },
        classification: ClsSettings {
            tta: a.tta,
            pool: a.pool,
            tta_seed: a.tta_seed,
            crop: a.crop_margin.map(|margin| CropSettings { margin }),
            thresholds: DecisionThresholds::default(),
        },
        notices: a.notice,
        torchscript: a.torchscript,
        stack: a.stack,
    };
    let card = bundle::export(&req)?;
    println!(
        "bundle -> {} ({} nets, {} files, commit {})",
        a.out.display(),
        card.models.len(),
        card.files.len(),
        card.source_commit.as_deref().unwrap_or("unknown")
    );
    for t in &card.torchscript {
        println!(
            "torchscript {} (max |traced - net| {:.1e}): {}",
            t.file, t.max_abs_diff_at_export, t.output
        );
    }
    if let Some(t) = &card.training_images {
        println!("{} training images recorded ({})", t.images, t.file);
        if !t.unrecorded.is_empty() {
            println!(
                "warning: no split.json behind {}: their training images are not in the record",
                t.unrecorded.join(", ")
            );
        }
    }
    Ok(())
}

pub fn predict(a: PredictArgs, g: &GlobalOpts) -> Result<()> {
    let b = Bundle::open(&a.bundle)?;
    for n in &b.card.notices {
        println!("notice: {n}");
    }
    let rows = match &a.manifest {
        Some(m) => Manifest::read_csv(m)?.rows,
        None => lesion_data::import::rows_for_images(&a.images)?,
    };
    let cache = a.runtime.cache();
    let options = bundle::PredictOptions { absent_classes: a.absent.clone() };
    let s =
        bundle::predict_with(&b, &rows, &a.out, &cache, a.runtime.device, g.progress(), &options)?;
    if !s.absent_classes.is_empty() {
        let names: Vec<&str> = s.absent_classes.iter().map(|c| c.name()).collect();
        println!("absent classes: {} (probabilities renormalised without them)", names.join(", "));
    }
    println!(
        "{} images: {} masks, {} classified ({} empty masks) in {:.1}s -> {}",
        s.images,
        s.masks_written,
        s.classified,
        s.empty_masks.len(),
        s.seconds,
        a.out.display()
    );
    if !s.input_concerns.is_empty() {
        let shown: Vec<&str> =
            s.input_concerns.iter().take(SHOWN_CONCERNS).map(|c| c.id.as_str()).collect();
        println!(
            "warning: {} of the {} images are greyscale or very small ({}{}): their probabilities are doubtful (each listed with its reason in {})",
            s.input_concerns.len(),
            s.images,
            shown.join(", "),
            if s.input_concerns.len() > SHOWN_CONCERNS { ", …" } else { "" },
            a.out.join(bundle::PREDICTION_FILE).display()
        );
    }
    if let Some(seen) = s.seen_in_training.as_ref().filter(|seen| !seen.ids.is_empty()) {
        println!(
            "warning: {} were used to train this bundle's models (all listed in {}): scores on them are not held-out estimates",
            seen.describe(s.images),
            a.out.join(bundle::PREDICTION_FILE).display()
        );
    }
    Ok(())
}

pub fn calibrate(a: CalibrateArgs) -> Result<()> {
    let fit = calibrate::calibrate(&CalibrateRequest {
        bundle: &a.bundle,
        predictions: &a.predictions,
        truth: &a.truth,
        melanoma: a.melanoma,
        keratosis: a.keratosis,
    })?;
    println!("{} images ({})", fit.images, a.truth.display());
    // The fit refused images the bundle trained on; say where that check could not see.
    let card: bundle::BundleCard = lesion_core::run::read_json(&a.bundle.join(bundle::CARD_FILE))?;
    match &card.training_images {
        None => println!(
            "warning: this bundle keeps no record of its training images (exported by an older lesion): make sure {} holds none of them",
            a.truth.display()
        ),
        Some(t) if !t.unrecorded.is_empty() => println!(
            "warning: the training images of {} are not recorded (their run folders had no split.json): make sure {} holds none of them",
            t.unrecorded.join(", "),
            a.truth.display()
        ),
        Some(_) => {}
    }
    for t in &fit.tasks {
        println!(
            "{}: {} -> threshold {:.6} (was {}): {}",
            t.task.column(),
            t.rule,
            t.threshold,
            t.previous,
            t.confusion
        );
        let positives = t.confusion.tp + t.confusion.fn_;
        if positives < calibrate::FEW_POSITIVES {
            println!(
                "warning: {}: only {positives} positives; the sensitivity above moves by {:.0} points per image",
                t.task.column(),
                100.0 / positives as f64
            );
        }
    }
    for k in &fit.kept {
        println!("{k}");
    }
    println!("thresholds -> {}", a.bundle.join(bundle::CARD_FILE).display());
    Ok(())
}

pub fn crop(a: CropArgs, g: &GlobalOpts) -> Result<()> {
    let rows = Manifest::read_csv(&a.manifest)?.rows;
    if a.verify {
        let set = seg_informed::read_and_verify(&a.out, &rows)?;
        println!(
            "{}: out-of-fold provenance holds for {} images",
            a.out.display(),
            set.images.len()
        );
        return Ok(());
    }
    let s = seg_informed::crop_rows(&CropRequest {
        seg_runs: &a.seg,
        rows: &rows,
        source_manifest: Some(&a.manifest),
        out: &a.out,
        settings: CropSettings { margin: a.margin },
        tta: a.tta,
        device: a.runtime.device,
        progress: g.progress(),
    })?;
    println!(
        "{} crops ({} empty masks kept whole, {} without descriptors) -> {}",
        s.images,
        s.empty_masks,
        s.without_descriptors,
        a.out.display()
    );
    Ok(())
}
