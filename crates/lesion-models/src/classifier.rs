//! The classifier, built from its [`ClsModelConfig`] (`[model]` of a classification config)
//! as segmentation_models.pytorch keeps its heads with its models: the backbone chosen by
//! `arch` (EfficientNet-Lite0/1/2 with ImageNet weights from the registry, torchvision-layout
//! ResNet-50/101 and VGG-16 or timm-layout Inception-v4 with ImageNet weights from the user's
//! own file, `weights`, or Xception with the HAM10000 dermoscopy weights of the registry's
//! `sklesion==0.2.2`), a new head of `classes` outputs, the input normalisation, and what the
//! trainer needs of it: penultimate features, the head's variable names, pretrained loading,
//! and which variables a frozen or partially unfrozen backbone keeps fixed. The nets themselves
//! (layers and `forward` only) are in [`crate::efficientnet`], [`crate::torchvision`],
//! [`crate::inception_v4`] and [`crate::xception`].
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::{self, VarStore};
use tch::{Kind, Tensor};

use crate::efficientnet::{self, EfficientNetConfig, EfficientNetLite, HeadSpec, LiteVariant};
use crate::error::ModelError;
use crate::inception_v4::{self, InceptionV4};
use crate::state_dict::{load_arrays_strict, set_trainable_where};
use crate::torchvision::{ResNet, ResNetDepth, Vgg16};
use crate::xception::{self, Xception, SKLESION_HEAD_PREFIX, XCEPTION_BLOCKS, XCEPTION_FEATURES};

type Result<T> = std::result::Result<T, ModelError>;

/// Var-name prefix of the ResNet classifier (`fc`).
pub const RESNET_HEAD_PREFIX: &str = "fc.";
/// Var-name prefix of the VGG-16 classifier (`classifier.6`).
pub const VGG_HEAD_PREFIX: &str = "classifier.6.";
/// Var-name prefix of the Xception classifier (a new linear `fc` on the pooled features).
pub const XCEPTION_HEAD_PREFIX: &str = "fc.";
/// Checkpoint buffers that have no variable here (BatchNorm's step counter).
const IGNORED_SUFFIX: &str = "num_batches_tracked";
/// ResNet stages are `layer1` … `layer4`.
pub const RESNET_STAGES: usize = 4;

/// Input normalisation of a batch on [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalization {
    /// Per image and channel: `2x − mean(2x)` (the paper's).
    Centered2x,
    /// EfficientNet-Lite's own: `(x − mean) / std` with the ImageNet mean and std.
    Imagenet,
    /// Per image: `(x − mean) / max(std, 1/√n)` over all its values
    /// (`tf.image.per_image_standardization`).
    Standardize,
    /// Raw pixels, `255 x`, for a net that normalises its input itself: Xception applies its own
    /// Keras `Normalization` layer (per-channel mean and variance stored with its weights).
    Pixels255,
    /// Inception-v4's own (timm's `IMAGENET_INCEPTION_MEAN/STD`, TensorFlow's preprocessing):
    /// `(x − 0.5) / 0.5`, i.e. [0, 1] → [-1, 1].
    Inception,
}

impl Normalization {
    /// The config's spelling (`[model] normalization`), for what a reader is shown.
    pub fn name(self) -> &'static str {
        match self {
            Normalization::Centered2x => "centered2x",
            Normalization::Imagenet => "imagenet",
            Normalization::Standardize => "standardize",
            Normalization::Pixels255 => "pixels255",
            Normalization::Inception => "inception",
        }
    }
}

/// Pixel scale of [`Normalization::Pixels255`].
const PIXEL_MAX: f64 = 255.0;

/// Normalises an N×3×H×W batch on [0, 1] for the net.
pub fn normalize(x: &Tensor, norm: Normalization) -> Tensor {
    match norm {
        Normalization::Centered2x => {
            let y = x * 2.0;
            let m = y.mean_dim([2i64, 3].as_slice(), true, Kind::Float);
            y - m
        }
        // Scalar per-channel arithmetic, no constant tensors: traceable (see `channel_affine`).
        Normalization::Imagenet => {
            crate::channel_affine(x, &efficientnet::INPUT_MEAN, &efficientnet::INPUT_STD)
        }
        Normalization::Standardize => {
            let dims = [1i64, 2, 3];
            let count = (x.numel() as i64 / x.size()[0].max(1)) as f64;
            let m = x.mean_dim(dims.as_slice(), true, Kind::Float);
            let sd = x.std_correction(dims.as_slice(), 0, true).clamp_min(1.0 / count.sqrt());
            (x - m) / sd
        }
        Normalization::Pixels255 => x * PIXEL_MAX,
        Normalization::Inception => {
            // Mean and std are equal over the channels (asserted in the tests), so scalars do.
            (x - inception_v4::INPUT_MEAN[0]) / inception_v4::INPUT_STD[0]
        }
    }
}

/// Colour constancy applied to each image before its normalisation (`[model]
/// color_constancy`): what a change of camera, lamp or white balance does to the colours is
/// undone before the net sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ColorConstancy {
    /// The pixels as decoded.
    #[default]
    None,
    /// Shades of Gray (Finlayson & Trezzi 2004) with the Minkowski norm p =
    /// [`SHADES_OF_GRAY_POWER`], the form used for dermoscopy by Barata et al. (2015) and the
    /// ISIC 2018-2019 winners: the illuminant is estimated per image and channel as
    /// `(mean x^p)^(1/p)`, and each channel is scaled so that the illuminant becomes neutral
    /// grey of the same length; values are clamped to [0, 1].
    ShadesOfGray,
}

impl ColorConstancy {
    /// The config's spelling (`[model] color_constancy`), for what a reader is shown.
    pub fn name(self) -> &'static str {
        match self {
            ColorConstancy::None => "none",
            ColorConstancy::ShadesOfGray => "shades-of-gray",
        }
    }

    pub fn is_none(&self) -> bool {
        *self == ColorConstancy::None
    }
}

/// Minkowski norm of [`ColorConstancy::ShadesOfGray`] (p = 6: Barata et al. 2015's choice;
/// p = 1 is grey world, p = ∞ max-RGB).
pub const SHADES_OF_GRAY_POWER: f64 = 6.0;

/// Floor of the illuminant's length and of a channel's share of it: an all-black image or
/// channel is left black instead of dividing by zero.
const ILLUMINANT_EPS: f64 = 1e-6;

/// Applies `cc` to an N×3×H×W batch on [0, 1] (each image on its own). Traceable: scalar
/// arithmetic and reductions only.
pub fn color_constancy(x: &Tensor, cc: ColorConstancy) -> Tensor {
    match cc {
        ColorConstancy::None => x.shallow_clone(),
        ColorConstancy::ShadesOfGray => {
            let p = SHADES_OF_GRAY_POWER;
            let illuminant = x
                .pow_tensor_scalar(p)
                .mean_dim([2i64, 3].as_slice(), true, Kind::Float)
                .pow_tensor_scalar(1.0 / p);
            let length = illuminant
                .square()
                .sum_dim_intlist([1i64].as_slice(), true, Kind::Float)
                .sqrt()
                .clamp_min(ILLUMINANT_EPS);
            // A neutral illuminant of unit length has 1/√3 in each channel: the gain maps each
            // channel's share to that.
            let share = (illuminant / length).clamp_min(ILLUMINANT_EPS);
            let gain = (share * 3f64.sqrt()).reciprocal();
            (x * gain).clamp(0.0, 1.0)
        }
    }
}

/// What the net is fed: a batch on [0, 1] after the config's colour constancy and
/// normalisation. Every classifier input goes through here (training, validation, prediction,
/// TorchScript), so training and serving never see different pixels.
pub fn model_input(x: &Tensor, m: &ClsModelConfig) -> Tensor {
    normalize(&color_constancy(x, m.color_constancy), m.normalization)
}

/// `[model]` of a classification config: which net, how it starts, what it sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClsModelConfig {
    /// `efficientnet-lite` (default) | `resnet50` | `resnet101` | `vgg16` | `inception-v4` |
    /// `xception`.
    pub arch: ClsArch,
    /// EfficientNet-Lite variant: `lite0` | `lite1` | `lite2`.
    pub variant: LiteVariant,
    /// ImageNet weights for `resnet50` / `resnet101` / `vgg16` (torchvision layout) or
    /// `inception-v4` (timm layout, e.g. timm's `inception_v4.tf_in1k`); `.pth`, `.onnx` or
    /// `.safetensors`, e.g. from `lesion weights import`. No registry package ships them, so
    /// `pretrained = true` with these archs needs this file.
    pub weights: Option<PathBuf>,
    /// Input side of the net (the static "SAME" paddings are computed for it). Xception accepts
    /// any side ≥ 71; its weights were trained at 254 ([`xception::SKLESION_INPUT_SIZE`]).
    pub input_size: i64,
    /// Dropout before the logits; `None` = the variant's own (0.2 / 0.2 / 0.3).
    pub dropout: Option<f64>,
    /// Drop-connect rate of the last block in training.
    pub drop_connect_rate: f64,
    /// Start from the ImageNet weights (the 1000-class head is replaced by a new one).
    pub pretrained: bool,
    /// Input normalisation (`inception` for Inception-v4's ImageNet weights).
    pub normalization: Normalization,
    /// How the last feature map becomes the feature vector of the SVM layers and heads:
    /// `global` (the net's own average pooling) or `global-and-lesion` (that, followed by the
    /// average weighted by the lesion mask; needs a mask per image). Left out of the written
    /// config when `global`, so configs and sweep ids from before it are unchanged.
    #[serde(skip_serializing_if = "FeaturePooling::is_global")]
    pub pooling: FeaturePooling,
    /// `none` (default) | `shades-of-gray`: colour constancy before the normalisation. Left
    /// out of the written config when `none`, so configs and sweep ids from before it are
    /// unchanged.
    #[serde(skip_serializing_if = "ColorConstancy::is_none")]
    pub color_constancy: ColorConstancy,
}

/// How the backbone's last feature map (N×F×h×w) is pooled into features (`[model] pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeaturePooling {
    /// The net's global average: F features.
    #[default]
    Global,
    /// The global average, then the lesion's: the map averaged with the mask (resized to the
    /// map by area, so each cell weighs the fraction of it inside the lesion) as weights:
    /// 2F features. An image whose mask is empty (under [`MIN_LESION_WEIGHT`] cells) takes the
    /// global average for the lesion's, so the vector never holds NaN.
    GlobalAndLesion,
}

impl FeaturePooling {
    pub fn is_global(&self) -> bool {
        *self == FeaturePooling::Global
    }

    /// Whether the pooling needs a lesion mask with each image.
    pub fn needs_mask(&self) -> bool {
        *self == FeaturePooling::GlobalAndLesion
    }
}

/// Total mask weight (in feature-map cells) under which a lesion average is not taken.
pub const MIN_LESION_WEIGHT: f64 = 1e-3;

/// Pools a feature map N×F×h×w as `pooling` says; `mask` (N×1×H×W on [0, 1], any H×W) is
/// required for [`FeaturePooling::GlobalAndLesion`] and ignored otherwise.
pub fn pool_features(
    map: &Tensor,
    pooling: FeaturePooling,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let global = map.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
    if !pooling.needs_mask() {
        return Ok(global);
    }
    let mask = mask.ok_or_else(|| {
        ModelError::Config("model.pooling = global-and-lesion needs a lesion mask per image".into())
    })?;
    let size = map.size();
    let (n, h, w) = (size[0], size[2], size[3]);
    let mask_size = mask.size();
    if mask_size.len() != 4 || mask_size[0] != n || mask_size[1] != 1 {
        return Err(ModelError::Config(format!(
            "lesion masks of shape {mask_size:?} for feature maps of shape {size:?} (need N×1×H×W)"
        )));
    }
    // Area resize: cell (i, j) gets the fraction of its pixels inside the lesion.
    let weights = mask.to_kind(map.kind()).adaptive_avg_pool2d([h, w]);
    let total = weights.sum_dim_intlist([2i64, 3].as_slice(), false, Kind::Float);
    let weighted = (map * &weights).sum_dim_intlist([2i64, 3].as_slice(), false, Kind::Float);
    let has_lesion = total.ge(MIN_LESION_WEIGHT);
    let lesion = weighted / total.clamp_min(MIN_LESION_WEIGHT);
    let lesion = lesion.where_self(&has_lesion, &global);
    Ok(Tensor::cat(&[global, lesion], 1))
}

impl Default for ClsModelConfig {
    fn default() -> Self {
        Self {
            arch: ClsArch::EfficientnetLite,
            variant: LiteVariant::Lite0,
            weights: None,
            input_size: 224,
            dropout: None,
            drop_connect_rate: efficientnet::DROP_CONNECT_RATE,
            pretrained: true,
            normalization: Normalization::Imagenet,
            pooling: FeaturePooling::Global,
            color_constancy: ColorConstancy::None,
        }
    }
}

impl ClsModelConfig {
    /// The EfficientNet-Lite build config with a head of `classes` outputs.
    pub fn net_config(&self, classes: i64) -> EfficientNetConfig {
        EfficientNetConfig {
            variant: self.variant,
            head: HeadSpec::Classes(classes),
            dropout: self.dropout,
            drop_connect_rate: self.drop_connect_rate,
            image_size: Some(self.input_size),
        }
    }

    /// Checks the net's own settings; `unfreeze_from_block` is the trainer's partial unfreeze
    /// (0 = none), whose meaning depends on the arch.
    pub fn validate(&self, classes: i64, unfreeze_from_block: usize) -> Result<()> {
        self.net_config(classes).validate()?;
        if self.pooling.needs_mask() && self.arch == ClsArch::Vgg16 {
            return Err(ModelError::Config(
                "model.pooling = global-and-lesion needs a feature map, and vgg16's features follow its fully connected layers: use another arch or pooling = global".into(),
            ));
        }
        match self.arch {
            ClsArch::EfficientnetLite => {}
            ClsArch::Xception => {
                if self.normalization != Normalization::Pixels255 {
                    return Err(ModelError::Config(format!(
                        "model.arch = xception normalises its input itself (its Keras Normalization layer on 0-255 pixels): set model.normalization = \"pixels255\", not {:?}",
                        self.normalization
                    )));
                }
                if self.input_size < xception::XCEPTION_MIN_INPUT {
                    return Err(ModelError::Config(format!(
                        "model.input_size for xception must be at least {}, got {}",
                        xception::XCEPTION_MIN_INPUT,
                        self.input_size
                    )));
                }
                if unfreeze_from_block > XCEPTION_BLOCKS {
                    return Err(ModelError::Config(format!("train.unfreeze_from_block for xception is a block 1-{XCEPTION_BLOCKS}, got {unfreeze_from_block}")));
                }
            }
            arch => {
                if self.pretrained && self.weights.is_none() {
                    let layout = if arch == ClsArch::InceptionV4 { "timm" } else { "torchvision" };
                    return Err(ModelError::Config(format!(
                        "model.arch = {arch:?} with pretrained = true needs model.weights: a {layout}-layout ImageNet file (.pth/.onnx/.safetensors); no registry package ships these weights"
                    )));
                }
                match arch {
                    ClsArch::Vgg16 if unfreeze_from_block > 0 => {
                        return Err(ModelError::Config(
                            "train.unfreeze_from_block has no meaning for vgg16 (set 0)".into(),
                        ));
                    }
                    ClsArch::InceptionV4 => {
                        if unfreeze_from_block >= inception_v4::FEATURE_BLOCKS {
                            return Err(ModelError::Config(format!("train.unfreeze_from_block for inception-v4 is a features module 1-{}, got {unfreeze_from_block}", inception_v4::FEATURE_BLOCKS - 1)));
                        }
                        if self.input_size < inception_v4::MIN_INPUT_SIZE {
                            return Err(ModelError::Config(format!(
                                "model.input_size for inception-v4 must be >= {} (its unpadded reductions leave no map below), got {}",
                                inception_v4::MIN_INPUT_SIZE,
                                self.input_size
                            )));
                        }
                    }
                    _ if unfreeze_from_block > RESNET_STAGES => {
                        return Err(ModelError::Config(format!("train.unfreeze_from_block for a ResNet is a stage 1-{RESNET_STAGES}, got {unfreeze_from_block}")));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The backbone as a reader names it, in the config's own spelling plus the input size:
    /// `efficientnet-lite1 240²`, `xception 254²`, `resnet101 224²` (the model card's `net`).
    pub fn describe(&self) -> String {
        let arch = match self.arch {
            ClsArch::EfficientnetLite => self.variant.name(),
            ClsArch::Resnet50 => "resnet50",
            ClsArch::Resnet101 => "resnet101",
            ClsArch::Vgg16 => "vgg16",
            ClsArch::Xception => "xception",
            ClsArch::InceptionV4 => "inception-v4",
        };
        format!("{arch} {}²", self.input_size)
    }

    /// Dropout before the logits: the configured one, else the EfficientNet variant's own
    /// (0.2 / 0.2 / 0.3), sklesion's 0.3 on the Xception features, else none (ResNet and timm's
    /// Inception-v4 have none; VGG-16 keeps its two inner dropouts).
    pub fn head_dropout(&self, classes: i64) -> f64 {
        match self.arch {
            ClsArch::EfficientnetLite => self.net_config(classes).dropout(),
            ClsArch::Xception => self.dropout.unwrap_or(xception::SKLESION_IMAGE_DROPOUT),
            _ => self.dropout.unwrap_or(0.0),
        }
    }
}

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
    /// Xception (keras.applications), pretrained = the HAM10000 fine-tune of `sklesion==0.2.2`
    /// (CC BY-NC-SA 4.0 data: non-commercial); needs `normalization = "pixels255"`.
    Xception,
    /// timm's `inception_v4` (`arch = "inception-v4"`), 1536-d pooled features.
    InceptionV4,
}

/// A built backbone with its 3-class head.
#[derive(Debug)]
pub enum ClsNet {
    // Boxed: the nets differ in size by hundreds of bytes of layer handles.
    Lite(Box<EfficientNetLite>),
    ResNet(Box<ResNet>),
    Vgg(Box<Vgg16>),
    Xception(Box<XceptionClassifier>),
    Inception(Box<InceptionV4>),
}

/// Xception with a new linear head `fc` (2048 → classes) on its pooled features.
#[derive(Debug)]
pub struct XceptionClassifier {
    pub backbone: Xception,
    pub fc: nn::Linear,
}

impl ClsNet {
    /// The net of `cfg` with a new head of `classes` outputs, on `root`.
    pub fn build(cfg: &ClsModelConfig, classes: i64, root: &nn::Path) -> Result<ClsNet> {
        Ok(match cfg.arch {
            ClsArch::EfficientnetLite => {
                ClsNet::Lite(Box::new(cfg.net_config(classes).build(root)?))
            }
            ClsArch::Resnet50 => {
                ClsNet::ResNet(Box::new(ResNet::new(root, ResNetDepth::R50, classes)))
            }
            ClsArch::Resnet101 => {
                ClsNet::ResNet(Box::new(ResNet::new(root, ResNetDepth::R101, classes)))
            }
            ClsArch::Vgg16 => ClsNet::Vgg(Box::new(Vgg16::new(root, classes))),
            ClsArch::Xception => ClsNet::Xception(Box::new(XceptionClassifier {
                backbone: Xception::new(root),
                fc: nn::linear(root / "fc", XCEPTION_FEATURES, classes, Default::default()),
            })),
            ClsArch::InceptionV4 => ClsNet::Inception(Box::new(InceptionV4::new(root, classes))),
        })
    }

    /// Penultimate features (N×F): what the SVM layers and feature export see.
    pub fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            ClsNet::Lite(n) => n.features_t(xs, train),
            ClsNet::ResNet(n) => n.features_t(xs, train),
            ClsNet::Vgg(n) => n.features_t(xs, train),
            ClsNet::Xception(n) => n.backbone.features_t(xs, train),
            ClsNet::Inception(n) => n.features_t(xs, train),
        }
    }

    /// The last feature map (N×F×h×w) before the global pooling; VGG-16 has none (its
    /// penultimate features come after two fully connected layers).
    pub fn feature_map_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            ClsNet::Lite(n) => Ok(n.feature_map_t(xs, train)),
            ClsNet::ResNet(n) => Ok(n.feature_map_t(xs, train)),
            ClsNet::Vgg(_) => Err(ModelError::Config(
                "vgg16's features follow its fully connected layers: no feature map to pool by the lesion (model.pooling = global)".into(),
            )),
            ClsNet::Xception(n) => Ok(n.backbone.feature_map_t(xs, train)),
            ClsNet::Inception(n) => Ok(n.feature_map_t(xs, train)),
        }
    }

    /// Var-name prefix of the classifier (replaced, never loaded from ImageNet weights).
    pub fn head_prefix(&self) -> &'static str {
        match self {
            ClsNet::Lite(_) => efficientnet::HEAD_PREFIX,
            ClsNet::ResNet(_) => RESNET_HEAD_PREFIX,
            ClsNet::Vgg(_) => VGG_HEAD_PREFIX,
            ClsNet::Xception(_) => XCEPTION_HEAD_PREFIX,
            ClsNet::Inception(_) => inception_v4::HEAD_PREFIX,
        }
    }

    /// The EfficientNet-Lite net, whose own forward (drop-connect, its dropout) the trainer uses;
    /// the other backbones go features → head dropout → head in [`crate::cls::trainer`].
    pub fn lite(&self) -> Option<&EfficientNetLite> {
        match self {
            ClsNet::Lite(n) => Some(n.as_ref()),
            _ => None,
        }
    }
}

/// Loads pretrained weights into everything but the head: the registry `.pth` for
/// EfficientNet-Lite, `[model] weights` (`.pth`, `.onnx`, `.safetensors`, e.g. written by
/// `lesion weights import`) for ResNet / VGG (torchvision layout) and Inception-v4 (timm layout:
/// `last_linear` is the replaced head), and for Xception the sklesion HAM10000 weights
/// (`<cache>/sklesion-xception.safetensors`, else converted from the registry's `model.keras`),
/// backbone and input normalisation, without sklesion's own head. Strict: every backbone
/// variable must be loaded and every checkpoint key (but the head and BatchNorm step counters)
/// used.
pub fn load_pretrained(
    cfg: &ClsModelConfig,
    classes: i64,
    net: &ClsNet,
    vs: &VarStore,
    weights_cache: &Path,
) -> Result<usize> {
    if let ClsNet::Lite(_) = net {
        let (_, report) =
            efficientnet::load_imagenet(vs, "", &cfg.net_config(classes), weights_cache)?;
        return Ok(report.loaded.len());
    }
    if let ClsNet::Xception(_) = net {
        let (arrays, path) = xception::sklesion_weights(weights_cache)?;
        let head = net.head_prefix();
        let sklesion_head = format!("{SKLESION_HEAD_PREFIX}.");
        let report = load_arrays_strict(
            vs,
            "",
            &arrays,
            |k| k.starts_with(head) || k.starts_with(&sklesion_head),
            &path,
        )?;
        tracing::info!(
            loaded = report.loaded.len(),
            "loaded the sklesion (HAM10000) Xception from {}; {}",
            path.display(),
            xception::SKLESION_LICENCE
        );
        return Ok(report.loaded.len());
    }
    let path = cfg.weights.as_deref().ok_or_else(|| {
        ModelError::Config(format!("model.pretrained with arch {:?} needs model.weights", cfg.arch))
    })?;
    let arrays = crate::weights::read_any(path)?;
    let head = net.head_prefix();
    let report = load_arrays_strict(
        vs,
        "",
        &arrays,
        |k| k.starts_with(head) || k.ends_with(IGNORED_SUFFIX),
        path,
    )?;
    tracing::info!(
        loaded = report.loaded.len(),
        skipped = report.skipped.len(),
        "loaded ImageNet {:?} from {}",
        cfg.arch,
        path.display()
    );
    Ok(report.loaded.len())
}

/// Makes every variable but the head trainable (`true`) or frozen; returns how many changed.
pub fn set_backbone_trainable(net: &ClsNet, vs: &VarStore, trainable: bool) -> usize {
    let head = net.head_prefix();
    set_trainable_where(vs, |name| !name.starts_with(head), trainable)
}

/// Freezes the stem and the stages before `block`: EfficientNet-Lite MBConv blocks
/// `_blocks.{i}` with i < block (and `_conv_stem`, `_bn0`); ResNet stages `layer{i}` with
/// i < block (and `conv1`, `bn1`); Inception-v4 modules `features.{i}` with i < block (timm's
/// `group_matcher`: 0-2 the stem, then one block per module, 21 the last InceptionC); Xception
/// blocks `block{i}_…` with i < block (1-based, so `block = 1` freezes nothing; the input
/// normalisation is never trainable). VGG-16 has no blocks (the config rejects a block there).
/// Returns how many variables it froze.
pub fn freeze_below_block(net: &ClsNet, vs: &VarStore, block: usize) -> usize {
    let below = |name: &str| -> bool {
        match net {
            ClsNet::Lite(_) => match name.strip_prefix("_blocks.") {
                Some(rest) => rest
                    .split('.')
                    .next()
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| i < block),
                None => name.starts_with("_conv_stem.") || name.starts_with("_bn0."),
            },
            ClsNet::ResNet(_) => match name.strip_prefix("layer") {
                Some(rest) => rest
                    .split('.')
                    .next()
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| i < block),
                None => name.starts_with("conv1.") || name.starts_with("bn1."),
            },
            ClsNet::Inception(_) => name
                .strip_prefix("features.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i < block),
            ClsNet::Vgg(_) => false,
            ClsNet::Xception(_) => name
                .strip_prefix("block")
                .and_then(|rest| rest.split('_').next())
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i < block),
        }
    };
    set_trainable_where(vs, below, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.contiguous().view([-1])).unwrap()
    }

    /// Golden: the lesion average weighs each map cell by the fraction of its pixels in the
    /// mask; an empty mask falls back to the global average; the global half is the mean.
    #[test]
    fn lesion_pooling_weighs_cells_by_their_lesion_fraction() {
        // Two images, two channels, a 2×2 map; channel 1 = 10 × channel 0.
        let base = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([1, 1, 2, 2]);
        let one = Tensor::cat(&[&base, &(&base * 10.0)], 1);
        let map = Tensor::cat(&[&one, &one], 0);
        // Image 0: a 4×4 mask covering cell (0,0) whole and half of cell (0,1).
        let mut m = vec![0.0f32; 2 * 16];
        for (y, x) in [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (1, 2)] {
            m[y * 4 + x] = 1.0;
        }
        let mask = Tensor::from_slice(&m).view([2, 1, 4, 4]);
        let f = pool_features(&map, FeaturePooling::GlobalAndLesion, Some(&mask)).unwrap();
        assert_eq!(f.size(), vec![2, 4]);
        let v = values(&f);
        let lesion = (1.0 + 0.5 * 2.0) / 1.5;
        let want = [2.5, 25.0, lesion, 10.0 * lesion, 2.5, 25.0, 2.5, 25.0];
        for (g, w) in v.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-5, "{v:?} vs {want:?}");
        }
        // Global pooling ignores the mask and needs none.
        let g = pool_features(&map, FeaturePooling::Global, None).unwrap();
        assert_eq!(values(&g), vec![2.5, 25.0, 2.5, 25.0]);
        let e = pool_features(&map, FeaturePooling::GlobalAndLesion, None).unwrap_err();
        assert!(e.to_string().contains("mask"), "{e}");
        let bad = Tensor::zeros([3, 1, 4, 4], (Kind::Float, Device::Cpu));
        assert!(pool_features(&map, FeaturePooling::GlobalAndLesion, Some(&bad)).is_err());
        let flat = Tensor::zeros([2, 16], (Kind::Float, Device::Cpu));
        assert!(pool_features(&map, FeaturePooling::GlobalAndLesion, Some(&flat)).is_err());
    }

    #[test]
    fn lesion_pooling_is_written_only_when_chosen_and_refused_for_vgg() {
        let plain = ClsModelConfig::default();
        let toml = toml::to_string(&plain).unwrap();
        assert!(!toml.contains("pooling"), "{toml}");
        let lesion = ClsModelConfig { pooling: FeaturePooling::GlobalAndLesion, ..plain };
        let toml = toml::to_string(&lesion).unwrap();
        assert!(toml.contains("pooling = \"global-and-lesion\""), "{toml}");
        assert_eq!(toml::from_str::<ClsModelConfig>(&toml).unwrap(), lesion);
        let vgg = ClsModelConfig { arch: ClsArch::Vgg16, pretrained: false, ..lesion };
        assert!(vgg.validate(3, 0).unwrap_err().to_string().contains("vgg16"));
    }

    /// The card's `net` spells each backbone as its config does (`[model] arch`, or the Lite
    /// variant's registry name), never an enum's debug form or another arch's variant.
    #[test]
    fn describe_uses_the_config_spelling() {
        let lite =
            ClsModelConfig { variant: LiteVariant::Lite1, input_size: 240, ..Default::default() };
        assert_eq!(lite.describe(), "efficientnet-lite1 240²");
        for arch in [
            ClsArch::Resnet50,
            ClsArch::Resnet101,
            ClsArch::Vgg16,
            ClsArch::Xception,
            ClsArch::InceptionV4,
        ] {
            let m = ClsModelConfig { arch, input_size: 254, ..Default::default() };
            let spelled = serde_json::to_value(arch).unwrap();
            assert_eq!(m.describe(), format!("{} 254²", spelled.as_str().unwrap()));
        }
    }

    /// What a reader is shown spells each setting as the config does.
    #[test]
    fn setting_names_use_the_config_spelling() {
        let spelled = |v: serde_json::Value| v.as_str().unwrap().to_string();
        for n in [
            Normalization::Centered2x,
            Normalization::Imagenet,
            Normalization::Standardize,
            Normalization::Pixels255,
            Normalization::Inception,
        ] {
            assert_eq!(n.name(), spelled(serde_json::to_value(n).unwrap()));
        }
        for c in [ColorConstancy::None, ColorConstancy::ShadesOfGray] {
            assert_eq!(c.name(), spelled(serde_json::to_value(c).unwrap()));
        }
    }

    /// Shades of Gray's defining property: an image and the same image under another
    /// illuminant (each channel scaled by its own gain) come out the same up to brightness; a
    /// neutral image is left as it is; black stays black without NaN.
    #[test]
    fn shades_of_gray_removes_a_colour_cast() {
        tch::manual_seed(0);
        let x = Tensor::rand([2, 3, 16, 16], (Kind::Float, Device::Cpu)) * 0.6;
        let cast = Tensor::from_slice(&[1.3f32, 0.9, 0.55]).view([1, 3, 1, 1]);
        let a = color_constancy(&x, ColorConstancy::ShadesOfGray);
        let b = color_constancy(&(&x * &cast), ColorConstancy::ShadesOfGray);
        // Equal up to one factor per image (the illuminant keeps its length, and the cast
        // changed that length); nothing here reaches the clamp.
        let unit = |t: &Tensor| t / t.mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float);
        assert!(b.max().double_value(&[]) < 1.0 && a.max().double_value(&[]) < 1.0);
        let diff = (unit(&a) - unit(&b)).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "the cast survived: {diff}");
        let cast_input = &x * &cast;
        let changed = (&b - &cast_input).abs().max().double_value(&[]);
        assert!(changed > 0.1, "the cast input was left as it was: {changed}");
        // The illuminant of the output is neutral: equal in the three channels.
        let e = a.pow_tensor_scalar(SHADES_OF_GRAY_POWER).mean_dim(
            [2i64, 3].as_slice(),
            false,
            Kind::Float,
        );
        let spread = (e.max_dim(1, false).0 - e.min_dim(1, false).0).max().double_value(&[]);
        assert!(spread < 1e-4, "{spread}");
        let grey = x.narrow(1, 0, 1).repeat([1, 3, 1, 1]);
        let g = color_constancy(&grey, ColorConstancy::ShadesOfGray);
        assert!((&g - &grey).abs().max().double_value(&[]) < 1e-5);
        let black = Tensor::zeros([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        let k = color_constancy(&black, ColorConstancy::ShadesOfGray);
        assert_eq!(k.abs().max().double_value(&[]), 0.0);
        assert!(color_constancy(&x, ColorConstancy::None).equal(&x));
    }

    #[test]
    fn color_constancy_is_written_only_when_chosen() {
        let plain = ClsModelConfig::default();
        assert!(!toml::to_string(&plain).unwrap().contains("color_constancy"));
        let sog = ClsModelConfig { color_constancy: ColorConstancy::ShadesOfGray, ..plain };
        let text = toml::to_string(&sog).unwrap();
        assert!(text.contains("color_constancy = \"shades-of-gray\""), "{text}");
        assert_eq!(toml::from_str::<ClsModelConfig>(&text).unwrap(), sog);
    }
}
