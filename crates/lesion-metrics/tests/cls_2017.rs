//! ISIC 2017 task-3 evaluation against the official scorer's numbers
//! (`tests/fixtures/cls/expected_2017.json`, made by
//! `tools/fixtures/make_cls_metric_fixtures.py`), table validation errors,
//! and the writers.

use std::path::{Path, PathBuf};

use lesion_metrics::cls::{evaluate_2017, ClsError, Task2017Scores, SUMMARY_CSV_HEADER};
use serde::Deserialize;

const TOLERANCE: f64 = 1e-12;

#[derive(Deserialize)]
struct Tasks {
    melanoma: Task2017Scores,
    seborrheic_keratosis: Task2017Scores,
}

#[derive(Deserialize)]
struct Expected {
    count: usize,
    tasks: Tasks,
    mean: Task2017Scores,
    official_macro_auc: f64,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cls")
}

fn assert_close(what: &str, got: &Task2017Scores, want: &Task2017Scores) {
    let pairs = [
        ("auc", got.auc, want.auc),
        ("ap", got.ap, want.ap),
        ("accuracy", got.accuracy, want.accuracy),
        ("sensitivity", got.sensitivity, want.sensitivity),
        ("specificity", got.specificity, want.specificity),
        ("spec_at_sens_82", got.spec_at_sens_82, want.spec_at_sens_82),
        ("spec_at_sens_89", got.spec_at_sens_89, want.spec_at_sens_89),
        ("spec_at_sens_95", got.spec_at_sens_95, want.spec_at_sens_95),
    ];
    for (name, g, w) in pairs {
        assert!((g - w).abs() <= TOLERANCE, "{what} {name}: got {g}, official {w}");
    }
}

#[test]
fn matches_official_scorer() {
    let dir = fixtures();
    let text = std::fs::read_to_string(dir.join("expected_2017.json")).unwrap();
    let want: Expected = serde_json::from_str(&text).unwrap();
    let got = evaluate_2017(&dir.join("gt.csv"), &dir.join("pred.csv")).unwrap();
    assert_eq!(got.count, want.count);
    assert_close("melanoma", &got.melanoma.scores, &want.tasks.melanoma);
    assert_close("keratosis", &got.seborrheic_keratosis.scores, &want.tasks.seborrheic_keratosis);
    assert_close("mean", &got.mean, &want.mean);
    assert!((got.overall() - want.official_macro_auc).abs() <= TOLERANCE);
    let c = &got.melanoma;
    assert_eq!(c.positives + c.negatives, want.count);
    assert_eq!(c.confusion.tp + c.confusion.fn_, c.positives as u64);
}

#[test]
fn writers_are_readable() {
    let dir = fixtures();
    let eval = evaluate_2017(&dir.join("gt.csv"), &dir.join("pred.csv")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("sub/eval.json");
    let csv = out.path().join("sub/eval.csv");
    eval.write_json(&json).unwrap();
    eval.write_csv(&csv).unwrap();
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(value["count"], 160);
    assert!(value["melanoma"]["roc"]["thresholds"][0].is_null(), "+inf threshold as null");
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], SUMMARY_CSV_HEADER.join(","));
    assert_eq!(lines.len(), 4);
    assert!(lines[3].starts_with("mean,"));
    let leftovers = std::fs::read_dir(out.path().join("sub")).unwrap().count();
    assert_eq!(leftovers, 2, "no temporary files left behind");
}

const GT: &str = "image_id,melanoma,seborrheic_keratosis\n\
                  ISIC_1,1.0,0.0\nISIC_2,0.0,1.0\nISIC_3,0.0,0.0\nISIC_4,1.0,0.0\n";

fn run(
    gt: &str,
    pred: &str,
) -> (tempfile::TempDir, Result<lesion_metrics::cls::Cls2017Evaluation, ClsError>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gt.csv"), gt).unwrap();
    std::fs::write(dir.path().join("pred.csv"), pred).unwrap();
    let r = evaluate_2017(&dir.path().join("gt.csv"), &dir.path().join("pred.csv"));
    (dir, r)
}

fn err_text(gt: &str, pred: &str) -> (ClsError, String) {
    let (_dir, r) = run(gt, pred);
    let e = r.expect_err("must fail");
    let s = e.to_string();
    (e, s)
}

#[test]
fn valid_small_pair() {
    let pred = "image_id,melanoma,seborrheic_keratosis\n\
                ISIC_4.jpg,0.9,0.1\nISIC_1,0.8,0.2\nISIC_2,0.1,0.7\nISIC_3,0.3,0.4\n";
    let (_d, r) = run(GT, pred);
    let e = r.unwrap();
    assert_eq!(e.melanoma.scores.auc, 1.0);
    assert_eq!(e.seborrheic_keratosis.scores.auc, 1.0);
}

#[test]
fn unknown_id_names_pred_line_column() {
    let pred = "image_id,melanoma,seborrheic_keratosis\n\
                ISIC_1,0.8,0.2\nISIC_9,0.1,0.7\nISIC_2,0.1,0.7\nISIC_3,0.3,0.4\nISIC_4,0.9,0.1\n";
    let (e, s) = err_text(GT, pred);
    assert!(matches!(e, ClsError::UnknownId { line: 3, column: 1, .. }), "{s}");
    assert!(
        s.contains("pred.csv")
            && s.contains("line 3")
            && s.contains("column 1")
            && s.contains("ISIC_9"),
        "{s}"
    );
}

#[test]
fn duplicate_id_names_both_lines() {
    let pred = "image_id,melanoma,seborrheic_keratosis\n\
                ISIC_1,0.8,0.2\nISIC_2,0.1,0.7\nISIC_1.JPG,0.1,0.7\n";
    let (e, s) = err_text(GT, pred);
    assert!(matches!(e, ClsError::DuplicateId { line: 4, first_line: 2, column: 1, .. }), "{s}");
    assert!(s.contains("pred.csv"), "{s}");
    let gt_dup = format!("{GT}ISIC_2,0.0,0.0\n");
    let (e, s) = err_text(&gt_dup, "image_id,melanoma,seborrheic_keratosis\nISIC_1,0,0\n");
    assert!(matches!(e, ClsError::DuplicateId { line: 6, first_line: 3, .. }), "{s}");
    assert!(s.contains("gt.csv"), "{s}");
}

#[test]
fn missing_id_names_truth_line() {
    let pred =
        "image_id,melanoma,seborrheic_keratosis\nISIC_1,0.8,0.2\nISIC_2,0.1,0.7\nISIC_4,0.9,0.1\n";
    let (e, s) = err_text(GT, pred);
    assert!(matches!(e, ClsError::MissingId { truth_line: 4, truth_column: 1, .. }), "{s}");
    assert!(s.contains("ISIC_3") && s.contains("pred.csv") && s.contains("gt.csv"), "{s}");
}

#[test]
fn bad_values_name_line_and_column() {
    let pred = "image_id,seborrheic_keratosis,melanoma\nISIC_1,0.2,1.5\n";
    let (e, s) = err_text(GT, pred);
    assert!(matches!(e, ClsError::OutOfRange { line: 2, column: 3, name: "melanoma", .. }), "{s}");
    let pred = "image_id,melanoma,seborrheic_keratosis\nISIC_1,0.2,0.1\nISIC_2,0.2,abc\n";
    let (e, s) = err_text(GT, pred);
    assert!(matches!(e, ClsError::NotANumber { line: 3, column: 3, .. }), "{s}");
    assert!(s.contains("'abc'") && s.contains("seborrheic_keratosis"), "{s}");
    let pred = "image_id,melanoma,seborrheic_keratosis\nISIC_1,NaN,0.1\n";
    let (e, s) = err_text(GT, pred);
    assert!(matches!(e, ClsError::OutOfRange { line: 2, column: 2, .. }), "{s}");
    let pred = "image_id,melanoma,seborrheic_keratosis\nISIC_1,-0.01,0.1\n";
    let (e, _) = err_text(GT, pred);
    assert!(matches!(e, ClsError::OutOfRange { .. }));
    let pred = "image_id,melanoma,seborrheic_keratosis\n,0.5,0.1\n";
    let (e, _) = err_text(GT, pred);
    assert!(matches!(e, ClsError::EmptyId { line: 2, .. }));
}

#[test]
fn column_problems() {
    let (e, s) = err_text(GT, "image_id,melanoma\nISIC_1,0.2\n");
    assert!(
        matches!(e, ClsError::MissingColumn { line: 1, column: "seborrheic_keratosis", .. }),
        "{s}"
    );
    let (e, s) = err_text(GT, "image_id,melanoma,seborrheic_keratosis,nevus\nISIC_1,0.2,0.1,0.7\n");
    assert!(matches!(e, ClsError::ExtraColumn { line: 1, column: 4, .. }), "{s}");
    let (e, s) = err_text(GT, "image_id,melanoma,seborrheic_keratosis\nISIC_1,0.2\n");
    assert!(matches!(e, ClsError::Csv { line: 2, .. }), "{s}");
    let (e, s) = err_text(GT, "image_id,melanoma,seborrheic_keratosis\n");
    assert!(matches!(e, ClsError::NoRows { .. }), "{s}");
}

#[test]
fn single_class_task_is_an_error() {
    let gt = "image_id,melanoma,seborrheic_keratosis\nISIC_1,1.0,0.0\nISIC_2,0.0,0.0\n";
    let pred = "image_id,melanoma,seborrheic_keratosis\nISIC_1,0.8,0.2\nISIC_2,0.1,0.7\n";
    let (e, s) = err_text(gt, pred);
    assert!(matches!(e, ClsError::Metric { task: "seborrheic_keratosis", .. }), "{s}");
}

#[test]
fn missing_file_is_io_error() {
    let r = evaluate_2017(Path::new("/nonexistent/gt.csv"), Path::new("/nonexistent/p.csv"));
    let e = r.expect_err("must fail");
    assert!(matches!(e, ClsError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/gt.csv"));
}

/// Issue 13, item 9: real ISIC 2017 Part 3 submissions have no header row; `cls eval` refused
/// them ("unexpected column 'ISIC_0012086'").
#[test]
fn headerless_submission_scores_as_the_headed_one() {
    let headed = "image_id,melanoma,seborrheic_keratosis\n\
                  ISIC_4.jpg,0.9,0.1\nISIC_1,0.8,0.2\nISIC_2,0.1,0.7\nISIC_3,0.3,0.4\n";
    let headerless = "ISIC_4.jpg,0.9,0.1\nISIC_1,0.8,0.2\nISIC_2,0.1,0.7\nISIC_3,0.3,0.4\n";
    let (_a, want) = run(GT, headed);
    let (_b, got) = run(GT, headerless);
    assert_eq!(got.unwrap(), want.unwrap());
    // Every row must then parse as id + two probabilities; errors keep their line.
    let (e, s) = err_text(GT, "ISIC_1,0.8,0.2\nISIC_2,0.1,high\n");
    assert!(matches!(e, ClsError::NotANumber { line: 2, column: 3, .. }), "{s}");
    let (e, s) = err_text(GT, "ISIC_1,0.8,0.2\nISIC_2,0.1,0.7,0.2\n");
    assert!(matches!(e, ClsError::Csv { line: 2, .. }), "{s}");
    // A first row that is neither a header nor data is still a header error.
    let (e, _) = err_text(GT, "ISIC_1,mel,0.2\nISIC_2,0.1,0.7\n");
    assert!(matches!(e, ClsError::ExtraColumn { line: 1, .. }));
}

/// Issue 13, item 9: on melanoma-only data (no keratosis: PH2) `cls eval` failed outright.
#[test]
fn melanoma_only_truth_scores_melanoma_and_names_the_undefined_task() {
    use lesion_metrics::cls::{evaluate_2017_defined, Cls2017Outcome};
    let gt = "image_id,melanoma,seborrheic_keratosis\n\
              ISIC_1,1.0,0.0\nISIC_2,0.0,0.0\nISIC_3,0.0,0.0\nISIC_4,1.0,0.0\n";
    let pred = "ISIC_1,0.8,0.2\nISIC_2,0.1,0.7\nISIC_3,0.3,0.4\nISIC_4,0.6,0.1\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gt.csv"), gt).unwrap();
    std::fs::write(dir.path().join("pred.csv"), pred).unwrap();
    let out = evaluate_2017_defined(&dir.path().join("gt.csv"), &dir.path().join("pred.csv"));
    let Cls2017Outcome::Partial(p) = out.unwrap() else { panic!("keratosis is undefined") };
    assert_eq!((p.count, p.task.as_str()), (4, "melanoma"));
    assert_eq!(p.scored.scores.auc, 1.0);
    assert_eq!(p.undefined.task, "seborrheic_keratosis");
    assert!(p.undefined.reason.contains("only one class"), "{}", p.undefined.reason);
    p.write_json(&dir.path().join("s.json")).unwrap();
    p.write_csv(&dir.path().join("s.csv")).unwrap();
    let csv = std::fs::read_to_string(dir.path().join("s.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    // The strict 2017 scorer still refuses it; both tasks undefined is an error either way.
    assert!(evaluate_2017(&dir.path().join("gt.csv"), &dir.path().join("pred.csv")).is_err());
    let gt = "image_id,melanoma,seborrheic_keratosis\nISIC_1,0.0,0.0\nISIC_2,0.0,0.0\n";
    std::fs::write(dir.path().join("gt.csv"), gt).unwrap();
    std::fs::write(dir.path().join("pred.csv"), "ISIC_1,0.8,0.2\nISIC_2,0.1,0.7\n").unwrap();
    let out = evaluate_2017_defined(&dir.path().join("gt.csv"), &dir.path().join("pred.csv"));
    assert!(matches!(out, Err(ClsError::Metric { .. })));
}
