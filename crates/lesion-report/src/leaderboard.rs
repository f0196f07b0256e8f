//! `lesion leaderboard`: one row per run (loose run folders and every cell of the sweeps
//! given), with how its config differs, its internal metrics, wall time and — with an
//! external manifest — its external metrics from cached predictions ([`crate::predictions`]).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use lesion_core::{Result, TrainError};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::config_diff::{read_flat_config, varying_keys, FlatConfig};
use crate::internal::{read_internal, Internal};
use crate::predictions::{
    cls_predictions, read_seg_scores, seg_predictions, Availability, ManifestData, PredictContext,
    PredictionSet, PREDICTIONS_CSV, TRUTH_CSV,
};
use crate::scores::{score_2017, ClsAucs};
use crate::source::{collect, config_dir, Entry, RunKind, RunState, Sweep, Task};

/// What the rows are ranked by (within each task; classification first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SortKey {
    /// Internal mean AUC (classification) or validation Jaccard (segmentation).
    #[default]
    Internal,
    /// External mean AUC or mean Jaccard.
    External,
}

impl FromStr for SortKey {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "internal" => Ok(SortKey::Internal),
            "external" => Ok(SortKey::External),
            other => Err(TrainError::Config(format!(
                "unknown sort key '{other}' (expected internal or external)"
            ))),
        }
    }
}

/// The leaderboard's file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    #[default]
    Markdown,
    Csv,
    Json,
}

/// A run's metrics on the external set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum External {
    /// ROC AUCs by the ISIC 2017 scorer on the cached `predictions.csv`.
    Cls { auc: ClsAucs, images: usize, undefined: Option<String>, cache: PathBuf },
    /// Mean Jaccard (and the ISIC 2018 thresholded Jaccard) by the official scorer.
    Seg { jaccard: f64, threshold_jaccard: f64, images: usize, cache: PathBuf },
    /// Not computed: the run is not complete, the set has no labels or masks, or it failed.
    Unavailable { reason: String },
}

impl External {
    pub fn headline(&self) -> Option<f64> {
        match self {
            External::Cls { auc, .. } => auc.mean,
            External::Seg { jaccard, .. } => Some(*jaccard),
            External::Unavailable { .. } => None,
        }
    }

    pub fn cls_aucs(&self) -> Option<&ClsAucs> {
        match self {
            External::Cls { auc, .. } => Some(auc),
            _ => None,
        }
    }

    /// The cache folder the metrics were computed from.
    pub fn cache(&self) -> Option<&Path> {
        match self {
            External::Cls { cache, .. } | External::Seg { cache, .. } => Some(cache),
            External::Unavailable { .. } => None,
        }
    }
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub sweep: Option<String>,
    pub dir: PathBuf,
    pub kind: Option<RunKind>,
    pub state: RunState,
    /// How its config differs: a sweep cell's overrides, or, for loose runs, the values of the
    /// config keys that vary among the loose runs of its kind.
    pub config: BTreeMap<String, String>,
    pub internal: Option<Internal>,
    pub seconds: Option<f64>,
    pub external: Option<External>,
}

impl Row {
    pub fn task(&self) -> Option<Task> {
        self.kind.map(RunKind::task)
    }

    fn sort_value(&self, key: SortKey) -> Option<f64> {
        match key {
            SortKey::Internal => self.internal.as_ref().and_then(Internal::headline),
            SortKey::External => self.external.as_ref().and_then(External::headline),
        }
    }
}

/// The external set a leaderboard was scored on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalSet {
    pub manifest: PathBuf,
    pub hash: String,
    pub rows: usize,
}

/// The table and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leaderboard {
    pub rows: Vec<Row>,
    pub external: Option<ExternalSet>,
    pub sort: SortKey,
    pub sweeps: Vec<Sweep>,
    /// Prediction sets computed by this call, and read from the cache.
    pub predictions_computed: usize,
    pub predictions_reused: usize,
}

/// What to list.
pub struct LeaderboardRequest<'a> {
    /// Run folders and sweep folders.
    pub inputs: &'a [PathBuf],
    /// The external manifest; `None`: the one the sweeps' plans name, when they agree.
    pub external: Option<&'a Path>,
    pub sort: SortKey,
    pub ctx: PredictContext<'a>,
}

/// The external manifest: the one given, else the single one the sweep plans name.
fn external_manifest(given: Option<&Path>, sweeps: &[Sweep]) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_path_buf());
    }
    let named: BTreeSet<&PathBuf> = sweeps.iter().filter_map(|s| s.external.as_ref()).collect();
    match named.len() {
        1 => named.into_iter().next().cloned(),
        0 => None,
        _ => {
            warn!("the sweeps name different external manifests; give one with --external");
            None
        }
    }
}

/// Config differences of loose runs: per kind, the keys that vary among them.
fn loose_differences(entries: &[Entry]) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut configs: BTreeMap<RunKind, Vec<(&str, FlatConfig)>> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.overrides.is_none()) {
        let Some(kind) = e.kind else { continue };
        match read_flat_config(&config_dir(&e.dir, kind)) {
            Ok(c) => configs.entry(kind).or_default().push((e.name.as_str(), c)),
            Err(err) => warn!("{err}"),
        }
    }
    let mut out = BTreeMap::new();
    for group in configs.values() {
        let keys = varying_keys(group.iter().map(|(_, c)| c));
        for (name, c) in group {
            let diff = keys
                .iter()
                .map(|k| (k.clone(), c.get(k).cloned().unwrap_or_else(|| "(unset)".into())))
                .collect();
            out.insert(name.to_string(), diff);
        }
    }
    out
}

/// The external metrics of a complete run of `kind`.
pub fn external_metrics(
    dir: &Path,
    kind: RunKind,
    manifest: &ManifestData,
    ctx: &PredictContext<'_>,
) -> Result<(External, bool)> {
    match kind.task() {
        Task::Classification => {
            match cls_predictions(dir, kind, manifest, PredictionSet::External, ctx)? {
                Availability::Unavailable(reason) => Ok((External::Unavailable { reason }, false)),
                Availability::Ready(c) => {
                    let s = score_2017(&c.dir.join(TRUTH_CSV), &c.dir.join(PREDICTIONS_CSV))?;
                    Ok((
                        External::Cls {
                            auc: s.auc,
                            images: s.images,
                            undefined: s.undefined,
                            cache: c.dir,
                        },
                        c.computed,
                    ))
                }
            }
        }
        Task::Segmentation => match seg_predictions(dir, manifest, PredictionSet::External, ctx)? {
            Availability::Unavailable(reason) => Ok((External::Unavailable { reason }, false)),
            Availability::Ready(c) => {
                let ev = read_seg_scores(&c.dir)?;
                Ok((
                    External::Seg {
                        jaccard: ev.mean.jaccard,
                        threshold_jaccard: ev.mean.threshold_jaccard,
                        images: ev.per_image.len(),
                        cache: c.dir,
                    },
                    c.computed,
                ))
            }
        },
    }
}

/// Builds the leaderboard (predicting the external set where no cache has it yet).
pub fn build(req: &LeaderboardRequest<'_>) -> Result<Leaderboard> {
    let inputs = collect(req.inputs)?;
    let external_path = external_manifest(req.external, &inputs.sweeps);
    let manifest = external_path.as_deref().map(ManifestData::read).transpose()?;
    let differences = loose_differences(&inputs.entries);
    let (mut computed, mut reused) = (0, 0);
    let mut rows = Vec::with_capacity(inputs.entries.len());
    for e in &inputs.entries {
        let record = match (e.kind, e.dir.is_dir()) {
            (Some(kind), true) => read_internal(&e.dir, kind).unwrap_or_else(|err| {
                warn!("{err}");
                Default::default()
            }),
            _ => Default::default(),
        };
        let external = manifest.as_ref().map(|m| match e.kind {
            Some(kind) if e.state.is_complete() => {
                match external_metrics(&e.dir, kind, m, &req.ctx) {
                    Ok((x, made)) => {
                        if x.cache().is_some() {
                            if made {
                                computed += 1;
                            } else {
                                reused += 1;
                            }
                        }
                        x
                    }
                    Err(err) => {
                        warn!("{}: external metrics: {err}", e.name);
                        External::Unavailable { reason: err.to_string() }
                    }
                }
            }
            _ => External::Unavailable { reason: format!("the run is {}", e.state) },
        });
        let config = match &e.overrides {
            Some(o) => o.clone(),
            None => differences.get(&e.name).cloned().unwrap_or_default(),
        };
        rows.push(Row {
            name: e.name.clone(),
            sweep: e.sweep.clone(),
            dir: e.dir.clone(),
            kind: e.kind,
            state: e.state.clone(),
            config,
            internal: record.internal,
            seconds: record.seconds,
            external,
        });
    }
    sort_rows(&mut rows, req.sort);
    Ok(Leaderboard {
        rows,
        external: manifest.map(|m| ExternalSet {
            manifest: m.path.clone(),
            hash: m.hash.clone(),
            rows: m.rows.len(),
        }),
        sort: req.sort,
        sweeps: inputs.sweeps,
        predictions_computed: computed,
        predictions_reused: reused,
    })
}

/// Classification rows first, then segmentation, then cells of unknown kind; within each,
/// by `key` descending, rows without a value last, ties by name.
pub fn sort_rows(rows: &mut [Row], key: SortKey) {
    rows.sort_by(|a, b| {
        let task = |r: &Row| r.task().map_or(2, |t| t as u8);
        task(a)
            .cmp(&task(b))
            .then_with(|| match (a.sort_value(key), b.sort_value(key)) {
                (Some(x), Some(y)) => y.total_cmp(&x),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// Digits shown for metrics.
const DIGITS: usize = 4;
/// Seconds per minute and per hour, for wall times.
const MINUTE: f64 = 60.0;
const HOUR: f64 = 3600.0;

/// A metric as shown: four decimals; a missing task of a run that has others is "undefined"
/// (its truth holds one class), anything else missing is "-".
pub fn show_metric(v: Option<f64>, undefined_if_missing: bool) -> String {
    match v {
        Some(x) => format!("{x:.DIGITS$}"),
        None if undefined_if_missing => "undefined".into(),
        None => "-".into(),
    }
}

/// `mean ± std (n)`.
pub fn show_spread(s: Option<lesion_metrics::summary::Spread>) -> String {
    s.map(|s| format!("{:.DIGITS$} ± {:.DIGITS$} (n={})", s.mean, s.std, s.n))
        .unwrap_or_else(|| "-".into())
}

/// A wall time in s, min or h.
pub fn show_seconds(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < MINUTE => format!("{s:.1} s"),
        Some(s) if s < HOUR => format!("{:.1} min", s / MINUTE),
        Some(s) => format!("{:.2} h", s / HOUR),
    }
}

/// The cells of a row, as text, in [`Leaderboard::columns`] order.
pub struct ShownRow {
    pub cells: Vec<String>,
}

impl Leaderboard {
    /// Whether any row is of this task.
    pub fn has_task(&self, t: Task) -> bool {
        self.rows.iter().any(|r| r.task() == Some(t))
    }

    /// Column headers of the shown table (external columns only with an external set; AUC
    /// columns only with classification rows, Jaccard only with segmentation rows).
    pub fn columns(&self) -> Vec<&'static str> {
        let mut c = vec!["#", "run", "kind", "state", "config"];
        let cls = self.has_task(Task::Classification);
        let seg = self.has_task(Task::Segmentation);
        if cls {
            c.extend(["AUC mel", "AUC sk", "AUC mean", "folds mel", "folds sk"]);
        }
        if seg {
            c.push("Jaccard");
        }
        c.push("time");
        if self.external.is_some() {
            if cls {
                c.extend(["ext AUC mel", "ext AUC sk", "ext AUC mean"]);
            }
            if seg {
                c.push("ext Jaccard");
            }
            c.push("ext images");
        }
        c
    }

    /// Every row as text cells matching [`Leaderboard::columns`].
    pub fn shown_rows(&self) -> Vec<ShownRow> {
        let cls = self.has_task(Task::Classification);
        let seg = self.has_task(Task::Segmentation);
        self.rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut cells = vec![
                    (i + 1).to_string(),
                    r.name.clone(),
                    r.kind.map_or("-".into(), |k| k.to_string()),
                    r.state.to_string(),
                    crate::config_diff::show(&r.config),
                ];
                if cls {
                    match &r.internal {
                        Some(Internal::Cls { auc, folds_melanoma, folds_keratosis, .. }) => {
                            let any = auc.mean.is_some();
                            cells.extend([
                                show_metric(auc.melanoma, any),
                                show_metric(auc.keratosis, any),
                                show_metric(auc.mean, false),
                                show_spread(*folds_melanoma),
                                show_spread(*folds_keratosis),
                            ]);
                        }
                        _ => cells.extend(std::iter::repeat_n(String::new(), 5)),
                    }
                }
                if seg {
                    cells.push(match &r.internal {
                        Some(Internal::Seg { jaccard }) => show_metric(*jaccard, false),
                        _ => String::new(),
                    });
                }
                cells.push(show_seconds(r.seconds));
                if self.external.is_some() {
                    let (mut c, mut s, images) = match &r.external {
                        Some(External::Cls { auc, images, .. }) => {
                            let any = auc.mean.is_some();
                            (
                                vec![
                                    show_metric(auc.melanoma, any),
                                    show_metric(auc.keratosis, any),
                                    show_metric(auc.mean, false),
                                ],
                                vec![String::new()],
                                images.to_string(),
                            )
                        }
                        Some(External::Seg { jaccard, images, .. }) => (
                            vec![String::new(); 3],
                            vec![show_metric(Some(*jaccard), false)],
                            images.to_string(),
                        ),
                        Some(External::Unavailable { reason }) => {
                            (vec!["-".into(); 3], vec!["-".into()], format!("- ({reason})"))
                        }
                        None => (vec!["-".into(); 3], vec!["-".into()], "-".into()),
                    };
                    if cls {
                        cells.append(&mut c);
                    }
                    if seg {
                        cells.append(&mut s);
                    }
                    cells.push(images);
                }
                ShownRow { cells }
            })
            .collect()
    }

    /// A GitHub-flavoured markdown table, with a line on the external set.
    pub fn to_markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let cols = self.columns();
        let mut out = String::new();
        out.push_str(&format!("| {} |\n", cols.join(" | ")));
        out.push_str(&format!("|{}\n", "---|".repeat(cols.len())));
        for r in self.shown_rows() {
            let cells: Vec<String> = r.cells.iter().map(|c| esc(c)).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        if let Some(x) = &self.external {
            out.push_str(&format!(
                "\nExternal set: {} ({} rows, hash {}).\n",
                x.manifest.display(),
                x.rows,
                x.hash
            ));
        }
        out
    }

    /// One CSV line per run, numbers unrounded.
    pub fn to_csv(&self) -> Result<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let err = |e: csv::Error| TrainError::Config(format!("writing the leaderboard CSV: {e}"));
        w.write_record([
            "rank",
            "name",
            "sweep",
            "kind",
            "state",
            "config",
            "internal_basis",
            "auc_melanoma",
            "auc_keratosis",
            "auc_mean",
            "folds_melanoma_mean",
            "folds_melanoma_std",
            "folds_keratosis_mean",
            "folds_keratosis_std",
            "jaccard",
            "seconds",
            "external_auc_melanoma",
            "external_auc_keratosis",
            "external_auc_mean",
            "external_jaccard",
            "external_images",
            "external_note",
            "dir",
        ])
        .map_err(err)?;
        let num = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        for (i, r) in self.rows.iter().enumerate() {
            let (basis, auc, fm, fk, jac) = match &r.internal {
                Some(Internal::Cls { basis, auc, folds_melanoma, folds_keratosis }) => (
                    serde_json::to_value(basis)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    *auc,
                    *folds_melanoma,
                    *folds_keratosis,
                    None,
                ),
                Some(Internal::Seg { jaccard }) => {
                    (String::new(), ClsAucs::default(), None, None, *jaccard)
                }
                None => (String::new(), ClsAucs::default(), None, None, None),
            };
            let (xa, xj, ximages, note) = match &r.external {
                Some(External::Cls { auc, images, undefined, .. }) => {
                    (*auc, None, Some(*images), undefined.clone().unwrap_or_default())
                }
                Some(External::Seg { jaccard, images, .. }) => {
                    (ClsAucs::default(), Some(*jaccard), Some(*images), String::new())
                }
                Some(External::Unavailable { reason }) => {
                    (ClsAucs::default(), None, None, reason.clone())
                }
                None => (ClsAucs::default(), None, None, String::new()),
            };
            w.write_record([
                (i + 1).to_string(),
                r.name.clone(),
                r.sweep.clone().unwrap_or_default(),
                r.kind.map(|k| k.name().to_string()).unwrap_or_default(),
                r.state.to_string(),
                crate::config_diff::show(&r.config),
                basis,
                num(auc.melanoma),
                num(auc.keratosis),
                num(auc.mean),
                num(fm.map(|s| s.mean)),
                num(fm.map(|s| s.std)),
                num(fk.map(|s| s.mean)),
                num(fk.map(|s| s.std)),
                num(jac),
                num(r.seconds),
                num(xa.melanoma),
                num(xa.keratosis),
                num(xa.mean),
                num(xj),
                ximages.map(|n| n.to_string()).unwrap_or_default(),
                note,
                r.dir.display().to_string(),
            ])
            .map_err(err)?;
        }
        let bytes = w.into_inner().map_err(|e| TrainError::Config(e.to_string()))?;
        String::from_utf8(bytes).map_err(|e| TrainError::Config(e.to_string()))
    }

    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| TrainError::Config(e.to_string()))
    }

    /// The table in `format`.
    pub fn render(&self, format: Format) -> Result<String> {
        match format {
            Format::Markdown => Ok(self.to_markdown()),
            Format::Csv => self.to_csv(),
            Format::Json => self.to_json(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, kind: RunKind, v: Option<f64>) -> Row {
        let internal = match kind.task() {
            Task::Segmentation => Internal::Seg { jaccard: v },
            Task::Classification => Internal::Cls {
                basis: crate::internal::InternalBasis::OutOfFold,
                auc: ClsAucs::new(v, None),
                folds_melanoma: None,
                folds_keratosis: None,
            },
        };
        Row {
            name: name.into(),
            sweep: None,
            dir: PathBuf::from(name),
            kind: Some(kind),
            state: RunState::Complete,
            config: BTreeMap::new(),
            internal: Some(internal),
            seconds: Some(75.0),
            external: None,
        }
    }

    #[test]
    fn classification_first_then_by_value_descending_missing_last() {
        let mut rows = vec![
            row("s", RunKind::SegTrain, Some(0.9)),
            row("a", RunKind::ClsCv, Some(0.6)),
            row("b", RunKind::ClsTrain, None),
            row("c", RunKind::ClsTrain, Some(0.8)),
        ];
        sort_rows(&mut rows, SortKey::Internal);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["c", "a", "b", "s"]);
        let lb = Leaderboard {
            rows,
            external: None,
            sort: SortKey::Internal,
            sweeps: vec![],
            predictions_computed: 0,
            predictions_reused: 0,
        };
        let md = lb.to_markdown();
        assert!(
            md.contains("| 1 | c | cls train | complete |  | 0.8000 | undefined | 0.8000 |"),
            "{md}"
        );
        assert!(md.contains("1.2 min"), "{md}");
        assert_eq!(lb.to_csv().unwrap().lines().count(), 5);
    }
}
