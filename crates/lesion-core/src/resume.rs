//! What `--resume` checks before a run folder continues, so that a resumed run is the run that
//! started or says how it differs:
//!
//! - its `config.toml` still holds the config the run last trained with (recorded as TOML in
//!   `run.json`, or in `run-resumed.json` once resumed); an edited value is refused, naming the
//!   changed keys, unless the change is accepted explicitly (then it is appended to
//!   `config-changes.json` and the edited config is the one recorded from then on);
//! - its history is whole: `metrics.jsonl` holds a line for every epoch the last checkpoint has
//!   trained (a deleted or cut log would otherwise be lost silently), and that checkpoint reads.
//!
//! Nothing here writes before every check has passed.
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::checkpoint::{self, CheckpointPaths};
use crate::error::{Result, TrainError};
use crate::run::{
    read_json, write_json, RunConfig, RunInfo, CONFIG_FILE, METRICS_JSONL, RESUMED_RUN_FILE,
    RUN_FILE,
};

/// The log of config changes accepted on `--resume`, oldest first.
pub const CONFIG_CHANGES_FILE: &str = "config-changes.json";

/// One config key whose value differs from the recorded config (`None`: the key is absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// Dotted path of the key, e.g. `adam.lr`.
    pub key: String,
    pub was: Option<String>,
    pub now: Option<String>,
}

impl std::fmt::Display for ConfigChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".into());
        write!(f, "{}: {} -> {}", self.key, show(&self.was), show(&self.now))
    }
}

/// One accepted change of a run's config, as `config-changes.json` keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcceptedChange {
    pub accepted_unix: u64,
    pub changes: Vec<ConfigChange>,
}

/// The keys whose values differ between two configs written as TOML (`recorded`, read from
/// `recorded_file`, and `current`), sorted by key. Tables are compared key by key; any other
/// value (arrays included) as a whole.
pub fn config_changes(
    recorded: &str,
    recorded_file: &Path,
    current: &str,
) -> Result<Vec<ConfigChange>> {
    let parse = |text: &str, origin: &Path| -> Result<BTreeMap<String, String>> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            TrainError::file(origin, format!("the recorded config is not valid TOML: {e}"))
        })?;
        let mut flat = BTreeMap::new();
        flatten("", &toml::Value::Table(table), &mut flat);
        Ok(flat)
    };
    let was = parse(recorded, recorded_file)?;
    let now = parse(current, Path::new(CONFIG_FILE))?;
    let keys: std::collections::BTreeSet<&String> = was.keys().chain(now.keys()).collect();
    Ok(keys
        .into_iter()
        .filter(|k| was.get(*k) != now.get(*k))
        .map(|k| ConfigChange {
            key: k.clone(),
            was: was.get(k).cloned(),
            now: now.get(k).cloned(),
        })
        .collect())
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// The config the run in `dir` last trained with, as TOML, and the file it was read from:
/// `run-resumed.json` when the run was resumed, else `run.json`. `None` when neither records
/// one (a run started before configs were recorded, or killed before `run.json`).
pub fn recorded_config(dir: &Path) -> Result<Option<(String, std::path::PathBuf)>> {
    for name in [RESUMED_RUN_FILE, RUN_FILE] {
        let path = dir.join(name);
        if path.exists() {
            let info: RunInfo = read_json(&path)?;
            if let Some(config) = info.config {
                return Ok(Some((config, path)));
            }
        }
    }
    Ok(None)
}

/// Checks that the run in `dir` can resume with `cfg` (read from its `config.toml`) and, when
/// `accept_change` and the config was edited, appends the change to `config-changes.json`.
/// Returns the accepted changes (empty when the config is unchanged). Writes nothing unless
/// every check passes.
pub fn check<C: RunConfig>(dir: &Path, cfg: &C, accept_change: bool) -> Result<Vec<ConfigChange>> {
    let changes = match recorded_config(dir)? {
        Some((recorded, from)) => config_changes(&recorded, &from, &cfg.to_toml()?)?,
        None => {
            warn!(
                "{}: no recorded config to compare config.toml with; resuming with config.toml as it is",
                dir.display()
            );
            Vec::new()
        }
    };
    if !changes.is_empty() && !accept_change {
        let list: Vec<String> = changes.iter().map(ToString::to_string).collect();
        return Err(TrainError::file(
            dir.join(CONFIG_FILE),
            format!(
                "changed since the run started ({}); a resumed run continues with the config it \
                 started with: restore these values, or pass --accept-config-change to continue \
                 with the edited config (the change is recorded in {CONFIG_CHANGES_FILE})",
                list.join("; ")
            ),
        ));
    }
    check_history(dir)?;
    if !changes.is_empty() {
        record_changes(dir, &changes)?;
        let list: Vec<String> = changes.iter().map(ToString::to_string).collect();
        info!("config change accepted: {}", list.join("; "));
    }
    Ok(changes)
}

/// The last checkpoint (when there is one) must read, and `metrics.jsonl` must hold at least
/// one line per epoch it has trained (the log is written before the checkpoint, so it is never
/// behind it in a folder only this program wrote).
fn check_history(dir: &Path) -> Result<()> {
    let last = CheckpointPaths::new(dir).last;
    if !last.exists() {
        return Ok(());
    }
    let epochs = checkpoint::training_epoch(&last)?;
    let log = dir.join(METRICS_JSONL);
    let lines = if log.exists() {
        let text = std::fs::read_to_string(&log).map_err(|e| TrainError::file(&log, e))?;
        text.lines().filter(|l| !l.trim().is_empty()).count()
    } else {
        0
    };
    if lines < epochs {
        let seen = if log.exists() {
            format!("has {lines} epoch line(s)")
        } else {
            "is missing".to_string()
        };
        return Err(TrainError::file(
            &log,
            format!(
                "{seen} but the last checkpoint has trained {epochs} epoch(s): resuming would \
                 lose the run's history; restore {METRICS_JSONL} (metrics.csv holds the same \
                 records) or start a new run"
            ),
        ));
    }
    Ok(())
}

fn record_changes(dir: &Path, changes: &[ConfigChange]) -> Result<()> {
    let path = dir.join(CONFIG_CHANGES_FILE);
    let mut log: Vec<AcceptedChange> = if path.exists() { read_json(&path)? } else { Vec::new() };
    log.push(AcceptedChange {
        accepted_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        changes: changes.to_vec(),
    });
    write_json(&path, &log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Adam, AdamConfig};
    use crate::run::{self, RunOptions, Split};
    use crate::TrainState;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Toy {
        lr: f64,
        epochs: usize,
    }

    impl RunConfig for Toy {
        fn validate(&self) -> Result<()> {
            Ok(())
        }
        fn seed(&self) -> u64 {
            7
        }
        fn set_seed(&mut self, _seed: u64) {}
    }

    fn opts(dir: &Path, resume: bool, accept: bool) -> RunOptions {
        RunOptions {
            resume,
            accept_config_change: accept,
            ..RunOptions::new(dir, tch::Device::Cpu, dir.join("weights"))
        }
    }

    fn split(_: &Toy) -> Result<Split> {
        Ok(Split { train: vec!["a".into(), "b".into()], val: vec!["c".into()] })
    }

    /// A run folder as a run killed after `epochs` epochs leaves it: config, split, run.json,
    /// `epochs` log lines and a last checkpoint at that epoch.
    fn killed_run(dir: &Path, epochs: usize) {
        // Held until the checkpoint is written: a start released before its first checkpoint
        // counts as failed and is removed (see `lock`).
        let (_, _, _lock) =
            run::open(&opts(dir, false, false), &Toy { lr: 0.003, epochs: 5 }, split).unwrap();
        let lines: Vec<(usize, f64)> = (1..=epochs).map(|e| (e, 0.5)).collect();
        crate::metrics_log::write(dir, &lines).unwrap();
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _ = vs.root().var("w", &[2], tch::nn::Init::Const(1.0));
        let state = TrainState { epoch: epochs, ..TrainState::fresh(0.003) };
        let adam = Adam::new(AdamConfig::default());
        checkpoint::save_training(&CheckpointPaths::new(dir).last, &vs, &adam, &state).unwrap();
    }

    fn edit_lr(dir: &Path, from: &str, to: &str) {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{text}");
        std::fs::write(&path, text.replace(from, to)).unwrap();
    }

    #[test]
    fn an_edited_config_is_refused_unless_accepted_and_then_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        killed_run(&dir, 2);
        edit_lr(&dir, "lr = 0.003", "lr = 0.01");
        let err = run::open(&opts(&dir, true, false), &Toy { lr: 1.0, epochs: 1 }, split)
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.toml") && err.contains("lr: 0.003 -> 0.01"), "{err}");
        assert!(err.contains("--accept-config-change"), "{err}");
        assert!(!dir.join(RESUMED_RUN_FILE).exists(), "a refused resume writes nothing");
        assert!(!dir.join(CONFIG_CHANGES_FILE).exists());

        let (cfg, _, _) =
            run::open(&opts(&dir, true, true), &Toy { lr: 1.0, epochs: 1 }, split).unwrap();
        assert_eq!(cfg, Toy { lr: 0.01, epochs: 5 }, "the edited config is the one applied");
        let log: Vec<AcceptedChange> = read_json(&dir.join(CONFIG_CHANGES_FILE)).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].changes[0].to_string(), "lr: 0.003 -> 0.01");
        // The accepted config is the recorded one from now on: resuming again needs no flag,
        // and the original run.json still holds the config the run started with.
        run::open(&opts(&dir, true, false), &Toy { lr: 1.0, epochs: 1 }, split).unwrap();
        let first: RunInfo = read_json(&dir.join(RUN_FILE)).unwrap();
        assert!(first.config.unwrap().contains("lr = 0.003"));
        // A later edit is compared with the accepted config.
        edit_lr(&dir, "lr = 0.01", "lr = 0.02");
        let err = run::open(&opts(&dir, true, false), &Toy { lr: 1.0, epochs: 1 }, split)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lr: 0.01 -> 0.02"), "{err}");
    }

    #[test]
    fn a_deleted_or_cut_metrics_log_is_refused_before_any_write() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        killed_run(&dir, 2);
        let log = dir.join(METRICS_JSONL);
        let text = std::fs::read_to_string(&log).unwrap();
        std::fs::remove_file(&log).unwrap();
        let err = run::open(&opts(&dir, true, false), &Toy { lr: 1.0, epochs: 1 }, split)
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.jsonl") && err.contains("missing"), "{err}");
        assert!(err.contains("2 epoch(s)") && err.contains("history"), "{err}");
        assert!(!dir.join(RESUMED_RUN_FILE).exists(), "a failed resume writes nothing");

        std::fs::write(&log, text.lines().next().unwrap()).unwrap();
        let err = run::open(&opts(&dir, true, false), &Toy { lr: 1.0, epochs: 1 }, split)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has 1 epoch line(s)"), "{err}");
        assert!(!dir.join(RESUMED_RUN_FILE).exists());

        std::fs::write(&log, &text).unwrap();
        run::open(&opts(&dir, true, false), &Toy { lr: 1.0, epochs: 1 }, split).unwrap();
        assert!(
            dir.join(RESUMED_RUN_FILE).exists(),
            "a resume that passes its checks records itself"
        );
    }

    #[test]
    fn a_corrupt_checkpoint_is_refused_before_any_write() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        killed_run(&dir, 1);
        std::fs::write(CheckpointPaths::new(&dir).last, b"\0\0\0garbage").unwrap();
        let err = run::open(&opts(&dir, true, false), &Toy { lr: 1.0, epochs: 1 }, split)
            .unwrap_err()
            .to_string();
        assert!(err.contains("last.safetensors"), "{err}");
        assert!(!dir.join(RESUMED_RUN_FILE).exists());
    }

    #[test]
    fn a_corrupt_run_json_is_named_and_called_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        killed_run(&dir, 1);
        let path = dir.join(RUN_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        for bad in [&text[..text.len() / 2], "", "\u{1}\u{2}garbage"] {
            std::fs::write(&path, bad).unwrap();
            let err = run::recorded::<Toy>(&dir).unwrap_err().to_string();
            assert!(err.contains("run.json") && err.contains("corrupt"), "{err}");
            let err = run::open(&opts(&dir, true, false), &Toy { lr: 1.0, epochs: 1 }, split)
                .unwrap_err()
                .to_string();
            assert!(err.contains("run.json") && err.contains("corrupt"), "{err}");
        }
        std::fs::write(&path, "{\"seed\": \"seven\"}").unwrap();
        let err = run::recorded::<Toy>(&dir).unwrap_err().to_string();
        assert!(err.contains("run.json") && err.contains("unexpected contents"), "{err}");
    }

    #[test]
    fn changes_name_every_differing_key() {
        let was = "[adam]\nlr = 0.003\nbeta1 = 0.9\n[train]\nepochs = 2\nsizes = [1, 2]\n";
        let now =
            "[adam]\nlr = 0.01\nbeta1 = 0.9\n[train]\nepochs = 2\nsizes = [1, 3]\nnew = true\n";
        let got = config_changes(was, Path::new("run.json"), now).unwrap();
        let keys: Vec<&str> = got.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["adam.lr", "train.new", "train.sizes"]);
        assert_eq!(got[0].to_string(), "adam.lr: 0.003 -> 0.01");
        assert_eq!(got[1].to_string(), "train.new: (absent) -> true");
        assert!(config_changes(was, Path::new("run.json"), was).unwrap().is_empty());
        let err = config_changes("[x", Path::new("run.json"), now).unwrap_err().to_string();
        assert!(err.contains("run.json") && err.contains("recorded config"), "{err}");
    }
}
