//! Optional feature transforms fitted on training rows only.

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use crate::matrix::FeatureMatrix;
use crate::StackError;

/// Standard deviations at or below this are treated as 0 (constant feature),
/// and such features are only centred, like scikit-learn's `StandardScaler`.
const MIN_SCALE: f64 = 1e-12;

/// Per-feature centring and scaling: `(x − mean) / std`, population std
/// (ddof = 0), constant features left unscaled.
///
/// Invariant: `mean.len() == scale.len()`, every `scale > 0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
}

impl Standardizer {
    /// Fits on the rows of `x` (needs at least one row).
    pub fn fit(x: &FeatureMatrix) -> Result<Standardizer, StackError> {
        if x.rows() == 0 {
            return Err(StackError::Empty);
        }
        let n = x.rows() as f64;
        let mut mean = vec![0.0; x.cols()];
        for r in x.iter_rows() {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; x.cols()];
        for r in x.iter_rows() {
            for ((s, v), m) in var.iter_mut().zip(r).zip(&mean) {
                *s += (v - m) * (v - m);
            }
        }
        let scale = var
            .iter()
            .map(|s| {
                let sd = (s / n).sqrt();
                if sd > MIN_SCALE {
                    sd
                } else {
                    1.0
                }
            })
            .collect();
        Ok(Standardizer { mean, scale })
    }

    /// Applies the transform.
    pub fn transform(&self, x: &FeatureMatrix) -> Result<FeatureMatrix, StackError> {
        if x.cols() != self.mean.len() {
            return Err(StackError::Width { expected: self.mean.len(), got: x.cols() });
        }
        Ok(x.map_rows(x.cols(), |r, out| {
            for (((o, v), m), s) in out.iter_mut().zip(r).zip(&self.mean).zip(&self.scale) {
                *o = (v - m) / s;
            }
        }))
    }
}

/// Principal component projection (no whitening): `(x − mean) · Vₖ`, with
/// `Vₖ` the top `k` right singular vectors of the centred training matrix.
///
/// Invariants: `components` holds `k` unit vectors of `mean.len()` values,
/// orthogonal, ordered by decreasing explained variance; each is signed so
/// that its largest-magnitude entry is positive (deterministic output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pca {
    pub mean: Vec<f64>,
    /// `k` rows of `mean.len()` values.
    pub components: Vec<Vec<f64>>,
    /// Variance (ddof = 1) along each component.
    pub explained_variance: Vec<f64>,
}

impl Pca {
    /// Fits `k` components; `1 <= k <= min(rows, cols)`.
    pub fn fit(x: &FeatureMatrix, k: usize) -> Result<Pca, StackError> {
        let (n, d) = (x.rows(), x.cols());
        if k == 0 || k > n.min(d) {
            return Err(StackError::Param {
                name: "pca_components",
                value: k as f64,
                reason: "must be in 1..=min(samples, features)",
            });
        }
        let mut mean = vec![0.0; d];
        for r in x.iter_rows() {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let centred = DMatrix::from_fn(n, d, |i, j| x.row(i)[j] - mean[j]);
        let svd = centred.svd(false, true);
        let v_t = svd.v_t.ok_or(StackError::Param {
            name: "pca_components",
            value: k as f64,
            reason: "SVD did not return right singular vectors",
        })?;
        let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
        order.sort_by(|&a, &b| svd.singular_values[b].total_cmp(&svd.singular_values[a]));
        let denom = (n.max(2) - 1) as f64;
        let mut components = Vec::with_capacity(k);
        let mut explained_variance = Vec::with_capacity(k);
        for &c in order.iter().take(k) {
            let mut v: Vec<f64> = v_t.row(c).iter().copied().collect();
            let pivot = v.iter().copied().max_by(|a, b| a.abs().total_cmp(&b.abs())).unwrap_or(0.0);
            if pivot < 0.0 {
                v.iter_mut().for_each(|e| *e = -*e);
            }
            components.push(v);
            let s = svd.singular_values[c];
            explained_variance.push(s * s / denom);
        }
        Ok(Pca { mean, components, explained_variance })
    }

    /// Projects rows onto the components.
    pub fn transform(&self, x: &FeatureMatrix) -> Result<FeatureMatrix, StackError> {
        if x.cols() != self.mean.len() {
            return Err(StackError::Width { expected: self.mean.len(), got: x.cols() });
        }
        let mut centred = vec![0.0; x.cols()];
        Ok(x.map_rows(self.components.len(), |r, out| {
            for ((c, v), m) in centred.iter_mut().zip(r).zip(&self.mean) {
                *c = v - m;
            }
            for (o, comp) in out.iter_mut().zip(&self.components) {
                *o = crate::matrix::dot(&centred, comp);
            }
        }))
    }
}
