//! Decision thresholds at an operating point (`choose_threshold`), checked against brute
//! force: every threshold that can split the scores differently is tried, and the chosen one
//! must be the rule's optimum among them and reproduce its counts with `score > threshold`.
use lesion_metrics::cls::{
    choose_threshold, BinaryConfusion, CurveError, OperatingPoint, END_MARGIN,
};
use proptest::prelude::*;

/// Every distinct split of `score` (on a 0.1 grid) by `>`: each score (those above it
/// positive), just below each score (it positive too), and +inf (nothing positive).
fn all_splits(score: &[f64]) -> Vec<f64> {
    let mut t: Vec<f64> = score.iter().flat_map(|&s| [s, s - 1e-6]).collect();
    t.push(f64::INFINITY);
    t
}

fn youden(c: &BinaryConfusion) -> f64 {
    c.sensitivity() + c.specificity() - 1.0
}

fn sample() -> impl Strategy<Value = (Vec<bool>, Vec<f64>)> {
    (2usize..50).prop_flat_map(|n| {
        (
            proptest::collection::vec(any::<bool>(), n),
            // Few distinct values (ties), including the ends of [0, 1].
            proptest::collection::vec((0u8..=10).prop_map(|v| f64::from(v) / 10.0), n),
        )
    })
}

fn rule() -> impl Strategy<Value = OperatingPoint> {
    prop_oneof![
        Just(OperatingPoint::Youden),
        (0u8..=20).prop_map(|l| OperatingPoint::Sensitivity(f64::from(l) / 20.0)),
        (0u8..=20).prop_map(|l| OperatingPoint::Specificity(f64::from(l) / 20.0)),
    ]
}

proptest! {
    #[test]
    fn the_chosen_threshold_is_the_rules_optimum((truth, score) in sample(), op in rule()) {
        let pos = truth.iter().filter(|&&t| t).count();
        let got = choose_threshold(&truth, &score, op);
        if pos == 0 || pos == truth.len() {
            prop_assert!(matches!(got, Err(CurveError::SingleClass { .. })), "{:?}", got);
            return Ok(());
        }
        let got = got.unwrap();
        prop_assert_eq!(got.confusion, BinaryConfusion::at(&truth, &score, got.threshold));
        let chosen = got.confusion;
        for t in all_splits(&score) {
            let c = BinaryConfusion::at(&truth, &score, t);
            match op {
                OperatingPoint::Youden => prop_assert!(youden(&c) <= youden(&chosen) + 1e-12),
                OperatingPoint::Sensitivity(l) => {
                    prop_assert!(chosen.sensitivity() >= l);
                    if c.sensitivity() >= l {
                        prop_assert!(c.specificity() <= chosen.specificity());
                    }
                }
                OperatingPoint::Specificity(l) => {
                    prop_assert!(chosen.specificity() >= l);
                    if c.specificity() >= l {
                        prop_assert!(c.sensitivity() <= chosen.sensitivity());
                    }
                }
            }
        }
        // Strictly between adjacent distinct scores, or beyond all of them by the end margin:
        // never on a score (the two neighbours are never adjacent floats on this grid).
        prop_assert!(!score.contains(&got.threshold));
        let (lo, hi) = score.iter().fold((f64::MAX, f64::MIN), |(l, h), &s| (l.min(s), h.max(s)));
        prop_assert!(got.threshold >= lo - END_MARGIN * 1.000_001);
        prop_assert!(got.threshold <= hi + END_MARGIN * 1.000_001);
    }
}

#[test]
fn midpoints_ends_and_parsing() {
    let truth = [true, true, false, true, false, false];
    let score = [0.9, 0.8, 0.7, 0.6, 0.3, 0.1];
    // Youden: J = 2/3 at "top two" and at "top four" (sens 1, spec 2/3); the higher is kept.
    let y = choose_threshold(&truth, &score, OperatingPoint::Youden).unwrap();
    assert!((y.threshold - 0.75).abs() < 1e-12, "{y:?}");
    // Every melanoma found: the cut below 0.6.
    let s = choose_threshold(&truth, &score, OperatingPoint::Sensitivity(1.0)).unwrap();
    assert!((s.threshold - 0.45).abs() < 1e-12, "{s:?}");
    assert_eq!((s.confusion.tp, s.confusion.fp), (3, 1));
    // Specificity 1: only what scores above every negative.
    let sp = choose_threshold(&truth, &score, OperatingPoint::Specificity(1.0)).unwrap();
    assert!((sp.threshold - 0.75).abs() < 1e-12, "{sp:?}");
    // Sensitivity 0: nothing positive; specificity 0: everything positive.
    // The ends stand END_MARGIN beyond the extreme scores (8-decimal CSVs).
    let none = choose_threshold(&truth, &score, OperatingPoint::Sensitivity(0.0)).unwrap();
    assert_eq!((none.threshold, none.confusion.tp + none.confusion.fp), (0.9 + END_MARGIN, 0));
    let all = choose_threshold(&truth, &score, OperatingPoint::Specificity(0.0)).unwrap();
    assert_eq!((all.threshold, all.confusion.tn + all.confusion.fn_), (0.1 - END_MARGIN, 0));
    // Adjacent floats: the threshold is the lower one, not a midpoint rounded onto the upper.
    let a = 0.5f64;
    let b = a.next_down();
    let t = choose_threshold(&[true, false], &[a, b], OperatingPoint::Youden).unwrap();
    assert_eq!((t.threshold, t.confusion.tp, t.confusion.tn), (b, 1, 1));
    assert!(matches!(
        choose_threshold(&truth, &score, OperatingPoint::Sensitivity(1.5)),
        Err(CurveError::BadLevel(_))
    ));

    for (text, want) in [
        ("youden", OperatingPoint::Youden),
        ("sensitivity=0.9", OperatingPoint::Sensitivity(0.9)),
        ("specificity=0.8", OperatingPoint::Specificity(0.8)),
    ] {
        let parsed: OperatingPoint = text.parse().unwrap();
        assert_eq!(parsed, want);
        assert_eq!(parsed.to_string(), text);
    }
    for bad in ["sensitivity", "sensitivity=1.2", "recall=0.9", "youden=1", ""] {
        assert!(bad.parse::<OperatingPoint>().is_err(), "{bad} parsed");
    }
}
