//! Classification on the synthetic generator: a tiny EfficientNet-Lite0 training writes its run
//! folder and resumes exactly; TTA runs one forward per image; predictions are accepted by the
//! ISIC 2017 scorer; CV writes its folds and summary.
//!
//! Tests that train start from random weights (`pretrained = false`) so they need nothing from
//! the network; `pretrained_lite0_loads` needs the ImageNet weights in `$LESION_WEIGHTS`
//! (default `~/.cache/lesion/weights`) and is skipped with a printed reason when they are
//! absent and `CI` is unset.
use std::path::{Path, PathBuf};

use lesion_cls::config::{BatchNormMode, ClassWeighting, ClsTrainConfig, OptimizerKind};
use lesion_cls::cv::{self, CvRequest, PredictSettings};
use lesion_cls::trainer::{self, ClsTrainRequest};
use lesion_cls::tta::{self, ForwardOut, Pool, TtaMode};
use lesion_core::checkpoint::CheckpointPaths;
use lesion_core::run::{self, RunOptions};
use lesion_data::cache::PreprocessCache;
use lesion_data::labels::{label_rows, LabelledRow};
use lesion_data::synth::{self, SynthConfig};
use tch::{Device, Kind, Tensor};

/// Dropout and drop-connect draw from libtorch's one global generator: tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tiny(epochs: usize, optimizer: OptimizerKind) -> ClsTrainConfig {
    let mut cfg = ClsTrainConfig::default();
    cfg.model.input_size = 64;
    cfg.model.pretrained = false;
    cfg.data.val_fraction = Some(0.25);
    cfg.train.epochs = epochs;
    cfg.train.batch_size = 6;
    cfg.train.freeze_backbone_epochs = 1;
    cfg.train.optimizer = optimizer;
    // Both BatchNorm modes are exercised (batch statistics with RMSProp).
    cfg.train.batchnorm = if optimizer == OptimizerKind::Rmsprop {
        BatchNormMode::Train
    } else {
        BatchNormMode::Frozen
    };
    cfg.train.class_weighting = ClassWeighting::InverseFrequency;
    cfg.tta.replicas = TtaMode::Random(2);
    cfg
}

fn data(dir: &Path, n: usize) -> Vec<LabelledRow> {
    let m = synth::generate(
        &SynthConfig { count: n, width: 64, height: 64, seed: 5 },
        &dir.join("data"),
    )
    .unwrap();
    let (rows, report) = label_rows(&m.rows);
    assert_eq!(report.excluded, 0);
    assert_eq!(report.class_counts().iter().sum::<usize>(), n);
    rows
}

fn request<'a>(
    cfg: ClsTrainConfig,
    rows: &'a [LabelledRow],
    dir: &Path,
    cache: &'a PreprocessCache,
    resume: bool,
) -> ClsTrainRequest<'a> {
    ClsTrainRequest {
        cfg,
        rows,
        cache,
        run: RunOptions { resume, ..RunOptions::new(dir, Device::Cpu, dir.join("no-weights")) },
    }
}

fn weights(path: &Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(path).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

fn assert_same(a: &Path, b: &Path) {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.len(), wb.len());
    for ((na, ta), (nb, tb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        let d = max_abs_diff(ta, tb);
        assert!(d == 0.0, "{na} differs by {d}");
    }
}

/// Trains `short` (ending after `short.train.epochs`), removes `COMPLETE.json` as a kill would
/// leave the run, raises the recorded config's epochs to `epochs` and resumes it (accepting
/// the change); returns the resumed run's outcome.
fn interrupt_and_resume(
    short: ClsTrainConfig,
    epochs: usize,
    rows: &[LabelledRow],
    part: &Path,
    cache: &PreprocessCache,
) -> trainer::ClsTrainOutcome {
    let stopped_at = short.train.epochs;
    trainer::train(request(short.clone(), rows, part, cache, false)).unwrap();
    std::fs::remove_file(part.join(run::COMPLETE_FILE)).unwrap();
    let text = std::fs::read_to_string(part.join(run::CONFIG_FILE))
        .unwrap()
        .replace(&format!("\nepochs = {stopped_at}\n"), &format!("\nepochs = {epochs}\n"));
    std::fs::write(part.join(run::CONFIG_FILE), text).unwrap();
    let mut accepting = request(short, rows, part, cache, true);
    accepting.run.accept_config_change = true;
    trainer::train(accepting).unwrap()
}

#[test]
fn tiny_training_writes_run_folder_and_resumes_exactly() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let rows = data(tmp.path(), 16);
    let cache = PreprocessCache::new(&tmp.path().join("cache"));
    for opt in [OptimizerKind::Adamw, OptimizerKind::Rmsprop, OptimizerKind::Sgd] {
        let full = tmp.path().join(format!("full-{opt:?}"));
        let out = trainer::train(request(tiny(2, opt), &rows, &full, &cache, false)).unwrap();
        assert_eq!(out.completion.epochs, 2);
        for f in [
            run::CONFIG_FILE,
            run::RUN_FILE,
            run::SPLIT_FILE,
            run::METRICS_CSV,
            run::METRICS_JSONL,
            run::COMPLETE_FILE,
        ] {
            assert!(full.join(f).exists(), "{f} missing");
        }
        let records =
            lesion_core::metrics_log::read::<lesion_cls::trainer::ClsEpochRecord>(&full).unwrap();
        assert_eq!(records.len(), 2);
        assert!(records[0].backbone_frozen && !records[1].backbone_frozen);
        assert!(records.iter().all(|r| r.train_loss.is_finite() && r.val_loss.is_some()));

        // Interrupted after epoch 1, then resumed: same weights and optimiser state.
        let part = tmp.path().join(format!("part-{opt:?}"));
        let out = interrupt_and_resume(tiny(1, opt), 2, &rows, &part, &cache);
        assert_eq!(out.completion.epochs, 2);
        assert_same(&CheckpointPaths::new(&full).last, &CheckpointPaths::new(&part).last);
        assert_eq!(
            lesion_core::metrics_log::read::<lesion_cls::trainer::ClsEpochRecord>(&part)
                .unwrap()
                .len(),
            2
        );
    }
}

/// `[adam] cosine_epochs`: each epoch trains at the cosine rate of its index (recorded in the
/// metrics), and a run interrupted mid-schedule resumes to the uninterrupted run's weights.
#[test]
fn cosine_rate_is_followed_per_epoch_and_resumes_exactly() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let rows = data(tmp.path(), 16);
    let cache = PreprocessCache::new(&tmp.path().join("cache"));
    let cosine = |epochs: usize| {
        let mut cfg = tiny(epochs, OptimizerKind::Adamw);
        cfg.adam.lr = 1e-3;
        cfg.adam.min_lr = 1e-5;
        cfg.adam.cosine_epochs = 3;
        cfg
    };
    let full = tmp.path().join("full");
    trainer::train(request(cosine(3), &rows, &full, &cache, false)).unwrap();
    let records =
        lesion_core::metrics_log::read::<lesion_cls::trainer::ClsEpochRecord>(&full).unwrap();
    let rates: Vec<f64> = records.iter().map(|r| r.lr).collect();
    let want: Vec<f64> = (0..3).map(|e| cosine(3).adam.lr_at(e).unwrap()).collect();
    assert_eq!(rates, want, "each epoch runs at its scheduled rate");
    assert!(rates[0] == 1e-3 && rates[1] < rates[0] && rates[2] < rates[1] && rates[2] > 1e-5);

    let part = tmp.path().join("part");
    let out = interrupt_and_resume(cosine(2), 3, &rows, &part, &cache);
    assert_eq!(out.completion.epochs, 3);
    assert_same(&CheckpointPaths::new(&full).last, &CheckpointPaths::new(&part).last);
}

/// `[train] small_set_batch_size` is the batch the trainer uses on a small training split:
/// a run at batch 6 with a small-set batch of 3 ends on the same weights as a run at batch 3,
/// bit for bit, and not on those of a plain batch-6 run.
#[test]
fn small_set_batch_size_is_the_batch_the_trainer_uses() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let rows = data(tmp.path(), 16);
    let cache = PreprocessCache::new(&tmp.path().join("cache"));
    let with_batch = |batch: usize, small: Option<usize>| {
        let mut cfg = tiny(2, OptimizerKind::Adamw);
        cfg.train.batch_size = batch;
        cfg.train.small_set_batch_size = small;
        cfg
    };
    let mut last = Vec::new();
    for (name, cfg) in [
        ("b3", with_batch(3, None)),
        ("b6-small3", with_batch(6, Some(3))),
        ("b6", with_batch(6, None)),
    ] {
        let dir = tmp.path().join(name);
        trainer::train(request(cfg, &rows, &dir, &cache, false)).unwrap();
        last.push(CheckpointPaths::new(&dir).last);
    }
    assert_same(&last[0], &last[1]);
    let (b3, b6) = (weights(&last[0]), weights(&last[2]));
    let differs = b3.iter().zip(&b6).any(|((_, a), (_, b))| max_abs_diff(a, b) > 0.0);
    assert!(differs, "batch 3 and batch 6 trained to the same weights");
}

#[test]
fn predictions_are_accepted_by_the_2017_scorer_and_features_export() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let rows = data(tmp.path(), 9);
    let cache = PreprocessCache::new(&tmp.path().join("cache"));
    let dir = tmp.path().join("run");
    let mut cfg = tiny(1, OptimizerKind::Adam);
    cfg.data.val_fraction = Some(0.0);
    trainer::train(request(cfg, &rows, &dir, &cache, false)).unwrap();
    let model = lesion_cls::model::load_model(&dir, Device::Cpu).unwrap();
    for (mode, pool) in [
        (TtaMode::Fixed8, Pool::Avg),
        (TtaMode::Random(3), Pool::Max),
        (TtaMode::None, Pool::Extreme),
    ] {
        let settings =
            PredictSettings { mode, pool, seed: 0, features: Some(tta::FeatureExport::PerReplica) };
        let pred = cv::predict_rows(
            std::slice::from_ref(&model),
            &rows,
            &cache,
            &settings,
            Device::Cpu,
            false,
        )
        .unwrap();
        assert_eq!(pred.predictions.len(), rows.len());
        let pcsv = tmp.path().join("pred.csv");
        let tcsv = tmp.path().join("truth.csv");
        tta::write_isic2017_csv(&pcsv, &pred.predictions).unwrap();
        tta::write_full_csv(&tmp.path().join("pred.full.csv"), &pred.predictions).unwrap();
        cv::write_truth_csv(&tcsv, &rows).unwrap();
        let ev = lesion_metrics::cls::evaluate_2017(&tcsv, &pcsv).unwrap();
        assert_eq!(ev.count, rows.len());
        let replicas = mode.params(&Default::default(), 0, 0).len() as i64;
        assert_eq!(pred.features[0].size(), vec![replicas, 1280]);
        let fpath = tmp.path().join("f.safetensors");
        let ids: Vec<String> = rows.iter().map(|r| r.row.id.clone()).collect();
        tta::write_features(&fpath, &ids, &pred.features, tta::FeatureExport::PerImage).unwrap();
        let back = Tensor::read_safetensors(&fpath).unwrap();
        assert_eq!(back[0].1.size(), vec![rows.len() as i64, 1280]);
        if pool == Pool::Avg {
            for p in &pred.predictions {
                assert!((p.probs.iter().sum::<f64>() - 1.0).abs() < 1e-5);
            }
        }
    }
}

/// All replicas of one image go through the net as one batch: one forward per image, and the
/// pooled output is exactly the pooling of the per-replica softmax.
#[test]
fn tta_is_one_forward_per_image() {
    // libtorch's generator is global: draws here would move another test's seeded run.
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let images: Vec<(String, Tensor)> = (0..3)
        .map(|i| (format!("img{i}"), Tensor::rand([1, 3, 16, 16], (Kind::Float, Device::Cpu))))
        .collect();
    let mut calls = Vec::new();
    let mut iter = images.iter().map(|(id, t)| Ok((id.clone(), t.shallow_clone())));
    let out = tta::predict_tta(
        &mut iter,
        TtaMode::Fixed8,
        &Default::default(),
        0,
        Pool::Avg,
        16,
        |batch| {
            calls.push(batch.size());
            // Logits that depend on the replica index: log of known probabilities.
            let r = batch.size()[0];
            let p = Tensor::arange(r * 3, (Kind::Float, Device::Cpu)).view([r, 3]) + 1.0;
            ForwardOut {
                logits: (&p / p.sum_dim_intlist(1, true, Kind::Float)).log(),
                features: None,
            }
        },
    )
    .unwrap();
    assert_eq!(calls, vec![vec![8, 3, 16, 16]; 3]);
    // Replica r has probabilities (3r+1, 3r+2, 3r+3) / (9r+6); average over r = 0..8.
    for p in &out.predictions {
        for c in 0..3 {
            let want: f64 =
                (0..8).map(|r| (3 * r + c + 1) as f64 / (9 * r + 6) as f64).sum::<f64>() / 8.0;
            assert!((p.probs[c] - want).abs() < 1e-6, "class {c}: {} vs {want}", p.probs[c]);
        }
    }
}

#[test]
fn cv_writes_folds_oof_and_summary() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let rows = data(tmp.path(), 12);
    let cache = PreprocessCache::new(&tmp.path().join("cache"));
    let mut cfg = tiny(1, OptimizerKind::Adam);
    cfg.data.val_fraction = Some(0.0);
    cfg.tta.replicas = TtaMode::None;
    let out_dir: PathBuf = tmp.path().join("cv");
    let req = |c: ClsTrainConfig| CvRequest {
        cfg: c,
        rows: &rows,
        folds: 2,
        seed: 0,
        cache: &cache,
        run: RunOptions::new(out_dir.clone(), Device::Cpu, tmp.path().join("no-weights")),
    };
    let s = cv::run_cv(req(cfg.clone())).unwrap();
    assert_eq!(s.folds.len(), 2);
    assert_eq!(s.folds.iter().map(|f| f.test_images).sum::<usize>(), rows.len());
    assert!(s.melanoma_auc.is_some());
    for f in [cv::OOF_CSV, cv::OOF_ISIC_CSV, cv::TRUTH_ISIC_CSV, cv::CV_JSON, cv::FOLDS_FILE] {
        assert!(out_dir.join(f).exists(), "{f}");
    }
    lesion_metrics::cls::evaluate_2017(
        &out_dir.join(cv::TRUTH_ISIC_CSV),
        &out_dir.join(cv::OOF_ISIC_CSV),
    )
    .unwrap();
    // Rerunning reuses the complete folds and gives the same summary.
    let again = cv::run_cv(req(cfg)).unwrap();
    assert_eq!(again.folds, s.folds);
}

fn weights_dir() -> PathBuf {
    std::env::var_os("LESION_WEIGHTS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/lesion/weights")
    })
}

#[test]
fn pretrained_lite0_loads_with_a_new_head() {
    // Model initialisation draws from libtorch's global generator (see SERIAL).
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = weights_dir();
    let file = dir.join(lesion_models::efficientnet::LiteVariant::Lite0.weights().file);
    if !file.exists() && std::env::var_os("CI").is_none() {
        eprintln!("skipped: {} absent (set LESION_WEIGHTS or CI=1 to fetch)", file.display());
        return;
    }
    let cfg = ClsTrainConfig::default();
    let model = lesion_cls::model::ClsModel::build(&cfg, Device::Cpu).unwrap();
    let (_, report) = lesion_models::efficientnet::load_imagenet(
        &model.vs,
        "",
        &cfg.model.net_config(lesion_cls::config::CLASSES),
        &dir,
    )
    .unwrap();
    assert!(report.loaded.len() > 100);
    let x = Tensor::rand([2, 3, 224, 224], (Kind::Float, Device::Cpu));
    let (logits, f) = model.eval_with_features(&x).unwrap();
    assert_eq!(logits.size(), vec![2, 3]);
    assert_eq!(f.size(), vec![2, 1280]);
}

/// A user's torchvision-layout ResNet-50 file (here: a seeded random ImageNet-headed net saved
/// as safetensors, as `lesion weights import` writes them) loads into everything but the new
/// 3-class head, and a short fine-tuning with a frozen-then-partly-unfrozen schedule runs
/// through the ordinary trainer and run folder. A file missing a backbone tensor is refused
/// with the file and the variable named.
#[test]
fn resnet50_from_a_users_weights_file_fine_tunes() {
    use lesion_models::classifier::{self as net, ClsArch};
    use lesion_models::torchvision::{ResNet, ResNetDepth, IMAGENET_CLASSES};
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    tch::manual_seed(3);
    let src = tch::nn::VarStore::new(Device::Cpu);
    let _imagenet = ResNet::new(&src.root(), ResNetDepth::R50, IMAGENET_CLASSES);
    let mut named: Vec<(String, Tensor)> = src.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let file = tmp.path().join("resnet50-imagenet.safetensors");
    Tensor::write_safetensors(&named, &file).unwrap();

    let mut cfg = tiny(2, OptimizerKind::Adamw);
    cfg.model.arch = ClsArch::Resnet50;
    cfg.model.input_size = 32;
    cfg.model.weights = Some(file.clone());
    cfg.model.pretrained = true;
    // No validation split: the last epoch is the checkpoint load_model reads.
    cfg.data.val_fraction = Some(0.0);
    cfg.train.freeze_backbone_epochs = 1;
    cfg.train.unfreeze_from_block = 4;
    cfg.train.batchnorm = BatchNormMode::Frozen;
    let model = lesion_cls::model::ClsModel::build(&cfg, Device::Cpu).unwrap();
    let loaded = net::load_pretrained(
        &cfg.model,
        lesion_cls::config::CLASSES,
        &model.net,
        &model.vs,
        tmp.path(),
    )
    .unwrap();
    assert_eq!(loaded, named.len() - 2, "all but fc.weight / fc.bias");
    let vars = model.vs.variables();
    let same = |k: &str| (&vars[k] - &src.variables()[k]).abs().max().double_value(&[]) == 0.0;
    assert!(same("conv1.weight") && same("layer4.2.bn3.running_var"));
    assert_eq!(vars["fc.weight"].size(), [3, 2048]);

    let rows = data(tmp.path(), 12);
    let cache = PreprocessCache::new(&tmp.path().join("cache"));
    let dir = tmp.path().join("run");
    let out = trainer::train(request(cfg.clone(), &rows, &dir, &cache, false)).unwrap();
    assert_eq!(out.completion.epochs, 2);
    let trained = lesion_cls::model::load_model(&dir, Device::Cpu).unwrap();
    // Stages 1-3 stayed frozen through both epochs: still the file's weights.
    let tv = trained.vs.variables();
    assert_eq!(
        (&tv["layer3.5.conv3.weight"] - &src.variables()["layer3.5.conv3.weight"])
            .abs()
            .max()
            .double_value(&[]),
        0.0
    );
    assert!(
        (&tv["layer4.2.conv3.weight"] - &src.variables()["layer4.2.conv3.weight"])
            .abs()
            .max()
            .double_value(&[])
            > 0.0,
        "stage 4 trained in epoch 2"
    );

    let partial: Vec<(String, Tensor)> = named
        .iter()
        .filter(|(k, _)| k != "layer2.1.conv2.weight")
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    let bad = tmp.path().join("partial.safetensors");
    Tensor::write_safetensors(&partial, &bad).unwrap();
    cfg.model.weights = Some(bad.clone());
    let m2 = lesion_cls::model::ClsModel::build(&cfg, Device::Cpu).unwrap();
    let err =
        net::load_pretrained(&cfg.model, lesion_cls::config::CLASSES, &m2.net, &m2.vs, tmp.path())
            .unwrap_err()
            .to_string();
    assert!(err.contains("partial.safetensors") && err.contains("layer2.1.conv2.weight"), "{err}");
    cfg.model.weights = None;
    assert!(cfg.validate().unwrap_err().to_string().contains("model.weights"));
}

/// The collapse regression test: an ImageNet EfficientNet-Lite0 fine-tuned with the PH2 recipe's
/// schedule (AdamW 5e-4, backbone frozen, then blocks 12-15 unfrozen: the schedule under which a
/// model once died silently) on a three-class set must give predictions that differ across
/// images, record a healthy spread every epoch, and complete without warnings; a constant
/// predictor is flagged, and `strict` refuses to complete it. (A randomly initialised net is no
/// test: with BatchNorm on its initial running statistics its evaluation-mode outputs are
/// constant, which the probe rightly reports as collapse.)
#[test]
fn three_class_training_does_not_collapse() {
    let weights = weights_dir();
    let file = weights.join(lesion_models::efficientnet::LiteVariant::Lite0.weights().file);
    if !file.exists() && std::env::var_os("CI").is_none() {
        eprintln!("skipped: {} absent (set LESION_WEIGHTS or CI=1 to fetch)", file.display());
        return;
    }
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let rows = data(tmp.path(), 36);
    let classes: std::collections::BTreeSet<_> = rows.iter().map(|r| r.class).collect();
    assert_eq!(classes.len(), 3, "the synthetic set has all three classes");
    let cache = PreprocessCache::new(&tmp.path().join("cache"));
    let dir = tmp.path().join("run");
    let mut cfg = tiny(4, OptimizerKind::Adamw);
    cfg.model.pretrained = true;
    cfg.adam.lr = 5e-4;
    cfg.adam.weight_decay = 1e-4;
    cfg.train.freeze_backbone_epochs = 2;
    cfg.train.unfreeze_from_block = 12;
    cfg.data.val_fraction = Some(0.25);
    let run = RunOptions::new(&dir, Device::Cpu, &weights);
    let out = trainer::train(ClsTrainRequest { cfg, rows: &rows, cache: &cache, run }).unwrap();
    assert!(out.completion.warnings.is_empty(), "{:?}", out.completion.warnings);
    let records =
        lesion_core::metrics_log::read::<lesion_cls::trainer::ClsEpochRecord>(&dir).unwrap();
    assert_eq!(records.len(), 4);
    for r in &records {
        let s = r.pred_spread.unwrap();
        assert!(s > trainer::COLLAPSE_SPREAD, "epoch {}: spread {s}", r.epoch);
    }
    // Held-out predictions differ across images.
    let model = lesion_cls::model::load_model(&dir, Device::Cpu).unwrap();
    let val = run::validation_rows(rows.clone(), &dir, |r| r.row.id.as_str()).unwrap();
    let settings =
        PredictSettings { mode: TtaMode::None, pool: Pool::Avg, seed: 0, features: None };
    let pred = cv::predict_rows(&[model], &val, &cache, &settings, Device::Cpu, false).unwrap();
    let probs: Vec<[f64; 3]> = pred.predictions.iter().map(|p| p.probs).collect();
    let distinct: std::collections::BTreeSet<[i64; 3]> =
        probs.iter().map(|p| p.map(|v| (v * 1e4).round() as i64)).collect();
    assert!(distinct.len() > val.len() / 2, "{} distinct of {}", distinct.len(), val.len());
    assert!(trainer::prediction_spread(&probs) > trainer::COLLAPSE_SPREAD);
    // A constant predictor is a collapse, and strict refuses to complete it.
    let constant = vec![[0.35, 0.30, 0.35]; 10];
    let problem = trainer::collapse_problem(trainer::prediction_spread(&constant)).unwrap();
    let strict = RunOptions { strict: true, ..RunOptions::new(&dir, Device::Cpu, tmp.path()) };
    let err = lesion_core::fit::check_health(&strict, &[problem]).unwrap_err().to_string();
    assert!(err.contains("--strict") && err.contains("collapsed"), "{err}");
    assert!(lesion_core::fit::check_health(&strict, &[]).is_ok());
}

/// `arch = "xception"` is selected from a config's `[model]` and trains through the ordinary
/// trainer (random weights, so no network: the sklesion weights are tested in
/// `lesion-models/tests/xception_keras.rs`): a frozen first epoch, then only blocks ≥ 14 and the
/// head; the run folder loads back with 2048-d features.
#[test]
fn xception_is_selected_by_config_and_trains() {
    use lesion_core::run::RunConfig;
    use lesion_models::classifier::{ClsArch, Normalization};
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let mut text = tiny(2, OptimizerKind::Adamw).to_toml().unwrap();
    text = text
        .replace("arch = \"efficientnet-lite\"", "arch = \"xception\"")
        .replace("normalization = \"imagenet\"", "normalization = \"pixels255\"")
        .replace("input_size = 64", "input_size = 80");
    let mut cfg: ClsTrainConfig = toml::from_str(&text).unwrap();
    assert_eq!(cfg.model.arch, ClsArch::Xception);
    assert_eq!(cfg.model.normalization, Normalization::Pixels255);
    cfg.data.val_fraction = Some(0.0);
    cfg.train.unfreeze_from_block = 14;
    cfg.validate().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let rows = data(tmp.path(), 12);
    let cache = PreprocessCache::new(&tmp.path().join("cache"));
    let dir = tmp.path().join("run");
    let out = trainer::train(request(cfg.clone(), &rows, &dir, &cache, false)).unwrap();
    assert_eq!(out.completion.epochs, 2);
    let trained = lesion_cls::model::load_model(&dir, Device::Cpu).unwrap();
    let x = Tensor::rand([2, 3, 80, 80], (Kind::Float, Device::Cpu));
    let (logits, f) = trained.eval_with_features(&x).unwrap();
    assert_eq!(logits.size(), vec![2, 3]);
    assert_eq!(f.size(), vec![2, 2048]);
}
