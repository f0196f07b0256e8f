//! The manifest: one row per sample (image + optional mask), stored as CSV.
//!
//! CSV columns, in order: `id,source,image_path,mask_path,width,height,content_hash,diagnosis,group`.
//! An empty `mask_path`, `diagnosis` or `group` cell means `None` (so `Some("")` is written as
//! empty and read back as `None`). Paths under the CSV's folder are written relative to it;
//! relative paths in a CSV being read resolve against the CSV's folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::io::{atomic_write, parent_dir};

/// One sample. Invariant (kept by importers and [`Manifest::read_csv`]): `id` is non-empty and
/// unique within its manifest; `width`/`height` are the image's pixel size; `content_hash` is
/// the blake3 hex of the image file's bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestRow {
    /// Sample id, e.g. "ISIC_0000000", "IMD002".
    pub id: String,
    /// "isic2016" | "isic2017" | "isic2018" | "ph2" | "folder" | "synthetic".
    pub source: String,
    pub image_path: PathBuf,
    pub mask_path: Option<PathBuf>,
    pub width: u32,
    pub height: u32,
    pub content_hash: String,
    /// The source's own diagnosis text, e.g. "melanoma", "common nevus".
    pub diagnosis: Option<String>,
    /// Duplicate / lesion group when known.
    pub group: Option<String>,
}

/// An ordered list of rows (importers sort them by id).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    pub rows: Vec<ManifestRow>,
}

/// The CSV form of a row: all text, empty cell = `None`.
#[derive(Debug, Serialize, Deserialize)]
struct CsvRecord {
    id: String,
    source: String,
    image_path: String,
    mask_path: String,
    width: u32,
    height: u32,
    content_hash: String,
    diagnosis: String,
    group: String,
}

fn opt_text(s: String) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

/// Resolves a CSV path cell against the CSV's folder.
fn resolve(dir: &Path, cell: &str) -> PathBuf {
    let p = PathBuf::from(cell);
    if p.is_absolute() {
        p
    } else {
        dir.join(p)
    }
}

/// Text for a path cell: relative to `dir_abs` when under it, else absolute.
fn path_cell(csv: &Path, dir_abs: &Path, p: &Path) -> Result<String> {
    let abs = std::path::absolute(p).map_err(|e| DataError::Csv {
        path: csv.to_path_buf(),
        problem: format!("cannot make {} absolute: {e}", p.display()),
    })?;
    let shown = abs
        .strip_prefix(dir_abs)
        .map(Path::to_path_buf)
        .unwrap_or(abs);
    shown
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| DataError::Csv {
            path: csv.to_path_buf(),
            problem: format!("path is not valid UTF-8: {}", p.display()),
        })
}

impl Manifest {
    pub fn new(rows: Vec<ManifestRow>) -> Self {
        Manifest { rows }
    }

    /// Reads a manifest CSV. Errors name the file and the row; duplicate or empty ids are
    /// rejected.
    pub fn read_csv(path: &Path) -> Result<Manifest> {
        let csv_err = |problem: String| DataError::Csv {
            path: path.to_path_buf(),
            problem,
        };
        let bytes = crate::io::read_bytes(path)?;
        let dir = parent_dir(path);
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        let mut rows = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, rec) in reader.deserialize::<CsvRecord>().enumerate() {
            // Data row i is line i + 2 (line 1 is the header).
            let line = i + 2;
            let rec = rec.map_err(|e| csv_err(format!("line {line}: {e}")))?;
            if rec.id.is_empty() {
                return Err(csv_err(format!("line {line}: empty id")));
            }
            if rec.image_path.is_empty() {
                return Err(csv_err(format!("line {line}: empty image_path")));
            }
            if let Some(first) = seen.insert(rec.id.clone(), line) {
                return Err(csv_err(format!(
                    "line {line}: duplicate id {:?} (first on line {first})",
                    rec.id
                )));
            }
            rows.push(ManifestRow {
                id: rec.id,
                source: rec.source,
                image_path: resolve(&dir, &rec.image_path),
                mask_path: opt_text(rec.mask_path).map(|m| resolve(&dir, &m)),
                width: rec.width,
                height: rec.height,
                content_hash: rec.content_hash,
                diagnosis: opt_text(rec.diagnosis),
                group: opt_text(rec.group),
            });
        }
        Ok(Manifest { rows })
    }

    /// Writes the manifest as CSV, atomically (temp file + rename).
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let csv_err = |problem: String| DataError::Csv {
            path: path.to_path_buf(),
            problem,
        };
        let dir_abs = std::path::absolute(parent_dir(path))
            .map_err(|e| csv_err(format!("cannot make folder absolute: {e}")))?;
        let mut writer = csv::Writer::from_writer(Vec::new());
        for row in &self.rows {
            let rec = CsvRecord {
                id: row.id.clone(),
                source: row.source.clone(),
                image_path: path_cell(path, &dir_abs, &row.image_path)?,
                mask_path: match &row.mask_path {
                    Some(m) => path_cell(path, &dir_abs, m)?,
                    None => String::new(),
                },
                width: row.width,
                height: row.height,
                content_hash: row.content_hash.clone(),
                diagnosis: row.diagnosis.clone().unwrap_or_default(),
                group: row.group.clone().unwrap_or_default(),
            };
            writer
                .serialize(rec)
                .map_err(|e| csv_err(format!("row {:?}: {e}", row.id)))?;
        }
        if self.rows.is_empty() {
            writer
                .write_record(CSV_HEADER)
                .map_err(|e| csv_err(e.to_string()))?;
        }
        let bytes = writer.into_inner().map_err(|e| csv_err(e.to_string()))?;
        atomic_write(path, &bytes)
    }

    /// The first row with this id.
    pub fn get(&self, id: &str) -> Option<&ManifestRow> {
        self.rows.iter().find(|r| r.id == id)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Sorts rows by id (the order importers return).
    pub fn sort_by_id(&mut self) {
        self.rows.sort_by(|a, b| a.id.cmp(&b.id));
    }
}

/// Header written for an empty manifest (serde writes it from the first row otherwise).
const CSV_HEADER: [&str; 9] = [
    "id",
    "source",
    "image_path",
    "mask_path",
    "width",
    "height",
    "content_hash",
    "diagnosis",
    "group",
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 ,\"_\\-]{1,12}"
    }

    /// One generated row; `inside` puts its files under the CSV's folder.
    #[derive(Debug, Clone)]
    struct RowSpec {
        id: String,
        source: String,
        mask: Option<String>,
        width: u32,
        height: u32,
        diagnosis: Option<String>,
        group: Option<String>,
        inside: bool,
    }

    prop_compose! {
        fn row_strategy()(
            id in "[A-Za-z0-9_]{1,10}",
            source in text(),
            mask in proptest::option::of("[a-z0-9_ ]{1,8}"),
            width in 0u32..100_000,
            height in 0u32..100_000,
            diagnosis in proptest::option::of(text()),
            group in proptest::option::of(text()),
            inside in any::<bool>(),
        ) -> RowSpec {
            RowSpec { id, source, mask, width, height, diagnosis, group, inside }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn csv_round_trip(specs in proptest::collection::vec(row_strategy(), 0..8)) {
            let dir = tempfile::tempdir().unwrap();
            let outside = tempfile::tempdir().unwrap();
            let mut rows = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for spec in specs {
                if !seen.insert(spec.id.clone()) { continue; }
                let base = if spec.inside { dir.path().join("imgs") } else { outside.path().to_path_buf() };
                rows.push(ManifestRow {
                    image_path: base.join(format!("{}.jpg", spec.id)),
                    mask_path: spec.mask.map(|m| base.join(format!("{m}.png"))),
                    id: spec.id,
                    source: spec.source,
                    width: spec.width,
                    height: spec.height,
                    content_hash: "ab".repeat(32),
                    diagnosis: spec.diagnosis,
                    group: spec.group,
                });
            }
            let m = Manifest { rows };
            let p = dir.path().join("manifest.csv");
            m.write_csv(&p).unwrap();
            let back = Manifest::read_csv(&p).unwrap();
            prop_assert_eq!(back, m);
        }
    }

    #[test]
    fn relative_paths_resolve_against_csv_folder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/m.csv");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(
            &p,
            "id,source,image_path,mask_path,width,height,content_hash,diagnosis,group\n\
             A,folder,images/A.jpg,,10,20,h,,\n",
        )
        .unwrap();
        let m = Manifest::read_csv(&p).unwrap();
        let r = m.get("A").unwrap();
        assert_eq!(r.image_path, dir.path().join("sub/images/A.jpg"));
        assert_eq!(r.mask_path, None);
        assert_eq!(r.diagnosis, None);
        // written paths are relative to the CSV folder again
        m.write_csv(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(",images/A.jpg,"), "{text}");
    }

    #[test]
    fn bad_csv_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.csv");
        std::fs::write(
            &p,
            "id,source,image_path,mask_path,width,height,content_hash,diagnosis,group\n\
             A,folder,a.jpg,,ten,20,h,,\n",
        )
        .unwrap();
        let e = Manifest::read_csv(&p).unwrap_err().to_string();
        assert!(e.contains("bad.csv") && e.contains("line 2"), "{e}");

        std::fs::write(
            &p,
            "id,source,image_path,mask_path,width,height,content_hash,diagnosis,group\n\
             A,folder,a.jpg,,1,2,h,,\nA,folder,b.jpg,,1,2,h,,\n",
        )
        .unwrap();
        let e = Manifest::read_csv(&p).unwrap_err().to_string();
        assert!(e.contains("bad.csv") && e.contains("duplicate"), "{e}");
    }

    #[test]
    fn empty_manifest_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.csv");
        Manifest::default().write_csv(&p).unwrap();
        assert!(Manifest::read_csv(&p).unwrap().is_empty());
    }
}
