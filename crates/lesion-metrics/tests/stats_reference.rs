//! `lesion_metrics::stats` against the independent reference of
//! `tools/fixtures/stats_fixture.py` (`tests/fixtures/stats_delong.json`:
//! DeLong by the O(m·n) placement-value definition, paired test, reliability
//! bins and ECE, numpy's least-squares line), plus the bootstrap's properties
//! and the error cases.

use std::path::Path;

use lesion_metrics::cls::{roc_auc, roc_curve, CurveError};
use lesion_metrics::stats::{
    bootstrap_roc_band, delong_auc, delong_paired, regression, reliability, BootstrapConfig,
    Regression, Reliability, RocBand,
};
use serde::Deserialize;

/// Agreement required with the Python reference.
const TOLERANCE: f64 = 1e-6;
/// The bootstrap percentile CI of the AUC vs DeLong's normal CI (n = 300).
const BOOTSTRAP_VS_DELONG: f64 = 0.03;
/// Share of grid points where the band must contain the observed curve.
const MIN_BAND_COVERAGE: f64 = 0.95;

#[derive(Deserialize)]
struct Ci {
    level: f64,
    low: f64,
    high: f64,
}

#[derive(Deserialize)]
struct DelongCase {
    name: String,
    truth: Vec<bool>,
    score: Vec<f64>,
    positives: usize,
    negatives: usize,
    auc: f64,
    variance: f64,
    ci: Vec<Ci>,
}

#[derive(Deserialize)]
struct PairedCase {
    name: String,
    truth: Vec<bool>,
    a: Vec<f64>,
    b: Vec<f64>,
    auc_a: f64,
    auc_b: f64,
    var_a: f64,
    var_b: f64,
    covariance: f64,
    z: f64,
    p_value: f64,
}

#[derive(Deserialize)]
struct ReliabilityResult {
    n_bins: usize,
    #[serde(flatten)]
    result: Reliability,
}

#[derive(Deserialize)]
struct ReliabilityCase {
    name: String,
    truth: Vec<bool>,
    prob: Vec<f64>,
    results: Vec<ReliabilityResult>,
}

#[derive(Deserialize)]
struct RegressionCase {
    name: String,
    x: Vec<f64>,
    y: Vec<f64>,
    result: Option<Regression>,
}

#[derive(Deserialize)]
struct Fixture {
    delong: Vec<DelongCase>,
    paired: Vec<PairedCase>,
    reliability: Vec<ReliabilityCase>,
    regression: Vec<RegressionCase>,
}

fn fixture() -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stats_delong.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn close(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= TOLERANCE, "{what}: got {got}, reference {want}");
}

fn case<'a>(f: &'a Fixture, name: &str) -> &'a DelongCase {
    f.delong.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no case {name}"))
}

#[test]
fn fixture_covers_the_required_cases() {
    let f = fixture();
    assert!(f.delong.len() >= 5);
    let tied = case(&f, "all_tied");
    assert!(tied.score.iter().all(|&s| s == tied.score[0]));
    let ties = case(&f, "ties_one_decimal");
    assert!(ties.score.iter().all(|s| (s * 10.0 - (s * 10.0).round()).abs() < 1e-9));
    let unbalanced = case(&f, "unbalanced_3_vs_40");
    assert_eq!((unbalanced.positives, unbalanced.negatives), (3, 40));
    assert!(case(&f, "n300").score.len() >= 300);
    assert!(f.paired.iter().any(|p| p.name == "correlated"));
}

#[test]
fn delong_matches_placement_reference() {
    let f = fixture();
    for c in &f.delong {
        let n = &c.name;
        assert_eq!(c.truth.iter().filter(|&&t| t).count(), c.positives, "{n}");
        assert!(c.ci.len() >= 2, "{n}");
        for ci in &c.ci {
            let d = delong_auc(&c.truth, &c.score, ci.level).unwrap();
            close(&format!("{n} auc"), d.auc, c.auc);
            close(&format!("{n} variance"), d.variance, c.variance);
            close(&format!("{n} ci_low@{}", ci.level), d.ci_low, ci.low);
            close(&format!("{n} ci_high@{}", ci.level), d.ci_high, ci.high);
            assert_eq!(d.level, ci.level);
        }
    }
}

#[test]
fn delong_auc_is_roc_auc() {
    let f = fixture();
    let scores = f
        .delong
        .iter()
        .map(|c| (&c.truth, &c.score))
        .chain(f.paired.iter().flat_map(|p| [(&p.truth, &p.a), (&p.truth, &p.b)]));
    for (truth, score) in scores {
        let d = delong_auc(truth, score, 0.95).unwrap();
        let r = roc_auc(truth, score).unwrap();
        assert!((d.auc - r).abs() <= 1e-12, "delong {} vs roc_auc {r}", d.auc);
    }
}

#[test]
fn paired_matches_placement_reference() {
    let f = fixture();
    assert!(f.paired.len() >= 2);
    for c in &f.paired {
        let n = &c.name;
        let p = delong_paired(&c.truth, &c.a, &c.b).unwrap();
        close(&format!("{n} auc_a"), p.auc_a, c.auc_a);
        close(&format!("{n} auc_b"), p.auc_b, c.auc_b);
        close(&format!("{n} var_a"), p.var_a, c.var_a);
        close(&format!("{n} var_b"), p.var_b, c.var_b);
        close(&format!("{n} covariance"), p.covariance, c.covariance);
        close(&format!("{n} z"), p.z, c.z);
        close(&format!("{n} p"), p.p_value, c.p_value);
        // The paired variances are the single-score DeLong variances.
        close(
            &format!("{n} var_a vs delong_auc"),
            delong_auc(&c.truth, &c.a, 0.95).unwrap().variance,
            p.var_a,
        );
    }
    // Identical rankings: the documented zero-denominator convention.
    let same = f.paired.iter().find(|c| c.name == "same_ranking").unwrap();
    let p = delong_paired(&same.truth, &same.a, &same.b).unwrap();
    assert_eq!((p.z, p.p_value), (0.0, 1.0));
    let p = delong_paired(&same.truth, &same.a, &same.a).unwrap();
    assert_eq!((p.z, p.p_value, p.var_a, p.covariance), (0.0, 1.0, p.var_b, p.var_a));
}

#[test]
fn reliability_matches_reference() {
    let f = fixture();
    assert!(!f.reliability.is_empty());
    for c in &f.reliability {
        for want in &c.results {
            let n = format!("{} bins={}", c.name, want.n_bins);
            let got = reliability(&c.truth, &c.prob, want.n_bins).unwrap();
            assert_eq!(got.bins.len(), want.n_bins, "{n}");
            assert_eq!(got.bins.len(), want.result.bins.len(), "{n}");
            for (i, (g, w)) in got.bins.iter().zip(&want.result.bins).enumerate() {
                assert_eq!(g.count, w.count, "{n} bin {i} count");
                close(&format!("{n} bin {i} lower"), g.lower, w.lower);
                close(&format!("{n} bin {i} upper"), g.upper, w.upper);
                close(&format!("{n} bin {i} mean"), g.mean_predicted, w.mean_predicted);
                close(&format!("{n} bin {i} rate"), g.observed_rate, w.observed_rate);
            }
            close(&format!("{n} ece"), got.ece, want.result.ece);
            assert_eq!(got.bins.iter().map(|b| b.count).sum::<usize>(), c.prob.len(), "{n}");
        }
    }
}

#[test]
fn regression_matches_numpy() {
    let f = fixture();
    assert!(f.regression.iter().any(|c| c.result.is_none()));
    for c in &f.regression {
        let got = regression(&c.x, &c.y);
        match (&got, &c.result) {
            (Some(g), Some(w)) => {
                close(&format!("{} slope", c.name), g.slope, w.slope);
                close(&format!("{} intercept", c.name), g.intercept, w.intercept);
                close(&format!("{} r", c.name), g.pearson_r, w.pearson_r);
                assert_eq!(g.n, w.n, "{}", c.name);
            }
            (None, None) => {}
            _ => panic!("{}: got {got:?}, numpy {:?}", c.name, c.result),
        }
    }
}

fn band(truth: &[bool], score: &[f64], seed: u64) -> RocBand {
    bootstrap_roc_band(truth, score, &BootstrapConfig { seed, ..BootstrapConfig::default() })
        .unwrap()
}

#[test]
fn bootstrap_is_reproducible_and_seeded() {
    let f = fixture();
    let c = case(&f, "ties_one_decimal");
    let a = band(&c.truth, &c.score, 11);
    let b = band(&c.truth, &c.score, 11);
    assert_eq!(a, b);
    // Bit for bit, not only within PartialEq's float equality.
    let bits = |r: &RocBand| {
        r.tpr_low
            .iter()
            .chain(&r.tpr_high)
            .chain([&r.auc_low, &r.auc_high])
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&a), bits(&b));
    let other = band(&c.truth, &c.score, 12);
    assert_ne!(a, other);
    assert_eq!(a.tpr, other.tpr, "the observed curve does not depend on the seed");
    assert_eq!((a.seed, other.seed, a.replicates, a.level), (11, 12, 1000, 0.95));
}

#[test]
fn bootstrap_band_on_300_samples() {
    let f = fixture();
    let c = case(&f, "n300");
    let cfg = BootstrapConfig::default();
    let r = bootstrap_roc_band(&c.truth, &c.score, &cfg).unwrap();
    let d = delong_auc(&c.truth, &c.score, cfg.level).unwrap();
    assert!(
        (r.auc_low - d.ci_low).abs() <= BOOTSTRAP_VS_DELONG
            && (r.auc_high - d.ci_high).abs() <= BOOTSTRAP_VS_DELONG,
        "bootstrap [{}, {}] vs DeLong [{}, {}]",
        r.auc_low,
        r.auc_high,
        d.ci_low,
        d.ci_high
    );
    assert!(r.auc_low < d.auc && d.auc < r.auc_high);

    let g = cfg.grid_points;
    assert_eq!((r.fpr.len(), r.tpr.len(), r.tpr_low.len(), r.tpr_high.len()), (g, g, g, g));
    for (k, &x) in r.fpr.iter().enumerate() {
        assert!((x - k as f64 / (g - 1) as f64).abs() < 1e-15);
    }
    assert_eq!((r.fpr[0], r.fpr[g - 1]), (0.0, 1.0));
    assert!(r.tpr_low.iter().zip(&r.tpr_high).all(|(l, h)| l <= h));
    let inside = (0..g).filter(|&k| r.tpr_low[k] <= r.tpr[k] && r.tpr[k] <= r.tpr_high[k]).count();
    assert!(
        inside as f64 >= MIN_BAND_COVERAGE * g as f64,
        "band holds the observed curve at {inside}/{g} grid points"
    );
    // The band is not degenerate on this data.
    assert!(r.tpr_low.iter().zip(&r.tpr_high).filter(|(l, h)| h > l).count() > g / 2);

    // The observed curve on the grid: max TPR of the ROC step curve at FPR <= grid value.
    let roc = roc_curve(&c.truth, &c.score).unwrap();
    for (k, &x) in r.fpr.iter().enumerate() {
        let want = roc
            .fpr
            .iter()
            .zip(&roc.tpr)
            .filter(|(fp, _)| **fp <= x)
            .map(|(_, tp)| *tp)
            .fold(0.0_f64, f64::max);
        assert_eq!(r.tpr[k], want, "grid point {k} (fpr {x})");
    }
}

#[test]
fn results_survive_json() {
    let f = fixture();
    let c = case(&f, "unbalanced_3_vs_40");
    let r = bootstrap_roc_band(
        &c.truth,
        &c.score,
        &BootstrapConfig { replicates: 50, grid_points: 11, ..BootstrapConfig::default() },
    )
    .unwrap();
    let back: RocBand = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    // Reliability with empty bins (probabilities only near 0 and 1).
    let rel = reliability(&[true, false, true], &[0.95, 0.02, 1.0], 10).unwrap();
    assert_eq!(rel.bins.iter().filter(|b| b.count == 0).count(), 8);
    let back: Reliability = serde_json::from_str(&serde_json::to_string(&rel).unwrap()).unwrap();
    assert_eq!(back, rel);
}

#[test]
fn errors() {
    let t = [true, false, true, false];
    let s = [0.9, 0.1, 0.8, 0.3];
    let cfg = BootstrapConfig::default();

    let mismatch = CurveError::LengthMismatch { truth: 4, score: 3 };
    assert_eq!(delong_auc(&t, &s[..3], 0.95), Err(mismatch.clone()));
    assert_eq!(delong_paired(&t, &s, &s[..3]), Err(mismatch.clone()));
    assert_eq!(delong_paired(&t, &s[..3], &s), Err(mismatch.clone()));
    assert_eq!(bootstrap_roc_band(&t, &s[..3], &cfg), Err(mismatch.clone()));
    assert_eq!(reliability(&t, &s[..3], 10), Err(mismatch));
    assert_eq!(regression(&s, &s[..3]), None);

    let all_pos = [true; 4];
    let single = CurveError::SingleClass { positive: true };
    assert_eq!(delong_auc(&all_pos, &s, 0.95), Err(single.clone()));
    assert_eq!(delong_paired(&all_pos, &s, &s), Err(single.clone()));
    assert_eq!(bootstrap_roc_band(&all_pos, &s, &cfg), Err(single));
    assert_eq!(delong_auc(&[false; 4], &s, 0.95), Err(CurveError::SingleClass { positive: false }));

    let nan = [0.9, f64::NAN, 0.8, 0.3];
    assert!(matches!(delong_auc(&t, &nan, 0.95), Err(CurveError::NonFinite { index: 1, .. })));
    assert!(matches!(delong_paired(&t, &s, &nan), Err(CurveError::NonFinite { index: 1, .. })));
    assert!(matches!(
        bootstrap_roc_band(&t, &nan, &cfg),
        Err(CurveError::NonFinite { index: 1, .. })
    ));
    assert!(matches!(reliability(&t, &nan, 10), Err(CurveError::NonFinite { index: 1, .. })));
    assert_eq!(regression(&nan, &s), None);
    assert!(matches!(
        delong_auc(&t, &[0.9, f64::INFINITY, 0.8, 0.3], 0.95),
        Err(CurveError::NonFinite { index: 1, .. })
    ));

    assert_eq!(delong_auc(&[], &[], 0.95), Err(CurveError::Empty));
    assert_eq!(reliability(&[], &[], 10), Err(CurveError::Empty));

    // One positive: DeLong's sample variance is undefined; the bootstrap works.
    let one_pos = [true, false, false, false];
    assert_eq!(
        delong_auc(&one_pos, &s, 0.95),
        Err(CurveError::TooFewInClass { positive: true, count: 1, needed: 2 })
    );
    assert!(bootstrap_roc_band(&one_pos, &s, &cfg).is_ok());

    for level in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
        assert!(matches!(delong_auc(&t, &s, level), Err(CurveError::BadConfidence(_))), "{level}");
        let bad = BootstrapConfig { level, ..cfg.clone() };
        assert!(matches!(bootstrap_roc_band(&t, &s, &bad), Err(CurveError::BadConfidence(_))));
    }
    let few = BootstrapConfig { replicates: 1, ..cfg.clone() };
    assert_eq!(
        bootstrap_roc_band(&t, &s, &few),
        Err(CurveError::TooFewReplicates { replicates: 1, needed: 2 })
    );
    let flat = BootstrapConfig { grid_points: 1, ..cfg.clone() };
    assert_eq!(
        bootstrap_roc_band(&t, &s, &flat),
        Err(CurveError::TooFewGridPoints { grid_points: 1, needed: 2 })
    );

    assert_eq!(reliability(&t, &s, 0), Err(CurveError::NoBins));
    assert_eq!(
        reliability(&t, &[0.9, 1.2, 0.8, 0.3], 10),
        Err(CurveError::NotAProbability { index: 1, value: 1.2 })
    );
    assert_eq!(
        reliability(&t, &[0.9, 0.1, -0.0001, 0.3], 10),
        Err(CurveError::NotAProbability { index: 2, value: -0.0001 })
    );
    // Both classes are not needed for a reliability diagram.
    assert!(reliability(&[true; 4], &s, 10).is_ok());
}
