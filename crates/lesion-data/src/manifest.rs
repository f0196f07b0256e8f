//! The manifest: one row per sample (image + optional mask), stored as CSV.
//!
//! CSV columns, in order: `id,source,image_path,mask_path,width,height,content_hash,diagnosis,group`,
//! then any metadata columns ([`ManifestRow::meta`], e.g. `age`, `sex`, `weight`, `rule`,
//! `subset`), sorted by name. An empty `mask_path`, `diagnosis` or `group` cell means `None`
//! (so `Some("")` is written as empty and read back as `None`); an empty metadata cell means
//! the key is absent (empty values are never stored in `meta`). Paths under the CSV's folder are written relative to it;
//! relative paths in a CSV being read resolve against the CSV's folder.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// Further metadata columns by name (age, sex, site, weight, rule, subset, ...).
    /// Invariant: no key is one of the fixed column names and no value is empty.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

impl ManifestRow {
    /// A metadata value, `None` when absent.
    pub fn meta_value(&self, key: &str) -> Option<&str> {
        self.meta.get(key).map(String::as_str)
    }

    /// Sets a metadata value; an empty value removes the key (see the `meta` invariant).
    pub fn set_meta(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        if value.is_empty() {
            self.meta.remove(key);
        } else {
            self.meta.insert(key.to_string(), value);
        }
    }
}

/// An ordered list of rows (importers sort them by id).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    pub rows: Vec<ManifestRow>,
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
    let shown = abs.strip_prefix(dir_abs).map(Path::to_path_buf).unwrap_or(abs);
    shown.to_str().map(str::to_owned).ok_or_else(|| DataError::Csv {
        path: csv.to_path_buf(),
        problem: format!("path is not valid UTF-8: {}", p.display()),
    })
}

impl Manifest {
    pub fn new(rows: Vec<ManifestRow>) -> Self {
        Manifest { rows }
    }

    /// Reads a manifest CSV. Errors name the file and the line; duplicate or empty ids are
    /// rejected. Columns beyond the nine fixed ones are read into [`ManifestRow::meta`].
    pub fn read_csv(path: &Path) -> Result<Manifest> {
        let csv_err = |problem: String| DataError::Csv { path: path.to_path_buf(), problem };
        let bytes = crate::io::read_bytes(path)?;
        let dir = parent_dir(path);
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| csv_err(format!("line 1: {e}")))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        let mut fixed = [0usize; CSV_HEADER.len()];
        for (slot, name) in fixed.iter_mut().zip(CSV_HEADER) {
            *slot = header
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| csv_err(format!("line 1: no {name:?} column")))?;
        }
        let extra: Vec<(usize, &str)> = header
            .iter()
            .enumerate()
            .filter(|(_, h)| !CSV_HEADER.contains(&h.as_str()))
            .map(|(i, h)| (i, h.as_str()))
            .collect();
        let [c_id, c_source, c_image, c_mask, c_width, c_height, c_hash, c_diag, c_group] = fixed;
        let mut rows = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, rec) in reader.records().enumerate() {
            // Data row i is line i + 2 (line 1 is the header).
            let line = i + 2;
            let rec = rec.map_err(|e| csv_err(format!("line {line}: {e}")))?;
            let cell = |c: usize| rec.get(c).unwrap_or("").to_string();
            let number = |c: usize| -> Result<u32> {
                let text = cell(c);
                text.trim().parse::<u32>().map_err(|e| {
                    csv_err(format!(
                        "line {line}, column {} ({}): {text:?} is not a pixel count: {e}",
                        c + 1,
                        header[c]
                    ))
                })
            };
            let id = cell(c_id);
            let image_path = cell(c_image);
            if id.is_empty() {
                return Err(csv_err(format!("line {line}: empty id")));
            }
            if image_path.is_empty() {
                return Err(csv_err(format!("line {line}: empty image_path")));
            }
            if let Some(first) = seen.insert(id.clone(), line) {
                return Err(csv_err(format!(
                    "line {line}: duplicate id {id:?} (first on line {first})"
                )));
            }
            let meta = extra
                .iter()
                .map(|&(c, name)| (name.to_string(), cell(c)))
                .filter(|(_, v)| !v.is_empty())
                .collect();
            rows.push(ManifestRow {
                id,
                source: cell(c_source),
                image_path: resolve(&dir, &image_path),
                mask_path: opt_text(cell(c_mask)).map(|m| resolve(&dir, &m)),
                width: number(c_width)?,
                height: number(c_height)?,
                content_hash: cell(c_hash),
                diagnosis: opt_text(cell(c_diag)),
                group: opt_text(cell(c_group)),
                meta,
            });
        }
        Ok(Manifest { rows })
    }

    /// The metadata column names used by any row, sorted.
    pub fn meta_columns(&self) -> Vec<String> {
        let keys: BTreeSet<&String> = self.rows.iter().flat_map(|r| r.meta.keys()).collect();
        keys.into_iter().cloned().collect()
    }

    /// Writes the manifest as CSV, atomically (temp file + rename).
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let csv_err = |problem: String| DataError::Csv { path: path.to_path_buf(), problem };
        let dir_abs = std::path::absolute(parent_dir(path))
            .map_err(|e| csv_err(format!("cannot make folder absolute: {e}")))?;
        // Through a symbolic link, or to a device or pipe, the CSV is read from another folder
        // than `path`'s: every path is then written absolute (relative ones would break).
        let in_place = matches!(crate::io::write_target(path), Ok(crate::io::WriteTarget::Replace(p)) if p == path);
        let dir_abs = if in_place { dir_abs } else { PathBuf::new() };
        let extra = self.meta_columns();
        if let Some(bad) = extra.iter().find(|k| CSV_HEADER.contains(&k.as_str())) {
            return Err(csv_err(format!("metadata key {bad:?} clashes with a fixed column")));
        }
        let mut writer = csv::Writer::from_writer(Vec::new());
        let header: Vec<&str> =
            CSV_HEADER.iter().copied().chain(extra.iter().map(String::as_str)).collect();
        writer.write_record(&header).map_err(|e| csv_err(e.to_string()))?;
        for row in &self.rows {
            let mut rec: Vec<String> = vec![
                row.id.clone(),
                row.source.clone(),
                path_cell(path, &dir_abs, &row.image_path)?,
                match &row.mask_path {
                    Some(m) => path_cell(path, &dir_abs, m)?,
                    None => String::new(),
                },
                row.width.to_string(),
                row.height.to_string(),
                row.content_hash.clone(),
                row.diagnosis.clone().unwrap_or_default(),
                row.group.clone().unwrap_or_default(),
            ];
            rec.extend(extra.iter().map(|k| row.meta.get(k).cloned().unwrap_or_default()));
            writer.write_record(&rec).map_err(|e| csv_err(format!("row {:?}: {e}", row.id)))?;
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

/// The fixed columns, in the order written.
pub const CSV_HEADER: [&str; 9] = [
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
        meta: BTreeMap<String, String>,
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
            meta in proptest::collection::btree_map("[a-z]{1,6}_m", "[a-zA-Z0-9 ,]{1,8}", 0..3),
        ) -> RowSpec {
            RowSpec { id, source, mask, width, height, diagnosis, group, inside, meta }
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
                    meta: spec.meta,
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
