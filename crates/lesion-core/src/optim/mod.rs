//! Optimisers with their state in the open, so that a checkpoint holds every moment and step
//! count and a resumed run continues exactly where it stopped (torch's C++ optimiser state is
//! not reachable through tch). One [`Optimizer`] trait; Adam and AdamW ([`Adam`], update rule
//! of `torch.optim.Adam`/`AdamW`, no amsgrad), RMSProp as TensorFlow's ([`rmsprop`]) and SGD as
//! `torch.optim.SGD` ([`sgd`]) implement it; [`OptimizerKind`] + [`OptimizerConfigs`] build
//! one from a config.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, no_grad, Device, Tensor};

pub mod rmsprop;
pub mod sgd;

pub use rmsprop::{RmsProp, RmsPropConfig};
pub use sgd::{Sgd, SgdConfig};

/// Checkpoint key prefixes of the optimisers' per-variable state.
const ADAM_M: &str = "adam_m.";
const ADAM_V: &str = "adam_v.";
const ADAM_T: &str = "adam_t.";
const RMS_MS: &str = "rms_ms.";
const RMS_MOM: &str = "rms_mom.";
const SGD_BUF: &str = "sgd_buf.";

/// An optimiser whose whole state can be saved and restored.
pub trait Optimizer {
    /// One update of every trainable variable of `vs` that has a gradient.
    fn step(&mut self, vs: &VarStore);
    /// The learning rate the next step uses.
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    /// Steps taken so far.
    fn step_count(&self) -> i64;
    /// The per-variable state as named tensors (names carry the optimiser's own prefix).
    fn state(&self) -> Vec<(String, Tensor)>;
    /// Restores what [`Optimizer::state`] saved (other keys are ignored) and the step count.
    fn restore(&mut self, all: &BTreeMap<String, Tensor>, device: Device, step: i64);
}

/// Zero the gradients of every trainable variable.
pub fn zero_grad(vs: &VarStore) {
    for mut t in vs.trainable_variables() {
        t.zero_grad();
    }
}

/// Which optimiser trains the net (`[train] optimizer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// `[adam]` with L2 weight decay folded into the gradient (torch.optim.Adam).
    Adam,
    /// `[adam]` with decoupled weight decay (torch.optim.AdamW): p ← p·(1 − lr·wd) before the
    /// Adam update.
    Adamw,
    /// `[rmsprop]`, the paper's recipe (TF RMSProp).
    Rmsprop,
    /// `[sgd]`: torch.optim.SGD with momentum (optionally Nesterov) and a step schedule.
    Sgd,
}

/// The optimiser sections of a training config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimizerConfigs {
    pub adam: AdamConfig,
    pub rmsprop: RmsPropConfig,
    pub sgd: SgdConfig,
}

impl OptimizerKind {
    /// A fresh optimiser of this kind.
    pub fn build(self, c: &OptimizerConfigs) -> Box<dyn Optimizer> {
        match self {
            OptimizerKind::Adam => Box::new(Adam::new(c.adam)),
            OptimizerKind::Adamw => Box::new(Adam::adamw(c.adam)),
            OptimizerKind::Rmsprop => Box::new(RmsProp::new(c.rmsprop)),
            OptimizerKind::Sgd => Box::new(Sgd::new(c.sgd)),
        }
    }

    /// The learning rate of (0-based) `epoch` under this kind's schedule: RMSProp and SGD
    /// decay in steps; Adam and AdamW follow `[adam] cosine_epochs` when set (`None`: keep the
    /// current rate).
    pub fn scheduled_lr(self, c: &OptimizerConfigs, epoch: usize) -> Option<f64> {
        match self {
            OptimizerKind::Rmsprop => Some(c.rmsprop.lr_at(epoch)),
            OptimizerKind::Sgd => Some(c.sgd.lr_at(epoch)),
            OptimizerKind::Adam | OptimizerKind::Adamw => c.adam.lr_at(epoch),
        }
    }

    /// The configured initial learning rate.
    pub fn initial_lr(self, c: &OptimizerConfigs) -> f64 {
        match self {
            OptimizerKind::Rmsprop => c.rmsprop.lr,
            OptimizerKind::Sgd => c.sgd.lr,
            OptimizerKind::Adam | OptimizerKind::Adamw => c.adam.lr,
        }
    }
}

/// Dumps a per-variable map under `prefix`.
fn dump(prefix: &str, m: &BTreeMap<String, Tensor>) -> Vec<(String, Tensor)> {
    m.iter().map(|(k, t)| (format!("{prefix}{k}"), t.shallow_clone())).collect()
}

/// The entries of `all` under `prefix`, unprefixed, on `device`.
fn take(all: &BTreeMap<String, Tensor>, prefix: &str, device: Device) -> BTreeMap<String, Tensor> {
    all.iter()
        .filter_map(|(k, t)| k.strip_prefix(prefix).map(|n| (n.to_string(), t.to_device(device))))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Cosine annealing of the rate, per epoch, from `lr` at epoch 0 to `min_lr` at this
    /// epoch (and after); 0 = a constant rate. Set it to the run's epochs for the usual
    /// fine-tuning schedule. Segmentation runs take their rate decay from the plateau rule
    /// instead, so only classification reads it.
    pub cosine_epochs: usize,
    /// The floor of the cosine schedule.
    pub min_lr: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            cosine_epochs: 0,
            min_lr: 0.0,
        }
    }
}

impl AdamConfig {
    /// The rate of (0-based) `epoch` under the cosine schedule; `None` when there is none.
    pub fn lr_at(&self, epoch: usize) -> Option<f64> {
        (self.cosine_epochs > 0).then(|| {
            let progress = epoch.min(self.cosine_epochs) as f64 / self.cosine_epochs as f64;
            let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
            self.min_lr + (self.lr - self.min_lr) * cosine
        })
    }
}

/// Adam's per-variable first and second moments and step counts, keyed by var-store name.
///
/// Invariant (as `torch.optim.Adam`): each variable's bias correction uses its OWN step count,
/// counted from its first update. A block unfrozen after N steps therefore starts with
/// `1 − β₂^1`, not `1 − β₂^(N+1)`: with one global count, its first updates ran at up to ~4×
/// the learning rate (β₂ = 0.999, N ≈ 400), enough to wreck a fine-tuned backbone.
pub struct Adam {
    pub cfg: AdamConfig,
    /// AdamW's decoupled weight decay (0 = plain Adam): p ← p·(1 − lr·wd) before each step.
    pub decoupled_wd: f64,
    /// Steps taken by the optimiser (any variable).
    pub step: i64,
    pub m: BTreeMap<String, Tensor>,
    pub v: BTreeMap<String, Tensor>,
    /// Updates of each variable so far.
    pub t: BTreeMap<String, i64>,
}

impl Adam {
    pub fn new(cfg: AdamConfig) -> Self {
        Self {
            cfg,
            decoupled_wd: 0.0,
            step: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
            t: BTreeMap::new(),
        }
    }

    /// AdamW: `cfg.weight_decay` is applied decoupled, not folded into the gradient.
    pub fn adamw(cfg: AdamConfig) -> Self {
        let inner = AdamConfig { weight_decay: 0.0, ..cfg };
        Self { decoupled_wd: cfg.weight_decay, ..Self::new(inner) }
    }

    /// One Adam update (after AdamW's decay, when set).
    fn adam_step(&mut self, vs: &VarStore) {
        if self.decoupled_wd > 0.0 {
            let factor = 1.0 - self.cfg.lr * self.decoupled_wd;
            no_grad(|| {
                // As torch.optim.AdamW: only variables being trained (frozen ones keep their
                // weights exactly).
                for mut p in vs.trainable_variables() {
                    if p.requires_grad() && p.grad().defined() {
                        let _ = p.g_mul_scalar_(factor);
                    }
                }
            });
        }
        self.step += 1;
        let c = self.cfg;
        for_each_gradient(vs, c.weight_decay, |name, p, g| {
            let t = self.t.entry(name.clone()).or_insert(0);
            *t += 1;
            let t = i32::try_from(*t).unwrap_or(i32::MAX);
            let bc1 = 1.0 - c.beta1.powi(t);
            let bc2 = 1.0 - c.beta2.powi(t);
            let step_size = c.lr / bc1;
            let m = self.m.entry(name.clone()).or_insert_with(|| p.zeros_like());
            let _ = m.g_mul_scalar_(c.beta1).g_add_(&(g * (1.0 - c.beta1)));
            let v = self.v.entry(name).or_insert_with(|| p.zeros_like());
            let _ = v.g_mul_scalar_(c.beta2).g_add_(&(g * g * (1.0 - c.beta2)));
            let denom = (&*v / bc2).sqrt() + c.eps;
            let _ = p.g_sub_(&(&*m / denom * step_size));
        });
    }
}

impl Optimizer for Adam {
    fn step(&mut self, vs: &VarStore) {
        self.adam_step(vs);
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    fn step_count(&self) -> i64 {
        self.step
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let counts =
            self.t.iter().map(|(k, &t)| (format!("{ADAM_T}{k}"), Tensor::from_slice(&[t as f64])));
        dump(ADAM_M, &self.m).into_iter().chain(dump(ADAM_V, &self.v)).chain(counts).collect()
    }

    fn restore(&mut self, all: &BTreeMap<String, Tensor>, device: Device, step: i64) {
        self.m = take(all, ADAM_M, device);
        self.v = take(all, ADAM_V, device);
        self.step = step;
        let counts = take(all, ADAM_T, Device::Cpu);
        self.t = if counts.is_empty() {
            // A checkpoint from before per-variable counts: every variable with moments had
            // taken every step (what its update used).
            self.m.keys().map(|k| (k.clone(), step)).collect()
        } else {
            counts.into_iter().map(|(k, t)| (k, t.double_value(&[0]) as i64)).collect()
        };
    }
}

impl Optimizer for RmsProp {
    fn step(&mut self, vs: &VarStore) {
        self.rms_step(vs);
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn step_count(&self) -> i64 {
        self.step
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        dump(RMS_MS, &self.ms).into_iter().chain(dump(RMS_MOM, &self.mom)).collect()
    }

    fn restore(&mut self, all: &BTreeMap<String, Tensor>, device: Device, step: i64) {
        self.ms = take(all, RMS_MS, device);
        self.mom = take(all, RMS_MOM, device);
        self.step = step;
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, vs: &VarStore) {
        self.sgd_step(vs);
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn step_count(&self) -> i64 {
        self.step
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        dump(SGD_BUF, &self.buf)
    }

    fn restore(&mut self, all: &BTreeMap<String, Tensor>, device: Device, step: i64) {
        self.buf = take(all, SGD_BUF, device);
        self.step = step;
    }
}

/// Calls `update(name, param, grad)` under `no_grad` for every variable that requires grad and
/// has a gradient, with L2 weight decay folded into the gradient (`g + wd·p`, as
/// torch.optim's `weight_decay`): the walk every optimiser here shares.
pub fn for_each_gradient(
    vs: &VarStore,
    weight_decay: f64,
    mut update: impl FnMut(String, &mut Tensor, &Tensor),
) {
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
            zero_grad(&vs);
            (&x * &x).sum(Kind::Float).backward();
            Optimizer::step(&mut opt, &vs);
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

    /// A variable that starts training after others have taken steps gets torch's first-step
    /// update (magnitude lr), not the ~4× of a global bias correction; its count survives a
    /// save/restore.
    #[test]
    fn late_variables_get_their_own_bias_correction() {
        let vs = VarStore::new(Device::Cpu);
        let a = vs.root().var("a", &[1], nn::Init::Const(1.0));
        let b = vs.root().var("b", &[1], nn::Init::Const(1.0));
        let _ = b.set_requires_grad(false);
        let lr = 0.01;
        let mut opt = Adam::new(AdamConfig { lr, ..Default::default() });
        for _ in 0..400 {
            zero_grad(&vs);
            (&a * &a + &b * &b).sum(Kind::Float).backward();
            Optimizer::step(&mut opt, &vs);
        }
        let _ = b.set_requires_grad(true);
        let before = b.double_value(&[0]);
        zero_grad(&vs);
        (&a * &a + &b * &b).sum(Kind::Float).backward();
        Optimizer::step(&mut opt, &vs);
        let moved = before - b.double_value(&[0]);
        // torch: m̂ = g, v̂ = g², so the first update is lr·g/|g| = lr.
        assert!((moved - lr).abs() < 1e-6, "first update of b moved it by {moved}, want {lr}");
        assert_eq!((opt.t["a"], opt.t["b"], opt.step), (401, 1, 401));
        let saved: BTreeMap<String, Tensor> = opt.state().into_iter().collect();
        let mut back = Adam::new(AdamConfig { lr, ..Default::default() });
        back.restore(&saved, Device::Cpu, 401);
        assert_eq!(back.t, opt.t);
    }
}
