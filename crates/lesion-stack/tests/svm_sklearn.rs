//! Agreement of the linear SVM and Platt scaling with scikit-learn
//! (`LinearSVC(loss='squared_hinge', dual=False)`, `_sigmoid_calibration`) on
//! the data sets of `tools/fixtures/make_svm_fixtures.py`.

use std::path::Path;

use lesion_metrics::cls::roc_auc;
use lesion_stack::platt::PlattScaling;
use lesion_stack::svm::{LinearSvm, SvmParams};
use lesion_stack::FeatureMatrix;
use serde::Deserialize;

/// Required Pearson correlation of decision values (issue acceptance).
const MIN_CORRELATION: f64 = 0.999;
/// Required ROC AUC agreement (issue acceptance).
const AUC_TOLERANCE: f64 = 1e-4;
/// Our objective may exceed sklearn's by at most this relative amount
/// (both solvers stop at the same relative-gradient tolerance).
const OBJECTIVE_REL_TOLERANCE: f64 = 1e-4;
/// Platt probabilities must agree to this.
const PLATT_TOLERANCE: f64 = 1e-4;

#[derive(Deserialize)]
struct Fit {
    log2_c: i32,
    c: f64,
    coef: Vec<f64>,
    intercept: f64,
    decision: Vec<f64>,
    auc: f64,
}

#[derive(Deserialize)]
struct Platt {
    log2_c: i32,
    a: f64,
    b: f64,
}

#[derive(Deserialize)]
struct DataSet {
    name: String,
    n: usize,
    d: usize,
    x_scale: f64,
    x_int: Vec<i64>,
    y: Vec<u8>,
    fits: Vec<Fit>,
    platt: Option<Platt>,
}

const DATA_SETS: [&str; 4] = ["separable", "noisy", "imbalanced", "deep256"];

fn load(name: &str) -> (DataSet, FeatureMatrix, Vec<bool>) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/svm/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ds: DataSet =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let data = ds.x_int.iter().map(|&q| q as f64 * ds.x_scale).collect();
    let x = FeatureMatrix::new(ds.n, ds.d, data).unwrap();
    let y = ds.y.iter().map(|&v| v == 1).collect();
    (ds, x, y)
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

#[test]
fn linear_svm_matches_liblinear() {
    let mut checked = 0;
    for name in DATA_SETS {
        let (ds, x, y) = load(name);
        for fit in &ds.fits {
            let params = SvmParams::with_c(fit.c);
            let svm = LinearSvm::fit(&x, &y, &params).unwrap();
            let dec = svm.decision_function(&x).unwrap();
            let r = pearson(&dec, &fit.decision);
            let auc = roc_auc(&y, &dec).unwrap();
            let ours = LinearSvm::objective(&svm.weights, svm.intercept, &x, &y, &params);
            let theirs = LinearSvm::objective(&fit.coef, fit.intercept, &x, &y, &params);
            let max_abs =
                dec.iter().zip(&fit.decision).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            eprintln!(
                "{} log2C={:>3}: r={:.9} auc {:.6} vs {:.6} obj {:.9e} vs {:.9e} max|Δdec|={:.2e} iters={} conv={}",
                ds.name, fit.log2_c, r, auc, fit.auc, ours, theirs, max_abs, svm.iterations, svm.converged
            );
            assert!(r >= MIN_CORRELATION, "{} log2C={}: correlation {r}", ds.name, fit.log2_c);
            assert!(
                (auc - fit.auc).abs() <= AUC_TOLERANCE,
                "{} log2C={}: auc {auc} vs {}",
                ds.name,
                fit.log2_c,
                fit.auc
            );
            assert!(
                ours <= theirs * (1.0 + OBJECTIVE_REL_TOLERANCE),
                "{} log2C={}: objective {ours} vs sklearn {theirs}",
                ds.name,
                fit.log2_c
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 28);
}

#[test]
fn platt_matches_sklearn_sigmoid_calibration() {
    for name in DATA_SETS {
        let (ds, _x, y) = load(name);
        let Some(p) = &ds.platt else { continue };
        let fit = ds.fits.iter().find(|f| f.log2_c == p.log2_c).unwrap();
        let platt = PlattScaling::fit(&fit.decision, &y).unwrap();
        eprintln!("{name}: A {} vs {}, B {} vs {}", platt.a, p.a, platt.b, p.b);
        for &f in &fit.decision {
            let want = 1.0 / (1.0 + (p.a * f + p.b).exp());
            let got = platt.probability(f);
            assert!((got - want).abs() <= PLATT_TOLERANCE, "{name}: f={f}: {got} vs {want}");
        }
    }
}
