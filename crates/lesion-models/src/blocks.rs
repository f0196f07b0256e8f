//! Small building blocks shared by the nets. Each keeps the var names of its parts stable:
//! they are checkpoint keys.
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Padding that keeps the spatial size for an odd kernel ("same" in Keras).
pub const fn same_padding(kernel: i64) -> i64 {
    kernel / 2
}

/// A `k×k` convolution with "same" padding and bias.
pub fn conv_same(vs: nn::Path, c_in: i64, c_out: i64, kernel: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig { padding: same_padding(kernel), ..Default::default() };
    nn::conv2d(vs, c_in, c_out, kernel, cfg)
}

/// Conv 3×3 (no bias) → BatchNorm → ReLU, twice: the U-Net's double convolution.
#[derive(Debug)]
pub struct DoubleConvBn {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
}

impl DoubleConvBn {
    pub fn new(vs: &nn::Path, c_in: i64, c_out: i64) -> Self {
        let cfg = nn::ConvConfig { padding: 1, bias: false, ..Default::default() };
        Self {
            conv1: nn::conv2d(vs / "conv1", c_in, c_out, 3, cfg),
            bn1: nn::batch_norm2d(vs / "bn1", c_out, Default::default()),
            conv2: nn::conv2d(vs / "conv2", c_out, c_out, 3, cfg),
            bn2: nn::batch_norm2d(vs / "bn2", c_out, Default::default()),
        }
    }
}

impl ModuleT for DoubleConvBn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        xs.apply(&self.conv2).apply_t(&self.bn2, train).relu()
    }
}

/// A stack of "same"-padded convolutions, each followed by ReLU. Var names are
/// `{prefix}{i}` for i = 1.. (e.g. `conv1`, `conv2`, `conv3`).
#[derive(Debug)]
pub struct ConvReluStack {
    convs: Vec<nn::Conv2D>,
}

impl ConvReluStack {
    /// `spec` lists (kernel, out_channels) per layer; the first layer takes `c_in`.
    pub fn new(vs: &nn::Path, prefix: &str, c_in: i64, spec: &[ConvSpec]) -> Self {
        let mut convs = Vec::with_capacity(spec.len());
        let mut c = c_in;
        for (i, s) in spec.iter().enumerate() {
            convs.push(conv_same(vs / format!("{prefix}{}", i + 1), c, s.channels, s.kernel));
            c = s.channels;
        }
        Self { convs }
    }

    pub fn out_channels(&self) -> i64 {
        self.convs.last().map(|c| c.ws.size()[0]).unwrap_or(0)
    }
}

impl ModuleT for ConvReluStack {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let mut xs = xs.shallow_clone();
        for conv in &self.convs {
            xs = xs.apply(conv).relu();
        }
        xs
    }
}

/// One convolution of a stack: its square kernel size and output channel count.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub kernel: i64,
    pub channels: i64,
}

impl ConvSpec {
    pub const fn new(kernel: i64, channels: i64) -> Self {
        Self { kernel, channels }
    }
}

/// Nearest-neighbour ×2 upsampling (Keras `UpSampling2D`).
pub fn upsample2(xs: &Tensor) -> Tensor {
    let size = xs.size();
    xs.upsample_nearest2d([size[2] * 2, size[3] * 2], None, None)
}
