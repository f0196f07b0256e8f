//! Importers for the public dermoscopy datasets, in the layouts their publishers ship.
//!
//! Every importer lists candidate samples (id, image file, optional mask file, optional
//! diagnosis), then validates them in parallel: each image and mask is fully decoded, the
//! mask size must equal the image size, and the image's blake3 hash is computed. A failing
//! sample either aborts the import with an error naming the file and the problem, or, with
//! [`ImportOptions::skip_bad`], is recorded in [`ImportReport::bad`]. Rows come back sorted by id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use calamine::{open_workbook_auto, Data, Reader};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::io::{decode_bytes, hash_bytes, header_dims, read_bytes, TMP_MARKER};
use crate::manifest::{Manifest, ManifestRow};
use crate::mask::{check_imported, MaskLevels};

/// Image file extensions (lower case) that importers pick up.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "bmp"];

/// Stem suffixes (lower case) that mark a file as a mask, not an image, in folder imports.
pub const MASK_SUFFIXES: [&str; 5] = ["_segmentation", "_mask", "_lesion", "_seg", "_gt"];

/// ISIC stem suffix of superpixel maps shipped next to the images; never samples.
const SUPERPIXELS_SUFFIX: &str = "_superpixels";

/// PH2 folder and file names.
const PH2_IMAGES_DIR: &str = "PH2 Dataset images";
const PH2_TABLE: &str = "PH2_dataset.xlsx";
const PH2_IMAGE_SUBDIR_SUFFIX: &str = "_Dermoscopic_Image";
const PH2_MASK_SUBDIR_SUFFIX: &str = "_lesion";
const PH2_ID_PREFIX: &str = "IMD";
const PH2_EXT: &str = "bmp";

/// PH2 table header cells (compared after [`normalize_cell`]) and the diagnosis each X mark gives.
const PH2_HEADER_ID: &str = "image name";
const PH2_DIAGNOSIS_COLUMNS: [Ph2Class; 3] = [
    Ph2Class { header: "common nevus", diagnosis: "common nevus" },
    Ph2Class { header: "atypical nevus", diagnosis: "atypical nevus" },
    Ph2Class { header: "melanoma", diagnosis: "melanoma" },
];
/// The mark PH2 puts in the column of an image's diagnosis.
const PH2_MARK: &str = "x";

/// One diagnosis column of PH2's table.
struct Ph2Class {
    header: &'static str,
    diagnosis: &'static str,
}

/// ISIC data folder + ground-truth folder pair (one split of one challenge year).
struct IsicSplit {
    data: &'static str,
    truth: &'static str,
    /// Part 3 (classification) ground-truth CSV of this split, giving diagnoses.
    classes: &'static str,
}

const ISIC2016_SPLITS: [IsicSplit; 2] = [
    IsicSplit {
        data: "ISBI2016_ISIC_Part1_Training_Data",
        truth: "ISBI2016_ISIC_Part1_Training_GroundTruth",
        classes: "ISBI2016_ISIC_Part3_Training_GroundTruth.csv",
    },
    IsicSplit {
        data: "ISBI2016_ISIC_Part1_Test_Data",
        truth: "ISBI2016_ISIC_Part1_Test_GroundTruth",
        classes: "ISBI2016_ISIC_Part3_Test_GroundTruth.csv",
    },
];

const ISIC2017_SPLITS: [IsicSplit; 3] = [
    IsicSplit {
        data: "ISIC-2017_Training_Data",
        truth: "ISIC-2017_Training_Part1_GroundTruth",
        classes: "ISIC-2017_Training_Part3_GroundTruth.csv",
    },
    IsicSplit {
        data: "ISIC-2017_Validation_Data",
        truth: "ISIC-2017_Validation_Part1_GroundTruth",
        classes: "ISIC-2017_Validation_Part3_GroundTruth.csv",
    },
    IsicSplit {
        data: "ISIC-2017_Test_v2_Data",
        truth: "ISIC-2017_Test_v2_Part1_GroundTruth",
        classes: "ISIC-2017_Test_v2_Part3_GroundTruth.csv",
    },
];

const ISIC2018_SPLITS: [IsicSplit; 3] = [
    IsicSplit {
        data: "ISIC2018_Task1-2_Training_Input",
        truth: "ISIC2018_Task1_Training_GroundTruth",
        classes: "",
    },
    IsicSplit {
        data: "ISIC2018_Task1-2_Validation_Input",
        truth: "ISIC2018_Task1_Validation_GroundTruth",
        classes: "",
    },
    IsicSplit {
        data: "ISIC2018_Task1-2_Test_Input",
        truth: "ISIC2018_Task1_Test_GroundTruth",
        classes: "",
    },
];

/// ISIC mask file suffix; 2016 spells it with a capital S, so matching is case-insensitive.
const ISIC_MASK_SUFFIX: &str = "_segmentation.png";

/// Which dataset layout to import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    Isic2016,
    Isic2017,
    Isic2018,
    /// ISIC 2018 Task 3 (classification): one-hot ground truth, no masks.
    Isic2018Task3,
    /// ISIC 2019: one-hot ground truth with metadata, no masks.
    Isic2019,
    Ph2,
    Folder,
}

impl SourceKind {
    /// Every kind, in the order messages list them.
    pub const ALL: [SourceKind; 7] = [
        SourceKind::Isic2016,
        SourceKind::Isic2017,
        SourceKind::Isic2018,
        SourceKind::Isic2018Task3,
        SourceKind::Isic2019,
        SourceKind::Ph2,
        SourceKind::Folder,
    ];

    /// The kinds' names, comma-separated (for messages).
    pub fn names() -> String {
        SourceKind::ALL.map(SourceKind::as_str).join(", ")
    }

    /// The `source` text written in manifest rows.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Isic2016 => "isic2016",
            SourceKind::Isic2017 => "isic2017",
            SourceKind::Isic2018 => "isic2018",
            SourceKind::Isic2018Task3 => "isic2018-task3",
            SourceKind::Isic2019 => "isic2019",
            SourceKind::Ph2 => "ph2",
            SourceKind::Folder => "folder",
        }
    }

    fn isic_splits(self) -> &'static [IsicSplit] {
        match self {
            SourceKind::Isic2016 => &ISIC2016_SPLITS,
            SourceKind::Isic2017 => &ISIC2017_SPLITS,
            SourceKind::Isic2018 => &ISIC2018_SPLITS,
            SourceKind::Isic2018Task3
            | SourceKind::Isic2019
            | SourceKind::Ph2
            | SourceKind::Folder => &[],
        }
    }

    /// Guesses the layout of `root`: an ISIC data folder (or a folder holding one; segmentation
    /// layouts first, then the ISIC 2018 Task 3 and ISIC 2019 one-hot layouts), a PH2
    /// folder (or its "PH2 Dataset images" folder), else a plain folder of images.
    pub fn detect(root: &Path) -> Result<SourceKind> {
        if !root.is_dir() {
            return Err(DataError::Missing { path: root.to_path_buf() });
        }
        let name = dir_name(root);
        for kind in [SourceKind::Isic2016, SourceKind::Isic2017, SourceKind::Isic2018] {
            for split in kind.isic_splits() {
                if name == split.data || root.join(split.data).is_dir() {
                    return Ok(kind);
                }
            }
        }
        for kind in [SourceKind::Isic2018Task3, SourceKind::Isic2019] {
            if crate::import_tables::is_onehot_layout(kind, root) {
                return Ok(kind);
            }
        }
        if name == PH2_IMAGES_DIR
            || root.join(PH2_IMAGES_DIR).is_dir()
            || root.join(PH2_TABLE).is_file()
        {
            return Ok(SourceKind::Ph2);
        }
        if !list_images(root)?.is_empty() {
            return Ok(SourceKind::Folder);
        }
        Err(DataError::Layout {
            path: root.to_path_buf(),
            problem: "not an ISIC 2016/2017/2018/2019 or PH2 folder, and holds no images".into(),
        })
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceKind {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "isic2016" => Ok(SourceKind::Isic2016),
            "isic2017" => Ok(SourceKind::Isic2017),
            "isic2018" => Ok(SourceKind::Isic2018),
            "isic2018-task3" | "isic2018_task3" | "isic2018task3" => Ok(SourceKind::Isic2018Task3),
            "isic2019" => Ok(SourceKind::Isic2019),
            "ph2" => Ok(SourceKind::Ph2),
            "folder" => Ok(SourceKind::Folder),
            other => Err(DataError::InvalidArgument(format!(
                "unknown source kind {other:?} (expected one of {})",
                SourceKind::names()
            ))),
        }
    }
}

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Record bad files in [`ImportReport::bad`] and go on, instead of failing.
    pub skip_bad: bool,
    /// Folder kind only: where the masks are (matched to images by stem).
    pub mask_dir: Option<PathBuf>,
    /// An image without a mask is an error (or a bad file with `skip_bad`).
    pub require_masks: bool,
    /// Accept masks whose values are only 0 and 1, reading 1 as lesion (recorded per row, see
    /// [`crate::mask`]); without it such a mask is an error, as it would binarise to empty.
    pub masks_01: bool,
}

/// A file that failed validation, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct BadFile {
    pub path: PathBuf,
    pub problem: String,
}

/// What an import produced.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// Valid rows, sorted by id.
    pub manifest: Manifest,
    /// Files skipped because of `skip_bad` (empty otherwise).
    pub bad: Vec<BadFile>,
    /// Ids listed in a dataset's table (PH2, ISIC Part 3 ground truth) for which no image
    /// exists, sorted.
    pub table_rows_without_image: Vec<String>,
    /// Masks with no lesion pixel at all (imported, but worth a warning), in row order.
    pub empty_masks: Vec<PathBuf>,
}

/// A sample found on disk, not yet validated.
#[derive(Debug, Clone)]
struct Candidate {
    id: String,
    image: PathBuf,
    mask: Option<PathBuf>,
    diagnosis: Option<String>,
    /// Where a missing mask was looked for (for the error message).
    mask_dir: PathBuf,
}

/// Candidates plus the table ids without an image, and metadata to attach by id after
/// validation (ISIC 2016/2017 `*_Data_metadata.csv`: age, sex).
struct Listing {
    candidates: Vec<Candidate>,
    table_rows_without_image: Vec<String>,
    meta: HashMap<String, BTreeMap<String, String>>,
    /// Samples refused while listing (with `skip_bad`), e.g. an unreadable sidecar.
    bad: Vec<BadFile>,
}

/// Imports the dataset at `root` laid out as `kind`.
pub fn import(kind: SourceKind, root: &Path, opts: &ImportOptions) -> Result<ImportReport> {
    if !root.is_dir() {
        return Err(DataError::Missing { path: root.to_path_buf() });
    }
    let listing = match kind {
        SourceKind::Isic2016 | SourceKind::Isic2017 | SourceKind::Isic2018 => {
            list_isic(kind, root)?
        }
        SourceKind::Isic2018Task3 | SourceKind::Isic2019 => return import_onehot(kind, root, opts),
        SourceKind::Ph2 => list_ph2(root)?,
        SourceKind::Folder => list_folder(root, opts.mask_dir.as_deref(), opts.skip_bad)?,
    };
    let mut report = validate(kind, listing.candidates, opts)?;
    report.table_rows_without_image = listing.table_rows_without_image;
    report.bad.extend(listing.bad);
    let mut meta = listing.meta;
    for row in &mut report.manifest.rows {
        if let Some(m) = meta.remove(&row.id) {
            row.meta.extend(m);
        }
    }
    tracing::info!(
        source = kind.as_str(),
        root = %root.display(),
        rows = report.manifest.rows.len(),
        bad = report.bad.len(),
        "import done"
    );
    Ok(report)
}

/// The ISIC 2018 Task 3 / ISIC 2019 hook: rows listed from the one-hot ground truth by
/// [`crate::import_tables::list_isic_onehot`], validated like every other import, then given
/// their metadata and lesion group. Ground-truth rows without an image are errors, or bad
/// files with `skip_bad`.
fn import_onehot(kind: SourceKind, root: &Path, opts: &ImportOptions) -> Result<ImportReport> {
    let listing = crate::import_tables::list_isic_onehot(kind, root, opts.skip_bad)?;
    let mut extra: HashMap<String, (BTreeMap<String, String>, Option<String>)> = HashMap::new();
    let mut candidates = Vec::with_capacity(listing.entries.len());
    for e in listing.entries {
        let mask_dir = e.image.parent().map(Path::to_path_buf).unwrap_or_default();
        // A repeated id (two splits) keeps the first metadata; validate reports the duplicate.
        extra.entry(e.id.clone()).or_insert((e.meta, e.group));
        candidates.push(Candidate {
            id: e.id,
            image: e.image,
            mask: None,
            diagnosis: Some(e.diagnosis),
            mask_dir,
        });
    }
    let mut report = validate(kind, candidates, opts)?;
    for row in &mut report.manifest.rows {
        if let Some((meta, group)) = extra.remove(&row.id) {
            row.meta = meta;
            row.group = group;
        }
    }
    report.bad.extend(listing.missing);
    tracing::info!(
        source = kind.as_str(),
        root = %root.display(),
        rows = report.manifest.rows.len(),
        bad = report.bad.len(),
        "import done"
    );
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Listing helpers

fn dir_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Files (not folders) directly in `dir`, sorted; hidden files and our temp files skipped.
fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::read(dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::read(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.contains(TMP_MARKER) {
            continue;
        }
        if path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn lower_ext(p: &Path) -> String {
    p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default()
}

fn stem(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

fn is_image_file(p: &Path) -> bool {
    IMAGE_EXTENSIONS.contains(&lower_ext(p).as_str())
}

/// Image files directly in `dir` (non-image files such as LICENSE.txt are ignored).
fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(list_files(dir)?.into_iter().filter(|p| is_image_file(p)).collect())
}

/// If `stem` ends with a known mask suffix (case-insensitive), the stem without it.
fn strip_mask_suffix(stem: &str) -> Option<String> {
    let lower = stem.to_ascii_lowercase();
    MASK_SUFFIXES
        .iter()
        .find(|s| lower.ends_with(*s) && lower.len() > s.len())
        .map(|s| stem[..stem.len() - s.len()].to_string())
}

// ---------------------------------------------------------------------------------------------
// ISIC

/// One ISIC split found on disk.
struct FoundSplit {
    data: PathBuf,
    truth: PathBuf,
    classes: Option<PathBuf>,
}

fn list_isic(kind: SourceKind, root: &Path) -> Result<Listing> {
    let name = dir_name(root);
    let mut found = Vec::new();
    for split in kind.isic_splits() {
        // `root` is the data folder itself: its ground truth and class CSV are siblings.
        let base = if name == split.data {
            root.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
        } else {
            root.to_path_buf()
        };
        let data = base.join(split.data);
        if data.is_dir() {
            let classes = (!split.classes.is_empty())
                .then(|| base.join(split.classes))
                .filter(|p| p.is_file());
            found.push(FoundSplit { data, truth: base.join(split.truth), classes });
        }
    }
    if found.is_empty() {
        let expected: Vec<&str> = kind.isic_splits().iter().map(|s| s.data).collect();
        return Err(DataError::Layout {
            path: root.to_path_buf(),
            problem: format!(
                "no {} data folder here (expected one of: {})",
                kind.as_str(),
                expected.join(", ")
            ),
        });
    }
    let mut candidates = Vec::new();
    let mut meta = HashMap::new();
    let mut without_image = Vec::new();
    for split in found {
        // ISIC 2017 ships `<data>/<data>_metadata.csv` (age_approximate, sex); also accepted
        // beside the data folder.
        let meta_name = format!("{}_metadata.csv", dir_name(&split.data));
        let meta_csv = [split.data.join(&meta_name), split.data.with_file_name(&meta_name)]
            .into_iter()
            .find(|p| p.is_file());
        if let Some(csv) = meta_csv {
            for (id, m) in crate::import_tables::read_isic_metadata(&csv)? {
                meta.entry(id).or_insert(m.meta);
            }
        }
        let masks = isic_masks(&split.truth)?;
        let diagnoses = match &split.classes {
            Some(csv) => read_isic_classes(csv)?,
            None => HashMap::new(),
        };
        let mut present = HashSet::new();
        for image in list_images(&split.data)? {
            let id = stem(&image);
            if id.to_ascii_lowercase().ends_with(SUPERPIXELS_SUFFIX) {
                continue;
            }
            present.insert(id.clone());
            candidates.push(Candidate {
                mask: masks.get(&id).cloned(),
                diagnosis: diagnoses.get(&id).cloned(),
                id,
                image,
                mask_dir: split.truth.clone(),
            });
        }
        // A partial download: ground-truth rows whose image is absent are reported, not fatal.
        without_image.extend(diagnoses.into_keys().filter(|id| !present.contains(id)));
    }
    without_image.sort();
    Ok(Listing { candidates, table_rows_without_image: without_image, meta, bad: Vec::new() })
}

/// id -> mask path for `<id>_segmentation.png` / `<id>_Segmentation.png` in `truth`
/// (an absent ground-truth folder gives no masks: test sets may ship without them).
fn isic_masks(truth: &Path) -> Result<HashMap<String, PathBuf>> {
    let mut map = HashMap::new();
    if !truth.is_dir() {
        return Ok(map);
    }
    for p in list_files(truth)? {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(ISIC_MASK_SUFFIX) {
            let id = name[..name.len() - ISIC_MASK_SUFFIX.len()].to_string();
            map.insert(id, p);
        }
    }
    Ok(map)
}

/// The two label values of an ISIC Part 3 ground-truth cell: yes and no.
const ISIC_LABEL_YES: f64 = 1.0;
const ISIC_LABEL_NO: f64 = 0.0;

/// Column positions of the ISIC 2017 Part 3 ground-truth CSV.
#[derive(Debug, Clone, Copy)]
struct Isic2017Columns {
    melanoma: usize,
    keratosis: usize,
}

/// A diagnosis column of PH2's table, located in its header row.
struct Ph2Column {
    col: usize,
    diagnosis: &'static str,
}

/// Reads an ISIC Part 3 ground-truth CSV into id -> diagnosis.
///
/// 2017: header `image_id,melanoma,seborrheic_keratosis` with 0/1 values -> "melanoma",
/// "seborrheic keratosis" or "nevus". 2016: no header, `id,benign|malignant` (training) or
/// `id,0|1` (test) -> "benign" / "malignant".
///
/// Errors name the file and the line: an empty or header-only file (every diagnosis would be
/// blank), an empty or duplicated image id, a label that is neither 0 nor 1, a 2017 row that is
/// both melanoma and seborrheic keratosis.
fn read_isic_classes(csv_path: &Path) -> Result<HashMap<String, String>> {
    let bytes = read_bytes(csv_path)?;
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(bytes.as_slice());
    let csv_err = |problem: String| DataError::Csv { path: csv_path.to_path_buf(), problem };
    let mut out = HashMap::new();
    let mut first_line: HashMap<String, u64> = HashMap::new();
    let mut columns: Option<Isic2017Columns> = None;
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| csv_err(format!("line {}: {e}", i + 1)))?;
        // The reader skips blank lines, so the record's own position gives its line.
        let line = rec.position().map_or(i as u64 + 1, |p| p.line());
        let cells: Vec<&str> = rec.iter().map(str::trim).collect();
        if i == 0 && cells.iter().any(|c| c.eq_ignore_ascii_case("melanoma")) {
            let find = |n: &str| cells.iter().position(|c| c.eq_ignore_ascii_case(n));
            match (find("melanoma"), find("seborrheic_keratosis")) {
                (Some(melanoma), Some(keratosis)) => {
                    columns = Some(Isic2017Columns { melanoma, keratosis })
                }
                _ => return Err(csv_err("header lacks melanoma / seborrheic_keratosis".into())),
            }
            continue;
        }
        if cells.iter().all(|c| c.is_empty()) {
            continue;
        }
        let Some(id) = cells.first().filter(|c| !c.is_empty()) else {
            return Err(csv_err(format!("line {line}, column 1: empty image id")));
        };
        let label = |col: usize, name: &str| -> Result<bool> {
            let text = cells.get(col).copied().unwrap_or("");
            let at = format!("line {line}, column {} ({name})", col + 1);
            match text.parse::<f64>() {
                Ok(v) if v == ISIC_LABEL_YES => Ok(true),
                Ok(v) if v == ISIC_LABEL_NO => Ok(false),
                Ok(_) => Err(csv_err(format!("{at}: {text} is neither 0 nor 1"))),
                Err(_) => Err(csv_err(format!("{at}: {text:?} is not a number"))),
            }
        };
        let diagnosis = match columns {
            Some(cols) => {
                match (label(cols.melanoma, "melanoma")?, label(cols.keratosis, "seborrheic_keratosis")?)
                {
                    (true, true) => {
                        return Err(csv_err(format!(
                            "line {line}: {id} is marked both melanoma and seborrheic_keratosis (one diagnosis per image)"
                        )))
                    }
                    (true, false) => "melanoma",
                    (false, true) => "seborrheic keratosis",
                    (false, false) => "nevus",
                }
            }
            None => match cells.get(1).map(|c| c.to_ascii_lowercase()) {
                Some(c) if c == "malignant" => "malignant",
                Some(c) if c == "benign" => "benign",
                _ => {
                    if label(1, "diagnosis")? {
                        "malignant"
                    } else {
                        "benign"
                    }
                }
            },
        };
        if let Some(first) = first_line.insert((*id).to_string(), line) {
            return Err(csv_err(format!(
                "line {line}: duplicate image id {id:?} (first on line {first})"
            )));
        }
        out.insert((*id).to_string(), diagnosis.to_string());
    }
    if out.is_empty() {
        return Err(csv_err(match columns {
            Some(_) => "a header but no image rows: every diagnosis would be blank".into(),
            None => "no image rows (the file is empty): every diagnosis would be blank".into(),
        }));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// PH2

fn list_ph2(root: &Path) -> Result<Listing> {
    // `root` is either PH2's top folder or its "PH2 Dataset images" folder.
    let (images_dir, top) = if dir_name(root) == PH2_IMAGES_DIR {
        (root.to_path_buf(), root.parent().map(Path::to_path_buf).unwrap_or_default())
    } else {
        (root.join(PH2_IMAGES_DIR), root.to_path_buf())
    };
    if !images_dir.is_dir() {
        return Err(DataError::Layout {
            path: root.to_path_buf(),
            problem: format!("no {PH2_IMAGES_DIR:?} folder"),
        });
    }
    let table_path = top.join(PH2_TABLE);
    let table = if table_path.is_file() {
        read_ph2_table(&table_path)?
    } else {
        tracing::warn!(path = %table_path.display(), "PH2 table not found: no diagnoses");
        BTreeMap::new()
    };

    let entries = std::fs::read_dir(&images_dir).map_err(|e| DataError::read(&images_dir, e))?;
    let mut candidates = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::read(&images_dir, e))?;
        let id = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        if !id.starts_with(PH2_ID_PREFIX) || !dir.is_dir() {
            continue;
        }
        let image =
            dir.join(format!("{id}{PH2_IMAGE_SUBDIR_SUFFIX}")).join(format!("{id}.{PH2_EXT}"));
        let mask_dir = dir.join(format!("{id}{PH2_MASK_SUBDIR_SUFFIX}"));
        let mask = mask_dir.join(format!("{id}{PH2_MASK_SUBDIR_SUFFIX}.{PH2_EXT}"));
        let diagnosis = table.get(&id).cloned().flatten();
        if !table.is_empty() && !table.contains_key(&id) {
            tracing::warn!(id = %id, "PH2 image not listed in {PH2_TABLE}");
        }
        candidates.push(Candidate {
            mask: mask.is_file().then_some(mask),
            id,
            image,
            diagnosis,
            mask_dir,
        });
    }
    let present: HashSet<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
    let without: Vec<String> =
        table.keys().filter(|id| !present.contains(id.as_str())).cloned().collect();
    if !without.is_empty() {
        tracing::warn!(
            "{} of {} rows of {} have no image in {}; importing the {} present",
            without.len(),
            table.len(),
            table_path.display(),
            images_dir.display(),
            candidates.len()
        );
    }
    Ok(Listing {
        candidates,
        table_rows_without_image: without,
        meta: HashMap::new(),
        bad: Vec::new(),
    })
}

/// Lower-case, whitespace collapsed to single spaces.
fn normalize_cell(d: &Data) -> String {
    let text = match d {
        Data::String(s) => s.clone(),
        Data::Empty => String::new(),
        other => other.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Reads PH2's table into id -> diagnosis (None when a row has no or several X marks).
///
/// The header row is not the first row (a legend comes first): it is the first row with an
/// "Image Name" cell; the diagnosis columns are found by their header text in that row.
fn read_ph2_table(path: &Path) -> Result<BTreeMap<String, Option<String>>> {
    let sheet_err = |problem: String| DataError::Spreadsheet { path: path.to_path_buf(), problem };
    let mut workbook = open_workbook_auto(path).map_err(|e| sheet_err(e.to_string()))?;
    let range = workbook
        .worksheet_range_at(0)
        .ok_or_else(|| sheet_err("workbook has no sheet".into()))?
        .map_err(|e| sheet_err(e.to_string()))?;
    let rows: Vec<Vec<String>> =
        range.rows().map(|r| r.iter().map(normalize_cell).collect()).collect();
    let header_idx = rows
        .iter()
        .position(|r| r.iter().any(|c| c == PH2_HEADER_ID))
        .ok_or_else(|| sheet_err(format!("no header row with an {PH2_HEADER_ID:?} cell")))?;
    let header = &rows[header_idx];
    let id_col = header
        .iter()
        .position(|c| c == PH2_HEADER_ID)
        .ok_or_else(|| sheet_err("header lost its id column".into()))?;
    let mut class_cols = Vec::new();
    for class in &PH2_DIAGNOSIS_COLUMNS {
        let col = header
            .iter()
            .position(|c| c == class.header)
            .ok_or_else(|| sheet_err(format!("header row has no {:?} column", class.header)))?;
        class_cols.push(Ph2Column { col, diagnosis: class.diagnosis });
    }
    let mut table = BTreeMap::new();
    for (offset, row) in rows[header_idx + 1..].iter().enumerate() {
        let Some(cell) = row.get(id_col) else {
            continue;
        };
        if cell.is_empty() {
            continue;
        }
        let id = cell.to_ascii_uppercase();
        let marked: Vec<&str> = class_cols
            .iter()
            .filter(|c| row.get(c.col).map(|cell| cell == PH2_MARK).unwrap_or(false))
            .map(|c| c.diagnosis)
            .collect();
        let diagnosis = match marked.as_slice() {
            [one] => Some((*one).to_string()),
            _ => {
                tracing::warn!(
                    "{}: row {} ({id}) has {} diagnosis marks; diagnosis left empty",
                    path.display(),
                    header_idx + offset + 2,
                    marked.len()
                );
                None
            }
        };
        table.insert(id, diagnosis);
    }
    if table.is_empty() {
        return Err(sheet_err("no image rows below the header".into()));
    }
    Ok(table)
}

// ---------------------------------------------------------------------------------------------
// Folder

/// The metadata sidecar `<id>.json` next to an image (ISIC archive style), `None` when there is
/// none. A sidecar that exists but cannot be read, is not UTF-8 or is not JSON is an error
/// naming it (never a silently lost diagnosis).
pub(crate) fn read_sidecar(image: &Path) -> Result<Option<serde_json::Value>> {
    let json = image.with_extension("json");
    let bytes = match std::fs::read(&json) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DataError::read(&json, e)),
    };
    let sidecar_err = |problem: String| DataError::Csv { path: json.clone(), problem };
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let at = e.valid_up_to();
        let byte = bytes.get(at).copied().unwrap_or_default();
        sidecar_err(format!(
            "metadata JSON: byte 0x{byte:02X} at offset {at} is not UTF-8 (save the file as UTF-8)"
        ))
    })?;
    serde_json::from_str(text).map(Some).map_err(|e| sidecar_err(format!("metadata JSON: {e}")))
}

/// `meta.clinical.diagnosis` of an image's sidecar (see [`read_sidecar`]).
fn sidecar_diagnosis(image: &Path) -> Result<Option<String>> {
    Ok(read_sidecar(image)?.and_then(|v| {
        v.pointer("/meta/clinical/diagnosis").and_then(|d| d.as_str()).map(str::to_owned)
    }))
}

fn list_folder(root: &Path, mask_dir: Option<&Path>, skip_bad: bool) -> Result<Listing> {
    let same_dir = match mask_dir {
        Some(m) => std::fs::canonicalize(m).ok() == std::fs::canonicalize(root).ok(),
        None => false,
    };
    // Masks by stem key (mask suffix stripped); the exact-stem match wins over a suffixed one.
    let mut masks: HashMap<String, PathBuf> = HashMap::new();
    if let Some(md) = mask_dir {
        if !md.is_dir() {
            return Err(DataError::Missing { path: md.to_path_buf() });
        }
        for p in list_images(md)? {
            let s = stem(&p);
            if s.to_ascii_lowercase().ends_with(SUPERPIXELS_SUFFIX) {
                continue;
            }
            match strip_mask_suffix(&s) {
                Some(key) => {
                    masks.entry(key).or_insert(p);
                }
                None if !same_dir => {
                    masks.insert(s, p);
                }
                None => {}
            }
        }
    }
    let mut candidates = Vec::new();
    let mut bad = Vec::new();
    for image in list_images(root)? {
        let id = stem(&image);
        let lower = id.to_ascii_lowercase();
        if lower.ends_with(SUPERPIXELS_SUFFIX) || (same_dir && strip_mask_suffix(&id).is_some()) {
            continue;
        }
        let diagnosis = match sidecar_diagnosis(&image) {
            Ok(d) => d,
            Err(e) if skip_bad => {
                tracing::warn!("skipping bad file: {e}");
                let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| image.clone());
                bad.push(BadFile { path, problem: e.to_string() });
                continue;
            }
            Err(e) => return Err(e),
        };
        candidates.push(Candidate {
            mask: masks.get(&id).cloned(),
            diagnosis,
            id,
            image,
            mask_dir: mask_dir.map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf()),
        });
    }
    Ok(Listing { candidates, table_rows_without_image: Vec::new(), meta: HashMap::new(), bad })
}

/// Manifest rows for image files given one by one (`lesion predict --bundle B IMAGES…`): id =
/// the file stem, no mask, each image decoded and hashed as an import does. Two files with the
/// same stem are an error naming both (their outputs would overwrite each other).
pub fn rows_for_images(paths: &[PathBuf]) -> Result<Vec<ManifestRow>> {
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    let mut rows = Vec::with_capacity(paths.len());
    for image in paths {
        let id = stem(image);
        if let Some(first) = seen.insert(id.clone(), image.clone()) {
            return Err(DataError::InvalidArgument(format!(
                "{} and {} have the same name '{id}': their outputs would collide",
                first.display(),
                image.display()
            )));
        }
        let c = Candidate {
            id,
            image: image.clone(),
            mask: None,
            diagnosis: None,
            mask_dir: image.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        rows.push(validate_one(SourceKind::Folder, &c, &ImportOptions::default())?.row);
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Validation

/// A validated candidate: its row, and whether its mask has no lesion pixel.
struct Validated {
    row: ManifestRow,
    empty_mask: bool,
}

/// Decodes the image and its mask, checks sizes and mask levels, hashes the image.
fn validate_one(kind: SourceKind, c: &Candidate, opts: &ImportOptions) -> Result<Validated> {
    let bytes = read_bytes(&c.image)?;
    let dims = header_dims(&c.image, &bytes)?;
    let img = decode_bytes(&c.image, &bytes)?;
    if (img.width(), img.height()) != (dims.width, dims.height) {
        return Err(DataError::Decode {
            path: c.image.clone(),
            problem: format!(
                "header says {}x{} but pixels are {}x{}",
                dims.width,
                dims.height,
                img.width(),
                img.height()
            ),
        });
    }
    drop(img);
    let mut levels = MaskLevels::Grey;
    let mut empty_mask = false;
    match &c.mask {
        Some(mask_path) => {
            let mbytes = read_bytes(mask_path)?;
            let decoded = decode_bytes(mask_path, &mbytes)?;
            if (decoded.width(), decoded.height()) != (dims.width, dims.height) {
                return Err(DataError::SizeMismatch {
                    mask: mask_path.clone(),
                    image: c.image.clone(),
                    mask_width: decoded.width(),
                    mask_height: decoded.height(),
                    image_width: dims.width,
                    image_height: dims.height,
                });
            }
            let checked = check_imported(mask_path, &decoded, opts.masks_01)?;
            levels = checked.levels;
            empty_mask = checked.empty;
        }
        None if opts.require_masks => {
            return Err(DataError::MissingMask {
                image: c.image.clone(),
                looked_in: c.mask_dir.clone(),
            })
        }
        None => {}
    }
    let mut row = ManifestRow {
        id: c.id.clone(),
        source: kind.as_str().to_string(),
        image_path: c.image.clone(),
        mask_path: c.mask.clone(),
        width: dims.width,
        height: dims.height,
        content_hash: hash_bytes(&bytes),
        diagnosis: c.diagnosis.clone(),
        group: None,
        meta: Default::default(),
    };
    levels.record(&mut row);
    Ok(Validated { row, empty_mask })
}

/// Progress bar on stderr (indicatif hides it when stderr is not a terminal).
pub(crate) fn progress_bar(len: usize, message: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})") {
        pb.set_style(style);
    }
    pb.set_message(message.to_string());
    pb
}

fn validate(
    kind: SourceKind,
    mut candidates: Vec<Candidate>,
    opts: &ImportOptions,
) -> Result<ImportReport> {
    candidates.sort_by(|a, b| a.id.cmp(&b.id).then_with(|| a.image.cmp(&b.image)));
    let pb = progress_bar(candidates.len(), &format!("importing {kind}"), true);
    let results: Vec<Result<Validated>> = candidates
        .par_iter()
        .map(|c| {
            let r = validate_one(kind, c, opts);
            pb.inc(1);
            r
        })
        .collect();
    pb.finish_and_clear();

    let mut rows: Vec<ManifestRow> = Vec::with_capacity(results.len());
    let mut first_of: HashMap<String, PathBuf> = HashMap::new();
    let mut bad = Vec::new();
    let mut empty_masks = Vec::new();
    for (c, r) in candidates.iter().zip(results) {
        let r = r.and_then(|v| match first_of.get(&v.row.id) {
            Some(first) => Err(DataError::DuplicateId {
                path: v.row.image_path.clone(),
                id: v.row.id.clone(),
                first: first.clone(),
            }),
            None => Ok(v),
        });
        match r {
            Ok(Validated { row, empty_mask }) => {
                if empty_mask {
                    if let Some(m) = &row.mask_path {
                        tracing::warn!("{}: mask has no lesion pixel", m.display());
                        empty_masks.push(m.clone());
                    }
                }
                first_of.insert(row.id.clone(), row.image_path.clone());
                rows.push(row);
            }
            Err(e) if opts.skip_bad => {
                tracing::warn!("skipping bad file: {e}");
                bad.push(BadFile {
                    path: e.path().map(Path::to_path_buf).unwrap_or_else(|| c.image.clone()),
                    problem: e.to_string(),
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(ImportReport {
        manifest: Manifest { rows },
        bad,
        table_rows_without_image: Vec::new(),
        empty_masks,
    })
}
