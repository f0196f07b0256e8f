//! `lesion cls …`: classification (ISIC 2017 Part 3: melanoma, seborrheic keratosis, nevus).
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use lesion_cls::config::ClsTrainConfig;
use lesion_cls::cv::{self, CvRequest, PredictSettings};
use lesion_cls::model::load_model;
use lesion_cls::trainer::{self, ClsTrainRequest};
use lesion_cls::tta::{self, FeatureExport, Pool, TtaMode};
use lesion_core::plots::{plot_roc, RocPanel, RocSeries};
use lesion_core::run::{self, RunConfig, RunOptions};
use lesion_data::labels::{label_rows, LabelledRow, LesionClass};
use lesion_data::manifest::Manifest;
use lesion_metrics::cls::{evaluate_2017, evaluate_2017_defined, Cls2017Outcome, Task2017Scores};
use lesion_pipeline::bundle::{
    BundleCard, PredictionSummary, SeenInTraining, CARD_FILE, PREDICTION_FILE,
};
use lesion_pipeline::calibrate::at_card_thresholds;

use crate::{GlobalOpts, RuntimeArgs, TrainRunArgs};

/// Where `cls train` puts a new run unless told.
const DEFAULT_RUN: &str = "runs/cls";

#[derive(Subcommand)]
pub enum ClsCommand {
    /// Score an ISIC 2017 Part 3 prediction CSV (`image_id,melanoma,seborrheic_keratosis`)
    /// against the ground truth as the 2017 scorer does: per task ROC AUC, average precision,
    /// accuracy / sensitivity / specificity at 0.5, specificity at sensitivity 82/89/95 %, and
    /// the means of the two tasks.
    Eval(EvalArgs),
    /// Print the classification training config with every default written out.
    Config,
    /// Fine-tune a pretrained EfficientNet-Lite on the manifest's diagnoses (melanoma /
    /// seborrheic keratosis / nevus); writes a run folder.
    Train(TrainArgs),
    /// Predict class probabilities with test-time augmentation; writes the ISIC 2017 CSV and
    /// `<out>.full.csv` with all three probabilities.
    Predict(PredictArgs),
    /// Average ISIC 2017 prediction CSVs of the same images (e.g. the out-of-fold `oof.csv` of
    /// several heads on the same folds); with --truth, print each task's ROC AUC.
    Average {
        /// Prediction CSVs (`image_id,melanoma,seborrheic_keratosis`), same images in each.
        #[arg(required = true, num_args = 2..)]
        preds: Vec<PathBuf>,
        #[arg(long, short)]
        out: PathBuf,
        /// Ground truth in the same format (e.g. the `truth.csv` of an SVM head).
        #[arg(long)]
        truth: Option<PathBuf>,
    },
    /// Adapt one net's full prediction CSV (`<out>.full.csv` of `cls predict` with the
    /// default `--pool avg`) to images among which some classes cannot occur, e.g. `--absent
    /// seborrheic-keratosis` for PH2 (melanomas and nevi only): each present class's
    /// probability is divided by the present classes' sum (Saerens et al. 2002 with the absent
    /// classes' prior set to 0). Rows must sum to 1; for a bundle use `lesion predict --absent`,
    /// which adapts each member before the average. Writes the ISIC 2017 CSV and
    /// `<out>.full.csv`; with --truth, prints each task's ROC AUC.
    Renormalize {
        /// Full prediction CSV (`image_id,melanoma,seborrheic_keratosis,nevus`).
        full: PathBuf,
        /// A class that cannot occur among these images (repeatable): melanoma,
        /// seborrheic-keratosis or nevus.
        #[arg(long, required = true, value_parser = parse_class)]
        absent: Vec<LesionClass>,
        #[arg(long, short)]
        out: PathBuf,
        /// Ground truth (ISIC 2017 Part 3 format).
        #[arg(long)]
        truth: Option<PathBuf>,
    },
    /// Stratified, group-aware k-fold cross-validation: a run folder per fold, out-of-fold
    /// predictions, and melanoma-vs-rest (and keratosis-vs-rest) AUC mean ± std over folds.
    Cv(CvArgs),
}

#[derive(Args)]
pub struct EvalArgs {
    /// Ground truth CSV (ISIC-2017_*_Part3_GroundTruth.csv).
    pub truth: PathBuf,
    /// Prediction CSV in the same format.
    pub pred: PathBuf,
    /// Summary JSON (default: PRED with extension .scores.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Per-task CSV (default: PRED with extension .scores.csv).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// ROC curves of both tasks as PNG (default: PRED with extension .roc.png).
    #[arg(long)]
    pub roc: Option<PathBuf>,
    /// Also report sensitivity, specificity and accuracy at this bundle's decision thresholds
    /// (its card's, e.g. fitted by `lesion calibrate`); the scorer's own figures stay at 0.5.
    #[arg(long)]
    pub thresholds_of: Option<PathBuf>,
}

#[derive(Args)]
pub struct TrainArgs {
    /// The run: a manifest with diagnoses, a config, a folder (or --resume).
    #[command(flatten)]
    pub run: TrainRunArgs,
}

#[derive(Args)]
pub struct PredictArgs {
    /// A run folder (or checkpoint file); repeat for an ensemble (probabilities averaged).
    #[arg(long = "model", required = true)]
    pub models: Vec<PathBuf>,
    #[arg(long)]
    pub manifest: PathBuf,
    /// Only the validation images of this run folder's split.
    #[arg(long)]
    pub split_of: Option<PathBuf>,
    /// none | fixed8 (flips × quarter turns) | N random replicas of the training augmentation.
    #[arg(long, default_value = "fixed8")]
    pub tta: TtaMode,
    /// avg | max | extreme.
    #[arg(long, default_value = "avg")]
    pub pool: Pool,
    /// Seed of random TTA replicas.
    #[arg(long, default_value_t = 0)]
    pub tta_seed: u64,
    /// ISIC 2017 CSV to write (`image_id,melanoma,seborrheic_keratosis`).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Also write penultimate features (safetensors `features`) here, with `<path>.ids.txt`.
    #[arg(long)]
    pub features: Option<PathBuf>,
    /// Features per replica (N×R×F) instead of averaged per image (N×F).
    #[arg(long)]
    pub features_per_replica: bool,
    /// Score the predictions against the manifest's diagnoses (ISIC 2017 scorer).
    #[arg(long)]
    pub eval: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Args)]
pub struct CvArgs {
    #[arg(long)]
    pub manifest: PathBuf,
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Seed of the fold assignment.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (fold-<i>/ run folders, folds.json, oof.csv, cv.json); rerunning the same
    /// command continues an interrupted CV.
    #[arg(long, short)]
    pub out: PathBuf,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub strict: crate::StrictArg,
}

pub fn sibling(pred: &Path, ext: &str) -> PathBuf {
    pred.with_extension(ext)
}

/// Reads a manifest, maps its diagnoses and prints the mapping table.
pub fn labelled(manifest: &Path) -> Result<Vec<LabelledRow>> {
    let m = Manifest::read_csv(manifest)?;
    let (rows, report) = label_rows(&m.rows);
    println!("{report}");
    if rows.is_empty() {
        bail!("{}: no row has a diagnosis that maps to a class", manifest.display());
    }
    Ok(rows)
}

/// A task column's name as a panel title.
fn task_title(task: &str) -> &'static str {
    if task == lesion_metrics::cls::COLUMN_MELANOMA {
        "melanoma"
    } else {
        "seborrheic keratosis"
    }
}

/// One ROC panel of a scored task.
fn roc_panel<'a>(title: &'static str, t: &'a lesion_metrics::cls::TaskEvaluation) -> RocPanel<'a> {
    (
        title,
        vec![RocSeries {
            label: format!("AUC {:.4}", t.scores.auc),
            fpr: &t.roc.fpr,
            tpr: &t.roc.tpr,
        }],
    )
}

/// One printed row of the 2017 scores: its name and the score it shows.
type ScoreRow = (&'static str, fn(&Task2017Scores) -> f64);

pub fn print_eval(ev: &lesion_metrics::cls::Cls2017Evaluation) {
    print_columns(
        ev.count,
        &[
            ("melanoma", &ev.melanoma.scores),
            ("keratosis", &ev.seborrheic_keratosis.scores),
            ("mean", &ev.mean),
        ],
    );
}

/// The 2017 score table: one column per named score set.
fn print_columns(count: usize, columns: &[(&str, &Task2017Scores)]) {
    println!("{count} images");
    let head: String = columns.iter().map(|(name, _)| format!(" {name:>9}")).collect();
    println!("{:24}{head}", "");
    let rows: [ScoreRow; 8] = [
        ("ROC AUC", |s| s.auc),
        ("average precision", |s| s.ap),
        ("accuracy @0.5", |s| s.accuracy),
        ("sensitivity @0.5", |s| s.sensitivity),
        ("specificity @0.5", |s| s.specificity),
        ("spec @ sens 82%", |s| s.spec_at_sens_82),
        ("spec @ sens 89%", |s| s.spec_at_sens_89),
        ("spec @ sens 95%", |s| s.spec_at_sens_95),
    ];
    for (name, f) in rows {
        let cells: String = columns.iter().map(|(_, s)| format!(" {:9.4}", f(s))).collect();
        println!("{name:24}{cells}");
    }
}

/// Whether two paths name the same file (the same path, or both existing and equal after
/// resolving links).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// A class named as in the CSV headers (`seborrheic_keratosis`) or in kebab case
/// (`seborrheic-keratosis`).
pub(crate) fn parse_class(s: &str) -> Result<LesionClass, String> {
    s.parse()
}

/// Prints each ISIC 2017 task's ROC AUC of `preds` against `truth` (every prediction needs a
/// truth line; a task with one class only in the truth is said to have no AUC).
fn print_task_aucs(truth: &Path, preds: &[tta::ImagePrediction]) -> Result<()> {
    let t: std::collections::BTreeMap<String, [f64; 2]> =
        tta::read_isic2017_csv(truth)?.into_iter().collect();
    for (task, k) in [("melanoma", 0), ("seborrheic keratosis", 1)] {
        let mut y = Vec::new();
        let mut score = Vec::new();
        for p in preds {
            let v = t
                .get(&p.id)
                .ok_or_else(|| anyhow::anyhow!("{}: no truth for {}", truth.display(), p.id))?;
            y.push(v[k] >= 0.5);
            score.push(p.probs[k]);
        }
        match lesion_metrics::cls::roc_auc(&y, &score) {
            Ok(auc) => println!("{task} ROC AUC: {auc:.4}"),
            Err(_) => println!("{task}: no AUC (one class only)"),
        }
    }
    Ok(())
}

pub fn run(cmd: ClsCommand, g: &GlobalOpts) -> Result<()> {
    match cmd {
        ClsCommand::Average { preds, out, truth } => {
            let avg = tta::average_isic2017_csvs(&preds)?;
            tta::write_isic2017_csv(&out, &avg)?;
            println!(
                "mean of {} prediction files over {} images -> {}",
                preds.len(),
                avg.len(),
                out.display()
            );
            match truth {
                Some(truth) => print_task_aucs(&truth, &avg),
                None => Ok(()),
            }
        }
        ClsCommand::Renormalize { full, absent, out, truth } => {
            let out_full = sibling(&out, "full.csv");
            if same_file(&full, &out) || same_file(&full, &out_full) {
                bail!(
                    "{}: the output ({} and {}) would overwrite the input; choose another -o",
                    full.display(),
                    out.display(),
                    out_full.display()
                );
            }
            let adapted = tta::without_classes(&tta::read_full_csv(&full)?, &absent)
                .map_err(|e| anyhow::anyhow!("{}: {e}", full.display()))?;
            tta::write_isic2017_csv(&out, &adapted)?;
            tta::write_full_csv(&out_full, &adapted)?;
            let names: Vec<&str> = absent.iter().map(|c| c.name()).collect();
            println!(
                "{} images without {} -> {} and {}",
                adapted.len(),
                names.join(", "),
                out.display(),
                out_full.display()
            );
            match truth {
                Some(truth) => print_task_aucs(&truth, &adapted),
                None => Ok(()),
            }
        }
        ClsCommand::Eval(a) => {
            let json = a.json.unwrap_or_else(|| sibling(&a.pred, "scores.json"));
            let csv = a.csv.unwrap_or_else(|| sibling(&a.pred, "scores.csv"));
            let png = a.roc.unwrap_or_else(|| sibling(&a.pred, "roc.png"));
            match evaluate_2017_defined(&a.truth, &a.pred)? {
                Cls2017Outcome::Complete(ev) => {
                    ev.write_json(&json)?;
                    ev.write_csv(&csv)?;
                    print_eval(&ev);
                    plot_roc(
                        &png,
                        &[
                            roc_panel("melanoma", &ev.melanoma),
                            roc_panel("seborrheic keratosis", &ev.seborrheic_keratosis),
                        ],
                    )?;
                }
                // Melanoma-only data (PH2): score the defined task, say which is undefined.
                Cls2017Outcome::Partial(p) => {
                    p.write_json(&json)?;
                    p.write_csv(&csv)?;
                    print_columns(p.count, &[(p.task.as_str(), &p.scored.scores)]);
                    println!("{} not scored: {}", p.undefined.task, p.undefined.reason);
                    plot_roc(&png, &[roc_panel(task_title(&p.task), &p.scored)])?;
                }
            }
            warn_if_seen_in_training(&a.pred, &a.truth)?;
            if let Some(b) = &a.thresholds_of {
                refuse_absent_for_thresholds(&a.pred)?;
                let card: BundleCard = run::read_json(&b.join(CARD_FILE))?;
                let fitted = if card.threshold_fit.is_some() { "fitted" } else { "as exported" };
                for t in at_card_thresholds(&card, &a.truth, &a.pred)? {
                    println!(
                        "{} at {}'s threshold {:.6} ({fitted}): {}, accuracy {:.4}",
                        t.task.column(),
                        b.display(),
                        t.threshold,
                        t.confusion,
                        t.confusion.accuracy()
                    );
                }
            }
            println!(
                "summary: {}\nper task: {}\nROC curves: {}",
                json.display(),
                csv.display(),
                png.display()
            );
            Ok(())
        }
        ClsCommand::Config => {
            print!("{}", ClsTrainConfig::default().to_toml()?);
            println!("# [model] dropout = 0.2       (optional; default: the variant's own)");
            println!("# [data] cache_size = 288     (optional; default: model.input_size)");
            println!("# [data] val_fraction = 0.2   (optional; default: 0.2 above 300 training images, else 0)");
            Ok(())
        }
        ClsCommand::Train(a) => {
            let (run_dir, cfg, manifest) = a.run.resolve::<ClsTrainConfig>(DEFAULT_RUN)?;
            let rows = labelled(&manifest)?;
            let cache = a.run.runtime.cache();
            let run = a.run.run_options(run_dir, manifest, g);
            let out = trainer::train(ClsTrainRequest { cfg, rows: &rows, cache: &cache, run })?;
            let c = &out.completion;
            println!(
                "done: {} epochs in {:.0}s, best epoch {} (val mean AUC {}){} -> {}",
                c.epochs,
                c.seconds,
                c.best_epoch,
                c.best_val_auc_mean.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into()),
                if c.stopped_early { ", stopped early" } else { "" },
                out.run_dir.display()
            );
            Ok(())
        }
        ClsCommand::Predict(a) => {
            let device = a.runtime.device;
            let mut rows = labelled_or_all(&a.manifest)?;
            if let Some(run_dir) = &a.split_of {
                rows = run::validation_rows(rows, run_dir, |r| r.row.id.as_str())?;
            }
            crate::seg::warn_incomplete(&a.models);
            let models =
                a.models.iter().map(|m| load_model(m, device)).collect::<Result<Vec<_>, _>>()?;
            let export = a.features.as_ref().map(|_| {
                if a.features_per_replica {
                    FeatureExport::PerReplica
                } else {
                    FeatureExport::PerImage
                }
            });
            let settings =
                PredictSettings { mode: a.tta, pool: a.pool, seed: a.tta_seed, features: export };
            let cache = a.runtime.cache();
            let t0 = std::time::Instant::now();
            let pred = cv::predict_rows(&models, &rows, &cache, &settings, device, g.progress())?;
            tta::write_isic2017_csv(&a.out, &pred.predictions)?;
            let full = sibling(&a.out, "full.csv");
            tta::write_full_csv(&full, &pred.predictions)?;
            println!(
                "{} images predicted in {:.1}s -> {} and {}",
                pred.predictions.len(),
                t0.elapsed().as_secs_f64(),
                a.out.display(),
                full.display()
            );
            if let (Some(path), Some(how)) = (&a.features, export) {
                let ids: Vec<String> = pred.predictions.iter().map(|p| p.id.clone()).collect();
                tta::write_features(path, &ids, &pred.features, how)?;
                println!("features -> {}", path.display());
            }
            if a.eval {
                let truth = sibling(&a.out, "truth.csv");
                cv::write_truth_csv(&truth, &rows)?;
                // A task without positives (e.g. PH2 has no keratosis) has no AUC: say so.
                match evaluate_2017(&truth, &a.out) {
                    Ok(ev) => print_eval(&ev),
                    Err(e) => {
                        println!("not scored by the 2017 scorer: {e}");
                        let classes: Vec<_> = rows.iter().map(|r| r.class).collect();
                        let probs: Vec<_> = pred.predictions.iter().map(|p| p.probs).collect();
                        for c in [LesionClass::Melanoma, LesionClass::SeborrheicKeratosis] {
                            if let Some(auc) = trainer::one_vs_rest_auc(&classes, &probs, c) {
                                println!("{c}-vs-rest ROC AUC: {auc:.4}");
                            }
                        }
                    }
                }
            }
            Ok(())
        }
        ClsCommand::Cv(a) => {
            let cfg = match &a.config {
                Some(p) => ClsTrainConfig::from_toml_file(p)?,
                None => ClsTrainConfig::default(),
            };
            let rows = labelled(&a.manifest)?;
            let cache = a.runtime.cache();
            let run = RunOptions {
                strict: a.strict.strict,
                ..a.runtime.run_options(a.out.clone(), false, Some(a.manifest.clone()), g)
            };
            let s = cv::run_cv(CvRequest {
                cfg,
                rows: &rows,
                folds: a.folds,
                seed: a.seed,
                cache: &cache,
                run,
            })?;
            println!(
                "{:>5} {:>6} {:>6} {:>10} {:>10} {:>5}",
                "fold", "train", "test", "AUC mel", "AUC sk", "best"
            );
            let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
            for r in &s.folds {
                println!(
                    "{:>5} {:>6} {:>6} {:>10} {:>10} {:>5}",
                    r.fold,
                    r.train_images,
                    r.test_images,
                    f(r.auc_melanoma),
                    f(r.auc_keratosis),
                    r.best_epoch
                );
            }
            if let Some(m) = s.melanoma_auc {
                println!(
                    "melanoma-vs-rest AUC: {:.4} ± {:.4} over {} folds (pooled out-of-fold {})",
                    m.mean,
                    m.std,
                    m.n,
                    f(s.pooled_melanoma_auc)
                );
            }
            if let Some(m) = s.keratosis_auc {
                println!(
                    "keratosis-vs-rest AUC: {:.4} ± {:.4} over {} folds (pooled out-of-fold {})",
                    m.mean,
                    m.std,
                    m.n,
                    f(s.pooled_keratosis_auc)
                );
            }
            println!(
                "TTA {} ({:?}); {:.0}s; outputs in {}",
                s.tta,
                s.pool,
                s.seconds,
                a.out.display()
            );
            Ok(())
        }
    }
}

/// Rows to predict: labelled rows when the manifest has diagnoses, otherwise every row (with
/// a placeholder class that is never scored).
pub fn labelled_or_all(manifest: &Path) -> Result<Vec<LabelledRow>> {
    let m = Manifest::read_csv(manifest)?;
    let (rows, report) = label_rows(&m.rows);
    if report.excluded > 0 {
        println!("{report}");
    }
    if rows.is_empty() {
        return Ok(m
            .rows
            .into_iter()
            .map(|row| LabelledRow { row, class: LesionClass::Nevus })
            .collect());
    }
    Ok(rows)
}

/// When `pred` is a bundle prediction's CSV, its `prediction.json` says which images the
/// bundle trained on: scoring those is not a held-out estimate, so say so beside the scores.
/// Only a warning: a summary that cannot be read is reported, not fatal.
/// A bundle's thresholds serve its three-class outputs; probabilities renormalised without a
/// class (`predict --absent`, said in the prediction's `prediction.json`) are another scale.
fn refuse_absent_for_thresholds(pred: &Path) -> Result<()> {
    let summary_path = pred.parent().unwrap_or(Path::new(".")).join(PREDICTION_FILE);
    if !summary_path.is_file() {
        return Ok(());
    }
    let summary: PredictionSummary = run::read_json(&summary_path)?;
    if !summary.absent_classes.is_empty() {
        let names: Vec<&str> = summary.absent_classes.iter().map(|c| c.name()).collect();
        bail!(
            "{}: predicted without {} (probabilities renormalised), so the bundle's decision thresholds do not apply; drop --thresholds-of, or predict without --absent",
            summary_path.display(),
            names.join(", ")
        );
    }
    Ok(())
}

fn warn_if_seen_in_training(pred: &Path, truth: &Path) -> Result<()> {
    let summary_path = pred.parent().unwrap_or(Path::new(".")).join(PREDICTION_FILE);
    if !summary_path.is_file() {
        return Ok(());
    }
    let summary: PredictionSummary = match run::read_json(&summary_path) {
        Ok(s) => s,
        Err(e) => {
            println!("warning: could not read which images were seen in training: {e}");
            return Ok(());
        }
    };
    let Some(seen) = summary.seen_in_training else { return Ok(()) };
    // Only the scored images count: the truth's rows.
    let scored: std::collections::BTreeSet<String> =
        tta::read_isic2017_csv(truth)?.into_iter().map(|(id, _)| id).collect();
    let ids: Vec<String> = seen.ids.into_iter().filter(|id| scored.contains(id)).collect();
    if !ids.is_empty() {
        let seen = SeenInTraining { ids, ..seen };
        println!(
            "warning: {} were used to train the bundle that predicted them ({}): these scores are not held-out estimates",
            seen.describe(scored.len()),
            summary_path.display()
        );
    }
    Ok(())
}
