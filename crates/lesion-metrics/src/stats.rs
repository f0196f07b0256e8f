//! Statistics for experiment reports: AUC confidence intervals and paired
//! tests (DeLong), bootstrap ROC bands, reliability diagrams, regression lines.
//!
//! Conventions, shared by every function here:
//! * `truth[i]` is `true` for a positive; scores and probabilities are
//!   `f64`s of the same length, finite (errors reuse [`CurveError`]);
//! * a higher score means "more positive"; tied scores count one half
//!   (midranks), so [`delong_auc`]'s AUC is [`crate::cls::roc_auc`]'s;
//! * confidence levels lie strictly between 0 and 1; a two-sided interval at
//!   `level` uses the normal quantile of `(1 + level) / 2` (DeLong) or the
//!   percentiles `(1 − level) / 2` and `(1 + level) / 2` (bootstrap).
//!
//! The DeLong numbers are checked to 1e-6 against an independent O(m·n)
//! implementation of the placement-value definition
//! (`tools/fixtures/stats_fixture.py` → `tests/fixtures/stats_delong.json`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use crate::cls::{validate, CurveError};

/// DeLong's variance uses sample variances (divisor `k − 1`) of the
/// placement values of each class, so each class needs two samples.
pub const DELONG_MIN_PER_CLASS: usize = 2;
/// A percentile band needs at least two replicates to have a spread.
pub const BOOTSTRAP_MIN_REPLICATES: usize = 2;
/// The FPR grid always holds its two ends, 0 and 1.
pub const BOOTSTRAP_MIN_GRID_POINTS: usize = 2;
/// [`BootstrapConfig::default`]: replicates.
pub const DEFAULT_REPLICATES: usize = 1000;
/// [`BootstrapConfig::default`]: confidence level.
pub const DEFAULT_LEVEL: f64 = 0.95;
/// [`BootstrapConfig::default`]: FPR grid points, a step of 0.01.
pub const DEFAULT_GRID_POINTS: usize = 101;
/// Pearson's R and the slope need at least this many points in [`regression`]
/// (two points always lie on a line: R = ±1 says nothing).
pub const REGRESSION_MIN_POINTS: usize = 3;

/// AUC with DeLong's variance (DeLong, DeLong & Clarke-Pearson 1988; the fast
/// midrank algorithm of Sun & Xu 2014), as pROC's `ci.auc(method = "delong")`
/// computes it.
///
/// Invariants: `0 ≤ ci_low ≤ auc ≤ ci_high ≤ 1`, `variance ≥ 0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelongAuc {
    pub auc: f64,
    pub variance: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub level: f64,
}

/// Two scores of the same images: DeLong's paired test of AUC_a = AUC_b.
///
/// `z = (auc_a − auc_b) / sqrt(var_a + var_b − 2·covariance)` and
/// `p_value = 2·Φ(−|z|)` (two-sided). When the denominator is 0 (or below 0
/// by rounding), which happens when both scores rank the samples the same
/// way (e.g. identical scores, or one a monotone transform of the other):
/// equal AUCs give `z = 0`, `p_value = 1` (no evidence of a difference);
/// different AUCs (possible only in degenerate cases such as one score
/// separating the classes perfectly and the other tying them all) give
/// `z = ±∞`, `p_value = 0`, the limit of the statistic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedDelong {
    pub auc_a: f64,
    pub auc_b: f64,
    pub var_a: f64,
    pub var_b: f64,
    pub covariance: f64,
    pub z: f64,
    /// Two-sided.
    pub p_value: f64,
}

/// Seeded, stratified bootstrap (positives and negatives resampled
/// separately, with replacement).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    pub replicates: usize,
    pub seed: u64,
    pub level: f64,
    pub grid_points: usize,
}

impl Default for BootstrapConfig {
    /// 1000 replicates, seed 0, level 0.95, 101 grid points.
    fn default() -> Self {
        BootstrapConfig {
            replicates: DEFAULT_REPLICATES,
            seed: 0,
            level: DEFAULT_LEVEL,
            grid_points: DEFAULT_GRID_POINTS,
        }
    }
}

/// Pointwise percentile band of the TPR on a fixed FPR grid, and the
/// percentile CI of the AUC.
///
/// Invariants: `fpr`, `tpr`, `tpr_low`, `tpr_high` have `grid_points`
/// entries; `fpr` is `linspace(0, 1, grid_points)`; `tpr_low ≤ tpr_high`
/// everywhere; `auc_low ≤ auc_high`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RocBand {
    pub fpr: Vec<f64>,
    /// The observed curve on the grid: at each grid FPR, the largest TPR of
    /// the ROC step curve among its points with FPR ≤ that value (the
    /// replicates use the same convention).
    pub tpr: Vec<f64>,
    pub tpr_low: Vec<f64>,
    pub tpr_high: Vec<f64>,
    pub auc_low: f64,
    pub auc_high: f64,
    pub replicates: usize,
    pub seed: u64,
    pub level: f64,
}

/// One bin of a reliability diagram: predicted probabilities in
/// `[lower, upper)` (the last bin also holds `upper = 1`).
///
/// An empty bin has `count = 0` and 0 for both means (not NaN, so that the
/// struct survives a JSON round trip); a plot should skip it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    pub mean_predicted: f64,
    pub observed_rate: f64,
}

/// Reliability diagram: equal-width bins on [0, 1] of the predicted
/// probability; expected calibration error
/// `ECE = Σ_b (n_b / n) |mean_predicted_b − observed_rate_b|` (empty bins skipped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reliability {
    pub bins: Vec<ReliabilityBin>,
    pub ece: f64,
}

/// Least-squares line `y = slope·x + intercept` and Pearson's R.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    pub slope: f64,
    pub intercept: f64,
    pub pearson_r: f64,
    pub n: usize,
}

/// Class counts after [`validate`]; errors when a class is absent.
fn class_counts(truth: &[bool], score: &[f64]) -> Result<(usize, usize), CurveError> {
    validate(truth, score)?;
    let positives = truth.iter().filter(|&&t| t).count();
    let negatives = truth.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(CurveError::SingleClass { positive: positives > 0 });
    }
    Ok((positives, negatives))
}

fn check_level(level: f64) -> Result<(), CurveError> {
    // `!(…)` so that NaN is refused too.
    if !(level > 0.0 && level < 1.0) {
        return Err(CurveError::BadConfidence(level));
    }
    Ok(())
}

/// 1-based midranks of `values`: tied values share the mean of their ranks.
fn midranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    // Values are finite (validated), so total_cmp is the numeric order.
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Sorted positions start..end hold ranks start+1 ..= end; their mean:
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// DeLong's structural components of one score (Sun & Xu 2014).
///
/// With `X` the `m` positive and `Y` the `n` negative scores and `ψ(x, y)` =
/// 1, ½, 0 for `x >`, `=`, `< y`:
/// `v10[i] = (1/n) Σ_j ψ(X_i, Y_j)` and `v01[j] = (1/m) Σ_i ψ(X_i, Y_j)`.
/// Via midranks: `v10[i] = (Tz(X_i) − Tx(X_i)) / n` and
/// `v01[j] = 1 − (Tz(Y_j) − Ty(Y_j)) / m`, where `Tz` ranks all samples,
/// `Tx` the positives only, `Ty` the negatives only.
#[derive(Debug, Clone)]
struct Components {
    v10: Vec<f64>,
    v01: Vec<f64>,
    auc: f64,
}

fn components(truth: &[bool], score: &[f64]) -> Result<Components, CurveError> {
    let (m, n) = class_counts(truth, score)?;
    for (positive, count) in [(true, m), (false, n)] {
        if count < DELONG_MIN_PER_CLASS {
            return Err(CurveError::TooFewInClass {
                positive,
                count,
                needed: DELONG_MIN_PER_CLASS,
            });
        }
    }
    let x: Vec<f64> = score.iter().zip(truth).filter(|(_, &t)| t).map(|(&s, _)| s).collect();
    let y: Vec<f64> = score.iter().zip(truth).filter(|(_, &t)| !t).map(|(&s, _)| s).collect();
    let tx = midranks(&x);
    let ty = midranks(&y);
    let z: Vec<f64> = x.iter().chain(&y).copied().collect();
    let tz = midranks(&z);
    let (mf, nf) = (m as f64, n as f64);
    // Midranks are half-integers, so the differences below are exact.
    let v10: Vec<f64> = (0..m).map(|i| (tz[i] - tx[i]) / nf).collect();
    let v01: Vec<f64> = (0..n).map(|j| 1.0 - (tz[m + j] - ty[j]) / mf).collect();
    let auc = (tz[..m].iter().sum::<f64>() - mf * (mf + 1.0) / 2.0) / (mf * nf);
    Ok(Components { v10, v01, auc })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample covariance (divisor `len − 1`); callers guarantee `len ≥ 2`.
/// The variance is `sample_cov(v, v)`, so identical inputs give bit-identical
/// variances and covariance (the paired test's zero denominator relies on it).
fn sample_cov(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    let s: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    s / (a.len() - 1) as f64
}

/// `S10_ab / m + S01_ab / n`: DeLong's covariance of two AUCs (the variance of
/// one when `a` and `b` are the same components).
fn delong_cov(a: &Components, b: &Components) -> f64 {
    sample_cov(&a.v10, &b.v10) / a.v10.len() as f64
        + sample_cov(&a.v01, &b.v01) / a.v01.len() as f64
}

/// AUC with DeLong's variance and the normal CI `auc ± z·sqrt(var)`,
/// `z = Φ⁻¹((1 + level) / 2)`, clipped to `[0, 1]`.
///
/// Errors: length mismatch, empty, non-finite score, one class only, fewer
/// than [`DELONG_MIN_PER_CLASS`] samples in a class, `level` outside (0, 1).
pub fn delong_auc(truth: &[bool], score: &[f64], level: f64) -> Result<DelongAuc, CurveError> {
    check_level(level)?;
    let c = components(truth, score)?;
    // A covariance of a vector with itself is ≥ 0 up to rounding; clamp so
    // that sqrt never sees −0 or −ε.
    let variance = delong_cov(&c, &c).max(0.0);
    let half_width = Normal::standard().inverse_cdf((1.0 + level) / 2.0) * variance.sqrt();
    Ok(DelongAuc {
        auc: c.auc,
        variance,
        ci_low: (c.auc - half_width).clamp(0.0, 1.0),
        ci_high: (c.auc + half_width).clamp(0.0, 1.0),
        level,
    })
}

/// DeLong's paired test of two scores of the same samples; see
/// [`PairedDelong`] for the statistic and its zero-denominator convention.
///
/// Errors as [`delong_auc`]; a length mismatch of `b` reports `b`'s length as
/// `score`, and a non-finite score the index in the score that holds it.
pub fn delong_paired(truth: &[bool], a: &[f64], b: &[f64]) -> Result<PairedDelong, CurveError> {
    let ca = components(truth, a)?;
    let cb = components(truth, b)?;
    let var_a = delong_cov(&ca, &ca).max(0.0);
    let var_b = delong_cov(&cb, &cb).max(0.0);
    let covariance = delong_cov(&ca, &cb);
    let denominator = var_a + var_b - 2.0 * covariance;
    let diff = ca.auc - cb.auc;
    let z = if denominator > 0.0 {
        diff / denominator.sqrt()
    } else if diff == 0.0 {
        0.0
    } else {
        f64::INFINITY.copysign(diff)
    };
    // Φ(−|z|) through the survival function: no cancellation for large |z|.
    let p_value = (2.0 * Normal::standard().sf(z.abs())).min(1.0);
    Ok(PairedDelong { auc_a: ca.auc, auc_b: cb.auc, var_a, var_b, covariance, z, p_value })
}

/// The samples sorted by decreasing score, grouped by tied score: what a ROC
/// curve of any resample needs, computed once.
struct TieGroups {
    /// Group (index into the decreasing distinct scores) of each positive,
    /// positives numbered in input order.
    group_of_positive: Vec<usize>,
    /// Same for the negatives.
    group_of_negative: Vec<usize>,
    groups: usize,
}

impl TieGroups {
    fn new(truth: &[bool], score: &[f64]) -> TieGroups {
        let mut order: Vec<usize> = (0..score.len()).collect();
        // Finite scores (validated): total_cmp is the numeric order.
        order.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
        let mut group_of = vec![0; score.len()];
        let mut groups = 0;
        for (k, &i) in order.iter().enumerate() {
            if k > 0 && score[i] != score[order[k - 1]] {
                groups += 1;
            }
            group_of[i] = groups;
        }
        let group_of_positive =
            (0..score.len()).filter(|&i| truth[i]).map(|i| group_of[i]).collect();
        let group_of_negative =
            (0..score.len()).filter(|&i| !truth[i]).map(|i| group_of[i]).collect();
        TieGroups { group_of_positive, group_of_negative, groups: groups + 1 }
    }
}

/// A ROC curve given as sample counts per tie group (decreasing score), and
/// its values on the FPR grid.
///
/// Grid convention (the observed curve and every replicate alike): the TPR at
/// grid value `g` is the largest TPR among the ROC step curve's points (after
/// each tie group, plus `(0, 0)`) whose FPR is `≤ g`. Points are monotone, so
/// that is the TPR of the last such point. A tie group that holds both classes
/// is a diagonal segment; this convention takes its lower end until the FPR
/// reaches the segment's end. `FPR ≤ g` is decided exactly, in integers:
/// `fp·(G − 1) ≤ k·n` for grid point `k` of `G`.
///
/// Returns the AUC (trapezoids, so ties count one half; summed exactly in
/// integers) and writes the grid TPRs into `tpr_on_grid`.
fn curve_on_grid(
    positives_per_group: &[u64],
    negatives_per_group: &[u64],
    m: u64,
    n: u64,
    tpr_on_grid: &mut [f64],
) -> f64 {
    let last_grid = tpr_on_grid.len().saturating_sub(1) as u128;
    let (m128, n128) = (u128::from(m), u128::from(n));
    let (mut tp, mut fp) = (0_u64, 0_u64);
    // Twice the area, in units of 1/(m·n).
    let mut twice_area: u128 = 0;
    let mut k = 0_usize;
    for (&dp, &dn) in positives_per_group.iter().zip(negatives_per_group) {
        let (new_tp, new_fp) = (tp + dp, fp + dn);
        // Grid points strictly before the new point's FPR keep the current TPR.
        while k < tpr_on_grid.len() && u128::from(new_fp) * last_grid > k as u128 * n128 {
            tpr_on_grid[k] = tp as f64 / m as f64;
            k += 1;
        }
        twice_area += u128::from(dn) * u128::from(tp + new_tp);
        tp = new_tp;
        fp = new_fp;
    }
    // The last point is (1, 1) when every count is in a group.
    for slot in &mut tpr_on_grid[k..] {
        *slot = tp as f64 / m as f64;
    }
    twice_area as f64 / (2 * m128 * n128) as f64
}

/// Quantile `q ∈ [0, 1]` of ascending `sorted` (non-empty) by linear
/// interpolation between order statistics: `h = (len − 1)·q`,
/// `x[⌊h⌋] + (h − ⌊h⌋)(x[⌊h⌋+1] − x[⌊h⌋])`; numpy's default (`method="linear"`,
/// Hyndman & Fan type 7), R's `quantile` type 7. The result is clamped to its
/// two order statistics, so it is monotone in `q` despite rounding.
fn quantile_linear(sorted: &[f64], q: f64) -> f64 {
    let last = sorted.len().saturating_sub(1);
    let h = last as f64 * q;
    let lo = (h.floor() as usize).min(last);
    let hi = (lo + 1).min(last);
    let (a, b) = (sorted[lo], sorted[hi]);
    (a + (h - lo as f64) * (b - a)).clamp(a, b)
}

/// Seeded, stratified bootstrap of the ROC curve: a pointwise percentile band
/// of the TPR on `linspace(0, 1, grid_points)` (grid convention: see
/// `curve_on_grid`: max TPR at FPR ≤ grid value) and the percentile CI of
/// the AUC, both at the percentiles `(1 − level)/2` and `(1 + level)/2`
/// (numpy's default quantile, linear interpolation: `quantile_linear`).
///
/// Reproducible bit for bit: one `ChaCha8Rng::seed_from_u64(cfg.seed)`; each
/// replicate draws `m` positives (uniform indices among the positives, in
/// input order) and then `n` negatives, with replacement, so each replicate
/// keeps the observed class sizes. `rand`'s `random_range` on `usize` is
/// portable across platforms (rand 0.9).
///
/// Errors: as [`delong_auc`] for the data (one sample per class suffices
/// here), `level` outside (0, 1), fewer than [`BOOTSTRAP_MIN_REPLICATES`]
/// replicates or [`BOOTSTRAP_MIN_GRID_POINTS`] grid points.
pub fn bootstrap_roc_band(
    truth: &[bool],
    score: &[f64],
    cfg: &BootstrapConfig,
) -> Result<RocBand, CurveError> {
    check_level(cfg.level)?;
    if cfg.replicates < BOOTSTRAP_MIN_REPLICATES {
        return Err(CurveError::TooFewReplicates {
            replicates: cfg.replicates,
            needed: BOOTSTRAP_MIN_REPLICATES,
        });
    }
    if cfg.grid_points < BOOTSTRAP_MIN_GRID_POINTS {
        return Err(CurveError::TooFewGridPoints {
            grid_points: cfg.grid_points,
            needed: BOOTSTRAP_MIN_GRID_POINTS,
        });
    }
    let (m, n) = class_counts(truth, score)?;
    let ties = TieGroups::new(truth, score);
    let grid = cfg.grid_points;
    let last_grid = (grid - 1) as f64;
    let fpr: Vec<f64> = (0..grid).map(|k| k as f64 / last_grid).collect();

    let mut pos_counts = vec![0_u64; ties.groups];
    let mut neg_counts = vec![0_u64; ties.groups];
    for &g in &ties.group_of_positive {
        pos_counts[g] += 1;
    }
    for &g in &ties.group_of_negative {
        neg_counts[g] += 1;
    }
    let mut tpr = vec![0.0; grid];
    curve_on_grid(&pos_counts, &neg_counts, m as u64, n as u64, &mut tpr);

    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    // Grid-major: replicate_tpr[k * replicates + r].
    let mut replicate_tpr = vec![0.0; grid * cfg.replicates];
    let mut replicate_auc = Vec::with_capacity(cfg.replicates);
    let mut one_curve = vec![0.0; grid];
    for r in 0..cfg.replicates {
        pos_counts.fill(0);
        neg_counts.fill(0);
        for _ in 0..m {
            pos_counts[ties.group_of_positive[rng.random_range(0..m)]] += 1;
        }
        for _ in 0..n {
            neg_counts[ties.group_of_negative[rng.random_range(0..n)]] += 1;
        }
        replicate_auc.push(curve_on_grid(
            &pos_counts,
            &neg_counts,
            m as u64,
            n as u64,
            &mut one_curve,
        ));
        for (k, &t) in one_curve.iter().enumerate() {
            replicate_tpr[k * cfg.replicates + r] = t;
        }
    }

    let (q_low, q_high) = ((1.0 - cfg.level) / 2.0, (1.0 + cfg.level) / 2.0);
    let mut tpr_low = Vec::with_capacity(grid);
    let mut tpr_high = Vec::with_capacity(grid);
    for column in replicate_tpr.chunks_mut(cfg.replicates) {
        column.sort_by(f64::total_cmp);
        tpr_low.push(quantile_linear(column, q_low));
        tpr_high.push(quantile_linear(column, q_high));
    }
    replicate_auc.sort_by(f64::total_cmp);
    Ok(RocBand {
        fpr,
        tpr,
        tpr_low,
        tpr_high,
        auc_low: quantile_linear(&replicate_auc, q_low),
        auc_high: quantile_linear(&replicate_auc, q_high),
        replicates: cfg.replicates,
        seed: cfg.seed,
        level: cfg.level,
    })
}

/// Bin of probability `p ∈ [0, 1]` among `bins` equal-width bins: bin `i` is
/// `[i/B, (i+1)/B)` with the bounds computed as `i as f64 / B as f64` (the
/// bins' `lower`/`upper`), the last bin closed at 1. `⌊p·B⌋` is only a first
/// guess: it is corrected against those bounds, so membership always agrees
/// with the reported bounds despite rounding in `p·B`.
fn bin_of(p: f64, bins: usize) -> usize {
    let b = bins as f64;
    let lower = |i: usize| i as f64 / b;
    let mut i = ((p * b).floor() as usize).min(bins - 1);
    while i > 0 && p < lower(i) {
        i -= 1;
    }
    while i + 1 < bins && p >= lower(i + 1) {
        i += 1;
    }
    i
}

/// Reliability diagram of predicted probabilities in `bins` equal-width bins
/// (`[i/B, (i+1)/B)`, the last closed at 1) and the ECE over non-empty bins.
///
/// Both classes need not be present. Errors: length mismatch, empty,
/// non-finite value, a value outside `[0, 1]`, `bins == 0`.
pub fn reliability(truth: &[bool], prob: &[f64], bins: usize) -> Result<Reliability, CurveError> {
    validate(truth, prob)?;
    if let Some((index, &value)) = prob.iter().enumerate().find(|(_, p)| !(0.0..=1.0).contains(*p))
    {
        return Err(CurveError::NotAProbability { index, value });
    }
    if bins == 0 {
        return Err(CurveError::NoBins);
    }
    let mut count = vec![0_usize; bins];
    let mut sum_prob = vec![0.0_f64; bins];
    let mut positives = vec![0_usize; bins];
    for (&t, &p) in truth.iter().zip(prob) {
        let i = bin_of(p, bins);
        count[i] += 1;
        sum_prob[i] += p;
        positives[i] += usize::from(t);
    }
    let total = prob.len() as f64;
    let b = bins as f64;
    let mut ece = 0.0;
    let mut out = Vec::with_capacity(bins);
    for i in 0..bins {
        let (mean_predicted, observed_rate) = if count[i] > 0 {
            let c = count[i] as f64;
            (sum_prob[i] / c, positives[i] as f64 / c)
        } else {
            (0.0, 0.0)
        };
        if count[i] > 0 {
            ece += count[i] as f64 / total * (mean_predicted - observed_rate).abs();
        }
        out.push(ReliabilityBin {
            lower: i as f64 / b,
            upper: (i + 1) as f64 / b,
            count: count[i],
            mean_predicted,
            observed_rate,
        });
    }
    Ok(Reliability { bins: out, ece })
}

/// Least-squares line `y = slope·x + intercept` and Pearson's R, from
/// centred sums (two passes).
///
/// `None` with fewer than [`REGRESSION_MIN_POINTS`] points, with no spread in
/// `x` or in `y` (R is 0/0), with slices of different lengths, or with a
/// non-finite value.
pub fn regression(x: &[f64], y: &[f64]) -> Option<Regression> {
    if x.len() != y.len() || x.len() < REGRESSION_MIN_POINTS {
        return None;
    }
    if x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let (mx, my) = (mean(x), mean(y));
    let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxx += dx * dx;
        syy += dy * dy;
        sxy += dx * dy;
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some(Regression {
        slope,
        intercept: my - slope * mx,
        pearson_r: (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0),
        n: x.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cls::roc_auc;

    #[test]
    fn midranks_share_tied_ranks() {
        assert_eq!(midranks(&[3.0, 1.0, 3.0, 2.0, 3.0]), vec![4.0, 1.0, 4.0, 2.0, 4.0]);
        assert_eq!(midranks(&[0.5; 4]), vec![2.5; 4]);
    }

    #[test]
    fn delong_auc_is_roc_auc_on_random_ties() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..50 {
            let len = rng.random_range(5..60);
            let truth: Vec<bool> = (0..len).map(|i| i % 3 == 0 || i == 1).collect();
            let score: Vec<f64> = (0..len).map(|_| f64::from(rng.random_range(0..5_u8))).collect();
            let d = delong_auc(&truth, &score, 0.95).unwrap();
            assert!((d.auc - roc_auc(&truth, &score).unwrap()).abs() < 1e-12);
            assert!(d.ci_low <= d.auc && d.auc <= d.ci_high);
        }
    }

    #[test]
    fn quantile_matches_numpy_linear() {
        // numpy.quantile([1, 2, 4, 8], [0, 0.25, 0.5, 0.9, 1]) = 1, 1.75, 3, 6.8, 8.
        let x = [1.0, 2.0, 4.0, 8.0];
        for (q, want) in [(0.0, 1.0), (0.25, 1.75), (0.5, 3.0), (0.9, 6.8), (1.0, 8.0)] {
            assert!((quantile_linear(&x, q) - want).abs() < 1e-12, "q={q}");
        }
        assert_eq!(quantile_linear(&[5.0], 0.3), 5.0);
    }

    #[test]
    fn grid_takes_max_tpr_at_fpr_at_most_grid_value() {
        // Groups (decreasing score): 1 positive; 1 pos + 1 neg (tie); 1 neg.
        // Points: (0,0), (0,½), (½,1), (1,1). Grid 0, ¼, ½, ¾, 1.
        let mut tpr = vec![0.0; 5];
        let auc = curve_on_grid(&[1, 1, 0], &[0, 1, 1], 2, 2, &mut tpr);
        assert_eq!(tpr, vec![0.5, 0.5, 1.0, 1.0, 1.0]);
        // Area: ½·(½ + 1)/2 + ½·1 = 0.875.
        assert!((auc - 0.875).abs() < 1e-15);
    }

    #[test]
    fn bins_follow_their_bounds() {
        assert_eq!(bin_of(0.0, 10), 0);
        assert_eq!(bin_of(0.1, 10), 1);
        assert_eq!(bin_of(0.3, 10), 3);
        assert_eq!(bin_of(0.7, 10), 7);
        assert_eq!(bin_of(1.0, 10), 9);
        assert_eq!(bin_of(0.999_999, 10), 9);
        assert_eq!(bin_of(1.0, 1), 0);
        for bins in 1..40 {
            for k in 0..=1000 {
                let p = f64::from(k) / 1000.0;
                let i = bin_of(p, bins);
                let b = bins as f64;
                assert!(p >= i as f64 / b, "{p} in {i}/{bins}");
                assert!(p < (i + 1) as f64 / b || i == bins - 1, "{p} in {i}/{bins}");
            }
        }
    }

    #[test]
    fn paired_extremes() {
        // Perfect separation against all-tied: zero variances, different AUCs.
        let truth = [true, true, false, false];
        let p = delong_paired(&truth, &[0.9, 0.8, 0.2, 0.1], &[0.5; 4]).unwrap();
        assert_eq!((p.auc_a, p.auc_b), (1.0, 0.5));
        assert_eq!(p.z, f64::INFINITY);
        assert_eq!(p.p_value, 0.0);
        let same = delong_paired(&truth, &[0.9, 0.3, 0.5, 0.1], &[0.9, 0.3, 0.5, 0.1]).unwrap();
        assert_eq!((same.z, same.p_value), (0.0, 1.0));
    }
}
