//! Train-step, inference and test-time-augmentation throughput of the EfficientNet-Lite
//! classifier, measured the way the PyTorch reference `bench/cls_reference.py` measures it.
use std::path::Path;

use lesion_core::optim::{zero_grad, Adam, AdamConfig, Optimizer};
use lesion_core::precision::{
    to_channels_last, vars_to_channels_last, Autocast, GradScaler, Precision,
};
use lesion_core::reference::{flags, run_script, timed};
use lesion_core::{Result, TrainError};
use lesion_models::efficientnet::{EfficientNetConfig, HeadSpec, LiteVariant};
use serde::{Deserialize, Serialize};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

use crate::config::CLASSES;

/// The benchmark's learning rate (small: the weights barely move while timed).
const BENCH_LR: f64 = 1e-5;
/// The reference script's switch for channels-last weights and inputs.
const CHANNELS_LAST_FLAG: &str = "--channels-last";

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClsBenchSpec {
    pub variant: LiteVariant,
    pub size: i64,
    pub batch: i64,
    pub warmup: usize,
    pub steps: usize,
    /// Replicas per image for the TTA measurement (one batch of this many per image).
    pub tta: i64,
    /// Forward + loss under autocast at this precision (fp16 also scales the loss).
    pub precision: Precision,
    /// Channels-last (NHWC) weights and inputs.
    pub channels_last: bool,
}

/// One classifier measurement, as both sides report it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClsBench {
    pub variant: String,
    pub train_images_per_s: f64,
    pub infer_images_per_s: f64,
    /// Original images per second, each seen as `tta` replicas in one batch.
    pub tta_images_per_s: f64,
}

/// Our side: a train step (forward, cross-entropy, backward, Adam), inference, and TTA.
pub fn measure(a: &ClsBenchSpec, device: Device) -> Result<ClsBench> {
    if a.steps == 0 || a.batch < 1 || a.tta < 1 {
        return Err(TrainError::Config("steps, batch and tta must be positive".into()));
    }
    tch::manual_seed(0);
    let cfg = EfficientNetConfig {
        variant: a.variant,
        head: HeadSpec::Classes(CLASSES),
        image_size: Some(a.size),
        ..Default::default()
    };
    let vs = VarStore::new(device);
    let net = cfg.build(&vs.root())?;
    let mut x = Tensor::randn([a.batch, 3, a.size, a.size], (Kind::Float, device));
    let y = Tensor::randint(CLASSES, [a.batch], (Kind::Int64, device));
    let mut img = Tensor::rand([1, 3, a.size, a.size], (Kind::Float, device));
    if a.channels_last {
        vars_to_channels_last(&vs);
        x = to_channels_last(&x);
        img = to_channels_last(&img);
    }
    let mut adam = Adam::new(AdamConfig { lr: BENCH_LR, ..Default::default() });
    let mut scaler = GradScaler::new(a.precision);
    // The timed closures cannot return errors: the first one is kept and returned after timing.
    let mut failure: Option<TrainError> = None;
    let secs = timed(device, a.warmup, a.steps, || {
        let loss = match Autocast::enter(device, a.precision) {
            // The guard covers forward + loss only; backward runs outside it, as in torch.
            Ok(_autocast) => net.forward_t(&x, true).cross_entropy_for_logits(&y),
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
    });
    let train = (a.steps as i64 * a.batch) as f64 / secs;
    let (infer, tta) = tch::no_grad(|| {
        let mut autocast = |f: &mut dyn FnMut()| match Autocast::enter(device, a.precision) {
            Ok(_autocast) => f(),
            Err(e) => {
                failure.get_or_insert(e);
            }
        };
        let s = timed(device, a.warmup, a.steps, || {
            autocast(&mut || {
                let _ = net.forward_t(&x, false);
            })
        });
        let infer = (a.steps as i64 * a.batch) as f64 / s;
        // As `tta`: the replicas of one image form one batch; softmax, pooled by mean.
        let s = timed(device, a.warmup, a.steps, || {
            autocast(&mut || {
                let batch = img.repeat([a.tta, 1, 1, 1]);
                let _ = net.forward_t(&batch, false).softmax(1, Kind::Float).mean_dim(
                    [0i64].as_slice(),
                    false,
                    Kind::Float,
                );
            })
        });
        (infer, a.steps as f64 / s)
    });
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(ClsBench {
        variant: a.variant.name().trim_start_matches("efficientnet-").to_string(),
        train_images_per_s: train,
        infer_images_per_s: infer,
        tta_images_per_s: tta,
    })
}

/// The PyTorch side: `python script` with the same spec and thread count.
pub fn reference(a: &ClsBenchSpec, python: &Path, script: &Path, device: &str) -> Result<ClsBench> {
    let mut args = flags(&[
        ("--variant", a.variant.name().trim_start_matches("efficientnet-").to_string()),
        ("--size", a.size.to_string()),
        ("--batch", a.batch.to_string()),
        ("--warmup", a.warmup.to_string()),
        ("--steps", a.steps.to_string()),
        ("--tta", a.tta.to_string()),
        ("--classes", CLASSES.to_string()),
        ("--threads", tch::get_num_threads().to_string()),
        ("--device", device.to_string()),
        ("--precision", a.precision.to_string()),
    ]);
    if a.channels_last {
        args.push(CHANNELS_LAST_FLAG.to_string());
    }
    run_script(python, script, &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny fp16 (loss-scaled) + channels-last run measures something and leaves autocast off.
    #[test]
    fn measures_under_fp16_and_channels_last() {
        let spec = ClsBenchSpec {
            variant: LiteVariant::Lite0,
            size: 32,
            batch: 2,
            warmup: 1,
            steps: 1,
            tta: 2,
            precision: Precision::Fp16,
            channels_last: true,
        };
        let b = measure(&spec, Device::Cpu).unwrap();
        for v in [b.train_images_per_s, b.infer_images_per_s, b.tta_images_per_s] {
            assert!(v.is_finite() && v > 0.0);
        }
        assert!(!lesion_core::precision::autocast_enabled(Device::Cpu).unwrap());
    }
}
