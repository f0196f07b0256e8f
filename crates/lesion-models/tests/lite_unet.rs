//! `lite-unet`: shapes for every Lite variant at 192² and 224², an encoder that is the
//! classifier's own backbone (same var names, same feature maps), strict loading of the
//! encoder (a missing tensor is an error naming it), the registry ImageNet weights (skipped
//! without `$LESION_WEIGHTS`), and a few training steps on two synthetic images.
use std::path::{Path, PathBuf};

use lesion_models::efficientnet::{
    load_backbone_arrays, load_imagenet_backbone, load_pth, EfficientNetConfig, EfficientNetLite,
    HeadSpec, LiteVariant, BACKBONE_STRIDE,
};
use lesion_models::lite_unet::{LiteUnet, ENCODER_PREFIX};
use lesion_models::weights::pth::read_pth;
use lesion_models::weights::NamedArray;
use lesion_models::{Arch, SegNetConfig};
use tch::nn::{ModuleT, OptimizerConfig, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

/// Model initialisation and test inputs draw from libtorch's one global generator: the tests
/// take turns, so that a seeded test starts from the same weights on every run.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const WEIGHTS_ENV: &str = "LESION_WEIGHTS";
const SIZES: [i64; 2] = [192, 224];

fn lite_cfg(variant: LiteVariant, input_size: i64) -> SegNetConfig {
    SegNetConfig { arch: Arch::LiteUnet, variant, input_size, ..Default::default() }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Every variable of `vs` (parameters and BatchNorm buffers) as a checkpoint array.
fn arrays_of(vs: &VarStore) -> Vec<NamedArray> {
    let mut out: Vec<NamedArray> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| NamedArray {
            name,
            dims: t.size(),
            data: Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Fills every variable (running statistics included) with random values, so that a var
/// that is not copied or is mapped to the wrong layer shows in the outputs.
fn randomise(vs: &VarStore) {
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            let r = Tensor::rand_like(&t);
            // Variances must stay positive; everything else around 0.
            let v = if name.ends_with("running_var") { r * 0.5 + 0.75 } else { (r - 0.5) * 0.2 };
            t.copy_(&v);
        }
    });
}

fn encoder_vars(vs: &VarStore) -> Vec<String> {
    let mut names: Vec<String> =
        vs.variables().into_keys().filter(|k| k.starts_with(ENCODER_PREFIX)).collect();
    names.sort();
    names
}

#[test]
fn shapes_for_every_variant_at_192_and_224() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for variant in LiteVariant::ALL {
        let skips = variant.skip_channels();
        assert_eq!(skips.len(), 4, "{variant}");
        for size in SIZES {
            let vs = VarStore::new(Device::Cpu);
            let cfg = lite_cfg(variant, size);
            cfg.validate().unwrap();
            let net = LiteUnet::new(&vs.root(), &cfg);
            let x = Tensor::randn([1, 3, size, size], (Kind::Float, Device::Cpu));
            let f = tch::no_grad(|| net.encoder().stage_features_t(&x, false));
            for (i, (s, &c)) in f.skips.iter().zip(&skips).enumerate() {
                let side = size >> (i + 1);
                assert_eq!(s.size(), vec![1, c, side, side], "{variant} @{size} skip {i}");
            }
            let side = size / BACKBONE_STRIDE;
            assert_eq!(
                f.deepest.size(),
                vec![1, variant.backbone_channels(), side, side],
                "{variant} @{size}"
            );
            let y = tch::no_grad(|| net.forward_t(&x, false));
            assert_eq!(y.size(), vec![1, 1, size, size], "{variant} @{size}");
        }
    }
    assert_eq!(LiteVariant::Lite0.skip_channels(), vec![16, 24, 40, 112]);
    assert_eq!(LiteVariant::Lite2.skip_channels(), vec![16, 24, 48, 120]);
    assert_eq!(LiteVariant::Lite2.backbone_channels(), 352);
}

#[test]
fn input_size_must_be_a_multiple_of_32_and_decoder_five_stages() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let err = lite_cfg(LiteVariant::Lite0, 208).validate().unwrap_err().to_string();
    assert!(err.contains("multiple of 32"), "{err}");
    let cfg =
        SegNetConfig { decoder_channels: vec![64, 32, 16], ..lite_cfg(LiteVariant::Lite0, 192) };
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("decoder_channels"), "{err}");
}

/// The encoder is the classifier's backbone under `encoder.`: a classifier's checkpoint loads
/// into it strictly (only the head conv, its BN and `_fc` are left out), and with the same
/// weights it computes the classifier's own maps — its deepest map through the classifier's
/// head conv is the classifier's feature map.
#[test]
fn encoder_is_the_classifiers_backbone() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(7);
    let size = 192;
    let cls_vs = VarStore::new(Device::Cpu);
    let cls_cfg = EfficientNetConfig { image_size: Some(size), ..Default::default() };
    let cls = EfficientNetLite::new(&cls_vs.root(), &cls_cfg);
    randomise(&cls_vs);

    let vs = VarStore::new(Device::Cpu);
    let net = LiteUnet::new(&vs.root(), &lite_cfg(LiteVariant::Lite0, size));
    let report =
        load_backbone_arrays(&vs, ENCODER_PREFIX, &arrays_of(&cls_vs), Path::new("classifier"))
            .unwrap();
    let mut loaded = report.loaded.clone();
    loaded.sort();
    assert_eq!(loaded, encoder_vars(&vs), "every encoder var set, nothing else");
    assert!(report.skipped.iter().any(|k| k == "_conv_head.weight"));
    assert!(report.skipped.iter().any(|k| k == "_fc.weight"));

    let x = Tensor::randn([2, 3, size, size], (Kind::Float, Device::Cpu));
    tch::no_grad(|| {
        let ours = net.encoder().stage_features_t(&x, false);
        let theirs = cls.backbone().stage_features_t(&x, false);
        for (a, b) in ours.skips.iter().zip(&theirs.skips) {
            assert_eq!(max_abs_diff(a, b), 0.0);
        }
        assert_eq!(max_abs_diff(&ours.deepest, &theirs.deepest), 0.0);
        let via_encoder = cls.head_conv_t(&ours.deepest, false);
        assert_eq!(max_abs_diff(&via_encoder, &cls.feature_map_t(&x, false)), 0.0);
    });
}

#[test]
fn a_missing_encoder_tensor_is_an_error_naming_it() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cls_vs = VarStore::new(Device::Cpu);
    let _cls = EfficientNetLite::new(&cls_vs.root(), &EfficientNetConfig::default());
    let missing = "_blocks.3._bn1.running_var";
    let arrays: Vec<NamedArray> =
        arrays_of(&cls_vs).into_iter().filter(|a| a.name != missing).collect();
    let vs = VarStore::new(Device::Cpu);
    let _net = LiteUnet::new(&vs.root(), &lite_cfg(LiteVariant::Lite0, 224));
    let err = load_backbone_arrays(&vs, ENCODER_PREFIX, &arrays, Path::new("x.pth")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("{ENCODER_PREFIX}{missing}")) && msg.contains("x.pth"), "{msg}");

    // A checkpoint of another variant does not fit.
    let other_vs = VarStore::new(Device::Cpu);
    let cfg = EfficientNetConfig { variant: LiteVariant::Lite2, ..Default::default() };
    let _other = EfficientNetLite::new(&other_vs.root(), &cfg);
    let err = load_backbone_arrays(&vs, ENCODER_PREFIX, &arrays_of(&other_vs), Path::new("y"));
    assert!(err.is_err());
}

/// The registry `.pth` of `variant` in `$LESION_WEIGHTS`, or `None` with a `skipped:` line.
fn registry_weights(variant: LiteVariant) -> Option<PathBuf> {
    let Some(dir) = std::env::var_os(WEIGHTS_ENV).map(PathBuf::from) else {
        println!("skipped: {WEIGHTS_ENV} is unset (the {variant} registry weights are needed)");
        return None;
    };
    let pth = dir.join(variant.weights().file);
    if pth.is_file() {
        Some(dir)
    } else {
        println!(
            "skipped: {} is absent (`lesion weights fetch {variant}` makes it)",
            pth.display()
        );
        None
    }
}

/// `pretrained`: the registry weights set every encoder variable to the checkpoint's tensor,
/// and the encoder then reproduces the ImageNet classifier's feature map.
#[test]
fn pretrained_encoder_sets_every_variable() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for variant in LiteVariant::ALL {
        let Some(dir) = registry_weights(variant) else { continue };
        let size = 224;
        let vs = VarStore::new(Device::Cpu);
        let net = LiteUnet::new(&vs.root(), &lite_cfg(variant, size));
        let (pth, report) = load_imagenet_backbone(&vs, ENCODER_PREFIX, variant, &dir).unwrap();
        let mut loaded = report.loaded.clone();
        loaded.sort();
        assert_eq!(loaded, encoder_vars(&vs), "{variant}: every encoder var set");

        let vars = vs.variables();
        for a in read_pth(&pth).unwrap().float_arrays() {
            let Some(v) = vars.get(&format!("{ENCODER_PREFIX}{}", a.name)) else { continue };
            let src = Tensor::from_slice(&a.data).view(a.dims.as_slice());
            assert_eq!(max_abs_diff(v, &src), 0.0, "{variant}: {}", a.name);
        }

        let cls_vs = VarStore::new(Device::Cpu);
        let cls_cfg = EfficientNetConfig { variant, image_size: Some(size), ..Default::default() };
        let cls = EfficientNetLite::new(&cls_vs.root(), &cls_cfg);
        load_pth(&cls_vs, "", HeadSpec::ImageNet, &pth).unwrap();
        let x = Tensor::randn([1, 3, size, size], (Kind::Float, Device::Cpu));
        tch::no_grad(|| {
            let deepest = net.encoder().stage_features_t(&x, false).deepest;
            let d = max_abs_diff(&cls.head_conv_t(&deepest, false), &cls.feature_map_t(&x, false));
            assert_eq!(d, 0.0, "{variant}");
        });
    }
}

/// A few Adam steps on two synthetic images (a bright disc on noise) cut the loss. The tests
/// of this file take turns ([`SERIAL`]), so the seeded start is the same on every run; 50
/// steps (25 did only ~0.55× on one CI-like run before the tests took turns) leave margin for
/// another machine's libtorch kernels.
#[test]
fn a_few_steps_overfit_two_images() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(3);
    let size = 64;
    let vs = VarStore::new(Device::Cpu);
    let net = lite_cfg(LiteVariant::Lite0, size).build(&vs.root()).unwrap();
    let coords = Tensor::arange(size, (Kind::Float, Device::Cpu));
    let disc = |cy: f64, cx: f64, r: f64| {
        let dy = (&coords - cy).square().view([size, 1]);
        let dx = (&coords - cx).square().view([1, size]);
        (dy + dx).le(r * r).to_kind(Kind::Float)
    };
    let masks = Tensor::stack(&[disc(30.0, 34.0, 14.0), disc(20.0, 40.0, 10.0)], 0).unsqueeze(1);
    let noise = Tensor::rand([2, 3, size, size], (Kind::Float, Device::Cpu)) * 0.3;
    let images = noise + &masks * 0.7;
    let mut opt = tch::nn::Adam::default().build(&vs, 1e-3).unwrap();
    let mut losses = Vec::new();
    for _ in 0..50 {
        let logits = net.forward_t(&images, true);
        let loss =
            logits.binary_cross_entropy_with_logits::<Tensor>(&masks, None, None, Reduction::Mean);
        opt.backward_step(&loss);
        losses.push(loss.double_value(&[]));
    }
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(last < 0.5 * first, "loss {first:.4} -> {last:.4}: {losses:?}");
}
