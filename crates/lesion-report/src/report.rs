//! `lesion report`: one static HTML file comparing runs. Sections: the leaderboard; the
//! paper's Fig. 1 panel (internal vs external AUC per model for melanoma, mean and keratosis,
//! least-squares line and Pearson R, the chosen stack members marked); ROC curves of the top
//! models with seeded bootstrap 95 % bands; AUC with DeLong 95 % CIs per model, set and task,
//! and DeLong's paired test between the two best models; a reliability diagram with ECE of the
//! best model; for segmentation runs the per-image Jaccard histogram of the validation split,
//! the share under ISIC 2018's 0.65 failure threshold and the worst images overlaid; every
//! run's learning curves.
//!
//! Per-image predictions come from what the runs wrote (a CV's and an SVM head's
//! out-of-fold CSVs) or from [`crate::predictions`]' cache (a training run's validation split,
//! the external set), made on first use; scores from the scorers of `cls eval` / `seg eval`
//! and [`lesion_metrics::stats`].
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use lesion_cls::cv::{OOF_ISIC_CSV, TRUTH_ISIC_CSV};
use lesion_core::metrics_log;
use lesion_core::{Result, TrainError};
use lesion_metrics::cls::roc_curve;
use lesion_metrics::seg::THRESHOLD_JACCARD;
use lesion_metrics::stats::{
    bootstrap_roc_band, delong_auc, delong_paired, regression, reliability, BootstrapConfig,
    DelongAuc, PairedDelong, Regression, Reliability, RocBand,
};
use lesion_seg::predict::SUBMISSION_SUFFIX;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::html::Page;
use crate::leaderboard::{self, External, Leaderboard, LeaderboardRequest, Row, SortKey};
use crate::predictions::{
    cls_predictions, read_seg_scores, seg_predictions, Availability, ManifestData, PredictContext,
    PredictionSet, MASKS_DIR, PREDICTIONS_CSV, TRUTH_CSV, TRUTH_MASKS_DIR,
};
use crate::scores::{ClsTable, ClsTask};
use crate::source::{fold_dirs, stack_members, RunKind, Task};
use crate::svg::{self, Curve, RocSeries, ScatterPoint};

/// Models drawn in the ROC plots (the best by internal mean AUC).
pub const DEFAULT_TOP_MODELS: usize = 3;
/// Without `--stack`, the models marked in Fig. 1: the best by internal mean AUC.
pub const DEFAULT_MARKED: usize = 3;
/// Worst segmentation images shown per run.
pub const DEFAULT_GALLERY: usize = 6;
/// Equal-width bins of the reliability diagram.
pub const RELIABILITY_BINS: usize = 10;
/// Level of the DeLong confidence intervals.
pub const CI_LEVEL: f64 = 0.95;
/// Bins of the per-image Jaccard histogram.
const HISTOGRAM_BINS: usize = 20;
/// Longest side of a gallery thumbnail, in pixels.
const THUMBNAIL_SIDE: u32 = 200;
/// Digits of the AUCs and CIs in the page.
const DIGITS: usize = 4;
/// The SVM head's own truth and out-of-fold CSVs (`lesion_stack::svm_head`).
const SVM_HEAD_OOF: &str = lesion_stack::svm_head::OOF_CSV;
const SVM_HEAD_TRUTH: &str = lesion_stack::svm_head::TRUTH_CSV;

/// What to report on.
pub struct ReportRequest<'a> {
    pub inputs: &'a [PathBuf],
    pub external: Option<&'a Path>,
    /// A `lesion stack train` folder: its components are marked in Fig. 1.
    pub stack: Option<&'a Path>,
    pub out: &'a Path,
    pub top: usize,
    pub gallery: usize,
    pub bootstrap: BootstrapConfig,
    pub ctx: PredictContext<'a>,
}

/// The two sets a classifier is scored on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvalSet {
    /// Out-of-fold predictions (CV, SVM head) or the validation split (training run).
    Internal,
    External,
}

impl EvalSet {
    pub fn title(self) -> &'static str {
        match self {
            EvalSet::Internal => "internal",
            EvalSet::External => "external",
        }
    }
}

/// Which models Fig. 1 marks, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum Marked {
    /// The components of a stack folder (those among the listed runs).
    Stack { dir: PathBuf, members: Vec<String>, not_listed: usize },
    /// No stack given: the best by internal mean AUC.
    TopInternal { members: Vec<String> },
}

impl Marked {
    fn contains(&self, name: &str) -> bool {
        match self {
            Marked::Stack { members, .. } | Marked::TopInternal { members } => {
                members.iter().any(|m| m == name)
            }
        }
    }
}

/// A Fig. 1 panel's metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fig1Metric {
    Melanoma,
    Mean,
    Keratosis,
}

impl Fig1Metric {
    pub const ALL: [Fig1Metric; 3] =
        [Fig1Metric::Melanoma, Fig1Metric::Mean, Fig1Metric::Keratosis];

    pub fn title(self) -> &'static str {
        match self {
            Fig1Metric::Melanoma => "melanoma",
            Fig1Metric::Mean => "mean",
            Fig1Metric::Keratosis => "seborrheic keratosis",
        }
    }

    fn of(self, a: &crate::scores::ClsAucs) -> Option<f64> {
        match self {
            Fig1Metric::Melanoma => a.melanoma,
            Fig1Metric::Mean => a.mean,
            Fig1Metric::Keratosis => a.keratosis,
        }
    }
}

/// One model in a Fig. 1 panel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fig1Point {
    pub model: String,
    /// The model's row in the leaderboard (its "#"): the dot's label, short enough to read.
    pub rank: usize,
    pub internal: f64,
    pub external: f64,
    pub marked: bool,
}

/// One Fig. 1 panel: its points and line, or why it is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fig1Panel {
    pub metric: Fig1Metric,
    pub points: Vec<Fig1Point>,
    pub regression: Option<Regression>,
    /// Why nothing (or no line) is drawn.
    pub note: Option<String>,
}

/// A model's AUC with its DeLong CI on one set and task, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AucCi {
    pub model: String,
    pub set: EvalSet,
    pub task: ClsTask,
    pub images: usize,
    pub ci: std::result::Result<DelongAuc, String>,
}

/// A model's ROC band on one set and task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RocEntry {
    pub model: String,
    pub set: EvalSet,
    pub task: ClsTask,
    pub auc: f64,
    pub band: RocBand,
}

/// DeLong's paired test between the two best models on the images both predicted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedTest {
    pub set: EvalSet,
    pub task: ClsTask,
    pub a: String,
    pub b: String,
    pub images: usize,
    pub test: std::result::Result<PairedDelong, String>,
}

/// The best model's calibration on one set and task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub model: String,
    pub set: EvalSet,
    pub task: ClsTask,
    pub reliability: Reliability,
}

/// A segmentation run's per-image validation scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegSummary {
    pub model: String,
    pub images: usize,
    pub mean_jaccard: f64,
    /// Share of images with Jaccard below [`THRESHOLD_JACCARD`] (ISIC 2018's failures).
    pub share_below: f64,
    /// The worst images, worst first: (id, Jaccard).
    pub worst: Vec<(String, f64)>,
}

/// What the report computed (everything the page shows), and where it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportOutcome {
    pub path: PathBuf,
    pub leaderboard: Leaderboard,
    pub marked: Marked,
    pub fig1: Vec<Fig1Panel>,
    pub roc: Vec<RocEntry>,
    pub ci: Vec<AucCi>,
    pub paired: Vec<PairedTest>,
    pub calibration: Vec<Calibration>,
    pub segmentation: Vec<SegSummary>,
    pub bootstrap: BootstrapConfig,
    /// Inline SVG plots in the page.
    pub plots: usize,
    /// Prediction sets computed for the report beyond the leaderboard's.
    pub predictions_computed: usize,
}

/// A classifier's per-image tables on both sets (or why one is missing).
struct ClsModel<'a> {
    row: &'a Row,
    internal: std::result::Result<ClsTable, String>,
    external: Option<std::result::Result<ClsTable, String>>,
}

impl ClsModel<'_> {
    fn table(&self, set: EvalSet) -> Option<&ClsTable> {
        match set {
            EvalSet::Internal => self.internal.as_ref().ok(),
            EvalSet::External => self.external.as_ref().and_then(|t| t.as_ref().ok()),
        }
    }

    fn name(&self) -> &str {
        &self.row.name
    }
}

/// The internal per-image table of a complete classification run.
fn internal_table(
    row: &Row,
    kind: RunKind,
    ctx: &PredictContext<'_>,
    computed: &mut usize,
) -> Result<std::result::Result<ClsTable, String>> {
    let dir = &row.dir;
    Ok(match kind {
        RunKind::ClsCv => Ok(ClsTable::read(&dir.join(TRUTH_ISIC_CSV), &dir.join(OOF_ISIC_CSV))?),
        RunKind::SvmHead => {
            if dir.join(SVM_HEAD_OOF).exists() {
                Ok(ClsTable::read(&dir.join(SVM_HEAD_TRUTH), &dir.join(SVM_HEAD_OOF))?)
            } else {
                Err("no out-of-fold estimate (trained with 0 folds)".to_string())
            }
        }
        RunKind::ClsTrain => match ManifestData::of_run(dir, kind)? {
            None => {
                Err("the run records no manifest: its validation split cannot be predicted".into())
            }
            Some(m) => match cls_predictions(dir, kind, &m, PredictionSet::Validation, ctx)? {
                Availability::Unavailable(reason) => Err(reason),
                Availability::Ready(c) => {
                    *computed += usize::from(c.computed);
                    Ok(ClsTable::read(&c.dir.join(TRUTH_CSV), &c.dir.join(PREDICTIONS_CSV))?)
                }
            },
        },
        RunKind::SegTrain => Err("not a classifier".into()),
    })
}

fn external_table(row: &Row) -> Option<std::result::Result<ClsTable, String>> {
    match row.external.as_ref()? {
        External::Cls { cache, .. } => Some(
            ClsTable::read(&cache.join(TRUTH_CSV), &cache.join(PREDICTIONS_CSV))
                .map_err(|e| e.to_string()),
        ),
        External::Unavailable { reason } => Some(Err(reason.clone())),
        External::Seg { .. } => None,
    }
}

fn show_ci(c: &DelongAuc) -> String {
    format!("{:.DIGITS$} [{:.DIGITS$}, {:.DIGITS$}]", c.auc, c.ci_low, c.ci_high)
}

fn show_p(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.2e}")
    } else {
        format!("{p:.4}")
    }
}

/// The basis of a model's internal predictions, as shown.
fn internal_basis(kind: Option<RunKind>) -> &'static str {
    match kind {
        Some(RunKind::ClsTrain) => "validation split (run's TTA)",
        _ => "pooled out-of-fold",
    }
}

/// Writes the report; returns what it shows.
pub fn write_report(req: &ReportRequest<'_>) -> Result<ReportOutcome> {
    let lb = leaderboard::build(&LeaderboardRequest {
        inputs: req.inputs,
        external: req.external,
        sort: SortKey::Internal,
        ctx: req.ctx,
    })?;
    let mut computed = 0;
    let mut page = Page::default();
    page.h1("Experiment report");
    page.p(&format!(
        "{} runs ({} complete) from {}. {}Bootstrap: {} stratified replicates, seed {}, {:.0} % bands. DeLong intervals at {:.0} %. lesion {}.",
        lb.rows.len(),
        lb.rows.iter().filter(|r| r.state.is_complete()).count(),
        req.inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        lb.external
            .as_ref()
            .map(|x| format!("External set: {} ({} rows, hash {}). ", x.manifest.display(), x.rows, x.hash))
            .unwrap_or_else(|| "No external set. ".into()),
        req.bootstrap.replicates,
        req.bootstrap.seed,
        req.bootstrap.level * 100.0,
        CI_LEVEL * 100.0,
        env!("CARGO_PKG_VERSION"),
    ));

    page.h2("Leaderboard");
    let cols = lb.columns();
    let rows: Vec<Vec<String>> = lb.shown_rows().into_iter().map(|r| r.cells).collect();
    page.table(&cols, &rows);
    page.note("Internal: a training run's validation split at its best epoch; a CV's (or SVM head's) pooled out-of-fold predictions, and the mean ± std of the per-fold AUCs. Mean AUC: of the defined tasks. Segmentation: validation Jaccard at training resolution.");

    // Classifiers, best internal mean AUC first (the leaderboard's order).
    let mut models: Vec<ClsModel<'_>> = Vec::new();
    for row in
        lb.rows.iter().filter(|r| r.task() == Some(Task::Classification) && r.state.is_complete())
    {
        let Some(kind) = row.kind else { continue };
        let internal = match internal_table(row, kind, &req.ctx, &mut computed) {
            Ok(t) => t,
            Err(e) => {
                warn!("{}: internal predictions: {e}", row.name);
                Err(e.to_string())
            }
        };
        models.push(ClsModel { row, internal, external: external_table(row) });
    }

    let marked = marked_models(req.stack, &lb)?;
    let fig1 = fig1_section(&mut page, &lb, &marked)?;
    let roc = roc_section(&mut page, &models, req)?;
    let ci = ci_section(&mut page, &models, lb.external.is_some());
    let paired = paired_section(&mut page, &models, lb.external.is_some());
    let calibration = calibration_section(&mut page, &models)?;
    let segmentation = seg_section(&mut page, &lb, req, &mut computed)?;
    curves_section(&mut page, &lb)?;

    let plots = page.plots();
    let html = page.finish("lesion experiment report");
    lesion_core::run::atomic_write(req.out, html.as_bytes())?;
    Ok(ReportOutcome {
        path: req.out.to_path_buf(),
        leaderboard: lb,
        marked,
        fig1,
        roc,
        ci,
        paired,
        calibration,
        segmentation,
        bootstrap: req.bootstrap.clone(),
        plots,
        predictions_computed: computed,
    })
}

/// The stack's components among the listed runs, or the best by internal mean AUC.
fn marked_models(stack: Option<&Path>, lb: &Leaderboard) -> Result<Marked> {
    match stack {
        Some(dir) => {
            let members = stack_members(dir)?;
            let listed: Vec<String> = lb
                .rows
                .iter()
                .filter(|r| {
                    let d = r.dir.canonicalize().unwrap_or_else(|_| r.dir.clone());
                    members.contains(&d)
                })
                .map(|r| r.name.clone())
                .collect();
            Ok(Marked::Stack {
                dir: dir.to_path_buf(),
                not_listed: members.len() - listed.len(),
                members: listed,
            })
        }
        None => Ok(Marked::TopInternal {
            members: lb
                .rows
                .iter()
                .filter(|r| {
                    r.task() == Some(Task::Classification)
                        && r.internal.as_ref().and_then(|i| i.headline()).is_some()
                })
                .take(DEFAULT_MARKED)
                .map(|r| r.name.clone())
                .collect(),
        }),
    }
}

/// An empty Fig. 1 panel names its models only when they are this few (else the reason alone).
const MAX_UNDEFINED_LISTED: usize = 3;

fn fig1_section(page: &mut Page, lb: &Leaderboard, marked: &Marked) -> Result<Vec<Fig1Panel>> {
    page.h2("Internal vs external AUC (Fig. 1)");
    let text = match marked {
        Marked::Stack { dir, members, not_listed } => format!(
            "Ringed in red: the components of the stack {} ({}){}.",
            dir.display(),
            members.join(", "),
            if *not_listed > 0 {
                format!("; {not_listed} of them are not among the listed runs")
            } else {
                String::new()
            }
        ),
        Marked::TopInternal { members } => format!(
            "No --stack given: the top {} models by internal mean AUC are ringed in red ({}).",
            members.len(),
            members.join(", ")
        ),
    };
    page.note(&format!("Each dot is a model, labelled with its row (#) in the leaderboard: internal AUC (x) against external AUC (y), the paper's Fig. 1. Grey: y = x; blue line: least squares, its Pearson R in the title. {text}"));
    let mut panels = Vec::new();
    for metric in Fig1Metric::ALL {
        let mut points = Vec::new();
        let mut undefined = Vec::new();
        for (row, r) in lb.rows.iter().enumerate() {
            if r.task() != Some(Task::Classification) {
                continue;
            }
            let (Some(i), Some(x)) = (
                r.internal.as_ref().and_then(|i| i.cls_aucs()),
                r.external.as_ref().and_then(|x| x.cls_aucs()),
            ) else {
                continue;
            };
            match (metric.of(i), metric.of(x)) {
                (Some(a), Some(b)) => points.push(Fig1Point {
                    model: r.name.clone(),
                    rank: row + 1,
                    internal: a,
                    external: b,
                    marked: marked.contains(&r.name),
                }),
                (a, b) => undefined.push(format!(
                    "{}: {} undefined",
                    r.name,
                    match (a, b) {
                        (None, None) => "internal and external",
                        (None, _) => "internal",
                        _ => "external",
                    }
                )),
            }
        }
        let xs: Vec<f64> = points.iter().map(|p| p.internal).collect();
        let ys: Vec<f64> = points.iter().map(|p| p.external).collect();
        let fit = regression(&xs, &ys);
        let note = if lb.external.is_none() {
            Some(
                "No external set (--external): nothing to plot against the internal AUC."
                    .to_string(),
            )
        } else if points.is_empty() {
            Some(format!(
                "{} AUC is undefined for every model (its truth holds one class, e.g. no keratosis in PH2){}.",
                metric.title(),
                if undefined.is_empty() || undefined.len() > MAX_UNDEFINED_LISTED {
                    String::new()
                } else {
                    format!(": {}", undefined.join("; "))
                }
            ))
        } else if fit.is_none() {
            Some(format!(
                "{} models: no regression line (it needs {} or more with some spread).",
                points.len(),
                lesion_metrics::stats::REGRESSION_MIN_POINTS
            ))
        } else {
            None
        };
        if points.is_empty() {
            page.placeholder(
                note.as_deref().unwrap_or_default(),
                &format!("{} AUC", metric.title()),
            );
        } else {
            let title = match &fit {
                Some(f) => format!("{}: R = {:.2} (n = {})", metric.title(), f.pearson_r, f.n),
                None => format!("{} (n = {})", metric.title(), points.len()),
            };
            let sp: Vec<ScatterPoint> = points
                .iter()
                .map(|p| ScatterPoint {
                    label: format!("#{}", p.rank),
                    x: p.internal,
                    y: p.external,
                    marked: p.marked,
                })
                .collect();
            let svg = svg::scatter(&title, "internal AUC", "external AUC", &sp, fit.as_ref())?;
            let mut caption = match &fit {
                Some(f) => format!(
                    "{} AUC: external = {:.3} × internal {} {:.3}; Pearson R = {:.3} over {} models.",
                    metric.title(),
                    f.slope,
                    if f.intercept < 0.0 { '−' } else { '+' },
                    f.intercept.abs(),
                    f.pearson_r,
                    f.n
                ),
                None => format!("{} AUC. {}", metric.title(), note.clone().unwrap_or_default()),
            };
            if !undefined.is_empty() {
                caption.push_str(&format!(" Left out: {}.", undefined.join("; ")));
            }
            page.svg(&svg, &caption);
        }
        panels.push(Fig1Panel { metric, points, regression: fit, note });
    }
    Ok(panels)
}

fn sets(external: bool) -> Vec<EvalSet> {
    if external {
        vec![EvalSet::Internal, EvalSet::External]
    } else {
        vec![EvalSet::Internal]
    }
}

fn roc_section(
    page: &mut Page,
    models: &[ClsModel<'_>],
    req: &ReportRequest<'_>,
) -> Result<Vec<RocEntry>> {
    page.h2("ROC curves");
    let top: Vec<&ClsModel<'_>> =
        models.iter().filter(|m| m.internal.is_ok()).take(req.top).collect();
    let b = &req.bootstrap;
    page.note(&format!(
        "The top {} classifiers by internal mean AUC ({}). Shaded: pointwise {:.0} % bootstrap band of the TPR on a {}-point FPR grid ({} stratified replicates, seed {}); the AUC interval in the legend is the bootstrap percentile interval.",
        top.len(),
        top.iter().map(|m| m.name()).collect::<Vec<_>>().join(", "),
        b.level * 100.0,
        b.grid_points,
        b.replicates,
        b.seed
    ));
    let mut entries = Vec::new();
    if top.is_empty() {
        page.note("No complete classifier with per-image predictions.");
        return Ok(entries);
    }
    let has_external = top.iter().any(|m| m.external.is_some());
    // Panels that cannot be drawn, said once below the plots.
    let mut undefined = Vec::new();
    for set in sets(has_external) {
        for task in ClsTask::ALL {
            let mut curves = Vec::new();
            for m in &top {
                let Some(t) = m.table(set) else { continue };
                if !t.defined(task) {
                    continue;
                }
                let (truth, score) = (t.truth(task), t.score(task));
                let curve = roc_curve(truth, score)
                    .map_err(|e| TrainError::Config(format!("{}: {e}", m.name())))?;
                let band = bootstrap_roc_band(truth, score, b)
                    .map_err(|e| TrainError::Config(format!("{}: bootstrap: {e}", m.name())))?;
                let auc = lesion_metrics::cls::roc_auc(truth, score)
                    .map_err(|e| TrainError::Config(format!("{}: {e}", m.name())))?;
                curves.push((m.name().to_string(), t.len(), curve, band, auc));
            }
            let title = format!("{}: {}", task.title(), set.title());
            if curves.is_empty() {
                undefined.push(title);
                continue;
            }
            let series: Vec<RocSeries<'_>> = curves
                .iter()
                .map(|(name, n, c, band, auc)| RocSeries {
                    label: format!(
                        "{name} (n={n}): {auc:.3} [{:.3}, {:.3}]",
                        band.auc_low, band.auc_high
                    ),
                    fpr: &c.fpr,
                    tpr: &c.tpr,
                    band: Some(band),
                })
                .collect();
            let svg = svg::roc(&title, &series)?;
            page.svg(
                &svg,
                &format!(
                    "ROC, {title}; legend: model (images): AUC [bootstrap {:.0} % interval].",
                    b.level * 100.0
                ),
            );
            for (name, _, _, band, auc) in curves {
                entries.push(RocEntry { model: name, set, task, auc, band });
            }
        }
    }
    if !undefined.is_empty() {
        page.note(&format!(
            "Not drawn, undefined for these models (the truth holds one class) or without predictions: {}.",
            undefined.join("; ")
        ));
    }
    Ok(entries)
}

fn ci_section(page: &mut Page, models: &[ClsModel<'_>], external: bool) -> Vec<AucCi> {
    page.h2("AUC with 95 % confidence intervals (DeLong)");
    page.note("DeLong's variance (fast midrank algorithm), normal interval clipped to [0, 1], as pROC's ci.auc(method = \"delong\").");
    let mut out = Vec::new();
    let mut rows = Vec::new();
    for m in models {
        for set in sets(external) {
            let table = match (set, m.table(set)) {
                (_, Some(t)) => Ok(t),
                (EvalSet::Internal, None) => {
                    Err(m.internal.as_ref().err().cloned().unwrap_or_default())
                }
                (EvalSet::External, None) => Err(match &m.external {
                    Some(Err(e)) => e.clone(),
                    _ => "no external predictions".into(),
                }),
            };
            let basis = match set {
                EvalSet::Internal => internal_basis(m.row.kind),
                EvalSet::External => "external set",
            };
            let mut cells = vec![m.name().to_string(), basis.to_string()];
            match table {
                Err(reason) => {
                    cells.extend(["-".into(), format!("- ({reason})"), "-".into()]);
                }
                Ok(t) => {
                    cells.push(t.len().to_string());
                    for task in ClsTask::ALL {
                        let ci = delong_auc(t.truth(task), t.score(task), CI_LEVEL)
                            .map_err(|e| e.to_string());
                        cells.push(match &ci {
                            Ok(c) => show_ci(c),
                            Err(e) => format!("undefined ({e})"),
                        });
                        out.push(AucCi {
                            model: m.name().to_string(),
                            set,
                            task,
                            images: t.len(),
                            ci,
                        });
                    }
                }
            }
            rows.push(cells);
        }
    }
    if rows.is_empty() {
        page.note("No complete classifier.");
    } else {
        page.table(
            &[
                "model",
                "predictions",
                "images",
                "melanoma AUC [95 % CI]",
                "keratosis AUC [95 % CI]",
            ],
            &rows,
        );
    }
    out
}

fn paired_section(page: &mut Page, models: &[ClsModel<'_>], external: bool) -> Vec<PairedTest> {
    page.h2("Paired DeLong test");
    let best: Vec<&ClsModel<'_>> = models.iter().filter(|m| m.internal.is_ok()).take(2).collect();
    let [a, b] = best.as_slice() else {
        page.note("Needs two complete classifiers with per-image predictions.");
        return Vec::new();
    };
    page.note(&format!(
        "The two best models by internal mean AUC, {} (A) and {} (B), on the images both predicted; H0: AUC_A = AUC_B, two-sided.",
        a.name(),
        b.name()
    ));
    let mut out = Vec::new();
    let mut rows = Vec::new();
    for set in sets(external) {
        let (Some(ta), Some(tb)) = (a.table(set), b.table(set)) else {
            rows.push(vec![
                set.title().into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "no predictions of both".into(),
            ]);
            continue;
        };
        let common: BTreeSet<&String> = tb.ids.iter().collect();
        let ids: Vec<String> = ta.ids.iter().filter(|id| common.contains(id)).cloned().collect();
        let (ra, rb) = (ta.restrict(&ids), tb.restrict(&ids));
        for task in ClsTask::ALL {
            let test = if ids.is_empty() {
                Err("no image predicted by both".to_string())
            } else if ra.truth(task) != rb.truth(task) {
                Err("the two runs' truths differ on the same images".to_string())
            } else {
                delong_paired(ra.truth(task), ra.score(task), rb.score(task))
                    .map_err(|e| e.to_string())
            };
            rows.push(match &test {
                Ok(t) => vec![
                    set.title().into(),
                    task.title().into(),
                    ids.len().to_string(),
                    format!("{:.DIGITS$}", t.auc_a),
                    format!("{:.DIGITS$}", t.auc_b),
                    format!("{:.3}", t.z),
                    show_p(t.p_value),
                ],
                Err(e) => vec![
                    set.title().into(),
                    task.title().into(),
                    ids.len().to_string(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("undefined ({e})"),
                ],
            });
            out.push(PairedTest {
                set,
                task,
                a: a.name().into(),
                b: b.name().into(),
                images: ids.len(),
                test,
            });
        }
    }
    page.table(&["set", "task", "images", "AUC A", "AUC B", "z", "p"], &rows);
    out
}

fn calibration_section(page: &mut Page, models: &[ClsModel<'_>]) -> Result<Vec<Calibration>> {
    page.h2("Calibration");
    let Some(best) = models.iter().find(|m| m.internal.is_ok()) else {
        page.note("No complete classifier with per-image predictions.");
        return Ok(Vec::new());
    };
    page.note(&format!(
        "Reliability diagram of the best model by internal mean AUC, {}: {} equal-width bins of the predicted probability; ECE = Σ (n_b / n) |mean predicted − observed rate|.",
        best.name(),
        RELIABILITY_BINS
    ));
    let mut out = Vec::new();
    for set in sets(best.external.is_some()) {
        let Some(t) = best.table(set) else { continue };
        let mut series = Vec::new();
        for task in ClsTask::ALL.into_iter().filter(|&task| t.defined(task)) {
            let rel = reliability(t.truth(task), t.score(task), RELIABILITY_BINS)
                .map_err(|e| TrainError::Config(format!("{}: {e}", best.name())))?;
            series.push((task, rel));
        }
        if series.is_empty() {
            continue;
        }
        let labelled: Vec<(String, &Reliability)> =
            series.iter().map(|(task, r)| (task.title().to_string(), r)).collect();
        let title = format!("{}: {}", best.name(), set.title());
        let svg = svg::reliability(&title, &labelled)?;
        let eces: Vec<String> =
            series.iter().map(|(task, r)| format!("{} ECE {:.4}", task.title(), r.ece)).collect();
        page.svg(&svg, &format!("Calibration, {title} ({} images): {}", t.len(), eces.join(", ")));
        for (task, rel) in series {
            out.push(Calibration { model: best.name().into(), set, task, reliability: rel });
        }
    }
    Ok(out)
}

/// The image at thumbnail size with the truth (magenta) and predicted (green) contours, as
/// PNG bytes.
fn overlay_png(manifest: &ManifestData, cache: &Path, id: &str) -> Result<Vec<u8>> {
    let row = manifest
        .rows
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(|| TrainError::file(&manifest.path, format!("no row {id}")))?;
    let img = lesion_data::io::load_rgb(&row.image_path)?;
    let name = format!("{id}{SUBMISSION_SUFFIX}");
    let pred = lesion_data::io::load_mask(&cache.join(MASKS_DIR).join(&name))?;
    let truth = lesion_data::io::load_mask(&cache.join(TRUTH_MASKS_DIR).join(&name))?;
    // To thumbnail size first, so that the contours are drawn 2 px wide at the size shown.
    let (w, h) = img.dimensions();
    let scale = THUMBNAIL_SIDE as f64 / w.max(h) as f64;
    let (tw, th) =
        (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1));
    let filter = if scale < 1.0 { FilterType::Triangle } else { FilterType::Nearest };
    let img = image::imageops::resize(&img, tw, th, filter);
    let pred = image::imageops::resize(&pred, tw, th, FilterType::Nearest);
    let truth = image::imageops::resize(&truth, tw, th, FilterType::Nearest);
    let small = lesion_seg::predict::overlay(&img, &pred, Some(&truth));
    let mut buf = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(small)
        .write_to(&mut buf, image::ImageFormat::Png)
        .map_err(|e| TrainError::file(&row.image_path, format!("encoding the overlay: {e}")))?;
    Ok(buf.into_inner())
}

fn seg_section(
    page: &mut Page,
    lb: &Leaderboard,
    req: &ReportRequest<'_>,
    computed: &mut usize,
) -> Result<Vec<SegSummary>> {
    page.h2("Segmentation");
    let runs: Vec<&Row> = lb
        .rows
        .iter()
        .filter(|r| r.task() == Some(Task::Segmentation) && r.state.is_complete())
        .collect();
    if runs.is_empty() {
        page.note("No complete segmentation run.");
        return Ok(Vec::new());
    }
    page.note(&format!(
        "Each run's validation split predicted at full resolution and scored per image by the official scorer (as `lesion seg eval`); failures: Jaccard below {THRESHOLD_JACCARD} (ISIC 2018's rule). Gallery: the worst images, truth contour magenta, prediction green."
    ));
    let mut out = Vec::new();
    for r in runs {
        page.h3(&r.name);
        let Some(manifest) = ManifestData::of_run(&r.dir, RunKind::SegTrain)? else {
            page.note("The run records no manifest: its validation split cannot be predicted.");
            continue;
        };
        let cache = match seg_predictions(&r.dir, &manifest, PredictionSet::Validation, &req.ctx)? {
            Availability::Unavailable(reason) => {
                page.note(&reason);
                continue;
            }
            Availability::Ready(c) => {
                *computed += usize::from(c.computed);
                c.dir
            }
        };
        let ev = read_seg_scores(&cache)?;
        let jaccards: Vec<f64> = ev.per_image.iter().map(|s| s.scores.jaccard).collect();
        let n = jaccards.len();
        let below = jaccards.iter().filter(|&&j| j < THRESHOLD_JACCARD).count();
        let share = below as f64 / n.max(1) as f64;
        let mut order: Vec<&lesion_metrics::seg::ImageScore> = ev.per_image.iter().collect();
        order.sort_by(|a, b| {
            a.scores.jaccard.total_cmp(&b.scores.jaccard).then_with(|| a.id.cmp(&b.id))
        });
        let worst: Vec<(String, f64)> =
            order.iter().take(req.gallery).map(|s| (s.id.clone(), s.scores.jaccard)).collect();
        let svg = svg::histogram(
            &format!("{}: per-image Jaccard", r.name),
            "Jaccard",
            &jaccards,
            HISTOGRAM_BINS,
            Some((THRESHOLD_JACCARD, "failure threshold 0.65")),
        )?;
        page.svg(
            &svg,
            &format!(
                "{}: {n} validation images, mean Jaccard {:.DIGITS$}, thresholded Jaccard {:.DIGITS$}; {below} ({:.1} %) under {THRESHOLD_JACCARD}.",
                r.name,
                ev.mean.jaccard,
                ev.mean.threshold_jaccard,
                share * 100.0
            ),
        );
        page.p(&format!(
            "Share of images under {THRESHOLD_JACCARD}: {:.1} % ({below} of {n}).",
            share * 100.0
        ));
        for (id, j) in &worst {
            match overlay_png(&manifest, &cache, id) {
                Ok(png) => page.png(&png, &format!("{id}: Jaccard {j:.3}")),
                Err(e) => page.note(&format!("{id}: no overlay ({e})")),
            }
        }
        out.push(SegSummary {
            model: r.name.clone(),
            images: n,
            mean_jaccard: ev.mean.jaccard,
            share_below: share,
            worst,
        });
    }
    Ok(out)
}

fn points<T>(records: &[T], f: impl Fn(&T) -> Option<(usize, f64)>) -> Vec<(f64, f64)> {
    records.iter().filter_map(|r| f(r).map(|(e, v)| (e as f64, v))).collect()
}

fn curve(label: &str, points: Vec<(f64, f64)>) -> Option<Curve> {
    (!points.is_empty()).then(|| Curve { label: label.to_string(), points })
}

fn curves_section(page: &mut Page, lb: &Leaderboard) -> Result<()> {
    use lesion_cls::trainer::ClsEpochRecord;
    use lesion_seg::trainer::EpochRecord;
    page.h2("Learning curves");
    page.note("From each run's metrics.jsonl: training and validation loss (left), validation scores (right).");
    for r in &lb.rows {
        let Some(kind) = r.kind else { continue };
        if !r.dir.is_dir() {
            continue;
        }
        let (losses, scores, desc): (Vec<Option<Curve>>, Vec<Option<Curve>>, &str) = match kind {
            RunKind::SegTrain => {
                let rec: Vec<EpochRecord> = metrics_log::read(&r.dir)?;
                (
                    vec![
                        curve("train loss", points(&rec, |r| Some((r.epoch, r.train_loss)))),
                        curve("val loss", points(&rec, |r| r.val_loss.map(|v| (r.epoch, v)))),
                    ],
                    vec![
                        curve("val Jaccard", points(&rec, |r| r.val_jaccard.map(|v| (r.epoch, v)))),
                        curve(
                            "val thresholded Jaccard",
                            points(&rec, |r| r.val_threshold_jaccard.map(|v| (r.epoch, v))),
                        ),
                    ],
                    "Jaccard",
                )
            }
            RunKind::ClsTrain => {
                let rec: Vec<ClsEpochRecord> = metrics_log::read(&r.dir)?;
                (
                    vec![
                        curve("train loss", points(&rec, |r| Some((r.epoch, r.train_loss)))),
                        curve("val loss", points(&rec, |r| r.val_loss.map(|v| (r.epoch, v)))),
                    ],
                    vec![
                        curve(
                            "val AUC melanoma",
                            points(&rec, |r| r.val_auc_melanoma.map(|v| (r.epoch, v))),
                        ),
                        curve(
                            "val AUC keratosis",
                            points(&rec, |r| r.val_auc_keratosis.map(|v| (r.epoch, v))),
                        ),
                    ],
                    "AUC",
                )
            }
            RunKind::ClsCv => {
                let mut losses = Vec::new();
                let mut scores = Vec::new();
                for (k, fold) in fold_dirs(&r.dir).iter().enumerate() {
                    let rec: Vec<ClsEpochRecord> = metrics_log::read(fold)?;
                    losses.push(curve(
                        &format!("fold {k} train loss"),
                        points(&rec, |r| Some((r.epoch, r.train_loss))),
                    ));
                    losses.push(curve(
                        &format!("fold {k} val loss"),
                        points(&rec, |r| r.val_loss.map(|v| (r.epoch, v))),
                    ));
                    scores.push(curve(
                        &format!("fold {k} val mean AUC"),
                        points(&rec, |r| r.val_auc_mean.map(|v| (r.epoch, v))),
                    ));
                }
                (losses, scores, "mean AUC")
            }
            RunKind::SvmHead => {
                page.note(&format!("{}: an SVM head on a frozen backbone has no epochs.", r.name));
                continue;
            }
        };
        let losses: Vec<Curve> = losses.into_iter().flatten().collect();
        let scores: Vec<Curve> = scores.into_iter().flatten().collect();
        if losses.is_empty() {
            page.note(&format!("{}: no epoch logged yet.", r.name));
            continue;
        }
        let svg = svg::learning_curves(&r.name, &losses, &scores, desc)?;
        page.svg(&svg, &format!("{} ({}, {})", r.name, kind, r.state));
    }
    Ok(())
}
