//! Seeded copy transforms for the near-duplicate benchmark: rescale, crop, brightness,
//! flips, JPEG re-compression, in the ranges of issue 4.

use std::io::Cursor;
use std::path::Path;

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::codecs::jpeg::JpegEncoder;
use image::RgbImage;
use rand::Rng;

use crate::error::{DedupError, Result};

/// Ranges of the transforms. Invariant: every `min <= max`; crop fraction < 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransformRanges {
    pub scale_min: f32,
    pub scale_max: f32,
    pub jpeg_quality_min: u8,
    pub jpeg_quality_max: u8,
    /// Largest fraction of each side removed by the crop (split at random between both ends).
    pub crop_max: f32,
    /// Largest relative brightness change (±).
    pub brightness_max: f32,
    /// Probability of a horizontal flip, and independently of a vertical one.
    pub flip_probability: f64,
}

impl Default for TransformRanges {
    /// The ranges: rescale 0.5-2×, JPEG 60-95, crops up to 10 %, brightness ±10 %, flips.
    fn default() -> Self {
        TransformRanges {
            scale_min: 0.5,
            scale_max: 2.0,
            jpeg_quality_min: 60,
            jpeg_quality_max: 95,
            crop_max: 0.10,
            brightness_max: 0.10,
            flip_probability: 0.5,
        }
    }
}

/// What was done to a copy.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformRecord {
    pub scale: f32,
    pub quality: u8,
    pub crop_x: f32,
    pub crop_y: f32,
    pub brightness: f32,
    pub flip_h: bool,
    pub flip_v: bool,
}

/// Makes a transformed JPEG copy of `img`; `path` names the original in errors.
pub fn transformed_copy<R: Rng>(
    path: &Path,
    img: &RgbImage,
    r: &TransformRanges,
    rng: &mut R,
) -> Result<(Vec<u8>, TransformRecord)> {
    let (w, h) = img.dimensions();
    let crop_x = rng.random_range(0.0..=r.crop_max);
    let crop_y = rng.random_range(0.0..=r.crop_max);
    let cw = ((w as f32) * (1.0 - crop_x)).round().max(1.0) as u32;
    let ch = ((h as f32) * (1.0 - crop_y)).round().max(1.0) as u32;
    let x0 = rng.random_range(0..=(w - cw));
    let y0 = rng.random_range(0..=(h - ch));
    let mut out = image::imageops::crop_imm(img, x0, y0, cw, ch).to_image();
    let flip_h = rng.random_bool(r.flip_probability);
    let flip_v = rng.random_bool(r.flip_probability);
    if flip_h {
        image::imageops::flip_horizontal_in_place(&mut out);
    }
    if flip_v {
        image::imageops::flip_vertical_in_place(&mut out);
    }
    let brightness = rng.random_range(-r.brightness_max..=r.brightness_max);
    for p in out.pixels_mut() {
        for c in p.0.iter_mut() {
            *c = (f32::from(*c) * (1.0 + brightness)).round().clamp(0.0, 255.0) as u8;
        }
    }
    let scale = (rng.random_range(r.scale_min.ln()..=r.scale_max.ln())).exp();
    let nw = ((cw as f32) * scale).round().max(1.0) as u32;
    let nh = ((ch as f32) * scale).round().max(1.0) as u32;
    let out = resize_to(path, &out, nw, nh)?;
    let quality = rng.random_range(r.jpeg_quality_min..=r.jpeg_quality_max);
    let mut buf = Cursor::new(Vec::new());
    JpegEncoder::new_with_quality(&mut buf, quality).encode_image(&out).map_err(|e| {
        DedupError::InvalidArgument(format!("{}: JPEG encoding failed: {e}", path.display()))
    })?;
    Ok((
        buf.into_inner(),
        TransformRecord { scale, quality, crop_x, crop_y, brightness, flip_h, flip_v },
    ))
}

/// Resizes to `w`×`h` with an antialiasing bilinear convolution.
pub fn resize_to(path: &Path, src: &RgbImage, w: u32, h: u32) -> Result<RgbImage> {
    let mut dst = RgbImage::new(w, h);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new().resize(src, &mut dst, &options).map_err(|e| {
        DedupError::InvalidArgument(format!("{}: resize failed: {e}", path.display()))
    })?;
    Ok(dst)
}
