//! Outputs of a dedup run: groups CSV, pair score table, HTML review sheet. All written
//! atomically through [`lesion_data::io::atomic_write`].

use std::fmt::Write as _;
use std::path::Path;

use lesion_data::io::atomic_write;
use lesion_data::manifest::ManifestRow;
use lesion_data::par::CollectInOrder;

use crate::error::{DedupError, Result};
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
        lesion_data::DataError::Csv { path: path.to_path_buf(), problem: e.to_string() }.into()
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
                if p.score.is_nan() { String::new() } else { format!("{:.4}", p.score) },
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
        &["id_a", "id_b", "kind", "hash_distance", "score", "symmetry", "decision", "duplicate"],
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
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Longest side of a review thumbnail, pixels.
pub const THUMB_LONG_SIDE: u32 = 160;
/// Folder (next to the review sheet) the thumbnails are written into.
pub const THUMBS_DIR: &str = "thumbs";
/// Most pairs shown on one review sheet (the most doubtful first); the rest are in pairs.csv.
pub const MAX_REVIEW_PAIRS: usize = 5000;

/// A CSV field, quoted when it needs to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Relative path (from the sheet) of row `i`'s thumbnail.
fn thumb_rel(i: usize) -> String {
    format!("{THUMBS_DIR}/{i:07}.png")
}

/// Writes the thumbnail of row `i` into `dir`, in parallel callers. Returns the relative path
/// on success, or the reason it could not be made (an unreadable source image is reported on
/// the sheet, not fatal; a failed write is an error).
fn write_thumb(
    dir: &Path,
    i: usize,
    row: &ManifestRow,
) -> Result<std::result::Result<String, String>> {
    let img = match lesion_data::io::load_rgb(&row.image_path) {
        Ok(img) => img,
        Err(e) => {
            tracing::warn!("review thumbnail: {e}");
            return Ok(Err(e.to_string()));
        }
    };
    let small = image::DynamicImage::ImageRgb8(img).thumbnail(THUMB_LONG_SIDE, THUMB_LONG_SIDE);
    let rel = thumb_rel(i);
    lesion_data::io::save_png_atomic(&dir.join(&rel), &small)?;
    Ok(Ok(rel))
}

/// A self-contained review sheet: `path` (HTML) plus thumbnails (longest side
/// [`THUMB_LONG_SIDE`]) of every image shown, written in parallel into `thumbs/` next to it
/// and referenced relatively, so the folder can be moved or archived as a whole. Pairs are
/// listed most doubtful first (scores nearest the threshold), side by side with ids, sources,
/// diagnoses, score, hash distance, symmetry and the decisions-CSV line to copy.
pub fn write_review_html(
    path: &Path,
    rows: &[ManifestRow],
    report: &DedupReport,
    threshold: f32,
) -> Result<()> {
    use rayon::prelude::*;
    let mut pairs: Vec<_> = report.pairs.iter().filter(|p| p.decision.is_none()).collect();
    pairs.sort_by(|x, y| (x.score - threshold).abs().total_cmp(&(y.score - threshold).abs()));
    let total = pairs.len();
    pairs.truncate(MAX_REVIEW_PAIRS);
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut shown: Vec<usize> = pairs.iter().flat_map(|p| [p.a, p.b]).collect();
    shown.sort_unstable();
    shown.dedup();
    let thumbs: Vec<(usize, std::result::Result<String, String>)> = shown
        .par_iter()
        .map(|&i| Ok::<_, DedupError>((i, write_thumb(dir, i, &rows[i])?)))
        .collect_in_order()?;
    let thumbs: std::collections::HashMap<usize, std::result::Result<String, String>> =
        thumbs.into_iter().collect();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><meta charset=utf-8><title>duplicate review</title>\
         <style>body{{font-family:sans-serif}} td{{padding:4px;vertical-align:top}} \
         img{{max-width:{s}px;max-height:{s}px}} .dup{{background:#fdd}} code{{user-select:all}}</style>\
         <h1>Duplicate review: {} pairs, {} groups</h1>\
         <p>Threshold {threshold:.3}; red rows are judged duplicates. Copy the line under each pair \
         into the decisions CSV (columns <code>{}</code>), keeping <code>confirmed</code> or changing it \
         to <code>rejected</code>, and rerun with <code>--decisions</code>.{}</p><table>",
        total,
        report.groups.len(),
        DECISIONS_HEADER.join(","),
        if total > pairs.len() {
            format!(
                " Showing the {} most doubtful; all pairs are in pairs.csv.",
                pairs.len()
            )
        } else {
            String::new()
        },
        s = THUMB_LONG_SIDE
    );
    let cell = |i: usize| {
        let r = &rows[i];
        let img = match thumbs.get(&i) {
            Some(Ok(rel)) => format!("<img src=\"{}\" alt=\"{}\">", esc(rel), esc(&r.id)),
            Some(Err(e)) => format!("<i>image unreadable: {}</i>", esc(e)),
            None => String::new(),
        };
        format!(
            "<td>{img}<br><b>{}</b><br>source {}<br>diagnosis {}</td>",
            esc(&r.id),
            esc(&r.source),
            esc(r.diagnosis.as_deref().unwrap_or("-"))
        )
    };
    for p in pairs {
        let (a, b) = (&rows[p.a], &rows[p.b]);
        let verdict = if p.duplicate { "confirmed" } else { "rejected" };
        let _ = write!(
            h,
            "<tr class={}>{}{}<td>{}<br>score {:.3}<br>hash distance {}<br>{}<br>\
             <code>{},{},{}</code></td></tr>",
            if p.duplicate { "dup" } else { "\"\"" },
            cell(p.a),
            cell(p.b),
            p.kind.as_str(),
            p.score,
            p.hash_distance,
            p.symmetry.as_str(),
            esc(&csv_field(&a.id)),
            esc(&csv_field(&b.id)),
            verdict
        );
    }
    h.push_str("</table>\n");
    Ok(atomic_write(path, h.as_bytes())?)
}
