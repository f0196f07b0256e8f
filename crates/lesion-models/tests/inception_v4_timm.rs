//! `lesion_models::inception_v4` is timm's `inception_v4` (timm 1.0.31):
//!
//! * layout (no Python): exactly timm's state-dict keys and shapes and its parameter count, from
//!   `tests/fixtures/inception_v4_keys.json` (`tools/fixtures/make_inception_v4.py --keys`);
//!   inputs other than 299² work;
//! * equality (needs timm in `$LESION_PYTHON`, else says `skipped: …`): the generator builds
//!   timm's net with fixed random weights into a temp dir (170 MB, never in the repository), our
//!   net loads that state dict strictly and must give timm's logits and pooled features to
//!   [`TOL`], in evaluation mode and in training mode (batch statistics), and update a
//!   BatchNorm running mean as timm did; as a classifier backbone (`arch = "inception-v4"`,
//!   `weights` = that file, a new 3-class head) it gives timm's pooled features.
use std::path::{Path, PathBuf};
use std::process::Command;

use lesion_models::classifier::{self, ClsArch, ClsModelConfig, ClsNet, Normalization};
use lesion_models::inception_v4::{InceptionV4, IMAGENET_CLASSES, NUM_FEATURES};
use lesion_models::state_dict::load_arrays_strict;
use lesion_models::weights::{read_any, NamedArray};
use tch::{nn::ModuleT, nn::VarStore, Device, Kind, Tensor};

/// Max absolute difference allowed on logits and features.
const TOL: f64 = 1e-4;
const PYTHON_ENV: &str = "LESION_PYTHON";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// timm's (params, [(key, dtype, shape)]).
fn timm_keys() -> (i64, Vec<(String, String, Vec<i64>)>) {
    let path = manifest_dir().join("tests/fixtures/inception_v4_keys.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let shape = k[2].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect();
            (k[0].as_str().unwrap().to_string(), k[1].as_str().unwrap().to_string(), shape)
        })
        .collect();
    (v["params"].as_i64().unwrap(), keys)
}

fn trainable(vs: &VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}

#[test]
fn layout_is_timms() {
    let vs = VarStore::new(Device::Cpu);
    let net = InceptionV4::new(&vs.root(), IMAGENET_CLASSES);
    let (params, keys) = timm_keys();
    // timm's int64 `num_batches_tracked` counters have no tch twin; all else is float32.
    let float_keys: Vec<_> = keys.iter().filter(|(_, dtype, _)| dtype == "float32").collect();
    assert!(keys
        .iter()
        .all(|(n, dtype, _)| dtype == "float32" || n.ends_with("num_batches_tracked")));
    let vars = vs.variables();
    assert_eq!(vars.len(), float_keys.len(), "variable count");
    for (name, _, shape) in &float_keys {
        let v = vars.get(name.as_str()).unwrap_or_else(|| panic!("no variable {name}"));
        assert_eq!(&v.size(), shape, "{name}");
    }
    assert_eq!(trainable(&vs), params, "parameter count");
    assert_eq!(params, 42_679_816);
    // A state dict with timm's float keys loads strictly; a 256² input works (6×6 final map).
    let arrays: Vec<NamedArray> = float_keys
        .iter()
        .map(|(name, _, shape)| {
            let n: i64 = shape.iter().product();
            let fill = if name.ends_with("running_var") { 1.0 } else { 0.01 };
            NamedArray { name: name.clone(), dims: shape.clone(), data: vec![fill; n as usize] }
        })
        .collect();
    load_arrays_strict(&vs, "", &arrays, |_| false, Path::new("synthetic.safetensors")).unwrap();
    let x = Tensor::randn([1, 3, 256, 256], (Kind::Float, Device::Cpu));
    let (map, logits) = tch::no_grad(|| (net.feature_map_t(&x, false), net.forward_t(&x, false)));
    assert_eq!(map.size(), vec![1, NUM_FEATURES, 6, 6]);
    assert_eq!(logits.size(), vec![1, IMAGENET_CLASSES]);
}

fn python() -> PathBuf {
    std::env::var_os(PYTHON_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("python3"))
}

fn named(arrays: &[NamedArray], name: &str) -> Tensor {
    let a = arrays.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("no {name}"));
    Tensor::from_slice(&a.data).view(a.dims.as_slice())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn equals_timm_with_random_weights() {
    let py = python();
    let probe = Command::new(&py).args(["-c", "import timm, safetensors"]).output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            eprintln!(
                "skipped: timm is not importable by {} ({}); run scripts/setup.sh",
                py.display(),
                err.lines().last().unwrap_or("")
            );
            return;
        }
        Err(e) => {
            eprintln!("skipped: cannot run {} ({e}); set {PYTHON_ENV}", py.display());
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let script = manifest_dir().join("../../tools/fixtures/make_inception_v4.py");
    let out = Command::new(&py).arg(&script).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let meta: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    eprintln!("generator: {meta}");

    let vs = VarStore::new(Device::Cpu);
    let net = InceptionV4::new(&vs.root(), IMAGENET_CLASSES);
    let weights = dir.path().join("weights.safetensors");
    // Our reader leaves out integer tensors (the BatchNorm step counters), so the load is
    // strict on both sides with nothing skipped.
    let arrays = read_any(&weights).unwrap();
    let report = load_arrays_strict(&vs, "", &arrays, |_| false, &weights).unwrap();
    assert_eq!(report.loaded.len(), vs.variables().len());
    assert_eq!(trainable(&vs), meta["params"].as_i64().unwrap(), "parameter count");

    let io = read_any(&dir.path().join("io.safetensors")).unwrap();
    let x = named(&io, "input");
    let (logits, features) = tch::no_grad(|| (net.forward_t(&x, false), net.features_t(&x, false)));
    let d_logits = max_abs_diff(&logits, &named(&io, "logits"));
    let d_features = max_abs_diff(&features, &named(&io, "features"));
    assert!(named(&io, "logits").abs().max().double_value(&[]) > 0.1, "vacuous fixture");
    // Training mode: batch statistics, running statistics updated with momentum 0.1.
    let (logits_t, features_t) =
        tch::no_grad(|| (net.forward_t(&x, true), net.features_t(&x, true)));
    let d_logits_t = max_abs_diff(&logits_t, &named(&io, "logits_train"));
    let d_features_t = max_abs_diff(&features_t, &named(&io, "features_train"));
    eprintln!(
        "max |ours - timm|: eval logits {d_logits:.3e}, features {d_features:.3e}; train logits {d_logits_t:.3e}, features {d_features_t:.3e}"
    );
    for d in [d_logits, d_features, d_logits_t, d_features_t] {
        assert!(d <= TOL, "difference {d} > {TOL}");
    }
    // timm ran one training forward, ours above ran two (each updates the running statistics):
    // a fresh copy runs one.
    let vs2 = VarStore::new(Device::Cpu);
    let net2 = InceptionV4::new(&vs2.root(), IMAGENET_CLASSES);
    load_arrays_strict(&vs2, "", &arrays, |_| false, &weights).unwrap();
    let _ = tch::no_grad(|| net2.forward_t(&x, true));
    let probe_name = meta["probe"].as_str().unwrap();
    let ours = vs2.variables()[probe_name].shallow_clone();
    let d_running = max_abs_diff(&ours, &named(&io, "running_mean_after_train"));
    eprintln!("max |ours - timm| on {probe_name} after one training forward: {d_running:.3e}");
    assert!(d_running <= TOL);

    // The same file as the user's ImageNet weights of a 3-class classifier: everything but
    // `last_linear` loads, and the backbone gives timm's pooled features.
    let cfg = ClsModelConfig {
        arch: ClsArch::InceptionV4,
        weights: Some(weights.clone()),
        input_size: meta["side"].as_i64().unwrap(),
        normalization: Normalization::Inception,
        ..Default::default()
    };
    cfg.validate(3, 0).unwrap();
    let vs3 = VarStore::new(Device::Cpu);
    let cls = ClsNet::build(&cfg, 3, &vs3.root()).unwrap();
    let loaded = classifier::load_pretrained(&cfg, 3, &cls, &vs3, dir.path()).unwrap();
    assert_eq!(loaded, vs3.variables().len() - 2, "all but last_linear.{{weight,bias}}");
    assert_eq!(vs3.variables()["last_linear.weight"].size(), vec![3, NUM_FEATURES]);
    let f3 = tch::no_grad(|| cls.features_t(&x, false));
    let d_cls = max_abs_diff(&f3, &named(&io, "features"));
    eprintln!("classifier backbone: max |ours - timm| on features {d_cls:.3e}");
    assert!(d_cls <= TOL);
}
