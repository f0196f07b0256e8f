//! Writing an evaluation: per-image CSV and summary JSON, each atomically
//! (written to a temporary file beside the target, then renamed over it).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{SegEvaluation, SegScores};
use crate::MetricsError;

/// Header of the per-image CSV, in column order.
pub const CSV_HEADER: [&str; 11] = [
    "id",
    "tp",
    "tn",
    "fp",
    "fn",
    "accuracy",
    "sensitivity",
    "specificity",
    "jaccard",
    "threshold_jaccard",
    "dice",
];

/// Contents of the summary JSON.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    /// Number of images averaged.
    count: usize,
    /// Macro average of the per-image metrics.
    mean: &'a SegScores,
    /// Challenge score (mean threshold Jaccard).
    overall: f64,
    /// Threshold used for `threshold_jaccard`.
    threshold_jaccard_cutoff: f64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MetricsError + '_ {
    move |source| MetricsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically, creating parent folders.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), MetricsError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl SegEvaluation {
    /// Per-image CSV with columns [`CSV_HEADER`], one row per image.
    pub fn write_csv(&self, path: &Path) -> Result<(), MetricsError> {
        let csv_err = |source| MetricsError::Csv {
            path: path.to_path_buf(),
            source,
        };
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(CSV_HEADER).map_err(csv_err)?;
        for img in &self.per_image {
            let c = &img.confusion;
            let s = &img.scores;
            w.write_record([
                img.id.clone(),
                c.tp.to_string(),
                c.tn.to_string(),
                c.fp.to_string(),
                c.fn_.to_string(),
                s.accuracy.to_string(),
                s.sensitivity.to_string(),
                s.specificity.to_string(),
                s.jaccard.to_string(),
                s.threshold_jaccard.to_string(),
                s.dice.to_string(),
            ])
            .map_err(csv_err)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| csv_err(csv::Error::from(e.into_error())))?;
        write_atomic(path, &bytes)
    }

    /// Summary JSON: `{count, mean: {accuracy, ...}, overall, threshold_jaccard_cutoff}`.
    pub fn write_json(&self, path: &Path) -> Result<(), MetricsError> {
        let summary = Summary {
            count: self.per_image.len(),
            mean: &self.mean,
            overall: self.overall(),
            threshold_jaccard_cutoff: super::THRESHOLD_JACCARD,
        };
        let mut bytes = serde_json::to_vec_pretty(&summary).map_err(|source| MetricsError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        bytes.push(b'\n');
        write_atomic(path, &bytes)
    }
}
