//! The review sheet is self-contained: every file it references exists, relative to it.

use std::collections::BTreeMap;

use image::{Rgb, RgbImage};
use lesion_data::manifest::ManifestRow;
use lesion_dedup::pipeline::{find_duplicates, fingerprint_rows, Decisions, DedupConfig};
use lesion_dedup::report::{write_review_html, THUMB_LONG_SIDE};

fn picture(seed: u32, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = ((x * (3 + seed) + y * y * (1 + seed) / 7 + (x * y) / (2 + seed)) % 256) as u8;
        Rgb([v, v / 2, 255 - v])
    })
}

#[test]
fn review_html_references_only_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    // Two pictures with a half-size copy each, and an unrelated one.
    for (k, (seed, scale)) in [(1, 1), (1, 2), (2, 1), (2, 2), (5, 1)].into_iter().enumerate() {
        let p = dir.path().join(format!("img{k}.png"));
        let full = picture(seed, 300, 200);
        let img = image::imageops::resize(
            &full,
            300 / scale,
            200 / scale,
            image::imageops::FilterType::Triangle,
        );
        let (w, h) = img.dimensions();
        img.save(&p).unwrap();
        rows.push(ManifestRow {
            id: format!("im,{k}"),
            source: "synthetic".into(),
            image_path: p.clone(),
            mask_path: None,
            width: w,
            height: h,
            content_hash: lesion_data::io::content_hash(&p).unwrap(),
            diagnosis: Some("nevus".into()),
            group: None,
            meta: BTreeMap::new(),
        });
    }
    let cfg = DedupConfig::default();
    let (fps, keys, _) = fingerprint_rows(&rows, &cfg).unwrap();
    let report = find_duplicates(&rows, &fps, &keys, &cfg, &Decisions::new());
    assert!(report.pairs.len() >= 2, "{:?}", report.pairs);
    let out = dir.path().join("out");
    let html_path = out.join("review.html");
    write_review_html(&html_path, &rows, &report, cfg.threshold).unwrap();
    let html = std::fs::read_to_string(&html_path).unwrap();
    let mut refs = 0;
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let target = &part[..part.find('"').unwrap()];
            assert!(!target.contains("://"), "absolute reference {target}");
            let file = out.join(target);
            assert!(file.is_file(), "{target} referenced but missing");
            let t = image::open(&file).unwrap();
            assert!(t.width().max(t.height()) <= THUMB_LONG_SIDE);
            refs += 1;
        }
    }
    assert_eq!(refs, 2 * report.pairs.iter().filter(|p| p.decision.is_none()).count());
    assert!(
        html.contains("&quot;im,0&quot;,&quot;im,1&quot;,confirmed"),
        "decision line to copy: {html}"
    );
}
