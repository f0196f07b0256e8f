//! The torchvision-layout builders have exactly torchvision 0.26's state-dict keys and shapes
//! (`tools/fixtures/make_torchvision_keys.py`), and a state dict with those keys loads strictly.
use std::path::Path;

use lesion_models::state_dict::load_arrays_strict;
use lesion_models::torchvision::{ResNet, ResNetDepth, Vgg16, IMAGENET_CLASSES};
use lesion_models::weights::NamedArray;
use tch::{nn::ModuleT, nn::VarStore, Device, Kind, Tensor};

fn expected(model: &str) -> (i64, Vec<(String, String, Vec<i64>)>) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/effnet/torchvision_keys.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let m = &v[model];
    let keys = m["keys"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|k| {
            let shape = k[2]
                .as_array()
                .map(|a| a.iter().filter_map(|d| d.as_i64()).collect())
                .unwrap_or_default();
            (
                k[0].as_str().unwrap_or_default().to_string(),
                k[1].as_str().unwrap_or_default().to_string(),
                shape,
            )
        })
        .collect();
    (m["params"].as_i64().unwrap_or_default(), keys)
}

/// Our variables = torchvision's float keys (its int64 `num_batches_tracked` have no tch twin).
fn check_layout(model: &str, vs: &VarStore) {
    let (params, keys) = expected(model);
    let vars = vs.variables();
    let float_keys: Vec<_> = keys.iter().filter(|(_, dtype, _)| dtype == "float32").collect();
    assert!(keys
        .iter()
        .all(|(n, dtype, _)| dtype == "float32" || n.ends_with("num_batches_tracked")));
    assert_eq!(vars.len(), float_keys.len(), "{model}: variable count");
    for (name, _, shape) in &float_keys {
        let v = vars.get(name.as_str()).unwrap_or_else(|| panic!("{model}: no variable {name}"));
        assert_eq!(&v.size(), shape, "{model}: {name}");
    }
    let trainable: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    assert_eq!(trainable, params, "{model}: parameter count");
}

#[test]
fn resnet50_layout_and_strict_load() {
    let vs = VarStore::new(Device::Cpu);
    let net = ResNet::new(&vs.root(), ResNetDepth::R50, IMAGENET_CLASSES);
    check_layout("resnet50", &vs);
    // A synthetic state dict with torchvision's keys/shapes (int counters included) loads.
    let (_, keys) = expected("resnet50");
    let arrays: Vec<NamedArray> = keys
        .iter()
        .filter(|(_, dtype, _)| dtype == "float32")
        .map(|(name, _, shape)| {
            let n: i64 = shape.iter().product();
            NamedArray { name: name.clone(), dims: shape.clone(), data: vec![0.001; n as usize] }
        })
        .collect();
    let report = load_arrays_strict(&vs, "", &arrays, |_| false, Path::new("synthetic.pth"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.loaded.len(), arrays.len());
    let x = Tensor::randn([1, 3, 64, 64], (Kind::Float, Device::Cpu));
    assert_eq!(tch::no_grad(|| net.forward_t(&x, false)).size(), vec![1, 1000]);
    assert_eq!(tch::no_grad(|| net.features_t(&x, false)).size(), vec![1, 2048]);
    // A missing key is an error naming the file and the variable.
    let err = load_arrays_strict(&vs, "", &arrays[1..], |_| false, Path::new("synthetic.pth"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("synthetic.pth") && err.contains("conv1.weight"), "{err}");
}

#[test]
fn resnet101_layout() {
    let vs = VarStore::new(Device::Cpu);
    let _net = ResNet::new(&vs.root(), ResNetDepth::R101, IMAGENET_CLASSES);
    check_layout("resnet101", &vs);
}

#[test]
fn vgg16_layout() {
    let vs = VarStore::new(Device::Cpu);
    let net = Vgg16::new(&vs.root(), IMAGENET_CLASSES);
    check_layout("vgg16", &vs);
    let x = Tensor::randn([1, 3, 32, 32], (Kind::Float, Device::Cpu));
    assert_eq!(tch::no_grad(|| net.forward_t(&x, false)).size(), vec![1, 1000]);
}
