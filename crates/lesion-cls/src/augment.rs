//! Classification augmentation, applied per batch on tensors: a random crop of 5–100 % of the
//! area with aspect 0.75–1.33 resized to the input, horizontal/vertical flips and quarter
//! turns — all one affine map, so one `grid_sampler` call warps the whole batch — then,
//! on the [0, 1] scale and clamped after each step: a colour cast (each channel × its own
//! gain; off by default), brightness ± 32/255, contrast about the image's mean grey (off by
//! default) and saturation × [0.5, 1.5].
//!
//! Parameters are a pure function of (seed, epoch, sample) (see [`sample_params`]), so a
//! resumed run and a test-time replica see exactly the same transforms.
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use lesion_core::seed::sample_rng;
use lesion_core::{Result, TrainError};

const GRID_BILINEAR: i64 = 0;
const PAD_REFLECTION: i64 = 2;
/// Pixel centres at ±(1 − 1/size): under it a full-area crop is exactly a bilinear resize
/// (`align_corners = false`) and quarter turns of a square map pixel centres to centres.
const ALIGN_CORNERS: bool = false;
/// Attempts at drawing a crop that fits before falling back to the whole image
/// (torchvision's `RandomResizedCrop` convention).
const CROP_ATTEMPTS: usize = 10;
/// Channel weights of the grey level used by the saturation change (ITU-R BT.601, as
/// torchvision's `rgb_to_grayscale`).
const GREY_WEIGHTS: [f64; 3] = [0.299, 0.587, 0.114];
/// Quarter turns in a full turn.
const QUARTER_TURNS: u8 = 4;
/// Largest `color_gain` (log scale): a channel gain of e^±1, ×0.37-2.7.
const MAX_COLOR_GAIN: f64 = 1.0;
/// Colour channels; any channel after them (the lesion mask) is only warped.
const RGB: i64 = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClsAugmentConfig {
    pub enabled: bool,
    /// Crop area as a fraction of the image, drawn from U(min_area, max_area).
    pub min_area: f64,
    pub max_area: f64,
    /// Crop aspect (width / height), log-uniform in [min_aspect, max_aspect].
    pub min_aspect: f64,
    pub max_aspect: f64,
    pub hflip: bool,
    pub vflip: bool,
    /// Random quarter turns (0°, 90°, 180°, 270°).
    pub rot90: bool,
    /// Brightness offset drawn from U(−brightness, brightness) on the [0, 1] scale.
    pub brightness: f64,
    /// Saturation factor drawn from U(saturation_min, saturation_max).
    pub saturation_min: f64,
    pub saturation_max: f64,
    /// Colour cast: each channel is multiplied by exp(U(−color_gain, color_gain)), drawn per
    /// channel (an illuminant or camera white balance other than the training set's). 0 = off.
    /// Left out of written configs when off, so older configs and sweep ids are unchanged.
    #[serde(skip_serializing_if = "is_off")]
    pub color_gain: f64,
    /// Contrast factor drawn from U(1 − contrast, 1 + contrast), applied about the image's mean
    /// grey (torchvision's `adjust_contrast`). 0 = off; written only when on.
    #[serde(skip_serializing_if = "is_off")]
    pub contrast: f64,
}

/// A photometric range of zero draws nothing: the parameters of every other field, and so
/// every run made before the field existed, stay exactly as they were.
fn is_off(range: &f64) -> bool {
    *range == 0.0
}

impl Default for ClsAugmentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_area: 0.05,
            max_area: 1.0,
            min_aspect: 0.75,
            max_aspect: 1.33,
            hflip: true,
            vflip: true,
            rot90: true,
            brightness: 32.0 / 255.0,
            saturation_min: 0.5,
            saturation_max: 1.5,
            color_gain: 0.0,
            contrast: 0.0,
        }
    }
}

impl ClsAugmentConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.min_area > 0.0 && self.min_area <= self.max_area && self.max_area <= 1.0) {
            return Err(TrainError::Config("augment: need 0 < min_area <= max_area <= 1".into()));
        }
        if !(self.min_aspect > 0.0 && self.min_aspect <= self.max_aspect) {
            return Err(TrainError::Config("augment: need 0 < min_aspect <= max_aspect".into()));
        }
        if !(self.brightness >= 0.0
            && self.saturation_min >= 0.0
            && self.saturation_min <= self.saturation_max)
        {
            return Err(TrainError::Config(
                "augment: need brightness >= 0 and 0 <= saturation_min <= saturation_max".into(),
            ));
        }
        // A contrast factor must stay positive, or the image would be inverted about its grey;
        // a gain beyond e^MAX_COLOR_GAIN is no colour cast any more (and far enough out
        // overflows f32).
        if !((0.0..=MAX_COLOR_GAIN).contains(&self.color_gain)
            && (0.0..1.0).contains(&self.contrast))
        {
            return Err(TrainError::Config(format!(
                "augment: need 0 <= color_gain <= {MAX_COLOR_GAIN} and 0 <= contrast < 1"
            )));
        }
        Ok(())
    }
}

/// One sample's transform. Crop centre and size are in normalised coordinates of the source
/// (the image spans [−1, 1]; `width = height = 1` is the whole image). Invariant: the crop lies
/// inside the image (`|centre| + half-size <= 1` on both axes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClsAugParams {
    pub centre_x: f64,
    pub centre_y: f64,
    /// Crop width and height as fractions of the image's.
    pub width: f64,
    pub height: f64,
    pub hflip: bool,
    pub vflip: bool,
    /// Counter-clockwise quarter turns of the content, 0–3.
    pub quarter_turns: u8,
    /// Added on the [0, 1] scale.
    pub brightness: f64,
    /// 1 = unchanged, 0 = grey.
    pub saturation: f64,
    /// Per-channel (R, G, B) multipliers, all 1 = unchanged.
    pub gain: [f64; 3],
    /// 1 = unchanged, 0 = the mean grey everywhere.
    pub contrast: f64,
}

impl ClsAugParams {
    pub const IDENTITY: ClsAugParams = ClsAugParams {
        centre_x: 0.0,
        centre_y: 0.0,
        width: 1.0,
        height: 1.0,
        hflip: false,
        vflip: false,
        quarter_turns: 0,
        brightness: 0.0,
        saturation: 1.0,
        gain: [1.0; 3],
        contrast: 1.0,
    };

    /// Whether any colour step changes the pixels.
    fn changes_colour(&self) -> bool {
        self.brightness != 0.0
            || self.saturation != 1.0
            || self.contrast != 1.0
            || self.gain != [1.0; 3]
    }

    /// The 2×3 map from normalised output coordinates to normalised source coordinates.
    /// Output point p → flip → quarter turn → scale into the crop → shift to its centre.
    pub fn theta(&self) -> [f64; 6] {
        let fx = if self.hflip { -1.0 } else { 1.0 };
        let fy = if self.vflip { -1.0 } else { 1.0 };
        // Rotation of the sampling grid by −k·90° turns the content by +k·90°.
        let (c, s) = match self.quarter_turns % QUARTER_TURNS {
            0 => (1.0, 0.0),
            1 => (0.0, -1.0),
            2 => (-1.0, 0.0),
            _ => (0.0, 1.0),
        };
        // R · F, then scale rows by the crop size.
        let m = [[c * fx, -s * fy], [s * fx, c * fy]];
        [
            m[0][0] * self.width,
            m[0][1] * self.width,
            self.centre_x,
            m[1][0] * self.height,
            m[1][1] * self.height,
            self.centre_y,
        ]
    }
}

/// Draws one sample's parameters; a pure function of (seed, epoch, sample).
pub fn sample_params(cfg: &ClsAugmentConfig, seed: u64, epoch: u64, sample: u64) -> ClsAugParams {
    if !cfg.enabled {
        return ClsAugParams::IDENTITY;
    }
    let mut rng = sample_rng(seed, epoch, sample);
    let mut uniform = |lo: f64, hi: f64| if hi > lo { rng.random_range(lo..hi) } else { lo };
    let (mut width, mut height) = (1.0, 1.0);
    for _ in 0..CROP_ATTEMPTS {
        let area = uniform(cfg.min_area, cfg.max_area);
        let aspect = uniform(cfg.min_aspect.ln(), cfg.max_aspect.ln()).exp();
        let (w, h) = ((area * aspect).sqrt(), (area / aspect).sqrt());
        if w <= 1.0 && h <= 1.0 {
            (width, height) = (w, h);
            break;
        }
    }
    let centre_x = uniform(-(1.0 - width), 1.0 - width);
    let centre_y = uniform(-(1.0 - height), 1.0 - height);
    let hflip = cfg.hflip && uniform(0.0, 1.0) < 0.5;
    let vflip = cfg.vflip && uniform(0.0, 1.0) < 0.5;
    let quarter_turns = if cfg.rot90 {
        (uniform(0.0, f64::from(QUARTER_TURNS)) as u8).min(QUARTER_TURNS - 1)
    } else {
        0
    };
    let brightness = uniform(-cfg.brightness, cfg.brightness);
    let saturation = uniform(cfg.saturation_min, cfg.saturation_max);
    // Drawn after every older field, and only when on (`uniform` draws nothing on an empty
    // range), so runs without them keep their exact parameters.
    let gain = [0; 3].map(|_| uniform(-cfg.color_gain, cfg.color_gain).exp());
    let contrast = uniform(1.0 - cfg.contrast, 1.0 + cfg.contrast);
    ClsAugParams {
        centre_x,
        centre_y,
        width,
        height,
        hflip,
        vflip,
        quarter_turns,
        brightness,
        saturation,
        gain,
        contrast,
    }
}

/// The eight dihedral transforms of the square (no crop, no colour change): quarter turns 0–3
/// without and with a horizontal flip.
pub fn dihedral8() -> Vec<ClsAugParams> {
    (0..2u8)
        .flat_map(|f| {
            (0..QUARTER_TURNS).map(move |k| ClsAugParams {
                hflip: f == 1,
                quarter_turns: k,
                ..ClsAugParams::IDENTITY
            })
        })
        .collect()
}

/// Applies `params[i]` to image i of `images` (N×C×H×W float on [0, 1]; C = 3, or 4 with the
/// lesion mask last) and returns the N×C×`out_size`×`out_size` batch on [0, 1]. Geometry, on
/// every channel: one bilinear `grid_sampler` call (reflection borders, unused by crops that
/// lie inside the image); colour, on the first three only (a mask is warped, never
/// recoloured): the per-channel gain, brightness, contrast about the image's mean BT.601
/// grey, then saturation about each pixel's grey, clamping to [0, 1] after each step.
pub fn augment_batch(images: &Tensor, params: &[ClsAugParams], out_size: i64) -> Tensor {
    let n = images.size()[0];
    let channels = images.size().get(1).copied().unwrap_or(RGB);
    let device = images.device();
    let flat: Vec<f32> = params.iter().flat_map(|p| p.theta()).map(|v| v as f32).collect();
    let theta = Tensor::from_slice(&flat).view([n, 2, 3]).to_device(device);
    let grid = Tensor::affine_grid_generator(&theta, [n, 3, out_size, out_size], ALIGN_CORNERS);
    let warped = Tensor::grid_sampler(images, &grid, GRID_BILINEAR, PAD_REFLECTION, ALIGN_CORNERS);
    if !params.iter().any(ClsAugParams::changes_colour) {
        return warped;
    }
    let extra = (channels > RGB).then(|| warped.narrow(1, RGB, channels - RGB));
    let warped = if extra.is_some() { warped.narrow(1, 0, RGB) } else { warped };
    let per_sample = |f: fn(&ClsAugParams) -> f64| -> Tensor {
        let v: Vec<f32> = params.iter().map(|p| f(p) as f32).collect();
        Tensor::from_slice(&v).view([n, 1, 1, 1]).to_device(device)
    };
    // Steps whose parameters are the identity for the whole batch are skipped, not applied
    // as the identity (contrast about the mean, m + (x − m)·1, can move a value by a rounding
    // step), so batches without them stay bit-identical to those made before they existed.
    let cast = if params.iter().all(|p| p.gain == [1.0; 3]) {
        warped
    } else {
        let gains: Vec<f32> = params.iter().flat_map(|p| p.gain).map(|v| v as f32).collect();
        let gain = Tensor::from_slice(&gains).view([n, RGB, 1, 1]).to_device(device);
        (warped * gain).clamp(0.0, 1.0)
    };
    let bright = (cast + per_sample(|p| p.brightness)).clamp(0.0, 1.0);
    let w =
        Tensor::from_slice(&GREY_WEIGHTS.map(|v| v as f32)).view([1, 3, 1, 1]).to_device(device);
    let grey_of = |x: &Tensor| (x * &w).sum_dim_intlist(1, true, Kind::Float);
    let contrasted = if params.iter().all(|p| p.contrast == 1.0) {
        bright
    } else {
        let mean_grey = grey_of(&bright).mean_dim([2i64, 3].as_slice(), true, Kind::Float);
        (&mean_grey + (&bright - &mean_grey) * per_sample(|p| p.contrast)).clamp(0.0, 1.0)
    };
    let grey = grey_of(&contrasted);
    let sat = per_sample(|p| p.saturation);
    let coloured = (&grey + (&contrasted - &grey) * sat).clamp(0.0, 1.0);
    match extra {
        Some(mask) => Tensor::cat(&[coloured, mask], 1),
        None => coloured,
    }
}

pub use lesion_models::classifier::{normalize, Normalization};

/// An N×3×S×S u8 batch to float on [0, 1] on `device`.
pub fn to_unit(images_u8: &Tensor, device: Device) -> Tensor {
    images_u8.to_device(device).to_kind(Kind::Float) / 255.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: i64, s: i64) -> Tensor {
        Tensor::arange(n * 3 * s * s, (Kind::Float, Device::Cpu)).view([n, 3, s, s])
            / (n * 3 * s * s) as f64
    }

    fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// Golden: a full-area crop with no flip and no colour change is the identity at the same
    /// size, and exactly the bilinear resize (align_corners = false) at another size.
    #[test]
    fn full_crop_is_identity_resize() {
        let x = ramp(2, 8);
        let p = [ClsAugParams::IDENTITY; 2];
        assert!(max_abs(&augment_batch(&x, &p, 8), &x) < 1e-6);
        let up = augment_batch(&x, &p, 12);
        let want = x.upsample_bilinear2d([12, 12], false, None, None);
        assert!(max_abs(&up, &want) < 1e-5);
    }

    /// Golden: the dihedral transforms are rot90 / flip exactly.
    #[test]
    fn dihedral_matches_rot90_and_flip() {
        let x = ramp(1, 6);
        for p in dihedral8() {
            let got = augment_batch(&x, &[p], 6);
            let mut want = if p.hflip { x.flip([3]) } else { x.shallow_clone() };
            want = want.rot90(i64::from(p.quarter_turns), [2, 3]);
            let d = max_abs(&got, &want);
            if d > 1e-5 {
                // Either turning convention is a valid augmentation; pin ours.
                let alt = if p.hflip { x.flip([3]) } else { x.shallow_clone() }
                    .rot90(-i64::from(p.quarter_turns), [2, 3]);
                assert!(max_abs(&got, &alt) < 1e-5, "{p:?}: {d}");
            }
        }
    }

    /// Golden: a crop of the top-left quarter at the quarter's own size copies its pixels.
    #[test]
    fn quarter_crop_copies_pixels() {
        let x = ramp(1, 8);
        let p = ClsAugParams {
            centre_x: -0.5,
            centre_y: -0.5,
            width: 0.5,
            height: 0.5,
            ..ClsAugParams::IDENTITY
        };
        let got = augment_batch(&x, &[p], 4);
        let want = x.narrow(2, 0, 4).narrow(3, 0, 4);
        assert!(max_abs(&got, &want) < 1e-5);
    }

    #[test]
    fn colour_changes() {
        let x = Tensor::from_slice(&[0.2f32, 0.4, 0.6]).view([1, 3, 1, 1]);
        let p = ClsAugParams { brightness: 0.1, saturation: 0.0, ..ClsAugParams::IDENTITY };
        let got = Vec::<f32>::try_from(augment_batch(&x, &[p], 1).flatten(0, -1)).unwrap();
        let grey = 0.3 * 0.299 + 0.5 * 0.587 + 0.7 * 0.114;
        for g in got {
            assert!((f64::from(g) - grey).abs() < 1e-5, "{g} vs {grey}");
        }
    }

    /// A colour cast multiplies each channel by its own gain; contrast scales every pixel's
    /// distance from the image's mean grey and keeps that mean (values chosen to stay inside
    /// [0, 1], so no clamping is involved).
    #[test]
    fn colour_cast_and_contrast() {
        let x =
            Tensor::from_slice(&[0.2f32, 0.3, 0.4, 0.5, 0.3, 0.4, 0.5, 0.6, 0.1, 0.2, 0.3, 0.4])
                .view([1, 3, 2, 2]);
        let cast = ClsAugParams { gain: [1.2, 1.0, 0.8], ..ClsAugParams::IDENTITY };
        let want = &x * Tensor::from_slice(&[1.2f32, 1.0, 0.8]).view([1, 3, 1, 1]);
        assert!(max_abs(&augment_batch(&x, &[cast], 2), &want) < 1e-6);

        let grey = |t: &Tensor| {
            let w = Tensor::from_slice(&GREY_WEIGHTS.map(|v| v as f32)).view([1, 3, 1, 1]);
            (t * w).sum_dim_intlist(1, true, Kind::Float)
        };
        let mean = grey(&x).mean(Kind::Float);
        let c = ClsAugParams { contrast: 0.5, ..ClsAugParams::IDENTITY };
        let got = augment_batch(&x, &[c], 2);
        let want = &mean + (&x - &mean) * 0.5;
        assert!(max_abs(&got, &want) < 1e-6);
        assert!((grey(&got).mean(Kind::Float) - &mean).abs().double_value(&[]) < 1e-6);
        // One sample's colour step leaves its batch neighbour as the geometry alone made it.
        let two = Tensor::cat(&[&x, &x], 0);
        let both = augment_batch(&two, &[c, ClsAugParams::IDENTITY], 2);
        assert!(max_abs(&both.narrow(0, 1, 1), &x) < 1e-7);
    }

    /// The colour cast and contrast are drawn after every older field: turning them on leaves
    /// the geometry, brightness and saturation of every sample exactly as before, and their
    /// own draws stay inside the configured ranges.
    #[test]
    fn photometric_ranges_keep_older_draws() {
        let off = ClsAugmentConfig::default();
        let on = ClsAugmentConfig { color_gain: 0.15, contrast: 0.3, ..off.clone() };
        on.validate().unwrap();
        let mut distinct_gains = 0;
        for s in 0..500 {
            let (a, b) = (sample_params(&off, 3, 1, s), sample_params(&on, 3, 1, s));
            assert_eq!(a, ClsAugParams { gain: [1.0; 3], contrast: 1.0, ..b }, "sample {s}");
            assert_eq!((a.gain, a.contrast), ([1.0; 3], 1.0));
            for g in b.gain {
                assert!((-0.15 - 1e-12..=0.15 + 1e-12).contains(&g.ln()), "{b:?}");
            }
            assert!((0.7..=1.3).contains(&b.contrast), "{b:?}");
            distinct_gains += usize::from(b.gain[0] != b.gain[1] && b.gain[1] != b.gain[2]);
        }
        assert!(distinct_gains > 450, "channels draw their own gains: {distinct_gains}");
        for bad in [
            ClsAugmentConfig { contrast: 1.0, ..off.clone() },
            ClsAugmentConfig { color_gain: -0.1, ..off.clone() },
            ClsAugmentConfig { color_gain: 1.5, ..off.clone() },
            ClsAugmentConfig { color_gain: f64::NAN, ..off.clone() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    /// A mask carried as a fourth channel turns and flips with the pixels (channel for
    /// channel as a separate warp of it) and keeps its values under colour changes.
    #[test]
    fn mask_channel_is_warped_not_recoloured() {
        let x = ramp(1, 6);
        let mask = Tensor::zeros([1, 1, 6, 6], (Kind::Float, Device::Cpu));
        let _ = mask.narrow(2, 0, 2).narrow(3, 0, 3).fill_(1.0);
        let four = Tensor::cat(&[&x, &mask], 1);
        let p = ClsAugParams {
            hflip: true,
            quarter_turns: 1,
            brightness: 0.2,
            saturation: 0.3,
            ..ClsAugParams::IDENTITY
        };
        let got = augment_batch(&four, &[p], 6);
        assert_eq!(got.size(), vec![1, 4, 6, 6]);
        assert!(max_abs(&got.narrow(1, 0, 3), &augment_batch(&x, &[p], 6)) < 1e-6);
        let geometric = ClsAugParams { brightness: 0.0, saturation: 1.0, ..p };
        let want_mask = augment_batch(&mask, &[geometric], 6);
        assert!(max_abs(&got.narrow(1, 3, 1), &want_mask) < 1e-6);
        // Still a 0/1 mask of the same area: a quarter turn and a flip move whole pixels.
        assert!((got.narrow(1, 3, 1).sum(Kind::Float).double_value(&[]) - 6.0).abs() < 1e-4);
        assert!(max_abs(&got.narrow(1, 3, 1), &mask) > 0.5, "the mask moved with the image");
    }

    #[test]
    fn params_are_deterministic_and_in_range() {
        let cfg = ClsAugmentConfig::default();
        let a = sample_params(&cfg, 7, 3, 11);
        assert_eq!(a, sample_params(&cfg, 7, 3, 11));
        assert_ne!(a, sample_params(&cfg, 7, 4, 11));
        assert_ne!(a, sample_params(&cfg, 7, 3, 12));
        let mut turns = [0usize; 4];
        for s in 0..2000 {
            let p = sample_params(&cfg, 1, 0, s);
            let area = p.width * p.height;
            assert!((0.05 - 1e-9..=1.0 + 1e-9).contains(&area), "{p:?}");
            let aspect = p.width / p.height;
            assert!(p.width == 1.0 || (0.75 - 1e-9..=1.33 + 1e-9).contains(&aspect), "{p:?}");
            assert!(
                p.centre_x.abs() + p.width <= 1.0 + 1e-9
                    && p.centre_y.abs() + p.height <= 1.0 + 1e-9,
                "{p:?}"
            );
            assert!(p.brightness.abs() <= 32.0 / 255.0 && (0.5..=1.5).contains(&p.saturation));
            turns[p.quarter_turns as usize] += 1;
        }
        assert!(turns.iter().all(|&t| t > 400), "{turns:?}");
    }

    #[test]
    fn normalisations() {
        // 192 values per image: std ≈ 0.144 is above the 1/√192 floor.
        let x = ramp(2, 8);
        let c = normalize(&x, Normalization::Centered2x);
        assert!(
            c.mean_dim([2i64, 3].as_slice(), false, Kind::Float).abs().max().double_value(&[])
                < 1e-5
        );
        let s = normalize(&x, Normalization::Standardize);
        let sd = s.std_correction([1i64, 2, 3].as_slice(), 0, false);
        assert!((sd - 1.0).abs().max().double_value(&[]) < 1e-4);
        let i = normalize(
            &Tensor::from_slice(&[0.485f32, 0.456, 0.406]).view([1, 3, 1, 1]),
            Normalization::Imagenet,
        );
        assert!(i.abs().max().double_value(&[]) < 1e-6);
        // Inception: per-channel mean = std = 0.5 (timm), so [0, 1] maps onto [-1, 1].
        let (mean, std) =
            (lesion_models::inception_v4::INPUT_MEAN, lesion_models::inception_v4::INPUT_STD);
        assert!(mean.iter().all(|&m| m == mean[0]) && std.iter().all(|&s| s == std[0]));
        let v = normalize(
            &Tensor::from_slice(&[0.0f32, 0.5, 1.0]).view([1, 3, 1, 1]),
            Normalization::Inception,
        );
        assert_eq!(Vec::<f32>::try_from(v.flatten(0, -1)).unwrap(), vec![-1.0, 0.0, 1.0]);
    }
}
