//! Writing an evaluation: per-image CSV and summary JSON, each atomically
//! (written to a temporary file beside the target, then renamed over it).

use std::path::Path;

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

/// Writes `bytes` to `path` atomically (the workspace's one writer: temp file + rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), MetricsError> {
    Ok(lesion_data::io::atomic_write(path, bytes)?)
}

impl SegEvaluation {
    /// Per-image CSV with columns [`CSV_HEADER`], one row per image.
    pub fn write_csv(&self, path: &Path) -> Result<(), MetricsError> {
        let csv_err = |source| MetricsError::Csv { path: path.to_path_buf(), source };
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
        let bytes = w.into_inner().map_err(|e| csv_err(csv::Error::from(e.into_error())))?;
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
        let mut bytes = serde_json::to_vec_pretty(&summary)
            .map_err(|source| MetricsError::Json { path: path.to_path_buf(), source })?;
        bytes.push(b'\n');
        write_atomic(path, &bytes)
    }
}
