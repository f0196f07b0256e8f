//! Inception-v4 (Szegedy et al. 2016) in **timm's layout**: var names are the state-dict keys
//! of `timm.create_model('inception_v4')` (timm 1.0.31), so a timm checkpoint (`.pth` or
//! `.safetensors`, read by [`crate::weights::read_any`]) loads by direct copy with
//! [`crate::state_dict::load_arrays_strict`]. The equality with timm's own forward pass (logits
//! and pooled features, to 1e-4) is checked by `tests/inception_v4_timm.rs`.
//!
//! Layout (`features` is timm's `nn.Sequential`, 22 modules):
//!
//! * `features.0` … `features.2`: the stem, three `ConvNormAct` (3×3 stride 2, 3×3, 3×3 pad 1);
//! * `features.3` Mixed3a (max-pool ‖ `conv`), `features.4` Mixed4a (`branch0.{0,1}` ‖
//!   `branch1.{0..3}`), `features.5` Mixed5a (`conv` ‖ max-pool);
//! * `features.6` … `features.9` InceptionA, `features.10` ReductionA, `features.11` …
//!   `features.17` InceptionB, `features.18` ReductionB, `features.19` … `features.21`
//!   InceptionC (named single convs `branch1_0`, `branch1_1a`, …);
//! * global average pool (timm's `global_pool`, no variables), `last_linear`.
//!
//! Every `ConvNormAct` is a bias-free conv (`.conv.weight`) then BatchNorm (`.bn.weight`,
//! `.bn.bias`, `.bn.running_mean`, `.bn.running_var`; eps 1e-3, momentum 0.1) then ReLU. A
//! sequential branch numbers its convs by their `nn.Sequential` index, so a branch that opens
//! with a pool (`branch3`: 3×3 average pool, stride 1, pad 1, padding not counted) has its conv
//! at index 1. Pools and convs are unpadded unless stated (timm passes `padding=0`), so the
//! spatial side shrinks: 299 → 8 at `features.21`; the smallest input that keeps a 1×1 map at
//! the end is [`MIN_INPUT_SIZE`]. Input: RGB on [0, 1] normalised with mean 0.5 and std 0.5
//! (timm's `IMAGENET_INCEPTION_MEAN/STD`), i.e. scaled to [-1, 1].
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

/// ImageNet classes of the original head.
pub const IMAGENET_CLASSES: i64 = 1000;
/// Channels of `features.21` and of the pooled features before `last_linear`.
pub const NUM_FEATURES: i64 = 1536;
/// Modules in `features` (stem 3, Mixed 3, InceptionA 4, ReductionA 1, InceptionB 7,
/// ReductionB 1, InceptionC 3); the classifier's partial unfreeze counts these.
pub const FEATURE_BLOCKS: usize = 22;
/// Var-name prefix of the classifier.
pub const HEAD_PREFIX: &str = "last_linear.";
/// BatchNorm epsilon (timm's `norm_eps` for this model; TensorFlow's original).
pub const BN_EPS: f64 = 1e-3;
/// The input side timm's pretrained config uses.
pub const DEFAULT_INPUT_SIZE: i64 = 299;
/// The smallest input side for which `features.21` is still at least 1×1 (74 ends at 0).
pub const MIN_INPUT_SIZE: i64 = 75;
/// timm's `IMAGENET_INCEPTION_MEAN` (per RGB channel; the same for all three).
pub const INPUT_MEAN: [f64; 3] = [0.5; 3];
/// timm's `IMAGENET_INCEPTION_STD` (per RGB channel; the same for all three).
pub const INPUT_STD: [f64; 3] = [0.5; 3];
/// Every max-pool of the net: 3×3, stride 2, unpadded.
const MAX_POOL_KERNEL: i64 = 3;
const MAX_POOL_STRIDE: i64 = 2;
/// The average pool opening each `branch3`: 3×3, stride 1, pad 1, padding not counted.
const AVG_POOL_KERNEL: i64 = 3;
const AVG_POOL_PAD: i64 = 1;
/// How many of each repeated block `features` holds.
const INCEPTION_A_REPEATS: usize = 4;
const INCEPTION_B_REPEATS: usize = 7;
const INCEPTION_C_REPEATS: usize = 3;
/// Index of the conv after the leading pool in a `branch3` `nn.Sequential`.
const AFTER_POOL_INDEX: usize = 1;

/// One convolution's shape: channels, kernel (h, w), stride and zero padding (h, w).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConvSpec {
    c_in: i64,
    c_out: i64,
    kernel: [i64; 2],
    stride: i64,
    padding: [i64; 2],
}

/// A square `k×k` conv.
const fn sq(c_in: i64, c_out: i64, k: i64, stride: i64, pad: i64) -> ConvSpec {
    ConvSpec { c_in, c_out, kernel: [k, k], stride, padding: [pad, pad] }
}

/// A 1×1 conv.
const fn pw(c_in: i64, c_out: i64) -> ConvSpec {
    sq(c_in, c_out, 1, 1, 0)
}

/// A stride-1 `1×n` conv padded to keep the size.
const fn row(c_in: i64, c_out: i64, n: i64) -> ConvSpec {
    ConvSpec { c_in, c_out, kernel: [1, n], stride: 1, padding: [0, n / 2] }
}

/// A stride-1 `n×1` conv padded to keep the size.
const fn col(c_in: i64, c_out: i64, n: i64) -> ConvSpec {
    ConvSpec { c_in, c_out, kernel: [n, 1], stride: 1, padding: [n / 2, 0] }
}

/// One branch of a block whose branches are concatenated along channels, in timm's order.
#[derive(Debug, Clone, Copy)]
enum ArmSpec {
    /// A single `ConvNormAct` attribute (`{name}.conv.weight`).
    Conv(&'static str, ConvSpec),
    /// An `nn.Sequential` of `ConvNormAct`s (`{name}.{i}.conv.weight`).
    Seq(&'static str, &'static [ConvSpec]),
    /// 3×3 stride-2 max-pool (no variables).
    MaxPool,
    /// `nn.Sequential(AvgPool2d, ConvNormAct…)`: the convs start at index 1.
    AvgPoolSeq(&'static str, &'static [ConvSpec]),
}

const STEM: [ConvSpec; 3] = [sq(3, 32, 3, 2, 0), sq(32, 32, 3, 1, 0), sq(32, 64, 3, 1, 1)];
const MIXED_3A: [ArmSpec; 2] = [ArmSpec::MaxPool, ArmSpec::Conv("conv", sq(64, 96, 3, 2, 0))];
const MIXED_4A: [ArmSpec; 2] = [
    ArmSpec::Seq("branch0", &[pw(160, 64), sq(64, 96, 3, 1, 0)]),
    ArmSpec::Seq("branch1", &[pw(160, 64), row(64, 64, 7), col(64, 64, 7), sq(64, 96, 3, 1, 0)]),
];
const MIXED_5A: [ArmSpec; 2] = [ArmSpec::Conv("conv", sq(192, 192, 3, 2, 0)), ArmSpec::MaxPool];
const INCEPTION_A: [ArmSpec; 4] = [
    ArmSpec::Conv("branch0", pw(384, 96)),
    ArmSpec::Seq("branch1", &[pw(384, 64), sq(64, 96, 3, 1, 1)]),
    ArmSpec::Seq("branch2", &[pw(384, 64), sq(64, 96, 3, 1, 1), sq(96, 96, 3, 1, 1)]),
    ArmSpec::AvgPoolSeq("branch3", &[pw(384, 96)]),
];
const REDUCTION_A: [ArmSpec; 3] = [
    ArmSpec::Conv("branch0", sq(384, 384, 3, 2, 0)),
    ArmSpec::Seq("branch1", &[pw(384, 192), sq(192, 224, 3, 1, 1), sq(224, 256, 3, 2, 0)]),
    ArmSpec::MaxPool,
];
const INCEPTION_B: [ArmSpec; 4] = [
    ArmSpec::Conv("branch0", pw(1024, 384)),
    ArmSpec::Seq("branch1", &[pw(1024, 192), row(192, 224, 7), col(224, 256, 7)]),
    ArmSpec::Seq(
        "branch2",
        &[pw(1024, 192), col(192, 192, 7), row(192, 224, 7), col(224, 224, 7), row(224, 256, 7)],
    ),
    ArmSpec::AvgPoolSeq("branch3", &[pw(1024, 128)]),
];
const REDUCTION_B: [ArmSpec; 3] = [
    ArmSpec::Seq("branch0", &[pw(1024, 192), sq(192, 192, 3, 2, 0)]),
    ArmSpec::Seq(
        "branch1",
        &[pw(1024, 256), row(256, 256, 7), col(256, 320, 7), sq(320, 320, 3, 2, 0)],
    ),
    ArmSpec::MaxPool,
];

/// timm's `ConvNormAct`: bias-free conv → BatchNorm (eps [`BN_EPS`]) → ReLU.
#[derive(Debug)]
struct ConvNormAct {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl ConvNormAct {
    /// Variables `{vs}.conv.weight` and `{vs}.bn.*`. BatchNorm starts as torch's (scale 1,
    /// shift 0) so that an untrained net matches timm's initial one.
    fn new(vs: &nn::Path, s: ConvSpec) -> Self {
        let conv_cfg = nn::ConvConfigND::<[i64; 2]> {
            stride: [s.stride, s.stride],
            padding: s.padding,
            bias: false,
            ..Default::default()
        };
        let bn_cfg = nn::BatchNormConfig {
            eps: BN_EPS,
            ws_init: nn::Init::Const(1.0),
            ..Default::default()
        };
        Self {
            conv: nn::conv(vs / "conv", s.c_in, s.c_out, s.kernel, conv_cfg),
            bn: nn::batch_norm2d(vs / "bn", s.c_out, bn_cfg),
        }
    }
}

impl ModuleT for ConvNormAct {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.conv).apply_t(&self.bn, train).relu()
    }
}

/// Convs applied in sequence.
fn chain(convs: &[ConvNormAct], xs: &Tensor, train: bool) -> Tensor {
    convs.iter().fold(xs.shallow_clone(), |x, c| c.forward_t(&x, train))
}

/// `nn.Sequential` convs under `vs/{first + i}`.
fn sequential(vs: &nn::Path, first: usize, specs: &[ConvSpec]) -> Vec<ConvNormAct> {
    specs.iter().enumerate().map(|(i, &s)| ConvNormAct::new(&(vs / (first + i)), s)).collect()
}

fn max_pool(xs: &Tensor) -> Tensor {
    xs.max_pool2d(
        [MAX_POOL_KERNEL, MAX_POOL_KERNEL],
        [MAX_POOL_STRIDE, MAX_POOL_STRIDE],
        [0, 0],
        [1, 1],
        false,
    )
}

/// `AvgPool2d(3, stride=1, padding=1, count_include_pad=False)`.
fn avg_pool_same(xs: &Tensor) -> Tensor {
    xs.avg_pool2d(
        [AVG_POOL_KERNEL, AVG_POOL_KERNEL],
        [1, 1],
        [AVG_POOL_PAD, AVG_POOL_PAD],
        false,
        false,
        None,
    )
}

/// A built branch.
#[derive(Debug)]
enum Arm {
    Convs(Vec<ConvNormAct>),
    MaxPool,
    AvgPoolThen(Vec<ConvNormAct>),
}

impl Arm {
    fn new(vs: &nn::Path, spec: ArmSpec) -> Self {
        match spec {
            ArmSpec::Conv(name, s) => Arm::Convs(vec![ConvNormAct::new(&(vs / name), s)]),
            ArmSpec::Seq(name, specs) => Arm::Convs(sequential(&(vs / name), 0, specs)),
            ArmSpec::MaxPool => Arm::MaxPool,
            ArmSpec::AvgPoolSeq(name, specs) => {
                Arm::AvgPoolThen(sequential(&(vs / name), AFTER_POOL_INDEX, specs))
            }
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Arm::Convs(c) => chain(c, xs, train),
            Arm::MaxPool => max_pool(xs),
            Arm::AvgPoolThen(c) => chain(c, &avg_pool_same(xs), train),
        }
    }
}

/// InceptionC: two of its branches fork into a 1×3 and a 3×1 conv whose outputs are
/// concatenated; timm names each conv as an attribute.
#[derive(Debug)]
struct InceptionC {
    branch0: ConvNormAct,
    branch1_0: ConvNormAct,
    branch1_1a: ConvNormAct,
    branch1_1b: ConvNormAct,
    branch2_0: ConvNormAct,
    branch2_1: ConvNormAct,
    branch2_2: ConvNormAct,
    branch2_3a: ConvNormAct,
    branch2_3b: ConvNormAct,
    branch3: Vec<ConvNormAct>,
}

impl InceptionC {
    fn new(vs: &nn::Path) -> Self {
        let c = |name: &str, s| ConvNormAct::new(&(vs / name), s);
        Self {
            branch0: c("branch0", pw(1536, 256)),
            branch1_0: c("branch1_0", pw(1536, 384)),
            branch1_1a: c("branch1_1a", row(384, 256, 3)),
            branch1_1b: c("branch1_1b", col(384, 256, 3)),
            branch2_0: c("branch2_0", pw(1536, 384)),
            branch2_1: c("branch2_1", col(384, 448, 3)),
            branch2_2: c("branch2_2", row(448, 512, 3)),
            branch2_3a: c("branch2_3a", row(512, 256, 3)),
            branch2_3b: c("branch2_3b", col(512, 256, 3)),
            branch3: sequential(&(vs / "branch3"), AFTER_POOL_INDEX, &[pw(1536, 256)]),
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let x0 = self.branch0.forward_t(xs, train);
        let x1 = self.branch1_0.forward_t(xs, train);
        let x1 = Tensor::cat(
            &[self.branch1_1a.forward_t(&x1, train), self.branch1_1b.forward_t(&x1, train)],
            1,
        );
        let x2 = self.branch2_0.forward_t(xs, train);
        let x2 = self.branch2_2.forward_t(&self.branch2_1.forward_t(&x2, train), train);
        let x2 = Tensor::cat(
            &[self.branch2_3a.forward_t(&x2, train), self.branch2_3b.forward_t(&x2, train)],
            1,
        );
        let x3 = chain(&self.branch3, &avg_pool_same(xs), train);
        Tensor::cat(&[x0, x1, x2, x3], 1)
    }
}

/// One module of `features`.
#[derive(Debug)]
enum Block {
    /// A stem `ConvNormAct` (boxed: a conv and a BatchNorm are ~300 bytes of handles).
    Conv(Box<ConvNormAct>),
    /// Mixed3a/4a/5a, InceptionA/B, ReductionA/B: branches concatenated in order.
    Parallel(Vec<Arm>),
    InceptionC(Box<InceptionC>),
}

impl Block {
    fn parallel(vs: &nn::Path, arms: &[ArmSpec]) -> Self {
        Block::Parallel(arms.iter().map(|&a| Arm::new(vs, a)).collect())
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            Block::Conv(c) => c.forward_t(xs, train),
            Block::Parallel(arms) => {
                let outs: Vec<Tensor> = arms.iter().map(|a| a.forward_t(xs, train)).collect();
                Tensor::cat(&outs, 1)
            }
            Block::InceptionC(c) => c.forward_t(xs, train),
        }
    }
}

/// timm's Inception-v4 (`features` → global average pool → `last_linear`; timm's head dropout
/// is 0 by default and is left to the classifier's trainer).
#[derive(Debug)]
pub struct InceptionV4 {
    /// Invariant: exactly [`FEATURE_BLOCKS`] modules, `features.{i}` at index i.
    features: Vec<Block>,
    last_linear: nn::Linear,
}

impl InceptionV4 {
    /// Builds the net under `vs` with a `num_classes` `last_linear` (1000 for ImageNet's).
    pub fn new(vs: &nn::Path, num_classes: i64) -> Self {
        let f = vs / "features";
        let mut features: Vec<Block> = Vec::with_capacity(FEATURE_BLOCKS);
        for s in STEM {
            let b = Block::Conv(Box::new(ConvNormAct::new(&(&f / features.len()), s)));
            features.push(b);
        }
        let repeated: [(&[ArmSpec], usize); 6] = [
            (&MIXED_3A, 1),
            (&MIXED_4A, 1),
            (&MIXED_5A, 1),
            (&INCEPTION_A, INCEPTION_A_REPEATS),
            (&REDUCTION_A, 1),
            (&INCEPTION_B, INCEPTION_B_REPEATS),
        ];
        for (arms, times) in repeated {
            for _ in 0..times {
                let b = Block::parallel(&(&f / features.len()), arms);
                features.push(b);
            }
        }
        let b = Block::parallel(&(&f / features.len()), &REDUCTION_B);
        features.push(b);
        for _ in 0..INCEPTION_C_REPEATS {
            let b = Block::InceptionC(Box::new(InceptionC::new(&(&f / features.len()))));
            features.push(b);
        }
        debug_assert_eq!(features.len(), FEATURE_BLOCKS);
        Self {
            features,
            last_linear: nn::linear(
                vs / "last_linear",
                NUM_FEATURES,
                num_classes,
                Default::default(),
            ),
        }
    }

    /// The `N×1536×h×w` map of `features.21` (timm's `forward_features`; h = w = 8 at 299²).
    pub fn feature_map_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.features.iter().fold(xs.shallow_clone(), |x, b| b.forward_t(&x, train))
    }

    /// Globally average-pooled features before `last_linear`: `N×1536` (timm's
    /// `forward_head(…, pre_logits=True)`).
    pub fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.feature_map_t(xs, train).mean_dim([2i64, 3].as_slice(), false, Kind::Float)
    }
}

impl ModuleT for InceptionV4 {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.features_t(xs, train).apply(&self.last_linear)
    }
}

/// Side of the `features.21` map for a square input of side `input` (0 or less: too small).
/// Follows the unpadded 3×3 stride-2 reductions: stem conv 1, stem conv 2 (stride 1),
/// Mixed3a, Mixed4a (stride 1), Mixed5a, ReductionA, ReductionB.
pub fn feature_side(input: i64) -> i64 {
    let valid = |side: i64, stride: i64| (side - MAX_POOL_KERNEL).div_euclid(stride) + 1;
    let mut s = valid(input, MAX_POOL_STRIDE);
    s = valid(s, 1);
    s = valid(s, MAX_POOL_STRIDE);
    s = valid(s, 1);
    for _ in 0..3 {
        s = valid(s, MAX_POOL_STRIDE);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    #[test]
    fn feature_side_matches_timm_and_min_input() {
        assert_eq!(feature_side(DEFAULT_INPUT_SIZE), 8);
        assert_eq!(feature_side(256), 6);
        assert!(feature_side(MIN_INPUT_SIZE) >= 1 && feature_side(MIN_INPUT_SIZE - 1) < 1);
    }

    #[test]
    fn smallest_input_gives_one_by_one_map() {
        let vs = VarStore::new(Device::Cpu);
        let net = InceptionV4::new(&vs.root(), 3);
        let x = Tensor::randn([1, 3, MIN_INPUT_SIZE, MIN_INPUT_SIZE], (Kind::Float, Device::Cpu));
        let map = tch::no_grad(|| net.feature_map_t(&x, false));
        assert_eq!(map.size(), vec![1, NUM_FEATURES, 1, 1]);
        assert_eq!(tch::no_grad(|| net.forward_t(&x, false)).size(), vec![1, 3]);
    }
}
