//! Stacking on real (tiny) runs: two cross-validations and an SVM layer on the synthetic
//! generator, then the meta-learner. The `oof` invariant is re-derived here from the files the
//! runs wrote (fold of each prediction, each fold model's recorded training split, the SVM
//! layer's fitted ids), independently of the library's own check; a doctored component whose
//! prediction comes from a model that saw a duplicate of the image is refused; the `holdout`
//! mode reports exactly the overlap computed here.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use lesion_cls::config::{BatchNormMode, ClsTrainConfig, OptimizerKind};
use lesion_cls::cv::{self, CvRequest};
use lesion_cls::trainer::{self, ClsTrainRequest};
use lesion_core::run::{self, RunOptions};
use lesion_data::cache::PreprocessCache;
use lesion_data::labels::{label_rows, LabelledRow};
use lesion_data::synth::{self, SynthConfig};
use lesion_stack::cv::SearchConfig;
use lesion_stack::ensemble::MetaConfig;
use lesion_stack::stacking::{
    self, StackFile, StackMode, StackTrainRequest, SvmLayerRequest, SvmRows,
};
use tch::Device;

const IMAGES: usize = 42;
const FOLDS: usize = 3;
/// Images 0..DUPLICATES are paired into duplicate groups (2k, 2k + 1).
const DUPLICATES: usize = 12;

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
    cfg.tta.replicas = lesion_cls::tta::TtaMode::Random(3);
    cfg
}

fn data(dir: &Path) -> Vec<LabelledRow> {
    let m = synth::generate(
        &SynthConfig { count: IMAGES, width: 48, height: 48, seed: 11 },
        &dir.join("data"),
    )
    .unwrap();
    let (mut rows, report) = label_rows(&m.rows);
    assert_eq!(report.excluded, 0);
    for (i, r) in rows.iter_mut().enumerate().take(DUPLICATES) {
        r.row.group = Some(format!("dup{}", i / 2));
    }
    rows
}

fn search() -> SearchConfig {
    SearchConfig { draws: 2, folds: 3, ..SearchConfig::default() }
}

fn meta_config() -> MetaConfig {
    MetaConfig { combinations: 4, search: search(), ..MetaConfig::default() }
}

fn cv_run(rows: &[LabelledRow], cache: &PreprocessCache, out: &Path, seed: u64) {
    cv::run_cv(CvRequest {
        cfg: tiny(seed),
        rows,
        folds: FOLDS,
        seed: 3,
        cache,
        run: RunOptions::new(out, Device::Cpu, out.join("no-weights")),
    })
    .unwrap();
}

fn read_json<T: for<'de> serde::Deserialize<'de>>(p: &Path) -> T {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Image → fold of its prediction, from the component's `oof-replicas.csv` (column 2).
fn prediction_folds(dir: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(dir.join("oof-replicas.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[0].to_string(), c[1].parse().unwrap())
        })
        .collect()
}

/// Everything fold `k`'s model(s) of a component were fitted on, read from the run files.
fn seen_by(component: &Path, fold: usize) -> BTreeSet<String> {
    let (cv_dir, svm) = if component.join("component.json").exists() {
        let info: serde_json::Value = read_json(&component.join("component.json"));
        (
            PathBuf::from(info["cv"].as_str().unwrap()),
            Some(component.join(format!("svm-fold-{fold}.json"))),
        )
    } else {
        (component.to_path_buf(), None)
    };
    let split: serde_json::Value =
        read_json(&cv_dir.join(format!("fold-{fold}")).join("split.json"));
    let mut seen: BTreeSet<String> = ["train", "val"]
        .iter()
        .flat_map(|k| split[*k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()))
        .collect();
    if let Some(svm) = svm {
        let s: serde_json::Value = read_json(&svm);
        seen.extend(
            s["trained_on"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()),
        );
    }
    seen
}

#[test]
fn oof_stack_never_uses_a_model_that_saw_the_image_and_holdout_reports_overlap() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let rows = data(tmp.path());
    let cache = PreprocessCache::new(&tmp.path().join("cache"));
    let (a, b) = (tmp.path().join("cv-a"), tmp.path().join("cv-b"));
    cv_run(&rows, &cache, &a, 1);
    cv_run(&rows, &cache, &b, 2);
    let svm = tmp.path().join("svm-a");
    stacking::train_svm_layer(SvmLayerRequest {
        cv_dir: a.clone(),
        out_dir: svm.clone(),
        rows: &rows,
        cache: &cache,
        device: Device::Cpu,
        svm_rows: SvmRows::Replica,
        search: search(),
        progress: false,
    })
    .unwrap();

    let out = tmp.path().join("stack");
    let request = |components: Vec<PathBuf>, mode: StackMode, out: PathBuf| StackTrainRequest {
        components,
        rows: &rows,
        mode,
        config: meta_config(),
        out_dir: out,
        cache: &cache,
        device: Device::Cpu,
        progress: false,
    };
    let outcome = stacking::train_stack(request(
        vec![a.clone(), b.clone(), svm.clone()],
        StackMode::Oof,
        out.clone(),
    ))
    .unwrap();
    assert_eq!(outcome.report.images, IMAGES);
    assert_eq!(outcome.report.methods.len(), 5, "3 singles, average, stacked");
    assert!(run::is_complete(&out));
    for f in [
        "stack.json",
        "report.json",
        "report.md",
        "oof-stacked-isic2017.csv",
        "truth-isic2017.csv",
        "roc.png",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }

    // The invariant, from the files: for every stacked image and every component, the model
    // that predicted it saw neither it nor any image of its duplicate group.
    let group_of: BTreeMap<&str, &str> = rows
        .iter()
        .map(|r| (r.row.id.as_str(), r.row.group.as_deref().unwrap_or(r.row.id.as_str())))
        .collect();
    let file: StackFile = read_json(&out.join("stack.json"));
    assert_eq!(file.components.len(), 3);
    let mut checked = 0;
    for c in &file.components {
        let folds = prediction_folds(&c.dir);
        for id in outcome.report.stacked_oof.keys() {
            let seen = seen_by(&c.dir, folds[id]);
            assert!(!seen.is_empty());
            for s in &seen {
                assert_ne!(
                    group_of[s.as_str()],
                    group_of[id.as_str()],
                    "{}: {id} predicted by a model that saw {s}",
                    c.name
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * IMAGES);
    // Duplicate pairs were kept in one fold by the CV.
    let folds_a = prediction_folds(&a);
    for k in 0..DUPLICATES / 2 {
        assert_eq!(folds_a[&rows[2 * k].row.id], folds_a[&rows[2 * k + 1].row.id]);
    }

    // A doctored copy of cv-b: image X's prediction is attributed to a fold whose model saw
    // X's duplicate Y but (after editing its split) not X itself. Refused, naming Y.
    let leaky = tmp.path().join("cv-b-leaky");
    copy_dir(&b, &leaky);
    let folds_b = prediction_folds(&b);
    let (x, y) = (&rows[0].row.id, &rows[1].row.id);
    let other = (folds_b[x] + 1) % FOLDS;
    let split_path = leaky.join(format!("fold-{other}")).join("split.json");
    let mut split: run::Split = read_json(&split_path);
    assert!(split.train.contains(x) && split.train.contains(y));
    split.train.retain(|t| t != x);
    std::fs::write(&split_path, serde_json::to_vec(&split).unwrap()).unwrap();
    let csv = std::fs::read_to_string(leaky.join("oof-replicas.csv")).unwrap();
    let doctored: Vec<String> = csv
        .lines()
        .map(|l| {
            let mut c: Vec<String> = l.split(',').map(String::from).collect();
            if &c[0] == x {
                c[1] = other.to_string();
            }
            c.join(",")
        })
        .collect();
    std::fs::write(leaky.join("oof-replicas.csv"), doctored.join("\n") + "\n").unwrap();
    let err = stacking::train_stack(request(
        vec![a.clone(), leaky],
        StackMode::Oof,
        tmp.path().join("stack-leaky"),
    ))
    .err()
    .expect("leak must be refused")
    .to_string();
    assert!(
        err.contains("oof stacking refused")
            && err.contains(&format!("{x} predicted by fold-{other} which trained on {y}")),
        "{err}"
    );
    assert!(!run::is_complete(&tmp.path().join("stack-leaky")));

    // Holdout: a single model trained on the first 30 images; the meta split is images 24..42.
    let run_dir = tmp.path().join("run");
    let mut cfg = tiny(4);
    cfg.tta.replicas = lesion_cls::tta::TtaMode::Fixed8;
    trainer::train(ClsTrainRequest {
        cfg,
        rows: &rows[..30],
        cache: &cache,
        run: RunOptions::new(run_dir.clone(), Device::Cpu, tmp.path().join("no-weights")),
    })
    .unwrap();
    let meta_ids: Vec<String> = rows[24..].iter().map(|r| r.row.id.clone()).collect();
    let trained: BTreeSet<&str> = rows[..30].iter().map(|r| r.row.id.as_str()).collect();
    let expected_run = meta_ids
        .iter()
        .filter(|id| trained.iter().any(|t| group_of[t] == group_of[id.as_str()]))
        .count();
    assert_eq!(expected_run, 6);
    let hold = tmp.path().join("stack-holdout");
    let outcome = stacking::train_stack(request(
        vec![run_dir.clone(), a.clone()],
        StackMode::Holdout { meta_ids: meta_ids.clone(), folds: 3, seed: 0 },
        hold.clone(),
    ))
    .unwrap();
    assert_eq!(outcome.file.overlap["run"], expected_run);
    assert_eq!(outcome.file.overlap["cv-a"], 0, "out-of-fold predictions never overlap");
    let md = std::fs::read_to_string(hold.join("report.md")).unwrap();
    assert!(md.contains("**Warning**") && md.contains(&format!("run: {expected_run}")), "{md}");

    // Prediction with the oof stack: every component (all fold models) predicts new rows.
    let preds = stacking::predict_stack(&out, &rows[..5], &cache, Device::Cpu, false).unwrap();
    assert_eq!(preds.len(), 5);
    assert!(preds.iter().all(|p| p.probs.iter().all(|v| (0.0..=1.0).contains(v))));
    assert_eq!(
        preds,
        stacking::predict_stack(&out, &rows[..5], &cache, Device::Cpu, false).unwrap()
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).unwrap();
        }
    }
}
