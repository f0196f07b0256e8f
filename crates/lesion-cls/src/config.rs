//! The classification training configuration, as written to a run folder's `config.toml`.
//! Every field has a default, and `lesion cls config` prints them all.

pub use lesion_core::optim::OptimizerKind;
use lesion_core::optim::{AdamConfig, OptimizerConfigs, RmsPropConfig, SgdConfig};
use lesion_core::precision::Precision;
use lesion_core::run::RunConfig;
use lesion_core::{Result, TrainError};
use lesion_data::cache::ResizeMethod;
use lesion_data::labels::NUM_CLASSES;
pub use lesion_models::classifier::ClsModelConfig;
use serde::{Deserialize, Serialize};

use crate::augment::ClsAugmentConfig;
use crate::tta::{Pool, TtaMode};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ClsTrainConfig {
    pub model: ClsModelConfig,
    pub data: ClsDataConfig,
    pub train: ClsTrainSection,
    pub adam: AdamConfig,
    pub rmsprop: RmsPropConfig,
    pub sgd: SgdConfig,
    pub augment: ClsAugmentConfig,
    pub tta: TtaConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClsDataConfig {
    /// Fraction of the images held out (stratified by class, group-aware) for validation,
    /// best-epoch choice and early stopping; 0 = no validation (train all epochs, the last
    /// epoch is "best"). Unset: [`AUTO_VAL_FRACTION`] when the run trains on more than
    /// [`AUTO_VALIDATION_MIN_IMAGES`] images, else none.
    pub val_fraction: Option<f64>,
    pub split_seed: u64,
    /// Side of the cached (resized) images that crops are taken from; `None` = input_size.
    /// Larger keeps detail in small crops.
    pub cache_size: Option<i64>,
    pub resize: ResizeMethod,
}

impl Default for ClsDataConfig {
    fn default() -> Self {
        Self { val_fraction: None, split_seed: 0, cache_size: None, resize: ResizeMethod::Cubic }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BatchNormMode {
    Frozen,
    Train,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassWeighting {
    None,
    /// Weight of class c = N / (K · n_c) over the training images (classes absent get 0).
    InverseFrequency,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClsTrainSection {
    pub epochs: usize,
    pub batch_size: usize,
    /// Batch size instead of `batch_size` when the run's training split has at most
    /// [`AUTO_VALIDATION_MIN_IMAGES`] images (unset = `batch_size` always). A small set at a
    /// large batch gets few optimiser steps per epoch: 120 PH2 images at 32 are 4 steps, and
    /// Lite2 at 1e-4 under-trained there (BENCHMARKS.md, "Lite2 at batch 8 on small sets").
    pub small_set_batch_size: Option<usize>,
    pub seed: u64,
    pub optimizer: OptimizerKind,
    pub class_weighting: ClassWeighting,
    /// Epochs with the backbone frozen (only the new head trains) before everything trains.
    pub freeze_backbone_epochs: usize,
    /// After the frozen epochs, train only MBConv blocks with index >= this (plus the head
    /// conv, its BatchNorm and the classifier); 0 = the whole net. Lite0 has 16 blocks; a
    /// partial unfreeze makes backward passes far cheaper on a CPU. ResNet: stages
    /// `layer{i}` (1-4); Inception-v4: `features.{i}` modules (1-21); VGG-16: none.
    pub unfreeze_from_block: usize,
    /// BatchNorm during training: `frozen` uses the running (ImageNet) statistics, as in
    /// evaluation, so training and prediction see the same net (dropout before the logits and
    /// gradients through the BN scales still apply; drop-connect is off); `train` uses batch
    /// statistics and updates the running ones (momentum 0.01, so they adapt slowly).
    pub batchnorm: BatchNormMode,
    /// Stop when validation mean AUC has not improved for this many epochs (0 = never).
    pub patience: usize,
    /// Forward passes (training, validation, prediction) under autocast: `fp32` (none),
    /// `bf16`, or `fp16` (with the loss scaled). For CUDA above all; see BENCHMARKS.md for CPU.
    pub precision: Precision,
    /// Weights (and so the convolutions' activations) in channels-last layout.
    pub channels_last: bool,
}

impl Default for ClsTrainSection {
    fn default() -> Self {
        Self {
            epochs: 20,
            batch_size: 16,
            small_set_batch_size: None,
            seed: 42,
            optimizer: OptimizerKind::Adam,
            class_weighting: ClassWeighting::None,
            freeze_backbone_epochs: 0,
            unfreeze_from_block: 0,
            batchnorm: BatchNormMode::Frozen,
            patience: 0,
            precision: Precision::Fp32,
            channels_last: false,
        }
    }
}

/// Test-time augmentation used by validation-free prediction (`lesion cls predict`, `cv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtaConfig {
    /// `"none"`, `"fixed8"` (flips × quarter turns), or a number N of random replicas of the
    /// training augmentation (paper: 50).
    pub replicas: TtaMode,
    /// `avg` | `max` | `extreme`.
    pub pool: Pool,
    pub seed: u64,
}

impl Default for TtaConfig {
    fn default() -> Self {
        Self { replicas: TtaMode::Fixed8, pool: Pool::Avg, seed: 0 }
    }
}

impl RunConfig for ClsTrainConfig {
    fn validate(&self) -> Result<()> {
        ClsTrainConfig::validate(self)
    }

    fn seed(&self) -> u64 {
        self.train.seed
    }

    fn set_seed(&mut self, seed: u64) {
        self.train.seed = seed;
        self.data.split_seed = seed;
    }
}

/// Training sets larger than this get a validation split when `data.val_fraction` is unset:
/// without one, a collapsing or overfitting run is invisible until it is scored elsewhere.
pub const AUTO_VALIDATION_MIN_IMAGES: usize = 300;
/// The validation share used then.
pub const AUTO_VAL_FRACTION: f64 = 0.2;

impl ClsTrainSection {
    /// The training batch size for a training split of `train_images` images: the small-set
    /// size at [`AUTO_VALIDATION_MIN_IMAGES`] or fewer when one is set, else `batch_size`.
    pub fn batch_size_for(&self, train_images: usize) -> usize {
        match self.small_set_batch_size {
            Some(small) if train_images <= AUTO_VALIDATION_MIN_IMAGES => small,
            _ => self.batch_size,
        }
    }
}

impl ClsDataConfig {
    /// The validation share for a run on `images` labelled rows.
    pub fn val_fraction_for(&self, images: usize) -> f64 {
        self.val_fraction.unwrap_or(if images > AUTO_VALIDATION_MIN_IMAGES {
            AUTO_VAL_FRACTION
        } else {
            0.0
        })
    }
}

/// Outputs of the classifier head: one per [`lesion_data::labels::LesionClass`].
pub const CLASSES: i64 = NUM_CLASSES as i64;

impl ClsTrainConfig {
    /// The optimiser sections.
    pub fn optimizers(&self) -> OptimizerConfigs {
        OptimizerConfigs { adam: self.adam, rmsprop: self.rmsprop, sgd: self.sgd }
    }

    /// The side cached images are resized to.
    pub fn cache_size(&self) -> i64 {
        self.data.cache_size.unwrap_or(self.model.input_size)
    }

    pub fn validate(&self) -> Result<()> {
        self.model.validate(CLASSES, self.train.unfreeze_from_block)?;
        let t = &self.train;
        if t.epochs == 0 || t.batch_size == 0 || t.small_set_batch_size == Some(0) {
            return Err(TrainError::Config(
                "train.epochs, train.batch_size and train.small_set_batch_size must be >= 1".into(),
            ));
        }
        if let Some(f) = self.data.val_fraction.filter(|f| !(0.0..1.0).contains(f)) {
            return Err(TrainError::Config(format!(
                "data.val_fraction must be in [0, 1), got {f}"
            )));
        }
        if self.cache_size() < self.model.input_size / 2 || self.model.input_size < 32 {
            return Err(TrainError::Config(
                "model.input_size must be >= 32 and data.cache_size >= input_size / 2".into(),
            ));
        }
        // Written to refuse NaN too.
        if [self.adam.lr, self.rmsprop.lr, self.sgd.lr].iter().any(|lr| lr.is_nan() || *lr <= 0.0) {
            return Err(TrainError::Config("adam.lr, rmsprop.lr and sgd.lr must be > 0".into()));
        }
        if !(0.0..=self.adam.lr).contains(&self.adam.min_lr) {
            return Err(TrainError::Config(format!(
                "adam.min_lr must be in [0, adam.lr = {}], got {}",
                self.adam.lr, self.adam.min_lr
            )));
        }
        self.augment.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let cfg = ClsTrainConfig::default();
        let text = cfg.to_toml().unwrap();
        for section in
            ["[model]", "[data]", "[train]", "[adam]", "[rmsprop]", "[sgd]", "[augment]", "[tta]"]
        {
            assert!(text.contains(section), "{section} missing from\n{text}");
        }
        let back: ClsTrainConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
        cfg.validate().unwrap();
        // The photometric ranges added later are written only when on (older configs, and
        // the sweep ids hashed from them, stay as they were) and round-trip when they are.
        assert!(!text.contains("color_gain") && !text.contains("contrast"), "{text}");
        let mut on = cfg.clone();
        on.augment.color_gain = 0.15;
        on.augment.contrast = 0.3;
        let text = on.to_toml().unwrap();
        assert!(text.contains("color_gain = 0.15") && text.contains("contrast = 0.3"), "{text}");
        assert_eq!(toml::from_str::<ClsTrainConfig>(&text).unwrap(), on);
    }

    /// The small-set batch applies at the auto-validation threshold and below, only when set,
    /// is left out of a config that does not set it (sweep ids stay), and 0 is refused.
    #[test]
    fn small_set_batch_size_applies_at_300_images_or_fewer() {
        let mut cfg = ClsTrainConfig::default();
        cfg.train.batch_size = 32;
        assert_eq!(cfg.train.batch_size_for(120), 32);
        assert!(!cfg.to_toml().unwrap().contains("small_set_batch_size"));
        cfg.train.small_set_batch_size = Some(8);
        for (images, want) in [
            (1, 8),
            (120, 8),
            (AUTO_VALIDATION_MIN_IMAGES, 8),
            (AUTO_VALIDATION_MIN_IMAGES + 1, 32),
            (1600, 32),
        ] {
            assert_eq!(cfg.train.batch_size_for(images), want, "{images} images");
        }
        let text = cfg.to_toml().unwrap();
        assert!(text.contains("small_set_batch_size = 8"), "{text}");
        assert_eq!(toml::from_str::<ClsTrainConfig>(&text).unwrap(), cfg);
        cfg.train.small_set_batch_size = Some(0);
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("small_set_batch_size"), "{e}");
    }

    /// Every classification config shipped in `configs/` reads and validates (a renamed key
    /// would otherwise only show when a user runs the recipe).
    #[test]
    fn shipped_classification_configs_read_and_validate() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut read = 0;
        for dir in [root.clone(), root.join("recipes"), root.join("isic2017")] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                // Classification configs: `*cls-*.toml`, and the recipes' but the segmentation one.
                let is_cls = name.ends_with(".toml")
                    && (name.contains("cls-") || (dir.ends_with("recipes") && name != "seg.toml"));
                if is_cls {
                    ClsTrainConfig::from_toml_file(&path).unwrap();
                    read += 1;
                }
            }
        }
        assert!(read >= 8, "only {read} classification configs found under {}", root.display());
    }

    #[test]
    fn a_cosine_floor_above_the_rate_is_refused() {
        let mut cfg = ClsTrainConfig::default();
        cfg.adam.cosine_epochs = 10;
        cfg.adam.min_lr = cfg.adam.lr * 2.0;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("adam.min_lr"), "{err}");
        cfg.adam.min_lr = cfg.adam.lr / 100.0;
        cfg.validate().unwrap();
    }
}
