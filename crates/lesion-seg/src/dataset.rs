//! In-memory training set: every prepared (resized) image and mask as one `u8` tensor, so a
//! batch is an `index_select` plus a cast, with no per-step decoding.
use image::{GrayImage, RgbImage};
use lesion_data::cache::PreparedSample;
use lesion_models::channel_affine;
use lesion_models::config::{InputNorm, IMAGENET_MEAN_RGB_255, IMAGENET_STD_RGB};
use tch::{Device, Kind, Tensor};

use lesion_core::images::rgb_to_chw;
use lesion_core::{Result, TrainError};

/// Images `N×3×S×S` (u8) and masks `N×1×S×S` (u8 in {0,1}), with their ids.
pub struct SegDataset {
    pub ids: Vec<String>,
    pub images: Tensor,
    pub masks: Tensor,
    pub size: i64,
}

/// A float batch ready for the net.
pub struct Batch {
    pub images: Tensor,
    pub masks: Tensor,
}

impl SegDataset {
    /// Stacks prepared samples. Every sample must have a mask of the prepared size.
    pub fn from_prepared(samples: &[PreparedSample]) -> Result<Self> {
        let first =
            samples.first().ok_or_else(|| TrainError::Config("no images to train on".into()))?;
        let (w, h) = first.image.dimensions();
        if w != h {
            return Err(TrainError::Config(format!("prepared images must be square, got {w}×{h}")));
        }
        let s = w as usize;
        let mut img_buf = Vec::with_capacity(samples.len() * 3 * s * s);
        let mut mask_buf = Vec::with_capacity(samples.len() * s * s);
        for sample in samples {
            let mask = sample.mask.as_ref().ok_or_else(|| {
                TrainError::Config(format!(
                    "{}: no mask; segmentation training needs one per image",
                    sample.id
                ))
            })?;
            if sample.image.dimensions() != (w, h) || mask.dimensions() != (w, h) {
                return Err(TrainError::Config(format!(
                    "{}: prepared image or mask is not {w}×{h}",
                    sample.id
                )));
            }
            img_buf.extend_from_slice(&rgb_to_chw(&sample.image));
            mask_buf.extend(mask.as_raw().iter().map(|&v| u8::from(v > 127)));
        }
        let n = samples.len() as i64;
        let size = s as i64;
        Ok(Self {
            ids: samples.iter().map(|p| p.id.clone()).collect(),
            images: Tensor::from_slice(&img_buf).view([n, 3, size, size]),
            masks: Tensor::from_slice(&mask_buf).view([n, 1, size, size]),
            size,
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The same dataset sharing this one's tensors (for the prefetch thread).
    pub fn shallow_clone(&self) -> SegDataset {
        SegDataset {
            ids: self.ids.clone(),
            images: self.images.shallow_clone(),
            masks: self.masks.shallow_clone(),
            size: self.size,
        }
    }

    /// Float batch of the given sample indices on `device`: raw 0-255 images, 0/1 masks.
    pub fn batch(&self, indices: &[i64], device: Device) -> Batch {
        let idx = Tensor::from_slice(indices);
        Batch {
            images: self.images.index_select(0, &idx).to_device(device).to_kind(Kind::Float),
            masks: self.masks.index_select(0, &idx).to_device(device).to_kind(Kind::Float),
        }
    }
}

/// Image `1×3×H×W` float (0-255) from an RGB image.
pub fn image_tensor(img: &RgbImage) -> Tensor {
    let (w, h) = img.dimensions();
    Tensor::from_slice(&rgb_to_chw(img)).view([1, 3, h as i64, w as i64]).to_kind(Kind::Float)
}

/// Mask tensor `1×1×H×W` in {0,1} from a grey mask (> 127 is lesion).
pub fn mask_tensor(mask: &GrayImage) -> Tensor {
    let (w, h) = mask.dimensions();
    let bits: Vec<u8> = mask.as_raw().iter().map(|&v| u8::from(v > 127)).collect();
    Tensor::from_slice(&bits).view([1, 1, h as i64, w as i64]).to_kind(Kind::Float)
}

/// 8-bit pixel scale: [`InputNorm::ImagenetMean`] and [`InputNorm::ImagenetMeanStd`] divide
/// by it.
const PIXEL_MAX: f64 = 255.0;
/// The scale of a shift-only normalisation ([`InputNorm::CaffeBgr`]).
const UNIT_SCALE: [f64; 3] = [1.0; 3];

/// Applies the net's input normalisation to a float 0-255 RGB batch. Per-channel scalar
/// arithmetic only, no constant tensors, so a traced normalisation is the same on any device
/// (see [`lesion_models::channel_affine`]).
pub fn normalize(images: &Tensor, norm: InputNorm) -> Tensor {
    let mean = &IMAGENET_MEAN_RGB_255;
    match norm {
        InputNorm::ImagenetMean => channel_affine(images, mean, &[PIXEL_MAX; 3]),
        InputNorm::ImagenetMeanStd => {
            channel_affine(images, mean, &IMAGENET_STD_RGB.map(|s| s * PIXEL_MAX))
        }
        InputNorm::CaffeBgr => channel_affine(images, mean, &UNIT_SCALE).flip([1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caffe_input_is_bgr_minus_mean() {
        let img = Tensor::from_slice(&[10.0f32, 20.0, 30.0]).view([1, 3, 1, 1]);
        let out =
            Vec::<f32>::try_from(normalize(&img, InputNorm::CaffeBgr).flatten(0, -1)).unwrap();
        let want = [30.0 - 103.939, 20.0 - 116.779, 10.0 - 123.68];
        for (g, w) in out.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-3);
        }
    }
}
