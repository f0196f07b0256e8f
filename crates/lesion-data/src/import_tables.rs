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
//!
//! Also the ISIC 2018 Task 3 and ISIC 2019 one-hot ground truths ([`read_isic_onehot`],
//! [`list_isic_onehot`], used by [`crate::import::import`] for
//! [`SourceKind::Isic2018Task3`] and [`SourceKind::Isic2019`]): a CSV `image,<codes>` whose
//! every row has exactly one 1.0 (the others 0.0), giving the diagnosis texts of
//! [`ISIC2018_TASK3_CODES`] / [`ISIC2019_CODES`], plus the optional metadata CSV (2019:
//! `image,age_approximate,anatom_site_general,lesion_id,sex`; 2018: the lesion groupings
//! `image,lesion_id,diagnosis_confirm_type`) whose `lesion_id` becomes the row's `group` (and
//! its `lesion` metadata). Every error names the CSV, the line and the column.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::import::{BadFile, SourceKind, IMAGE_EXTENSIONS};
use crate::io::{hash_bytes, header_dims, read_bytes};
use crate::labels::keys;
use crate::manifest::{Manifest, ManifestRow, CSV_HEADER};
use crate::par::CollectInOrder;

/// Accepted id column names, in order of preference.
pub const ID_COLUMNS: [&str; 6] = ["isic_id", "image_id", "image", "id", "name", "filename"];

/// (column name, target): target "diagnosis" is the manifest field, anything else a meta key.
pub const COLUMN_ALIASES: [(&str, &str); 14] = [
    ("diagnosis", "diagnosis"),
    ("dx", "diagnosis"),
    ("age_approx", keys::AGE),
    ("age_approximate", keys::AGE),
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

/// A reader over a table held in memory.
type TableReader = csv::Reader<std::io::Cursor<Vec<u8>>>;

/// A CSV table read whole (flexible row lengths) and its header cells as written; a bad header
/// is an error naming the file and line 1.
fn open_table(path: &Path) -> Result<(TableReader, Vec<String>)> {
    let bytes = read_bytes(path)?;
    let mut reader =
        csv::ReaderBuilder::new().flexible(true).from_reader(std::io::Cursor::new(bytes));
    let header = reader
        .headers()
        .map_err(|e| DataError::Csv { path: path.to_path_buf(), problem: format!("line 1: {e}") })?
        .iter()
        .map(String::from)
        .collect();
    Ok((reader, header))
}

/// Imports a metadata table; `source` of the rows is `table`.
pub fn import_table(table: &Path, images: &Path) -> Result<Manifest> {
    let (mut reader, raw_header) = open_table(table)?;
    let csv_err = |problem: String| DataError::Csv { path: table.to_path_buf(), problem };
    let header: Vec<String> = raw_header.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
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
            let mapped = COLUMN_ALIASES.iter().find(|(a, _)| a == h).map(|(_, t)| t.to_string());
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
        pending.push(Pending { line, id, diagnosis, meta });
    }
    let rows: Result<Vec<ManifestRow>> = pending
        .into_par_iter()
        .map(|p| {
            let image = find_image(images, &p.id).map_err(|_| {
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
                // HAM10000's lesion_id (and any table's lesion column): images of one lesion
                // are one duplicate group, never split across train and validation.
                group: p.meta.get(keys::LESION).cloned(),
                meta: p.meta,
            })
        })
        .collect_in_order();
    let mut m = Manifest::new(rows?);
    m.sort_by_id();
    Ok(m)
}

/// Imports a folder of images with ISIC Archive JSON sidecars (`<id>.json`, fields
/// `meta.clinical.*` and `meta.acquisition.*`), as the archive's older API served them.
pub fn import_archive_json(folder: &Path) -> Result<Manifest> {
    let report =
        crate::import::import(crate::import::SourceKind::Folder, folder, &Default::default())?;
    let mut rows = report.manifest.rows;
    for row in &mut rows {
        let Some(v) = crate::import::read_sidecar(&row.image_path)? else {
            continue;
        };
        let fields = [
            ("/meta/clinical/age_approx", keys::AGE),
            ("/meta/clinical/sex", keys::SEX),
            ("/meta/clinical/benign_malignant", keys::BENIGN_MALIGNANT),
            ("/meta/clinical/anatom_site_general", keys::SITE),
            ("/meta/clinical/diagnosis_confirm_type", "diagnosis_confirm_type"),
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

/// `<images>/<id>.<ext>` for the first extension of [`IMAGE_EXTENSIONS`] (lower, then upper
/// case) that exists; otherwise the paths tried.
fn find_image(images: &Path, id: &str) -> std::result::Result<PathBuf, Vec<PathBuf>> {
    let candidates: Vec<PathBuf> = IMAGE_EXTENSIONS
        .iter()
        .flat_map(|e| {
            [
                images.join(format!("{id}.{e}")),
                images.join(format!("{id}.{}", e.to_ascii_uppercase())),
            ]
        })
        .collect();
    match candidates.iter().find(|c| c.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(candidates),
    }
}

// ---------------------------------------------------------------------------------------------
// ISIC 2018 Task 3 / ISIC 2019 one-hot ground truth

/// Id column of the one-hot ground truth and of its metadata CSV.
pub const ONEHOT_ID_COLUMN: &str = "image";
/// Id column of the ISIC 2017 metadata CSV (`image_id,age_approximate,sex`).
pub const METADATA_ID_COLUMN_2017: &str = "image_id";

/// ISIC 2018 Task 3 class columns, in the published order, and their diagnosis texts.
pub const ISIC2018_TASK3_CODES: [(&str, &str); 7] = [
    ("MEL", "melanoma"),
    ("NV", "nevus"),
    ("BCC", "basal cell carcinoma"),
    ("AKIEC", "actinic keratosis"),
    ("BKL", "benign keratosis"),
    ("DF", "dermatofibroma"),
    ("VASC", "vascular lesion"),
];

/// ISIC 2019 class columns, in the published order, and their diagnosis texts.
pub const ISIC2019_CODES: [(&str, &str); 9] = [
    ("MEL", "melanoma"),
    ("NV", "nevus"),
    ("BCC", "basal cell carcinoma"),
    ("AK", "actinic keratosis"),
    ("BKL", "benign keratosis"),
    ("DF", "dermatofibroma"),
    ("VASC", "vascular lesion"),
    ("SCC", "squamous cell carcinoma"),
    ("UNK", "unknown"),
];

/// The value of the one class column set in a one-hot row.
const ONEHOT_YES: f64 = 1.0;
/// The value of every other class column.
const ONEHOT_NO: f64 = 0.0;

/// Which one-hot ground truth a header is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneHotFormat {
    Isic2018Task3,
    Isic2019,
}

impl OneHotFormat {
    /// Class columns and diagnosis texts of this format.
    pub fn codes(self) -> &'static [(&'static str, &'static str)] {
        match self {
            OneHotFormat::Isic2018Task3 => &ISIC2018_TASK3_CODES,
            OneHotFormat::Isic2019 => &ISIC2019_CODES,
        }
    }

    fn describe(self) -> String {
        let name = match self {
            OneHotFormat::Isic2018Task3 => "ISIC 2018 Task 3",
            OneHotFormat::Isic2019 => "ISIC 2019",
        };
        let codes: Vec<&str> = self.codes().iter().map(|(c, _)| *c).collect();
        format!("{ONEHOT_ID_COLUMN},{} ({name})", codes.join(","))
    }

    /// The format whose column set is exactly `header`'s (any order, case-insensitive).
    fn of_header(header: &[String]) -> Option<OneHotFormat> {
        [OneHotFormat::Isic2018Task3, OneHotFormat::Isic2019].into_iter().find(|f| {
            header.len() == f.codes().len() + 1
                && header.iter().any(|h| h.eq_ignore_ascii_case(ONEHOT_ID_COLUMN))
                && f.codes().iter().all(|(c, _)| header.iter().any(|h| h.eq_ignore_ascii_case(c)))
        })
    }
}

/// One row of a one-hot ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct OneHotRow {
    /// 1-based line in the CSV (the header is line 1).
    pub line: usize,
    pub id: String,
    /// 0-based position of the image id column.
    pub id_column: usize,
    /// Diagnosis text of the row's class (see [`ISIC2019_CODES`]).
    pub diagnosis: &'static str,
}

/// `"line L, column C (NAME)"` for error messages (`col` 0-based).
/// The data records of a table with their line numbers (the header is line 1) and trimmed ids;
/// blank records are skipped, an unreadable record or an empty id is an error naming the file,
/// the line and the id column.
fn id_records<'a>(
    reader: &'a mut csv::Reader<std::io::Cursor<Vec<u8>>>,
    id_col: usize,
    header: &'a [String],
    path: &'a Path,
) -> impl Iterator<Item = Result<(usize, csv::StringRecord, String)>> + 'a {
    let csv_err = move |problem: String| DataError::Csv { path: path.to_path_buf(), problem };
    reader.records().enumerate().filter_map(move |(i, rec)| {
        let line = i + 2;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => return Some(Err(csv_err(format!("line {line}: {e}")))),
        };
        if rec.iter().all(|c| c.trim().is_empty()) {
            return None;
        }
        let id = rec.get(id_col).unwrap_or("").trim().to_string();
        if id.is_empty() {
            let name = header.get(id_col).map_or("", String::as_str);
            return Some(Err(csv_err(format!("{}: empty image id", at(line, id_col, name)))));
        }
        Some(Ok((line, rec, id)))
    })
}

fn at(line: usize, col: usize, name: &str) -> String {
    format!("line {line}, column {} ({name})", col + 1)
}

/// Reads an ISIC 2018 Task 3 or ISIC 2019 ground-truth CSV (format told by its header).
///
/// Errors (all [`DataError::Csv`] naming `path`, the line and the column): a header that is
/// neither format (an unknown, duplicated or missing column), an empty or duplicated image id,
/// a cell that is not a number or lies outside [0, 1], a row whose values are not exactly one
/// 1.0 and otherwise 0.0.
pub fn read_isic_onehot(path: &Path) -> Result<(OneHotFormat, Vec<OneHotRow>)> {
    let (mut reader, raw_header) = open_table(path)?;
    let csv_err = |problem: String| DataError::Csv { path: path.to_path_buf(), problem };
    let header: Vec<String> = raw_header.iter().map(|h| h.trim().to_string()).collect();
    let expected = format!(
        "expected {} or {}",
        OneHotFormat::Isic2018Task3.describe(),
        OneHotFormat::Isic2019.describe()
    );
    let Some(format) = OneHotFormat::of_header(&header) else {
        let known = |h: &str| {
            h.eq_ignore_ascii_case(ONEHOT_ID_COLUMN)
                || ISIC2018_TASK3_CODES
                    .iter()
                    .chain(&ISIC2019_CODES)
                    .any(|(c, _)| h.eq_ignore_ascii_case(c))
        };
        let repeated = |i: usize| header[..i].iter().any(|h| h.eq_ignore_ascii_case(&header[i]));
        let problem = match (0..header.len()).find(|&i| !known(&header[i]) || repeated(i)) {
            Some(i) if repeated(i) => format!("{}: repeated column", at(1, i, &header[i])),
            Some(i) => format!("{}: unknown column", at(1, i, &header[i])),
            None => {
                // Every column is known: name the columns missing from the nearer format.
                let missing = |f: OneHotFormat| -> Vec<&'static str> {
                    std::iter::once(ONEHOT_ID_COLUMN)
                        .chain(f.codes().iter().map(|(c, _)| *c))
                        .filter(|c| !header.iter().any(|h| h.eq_ignore_ascii_case(c)))
                        .collect()
                };
                let (a, b) =
                    (missing(OneHotFormat::Isic2018Task3), missing(OneHotFormat::Isic2019));
                // Distance to a format: its missing columns plus the header's columns it lacks.
                let extra = |f: OneHotFormat| {
                    header
                        .iter()
                        .filter(|h| {
                            !h.eq_ignore_ascii_case(ONEHOT_ID_COLUMN)
                                && !f.codes().iter().any(|(c, _)| h.eq_ignore_ascii_case(c))
                        })
                        .count()
                };
                let da = a.len() + extra(OneHotFormat::Isic2018Task3);
                let db = b.len() + extra(OneHotFormat::Isic2019);
                let nearer = if da <= db { a } else { b };
                format!("line 1: missing column {}", nearer.join(", "))
            }
        };
        return Err(csv_err(format!("{problem}; {expected}")));
    };
    let id_col = header
        .iter()
        .position(|h| h.eq_ignore_ascii_case(ONEHOT_ID_COLUMN))
        .ok_or_else(|| csv_err(format!("line 1: no {ONEHOT_ID_COLUMN} column; {expected}")))?;
    // (column index, diagnosis) of every class column; of_header guarantees each is present.
    let classes: Vec<(usize, &'static str)> = format
        .codes()
        .iter()
        .filter_map(|(code, diag)| {
            header.iter().position(|h| h.eq_ignore_ascii_case(code)).map(|c| (c, *diag))
        })
        .collect();
    let mut rows = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for item in id_records(&mut reader, id_col, &header, path) {
        let (line, rec, id) = item?;
        if let Some(first) = seen.insert(id.clone(), line) {
            return Err(csv_err(format!(
                "{}: duplicate image id {id:?} (first on line {first})",
                at(line, id_col, &header[id_col])
            )));
        }
        let mut set: Option<&'static str> = None;
        for &(col, diag) in &classes {
            let cell = rec.get(col).unwrap_or("").trim();
            let value: f64 = cell.parse().map_err(|_| {
                csv_err(format!("{}: {cell:?} is not a number", at(line, col, &header[col])))
            })?;
            if !(ONEHOT_NO..=ONEHOT_YES).contains(&value) {
                return Err(csv_err(format!(
                    "{}: value {cell} outside [0, 1]",
                    at(line, col, &header[col])
                )));
            }
            if value == ONEHOT_YES {
                if set.is_some() {
                    return Err(csv_err(format!(
                        "{}: second 1.0 in the row (exactly one class column must be 1.0)",
                        at(line, col, &header[col])
                    )));
                }
                set = Some(diag);
            } else if value != ONEHOT_NO {
                return Err(csv_err(format!(
                    "{}: value {cell} is neither 0.0 nor 1.0 (one-hot rows only)",
                    at(line, col, &header[col])
                )));
            }
        }
        let Some(diagnosis) = set else {
            let first = classes.first().map_or(1, |(c, _)| c + 1);
            let last = classes.last().map_or(header.len(), |(c, _)| c + 1);
            return Err(csv_err(format!(
                "line {line}, columns {first}-{last}: no class column is 1.0 (exactly one must be)"
            )));
        };
        rows.push(OneHotRow { line, id, id_column: id_col, diagnosis });
    }
    Ok((format, rows))
}

/// One image's metadata from a ground truth's companion CSV.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OneHotMeta {
    /// Line of the metadata CSV.
    pub line: usize,
    /// Metadata by key; invariant of [`ManifestRow::meta`]: no fixed column name, no empty value.
    pub meta: BTreeMap<String, String>,
    /// The lesion id, the row's duplicate group.
    pub group: Option<String>,
}

/// Reads an ISIC 2019 metadata CSV (`image,age_approximate,anatom_site_general,lesion_id,sex`),
/// an ISIC 2017 one (`image_id,age_approximate,sex`),
/// or ISIC 2018 Task 3 lesion groupings (`image,lesion_id,diagnosis_confirm_type`) into
/// id -> metadata. Columns are named by [`COLUMN_ALIASES`] (`lesion_id` also gives the group);
/// a `diagnosis` column becomes [`keys::DIAGNOSIS_DETAIL`] (evidence for the
/// benign-keratosis rule of [`crate::labels`]); other columns keep their names.
/// Errors name the file, the line and the column: no `image` column, empty or duplicated id.
pub fn read_isic_metadata(path: &Path) -> Result<HashMap<String, OneHotMeta>> {
    let (mut reader, raw_header) = open_table(path)?;
    let csv_err = |problem: String| DataError::Csv { path: path.to_path_buf(), problem };
    let header: Vec<String> = raw_header.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
    // ISIC 2018/2019 name the id column `image`, ISIC 2017's `*_Data_metadata.csv` `image_id`.
    let id_col = header
        .iter()
        .position(|h| h == ONEHOT_ID_COLUMN || h == METADATA_ID_COLUMN_2017)
        .ok_or_else(|| {
            csv_err(format!(
                "line 1, column 1 ({}): no {ONEHOT_ID_COLUMN:?} or {METADATA_ID_COLUMN_2017:?} column",
                header.first().map_or("", String::as_str)
            ))
        })?;
    let target: Vec<String> = header
        .iter()
        .map(|h| match COLUMN_ALIASES.iter().find(|(a, _)| a == h) {
            Some((_, "diagnosis")) => keys::DIAGNOSIS_DETAIL.to_string(),
            Some((_, t)) => t.to_string(),
            None if CSV_HEADER.contains(&h.as_str()) => format!("table_{h}"),
            None => h.clone(),
        })
        .collect();
    let mut out: HashMap<String, OneHotMeta> = HashMap::new();
    for item in id_records(&mut reader, id_col, &header, path) {
        let (line, rec, id) = item?;
        if let Some(first) = out.get(&id) {
            return Err(csv_err(format!(
                "{}: duplicate image id {id:?} (first on line {})",
                at(line, id_col, &header[id_col]),
                first.line
            )));
        }
        let mut m = OneHotMeta { line, ..Default::default() };
        for (c, t) in target.iter().enumerate() {
            let v = rec.get(c).map(str::trim).unwrap_or("");
            if c == id_col || v.is_empty() {
                continue;
            }
            if t == keys::LESION {
                m.group = Some(v.to_string());
            }
            m.meta.entry(t.clone()).or_insert_with(|| v.to_string());
        }
        out.insert(id, m);
    }
    Ok(out)
}

/// One split of a one-hot data set as published: images folder, ground-truth CSV and
/// metadata CSV, each looked for at the listed paths relative to the data set's root.
struct OneHotSplit {
    data: &'static str,
    truth: &'static [&'static str],
    metadata: &'static [&'static str],
}

const ISIC2018_TASK3_SPLITS: [OneHotSplit; 3] = [
    OneHotSplit {
        data: "ISIC2018_Task3_Training_Input",
        truth: &[
            "ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv",
            "ISIC2018_Task3_Training_GroundTruth.csv",
        ],
        metadata: &[
            "ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_LesionGroupings.csv",
            "ISIC2018_Task3_Training_LesionGroupings.csv",
        ],
    },
    OneHotSplit {
        data: "ISIC2018_Task3_Validation_Input",
        truth: &[
            "ISIC2018_Task3_Validation_GroundTruth/ISIC2018_Task3_Validation_GroundTruth.csv",
            "ISIC2018_Task3_Validation_GroundTruth.csv",
        ],
        metadata: &[],
    },
    OneHotSplit {
        data: "ISIC2018_Task3_Test_Input",
        truth: &[
            "ISIC2018_Task3_Test_GroundTruth/ISIC2018_Task3_Test_GroundTruth.csv",
            "ISIC2018_Task3_Test_GroundTruth.csv",
        ],
        metadata: &[],
    },
];

const ISIC2019_SPLITS: [OneHotSplit; 2] = [
    OneHotSplit {
        data: "ISIC_2019_Training_Input",
        truth: &["ISIC_2019_Training_GroundTruth.csv"],
        metadata: &["ISIC_2019_Training_Metadata.csv"],
    },
    OneHotSplit {
        data: "ISIC_2019_Test_Input",
        truth: &["ISIC_2019_Test_GroundTruth.csv"],
        metadata: &["ISIC_2019_Test_Metadata.csv"],
    },
];

fn onehot_splits(kind: SourceKind) -> &'static [OneHotSplit] {
    match kind {
        SourceKind::Isic2018Task3 => &ISIC2018_TASK3_SPLITS,
        SourceKind::Isic2019 => &ISIC2019_SPLITS,
        _ => &[],
    }
}

/// The folder holding `split`'s files when `root` is that folder or its data folder.
fn onehot_base(root: &Path, split: &OneHotSplit) -> PathBuf {
    if root.file_name().is_some_and(|n| n == split.data) {
        root.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
    } else {
        root.to_path_buf()
    }
}

/// Whether `root` looks like a `kind` (one-hot) data set: it is, or holds, one of its data
/// folders or ground-truth CSVs.
pub fn is_onehot_layout(kind: SourceKind, root: &Path) -> bool {
    onehot_splits(kind).iter().any(|s| {
        let base = onehot_base(root, s);
        base.join(s.data).is_dir() || s.truth.iter().any(|t| base.join(t).is_file())
    })
}

/// One labelled image of a one-hot data set, found on disk but not yet decoded.
#[derive(Debug, Clone)]
pub struct OneHotEntry {
    pub id: String,
    pub image: PathBuf,
    pub diagnosis: String,
    pub meta: BTreeMap<String, String>,
    pub group: Option<String>,
}

/// What [`list_isic_onehot`] found.
#[derive(Debug, Clone, Default)]
pub struct OneHotListing {
    /// One entry per ground-truth row whose image exists.
    pub entries: Vec<OneHotEntry>,
    /// Rows whose image is missing (only with `skip_bad`; otherwise they are errors).
    pub missing: Vec<BadFile>,
}

/// Lists the labelled images of an ISIC 2018 Task 3 or ISIC 2019 data set at `root` (the
/// folder holding the published data folders and CSVs, or one data folder). A split whose
/// data folder exists but whose ground truth does not is skipped with a warning (test sets
/// were published without labels); no split with both is a layout error. A ground-truth row
/// without an image is an error naming the CSV, line and column (a [`BadFile`] with `skip_bad`).
pub fn list_isic_onehot(kind: SourceKind, root: &Path, skip_bad: bool) -> Result<OneHotListing> {
    let mut out = OneHotListing::default();
    let mut splits_found = 0usize;
    for split in onehot_splits(kind) {
        let base = onehot_base(root, split);
        let data = base.join(split.data);
        let truth = split.truth.iter().map(|t| base.join(t)).find(|p| p.is_file());
        let truth = match (data.is_dir(), truth) {
            (true, Some(t)) => t,
            (true, None) => {
                tracing::warn!(
                    "{}: no ground truth ({}); split skipped",
                    data.display(),
                    split.truth.join(" or ")
                );
                continue;
            }
            (false, Some(t)) => {
                return Err(DataError::Layout {
                    path: t,
                    problem: format!("ground truth without its images folder {}", data.display()),
                })
            }
            (false, None) => continue,
        };
        splits_found += 1;
        let (_, rows) = read_isic_onehot(&truth)?;
        let mut meta = match split.metadata.iter().map(|m| base.join(m)).find(|p| p.is_file()) {
            Some(m) => read_isic_metadata(&m)?,
            None => HashMap::new(),
        };
        for r in rows {
            let image = match find_image(&data, &r.id) {
                Ok(image) => image,
                Err(tried) => {
                    let problem = format!(
                        "{}: no image for {:?} in {} (tried {})",
                        at(r.line, r.id_column, ONEHOT_ID_COLUMN),
                        r.id,
                        data.display(),
                        tried
                            .iter()
                            .filter_map(|p| p.file_name())
                            .map(|n| n.to_string_lossy().into_owned())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    let err = DataError::Csv { path: truth.clone(), problem };
                    if !skip_bad {
                        return Err(err);
                    }
                    tracing::warn!("skipping: {err}");
                    out.missing.push(BadFile { path: truth.clone(), problem: err.to_string() });
                    continue;
                }
            };
            let m = meta.remove(&r.id).unwrap_or_default();
            out.entries.push(OneHotEntry {
                id: r.id,
                image,
                diagnosis: r.diagnosis.to_string(),
                meta: m.meta,
                group: m.group,
            });
        }
        if !meta.is_empty() {
            tracing::warn!(
                "{}: {} metadata rows name images without ground truth; ignored",
                base.display(),
                meta.len()
            );
        }
    }
    if splits_found == 0 {
        let expected: Vec<String> = onehot_splits(kind)
            .iter()
            .map(|s| format!("{} + {}", s.data, s.truth.join(" or ")))
            .collect();
        return Err(DataError::Layout {
            path: root.to_path_buf(),
            problem: format!(
                "no {} images folder with its ground truth here (expected one of: {})",
                kind.as_str(),
                expected.join("; ")
            ),
        });
    }
    Ok(out)
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
        assert_eq!(m.rows[0].group.as_deref(), Some("L1"), "lesion_id is the duplicate group");
        assert_eq!(m.rows[0].meta_value("dx_type"), Some("histo"));
        assert_eq!(m.rows[1].meta_value(keys::AGE), None);
        assert_eq!((m.rows[0].width, m.rows[0].height), (8, 6));
        std::fs::write(&t, "image_id,dx\nISIC_9,mel\n").unwrap();
        let e = import_table(&t, dir.path()).unwrap_err().to_string();
        assert!(e.contains("meta.csv") && e.contains("line 2") && e.contains("ISIC_9"), "{e}");
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
        assert!(m.rows.iter().filter(|r| r.meta_value(keys::AGE).is_some()).count() > 100);
    }
}
