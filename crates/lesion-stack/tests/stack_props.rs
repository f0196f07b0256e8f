//! Group k-fold properties, the C search, preprocessing, and the stacking
//! helpers.

use std::collections::{HashMap, HashSet};

use lesion_stack::cv::{
    cross_val_decision, draw_log2_c, group_k_fold, search_c, SearchConfig, LOG2_C_MAX, LOG2_C_MIN,
};
use lesion_stack::meta::log2_odds;
use lesion_stack::pipeline::{CalibratedSvm, PipelineConfig, SvmPipeline};
use lesion_stack::preprocess::{Pca, Standardizer};
use lesion_stack::svm::{LinearSvm, SvmParams};
use lesion_stack::{FeatureMatrix, StackError};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

proptest! {
    #[test]
    fn group_k_fold_partitions(groups in proptest::collection::vec(0u16..40, 1..300), k in 2usize..8) {
        let distinct: HashSet<u16> = groups.iter().copied().collect();
        let folds = match group_k_fold(&groups, k) {
            Err(StackError::TooFewGroups { groups: g, folds }) => {
                prop_assert!(g < folds && g == distinct.len());
                return Ok(());
            }
            r => r.unwrap(),
        };
        prop_assert_eq!(folds.len(), k);
        let mut seen = vec![0usize; groups.len()];
        let mut fold_of_group: HashMap<u16, usize> = HashMap::new();
        for (f, fold) in folds.iter().enumerate() {
            prop_assert!(!fold.test.is_empty());
            prop_assert_eq!(fold.train.len() + fold.test.len(), groups.len());
            let test: HashSet<usize> = fold.test.iter().copied().collect();
            prop_assert!(fold.train.iter().all(|i| !test.contains(i)));
            for &i in &fold.test {
                seen[i] += 1;
                let prev = fold_of_group.insert(groups[i], f);
                prop_assert!(prev.is_none() || prev == Some(f), "group split across folds");
            }
        }
        prop_assert!(seen.iter().all(|&c| c == 1), "every sample in exactly one test fold");
        // Balance: greedy largest-first keeps fold sizes within the largest group size.
        let largest = groups.iter().fold(HashMap::new(), |mut m, g| { *m.entry(g).or_insert(0usize) += 1; m })
            .into_values().max().unwrap_or(0);
        let sizes: Vec<usize> = folds.iter().map(|f| f.test.len()).collect();
        prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= largest);
        // Deterministic.
        prop_assert_eq!(group_k_fold(&groups, k).unwrap(), folds);
    }
}

/// Replicated two-class data: `images` images, `replicas` rows each.
fn replicated(
    images: usize,
    replicas: usize,
    d: usize,
    seed: u64,
) -> (FeatureMatrix, Vec<bool>, Vec<String>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut rows, mut y, mut g) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..images {
        let label = i % 3 == 0;
        let centre: Vec<f64> = (0..d)
            .map(|j| if label && j < 2 { 1.0 } else { 0.0 } + rng.random::<f64>() - 0.5)
            .collect();
        for _ in 0..replicas {
            rows.push(
                centre.iter().map(|c| c + 0.1 * (rng.random::<f64>() - 0.5)).collect::<Vec<f64>>(),
            );
            y.push(label);
            g.push(format!("ISIC_{i:04}"));
        }
    }
    (FeatureMatrix::from_rows(&rows).unwrap(), y, g)
}

#[test]
fn search_is_seeded_and_in_range() {
    let (x, y, g) = replicated(60, 4, 5, 7);
    let cfg = SearchConfig { draws: 6, folds: 4, seed: 11, ..SearchConfig::default() };
    let a = search_c(&x, &y, &g, &cfg).unwrap();
    let b = search_c(&x, &y, &g, &cfg).unwrap();
    assert_eq!(a, b, "deterministic");
    assert_eq!(a.candidates.len(), 6);
    for c in &a.candidates {
        assert!((LOG2_C_MIN..LOG2_C_MAX).contains(&c.log2_c));
        assert_eq!(c.fold_aucs.len(), 4);
        assert!(a.best.mean_auc >= c.mean_auc);
    }
    assert!(a.best.mean_auc > 0.8, "{}", a.best.mean_auc);
    let other = draw_log2_c(&SearchConfig { seed: 12, ..cfg }).unwrap();
    assert_ne!(other, draw_log2_c(&cfg).unwrap());
}

/// The search solves each fold's draws as one warm-started path; its result must not depend
/// on how many threads run the folds.
#[test]
fn search_does_not_depend_on_threads() {
    let (x, y, g) = replicated(80, 2, 40, 5);
    let cfg = SearchConfig { draws: 9, folds: 5, seed: 3, ..SearchConfig::default() };
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| search_c(&x, &y, &g, &cfg).unwrap())
    };
    assert_eq!(run(1), run(3));
}

/// What the warm-started path promises: every fit meets the stopping rule
/// `‖∇f‖ ≤ ε‖∇f(0)‖`, and since the objective is strongly convex with modulus 1 a point that
/// meets it is within `(ε‖∇f(0)‖)² / 2` of the minimum, so no warm fit is worse than a cold
/// one by more than that. At small `C` the bound is tight, so there the two are the same
/// minimiser. Nearly separable data (more features than images), where large `C` is slow
/// for a cold start: the case the path exists for.
#[test]
fn warm_path_meets_the_cold_fits_rule_and_bound() {
    let (x, y, _) = replicated(60, 1, 80, 9);
    let config = PipelineConfig::default();
    let log2_cs = [3.0, -12.0, -6.0, -2.0, 0.0, 8.0, 14.0];
    let cs: Vec<f64> = log2_cs.iter().map(|l: &f64| l.exp2()).collect();
    let path = SvmPipeline::fit_path(&x, &y, &config, &cs).unwrap();
    let z = path[0].transform(&x).unwrap();
    let (pos, n) = (y.iter().filter(|&&t| t).count(), y.len());
    let eps = config.svm.tol * pos.min(n - pos) as f64 / n as f64;
    for (model, &c) in path.iter().zip(&cs) {
        assert_eq!(model.svm.n_features(), 80);
        assert!(model.svm.converged, "C={c}: the warm fit did not meet the rule");
        let params = SvmParams::with_c(c);
        let cold = LinearSvm::fit(&z, &y, &params).unwrap();
        // ∇f(0) = −2C Σ yᵢ x̃ᵢ (every sample is inside the margin at w = 0).
        let mut g0 = vec![0.0; 81];
        for (row, &t) in z.iter_rows().zip(&y) {
            let s = if t { 1.0 } else { -1.0 };
            for (g, v) in g0.iter_mut().zip(row.iter().chain(std::iter::once(&1.0))) {
                *g -= 2.0 * c * s * v;
            }
        }
        let bound = (eps * g0.iter().map(|g| g * g).sum::<f64>().sqrt()).powi(2) / 2.0;
        let f = |m: &LinearSvm| LinearSvm::objective(&m.weights, m.intercept, &z, &y, &params);
        let (fw, fc) = (f(&model.svm), f(&cold));
        assert!(fw <= fc + bound + 1e-12 * fc, "C={c}: warm {fw} > cold {fc} + {bound}");
        if c <= 2f64.powi(-6) {
            assert!((fw - fc).abs() <= 1e-6 * fc, "C={c}: warm {fw} cold {fc}");
        }
    }
}

/// A start that already meets the stopping rule is not taken: the fit is the cold one, bit
/// for bit (iterations included); so is the first fit of a path.
#[test]
fn a_start_that_meets_the_rule_gives_the_cold_fit() {
    let (x, y, _) = replicated(60, 1, 80, 9);
    let config = PipelineConfig::default();
    let z = SvmPipeline::fit(&x, &y, &config).unwrap().transform(&x).unwrap();
    let large = SvmParams::with_c(2f64.powi(14));
    let cold = LinearSvm::fit(&z, &y, &large).unwrap();
    assert!(cold.converged && cold.meets_rule(&z, &y, &large).unwrap());
    assert_eq!(LinearSvm::fit_from(&z, &y, &large, Some(&cold)).unwrap(), cold);
    let none = SvmParams { max_iter: 0, ..large };
    let small = LinearSvm::fit(&z, &y, &SvmParams::with_c(2f64.powi(-12))).unwrap();
    assert_eq!(
        LinearSvm::fit_from(&z, &y, &none, Some(&small)).unwrap(),
        LinearSvm::fit(&z, &y, &none).unwrap(),
        "max_iter = 0: no warm start"
    );
    // A path of two: the first fit is cold; the second is cold exactly when the first
    // solution meets its rule (then no stepping stones are walked either).
    let (c1, c2) = (2f64.powi(12), 2f64.powi(16));
    let path = SvmPipeline::fit_path(&x, &y, &config, &[c2, c1]).unwrap();
    assert_eq!(path[1].svm, LinearSvm::fit(&z, &y, &SvmParams::with_c(c1)).unwrap());
    let met = path[1].svm.meets_rule(&z, &y, &SvmParams::with_c(c2)).unwrap();
    assert!(met, "the test needs a large C whose rule the previous solution meets");
    assert_eq!(path[0].svm, LinearSvm::fit(&z, &y, &SvmParams::with_c(c2)).unwrap());
}

#[test]
fn warm_start_of_another_width_is_refused() {
    let (x, y, _) = replicated(30, 1, 4, 1);
    let narrow =
        FeatureMatrix::from_rows(&(0..30).map(|i| vec![i as f64]).collect::<Vec<_>>()).unwrap();
    let start = LinearSvm::fit(&narrow, &y, &SvmParams::default()).unwrap();
    let err = LinearSvm::fit_from(&x, &y, &SvmParams::default(), Some(&start)).unwrap_err();
    assert!(matches!(err, StackError::Width { expected: 4, got: 1 }), "{err:?}");
}

#[test]
fn calibrated_svm_gives_probabilities() {
    let (x, y, g) = replicated(60, 3, 4, 3);
    let model = CalibratedSvm::fit(
        &x,
        &y,
        &g,
        5,
        &PipelineConfig { pca_components: Some(3), ..PipelineConfig::default() },
    )
    .unwrap();
    let p = model.predict_proba(&x).unwrap();
    assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
    let mean_pos = p.iter().zip(&y).filter(|(_, &t)| t).map(|(v, _)| v).sum::<f64>() / 60.0;
    let mean_neg = p.iter().zip(&y).filter(|(_, &t)| !t).map(|(v, _)| v).sum::<f64>() / 120.0;
    assert!(mean_pos > mean_neg);
    let oof = cross_val_decision(&x, &y, &g, 5, &PipelineConfig::default()).unwrap();
    assert_eq!(oof.len(), x.rows());
}

#[test]
fn svm_input_errors() {
    let x = FeatureMatrix::from_rows(&[vec![0.0, 1.0], vec![1.0, 0.0]]).unwrap();
    assert_eq!(
        LinearSvm::fit(&x, &[true, true], &SvmParams::default()),
        Err(StackError::SingleClass { positive: true })
    );
    assert!(matches!(
        LinearSvm::fit(&x, &[true], &SvmParams::default()),
        Err(StackError::Length { .. })
    ));
    assert!(matches!(
        LinearSvm::fit(&x, &[true, false], &SvmParams::with_c(0.0)),
        Err(StackError::Param { name: "c", .. })
    ));
    assert!(matches!(
        FeatureMatrix::new(1, 2, vec![0.0, f64::NAN]),
        Err(StackError::NonFinite { row: 0, col: 1, .. })
    ));
    assert!(matches!(
        FeatureMatrix::from_rows(&[vec![0.0], vec![1.0, 2.0]]),
        Err(StackError::Ragged { row: 1, .. })
    ));
    let svm = LinearSvm::fit(&x, &[true, false], &SvmParams::default()).unwrap();
    let wide = FeatureMatrix::from_rows(&[vec![0.0, 1.0, 2.0]]).unwrap();
    assert!(matches!(svm.decision_function(&wide), Err(StackError::Width { expected: 2, got: 3 })));
}

#[test]
fn standardizer_and_pca() {
    let x = FeatureMatrix::from_rows(&[
        vec![1.0, 5.0, 2.0],
        vec![3.0, 5.0, 0.0],
        vec![5.0, 5.0, 1.0],
        vec![7.0, 5.0, 3.0],
    ])
    .unwrap();
    let s = Standardizer::fit(&x).unwrap();
    let z = s.transform(&x).unwrap();
    for j in 0..3 {
        let col: Vec<f64> = z.iter_rows().map(|r| r[j]).collect();
        let mean = col.iter().sum::<f64>() / 4.0;
        assert!(mean.abs() < 1e-12);
        let var = col.iter().map(|v| v * v).sum::<f64>() / 4.0;
        assert!(if j == 1 { var == 0.0 } else { (var - 1.0).abs() < 1e-12 }, "col {j}: {var}");
    }
    let pca = Pca::fit(&x, 2).unwrap();
    for (a, ca) in pca.components.iter().enumerate() {
        for (b, cb) in pca.components.iter().enumerate() {
            let d: f64 = ca.iter().zip(cb).map(|(u, v)| u * v).sum();
            assert!((d - if a == b { 1.0 } else { 0.0 }).abs() < 1e-10);
        }
    }
    assert!(pca.explained_variance[0] >= pca.explained_variance[1]);
    let p = pca.transform(&x).unwrap();
    let var0 = p.iter_rows().map(|r| r[0] * r[0]).sum::<f64>() / 3.0;
    assert!((var0 - pca.explained_variance[0]).abs() < 1e-9);
    assert!(Pca::fit(&x, 4).is_err());
}

#[test]
fn log2_odds_clips() {
    assert_eq!(log2_odds(0.5), 0.0);
    assert!((log2_odds(0.8) - 2.0).abs() < 1e-12);
    let top = ((1.0 - 1e-5) / 1e-5f64).log2();
    assert!((log2_odds(1.0) - top).abs() < 1e-9);
    assert!((log2_odds(0.0) + top).abs() < 1e-9);
    assert_eq!(log2_odds(-3.0), log2_odds(0.0));
    assert_eq!(log2_odds(7.0), log2_odds(1.0));
    assert!(log2_odds(f64::NAN).is_nan());
}
