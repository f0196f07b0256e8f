//! Train-step and inference throughput of the segmentation nets, measured the way the PyTorch
//! reference `bench/seg_reference.py` measures the same nets (same shapes, same threads).
use std::path::Path;

use lesion_core::optim::{zero_grad, Adam, AdamConfig, Optimizer};
use lesion_core::precision::{
    to_channels_last, vars_to_channels_last, Autocast, GradScaler, Precision,
};
use lesion_core::reference::{flags, peak_rss_mib, run_script, timed};
use lesion_core::{Result, TrainError};
use lesion_models::{Arch, SegNetConfig};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::loss::LossKind;

/// The benchmark's learning rate (small: the weights barely move while timed).
const BENCH_LR: f64 = 1e-5;
/// The reference script's switch for channels-last weights and input.
const CHANNELS_LAST_FLAG: &str = "--channels-last";

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegBenchSpec {
    pub arch: Arch,
    pub size: i64,
    pub batch: i64,
    /// `unet` base width.
    pub base: i64,
    pub warmup: usize,
    pub steps: usize,
    /// Forward + loss under autocast at this precision (fp16 also scales the loss).
    pub precision: Precision,
    /// Channels-last (NHWC) weights and input.
    pub channels_last: bool,
}

/// One measurement, as both sides report it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegBench {
    pub arch: String,
    pub train_images_per_s: f64,
    pub infer_images_per_s: f64,
    pub peak_rss_mib: Option<f64>,
}

/// Our side: a train step (forward, dice loss, backward, Adam) and inference.
pub fn measure(s: &SegBenchSpec, device: Device) -> Result<SegBench> {
    tch::manual_seed(0);
    let cfg = SegNetConfig { arch: s.arch, input_size: s.size, base: s.base, ..Default::default() };
    let vs = VarStore::new(device);
    let net = cfg.build(&vs.root())?;
    let mut x = Tensor::randn([s.batch, 3, s.size, s.size], (Kind::Float, device));
    let y = Tensor::rand([s.batch, 1, s.size, s.size], (Kind::Float, device))
        .gt(0.5)
        .to_kind(Kind::Float);
    if s.channels_last {
        vars_to_channels_last(&vs);
        x = to_channels_last(&x);
    }
    let mut adam = Adam::new(AdamConfig { lr: BENCH_LR, ..Default::default() });
    let mut scaler = GradScaler::new(s.precision);
    // The timed closures cannot return errors: the first one is kept and returned after timing.
    let mut failure: Option<TrainError> = None;
    let step = || {
        let loss = match Autocast::enter(device, s.precision) {
            // The guard covers forward + loss only; backward runs outside it, as in torch.
            Ok(_autocast) => LossKind::Dice.compute(&net.forward_t(&x, true), &y),
            Err(e) => {
                failure.get_or_insert(e);
                return;
            }
        };
        zero_grad(&vs);
        scaler.scale(&loss).backward();
        let finite = scaler.unscale_and_check(&vs);
        if finite {
            adam.step(&vs);
        }
        scaler.update(!finite);
    };
    let images = (s.steps as i64 * s.batch) as f64;
    let train = images / timed(device, s.warmup, s.steps, step);
    let infer = images
        / tch::no_grad(|| {
            timed(device, s.warmup, s.steps, || match Autocast::enter(device, s.precision) {
                Ok(_autocast) => {
                    let _ = net.forward_t(&x, false);
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            })
        });
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(SegBench {
        arch: s.arch.name().into(),
        train_images_per_s: train,
        infer_images_per_s: infer,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// The PyTorch side: `python script` with the same spec and thread count.
pub fn reference(s: &SegBenchSpec, python: &Path, script: &Path, device: &str) -> Result<SegBench> {
    let mut args = flags(&[
        ("--arch", s.arch.name().to_string()),
        ("--size", s.size.to_string()),
        ("--batch", s.batch.to_string()),
        ("--base", s.base.to_string()),
        ("--warmup", s.warmup.to_string()),
        ("--steps", s.steps.to_string()),
        ("--threads", tch::get_num_threads().to_string()),
        ("--device", device.to_string()),
        ("--precision", s.precision.to_string()),
    ]);
    if s.channels_last {
        args.push(CHANNELS_LAST_FLAG.to_string());
    }
    run_script(python, script, &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny bf16 + channels-last run measures something (and leaves autocast off after).
    #[test]
    fn measures_under_bf16_and_channels_last() {
        let spec = SegBenchSpec {
            arch: Arch::Unet,
            size: 16,
            batch: 1,
            base: 4,
            warmup: 1,
            steps: 1,
            precision: Precision::Bf16,
            channels_last: true,
        };
        let b = measure(&spec, Device::Cpu).unwrap();
        assert!(b.train_images_per_s.is_finite() && b.train_images_per_s > 0.0);
        assert!(b.infer_images_per_s.is_finite() && b.infer_images_per_s > 0.0);
        assert!(!lesion_core::precision::autocast_enabled(Device::Cpu).unwrap());
    }
}
