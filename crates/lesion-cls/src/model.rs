//! The classifier as training and prediction hold it: the net of [`lesion_models::classifier`]
//! with its variables and config (logits under each BatchNorm mode, penultimate features), the
//! in-memory image set it trains on, and loading a trained one from its run folder.
use lesion_core::precision::{to_float32, vars_to_channels_last, Autocast};
use std::path::Path;

use image::{GrayImage, RgbImage};
use lesion_core::images::rgb_to_chw;
use lesion_core::run::load_trained;
use lesion_core::{Result, TrainError};
use lesion_data::cache::{resize_mask, resize_rgb, PreprocessCache, ResizeMethod};
use lesion_data::labels::{LabelledRow, LesionClass};
use lesion_models::classifier::{model_input, pool_features, ClsNet};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Tensor};

use crate::config::{BatchNormMode, ClsTrainConfig, CLASSES};

/// Colour channels of the images.
const RGB_CHANNELS: i64 = 3;

/// Images (u8, N×3×S×S at the cache size) and their classes, with each image's lesion mask
/// (u8 0/255, N×1×S×S) when the model pools by the lesion. Invariant: `ids`, `classes` and
/// the first dimension of `images` (and of `masks`) have the same length.
pub struct ClsDataset {
    pub ids: Vec<String>,
    pub classes: Vec<LesionClass>,
    pub images: Tensor,
    pub masks: Option<Tensor>,
    pub size: i64,
}

/// Whether a set of rows is prepared with its lesion masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskUse {
    /// Pixels only (masks in the manifest are ignored).
    Ignore,
    /// Every row needs a mask (`[model] pooling = "global-and-lesion"`); a row without one is
    /// an error naming it.
    Require,
}

impl MaskUse {
    /// What a classifier of `cfg` needs.
    pub fn of(cfg: &ClsTrainConfig) -> MaskUse {
        if cfg.model.pooling.needs_mask() {
            MaskUse::Require
        } else {
            MaskUse::Ignore
        }
    }
}

/// Where the pixels of a set of rows come from.
#[derive(Clone, Copy)]
pub enum Pixels<'a> {
    /// Each row's image file, resized through the preprocessing cache.
    Cache(&'a PreprocessCache),
    /// Images already decoded, one per row in row order (the service's uploads), with their
    /// lesion masks (0/255, each at its image's size) when the bundle has them. They are
    /// resized exactly as the cache resizes files (the cache stores its result losslessly),
    /// so both sources give the same tensors for the same image.
    Decoded(&'a [RgbImage], Option<&'a [GrayImage]>),
}

impl ClsDataset {
    /// Resizes (through the cache) and stacks the rows' images.
    pub fn prepare(
        rows: &[LabelledRow],
        size: i64,
        resize: ResizeMethod,
        cache: &PreprocessCache,
        progress: bool,
    ) -> Result<Self> {
        Self::prepare_from(rows, size, resize, Pixels::Cache(cache), MaskUse::Ignore, progress)
    }

    /// Resizes and stacks the rows' images, taken from `pixels`.
    pub fn prepare_from(
        rows: &[LabelledRow],
        size: i64,
        resize: ResizeMethod,
        pixels: Pixels<'_>,
        masks: MaskUse,
        progress: bool,
    ) -> Result<Self> {
        let want_masks = masks == MaskUse::Require;
        // Files: each row names its mask (decoded images bring theirs, checked below).
        let unmasked = rows.iter().find(|r| r.row.mask_path.is_none());
        if let (true, Pixels::Cache(_), Some(r)) = (want_masks, pixels, unmasked) {
            return Err(TrainError::file(
                &r.row.image_path,
                format!(
                    "image {}: model.pooling = global-and-lesion needs its lesion mask, and its manifest row has none (`lesion crop` writes a manifest with predicted masks)",
                    r.row.id
                ),
            ));
        }
        let (resized, resized_masks): (Vec<RgbImage>, Vec<Option<GrayImage>>) = match pixels {
            Pixels::Cache(cache) => {
                let manifest_rows: Vec<_> = rows.iter().map(|r| r.row.clone()).collect();
                cache
                    .prepare(&manifest_rows, size as u32, resize, progress)?
                    .into_iter()
                    .map(|p| (p.image, p.mask))
                    .unzip()
            }
            Pixels::Decoded(images, decoded_masks) => {
                if images.len() != rows.len() {
                    return Err(TrainError::Config(format!(
                        "{} decoded images for {} rows",
                        images.len(),
                        rows.len()
                    )));
                }
                let images = rows
                    .iter()
                    .zip(images)
                    .map(|(r, img)| Ok(resize_rgb(&r.row.image_path, img, size as u32, resize)?))
                    .collect::<Result<Vec<_>>>()?;
                let masks = match (want_masks, decoded_masks) {
                    (false, _) => vec![None; rows.len()],
                    (true, None) => {
                        return Err(TrainError::Config(
                            "model.pooling = global-and-lesion needs a lesion mask with each decoded image, and none was given".into(),
                        ))
                    }
                    (true, Some(m)) if m.len() != rows.len() => {
                        return Err(TrainError::Config(format!(
                            "{} decoded masks for {} rows",
                            m.len(),
                            rows.len()
                        )))
                    }
                    (true, Some(m)) => rows
                        .iter()
                        .zip(m)
                        .map(|(r, m)| Ok(Some(resize_mask(&r.row.image_path, m, size as u32)?)))
                        .collect::<Result<Vec<_>>>()?,
                };
                (images, masks)
            }
        };
        let s = size as usize;
        let mut buf = Vec::with_capacity(rows.len() * 3 * s * s);
        for (r, image) in rows.iter().zip(&resized) {
            if image.dimensions() != (size as u32, size as u32) {
                return Err(TrainError::Config(format!(
                    "{}: prepared image is not {size}×{size}",
                    r.row.id
                )));
            }
            buf.extend_from_slice(&rgb_to_chw(image));
        }
        let n = rows.len() as i64;
        let masks = if want_masks {
            let mut mbuf = Vec::with_capacity(rows.len() * s * s);
            for (r, m) in rows.iter().zip(&resized_masks) {
                let m = m.as_ref().ok_or_else(|| {
                    TrainError::file(
                        &r.row.image_path,
                        format!("image {}: its lesion mask could not be prepared", r.row.id),
                    )
                })?;
                if m.dimensions() != (size as u32, size as u32) {
                    return Err(TrainError::Config(format!(
                        "{}: prepared mask is not {size}×{size}",
                        r.row.id
                    )));
                }
                mbuf.extend_from_slice(m.as_raw());
            }
            Some(Tensor::from_slice(&mbuf).view([n, 1, size, size]))
        } else {
            None
        };
        Ok(Self {
            ids: rows.iter().map(|r| r.row.id.clone()).collect(),
            classes: rows.iter().map(|r| r.class).collect(),
            images: Tensor::from_slice(&buf).view([n, 3, size, size]),
            masks,
            size,
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// u8 images of the given indices.
    /// The same dataset sharing this one's image tensor (for the prefetch thread).
    pub fn shallow_clone(&self) -> ClsDataset {
        ClsDataset {
            ids: self.ids.clone(),
            classes: self.classes.clone(),
            images: self.images.shallow_clone(),
            masks: self.masks.as_ref().map(Tensor::shallow_clone),
            size: self.size,
        }
    }

    pub fn images_at(&self, indices: &[i64]) -> Tensor {
        self.images.index_select(0, &Tensor::from_slice(indices))
    }

    /// u8 images of the given indices with their mask as a fourth channel (N×4×S×S) when the
    /// set holds masks, else as [`Self::images_at`]. The augmentation warps the fourth channel
    /// with the pixels and leaves it out of the colour changes.
    pub fn inputs_at(&self, indices: &[i64]) -> Tensor {
        let images = self.images_at(indices);
        match &self.masks {
            Some(m) => Tensor::cat(&[images, m.index_select(0, &Tensor::from_slice(indices))], 1),
            None => images,
        }
    }

    pub fn labels_at(&self, indices: &[i64], device: Device) -> Tensor {
        let l: Vec<i64> =
            indices.iter().map(|&i| self.classes[i as usize].index() as i64).collect();
        Tensor::from_slice(&l).to_device(device)
    }
}

/// A classifier: the net and its variables.
pub struct ClsModel {
    pub cfg: ClsTrainConfig,
    pub net: ClsNet,
    pub vs: VarStore,
}

impl ClsModel {
    /// Builds the net (random 3-class head) on `device`.
    pub fn build(cfg: &ClsTrainConfig, device: Device) -> Result<Self> {
        let vs = VarStore::new(device);
        let net = ClsNet::build(&cfg.model, CLASSES, &vs.root())?;
        Ok(Self { cfg: cfg.clone(), net, vs })
    }

    /// Logits of a normalised batch; `train` switches BatchNorm batch statistics, dropout and
    /// (EfficientNet-Lite) drop-connect together.
    /// Runs under autocast in the config's `train.precision`; the logits come back float32.
    pub fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _autocast = Autocast::enter(self.vs.device(), self.cfg.train.precision)?;
        if let Some(lite) = self.net.lite() {
            return Ok(to_float32(lite.forward_t(x, train)));
        }
        Ok(to_float32(self.head_of(&self.net.features_t(x, train), train)?))
    }

    /// Training-time logits of a normalised batch under the configured BatchNorm mode.
    pub fn train_logits(&self, x: &Tensor) -> Result<Tensor> {
        match self.cfg.train.batchnorm {
            BatchNormMode::Train => self.logits(x, true),
            BatchNormMode::Frozen => self.head_of(&self.net.features_t(x, false), true),
        }
    }

    /// Head dropout (active when `dropout_on`) and the classifier, on penultimate features.
    fn head_of(&self, features: &Tensor, dropout_on: bool) -> Result<Tensor> {
        let (w, b) = self.head()?;
        Ok(features.dropout(self.cfg.model.head_dropout(CLASSES), dropout_on).linear(&w, Some(&b)))
    }

    /// The classifier's weight and bias.
    fn head(&self) -> Result<(Tensor, Tensor)> {
        let vars = self.vs.variables();
        let prefix = self.net.head_prefix();
        let w = vars
            .get(&format!("{prefix}weight"))
            .ok_or_else(|| TrainError::Config("model has no classifier weight".into()))?;
        let b = vars
            .get(&format!("{prefix}bias"))
            .ok_or_else(|| TrainError::Config("model has no classifier bias".into()))?;
        Ok((w.shallow_clone(), b.shallow_clone()))
    }

    /// Evaluation-mode logits and penultimate features of a [0, 1] batch (normalised here).
    /// The logits are the classifier applied to the features (dropout is off in evaluation).
    /// Under autocast in the config's `train.precision`; both come back float32.
    /// With `[model] pooling = "global-and-lesion"` the batch carries the lesion mask as a
    /// fourth channel (see [`ClsDataset::inputs_at`]); the features are then the global and the
    /// lesion averages (2F), and the logits the classifier on the global half.
    pub fn eval_with_features(&self, unit: &Tensor) -> Result<(Tensor, Tensor)> {
        let _autocast = Autocast::enter(self.vs.device(), self.cfg.train.precision)?;
        let channels = unit.size().get(1).copied().unwrap_or(0);
        let pooling = self.cfg.model.pooling;
        if !pooling.needs_mask() {
            if channels != RGB_CHANNELS {
                return Err(TrainError::Config(format!(
                    "a batch of {channels} channels for a classifier of RGB images"
                )));
            }
            let x = model_input(unit, &self.cfg.model);
            let f = self.net.features_t(&x, false);
            let (w, b) = self.head()?;
            return Ok((to_float32(f.linear(&w, Some(&b))), to_float32(f)));
        }
        if channels != RGB_CHANNELS + 1 {
            return Err(TrainError::Config(format!(
                "model.pooling = global-and-lesion needs RGB + mask batches (4 channels), got {channels}"
            )));
        }
        let x = model_input(&unit.narrow(1, 0, RGB_CHANNELS), &self.cfg.model);
        let mask = unit.narrow(1, RGB_CHANNELS, 1);
        let map = self.net.feature_map_t(&x, false)?;
        let f = pool_features(&map, pooling, Some(&mask))?;
        let (w, b) = self.head()?;
        let global = f.narrow(1, 0, w.size()[1]);
        Ok((to_float32(global.linear(&w, Some(&b))), to_float32(f)))
    }
}

/// Loads a trained classifier from a run folder (its `config.toml` and best checkpoint) or a
/// checkpoint file whose run folder is two levels up.
pub fn load_model(path: &Path, device: Device) -> Result<ClsModel> {
    let t = load_trained(path, device, |cfg: &ClsTrainConfig, vs| {
        Ok(ClsNet::build(&cfg.model, CLASSES, &vs.root())?)
    })?;
    if t.cfg.train.channels_last {
        vars_to_channels_last(&t.vars);
    }
    Ok(ClsModel { cfg: t.cfg, net: t.model, vs: t.vars })
}
