//! The whole training configuration, as written to a run folder's `config.toml`. Every field
//! has a default, and `lesion seg config` prints them all.
use lesion_core::precision::Precision;
use std::path::{Path, PathBuf};

use lesion_models::SegNetConfig;
use serde::{Deserialize, Serialize};

use lesion_core::optim::AdamConfig;
use lesion_core::run::RunConfig;
use lesion_core::{Result, TrainError};
use lesion_data::cache::ResizeMethod;

use crate::augment::AugmentConfig;
use crate::loss::LossKind;
use crate::predict::SegTta;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SegTrainConfig {
    pub model: SegNetConfig,
    pub data: DataConfig,
    pub train: TrainSection,
    pub adam: AdamConfig,
    pub augment: AugmentConfig,
    pub predict: PredictSection,
}

/// How `seg predict` uses the trained net (the command line can override it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictSection {
    /// Test-time augmentation: `none` | `flip` (mean probability over the four flips).
    pub tta: SegTta,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Fraction of images held out for validation when no split file is given.
    pub val_fraction: f64,
    /// Seed of the random train/validation split.
    pub split_seed: u64,
    /// Optional file listing validation ids (one per line; `#` comments). Relative paths are
    /// resolved against the config file's folder.
    pub split_file: Option<PathBuf>,
    /// Interpolation used to build the training-size cache (masks are always re-thresholded).
    pub resize: ResizeMethod,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self { val_fraction: 0.2, split_seed: 0, split_file: None, resize: ResizeMethod::Cubic }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSection {
    pub epochs: usize,
    pub batch_size: usize,
    pub loss: LossKind,
    pub seed: u64,
    /// Train on every image with no validation split (the paper's final models).
    pub train_on_all: bool,
    /// `vgg16-unet`, `lite-unet`: epochs with the encoder frozen before all layers train
    /// (paper: 100); ignored by the other archs.
    pub freeze_encoder_epochs: usize,
    /// `vgg16-unet`, `lite-unet`: initialise the encoder from ImageNet weights (for
    /// `lite-unet` the registry weights of `model.variant`); ignored by the other archs.
    pub pretrained: bool,
    /// Validate every N epochs (the last epoch is always validated).
    pub val_every: usize,
    /// Multiply the learning rate by `lr_decay` when validation Jaccard has not improved for
    /// `lr_patience` validations (0 disables).
    pub lr_patience: usize,
    pub lr_decay: f64,
    /// Forward passes (training, validation, prediction) under autocast: `fp32` (none),
    /// `bf16`, or `fp16` (with the loss scaled). For CUDA above all; see BENCHMARKS.md for CPU.
    pub precision: Precision,
    /// Weights (and so the convolutions' activations) in channels-last layout.
    pub channels_last: bool,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            epochs: 30,
            batch_size: 8,
            loss: LossKind::Dice,
            seed: 42,
            train_on_all: false,
            freeze_encoder_epochs: 0,
            pretrained: false,
            val_every: 1,
            lr_patience: 0,
            lr_decay: 0.5,
            precision: Precision::Fp32,
            channels_last: false,
        }
    }
}

impl RunConfig for SegTrainConfig {
    fn validate(&self) -> Result<()> {
        SegTrainConfig::validate(self)
    }

    fn seed(&self) -> u64 {
        self.train.seed
    }

    /// A `data.split_file` keeps its fixed split; only the training seed then changes.
    fn set_seed(&mut self, seed: u64) {
        self.train.seed = seed;
        self.data.split_seed = seed;
    }

    /// `data.split_file` is relative to the config's folder.
    fn resolve_relative_paths(&mut self, dir: &Path) {
        if let Some(split) = &self.data.split_file {
            if split.is_relative() {
                self.data.split_file = Some(dir.join(split));
            }
        }
    }
}

impl SegTrainConfig {
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let t = &self.train;
        if t.epochs == 0 || t.batch_size == 0 || t.val_every == 0 {
            return Err(TrainError::Config(
                "train.epochs, train.batch_size and train.val_every must be >= 1".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.data.val_fraction) {
            return Err(TrainError::Config(format!(
                "data.val_fraction must be in [0, 1), got {}",
                self.data.val_fraction
            )));
        }
        if self.adam.lr.is_nan() || self.adam.lr <= 0.0 {
            return Err(TrainError::Config(format!("adam.lr must be > 0, got {}", self.adam.lr)));
        }
        if self.adam.cosine_epochs > 0 {
            return Err(TrainError::Config(
                "adam.cosine_epochs is a classification schedule; segmentation lowers its rate on a plateau (train.lr_patience, train.lr_decay)".into(),
            ));
        }
        if self.augment.zoom_min <= 0.0 || self.augment.zoom_max < self.augment.zoom_min {
            return Err(TrainError::Config("augment: need 0 < zoom_min <= zoom_max".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let cfg = SegTrainConfig::default();
        let text = cfg.to_toml().unwrap();
        // Every section is written out.
        for section in ["[model]", "[data]", "[train]", "[adam]", "[augment]", "[predict]"] {
            assert!(text.contains(section), "{section} missing from\n{text}");
        }
        let back: SegTrainConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "[train]\nepoch = 3\n").unwrap();
        let err = SegTrainConfig::from_toml_file(&p).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("epoch"), "{err}");
    }

    /// The cosine schedule is classification's; a segmentation run would silently ignore it.
    #[test]
    fn a_cosine_schedule_is_refused_for_segmentation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cosine.toml");
        std::fs::write(&p, "[adam]\ncosine_epochs = 20\n").unwrap();
        let err = SegTrainConfig::from_toml_file(&p).unwrap_err().to_string();
        assert!(err.contains("cosine_epochs") && err.contains("plateau"), "{err}");
    }
}
