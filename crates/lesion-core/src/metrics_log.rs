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

    /// Reading the log back gives the very floats written (no last-digit drift), so a log
    /// rewritten after `--resume` is byte-identical to the one read: write → read → write.
    #[test]
    fn floats_round_trip_exactly_and_rewrites_are_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        // Deterministic bit patterns over the whole finite range, plus losses as they come.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut floats = vec![0.1, 1.0 / 3.0, 2.0_f64.sqrt(), 5e-324, f64::MAX, 1e-7];
        while floats.len() < 20_000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let f = f64::from_bits(state);
            if f.is_finite() {
                floats.push(f);
            }
        }
        let recs: Vec<Rec> = floats
            .chunks(2)
            .enumerate()
            .map(|(i, c)| Rec { epoch: i + 1, loss: c[0], val: c.get(1).copied() })
            .collect();
        write(dir.path(), &recs).unwrap();
        let first = std::fs::read(dir.path().join(METRICS_JSONL)).unwrap();
        let back = read::<Rec>(dir.path()).unwrap();
        let drifted: Vec<(f64, f64)> = recs
            .iter()
            .zip(&back)
            .flat_map(|(a, b)| [(a.loss, b.loss), (a.val.unwrap_or(0.0), b.val.unwrap_or(0.0))])
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .collect();
        assert!(drifted.is_empty(), "{} floats changed, e.g. {:?}", drifted.len(), drifted.first());
        write(dir.path(), &back).unwrap();
        assert!(first == std::fs::read(dir.path().join(METRICS_JSONL)).unwrap());
    }
}
