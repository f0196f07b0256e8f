//! Fuzz harness of every reader of `lesion-data` (stable toolchain, proptest; see
//! `common/mutate.rs`): images and masks, the PH2 spreadsheet, ISIC ground-truth and metadata
//! CSVs, metadata tables, ISIC Archive JSON sidecars, manifests, recipes, id and split lists.
//! Each target feeds arbitrary bytes and mutations of small real files to the reader and
//! checks that it returns `Ok` or an error naming the file, never a panic. Cases per target:
//! `PROPTEST_CASES` (256 by default). The PH2 target adds `$LESION_PH2/PH2_dataset.xlsx` to its
//! seeds when `LESION_PH2` is set.
#[path = "common/mutate.rs"]
mod mutate;

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage, ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use lesion_data::import::{import, ImportOptions, SourceKind};
use lesion_data::manifest::{Manifest, ManifestRow};
use lesion_data::recipe::Recipe;
use lesion_data::{import_tables, io, recod, split};
use mutate::{inputs, outcome};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Seed files

fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn rgb(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([(x * 30) as u8, (y * 40) as u8, ((x + y) * 9) as u8]))
}

fn mask(w: u32, h: u32) -> GrayImage {
    GrayImage::from_fn(w, h, |x, y| Luma([if (x + y) % 3 == 0 { 255 } else { 0 }]))
}

/// Small images in every format the readers accept, in the colour types datasets use.
fn image_seeds() -> Vec<Vec<u8>> {
    let rgba = RgbaImage::from_fn(7, 5, |x, y| Rgba([x as u8 * 20, y as u8 * 30, 90, 200]));
    let gray16 = DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(6, 6, |x, y| {
        Luma([(x * 9000 + y * 100) as u16])
    }));
    vec![
        encode(DynamicImage::ImageRgb8(rgb(9, 7)), ImageFormat::Png),
        encode(DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
        encode(DynamicImage::ImageLuma8(mask(8, 6)), ImageFormat::Png),
        encode(gray16, ImageFormat::Png),
        encode(DynamicImage::ImageRgb8(rgb(16, 16)), ImageFormat::Jpeg),
        encode(DynamicImage::ImageRgb8(rgb(9, 7)), ImageFormat::Bmp),
        encode(DynamicImage::ImageLuma8(mask(8, 6)), ImageFormat::Bmp),
    ]
}

/// A minimal `.xlsx` (inline strings) laid out as PH2's table: a legend row, then the header
/// row, then one row per image with an X in its diagnosis column. `compress` deflates the
/// parts (as Excel does) or stores them (so mutations reach the XML itself).
fn ph2_xlsx(compress: bool) -> Vec<u8> {
    const NS: &str = "http://schemas.openxmlformats.org";
    let cell = |text: &str| format!("<c t=\"inlineStr\"><is><t>{text}</t></is></c>");
    let row = |cells: &[&str]| {
        format!("<row>{}</row>", cells.iter().map(|c| cell(c)).collect::<String>())
    };
    let rows = [
        row(&["Legend: X marks the diagnosis"]),
        row(&[
            "Image Name",
            "Histological Diagnosis",
            "Common Nevus",
            "Atypical Nevus",
            "Melanoma",
        ]),
        row(&["IMD001", "", "X", "", ""]),
        row(&["IMD002", "", "", "", "X"]),
    ]
    .concat();
    let parts = [
        (
            "[Content_Types].xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Types xmlns=\"{NS}/package/2006/content-types\">\
                 <Default Extension=\"rels\" ContentType=\"application/vnd.openxmlformats-package.relationships+xml\"/>\
                 <Default Extension=\"xml\" ContentType=\"application/xml\"/>\
                 <Override PartName=\"/xl/workbook.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml\"/>\
                 <Override PartName=\"/xl/worksheets/sheet1.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml\"/></Types>"
            ),
        ),
        (
            "_rels/.rels",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Relationships xmlns=\"{NS}/package/2006/relationships\">\
                 <Relationship Id=\"rId1\" Type=\"{NS}/officeDocument/2006/relationships/officeDocument\" Target=\"xl/workbook.xml\"/></Relationships>"
            ),
        ),
        (
            "xl/workbook.xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><workbook xmlns=\"{NS}/spreadsheetml/2006/main\" xmlns:r=\"{NS}/officeDocument/2006/relationships\">\
                 <sheets><sheet name=\"Sheet1\" sheetId=\"1\" r:id=\"rId1\"/></sheets></workbook>"
            ),
        ),
        (
            "xl/_rels/workbook.xml.rels",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Relationships xmlns=\"{NS}/package/2006/relationships\">\
                 <Relationship Id=\"rId1\" Type=\"{NS}/officeDocument/2006/relationships/worksheet\" Target=\"worksheets/sheet1.xml\"/></Relationships>"
            ),
        ),
        (
            "xl/worksheets/sheet1.xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><worksheet xmlns=\"{NS}/spreadsheetml/2006/main\"><sheetData>{rows}</sheetData></worksheet>"
            ),
        ),
    ];
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let method =
        if compress { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, text) in parts {
        zip.start_file(name, options).unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

const PART3_2017: &str = "image_id,melanoma,seborrheic_keratosis\n\
                          ISIC_0000000,0.0,0.0\nISIC_0000001,1.0,0.0\nISIC_0000002,0.0,1.0\n";
const PART3_2016: &str = "ISIC_0000000,benign\nISIC_0000001,malignant\n";
const METADATA_2017: &str = "image_id,age_approximate,sex\nISIC_0000000,55,female\n\
                             ISIC_0000001,unknown,male\n";
const ONEHOT_2019: &str = "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\n\
                           ISIC_0000000,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n\
                           ISIC_0000001,0,1,0,0,0,0,0,0,0\n";
const ONEHOT_2018: &str = "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n\
                           ISIC_0000000,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n";
const METADATA_2019: &str = "image,age_approximate,anatom_site_general,lesion_id,sex\n\
                             ISIC_0000000,55,anterior torso,BCN_0001,male\nISIC_0000001,,,,\n";
const TABLE: &str = "isic_id,diagnosis,age_approx,sex,lesion_id\n\
                     ISIC_0000000,melanoma,40,male,IL_1\nISIC_0000001,nevus,,female,IL_2\n";
const SIDECAR: &str = r#"{"name": "ISIC_0000000", "meta": {"clinical": {"age_approx": 55,
    "benign_malignant": "malignant", "diagnosis": "melanoma", "sex": "male",
    "melanocytic": true}, "acquisition": {"image_type": "dermoscopic"}}}"#;
const RECIPE: &str = r#"
[[source]]
name = "archive"
kind = "table"
path = "archive/metadata.csv"
images = "archive/images"
weight = 1.5
id_prefix = "a-"
rules = [
  { name = "age15", action = "exclude", when = 'age == 15 and benign' },
  { name = "dx", action = "exclude", when = 'diagnosis in ["other", "unknown"] or not has_mask' },
]
[[subset]]
name = "semi"
when = 'source != "archive" or (melanoma and width >= 10)'
"#;
const RECOD_LIST: &str =
    "image,case,type,age,has_age,sex,has_sex,melanoma,keratosis,schedule,weight,dataset\n\
                          ISIC_0000000,c1,dermoscopic,40,1,male,1,1,0,0,1.0,isic2017\n\
                          ISIC_0000001,,clinical,0,0,,0,0,1,1,0.5,atlas\n";
const ID_LIST: &str = "# validation ids\nISIC_0000000\n\nISIC_0000001  # second\n";

fn text_seeds(texts: &[&str]) -> Vec<Vec<u8>> {
    texts.iter().map(|t| t.as_bytes().to_vec()).collect()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn save(path: &Path, img: DynamicImage, format: ImageFormat) {
    write(path, &encode(img, format));
}

/// Rows of a valid manifest whose images exist under `dir` (the manifest seed).
fn manifest_rows(dir: &Path) -> Vec<ManifestRow> {
    (0..3)
        .map(|i| {
            let image = dir.join(format!("img{i}.png"));
            let mask_path = dir.join(format!("img{i}_mask.png"));
            save(&image, DynamicImage::ImageRgb8(rgb(6, 4)), ImageFormat::Png);
            save(&mask_path, DynamicImage::ImageLuma8(mask(6, 4)), ImageFormat::Png);
            let mut row = ManifestRow {
                id: format!("ID_{i}"),
                source: "folder".into(),
                content_hash: io::content_hash(&image).unwrap(),
                image_path: image,
                mask_path: Some(mask_path),
                width: 6,
                height: 4,
                diagnosis: (i != 1).then(|| "melanoma".into()),
                group: Some(format!("g{}", i / 2)),
                meta: Default::default(),
            };
            row.set_meta("age", "40");
            row
        })
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------------------
// Targets

/// The ISIC 2017 root used by the Part 3 and metadata targets: one image with its mask.
fn isic2017_root(root: &Path) -> (PathBuf, PathBuf) {
    let data = root.join("ISIC-2017_Training_Data");
    save(&data.join("ISIC_0000000.png"), DynamicImage::ImageRgb8(rgb(6, 4)), ImageFormat::Png);
    save(
        &root.join("ISIC-2017_Training_Part1_GroundTruth/ISIC_0000000_segmentation.png"),
        DynamicImage::ImageLuma8(mask(6, 4)),
        ImageFormat::Png,
    );
    let part3 = root.join("ISIC-2017_Training_Part3_GroundTruth.csv");
    let metadata = data.join("ISIC-2017_Training_Data_metadata.csv");
    write(&part3, PART3_2017.as_bytes());
    write(&metadata, METADATA_2017.as_bytes());
    (part3, metadata)
}

/// The PH2 root used by the spreadsheet target: one image with its mask, and the table.
fn ph2_root(root: &Path) -> PathBuf {
    let dir = root.join("PH2 Dataset images/IMD001");
    save(
        &dir.join("IMD001_Dermoscopic_Image/IMD001.bmp"),
        DynamicImage::ImageRgb8(rgb(6, 4)),
        ImageFormat::Bmp,
    );
    save(
        &dir.join("IMD001_lesion/IMD001_lesion.bmp"),
        DynamicImage::ImageLuma8(mask(6, 4)),
        ImageFormat::Bmp,
    );
    root.join("PH2_dataset.xlsx")
}

fn ph2_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![ph2_xlsx(true), ph2_xlsx(false)];
    match std::env::var_os("LESION_PH2") {
        Some(dir) => {
            let real = Path::new(&dir).join("PH2_dataset.xlsx");
            seeds.push(std::fs::read(&real).unwrap_or_else(|e| panic!("{}: {e}", real.display())));
        }
        None => println!("LESION_PH2 unset: the PH2 target mutates the built spreadsheet only"),
    }
    seeds
}

/// The seeds are what they claim: each reader accepts its unmutated seeds, so mutations start
/// from files that reach deep into the reader.
#[test]
fn seeds_are_accepted_by_their_readers() {
    for (i, bytes) in image_seeds().iter().enumerate() {
        io::rgb_from_bytes(Path::new("seed"), bytes).unwrap_or_else(|e| panic!("image {i}: {e}"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let table = ph2_root(tmp.path());
    for (i, xlsx) in ph2_seeds().iter().enumerate() {
        write(&table, xlsx);
        let report = import(SourceKind::Ph2, tmp.path(), &ImportOptions::default())
            .unwrap_or_else(|e| panic!("xlsx {i}: {e}"));
        if i < 2 {
            assert_eq!(report.manifest.rows[0].diagnosis.as_deref(), Some("common nevus"));
        } else {
            // PH2's own table (its ids start at IMD002): 200 rows without an image here.
            assert_eq!(report.table_rows_without_image.len(), 200, "xlsx {i}");
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    isic2017_root(tmp.path());
    let report = import(SourceKind::Isic2017, tmp.path(), &ImportOptions::default()).unwrap();
    assert_eq!(report.manifest.rows[0].diagnosis.as_deref(), Some("nevus"));
    assert_eq!(report.manifest.rows[0].meta_value("sex"), Some("female"));
    let csv = tmp.path().join("t.csv");
    for gt in [ONEHOT_2019, ONEHOT_2018] {
        write(&csv, gt.as_bytes());
        import_tables::read_isic_onehot(&csv).unwrap();
    }
    write(&csv, METADATA_2019.as_bytes());
    import_tables::read_isic_metadata(&csv).unwrap();
    write(&csv, RECOD_LIST.as_bytes());
    recod::read_list(&csv).unwrap();
    let recipe = tmp.path().join("r.toml");
    write(&recipe, RECIPE.as_bytes());
    Recipe::read(&recipe).unwrap();
}

proptest! {
    #[test]
    fn images_decode_or_refuse(bytes in inputs(image_seeds())) {
        let path = Path::new("fuzzed-image.png");
        outcome("rgb_from_bytes", Some("fuzzed-image.png"), io::rgb_from_bytes(path, &bytes))?;
        outcome("header_dims", Some("fuzzed-image.png"), io::header_dims(path, &bytes))?;
    }

    #[test]
    fn masks_load_or_refuse(bytes in inputs(image_seeds())) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("fuzzed_segmentation.png");
        write(&path, &bytes);
        outcome("load_mask", Some("fuzzed_segmentation.png"), io::load_mask(&path))?;
        outcome("load_rgb", Some("fuzzed_segmentation.png"), io::load_rgb(&path))?;
    }

    #[test]
    fn ph2_spreadsheet_reads_or_refuses(bytes in inputs(ph2_seeds())) {
        let tmp = tempfile::tempdir().unwrap();
        let table = ph2_root(tmp.path());
        write(&table, &bytes);
        outcome(
            "PH2 import",
            Some("PH2_dataset.xlsx"),
            import(SourceKind::Ph2, tmp.path(), &ImportOptions::default()),
        )?;
    }

    #[test]
    fn isic_part3_csv_reads_or_refuses(bytes in inputs(text_seeds(&[PART3_2017, PART3_2016]))) {
        let tmp = tempfile::tempdir().unwrap();
        let (part3, _) = isic2017_root(tmp.path());
        write(&part3, &bytes);
        let result = import(SourceKind::Isic2017, tmp.path(), &ImportOptions::default());
        outcome("ISIC 2017 Part 3 CSV", Some(&file_name(&part3)), result)?;
    }

    #[test]
    fn isic_metadata_csv_reads_or_refuses(bytes in inputs(text_seeds(&[METADATA_2017, METADATA_2019]))) {
        let tmp = tempfile::tempdir().unwrap();
        let (_, metadata) = isic2017_root(tmp.path());
        write(&metadata, &bytes);
        let result = import(SourceKind::Isic2017, tmp.path(), &ImportOptions::default());
        outcome("ISIC 2017 metadata CSV", Some(&file_name(&metadata)), result)?;
        outcome(
            "read_isic_metadata",
            Some(&file_name(&metadata)),
            import_tables::read_isic_metadata(&metadata),
        )?;
    }

    #[test]
    fn isic_onehot_csv_reads_or_refuses(bytes in inputs(text_seeds(&[ONEHOT_2019, ONEHOT_2018]))) {
        let tmp = tempfile::tempdir().unwrap();
        let gt = tmp.path().join("ISIC_2019_Training_GroundTruth.csv");
        write(&gt, &bytes);
        outcome("read_isic_onehot", Some(&file_name(&gt)), import_tables::read_isic_onehot(&gt))?;
        save(
            &tmp.path().join("ISIC_2019_Training_Input/ISIC_0000000.png"),
            DynamicImage::ImageRgb8(rgb(6, 4)),
            ImageFormat::Png,
        );
        let result = import(SourceKind::Isic2019, tmp.path(), &ImportOptions::default());
        prop_assert!(result.as_ref().err().is_none_or(|e| !e.to_string().trim().is_empty()));
    }

    #[test]
    fn metadata_table_imports_or_refuses(bytes in inputs(text_seeds(&[TABLE]))) {
        let tmp = tempfile::tempdir().unwrap();
        let images = tmp.path().join("images");
        save(&images.join("ISIC_0000000.png"), DynamicImage::ImageRgb8(rgb(6, 4)), ImageFormat::Png);
        save(&images.join("ISIC_0000001.jpg"), DynamicImage::ImageRgb8(rgb(16, 16)), ImageFormat::Jpeg);
        let table = tmp.path().join("metadata.csv");
        write(&table, &bytes);
        let result = import_tables::import_table(&table, &images);
        prop_assert!(result.as_ref().err().is_none_or(|e| !e.to_string().trim().is_empty()));
    }

    #[test]
    fn json_sidecars_read_or_refuse(bytes in inputs(text_seeds(&[SIDECAR]))) {
        let tmp = tempfile::tempdir().unwrap();
        save(&tmp.path().join("ISIC_0000000.png"), DynamicImage::ImageRgb8(rgb(6, 4)), ImageFormat::Png);
        write(&tmp.path().join("ISIC_0000000.json"), &bytes);
        outcome(
            "import_archive_json",
            Some("ISIC_0000000.json"),
            import_tables::import_archive_json(tmp.path()),
        )?;
        let result = import(SourceKind::Folder, tmp.path(), &ImportOptions::default());
        prop_assert!(result.as_ref().err().is_none_or(|e| !e.to_string().trim().is_empty()));
    }

    #[test]
    fn manifests_read_or_refuse(bytes in inputs({
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("manifest.csv");
        Manifest::new(manifest_rows(tmp.path())).write_csv(&path).unwrap();
        vec![std::fs::read(&path).unwrap()]
    })) {
        let tmp = tempfile::tempdir().unwrap();
        manifest_rows(tmp.path());
        let path = tmp.path().join("manifest.csv");
        write(&path, &bytes);
        outcome("Manifest::read_csv", Some("manifest.csv"), Manifest::read_csv(&path))?;
    }

    #[test]
    fn recipes_read_or_refuse(bytes in inputs(text_seeds(&[RECIPE]))) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("recipe.toml");
        write(&path, &bytes);
        outcome("Recipe::read", Some("recipe.toml"), Recipe::read(&path))?;
    }

    #[test]
    fn id_and_split_lists_read_or_refuse(bytes in inputs(text_seeds(&[ID_LIST, RECOD_LIST]))) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("list.txt");
        write(&path, &bytes);
        let rows = manifest_rows(tmp.path());
        outcome("split::read_id_list", Some("list.txt"), split::read_id_list(&path))?;
        outcome("read_split_file", Some("list.txt"), split::read_split_file(&path, &rows))?;
        outcome("recod::read_list", Some("list.txt"), recod::read_list(&path))?;
        outcome("recod::read_id_list", Some("list.txt"), recod::read_id_list(&path))?;
    }
}
