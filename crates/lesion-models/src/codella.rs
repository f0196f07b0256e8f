//! The paper's best net (after Codella et al.): a three-block 5×5 encoder, a fully connected
//! bottleneck of 8192 units, and a three-stage decoder with 11×11 convolutions.
//! At 128² and width 1 it has 544,269,921 parameters (tested).
use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::blocks::{upsample2, ConvReluStack, ConvSpec};
use crate::SegNetConfig;

/// Poolings in the encoder (input size must be a multiple of 2^POOLS).
pub const POOLS: u32 = 3;
/// Encoder: three blocks of three 5×5 convs.
pub const ENCODER_CHANNELS: [i64; 3] = [32, 64, 128];
pub const ENCODER_KERNEL: i64 = 5;
pub const CONVS_PER_BLOCK: usize = 3;
/// The FC bottleneck's hidden width.
pub const FC_UNITS: i64 = 8192;
/// Decoder stages, deepest first: (11×11, 5×5, 5×5) convolutions with these widths.
pub const DECODER: [[i64; 3]; 3] = [[128, 128, 64], [64, 64, 32], [32, 32, 32]];
pub const DECODER_KERNELS: [i64; 3] = [11, 5, 5];

/// The three-block encoder shared with `unet-bn`. Returns the skips (before pooling) and
/// the pooled output.
#[derive(Debug)]
pub struct CodellaEncoder {
    blocks: Vec<ConvReluStack>,
}

/// Encoder result: per-block activations before pooling (shallowest first) and the output.
pub struct EncoderOutput {
    pub skips: Vec<Tensor>,
    pub out: Tensor,
}

impl CodellaEncoder {
    pub fn new(vs: &nn::Path, cfg: &SegNetConfig) -> Self {
        let mut c_in = 3;
        let blocks = ENCODER_CHANNELS
            .iter()
            .enumerate()
            .map(|(b, &c)| {
                let spec = [ConvSpec::new(ENCODER_KERNEL, cfg.ch(c)); CONVS_PER_BLOCK];
                let block =
                    ConvReluStack::new(&(vs / format!("block{}", b + 1)), "conv", c_in, &spec);
                c_in = cfg.ch(c);
                block
            })
            .collect();
        Self { blocks }
    }

    /// Channels of each skip (shallowest first).
    pub fn skip_channels(cfg: &SegNetConfig) -> [i64; 3] {
        ENCODER_CHANNELS.map(|c| cfg.ch(c))
    }

    pub fn forward(&self, xs: &Tensor, train: bool) -> EncoderOutput {
        let mut skips = Vec::with_capacity(self.blocks.len());
        let mut xs = xs.shallow_clone();
        for block in &self.blocks {
            let s = block.forward_t(&xs, train);
            xs = s.max_pool2d_default(2);
            skips.push(s);
        }
        EncoderOutput { skips, out: xs }
    }
}

/// One decoder stage: ×2 nearest upsampling, skip concatenation, optional BN, dropout, then
/// an 11×11, 5×5, 5×5 conv stack.
#[derive(Debug)]
pub struct DecoderStage {
    bn: Option<nn::BatchNorm>,
    convs: ConvReluStack,
    dropout: f64,
}

impl DecoderStage {
    pub fn new(
        vs: &nn::Path,
        c_in: i64,
        widths: [i64; 3],
        cfg: &SegNetConfig,
        batch_norm: bool,
    ) -> Self {
        let spec: Vec<ConvSpec> =
            DECODER_KERNELS.iter().zip(widths).map(|(&k, c)| ConvSpec::new(k, cfg.ch(c))).collect();
        Self {
            bn: batch_norm.then(|| nn::batch_norm2d(vs / "bn", c_in, Default::default())),
            convs: ConvReluStack::new(vs, "conv", c_in, &spec),
            dropout: cfg.dropout,
        }
    }

    pub fn forward(&self, xs: &Tensor, skip: &Tensor, train: bool) -> Tensor {
        let mut xs = Tensor::cat(&[upsample2(xs), skip.shallow_clone()], 1);
        if let Some(bn) = &self.bn {
            xs = xs.apply_t(bn, train);
        }
        xs.dropout(self.dropout, train).apply_t(&self.convs, train)
    }

    pub fn out_channels(&self) -> i64 {
        self.convs.out_channels()
    }
}

#[derive(Debug)]
pub struct CodellaFc {
    encoder: CodellaEncoder,
    fc1: nn::Linear,
    fc2: nn::Linear,
    bottleneck_shape: [i64; 3],
    decoder: Vec<DecoderStage>,
    head: nn::Conv2D,
    dropout: f64,
}

impl CodellaFc {
    pub fn new(vs: &nn::Path, cfg: &SegNetConfig) -> Self {
        let encoder = CodellaEncoder::new(&(vs / "encoder"), cfg);
        let skips = CodellaEncoder::skip_channels(cfg);
        let side = cfg.input_size >> POOLS;
        let c_deep = skips[2];
        let flat = c_deep * side * side;
        let units = cfg.ch(FC_UNITS);
        let fc1 = nn::linear(vs / "fc1", flat, units, Default::default());
        let fc2 = nn::linear(vs / "fc2", units, flat, Default::default());
        let mut decoder = Vec::with_capacity(DECODER.len());
        let mut c = c_deep;
        for (i, widths) in DECODER.iter().enumerate() {
            let skip_c = skips[skips.len() - 1 - i];
            let stage =
                DecoderStage::new(&(vs / format!("up{}", i + 1)), c + skip_c, *widths, cfg, false);
            c = stage.out_channels();
            decoder.push(stage);
        }
        let head = nn::conv2d(vs / "head", c, 1, 1, Default::default());
        Self {
            encoder,
            fc1,
            fc2,
            bottleneck_shape: [c_deep, side, side],
            decoder,
            head,
            dropout: cfg.dropout,
        }
    }
}

impl ModuleT for CodellaFc {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let enc = self.encoder.forward(xs, train);
        let n = enc.out.size()[0];
        let [c, h, w] = self.bottleneck_shape;
        let mut xs = enc
            .out
            .flatten(1, -1)
            .apply(&self.fc1)
            .relu()
            .dropout(self.dropout, train)
            .apply(&self.fc2)
            .relu()
            .view([n, c, h, w]);
        for (i, stage) in self.decoder.iter().enumerate() {
            xs = stage.forward(&xs, &enc.skips[enc.skips.len() - 1 - i], train);
        }
        xs.apply(&self.head)
    }
}
