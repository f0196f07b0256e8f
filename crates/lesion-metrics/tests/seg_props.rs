//! Property tests of the metric definitions.

use lesion_metrics::seg::{Confusion, SegScores, THRESHOLD_JACCARD};
use proptest::prelude::*;

fn in_unit(x: f64) -> bool {
    (0.0..=1.0).contains(&x)
}

proptest! {
    #[test]
    fn metrics_in_unit_interval(tp in 0u64..10_000, tn in 0u64..10_000, fp in 0u64..10_000, fn_ in 0u64..10_000) {
        prop_assume!(tp + tn + fp + fn_ > 0);
        let s = SegScores::from_confusion(&Confusion { tp, tn, fp, fn_ });
        for x in [s.accuracy, s.sensitivity, s.specificity, s.jaccard, s.threshold_jaccard, s.dice] {
            prop_assert!(in_unit(x), "{s:?}");
        }
        // d = 2j / (1 + j)
        prop_assert!((s.dice - 2.0 * s.jaccard / (1.0 + s.jaccard)).abs() < 1e-12);
        prop_assert!(s.threshold_jaccard == 0.0 || (s.threshold_jaccard == s.jaccard && s.jaccard >= THRESHOLD_JACCARD));
        prop_assert!(s.dice >= s.jaccard);
    }

    #[test]
    fn swap_truth_and_prediction(masks in proptest::collection::vec((any::<u8>(), any::<u8>()), 1..400)) {
        let (truth, pred): (Vec<u8>, Vec<u8>) = masks.into_iter().unzip();
        let a = SegScores::from_confusion(&Confusion::from_masks(&truth, &pred));
        let b = SegScores::from_confusion(&Confusion::from_masks(&pred, &truth));
        // Jaccard, dice and accuracy are symmetric; sensitivity of one is the PPV of the other.
        prop_assert_eq!(a.jaccard, b.jaccard);
        prop_assert_eq!(a.dice, b.dice);
        prop_assert_eq!(a.accuracy, b.accuracy);
        // Identical masks score perfectly.
        let same = SegScores::from_confusion(&Confusion::from_masks(&truth, &truth));
        prop_assert_eq!(same.jaccard, 1.0);
        prop_assert_eq!(same.dice, 1.0);
        prop_assert_eq!(same.accuracy, 1.0);
        // Complementing both masks swaps sensitivity and specificity.
        let bt: Vec<bool> = truth.iter().map(|&v| v > 128).collect();
        let bp: Vec<bool> = pred.iter().map(|&v| v > 128).collect();
        let nt: Vec<bool> = bt.iter().map(|v| !v).collect();
        let np: Vec<bool> = bp.iter().map(|v| !v).collect();
        let c = Confusion::from_bool(&bt, &bp);
        prop_assert_eq!(c, Confusion::from_masks(&truth, &pred));
        let s = SegScores::from_confusion(&c);
        let n = SegScores::from_confusion(&Confusion::from_bool(&nt, &np));
        prop_assert_eq!(s.sensitivity, n.specificity);
        prop_assert_eq!(s.specificity, n.sensitivity);
    }

    #[test]
    fn mean_is_within_bounds(js in proptest::collection::vec((0u64..50, 0u64..50, 0u64..50, 1u64..50), 1..20)) {
        let all: Vec<SegScores> = js.iter().map(|&(tp, tn, fp, fn_)| SegScores::from_confusion(&Confusion { tp, tn, fp, fn_ })).collect();
        let m = SegScores::mean(&all);
        let lo = all.iter().map(|s| s.jaccard).fold(f64::INFINITY, f64::min);
        let hi = all.iter().map(|s| s.jaccard).fold(f64::NEG_INFINITY, f64::max);
        prop_assert!(m.jaccard >= lo - 1e-12 && m.jaccard <= hi + 1e-12);
    }
}

#[test]
fn threshold_edges() {
    let j = |tp: u64, fp_fn: u64| {
        SegScores::from_confusion(&Confusion { tp, tn: 5, fp: fp_fn, fn_: 0 })
    };
    assert_eq!(j(65, 35).threshold_jaccard, 0.65);
    assert_eq!(j(64, 36).threshold_jaccard, 0.0);
    let empty = SegScores::from_confusion(&Confusion { tp: 0, tn: 10, fp: 0, fn_: 0 });
    assert_eq!((empty.jaccard, empty.dice, empty.sensitivity), (1.0, 1.0, 1.0));
    let full = SegScores::from_confusion(&Confusion { tp: 10, tn: 0, fp: 0, fn_: 0 });
    assert_eq!(full.specificity, 1.0);
    assert!(SegScores::mean(&[]).jaccard.is_nan());
}
