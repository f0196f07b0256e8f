//! Bundles (export, integrity checks, prediction) and out-of-fold crops (provenance and the
//! invariant), on run folders made here with untrained tiny nets: what is checked is the
//! plumbing and the refusals, not accuracy.
use std::path::{Path, PathBuf};

use lesion_cls::config::ClsTrainConfig;
use lesion_cls::tta::{read_full_csv, without_classes, Pool, TtaMode};
use lesion_core::checkpoint::{save_model, CheckpointPaths};
use lesion_core::run::{self, RunConfig, Split, COMPLETE_FILE, CONFIG_FILE, SPLIT_FILE};
use lesion_data::cache::PreprocessCache;
use lesion_data::labels::LesionClass;
use lesion_data::manifest::{Manifest, ManifestRow};
use lesion_data::synth::{generate, SynthConfig};
use lesion_metrics::cls::OperatingPoint;
use lesion_models::classifier::ClsNet;
use lesion_pipeline::bundle::{
    self, Bundle, ClsSettings, DecisionThresholds, ExportRequest, SegSettings,
};
use lesion_pipeline::seg_informed::{self, CropRequest, CROPS_FILE, MANIFEST_FILE};
use lesion_seg::config::SegTrainConfig;
use lesion_seg::crop::CropSettings;
use lesion_seg::predict::PostProcess;
use tch::{nn::VarStore, Device};

fn seg_run(dir: &Path, train: &[&str]) -> PathBuf {
    let mut cfg = SegTrainConfig::default();
    cfg.model.input_size = 32;
    cfg.model.base = 4;
    cfg.model.depth = 2;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(CONFIG_FILE), cfg.to_toml().unwrap()).unwrap();
    tch::manual_seed(1);
    let vs = VarStore::new(Device::Cpu);
    cfg.model.build(&vs.root()).unwrap();
    save_model(&CheckpointPaths::new(dir).best, &vs).unwrap();
    let split = Split { train: train.iter().map(|s| s.to_string()).collect(), val: vec![] };
    run::write_json(&dir.join(SPLIT_FILE), &split).unwrap();
    run::write_json(&dir.join(COMPLETE_FILE), &serde_json::json!({"best_val_jaccard": 0.5}))
        .unwrap();
    dir.to_path_buf()
}

fn cls_run(dir: &Path) -> PathBuf {
    let mut cfg = ClsTrainConfig::default();
    cfg.model.pretrained = false;
    cfg.model.input_size = 64;
    cfg.data.cache_size = Some(64);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(CONFIG_FILE), cfg.to_toml().unwrap()).unwrap();
    let vs = VarStore::new(Device::Cpu);
    ClsNet::build(&cfg.model, 3, &vs.root()).unwrap();
    save_model(&CheckpointPaths::new(dir).best, &vs).unwrap();
    run::write_json(&dir.join(COMPLETE_FILE), &serde_json::json!({"val_auc": 0.5})).unwrap();
    dir.to_path_buf()
}

fn images(dir: &Path, n: usize) -> Vec<ManifestRow> {
    generate(&SynthConfig { count: n, width: 80, height: 64, seed: 3 }, &dir.join("data"))
        .unwrap()
        .rows
}

fn settings(crop: Option<CropSettings>) -> (SegSettings, ClsSettings) {
    (
        SegSettings { threshold: 0.5, post: PostProcess::default() },
        ClsSettings {
            tta: TtaMode::None,
            pool: Pool::Avg,
            tta_seed: 0,
            crop,
            thresholds: DecisionThresholds::default(),
        },
    )
}

#[test]
fn bundle_round_trip_and_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let seg = seg_run(&t.join("seg"), &["x"]);
    let cls = cls_run(&t.join("cls"));
    let (segmentation, classification) = settings(Some(CropSettings { margin: 0.1 }));
    let out = t.join("bundle");
    let req = ExportRequest {
        seg_runs: vec![seg.clone()],
        cls_runs: vec![cls.clone()],
        out: out.clone(),
        segmentation,
        classification,
        notices: vec!["test notice".into()],
        torchscript: false,
        stack: None,
    };
    let card = bundle::export(&req).unwrap();
    assert_eq!(card.models.len(), 2);
    assert_eq!(card.files.len(), 5, "{:?}", card.files.keys());
    // The images the models saw: the segmentation run's split; the classifier run has none.
    let record = card.training_images.clone().unwrap();
    assert_eq!((record.images, record.unrecorded), (1, vec!["cls/0".to_string()]));
    let listed = std::fs::read_to_string(out.join(bundle::TRAINING_IMAGES_FILE)).unwrap();
    assert_eq!(listed, "x\n");
    // No staging folder is left beside it.
    let left: Vec<_> = std::fs::read_dir(t)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(left.is_empty());
    // A second export into the same folder is refused.
    assert!(bundle::export(&req).is_err());

    let b = Bundle::open(&out).unwrap();
    let rows = images(t, 3);
    let cache = PreprocessCache::new(&t.join("cache"));
    let pred = t.join("pred");
    let s = bundle::predict(&b, &rows, &pred, &cache, Device::Cpu, false).unwrap();
    assert_eq!((s.images, s.masks_written, s.classified), (3, 3, 3));
    let seen = s.seen_in_training.unwrap();
    assert!(seen.ids.is_empty(), "no predicted image was trained on: {seen:?}");
    let seen = b.seen_in_training(["y", "x", rows[0].id.as_str()]).unwrap().unwrap();
    assert_eq!(seen.ids, vec!["x".to_string()]);
    for r in &rows {
        let m = image::open(pred.join("masks").join(format!("{}_segmentation.png", r.id))).unwrap();
        assert_eq!((m.width(), m.height()), (r.width, r.height), "mask at the image's own size");
    }
    let csv = std::fs::read_to_string(pred.join(bundle::CLASSIFICATION_CSV)).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.starts_with("image_id,melanoma,seborrheic_keratosis"));
    // Predicting into a non-empty folder is refused (outputs are never mixed).
    let again = bundle::predict(&b, &rows, &pred, &cache, Device::Cpu, false);
    assert!(again.unwrap_err().to_string().contains("not empty"));

    // Absent classes: with one net, the bundle's in-line renormalisation equals `cls
    // renormalize` of its three-class output (with several, each member is adapted before the
    // average); it says so in prediction.json, and such a prediction cannot calibrate.
    let sk = vec![LesionClass::SeborrheicKeratosis];
    let pred_sk = t.join("pred-no-sk");
    let options = bundle::PredictOptions { absent_classes: sk.clone() };
    let s =
        bundle::predict_with(&b, &rows, &pred_sk, &cache, Device::Cpu, false, &options).unwrap();
    assert_eq!(s.absent_classes, sk);
    let plain = read_full_csv(&pred.join(bundle::CLASSIFICATION_FULL_CSV)).unwrap();
    let want = without_classes(&plain, &sk).unwrap();
    let got = read_full_csv(&pred_sk.join(bundle::CLASSIFICATION_FULL_CSV)).unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.id, w.id);
        assert_eq!(g.probs[1], 0.0, "{g:?}");
        for (a, b) in g.probs.iter().zip(w.probs) {
            assert!((a - b).abs() < 1e-6, "{g:?} vs {w:?}");
        }
    }
    let summary = std::fs::read_to_string(pred_sk.join(bundle::PREDICTION_FILE)).unwrap();
    assert!(summary.contains("seborrheic-keratosis"), "{summary}");
    let err =
        lesion_pipeline::calibrate::calibrate(&lesion_pipeline::calibrate::CalibrateRequest {
            bundle: &out,
            predictions: &pred_sk,
            truth: &t.join("no-truth-needed.csv"),
            melanoma: OperatingPoint::Youden,
            keratosis: OperatingPoint::Youden,
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent classes"), "{err}");
    // Two absent classes leave nothing to rank: refused before anything is written.
    let options = bundle::PredictOptions {
        absent_classes: vec![LesionClass::SeborrheicKeratosis, LesionClass::Nevus],
    };
    let pred_bad = t.join("pred-bad");
    assert!(
        bundle::predict_with(&b, &rows, &pred_bad, &cache, Device::Cpu, false, &options).is_err()
    );
    assert!(!pred_bad.exists(), "a refused prediction leaves no folder");

    // A changed file is refused, naming it.
    let ck = out.join("cls/0/checkpoints/best.safetensors");
    let original = std::fs::read(&ck).unwrap();
    let mut changed = original.clone();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    std::fs::write(&ck, &changed).unwrap();
    let e = Bundle::open(&out).unwrap_err().to_string();
    assert!(e.contains("best.safetensors") && e.contains("changed"), "{e}");
    std::fs::write(&ck, &original).unwrap();
    Bundle::open(&out).unwrap();
    // A foreign file is refused, naming it.
    std::fs::write(out.join("seg/extra.bin"), b"x").unwrap();
    let e = Bundle::open(&out).unwrap_err().to_string();
    assert!(e.contains("extra.bin") && e.contains("foreign"), "{e}");
    std::fs::remove_file(out.join("seg/extra.bin")).unwrap();
    // A missing file is refused, naming it.
    std::fs::remove_file(out.join("seg/0/config.toml")).unwrap();
    let e = Bundle::open(&out).unwrap_err().to_string();
    assert!(e.contains("config.toml") && e.contains("missing"), "{e}");

    // An incomplete run is not exported.
    std::fs::remove_file(seg.join(COMPLETE_FILE)).unwrap();
    let req2 = ExportRequest { out: t.join("bundle2"), ..req };
    let e = bundle::export(&req2).unwrap_err().to_string();
    assert!(e.contains("COMPLETE.json"), "{e}");
    assert!(!t.join("bundle2").exists());
}

#[test]
fn crops_are_out_of_fold_and_a_doctored_run_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let rows = images(t, 4);
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let a = seg_run(&t.join("fold-a"), &ids[..2]);
    let b = seg_run(&t.join("fold-b"), &ids[2..]);
    let out = t.join("crops");
    let req = CropRequest {
        seg_runs: &[a.clone(), b.clone()],
        rows: &rows,
        source_manifest: None,
        out: &out,
        settings: CropSettings { margin: 0.2 },
        tta: None,
        device: Device::Cpu,
        progress: false,
    };
    let s = seg_informed::crop_rows(&req).unwrap();
    assert_eq!(s.images, 4);
    let set = seg_informed::read_and_verify(&out, &rows).unwrap();
    // Each image was segmented only by the fold model that did not train on it.
    assert_eq!(set.images[ids[0]].models, vec![b.clone()]);
    assert_eq!(set.images[ids[3]].models, vec![a.clone()]);
    let m = Manifest::read_csv(&out.join(MANIFEST_FILE)).unwrap();
    assert_eq!(m.rows.len(), 4);
    assert!(m.rows.iter().all(|r| r.image_path.starts_with(out.canonicalize().unwrap())));
    assert!(out.join(CROPS_FILE).exists());

    // Doctor fold b's training list to include an image it segmented: refused, naming both.
    let doctored = Split {
        train: vec![ids[0].to_string(), ids[2].to_string(), ids[3].to_string()],
        val: vec![],
    };
    run::write_json(&b.join(SPLIT_FILE), &doctored).unwrap();
    let e = seg_informed::read_and_verify(&out, &rows).unwrap_err().to_string();
    assert!(e.contains(ids[0]) && e.contains("fold-b"), "{e}");

    // A duplicate-group mate in training counts as training on the image.
    run::write_json(
        &b.join(SPLIT_FILE),
        &Split { train: vec![ids[2].into(), ids[3].into()], val: vec![] },
    )
    .unwrap();
    let mut grouped = rows.clone();
    grouped[0].group = Some("g".into());
    grouped[2].group = Some("g".into());
    let e = seg_informed::read_and_verify(&out, &grouped).unwrap_err().to_string();
    assert!(e.contains(ids[0]), "{e}");

    // An image every model trained on has no out-of-fold mask: refused.
    let all = seg_run(&t.join("all"), &ids);
    let e =
        seg_informed::crop_rows(&CropRequest { seg_runs: &[all], out: &t.join("crops2"), ..req })
            .unwrap_err()
            .to_string();
    assert!(e.contains(ids[0]) && e.contains("trained on"), "{e}");
}

fn weights_dir() -> PathBuf {
    std::env::var_os("LESION_WEIGHTS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/lesion/weights")
    })
}

/// The weights folder, or `None` (the test says it is skipped) when Lite0's file is absent
/// outside CI (CI fetches it).
fn lite0_weights() -> Option<PathBuf> {
    let weights = weights_dir();
    let file = weights.join(lesion_models::efficientnet::LiteVariant::Lite0.weights().file);
    if !file.exists() && std::env::var_os("CI").is_none() {
        eprintln!("skipped: {} absent (set LESION_WEIGHTS or CI=1 to fetch)", file.display());
        return None;
    }
    Some(weights)
}

/// An SVM head on ImageNet Lite0 features: out-of-fold estimate written, features reused
/// exactly, the head bundled and applied to new images.
#[test]
fn svm_head_trains_reuses_features_and_predicts_from_a_bundle() {
    use lesion_data::labels::label_rows;
    use lesion_stack::svm_head::{self, SvmHeadRequest, OOF_CSV, SVM_HEAD_FILE};
    let Some(weights) = lite0_weights() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let manifest = images(t, 24);
    let (rows, _) = label_rows(&manifest);
    assert_eq!(rows.len(), 24);
    let mut cfg = ClsTrainConfig::default();
    cfg.model.input_size = 64;
    cfg.data.cache_size = Some(64);
    let cache = PreprocessCache::new(&t.join("cache"));
    let search = lesion_stack::cv::SearchConfig { draws: 3, folds: 2, ..Default::default() };
    let req = |out: &str, from: Option<PathBuf>| SvmHeadRequest {
        cfg: cfg.clone(),
        rows: &rows,
        out: t.join(out),
        cache: &cache,
        weights_cache: &weights,
        device: Device::Cpu,
        folds: 3,
        fold_seed: 0,
        tta: TtaMode::None,
        tta_seed: 0,
        search,
        descriptors: None,
        metadata: Default::default(),
        features_from: from,
        progress: false,
    };
    let c = svm_head::train_svm_head(req("head", None)).unwrap();
    assert_eq!(c.images, 24);
    assert_eq!(c.fold_auc_melanoma.len(), 3);
    let oof = std::fs::read_to_string(t.join("head").join(OOF_CSV)).unwrap();
    assert_eq!(oof.lines().count(), 25);
    // The same head from the saved features, on one thread (the folds, the head kept and the
    // two tasks then run one after another instead of side by side): identical.
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let again = one_thread
        .install(|| svm_head::train_svm_head(req("head2", Some(t.join("head")))))
        .unwrap();
    assert_eq!(again.pooled_auc_melanoma, c.pooled_auc_melanoma);
    assert_eq!(again.fold_auc_keratosis, c.fold_auc_keratosis);
    for file in [SVM_HEAD_FILE, OOF_CSV] {
        assert_eq!(
            std::fs::read(t.join("head").join(file)).unwrap(),
            std::fs::read(t.join("head2").join(file)).unwrap(),
            "{file}"
        );
    }
    // Features of another TTA are refused.
    let mut other = req("head3", Some(t.join("head")));
    other.tta = TtaMode::Fixed8;
    assert!(svm_head::train_svm_head(other).unwrap_err().to_string().contains("TTA"));

    let (segmentation, classification) = settings(None);
    let out = t.join("bundle");
    bundle::export(&ExportRequest {
        seg_runs: vec![],
        cls_runs: vec![t.join("head")],
        out: out.clone(),
        segmentation,
        classification,
        notices: vec![],
        torchscript: false,
        stack: None,
    })
    .unwrap();
    let b = Bundle::open(&out).unwrap();
    assert!(b.card.files.contains_key("cls/0/svm-head.json"));
    let pred = t.join("pred");
    let s = bundle::predict(&b, &manifest[..4], &pred, &cache, Device::Cpu, false).unwrap();
    assert_eq!((s.classified, s.masks_written), (4, 0));
    // The bundle's probabilities are the head's own on those images.
    let model = lesion_cls::model::load_model(&t.join("head"), Device::Cpu).unwrap();
    let head = svm_head::read_head(&t.join("head")).unwrap().unwrap();
    let direct = svm_head::predict_with_head(
        &model,
        &head,
        &rows[..4],
        lesion_cls::model::Pixels::Cache(&cache),
        None,
        Device::Cpu,
        false,
    )
    .unwrap();
    let csv = std::fs::read_to_string(pred.join(bundle::CLASSIFICATION_CSV)).unwrap();
    for (line, p) in csv.lines().skip(1).zip(&direct) {
        let mel: f64 = line.split(',').nth(1).unwrap().parse().unwrap();
        assert!((mel - p.probs[0]).abs() < 1e-6, "{line} vs {:?}", p.probs);
    }
}

/// Features pooled by the lesion (`[model] pooling = "global-and-lesion"`): the global half is
/// the plain head's features, the lesion half is the mask's own average; a row without a mask
/// is refused by name; the head's bundle draws the mask from its segmentation net, and the
/// service's in-memory path gives the file path's probabilities bit for bit.
#[test]
fn lesion_pooled_head_uses_masks_and_bundles_with_its_segmentation() {
    use lesion_data::labels::label_rows;
    use lesion_models::classifier::FeaturePooling;
    use lesion_pipeline::engine::{AbsentClasses, Engine};
    use lesion_stack::svm_head::{self, SvmHeadRequest, FEATURES_FILE};
    let Some(weights) = lite0_weights() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let manifest = images(t, 16);
    assert!(manifest.iter().all(|r| r.mask_path.is_some()), "synthetic rows carry masks");
    let (rows, _) = label_rows(&manifest);
    let cache = PreprocessCache::new(&t.join("cache"));
    let search = lesion_stack::cv::SearchConfig { draws: 2, folds: 2, ..Default::default() };
    let head = |out: &str, pooling: FeaturePooling, rows: &[lesion_data::labels::LabelledRow]| {
        let mut cfg = ClsTrainConfig::default();
        cfg.model.input_size = 64;
        cfg.data.cache_size = Some(64);
        cfg.model.pooling = pooling;
        svm_head::train_svm_head(SvmHeadRequest {
            cfg,
            rows,
            out: t.join(out),
            cache: &cache,
            weights_cache: &weights,
            device: Device::Cpu,
            folds: 2,
            fold_seed: 0,
            // Quarter turns and flips: the mask must turn with the pixels.
            tta: TtaMode::Fixed8,
            tta_seed: 0,
            search,
            descriptors: None,
            metadata: Default::default(),
            features_from: None,
            progress: false,
        })
    };
    head("global", FeaturePooling::Global, &rows).unwrap();
    head("lesion", FeaturePooling::GlobalAndLesion, &rows).unwrap();
    let features = |dir: &str| {
        let path = t.join(dir).join(FEATURES_FILE);
        let mut ts = tch::Tensor::read_safetensors(&path).unwrap();
        ts.remove(0).1
    };
    let (g, l) = (features("global"), features("lesion"));
    let width = g.size()[1];
    assert_eq!(l.size(), vec![16, 2 * width], "global and lesion halves");
    let max_abs = |a: &tch::Tensor, b: &tch::Tensor| (a - b).abs().max().double_value(&[]);
    assert!(max_abs(&l.narrow(1, 0, width), &g) < 1e-4, "the global half is the plain pooling");
    assert!(
        max_abs(&l.narrow(1, width, width), &g) > 1e-2,
        "the lesion half is not the global average (the synthetic lesions are partial)"
    );
    assert!(l.isfinite().all().int64_value(&[]) == 1);

    // A row without a mask is refused, naming it.
    let mut unmasked = rows.clone();
    unmasked[5].row.mask_path = None;
    let e = head("nomask", FeaturePooling::GlobalAndLesion, &unmasked).unwrap_err().to_string();
    assert!(e.contains(&unmasked[5].row.id) && e.contains("mask"), "{e}");

    // Bundled without segmentation nets: refused, naming the run and the reason.
    let (segmentation, classification) = settings(Some(CropSettings { margin: 0.2 }));
    let seg = seg_run(&t.join("seg"), &["other"]);
    let export = |out: &str, seg_runs: Vec<PathBuf>| {
        bundle::export(&ExportRequest {
            seg_runs,
            cls_runs: vec![t.join("lesion")],
            out: t.join(out),
            segmentation,
            classification,
            notices: vec![],
            torchscript: false,
            stack: None,
        })
        .unwrap();
        Bundle::open(&t.join(out)).unwrap()
    };
    let e = bundle::export(&ExportRequest {
        seg_runs: vec![],
        cls_runs: vec![t.join("lesion")],
        out: t.join("lone"),
        segmentation,
        classification: ClsSettings { crop: None, ..classification },
        notices: vec![],
        torchscript: false,
        stack: None,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("lesion") && e.contains("--seg"), "{e}");
    assert!(!t.join("lone").exists());
    // With its segmentation: files and the service's in-memory path agree exactly.
    let b = export("bundle", vec![seg]);
    let pred = t.join("pred");
    let s = bundle::predict(&b, &manifest[..3], &pred, &cache, Device::Cpu, false).unwrap();
    assert_eq!((s.classified, s.masks_written), (3, 3));
    let engine = Engine::load(b, Device::Cpu).unwrap();
    assert!(engine.needs_masks());
    let csv = std::fs::read_to_string(pred.join(bundle::CLASSIFICATION_FULL_CSV)).unwrap();
    for (line, r) in csv.lines().skip(1).zip(&manifest[..3]) {
        let img = lesion_data::io::load_rgb(&r.image_path).unwrap();
        let a = engine.analyze(&r.id, &img, &[], None, &AbsentClasses::none()).unwrap();
        let p = a.probabilities.unwrap();
        assert_eq!(line, format!("{},{:.8},{:.8},{:.8}", r.id, p[0], p[1], p[2]));
    }
}
