//! TorchScript copies of a bundle's nets (`lesion export --torchscript`), for serving with
//! PyTorch alone (`torch.jit.load`; TorchServe, Triton's PyTorch backend):
//!
//! ```text
//! BUNDLE/torchscript/seg-<i>.pt   float32 N×3×S×S RGB on [0, 1] → lesion probability N×1×S×S
//! BUNDLE/torchscript/cls-<i>.pt   float32 N×3×S×S RGB on [0, 1] → class probabilities N×3
//! ```
//!
//! `<i>` is the net's index in its task, as in its folder `seg/<i>` / `cls/<i>`; S is the net's
//! own input size (the card's `input_size`). Each file is the net traced
//! (`CModule::create_by_tracing`) in evaluation mode under `no_grad`, with its input
//! normalisation inside, so a caller only scales pixels to [0, 1]. Invariants of every file
//! written:
//! - it computes what the bundle's own code computes for one view of an S×S image: the
//!   segmentation net's sigmoid, or the classifier's softmax in the card's class order, with
//!   no test-time augmentation, no resizing and no averaging over the bundle's nets (those
//!   stay with the caller);
//! - traced with a batch of 1 on the CPU (its weights are constants on the CPU;
//!   `torch.jit.load(…, map_location=…)` moves them), then reloaded from the file and run on a
//!   batch of [`CHECK_BATCH`] other images: its outputs equal the direct net's to
//!   [`TOLERANCE`] (the measured difference is in the card) or the export fails, naming the file;
//! - a classifier with an SVM head (`svm-head.json`) is exported as its backbone only: the
//!   output is the penultimate features N×F the head is applied to (an SVM is not a torch
//!   op), and the card's entry says so.
//!
//! Tracing records aten ops only: a tensor built from host data inside the traced code
//! (`Tensor::from_slice` is `zeros` plus a copy the tracer never sees) is recorded as zeros.
//! The normalisers therefore use scalar per-channel arithmetic
//! ([`lesion_models::channel_affine`]), which also keeps devices out of the graph; the check
//! above catches any other such op.
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{CModule, Device, Kind, Tensor};

use lesion_core::run::{load_trained, Trained};
use lesion_core::{Result, TrainError};
use lesion_data::labels::LesionClass;
use lesion_models::classifier::ColorConstancy;
use lesion_seg::config::SegTrainConfig;
use lesion_seg::dataset::normalize as seg_normalize;
use lesion_seg::predict::{tta_probability, SegTta};
use lesion_stack::svm_head::{read_head, SVM_HEAD_FILE};

use crate::bundle::{ModelEntry, Task};

/// The bundle's folder of TorchScript files.
pub const TORCHSCRIPT_DIR: &str = "torchscript";
/// File extension of a TorchScript archive.
const EXTENSION: &str = "pt";
/// Max |traced − direct| accepted at export, on every output value.
pub const TOLERANCE: f64 = 1e-5;
/// Batch size the nets are traced with (the batch dimension stays free in the trace).
const TRACE_BATCH: i64 = 1;
/// Batch size of the check at export: other than the trace's (1), so a batch size baked into
/// the trace is caught.
pub const CHECK_BATCH: i64 = 2;
/// Seeds of the trace and check images (distinct: the check is on images the trace never saw).
const TRACE_SEED: u64 = 0x5eed_0001;
const CHECK_SEED: u64 = 0x5eed_0002;
/// Knuth's MMIX linear congruential generator (the probe images are a pure function of the
/// seed; the global torch generator is left alone).
const LCG_MUL: u64 = 6_364_136_223_846_793_005;
const LCG_INC: u64 = 1_442_695_040_888_963_407;
/// The top 8 bits of the generator's state are one 8-bit pixel value.
const PIXEL_SHIFT: u32 = 56;
/// 8-bit pixel scale: the segmentation normaliser takes 0–255, the traced input is on [0, 1].
const PIXEL_MAX: f64 = 255.0;
/// The TorchScript class and method the traced graph becomes (`m(x)` calls `forward`).
const MODULE_NAME: &str = "LesionNet";
const METHOD_NAME: &str = "forward";
/// What every traced module takes, in words (the card's `input`).
pub const INPUT: &str = "float32 N×3×S×S RGB on [0, 1] (S = input_size)";

/// One TorchScript file of the bundle, as the card describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TorchScriptEntry {
    /// Path relative to the bundle (`torchscript/seg-0.pt`).
    pub file: String,
    pub task: Task,
    /// The model folder it was traced from (`seg/0`).
    pub model_dir: String,
    /// S of the input (the net's own input size: the module is traced at S×S).
    pub input_size: i64,
    pub input: String,
    pub output: String,
    /// Max |traced − direct| measured at export on a batch of [`CHECK_BATCH`] images.
    pub max_abs_diff_at_export: f64,
    /// What the module leaves out of the bundle's prediction (TTA, resizing, an SVM head).
    pub note: String,
}

/// From a [0, 1] batch to the exported output.
type Forward = Box<dyn Fn(&Tensor) -> Result<Tensor>>;
/// `(output, note)` for the card, given the output's width (its second dimension).
type Describe = Box<dyn Fn(i64) -> (String, String)>;

/// A net ready to trace.
struct Exportable {
    forward: Forward,
    input_size: i64,
    describe: Describe,
}

/// Traces every net of `models` (their folders under `root`, a bundle or its staging folder)
/// into `root/torchscript/<task>-<i>.pt` and returns the card's entries, in `models`' order.
/// `device` is where tracing runs and where the weights of the files live (the CPU for
/// portable files).
pub fn export_torchscript(
    root: &Path,
    models: &[ModelEntry],
    device: Device,
) -> Result<Vec<TorchScriptEntry>> {
    let out_dir = root.join(TORCHSCRIPT_DIR);
    std::fs::create_dir_all(&out_dir).map_err(|e| TrainError::file(&out_dir, e))?;
    models.iter().map(|m| export_one(root, m, device)).collect()
}

fn export_one(root: &Path, model: &ModelEntry, device: Device) -> Result<TorchScriptEntry> {
    let dir = root.join(&model.dir);
    let net = match model.task {
        Task::Segmentation => segmentation(&dir, device)?,
        Task::Classification => classification(&dir, device)?,
    };
    let stem = model.dir.replace('/', "-");
    let file = format!("{TORCHSCRIPT_DIR}/{stem}.{EXTENSION}");
    let path = root.join(&file);
    let (max_abs_diff_at_export, width) = trace_and_check(&net, &path, device)?;
    let (output, note) = (net.describe)(width);
    Ok(TorchScriptEntry {
        file,
        task: model.task,
        model_dir: model.dir.clone(),
        input_size: net.input_size,
        input: INPUT.to_string(),
        output,
        max_abs_diff_at_export,
        note,
    })
}

/// The segmentation net of a model folder: [0, 1] → ×255 → its normalisation → sigmoid of
/// the logits, exactly [`tta_probability`] with [`SegTta::None`] as the bundle predicts.
fn segmentation(dir: &Path, device: Device) -> Result<Exportable> {
    // `lesion_seg::predict::load_model`'s own loader, keeping the variables to freeze them.
    let Trained { cfg, model: net, mut vars, .. } =
        load_trained(dir, device, |cfg: &SegTrainConfig, vs| Ok(cfg.model.build(&vs.root())?))?;
    // The tracer refuses to bake a tensor that requires grad into the graph as a constant;
    // the net holds shallow copies of the variables, which share their `requires_grad`.
    vars.freeze();
    let norm = cfg.model.input_norm();
    let size = cfg.model.input_size;
    Ok(Exportable {
        forward: Box::new(move |x| {
            Ok(tta_probability(&net, &seg_normalize(&(x * PIXEL_MAX), norm), SegTta::None))
        }),
        input_size: size,
        describe: Box::new(move |_| {
            (
                format!("float32 N×1×{size}×{size} lesion probability (sigmoid of the logits)"),
                format!(
                    "normalisation {norm:?} inside; no flip TTA and no resizing: resize the image \
                     to {size}×{size}, then the probability map back to the image's size; the \
                     bundle averages its segmentation nets' maps and thresholds the mean"
                ),
            )
        }),
    })
}

/// The classifier of a model folder: [0, 1] → its normalisation → softmax of the eval-mode
/// logits ([`lesion_cls::model::ClsModel::eval_with_features`], as the bundle predicts); with
/// an SVM head, the features that head is applied to.
fn classification(dir: &Path, device: Device) -> Result<Exportable> {
    let mut m = lesion_cls::model::load_model(dir, device)?;
    if m.cfg.model.pooling.needs_mask() {
        return Err(TrainError::file(
            dir,
            "this classifier pools its features by the lesion mask (model.pooling = global-and-lesion): a TorchScript module of RGB images cannot hold it; use `lesion predict --bundle` or `lesion serve`",
        ));
    }
    // The tracer refuses to bake a tensor that requires grad into the graph as a constant.
    m.vs.freeze();
    let head = read_head(dir)?;
    let size = m.cfg.model.input_size;
    // What happens to the pixels inside the module: colour constancy (if any), then the
    // normalisation (`model_input`).
    let norm = match m.cfg.model.color_constancy {
        ColorConstancy::None => m.cfg.model.normalization.name().to_string(),
        cc => format!("{} colour constancy then {}", cc.name(), m.cfg.model.normalization.name()),
    };
    let has_head = head.is_some();
    let classes: Vec<String> = LesionClass::ALL.iter().map(|c| c.to_string()).collect();
    let tta = head.as_ref().map(|h| (h.tta, h.descriptors));
    Ok(Exportable {
        forward: Box::new(move |x| {
            let (logits, features) = m.eval_with_features(x)?;
            Ok(if has_head { features } else { logits.softmax(-1, Kind::Float) })
        }),
        input_size: size,
        describe: Box::new(move |width| match tta {
            None => (
                format!(
                    "float32 N×{width} class probabilities (softmax) of {}",
                    classes.join(", ")
                ),
                format!(
                    "normalisation {norm} inside; no TTA and no resizing: resize the image \
                     to {size}×{size}; the bundle pools its classifiers' probabilities over TTA \
                     and averages them"
                ),
            ),
            Some((tta, descriptors)) => (
                format!("float32 N×{width} backbone features (the SVM head is not exported)"),
                format!(
                    "backbone only: the SVM head ({SVM_HEAD_FILE} in the model folder) is not a \
                     torch op; the bundle averages these features over TTA {tta}, appends \
                     {descriptors} lesion descriptors and the head's metadata, and applies the \
                     head; normalisation {norm} inside, no resizing (resize to {size}×{size})"
                ),
            ),
        }),
    })
}

/// `batch` pseudo-random images N×3×S×S of 8-bit values scaled to [0, 1], a pure function of
/// `seed`.
fn probe(batch: i64, size: i64, seed: u64) -> Tensor {
    let n = (batch * 3 * size * size) as usize;
    let mut state = seed;
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_mul(LCG_MUL).wrapping_add(LCG_INC);
            (state >> PIXEL_SHIFT) as f32 / PIXEL_MAX as f32
        })
        .collect();
    Tensor::from_slice(&values).view([batch, 3, size, size])
}

/// Traces `net` into `path`, reloads the file and compares it with the direct net on
/// [`CHECK_BATCH`] other images; returns the max |difference| and the output's width.
fn trace_and_check(net: &Exportable, path: &Path, device: Device) -> Result<(f64, i64)> {
    let size = net.input_size;
    let trace_input = probe(TRACE_BATCH, size, TRACE_SEED).to_device(device);
    let mut failure: Option<TrainError> = None;
    let module = tch::no_grad(|| {
        CModule::create_by_tracing(MODULE_NAME, METHOD_NAME, &[trace_input], &mut |xs| {
            match (net.forward)(&xs[0]) {
                Ok(y) => vec![y],
                Err(e) => {
                    // Tracing must still end (an output is required); the error is returned.
                    failure = Some(e);
                    vec![xs[0].shallow_clone()]
                }
            }
        })
    })
    .map_err(|e| TrainError::file(path, format!("tracing failed: {e}")))?;
    if let Some(e) = failure {
        return Err(e);
    }
    module.save(path).map_err(|e| TrainError::file(path, format!("cannot save: {e}")))?;
    let loaded = CModule::load_on_device(path, device)
        .map_err(|e| TrainError::file(path, format!("cannot load back: {e}")))?;
    let x = probe(CHECK_BATCH, size, CHECK_SEED).to_device(device);
    let (want, have) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
        let want = (net.forward)(&x)?;
        let have = loaded
            .forward_ts(&[&x])
            .map_err(|e| TrainError::file(path, format!("does not run: {e}")))?;
        Ok((want, have))
    })?;
    if want.size() != have.size() {
        return Err(TrainError::file(
            path,
            format!(
                "output {:?} for a batch of {CHECK_BATCH}, the net gives {:?} (traced with a \
                 batch of {TRACE_BATCH})",
                have.size(),
                want.size()
            ),
        ));
    }
    let diff = (&want - &have).abs().max().double_value(&[]);
    // NaN is refused too.
    if diff.is_nan() || diff > TOLERANCE {
        return Err(TrainError::file(
            path,
            format!("differs from the net by {diff:e} (tolerance {TOLERANCE:e})"),
        ));
    }
    let width = want.size().get(1).copied().unwrap_or(0);
    Ok((diff, width))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_deterministic_pixels_and_distinct() {
        let a = probe(2, 4, TRACE_SEED);
        assert_eq!(a.size(), vec![2, 3, 4, 4]);
        assert!(a.equal(&probe(2, 4, TRACE_SEED)));
        assert!(!a.equal(&probe(2, 4, CHECK_SEED)));
        let (lo, hi) = (a.min().double_value(&[]), a.max().double_value(&[]));
        assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi) && hi > lo);
        // Every value is a whole 8-bit pixel over 255.
        let scaled = &a * PIXEL_MAX;
        assert!((&scaled - scaled.round()).abs().max().double_value(&[]) < 1e-4);
    }
}
