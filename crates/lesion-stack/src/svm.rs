//! Binary linear SVM: liblinear's L2-regularised L2-loss (squared hinge)
//! primal, solved by trust-region Newton (TRON, Lin & Moré 1999; liblinear's
//! `tron.cpp` with `l2r_l2_svc_fun`).
//!
//! Objective, with `x̃ = [x, s]` (`s` = [`SvmParams::intercept_scaling`]) and
//! `y ∈ {−1, +1}`:
//!
//! `f(w̃) = ½‖w̃‖² + C Σᵢ max(0, 1 − yᵢ w̃ᵀx̃ᵢ)²`
//!
//! The bias weight is part of `w̃` and therefore regularised, exactly as in
//! liblinear/scikit-learn; `intercept = s · w̃_bias`. The objective is
//! strictly convex, so the minimiser is unique; TRON stops when
//! `‖∇f‖ ≤ ε · max(min(#pos, #neg), 1) / n · ‖∇f(0)‖` (liblinear's
//! `primal_solver_tol` with `ε` = [`SvmParams::tol`]), or after
//! [`SvmParams::max_iter`] Newton iterations.

use serde::{Deserialize, Serialize};

use crate::matrix::{dot, FeatureMatrix};
use crate::StackError;

/// scikit-learn `LinearSVC` default `tol`.
pub const DEFAULT_TOL: f64 = 1e-4;
/// scikit-learn `LinearSVC` default `max_iter`.
pub const DEFAULT_MAX_ITER: usize = 1000;
/// scikit-learn `LinearSVC` default `intercept_scaling`.
pub const DEFAULT_INTERCEPT_SCALING: f64 = 1.0;

// TRON constants (liblinear tron.cpp).
/// Actual/predicted reduction ratios that shrink or grow the trust region.
const ETA0: f64 = 1e-4;
const ETA1: f64 = 0.25;
const ETA2: f64 = 0.75;
/// Trust-region update factors.
const SIGMA1: f64 = 0.25;
const SIGMA2: f64 = 0.5;
const SIGMA3: f64 = 4.0;
/// CG stops when the residual falls below this fraction of `‖g‖`.
const CG_REL_TOL: f64 = 0.1;
/// Relative reduction below which the iteration is considered stalled.
const STALL_REL: f64 = 1e-12;
/// Objective below this means divergence (cannot happen for this convex loss).
const F_FLOOR: f64 = -1.0e32;

/// Hyper-parameters of [`LinearSvm::fit`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SvmParams {
    /// Loss weight `C > 0`.
    pub c: f64,
    /// Relative gradient tolerance `ε > 0` (liblinear `eps`).
    pub tol: f64,
    /// Maximum Newton iterations.
    pub max_iter: usize,
    /// Value of the synthetic bias feature; `0` fits no intercept.
    pub intercept_scaling: f64,
}

impl Default for SvmParams {
    fn default() -> Self {
        SvmParams {
            c: 1.0,
            tol: DEFAULT_TOL,
            max_iter: DEFAULT_MAX_ITER,
            intercept_scaling: DEFAULT_INTERCEPT_SCALING,
        }
    }
}

impl SvmParams {
    /// Default parameters with the given `C`.
    pub fn with_c(c: f64) -> SvmParams {
        SvmParams { c, ..SvmParams::default() }
    }

    fn validate(&self) -> Result<(), StackError> {
        let bad = |name, value, reason| Err(StackError::Param { name, value, reason });
        if !(self.c.is_finite() && self.c > 0.0) {
            return bad("c", self.c, "must be finite and > 0");
        }
        if !(self.tol.is_finite() && self.tol > 0.0) {
            return bad("tol", self.tol, "must be finite and > 0");
        }
        if !(self.intercept_scaling.is_finite() && self.intercept_scaling >= 0.0) {
            return bad("intercept_scaling", self.intercept_scaling, "must be finite and >= 0");
        }
        Ok(())
    }
}

/// A fitted linear SVM. `decision(x) = weights·x + intercept`; positive
/// means the `true` class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearSvm {
    /// One weight per feature.
    pub weights: Vec<f64>,
    /// `intercept_scaling × bias weight`.
    pub intercept: f64,
    /// Newton iterations taken.
    pub iterations: usize,
    /// Whether the gradient tolerance was met (otherwise `max_iter` or a
    /// stall ended the solve).
    pub converged: bool,
}

/// Problem data for the objective, laid out as liblinear does so that
/// floating-point sums run in the same order: samples are permuted to
/// negatives first, then positives (each in input order), as scikit-learn's
/// liblinear `group_classes` does; reductions are sequential.
struct L2SvcFun<'a> {
    x: &'a FeatureMatrix,
    /// Sample index of each position.
    order: Vec<usize>,
    /// ±1 label of each position.
    y: Vec<f64>,
    c: f64,
    bias: f64,
    /// `yᵢ w̃ᵀx̃ᵢ` per position, from the last [`Self::fun`] call.
    z: Vec<f64>,
    /// Positions with `z < 1`, from the last [`Self::grad`] call.
    active: Vec<usize>,
}

impl<'a> L2SvcFun<'a> {
    /// The objective of `(x, y)` under `params` after checking them, with the stopping rule's
    /// `ε` (liblinear's `primal_solver_tol`).
    fn checked(
        x: &'a FeatureMatrix,
        y: &[bool],
        params: &SvmParams,
    ) -> Result<(L2SvcFun<'a>, f64), StackError> {
        params.validate()?;
        if x.rows() == 0 {
            return Err(StackError::Empty);
        }
        if y.len() != x.rows() {
            return Err(StackError::Length { what: "labels", expected: x.rows(), got: y.len() });
        }
        let pos = y.iter().filter(|&&t| t).count();
        let neg = y.len() - pos;
        if pos == 0 || neg == 0 {
            return Err(StackError::SingleClass { positive: pos > 0 });
        }
        let eps = params.tol * pos.min(neg).max(1) as f64 / y.len() as f64;
        Ok((L2SvcFun::new(x, y, params.c, params.intercept_scaling), eps))
    }

    /// `f(w)` and `∇f(w)`; afterwards the cached margins belong to `w`.
    fn at(&mut self, w: &[f64]) -> (f64, Vec<f64>) {
        let f = self.fun(w);
        let mut g = vec![0.0; w.len()];
        self.grad(w, &mut g);
        (f, g)
    }

    fn new(x: &'a FeatureMatrix, labels: &[bool], c: f64, bias: f64) -> L2SvcFun<'a> {
        let order: Vec<usize> = (0..labels.len())
            .filter(|&i| !labels[i])
            .chain((0..labels.len()).filter(|&i| labels[i]))
            .collect();
        let y = order.iter().map(|&i| if labels[i] { 1.0 } else { -1.0 }).collect();
        L2SvcFun { x, z: vec![0.0; order.len()], order, y, c, bias, active: Vec::new() }
    }

    /// `w̃ᵀx̃` of the sample at position `k`; `v` has `cols + 1` entries.
    fn xv(&self, v: &[f64], k: usize) -> f64 {
        let d = self.x.cols();
        let mut acc = 0.0;
        for (vj, xj) in v[..d].iter().zip(self.x.row(self.order[k])) {
            acc += vj * xj;
        }
        if self.bias > 0.0 {
            acc += v[d] * self.bias;
        }
        acc
    }

    /// `acc += coef · x̃` of the sample at position `k`.
    fn axpy_row(&self, coef: f64, k: usize, acc: &mut [f64]) {
        let d = self.x.cols();
        for (aj, xj) in acc[..d].iter_mut().zip(self.x.row(self.order[k])) {
            *aj += coef * xj;
        }
        if self.bias > 0.0 {
            acc[d] += coef * self.bias;
        }
    }

    /// Objective value; caches the margins for [`Self::grad`].
    fn fun(&mut self, w: &[f64]) -> f64 {
        let mut f = 0.0;
        for wi in w {
            f += wi * wi;
        }
        f /= 2.0;
        for k in 0..self.order.len() {
            let zk = self.y[k] * self.xv(w, k);
            self.z[k] = zk;
            let d = 1.0 - zk;
            if d > 0.0 {
                f += self.c * d * d;
            }
        }
        f
    }

    /// Gradient at the point of the last [`Self::fun`] call, into `g`;
    /// records the active set for [`Self::hv`].
    fn grad(&mut self, w: &[f64], g: &mut [f64]) {
        g.iter_mut().for_each(|v| *v = 0.0);
        self.active.clear();
        for k in 0..self.order.len() {
            if self.z[k] < 1.0 {
                self.active.push(k);
                let coef = self.c * self.y[k] * (self.z[k] - 1.0);
                self.axpy_row(coef, k, g);
            }
        }
        for (gi, wi) in g.iter_mut().zip(w) {
            *gi = wi + 2.0 * *gi;
        }
    }

    /// Generalised Hessian-vector product `s + 2C X̃_Iᵀ X̃_I s`.
    fn hv(&self, s: &[f64], out: &mut [f64]) {
        out.iter_mut().for_each(|v| *v = 0.0);
        for &k in &self.active {
            let coef = self.c * self.xv(s, k);
            self.axpy_row(coef, k, out);
        }
        for (oi, si) in out.iter_mut().zip(s) {
            *oi = si + 2.0 * *oi;
        }
    }
}

fn norm(v: &[f64]) -> f64 {
    dot(v, v).sqrt()
}

/// Truncated conjugate gradient for `H s = −g` within `‖s‖ ≤ delta`
/// (liblinear `TRON::trcg`). Returns the step `s` and residual `r = −g − Hs`.
fn trcg(fun: &L2SvcFun<'_>, delta: f64, g: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n = g.len();
    let mut s = vec![0.0; n];
    let mut r: Vec<f64> = g.iter().map(|v| -v).collect();
    let mut d = r.clone();
    let mut hd = vec![0.0; n];
    let cgtol = CG_REL_TOL * norm(g);
    let mut rtr = dot(&r, &r);
    // CG converges in at most n steps in exact arithmetic; cap for safety.
    for _ in 0..(2 * n + 10) {
        if rtr.sqrt() <= cgtol {
            break;
        }
        fun.hv(&d, &mut hd);
        let dhd = dot(&d, &hd);
        if dhd <= 0.0 {
            break; // H is positive definite; guard against round-off only
        }
        let mut alpha = rtr / dhd;
        for (si, di) in s.iter_mut().zip(&d) {
            *si += alpha * di;
        }
        if norm(&s) > delta {
            // Step back and move to the trust-region boundary.
            for (si, di) in s.iter_mut().zip(&d) {
                *si -= alpha * di;
            }
            let std = dot(&s, &d);
            let sts = dot(&s, &s);
            let dtd = dot(&d, &d);
            let dsq = delta * delta;
            let rad = (std * std + dtd * (dsq - sts)).max(0.0).sqrt();
            alpha = if std >= 0.0 { (dsq - sts) / (std + rad) } else { (rad - std) / dtd };
            for (si, di) in s.iter_mut().zip(&d) {
                *si += alpha * di;
            }
            for (ri, hi) in r.iter_mut().zip(&hd) {
                *ri -= alpha * hi;
            }
            break;
        }
        for (ri, hi) in r.iter_mut().zip(&hd) {
            *ri -= alpha * hi;
        }
        let rnew = dot(&r, &r);
        let beta = rnew / rtr;
        for (di, ri) in d.iter_mut().zip(&r) {
            *di = beta * *di + ri;
        }
        rtr = rnew;
    }
    (s, r)
}

impl LinearSvm {
    /// Fits on rows of `x` with labels `y` (`true` = positive class).
    ///
    /// Errors: empty data, length mismatch, single-class labels, invalid
    /// parameters.
    pub fn fit(x: &FeatureMatrix, y: &[bool], params: &SvmParams) -> Result<LinearSvm, StackError> {
        LinearSvm::fit_from(x, y, params, None)
    }

    /// [`Self::fit`] started from `start`'s weights instead of zero (a warm start, as
    /// liblinear's `-C` search does), under the same stopping rule (`‖∇f(0)‖` is still taken
    /// at zero). A start that already meets the rule for this `C` is not taken: the fit
    /// would stop at once at a point that says no more about this `C`'s minimiser than the
    /// rule's slack allows (at large `C`, where `‖∇f(0)‖` grows with `C`, a smaller `C`'s
    /// solution), so the fit starts from zero and is exactly [`Self::fit`]; so it is with
    /// `max_iter = 0`. A warm result therefore always came from a start that did not meet
    /// the rule (it may still stop at `max_iter`, unconverged, as a cold fit may).
    /// `start` must have this data's width.
    pub fn fit_from(
        x: &FeatureMatrix,
        y: &[bool],
        params: &SvmParams,
        start: Option<&LinearSvm>,
    ) -> Result<LinearSvm, StackError> {
        let (mut fun, eps) = L2SvcFun::checked(x, y, params)?;
        let n = x.cols() + 1;
        let mut w = vec![0.0; n];
        let (mut f, mut g) = fun.at(&w);
        let gnorm0 = norm(&g);
        if let Some(start) = start.filter(|_| params.max_iter > 0) {
            let w_start = start.augmented(x.cols(), params)?;
            let (f_start, g_start) = fun.at(&w_start);
            if norm(&g_start) > eps * gnorm0 {
                (w, g, f) = (w_start, g_start, f_start);
            } else {
                // Restores the margins `fun` caches for w = 0: the cold fit, exactly.
                (f, g) = fun.at(&w);
            }
        }
        let mut delta = norm(&g);
        let mut converged = norm(&g) <= eps * gnorm0;
        let mut iter = 1;
        let mut w_new = vec![0.0; n];
        while iter <= params.max_iter && !converged {
            let (s, r) = trcg(&fun, delta, &g);
            for ((wn, wi), si) in w_new.iter_mut().zip(&w).zip(&s) {
                *wn = wi + si;
            }
            let gs = dot(&g, &s);
            let prered = -0.5 * (gs - dot(&s, &r));
            let fnew = fun.fun(&w_new);
            // Like liblinear, the cached margins now belong to `w_new`;
            // they are only read by `grad`, which runs after acceptance.
            let actred = f - fnew;
            let snorm = norm(&s);
            if iter == 1 {
                delta = delta.min(snorm);
            }
            let alpha = if fnew - f - gs <= 0.0 {
                SIGMA3
            } else {
                SIGMA1.max(-0.5 * (gs / (fnew - f - gs)))
            };
            delta = if actred < ETA0 * prered {
                (alpha.max(SIGMA1) * snorm).min(SIGMA2 * delta)
            } else if actred < ETA1 * prered {
                (SIGMA1 * delta).max((alpha * snorm).min(SIGMA2 * delta))
            } else if actred < ETA2 * prered {
                (SIGMA1 * delta).max((alpha * snorm).min(SIGMA3 * delta))
            } else {
                delta.max((alpha * snorm).min(SIGMA3 * delta))
            };
            if actred > ETA0 * prered {
                iter += 1;
                std::mem::swap(&mut w, &mut w_new);
                f = fnew;
                fun.grad(&w, &mut g);
                if norm(&g) <= eps * gnorm0 {
                    converged = true;
                    break;
                }
            }
            if f < F_FLOOR {
                break;
            }
            if actred.abs() <= 0.0 && prered <= 0.0 {
                break;
            }
            if actred.abs() <= STALL_REL * f.abs() && prered.abs() <= STALL_REL * f.abs() {
                break;
            }
        }
        let bias_w = w.pop().unwrap_or(0.0);
        Ok(LinearSvm {
            weights: w,
            intercept: bias_w * params.intercept_scaling,
            iterations: iter - 1,
            converged,
        })
    }

    /// `[weights, bias weight]`, the solver's variable, for data of `cols` features.
    fn augmented(&self, cols: usize, params: &SvmParams) -> Result<Vec<f64>, StackError> {
        if self.weights.len() != cols {
            return Err(StackError::Width { expected: cols, got: self.weights.len() });
        }
        let mut w = self.weights.clone();
        w.push(if params.intercept_scaling > 0.0 {
            self.intercept / params.intercept_scaling
        } else {
            0.0
        });
        Ok(w)
    }

    /// Whether these weights already meet the stopping rule of a fit on `(x, y)` under
    /// `params` (then [`Self::fit_from`] would not start from them).
    pub fn meets_rule(
        &self,
        x: &FeatureMatrix,
        y: &[bool],
        params: &SvmParams,
    ) -> Result<bool, StackError> {
        let (mut fun, eps) = L2SvcFun::checked(x, y, params)?;
        let gnorm0 = norm(&fun.at(&vec![0.0; x.cols() + 1]).1);
        let w = self.augmented(x.cols(), params)?;
        Ok(norm(&fun.at(&w).1) <= eps * gnorm0)
    }

    /// Number of features the model expects.
    pub fn n_features(&self) -> usize {
        self.weights.len()
    }

    /// Decision value of one sample (`row.len()` must equal
    /// [`Self::n_features`]; extra values are ignored, missing ones count 0).
    pub fn decision_row(&self, row: &[f64]) -> f64 {
        dot(&self.weights, row) + self.intercept
    }

    /// Decision values of every row.
    pub fn decision_function(&self, x: &FeatureMatrix) -> Result<Vec<f64>, StackError> {
        if x.cols() != self.n_features() {
            return Err(StackError::Width { expected: self.n_features(), got: x.cols() });
        }
        Ok(x.iter_rows().map(|r| self.decision_row(r)).collect())
    }

    /// The primal objective `f` of these weights on `(x, y)` (for checking
    /// optimality against another solver's solution).
    pub fn objective(
        weights: &[f64],
        intercept: f64,
        x: &FeatureMatrix,
        y: &[bool],
        params: &SvmParams,
    ) -> f64 {
        let bias_w =
            if params.intercept_scaling > 0.0 { intercept / params.intercept_scaling } else { 0.0 };
        let reg = 0.5 * (dot(weights, weights) + bias_w * bias_w);
        let loss: f64 = x
            .iter_rows()
            .zip(y)
            .map(|(r, &t)| {
                let s = if t { 1.0 } else { -1.0 };
                let d = 1.0 - s * (dot(weights, r) + intercept);
                if d > 0.0 {
                    d * d
                } else {
                    0.0
                }
            })
            .sum();
        reg + params.c * loss
    }
}
