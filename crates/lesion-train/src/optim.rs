//! Adam with its state in the open, so that a checkpoint holds the moments and step count and
//! a resumed run continues exactly where it stopped (torch's C++ optimiser state is not
//! reachable through tch). Update rule as `torch.optim.Adam` (no weight decay, no amsgrad).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, no_grad, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// Adam's per-variable first and second moments, keyed by var-store name.
pub struct Adam {
    pub cfg: AdamConfig,
    pub step: i64,
    pub m: BTreeMap<String, Tensor>,
    pub v: BTreeMap<String, Tensor>,
}

impl Adam {
    pub fn new(cfg: AdamConfig) -> Self {
        Self { cfg, step: 0, m: BTreeMap::new(), v: BTreeMap::new() }
    }

    /// Zero the gradients of every trainable variable.
    pub fn zero_grad(vs: &VarStore) {
        for mut t in vs.trainable_variables() {
            t.zero_grad();
        }
    }

    /// One update of every trainable variable that has a gradient.
    pub fn step(&mut self, vs: &VarStore) {
        self.step += 1;
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        let step_size = c.lr / bc1;
        for_each_gradient(vs, c.weight_decay, |name, p, g| {
            let m = self.m.entry(name.clone()).or_insert_with(|| p.zeros_like());
            let _ = m.g_mul_scalar_(c.beta1).g_add_(&(g * (1.0 - c.beta1)));
            let v = self.v.entry(name).or_insert_with(|| p.zeros_like());
            let _ = v.g_mul_scalar_(c.beta2).g_add_(&(g * g * (1.0 - c.beta2)));
            let denom = (&*v / bc2).sqrt() + c.eps;
            let _ = p.g_sub_(&(&*m / denom * step_size));
        });
    }
}

/// Calls `update(name, param, grad)` under `no_grad` for every variable that requires grad and
/// has a gradient, with L2 weight decay folded into the gradient (`g + wd·p`, as
/// torch.optim's `weight_decay`): the walk every optimiser here shares.
pub fn for_each_gradient(vs: &VarStore, weight_decay: f64, mut update: impl FnMut(String, &mut Tensor, &Tensor)) {
    no_grad(|| {
        for (name, mut p) in vs.variables() {
            if !p.requires_grad() {
                continue;
            }
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let g = if weight_decay > 0.0 { &g + &p * weight_decay } else { g };
            update(name, &mut p, &g);
        }
    });
}

/// A step schedule: `lr · factor^⌊epoch / every⌋` (`every` = 0: constant).
pub fn step_decay(lr: f64, factor: f64, every: usize, epoch: usize) -> f64 {
    if every == 0 {
        return lr;
    }
    lr * factor.powi((epoch / every) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    /// Two steps of our Adam equal the closed form of torch.optim.Adam on a quadratic.
    #[test]
    fn matches_reference_adam_update() {
        let vs = VarStore::new(Device::Cpu);
        let x = vs.root().var("x", &[3], nn::Init::Const(1.0));
        let mut opt = Adam::new(AdamConfig { lr: 0.1, ..Default::default() });
        let (b1, b2, eps, lr) = (0.9f64, 0.999f64, 1e-8f64, 0.1f64);
        let (mut m, mut v, mut xr) = (0.0f64, 0.0f64, 1.0f64);
        for t in 1..=3 {
            Adam::zero_grad(&vs);
            (&x * &x).sum(Kind::Float).backward();
            opt.step(&vs);
            let g = 2.0 * xr;
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            let mhat = m / (1.0 - b1.powi(t));
            let vhat = v / (1.0 - b2.powi(t));
            xr -= lr * mhat / (vhat.sqrt() + eps);
            let got = x.double_value(&[0]);
            assert!((got - xr).abs() < 1e-6, "step {t}: {got} vs {xr}");
        }
        assert_eq!(opt.step, 3);
    }
}
