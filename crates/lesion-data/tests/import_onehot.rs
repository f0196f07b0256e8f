//! ISIC 2018 Task 3 / ISIC 2019 one-hot ground-truth importer on tiny tempdir fixtures.

use std::fs;
use std::path::Path;

use image::{Rgb, RgbImage};
use lesion_data::import::{import, ImportOptions, SourceKind};
use lesion_data::labels::{keys, map_row, LesionClass, Stratum};

const GT_2019: &str = "ISIC_2019_Training_GroundTruth.csv";
const META_2019: &str = "ISIC_2019_Training_Metadata.csv";
const DATA_2019: &str = "ISIC_2019_Training_Input";
const HEADER_2019: &str = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK";

fn png(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_pixel(6, 4, Rgb([10, 20, 30])).save(path).unwrap();
}

fn opts(skip_bad: bool) -> ImportOptions {
    ImportOptions { skip_bad, ..Default::default() }
}

/// A 2019 root with images for `ids` and the given ground truth (and metadata, if any).
fn tree_2019(ids: &[&str], gt: &str, meta: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for id in ids {
        png(&dir.path().join(DATA_2019).join(format!("{id}.png")));
    }
    fs::write(dir.path().join(GT_2019), gt).unwrap();
    if let Some(m) = meta {
        fs::write(dir.path().join(META_2019), m).unwrap();
    }
    dir
}

fn import_err(dir: &Path) -> String {
    import(SourceKind::Isic2019, dir, &opts(false)).unwrap_err().to_string()
}

/// The message names the file, the line and the column.
fn assert_names(e: &str, file: &str, line: usize, column: &str) {
    assert!(e.contains(file) && e.contains(&format!("line {line}")) && e.contains(column), "{e}");
}

#[test]
fn imports_2019_with_metadata() {
    let gt = format!(
        "{HEADER_2019}\n\
         ISIC_1,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n\
         ISIC_2,0.0,0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0\n\
         ISIC_3,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0\n\
         ISIC_4,0,1,0,0,0,0,0,0,0\n"
    );
    let meta = "image,age_approximate,anatom_site_general,lesion_id,sex\n\
                ISIC_1,55,anterior torso,BCN_0001,male\n\
                ISIC_2,40,,BCN_0001,female\n\
                ISIC_3,,,,\n";
    let dir = tree_2019(&["ISIC_1", "ISIC_2", "ISIC_3", "ISIC_4"], &gt, Some(meta));
    assert_eq!(SourceKind::detect(dir.path()).unwrap(), SourceKind::Isic2019);
    let rep = import(SourceKind::Isic2019, dir.path(), &opts(false)).unwrap();
    let rows = &rep.manifest.rows;
    assert_eq!(rows.len(), 4);
    let diag: Vec<_> = rows.iter().map(|r| r.diagnosis.as_deref().unwrap()).collect();
    assert_eq!(diag, ["melanoma", "benign keratosis", "squamous cell carcinoma", "nevus"]);
    assert!(rows.iter().all(|r| r.source == "isic2019" && r.mask_path.is_none()));
    assert_eq!((rows[0].width, rows[0].height), (6, 4));
    assert_eq!(rows[0].meta_value(keys::AGE), Some("55"));
    assert_eq!(rows[0].meta_value(keys::SITE), Some("anterior torso"));
    assert_eq!(rows[0].meta_value(keys::SEX), Some("male"));
    assert_eq!(rows[0].meta_value(keys::LESION), Some("BCN_0001"));
    assert_eq!(rows[0].group.as_deref(), Some("BCN_0001"));
    assert_eq!(rows[1].group.as_deref(), Some("BCN_0001"));
    assert_eq!(rows[2].group, None);
    assert!(rows[2].meta.is_empty() && rows[3].meta.is_empty());
    // The mapping: bkl without metadata and SCC are excluded.
    let classes: Vec<_> = rows.iter().map(map_row).collect();
    assert_eq!(classes, [Some(LesionClass::Melanoma), None, None, Some(LesionClass::Nevus)]);
    assert_eq!(Stratum::of_row(&rows[1]), Stratum::Other);
}

#[test]
fn bkl_with_archive_diagnosis_is_keratosis() {
    let gt = format!("{HEADER_2019}\nISIC_1,0,0,0,0,1,0,0,0,0\nISIC_2,0,0,0,0,1,0,0,0,0\n");
    let meta =
        "image,lesion_id,diagnosis\nISIC_1,L1,seborrheic keratosis\nISIC_2,L2,solar lentigo\n";
    let dir = tree_2019(&["ISIC_1", "ISIC_2"], &gt, Some(meta));
    let rep = import(SourceKind::Isic2019, dir.path(), &opts(false)).unwrap();
    let rows = &rep.manifest.rows;
    assert_eq!(rows[0].meta_value(keys::DIAGNOSIS_DETAIL), Some("seborrheic keratosis"));
    assert_eq!(map_row(&rows[0]), Some(LesionClass::SeborrheicKeratosis));
    assert_eq!(map_row(&rows[1]), None);
}

#[test]
fn imports_2018_task3_with_groupings() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = root.join("ISIC2018_Task3_Training_Input");
    let gtdir = root.join("ISIC2018_Task3_Training_GroundTruth");
    for id in ["ISIC_0024306", "ISIC_0024307"] {
        png(&data.join(format!("{id}.png")));
    }
    fs::create_dir_all(&gtdir).unwrap();
    fs::write(
        gtdir.join("ISIC2018_Task3_Training_GroundTruth.csv"),
        "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n\
         ISIC_0024306,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n\
         ISIC_0024307,0.0,0.0,0.0,1.0,0.0,0.0,0.0\n",
    )
    .unwrap();
    fs::write(
        gtdir.join("ISIC2018_Task3_Training_LesionGroupings.csv"),
        "image,lesion_id,diagnosis_confirm_type\nISIC_0024306,HAM_0000118,histopathology\n",
    )
    .unwrap();
    assert_eq!(SourceKind::detect(root).unwrap(), SourceKind::Isic2018Task3);
    assert_eq!("isic2018-task3".parse::<SourceKind>().unwrap(), SourceKind::Isic2018Task3);
    // The data folder itself works as root too.
    for r in [root.to_path_buf(), data.clone()] {
        let rep = import(SourceKind::Isic2018Task3, &r, &opts(false)).unwrap();
        let rows = &rep.manifest.rows;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].diagnosis.as_deref(), Some("nevus"));
        assert_eq!(rows[0].group.as_deref(), Some("HAM_0000118"));
        assert_eq!(rows[0].meta_value("diagnosis_confirm_type"), Some("histopathology"));
        assert_eq!(rows[1].diagnosis.as_deref(), Some("actinic keratosis"));
        assert_eq!(rows[0].source, "isic2018-task3");
    }
}

#[test]
fn unknown_column_set() {
    let gt = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,XYZ\nISIC_1,1,0,0,0,0,0,0,0,0\n";
    let e = import_err(tree_2019(&["ISIC_1"], gt, None).path());
    assert_names(&e, GT_2019, 1, "column 10 (XYZ)");
    assert!(e.contains("unknown column"), "{e}");
    // All known, but a 2019 set missing UNK.
    let gt = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC\nISIC_1,1,0,0,0,0,0,0,0\n";
    let e = import_err(tree_2019(&["ISIC_1"], gt, None).path());
    assert_names(&e, GT_2019, 1, "missing column UNK");
    // A repeated column.
    let gt = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,MEL\n";
    let e = import_err(tree_2019(&["ISIC_1"], gt, None).path());
    assert_names(&e, GT_2019, 1, "column 10 (MEL)");
}

#[test]
fn value_outside_unit_interval() {
    let gt = format!("{HEADER_2019}\nISIC_1,1,0,0,0,0,0,0,0,0\nISIC_2,0,0,1.5,0,0,0,0,0,0\n");
    let e = import_err(tree_2019(&["ISIC_1", "ISIC_2"], &gt, None).path());
    assert_names(&e, GT_2019, 3, "column 4 (BCC)");
    assert!(e.contains("outside [0, 1]"), "{e}");
    let gt = format!("{HEADER_2019}\nISIC_1,1,0,0,0,0,-0.1,0,0,0\n");
    let e = import_err(tree_2019(&["ISIC_1"], &gt, None).path());
    assert_names(&e, GT_2019, 2, "column 7 (DF)");
    let gt = format!("{HEADER_2019}\nISIC_1,1,0,0,yes,0,0,0,0,0\n");
    let e = import_err(tree_2019(&["ISIC_1"], &gt, None).path());
    assert_names(&e, GT_2019, 2, "column 5 (AK)");
}

#[test]
fn not_exactly_one_class() {
    let gt = format!("{HEADER_2019}\nISIC_1,1,0,0,0,0,0,0,0,1\n");
    let e = import_err(tree_2019(&["ISIC_1"], &gt, None).path());
    assert_names(&e, GT_2019, 2, "column 10 (UNK)");
    let gt = format!("{HEADER_2019}\nISIC_1,0,0,0,0,0,0,0,0,0\n");
    let e = import_err(tree_2019(&["ISIC_1"], &gt, None).path());
    assert_names(&e, GT_2019, 2, "columns 2-10");
    let gt = format!("{HEADER_2019}\nISIC_1,0.5,0,0,0,0,0,0,0,1\n");
    let e = import_err(tree_2019(&["ISIC_1"], &gt, None).path());
    assert_names(&e, GT_2019, 2, "column 2 (MEL)");
}

#[test]
fn duplicated_image_id() {
    let gt = format!("{HEADER_2019}\nISIC_1,1,0,0,0,0,0,0,0,0\nISIC_1,0,1,0,0,0,0,0,0,0\n");
    let e = import_err(tree_2019(&["ISIC_1"], &gt, None).path());
    assert_names(&e, GT_2019, 3, "column 1 (image)");
    assert!(e.contains("duplicate") && e.contains("line 2"), "{e}");
    // In the metadata too.
    let gt = format!("{HEADER_2019}\nISIC_1,1,0,0,0,0,0,0,0,0\n");
    let meta = "image,lesion_id\nISIC_1,L1\nISIC_1,L2\n";
    let e = import_err(tree_2019(&["ISIC_1"], &gt, Some(meta)).path());
    assert_names(&e, META_2019, 3, "column 1 (image)");
}

#[test]
fn missing_image_file() {
    let gt = format!("{HEADER_2019}\nISIC_1,1,0,0,0,0,0,0,0,0\nISIC_9,0,1,0,0,0,0,0,0,0\n");
    let dir = tree_2019(&["ISIC_1"], &gt, None);
    let e = import_err(dir.path());
    assert_names(&e, GT_2019, 3, "column 1 (image)");
    assert!(e.contains("ISIC_9") && e.contains("no image"), "{e}");
    // With skip_bad the row becomes a bad file and the rest is imported.
    let rep = import(SourceKind::Isic2019, dir.path(), &opts(true)).unwrap();
    assert_eq!(rep.manifest.rows.len(), 1);
    assert_eq!(rep.bad.len(), 1);
    assert!(rep.bad[0].problem.contains("line 3"), "{:?}", rep.bad);
}

#[test]
fn no_ground_truth_is_a_layout_error() {
    let dir = tempfile::tempdir().unwrap();
    png(&dir.path().join(DATA_2019).join("ISIC_1.png"));
    let e = import_err(dir.path());
    assert!(e.contains(GT_2019), "{e}");
}
