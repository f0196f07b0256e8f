//! ImageNet classifiers in **torchvision's layouts** (var names = torchvision state-dict keys),
//! so a torchvision checkpoint (`.pth`, read by [`crate::weights::pth`]) loads by direct copy
//! with [`crate::state_dict::load_arrays_strict`]:
//!
//! * ResNet-50/101 (`torchvision.models.resnet`, v1.5: the stride sits on the 3×3 conv of a
//!   bottleneck): `conv1`, `bn1`, `layer{1..4}.{i}.conv{1,2,3}`, `.bn{1,2,3}`,
//!   `.downsample.{0,1}`, `fc`; BatchNorm eps 1e-5, momentum 0.1 (torch defaults).
//! * VGG-16 (`torchvision.models.vgg16`, no BN): `features.{0,2,5,…,28}` convs (3×3, pad 1),
//!   adaptive average pool to 7×7, `classifier.{0,3,6}` linears with ReLU + dropout 0.5.
//!
//! Only torchvision's BatchNorm `num_batches_tracked` counters have no variable here (see
//! [`crate::weights::pth::StateDict::float_arrays`]). Input: RGB in [0, 1] normalised with
//! mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

/// ImageNet classes of the original heads.
pub const IMAGENET_CLASSES: i64 = 1000;
/// Bottleneck expansion (output channels = 4 × width).
pub const BOTTLENECK_EXPANSION: i64 = 4;
/// Stem: 7×7 stride-2 conv with 64 channels, then 3×3 stride-2 max-pool.
const STEM_CHANNELS: i64 = 64;
const STEM_KERNEL: i64 = 7;
const STEM_STRIDE: i64 = 2;
const STEM_PAD: i64 = 3;
const POOL_KERNEL: i64 = 3;
const POOL_STRIDE: i64 = 2;
const POOL_PAD: i64 = 1;
/// Width of each ResNet stage's bottleneck.
const RESNET_WIDTHS: [i64; 4] = [64, 128, 256, 512];
/// VGG classifier width, its dropout and the side of the adaptive pool before it.
const VGG_HIDDEN: i64 = 4096;
const VGG_DROPOUT: f64 = 0.5;
const VGG_POOL_SIDE: i64 = 7;
/// VGG-16 feature config (`cfgs["D"]`): channels per conv, `None` = 2×2 max-pool.
const VGG16_CFG: [Option<i64>; 18] = [
    Some(64),
    Some(64),
    None,
    Some(128),
    Some(128),
    None,
    Some(256),
    Some(256),
    Some(256),
    None,
    Some(512),
    Some(512),
    Some(512),
    None,
    Some(512),
    Some(512),
    Some(512),
    None,
];

/// Which ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResNetDepth {
    R50,
    R101,
}

impl ResNetDepth {
    /// Bottleneck blocks per stage.
    pub fn blocks(self) -> [usize; 4] {
        match self {
            Self::R50 => [3, 4, 6, 3],
            Self::R101 => [3, 4, 23, 3],
        }
    }
}

#[derive(Debug)]
struct Bottleneck {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    conv3: nn::Conv2D,
    bn3: nn::BatchNorm,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

fn conv_nb(vs: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    nn::conv2d(
        vs,
        c_in,
        c_out,
        k,
        nn::ConvConfig { stride, padding, bias: false, ..Default::default() },
    )
}

impl Bottleneck {
    fn new(vs: &nn::Path, c_in: i64, width: i64, stride: i64) -> Self {
        let c_out = width * BOTTLENECK_EXPANSION;
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            let d = vs / "downsample";
            (
                conv_nb(&d / 0, c_in, c_out, 1, stride, 0),
                nn::batch_norm2d(&d / 1, c_out, Default::default()),
            )
        });
        Self {
            conv1: conv_nb(vs / "conv1", c_in, width, 1, 1, 0),
            bn1: nn::batch_norm2d(vs / "bn1", width, Default::default()),
            conv2: conv_nb(vs / "conv2", width, width, 3, stride, 1),
            bn2: nn::batch_norm2d(vs / "bn2", width, Default::default()),
            conv3: conv_nb(vs / "conv3", width, c_out, 1, 1, 0),
            bn3: nn::batch_norm2d(vs / "bn3", c_out, Default::default()),
            downsample,
        }
    }
}

impl ModuleT for Bottleneck {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let y = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        let y = y.apply(&self.conv2).apply_t(&self.bn2, train).relu();
        let y = y.apply(&self.conv3).apply_t(&self.bn3, train);
        let identity = match &self.downsample {
            Some((c, b)) => xs.apply(c).apply_t(b, train),
            None => xs.shallow_clone(),
        };
        (y + identity).relu()
    }
}

/// torchvision's ResNet-50/101 (bottleneck, v1.5).
#[derive(Debug)]
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    layers: Vec<Vec<Bottleneck>>,
    fc: nn::Linear,
}

impl ResNet {
    /// Builds the net under `vs` with a `num_classes` `fc` (1000 for the ImageNet head).
    pub fn new(vs: &nn::Path, depth: ResNetDepth, num_classes: i64) -> Self {
        let mut c_in = STEM_CHANNELS;
        let layers = depth
            .blocks()
            .iter()
            .zip(RESNET_WIDTHS)
            .enumerate()
            .map(|(stage, (&n, width))| {
                let layer = vs / format!("layer{}", stage + 1);
                (0..n)
                    .map(|i| {
                        let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                        let b = Bottleneck::new(&(&layer / i), c_in, width, stride);
                        c_in = width * BOTTLENECK_EXPANSION;
                        b
                    })
                    .collect()
            })
            .collect();
        Self {
            conv1: conv_nb(vs / "conv1", 3, STEM_CHANNELS, STEM_KERNEL, STEM_STRIDE, STEM_PAD),
            bn1: nn::batch_norm2d(vs / "bn1", STEM_CHANNELS, Default::default()),
            layers,
            fc: nn::linear(vs / "fc", c_in, num_classes, Default::default()),
        }
    }

    /// Globally average-pooled features before `fc`: `N×2048`.
    pub fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.feature_map_t(xs, train).mean_dim([2i64, 3].as_slice(), false, Kind::Float)
    }

    /// The last stage's map (N×F×h×w), before the global average pooling.
    pub fn feature_map_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        x = x.max_pool2d(
            [POOL_KERNEL, POOL_KERNEL],
            [POOL_STRIDE, POOL_STRIDE],
            [POOL_PAD, POOL_PAD],
            [1, 1],
            false,
        );
        for layer in &self.layers {
            for b in layer {
                x = b.forward_t(&x, train);
            }
        }
        x
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.features_t(xs, train).apply(&self.fc)
    }
}

/// torchvision's VGG-16 (no BN).
#[derive(Debug)]
pub struct Vgg16 {
    /// Convs with their `features.N` index; `None` marks a max-pool.
    features: Vec<Option<nn::Conv2D>>,
    fc1: nn::Linear,
    fc2: nn::Linear,
    fc3: nn::Linear,
}

impl Vgg16 {
    /// Builds the net under `vs` with a `num_classes` `classifier.6`.
    pub fn new(vs: &nn::Path, num_classes: i64) -> Self {
        let f = vs / "features";
        let c = vs / "classifier";
        let mut index = 0usize;
        let mut c_in = 3;
        let mut features = Vec::with_capacity(VGG16_CFG.len());
        for item in VGG16_CFG {
            match item {
                Some(c_out) => {
                    let cfg = nn::ConvConfig { padding: 1, ..Default::default() };
                    features.push(Some(nn::conv2d(&f / index, c_in, c_out, 3, cfg)));
                    c_in = c_out;
                    index += 2; // conv, ReLU
                }
                None => {
                    features.push(None);
                    index += 1;
                }
            }
        }
        let flat = c_in * VGG_POOL_SIDE * VGG_POOL_SIDE;
        Self {
            features,
            fc1: nn::linear(&c / 0, flat, VGG_HIDDEN, Default::default()),
            fc2: nn::linear(&c / 3, VGG_HIDDEN, VGG_HIDDEN, Default::default()),
            fc3: nn::linear(&c / 6, VGG_HIDDEN, num_classes, Default::default()),
        }
    }

    /// The 4096-d penultimate activations (after `classifier.4`'s ReLU and its dropout).
    pub fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs.shallow_clone();
        for layer in &self.features {
            x = match layer {
                Some(conv) => x.apply(conv).relu(),
                None => x.max_pool2d_default(2),
            };
        }
        let x = x.adaptive_avg_pool2d([VGG_POOL_SIDE, VGG_POOL_SIDE]).flatten(1, -1);
        let x = x.apply(&self.fc1).relu().dropout(VGG_DROPOUT, train);
        x.apply(&self.fc2).relu().dropout(VGG_DROPOUT, train)
    }
}

impl ModuleT for Vgg16 {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.features_t(xs, train).apply(&self.fc3)
    }
}
