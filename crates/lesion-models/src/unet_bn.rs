//! The paper's BN variant: the Codella encoder, a 5×5×256 convolution with BatchNorm as the
//! bottleneck (no FC), and BatchNorm after each decoder concatenation (≈10.2 M parameters).
use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::blocks::conv_same;
use crate::codella::{CodellaEncoder, DecoderStage, DECODER};
use crate::SegNetConfig;

pub const BOTTLENECK_CHANNELS: i64 = 256;
pub const BOTTLENECK_KERNEL: i64 = 5;

#[derive(Debug)]
pub struct UnetBn {
    encoder: CodellaEncoder,
    bottleneck: nn::Conv2D,
    bottleneck_bn: nn::BatchNorm,
    decoder: Vec<DecoderStage>,
    head: nn::Conv2D,
}

impl UnetBn {
    pub fn new(vs: &nn::Path, cfg: &SegNetConfig) -> Self {
        let encoder = CodellaEncoder::new(&(vs / "encoder"), cfg);
        let skips = CodellaEncoder::skip_channels(cfg);
        let c_mid = cfg.ch(BOTTLENECK_CHANNELS);
        let bottleneck = conv_same(vs / "bottleneck", skips[2], c_mid, BOTTLENECK_KERNEL);
        let bottleneck_bn = nn::batch_norm2d(vs / "bottleneck_bn", c_mid, Default::default());
        let mut decoder = Vec::with_capacity(DECODER.len());
        let mut c = c_mid;
        for (i, widths) in DECODER.iter().enumerate() {
            let skip_c = skips[skips.len() - 1 - i];
            let stage =
                DecoderStage::new(&(vs / format!("up{}", i + 1)), c + skip_c, *widths, cfg, true);
            c = stage.out_channels();
            decoder.push(stage);
        }
        let head = nn::conv2d(vs / "head", c, 1, 1, Default::default());
        Self { encoder, bottleneck, bottleneck_bn, decoder, head }
    }
}

impl ModuleT for UnetBn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let enc = self.encoder.forward(xs, train);
        let mut xs = enc.out.apply(&self.bottleneck).apply_t(&self.bottleneck_bn, train).relu();
        for (i, stage) in self.decoder.iter().enumerate() {
            xs = stage.forward(&xs, &enc.skips[enc.skips.len() - 1 - i], train);
        }
        xs.apply(&self.head)
    }
}
