//! Prediction and ensembling: each model sees the image resized to its own input size; its
//! probability map is resized back to the original size; the maps of all models are averaged,
//! thresholded at 0.5 and written as ISIC submission PNGs (`<id>_segmentation.png`,
//! single-channel 8-bit, 0/255, exactly the image's size). With flip test-time augmentation
//! ([`SegTta::Flip`]) each model's map is the mean probability over the four flips of its input.
use lesion_core::precision::{to_float32, vars_to_channels_last, Autocast, Precision};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::{GrayImage, Luma, Rgb, RgbImage};
use imageproc::region_labelling::{connected_components, Connectivity};
use indicatif::ProgressBar;
use lesion_data::manifest::ManifestRow;
use lesion_data::par::CollectInOrder;
use lesion_models::{SegNet, SegNetConfig};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

use lesion_core::run::{load_trained, Trained};
use lesion_core::{Result, TrainError};
use lesion_data::cache::ResizeMethod;

use crate::config::SegTrainConfig;
use crate::dataset::{image_tensor, normalize};

/// Probability above which a pixel is lesion.
pub const THRESHOLD: f64 = 0.5;
/// The ISIC submission file name suffix.
pub const SUBMISSION_SUFFIX: &str = "_segmentation.png";
const OVERLAY_SUFFIX: &str = "_overlay.png";
const PRED_COLOUR: Rgb<u8> = Rgb([0, 255, 0]);
const TRUTH_COLOUR: Rgb<u8> = Rgb([255, 0, 255]);
/// Spatial dims of an `N×C×H×W` batch that [`SegTta::Flip`] flips: none (identity), width
/// (horizontal), height (vertical), both. The four form a group (each is its own inverse and
/// any two compose to the third), which is what makes the flip TTA flip-equivariant.
const FLIP_VIEWS: [&[i64]; 4] = [&[], &[3], &[2], &[2, 3]];

/// Test-time augmentation at segmentation prediction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegTta {
    /// The image once: the probability is the sigmoid of the net's logits.
    #[default]
    None,
    /// Mean of the sigmoid probabilities over identity, horizontal, vertical and both flips,
    /// each mapped back by its flip (four views in one forward pass).
    Flip,
}

impl SegTta {
    pub fn name(self) -> &'static str {
        match self {
            SegTta::None => "none",
            SegTta::Flip => "flip",
        }
    }
}

impl FromStr for SegTta {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(SegTta::None),
            "flip" => Ok(SegTta::Flip),
            other => {
                Err(TrainError::Config(format!("unknown TTA '{other}' (expected none or flip)")))
            }
        }
    }
}

impl std::fmt::Display for SegTta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Lesion probability `N×1×H×W` of a normalised batch `xs` (`N×3×H×W`) under `tta`, in eval
/// mode. [`SegTta::None`] is exactly `sigmoid(net(xs))`. [`SegTta::Flip`] stacks the four
/// flipped views into one batch (BatchNorm in eval mode makes that equal to four passes),
/// flips each view's probabilities back and averages them; the result is flip-equivariant
/// for any net, so a flip-symmetric input gets a flip-symmetric map.
pub fn tta_probability(net: &SegNet, xs: &Tensor, tta: SegTta) -> Tensor {
    match tta {
        SegTta::None => net.forward_t(xs, false).sigmoid(),
        SegTta::Flip => {
            let views: Vec<Tensor> = FLIP_VIEWS.iter().map(|dims| flip(xs, dims)).collect();
            let probs = net.forward_t(&Tensor::cat(&views, 0), false).sigmoid();
            let back: Vec<Tensor> = probs
                .chunk(FLIP_VIEWS.len() as i64, 0)
                .iter()
                .zip(FLIP_VIEWS)
                .map(|(p, dims)| flip(p, dims))
                .collect();
            Tensor::stack(&back, 0).mean_dim([0i64].as_slice(), false, Kind::Float)
        }
    }
}

/// `xs` flipped along `dims` (a shallow copy for no dims).
fn flip(xs: &Tensor, dims: &[i64]) -> Tensor {
    if dims.is_empty() {
        xs.shallow_clone()
    } else {
        xs.flip(dims)
    }
}

/// A trained model ready for inference.
pub struct LoadedModel {
    pub name: String,
    pub cfg: SegNetConfig,
    pub resize: ResizeMethod,
    pub net: SegNet,
    /// Test-time augmentation: the run's `predict.tta` unless the caller overrides it.
    pub tta: SegTta,
    /// Autocast precision of the forward passes (the run's `train.precision`).
    pub precision: Precision,
    _vs: VarStore,
}

/// Loads a model from a run folder (its `config.toml` and best checkpoint) or from a
/// checkpoint file that has a `config.toml` two folders up.
pub fn load_model(path: &Path, device: Device) -> Result<LoadedModel> {
    let Trained { run_dir, cfg, model: net, vars } =
        load_trained(path, device, |cfg: &SegTrainConfig, vs| Ok(cfg.model.build(&vs.root())?))?;
    let name = run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if cfg.train.channels_last {
        vars_to_channels_last(&vars);
    }
    Ok(LoadedModel {
        name,
        cfg: cfg.model,
        resize: cfg.data.resize,
        net,
        tta: cfg.predict.tta,
        precision: cfg.train.precision,
        _vs: vars,
    })
}

/// Averaged lesion probability at the image's own size (`H×W` float tensor on the CPU); each
/// model predicts with its own [`LoadedModel::tta`].
/// `source` names the image in error messages.
pub fn predict_probability<M: std::borrow::Borrow<LoadedModel>>(
    models: &[M],
    img: &RgbImage,
    source: &Path,
    device: Device,
) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    let mut sum: Option<Tensor> = None;
    tch::no_grad(|| -> Result<()> {
        for m in models {
            let m = m.borrow();
            let s = m.cfg.input_size as u32;
            let small = lesion_data::cache::resize_rgb(source, img, s, m.resize)?;
            let x = normalize(&image_tensor(&small).to_device(device), m.cfg.input_norm());
            let p = {
                let _autocast = Autocast::enter(device, m.precision)?;
                to_float32(tta_probability(&m.net, &x, m.tta))
            };
            let p = p
                .upsample_bilinear2d([h as i64, w as i64], false, None, None)
                .to_device(Device::Cpu);
            sum = Some(match sum.take() {
                Some(acc) => acc + p,
                None => p,
            });
        }
        Ok(())
    })?;
    let sum = sum.ok_or_else(|| TrainError::Config("no models to predict with".into()))?;
    Ok((sum / models.len() as f64).view([h as i64, w as i64]))
}

/// Optional post-processing of a predicted mask (off by default, as in the paper).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostProcess {
    pub largest_component: bool,
    pub fill_holes: bool,
}

/// Thresholds a probability map at [`THRESHOLD`] into a 0/255 mask and applies
/// post-processing.
pub fn to_mask(prob: &Tensor, post: PostProcess) -> Result<GrayImage> {
    to_mask_at(prob, THRESHOLD, post)
}

/// Thresholds a probability map (lesion where strictly above `threshold`) into a 0/255 mask
/// and applies post-processing.
pub fn to_mask_at(prob: &Tensor, threshold: f64, post: PostProcess) -> Result<GrayImage> {
    if !(0.0..1.0).contains(&threshold) {
        return Err(TrainError::Config(format!("mask threshold {threshold} is outside [0, 1)")));
    }
    let size = prob.size();
    let (h, w) = (size[0] as u32, size[1] as u32);
    let bytes: Vec<u8> =
        Vec::<u8>::try_from(prob.gt(threshold).to_kind(Kind::Uint8).flatten(0, -1) * 255)?;
    let mut mask = GrayImage::from_raw(w, h, bytes)
        .ok_or_else(|| TrainError::Config("mask buffer size".into()))?;
    if post.largest_component {
        mask = largest_component(&mask);
    }
    if post.fill_holes {
        mask = fill_holes(&mask);
    }
    Ok(mask)
}

/// Keeps the largest 8-connected foreground component.
pub fn largest_component(mask: &GrayImage) -> GrayImage {
    let labels = connected_components(mask, Connectivity::Eight, Luma([0u8]));
    let mut counts = std::collections::HashMap::<u32, u64>::new();
    for p in labels.pixels() {
        if p[0] != 0 {
            *counts.entry(p[0]).or_default() += 1;
        }
    }
    let Some((&best, _)) = counts.iter().max_by_key(|(l, c)| (**c, std::cmp::Reverse(**l))) else {
        return mask.clone();
    };
    GrayImage::from_fn(mask.width(), mask.height(), |x, y| {
        Luma([if labels.get_pixel(x, y)[0] == best { 255 } else { 0 }])
    })
}

/// Fills background regions (4-connected) that do not touch the image border.
pub fn fill_holes(mask: &GrayImage) -> GrayImage {
    let inverted = GrayImage::from_fn(mask.width(), mask.height(), |x, y| {
        Luma([255 - mask.get_pixel(x, y)[0]])
    });
    let labels = connected_components(&inverted, Connectivity::Four, Luma([0u8]));
    let (w, h) = mask.dimensions();
    let mut touches = std::collections::HashSet::new();
    for x in 0..w {
        touches.insert(labels.get_pixel(x, 0)[0]);
        touches.insert(labels.get_pixel(x, h - 1)[0]);
    }
    for y in 0..h {
        touches.insert(labels.get_pixel(0, y)[0]);
        touches.insert(labels.get_pixel(w - 1, y)[0]);
    }
    GrayImage::from_fn(w, h, |x, y| {
        let l = labels.get_pixel(x, y)[0];
        Luma([if mask.get_pixel(x, y)[0] > 0 || (l != 0 && !touches.contains(&l)) {
            255
        } else {
            0
        }])
    })
}

/// Pixels of `mask` with a 4-neighbour outside it (or on the image edge).
fn contour(mask: &GrayImage) -> Vec<(u32, u32)> {
    let (w, h) = mask.dimensions();
    let inside = |x: i64, y: i64| {
        x >= 0
            && y >= 0
            && x < w as i64
            && y < h as i64
            && mask.get_pixel(x as u32, y as u32)[0] > 127
    };
    let mut out = Vec::new();
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            if inside(x, y)
                && !(inside(x - 1, y) && inside(x + 1, y) && inside(x, y - 1) && inside(x, y + 1))
            {
                out.push((x as u32, y as u32));
            }
        }
    }
    out
}

/// The image with the prediction's contour (green) and the truth's (magenta), 2 px thick.
pub fn overlay(img: &RgbImage, pred: &GrayImage, truth: Option<&GrayImage>) -> RgbImage {
    let mut out = img.clone();
    let (w, h) = out.dimensions();
    let mut paint = |pts: Vec<(u32, u32)>, c: Rgb<u8>| {
        for (x, y) in pts {
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                if x + dx < w && y + dy < h {
                    out.put_pixel(x + dx, y + dy, c);
                }
            }
        }
    };
    if let Some(t) = truth {
        if t.dimensions() == (w, h) {
            paint(contour(t), TRUTH_COLOUR);
        }
    }
    paint(contour(pred), PRED_COLOUR);
    out
}

#[derive(Debug, Clone, Default)]
pub struct PredictOptions {
    pub post: PostProcess,
    pub overlays: bool,
    pub progress: bool,
}

/// Predicts every row, writing `<out>/<id>_segmentation.png` (and `<out>/overlays/`).
/// Returns the written mask paths. Written in a staging folder moved into place once every
/// image is done ([`lesion_core::staged`]): a bad image leaves no partial output, and an
/// existing non-empty `out` is refused, so old and new masks are never mixed.
pub fn predict_rows(
    models: &[LoadedModel],
    rows: &[ManifestRow],
    out: &Path,
    device: Device,
    opts: &PredictOptions,
) -> Result<Vec<PathBuf>> {
    let staged = lesion_core::staged::StagedDir::begin(out)?;
    let stage = staged.path();
    let bar =
        if opts.progress { ProgressBar::new(rows.len() as u64) } else { ProgressBar::hidden() };
    let mut written = Vec::with_capacity(rows.len());
    for row in rows {
        let img = lesion_data::io::load_rgb(&row.image_path)?;
        let prob = predict_probability(models, &img, &row.image_path, device)?;
        let mask = to_mask(&prob, opts.post)?;
        let name = format!("{}{SUBMISSION_SUFFIX}", row.id);
        let mask_image = image::DynamicImage::ImageLuma8(mask.clone());
        lesion_data::io::save_png_atomic(&stage.join(&name), &mask_image)?;
        if opts.overlays {
            let truth = lesion_data::mask::load_row_mask(row)?;
            let ov = overlay(&img, &mask, truth.as_ref());
            lesion_data::io::save_png_atomic(
                &stage.join("overlays").join(format!("{}{OVERLAY_SUFFIX}", row.id)),
                &image::DynamicImage::ImageRgb8(ov),
            )?;
        }
        written.push(out.join(name));
        bar.inc(1);
    }
    bar.finish_and_clear();
    staged.commit()?;
    Ok(written)
}

/// Writes the ground-truth masks of `rows` as ISIC-named PNGs (0/255) into `out`, so that the
/// scorer can compare them with predictions. Rows without a mask are skipped.
pub fn write_truth_masks(rows: &[ManifestRow], out: &Path) -> Result<usize> {
    std::fs::create_dir_all(out).map_err(|e| TrainError::file(out, e))?;
    rows.par_iter()
        .filter(|r| r.mask_path.is_some())
        .map(|r| {
            // Read with the levels the row records (0/1 masks imported with --masks-01).
            let Some(mask) = lesion_data::mask::load_row_mask(r)? else {
                return Ok(0);
            };
            lesion_data::io::save_png_atomic(
                &out.join(format!("{}{SUBMISSION_SUFFIX}", r.id)),
                &image::DynamicImage::ImageLuma8(mask),
            )?;
            Ok(1)
        })
        .collect_in_order()
        .map(|written: Vec<usize>| written.into_iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lesion_models::Arch;

    fn small_net() -> (VarStore, SegNet) {
        tch::manual_seed(11);
        let vs = VarStore::new(Device::Cpu);
        let cfg = SegNetConfig {
            arch: Arch::Unet,
            input_size: 32,
            base: 4,
            depth: 2,
            ..Default::default()
        };
        let net = cfg.build(&vs.root()).unwrap();
        (vs, net)
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// A flip-symmetric input gets a flip-symmetric map under flip TTA (the net alone is not
    /// flip-equivariant, so without TTA it does not), and flip TTA commutes with flips.
    #[test]
    fn flip_tta_is_flip_equivariant() {
        let (_vs, net) = small_net();
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let sym = &x + x.flip([3]) + x.flip([2]) + x.flip([2, 3]);
        tch::no_grad(|| {
            let p = tta_probability(&net, &sym, SegTta::Flip);
            assert_eq!(p.size(), vec![2, 1, 32, 32]);
            for dims in [&[3i64][..], &[2], &[2, 3]] {
                assert!(max_abs_diff(&p, &p.flip(dims)) < 1e-6, "{dims:?}");
            }
            let plain = tta_probability(&net, &sym, SegTta::None);
            assert!(
                max_abs_diff(&plain, &plain.flip([3])) > 1e-4,
                "test needs a non-equivariant net"
            );
            let ph = tta_probability(&net, &x.flip([3]), SegTta::Flip);
            let p = tta_probability(&net, &x, SegTta::Flip);
            assert!(max_abs_diff(&ph, &p.flip([3])) < 1e-6);
            // The mean of four views, each a probability.
            let direct: Vec<Tensor> = FLIP_VIEWS
                .iter()
                .map(|d| flip(&net.forward_t(&flip(&x, d), false).sigmoid(), d))
                .collect();
            let mean = direct.iter().fold(Tensor::zeros_like(&p), |acc, t| acc + t) / 4.0;
            assert!(max_abs_diff(&p, &mean) < 1e-6);
        });
    }

    /// `none` is the plain prediction, bit for bit.
    #[test]
    fn no_tta_is_the_plain_sigmoid() {
        let (_vs, net) = small_net();
        let x = Tensor::randn([1, 3, 32, 32], (Kind::Float, Device::Cpu));
        tch::no_grad(|| {
            let plain = net.forward_t(&x, false).sigmoid();
            assert!(tta_probability(&net, &x, SegTta::None).equal(&plain));
        });
        assert_eq!("flip".parse::<SegTta>().unwrap(), SegTta::Flip);
        assert_eq!("none".parse::<SegTta>().unwrap(), SegTta::default());
        assert!("hflip".parse::<SegTta>().is_err());
    }

    fn mask_from(rows: &[&str]) -> GrayImage {
        let h = rows.len() as u32;
        let w = rows[0].len() as u32;
        GrayImage::from_fn(w, h, |x, y| {
            Luma([if rows[y as usize].as_bytes()[x as usize] == b'#' { 255 } else { 0 }])
        })
    }

    #[test]
    fn largest_component_keeps_only_the_biggest_blob() {
        let m = mask_from(&["##....", "##..#.", "......", "...###", "...###"]);
        let out = largest_component(&m);
        assert_eq!(out, mask_from(&["......", "......", "......", "...###", "...###"]));
    }

    #[test]
    fn holes_are_filled_but_border_bays_are_not() {
        let m = mask_from(&["#####.", "#..#..", "#####.", "......"]);
        let out = fill_holes(&m);
        assert_eq!(out, mask_from(&["#####.", "####..", "#####.", "......"]));
    }

    #[test]
    fn threshold_is_strictly_above_half() {
        let prob = Tensor::from_slice(&[0.2f32, 0.5, 0.50001, 0.9]).view([2, 2]);
        let m = to_mask(&prob, PostProcess::default()).unwrap();
        assert_eq!(m.as_raw(), &vec![0, 0, 255, 255]);
    }

    #[test]
    fn overlay_draws_both_contours() {
        let img = RgbImage::new(8, 8);
        let pred = mask_from(&[
            "........", ".####...", ".####...", ".####...", ".####...", "........", "........",
            "........",
        ]);
        let ov = overlay(&img, &pred, Some(&pred));
        assert!(ov.pixels().any(|p| *p == PRED_COLOUR));
        assert!(ov.pixels().filter(|p| p[0] == 0 && p[1] == 0 && p[2] == 0).count() > 0);
    }
}
