//! Every net on tch, each built from its config: the paper's segmentation networks from a
//! [`SegNetConfig`], the classifiers (EfficientNet-Lite, ResNet, VGG-16, Inception-v4, Xception
//! backbones with a new head) from a [`classifier::ClsModelConfig`], plus pure-Rust readers for
//! pretrained weights.
//!
//! Layout follows burn's examples: `config.rs` turns a config into a model; each model file
//! holds only its layers and `forward_t`. Losses and optimisers live in
//! `lesion-seg` / `lesion-core`, metrics in `lesion-metrics`. Layers sit on `nn::Path`s named after the source
//! checkpoint's keys (e.g. `encoder.block1_conv1.weight` for the Keras VGG-16), so loading
//! weights needs no remapping tables.

pub mod blocks;
pub mod classifier;
pub mod codella;
pub mod config;
pub mod error;
pub mod lite_unet;
pub mod pretrained;
pub mod unet;
pub mod unet_bn;
pub mod vgg16_unet;
pub mod weights;
pub mod xception;

pub use config::{Arch, InputNorm, SegNetConfig};
pub use error::ModelError;

/// A segmentation network: maps an `N×3×H×W` float image batch (already normalised as its
/// [`InputNorm`] asks) to `N×1×H×W` **logits**. The paper's nets end in a sigmoid; we return
/// the pre-sigmoid logits so that losses can use the numerically stable log-sigmoid forms, and
/// apply the sigmoid at prediction time.
pub type SegNet = Box<dyn tch::nn::ModuleT>;

/// A built net's variables, sorted by name, with their shapes, and its trainable parameter
/// count (what `lesion seg params` prints).
pub struct NetSummary {
    pub variables: Vec<(String, Vec<i64>)>,
    pub trainable_parameters: i64,
}

/// Builds the net of `cfg` on the CPU and summarises it.
pub fn summarize(cfg: &SegNetConfig) -> Result<NetSummary, ModelError> {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = cfg.build(&vs.root())?;
    let mut variables: Vec<(String, Vec<i64>)> =
        vs.variables().into_iter().map(|(n, t)| (n, t.size())).collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(NetSummary { variables, trainable_parameters: trainable_parameter_count(&vs) })
}

/// `(x[:, c] − shift[c]) / scale[c]` for each channel `c` of an `N×C×H×W` batch, where
/// `C == shift.len() == scale.len()` (the callers' RGB constants), by scalar arithmetic on
/// channel views. Invariants the TorchScript export (`lesion export --torchscript`) relies on:
/// no tensor is made from host data (a trace records `Tensor::from_slice` as the zeros it starts
/// from, not the values copied in, so a traced normalisation would subtract zeros) and none is
/// placed on a device (the traced graph runs on whatever device its input is on).
pub fn channel_affine(x: &tch::Tensor, shift: &[f64], scale: &[f64]) -> tch::Tensor {
    let channels: Vec<tch::Tensor> = shift
        .iter()
        .zip(scale)
        .enumerate()
        .map(|(c, (&m, &s))| (x.narrow(1, c as i64, 1) - m) / s)
        .collect();
    tch::Tensor::cat(&channels, 1)
}

/// Number of trainable parameters in a var store.
pub fn trainable_parameter_count(vs: &tch::nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind, Tensor};

    #[test]
    fn channel_affine_is_the_broadcast_normalisation() {
        tch::manual_seed(0);
        let x = Tensor::rand([2, 3, 4, 5], (Kind::Float, Device::Cpu));
        let (shift, scale) = ([0.1, 0.2, 0.3], [0.5, 2.0, 4.0]);
        let want = (&x - Tensor::from_slice(&shift.map(|v| v as f32)).view([1, 3, 1, 1]))
            / Tensor::from_slice(&scale.map(|v| v as f32)).view([1, 3, 1, 1]);
        let got = channel_affine(&x, &shift, &scale);
        assert_eq!(got.size(), x.size());
        assert!((got - want).abs().max().double_value(&[]) < 1e-7);
    }

    fn build(cfg: &SegNetConfig) -> (VarStore, SegNet) {
        let vs = VarStore::new(Device::Cpu);
        let net = cfg.build(&vs.root()).unwrap();
        (vs, net)
    }

    /// Every net maps N×3×S×S to N×1×S×S logits, at reduced width to stay fast.
    #[test]
    fn all_nets_keep_the_spatial_size() {
        for arch in Arch::ALL {
            let cfg = SegNetConfig {
                arch,
                input_size: 32,
                width: 0.125,
                base: 4,
                depth: 3,
                ..Default::default()
            };
            let (_vs, net) = build(&cfg);
            let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
            for train in [false, true] {
                assert_eq!(net.forward_t(&x, train).size(), vec![2, 1, 32, 32], "{arch}");
            }
        }
    }

    /// The paper's unet-bn has ≈10.2 M parameters at full width.
    #[test]
    fn unet_bn_parameter_count() {
        let (vs, _) = build(&SegNetConfig { arch: Arch::UnetBn, ..Default::default() });
        assert_eq!(trainable_parameter_count(&vs), 10_161_633);
    }

    /// Var names are the checkpoint keys the loaders rely on.
    #[test]
    fn vgg_encoder_uses_keras_names() {
        let (vs, _) = build(&SegNetConfig {
            arch: Arch::Vgg16Unet,
            input_size: 32,
            width: 0.125,
            ..Default::default()
        });
        let vars = vs.variables();
        for b in 1..=5 {
            assert!(vars.contains_key(&format!("encoder.block{b}_conv1.weight")));
        }
        assert!(vars.contains_key("encoder.block5_conv3.bias"));
        assert!(!vars.contains_key("encoder.block1_conv3.weight"));
        assert_eq!(vars["encoder.block1_conv1.weight"].size(), vec![8, 3, 3, 3]);
    }

    #[test]
    fn bad_input_size_is_a_config_error() {
        let vs = VarStore::new(Device::Cpu);
        let err = SegNetConfig { arch: Arch::Vgg16Unet, input_size: 120, ..Default::default() }
            .build(&vs.root())
            .err()
            .unwrap();
        assert!(err.to_string().contains("multiple of 16"), "{err}");
        let err = "resnet".parse::<Arch>().unwrap_err();
        assert!(err.to_string().contains("unknown arch"));
    }
}
pub mod efficientnet;
pub mod inception_v4;
pub mod state_dict;
pub mod torchvision;
