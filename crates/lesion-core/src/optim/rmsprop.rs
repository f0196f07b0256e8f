//! RMSProp as TensorFlow's `RMSPropOptimizer` (the paper's recipe: decay 0.9, momentum 0.9,
//! epsilon 1.0, learning rate 0.01 × 0.94 every 2 epochs, L2 weight decay 4e-5), with its state
//! in the open so that checkpoints hold it and `--resume` continues exactly.
//!
//! Update, per variable p with gradient g (weight decay folded in: g ← g + wd·p):
//! `ms ← decay·ms + (1 − decay)·g²` (ms starts at 1, as in TF),
//! `mom ← momentum·mom + lr·g / √(ms + eps)`, `p ← p − mom`.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Tensor};

/// TF's initial value of the mean square.
pub const MS_INIT: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RmsPropConfig {
    pub lr: f64,
    pub decay: f64,
    pub momentum: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// The learning rate is multiplied by `lr_decay` every `lr_decay_epochs` epochs
    /// (0 disables the schedule).
    pub lr_decay: f64,
    pub lr_decay_epochs: usize,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        Self {
            lr: 0.01,
            decay: 0.9,
            momentum: 0.9,
            eps: 1.0,
            weight_decay: 4e-5,
            lr_decay: 0.94,
            lr_decay_epochs: 2,
        }
    }
}

impl RmsPropConfig {
    /// The scheduled learning rate of (0-based) `epoch`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        crate::optim::step_decay(self.lr, self.lr_decay, self.lr_decay_epochs, epoch)
    }
}

/// RMSProp state: mean squares and momenta keyed by var-store name.
pub struct RmsProp {
    pub cfg: RmsPropConfig,
    /// The learning rate of the current epoch (set by the trainer from the schedule).
    pub lr: f64,
    pub step: i64,
    pub ms: BTreeMap<String, Tensor>,
    pub mom: BTreeMap<String, Tensor>,
}

impl RmsProp {
    pub fn new(cfg: RmsPropConfig) -> Self {
        Self { cfg, lr: cfg.lr, step: 0, ms: BTreeMap::new(), mom: BTreeMap::new() }
    }

    /// One update of every trainable variable that has a gradient.
    pub(crate) fn rms_step(&mut self, vs: &VarStore) {
        self.step += 1;
        let c = self.cfg;
        let lr = self.lr;
        crate::optim::for_each_gradient(vs, c.weight_decay, |name, p, g| {
            let ms = self.ms.entry(name.clone()).or_insert_with(|| p.ones_like() * MS_INIT);
            let _ = ms.g_mul_scalar_(c.decay).g_add_(&(g * g * (1.0 - c.decay)));
            let upd = g * lr / (&*ms + c.eps).sqrt();
            let mom = self.mom.entry(name).or_insert_with(|| p.zeros_like());
            let _ = mom.g_mul_scalar_(c.momentum).g_add_(&upd);
            let _ = p.g_sub_(mom);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    /// Three steps equal TF's closed form on a quadratic.
    #[test]
    fn matches_tf_rmsprop_update() {
        let vs = VarStore::new(Device::Cpu);
        let x = vs.root().var("x", &[2], nn::Init::Const(1.5));
        let cfg = RmsPropConfig { weight_decay: 0.1, ..Default::default() };
        let mut opt = RmsProp::new(cfg);
        let (mut ms, mut mom, mut xr) = (1.0f64, 0.0f64, 1.5f64);
        for t in 1..=3 {
            crate::optim::zero_grad(&vs);
            (&x * &x).sum(Kind::Float).backward();
            crate::optim::Optimizer::step(&mut opt, &vs);
            let g = 2.0 * xr + 0.1 * xr;
            ms = 0.9 * ms + 0.1 * g * g;
            mom = 0.9 * mom + 0.01 * g / (ms + 1.0).sqrt();
            xr -= mom;
            let got = x.double_value(&[0]);
            assert!((got - xr).abs() < 1e-6, "step {t}: {got} vs {xr}");
        }
    }

    #[test]
    fn schedule() {
        let c = RmsPropConfig::default();
        assert_eq!(c.lr_at(0), 0.01);
        assert_eq!(c.lr_at(1), 0.01);
        assert!((c.lr_at(2) - 0.0094).abs() < 1e-12);
        assert!((c.lr_at(5) - 0.01 * 0.94f64.powi(2)).abs() < 1e-12);
    }
}
