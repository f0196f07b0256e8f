//! Online augmentation with the paper's law: rotation U(−270°, 270°), shifts U(−0.1, 0.1) ×
//! size, zoom drawn per axis from U(0.8, 1.2), optional flips; one affine transform warps the
//! image (borders filled by reflection) and its mask (borders filled by the nearest pixel)
//! together. Parameters are a pure function of (seed, epoch, sample id), so a resumed run
//! sees the same augmentations, and a batch is warped in one `grid_sample` call.
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Interpolation used for the image warp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interpolation {
    Bilinear,
    /// What the paper's code did (Keras `apply_transform` with order 0).
    Nearest,
}

impl Interpolation {
    /// `grid_sampler`'s interpolation code.
    fn code(self) -> i64 {
        match self {
            Interpolation::Bilinear => GRID_BILINEAR,
            Interpolation::Nearest => GRID_NEAREST,
        }
    }
}

const GRID_BILINEAR: i64 = 0;
const GRID_NEAREST: i64 = 1;
const PAD_BORDER: i64 = 1;
const PAD_REFLECTION: i64 = 2;
/// Pixel centres at ±(1 − 1/size): the convention under which a 90° turn of a square image
/// maps pixel centres onto pixel centres.
const ALIGN_CORNERS: bool = false;
/// A warped mask is binarised at this value (it is exact under nearest interpolation).
pub const MASK_THRESHOLD: f64 = 0.5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    pub enabled: bool,
    /// Rotation angle drawn from U(−rotation_deg, rotation_deg).
    pub rotation_deg: f64,
    /// Shift drawn per axis from U(−shift, shift) × size.
    pub shift: f64,
    /// Zoom drawn per axis from U(zoom_min, zoom_max).
    pub zoom_min: f64,
    pub zoom_max: f64,
    pub hflip: bool,
    pub vflip: bool,
    pub interpolation: Interpolation,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rotation_deg: 270.0,
            shift: 0.1,
            zoom_min: 0.8,
            zoom_max: 1.2,
            hflip: false,
            vflip: false,
            interpolation: Interpolation::Bilinear,
        }
    }
}

/// One sample's transform. Shifts are fractions of the image size; zooms > 1 show a larger
/// field of view (zoom out), as in Keras.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffineParams {
    pub angle_deg: f64,
    pub shift_x: f64,
    pub shift_y: f64,
    pub zoom_x: f64,
    pub zoom_y: f64,
    pub hflip: bool,
    pub vflip: bool,
}

impl AffineParams {
    pub const IDENTITY: AffineParams = AffineParams {
        angle_deg: 0.0,
        shift_x: 0.0,
        shift_y: 0.0,
        zoom_x: 1.0,
        zoom_y: 1.0,
        hflip: false,
        vflip: false,
    };

    /// The row-major 2×3 matrix mapping normalised output coordinates to normalised input
    /// coordinates for an image of `width × height` (the `theta` of `affine_grid`).
    /// Rotation is done in pixel units, so non-square images are not sheared.
    pub fn theta(&self, width: i64, height: i64) -> [f64; 6] {
        let (w, h) = (width as f64, height as f64);
        let a = self.angle_deg.to_radians();
        let (s, c) = a.sin_cos();
        let fx = if self.hflip { -1.0 } else { 1.0 };
        let fy = if self.vflip { -1.0 } else { 1.0 };
        // Pixel-space map (centred): p_in = R · Z · F · p_out + t.
        let m = [
            [c * self.zoom_x * fx, -s * self.zoom_y * fy],
            [s * self.zoom_x * fx, c * self.zoom_y * fy],
        ];
        // Normalised coordinates: u = 2x / w. So A_norm = N · M · N⁻¹ with N = diag(2/w, 2/h).
        [m[0][0], m[0][1] * h / w, 2.0 * self.shift_x, m[1][0] * w / h, m[1][1], 2.0 * self.shift_y]
    }
}

/// Draws one sample's parameters; a pure function of (seed, epoch, sample).
pub fn sample_params(cfg: &AugmentConfig, seed: u64, epoch: u64, sample: u64) -> AffineParams {
    if !cfg.enabled {
        return AffineParams::IDENTITY;
    }
    let mut rng = lesion_core::seed::sample_rng(seed, epoch, sample);
    let mut uniform = |lo: f64, hi: f64| if hi > lo { rng.random_range(lo..hi) } else { lo };
    let angle_deg = uniform(-cfg.rotation_deg, cfg.rotation_deg);
    let shift_x = uniform(-cfg.shift, cfg.shift);
    let shift_y = uniform(-cfg.shift, cfg.shift);
    let zoom_x = uniform(cfg.zoom_min, cfg.zoom_max);
    let zoom_y = uniform(cfg.zoom_min, cfg.zoom_max);
    let hflip = cfg.hflip && uniform(0.0, 1.0) < 0.5;
    let vflip = cfg.vflip && uniform(0.0, 1.0) < 0.5;
    AffineParams { angle_deg, shift_x, shift_y, zoom_x, zoom_y, hflip, vflip }
}

/// An image batch and its masks after warping.
pub struct Warped {
    pub images: Tensor,
    pub masks: Tensor,
}

/// Warps `images` (N×C×H×W float) and `masks` (N×1×H×W float in {0,1}) with one transform
/// per sample. Images: chosen interpolation, reflection borders. Masks: same interpolation,
/// nearest-pixel borders, re-binarised at [`MASK_THRESHOLD`].
pub fn warp_batch(
    images: &Tensor,
    masks: &Tensor,
    params: &[AffineParams],
    interpolation: Interpolation,
) -> Warped {
    let size = images.size();
    let (n, h, w) = (size[0], size[2], size[3]);
    let theta = theta_tensor(params, w, h, images.device());
    let grid = Tensor::affine_grid_generator(&theta, [n, 1, h, w], ALIGN_CORNERS);
    let images =
        Tensor::grid_sampler(images, &grid, interpolation.code(), PAD_REFLECTION, ALIGN_CORNERS);
    let masks = Tensor::grid_sampler(masks, &grid, interpolation.code(), PAD_BORDER, ALIGN_CORNERS)
        .gt(MASK_THRESHOLD)
        .to_kind(Kind::Float);
    Warped { images, masks }
}

fn theta_tensor(params: &[AffineParams], w: i64, h: i64, device: tch::Device) -> Tensor {
    let flat: Vec<f32> = params.iter().flat_map(|p| p.theta(w, h)).map(|v| v as f32).collect();
    Tensor::from_slice(&flat).view([params.len() as i64, 2, 3]).to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: i64, w: i64) -> Tensor {
        Tensor::arange(h * w * 3, (Kind::Float, tch::Device::Cpu)).view([1, 3, h, w])
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn identity_is_exact() {
        let img = ramp(8, 8);
        let mask = img.narrow(1, 0, 1).gt(90.0).to_kind(Kind::Float);
        for interp in [Interpolation::Bilinear, Interpolation::Nearest] {
            let out = warp_batch(&img, &mask, &[AffineParams::IDENTITY], interp);
            assert!(max_abs_diff(&out.images, &img) < 1e-3, "{interp:?}");
            assert!(max_abs_diff(&out.masks, &mask) < 1e-6);
        }
    }

    /// Golden image: a 90° turn of a square image is `rot90` exactly (pixel centres map to
    /// pixel centres), for image and mask alike.
    #[test]
    fn quarter_turns_match_rot90() {
        let img = ramp(6, 6);
        let mask = img.narrow(1, 0, 1).remainder(7.0).gt(3.0).to_kind(Kind::Float);
        for (angle, k) in [(90.0, 1i64), (180.0, 2), (-90.0, -1), (270.0, 3)] {
            let p = AffineParams { angle_deg: angle, ..AffineParams::IDENTITY };
            let out = warp_batch(&img, &mask, &[p], Interpolation::Nearest);
            // Our angle turns the sampling grid; the content turns the other way, which in
            // torch's (row, col) dims is rot90 with +k over dims [2, 3].
            let want = img.rot90(k, [2, 3]);
            let want_m = mask.rot90(k, [2, 3]);
            let d1 = max_abs_diff(&out.images, &want);
            let d2 = max_abs_diff(&out.masks, &want_m);
            assert!(d1 < 1e-3 && d2 < 1e-6, "angle {angle}: image diff {d1}, mask diff {d2}");
        }
    }

    /// Golden image: a shift of exactly two pixels moves the content by two pixels and fills
    /// the uncovered border by reflection about the edge (image) and by the nearest pixel (mask).
    #[test]
    fn whole_pixel_shift_reflects_borders() {
        let (h, w) = (4i64, 8i64);
        let row: Vec<f32> = (0..w).map(|x| x as f32).collect();
        let img =
            Tensor::from_slice(&row).view([1, 1, 1, w]).expand([1, 1, h, w], true).contiguous();
        let mask = img.ge(6.0).to_kind(Kind::Float);
        // shift_x is a fraction of the width: output x samples input x + shift_x·w.
        let p = AffineParams { shift_x: 2.0 / w as f64, ..AffineParams::IDENTITY };
        for interp in [Interpolation::Nearest, Interpolation::Bilinear] {
            let out = warp_batch(&img, &mask, &[p], interp);
            let got = Vec::<f32>::try_from(out.images.select(2, 1).flatten(0, -1)).unwrap();
            let got_m = Vec::<f32>::try_from(out.masks.select(2, 1).flatten(0, -1)).unwrap();
            let want = [2.0f32, 3.0, 4.0, 5.0, 6.0, 7.0, 7.0, 6.0];
            let want_m = [0.0f32, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
            for (g, e) in got.iter().zip(want) {
                assert!((g - e).abs() < 1e-4, "{interp:?}: image row {got:?}, want {want:?}");
            }
            assert_eq!(got_m, want_m, "{interp:?}: mask row");
        }
    }

    #[test]
    fn params_are_deterministic_and_in_range() {
        let cfg = AugmentConfig { hflip: true, vflip: true, ..Default::default() };
        let a = sample_params(&cfg, 7, 3, 11);
        assert_eq!(a, sample_params(&cfg, 7, 3, 11));
        assert_ne!(a, sample_params(&cfg, 7, 4, 11));
        assert_ne!(a, sample_params(&cfg, 7, 3, 12));
        for s in 0..500 {
            let p = sample_params(&cfg, 1, 0, s);
            assert!(p.angle_deg.abs() <= 270.0);
            assert!(p.shift_x.abs() <= 0.1 && p.shift_y.abs() <= 0.1);
            assert!((0.8..=1.2).contains(&p.zoom_x) && (0.8..=1.2).contains(&p.zoom_y));
        }
    }

    #[test]
    fn warped_mask_stays_binary_and_follows_image() {
        let img = Tensor::zeros([2, 3, 16, 16], (Kind::Float, tch::Device::Cpu));
        let _ = img.narrow(2, 4, 8).narrow(3, 4, 8).fill_(1.0);
        let mask = img.narrow(1, 0, 1).copy();
        let cfg = AugmentConfig::default();
        let params: Vec<_> = (0..2).map(|s| sample_params(&cfg, 3, 0, s)).collect();
        let out = warp_batch(&img, &mask, &params, Interpolation::Nearest);
        let uniq = out.masks.unique_dim(0, true, false, false).0;
        assert!(uniq.numel() > 0);
        let not_binary =
            out.masks.gt(0.0).logical_and(&out.masks.lt(1.0)).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(not_binary, 0);
        // Under nearest interpolation the mask equals the warped image's first channel.
        assert!(
            max_abs_diff(&out.masks, &out.images.narrow(1, 0, 1).gt(0.5).to_kind(Kind::Float))
                < 1e-6
        );
    }
}
