//! Train-step and inference throughput of the segmentation nets, measured the way the PyTorch
//! reference `bench/seg_reference.py` measures the same nets (same shapes, same threads).
use std::path::Path;

use lesion_core::optim::{zero_grad, Adam, AdamConfig, Optimizer};
use lesion_core::reference::{flags, peak_rss_mib, run_script, timed};
use lesion_core::Result;
use lesion_models::{Arch, SegNetConfig};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::loss::LossKind;

/// The benchmark's learning rate (small: the weights barely move while timed).
const BENCH_LR: f64 = 1e-5;

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
    let x = Tensor::randn([s.batch, 3, s.size, s.size], (Kind::Float, device));
    let y = Tensor::rand([s.batch, 1, s.size, s.size], (Kind::Float, device))
        .gt(0.5)
        .to_kind(Kind::Float);
    let mut adam = Adam::new(AdamConfig { lr: BENCH_LR, ..Default::default() });
    let step = || {
        let loss = LossKind::Dice.compute(&net.forward_t(&x, true), &y);
        zero_grad(&vs);
        loss.backward();
        adam.step(&vs);
    };
    let images = (s.steps as i64 * s.batch) as f64;
    let train = images / timed(device, s.warmup, s.steps, step);
    let infer = images
        / tch::no_grad(|| {
            timed(device, s.warmup, s.steps, || {
                let _ = net.forward_t(&x, false);
            })
        });
    Ok(SegBench {
        arch: s.arch.name().into(),
        train_images_per_s: train,
        infer_images_per_s: infer,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// The PyTorch side: `python script` with the same spec and thread count.
pub fn reference(s: &SegBenchSpec, python: &Path, script: &Path, device: &str) -> Result<SegBench> {
    let args = flags(&[
        ("--arch", s.arch.name().to_string()),
        ("--size", s.size.to_string()),
        ("--batch", s.batch.to_string()),
        ("--base", s.base.to_string()),
        ("--warmup", s.warmup.to_string()),
        ("--steps", s.steps.to_string()),
        ("--threads", tch::get_num_threads().to_string()),
        ("--device", device.to_string()),
    ]);
    run_script(python, script, &args)
}
