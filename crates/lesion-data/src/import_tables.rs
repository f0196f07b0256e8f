//! Metadata-table importers: a CSV naming images by id (HAM10000's `HAM10000_metadata.csv`,
//! isic-cli's `metadata.csv`, Derm7pt / Dermofit / Interactive Atlas lists exported to CSV,
//! or any plain folder + CSV) with images `<images>/<id>.<ext>`.
//!
//! Columns are recognised by name (case-insensitive, see [`COLUMN_ALIASES`]): the id column
//! is the first of `isic_id`, `image_id`, `image`, `id`, `name`, `filename`; diagnosis, age,
//! sex, site, benign/malignant, lesion and patient ids map to the manifest's fields and
//! metadata keys; every other non-empty cell is kept as metadata under its column name.
//! Images are checked from their headers only (size) and hashed; rows whose image is missing
//! are an error naming the table, line and the paths tried.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::import::IMAGE_EXTENSIONS;
use crate::io::{hash_bytes, header_dims, read_bytes};
use crate::labels::keys;
use crate::manifest::{Manifest, ManifestRow, CSV_HEADER};

/// Accepted id column names, in order of preference.
pub const ID_COLUMNS: [&str; 6] = ["isic_id", "image_id", "image", "id", "name", "filename"];

/// (column name, target): target "diagnosis" is the manifest field, anything else a meta key.
pub const COLUMN_ALIASES: [(&str, &str); 13] = [
    ("diagnosis", "diagnosis"),
    ("dx", "diagnosis"),
    ("age_approx", keys::AGE),
    ("age", keys::AGE),
    ("sex", keys::SEX),
    ("anatom_site_general", keys::SITE),
    ("localization", keys::SITE),
    ("location", keys::SITE),
    ("benign_malignant", keys::BENIGN_MALIGNANT),
    ("lesion_id", keys::LESION),
    ("patient_id", keys::PATIENT),
    ("patient", keys::PATIENT),
    ("lesion", keys::LESION),
];

/// HAM10000 `dx` codes and the diagnosis text they stand for.
const HAM_CODES: [(&str, &str); 7] = [
    ("mel", "melanoma"),
    ("nv", "nevus"),
    ("bkl", "benign keratosis"),
    ("bcc", "basal cell carcinoma"),
    ("akiec", "actinic keratosis"),
    ("vasc", "vascular lesion"),
    ("df", "dermatofibroma"),
];

/// Imports a metadata table; `source` of the rows is `table`.
pub fn import_table(table: &Path, images: &Path) -> Result<Manifest> {
    let bytes = read_bytes(table)?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(bytes.as_slice());
    let csv_err = |problem: String| DataError::Csv {
        path: table.to_path_buf(),
        problem,
    };
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| csv_err(format!("line 1: {e}")))?
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let id_col = ID_COLUMNS
        .iter()
        .find_map(|name| header.iter().position(|h| h == name))
        .ok_or_else(|| csv_err(format!("line 1: no id column (one of {ID_COLUMNS:?})")))?;
    let target: Vec<Option<String>> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if i == id_col {
                return None;
            }
            let mapped = COLUMN_ALIASES
                .iter()
                .find(|(a, _)| a == h)
                .map(|(_, t)| t.to_string());
            match mapped {
                Some(t) => Some(t),
                None if CSV_HEADER.contains(&h.as_str()) => Some(format!("table_{h}")),
                None => Some(h.clone()),
            }
        })
        .collect();
    struct Pending {
        line: usize,
        id: String,
        diagnosis: Option<String>,
        meta: BTreeMap<String, String>,
    }
    let mut pending = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, rec) in reader.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| csv_err(format!("line {line}: {e}")))?;
        let id = rec.get(id_col).unwrap_or("").trim().to_string();
        if id.is_empty() {
            return Err(csv_err(format!(
                "line {line}, column {} ({}): empty id",
                id_col + 1,
                header[id_col]
            )));
        }
        if let Some(first) = seen.insert(id.clone(), line) {
            return Err(csv_err(format!(
                "line {line}: duplicate id {id:?} (first on line {first})"
            )));
        }
        let mut diagnosis = None;
        let mut meta = BTreeMap::new();
        for (c, t) in target.iter().enumerate() {
            let (Some(t), Some(v)) = (t, rec.get(c).map(str::trim)) else {
                continue;
            };
            if v.is_empty() {
                continue;
            }
            if t == "diagnosis" {
                let d = HAM_CODES
                    .iter()
                    .find(|(code, _)| code.eq_ignore_ascii_case(v))
                    .map_or(v, |(_, d)| d);
                diagnosis = Some(d.to_string());
            } else {
                meta.entry(t.clone()).or_insert_with(|| v.to_string());
            }
        }
        pending.push(Pending {
            line,
            id,
            diagnosis,
            meta,
        });
    }
    let rows: Result<Vec<ManifestRow>> = pending
        .into_par_iter()
        .map(|p| {
            let candidates: Vec<PathBuf> = IMAGE_EXTENSIONS
                .iter()
                .flat_map(|e| {
                    [
                        images.join(format!("{}.{e}", p.id)),
                        images.join(format!("{}.{}", p.id, e.to_ascii_uppercase())),
                    ]
                })
                .collect();
            let image = candidates
                .iter()
                .find(|c| c.is_file())
                .cloned()
                .ok_or_else(|| {
                    csv_err(format!(
                        "line {}: no image for id {:?} in {} (tried .{})",
                        p.line,
                        p.id,
                        images.display(),
                        IMAGE_EXTENSIONS.join(", .")
                    ))
                })?;
            let bytes = read_bytes(&image)?;
            let dims = header_dims(&image, &bytes)?;
            Ok(ManifestRow {
                id: p.id,
                source: "table".into(),
                image_path: image,
                mask_path: None,
                width: dims.width,
                height: dims.height,
                content_hash: hash_bytes(&bytes),
                diagnosis: p.diagnosis,
                group: None,
                meta: p.meta,
            })
        })
        .collect();
    let mut m = Manifest::new(rows?);
    m.sort_by_id();
    Ok(m)
}

/// Imports a folder of images with ISIC Archive JSON sidecars (`<id>.json`, fields
/// `meta.clinical.*` and `meta.acquisition.*`), as the archive's older API served them.
pub fn import_archive_json(folder: &Path) -> Result<Manifest> {
    let report = crate::import::import(
        crate::import::SourceKind::Folder,
        folder,
        &Default::default(),
    )?;
    let mut rows = report.manifest.rows;
    for row in &mut rows {
        let json = row.image_path.with_extension("json");
        let Ok(text) = std::fs::read_to_string(&json) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| DataError::Csv {
            path: json.clone(),
            problem: format!("JSON: {e}"),
        })?;
        let fields = [
            ("/meta/clinical/age_approx", keys::AGE),
            ("/meta/clinical/sex", keys::SEX),
            ("/meta/clinical/benign_malignant", keys::BENIGN_MALIGNANT),
            ("/meta/clinical/anatom_site_general", keys::SITE),
            (
                "/meta/clinical/diagnosis_confirm_type",
                "diagnosis_confirm_type",
            ),
            ("/meta/acquisition/image_type", "image_type"),
            ("/meta/acquisition/pixelsX", "original_width"),
            ("/meta/acquisition/pixelsY", "original_height"),
            ("/dataset/name", keys::DATASET),
        ];
        for (ptr, key) in fields {
            match v.pointer(ptr) {
                Some(serde_json::Value::String(s)) => row.set_meta(key, s.clone()),
                Some(serde_json::Value::Number(n)) => row.set_meta(key, n.to_string()),
                _ => {}
            }
        }
        row.source = "isic_archive".into();
    }
    Ok(Manifest::new(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ham_style_table() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::RgbImage::from_pixel(8, 6, image::Rgb([1, 2, 3]));
        img.save(dir.path().join("ISIC_1.png")).unwrap();
        img.save(dir.path().join("ISIC_2.jpg")).unwrap();
        let t = dir.path().join("meta.csv");
        std::fs::write(&t, "lesion_id,image_id,dx,dx_type,age,sex,localization\nL1,ISIC_1,mel,histo,15,male,back\nL1,ISIC_2,nv,histo,,female,\n").unwrap();
        let m = import_table(&t, dir.path()).unwrap();
        assert_eq!(m.rows.len(), 2);
        assert_eq!(m.rows[0].diagnosis.as_deref(), Some("melanoma"));
        assert_eq!(m.rows[0].meta_value(keys::AGE), Some("15"));
        assert_eq!(m.rows[0].meta_value(keys::LESION), Some("L1"));
        assert_eq!(m.rows[0].meta_value("dx_type"), Some("histo"));
        assert_eq!(m.rows[1].meta_value(keys::AGE), None);
        assert_eq!((m.rows[0].width, m.rows[0].height), (8, 6));
        std::fs::write(&t, "image_id,dx\nISIC_9,mel\n").unwrap();
        let e = import_table(&t, dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("meta.csv") && e.contains("line 2") && e.contains("ISIC_9"),
            "{e}"
        );
    }

    /// Real sample: set LESION_ISIC_ARCHIVE to the isic-archive-sample folder.
    #[test]
    fn archive_sample_json() {
        let Some(dir) = std::env::var_os("LESION_ISIC_ARCHIVE") else {
            eprintln!("skipped: LESION_ISIC_ARCHIVE is not set (ISIC Archive sample folder)");
            return;
        };
        let m = import_archive_json(&Path::new(&dir).join("images")).unwrap();
        assert!(m.rows.len() >= 300);
        assert!(
            m.rows
                .iter()
                .filter(|r| r.meta_value(keys::AGE).is_some())
                .count()
                > 100
        );
    }
}
