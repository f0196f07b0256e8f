//! Importers against tiny tempfile trees laid out like each published dataset.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage, ImageFormat, Luma, Rgb, RgbImage};
use lesion_data::import::{import, ImportOptions, SourceKind};
use lesion_data::manifest::Manifest;

const W: u32 = 24;
const H: u32 = 16;

fn write_image(path: &Path, w: u32, h: u32, format: ImageFormat) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x * 9) as u8, (y * 13) as u8, 120]));
    let mut buf = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img).write_to(&mut buf, format).unwrap();
    fs::write(path, buf.into_inner()).unwrap();
}

fn write_mask(path: &Path, w: u32, h: u32, format: ImageFormat) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let m = GrayImage::from_fn(w, h, |x, y| Luma([if x > 4 && y > 4 { 255 } else { 0 }]));
    let img = if format == ImageFormat::Bmp {
        DynamicImage::ImageRgb8(DynamicImage::ImageLuma8(m).to_rgb8())
    } else {
        DynamicImage::ImageLuma8(m)
    };
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, format).unwrap();
    fs::write(path, buf.into_inner()).unwrap();
}

fn opts() -> ImportOptions {
    ImportOptions::default()
}

/// An ISIC 2017 root with training (3 images), validation (1) and test (1, no ground truth).
fn isic2017_tree(root: &Path) {
    let tr = root.join("ISIC-2017_Training_Data");
    let gt = root.join("ISIC-2017_Training_Part1_GroundTruth");
    for id in ["ISIC_0000002", "ISIC_0000000", "ISIC_0000001"] {
        write_image(&tr.join(format!("{id}.jpg")), W, H, ImageFormat::Jpeg);
        write_mask(&tr.join(format!("{id}_superpixels.png")), W, H, ImageFormat::Png);
        write_mask(&gt.join(format!("{id}_segmentation.png")), W, H, ImageFormat::Png);
    }
    fs::write(
        tr.join("ISIC-2017_Training_Data_metadata.csv"),
        "image_id,age_approximate,sex\nISIC_0000000,55,female\nISIC_0000001,unknown,unknown\nISIC_0000002,70,male\n",
    )
    .unwrap();
    fs::write(tr.join(".DS_Store"), "junk").unwrap();
    fs::write(
        root.join("ISIC-2017_Training_Part3_GroundTruth.csv"),
        "image_id,melanoma,seborrheic_keratosis\nISIC_0000000,0.0,0.0\nISIC_0000001,1.0,0.0\nISIC_0000002,0.0,1.0\n",
    )
    .unwrap();
    write_image(&root.join("ISIC-2017_Validation_Data/ISIC_0000010.jpg"), W, H, ImageFormat::Jpeg);
    write_mask(
        &root.join("ISIC-2017_Validation_Part1_GroundTruth/ISIC_0000010_segmentation.png"),
        W,
        H,
        ImageFormat::Png,
    );
    write_image(&root.join("ISIC-2017_Test_v2_Data/ISIC_0000020.jpg"), W, H, ImageFormat::Jpeg);
}

#[test]
fn isic2017_full_root() {
    let dir = tempfile::tempdir().unwrap();
    isic2017_tree(dir.path());
    assert_eq!(SourceKind::detect(dir.path()).unwrap(), SourceKind::Isic2017);
    let rep = import(SourceKind::Isic2017, dir.path(), &opts()).unwrap();
    let ids: Vec<_> = rep.manifest.rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002", "ISIC_0000010", "ISIC_0000020"]
    );
    let r0 = rep.manifest.get("ISIC_0000000").unwrap();
    assert_eq!((r0.width, r0.height), (W, H));
    assert_eq!(r0.source, "isic2017");
    assert_eq!(r0.content_hash, lesion_data::io::content_hash(&r0.image_path).unwrap());
    assert!(r0.mask_path.as_ref().unwrap().ends_with("ISIC_0000000_segmentation.png"));
    assert_eq!(r0.diagnosis.as_deref(), Some("nevus"));
    assert_eq!(rep.manifest.get("ISIC_0000001").unwrap().diagnosis.as_deref(), Some("melanoma"));
    assert_eq!(
        rep.manifest.get("ISIC_0000002").unwrap().diagnosis.as_deref(),
        Some("seborrheic keratosis")
    );
    assert!(rep.manifest.get("ISIC_0000020").unwrap().mask_path.is_none());
    assert!(rep.bad.is_empty());

    // Masks required: the test image without ground truth is an error naming it...
    let strict = ImportOptions { require_masks: true, ..opts() };
    let e = import(SourceKind::Isic2017, dir.path(), &strict).unwrap_err().to_string();
    assert!(e.contains("ISIC_0000020.jpg") && e.contains("no mask"), "{e}");
    // ...or a bad file with skip_bad.
    let lenient = ImportOptions { require_masks: true, skip_bad: true, ..opts() };
    let rep = import(SourceKind::Isic2017, dir.path(), &lenient).unwrap();
    assert_eq!(rep.manifest.rows.len(), 4);
    assert_eq!(rep.bad.len(), 1);
    assert!(rep.bad[0].path.ends_with("ISIC_0000020.jpg"));
}

#[test]
fn isic2017_data_folder_as_root() {
    let dir = tempfile::tempdir().unwrap();
    isic2017_tree(dir.path());
    let data = dir.path().join("ISIC-2017_Training_Data");
    assert_eq!(SourceKind::detect(&data).unwrap(), SourceKind::Isic2017);
    let rep = import(SourceKind::Isic2017, &data, &opts()).unwrap();
    assert_eq!(rep.manifest.rows.len(), 3);
    assert!(rep.manifest.rows.iter().all(|r| r.mask_path.is_some()));
    // The Part 3 metadata (`image_id,age_approximate,sex`) is attached by id.
    let r0 = rep.manifest.rows.iter().find(|r| r.id == "ISIC_0000000").unwrap();
    assert_eq!((r0.meta_value("age"), r0.meta_value("sex")), (Some("55"), Some("female")));
    let r2 = rep.manifest.rows.iter().find(|r| r.id == "ISIC_0000002").unwrap();
    assert_eq!((r2.meta_value("age"), r2.meta_value("sex")), (Some("70"), Some("male")));
}

#[test]
fn isic2016_capital_s_masks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (data, gt) in [
        ("ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth"),
        ("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth"),
    ] {
        let id = if data.contains("Test") { "ISIC_0000003" } else { "ISIC_0000000" };
        write_image(&root.join(data).join(format!("{id}.jpg")), W, H, ImageFormat::Jpeg);
        write_mask(&root.join(gt).join(format!("{id}_Segmentation.png")), W, H, ImageFormat::Png);
    }
    fs::write(
        root.join("ISBI2016_ISIC_Part3_Training_GroundTruth.csv"),
        "ISIC_0000000,malignant\n",
    )
    .unwrap();
    assert_eq!(SourceKind::detect(root).unwrap(), SourceKind::Isic2016);
    let rep = import(SourceKind::Isic2016, root, &ImportOptions { require_masks: true, ..opts() })
        .unwrap();
    assert_eq!(rep.manifest.rows.len(), 2);
    assert_eq!(rep.manifest.rows[0].diagnosis.as_deref(), Some("malignant"));
    assert_eq!(rep.manifest.rows[0].source, "isic2016");
}

#[test]
fn isic2018_ignores_non_images() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = root.join("ISIC2018_Task1-2_Training_Input");
    let gt = root.join("ISIC2018_Task1_Training_GroundTruth");
    write_image(&data.join("ISIC_0000000.jpg"), W, H, ImageFormat::Jpeg);
    write_mask(&gt.join("ISIC_0000000_segmentation.png"), W, H, ImageFormat::Png);
    for f in ["LICENSE.txt", "ATTRIBUTION.txt", ".DS_Store"] {
        fs::write(data.join(f), "x").unwrap();
        fs::write(gt.join(f), "x").unwrap();
    }
    write_image(
        &root.join("ISIC2018_Task1-2_Validation_Input/ISIC_0000001.jpg"),
        W,
        H,
        ImageFormat::Jpeg,
    );
    write_mask(
        &root.join("ISIC2018_Task1_Validation_GroundTruth/ISIC_0000001_segmentation.png"),
        W,
        H,
        ImageFormat::Png,
    );
    assert_eq!(SourceKind::detect(root).unwrap(), SourceKind::Isic2018);
    let rep = import(SourceKind::Isic2018, root, &opts()).unwrap();
    assert_eq!(rep.manifest.rows.len(), 2);
    assert!(rep.manifest.rows.iter().all(|r| r.mask_path.is_some()));
}

#[test]
fn wrong_kind_names_root() {
    let dir = tempfile::tempdir().unwrap();
    isic2017_tree(dir.path());
    let e = import(SourceKind::Isic2018, dir.path(), &opts()).unwrap_err().to_string();
    assert!(
        e.contains(&dir.path().display().to_string())
            && e.contains("ISIC2018_Task1-2_Training_Input"),
        "{e}"
    );
}

fn bad_tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ISIC-2017_Training_Data");
    let gt = dir.path().join("ISIC-2017_Training_Part1_GroundTruth");
    write_image(&data.join("ISIC_0000000.jpg"), W, H, ImageFormat::Jpeg);
    write_mask(&gt.join("ISIC_0000000_segmentation.png"), W, H, ImageFormat::Png);
    (dir, data, gt)
}

#[test]
fn corrupt_image_is_named() {
    let (dir, data, _) = bad_tree();
    fs::write(data.join("ISIC_0000001.jpg"), b"not a jpeg").unwrap();
    let e = import(SourceKind::Isic2017, dir.path(), &opts()).unwrap_err().to_string();
    assert!(e.contains("ISIC_0000001.jpg") && e.contains("decode"), "{e}");
    let rep = import(SourceKind::Isic2017, dir.path(), &ImportOptions { skip_bad: true, ..opts() })
        .unwrap();
    assert_eq!(rep.manifest.rows.len(), 1);
    assert_eq!(rep.bad.len(), 1);
    assert!(rep.bad[0].path.ends_with("ISIC_0000001.jpg"), "{:?}", rep.bad);
    assert!(rep.bad[0].problem.contains("ISIC_0000001.jpg"));
}

#[test]
fn truncated_image_is_named() {
    let (dir, data, _) = bad_tree();
    let p = data.join("ISIC_0000001.jpg");
    write_image(&p, 64, 64, ImageFormat::Jpeg);
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = import(SourceKind::Isic2017, dir.path(), &opts()).unwrap_err().to_string();
    assert!(e.contains("ISIC_0000001.jpg") && e.contains("truncated"), "{e}");
}

#[test]
fn truncated_mask_is_named() {
    let (dir, _, gt) = bad_tree();
    let p = gt.join("ISIC_0000000_segmentation.png");
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() - 20]).unwrap();
    let e = import(SourceKind::Isic2017, dir.path(), &opts()).unwrap_err().to_string();
    assert!(e.contains("ISIC_0000000_segmentation.png"), "{e}");
}

#[test]
fn size_mismatch_is_named() {
    let (dir, _, gt) = bad_tree();
    write_mask(&gt.join("ISIC_0000000_segmentation.png"), W + 1, H, ImageFormat::Png);
    let e = import(SourceKind::Isic2017, dir.path(), &opts()).unwrap_err().to_string();
    assert!(
        e.contains("ISIC_0000000_segmentation.png")
            && e.contains("size mismatch")
            && e.contains("25x16"),
        "{e}"
    );
}

#[test]
fn missing_root_is_named() {
    let e = import(SourceKind::Ph2, Path::new("/no/such/ph2"), &opts()).unwrap_err().to_string();
    assert!(e.contains("/no/such/ph2") && e.contains("not found"), "{e}");
}

#[test]
fn ph2_layout_without_table() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("PH2 Dataset images");
    for id in ["IMD003", "IMD002"] {
        write_image(
            &imgs.join(id).join(format!("{id}_Dermoscopic_Image/{id}.bmp")),
            W,
            H,
            ImageFormat::Bmp,
        );
        write_mask(
            &imgs.join(id).join(format!("{id}_lesion/{id}_lesion.bmp")),
            W,
            H,
            ImageFormat::Bmp,
        );
    }
    // A folder whose image is missing is reported, not silently dropped.
    fs::create_dir_all(imgs.join("IMD004/IMD004_lesion")).unwrap();
    assert_eq!(SourceKind::detect(dir.path()).unwrap(), SourceKind::Ph2);
    let e = import(SourceKind::Ph2, dir.path(), &opts()).unwrap_err().to_string();
    assert!(e.contains("IMD004.bmp") && e.contains("not found"), "{e}");
    let rep =
        import(SourceKind::Ph2, dir.path(), &ImportOptions { skip_bad: true, ..opts() }).unwrap();
    let ids: Vec<_> = rep.manifest.rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["IMD002", "IMD003"]);
    assert_eq!(rep.bad.len(), 1);
    assert!(rep.manifest.rows.iter().all(|r| r.mask_path.is_some() && r.source == "ph2"));
}

#[test]
fn folder_with_mask_dir_and_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    let masks = dir.path().join("masks");
    write_image(&imgs.join("a.jpg"), W, H, ImageFormat::Jpeg);
    write_image(&imgs.join("b.png"), W, H, ImageFormat::Png);
    write_image(&imgs.join("c.bmp"), W, H, ImageFormat::Bmp);
    write_image(&imgs.join("d.png"), W, H, ImageFormat::Png);
    fs::write(imgs.join("a.json"), r#"{"meta":{"clinical":{"diagnosis":"melanoma"}}}"#).unwrap();
    fs::write(imgs.join("notes.txt"), "x").unwrap();
    write_mask(&masks.join("a_segmentation.png"), W, H, ImageFormat::Png);
    write_mask(&masks.join("b_mask.png"), W, H, ImageFormat::Png);
    write_mask(&masks.join("c_lesion.bmp"), W, H, ImageFormat::Bmp);
    assert_eq!(SourceKind::detect(&imgs).unwrap(), SourceKind::Folder);
    let o = ImportOptions { mask_dir: Some(masks.clone()), ..opts() };
    let rep = import(SourceKind::Folder, &imgs, &o).unwrap();
    let ids: Vec<_> = rep.manifest.rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    assert!(rep.manifest.rows[..3].iter().all(|r| r.mask_path.is_some()));
    assert!(rep.manifest.rows[3].mask_path.is_none());
    assert_eq!(rep.manifest.rows[0].diagnosis.as_deref(), Some("melanoma"));

    // Masks in the same folder as the images are not imported as images.
    write_mask(&imgs.join("d_segmentation.png"), W, H, ImageFormat::Png);
    let o = ImportOptions { mask_dir: Some(imgs.clone()), ..opts() };
    let rep = import(SourceKind::Folder, &imgs, &o).unwrap();
    assert_eq!(rep.manifest.rows.len(), 4);
    assert!(rep.manifest.get("d").unwrap().mask_path.is_some());

    // Manifest round trip through CSV.
    let csv = dir.path().join("manifest.csv");
    rep.manifest.write_csv(&csv).unwrap();
    assert_eq!(Manifest::read_csv(&csv).unwrap(), rep.manifest);
}

#[test]
fn duplicate_ids_are_named() {
    let dir = tempfile::tempdir().unwrap();
    write_image(&dir.path().join("a.jpg"), W, H, ImageFormat::Jpeg);
    write_image(&dir.path().join("a.png"), W, H, ImageFormat::Png);
    let e = import(SourceKind::Folder, dir.path(), &opts()).unwrap_err().to_string();
    assert!(e.contains("a.png") && e.contains("duplicate id"), "{e}");
}

#[test]
fn source_kind_parses() {
    for s in ["isic2016", "isic2017", "isic2018", "isic2018-task3", "isic2019", "ph2", "folder"] {
        assert_eq!(s.parse::<SourceKind>().unwrap().to_string(), s);
    }
    assert!("isic2020".parse::<SourceKind>().is_err());
}
