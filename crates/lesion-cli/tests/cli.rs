//! End-to-end tests of the `lesion` binary: the demo, kill -9 and --resume, prediction at the
//! original size, bad input, and (with LESION_PH2) the real PH2 images.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn lesion() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lesion"));
    c.args(["--quiet", "--threads", "1"]);
    c
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn lesion");
    assert!(
        out.status.success(),
        "lesion failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every predicted mask is an 8-bit single-channel 0/255 PNG of exactly its image's size.
fn check_submission(manifest: &Path, pred: &Path) -> usize {
    let m = lesion_data::manifest::Manifest::read_csv(manifest).unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(pred).unwrap() {
        let p = entry.unwrap().path();
        let Some(name) = p.file_name().and_then(|f| f.to_str()) else { continue };
        let Some(id) = name.strip_suffix("_segmentation.png") else { continue };
        let row = m.get(id).unwrap_or_else(|| panic!("{name}: id not in manifest"));
        let img = image::open(&p).unwrap();
        assert_eq!(img.color(), image::ColorType::L8, "{name}");
        assert_eq!((img.width(), img.height()), (row.width, row.height), "{name}");
        assert!(img.to_luma8().pixels().all(|p| p[0] == 0 || p[0] == 255), "{name} is not 0/255");
        n += 1;
    }
    n
}

#[test]
fn demo_runs_end_to_end_on_synthetic_images() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let o = run_ok(
        lesion()
            .args([
                "demo",
                "--images",
                "30",
                "--epochs",
                "2",
                "--size",
                "32",
                "--base",
                "4",
                "--cls-epochs",
                "1",
            ])
            .arg("--out")
            .arg(&out),
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("jaccard") && stdout.contains("outputs in"), "{stdout}");
    // The classification part ran: an ISIC 2017 CSV with one row per held-out image.
    let cls = std::fs::read_to_string(out.join("cls-pred.csv")).unwrap();
    assert!(cls.starts_with("image_id,melanoma,seborrheic_keratosis"), "{cls}");
    assert_eq!(cls.lines().count(), 1 + 6);
    let scores: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("scores.json")).unwrap()).unwrap();
    assert!(scores.to_string().contains("jaccard"), "{scores}");
    assert_eq!(check_submission(&out.join("manifest.csv"), &out.join("pred")), 6);
    assert!(out.join("run/curves.png").exists() && out.join("run/COMPLETE.json").exists());
    assert_eq!(std::fs::read_dir(out.join("pred/overlays")).unwrap().count(), 6);
    assert!(stdout.contains("lesion serve --bundle"), "the demo says what to try next");
    serve_the_demo_bundle(&out);
    // A rerun replaces the demo's own folder…
    run_ok(
        lesion()
            .args([
                "demo", "--no-cls", "--images", "12", "--epochs", "1", "--size", "32", "--base",
                "4",
            ])
            .arg("--out")
            .arg(&out),
    );
    // …but never a folder it did not make.
    let foreign = tmp.path().join("mine");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"keep me").unwrap();
    let o = lesion()
        .args(["demo", "--images", "12", "--epochs", "1"])
        .arg("--out")
        .arg(&foreign)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("mine"));
    assert!(foreign.join("notes.txt").exists());
}

/// `lesion serve` on the demo's bundle, started as a user would (no `env.sh`: the binary finds
/// its libtorch by its RUNPATH): its answer equals `lesion predict --bundle IMAGE`'s, and
/// SIGTERM during a request lets it finish, then exits 0.
fn serve_the_demo_bundle(demo: &Path) {
    use std::io::{BufRead, BufReader};
    let bundle = demo.join("bundle");
    let image = lesion_data::manifest::Manifest::read_csv(&demo.join("manifest.csv")).unwrap().rows
        [0]
    .image_path
    .clone();
    let pred = demo.join("served-check");
    run_ok(lesion().arg("predict").arg("--bundle").arg(&bundle).arg(&image).arg("-o").arg(&pred));
    let mut child = lesion()
        .args(["serve", "--port", "0", "--bundle"])
        .arg(&bundle)
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let base = first.strip_prefix("listening on ").unwrap_or_else(|| panic!("{first}")).to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "binds to loopback by default: {base}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let t0 = Instant::now();
    while agent
        .get(&format!("{base}/health/ready"))
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(t0.elapsed() < Duration::from_secs(120), "not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let bytes = std::fs::read(&image).unwrap();
    let mut r = agent
        .post(&format!("{base}/v1/segment?output=mask"))
        .header("Content-Type", "application/octet-stream")
        .send(&bytes[..])
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let served = image::load_from_memory(&r.body_mut().read_to_vec().unwrap()).unwrap().to_luma8();
    let id = image.file_stem().unwrap().to_string_lossy();
    let written =
        image::open(pred.join("masks").join(format!("{id}_segmentation.png"))).unwrap().to_luma8();
    assert_eq!(served, written, "the service's mask equals lesion predict's");

    // SIGTERM while a slow request (32 TTA replicas) is being worked on: it is answered.
    let url = format!("{base}/v1/classify?tta=32");
    let client = agent.clone();
    let request = std::thread::spawn(move || {
        client
            .post(&url)
            .header("Content-Type", "application/octet-stream")
            .send(&bytes[..])
            .map(|r| r.status().as_u16())
    });
    let t0 = Instant::now();
    loop {
        let mut m = agent.get(&format!("{base}/metrics")).call().unwrap();
        let text = m.body_mut().read_to_string().unwrap();
        if text.lines().any(|l| l == "lesion_inference_requests_in_flight 1") {
            break;
        }
        assert!(!request.is_finished(), "the request ended before it was seen in flight");
        assert!(t0.elapsed() < Duration::from_secs(60), "the request never got in flight");
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: kill(2) on the child this test spawned.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    assert_eq!(request.join().unwrap().unwrap(), 200, "the request in flight at SIGTERM");
    let exit = child.wait().unwrap();
    assert!(exit.success(), "graceful exit after SIGTERM: {exit:?}");
}

fn tiny_config(dir: &Path, epochs: usize) -> PathBuf {
    let p = dir.join("tiny.toml");
    std::fs::write(
        &p,
        format!("[model]\narch = \"unet\"\ninput_size = 32\nbase = 4\ndepth = 2\n[train]\nepochs = {epochs}\nbatch_size = 4\n[adam]\nlr = 0.003\n[data]\nsplit_seed = 7\n"),
    )
    .unwrap();
    p
}

/// The demo's synthetic data set (40 images with masks, a 1-epoch 32² net) in `dir`; returns
/// its manifest, which doubles as a training manifest of images with masks.
fn demo_manifest(dir: &Path) -> PathBuf {
    run_ok(
        lesion()
            .args(["demo", "--no-cls", "--images", "40", "--epochs", "1", "--size", "32"])
            .args(["--base", "4", "--out"])
            .arg(dir),
    );
    dir.join("manifest.csv")
}

#[test]
fn kill_minus_nine_then_resume_completes_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("demo");
    let manifest = demo_manifest(&data);
    let cfg = tiny_config(tmp.path(), 40);
    let run = tmp.path().join("run");
    let mut child = lesion()
        .args(["seg", "train", "--manifest"])
        .arg(&manifest)
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(&run)
        .arg("--cache")
        .arg(tmp.path().join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let last = run.join("checkpoints/last.safetensors");
    let t = Instant::now();
    while !last.exists() && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(last.exists(), "no checkpoint within 2 minutes");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!run.join("COMPLETE.json").exists(), "a killed run must not look complete");
    let epochs_done =
        lesion_core::metrics_log::read::<lesion_seg::trainer::EpochRecord>(&run).unwrap().len();
    assert!(epochs_done < 40);

    run_ok(
        lesion()
            .args(["seg", "train", "--resume"])
            .arg(&run)
            .arg("--cache")
            .arg(tmp.path().join("cache")),
    );
    assert!(run.join("COMPLETE.json").exists());
    let records = lesion_core::metrics_log::read::<lesion_seg::trainer::EpochRecord>(&run).unwrap();
    assert_eq!(records.iter().map(|r| r.epoch).collect::<Vec<_>>(), (1..=40).collect::<Vec<_>>());

    // Predict with a two-model ensemble (same model twice) and score with `seg eval`.
    let pred = tmp.path().join("pred");
    run_ok(
        lesion()
            .args(["seg", "predict", "--model"])
            .arg(&run)
            .arg("--model")
            .arg(&run)
            .arg("--manifest")
            .arg(&manifest)
            .arg("--split-of")
            .arg(&run)
            .arg("--out")
            .arg(&pred),
    );
    assert_eq!(check_submission(&manifest, &pred), 8);
    let o = run_ok(lesion().args(["seg", "eval"]).arg(data.join("truth")).arg(&pred));
    assert!(String::from_utf8_lossy(&o.stdout).contains("threshold_jaccard"));
}

/// `--seed` replaces both seeds of the config (training and validation split), is recorded in
/// the run's config.toml, gives another split than the config's own seed, and is refused with
/// `--resume` (a resumed run keeps its recorded seeds).
#[test]
fn seed_flag_sets_both_seeds_and_is_refused_with_resume() {
    use lesion_core::run::RunConfig;
    let tmp = tempfile::tempdir().unwrap();
    let manifest = demo_manifest(&tmp.path().join("demo"));
    let cfg = tiny_config(tmp.path(), 1); // split_seed = 7, train seed default 0
    let train = |out: &Path, seed: Option<&str>| {
        let mut c = lesion();
        c.args(["seg", "train", "--manifest"]).arg(&manifest).arg("--config").arg(&cfg);
        c.arg("--out").arg(out).arg("--cache").arg(tmp.path().join("cache"));
        if let Some(s) = seed {
            c.args(["--seed", s]);
        }
        run_ok(&mut c);
    };
    let (own, seeded) = (tmp.path().join("own"), tmp.path().join("seeded"));
    train(&own, None);
    train(&seeded, Some("3"));
    let recorded =
        lesion_seg::config::SegTrainConfig::from_toml_file(&seeded.join("config.toml")).unwrap();
    assert_eq!((recorded.train.seed, recorded.data.split_seed), (3, 3));
    let split = |run: &Path| std::fs::read_to_string(run.join("split.json")).unwrap();
    assert_ne!(split(&own), split(&seeded), "another seed must draw another split");

    let o =
        lesion().args(["seg", "train", "--seed", "4", "--resume"]).arg(&seeded).output().unwrap();
    assert!(!o.status.success(), "--seed with --resume must be refused");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--seed"));
}

/// Lesion pooling is for SVM heads on a frozen backbone: fine-tuning refuses it, saying where
/// it belongs, and leaves no run folder behind.
#[test]
fn cls_train_refuses_lesion_pooling() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = demo_manifest(&tmp.path().join("demo"));
    let cfg = tmp.path().join("lesion.toml");
    std::fs::write(
        &cfg,
        "[model]\npretrained = false\ninput_size = 32\npooling = \"global-and-lesion\"\n\n[data]\ncache_size = 32\n",
    )
    .unwrap();
    let out = tmp.path().join("run");
    let o = lesion()
        .args(["cls", "train", "--manifest"])
        .arg(&manifest)
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .arg("--cache")
        .arg(tmp.path().join("cache"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("global-and-lesion") && err.contains("svm-head"), "{err}");
    assert!(!out.exists(), "a refused run leaves no folder");
}

#[test]
fn bad_inputs_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    image::RgbImage::new(8, 8).save(imgs.join("ok.png")).unwrap();
    std::fs::write(imgs.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let o = lesion()
        .args(["data", "import", "folder"])
        .arg(&imgs)
        .arg("-o")
        .arg(tmp.path().join("m.csv"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("broken.png"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run_ok(
        lesion()
            .args(["data", "import", "folder", "--skip-bad"])
            .arg(&imgs)
            .arg("-o")
            .arg(tmp.path().join("m.csv")),
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("broken.png"));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 images"));

    // A config with a typo is refused with the file's name.
    let cfg = tmp.path().join("typo.toml");
    std::fs::write(&cfg, "[train]\nepoch = 2\n").unwrap();
    let o = lesion()
        .args(["seg", "train", "--manifest"])
        .arg(tmp.path().join("m.csv"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("typo.toml"));

    // Wrong-size prediction: the scorer's error names the prediction file.
    let truth = tmp.path().join("truth");
    let pred = tmp.path().join("pred");
    std::fs::create_dir_all(&truth).unwrap();
    std::fs::create_dir_all(&pred).unwrap();
    image::GrayImage::new(8, 8).save(truth.join("ISIC_0000001_segmentation.png")).unwrap();
    image::GrayImage::new(9, 8).save(pred.join("ISIC_0000001_segmentation.png")).unwrap();
    let o = lesion().args(["seg", "eval"]).arg(&truth).arg(&pred).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("ISIC_0000001_segmentation.png"));
}

/// Real data: PH2 imported from its own layout, a very short training, prediction at each
/// image's own size (PH2's sizes vary around 765×572), and the official scores.
#[test]
fn ph2_import_train_predict_eval() {
    let Some(ph2) = std::env::var_os("LESION_PH2") else {
        println!("skipping: LESION_PH2 not set");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let manifest = tmp.path().join("ph2.csv");
    let o = run_ok(lesion().args(["data", "import", "ph2"]).arg(&ph2).arg("-o").arg(&manifest));
    assert!(String::from_utf8_lossy(&o.stdout).contains("150 images"));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("50 rows"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let cfg = tiny_config(tmp.path(), 1);
    let run = tmp.path().join("run");
    run_ok(
        lesion()
            .args(["seg", "train", "--manifest"])
            .arg(&manifest)
            .arg("--config")
            .arg(&cfg)
            .arg("--out")
            .arg(&run)
            .arg("--cache")
            .arg(tmp.path().join("cache")),
    );
    let pred = tmp.path().join("pred");
    run_ok(
        lesion()
            .args(["seg", "predict", "--overlays", "--model"])
            .arg(&run)
            .arg("--manifest")
            .arg(&manifest)
            .arg("--split-of")
            .arg(&run)
            .arg("--out")
            .arg(&pred),
    );
    assert_eq!(check_submission(&manifest, &pred), 30);
}

/// `lesion cls eval` on the fixture scored by the real 2017 scorer: the printed ROC AUCs and
/// the summary JSON match it; a bad prediction file is refused with its line and column.
#[test]
fn cls_eval_matches_the_2017_scorer_fixture() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lesion-metrics/tests/fixtures/cls");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.join("expected_2017.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("s.json");
    let o = run_ok(
        lesion()
            .args(["cls", "eval"])
            .arg(fx.join("gt.csv"))
            .arg(fx.join("pred.csv"))
            .arg("--json")
            .arg(&json)
            .arg("--csv")
            .arg(tmp.path().join("s.csv"))
            .arg("--roc")
            .arg(tmp.path().join("roc.png")),
    );
    let roc = image::open(tmp.path().join("roc.png")).unwrap();
    assert_eq!((roc.width(), roc.height()), (960, 480), "one 480² panel per task");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let auc_line = stdout.lines().find(|l| l.starts_with("ROC AUC")).unwrap();
    let want_mel = expected["tasks"]["melanoma"]["auc"].as_f64().unwrap();
    assert!(auc_line.contains(&format!("{want_mel:.4}")), "{auc_line} vs {want_mel}");
    let got: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(got.to_string().contains("auc"));

    let bad = tmp.path().join("bad.csv");
    let text = std::fs::read_to_string(fx.join("pred.csv")).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[3] = lines[3].rsplit_once(',').map(|(a, _)| format!("{a},1.7")).unwrap();
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let o = lesion().args(["cls", "eval"]).arg(fx.join("gt.csv")).arg(&bad).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.csv") && err.contains('4'), "{err}");
}

/// `cls renormalize --absent seborrheic-keratosis`: melanomas a 3-class net found
/// keratosis-like rank above the nevi once keratoses cannot occur (the PH2 case); the outputs
/// are the ISIC CSV and the full CSV; an unknown class is refused with the valid names.
#[test]
fn cls_renormalize_drops_an_absent_class() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("p.full.csv");
    std::fs::write(
        &full,
        "image_id,melanoma,seborrheic_keratosis,nevus\n\
         a,0.1,0.8,0.1\nb,0.3,0.0,0.7\nc,0.2,0.0,0.8\nd,0.15,0.05,0.8\n",
    )
    .unwrap();
    let truth = tmp.path().join("truth.csv");
    std::fs::write(&truth, "image_id,melanoma,seborrheic_keratosis\na,1,0\nb,1,0\nc,0,0\nd,0,0\n")
        .unwrap();
    let before = run_ok(
        lesion()
            .args(["cls", "average"])
            .arg(&full)
            .arg(&full)
            .arg("--truth")
            .arg(&truth)
            .arg("-o")
            .arg(tmp.path().join("same.csv")),
    );
    assert!(String::from_utf8_lossy(&before.stdout).contains("melanoma ROC AUC: 0.5000"));
    let out = tmp.path().join("r.csv");
    let o = run_ok(
        lesion()
            .args(["cls", "renormalize"])
            .arg(&full)
            .args(["--absent", "seborrheic-keratosis", "--truth"])
            .arg(&truth)
            .arg("-o")
            .arg(&out),
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("melanoma ROC AUC: 1.0000"), "{stdout}");
    assert!(stdout.contains("seborrheic keratosis: no AUC"), "{stdout}");
    let csv = std::fs::read_to_string(&out).unwrap();
    assert!(csv.lines().nth(1) == Some("a,0.50000000,0.00000000"), "{csv}");
    let written = std::fs::read_to_string(tmp.path().join("r.full.csv")).unwrap();
    assert!(written.contains("d,0.15789474,0.00000000,0.84210526"), "{written}");

    let o = lesion()
        .args(["cls", "renormalize"])
        .arg(&full)
        .args(["--absent", "keratosis", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown class 'keratosis'") && err.contains("nevus"), "{err}");

    // The output may not overwrite the input.
    let o = lesion()
        .args(["cls", "renormalize"])
        .arg(&full)
        .args(["--absent", "nevus", "-o"])
        .arg(tmp.path().join("p.csv"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("overwrite the input"));

    // A bundle's decision thresholds are refused on a prediction renormalised by --absent
    // (its prediction.json says so): they serve the three-class outputs.
    let pred = tmp.path().join("pred");
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::copy(&out, pred.join("classification.csv")).unwrap();
    std::fs::write(
        pred.join("prediction.json"),
        r#"{"bundle":"b","images":4,"masks_written":0,"empty_masks":[],"classified":4,
            "seconds":1.0,"absent_classes":["seborrheic-keratosis"]}"#,
    )
    .unwrap();
    let o = lesion()
        .args(["cls", "eval"])
        .arg(&truth)
        .arg(pred.join("classification.csv"))
        .arg("--thresholds-of")
        .arg(tmp.path().join("no-bundle"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("prediction.json") && err.contains("thresholds do not apply"), "{err}");
}

/// `lesion weights import` reads both `.pth` formats (fixtures written by torch.save, see
/// tools/fixtures/make_pth_reader_fixture.py) into safetensors with the same tensors, and
/// refuses an unknown format naming the file.
#[test]
fn weights_import_converts_legacy_and_zip_pth() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lesion-models/tests/fixtures/effnet");
    let tmp = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for name in ["small_legacy.pth", "small_zip.pth"] {
        let out = tmp.path().join(format!("{name}.safetensors"));
        let o = run_ok(
            lesion()
                .args(["weights", "import"])
                .arg(fx.join(name))
                .arg("-o")
                .arg(&out)
                .arg("--verbose"),
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains("tensors"));
        let mut t = tch::Tensor::read_safetensors(&out).unwrap();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        assert!(!t.is_empty());
        outputs.push(t);
    }
    // Both formats hold the same state dict.
    let names =
        |v: &Vec<(String, tch::Tensor)>| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&outputs[0]), names(&outputs[1]));
    let junk = tmp.path().join("junk.pth");
    std::fs::write(&junk, b"not a pickle").unwrap();
    let o = lesion().args(["weights", "import"]).arg(&junk).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("junk.pth"));
}

/// `lesion leaderboard` and `lesion report` as a user runs them: a tiny `seg train` and a sweep
/// folder whose one cell has not started, scored on an external manifest.
#[test]
fn leaderboard_and_report_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let m = lesion_data::synth::generate(
        &lesion_data::synth::SynthConfig { count: 16, width: 48, height: 48, seed: 5 },
        &data,
    )
    .unwrap();
    let manifest = data.join("manifest.csv");
    lesion_data::manifest::Manifest::new(m.rows).write_csv(&manifest).unwrap();
    let config = tiny_config(tmp.path(), 1);
    let cache = tmp.path().join("cache");
    let run = tmp.path().join("seg");
    run_ok(
        lesion()
            .args(["seg", "train", "--manifest"])
            .arg(&manifest)
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&run)
            .arg("--cache")
            .arg(&cache),
    );
    // A sweep of one cell not started, laid out by `lesion sweep`'s own code.
    let sweep = tmp.path().join("sweep");
    let plan_file = tmp.path().join("plan.toml");
    std::fs::write(
        &plan_file,
        format!(
            "[sweep]\nname = \"sw\"\ntask = \"seg-train\"\nbase = {config:?}\n\
             manifests = [{manifest:?}]\n[set]\n\"train.epochs\" = 3\n"
        ),
    )
    .unwrap();
    let plan = lesion_sweep::plan::load(&plan_file, &[]).unwrap();
    lesion_sweep::folder::SweepDir::new(&sweep).write_plan(&plan).unwrap();
    let lb = tmp.path().join("lb.json");
    let o = run_ok(
        lesion()
            .arg("leaderboard")
            .args([&run, &sweep])
            .arg("--external")
            .arg(&manifest)
            .args(["--format", "json", "-o"])
            .arg(&lb)
            .arg("--cache")
            .arg(&cache),
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 computed, 0 reused"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&lb).unwrap()).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    assert_eq!(rows[0]["name"], "seg");
    assert_eq!(rows[0]["external"]["status"], "seg");
    assert_eq!(rows[0]["external"]["images"], 16);
    assert_eq!(rows[1]["state"]["state"], "not-started");
    assert_eq!(rows[1]["config"]["train.epochs"], "3");
    let html = tmp.path().join("report.html");
    let o = run_ok(
        lesion()
            .arg("report")
            .args([&run, &sweep])
            .arg("--external")
            .arg(&manifest)
            .arg("-o")
            .arg(&html)
            .arg("--cache")
            .arg(&cache),
    );
    // The external predictions come from the leaderboard's cache; the validation split is new.
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 computed, 1 reused"), "{o:?}");
    let page = std::fs::read_to_string(&html).unwrap();
    // The validation Jaccard histogram and the run's learning curves.
    assert_eq!(page.matches("<svg").count(), 2);
    assert!(page.contains("<h2>Segmentation</h2>") && page.contains("No complete classifier"));
}
