//! U-Net with an EfficientNet-Lite encoder, the segmentation_models.pytorch way
//! (`smp.Unet(encoder_name=…)`): the encoder is the classifier's own [`LiteBackbone`] (stem and
//! MBConv blocks, no head conv) under `encoder.`, with the checkpoint's var names, so the
//! registry ImageNet weights load by name; the decoder is smp's `UnetDecoder`; the head is
//! smp's `SegmentationHead` with one output.
//!
//! * Skips: the deepest feature map at each stride 2, 4, 8, 16 and, as the decoder's input,
//!   the last block's output at stride 32 ([`LiteBackbone::stage_features_t`]; the head conv
//!   is not part of the encoder, as in smp). smp's
//!   efficientnet encoders cut the blocks with fixed indices instead and take the stem output
//!   (32 channels) at stride 2; here every skip is the last map at its stride (at stride 2
//!   block 0's 16-channel output).
//! * Decoder stage `i` (smp `DecoderBlock`, no attention, no centre block): nearest 2×
//!   upsampling, concatenation with the skip of that resolution (none for the last stage, which
//!   reaches the input size), then twice conv 3×3 (no bias) → BatchNorm → ReLU.
//! * Head: conv 3×3 with bias → 1 logit per pixel at the input size.
//!
//! The encoder's "SAME" paddings are static, computed for `input_size` (a multiple of 32, so
//! every skip has exactly twice the size of the map below it).
use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::blocks::{upsample2, DoubleConvBn};
use crate::efficientnet::{LiteBackbone, DROP_CONNECT_RATE, FEATURE_STAGES};
use crate::SegNetConfig;

/// Poolings between input and bottleneck: the input side must be a multiple of `2^POOLS`.
pub const POOLS: u32 = FEATURE_STAGES as u32;
/// Decoder stages: one per skip plus the last one up to the input size.
pub const DECODER_STAGES: usize = FEATURE_STAGES;
/// smp's default `decoder_channels`.
pub const DEFAULT_DECODER_CHANNELS: [i64; DECODER_STAGES] = [256, 128, 64, 32, 16];
/// Var-name prefix of the encoder (for freezing and for loading ImageNet weights).
pub const ENCODER_PREFIX: &str = "encoder.";
/// Kernel of smp's segmentation head.
const HEAD_KERNEL: i64 = 3;
/// Padding that keeps the head's output at the input size.
const HEAD_PADDING: i64 = HEAD_KERNEL / 2;
/// One logit per pixel (lesion vs background).
const OUTPUT_CHANNELS: i64 = 1;

#[derive(Debug)]
pub struct LiteUnet {
    encoder: LiteBackbone,
    decoder: Vec<DoubleConvBn>,
    head: nn::Conv2D,
}

impl LiteUnet {
    /// Builds the net of `cfg` (`cfg.variant`, `cfg.input_size`, `cfg.decoder_channels`
    /// scaled by `cfg.width`; the encoder is never scaled: its shapes are the checkpoint's).
    /// `cfg` must have passed [`SegNetConfig::validate`] (five decoder channel counts).
    pub fn new(vs: &nn::Path, cfg: &SegNetConfig) -> Self {
        let encoder =
            LiteBackbone::new(&(vs / "encoder"), cfg.variant, cfg.input_size, DROP_CONNECT_RATE);
        // Skips deepest first; the bottleneck (stride 32) is the decoder's input.
        let skips: Vec<i64> = cfg.variant.skip_channels().into_iter().rev().collect();
        let mut c = encoder.out_channels();
        let decoder = cfg
            .decoder_channels
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let skip_c = skips.get(i).copied().unwrap_or(0);
                let out = cfg.ch(w);
                let stage = DoubleConvBn::new(&(vs / "decoder" / i), c + skip_c, out);
                c = out;
                stage
            })
            .collect();
        let head = nn::conv2d(
            vs / "segmentation_head",
            c,
            OUTPUT_CHANNELS,
            HEAD_KERNEL,
            nn::ConvConfig { padding: HEAD_PADDING, ..Default::default() },
        );
        Self { encoder, decoder, head }
    }

    /// The encoder (the same type and layers as [`crate::efficientnet::EfficientNetLite`]'s).
    pub fn encoder(&self) -> &LiteBackbone {
        &self.encoder
    }
}

impl ModuleT for LiteUnet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let features = self.encoder.stage_features_t(xs, train);
        let mut x = features.deepest;
        let mut skips = features.skips.into_iter().rev();
        for stage in &self.decoder {
            x = upsample2(&x);
            if let Some(skip) = skips.next() {
                x = Tensor::cat(&[x, skip], 1);
            }
            x = stage.forward_t(&x, train);
        }
        x.apply(&self.head)
    }
}
