//! The metrics log of a run: `metrics.jsonl` (exact, read back on `--resume`) and
//! `metrics.csv` (for people and spreadsheets), both rewritten atomically from the full record
//! list after every epoch, generic over the task's epoch record.
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Result, TrainError};
use crate::run::{atomic_write, METRICS_CSV, METRICS_JSONL};

/// Rewrites both logs of `dir` from `records`.
pub fn write<R: Serialize>(dir: &Path, records: &[R]) -> Result<()> {
    let mut jsonl = Vec::new();
    for r in records {
        serde_json::to_writer(&mut jsonl, r)
            .map_err(|e| TrainError::file(dir.join(METRICS_JSONL), e))?;
        jsonl.push(b'\n');
    }
    atomic_write(&dir.join(METRICS_JSONL), &jsonl)?;
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in records {
        w.serialize(r).map_err(|e| TrainError::file(dir.join(METRICS_CSV), e))?;
    }
    let bytes =
        w.into_inner().map_err(|e| TrainError::file(dir.join(METRICS_CSV), e.to_string()))?;
    atomic_write(&dir.join(METRICS_CSV), &bytes)
}

/// Reads `metrics.jsonl` of `dir` (a missing file is an empty log); errors name the line and
/// column.
pub fn read<R: DeserializeOwned>(dir: &Path) -> Result<Vec<R>> {
    let path = dir.join(METRICS_JSONL);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::file(&path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                TrainError::file(&path, format!("line {}, column {}: {e}", i + 1, e.column()))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        epoch: usize,
        loss: f64,
        val: Option<f64>,
    }

    #[test]
    fn round_trips_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let recs = vec![
            Rec { epoch: 1, loss: 0.5, val: None },
            Rec { epoch: 2, loss: 0.25, val: Some(0.75) },
        ];
        write(dir.path(), &recs).unwrap();
        assert_eq!(read::<Rec>(dir.path()).unwrap(), recs);
        let csv = std::fs::read_to_string(dir.path().join(METRICS_CSV)).unwrap();
        assert_eq!(csv.lines().next(), Some("epoch,loss,val"));
        std::fs::write(
            dir.path().join(METRICS_JSONL),
            "{\"epoch\":1,\"loss\":0.5,\"val\":null}\n{oops\n",
        )
        .unwrap();
        let err = read::<Rec>(dir.path()).unwrap_err().to_string();
        assert!(err.contains("metrics.jsonl") && err.contains("line 2"), "{err}");
        assert!(read::<Rec>(&dir.path().join("nothing")).unwrap().is_empty());
    }
}
