//! kill -9 at many moments of a tiny `lesion seg train`, each followed by `--resume`: while a
//! checkpoint is being written (its `.tmp-` file exists: `best`, then `last`), right after an
//! epoch's log line, and at seeded random delays. The finished run's `best.safetensors` and
//! `last.safetensors` must be byte-identical to those of an uninterrupted run with the same
//! config and seed, and its log must hold every epoch once.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lesion_data::manifest::Manifest;
use lesion_data::synth::{self, SynthConfig};

/// Epochs of the tiny run: enough that a few kills still leave epochs to train.
const EPOCHS: usize = 16;
/// Kills at random delays after the targeted ones.
const RANDOM_KILLS: usize = 5;
/// Seed of the random delays (the test is repeatable).
const KILL_SEED: u64 = 13;
/// Random delays are drawn in [0, this) after a process starts (startup, epochs, writes).
const MAX_KILL_DELAY_MS: u64 = 700;
/// Tries at a kill mid-write: the write may finish between seeing its temp file and the kill.
const MID_WRITE_TRIES: usize = 10;
/// How often the run folder is polled for the moment to kill.
const POLL: Duration = Duration::from_micros(200);
/// No single process may run longer than this.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(120);

fn lesion() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lesion"));
    // One thread: the same reductions in every process, so the weights repeat bit for bit.
    c.args(["--quiet", "--threads", "1"]);
    c
}

fn tiny_config(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.toml");
    let text = format!(
        "[model]\narch = \"unet\"\ninput_size = 32\nbase = 8\ndepth = 3\ndropout = 0.2\n\
         [train]\nepochs = {EPOCHS}\nbatch_size = 4\n[adam]\nlr = 0.003\n[data]\nsplit_seed = 7\n"
    );
    std::fs::write(&p, text).unwrap();
    p
}

/// A training process and the file its log goes to.
struct Training {
    child: Child,
    log: PathBuf,
}

/// Starts a new run (`resume` false) or resumes `run`; its log goes to a file beside `run`.
fn train(run: &Path, manifest: &Path, config: &Path, cache: &Path, resume: bool) -> Training {
    let mut cmd = lesion();
    cmd.args(["seg", "train"]);
    if resume {
        cmd.arg("--resume").arg(run);
    } else {
        cmd.arg("--manifest").arg(manifest).arg("--config").arg(config).arg("--out").arg(run);
    }
    let log = run.with_extension(format!("log-{}", std::process::id()));
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
    cmd.arg("--cache").arg(cache).stdout(Stdio::null()).stderr(log_file);
    Training { child: cmd.spawn().unwrap(), log }
}

/// When to kill a training process.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// While `checkpoints/.<name>.safetensors.tmp-*` exists: mid-write.
    Writing(&'static str),
    /// As soon as `metrics.jsonl` gains a line (the log is written before the checkpoint).
    AfterLogLine,
    /// This long after the process started.
    After(Duration),
}

fn temp_files(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix) && n.contains(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

fn log_lines(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl")).map(|t| t.lines().count()).unwrap_or(0)
}

/// Waits for `moment` and kills `child` with SIGKILL then. Returns whether it was killed
/// (`false`: it exited first, successfully).
fn kill_at(training: Training, run: &Path, moment: Moment) -> bool {
    let Training { mut child, log } = training;
    let started = Instant::now();
    let lines = log_lines(run);
    let checkpoints = run.join("checkpoints");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let err = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(status.success(), "training failed before the kill ({moment:?}):\n{err}");
            return false;
        }
        let due = match moment {
            Moment::Writing(name) => !temp_files(&checkpoints, &format!(".{name}.")).is_empty(),
            Moment::AfterLogLine => log_lines(run) > lines,
            Moment::After(d) => started.elapsed() >= d,
        };
        if due {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        assert!(started.elapsed() < PROCESS_TIMEOUT, "no {moment:?} within {PROCESS_TIMEOUT:?}");
        std::thread::sleep(POLL);
    }
}

/// xorshift64*: the seeded kill delays.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[test]
fn kill_minus_nine_at_many_moments_resumes_to_identical_checkpoints() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let m =
        synth::generate(&SynthConfig { count: 24, width: 64, height: 64, seed: 3 }, &data).unwrap();
    let manifest = data.join("manifest.csv");
    Manifest::new(m.rows).write_csv(&manifest).unwrap();
    let config = tiny_config(tmp.path());
    let cache = tmp.path().join("cache");

    let reference = tmp.path().join("reference");
    let child = train(&reference, &manifest, &config, &cache, false);
    assert!(!kill_at(child, &reference, Moment::After(PROCESS_TIMEOUT)), "reference run");

    let run = tmp.path().join("run");
    let mut moments = vec![Moment::Writing("best"), Moment::Writing("last"), Moment::AfterLogLine];
    let mut state = KILL_SEED;
    moments.extend((0..RANDOM_KILLS).map(|_| {
        Moment::After(Duration::from_millis(next_random(&mut state) % MAX_KILL_DELAY_MS))
    }));
    let mut kills = Vec::new();
    let mut finished = false;
    for &moment in &moments {
        // A kill meant for the middle of a write counts once its temp file is left behind.
        let tries = if matches!(moment, Moment::Writing(_)) { MID_WRITE_TRIES } else { 1 };
        for _ in 0..tries {
            let child = train(&run, &manifest, &config, &cache, !kills.is_empty());
            if !kill_at(child, &run, moment) {
                finished = true;
                break;
            }
            assert!(!run.join("COMPLETE.json").exists(), "a killed run looks complete");
            kills.push(moment);
            if let Moment::Writing(name) = moment {
                if !temp_files(&run.join("checkpoints"), &format!(".{name}.")).is_empty() {
                    break;
                }
            }
        }
        if let Moment::Writing(name) = moment {
            assert!(
                !temp_files(&run.join("checkpoints"), &format!(".{name}.")).is_empty(),
                "no kill landed while {name}.safetensors was being written"
            );
        }
        if finished {
            break;
        }
    }
    if !finished {
        let child = train(&run, &manifest, &config, &cache, true);
        assert!(!kill_at(child, &run, Moment::After(PROCESS_TIMEOUT)), "final resume");
    }
    assert!(run.join("COMPLETE.json").exists());

    for name in ["best.safetensors", "last.safetensors"] {
        let a = std::fs::read(reference.join("checkpoints").join(name)).unwrap();
        let b = std::fs::read(run.join("checkpoints").join(name)).unwrap();
        assert!(a == b, "{name} differs from the uninterrupted run's after kills at {kills:?}");
    }
    let epochs: Vec<usize> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"].as_u64().unwrap()
                as usize
        })
        .collect();
    assert_eq!(epochs, (1..=EPOCHS).collect::<Vec<_>>());
    println!(
        "{} kills ({kills:?}), identical checkpoints, {:.1}s",
        kills.len(),
        t0.elapsed().as_secs_f64()
    );
}
