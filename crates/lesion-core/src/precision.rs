//! Mixed precision and channels-last, as pieces the epoch loop can wire in:
//!
//! - [`Precision`]: `fp32 | bf16 | fp16` (`--precision`, `[train] precision`);
//! - [`Autocast`]: an RAII guard that runs what it covers under libtorch's autocast for one
//!   device type and dtype, as `with torch.autocast(device_type, dtype=…)` does (tch's own
//!   `tch::autocast` only knows CUDA with its default dtype, hence the C++ shim
//!   `shim/autocast.cpp`);
//! - [`GradScaler`]: `torch.amp.GradScaler`'s loss scaling law for fp16 (scale the loss,
//!   unscale the gradients and check them, skip the step and back off on inf/NaN, grow after
//!   `growth_interval` clean steps), its state serialisable for checkpoints;
//! - [`to_channels_last`] / [`vars_to_channels_last`]: NHWC strides for 4-D tensors and for a
//!   net's weights in place.
use std::ffi::CStr;
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int};

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::{Result, TrainError};

/// The floating-point precision of a net's forward pass and loss.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in float32 (no autocast, no loss scaling).
    #[default]
    Fp32,
    /// Autocast to bfloat16 (float32's exponent range: no loss scaling needed).
    Bf16,
    /// Autocast to float16, with the loss scaled by a [`GradScaler`].
    Fp16,
}

impl Precision {
    /// The dtype autocast lowers eligible ops to; `None` for [`Precision::Fp32`].
    pub fn autocast_kind(self) -> Option<Kind> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(Kind::BFloat16),
            Precision::Fp16 => Some(Kind::Half),
        }
    }

    /// Whether training at this precision needs loss scaling (fp16's narrow exponent range:
    /// small gradients underflow to zero without it).
    pub fn scales_loss(self) -> bool {
        self == Precision::Fp16
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------------------------------------
// Autocast

/// c10::DeviceType codes of the device types autocast is wired for here.
const DEVICE_TYPE_CPU: c_int = 0;
const DEVICE_TYPE_CUDA: c_int = 1;
/// c10::ScalarType codes (the same numbers as tch's `Kind`).
const SCALAR_TYPE_HALF: c_int = 5;
const SCALAR_TYPE_BFLOAT16: c_int = 15;
/// What every shim function returns on success (`shim/autocast.cpp`).
const SHIM_OK: c_int = 0;

extern "C" {
    fn lesion_autocast_last_error() -> *const c_char;
    fn lesion_autocast_is_enabled(device: c_int, out: *mut c_int) -> c_int;
    fn lesion_autocast_set_enabled(device: c_int, enabled: c_int) -> c_int;
    fn lesion_autocast_get_dtype(device: c_int, out: *mut c_int) -> c_int;
    fn lesion_autocast_set_dtype(device: c_int, dtype: c_int) -> c_int;
    fn lesion_autocast_increment_nesting(out: *mut c_int) -> c_int;
    fn lesion_autocast_decrement_nesting(out: *mut c_int) -> c_int;
    fn lesion_autocast_clear_cache() -> c_int;
}

/// The shim's status turned into a `Result`, with libtorch's message on failure.
fn shim(what: &str, status: c_int) -> Result<()> {
    if status == SHIM_OK {
        return Ok(());
    }
    // SAFETY: the shim keeps a NUL-terminated thread-local message alive until its next call
    // on this thread; it is copied out at once.
    let msg =
        unsafe { CStr::from_ptr(lesion_autocast_last_error()) }.to_string_lossy().into_owned();
    Err(TrainError::Config(format!("libtorch autocast ({what}) failed: {msg}")))
}

fn device_type(device: Device) -> Result<c_int> {
    match device {
        Device::Cpu => Ok(DEVICE_TYPE_CPU),
        Device::Cuda(_) => Ok(DEVICE_TYPE_CUDA),
        other => Err(TrainError::Config(format!(
            "mixed precision is wired for cpu and cuda only, not {other:?}"
        ))),
    }
}

fn scalar_type(kind: Kind) -> Result<c_int> {
    match kind {
        Kind::Half => Ok(SCALAR_TYPE_HALF),
        Kind::BFloat16 => Ok(SCALAR_TYPE_BFLOAT16),
        other => Err(TrainError::Config(format!("autocast lowers to f16 or bf16, not {other:?}"))),
    }
}

/// Whether autocast is on for `device`'s type on this thread.
pub fn autocast_enabled(device: Device) -> Result<bool> {
    let d = device_type(device)?;
    let mut on: c_int = 0;
    // SAFETY: `on` outlives the call; the shim catches every C++ exception.
    shim("is_autocast_enabled", unsafe { lesion_autocast_is_enabled(d, &mut on) })?;
    Ok(on != 0)
}

/// The state an active guard restores on drop.
#[derive(Debug)]
struct Saved {
    device_type: c_int,
    was_enabled: bool,
    /// Kept as libtorch's raw ScalarType code: restored exactly, whatever it was.
    prev_dtype: c_int,
    /// Whether the nesting count was incremented (so drop decrements it).
    nested: bool,
}

/// Autocast for one device type and dtype while the guard lives, as
/// `with torch.autocast(device_type, dtype=…)`: on entry the previous enabled flag and dtype are
/// saved, autocast is enabled with the new dtype and the nesting count incremented; on drop the
/// count is decremented, the cast cache cleared when it reaches 0, and the flag and dtype
/// restored. For [`Precision::Fp32`] the guard does nothing.
///
/// Autocast state is thread-local in libtorch, so the guard is neither `Send` nor `Sync`; guards
/// must be dropped in reverse order of entry (as Rust scopes do).
///
/// Cover the forward pass and the loss, not `backward` (torch's advice: backward ops run in the
/// dtype their forward ops chose).
#[derive(Debug)]
#[must_use = "autocast is only on while the guard lives"]
pub struct Autocast {
    saved: Option<Saved>,
    _thread_bound: PhantomData<*const ()>,
}

impl Autocast {
    /// Enters autocast for `device`'s type at `precision`. fp16 and bf16 are both accepted on
    /// CPU, as `torch.autocast('cpu', dtype=torch.float16)` is in torch 2.11.
    pub fn enter(device: Device, precision: Precision) -> Result<Autocast> {
        let Some(kind) = precision.autocast_kind() else {
            return Ok(Autocast { saved: None, _thread_bound: PhantomData });
        };
        let d = device_type(device)?;
        let dtype = scalar_type(kind)?;
        let was_enabled = autocast_enabled(device)?;
        let mut prev_dtype: c_int = 0;
        let mut depth: c_int = 0;
        // SAFETY (each call): out-pointers outlive the call; the shim catches C++ exceptions.
        shim("get_autocast_dtype", unsafe { lesion_autocast_get_dtype(d, &mut prev_dtype) })?;
        shim("set_autocast_dtype", unsafe { lesion_autocast_set_dtype(d, dtype) })?;
        // From here on the guard exists, so a failure below still restores flag and dtype.
        let mut guard = Autocast {
            saved: Some(Saved { device_type: d, was_enabled, prev_dtype, nested: false }),
            _thread_bound: PhantomData,
        };
        shim("set_autocast_enabled", unsafe { lesion_autocast_set_enabled(d, 1) })?;
        shim("increment_nesting", unsafe { lesion_autocast_increment_nesting(&mut depth) })?;
        if let Some(s) = guard.saved.as_mut() {
            s.nested = true;
        }
        Ok(guard)
    }

    /// Whether this guard changed anything (false for fp32).
    pub fn is_active(&self) -> bool {
        self.saved.is_some()
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        let Some(s) = self.saved.take() else { return };
        // As torch.autocast.__exit__: decrement, clear the cache at 0, restore flag and dtype.
        // SAFETY (each call): out-pointers outlive the call; the shim catches C++ exceptions.
        let leave_nesting = || -> Result<()> {
            if !s.nested {
                return Ok(());
            }
            let mut depth: c_int = 0;
            shim("decrement_nesting", unsafe { lesion_autocast_decrement_nesting(&mut depth) })?;
            if depth == 0 {
                shim("clear_cache", unsafe { lesion_autocast_clear_cache() })?;
            }
            Ok(())
        };
        let steps = [
            leave_nesting(),
            shim("set_autocast_enabled", unsafe {
                lesion_autocast_set_enabled(s.device_type, c_int::from(s.was_enabled))
            }),
            shim("set_autocast_dtype", unsafe {
                lesion_autocast_set_dtype(s.device_type, s.prev_dtype)
            }),
        ];
        // Drop has no error channel: a failure (never seen; these only read and write
        // thread-local state) is logged rather than lost.
        for e in steps.into_iter().filter_map(|r| r.err()) {
            tracing::error!("leaving autocast: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loss scaling

/// `torch.amp.GradScaler`'s defaults.
pub const GRAD_SCALER_INIT_SCALE: f64 = 65536.0;
pub const GRAD_SCALER_GROWTH_FACTOR: f64 = 2.0;
pub const GRAD_SCALER_BACKOFF_FACTOR: f64 = 0.5;
pub const GRAD_SCALER_GROWTH_INTERVAL: i64 = 2000;

/// The scaling law's constants (`torch.amp.GradScaler`'s constructor arguments).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GradScalerConfig {
    pub init_scale: f64,
    /// The scale is multiplied by this after `growth_interval` consecutive finite steps.
    pub growth_factor: f64,
    /// … and by this after a step whose gradients were not finite (that step is skipped).
    pub backoff_factor: f64,
    pub growth_interval: i64,
}

impl Default for GradScalerConfig {
    fn default() -> Self {
        Self {
            init_scale: GRAD_SCALER_INIT_SCALE,
            growth_factor: GRAD_SCALER_GROWTH_FACTOR,
            backoff_factor: GRAD_SCALER_BACKOFF_FACTOR,
            growth_interval: GRAD_SCALER_GROWTH_INTERVAL,
        }
    }
}

/// What a checkpoint keeps of a [`GradScaler`] (torch's `scale` and `_growth_tracker`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GradScalerState {
    /// float32, as torch keeps it: growth and backoff round exactly as torch's do.
    pub scale: f32,
    /// Consecutive finite steps since the last growth or backoff.
    pub growth_tracker: i64,
}

/// Dynamic loss scaling for fp16 training, `torch.amp.GradScaler`'s law:
///
/// ```text
/// loss' = loss · scale;  backward(loss');  grads /= scale
/// all grads finite → optimiser step, tracker += 1; tracker == interval → scale ·= growth
///                    (only if the result is finite), tracker = 0
/// else             → no step, scale ·= backoff, tracker = 0
/// ```
///
/// Disabled (every precision but fp16) it is the identity: scale 1, grads untouched, every
/// step taken, `update` a no-op — so a loop can call it unconditionally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradScaler {
    pub config: GradScalerConfig,
    pub state: GradScalerState,
    pub enabled: bool,
}

impl GradScaler {
    /// The default law, enabled only for [`Precision::Fp16`].
    pub fn new(precision: Precision) -> Self {
        Self::with_config(GradScalerConfig::default(), precision.scales_loss())
    }

    pub fn with_config(config: GradScalerConfig, enabled: bool) -> Self {
        let state = GradScalerState { scale: config.init_scale as f32, growth_tracker: 0 };
        Self { config, state, enabled }
    }

    /// The current scale (1 when disabled), as `GradScaler.get_scale()`.
    pub fn scale_value(&self) -> f64 {
        if self.enabled {
            f64::from(self.state.scale)
        } else {
            1.0
        }
    }

    /// `loss · scale` (the loss itself, shallow-cloned, when disabled).
    pub fn scale(&self, loss: &Tensor) -> Tensor {
        if !self.enabled {
            return loss.shallow_clone();
        }
        loss * self.scale_tensor(loss.device())
    }

    /// Divides every trainable variable's gradient by the scale (multiplies by its float32
    /// reciprocal, as torch's `_amp_foreach_non_finite_check_and_unscale_`) and returns whether
    /// all of them are finite, i.e. whether the optimiser may step. Disabled: true, grads
    /// untouched. Call once per step, after `backward` and before the optimiser (and before any
    /// gradient clipping, which must see unscaled gradients).
    pub fn unscale_and_check(&self, vars: &VarStore) -> bool {
        if !self.enabled {
            return true;
        }
        // torch: `self._scale.double().reciprocal().float()`.
        let inv = (1.0 / f64::from(self.state.scale)) as f32;
        let inv = Tensor::scalar_tensor(f64::from(inv), (Kind::Float, vars.device()));
        let mut non_finite: Option<Tensor> = None;
        tch::no_grad(|| {
            for var in vars.trainable_variables() {
                let mut g = var.grad();
                if !g.defined() {
                    continue;
                }
                let _ = g.g_mul_(&inv);
                // One device→host read for all gradients, not one per variable.
                let bad = g.isfinite().logical_not().any();
                non_finite = Some(match non_finite.take() {
                    Some(acc) => acc.logical_or(&bad),
                    None => bad,
                });
            }
        });
        non_finite.is_none_or(|t| t.int64_value(&[]) == 0)
    }

    /// The scale's update after a step (torch's `_amp_update_scale_`); a no-op when disabled.
    pub fn update(&mut self, found_inf: bool) {
        if !self.enabled {
            return;
        }
        let c = self.config;
        let s = &mut self.state;
        // float32 scale times double factor, rounded back to float32, as the CPU and CUDA
        // kernels compute it.
        if found_inf {
            s.scale = (f64::from(s.scale) * c.backoff_factor) as f32;
            s.growth_tracker = 0;
        } else {
            let successful = s.growth_tracker + 1;
            if successful == c.growth_interval {
                let grown = (f64::from(s.scale) * c.growth_factor) as f32;
                if grown.is_finite() {
                    s.scale = grown;
                }
                s.growth_tracker = 0;
            } else {
                s.growth_tracker = successful;
            }
        }
    }

    fn scale_tensor(&self, device: Device) -> Tensor {
        Tensor::scalar_tensor(f64::from(self.state.scale), (Kind::Float, device))
    }
}

/// `t` as float32: an autocast forward's output cast back, the tensor itself (no op) when it
/// already is one — a traced graph (`export --torchscript`) then records no cast, whose
/// `aten::to` would carry a device constant.
pub fn to_float32(t: Tensor) -> Tensor {
    if t.kind() == Kind::Float {
        t
    } else {
        t.to_kind(Kind::Float)
    }
}

// ---------------------------------------------------------------------------------------------
// Channels-last

/// Dimensions of the tensors channels-last applies to (N, C, H, W).
const IMAGE_DIMS: usize = 4;

/// `t` with NHWC strides (`torch.channels_last`) and the same NCHW shape and values; other
/// ranks are returned as they are (shallow clones). tch has no `memory_format` argument: a
/// contiguous copy of the NHWC permutation, permuted back, has exactly channels-last strides.
pub fn to_channels_last(t: &Tensor) -> Tensor {
    if t.dim() != IMAGE_DIMS {
        return t.shallow_clone();
    }
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Whether a 4-D tensor has channels-last strides (C innermost, then W, H, N).
pub fn is_channels_last(t: &Tensor) -> bool {
    let (size, stride) = (t.size(), t.stride());
    if size.len() != IMAGE_DIMS {
        return false;
    }
    let (c, h, w) = (size[1], size[2], size[3]);
    stride[1] == 1 && stride[3] == c && stride[2] == c * w && stride[0] == c * w * h
}

/// Converts every 4-D variable of `vs` (conv weights) to channels-last in place: the variable
/// stays the same tensor (`set_data`), so its name, `requires_grad` and any optimiser keyed by
/// it keep working; in-place optimiser updates keep the new strides.
pub fn vars_to_channels_last(vs: &VarStore) {
    tch::no_grad(|| {
        for (_, mut var) in vs.variables() {
            if var.dim() == IMAGE_DIMS && !is_channels_last(&var) {
                let nhwc = to_channels_last(&var);
                var.set_data(&nhwc);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{zero_grad, Optimizer, Sgd, SgdConfig};

    fn conv_inputs() -> (Tensor, Tensor) {
        tch::manual_seed(1);
        (
            Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu)),
            Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu)),
        )
    }

    fn conv(x: &Tensor, w: &Tensor) -> Tensor {
        x.conv2d(w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)
    }

    // In Python (torch 2.11): `with torch.autocast('cpu', dtype=torch.bfloat16):` gives
    // `torch.mm(x, x).dtype == torch.bfloat16` and `F.conv2d(im, w).dtype == torch.bfloat16`;
    // after the block both are `torch.float32` again. With `dtype=torch.float16` both are
    // `torch.float16` (CPU fp16 autocast is accepted).
    #[test]
    fn bf16_autocast_on_cpu_lowers_matmul_and_conv_then_restores() {
        let (x, w) = conv_inputs();
        let m = Tensor::randn([4, 4], (Kind::Float, Device::Cpu));
        assert!(!autocast_enabled(Device::Cpu).unwrap());
        {
            let g = Autocast::enter(Device::Cpu, Precision::Bf16).unwrap();
            assert!(g.is_active());
            assert!(autocast_enabled(Device::Cpu).unwrap());
            assert_eq!(m.matmul(&m).kind(), Kind::BFloat16);
            assert_eq!(conv(&x, &w).kind(), Kind::BFloat16);
        }
        assert!(!autocast_enabled(Device::Cpu).unwrap());
        assert_eq!(m.matmul(&m).kind(), Kind::Float);
        assert_eq!(conv(&x, &w).kind(), Kind::Float);
    }

    #[test]
    fn fp16_autocast_on_cpu_lowers_to_half() {
        let m = Tensor::randn([4, 4], (Kind::Float, Device::Cpu));
        let g = Autocast::enter(Device::Cpu, Precision::Fp16).unwrap();
        assert_eq!(m.matmul(&m).kind(), Kind::Half);
        drop(g);
        assert_eq!(m.matmul(&m).kind(), Kind::Float);
    }

    #[test]
    fn nested_guards_restore_the_outer_dtype() {
        let m = Tensor::randn([4, 4], (Kind::Float, Device::Cpu));
        let outer = Autocast::enter(Device::Cpu, Precision::Bf16).unwrap();
        {
            let _inner = Autocast::enter(Device::Cpu, Precision::Fp16).unwrap();
            assert_eq!(m.matmul(&m).kind(), Kind::Half);
            // An fp32 guard inside changes nothing (it is not `autocast(enabled=False)`).
            let fp32 = Autocast::enter(Device::Cpu, Precision::Fp32).unwrap();
            assert!(!fp32.is_active());
            assert_eq!(m.matmul(&m).kind(), Kind::Half);
        }
        assert!(autocast_enabled(Device::Cpu).unwrap());
        assert_eq!(m.matmul(&m).kind(), Kind::BFloat16);
        drop(outer);
        assert!(!autocast_enabled(Device::Cpu).unwrap());
        assert_eq!(m.matmul(&m).kind(), Kind::Float);
    }

    #[test]
    fn fp32_guard_changes_nothing() {
        let m = Tensor::randn([4, 4], (Kind::Float, Device::Cpu));
        let g = Autocast::enter(Device::Cpu, Precision::Fp32).unwrap();
        assert!(!autocast_enabled(Device::Cpu).unwrap());
        assert_eq!(m.matmul(&m).kind(), Kind::Float);
        drop(g);
        assert!(!autocast_enabled(Device::Cpu).unwrap());
    }

    #[test]
    fn precision_names_parse_and_serialise() {
        use clap::ValueEnum;
        for p in [Precision::Fp32, Precision::Bf16, Precision::Fp16] {
            assert_eq!(Precision::from_str(&p.to_string(), false).unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert_eq!(Precision::default(), Precision::Fp32);
        assert!(Precision::Fp16.scales_loss() && !Precision::Bf16.scales_loss());
    }

    #[test]
    fn disabled_scaler_is_the_identity() {
        let vs = VarStore::new(Device::Cpu);
        let p = vs.root().var("p", &[3], tch::nn::Init::Const(1.0));
        let mut s = GradScaler::new(Precision::Bf16);
        let loss = (&p * Tensor::from_slice(&[f32::INFINITY, 1.0, 2.0])).sum(Kind::Float);
        let scaled = s.scale(&loss);
        assert_eq!(scaled.double_value(&[]), loss.double_value(&[]));
        scaled.backward();
        assert!(s.unscale_and_check(&vs));
        assert_eq!(Vec::<f32>::try_from(p.grad()).unwrap(), vec![f32::INFINITY, 1.0, 2.0]);
        s.update(true);
        assert_eq!(s.scale_value(), 1.0);
    }

    #[test]
    fn enabled_scaler_unscales_and_flags_non_finite() {
        let vs = VarStore::new(Device::Cpu);
        let p = vs.root().var("p", &[2], tch::nn::Init::Const(1.0));
        let s = GradScaler::new(Precision::Fp16);
        assert_eq!(s.scale_value(), GRAD_SCALER_INIT_SCALE);
        s.scale(&(&p * Tensor::from_slice(&[0.25f32, -3.0])).sum(Kind::Float)).backward();
        assert_eq!(Vec::<f32>::try_from(p.grad()).unwrap(), vec![16384.0, -196608.0]);
        assert!(s.unscale_and_check(&vs));
        assert_eq!(Vec::<f32>::try_from(p.grad()).unwrap(), vec![0.25, -3.0]);
        zero_grad(&vs);
        s.scale(&(&p * Tensor::from_slice(&[f32::NAN, 1.0])).sum(Kind::Float)).backward();
        assert!(!s.unscale_and_check(&vs));
    }

    #[test]
    fn scaler_state_round_trips_through_json() {
        let mut s = GradScaler::new(Precision::Fp16);
        s.update(true);
        s.update(false);
        let back: GradScaler = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.state, GradScalerState { scale: 32768.0, growth_tracker: 1 });
    }

    #[test]
    fn channels_last_has_nhwc_strides_and_the_same_values() {
        let (x, _) = conv_inputs();
        let cl = to_channels_last(&x);
        assert_eq!(cl.size(), x.size());
        assert_eq!(cl.stride(), vec![3 * 8 * 8, 1, 8 * 3, 3]);
        assert!(is_channels_last(&cl) && !is_channels_last(&x));
        assert!(!cl.is_contiguous());
        assert!(cl.equal(&x));
        let v = Tensor::randn([5], (Kind::Float, Device::Cpu));
        assert_eq!(to_channels_last(&v).stride(), vec![1]);
    }

    #[test]
    fn conv_gives_the_same_result_in_both_layouts() {
        let (x, w) = conv_inputs();
        let nchw = conv(&x, &w);
        let nhwc = conv(&to_channels_last(&x), &to_channels_last(&w));
        // libtorch keeps the input's layout: the output is channels-last too.
        assert!(is_channels_last(&nhwc));
        let diff = (&nchw - &nhwc).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "max difference {diff}");
    }

    #[test]
    fn vars_convert_in_place_and_still_train() {
        let vs = VarStore::new(Device::Cpu);
        let conv_cfg = tch::nn::ConvConfig { padding: 1, ..Default::default() };
        let net = tch::nn::conv2d(vs.root() / "c", 3, 4, 3, conv_cfg);
        let before = net.ws.copy();
        vars_to_channels_last(&vs);
        let vars = vs.variables();
        let w = &vars["c.weight"];
        assert!(is_channels_last(w) && w.requires_grad());
        assert!(w.equal(&before));
        // The module's own handle is the same variable (set_data kept its identity).
        assert!(is_channels_last(&net.ws));
        assert_eq!(vars["c.bias"].dim(), 1);

        let (x, _) = conv_inputs();
        let mut sgd =
            Sgd::new(SgdConfig { lr: 0.1, momentum: 0.0, weight_decay: 0.0, ..Default::default() });
        let loss = tch::nn::Module::forward(&net, &to_channels_last(&x)).square().mean(Kind::Float);
        zero_grad(&vs);
        loss.backward();
        let grad = net.ws.grad().copy();
        sgd.step(&vs);
        let expected = &before - grad * 0.1;
        let diff = (&net.ws - expected).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "update differs by {diff}");
        assert!(!net.ws.equal(&before));
        assert!(is_channels_last(&net.ws), "the step kept the layout");
    }
}
