//! A stacked classifier in a model bundle: two tiny cross-validations, an SVM layer and the
//! meta-learner, exported with `--stack`; the bundle alone (its sources moved away) predicts
//! what `lesion stack predict` predicts from the original folders, through files and through
//! the service's in-memory path.
use std::path::Path;

use lesion_cls::config::{BatchNormMode, ClsTrainConfig, OptimizerKind};
use lesion_cls::cv::{self, CvRequest};
use lesion_cls::tta::{Pool, TtaMode};
use lesion_core::run::RunOptions;
use lesion_data::cache::PreprocessCache;
use lesion_data::labels::{label_rows, LabelledRow, LesionClass};
use lesion_data::synth::{self, SynthConfig};
use lesion_pipeline::bundle::{
    self, Bundle, ClsSettings, DecisionThresholds, ExportRequest, SegSettings,
};
use lesion_pipeline::engine::{AbsentClasses, AbsentRule, Engine};
use lesion_seg::predict::PostProcess;
use lesion_stack::cv::SearchConfig;
use lesion_stack::ensemble::MetaConfig;
use lesion_stack::stacking::{self, StackMode, StackTrainRequest, SvmLayerRequest, SvmRows};
use tch::Device;

const IMAGES: usize = 30;
const FOLDS: usize = 3;

fn tiny(seed: u64) -> ClsTrainConfig {
    let mut cfg = ClsTrainConfig::default();
    cfg.model.input_size = 48;
    cfg.model.pretrained = false;
    cfg.data.val_fraction = Some(0.0);
    cfg.train.epochs = 1;
    cfg.train.batch_size = 8;
    cfg.train.seed = seed;
    cfg.train.freeze_backbone_epochs = 0;
    cfg.train.optimizer = OptimizerKind::Adamw;
    cfg.train.batchnorm = BatchNormMode::Frozen;
    cfg.tta.replicas = TtaMode::Random(3);
    cfg
}

fn data(dir: &Path) -> Vec<LabelledRow> {
    let m = synth::generate(
        &SynthConfig { count: IMAGES, width: 48, height: 48, seed: 11 },
        &dir.join("data"),
    )
    .unwrap();
    label_rows(&m.rows).0
}

fn search() -> SearchConfig {
    SearchConfig { draws: 2, folds: 3, ..SearchConfig::default() }
}

#[test]
fn a_stack_bundle_predicts_as_the_stack_without_its_source_folders() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let rows = data(tmp.path());
    let cache = PreprocessCache::new(&tmp.path().join("cache"));
    let src = tmp.path().join("src");
    let (a, svm, stack) = (src.join("cv-a"), src.join("svm-a"), src.join("stack"));
    cv::run_cv(CvRequest {
        cfg: tiny(1),
        rows: &rows,
        folds: FOLDS,
        seed: 3,
        cache: &cache,
        run: RunOptions::new(&a, Device::Cpu, tmp.path().join("no-weights")),
    })
    .unwrap();
    stacking::train_svm_layer(SvmLayerRequest {
        cv_dir: a.clone(),
        rows: &rows,
        out_dir: svm.clone(),
        search: search(),
        svm_rows: SvmRows::Image,
        cache: &cache,
        device: Device::Cpu,
        progress: false,
    })
    .unwrap();
    stacking::train_stack(StackTrainRequest {
        components: vec![a.clone(), svm.clone()],
        rows: &rows,
        mode: StackMode::Oof,
        config: MetaConfig { combinations: 4, search: search(), ..MetaConfig::default() },
        out_dir: stack.clone(),
        cache: &cache,
        device: Device::Cpu,
        progress: false,
    })
    .unwrap();
    let new_rows = &rows[..4];
    let expected = stacking::predict_stack(&stack, new_rows, &cache, Device::Cpu, false).unwrap();
    // Random TTA draws depend on an image's position in the batch: the service answers as a
    // one-image prediction does.
    let alone: Vec<_> = new_rows
        .iter()
        .map(|r| {
            stacking::predict_stack(&stack, std::slice::from_ref(r), &cache, Device::Cpu, false)
                .unwrap()
                .remove(0)
        })
        .collect();

    let out = tmp.path().join("bundle");
    let card = bundle::export(&ExportRequest {
        seg_runs: vec![],
        cls_runs: vec![],
        stack: Some(stack.clone()),
        out: out.clone(),
        segmentation: SegSettings { threshold: 0.5, post: PostProcess::default() },
        classification: ClsSettings {
            tta: TtaMode::None,
            pool: Pool::Avg,
            tta_seed: 0,
            crop: None,
            thresholds: DecisionThresholds::default(),
        },
        notices: vec![],
        torchscript: false,
    })
    .unwrap();
    let entry = card.stack.as_ref().unwrap();
    assert_eq!(entry.components.len(), 2);
    assert_eq!(entry.components[0].kind, "cv");
    assert_eq!(entry.components[1].kind, "svm-layer");
    assert_eq!(entry.components.iter().map(|c| c.nets).sum::<usize>(), 2 * FOLDS);
    // --cls and --stack together are refused.
    let both = bundle::export(&ExportRequest {
        cls_runs: vec![a.join("fold-0")],
        stack: Some(stack.clone()),
        out: tmp.path().join("both"),
        seg_runs: vec![],
        segmentation: SegSettings { threshold: 0.5, post: PostProcess::default() },
        classification: card.classification,
        notices: vec![],
        torchscript: false,
    });
    assert!(both.unwrap_err().to_string().contains("not both"));
    // The record of training images: every image trained some fold net (oof stack); a
    // holdout stack's meta-learner adds its own images, which no component's split holds.
    let ids: Vec<&str> = rows.iter().map(|r| r.row.id.as_str()).collect();
    let seen = Bundle::open(&out).unwrap().seen_in_training(ids.iter().copied()).unwrap().unwrap();
    assert_eq!((seen.ids.len(), seen.unrecorded.len()), (rows.len(), 0));
    let stack_json = stack.join(stacking::STACK_JSON);
    let mut file: stacking::StackFile =
        serde_json::from_slice(&std::fs::read(&stack_json).unwrap()).unwrap();
    file.mode = StackMode::Holdout { meta_ids: vec!["meta-only".into()], folds: 2, seed: 0 };
    std::fs::write(&stack_json, serde_json::to_vec(&file).unwrap()).unwrap();
    let holdout = tmp.path().join("holdout-bundle");
    let holdout_card = bundle::export(&ExportRequest {
        out: holdout.clone(),
        seg_runs: vec![],
        cls_runs: vec![],
        stack: Some(stack.clone()),
        segmentation: card.segmentation,
        classification: card.classification,
        notices: vec![],
        torchscript: false,
    })
    .unwrap();
    assert_eq!(holdout_card.training_images.unwrap().images, rows.len() + 1);
    let b = Bundle::open(&holdout).unwrap();
    assert_eq!(b.seen_in_training(["meta-only", "other"]).unwrap().unwrap().ids, ["meta-only"]);

    // The bundle is self-contained: the source folders are gone.
    std::fs::rename(&src, tmp.path().join("moved")).unwrap();
    let b = Bundle::open(&out).unwrap();
    let pred = tmp.path().join("pred");
    let manifest_rows: Vec<_> = new_rows.iter().map(|r| r.row.clone()).collect();
    let s = bundle::predict(&b, &manifest_rows, &pred, &cache, Device::Cpu, false).unwrap();
    assert_eq!(s.classified, 4);
    let csv = std::fs::read_to_string(pred.join(bundle::CLASSIFICATION_FULL_CSV)).unwrap();
    for (line, e) in csv.lines().skip(1).zip(&expected) {
        let want = format!("{},{:.8},{:.8},{:.8}", e.id, e.probs[0], e.probs[1], e.probs[2]);
        assert_eq!(line, want);
    }
    // Absent classes cannot be taken out of a stack's answer (its meta-learner's outputs are
    // not one distribution): refused by the rule a service checks at start, without the nets.
    let sk = [LesionClass::SeborrheicKeratosis];
    let e = AbsentRule::of(&b).unwrap().check(&sk).unwrap_err().to_string();
    assert!(e.contains("stacked"), "{e}");
    assert_eq!(AbsentRule::of(&b).unwrap().check(&[]).unwrap(), AbsentClasses::none());
    // The service's path (decoded images in memory) gives the same f64.
    let engine = Engine::load(b, Device::Cpu).unwrap();
    assert!(engine.absent_rule().check(&sk).is_err());
    assert!(engine.has_classification());
    for (row, e) in new_rows.iter().zip(&alone) {
        let img = lesion_data::io::load_rgb(&row.row.image_path).unwrap();
        let a = engine.analyze(&row.row.id, &img, &[], None, &AbsentClasses::none()).unwrap();
        let p = a.probabilities.unwrap();
        for (c, (got, want)) in p.iter().zip(&e.probs).enumerate() {
            assert_eq!(got.to_bits(), want.to_bits(), "{} class {c}", row.row.id);
        }
    }
    // A lighter TTA cannot be asked of a stack (its meta-learner was fitted on these replicas).
    let img = lesion_data::io::load_rgb(&new_rows[0].row.image_path).unwrap();
    let err = engine
        .analyze("x", &img, &[], Some(TtaMode::None), &AbsentClasses::none())
        .unwrap_err()
        .to_string();
    assert!(err.contains("own TTA"), "{err}");
}
