//! Agreement of `lesion_metrics::cls` curves with scikit-learn on the cases
//! made by `tools/fixtures/make_cls_metric_fixtures.py` (`curves.json`), and
//! properties checked against brute-force definitions.

use std::path::Path;

use lesion_metrics::cls::{
    average_precision, roc_auc, roc_curve, specificity_at_sensitivity, BinaryConfusion, CurveError,
};
use proptest::prelude::*;
use serde::Deserialize;

const TOLERANCE: f64 = 1e-12;

#[derive(Deserialize)]
#[serde(untagged)]
enum Value<T> {
    Ok(T),
    Err { error: String },
}

#[derive(Deserialize)]
struct Roc {
    fpr: Vec<f64>,
    tpr: Vec<f64>,
    thresholds_after_first: Vec<f64>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    truth: Vec<bool>,
    score: Vec<f64>,
    ap: f64,
    auc: Value<f64>,
    roc: Value<Roc>,
    #[serde(default)]
    spec_at_sens: Vec<(f64, f64)>,
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

fn cases() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cls/curves.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let f: Fixture =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.cases
}

fn close(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= TOLERANCE, "{what}: got {got}, sklearn {want}");
}

#[test]
fn curves_match_sklearn() {
    let cases = cases();
    assert!(cases.len() >= 10);
    for c in &cases {
        let n = &c.name;
        close(&format!("{n} ap"), average_precision(&c.truth, &c.score).unwrap(), c.ap);
        match &c.auc {
            Value::Ok(want) => {
                close(&format!("{n} auc"), roc_auc(&c.truth, &c.score).unwrap(), *want)
            }
            Value::Err { error } => {
                assert!(error.to_lowercase().contains("one class"), "{n}: {error}");
                assert!(
                    matches!(roc_auc(&c.truth, &c.score), Err(CurveError::SingleClass { .. })),
                    "{n}"
                );
            }
        }
        match &c.roc {
            Value::Ok(want) => {
                let got = roc_curve(&c.truth, &c.score).unwrap();
                assert_eq!(got.fpr.len(), want.fpr.len(), "{n} roc length");
                assert!(got.thresholds[0].is_infinite() && got.thresholds[0] > 0.0);
                for k in 0..want.fpr.len() {
                    close(&format!("{n} fpr[{k}]"), got.fpr[k], want.fpr[k]);
                    close(&format!("{n} tpr[{k}]"), got.tpr[k], want.tpr[k]);
                }
                assert_eq!(
                    &got.thresholds[1..],
                    &want.thresholds_after_first[..],
                    "{n} thresholds"
                );
                for &(level, spec) in &c.spec_at_sens {
                    close(
                        &format!("{n} spec@{level}"),
                        specificity_at_sensitivity(&c.truth, &c.score, level).unwrap(),
                        spec,
                    );
                }
            }
            Value::Err { .. } => {
                assert!(
                    matches!(roc_curve(&c.truth, &c.score), Err(CurveError::SingleClass { .. })),
                    "{n}"
                );
                assert!(specificity_at_sensitivity(&c.truth, &c.score, 0.5).is_err(), "{n}");
            }
        }
    }
}

#[test]
fn single_class_conventions() {
    let s = [0.1, 0.7, 0.3];
    assert_eq!(roc_auc(&[false; 3], &s), Err(CurveError::SingleClass { positive: false }));
    assert_eq!(roc_auc(&[true; 3], &s), Err(CurveError::SingleClass { positive: true }));
    assert_eq!(average_precision(&[false; 3], &s), Ok(0.0));
    assert_eq!(average_precision(&[true; 3], &s), Ok(1.0));
}

#[test]
fn input_errors() {
    assert_eq!(roc_auc(&[], &[]), Err(CurveError::Empty));
    assert_eq!(
        roc_auc(&[true], &[0.1, 0.2]),
        Err(CurveError::LengthMismatch { truth: 1, score: 2 })
    );
    assert!(matches!(
        average_precision(&[true, false], &[0.1, f64::NAN]),
        Err(CurveError::NonFinite { index: 1, .. })
    ));
    assert!(matches!(
        roc_auc(&[true, false], &[f64::INFINITY, 0.0]),
        Err(CurveError::NonFinite { index: 0, .. })
    ));
    assert_eq!(
        specificity_at_sensitivity(&[true, false], &[0.9, 0.1], 1.5),
        Err(CurveError::BadLevel(1.5))
    );
}

#[test]
fn confusion_uses_strictly_greater() {
    let c = BinaryConfusion::at_threshold(&[true, false, true, false], &[0.5, 0.5, 0.51, 0.49]);
    assert_eq!(c, BinaryConfusion { tp: 1, tn: 2, fp: 0, fn_: 1 });
    assert_eq!(c.sensitivity(), 0.5);
    assert_eq!(c.specificity(), 1.0);
    assert_eq!(c.accuracy(), 0.75);
    let none_pos = BinaryConfusion::at_threshold(&[false, false], &[0.9, 0.1]);
    assert_eq!(none_pos.sensitivity(), 1.0, "freebie");
}

/// Mann–Whitney form: P(score_pos > score_neg) + ½ P(tie).
fn brute_auc(truth: &[bool], score: &[f64]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for (i, &ti) in truth.iter().enumerate() {
        for (j, &tj) in truth.iter().enumerate() {
            if ti && !tj {
                den += 1.0;
                if score[i] > score[j] {
                    num += 1.0;
                } else if score[i] == score[j] {
                    num += 0.5;
                }
            }
        }
    }
    num / den
}

/// Definition: mean over positives of precision at that positive's score
/// (all samples with score >= it are retrieved).
fn brute_ap(truth: &[bool], score: &[f64]) -> f64 {
    let pos: Vec<usize> = (0..truth.len()).filter(|&i| truth[i]).collect();
    let mut sum = 0.0;
    for &i in &pos {
        let retrieved = score.iter().filter(|&&s| s >= score[i]).count() as f64;
        let hits = (0..truth.len()).filter(|&j| truth[j] && score[j] >= score[i]).count() as f64;
        sum += hits / retrieved;
    }
    sum / pos.len() as f64
}

fn sample() -> impl Strategy<Value = (Vec<bool>, Vec<f64>)> {
    (2usize..60).prop_flat_map(|n| {
        (
            proptest::collection::vec(any::<bool>(), n),
            // few distinct values: many ties
            proptest::collection::vec((0u8..8).prop_map(|v| f64::from(v) / 8.0), n),
        )
    })
}

proptest! {
    #[test]
    fn auc_and_ap_match_brute_force((truth, score) in sample()) {
        let pos = truth.iter().filter(|&&t| t).count();
        if pos == 0 || pos == truth.len() {
            prop_assert!(roc_auc(&truth, &score).is_err());
        } else {
            let auc = roc_auc(&truth, &score).unwrap();
            prop_assert!((auc - brute_auc(&truth, &score)).abs() < 1e-12);
            let ap = average_precision(&truth, &score).unwrap();
            prop_assert!((ap - brute_ap(&truth, &score)).abs() < 1e-12);
            let roc = roc_curve(&truth, &score).unwrap();
            prop_assert!(roc.fpr.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(roc.tpr.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(roc.thresholds.windows(2).all(|w| w[0] > w[1]));
            prop_assert_eq!(*roc.fpr.last().unwrap(), 1.0);
            prop_assert_eq!(*roc.tpr.last().unwrap(), 1.0);
            let s95 = specificity_at_sensitivity(&truth, &score, 0.95).unwrap();
            let s50 = specificity_at_sensitivity(&truth, &score, 0.5).unwrap();
            prop_assert!((0.0..=1.0).contains(&s95) && s50 >= s95);
        }
    }
}
