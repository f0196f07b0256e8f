//! Outputs and run folders under special files, races and failures, through the `lesion`
//! binary: `-o` through a link, a pipe or /dev/null; `--threads` past the bound; two trainings
//! in one folder; a resume of a run still training; kill -9 then resume; predictions that
//! appear whole or not at all; a failed start that leaves no half-made run.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lesion_data::manifest::{Manifest, ManifestRow};

/// How long a tiny training may take to reach a state the test waits for.
const WAIT: Duration = Duration::from_secs(180);

fn lesion() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lesion"));
    c.args(["--quiet", "--threads", "1"]);
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn lesion");
    assert!(
        out.status.success(),
        "lesion failed\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn run_fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn lesion");
    assert!(!out.status.success(), "lesion should have failed\nstdout:\n{}", text(&out.stdout));
    text(&out.stderr)
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ready() {
        assert!(t.elapsed() < WAIT, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends a signal (`-STOP`, `-CONT`, `-KILL`, `-TERM`) through libc: no dependency on procps.
fn signal(pid: u32, sig: &str) {
    let number = match sig {
        "-STOP" => libc::SIGSTOP,
        "-CONT" => libc::SIGCONT,
        "-KILL" => libc::SIGKILL,
        "-TERM" => libc::SIGTERM,
        other => panic!("unknown signal {other}"),
    };
    // SAFETY: kill(2) with a pid this test spawned; no memory is shared.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, number) }, 0, "kill {sig} {pid}");
}

/// `n` synthetic images with masks and their manifest `dir/manifest.csv`.
fn synthetic(dir: &Path, n: usize) -> (PathBuf, Vec<ManifestRow>) {
    let cfg = lesion_data::synth::SynthConfig { count: n, width: 64, height: 64, seed: 5 };
    let rows = lesion_data::synth::generate(&cfg, &dir.join("data")).unwrap().rows;
    let manifest = dir.join("manifest.csv");
    Manifest::new(rows.clone()).write_csv(&manifest).unwrap();
    (manifest, rows)
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

fn train_cmd(manifest: &Path, cfg: &Path, out: &Path, cache: &Path) -> Command {
    let mut c = lesion();
    c.args(["seg", "train", "--manifest"])
        .arg(manifest)
        .arg("--config")
        .arg(cfg)
        .arg("--out")
        .arg(out)
        .arg("--cache")
        .arg(cache);
    c
}

/// Spawned with stderr in a file (a pipe nobody reads could fill and block the child).
fn spawn_logged(mut cmd: Command, log: &Path) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .unwrap()
}

/// Children killed when the test ends, however it ends (a stopped one would wait forever).
struct Reaped(Vec<Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for d in [dir.to_path_buf(), dir.join("checkpoints")] {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap().to_string_lossy().contains(".tmp-") {
                found.push(p);
            }
        }
    }
    found
}

/// Issue 13, item 1: `-o` through a symbolic link writes the link's target and keeps the
/// link; a FIFO gets the CSV and stays a FIFO; /dev/null stays a character device; a folder
/// is refused by name.
#[cfg(unix)]
#[test]
fn import_output_follows_links_and_writes_through_pipes_and_devices() {
    use std::os::unix::fs::{symlink, FileTypeExt};
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    for name in ["a.png", "b.png"] {
        image::RgbImage::new(8, 8).save(imgs.join(name)).unwrap();
    }
    let import = |out: &Path| {
        let mut c = lesion();
        c.args(["data", "import", "folder"]).arg(&imgs).arg("-o").arg(out);
        c
    };

    let real_dir = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&real_dir).unwrap();
    let real = real_dir.join("real.csv");
    std::fs::write(&real, b"old").unwrap();
    let link = tmp.path().join("link.csv");
    symlink(&real, &link).unwrap();
    run_ok(&mut import(&link));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "link replaced");
    // Readable both through the link and at the target's own place.
    assert_eq!(Manifest::read_csv(&link).unwrap().rows.len(), 2);
    let rows = Manifest::read_csv(&real).unwrap().rows;
    assert!(rows.iter().all(|r| r.image_path.exists()), "{rows:?}");

    let fifo = tmp.path().join("pipe.csv");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    run_ok(&mut import(&fifo));
    let csv = reader.join().unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "FIFO replaced");

    let folder = tmp.path().join("out.csv");
    std::fs::create_dir_all(&folder).unwrap();
    let err = run_fails(&mut import(&folder));
    assert!(err.contains("out.csv") && err.contains("is a folder"), "{err}");

    // The system's /dev/null, only while it is what it should be (the FIFO above took the
    // same path through the writer, so this cannot be the first write that goes wrong).
    let dev_null = Path::new("/dev/null");
    let is_char = || std::fs::metadata(dev_null).map(|m| m.file_type().is_char_device());
    if is_char().unwrap_or(false) {
        run_ok(&mut import(dev_null));
        assert!(is_char().unwrap_or(false), "/dev/null was replaced");
    }
}

/// Issue 13, item 2: `--threads` past the bound is refused with a message, before any work.
#[test]
fn threads_past_the_bound_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lesion"))
        .args(["--quiet", "--threads", "100000", "data", "import", "folder"])
        .arg(tmp.path())
        .arg("-o")
        .arg(tmp.path().join("m.csv"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("--threads 100000") && err.contains("logical cores"), "{err}");
    assert!(!tmp.path().join("m.csv").exists());
}

/// Issue 13, items 3 and 6: two `seg train` into one folder at once: exactly one trains, the
/// other is refused naming the folder and the holder's pid; `--resume` while it trains is
/// refused; after kill -9 a prediction from the killed run warns that it is incomplete, and
/// `--resume` takes the lock over, removes the temp files left behind and completes. Then
/// `seg predict` is all or nothing and never mixes into a non-empty folder.
#[cfg(unix)]
#[test]
fn one_writer_per_run_folder_and_whole_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, rows) = synthetic(tmp.path(), 32);
    let cfg = tiny_config(tmp.path(), 12);
    let run = tmp.path().join("run");
    let cache = tmp.path().join("cache");
    let logs = [tmp.path().join("a.log"), tmp.path().join("b.log")];
    let mut children = Reaped(
        logs.iter()
            .map(|log| spawn_logged(train_cmd(&manifest, &cfg, &run, &cache), log))
            .collect(),
    );
    let lock = run.join(lesion_core::lock::LOCK_FILE);
    let holder_pid = || -> Option<u32> { std::fs::read_to_string(&lock).ok()?.trim().parse().ok() };
    wait_for("a run to start", || run.join("run.json").exists() && holder_pid().is_some());
    let holder = holder_pid().unwrap();
    let h = children.0.iter().position(|c| c.id() == holder).expect("the holder is one of ours");
    // Frozen, the holder keeps its lock and cannot finish while the others are tried.
    signal(holder, "-STOP");
    let loser = &mut children.0[1 - h];
    let status = loser.wait().unwrap();
    let err = std::fs::read_to_string(&logs[1 - h]).unwrap();
    assert!(!status.success(), "both trainings ran: {err}");
    assert!(
        err.contains(&run.display().to_string())
            && err.contains("in use")
            && err.contains(&holder.to_string()),
        "{err}"
    );
    let mut resume = lesion();
    resume.args(["seg", "train", "--resume"]).arg(&run).arg("--cache").arg(&cache);
    let err = run_fails(&mut resume);
    assert!(err.contains("in use") && err.contains(&holder.to_string()), "{err}");

    // Let it train to a checkpoint, then kill -9 it (a fake temp file of a checkpoint write
    // the kill cut short is left beside it).
    signal(holder, "-CONT");
    let best = run.join("checkpoints/best.safetensors");
    wait_for("a checkpoint", || best.exists() && run.join("checkpoints/last.safetensors").exists());
    children.0[h].kill().unwrap(); // SIGKILL
    children.0[h].wait().unwrap();
    assert!(!run.join("COMPLETE.json").exists(), "the run ended before the kill");
    let half = run.join("checkpoints/.last.safetensors.tmp-999999");
    std::fs::write(&half, b"half a checkpoint").unwrap();

    let early = tmp.path().join("early");
    let mut predict_early = lesion();
    predict_early
        .args(["seg", "predict", "--model"])
        .arg(&run)
        .arg("--manifest")
        .arg(&manifest)
        .arg("--out")
        .arg(&early);
    let o = run_ok(&mut predict_early);
    let warning = text(&o.stderr);
    assert!(
        warning.contains("warning")
            && warning.contains(&run.display().to_string())
            && warning.contains("COMPLETE.json"),
        "{warning}"
    );

    run_ok(&mut resume);
    assert!(run.join("COMPLETE.json").exists());
    assert!(temp_files(&run).is_empty(), "{:?}", temp_files(&run));

    // A bad image in the middle: nothing that looks usable is left.
    let mut bad_rows = rows.clone();
    let broken = tmp.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    bad_rows[rows.len() / 2].image_path = broken;
    let bad_manifest = tmp.path().join("bad.csv");
    Manifest::new(bad_rows).write_csv(&bad_manifest).unwrap();
    let pred = tmp.path().join("preds").join("pred");
    std::fs::create_dir_all(pred.parent().unwrap()).unwrap();
    let predict = |manifest: &Path| {
        let mut c = lesion();
        c.args(["seg", "predict", "--overlays", "--model"])
            .arg(&run)
            .arg("--manifest")
            .arg(manifest)
            .arg("--out")
            .arg(&pred);
        c
    };
    let err = run_fails(&mut predict(&bad_manifest));
    assert!(err.contains("broken.png"), "{err}");
    assert!(!pred.exists(), "a failed prediction left a folder");
    assert_eq!(std::fs::read_dir(pred.parent().unwrap()).unwrap().count(), 0, "staging left");

    // An empty folder is fine; a non-empty one is refused and left as it was.
    std::fs::create_dir_all(&pred).unwrap();
    let o = run_ok(&mut predict(&manifest));
    assert!(!text(&o.stderr).contains("incomplete"), "a complete run is not warned about");
    let masks = std::fs::read_dir(&pred).unwrap().count();
    assert_eq!(masks, rows.len() + 1, "masks and the overlays folder");
    let err = run_fails(&mut predict(&manifest));
    assert!(err.contains("not empty") && err.contains("pred"), "{err}");
    assert_eq!(std::fs::read_dir(&pred).unwrap().count(), masks);
}

/// Issue 13, item 6: a start that fails after the run folder was made (an image the cache
/// cannot decode) leaves no run folder; the same command works once the image is fixed.
#[test]
fn failed_start_leaves_no_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let (manifest, rows) = synthetic(tmp.path(), 8);
    let good = std::fs::read(&rows[3].image_path).unwrap();
    std::fs::write(&rows[3].image_path, b"not an image").unwrap();
    let cfg = tiny_config(tmp.path(), 1);
    let run = tmp.path().join("run");
    let cache = tmp.path().join("cache");
    let err = run_fails(&mut train_cmd(&manifest, &cfg, &run, &cache));
    assert!(err.contains(&rows[3].id), "{err}");
    assert!(!run.exists(), "a failed start left {:?}", std::fs::read_dir(&run).map(|d| d.count()));
    std::fs::write(&rows[3].image_path, good).unwrap();
    run_ok(&mut train_cmd(&manifest, &cfg, &run, &cache));
    assert!(run.join("COMPLETE.json").exists());
}

/// Issue 13, item 1, for `weights import -o`: through a link the target is replaced (the link
/// stays); a pipe is refused with a plain message and stays a pipe.
#[cfg(unix)]
#[test]
fn weights_import_output_follows_links_and_refuses_pipes() {
    use std::os::unix::fs::{symlink, FileTypeExt};
    let fx = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lesion-models/tests/fixtures/effnet/small_zip.pth");
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real.safetensors");
    std::fs::write(&real, b"old").unwrap();
    let link = tmp.path().join("link.safetensors");
    symlink(&real, &link).unwrap();
    let import = |out: &Path| {
        let mut c = lesion();
        c.args(["weights", "import"]).arg(&fx).arg("-o").arg(out);
        c
    };
    run_ok(&mut import(&link));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "link replaced");
    assert!(!tch::Tensor::read_safetensors(&real).unwrap().is_empty());
    let fifo = tmp.path().join("pipe");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let err = run_fails(&mut import(&fifo));
    assert!(err.contains("pipe") && err.contains("regular file"), "{err}");
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
}
