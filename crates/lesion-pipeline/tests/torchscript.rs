//! `lesion export --torchscript`: each net of a bundle traced into `torchscript/<task>-<i>.pt`.
//!
//! * Without Python: the files are listed and hashed in the card (`Bundle::open` verifies
//!   them), one entry per net with its input and output in words, the SVM-head classifier
//!   exported as its backbone; a card without the `torchscript` field (older bundles) reads.
//! * With PyTorch (`$LESION_PYTHON` with torch and safetensors, else `skipped: …`):
//!   `tools/torchscript_check.py` loads each file with `torch.jit.load` and runs fixed random
//!   [0, 1] inputs (batch 1, and batch 2 though traced with batch 1); its outputs must equal
//!   lesion's own (the bundle's loaders, the prediction code's normalisation, sigmoid/softmax)
//!   to [`TOL`], and their graphs name no device (they run wherever their input is).
//!
//! The nets are untrained (random weights, BatchNorm statistics moved off 0/1 by a few
//! training-mode passes): what is checked is the export, not accuracy.
use std::path::{Path, PathBuf};
use std::process::Command;

use lesion_cls::config::ClsTrainConfig;
use lesion_cls::tta::{Pool, TtaMode};
use lesion_core::checkpoint::{save_model, CheckpointPaths};
use lesion_core::run::{self, RunConfig, COMPLETE_FILE, CONFIG_FILE};
use lesion_models::classifier::{ClsNet, ColorConstancy, Normalization};
use lesion_models::Arch;
use lesion_pipeline::bundle::{
    self, Bundle, BundleCard, ClsSettings, DecisionThresholds, ExportRequest, SegSettings, Task,
};
use lesion_pipeline::torchscript::{TOLERANCE, TORCHSCRIPT_DIR};
use lesion_seg::config::SegTrainConfig;
use lesion_seg::dataset::normalize;
use lesion_seg::predict::{tta_probability, PostProcess, SegTta};
use lesion_stack::svm_head::{SvmHead, SVM_HEAD_FILE};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Max |PyTorch − lesion| allowed on every output value.
const TOL: f64 = 1e-5;
/// Training-mode passes that move the BatchNorm running statistics off their initial 0/1.
const WARM_UP_PASSES: usize = 3;
const PYTHON_ENV: &str = "LESION_PYTHON";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/torchscript_check.py")
}

fn complete(dir: &Path) {
    run::write_json(&dir.join(COMPLETE_FILE), &serde_json::json!({"note": "test"})).unwrap();
}

fn seg_run(dir: &Path, arch: Arch) -> PathBuf {
    let mut cfg = SegTrainConfig::default();
    cfg.model.arch = arch;
    cfg.model.input_size = 32;
    cfg.model.base = 4;
    cfg.model.depth = 2;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(CONFIG_FILE), cfg.to_toml().unwrap()).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let net = cfg.model.build(&vs.root()).unwrap();
    let s = cfg.model.input_size;
    tch::no_grad(|| {
        for _ in 0..WARM_UP_PASSES {
            let _ = net
                .forward_t(&(Tensor::rand([2, 3, s, s], (Kind::Float, Device::Cpu)) * 255.0), true);
        }
    });
    save_model(&CheckpointPaths::new(dir).best, &vs).unwrap();
    complete(dir);
    dir.to_path_buf()
}

fn cls_run(
    dir: &Path,
    normalization: Normalization,
    cc: ColorConstancy,
    svm_head: bool,
) -> PathBuf {
    let mut cfg = ClsTrainConfig::default();
    cfg.model.color_constancy = cc;
    cfg.model.pretrained = false;
    cfg.model.input_size = 64;
    cfg.model.normalization = normalization;
    cfg.data.cache_size = Some(64);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(CONFIG_FILE), cfg.to_toml().unwrap()).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let net = ClsNet::build(&cfg.model, 3, &vs.root()).unwrap();
    tch::no_grad(|| {
        for _ in 0..WARM_UP_PASSES {
            let _ = net.features_t(&Tensor::rand([2, 3, 64, 64], (Kind::Float, Device::Cpu)), true);
        }
    });
    save_model(&CheckpointPaths::new(dir).best, &vs).unwrap();
    if svm_head {
        // An untrained head: only its presence matters to the export.
        let head = SvmHead {
            melanoma: None,
            keratosis: None,
            tta: TtaMode::None,
            tta_seed: 0,
            descriptors: 0,
            descriptor_fill: vec![],
            metadata: Default::default(),
            age_fill: 0.0,
            trained_on: vec![],
        };
        run::write_json(&dir.join(SVM_HEAD_FILE), &head).unwrap();
    }
    complete(dir);
    dir.to_path_buf()
}

fn request(seg: Vec<PathBuf>, cls: Vec<PathBuf>, out: PathBuf, torchscript: bool) -> ExportRequest {
    ExportRequest {
        seg_runs: seg,
        cls_runs: cls,
        out,
        segmentation: SegSettings { threshold: 0.5, post: PostProcess::default() },
        classification: ClsSettings {
            tta: TtaMode::None,
            pool: Pool::Avg,
            tta_seed: 0,
            crop: None,
            thresholds: DecisionThresholds::default(),
        },
        notices: vec![],
        torchscript,
        stack: None,
    }
}

/// A batch of `n` random 8-bit RGB images scaled to [0, 1] (what a PyTorch user feeds).
fn unit_images(n: i64, size: i64) -> Tensor {
    Tensor::randint(256, [n, 3, size, size], (Kind::Float, Device::Cpu)) / 255.0
}

/// lesion's own outputs for each traced file's input, by file stem (`seg-0`), through the
/// bundle's loaders and the prediction code.
fn lesion_outputs(b: &Bundle) -> Vec<(String, Tensor)> {
    let mut io = Vec::new();
    let seg = b.load_seg(Device::Cpu).unwrap();
    let cls = b.load_cls(Device::Cpu).unwrap();
    for (i, m) in seg.iter().enumerate() {
        for (suffix, n) in [("", 1), ("2", 2)] {
            let x = unit_images(n, m.cfg.input_size);
            // As `predict_probability` on an image already at the input size, without TTA.
            let y = tch::no_grad(|| {
                tta_probability(&m.net, &normalize(&(&x * 255.0), m.cfg.input_norm()), SegTta::None)
            });
            io.push((format!("seg-{i}.input{suffix}"), x));
            io.push((format!("seg-{i}.output{suffix}"), y));
        }
    }
    for (i, (m, head)) in cls.iter().enumerate() {
        for (suffix, n) in [("", 1), ("2", 2)] {
            let x = unit_images(n, m.cfg.model.input_size);
            let (logits, features) = tch::no_grad(|| m.eval_with_features(&x)).unwrap();
            let y = if head.is_some() { features } else { logits.softmax(-1, Kind::Float) };
            io.push((format!("cls-{i}.input{suffix}"), x));
            io.push((format!("cls-{i}.output{suffix}"), y));
        }
    }
    io
}

fn python() -> PathBuf {
    std::env::var_os(PYTHON_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("python3"))
}

/// `Some(reason)` when `python` cannot import torch and safetensors.
fn python_missing(py: &Path) -> Option<String> {
    match Command::new(py).args(["-c", "import torch, safetensors"]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "torch/safetensors not importable by {} ({}); run scripts/setup.sh",
            py.display(),
            String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
        )),
        Err(e) => Some(format!("cannot run {} ({e}); set {PYTHON_ENV}", py.display())),
    }
}

#[test]
fn torchscript_files_equal_lesion_in_pytorch() {
    tch::manual_seed(7);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let seg = vec![
        seg_run(&t.join("seg-unet"), Arch::Unet),
        seg_run(&t.join("seg-lite"), Arch::LiteUnet),
    ];
    let cls = vec![
        cls_run(&t.join("cls-lite"), Normalization::Imagenet, ColorConstancy::None, false),
        // Colour constancy is traced into the module with the normalisation.
        cls_run(
            &t.join("cls-head"),
            Normalization::Standardize,
            ColorConstancy::ShadesOfGray,
            true,
        ),
    ];
    let out = t.join("bundle");
    let card = bundle::export(&request(seg, cls, out.clone(), true)).unwrap();

    // One entry per net, each file hashed in the card, the bundle verifies.
    let files: Vec<&str> = card.torchscript.iter().map(|e| e.file.as_str()).collect();
    assert_eq!(
        files,
        [
            "torchscript/seg-0.pt",
            "torchscript/seg-1.pt",
            "torchscript/cls-0.pt",
            "torchscript/cls-1.pt"
        ]
    );
    for e in &card.torchscript {
        assert!(card.files.contains_key(&e.file), "{} not hashed", e.file);
        assert!(e.max_abs_diff_at_export <= TOLERANCE, "{e:?}");
        assert!(e.input.contains("[0, 1]"), "{e:?}");
        eprintln!(
            "{}: {} | {} | export check {:.2e}",
            e.file, e.input, e.output, e.max_abs_diff_at_export
        );
    }
    let by_dir = |d: &str| card.torchscript.iter().find(|e| e.model_dir == d).unwrap();
    assert_eq!((by_dir("seg/1").task, by_dir("seg/1").input_size), (Task::Segmentation, 32));
    assert!(by_dir("seg/0").output.contains("N×1×32×32"), "{:?}", by_dir("seg/0"));
    assert!(by_dir("cls/0").output.contains("melanoma, seborrheic_keratosis, nevus"));
    assert!(
        by_dir("cls/1").output.contains("features") && by_dir("cls/1").note.contains("SVM head")
    );
    assert!(by_dir("cls/1").note.contains("shades-of-gray colour constancy then standardize"));
    assert!(!by_dir("cls/0").note.contains("colour constancy"));
    let b = Bundle::open(&out).unwrap();
    assert_eq!(b.card.torchscript, card.torchscript);

    let py = python();
    if let Some(reason) = python_missing(&py) {
        eprintln!("skipped: {reason}");
        return;
    }
    let io = lesion_outputs(&b);
    let io_path = t.join("io.safetensors");
    Tensor::write_safetensors(&io, &io_path).unwrap();
    let report: serde_json::Value = lesion_core::reference::run_script(
        &py,
        &script(),
        &[out.display().to_string(), io_path.display().to_string()],
    )
    .unwrap();
    eprintln!("torchscript_check: {report}");
    let models = report["models"].as_object().unwrap();
    assert_eq!(models.len(), 4, "{report}");
    for (name, r) in models {
        for key in ["max_abs_diff", "max_abs_diff_batch2"] {
            let d = r[key].as_f64().unwrap();
            assert!(d <= TOL, "{name}: {key} {d:e} > {TOL:e}");
        }
        assert_eq!(r["shape_batch2"][0].as_i64(), Some(2), "{name}: batch 2 runs");
        // No device written into the graph: it runs where its input (and map_location) is.
        assert_eq!(r["device_constants"].as_i64(), Some(0), "{name}: {r}");
    }
    assert_eq!(models["cls-0"]["shape"], serde_json::json!([1, 3]));
    assert_eq!(models["seg-0"]["shape_batch2"], serde_json::json!([2, 1, 32, 32]));
}

#[test]
fn bundles_without_torchscript_have_none_and_older_cards_read() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let seg = vec![seg_run(&t.join("seg"), Arch::Unet)];
    let out = t.join("bundle");
    let card = bundle::export(&request(seg, vec![], out.clone(), false)).unwrap();
    assert!(card.torchscript.is_empty());
    assert!(!out.join(TORCHSCRIPT_DIR).exists());
    // A card written before the field existed reads, with no TorchScript files.
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(bundle::CARD_FILE)).unwrap())
            .unwrap();
    json.as_object_mut().unwrap().remove("torchscript").unwrap();
    let old: BundleCard = serde_json::from_value(json).unwrap();
    assert!(old.torchscript.is_empty());
}
