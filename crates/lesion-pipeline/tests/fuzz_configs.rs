//! Fuzz harness of the run configs and run-folder records (stable toolchain, proptest; see
//! `lesion-data/tests/common/mutate.rs`): `config.toml` of both tasks (every config under
//! `configs/` and the defaults, byte-mutated and with values swapped for hostile ones),
//! `run.json` / `split.json`, and training checkpoints. Each reader returns `Ok` or an error
//! naming the file, never a panic; a config that reads writes back to the same config (what
//! `--resume` compares). Cases per target: `PROPTEST_CASES` (256 by default).
#[path = "../../lesion-data/tests/common/mutate.rs"]
mod mutate;

use std::path::{Path, PathBuf};

use lesion_cls::config::ClsTrainConfig;
use lesion_core::checkpoint::{self, TrainState};
use lesion_core::optim::{Adam, AdamConfig};
use lesion_core::run::{self, RunConfig, RunInfo, Split};
use lesion_seg::config::SegTrainConfig;
use mutate::{inputs, outcome};
use proptest::prelude::*;
use proptest::sample::Index;

/// TOML values that stress validation: zeros, negatives, huge and non-finite numbers, wrong
/// types, empty and odd strings, empty arrays and tables.
const HOSTILE_VALUES: [&str; 22] = [
    "0",
    "-1",
    "1",
    "64",
    "9223372036854775807",
    "-9223372036854775808",
    "4294967296",
    "0.0",
    "-0.0",
    "1e308",
    "-1e-308",
    "nan",
    "inf",
    "-inf",
    "0.5",
    "true",
    "\"\"",
    "\"../../../etc/passwd\"",
    "\"unet\"",
    "[]",
    "{}",
    "1979-05-27",
];

fn config_seeds() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut files: Vec<PathBuf> = Vec::new();
    for sub in [dir.clone(), dir.join("isic2017")] {
        for e in std::fs::read_dir(&sub).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    seeds.push(SegTrainConfig::default().to_toml().unwrap().into_bytes());
    seeds.push(ClsTrainConfig::default().to_toml().unwrap().into_bytes());
    seeds
}

/// A seed config with the value of one `key = value` line replaced by a hostile value.
fn hostile_configs() -> impl Strategy<Value = Vec<u8>> {
    let seeds = config_seeds();
    (any::<Index>(), any::<Index>(), any::<Index>()).prop_map(move |(seed, line, value)| {
        let text = String::from_utf8_lossy(&seeds[seed.index(seeds.len())]).into_owned();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let assignments: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.trim_start().starts_with('#') && l.contains(" = "))
            .map(|(i, _)| i)
            .collect();
        if !assignments.is_empty() {
            let i = assignments[line.index(assignments.len())];
            let key = lines[i].split(" = ").next().unwrap_or("").to_string();
            lines[i] = format!("{key} = {}", HOSTILE_VALUES[value.index(HOSTILE_VALUES.len())]);
        }
        lines.join("\n").into_bytes()
    })
}

/// Reads `path` as config `C`; an accepted config must write back to itself.
fn read_config<C: RunConfig>(path: &Path) -> Result<(), TestCaseError> {
    let result = C::from_toml_file(path);
    if let Ok(cfg) = &result {
        let text = cfg.to_toml().map_err(|e| TestCaseError::fail(format!("to_toml: {e}")))?;
        let again = path.with_extension("again.toml");
        std::fs::write(&again, &text).unwrap();
        let back = C::from_toml_file(&again)
            .map_err(|e| TestCaseError::fail(format!("written config does not read: {e}")))?;
        prop_assert_eq!(back.to_toml().ok(), Some(text), "the config changes when written back");
    }
    outcome("from_toml_file", Some("config.toml"), result)
}

fn checkpoint_seed() -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("last.safetensors");
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _ = vs.root().var("w", &[2, 3], tch::nn::Init::Const(0.5));
    let _ = vs.root().var("b", &[3], tch::nn::Init::Const(-1.0));
    let state = TrainState { epoch: 2, ..TrainState::fresh(1e-3) };
    checkpoint::save_training(&path, &vs, &Adam::new(AdamConfig::default()), &state).unwrap();
    std::fs::read(&path).unwrap()
}

proptest! {
    #[test]
    fn configs_read_or_refuse(bytes in prop_oneof![inputs(config_seeds()), hostile_configs()]) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config.toml");
        std::fs::write(&path, &bytes).unwrap();
        read_config::<SegTrainConfig>(&path)?;
        read_config::<ClsTrainConfig>(&path)?;
    }

    /// `run.json` and `split.json` of a run folder, as `--resume` and `--split-of` read them.
    #[test]
    fn run_records_read_or_refuse(bytes in inputs({
        let info = RunInfo {
            lesion_version: "0.1.0".into(),
            git_commit: Some("abc+dirty".into()),
            command: vec!["lesion".into(), "seg".into()],
            seed: 7,
            device: "cpu".into(),
            torch_threads: 2,
            started_unix: 1,
            train_images: 2,
            val_images: 1,
            manifest: Some("/data/m.csv".into()),
            config: Some(SegTrainConfig::default().to_toml().unwrap()),
        };
        let split = Split { train: vec!["a".into(), "b".into()], val: vec!["c".into()] };
        vec![serde_json::to_vec_pretty(&info).unwrap(), serde_json::to_vec(&split).unwrap()]
    })) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(run::CONFIG_FILE), SegTrainConfig::default().to_toml().unwrap()).unwrap();
        std::fs::write(tmp.path().join(run::RUN_FILE), &bytes).unwrap();
        std::fs::write(tmp.path().join(run::SPLIT_FILE), &bytes).unwrap();
        outcome("run::recorded", Some("run.json"), run::recorded::<SegTrainConfig>(tmp.path()))?;
        outcome("split.json", Some("split.json"), run::read_json::<Split>(&tmp.path().join(run::SPLIT_FILE)))?;
    }

    #[test]
    fn checkpoints_load_or_refuse(bytes in inputs(vec![checkpoint_seed()])) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("last.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _ = vs.root().var("w", &[2, 3], tch::nn::Init::Const(0.0));
        let _ = vs.root().var("b", &[3], tch::nn::Init::Const(0.0));
        outcome("load_model", Some("last.safetensors"), checkpoint::load_model(&path, &vs))?;
        let mut adam = Adam::new(AdamConfig::default());
        outcome("load_training", Some("last.safetensors"), checkpoint::load_training(&path, &vs, &mut adam))?;
        outcome("training_epoch", Some("last.safetensors"), checkpoint::training_epoch(&path))?;
    }
}
