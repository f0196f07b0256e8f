//! Seeded synthetic dermoscopy: realistic-looking skin lesion images with EXACT masks.
//!
//! Each image: a skin-tone background with mild texture and noise, an irregular pigmented
//! lesion (polar radius with random Fourier perturbations, class-dependent colours), a few
//! hairs drawn over everything (they do not change the mask), an illumination gradient and
//! the dark circular vignette of a dermatoscope. The mask is the lesion's geometric region
//! itself (pixel centre inside the perturbed contour), so it is exact by construction.
//!
//! Determinism: sample `index` of seed `seed` depends only on (`seed`, `index`, size):
//! its generator is ChaCha8 seeded with `seed` on stream `index`. Classes are balanced: in
//! each block of three consecutive indices, each class appears once, in a seed-shuffled order.

use std::f32::consts::{PI, TAU};
use std::path::Path;

use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::io::{atomic_write, encode_png, hash_bytes, MASK_OFF, MASK_ON};
use crate::manifest::{Manifest, ManifestRow};
use crate::par::CollectInOrder;

/// `source` of synthetic manifest rows.
pub const SYNTH_SOURCE: &str = "synthetic";
/// Smallest side [`generate`] accepts (smaller images cannot hold a recognisable lesion).
pub const MIN_SYNTH_SIDE: u32 = 16;
/// Salt separating the class-order generator from the per-image generators.
const CLASS_ORDER_SALT: u64 = 0x05EE_DC1A_55E5_0001;
/// Resolution of the tabulated contour radius r(θ).
const CONTOUR_SAMPLES: usize = 1024;
/// The lesion's farthest point stays within this fraction of the shorter side from the image
/// centre, so it lies inside the frame and inside the dermatoscope's bright disc.
const LESION_EXTENT_LIMIT: f32 = 0.40;
/// Inside the lesion its colour covers at least this much of the skin (a visible border).
const LESION_ALPHA_FLOOR: f32 = 0.45;
/// Smallest contour radius as a fraction of the base radius (keeps the shape star-convex and solid).
const MIN_RADIUS_FRACTION: f32 = 0.35;

/// The three synthetic classes, for later classification work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SynthClass {
    /// Asymmetric, multi-coloured (incl. blue-grey / black), irregular border.
    Melanoma,
    /// Waxy light brown, sharp border, milia-like bright dots.
    SeborrheicKeratosis,
    /// Symmetric, uniform brown.
    Nevus,
}

/// Classes in a fixed order (shuffled per block of three by the seed).
pub const SYNTH_CLASSES: [SynthClass; 3] =
    [SynthClass::Melanoma, SynthClass::SeborrheicKeratosis, SynthClass::Nevus];

impl SynthClass {
    /// Diagnosis text written to the manifest.
    pub fn diagnosis(self) -> &'static str {
        match self {
            SynthClass::Melanoma => "melanoma",
            SynthClass::SeborrheicKeratosis => "seborrheic keratosis",
            SynthClass::Nevus => "nevus",
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthConfig {
    pub count: usize,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig { count: 100, width: 256, height: 256, seed: 0 }
    }
}

/// One rendered sample. `mask` is {0, 255}, same size as `image`.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSample {
    pub id: String,
    pub image: RgbImage,
    pub mask: GrayImage,
    pub diagnosis: String,
}

/// Id of sample `index` ("SYN_0000042"); zero-padded so that id order = index order.
pub fn sample_id(index: usize) -> String {
    format!("SYN_{index:07}")
}

/// Class of sample `index` under `seed`.
pub fn class_of(seed: u64, index: usize) -> SynthClass {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ CLASS_ORDER_SALT);
    rng.set_stream((index / SYNTH_CLASSES.len()) as u64);
    let mut order = SYNTH_CLASSES;
    order.shuffle(&mut rng);
    order[index % SYNTH_CLASSES.len()]
}

/// An RGB colour in float, 0..255.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Colour {
    r: f32,
    g: f32,
    b: f32,
}

impl Colour {
    const fn new(r: f32, g: f32, b: f32) -> Self {
        Colour { r, g, b }
    }
    fn lerp(self, o: Colour, t: f32) -> Colour {
        Colour {
            r: self.r + (o.r - self.r) * t,
            g: self.g + (o.g - self.g) * t,
            b: self.b + (o.b - self.b) * t,
        }
    }
    fn scale(self, k: f32) -> Colour {
        Colour::new(self.r * k, self.g * k, self.b * k)
    }
    fn jitter(self, rng: &mut ChaCha8Rng, amount: f32) -> Colour {
        Colour::new(
            self.r + rng.random_range(-amount..=amount),
            self.g + rng.random_range(-amount..=amount),
            self.b + rng.random_range(-amount..=amount),
        )
    }
}

const SKIN_LIGHT: Colour = Colour::new(236.0, 200.0, 178.0);
const SKIN_DARK: Colour = Colour::new(172.0, 120.0, 92.0);
const HAIR: Colour = Colour::new(38.0, 28.0, 24.0);
const MELANOMA_PALETTE: [Colour; 5] = [
    Colour::new(22.0, 18.0, 22.0),    // black
    Colour::new(96.0, 108.0, 130.0),  // blue-grey
    Colour::new(68.0, 38.0, 24.0),    // dark brown
    Colour::new(150.0, 72.0, 60.0),   // red-brown
    Colour::new(188.0, 178.0, 180.0), // whitish (regression)
];
const MILIA: Colour = Colour::new(236.0, 226.0, 196.0);

/// A point in pixel coordinates (pixel centres at +0.5).
#[derive(Debug, Clone, Copy)]
struct Point {
    x: f32,
    y: f32,
}

/// A soft coloured spot inside the lesion (blotch, globule or milia dot).
#[derive(Debug, Clone, Copy)]
struct Blob {
    x: f32,
    y: f32,
    /// Gaussian radius in pixels.
    radius: f32,
    colour: Colour,
    strength: f32,
}

/// A plane wave used for low-frequency texture.
#[derive(Debug, Clone, Copy)]
struct Wave {
    kx: f32,
    ky: f32,
    phase: f32,
    amplitude: f32,
}

/// Class-dependent lesion parameters.
#[derive(Debug, Clone, Copy)]
struct LesionStyle {
    /// Total Fourier amplitude (relative to the base radius).
    irregularity: f32,
    /// Highest harmonic.
    harmonics: usize,
    /// Amplitude of the first harmonic (off-centre bulge = asymmetry).
    asymmetry: f32,
    /// Minor/major axis ratio range (min ≤ max ≤ 1).
    axis_ratio_min: f32,
    axis_ratio_max: f32,
    centre: Colour,
    border: Colour,
    /// Width of the soft border, fraction of the base radius (0 = sharp).
    edge: f32,
    /// Pigment texture amplitude (multiplicative).
    texture: f32,
}

fn style(class: SynthClass) -> LesionStyle {
    match class {
        SynthClass::Melanoma => LesionStyle {
            irregularity: 0.22,
            harmonics: 11,
            asymmetry: 0.14,
            axis_ratio_min: 0.6,
            axis_ratio_max: 0.95,
            centre: Colour::new(62.0, 38.0, 32.0),
            border: Colour::new(122.0, 78.0, 56.0),
            edge: 0.18,
            texture: 0.12,
        },
        SynthClass::SeborrheicKeratosis => LesionStyle {
            irregularity: 0.07,
            harmonics: 5,
            asymmetry: 0.03,
            axis_ratio_min: 0.7,
            axis_ratio_max: 0.95,
            centre: Colour::new(126.0, 88.0, 58.0),
            border: Colour::new(146.0, 104.0, 70.0),
            edge: 0.0,
            texture: 0.10,
        },
        SynthClass::Nevus => LesionStyle {
            irregularity: 0.035,
            harmonics: 3,
            asymmetry: 0.0,
            axis_ratio_min: 0.85,
            axis_ratio_max: 1.0,
            centre: Colour::new(104.0, 66.0, 44.0),
            border: Colour::new(140.0, 94.0, 66.0),
            edge: 0.12,
            texture: 0.04,
        },
    }
}

/// The lesion region: an ellipse-warped star-shaped contour around a centre.
struct Contour {
    cx: f32,
    cy: f32,
    cos_rot: f32,
    sin_rot: f32,
    /// Minor/major axis ratio (≤ 1); the v axis is squeezed by it.
    ratio: f32,
    /// r(θ) tabulated over [0, 2π).
    radius: Vec<f32>,
    base_radius: f32,
}

/// Where a pixel lies relative to the contour.
struct ContourPoint {
    inside: bool,
    /// Distance / contour radius at this angle (0 centre, 1 border).
    s: f32,
    /// Contour radius at this angle, in pixels.
    r: f32,
}

impl Contour {
    fn new(rng: &mut ChaCha8Rng, st: &LesionStyle, width: u32, height: u32) -> Contour {
        let m = width.min(height) as f32;
        let off = 0.07 * m;
        let cx = width as f32 / 2.0 + rng.random_range(-off..=off);
        let cy = height as f32 / 2.0 + rng.random_range(-off..=off);
        let rot: f32 = rng.random_range(0.0..PI);
        let ratio = rng.random_range(st.axis_ratio_min..=st.axis_ratio_max);
        // Fourier coefficients: amplitude falls as 1/k; the sum is scaled to `irregularity`.
        let mut amps: Vec<f32> =
            (2..=st.harmonics.max(2)).map(|k| rng.random_range(0.3f32..1.0) / k as f32).collect();
        let total: f32 = amps.iter().sum();
        if total > 0.0 {
            for a in &mut amps {
                *a *= st.irregularity / total;
            }
        }
        let phases: Vec<f32> = amps.iter().map(|_| rng.random_range(0.0..TAU)).collect();
        let bulge_phase: f32 = rng.random_range(0.0..TAU);
        let radius_unit: Vec<f32> = (0..CONTOUR_SAMPLES)
            .map(|i| {
                let th = i as f32 * TAU / CONTOUR_SAMPLES as f32;
                let mut r = 1.0 + st.asymmetry * (th + bulge_phase).cos();
                for (j, (a, ph)) in amps.iter().zip(&phases).enumerate() {
                    r += a * ((j + 2) as f32 * th + ph).cos();
                }
                r.max(MIN_RADIUS_FRACTION)
            })
            .collect();
        let max_unit = radius_unit.iter().cloned().fold(0.0f32, f32::max);
        // Keep the farthest point within the extent limit from the image centre.
        let centre_off =
            ((cx - width as f32 / 2.0).powi(2) + (cy - height as f32 / 2.0).powi(2)).sqrt();
        let limit = LESION_EXTENT_LIMIT * m - centre_off;
        let wanted = rng.random_range(0.17f32..0.28) * m;
        let base_radius = wanted.min(limit / max_unit).max(1.0);
        Contour {
            cx,
            cy,
            cos_rot: rot.cos(),
            sin_rot: rot.sin(),
            ratio,
            radius: radius_unit.iter().map(|r| r * base_radius).collect(),
            base_radius,
        }
    }

    /// Position of the pixel centre (x + 0.5, y + 0.5).
    fn locate(&self, x: u32, y: u32) -> ContourPoint {
        let dx = x as f32 + 0.5 - self.cx;
        let dy = y as f32 + 0.5 - self.cy;
        let u = dx * self.cos_rot + dy * self.sin_rot;
        let v = (-dx * self.sin_rot + dy * self.cos_rot) / self.ratio;
        let d = (u * u + v * v).sqrt();
        let th = v.atan2(u).rem_euclid(TAU);
        let idx = ((th / TAU * CONTOUR_SAMPLES as f32) as usize).min(CONTOUR_SAMPLES - 1);
        let r = self.radius[idx];
        ContourPoint { inside: d < r, s: d / r, r }
    }

    /// A random point inside the lesion, at relative radius ≤ `max_s`, angle biased by `bias`.
    fn random_point(&self, rng: &mut ChaCha8Rng, max_s: f32, bias: Option<f32>) -> Point {
        let th: f32 = match bias {
            Some(b) => b + rng.random_range(-1.2f32..1.2),
            None => rng.random_range(0.0..TAU),
        }
        .rem_euclid(TAU);
        let idx = ((th / TAU * CONTOUR_SAMPLES as f32) as usize).min(CONTOUR_SAMPLES - 1);
        let s = max_s * rng.random_range(0.0f32..1.0).sqrt();
        let u = th.cos() * s * self.radius[idx];
        let v = th.sin() * s * self.radius[idx] * self.ratio;
        Point {
            x: self.cx + u * self.cos_rot - v * self.sin_rot,
            y: self.cy + u * self.sin_rot + v * self.cos_rot,
        }
    }
}

fn blobs_for(rng: &mut ChaCha8Rng, class: SynthClass, c: &Contour) -> Vec<Blob> {
    let r0 = c.base_radius;
    let mut blobs = Vec::new();
    match class {
        SynthClass::Melanoma => {
            let side: f32 = rng.random_range(0.0..TAU);
            for _ in 0..rng.random_range(3..=6) {
                let Point { x, y } = c.random_point(rng, 0.85, Some(side));
                blobs.push(Blob {
                    x,
                    y,
                    radius: r0 * rng.random_range(0.12..0.35),
                    colour: MELANOMA_PALETTE[rng.random_range(0..MELANOMA_PALETTE.len())]
                        .jitter(rng, 8.0),
                    strength: rng.random_range(0.55..0.9),
                });
            }
            // Irregular dark globules.
            for _ in 0..rng.random_range(4..=10) {
                let Point { x, y } = c.random_point(rng, 0.95, None);
                blobs.push(Blob {
                    x,
                    y,
                    radius: rng.random_range(1.0..2.5),
                    colour: MELANOMA_PALETTE[0],
                    strength: 0.8,
                });
            }
        }
        SynthClass::SeborrheicKeratosis => {
            for _ in 0..rng.random_range(1..=3) {
                let Point { x, y } = c.random_point(rng, 0.7, None);
                blobs.push(Blob {
                    x,
                    y,
                    radius: r0 * rng.random_range(0.2..0.4),
                    colour: Colour::new(185.0, 145.0, 105.0).jitter(rng, 10.0),
                    strength: 0.5,
                });
            }
            for _ in 0..rng.random_range(5..=14) {
                let Point { x, y } = c.random_point(rng, 0.9, None);
                blobs.push(Blob {
                    x,
                    y,
                    radius: rng.random_range(0.8..2.0),
                    colour: MILIA,
                    strength: 0.95,
                });
            }
        }
        SynthClass::Nevus => {
            for _ in 0..rng.random_range(0..=2) {
                let Point { x, y } = c.random_point(rng, 0.4, None);
                blobs.push(Blob {
                    x,
                    y,
                    radius: r0 * rng.random_range(0.3..0.5),
                    colour: Colour::new(90.0, 56.0, 38.0),
                    strength: 0.3,
                });
            }
        }
    }
    blobs
}

/// Hair coverage in [0, 1] per pixel: a few thin quadratic Bézier curves.
fn hair_coverage(rng: &mut ChaCha8Rng, width: u32, height: u32) -> Vec<f32> {
    let (w, h) = (width as f32, height as f32);
    let mut cov = vec![0.0f32; (width * height) as usize];
    let hairs = rng.random_range(0..=5);
    for _ in 0..hairs {
        let p0 = Point { x: rng.random_range(-0.1..1.1) * w, y: rng.random_range(-0.1..1.1) * h };
        let p2 = Point { x: rng.random_range(-0.1..1.1) * w, y: rng.random_range(-0.1..1.1) * h };
        let p1 = Point {
            x: (p0.x + p2.x) / 2.0 + rng.random_range(-0.3..0.3) * w,
            y: (p0.y + p2.y) / 2.0 + rng.random_range(-0.3..0.3) * h,
        };
        let half_width: f32 = rng.random_range(0.45..1.1);
        let len = ((p2.x - p0.x).powi(2) + (p2.y - p0.y).powi(2)).sqrt() + 1.0;
        let steps = (len * 2.0) as usize + 2;
        for i in 0..=steps {
            let t = i as f32 / steps as f32;
            let a = (1.0 - t) * (1.0 - t);
            let b = 2.0 * (1.0 - t) * t;
            let c = t * t;
            let px = a * p0.x + b * p1.x + c * p2.x;
            let py = a * p0.y + b * p1.y + c * p2.y;
            let reach = half_width + 1.0;
            let x0 = (px - reach).floor().max(0.0) as i64;
            let x1 = (px + reach).ceil().min(w - 1.0) as i64;
            let y0 = (py - reach).floor().max(0.0) as i64;
            let y1 = (py + reach).ceil().min(h - 1.0) as i64;
            for y in y0..=y1 {
                for x in x0..=x1 {
                    let d = ((x as f32 + 0.5 - px).powi(2) + (y as f32 + 0.5 - py).powi(2)).sqrt();
                    let k = (half_width + 0.5 - d).clamp(0.0, 1.0);
                    let i = (y as u32 * width + x as u32) as usize;
                    if k > cov[i] {
                        cov[i] = k;
                    }
                }
            }
        }
    }
    cov
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Renders sample `index` of `cfg` (pure and deterministic; `cfg.count` is not used).
pub fn render(cfg: &SynthConfig, index: usize) -> SynthSample {
    let (width, height) = (cfg.width.max(1), cfg.height.max(1));
    let class = class_of(cfg.seed, index);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(index as u64);
    let m = width.min(height) as f32;

    // Background skin.
    let skin = SKIN_LIGHT.lerp(SKIN_DARK, rng.random_range(0.0..1.0)).jitter(&mut rng, 6.0);
    let waves: Vec<Wave> = (0..4)
        .map(|_| {
            let angle: f32 = rng.random_range(0.0..TAU);
            let freq = rng.random_range(1.5f32..7.0) * TAU / m;
            Wave {
                kx: angle.cos() * freq,
                ky: angle.sin() * freq,
                phase: rng.random_range(0.0..TAU),
                amplitude: rng.random_range(0.01..0.03),
            }
        })
        .collect();
    let light_angle: f32 = rng.random_range(0.0..TAU);
    let light_strength: f32 = rng.random_range(0.0..0.10);

    // Lesion.
    let st = style(class);
    let contour = Contour::new(&mut rng, &st, width, height);
    let lesion_centre = st.centre.jitter(&mut rng, 10.0);
    let lesion_border = st.border.jitter(&mut rng, 10.0);
    let blobs = blobs_for(&mut rng, class, &contour);
    // Pigment texture: a few short-wavelength waves in random directions (no visible grid).
    let pigment_waves: Vec<Wave> = (0..3)
        .map(|_| {
            let angle: f32 = rng.random_range(0.0..TAU);
            let freq = rng.random_range(0.2f32..0.55);
            Wave {
                kx: angle.cos() * freq,
                ky: angle.sin() * freq,
                phase: rng.random_range(0.0..TAU),
                amplitude: st.texture / 3.0,
            }
        })
        .collect();

    // Dermatoscope vignette (most images have one).
    let has_vignette = rng.random_range(0.0f32..1.0) < 0.85;
    let vignette_radius = rng.random_range(0.52f32..0.66) * m;
    let vignette_soft = 0.05 * m;
    let hair_colour = HAIR.jitter(&mut rng, 10.0);
    let hair = hair_coverage(&mut rng, width, height);
    let noise_sigma = rng.random_range(1.5f32..3.5);

    let mut image = RgbImage::new(width, height);
    let mut mask = GrayImage::new(width, height);
    let (hw, hh) = (width as f32 / 2.0, height as f32 / 2.0);
    for y in 0..height {
        for x in 0..width {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let texture: f32 =
                waves.iter().map(|w| w.amplitude * (w.kx * fx + w.ky * fy + w.phase).sin()).sum();
            let mut c = skin.scale(1.0 + texture);

            let p = contour.locate(x, y);
            if p.inside {
                let mut lc = lesion_centre.lerp(lesion_border, p.s.powf(1.5));
                for b in &blobs {
                    let d2 = (fx - b.x).powi(2) + (fy - b.y).powi(2);
                    let k = b.strength * (-d2 / (b.radius * b.radius)).exp();
                    if k > 1e-3 {
                        lc = lc.lerp(b.colour, k);
                    }
                }
                let pig = 1.0
                    + pigment_waves
                        .iter()
                        .map(|w| w.amplitude * (w.kx * fx + w.ky * fy + w.phase).sin())
                        .sum::<f32>();
                lc = lc.scale(pig);
                let alpha = if st.edge > 0.0 {
                    ((1.0 - p.s) * p.r / (st.edge * contour.base_radius))
                        .clamp(LESION_ALPHA_FLOOR, 1.0)
                } else {
                    1.0
                };
                c = c.lerp(lc, alpha);
                mask.put_pixel(x, y, Luma([MASK_ON]));
            } else {
                mask.put_pixel(x, y, Luma([MASK_OFF]));
            }

            let hk = hair[(y * width + x) as usize];
            if hk > 0.0 {
                c = c.lerp(hair_colour, hk * 0.9);
            }
            let (dx, dy) = (fx - hw, fy - hh);
            let light =
                1.0 + light_strength * (dx * light_angle.cos() + dy * light_angle.sin()) / m;
            c = c.scale(light);
            if has_vignette {
                let d = (dx * dx + dy * dy).sqrt();
                let dark =
                    smoothstep(vignette_radius - vignette_soft, vignette_radius + vignette_soft, d);
                c = c.scale(1.0 - 0.93 * dark);
            }
            let n = noise_sigma
                * (rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>() - 1.5)
                * 2.0;
            image.put_pixel(
                x,
                y,
                Rgb([
                    (c.r + n).round().clamp(0.0, 255.0) as u8,
                    (c.g + n).round().clamp(0.0, 255.0) as u8,
                    (c.b + n).round().clamp(0.0, 255.0) as u8,
                ]),
            );
        }
    }
    SynthSample { id: sample_id(index), image, mask, diagnosis: class.diagnosis().to_string() }
}

/// Renders `cfg.count` samples (in parallel) into `out_dir/images/<id>.png` and
/// `out_dir/masks/<id>_segmentation.png` (atomic writes) and returns their rows, sorted by id,
/// with source "synthetic". Does not write a manifest file.
pub fn generate(cfg: &SynthConfig, out_dir: &Path) -> Result<Manifest> {
    if cfg.width < MIN_SYNTH_SIDE || cfg.height < MIN_SYNTH_SIDE {
        return Err(DataError::InvalidArgument(format!(
            "synthetic images must be at least {MIN_SYNTH_SIDE}x{MIN_SYNTH_SIDE}, got {}x{}",
            cfg.width, cfg.height
        )));
    }
    let images = out_dir.join("images");
    let masks = out_dir.join("masks");
    let rows: Result<Vec<ManifestRow>> = (0..cfg.count)
        .into_par_iter()
        .map(|i| {
            let s = render(cfg, i);
            let image_path = images.join(format!("{}.png", s.id));
            let mask_path = masks.join(format!("{}_segmentation.png", s.id));
            let image_bytes = encode_png(&image_path, &DynamicImage::ImageRgb8(s.image))?;
            let mask_bytes = encode_png(&mask_path, &DynamicImage::ImageLuma8(s.mask))?;
            atomic_write(&mask_path, &mask_bytes)?;
            atomic_write(&image_path, &image_bytes)?;
            Ok(ManifestRow {
                id: s.id,
                source: SYNTH_SOURCE.to_string(),
                image_path,
                mask_path: Some(mask_path),
                width: cfg.width,
                height: cfg.height,
                content_hash: hash_bytes(&image_bytes),
                diagnosis: Some(s.diagnosis),
                group: None,
                meta: Default::default(),
            })
        })
        .collect_in_order();
    let mut manifest = Manifest { rows: rows? };
    manifest.sort_by_id();
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SynthConfig {
        SynthConfig { count: 6, width: 96, height: 80, seed: 7 }
    }

    #[test]
    fn render_is_deterministic_and_seed_dependent() {
        let a = render(&cfg(), 3);
        let b = render(&cfg(), 3);
        assert_eq!(a, b);
        let c = render(&SynthConfig { seed: 8, ..cfg() }, 3);
        assert_ne!(a.image, c.image);
        assert_ne!(render(&cfg(), 4).image, a.image);
    }

    #[test]
    fn mask_is_binary_nonempty_and_inside_frame() {
        for i in 0..12 {
            let s = render(&cfg(), i);
            assert_eq!(s.mask.dimensions(), s.image.dimensions());
            assert!(s.mask.pixels().all(|p| p.0[0] == MASK_ON || p.0[0] == MASK_OFF));
            let area = s.mask.pixels().filter(|p| p.0[0] == MASK_ON).count();
            let total = (s.mask.width() * s.mask.height()) as usize;
            assert!(area > total / 50, "sample {i}: area {area}");
            assert!(area < total / 2, "sample {i}: area {area}");
            let (w, h) = s.mask.dimensions();
            for x in 0..w {
                assert_eq!(s.mask.get_pixel(x, 0).0[0], 0);
                assert_eq!(s.mask.get_pixel(x, h - 1).0[0], 0);
            }
            for y in 0..h {
                assert_eq!(s.mask.get_pixel(0, y).0[0], 0);
                assert_eq!(s.mask.get_pixel(w - 1, y).0[0], 0);
            }
        }
    }

    #[test]
    fn mask_matches_lesion_pixels() {
        // Lesion pixels are darker than skin on average: the mask marks the lesion, exactly.
        for i in 0..6 {
            let s = render(&cfg(), i);
            let lum = |p: &Rgb<u8>| p.0.iter().map(|&v| v as f32).sum::<f32>() / 3.0;
            let (mut inside, mut ni, mut ring, mut nr) = (0.0, 0, 0.0, 0);
            let (w, h) = s.image.dimensions();
            for (x, y, p) in s.image.enumerate_pixels() {
                let in_centre = ((x as f32 - w as f32 / 2.0).powi(2)
                    + (y as f32 - h as f32 / 2.0).powi(2))
                .sqrt()
                    < 0.45 * w.min(h) as f32;
                if s.mask.get_pixel(x, y).0[0] == MASK_ON {
                    inside += lum(p);
                    ni += 1;
                } else if in_centre {
                    ring += lum(p);
                    nr += 1;
                }
            }
            assert!(inside / ni as f32 + 12.0 < ring / nr as f32, "sample {i} ({})", s.diagnosis);
        }
    }

    #[test]
    fn classes_are_balanced_per_block() {
        for block in 0..10 {
            let mut seen: Vec<_> = (0..3).map(|j| class_of(5, block * 3 + j)).collect();
            seen.sort_by_key(|c| c.diagnosis());
            seen.dedup();
            assert_eq!(seen.len(), 3);
        }
        let a: Vec<_> = (0..30).map(|i| class_of(1, i)).collect();
        let b: Vec<_> = (0..30).map(|i| class_of(2, i)).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn generate_writes_files_and_rows() {
        let dir = tempfile::tempdir().unwrap();
        let m = generate(&cfg(), dir.path()).unwrap();
        assert_eq!(m.rows.len(), 6);
        for r in &m.rows {
            assert_eq!(r.source, "synthetic");
            assert_eq!(crate::io::content_hash(&r.image_path).unwrap(), r.content_hash);
            let img = crate::io::load_rgb(&r.image_path).unwrap();
            assert_eq!(img.dimensions(), (96, 80));
            let mask = crate::io::load_mask(r.mask_path.as_ref().unwrap()).unwrap();
            let i: usize = r.id[4..].parse().unwrap();
            assert_eq!(mask, render(&cfg(), i).mask);
        }
        assert!(m.rows.windows(2).all(|w| w[0].id < w[1].id));
        assert!(generate(&SynthConfig { width: 4, ..cfg() }, dir.path()).is_err());
    }
}
