//! ISIC 2017 task 3 tables (`image_id,melanoma,seborrheic_keratosis`), the
//! evaluation of a prediction table against a ground-truth table, and its
//! JSON/CSV writers (atomic: temporary file beside the target, then rename).
//!
//! Table invariants enforced by [`read_2017_csv`], mirroring
//! `isic_challenge_scoring/load_csv.py`:
//! * a header row naming exactly the columns [`COLUMN_ID`],
//!   [`COLUMN_MELANOMA`], [`COLUMN_KERATOSIS`] in any order (a missing or an
//!   extra column is an error), or no header at all when the first row is
//!   three fields whose last two are numbers: the headerless form the 2017
//!   challenge accepted (`ISIC_0012086,0.25,0.24`), read as id, melanoma,
//!   keratosis, where every row must then parse as id + two probabilities;
//! * ids are unique after removing a case-insensitive `.jpg` suffix;
//! * every value parses as a number within `[0, 1]`.
//!
//! Ground-truth values are binarised with `> 0.5` like the scorer, so the
//! usual `0.0`/`1.0` truth and soft truth are both accepted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    average_precision, roc_auc, roc_curve, specificity_at_sensitivity, BinaryConfusion, CurveError,
    RocCurve, Task, DECISION_THRESHOLD,
};

/// Header of the image-id column.
pub const COLUMN_ID: &str = "image_id";
/// Header of the melanoma probability column.
pub const COLUMN_MELANOMA: &str = "melanoma";
/// Header of the seborrheic keratosis probability column.
pub const COLUMN_KERATOSIS: &str = "seborrheic_keratosis";
/// Sensitivity levels at which the 2017 challenge reported specificity.
pub const SPEC_AT_SENS_LEVELS: [f64; 3] = [0.82, 0.89, 0.95];
/// Suffix the scorer strips from ids (case-insensitively).
const JPG_SUFFIX: &str = ".jpg";
/// Header line number (1-based).
const HEADER_LINE: u64 = 1;

/// Anything that stops a classification evaluation or the writing of it.
/// Line and column numbers are 1-based; line 1 is the header.
#[derive(Debug, thiserror::Error)]
pub enum ClsError {
    #[error(transparent)]
    Write(#[from] lesion_data::DataError),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: malformed CSV: {source}")]
    Csv {
        path: PathBuf,
        line: u64,
        #[source]
        source: csv::Error,
    },
    #[error("{path}: line {line}: missing column '{column}'")]
    MissingColumn { path: PathBuf, line: u64, column: &'static str },
    #[error("{path}: line {line}, column {column}: unexpected column '{name}'")]
    ExtraColumn { path: PathBuf, line: u64, column: usize, name: String },
    #[error("{path}: line {line}, column {column} ({name}): '{value}' is not a number")]
    NotANumber { path: PathBuf, line: u64, column: usize, name: &'static str, value: String },
    #[error("{path}: line {line}, column {column} ({name}): {value} is outside [0, 1]")]
    OutOfRange { path: PathBuf, line: u64, column: usize, name: &'static str, value: f64 },
    #[error("{path}: line {line}, column {column} ({COLUMN_ID}): empty image id")]
    EmptyId { path: PathBuf, line: u64, column: usize },
    #[error("{path}: line {line}, column {column} ({COLUMN_ID}): image id '{id}' duplicates line {first_line}")]
    DuplicateId { path: PathBuf, line: u64, column: usize, id: String, first_line: u64 },
    #[error("{path}: line {line}, column {column} ({COLUMN_ID}): image id '{id}' is not in the ground truth {truth}")]
    UnknownId { path: PathBuf, line: u64, column: usize, id: String, truth: PathBuf },
    #[error("{path}: no row for image id '{id}' (ground truth {truth}, line {truth_line}, column {truth_column})")]
    MissingId { path: PathBuf, id: String, truth: PathBuf, truth_line: u64, truth_column: usize },
    #[error("{path}: no data rows")]
    NoRows { path: PathBuf },
    #[error("{path}: task {task}: {source}")]
    Metric {
        path: PathBuf,
        task: &'static str,
        #[source]
        source: CurveError,
    },
    #[error("JSON error writing {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// One parsed 2017 table. Invariant: all vectors have the same length, ids
/// are unique, values lie in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskTable {
    /// File the table came from.
    pub path: PathBuf,
    /// Image ids without a `.jpg` suffix, in file order.
    pub ids: Vec<String>,
    /// Melanoma values.
    pub melanoma: Vec<f64>,
    /// Seborrheic keratosis values.
    pub keratosis: Vec<f64>,
    /// 1-based line of each row.
    pub lines: Vec<u64>,
    /// 1-based column of the id field.
    pub id_column: usize,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ClsError + '_ {
    move |source| ClsError::Io { path: path.to_path_buf(), source }
}

fn csv_err(path: &Path, source: csv::Error) -> ClsError {
    let line = source.position().map_or(0, |p| p.line());
    ClsError::Csv { path: path.to_path_buf(), line, source }
}

fn strip_jpg(id: &str) -> &str {
    let n = id.len();
    if n >= JPG_SUFFIX.len()
        && id.is_char_boundary(n - JPG_SUFFIX.len())
        && id[n - JPG_SUFFIX.len()..].eq_ignore_ascii_case(JPG_SUFFIX)
    {
        &id[..n - JPG_SUFFIX.len()]
    } else {
        id
    }
}

/// Fields of a headerless row: id, melanoma, keratosis.
const HEADERLESS_FIELDS: usize = 3;

/// Whether the first row of a file is data, not a header: three fields whose last two parse
/// as numbers (no header cell does).
fn is_headerless(first: &csv::StringRecord) -> bool {
    first.len() == HEADERLESS_FIELDS && first.iter().skip(1).all(|f| f.parse::<f64>().is_ok())
}

/// Reads and validates a 2017 table (see the module invariants).
pub fn read_2017_csv(path: &Path) -> Result<TaskTable, ClsError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut records = csv::ReaderBuilder::new()
        .has_headers(false)
        .trim(csv::Trim::All)
        .from_reader(std::io::BufReader::new(file))
        .into_records();
    let Some(first) = records.next() else {
        return Err(ClsError::NoRows { path: path.to_path_buf() });
    };
    let first = first.map_err(|e| csv_err(path, e))?;
    let names = [COLUMN_ID, COLUMN_MELANOMA, COLUMN_KERATOSIS];
    // A headerless first row is data, read again below with the others.
    let (headers, first_data) = if is_headerless(&first) {
        (csv::StringRecord::from(names.to_vec()), Some(first))
    } else {
        (first, None)
    };
    let mut cols: [Option<usize>; 3] = [None; 3];
    for (i, h) in headers.iter().enumerate() {
        match names.iter().position(|n| *n == h) {
            Some(k) if cols[k].is_none() => cols[k] = Some(i),
            _ => {
                return Err(ClsError::ExtraColumn {
                    path: path.to_path_buf(),
                    line: HEADER_LINE,
                    column: i + 1,
                    name: h.to_string(),
                })
            }
        }
    }
    let col = |k: usize| {
        cols[k].ok_or(ClsError::MissingColumn {
            path: path.to_path_buf(),
            line: HEADER_LINE,
            column: names[k],
        })
    };
    let (id_col, mel_col, ker_col) = (col(0)?, col(1)?, col(2)?);

    let mut table = TaskTable {
        path: path.to_path_buf(),
        ids: Vec::new(),
        melanoma: Vec::new(),
        keratosis: Vec::new(),
        lines: Vec::new(),
        id_column: id_col + 1,
    };
    let mut seen: HashMap<String, u64> = HashMap::new();
    for record in first_data.into_iter().map(Ok).chain(records) {
        let record = record.map_err(|e| csv_err(path, e))?;
        let line = record.position().map_or(0, |p| p.line());
        // flexible(false) guarantees every record has the header's width.
        let field = |i: usize| record.get(i).unwrap_or("");
        let id = strip_jpg(field(id_col)).to_string();
        if id.is_empty() {
            return Err(ClsError::EmptyId { path: path.to_path_buf(), line, column: id_col + 1 });
        }
        if let Some(&first_line) = seen.get(&id) {
            return Err(ClsError::DuplicateId {
                path: path.to_path_buf(),
                line,
                column: id_col + 1,
                id,
                first_line,
            });
        }
        let value = |i: usize, name: &'static str| -> Result<f64, ClsError> {
            let text = field(i);
            let v: f64 = text.parse().map_err(|_| ClsError::NotANumber {
                path: path.to_path_buf(),
                line,
                column: i + 1,
                name,
                value: text.to_string(),
            })?;
            if !(0.0..=1.0).contains(&v) {
                return Err(ClsError::OutOfRange {
                    path: path.to_path_buf(),
                    line,
                    column: i + 1,
                    name,
                    value: v,
                });
            }
            Ok(v)
        };
        let mel = value(mel_col, COLUMN_MELANOMA)?;
        let ker = value(ker_col, COLUMN_KERATOSIS)?;
        seen.insert(id.clone(), line);
        table.ids.push(id);
        table.melanoma.push(mel);
        table.keratosis.push(ker);
        table.lines.push(line);
    }
    if table.ids.is_empty() {
        return Err(ClsError::NoRows { path: path.to_path_buf() });
    }
    Ok(table)
}

/// The 2017 per-task numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Task2017Scores {
    /// ROC AUC (scikit-learn `roc_auc_score`).
    pub auc: f64,
    /// Average precision (scikit-learn `average_precision_score`).
    pub ap: f64,
    /// Accuracy at `> 0.5`.
    pub accuracy: f64,
    /// Sensitivity at `> 0.5` (1 when there is no positive).
    pub sensitivity: f64,
    /// Specificity at `> 0.5` (1 when there is no negative).
    pub specificity: f64,
    /// Specificity at sensitivity 0.82 ([`specificity_at_sensitivity`]).
    pub spec_at_sens_82: f64,
    /// Specificity at sensitivity 0.89.
    pub spec_at_sens_89: f64,
    /// Specificity at sensitivity 0.95.
    pub spec_at_sens_95: f64,
}

impl Task2017Scores {
    /// Field-wise mean of two score sets.
    pub fn mean(a: &Task2017Scores, b: &Task2017Scores) -> Task2017Scores {
        let m = |x: f64, y: f64| (x + y) / 2.0;
        Task2017Scores {
            auc: m(a.auc, b.auc),
            ap: m(a.ap, b.ap),
            accuracy: m(a.accuracy, b.accuracy),
            sensitivity: m(a.sensitivity, b.sensitivity),
            specificity: m(a.specificity, b.specificity),
            spec_at_sens_82: m(a.spec_at_sens_82, b.spec_at_sens_82),
            spec_at_sens_89: m(a.spec_at_sens_89, b.spec_at_sens_89),
            spec_at_sens_95: m(a.spec_at_sens_95, b.spec_at_sens_95),
        }
    }

    /// Scores one binary task. Errors as [`roc_auc`] (single class, ...).
    pub fn compute(truth: &[bool], score: &[f64]) -> Result<Task2017Scores, CurveError> {
        let confusion = BinaryConfusion::at_threshold(truth, score);
        let [l82, l89, l95] = SPEC_AT_SENS_LEVELS;
        Ok(Task2017Scores {
            auc: roc_auc(truth, score)?,
            ap: average_precision(truth, score)?,
            accuracy: confusion.accuracy(),
            sensitivity: confusion.sensitivity(),
            specificity: confusion.specificity(),
            spec_at_sens_82: specificity_at_sensitivity(truth, score, l82)?,
            spec_at_sens_89: specificity_at_sensitivity(truth, score, l89)?,
            spec_at_sens_95: specificity_at_sensitivity(truth, score, l95)?,
        })
    }
}

/// One task's evaluation: counts, scores and the full ROC curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvaluation {
    /// Number of positive truth values (`> 0.5`).
    pub positives: usize,
    /// Number of negative truth values.
    pub negatives: usize,
    /// Confusion at `> 0.5`.
    pub confusion: BinaryConfusion,
    pub scores: Task2017Scores,
    /// ROC curve; its first threshold is `+inf`, written as `null` in JSON.
    pub roc: RocCurve,
}

impl TaskEvaluation {
    fn compute(truth: &[bool], score: &[f64]) -> Result<TaskEvaluation, CurveError> {
        let positives = truth.iter().filter(|&&t| t).count();
        Ok(TaskEvaluation {
            positives,
            negatives: truth.len() - positives,
            confusion: BinaryConfusion::at_threshold(truth, score),
            scores: Task2017Scores::compute(truth, score)?,
            roc: roc_curve(truth, score)?,
        })
    }
}

/// Result of [`evaluate_2017`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cls2017Evaluation {
    /// Number of images scored.
    pub count: usize,
    pub melanoma: TaskEvaluation,
    pub seborrheic_keratosis: TaskEvaluation,
    /// Mean of the two tasks' scores.
    pub mean: Task2017Scores,
}

impl Cls2017Evaluation {
    /// The 2017 ranking score: the mean of the two tasks' ROC AUCs.
    pub fn overall(&self) -> f64 {
        self.mean.auc
    }
}

/// A task the ground truth cannot score (e.g. no seborrheic keratosis in PH2), and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UndefinedTask {
    pub task: String,
    pub reason: String,
}

/// The tasks of a ground truth where one task is undefined (one class only): the other
/// task's evaluation, and the undefined one with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cls2017Partial {
    /// Number of images scored.
    pub count: usize,
    /// `melanoma` or `seborrheic_keratosis`.
    pub task: String,
    pub scored: TaskEvaluation,
    pub undefined: UndefinedTask,
}

/// What [`evaluate_2017_defined`] could score.
#[derive(Debug, Clone, PartialEq)]
pub enum Cls2017Outcome {
    /// Both tasks, as the 2017 scorer reports them.
    Complete(Cls2017Evaluation),
    /// One task is undefined on this truth; the other is scored.
    Partial(Cls2017Partial),
}

/// Scores a prediction table against a ground-truth table.
///
/// Every prediction id must be in the truth and vice versa; errors name the
/// offending file, line and column. A task with one class only is an error,
/// as in the 2017 scorer; see [`evaluate_2017_defined`] to score the other.
pub fn evaluate_2017(gt: &Path, pred: &Path) -> Result<Cls2017Evaluation, ClsError> {
    let (n, melanoma, seborrheic_keratosis) = evaluate_tasks(gt, pred)?;
    let melanoma = melanoma?;
    let seborrheic_keratosis = seborrheic_keratosis?;
    let mean = Task2017Scores::mean(&melanoma.scores, &seborrheic_keratosis.scores);
    Ok(Cls2017Evaluation { count: n, melanoma, seborrheic_keratosis, mean })
}

/// Like [`evaluate_2017`], but a task whose truth holds one class only (melanoma-only data
/// such as PH2 has no keratosis) leaves the other task scored: [`Cls2017Outcome::Partial`].
/// Both tasks undefined, or any other problem, is still an error.
pub fn evaluate_2017_defined(gt: &Path, pred: &Path) -> Result<Cls2017Outcome, ClsError> {
    let (count, melanoma, keratosis) = evaluate_tasks(gt, pred)?;
    let undefined = |task: &str, e: &ClsError| match e {
        ClsError::Metric { source: CurveError::SingleClass { .. }, .. } => {
            Some(UndefinedTask { task: task.to_string(), reason: e.to_string() })
        }
        _ => None,
    };
    match (melanoma, keratosis) {
        (Ok(melanoma), Ok(seborrheic_keratosis)) => {
            let mean = Task2017Scores::mean(&melanoma.scores, &seborrheic_keratosis.scores);
            Ok(Cls2017Outcome::Complete(Cls2017Evaluation {
                count,
                melanoma,
                seborrheic_keratosis,
                mean,
            }))
        }
        (Ok(scored), Err(e)) => match undefined(COLUMN_KERATOSIS, &e) {
            Some(undefined) => Ok(Cls2017Outcome::Partial(Cls2017Partial {
                count,
                task: COLUMN_MELANOMA.to_string(),
                scored,
                undefined,
            })),
            None => Err(e),
        },
        (Err(e), Ok(scored)) => match undefined(COLUMN_MELANOMA, &e) {
            Some(undefined) => Ok(Cls2017Outcome::Partial(Cls2017Partial {
                count,
                task: COLUMN_KERATOSIS.to_string(),
                scored,
                undefined,
            })),
            None => Err(e),
        },
        (Err(e), Err(_)) => Err(e),
    }
}

/// One task's evaluation, or why it could not be made.
type TaskResult = Result<TaskEvaluation, ClsError>;

/// A prediction table joined to its ground truth by image id.
/// Invariant: `melanoma` and `keratosis` are in `truth`'s row order, one per truth row.
#[derive(Debug, Clone, PartialEq)]
pub struct Aligned2017 {
    pub truth: TaskTable,
    pub melanoma: Vec<f64>,
    pub keratosis: Vec<f64>,
}

impl Aligned2017 {
    /// One task's truth, binarised as the scorer does (`value > 0.5`), and its scores, in
    /// truth order.
    pub fn task(&self, task: Task) -> (Vec<bool>, &[f64]) {
        let (truth, score) = match task {
            Task::Melanoma => (&self.truth.melanoma, &self.melanoma),
            Task::Keratosis => (&self.truth.keratosis, &self.keratosis),
        };
        (truth.iter().map(|&v| v > DECISION_THRESHOLD).collect(), score)
    }
}

/// Reads `gt` and `pred` (ISIC 2017 CSVs) and joins them by id: a prediction for an image
/// the truth lacks, or a truth image without a prediction, is an error naming the file, line
/// and id (never a dropped row).
pub fn align_2017(gt: &Path, pred: &Path) -> Result<Aligned2017, ClsError> {
    let truth = read_2017_csv(gt)?;
    let predicted = read_2017_csv(pred)?;
    let index: HashMap<&str, usize> =
        truth.ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let n = truth.ids.len();
    let mut mel = vec![f64::NAN; n];
    let mut ker = vec![f64::NAN; n];
    let mut found = vec![false; n];
    for (k, id) in predicted.ids.iter().enumerate() {
        let Some(&i) = index.get(id.as_str()) else {
            return Err(ClsError::UnknownId {
                path: pred.to_path_buf(),
                line: predicted.lines[k],
                column: predicted.id_column,
                id: id.clone(),
                truth: gt.to_path_buf(),
            });
        };
        mel[i] = predicted.melanoma[k];
        ker[i] = predicted.keratosis[k];
        found[i] = true;
    }
    if let Some(i) = found.iter().position(|f| !f) {
        return Err(ClsError::MissingId {
            path: pred.to_path_buf(),
            id: truth.ids[i].clone(),
            truth: gt.to_path_buf(),
            truth_line: truth.lines[i],
            truth_column: truth.id_column,
        });
    }
    Ok(Aligned2017 { truth, melanoma: mel, keratosis: ker })
}

/// Reads and matches both tables, then scores each task on its own.
fn evaluate_tasks(gt: &Path, pred: &Path) -> Result<(usize, TaskResult, TaskResult), ClsError> {
    let aligned = align_2017(gt, pred)?;
    let task = |task: Task| {
        let (truth, score) = aligned.task(task);
        TaskEvaluation::compute(&truth, score).map_err(|source| ClsError::Metric {
            path: gt.to_path_buf(),
            task: task.column(),
            source,
        })
    };
    Ok((aligned.truth.ids.len(), task(Task::Melanoma), task(Task::Keratosis)))
}

/// Header of the summary CSV written by [`Cls2017Evaluation::write_csv`].
pub const SUMMARY_CSV_HEADER: [&str; 9] = [
    "task",
    "auc",
    "ap",
    "accuracy",
    "sensitivity",
    "specificity",
    "spec_at_sens_82",
    "spec_at_sens_89",
    "spec_at_sens_95",
];

impl Cls2017Evaluation {
    /// Summary CSV: header [`SUMMARY_CSV_HEADER`], rows `melanoma`,
    /// `seborrheic_keratosis`, `mean`. Written atomically.
    pub fn write_csv(&self, path: &Path) -> Result<(), ClsError> {
        write_summary_csv(
            path,
            &[
                (COLUMN_MELANOMA, &self.melanoma.scores),
                (COLUMN_KERATOSIS, &self.seborrheic_keratosis.scores),
                ("mean", &self.mean),
            ],
        )
    }

    /// Full JSON (counts, confusions, scores, ROC curves, means). Written
    /// atomically. The `+inf` first ROC threshold is written as `null`.
    pub fn write_json(&self, path: &Path) -> Result<(), ClsError> {
        write_json(path, self)
    }
}

impl Cls2017Partial {
    /// Summary CSV ([`SUMMARY_CSV_HEADER`]) with the scored task's row only.
    pub fn write_csv(&self, path: &Path) -> Result<(), ClsError> {
        write_summary_csv(path, &[(self.task.as_str(), &self.scored.scores)])
    }

    /// JSON of the scored task and the undefined one with its reason. Written atomically.
    pub fn write_json(&self, path: &Path) -> Result<(), ClsError> {
        write_json(path, self)
    }
}

/// Summary CSV: header [`SUMMARY_CSV_HEADER`], one row per named score set. Atomic.
fn write_summary_csv(path: &Path, rows: &[(&str, &Task2017Scores)]) -> Result<(), ClsError> {
    let err = |source| ClsError::Csv { path: path.to_path_buf(), line: 0, source };
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(SUMMARY_CSV_HEADER).map_err(err)?;
    for &(name, s) in rows {
        let mut record = vec![name.to_string()];
        record.extend(
            [
                s.auc,
                s.ap,
                s.accuracy,
                s.sensitivity,
                s.specificity,
                s.spec_at_sens_82,
                s.spec_at_sens_89,
                s.spec_at_sens_95,
            ]
            .iter()
            .map(f64::to_string),
        );
        w.write_record(&record).map_err(err)?;
    }
    let bytes = w.into_inner().map_err(|e| err(csv::Error::from(e.into_error())))?;
    write_atomic(path, &bytes)
}

/// Pretty JSON of `value` and a newline, written atomically.
fn write_json(path: &Path, value: &impl Serialize) -> Result<(), ClsError> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|source| ClsError::Json { path: path.to_path_buf(), source })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` atomically (the workspace's one writer: temp file + rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ClsError> {
    Ok(lesion_data::io::atomic_write(path, bytes)?)
}
