//! Agreement with the official scorer (isic-challenge-scoring 5.6.0) on the
//! fixtures made by `tools/fixtures/make_seg_metric_fixtures.py`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lesion_metrics::seg::{evaluate_dirs, Confusion, SegScores};
use serde::Deserialize;

const TOLERANCE: f64 = 1e-6;

#[derive(Deserialize)]
struct ExpectedImage {
    prediction_file: String,
    tp: u64,
    tn: u64,
    fp: u64,
    #[serde(rename = "fn")]
    fn_: u64,
    #[serde(flatten)]
    scores: SegScores,
}

#[derive(Deserialize)]
struct ExpectedBad {
    bad_file: String,
    official_error: String,
}

#[derive(Deserialize)]
struct Expected {
    count: usize,
    per_image: BTreeMap<String, ExpectedImage>,
    macro_average: SegScores,
    bad: BTreeMap<String, ExpectedBad>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seg")
}

fn expected() -> Expected {
    let path = fixtures().join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_scores_close(what: &str, got: &SegScores, want: &SegScores) {
    let pairs = [
        ("accuracy", got.accuracy, want.accuracy),
        ("sensitivity", got.sensitivity, want.sensitivity),
        ("specificity", got.specificity, want.specificity),
        ("jaccard", got.jaccard, want.jaccard),
        ("threshold_jaccard", got.threshold_jaccard, want.threshold_jaccard),
        ("dice", got.dice, want.dice),
    ];
    for (name, g, w) in pairs {
        assert!((g - w).abs() <= TOLERANCE, "{what} {name}: got {g}, official {w}");
    }
}

#[test]
fn matches_official_scorer() {
    let exp = expected();
    let root = fixtures().join("good");
    let eval =
        evaluate_dirs(&root.join("truth"), &root.join("pred")).expect("evaluate good fixtures");
    assert_eq!(eval.per_image.len(), exp.count);
    assert_eq!(eval.per_image.len(), exp.per_image.len());
    for img in &eval.per_image {
        let want = exp.per_image.get(&img.id).unwrap_or_else(|| panic!("unexpected id {}", img.id));
        let c = Confusion { tp: want.tp, tn: want.tn, fp: want.fp, fn_: want.fn_ };
        assert_eq!(img.confusion, c, "{} (prediction {})", img.id, want.prediction_file);
        assert_scores_close(&img.id, &img.scores, &want.scores);
    }
    assert_scores_close("macro average", &eval.mean, &exp.macro_average);
    // per_image is in truth-name order, like the official iterator.
    let ids: Vec<&str> = eval.per_image.iter().map(|s| s.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
}

#[test]
fn bad_cases_fail_naming_the_file() {
    let exp = expected();
    assert!(!exp.bad.is_empty());
    for (case, bad) in &exp.bad {
        let root = fixtures().join("bad").join(case);
        let err = match evaluate_dirs(&root.join("truth"), &root.join("pred")) {
            Ok(_) => panic!("{case}: accepted, official scorer said: {}", bad.official_error),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&bad.bad_file),
            "{case}: error {err:?} does not name {}",
            bad.bad_file
        );
    }
}

#[test]
fn size_mismatch_names_both_sizes() {
    let root = fixtures().join("bad/size_mismatch");
    let err = evaluate_dirs(&root.join("truth"), &root.join("pred")).err().map(|e| e.to_string());
    let err = err.unwrap_or_default();
    assert!(err.contains("25x17") && err.contains("24x17"), "{err}");
}

#[test]
fn rgb_prediction_says_not_single_channel() {
    let root = fixtures().join("bad/rgb_prediction");
    let err = evaluate_dirs(&root.join("truth"), &root.join("pred")).err().map(|e| e.to_string());
    let err = err.unwrap_or_default();
    assert!(err.contains("not single-channel"), "{err}");
}

/// Non-ISIC ids: PH2-style truth names, prediction names containing the id.
#[test]
fn non_isic_ids_pair_by_stem() {
    let good = fixtures().join("good");
    let dir = tempfile::tempdir().expect("tempdir");
    let (truth, pred) = (dir.path().join("truth"), dir.path().join("pred"));
    std::fs::create_dir_all(&truth).expect("mkdir");
    std::fs::create_dir_all(&pred).expect("mkdir");
    let copies = [
        ("truth/ISIC_0000019_segmentation.bmp", "truth/IMD002_lesion.bmp"),
        ("pred/ISIC_0000019.bmp", "pred/IMD002_pred.bmp"),
        ("truth/ISIC_0000012_segmentation.png", "truth/case7_segmentation.png"),
        ("pred/ISIC_0000012.png", "pred/case7.png"),
        ("truth/ISIC_0000008_segmentation.png", "truth/IMD010_Mask.png"),
        ("pred/ISIC_0000008.png", "pred/IMD010_lesion_pred.png"),
    ];
    for (from, to) in copies {
        std::fs::copy(good.join(from), dir.path().join(to)).expect("copy");
    }
    std::fs::write(pred.join("notes.txt"), "IMD002 IMD010 case7").expect("write");
    let eval = evaluate_dirs(&truth, &pred).expect("evaluate");
    let exp = expected();
    let ids: Vec<&str> = eval.per_image.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["IMD002", "IMD010", "case7"]);
    for (img, official) in
        eval.per_image.iter().zip(["ISIC_0000019", "ISIC_0000008", "ISIC_0000012"])
    {
        assert_scores_close(&img.id, &img.scores, &exp.per_image[official].scores);
    }
    // A second candidate for IMD002 makes the pairing ambiguous.
    std::fs::copy(good.join("pred/ISIC_0000019.bmp"), pred.join("IMD002_v2.bmp")).expect("copy");
    let err = evaluate_dirs(&truth, &pred).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("multiple") && err.contains("IMD002_lesion.bmp"), "{err}");
}

#[test]
fn writes_csv_and_json() {
    let root = fixtures().join("good");
    let eval = evaluate_dirs(&root.join("truth"), &root.join("pred")).expect("evaluate");
    let dir = tempfile::tempdir().expect("tempdir");
    let csv_path = dir.path().join("out/per_image.csv");
    let json_path = dir.path().join("out/summary.json");
    eval.write_csv(&csv_path).expect("csv");
    eval.write_json(&json_path).expect("json");
    let csv_text = std::fs::read_to_string(&csv_path).expect("read csv");
    let mut lines = csv_text.lines();
    assert_eq!(
        lines.next(),
        Some("id,tp,tn,fp,fn,accuracy,sensitivity,specificity,jaccard,threshold_jaccard,dice")
    );
    assert_eq!(lines.count(), eval.per_image.len());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("read json"))
            .expect("parse");
    assert_eq!(summary["count"], eval.per_image.len());
    let mean: SegScores = serde_json::from_value(summary["mean"].clone()).expect("mean");
    assert_eq!(mean, eval.mean);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out")).expect("ls").collect();
    assert_eq!(leftovers.len(), 2, "temporary files left behind");
}
