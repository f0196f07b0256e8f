//! Outputs of a dedup run: groups CSV, pair score table, HTML review sheet. All written
//! atomically through [`lesion_data::io::atomic_write`].

use std::fmt::Write as _;
use std::path::Path;

use lesion_data::io::atomic_write;
use lesion_data::manifest::ManifestRow;

use crate::error::Result;
use crate::pipeline::{Decision, DedupReport, DECISIONS_HEADER};

fn csv_bytes(path: &Path, header: &[&str], rows: Vec<Vec<String>>) -> Result<Vec<u8>> {
    let err = |e: csv::Error| lesion_data::DataError::Csv {
        path: path.to_path_buf(),
        problem: e.to_string(),
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header).map_err(err)?;
    for r in rows {
        w.write_record(&r).map_err(err)?;
    }
    w.into_inner().map_err(|e| {
        lesion_data::DataError::Csv {
            path: path.to_path_buf(),
            problem: e.to_string(),
        }
        .into()
    })
}

/// `group,id,source,diagnosis`: one line per member of each duplicate group; groups are
/// numbered from 1 in order of their first member.
pub fn write_groups(path: &Path, rows: &[ManifestRow], report: &DedupReport) -> Result<()> {
    let mut out = Vec::new();
    for (g, members) in report.groups.iter().enumerate() {
        for &i in members {
            let r = &rows[i];
            out.push(vec![
                format!("dup{}", g + 1),
                r.id.clone(),
                r.source.clone(),
                r.diagnosis.clone().unwrap_or_default(),
            ]);
        }
    }
    let bytes = csv_bytes(path, &["group", "id", "source", "diagnosis"], out)?;
    Ok(atomic_write(path, &bytes)?)
}

/// The per-pair score table.
pub fn write_pairs(path: &Path, rows: &[ManifestRow], report: &DedupReport) -> Result<()> {
    let out = report
        .pairs
        .iter()
        .map(|p| {
            vec![
                rows[p.a].id.clone(),
                rows[p.b].id.clone(),
                p.kind.as_str().to_string(),
                if p.hash_distance == u32::MAX {
                    String::new()
                } else {
                    p.hash_distance.to_string()
                },
                if p.score.is_nan() {
                    String::new()
                } else {
                    format!("{:.4}", p.score)
                },
                p.symmetry.as_str().to_string(),
                match p.decision {
                    Some(Decision::Confirmed) => "confirmed".into(),
                    Some(Decision::Rejected) => "rejected".into(),
                    None => String::new(),
                },
                if p.duplicate { "1".into() } else { "0".into() },
            ]
        })
        .collect();
    let bytes = csv_bytes(
        path,
        &[
            "id_a",
            "id_b",
            "kind",
            "hash_distance",
            "score",
            "symmetry",
            "decision",
            "duplicate",
        ],
        out,
    )?;
    Ok(atomic_write(path, &bytes)?)
}

/// A decisions file pre-filled with every near pair (undecided ones empty), to edit and
/// pass back with `--decisions`.
pub fn write_decisions_template(
    path: &Path,
    rows: &[ManifestRow],
    report: &DedupReport,
) -> Result<()> {
    let out = report
        .pairs
        .iter()
        .map(|p| {
            let d = match p.decision {
                Some(Decision::Confirmed) => "confirmed",
                Some(Decision::Rejected) => "rejected",
                None => "",
            };
            vec![rows[p.a].id.clone(), rows[p.b].id.clone(), d.to_string()]
        })
        .collect();
    let bytes = csv_bytes(path, &DECISIONS_HEADER, out)?;
    Ok(atomic_write(path, &bytes)?)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An HTML page of image pairs, most doubtful first (scores nearest the threshold), so a
/// person can confirm or reject them in the decisions file.
pub fn write_review_html(
    path: &Path,
    rows: &[ManifestRow],
    report: &DedupReport,
    threshold: f32,
) -> Result<()> {
    let mut pairs: Vec<_> = report
        .pairs
        .iter()
        .filter(|p| p.decision.is_none())
        .collect();
    pairs.sort_by(|x, y| {
        (x.score - threshold)
            .abs()
            .total_cmp(&(y.score - threshold).abs())
    });
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><meta charset=utf-8><title>duplicate review</title>\
         <style>body{{font-family:sans-serif}} td{{padding:4px;vertical-align:top}} img{{height:160px}} .dup{{background:#fdd}}</style>\
         <h1>Duplicate review: {} pairs, {} groups</h1>\
         <p>Threshold {threshold:.3}. Write <code>confirmed</code> or <code>rejected</code> in the decisions CSV \
         (columns {}) and rerun with <code>--decisions</code>.</p><table>",
        pairs.len(),
        report.groups.len(),
        DECISIONS_HEADER.join(",")
    );
    for p in pairs {
        let (a, b) = (&rows[p.a], &rows[p.b]);
        let src = |r: &ManifestRow| {
            format!(
                "file://{}",
                esc(&std::path::absolute(&r.image_path)
                    .unwrap_or_else(|_| r.image_path.clone())
                    .display()
                    .to_string())
            )
        };
        let _ = write!(
            h,
            "<tr class={}><td><img src=\"{}\"><br>{} ({})</td><td><img src=\"{}\"><br>{} ({})</td>\
             <td>{}<br>score {:.3}<br>hash distance {}<br>{}</td></tr>",
            if p.duplicate { "dup" } else { "\"\"" },
            src(a),
            esc(&a.id),
            esc(a.diagnosis.as_deref().unwrap_or("")),
            src(b),
            esc(&b.id),
            esc(b.diagnosis.as_deref().unwrap_or("")),
            p.kind.as_str(),
            p.score,
            p.hash_distance,
            p.symmetry.as_str()
        );
    }
    h.push_str("</table>\n");
    Ok(atomic_write(path, h.as_bytes())?)
}
