//! The classification training configuration, as written to a run folder's `config.toml`.
//! Every field has a default, and `lesion cls config` prints them all.
use std::path::Path;

use lesion_models::efficientnet::LiteVariant;
use serde::{Deserialize, Serialize};

use crate::cls::augment::{ClsAugmentConfig, Normalization};
use crate::cls::rmsprop::RmsPropConfig;
use crate::config::Resize;
use crate::error::{Result, TrainError};
use crate::optim::AdamConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ClsTrainConfig {
    pub model: ClsModelConfig,
    pub data: ClsDataConfig,
    pub train: ClsTrainSection,
    pub adam: AdamConfig,
    pub rmsprop: RmsPropConfig,
    pub sgd: crate::cls::sgd::SgdConfig,
    pub augment: ClsAugmentConfig,
    pub tta: TtaConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClsModelConfig {
    /// `efficientnet-lite` (default) | `resnet50` | `resnet101` | `vgg16`.
    pub arch: crate::cls::net::ClsArch,
    /// EfficientNet-Lite variant: `lite0` | `lite1` | `lite2`.
    pub variant: LiteVariant,
    /// ImageNet weights for `resnet50` / `resnet101` / `vgg16` (torchvision layout; `.pth`,
    /// `.onnx` or `.safetensors`, e.g. from `lesion weights import`). No registry package ships
    /// them, so `pretrained = true` with these archs needs this file.
    pub weights: Option<std::path::PathBuf>,
    /// Input side of the net (the static "SAME" paddings are computed for it).
    pub input_size: i64,
    /// Dropout before the logits; `None` = the variant's own (0.2 / 0.2 / 0.3).
    pub dropout: Option<f64>,
    /// Drop-connect rate of the last block in training.
    pub drop_connect_rate: f64,
    /// Start from the ImageNet weights (the 1000-class head is replaced by a new 3-class one).
    pub pretrained: bool,
    /// Input normalisation.
    pub normalization: Normalization,
}

impl Default for ClsModelConfig {
    fn default() -> Self {
        Self {
            arch: crate::cls::net::ClsArch::EfficientnetLite,
            variant: LiteVariant::Lite0,
            weights: None,
            input_size: 224,
            dropout: None,
            drop_connect_rate: lesion_models::efficientnet::DROP_CONNECT_RATE,
            pretrained: true,
            normalization: Normalization::Imagenet,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClsDataConfig {
    /// Fraction of the images held out (stratified by class, group-aware) for validation and
    /// early stopping; 0 = no validation (train all epochs, the last epoch is "best").
    pub val_fraction: f64,
    pub split_seed: u64,
    /// Side of the cached (resized) images that crops are taken from; `None` = input_size.
    /// Larger keeps detail in small crops.
    pub cache_size: Option<i64>,
    pub resize: Resize,
}

impl Default for ClsDataConfig {
    fn default() -> Self {
        Self { val_fraction: 0.2, split_seed: 0, cache_size: None, resize: Resize::Cubic }
    }
}

/// Which optimiser trains the net.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// `[adam]` with L2 weight decay folded into the gradient (torch.optim.Adam).
    Adam,
    /// `[adam]` with decoupled weight decay (torch.optim.AdamW): p ← p·(1 − lr·wd) before the
    /// Adam update.
    Adamw,
    /// `[rmsprop]`, the paper's recipe (TF RMSProp).
    Rmsprop,
    /// `[sgd]`: torch.optim.SGD with momentum (optionally Nesterov) and a step schedule.
    Sgd,
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
    pub seed: u64,
    pub optimizer: OptimizerKind,
    pub class_weighting: ClassWeighting,
    /// Epochs with the backbone frozen (only the new head trains) before everything trains.
    pub freeze_backbone_epochs: usize,
    /// After the frozen epochs, train only MBConv blocks with index >= this (plus the head
    /// conv, its BatchNorm and the classifier); 0 = the whole net. Lite0 has 16 blocks; a
    /// partial unfreeze makes backward passes far cheaper on a CPU.
    pub unfreeze_from_block: usize,
    /// BatchNorm during training: `frozen` uses the running (ImageNet) statistics, as in
    /// evaluation, so training and prediction see the same net (dropout before the logits and
    /// gradients through the BN scales still apply; drop-connect is off); `train` uses batch
    /// statistics and updates the running ones (momentum 0.01, so they adapt slowly).
    pub batchnorm: BatchNormMode,
    /// Stop when validation mean AUC has not improved for this many epochs (0 = never).
    pub patience: usize,
}

impl Default for ClsTrainSection {
    fn default() -> Self {
        Self {
            epochs: 20,
            batch_size: 16,
            seed: 42,
            optimizer: OptimizerKind::Adam,
            class_weighting: ClassWeighting::None,
            freeze_backbone_epochs: 0,
            unfreeze_from_block: 0,
            batchnorm: BatchNormMode::Frozen,
            patience: 0,
        }
    }
}

/// Test-time augmentation used by validation-free prediction (`lesion cls predict`, `cv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtaConfig {
    /// `"none"`, `"fixed8"` (flips × quarter turns), or a number N of random replicas of the
    /// training augmentation (paper: 50).
    pub replicas: String,
    /// `avg` | `max` | `extreme`.
    pub pool: crate::cls::tta::Pool,
    pub seed: u64,
}

impl Default for TtaConfig {
    fn default() -> Self {
        Self { replicas: "fixed8".into(), pool: crate::cls::tta::Pool::Avg, seed: 0 }
    }
}

impl ClsTrainConfig {
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::file(path, e))?;
        let cfg: ClsTrainConfig = toml::from_str(&text).map_err(|e| TrainError::file(path, e))?;
        cfg.validate().map_err(|e| TrainError::file(path, e))?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| TrainError::Config(e.to_string()))
    }

    /// The side cached images are resized to.
    pub fn cache_size(&self) -> i64 {
        self.data.cache_size.unwrap_or(self.model.input_size)
    }

    /// The EfficientNet-Lite build config (3-class head).
    pub fn net_config(&self) -> lesion_models::efficientnet::EfficientNetConfig {
        lesion_models::efficientnet::EfficientNetConfig {
            variant: self.model.variant,
            head: lesion_models::efficientnet::HeadSpec::Classes(crate::cls::labels::NUM_CLASSES as i64),
            dropout: self.model.dropout,
            drop_connect_rate: self.model.drop_connect_rate,
            image_size: Some(self.model.input_size),
        }
    }

    pub fn validate(&self) -> Result<()> {
        use crate::cls::net::{ClsArch, RESNET_STAGES};
        self.net_config().validate()?;
        match self.model.arch {
            ClsArch::EfficientnetLite => {}
            arch => {
                if self.model.pretrained && self.model.weights.is_none() {
                    return Err(TrainError::Config(format!(
                        "model.arch = {arch:?} with pretrained = true needs model.weights: a torchvision-layout ImageNet file (.pth/.onnx/.safetensors); no registry package ships these weights"
                    )));
                }
                if arch == ClsArch::Vgg16 && self.train.unfreeze_from_block > 0 {
                    return Err(TrainError::Config("train.unfreeze_from_block has no meaning for vgg16 (set 0)".into()));
                }
                if self.train.unfreeze_from_block > RESNET_STAGES {
                    return Err(TrainError::Config(format!("train.unfreeze_from_block for a ResNet is a stage 1-{RESNET_STAGES}, got {}", self.train.unfreeze_from_block)));
                }
            }
        }
        let t = &self.train;
        if t.epochs == 0 || t.batch_size == 0 {
            return Err(TrainError::Config("train.epochs and train.batch_size must be >= 1".into()));
        }
        if !(0.0..1.0).contains(&self.data.val_fraction) {
            return Err(TrainError::Config(format!("data.val_fraction must be in [0, 1), got {}", self.data.val_fraction)));
        }
        if self.cache_size() < self.model.input_size / 2 || self.model.input_size < 32 {
            return Err(TrainError::Config("model.input_size must be >= 32 and data.cache_size >= input_size / 2".into()));
        }
        if !(self.adam.lr > 0.0) || !(self.rmsprop.lr > 0.0) || !(self.sgd.lr > 0.0) {
            return Err(TrainError::Config("adam.lr, rmsprop.lr and sgd.lr must be > 0".into()));
        }
        self.augment.validate()?;
        crate::cls::tta::TtaMode::parse(&self.tta.replicas)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let cfg = ClsTrainConfig::default();
        let text = cfg.to_toml().unwrap();
        for section in ["[model]", "[data]", "[train]", "[adam]", "[rmsprop]", "[sgd]", "[augment]", "[tta]"] {
            assert!(text.contains(section), "{section} missing from\n{text}");
        }
        let back: ClsTrainConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
        cfg.validate().unwrap();
    }
}
