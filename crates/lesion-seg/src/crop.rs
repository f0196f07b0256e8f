//! The lesion-centred crop of an image from its (predicted) mask: the bounding box of the
//! mask's foreground, made square around its centre, widened by a margin and clipped to the
//! image. The classifier then sees the lesion at a similar scale whatever its size in the
//! frame. An empty mask gives the whole image (and says so), never an empty crop.
use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

use lesion_core::{Result, TrainError};

/// A mask pixel above this is foreground (masks are 0/255).
const FOREGROUND: u8 = 127;
/// Largest margin accepted: beyond it the crop is the whole image anyway for most lesions.
const MAX_MARGIN: f64 = 2.0;

/// How the crop is drawn around the lesion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropSettings {
    /// Added on every side, as a fraction of the box's longer side (0.1 = 10 %).
    pub margin: f64,
}

impl Default for CropSettings {
    fn default() -> Self {
        Self { margin: 0.1 }
    }
}

impl CropSettings {
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=MAX_MARGIN).contains(&self.margin) {
            return Err(TrainError::Config(format!(
                "crop margin {} is outside [0, {MAX_MARGIN}]",
                self.margin
            )));
        }
        Ok(())
    }
}

/// A pixel rectangle `[x0, x1) × [y0, y1)`. Invariant: `x0 < x1`, `y0 < y1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PixelBox {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl PixelBox {
    pub fn width(&self) -> u32 {
        self.x1 - self.x0
    }
    pub fn height(&self) -> u32 {
        self.y1 - self.y0
    }
}

/// The bounding box of the mask's foreground; `None` for an empty mask.
pub fn foreground_box(mask: &GrayImage) -> Option<PixelBox> {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0u32, 0u32);
    for (x, y, p) in mask.enumerate_pixels() {
        if p[0] > FOREGROUND {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x + 1);
            y1 = y1.max(y + 1);
        }
    }
    (x0 < x1 && y0 < y1).then_some(PixelBox { x0, y0, x1, y1 })
}

/// The crop box for a mask of `w×h`: the foreground box made square on its centre, widened by
/// the margin, clipped to the image. `None` when the mask is empty.
pub fn crop_box(mask: &GrayImage, settings: CropSettings) -> Option<PixelBox> {
    let b = foreground_box(mask)?;
    let (w, h) = mask.dimensions();
    let side = f64::from(b.width().max(b.height())) * (1.0 + 2.0 * settings.margin);
    let cx = f64::from(b.x0 + b.x1) / 2.0;
    let cy = f64::from(b.y0 + b.y1) / 2.0;
    let clip = |v: f64, max: u32| v.round().clamp(0.0, f64::from(max)) as u32;
    let x0 = clip(cx - side / 2.0, w);
    let x1 = clip(cx + side / 2.0, w).max(x0 + 1).min(w);
    let y0 = clip(cy - side / 2.0, h);
    let y1 = clip(cy + side / 2.0, h).max(y0 + 1).min(h);
    (x0 < x1 && y0 < y1).then_some(PixelBox { x0, y0, x1, y1 })
}

/// A mask must have its image's size.
pub fn check_same_size(img: &RgbImage, mask: &GrayImage) -> Result<()> {
    if img.dimensions() != mask.dimensions() {
        return Err(TrainError::Config(format!(
            "mask is {}×{} but the image is {}×{}",
            mask.width(),
            mask.height(),
            img.width(),
            img.height()
        )));
    }
    Ok(())
}

/// The image cropped to `crop_box` of its mask, with the box; the whole image and `None` when
/// the mask is empty. The mask must have the image's size.
pub fn crop_to_lesion(
    img: &RgbImage,
    mask: &GrayImage,
    settings: CropSettings,
) -> Result<(RgbImage, Option<PixelBox>)> {
    check_same_size(img, mask)?;
    Ok(match crop_box(mask, settings) {
        Some(b) => {
            (image::imageops::crop_imm(img, b.x0, b.y0, b.width(), b.height()).to_image(), Some(b))
        }
        None => (img.clone(), None),
    })
}

/// The part of `mask` under `crop` (the box [`crop_to_lesion`] returned), or the whole mask
/// for `None` (an empty mask, whose crop is the whole image): the mask of the crop's pixels.
pub fn crop_mask(mask: &GrayImage, crop: Option<PixelBox>) -> GrayImage {
    match crop {
        Some(b) => image::imageops::crop_imm(mask, b.x0, b.y0, b.width(), b.height()).to_image(),
        None => mask.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    fn mask_with(w: u32, h: u32, r: PixelBox) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            Luma([if x >= r.x0 && x < r.x1 && y >= r.y0 && y < r.y1 { 255 } else { 0 }])
        })
    }

    #[test]
    fn box_is_square_centred_and_widened() {
        let m = mask_with(100, 100, PixelBox { x0: 40, y0: 45, x1: 60, y1: 55 });
        let b = crop_box(&m, CropSettings { margin: 0.25 }).unwrap();
        // Longer side 20, ×1.5 = 30, centred on (50, 50).
        assert_eq!(b, PixelBox { x0: 35, y0: 35, x1: 65, y1: 65 });
    }

    #[test]
    fn box_is_clipped_to_the_image() {
        let m = mask_with(50, 40, PixelBox { x0: 0, y0: 0, x1: 10, y1: 40 });
        let b = crop_box(&m, CropSettings { margin: 0.5 }).unwrap();
        assert_eq!((b.x0, b.y0, b.y1), (0, 0, 40));
        assert!(b.x1 <= 50);
    }

    #[test]
    fn empty_mask_keeps_the_whole_image() {
        let img = RgbImage::new(8, 6);
        let (out, b) =
            crop_to_lesion(&img, &GrayImage::new(8, 6), CropSettings::default()).unwrap();
        assert_eq!(out.dimensions(), (8, 6));
        assert!(b.is_none());
    }

    #[test]
    fn mask_of_another_size_is_refused() {
        let e =
            crop_to_lesion(&RgbImage::new(8, 6), &GrayImage::new(6, 8), CropSettings::default());
        assert!(e.is_err());
    }

    #[test]
    fn margin_is_validated() {
        assert!(CropSettings { margin: -0.1 }.validate().is_err());
        assert!(CropSettings { margin: 0.3 }.validate().is_ok());
    }
}
