//! Platt scaling: `P(y = 1 | f) = 1 / (1 + exp(A f + B))`, fitted by the
//! Newton method with backtracking of Lin, Lin & Weng (2007), "A note on
//! Platt's probabilistic outputs for support vector machines" (the
//! algorithm of libsvm's `sigmoid_train`), with Platt's smoothed targets
//! `(N₊ + 1)/(N₊ + 2)` and `1/(N₋ + 2)`.

use serde::{Deserialize, Serialize};

use crate::StackError;

/// Newton iterations at most.
const MAX_ITER: usize = 100;
/// Smallest backtracking step.
const MIN_STEP: f64 = 1e-10;
/// Hessian ridge keeping it positive definite.
const SIGMA: f64 = 1e-12;
/// Gradient components below this end the iteration.
const GRAD_TOL: f64 = 1e-5;
/// Armijo sufficient-decrease constant.
const ARMIJO: f64 = 1e-4;

/// A fitted sigmoid. Invariant: `a`, `b` finite.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlattScaling {
    pub a: f64,
    pub b: f64,
}

/// `log(1 + exp(-|z|))`-stable negative log-likelihood term.
fn nll_term(t: f64, f_ab: f64) -> f64 {
    if f_ab >= 0.0 {
        t * f_ab + (-f_ab).exp().ln_1p()
    } else {
        (t - 1.0) * f_ab + f_ab.exp().ln_1p()
    }
}

/// `(p, 1 − p)` with `p = 1 / (1 + exp(f_ab))`, computed stably.
fn p_q(f_ab: f64) -> (f64, f64) {
    if f_ab >= 0.0 {
        let e = (-f_ab).exp();
        (e / (1.0 + e), 1.0 / (1.0 + e))
    } else {
        let e = f_ab.exp();
        (1.0 / (1.0 + e), e / (1.0 + e))
    }
}

impl PlattScaling {
    /// Fits on decision values and labels (`true` = positive).
    pub fn fit(decision: &[f64], y: &[bool]) -> Result<PlattScaling, StackError> {
        if decision.len() != y.len() {
            return Err(StackError::Length {
                what: "labels",
                expected: decision.len(),
                got: y.len(),
            });
        }
        if decision.is_empty() {
            return Err(StackError::Empty);
        }
        if let Some(row) = decision.iter().position(|v| !v.is_finite()) {
            return Err(StackError::NonFinite { row, col: 0, value: decision[row] });
        }
        let prior1 = y.iter().filter(|&&t| t).count() as f64;
        let prior0 = y.len() as f64 - prior1;
        let hi = (prior1 + 1.0) / (prior1 + 2.0);
        let lo = 1.0 / (prior0 + 2.0);
        let t: Vec<f64> = y.iter().map(|&v| if v { hi } else { lo }).collect();
        let objective = |a: f64, b: f64| -> f64 {
            decision.iter().zip(&t).map(|(&f, &ti)| nll_term(ti, f * a + b)).sum()
        };
        let mut a = 0.0;
        let mut b = ((prior0 + 1.0) / (prior1 + 1.0)).ln();
        let mut fval = objective(a, b);
        for _ in 0..MAX_ITER {
            let (mut h11, mut h22, mut h21, mut g1, mut g2) = (SIGMA, SIGMA, 0.0, 0.0, 0.0);
            for (&f, &ti) in decision.iter().zip(&t) {
                let (p, q) = p_q(f * a + b);
                let d2 = p * q;
                h11 += f * f * d2;
                h22 += d2;
                h21 += f * d2;
                let d1 = ti - p;
                g1 += f * d1;
                g2 += d1;
            }
            if g1.abs() < GRAD_TOL && g2.abs() < GRAD_TOL {
                break;
            }
            let det = h11 * h22 - h21 * h21;
            let da = -(h22 * g1 - h21 * g2) / det;
            let db = -(-h21 * g1 + h11 * g2) / det;
            let gd = g1 * da + g2 * db;
            let mut step = 1.0;
            let mut accepted = false;
            while step >= MIN_STEP {
                let (na, nb) = (a + step * da, b + step * db);
                let nf = objective(na, nb);
                if nf < fval + ARMIJO * step * gd {
                    a = na;
                    b = nb;
                    fval = nf;
                    accepted = true;
                    break;
                }
                step /= 2.0;
            }
            if !accepted {
                break; // line search failed: keep the best point so far
            }
        }
        Ok(PlattScaling { a, b })
    }

    /// Probability of the positive class for decision value `f`.
    pub fn probability(&self, f: f64) -> f64 {
        p_q(f * self.a + self.b).0
    }
}
