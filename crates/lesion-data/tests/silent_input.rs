//! Issue 13, items 4 and 7: masks that silently became empty and tables whose problems were
//! silently ignored. Each input here imported with exit 0 before; now each is an error naming
//! the file (and line), or a counted warning where the data are legitimately partial.

use std::fs;
use std::path::Path;

use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage};
use lesion_data::import::{import, ImportOptions, SourceKind};
use lesion_data::manifest::Manifest;
use lesion_data::mask::{load_row_mask, MaskLevels};

const W: u32 = 24;
const H: u32 = 16;
/// Lesion pixels of [`lesion`]: x > 4 and y > 4.
const LESION_PIXELS: usize = ((W - 5) * (H - 5)) as usize;

fn lesion(x: u32, y: u32) -> bool {
    x > 4 && y > 4
}

fn write_image(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_fn(W, H, |x, y| Rgb([(x * 9) as u8, (y * 13) as u8, 120])).save(path).unwrap();
}

/// A folder of two images (`a`, `b`) and a mask folder where `b`'s mask is `mask_b`.
fn folder_with_mask(mask_b: DynamicImage) -> (tempfile::TempDir, ImportOptions) {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    let masks = dir.path().join("masks");
    fs::create_dir_all(&masks).unwrap();
    write_image(&imgs.join("a.png"));
    write_image(&imgs.join("b.png"));
    GrayImage::from_fn(W, H, |x, y| Luma([if lesion(x, y) { 255 } else { 0 }]))
        .save(masks.join("a.png"))
        .unwrap();
    mask_b.save(masks.join("b.png")).unwrap();
    let opts = ImportOptions { mask_dir: Some(masks), ..Default::default() };
    (dir, opts)
}

fn import_folder(dir: &Path, opts: &ImportOptions) -> lesion_data::Result<Manifest> {
    import(SourceKind::Folder, &dir.join("imgs"), opts).map(|r| r.manifest)
}

#[test]
fn pure_red_rgb_mask_is_an_error_naming_the_file() {
    let red = RgbImage::from_fn(W, H, |x, y| Rgb(if lesion(x, y) { [255, 0, 0] } else { [0; 3] }));
    let (dir, opts) = folder_with_mask(DynamicImage::ImageRgb8(red));
    let e = import_folder(dir.path(), &opts).unwrap_err().to_string();
    assert!(e.contains("masks/b.png") && e.contains("RGB (255, 0, 0)"), "{e}");
    assert!(e.contains(&format!("{LESION_PIXELS} pixels are non-zero")), "{e}");
    // Not even --masks-01 accepts it; with --skip-bad it is a bad file.
    let skip = ImportOptions { skip_bad: true, masks_01: true, ..opts };
    let rep = import(SourceKind::Folder, &dir.path().join("imgs"), &skip).unwrap();
    assert_eq!(rep.manifest.rows.len(), 1);
    assert!(rep.bad[0].path.ends_with("masks/b.png"), "{:?}", rep.bad);
}

#[test]
fn zero_one_mask_needs_masks_01_and_is_then_read_as_lesion_everywhere() {
    let m01 = GrayImage::from_fn(W, H, |x, y| Luma([u8::from(lesion(x, y))]));
    let (dir, opts) = folder_with_mask(DynamicImage::ImageLuma8(m01));
    let e = import_folder(dir.path(), &opts).unwrap_err().to_string();
    assert!(e.contains("masks/b.png") && e.contains("only 0 and 1"), "{e}");
    assert!(e.contains("--masks-01"), "{e}");

    let accepted = ImportOptions { masks_01: true, ..opts };
    let m = import_folder(dir.path(), &accepted).unwrap();
    // Through the manifest CSV, as `seg train` / `seg truth` read it.
    let csv = dir.path().join("m.csv");
    m.write_csv(&csv).unwrap();
    let back = Manifest::read_csv(&csv).unwrap();
    let b = back.get("b").unwrap();
    assert_eq!(MaskLevels::of_row(b).unwrap(), MaskLevels::ZeroOne);
    assert_eq!(MaskLevels::of_row(back.get("a").unwrap()).unwrap(), MaskLevels::Grey);
    let mask = load_row_mask(b).unwrap().unwrap();
    assert_eq!(mask.pixels().filter(|p| p.0[0] == 255).count(), LESION_PIXELS);
    // Read without the record (the old path), it is refused instead of silently empty.
    assert!(lesion_data::io::load_mask(b.mask_path.as_ref().unwrap()).is_err());
}

#[test]
fn all_empty_mask_is_imported_and_counted() {
    let (dir, opts) = folder_with_mask(DynamicImage::ImageLuma8(GrayImage::new(W, H)));
    let rep = import(SourceKind::Folder, &dir.path().join("imgs"), &opts).unwrap();
    assert_eq!(rep.manifest.rows.len(), 2);
    assert_eq!(rep.empty_masks.len(), 1);
    assert!(rep.empty_masks[0].ends_with("masks/b.png"));
}

/// An ISIC 2017 training folder of `ids` with `csv` as its Part 3 ground truth.
fn isic2017(ids: &[&str], csv: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for id in ids {
        write_image(&dir.path().join("ISIC-2017_Training_Data").join(format!("{id}.png")));
    }
    fs::write(dir.path().join("ISIC-2017_Training_Part3_GroundTruth.csv"), csv).unwrap();
    dir
}

fn part3_error(csv: &str) -> String {
    let dir = isic2017(&["ISIC_0000000", "ISIC_0000001"], csv);
    let e = import(SourceKind::Isic2017, dir.path(), &ImportOptions::default());
    let e = e.unwrap_err().to_string();
    assert!(e.contains("ISIC-2017_Training_Part3_GroundTruth.csv"), "{e}");
    e
}

const HEADER: &str = "image_id,melanoma,seborrheic_keratosis\n";

#[test]
fn part3_duplicated_id_is_an_error_with_both_lines() {
    let e = part3_error(&format!(
        "{HEADER}ISIC_0000000,1.0,0.0\nISIC_0000001,0.0,0.0\nISIC_0000000,0.0,0.0\n"
    ));
    assert!(e.contains("line 4") && e.contains("duplicate") && e.contains("line 2"), "{e}");
}

#[test]
fn part3_empty_or_header_only_is_an_error() {
    let e = part3_error("");
    assert!(e.contains("empty"), "{e}");
    let e = part3_error(HEADER);
    assert!(e.contains("header but no image rows"), "{e}");
}

#[test]
fn part3_label_that_is_not_0_or_1_is_an_error() {
    let e = part3_error(&format!("{HEADER}ISIC_0000000,0.7,0.0\nISIC_0000001,0.0,0.0\n"));
    assert!(e.contains("line 2, column 2 (melanoma): 0.7 is neither 0 nor 1"), "{e}");
}

#[test]
fn part3_melanoma_and_keratosis_both_1_is_an_error() {
    let e = part3_error(&format!("{HEADER}ISIC_0000000,0.0,0.0\nISIC_0000001,1.0,1.0\n"));
    assert!(e.contains("line 3") && e.contains("both melanoma and seborrheic_keratosis"), "{e}");
}

#[test]
fn part3_rows_without_image_are_counted_not_fatal() {
    let dir = isic2017(
        &["ISIC_0000000"],
        &format!("{HEADER}ISIC_0000000,1.0,0.0\nISIC_0000009,0.0,0.0\n"),
    );
    let rep = import(SourceKind::Isic2017, dir.path(), &ImportOptions::default()).unwrap();
    assert_eq!(rep.manifest.rows[0].diagnosis.as_deref(), Some("melanoma"));
    assert_eq!(rep.table_rows_without_image, vec!["ISIC_0000009".to_string()]);
}

#[test]
fn sidecar_json_with_a_non_utf8_byte_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    write_image(&imgs.join("a.png"));
    write_image(&imgs.join("b.png"));
    fs::write(imgs.join("a.json"), r#"{"meta":{"clinical":{"diagnosis":"melanoma"}}}"#).unwrap();
    let mut bad = br#"{"meta":{"clinical":{"diagnosis":"nevus","site":"X"}}}"#.to_vec();
    bad[45] = 0xE9; // Latin-1 'é'
    fs::write(imgs.join("b.json"), &bad).unwrap();
    let e = import(SourceKind::Folder, &imgs, &ImportOptions::default()).unwrap_err().to_string();
    assert!(e.contains("b.json") && e.contains("0xE9 at offset 45"), "{e}");
    let skip = ImportOptions { skip_bad: true, ..Default::default() };
    let rep = import(SourceKind::Folder, &imgs, &skip).unwrap();
    assert_eq!(rep.manifest.rows.len(), 1);
    assert_eq!(rep.manifest.rows[0].diagnosis.as_deref(), Some("melanoma"));
    assert!(rep.bad[0].path.ends_with("b.json"), "{:?}", rep.bad);
}

/// Issue 13, item 5, cost: the file check before a run uses the cache must stay cheap. On the
/// real PH2 import (200 images + 200 masks) the cold check hashes every file once; the warm
/// check reads none. The rows repeated ten times (2,000 rows, new ids) time a 2,000-image
/// manifest's warm check: a `stat` and a stamp read per file.
#[test]
fn ph2_cache_check_cost() {
    let Some(ph2) = std::env::var_os("LESION_PH2") else {
        println!("skipping: LESION_PH2 not set");
        return;
    };
    let rows =
        import(SourceKind::Ph2, Path::new(&ph2), &ImportOptions::default()).unwrap().manifest.rows;
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = lesion_data::cache::PreprocessCache::new(cache_dir.path());
    let timed = |rows: &[lesion_data::manifest::ManifestRow]| {
        let t = std::time::Instant::now();
        let checked = cache.check_rows(rows).unwrap();
        (t.elapsed(), checked.iter().map(|c| c.hashed).sum::<usize>())
    };
    let (cold, cold_hashed) = timed(&rows);
    let (warm, warm_hashed) = timed(&rows);
    let many: Vec<_> = (0..10)
        .flat_map(|k| {
            rows.iter().map(move |r| lesion_data::manifest::ManifestRow {
                id: format!("{}-{k}", r.id),
                ..r.clone()
            })
        })
        .collect();
    let (warm_many, many_hashed) = timed(&many);
    println!(
        "PH2 {} rows: cold check {cold:.2?} ({cold_hashed} files hashed), warm {warm:.2?} ({warm_hashed} hashed); {} rows warm {warm_many:.2?} ({many_hashed} hashed)",
        rows.len(),
        many.len()
    );
    assert_eq!(cold_hashed, 2 * rows.len());
    assert_eq!((warm_hashed, many_hashed), (0, 0));
}
