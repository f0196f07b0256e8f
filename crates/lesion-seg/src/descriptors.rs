//! Hand-crafted lesion descriptors from a mask and its image, after dermatology's ABCD rule:
//! Asymmetry (about the lesion's principal axes), Border irregularity (compactness of the
//! outline), Colour (variegation inside the lesion and contrast with the skin around it) and
//! relative size. They feed the SVM layer beside the deep features, and the service's
//! `/v1/segment` answer. Every value is scale-free (relative to the image or the lesion), so
//! the same lesion at another resolution gives nearly the same descriptors.
use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

use lesion_core::{Result, TrainError};

/// A mask pixel above this is foreground (masks are 0/255).
const FOREGROUND: u8 = 127;
/// Below this many lesion pixels the moments are too noisy to mean anything.
const MIN_LESION_PIXELS: usize = 16;

/// The descriptor names, in the order of [`Descriptors::to_vec`].
pub const DESCRIPTOR_NAMES: [&str; 12] = [
    "relative_area",
    "asymmetry_major",
    "asymmetry_minor",
    "compactness",
    "eccentricity",
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "contrast",
];

/// What the mask says of the lesion (see the module doc). Colours are on [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Descriptors {
    /// Lesion pixels / image pixels.
    pub relative_area: f64,
    /// Share of the lesion not matched by its mirror image about the major (minor) axis
    /// through the centroid: 0 for a symmetric shape.
    pub asymmetry_major: f64,
    pub asymmetry_minor: f64,
    /// Boundary pixels² / (4π · area): about 0.8 for a digital disc (boundary pixels undercount
    /// the perimeter), larger for irregular borders.
    pub compactness: f64,
    /// √(1 − λ_min/λ_max) of the second moments: 0 for a disc, → 1 for a line.
    pub eccentricity: f64,
    /// Mean and standard deviation of R, G, B inside the lesion (variegation).
    pub mean_rgb: [f64; 3],
    pub std_rgb: [f64; 3],
    /// Mean luminance outside minus inside the lesion (lesions are darker than skin).
    pub contrast: f64,
}

/// Shape measures the service reports with a mask.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    pub area_pixels: usize,
    /// Boundary pixels (4-neighbour), the perimeter's estimate.
    pub perimeter_pixels: usize,
}

impl Descriptors {
    pub fn to_vec(&self) -> Vec<f64> {
        let mut v = vec![
            self.relative_area,
            self.asymmetry_major,
            self.asymmetry_minor,
            self.compactness,
            self.eccentricity,
        ];
        v.extend_from_slice(&self.mean_rgb);
        v.extend_from_slice(&self.std_rgb);
        v.push(self.contrast);
        v
    }
}

fn is_fg(mask: &GrayImage, x: i64, y: i64) -> bool {
    x >= 0
        && y >= 0
        && (x as u32) < mask.width()
        && (y as u32) < mask.height()
        && mask.get_pixel(x as u32, y as u32)[0] > FOREGROUND
}

/// Area and boundary length of the mask's foreground.
pub fn shape(mask: &GrayImage) -> Shape {
    let mut area = 0;
    let mut perimeter = 0;
    for (x, y, p) in mask.enumerate_pixels() {
        if p[0] > FOREGROUND {
            area += 1;
            let (x, y) = (i64::from(x), i64::from(y));
            if !(is_fg(mask, x - 1, y)
                && is_fg(mask, x + 1, y)
                && is_fg(mask, x, y - 1)
                && is_fg(mask, x, y + 1))
            {
                perimeter += 1;
            }
        }
    }
    Shape { area_pixels: area, perimeter_pixels: perimeter }
}

impl Shape {
    /// Boundary pixels² / (4π · area) (see [`Descriptors::compactness`]); `None` for an empty
    /// mask.
    pub fn compactness(&self) -> Option<f64> {
        (self.area_pixels > 0).then(|| {
            (self.perimeter_pixels as f64).powi(2)
                / (4.0 * std::f64::consts::PI * self.area_pixels as f64)
        })
    }
}

/// The descriptors of the lesion in `mask` over `img` (same size). A mask with fewer than
/// [`MIN_LESION_PIXELS`] lesion pixels is an error: its shape means nothing, and a silent
/// vector of zeros would look like a real, tiny, perfectly symmetric lesion.
pub fn describe(img: &RgbImage, mask: &GrayImage) -> Result<Descriptors> {
    crate::crop::check_same_size(img, mask)?;
    let pts: Vec<(f64, f64)> = mask
        .enumerate_pixels()
        .filter(|(_, _, p)| p[0] > FOREGROUND)
        .map(|(x, y, _)| (f64::from(x), f64::from(y)))
        .collect();
    let n = pts.len();
    if n < MIN_LESION_PIXELS {
        return Err(TrainError::Config(format!(
            "the mask has {n} lesion pixels (at least {MIN_LESION_PIXELS} are needed for descriptors)"
        )));
    }
    let nf = n as f64;
    let cx = pts.iter().map(|p| p.0).sum::<f64>() / nf;
    let cy = pts.iter().map(|p| p.1).sum::<f64>() / nf;
    let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
    for (x, y) in &pts {
        sxx += (x - cx) * (x - cx);
        syy += (y - cy) * (y - cy);
        sxy += (x - cx) * (y - cy);
    }
    let (sxx, syy, sxy) = (sxx / nf, syy / nf, sxy / nf);
    let half_trace = (sxx + syy) / 2.0;
    let root = (((sxx - syy) / 2.0).powi(2) + sxy * sxy).sqrt();
    let (l_max, l_min) = (half_trace + root, (half_trace - root).max(0.0));
    let eccentricity = if l_max > 0.0 { (1.0 - l_min / l_max).sqrt() } else { 0.0 };
    let theta = 0.5 * (2.0 * sxy).atan2(sxx - syy);
    let (c, s) = (theta.cos(), theta.sin());
    // Mirror about the major axis flips the minor coordinate, and vice versa.
    let mismatch = |flip_minor: bool| {
        let unmatched = pts
            .iter()
            .filter(|(x, y)| {
                let (dx, dy) = (x - cx, y - cy);
                let (mut u, mut v) = (dx * c + dy * s, -dx * s + dy * c);
                if flip_minor {
                    v = -v;
                } else {
                    u = -u;
                }
                let (mx, my) = (cx + u * c - v * s, cy + u * s + v * c);
                !is_fg(mask, mx.round() as i64, my.round() as i64)
            })
            .count();
        unmatched as f64 / nf
    };
    // The shape's area is the `n` ≥ MIN_LESION_PIXELS counted above, so never empty here.
    let compactness = shape(mask).compactness().unwrap_or(0.0);
    let mut sum = [0.0; 3];
    let mut sq = [0.0; 3];
    let (mut lum_in, mut lum_out, mut n_out) = (0.0, 0.0, 0usize);
    for (x, y, p) in img.enumerate_pixels() {
        let rgb = [p[0], p[1], p[2]].map(|v| f64::from(v) / 255.0);
        let lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
        if mask.get_pixel(x, y)[0] > FOREGROUND {
            for k in 0..3 {
                sum[k] += rgb[k];
                sq[k] += rgb[k] * rgb[k];
            }
            lum_in += lum;
        } else {
            lum_out += lum;
            n_out += 1;
        }
    }
    let mean_rgb = sum.map(|v| v / nf);
    let mut std_rgb = [0.0; 3];
    for k in 0..3 {
        std_rgb[k] = (sq[k] / nf - mean_rgb[k] * mean_rgb[k]).max(0.0).sqrt();
    }
    // A lesion filling the image has no skin to compare with: no contrast.
    let contrast = if n_out > 0 { lum_out / n_out as f64 - lum_in / nf } else { 0.0 };
    Ok(Descriptors {
        relative_area: nf / f64::from(mask.width() * mask.height()),
        asymmetry_major: mismatch(true),
        asymmetry_minor: mismatch(false),
        compactness,
        eccentricity,
        mean_rgb,
        std_rgb,
        contrast,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb};

    fn disc(size: u32, r: f64, cx: f64, cy: f64) -> GrayImage {
        GrayImage::from_fn(size, size, |x, y| {
            let d = ((f64::from(x) - cx).powi(2) + (f64::from(y) - cy).powi(2)).sqrt();
            Luma([if d <= r { 255 } else { 0 }])
        })
    }

    #[test]
    fn a_disc_is_symmetric_round_and_compact() {
        let m = disc(128, 30.0, 64.0, 64.0);
        let img = RgbImage::from_pixel(128, 128, Rgb([200, 150, 120]));
        let d = describe(&img, &m).unwrap();
        assert!(d.asymmetry_major < 0.02 && d.asymmetry_minor < 0.02, "{d:?}");
        assert!(d.eccentricity < 0.15, "{d:?}");
        assert!((0.7..1.3).contains(&d.compactness), "{d:?}");
        let area = std::f64::consts::PI * 900.0 / (128.0 * 128.0);
        assert!((d.relative_area - area).abs() / area < 0.03, "{d:?}");
        assert!(d.std_rgb.iter().all(|s| *s < 1e-6) && d.contrast.abs() < 1e-9);
    }

    #[test]
    fn a_lopsided_shape_is_asymmetric_and_a_star_is_irregular() {
        // A disc with a bump on one side: asymmetric about the minor axis.
        let mut m = disc(128, 25.0, 64.0, 64.0);
        for (x, y, p) in disc(128, 14.0, 90.0, 64.0).enumerate_pixels() {
            if p[0] > 0 {
                m.put_pixel(x, y, Luma([255]));
            }
        }
        let img = RgbImage::new(128, 128);
        let d = describe(&img, &m).unwrap();
        let round = describe(&img, &disc(128, 25.0, 64.0, 64.0)).unwrap();
        assert!(d.asymmetry_minor.max(d.asymmetry_major) > 0.05, "{d:?}");
        // A ragged star: many boundary pixels for its area.
        let star = GrayImage::from_fn(128, 128, |x, y| {
            let (dx, dy) = (f64::from(x) - 64.0, f64::from(y) - 64.0);
            let r = 20.0 + 10.0 * (8.0 * dy.atan2(dx)).sin();
            Luma([if (dx * dx + dy * dy).sqrt() <= r { 255 } else { 0 }])
        });
        let s = describe(&img, &star).unwrap();
        assert!(s.compactness > round.compactness * 1.3, "{s:?} vs {round:?}");
    }

    #[test]
    fn darker_variegated_lesion_has_contrast_and_spread() {
        let m = disc(64, 15.0, 32.0, 32.0);
        let img = RgbImage::from_fn(64, 64, |x, y| match (m.get_pixel(x, y)[0] > 0, x % 2 == 0) {
            (true, true) => Rgb([40, 20, 10]),
            (true, false) => Rgb([120, 60, 30]),
            (false, _) => Rgb([220, 180, 160]),
        });
        let d = describe(&img, &m).unwrap();
        assert!(d.contrast > 0.3, "{d:?}");
        assert!(d.std_rgb[0] > 0.1, "{d:?}");
    }

    #[test]
    fn empty_or_tiny_masks_are_errors_not_zeros() {
        let img = RgbImage::new(32, 32);
        assert!(describe(&img, &GrayImage::new(32, 32)).is_err());
        assert!(describe(&img, &disc(32, 1.0, 16.0, 16.0)).is_err());
        assert!(describe(&RgbImage::new(16, 32), &GrayImage::new(32, 32)).is_err());
        assert_eq!(
            DESCRIPTOR_NAMES.len(),
            describe(&img, &disc(32, 8.0, 16.0, 16.0)).unwrap().to_vec().len()
        );
    }
}
