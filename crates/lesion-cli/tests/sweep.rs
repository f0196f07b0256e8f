//! `lesion sweep` on a tiny 4-cell seg-train plan (2 model widths × 2 seeds, a 32² U-Net on
//! synthetic images): `--dry-run` writes nothing; `--jobs 2` completes every cell; a rerun
//! touches nothing; and kill -9 of the driver (its training children die with it) and of a
//! running cell's training process, each followed by the same command, finish the sweep
//! without redoing a finished cell, every cell's log holding each epoch once.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use lesion_data::manifest::Manifest;
use lesion_data::synth::{self, SynthConfig};

/// Epochs of every cell: long enough (about a second and a half) to kill one mid-run.
const EPOCHS: usize = 30;
/// Cells of the plan: 2 widths × 2 seeds.
const CELLS: usize = 4;
/// A cell is killed only with this many epochs still to train (a quarter of a second or
/// more), so that it cannot finish between being seen and being killed.
const KILL_MARGIN: usize = 5;
/// How often folders are polled for the moment to kill.
const POLL: Duration = Duration::from_millis(2);
/// No wait in this test may last longer.
const TIMEOUT: Duration = Duration::from_secs(120);
/// A training process whose parent was killed must be gone within this (PDEATHSIG: at once).
const ORPHAN_GRACE: Duration = Duration::from_secs(3);

fn lesion() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lesion"));
    c.arg("--quiet");
    c
}

/// A synthetic manifest, a tiny base config and the plan, in `dir`. Returns the plan path.
fn setup(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let m =
        synth::generate(&SynthConfig { count: 24, width: 64, height: 64, seed: 3 }, &data).unwrap();
    Manifest::new(m.rows).write_csv(&data.join("manifest.csv")).unwrap();
    std::fs::write(
        dir.join("tiny.toml"),
        format!(
            "[model]\narch = \"unet\"\ninput_size = 32\nbase = 8\ndepth = 3\ndropout = 0.2\n\
             [train]\nepochs = {EPOCHS}\nbatch_size = 4\n[adam]\nlr = 0.003\n[data]\nsplit_seed = 7\n"
        ),
    )
    .unwrap();
    let plan = dir.join("plan.toml");
    std::fs::write(
        &plan,
        "[sweep]\nname = \"tiny\"\ntask = \"seg-train\"\nbase = \"tiny.toml\"\n\
         manifests = [\"data/manifest.csv\"]\nseeds = [0, 1]\n\
         [grid]\n\"model.base\" = [4, 8]\n",
    )
    .unwrap();
    plan
}

/// `lesion sweep PLAN --out OUT --jobs 2 --cache CACHE` (the one command every run repeats).
fn sweep_cmd(plan: &Path, out: &Path) -> Command {
    let mut c = lesion();
    c.arg("sweep").arg(plan).arg("--out").arg(out).args(["--jobs", "2"]);
    c.arg("--cache").arg(plan.with_file_name("cache"));
    c
}

fn run(mut c: Command) -> Output {
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Every cell's run folder, by cell id.
fn runs(out: &Path) -> BTreeMap<String, PathBuf> {
    std::fs::read_dir(out.join("cells"))
        .map(|d| {
            d.map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), e.path().join("run"))
            })
            .collect()
        })
        .unwrap_or_default()
}

fn complete(run: &Path) -> bool {
    run.join("COMPLETE.json").exists()
}

fn epochs_logged(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"].as_u64().unwrap())
        .collect()
}

/// What must not change in a finished cell: bytes and mtimes of its end, weights and log.
type Snapshot = BTreeMap<PathBuf, (Vec<u8>, SystemTime)>;

fn snapshot(run: &Path) -> Snapshot {
    [
        "COMPLETE.json",
        "metrics.jsonl",
        "checkpoints/last.safetensors",
        "checkpoints/best.safetensors",
    ]
    .iter()
    .map(|f| {
        let p = run.join(f);
        let bytes = std::fs::read(&p).unwrap();
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        (p, (bytes, mtime))
    })
    .collect()
}

/// Alive and not a zombie (a killed orphan may wait as a zombie for its new parent to reap it).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S …": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn kill9(pid: u32) {
    // SAFETY: kill(2) with a pid this test read from a lock file of its own sweep.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0, "kill -9 {pid}");
}

/// Waits until some cell not in `skip` is training (its run folder locked) with at least
/// `min_epochs` logged and [`KILL_MARGIN`] epochs still to go; returns its id, run folder and
/// the pid of its training process.
fn training_cell(
    out: &Path,
    driver: &mut Child,
    skip: &[String],
    min_epochs: usize,
) -> (String, PathBuf, u32) {
    let t0 = Instant::now();
    loop {
        assert!(
            driver.try_wait().unwrap().is_none(),
            "the sweep ended before a cell could be caught training"
        );
        for (id, run) in runs(out) {
            let logged = epochs_logged(&run).len();
            if skip.contains(&id)
                || complete(&run)
                || logged < min_epochs
                || logged + KILL_MARGIN > EPOCHS
            {
                continue;
            }
            if let Some(Some(pid)) = lesion_core::lock::holder(&run) {
                return (id, run, pid);
            }
        }
        assert!(t0.elapsed() < TIMEOUT, "no cell caught training within {TIMEOUT:?}");
        std::thread::sleep(POLL);
    }
}

#[test]
fn dry_run_writes_nothing_local_run_completes_and_a_rerun_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = setup(tmp.path());
    let out = tmp.path().join("sweep");

    let dry = run({
        let mut c = sweep_cmd(&plan, &out);
        c.arg("--dry-run");
        c
    });
    let t = text(&dry);
    assert!(dry.status.success(), "{t}");
    assert!(!out.exists(), "--dry-run wrote {}", out.display());
    let ids: Vec<&str> = t
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|w| w.len() == 12 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    assert_eq!(ids.len(), CELLS, "{t}");
    assert!(t.contains("model.base=4 seed=0") && t.contains("pending"), "{t}");

    // More threads than the cores allow across two workers is refused before anything is written.
    let cores = std::thread::available_parallelism().unwrap().get();
    let mut too_many = sweep_cmd(&plan, &out);
    too_many.args(["--threads", &cores.to_string()]);
    let refused = run(too_many);
    assert!(!refused.status.success() && text(&refused).contains("cores"), "{}", text(&refused));
    assert!(!out.exists());

    let first = run(sweep_cmd(&plan, &out));
    assert!(first.status.success(), "{}", text(&first));
    let cells = runs(&out);
    assert_eq!(cells.len(), CELLS);
    let mut expected_ids: Vec<&str> = ids.clone();
    expected_ids.sort();
    assert_eq!(
        cells.keys().map(String::as_str).collect::<Vec<_>>(),
        expected_ids,
        "dry-run ids = run ids"
    );
    let before: BTreeMap<String, Snapshot> = cells
        .iter()
        .map(|(id, r)| {
            assert_eq!(epochs_logged(r), (1..=EPOCHS as u64).collect::<Vec<_>>());
            (id.clone(), snapshot(r))
        })
        .collect();

    let again = run(sweep_cmd(&plan, &out));
    assert!(
        again.status.success() && text(&again).contains("4 complete, 0 to run"),
        "{}",
        text(&again)
    );
    for (id, r) in &cells {
        assert!(before[id] == snapshot(r), "the rerun touched cell {id}");
    }

    let collect = run({
        let mut c = lesion();
        c.args(["sweep", "collect"]).arg(&out);
        c
    });
    assert!(collect.status.success(), "{}", text(&collect));
    let csv = std::fs::read_to_string(out.join("collect.csv")).unwrap();
    assert_eq!(csv.lines().count(), CELLS + 1, "{csv}");
    assert!(csv.lines().skip(1).all(|l| l.contains(",complete,val-jaccard,0.")), "{csv}");

    // The Slurm executor's script, without submitting: a job array over the incomplete cells
    // only (here none is incomplete in `out`, so a fresh folder).
    let slurm_out = tmp.path().join("slurm-sweep");
    let mut slurm = sweep_cmd(&plan, &slurm_out);
    slurm.args(["--executor", "slurm", "--no-submit", "--max-parallel", "2"]);
    let s = run(slurm);
    assert!(s.status.success(), "{}", text(&s));
    let script = std::fs::read_to_string(slurm_out.join("slurm/array-1.sbatch")).unwrap();
    assert!(
        script.contains("#SBATCH --array=0,1,2,3%2\n") && script.contains("sweep cell"),
        "{script}"
    );
    assert!(!slurm_out.join("slurm/jobs.json").exists(), "--no-submit records no job");
}

#[test]
fn kill_minus_nine_of_the_driver_and_of_a_cell_then_the_same_command_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = setup(tmp.path());
    let out = tmp.path().join("sweep");

    // 1. The driver, killed once a cell is complete and another is training.
    let mut driver =
        sweep_cmd(&plan, &out).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    let (victim, _, child) = loop {
        let done = runs(&out).values().filter(|r| complete(r)).count();
        if done > 0 {
            break training_cell(&out, &mut driver, &[], 2);
        }
        assert!(driver.try_wait().unwrap().is_none(), "the sweep ended before the kill");
        assert!(t0.elapsed() < TIMEOUT);
        std::thread::sleep(POLL);
    };
    // Every training process of the driver at the moment of the kill, with epochs to go.
    let training: Vec<(String, PathBuf, u32)> = runs(&out)
        .into_iter()
        .filter_map(|(id, run)| match lesion_core::lock::holder(&run) {
            Some(Some(pid)) if epochs_logged(&run).len() + KILL_MARGIN <= EPOCHS => {
                Some((id, run, pid))
            }
            _ => None,
        })
        .collect();
    assert!(training.iter().any(|(id, _, pid)| *id == victim && *pid == child));
    driver.kill().unwrap(); // SIGKILL
    driver.wait().unwrap();
    let t_kill = Instant::now();
    for (id, run, pid) in &training {
        // Gone, and its lock released (a killed process's other threads may still be closing
        // its files for a moment after its main thread shows as a zombie).
        while alive(*pid) || lesion_core::lock::holder(run).is_some() {
            assert!(
                t_kill.elapsed() < ORPHAN_GRACE,
                "training process {pid} (cell {id}) outlived its killed driver"
            );
            std::thread::sleep(POLL);
        }
        assert!(
            !complete(run),
            "cell {id} finished after its driver was killed: an orphan trained on"
        );
    }
    let finished: BTreeMap<String, Snapshot> = runs(&out)
        .into_iter()
        .filter(|(_, r)| complete(r))
        .map(|(id, r)| (id, snapshot(&r)))
        .collect();
    assert!(!finished.is_empty() && finished.len() < CELLS, "{} complete", finished.len());

    // 2. The same command; one cell's training process killed mid-run: the others finish, the
    // driver names the killed cell and its log.
    // Resumed cells start with epochs logged: wait for one to log two new epochs (so that the
    // first of them is checkpointed: an epoch's log line is written before its checkpoint).
    let logged: BTreeMap<String, usize> =
        runs(&out).iter().map(|(id, r)| (id.clone(), epochs_logged(r).len())).collect();
    let mut driver =
        sweep_cmd(&plan, &out).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let skip: Vec<String> = finished.keys().cloned().collect();
    let (killed, killed_run, pid) = {
        let t0 = Instant::now();
        loop {
            let (id, run, pid) = training_cell(&out, &mut driver, &skip, 1);
            if epochs_logged(&run).len() > logged.get(&id).copied().unwrap_or(0) + 1 {
                break (id, run, pid);
            }
            assert!(t0.elapsed() < TIMEOUT);
            std::thread::sleep(POLL);
        }
    };
    kill9(pid);
    let second = driver.wait_with_output().unwrap();
    let t = text(&second);
    assert!(!second.status.success(), "the driver hid a killed cell:\n{t}");
    let log = out.join("cells").join(&killed).join("log.txt");
    assert!(
        t.contains(&killed) && t.contains(&log.display().to_string()) && t.contains("signal 9"),
        "{t}"
    );
    assert!(
        t.contains(&format!("{} complete, {} to run", finished.len(), CELLS - finished.len())),
        "{t}"
    );
    assert!(!complete(&killed_run));

    // 3. The same command again: it finishes, redoing nothing finished.
    let third = run(sweep_cmd(&plan, &out));
    assert!(third.status.success(), "{}", text(&third));
    let cells = runs(&out);
    assert_eq!(cells.len(), CELLS);
    for (id, run) in &cells {
        assert!(complete(run), "cell {id}");
        assert_eq!(
            epochs_logged(run),
            (1..=EPOCHS as u64).collect::<Vec<_>>(),
            "cell {id}: every epoch once"
        );
    }
    for (id, snap) in &finished {
        assert!(*snap == snapshot(&cells[id]), "cell {id}, finished before the kills, was redone");
    }
    // The killed cell's last attempt continued its run from a checkpoint (not from scratch).
    let log_text = std::fs::read_to_string(log).unwrap();
    let last = log_text.rsplit("== attempt ").next().unwrap();
    assert!(
        last.contains("--resume") && last.contains("resumed from"),
        "the killed cell's last attempt did not resume:\n{last}"
    );
    let status = run({
        let mut c = lesion();
        c.args(["sweep", "status"]).arg(&out);
        c
    });
    assert!(
        text(&status).contains(&format!("summary: total={CELLS} complete={CELLS} ")),
        "{}",
        text(&status)
    );
    println!(
        "killed cell {victim} with its driver, then cell {killed}'s training ({pid}); finished"
    );
}
