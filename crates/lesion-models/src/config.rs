//! Model configuration: the one place that turns a TOML `[model]` table into a network.
use serde::{Deserialize, Serialize};
use tch::nn;

use crate::efficientnet::LiteVariant;
use crate::{codella, error::ModelError, lite_unet, unet, unet_bn, vgg16_unet, SegNet};

/// Which network to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// Ronneberger's U-Net with BatchNorm and a configurable base width (the small CPU default).
    Unet,
    /// The paper's Codella-style net with the 8192-unit fully connected bottleneck.
    CodellaFc,
    /// The paper's BN variant: same encoder, 5×5×256 conv + BN bottleneck, no FC.
    UnetBn,
    /// VGG-16 encoder (ImageNet weights) with a U-Net decoder.
    Vgg16Unet,
    /// EfficientNet-Lite encoder (ImageNet weights from the registry) with smp's U-Net
    /// decoder ([`lite_unet::LiteUnet`]).
    LiteUnet,
}

impl Arch {
    pub const ALL: [Arch; 5] =
        [Arch::Unet, Arch::CodellaFc, Arch::UnetBn, Arch::Vgg16Unet, Arch::LiteUnet];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Unet => "unet",
            Arch::CodellaFc => "codella-fc",
            Arch::UnetBn => "unet-bn",
            Arch::Vgg16Unet => "vgg16-unet",
            Arch::LiteUnet => "lite-unet",
        }
    }

    /// Number of 2×2 poolings between input and bottleneck: the input size must be a multiple
    /// of `2^pools`.
    pub fn pools(self, depth: usize) -> u32 {
        match self {
            Arch::Unet => depth as u32,
            Arch::CodellaFc | Arch::UnetBn => codella::POOLS,
            Arch::Vgg16Unet => vgg16_unet::POOLS,
            Arch::LiteUnet => lite_unet::POOLS,
        }
    }

    /// Var-name prefix of a pretrained encoder (what `train.pretrained` loads and
    /// `train.freeze_encoder_epochs` freezes); `None` for the nets trained from scratch.
    pub fn encoder_prefix(self) -> Option<&'static str> {
        match self {
            Arch::Vgg16Unet => Some(vgg16_unet::Vgg16Unet::ENCODER_PREFIX),
            Arch::LiteUnet => Some(lite_unet::ENCODER_PREFIX),
            Arch::Unet | Arch::CodellaFc | Arch::UnetBn => None,
        }
    }

    /// The input normalisation each net expects by default.
    pub fn default_input_norm(self) -> InputNorm {
        match self {
            // The Keras VGG-16 weights were trained on caffe-style input.
            Arch::Vgg16Unet => InputNorm::CaffeBgr,
            // EfficientNet-Lite was trained on `(x/255 − mean) / std`.
            Arch::LiteUnet => InputNorm::ImagenetMeanStd,
            _ => InputNorm::ImagenetMean,
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arch::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| {
            ModelError::Config(format!(
                "unknown arch '{s}' (expected unet, codella-fc, unet-bn, vgg16-unet or lite-unet)"
            ))
        })
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How 8-bit RGB pixels become network input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputNorm {
    /// `(x − ImageNet mean) / 255`, RGB: the paper's "ImageNet-mean input" on a 0-1 scale.
    ImagenetMean,
    /// `(x/255 − mean) / std` with ImageNet statistics (torchvision's convention).
    ImagenetMeanStd,
    /// BGR, 0-255, ImageNet mean subtracted (Keras/caffe VGG-16 convention).
    CaffeBgr,
}

/// The deepest U-Net (`depth` = its 2×2 poolings) that [`SegNetConfig::validate`] accepts.
pub const UNET_MAX_DEPTH: usize = 6;

/// ImageNet channel means in RGB order on the 0-255 scale.
pub const IMAGENET_MEAN_RGB_255: [f64; 3] = [123.68, 116.779, 103.939];
/// ImageNet channel standard deviations in RGB order on the 0-1 scale.
pub const IMAGENET_STD_RGB: [f64; 3] = [0.229, 0.224, 0.225];

/// Everything needed to build a segmentation net. Every field has a written-out default so
/// that a run folder's `config.toml` states the whole model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegNetConfig {
    pub arch: Arch,
    /// Square input side in pixels; a multiple of `2^pools`.
    pub input_size: i64,
    /// Channel width multiplier applied to every layer (1.0 = the paper's widths); for
    /// `lite-unet` to the decoder only (the encoder keeps the checkpoint's shapes).
    pub width: f64,
    /// `unet` only: channels of the first level (doubled at each level).
    pub base: i64,
    /// `unet` only: number of poolings.
    pub depth: usize,
    /// Dropout probability in the decoders (the paper: 0.5); unused by `lite-unet` (smp's
    /// decoder has none).
    pub dropout: f64,
    /// Input normalisation; `None` uses the arch's default.
    pub input_norm: Option<InputNorm>,
    /// `lite-unet` only: the EfficientNet-Lite encoder (`lite0` | `lite1` | `lite2`).
    pub variant: LiteVariant,
    /// `lite-unet` only: output channels of the five decoder stages, deepest first (smp's
    /// `decoder_channels`; scaled by `width`).
    pub decoder_channels: Vec<i64>,
}

impl Default for SegNetConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Unet,
            input_size: 128,
            width: 1.0,
            base: 32,
            depth: 4,
            dropout: 0.5,
            input_norm: None,
            variant: LiteVariant::Lite0,
            decoder_channels: lite_unet::DEFAULT_DECODER_CHANNELS.to_vec(),
        }
    }
}

impl SegNetConfig {
    pub fn input_norm(&self) -> InputNorm {
        self.input_norm.unwrap_or_else(|| self.arch.default_input_norm())
    }

    /// A channel count scaled by the width multiplier (never below 1).
    pub fn ch(&self, channels: i64) -> i64 {
        ((channels as f64 * self.width).round() as i64).max(1)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let pools = self.arch.pools(self.depth);
        // None when 2^pools does not fit an i64 (a depth far too deep for any size).
        let multiple = 1i64.checked_shl(pools).filter(|m| *m > 0);
        match multiple {
            Some(m) if self.input_size > 0 && self.input_size % m == 0 => {}
            _ => return Err(ModelError::Config(self.input_size_problem(pools, multiple))),
        }
        if !(self.width > 0.0 && self.width.is_finite()) {
            return Err(ModelError::Config(format!("width must be > 0, got {}", self.width)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::Config(format!(
                "dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        if self.arch == Arch::Unet
            && (self.base < 1 || self.depth == 0 || self.depth > UNET_MAX_DEPTH)
        {
            return Err(ModelError::Config(format!(
                "unet: base must be >= 1 and depth in 1..={UNET_MAX_DEPTH} (got base {}, depth {})",
                self.base, self.depth
            )));
        }
        if self.arch == Arch::LiteUnet
            && (self.decoder_channels.len() != lite_unet::DECODER_STAGES
                || self.decoder_channels.iter().any(|&c| c < 1))
        {
            return Err(ModelError::Config(format!(
                "lite-unet: decoder_channels must be {} counts >= 1, got {:?}",
                lite_unet::DECODER_STAGES,
                self.decoder_channels
            )));
        }
        Ok(())
    }

    /// Why `input_size` does not suit `pools` 2×2 poolings (`multiple` = 2^pools, `None` when
    /// it overflows): for the U-Net, whose pooling count is its `depth`, a depth too deep for
    /// the size is said so, with the deepest depth that fits.
    fn input_size_problem(&self, pools: u32, multiple: Option<i64>) -> String {
        let (arch, size) = (self.arch, self.input_size);
        let multiple_text = multiple.map_or_else(|| format!("2^{pools}"), |m| m.to_string());
        if size <= 0 {
            return format!("{arch}: input_size {size} must be positive");
        }
        if arch != Arch::Unet {
            return format!(
                "{arch}: input_size {size} must be a positive multiple of {multiple_text} (the net halves its input {pools} times)"
            );
        }
        let depth = self.depth;
        // The deepest U-Net whose poolings divide `size` exactly.
        let fits = (size.trailing_zeros() as usize).min(UNET_MAX_DEPTH);
        let fits_text = if fits == 0 {
            "no depth fits an odd input_size".to_string()
        } else {
            format!("at input_size {size} depth can be at most {fits}")
        };
        if multiple.is_none_or(|m| size < m) {
            format!(
                "{arch}: depth {depth} is too deep for input_size {size}: each of the {depth} levels halves the image, so input_size must be a multiple of {multiple_text}; {fits_text}"
            )
        } else {
            format!(
                "{arch}: input_size {size} is not a multiple of {multiple_text} (2^depth, depth {depth}); {fits_text}, or pick an input_size that is"
            )
        }
    }

    /// Build the network's layers under `vs` (its variables are created there).
    pub fn build(&self, vs: &nn::Path) -> Result<SegNet, ModelError> {
        self.validate()?;
        Ok(match self.arch {
            Arch::Unet => Box::new(unet::Unet::new(vs, self)),
            Arch::CodellaFc => Box::new(codella::CodellaFc::new(vs, self)),
            Arch::UnetBn => Box::new(unet_bn::UnetBn::new(vs, self)),
            Arch::Vgg16Unet => Box::new(vgg16_unet::Vgg16Unet::new(vs, self)),
            Arch::LiteUnet => Box::new(lite_unet::LiteUnet::new(vs, self)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unet(input_size: i64, depth: usize) -> SegNetConfig {
        SegNetConfig { arch: Arch::Unet, input_size, depth, ..Default::default() }
    }

    /// Issue 13, item 10: `depth = 12` said "input_size 64 must be a positive multiple of 4096".
    #[test]
    fn too_deep_unet_says_depth_is_too_deep_for_the_size() {
        let e = unet(64, 12).validate().unwrap_err().to_string();
        assert!(e.contains("depth 12 is too deep for input_size 64"), "{e}");
        assert!(e.contains("depth can be at most 6"), "{e}");
        let e = unet(32, 6).validate().unwrap_err().to_string();
        assert!(e.contains("too deep") && e.contains("at most 5"), "{e}");
        let e = unet(96, 6).validate().unwrap_err().to_string();
        assert!(e.contains("not a multiple of 64") && e.contains("at most 5"), "{e}");
        // Far past any size: no overflow, still the same message.
        let e = unet(64, 200).validate().unwrap_err().to_string();
        assert!(e.contains("depth 200 is too deep") && e.contains("2^200"), "{e}");
        assert!(unet(64, 4).validate().is_ok());
    }
}
