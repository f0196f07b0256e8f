//! Issue 13 through the `lesion` binary: masks that silently became empty (item 4), the cache
//! trusting the manifest (item 5), table problems (item 7), ISIC 2017 compatibility (item 9)
//! and messages (item 10). No training: each command here runs in well under a second.
use std::path::Path;
use std::process::{Command, Output};

use image::{GrayImage, Luma, Rgb, RgbImage};

fn lesion() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lesion"));
    c.args(["--quiet", "--threads", "1"]);
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(cmd: &mut Command) -> (String, String) {
    let o = cmd.output().expect("spawn lesion");
    let (out, err) = text(&o);
    assert!(o.status.success(), "lesion failed\nstdout:\n{out}\nstderr:\n{err}");
    (out, err)
}

fn fails(cmd: &mut Command) -> String {
    let o = cmd.output().expect("spawn lesion");
    let (out, err) = text(&o);
    assert!(!o.status.success(), "lesion succeeded\nstdout:\n{out}\nstderr:\n{err}");
    err
}

const W: u32 = 24;
const H: u32 = 16;

fn lesion_at(x: u32, y: u32) -> bool {
    x > 4 && y > 4
}

/// `imgs/a.png` + `masks/a.png` (the mask as given) under `dir`.
fn folder(dir: &Path, mask: image::DynamicImage) {
    std::fs::create_dir_all(dir.join("imgs")).unwrap();
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    RgbImage::from_fn(W, H, |x, y| Rgb([(x * 9) as u8, (y * 13) as u8, 120]))
        .save(dir.join("imgs/a.png"))
        .unwrap();
    mask.save(dir.join("masks/a.png")).unwrap();
}

fn import(dir: &Path, extra: &[&str]) -> Command {
    let mut c = lesion();
    c.args(["data", "import", "folder"])
        .arg(dir.join("imgs"))
        .arg("--mask-dir")
        .arg(dir.join("masks"))
        .arg("-o")
        .arg(dir.join("m.csv"))
        .args(extra);
    c
}

/// Item 4: a pure-red RGB mask imported with exit 0 and came out empty in `seg truth`.
#[test]
fn red_mask_import_fails_naming_the_mask() {
    let tmp = tempfile::tempdir().unwrap();
    let red =
        RgbImage::from_fn(W, H, |x, y| Rgb(if lesion_at(x, y) { [255, 0, 0] } else { [0; 3] }));
    folder(tmp.path(), image::DynamicImage::ImageRgb8(red));
    let err = fails(&mut import(tmp.path(), &[]));
    assert!(err.contains("masks/a.png") && err.contains("RGB (255, 0, 0)"), "{err}");
}

/// Item 4: a 0/1 mask imported with exit 0 and came out empty in `seg truth`; now it needs
/// --masks-01, and then `seg truth` writes its lesion.
#[test]
fn zero_one_mask_needs_masks_01_and_seg_truth_keeps_its_lesion() {
    let tmp = tempfile::tempdir().unwrap();
    let m01 = GrayImage::from_fn(W, H, |x, y| Luma([u8::from(lesion_at(x, y))]));
    folder(tmp.path(), image::DynamicImage::ImageLuma8(m01));
    let err = fails(&mut import(tmp.path(), &[]));
    assert!(err.contains("masks/a.png") && err.contains("--masks-01"), "{err}");
    ok(&mut import(tmp.path(), &["--masks-01"]));
    let truth = tmp.path().join("truth");
    ok(lesion()
        .args(["seg", "truth", "--manifest"])
        .arg(tmp.path().join("m.csv"))
        .arg("-o")
        .arg(&truth));
    let written = image::open(truth.join("a_segmentation.png")).unwrap().to_luma8();
    let lesion_pixels = written.pixels().filter(|p| p.0[0] == 255).count();
    assert_eq!(lesion_pixels, ((W - 5) * (H - 5)) as usize);
}

/// Item 4: an all-empty mask is imported, with a counted warning.
#[test]
fn empty_mask_is_a_counted_warning() {
    let tmp = tempfile::tempdir().unwrap();
    folder(tmp.path(), image::DynamicImage::ImageLuma8(GrayImage::new(W, H)));
    let (_, err) = ok(&mut import(tmp.path(), &[]));
    assert!(err.contains("warning: 1 masks have no lesion pixel (first: "), "{err}");
}

/// Item 7: `--split-of` with a manifest lacking most of the split's ids (the check every
/// `--split-of` shares: `seg truth`, `seg predict`, `cls predict`).
#[test]
fn split_of_with_a_manifest_lacking_split_ids_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    folder(tmp.path(), image::DynamicImage::ImageLuma8(GrayImage::new(W, H)));
    ok(&mut import(tmp.path(), &[]));
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("split.json"), r#"{"train":["t"],"val":["a","b","c","d"]}"#).unwrap();
    let err = fails(
        lesion()
            .args(["seg", "truth", "--manifest"])
            .arg(tmp.path().join("m.csv"))
            .arg("--split-of")
            .arg(&run)
            .arg("-o")
            .arg(tmp.path().join("truth")),
    );
    assert!(err.contains("split.json") && err.contains("3 of the 4 validation ids"), "{err}");
}

/// Item 9: a headerless ISIC 2017 submission on melanoma-only truth: scored, exit 0, the
/// undefined task named.
#[test]
fn cls_eval_takes_headerless_submissions_and_melanoma_only_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let gt = tmp.path().join("gt.csv");
    let pred = tmp.path().join("pred.csv");
    std::fs::write(
        &gt,
        "image_id,melanoma,seborrheic_keratosis\nISIC_0012086,1.0,0.0\nISIC_0012087,0.0,0.0\nISIC_0012088,0.0,0.0\n",
    )
    .unwrap();
    std::fs::write(&pred, "ISIC_0012086,0.75,0.24\nISIC_0012087,0.25,0.24\nISIC_0012088,0.5,0.1\n")
        .unwrap();
    let (out, _) = ok(lesion().args(["cls", "eval"]).arg(&gt).arg(&pred));
    let auc = out.lines().find(|l| l.starts_with("ROC AUC")).unwrap_or_default();
    assert!(auc.contains("1.0000"), "{out}");
    assert!(out.contains("seborrheic_keratosis not scored") && out.contains("one class"), "{out}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("pred.scores.json")).unwrap())
            .unwrap();
    assert_eq!(json["undefined"]["task"], "seborrheic_keratosis");
    assert!(tmp.path().join("pred.roc.png").exists());
}

/// Item 10: `auto` was missing from the list of import kinds; an OS error repeated its text.
#[test]
fn messages_list_auto_and_say_an_os_error_once() {
    let tmp = tempfile::tempdir().unwrap();
    let err =
        fails(lesion().args(["data", "import", "isic2020"]).arg(tmp.path()).arg("-o").arg("x.csv"));
    assert!(err.contains("auto, isic2016") && err.contains("folder"), "{err}");
    // A manifest that is a folder: the OS says "Is a directory", once.
    let err =
        fails(lesion().args(["seg", "truth", "--manifest"]).arg(tmp.path()).arg("-o").arg("t"));
    assert_eq!(err.matches("os error").count(), 1, "{err}");
}

/// Item 5: `seg train` with a (warm) cache trusted the manifest: a replaced image, a made-up
/// content_hash or a mask of another size than its image went into training. The check runs
/// before the first epoch, so these fail in a fraction of a second.
#[test]
fn seg_train_refuses_files_that_no_longer_match_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    folder(
        d,
        image::DynamicImage::ImageLuma8(GrayImage::from_fn(W, H, |x, y| {
            Luma([if lesion_at(x, y) { 255 } else { 0 }])
        })),
    );
    for id in ["b", "c", "d"] {
        std::fs::copy(d.join("masks/a.png"), d.join(format!("masks/{id}.png"))).unwrap();
        RgbImage::from_fn(W, H, |x, y| Rgb([(x * 5) as u8, (y * 7) as u8, id.as_bytes()[0]]))
            .save(d.join(format!("imgs/{id}.png")))
            .unwrap();
    }
    ok(&mut import(d, &[]));
    let cfg = d.join("tiny.toml");
    std::fs::write(&cfg, "[model]\narch = \"unet\"\ninput_size = 32\nbase = 4\ndepth = 2\n[train]\nepochs = 1\nbatch_size = 2\n").unwrap();
    let train = |manifest: &Path, out: &str| {
        let mut c = lesion();
        c.args(["seg", "train", "--manifest"])
            .arg(manifest)
            .arg("--config")
            .arg(&cfg)
            .arg("--out")
            .arg(d.join(out))
            .arg("--cache")
            .arg(d.join("cache"));
        c
    };
    // A good run warms the cache.
    ok(&mut train(&d.join("m.csv"), "run0"));
    // Replaced image (same size, other pixels).
    let original = std::fs::read(d.join("imgs/b.png")).unwrap();
    RgbImage::from_pixel(W, H, Rgb([9, 9, 9])).save(d.join("imgs/b.png")).unwrap();
    let err = fails(&mut train(&d.join("m.csv"), "run1"));
    assert!(err.contains("imgs/b.png: does not match the manifest"), "{err}");
    std::fs::write(d.join("imgs/b.png"), &original).unwrap();

    // A made-up content_hash.
    let csv = std::fs::read_to_string(d.join("m.csv")).unwrap();
    let hash = lesion_data::io::content_hash(&d.join("imgs/c.png")).unwrap();
    std::fs::write(d.join("made-up.csv"), csv.replace(&hash, &"ab".repeat(32))).unwrap();
    let err = fails(&mut train(&d.join("made-up.csv"), "run2"));
    assert!(err.contains("imgs/c.png") && err.contains("records abababab"), "{err}");

    // A mask of half the image's size: refused as import refuses it.
    GrayImage::new(W / 2, H / 2).save(d.join("masks/d.png")).unwrap();
    let err = fails(&mut train(&d.join("m.csv"), "run3"));
    assert!(err.contains("masks/d.png: size mismatch: mask is 12x8"), "{err}");
    let err = fails(&mut import(d, &[]));
    assert!(err.contains("masks/d.png: size mismatch: mask is 12x8"), "{err}");
}
