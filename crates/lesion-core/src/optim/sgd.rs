//! SGD with momentum as `torch.optim.SGD` (dampening 0), L2 weight decay folded into the
//! gradient, optional Nesterov, and a step schedule; its momentum buffers are in the open so
//! that checkpoints hold them and `--resume` continues exactly.
//!
//! Per variable p with gradient g: `g ← g + wd·p`; `buf ← g` on the first step, then
//! `buf ← momentum·buf + g`; `d ← g + momentum·buf` (Nesterov) or `d ← buf`; `p ← p − lr·d`.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    /// The learning rate is multiplied by `lr_decay` every `lr_decay_epochs` epochs
    /// (0 disables the schedule).
    pub lr_decay: f64,
    pub lr_decay_epochs: usize,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 0.01,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 1e-4,
            lr_decay: 0.1,
            lr_decay_epochs: 0,
        }
    }
}

impl SgdConfig {
    /// The scheduled learning rate of (0-based) `epoch`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        crate::optim::step_decay(self.lr, self.lr_decay, self.lr_decay_epochs, epoch)
    }
}

/// SGD state: momentum buffers keyed by var-store name.
pub struct Sgd {
    pub cfg: SgdConfig,
    /// The learning rate of the current epoch (set by the trainer from the schedule).
    pub lr: f64,
    pub step: i64,
    pub buf: BTreeMap<String, Tensor>,
}

impl Sgd {
    pub fn new(cfg: SgdConfig) -> Self {
        Self { cfg, lr: cfg.lr, step: 0, buf: BTreeMap::new() }
    }

    /// One update of every trainable variable that has a gradient.
    pub(crate) fn sgd_step(&mut self, vs: &VarStore) {
        self.step += 1;
        let c = self.cfg;
        let lr = self.lr;
        crate::optim::for_each_gradient(vs, c.weight_decay, |name, p, g| {
            let d = if c.momentum > 0.0 {
                let buf = match self.buf.get_mut(&name) {
                    Some(b) => {
                        let _ = b.g_mul_scalar_(c.momentum).g_add_(g);
                        b.shallow_clone()
                    }
                    None => {
                        let b = g.copy();
                        self.buf.insert(name, b.shallow_clone());
                        b
                    }
                };
                if c.nesterov {
                    g + &buf * c.momentum
                } else {
                    buf
                }
            } else {
                g.shallow_clone()
            };
            let _ = p.g_sub_(&(d * lr));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    /// Three steps equal torch.optim.SGD's closed form on a quadratic, plain and Nesterov.
    #[test]
    fn matches_torch_sgd_update() {
        for nesterov in [false, true] {
            let vs = VarStore::new(Device::Cpu);
            let x = vs.root().var("x", &[2], nn::Init::Const(1.5));
            let cfg = SgdConfig { weight_decay: 0.1, nesterov, ..Default::default() };
            let mut opt = Sgd::new(cfg);
            let (mut buf, mut xr) = (None::<f64>, 1.5f64);
            for t in 1..=3 {
                crate::optim::zero_grad(&vs);
                (&x * &x).sum(Kind::Float).backward();
                crate::optim::Optimizer::step(&mut opt, &vs);
                let g = 2.0 * xr + 0.1 * xr;
                let b = buf.map_or(g, |b| 0.9 * b + g);
                buf = Some(b);
                let d = if nesterov { g + 0.9 * b } else { b };
                xr -= 0.01 * d;
                let got = x.double_value(&[0]);
                assert!((got - xr).abs() < 1e-6, "nesterov {nesterov} step {t}: {got} vs {xr}");
            }
        }
    }

    #[test]
    fn schedule() {
        let c = SgdConfig { lr_decay_epochs: 3, ..Default::default() };
        assert_eq!(c.lr_at(2), 0.01);
        assert!((c.lr_at(3) - 0.001).abs() < 1e-12);
        assert_eq!(SgdConfig::default().lr_at(100), 0.01);
    }
}
