//! The classifier's backbone, chosen by `[model] arch`: EfficientNet-Lite0/1/2 (ImageNet
//! weights from the registry), or torchvision-layout ResNet-50/101 and VGG-16 (ImageNet weights
//! from the user's own file, `[model] weights`), each with a new 3-class head. The nets
//! themselves live in `lesion_models` (layers and `forward` only); this is the dispatch the
//! trainer needs: penultimate features, the head's variable names, pretrained loading, and which
//! variables a partial unfreeze keeps frozen.
use std::path::Path;

use lesion_models::efficientnet::{self, EfficientNetLite};
use lesion_models::state_dict::{load_arrays_strict, set_trainable_where};
use lesion_models::torchvision::{ResNet, ResNetDepth, Vgg16};
use serde::{Deserialize, Serialize};
use tch::nn::{self, VarStore};
use tch::Tensor;

use crate::cls::config::ClsTrainConfig;
use crate::cls::labels::NUM_CLASSES;
use crate::error::{Result, TrainError};

/// Var-name prefix of the ResNet classifier (`fc`).
pub const RESNET_HEAD_PREFIX: &str = "fc.";
/// Var-name prefix of the VGG-16 classifier (`classifier.6`).
pub const VGG_HEAD_PREFIX: &str = "classifier.6.";
/// Checkpoint buffers that have no variable here (BatchNorm's step counter).
const IGNORED_SUFFIX: &str = "num_batches_tracked";
/// ResNet stages are `layer1` … `layer4`.
pub const RESNET_STAGES: usize = 4;

/// Which backbone (`[model] arch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClsArch {
    /// EfficientNet-Lite, `[model] variant` = lite0 | lite1 | lite2.
    #[default]
    EfficientnetLite,
    Resnet50,
    Resnet101,
    Vgg16,
}

/// A built backbone with its 3-class head.
#[derive(Debug)]
pub enum ClsNet {
    Lite(EfficientNetLite),
    ResNet(ResNet),
    Vgg(Vgg16),
}

impl ClsNet {
    pub fn build(cfg: &ClsTrainConfig, root: &nn::Path) -> Result<ClsNet> {
        let classes = NUM_CLASSES as i64;
        Ok(match cfg.model.arch {
            ClsArch::EfficientnetLite => ClsNet::Lite(cfg.net_config().build(root)?),
            ClsArch::Resnet50 => ClsNet::ResNet(ResNet::new(root, ResNetDepth::R50, classes)),
            ClsArch::Resnet101 => ClsNet::ResNet(ResNet::new(root, ResNetDepth::R101, classes)),
            ClsArch::Vgg16 => ClsNet::Vgg(Vgg16::new(root, classes)),
        })
    }

    /// Penultimate features (N×F): what the SVM layers and feature export see.
    pub fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            ClsNet::Lite(n) => n.features_t(xs, train),
            ClsNet::ResNet(n) => n.features_t(xs, train),
            ClsNet::Vgg(n) => n.features_t(xs, train),
        }
    }

    /// Var-name prefix of the classifier (replaced, never loaded from ImageNet weights).
    pub fn head_prefix(&self) -> &'static str {
        match self {
            ClsNet::Lite(_) => efficientnet::HEAD_PREFIX,
            ClsNet::ResNet(_) => RESNET_HEAD_PREFIX,
            ClsNet::Vgg(_) => VGG_HEAD_PREFIX,
        }
    }

    /// The EfficientNet-Lite net, whose own forward (drop-connect, its dropout) the trainer uses;
    /// the other backbones go features → head dropout → head in [`crate::cls::trainer`].
    pub fn lite(&self) -> Option<&EfficientNetLite> {
        match self {
            ClsNet::Lite(n) => Some(n),
            _ => None,
        }
    }
}

/// Dropout before the logits: the configured one, else the EfficientNet variant's own
/// (0.2 / 0.2 / 0.3), else none (ResNet has none; VGG-16 keeps its two inner dropouts).
pub fn head_dropout(cfg: &ClsTrainConfig) -> f64 {
    match cfg.model.arch {
        ClsArch::EfficientnetLite => cfg.net_config().dropout(),
        _ => cfg.model.dropout.unwrap_or(0.0),
    }
}

/// Loads ImageNet weights into everything but the head: the registry `.pth` for
/// EfficientNet-Lite, `[model] weights` (torchvision layout: `.pth`, `.onnx`, `.safetensors`,
/// e.g. written by `lesion weights import`) for ResNet / VGG. Strict: every backbone variable
/// must be loaded and every checkpoint key (but the head and BatchNorm step counters) used.
pub fn load_pretrained(cfg: &ClsTrainConfig, net: &ClsNet, vs: &VarStore, weights_cache: &Path) -> Result<usize> {
    if let ClsNet::Lite(_) = net {
        let (_, report) = efficientnet::load_imagenet(vs, "", &cfg.net_config(), weights_cache)?;
        return Ok(report.loaded.len());
    }
    let path = cfg.model.weights.as_deref().ok_or_else(|| TrainError::Config(format!("model.pretrained with arch {:?} needs model.weights", cfg.model.arch)))?;
    let arrays = lesion_models::weights::read_any(path)?;
    let head = net.head_prefix();
    let report = load_arrays_strict(vs, "", &arrays, |k| k.starts_with(head) || k.ends_with(IGNORED_SUFFIX), path)?;
    tracing::info!(loaded = report.loaded.len(), skipped = report.skipped.len(), "loaded ImageNet {:?} from {}", cfg.model.arch, path.display());
    Ok(report.loaded.len())
}

/// Makes every variable but the head trainable (`true`) or frozen; returns how many changed.
pub fn set_backbone_trainable(net: &ClsNet, vs: &VarStore, trainable: bool) -> usize {
    let head = net.head_prefix();
    set_trainable_where(vs, |name| !name.starts_with(head), trainable)
}

/// Freezes the stem and the stages before `block`: EfficientNet-Lite MBConv blocks
/// `_blocks.{i}` with i < block (and `_conv_stem`, `_bn0`); ResNet stages `layer{i}` with
/// i < block (and `conv1`, `bn1`). VGG-16 has no blocks (the config rejects a block there).
/// Returns how many variables it froze.
pub fn freeze_below_block(net: &ClsNet, vs: &VarStore, block: usize) -> usize {
    let below = |name: &str| -> bool {
        match net {
            ClsNet::Lite(_) => match name.strip_prefix("_blocks.") {
                Some(rest) => rest.split('.').next().and_then(|i| i.parse::<usize>().ok()).is_some_and(|i| i < block),
                None => name.starts_with("_conv_stem.") || name.starts_with("_bn0."),
            },
            ClsNet::ResNet(_) => match name.strip_prefix("layer") {
                Some(rest) => rest.split('.').next().and_then(|i| i.parse::<usize>().ok()).is_some_and(|i| i < block),
                None => name.starts_with("conv1.") || name.starts_with("bn1."),
            },
            ClsNet::Vgg(_) => false,
        }
    };
    set_trainable_where(vs, below, false)
}
