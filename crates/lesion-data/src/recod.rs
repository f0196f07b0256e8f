//! The RECOD Titans' ISIC 2017 dataset lists (`deploy2017.txt`, `diff-semi.txt`).
//!
//! `deploy2017.txt` is comma + space separated with the header
//! `image, case, type, age, has_age, sex, has_sex, melanoma, keratosis, schedule, weight, dataset`.
//! `diff-semi.txt` lists one image id per line: the images removed from `deploy` to make `semi`.
//! The lists name images only; [`to_manifest`] turns them into manifest rows whose image path
//! is `<images_dir>/<image>.jpg` (the images are distributed by their owners) and whose
//! `group` is the list's `case` (lesion / suspected-duplicate group).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::io::{hash_bytes, header_dims, read_bytes};
use crate::labels::{keys, SourceClassTable, SUBSET_SEPARATOR};
use crate::manifest::{Manifest, ManifestRow};

/// The header of a RECOD list, in order.
pub const RECOD_HEADER: [&str; 12] = [
    "image",
    "case",
    "type",
    "age",
    "has_age",
    "sex",
    "has_sex",
    "melanoma",
    "keratosis",
    "schedule",
    "weight",
    "dataset",
];
/// Name of the full list's subset.
pub const DEPLOY: &str = "deploy";
/// Name of the subset `deploy` minus `diff-semi`.
pub const SEMI: &str = "semi";
/// Extension given to image paths built from list ids.
const IMAGE_EXT: &str = "jpg";
/// A 0/1 flag cell's "yes".
const FLAG_YES: &str = "1";
/// A 0/1 flag cell's "no".
const FLAG_NO: &str = "0";

/// One line of a RECOD list. Invariant: `image` is non-empty; `age`/`sex` are `Some` exactly
/// when the list's `has_age`/`has_sex` flag is 1; `melanoma` and `keratosis` are never both true.
#[derive(Debug, Clone, PartialEq)]
pub struct RecodEntry {
    pub image: String,
    /// Lesion / suspected-duplicate group; `None` when the cell is empty.
    pub case: Option<String>,
    /// "d" (dermoscopic) or "c" (clinical).
    pub image_type: String,
    pub age: Option<u32>,
    pub sex: Option<String>,
    pub melanoma: bool,
    pub keratosis: bool,
    pub schedule: u32,
    pub weight: f64,
    /// atlas, isic, challenge, dermofit, irma or ph2.
    pub dataset: String,
}

impl RecodEntry {
    /// The diagnosis text written into manifest rows.
    pub fn diagnosis(&self) -> &'static str {
        if self.melanoma {
            "melanoma"
        } else if self.keratosis {
            "seborrheic keratosis"
        } else {
            // The paper's third class ("other": neither flag set); mapped to that class by
            // crate::labels (a bare "other" from other sources is excluded).
            crate::labels::RECOD_OTHER
        }
    }
}

fn table_err(path: &Path, line: usize, column: Option<usize>, problem: String) -> DataError {
    let at = match column {
        Some(c) => {
            format!("line {line}, column {} ({})", c + 1, RECOD_HEADER.get(c).unwrap_or(&"?"))
        }
        None => format!("line {line}"),
    };
    DataError::Csv { path: path.to_path_buf(), problem: format!("{at}: {problem}") }
}

fn parse_flag(path: &Path, line: usize, col: usize, cell: &str) -> Result<bool> {
    match cell {
        FLAG_YES => Ok(true),
        FLAG_NO => Ok(false),
        other => Err(table_err(path, line, Some(col), format!("{other:?} is not 0 or 1"))),
    }
}

/// Reads a RECOD list (e.g. `deploy2017.txt`). Errors name the file, line and column.
pub fn read_list(path: &Path) -> Result<Vec<RecodEntry>> {
    let bytes = read_bytes(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| table_err(path, 1, None, format!("not UTF-8: {e}")))?;
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = match lines.next() {
        Some((_, h)) => h.split(',').map(str::trim).collect(),
        None => return Err(table_err(path, 1, None, "empty file".into())),
    };
    if header != RECOD_HEADER {
        return Err(table_err(
            path,
            1,
            None,
            format!("header is {header:?}, expected {RECOD_HEADER:?}"),
        ));
    }
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, raw) in lines {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = raw.split(',').map(str::trim).collect();
        if cells.len() != RECOD_HEADER.len() {
            return Err(table_err(
                path,
                line,
                None,
                format!("{} cells, expected {}", cells.len(), RECOD_HEADER.len()),
            ));
        }
        let num = |col: usize| -> Result<u32> {
            cells[col]
                .parse::<u32>()
                .map_err(|e| table_err(path, line, Some(col), format!("{:?}: {e}", cells[col])))
        };
        let image = cells[0].to_string();
        if image.is_empty() {
            return Err(table_err(path, line, Some(0), "empty image id".into()));
        }
        if let Some(first) = seen.insert(image.clone(), line) {
            return Err(table_err(
                path,
                line,
                Some(0),
                format!("duplicate image {image:?} (first on line {first})"),
            ));
        }
        let has_age = parse_flag(path, line, 4, cells[4])?;
        let has_sex = parse_flag(path, line, 6, cells[6])?;
        let melanoma = parse_flag(path, line, 7, cells[7])?;
        let keratosis = parse_flag(path, line, 8, cells[8])?;
        if melanoma && keratosis {
            return Err(table_err(path, line, Some(8), "both melanoma and keratosis are 1".into()));
        }
        let weight = cells[10]
            .parse::<f64>()
            .map_err(|e| table_err(path, line, Some(10), format!("{:?}: {e}", cells[10])))?;
        out.push(RecodEntry {
            case: (!cells[1].is_empty()).then(|| cells[1].to_string()),
            image_type: cells[2].to_string(),
            age: if has_age { Some(num(3)?) } else { None },
            sex: has_sex.then(|| cells[5].to_string()),
            melanoma,
            keratosis,
            schedule: num(9)?,
            weight,
            dataset: cells[11].to_string(),
            image,
        });
    }
    Ok(out)
}

/// Reads a list of ids, one per line (blank lines ignored). Duplicates are an error.
pub fn read_id_list(path: &Path) -> Result<Vec<String>> {
    let bytes = read_bytes(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| table_err(path, 1, None, format!("not UTF-8: {e}")))?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let id = l.trim();
        if id.is_empty() {
            continue;
        }
        if !seen.insert(id.to_string()) {
            return Err(table_err(path, i + 1, None, format!("duplicate id {id:?}")));
        }
        out.push(id.to_string());
    }
    Ok(out)
}

/// `deploy` and the ids of its `semi` subset.
#[derive(Debug, Clone)]
pub struct RecodSets {
    pub deploy: Vec<RecodEntry>,
    /// Ids of `deploy` not listed in the removal list. Invariant: a subset of `deploy`'s ids.
    pub semi: BTreeSet<String>,
}

/// Reads `deploy` and derives `semi` by removing the ids of `removed_path`; every removed id
/// must be in `deploy` (an unknown one is an error naming the file and line).
pub fn read_sets(deploy_path: &Path, removed_path: &Path) -> Result<RecodSets> {
    let deploy = read_list(deploy_path)?;
    let removed = read_id_list(removed_path)?;
    let ids: HashSet<&str> = deploy.iter().map(|e| e.image.as_str()).collect();
    let removed_set: HashSet<&str> = removed.iter().map(String::as_str).collect();
    if let Some(bad) = removed.iter().find(|id| !ids.contains(id.as_str())) {
        return Err(DataError::Csv {
            path: removed_path.to_path_buf(),
            problem: format!("id {bad:?} is not in {}", deploy_path.display()),
        });
    }
    let semi = deploy
        .iter()
        .filter(|e| !removed_set.contains(e.image.as_str()))
        .map(|e| e.image.clone())
        .collect();
    Ok(RecodSets { deploy, semi })
}

/// Manifest rows for `entries`: `source` = the list's dataset, `diagnosis` from the flags,
/// `group` = `case`, metadata age/sex/type/weight/schedule/dataset, and `subsets` = DEPLOY
/// plus SEMI for the ids in `semi`. Image paths are `<images_dir>/<image>.jpg`; size and hash
/// are unknown (0 and empty) until the images are imported.
pub fn to_manifest(sets: &RecodSets, images_dir: &Path) -> Manifest {
    let rows = sets
        .deploy
        .iter()
        .map(|e| {
            let mut row = ManifestRow {
                id: e.image.clone(),
                source: e.dataset.clone(),
                image_path: images_dir.join(format!("{}.{IMAGE_EXT}", e.image)),
                mask_path: None,
                width: 0,
                height: 0,
                content_hash: String::new(),
                diagnosis: Some(e.diagnosis().to_string()),
                group: e.case.clone(),
                meta: Default::default(),
            };
            if let Some(a) = e.age {
                row.set_meta(keys::AGE, a.to_string());
            }
            if let Some(s) = &e.sex {
                row.set_meta(keys::SEX, s.clone());
            }
            row.set_meta(keys::IMAGE_TYPE, e.image_type.clone());
            row.set_meta(keys::WEIGHT, e.weight.to_string());
            row.set_meta("schedule", e.schedule.to_string());
            row.set_meta(keys::DATASET, e.dataset.clone());
            let subsets = if sets.semi.contains(&e.image) {
                format!("{DEPLOY}{SUBSET_SEPARATOR}{SEMI}")
            } else {
                DEPLOY.to_string()
            };
            row.set_meta(keys::SUBSETS, subsets);
            row
        })
        .collect();
    Manifest::new(rows)
}

/// Fills every row's `width`, `height` and `content_hash` from its image file (header only, no
/// full decode), as the importers do, so that the manifest keeps [`ManifestRow`]'s invariant and
/// can be trained on: the preprocessing cache is keyed by the content hash, and rows without
/// one would all share one cache entry. The first missing or unreadable image is an error
/// naming it.
pub fn read_image_facts(m: &mut Manifest) -> Result<()> {
    use crate::par::CollectInOrder;
    use rayon::prelude::*;
    let facts: Vec<(u32, u32, String)> = m
        .rows
        .par_iter()
        .map(|r| {
            let bytes = read_bytes(&r.image_path)?;
            let dims = header_dims(&r.image_path, &bytes)?;
            Ok((dims.width, dims.height, hash_bytes(&bytes)))
        })
        .collect_in_order()?;
    for (row, (width, height, hash)) in m.rows.iter_mut().zip(facts) {
        row.width = width;
        row.height = height;
        row.content_hash = hash;
    }
    Ok(())
}

/// Per-source × class tables of `deploy` and `semi`.
#[derive(Debug, Clone)]
pub struct RecodSummary {
    pub deploy: SourceClassTable,
    pub semi: SourceClassTable,
    /// Number of distinct non-empty `case` groups in `deploy`.
    pub groups: usize,
}

/// Counts of [`RecodSets`] by source and class.
pub fn summarize(sets: &RecodSets) -> RecodSummary {
    let mut deploy = SourceClassTable::default();
    let mut semi = SourceClassTable::default();
    let class = |e: &RecodEntry| crate::labels::Stratum::from_diagnosis(Some(e.diagnosis()));
    for e in &sets.deploy {
        deploy.add(&e.dataset, class(e));
        if sets.semi.contains(&e.image) {
            semi.add(&e.dataset, class(e));
        }
    }
    let groups = sets.deploy.iter().filter_map(|e| e.case.as_deref()).collect::<HashSet<_>>().len();
    RecodSummary { deploy, semi, groups }
}

/// Folder used for image paths when none is given: the list's own folder + `images`.
pub fn default_images_dir(list: &Path) -> PathBuf {
    crate::io::parent_dir(list).join("images")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "image, case, type, age, has_age, sex, has_sex, melanoma, keratosis, schedule, weight, dataset\n";

    #[test]
    fn reads_small_list_and_semi() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("deploy.txt");
        std::fs::write(
            &d,
            format!(
                "{HEAD}a1, g1, d, 45, 1, female, 1, 1, 0, 2, 3, atlas\n\
                     a2, g1, c, 0, 0, , 0, 0, 1, 1, 1, atlas\n\
                     b1, , d, 15, 1, male, 1, 0, 0, 1, 1, isic\n"
            ),
        )
        .unwrap();
        let r = dir.path().join("diff.txt");
        std::fs::write(&r, "a2\n").unwrap();
        let sets = read_sets(&d, &r).unwrap();
        assert_eq!(sets.deploy.len(), 3);
        assert_eq!(sets.semi.len(), 2);
        assert_eq!(sets.deploy[1].age, None);
        let s = summarize(&sets);
        assert_eq!(s.deploy.class_totals(), [1, 1, 1]);
        assert_eq!(s.semi.class_totals(), [1, 0, 1]);
        assert_eq!(s.groups, 1);
        let m = to_manifest(&sets, dir.path());
        assert_eq!(m.rows[0].group.as_deref(), Some("g1"));
        assert_eq!(m.rows[2].group, None);
        assert_eq!(m.rows[0].meta_value(keys::SUBSETS), Some("deploy;semi"));
        assert_eq!(m.rows[1].meta_value(keys::SUBSETS), Some("deploy"));
        // Without the images the facts cannot be read: the error names the missing file.
        let mut m = m;
        let e = read_image_facts(&mut m).unwrap_err().to_string();
        assert!(e.contains("a1.jpg"), "{e}");
        for (i, r) in m.rows.iter().enumerate() {
            image::RgbImage::new(3 + i as u32, 2).save(&r.image_path).unwrap();
        }
        read_image_facts(&mut m).unwrap();
        assert_eq!((m.rows[1].width, m.rows[1].height), (4, 2));
        assert_eq!(
            m.rows[0].content_hash,
            hash_bytes(&std::fs::read(&m.rows[0].image_path).unwrap())
        );
        assert_ne!(m.rows[0].content_hash, m.rows[1].content_hash);
    }

    #[test]
    fn errors_name_file_line_column() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("deploy.txt");
        std::fs::write(&d, format!("{HEAD}a1, g1, d, 45, 1, female, 1, 2, 0, 2, 3, atlas\n"))
            .unwrap();
        let e = read_list(&d).unwrap_err().to_string();
        assert!(e.contains("deploy.txt") && e.contains("line 2, column 8 (melanoma)"), "{e}");
        std::fs::write(&d, "image, case\n").unwrap();
        let e = read_list(&d).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("header"), "{e}");
        let r = dir.path().join("diff.txt");
        std::fs::write(&d, format!("{HEAD}a1, g1, d, 45, 1, female, 1, 1, 0, 2, 3, atlas\n"))
            .unwrap();
        std::fs::write(&r, "zz\n").unwrap();
        let e = read_sets(&d, &r).unwrap_err().to_string();
        assert!(e.contains("diff.txt") && e.contains("\"zz\""), "{e}");
    }

    /// Real lists: set LESION_RECOD2017 to the folder holding deploy2017.txt and diff-semi.txt.
    #[test]
    fn paper_counts_from_real_lists() {
        let Some(dir) = std::env::var_os("LESION_RECOD2017") else {
            eprintln!(
                "skipped: LESION_RECOD2017 is not set (folder with deploy2017.txt, diff-semi.txt)"
            );
            return;
        };
        let dir = PathBuf::from(dir);
        let sets = read_sets(&dir.join("deploy2017.txt"), &dir.join("diff-semi.txt")).unwrap();
        let s = summarize(&sets);
        assert_eq!(s.deploy.total(), 9_640);
        assert_eq!(s.semi.total(), 7_544);
        assert_eq!(s.deploy.class_totals(), [1_878, 614, 7_148]);
        println!("deploy\n{}\nsemi\n{}", s.deploy, s.semi);
    }
}
