//! U-Net with a VGG-16 encoder (conv1_1 … conv5_3, pools 1-4) and a decoder of four stages
//! (256/128/64/32) with dropout and two 3×3 convolutions each. Encoder var names follow the
//! Keras checkpoint (`encoder.block1_conv1.weight`, OIHW), so the ImageNet weights load
//! without a remapping table.
use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::blocks::{conv_same, upsample2, ConvReluStack, ConvSpec};
use crate::SegNetConfig;

pub const POOLS: u32 = 4;
/// VGG-16's five blocks: (convs, channels).
pub const VGG16_BLOCKS: [VggBlock; 5] = [
    VggBlock { convs: 2, channels: 64 },
    VggBlock { convs: 2, channels: 128 },
    VggBlock { convs: 3, channels: 256 },
    VggBlock { convs: 3, channels: 512 },
    VggBlock { convs: 3, channels: 512 },
];
pub const DECODER_WIDTHS: [i64; 4] = [256, 128, 64, 32];
const KERNEL: i64 = 3;

#[derive(Debug, Clone, Copy)]
pub struct VggBlock {
    pub convs: usize,
    pub channels: i64,
}

/// The VGG-16 feature extractor, var names `block{b}_conv{i}` as in Keras.
#[derive(Debug)]
pub struct Vgg16Encoder {
    convs: Vec<Vec<nn::Conv2D>>,
}

/// Named intermediate activations of the encoder, for checking against the source model.
pub struct VggActivations {
    /// Output of the last conv (after ReLU) of each block, before its pool.
    pub block_outputs: Vec<Tensor>,
    /// Output of each block's 2×2 max-pool.
    pub pools: Vec<Tensor>,
}

impl Vgg16Encoder {
    pub fn new(vs: &nn::Path, cfg: &SegNetConfig) -> Self {
        let mut c_in = 3;
        let convs = VGG16_BLOCKS
            .iter()
            .enumerate()
            .map(|(b, blk)| {
                (0..blk.convs)
                    .map(|i| {
                        let c = cfg.ch(blk.channels);
                        let conv = conv_same(
                            vs / format!("block{}_conv{}", b + 1, i + 1),
                            c_in,
                            c,
                            KERNEL,
                        );
                        c_in = c;
                        conv
                    })
                    .collect()
            })
            .collect();
        Self { convs }
    }

    /// Runs all five blocks; every block output and pool is returned.
    pub fn activations(&self, xs: &Tensor) -> VggActivations {
        let mut block_outputs = Vec::with_capacity(self.convs.len());
        let mut pools = Vec::with_capacity(self.convs.len());
        let mut xs = xs.shallow_clone();
        for block in &self.convs {
            for conv in block {
                xs = xs.apply(conv).relu();
            }
            block_outputs.push(xs.shallow_clone());
            xs = xs.max_pool2d_default(2);
            pools.push(xs.shallow_clone());
        }
        VggActivations { block_outputs, pools }
    }

    /// Skips (block1..block4 outputs) and the block5_conv3 output; block 5 is not pooled.
    fn forward(&self, xs: &Tensor) -> (Vec<Tensor>, Tensor) {
        let mut skips = Vec::with_capacity(self.convs.len() - 1);
        let mut xs = xs.shallow_clone();
        for (b, block) in self.convs.iter().enumerate() {
            if b > 0 {
                xs = xs.max_pool2d_default(2);
            }
            for conv in block {
                xs = xs.apply(conv).relu();
            }
            if b + 1 < self.convs.len() {
                skips.push(xs.shallow_clone());
            }
        }
        (skips, xs)
    }
}

#[derive(Debug)]
pub struct Vgg16Unet {
    encoder: Vgg16Encoder,
    decoder: Vec<ConvReluStack>,
    head: nn::Conv2D,
    dropout: f64,
}

impl Vgg16Unet {
    pub fn new(vs: &nn::Path, cfg: &SegNetConfig) -> Self {
        let encoder = Vgg16Encoder::new(&(vs / "encoder"), cfg);
        let skips: Vec<i64> = VGG16_BLOCKS.iter().map(|b| cfg.ch(b.channels)).collect();
        let mut c = skips[4];
        let decoder = DECODER_WIDTHS
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let skip_c = skips[3 - i];
                let spec = [ConvSpec::new(KERNEL, cfg.ch(w)); 2];
                let stage =
                    ConvReluStack::new(&(vs / format!("up{}", i + 1)), "conv", c + skip_c, &spec);
                c = cfg.ch(w);
                stage
            })
            .collect();
        let head = conv_same(vs / "head", c, 1, 1);
        Self { encoder, decoder, head, dropout: cfg.dropout }
    }

    /// Var-name prefix of the encoder (for freezing and for loading ImageNet weights).
    pub const ENCODER_PREFIX: &'static str = "encoder.";
}

impl ModuleT for Vgg16Unet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let (skips, mut xs) = self.encoder.forward(xs);
        for (stage, skip) in self.decoder.iter().zip(skips.iter().rev()) {
            xs = Tensor::cat(&[upsample2(&xs), skip.shallow_clone()], 1)
                .dropout(self.dropout, train);
            xs = stage.forward_t(&xs, train);
        }
        xs.apply(&self.head)
    }
}
