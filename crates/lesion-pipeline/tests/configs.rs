//! Every training config under `configs/` parses and validates as exactly one of the two run
//! configs (segmentation or classification), as `seg train` / `cls train` would read it, so the
//! recipes cannot rot when a key is renamed or a default tightened. The ISIC 2017 recipes also
//! keep their header (what they reproduce, the command, the GPU-time estimate). Sweep plans
//! (a top-level `[sweep]` table) are no run configs: `lesion-sweep/tests/example_plan.rs`
//! expands them.
use std::path::{Path, PathBuf};

use lesion_cls::config::ClsTrainConfig;
use lesion_core::run::RunConfig;
use lesion_seg::config::SegTrainConfig;

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            toml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "toml") {
            out.push(p);
        }
    }
}

#[derive(Debug, PartialEq)]
enum Kind {
    Seg,
    Cls,
    SweepPlan,
}

/// The table that makes a file a sweep plan (`lesion sweep PLAN.toml`).
const PLAN_TABLE: &str = "sweep";

fn kind_of(path: &Path) -> Kind {
    let text = std::fs::read_to_string(path).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    if table.contains_key(PLAN_TABLE) {
        return Kind::SweepPlan;
    }
    let seg = SegTrainConfig::from_toml_file(path);
    let cls = ClsTrainConfig::from_toml_file(path);
    match (seg, cls) {
        (Ok(cfg), Err(_)) => {
            if let Some(split) = &cfg.data.split_file {
                assert!(
                    split.is_file(),
                    "{}: split_file {} missing",
                    path.display(),
                    split.display()
                );
            }
            Kind::Seg
        }
        (Err(_), Ok(_)) => Kind::Cls,
        (Ok(_), Ok(_)) => panic!("{} reads as both a seg and a cls config", path.display()),
        (Err(s), Err(c)) => {
            panic!("{} is no valid config:\n  as seg: {s}\n  as cls: {c}", path.display())
        }
    }
}

#[test]
fn every_config_parses_and_validates() {
    let mut files = Vec::new();
    toml_files(&configs_dir(), &mut files);
    let kinds: Vec<(String, Kind)> = files
        .iter()
        .map(|p| (p.strip_prefix(configs_dir()).unwrap().display().to_string(), kind_of(p)))
        .collect();
    for (name, kind) in &kinds {
        eprintln!("{name}: {kind:?}");
    }
    let isic: Vec<_> = kinds.iter().filter(|(n, _)| n.starts_with("isic2017")).collect();
    assert!(kinds.len() >= 7 && isic.len() == 4, "{kinds:?}");
    assert_eq!(isic.iter().filter(|(_, k)| *k == Kind::Seg).count(), 1);
    let plans: Vec<_> = kinds.iter().filter(|(_, k)| *k == Kind::SweepPlan).collect();
    assert_eq!(plans.len(), 1, "configs/ph2-sweep.toml: {kinds:?}");
}

#[test]
fn isic2017_recipes_state_command_and_gpu_estimate() {
    let mut files = Vec::new();
    toml_files(&configs_dir().join("isic2017"), &mut files);
    for p in files {
        let text = std::fs::read_to_string(&p).unwrap();
        let header: String =
            text.lines().take_while(|l| l.starts_with('#')).collect::<Vec<_>>().join("\n");
        for needle in ["Reproduces", "scripts/lesion", "GPU", "estimate"] {
            assert!(header.contains(needle), "{}: header lacks {needle:?}", p.display());
        }
    }
}
