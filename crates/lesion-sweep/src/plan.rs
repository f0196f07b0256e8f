//! Plan files and their expansion into cells (the format is documented in the crate docs).
//!
//! Invariants: a cell's config is the base config with the cell's dotted keys set, read back
//! as the task's config type (unknown keys refused, values validated); a cell's id is a hash
//! of what the run computes from — never of its position in the plan — so reordering or
//! extending a plan keeps the ids (and so the finished run folders) of the cells it keeps.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use lesion_cls::ClsTrainConfig;
use lesion_core::run::RunConfig;
use lesion_seg::SegTrainConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SweepError};

/// The config key the `seeds` axis sets (both tasks' training seed).
pub const SEED_KEY: &str = "train.seed";
/// `folds` of a `cls-cv` plan that does not say (the default of `lesion cls cv --folds`).
pub const DEFAULT_FOLDS: usize = 5;
/// The fold seed of a `cls-cv` plan without `fold_seeds` (the default of `lesion cls cv --seed`).
pub const DEFAULT_FOLD_SEED: u64 = 0;
/// Hex digits of a cell id (48 bits: a collision within one sweep is not a practical concern,
/// and two cells with the same id are refused anyway).
pub const CELL_ID_HEX: usize = 12;

/// What every cell of a sweep runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// `lesion seg train`: one run folder per cell.
    SegTrain,
    /// `lesion cls train`: one run folder per cell.
    ClsTrain,
    /// `lesion cls cv`: one cross-validation folder (a run folder per fold) per cell.
    ClsCv,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::SegTrain => "seg-train",
            Task::ClsTrain => "cls-train",
            Task::ClsCv => "cls-cv",
        }
    }

    /// Whether the task's folder is a cross-validation folder (folds and fold seeds apply).
    pub fn is_cv(self) -> bool {
        self == Task::ClsCv
    }

    /// Whether the task's folder `run_dir` is finished: a train run's `COMPLETE.json`, a
    /// cross-validation's `cv.json` (each written last).
    pub fn is_complete(self, run_dir: &Path) -> bool {
        match self {
            Task::SegTrain | Task::ClsTrain => lesion_core::run::is_complete(run_dir),
            Task::ClsCv => lesion_cls::cv::is_complete(run_dir),
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A cell's id: the first [`CELL_ID_HEX`] hex digits of the BLAKE3 hash of the cell's
/// canonical key ([`cell_key`]); also the name of its folder under `cells/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CellId(String);

impl CellId {
    /// `Some` when `s` is exactly [`CELL_ID_HEX`] lowercase hex digits.
    pub fn parse(s: &str) -> Option<CellId> {
        let ok = s.len() == CELL_ID_HEX
            && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| CellId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CellId {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        CellId::parse(&s).ok_or_else(|| format!("not a cell id ({CELL_ID_HEX} hex digits): {s}"))
    }
}

impl From<CellId> for String {
    fn from(id: CellId) -> String {
        id.0
    }
}

impl fmt::Display for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One cell as `plan.json` and `cells/<id>/cell.json` record it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// Position in the plan's order (the Slurm array index).
    pub index: usize,
    pub id: CellId,
    pub task: Task,
    /// Every dotted config key the plan sets in this cell (`[set]`, its `[[list]]` entry, its
    /// `[grid]` values); the seed is [`CellRecord::seed`].
    pub overrides: BTreeMap<String, serde_json::Value>,
    /// Absolute path of the manifest.
    pub manifest: PathBuf,
    /// BLAKE3 of the manifest file's bytes when the plan was expanded (part of the id).
    pub manifest_blake3: String,
    /// `train.seed`, when the plan has a `seeds` axis.
    pub seed: Option<u64>,
    /// `cls cv --seed` (the fold assignment's seed); cls-cv only.
    pub fold_seed: Option<u64>,
    /// `cls cv --folds`; cls-cv only.
    pub folds: Option<usize>,
}

/// `plan.json`: the expanded plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub name: String,
    pub task: Task,
    /// Absolute path of the plan file.
    pub plan: PathBuf,
    /// Absolute path of the base config (`None`: the task's defaults).
    pub base: Option<PathBuf>,
    /// The base config with every key written out (what the cells' overrides change).
    pub base_config: serde_json::Value,
    /// The external evaluation manifest, for the leaderboard and report (absolute).
    pub external: Option<PathBuf>,
    pub folds: Option<usize>,
    /// The dotted keys set in every cell (`[set]`).
    pub set: BTreeMap<String, serde_json::Value>,
    /// What varies between cells: the `[grid]` and `[[list]]` keys, then `seed`,
    /// `fold_seed` and `manifest` when the plan has more than one of each.
    pub axes: Vec<String>,
    pub cells: Vec<CellRecord>,
}

/// An expanded plan: `plan.json`'s record and each cell's effective config (TOML, in the
/// cells' order).
#[derive(Debug, Clone)]
pub struct Plan {
    pub record: PlanRecord,
    pub configs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    sweep: SweepSection,
    #[serde(default)]
    set: toml::Table,
    #[serde(default)]
    grid: toml::Table,
    #[serde(default)]
    list: Vec<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepSection {
    name: String,
    task: Task,
    base: Option<PathBuf>,
    #[serde(default)]
    manifests: Vec<PathBuf>,
    #[serde(default)]
    seeds: Vec<u64>,
    folds: Option<usize>,
    #[serde(default)]
    fold_seeds: Vec<u64>,
    external: Option<PathBuf>,
}

/// Dotted key → value.
type Overrides = BTreeMap<String, toml::Value>;

/// Reads and expands the plan file `path`. `manifests`, when not empty, replaces the plan's
/// `manifests` (paths relative to the working directory; the plan's are relative to the plan
/// file). Every manifest is hashed; every cell's config is built and validated.
pub fn load(path: &Path, manifests: &[PathBuf]) -> Result<Plan> {
    let text = std::fs::read_to_string(path).map_err(|e| SweepError::file(path, e))?;
    let file: PlanFile = toml::from_str(&text).map_err(|e| SweepError::file(path, e))?;
    let plan_path = std::fs::canonicalize(path).map_err(|e| SweepError::file(path, e))?;
    let plan_dir = plan_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let s = &file.sweep;
    check_name(&s.name).map_err(|p| SweepError::file(path, p))?;
    if !s.task.is_cv() && (s.folds.is_some() || !s.fold_seeds.is_empty()) {
        return Err(SweepError::file(
            path,
            format!("`folds` and `fold_seeds` apply to task cls-cv only, not {}", s.task),
        ));
    }
    if s.folds.is_some_and(|k| k < 2) {
        return Err(SweepError::file(path, "`folds` must be at least 2"));
    }
    let manifest_paths: Vec<PathBuf> = if manifests.is_empty() {
        s.manifests.iter().map(|m| plan_dir.join(m)).collect()
    } else {
        manifests.to_vec()
    };
    if manifest_paths.is_empty() {
        return Err(SweepError::file(
            path,
            "no manifest: give `manifests` in [sweep] or --manifest on the command line",
        ));
    }
    let mut manifests_abs = Vec::new();
    for m in &manifest_paths {
        let abs = std::fs::canonicalize(m)
            .map_err(|e| SweepError::file(path, format!("manifest {}: {e}", m.display())))?;
        let hash = hash_file(&abs)?;
        if manifests_abs.iter().any(|(a, _)| a == &abs) {
            return Err(SweepError::file(path, format!("manifest {} given twice", abs.display())));
        }
        manifests_abs.push((abs, hash));
    }
    let base = s.base.as_ref().map(|b| plan_dir.join(b));
    let external = s.external.as_ref().map(|e| plan_dir.join(e));

    let set = flatten_values(&file.set, "set").map_err(|p| SweepError::file(path, p))?;
    let grid = flatten_grid(&file.grid).map_err(|p| SweepError::file(path, p))?;
    let lists: Vec<Overrides> = file
        .list
        .iter()
        .enumerate()
        .map(|(i, t)| flatten_values(t, &format!("list entry {}", i + 1)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|p| SweepError::file(path, p))?;
    check_disjoint(&set, &grid, &lists, !s.seeds.is_empty())
        .map_err(|p| SweepError::file(path, p))?;

    // The config variants in order: list (outermost), then the grid (keys sorted, the last key
    // varying fastest), then seeds.
    let lists = if lists.is_empty() { vec![Overrides::new()] } else { lists };
    let seeds: Vec<Option<u64>> =
        if s.seeds.is_empty() { vec![None] } else { s.seeds.iter().copied().map(Some).collect() };
    let mut variants: Vec<(Overrides, Option<u64>)> = Vec::new();
    for entry in &lists {
        for combo in grid_product(&grid) {
            for seed in &seeds {
                let mut o = set.clone();
                o.extend(entry.iter().map(|(k, v)| (k.clone(), v.clone())));
                o.extend(combo.iter().map(|(k, v)| (k.clone(), v.clone())));
                variants.push((o, *seed));
            }
        }
    }
    let built = match s.task {
        Task::SegTrain => {
            build_configs::<SegTrainConfig>(path, &plan_dir, base.as_deref(), s.task, &variants)?
        }
        Task::ClsTrain | Task::ClsCv => {
            build_configs::<ClsTrainConfig>(path, &plan_dir, base.as_deref(), s.task, &variants)?
        }
    };

    let folds = s.task.is_cv().then(|| s.folds.unwrap_or(DEFAULT_FOLDS));
    let fold_seeds: Vec<Option<u64>> = match (s.task.is_cv(), s.fold_seeds.is_empty()) {
        (false, _) => vec![None],
        (true, true) => vec![Some(DEFAULT_FOLD_SEED)],
        (true, false) => s.fold_seeds.iter().copied().map(Some).collect(),
    };
    let mut cells = Vec::new();
    let mut configs = Vec::new();
    let mut seen: BTreeMap<CellId, usize> = BTreeMap::new();
    for ((overrides, seed), (config_toml, config_json)) in variants.iter().zip(&built.cells) {
        for fold_seed in &fold_seeds {
            for (manifest, manifest_hash) in &manifests_abs {
                let index = cells.len();
                let id = cell_id(s.task, config_json, manifest_hash, folds, *fold_seed)?;
                if let Some(first) = seen.insert(id.clone(), index) {
                    return Err(SweepError::file(
                        path,
                        format!("cells {first} and {index} are the same run (id {id}): the plan repeats a combination"),
                    ));
                }
                cells.push(CellRecord {
                    index,
                    id,
                    task: s.task,
                    overrides: to_json_map(overrides)?,
                    manifest: manifest.clone(),
                    manifest_blake3: manifest_hash.clone(),
                    seed: *seed,
                    fold_seed: *fold_seed,
                    folds,
                });
                configs.push(config_toml.clone());
            }
        }
    }
    let mut axes: Vec<String> = grid.keys().cloned().collect();
    let list_keys: BTreeSet<&String> = lists.iter().flat_map(|l| l.keys()).collect();
    axes.extend(list_keys.into_iter().filter(|k| !grid.contains_key(*k)).cloned());
    for (name, n) in
        [("seed", seeds.len()), ("fold_seed", fold_seeds.len()), ("manifest", manifests_abs.len())]
    {
        if n > 1 {
            axes.push(name.to_string());
        }
    }
    Ok(Plan {
        record: PlanRecord {
            name: s.name.clone(),
            task: s.task,
            plan: plan_path,
            base: base
                .map(|b| std::fs::canonicalize(&b).map_err(|e| SweepError::file(&b, e)))
                .transpose()?,
            base_config: built.base,
            external: external.map(|e| std::fs::canonicalize(&e).unwrap_or(e)),
            folds,
            set: to_json_map(&set)?,
            axes,
            cells,
        },
        configs,
    })
}

/// A sweep name is a folder name: letters, digits, `-`, `_`, `.`, not starting with `.`.
fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "sweep name {name:?} must be letters, digits, '-', '_' or '.' (not starting with '.'): it names the default folder"
        ))
    }
}

/// BLAKE3 of a file's bytes, hex.
pub fn hash_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| SweepError::file(path, e))?;
    Ok(blake3::hash(&bytes).to_hex().to_string())
}

/// The dotted keys of a table (`"a.b" = 1` and `[a] b = 1` alike): a nested table is a
/// path, anything else a value.
fn flatten_values(table: &toml::Table, what: &str) -> std::result::Result<Overrides, String> {
    let mut out = Overrides::new();
    flatten("", table, &mut out);
    if out.keys().any(|k| k.split('.').any(str::is_empty)) {
        return Err(format!("{what}: a key has an empty part"));
    }
    Ok(out)
}

/// Config values are never tables, so every table is a path (an empty one sets nothing).
fn flatten(prefix: &str, table: &toml::Table, out: &mut Overrides) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            _ => {
                out.insert(key, v.clone());
            }
        }
    }
}

/// `[grid]`: dotted key → its non-empty list of values.
fn flatten_grid(
    table: &toml::Table,
) -> std::result::Result<BTreeMap<String, Vec<toml::Value>>, String> {
    let mut flat = Overrides::new();
    flatten("", table, &mut flat);
    flat.into_iter()
        .map(|(k, v)| match v {
            toml::Value::Array(values) if !values.is_empty() => Ok((k, values)),
            toml::Value::Array(_) => Err(format!("[grid] key `{k}` has no values")),
            other => Err(format!("[grid] key `{k}` must be a list of values, got {other}")),
        })
        .collect()
}

/// A key is set by one of `[set]`, `[grid]`, `[[list]]` and the `seeds` axis, never two.
fn check_disjoint(
    set: &Overrides,
    grid: &BTreeMap<String, Vec<toml::Value>>,
    lists: &[Overrides],
    seeds: bool,
) -> std::result::Result<(), String> {
    let list_keys: BTreeSet<&String> = lists.iter().flat_map(|l| l.keys()).collect();
    let mut owners: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for k in set.keys() {
        owners.entry(k).or_default().push("[set]");
    }
    for k in grid.keys() {
        owners.entry(k).or_default().push("[grid]");
    }
    for k in list_keys {
        owners.entry(k).or_default().push("[[list]]");
    }
    if seeds {
        owners.entry(SEED_KEY).or_default().push("`seeds`");
    }
    match owners.into_iter().find(|(_, o)| o.len() > 1) {
        Some((key, o)) => Err(format!("key `{key}` is set by both {} and {}", o[0], o[1])),
        None => Ok(()),
    }
}

/// Every combination of the grid's values, keys in sorted order, the last key varying
/// fastest (one empty combination for an empty grid).
fn grid_product(grid: &BTreeMap<String, Vec<toml::Value>>) -> Vec<Overrides> {
    let mut combos = vec![Overrides::new()];
    for (key, values) in grid {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.insert(key.clone(), v.clone());
                    c
                })
            })
            .collect();
    }
    combos
}

fn to_json_map(o: &Overrides) -> Result<BTreeMap<String, serde_json::Value>> {
    o.iter()
        .map(|(k, v)| {
            serde_json::to_value(v)
                .map(|j| (k.clone(), j))
                .map_err(|e| SweepError::file(k, format!("value {v} has no JSON form: {e}")))
        })
        .collect()
}

/// The base config (JSON, every key) and each variant's effective config (TOML text and
/// canonical JSON).
struct BuiltConfigs {
    base: serde_json::Value,
    cells: Vec<(String, serde_json::Value)>,
}

fn build_configs<C: RunConfig + Default>(
    plan: &Path,
    plan_dir: &Path,
    base: Option<&Path>,
    task: Task,
    variants: &[(Overrides, Option<u64>)],
) -> Result<BuiltConfigs> {
    let base_cfg = match base {
        Some(p) => C::from_toml_file(p)?,
        None => C::default(),
    };
    let base_table = to_table(&base_cfg, plan)?;
    let cells = variants
        .iter()
        .map(|(overrides, seed)| {
            let mut o = overrides.clone();
            if let Some(seed) = seed {
                let value = i64::try_from(*seed).map_err(|_| {
                    SweepError::file(plan, format!("seed {seed} is too large for TOML"))
                })?;
                o.insert(SEED_KEY.to_string(), toml::Value::Integer(value));
            }
            let cfg: C = effective(&base_table, &o, plan, plan_dir, task)?;
            let text = cfg.to_toml()?;
            let json = serde_json::to_value(&cfg).map_err(|e| SweepError::file(plan, e))?;
            Ok((text, canonical(json)))
        })
        .collect::<Result<_>>()?;
    let base = canonical(serde_json::to_value(&base_cfg).map_err(|e| SweepError::file(plan, e))?);
    Ok(BuiltConfigs { base, cells })
}

fn to_table<C: Serialize>(cfg: &C, origin: &Path) -> Result<toml::Table> {
    match toml::Value::try_from(cfg) {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(other) => Err(SweepError::file(origin, format!("config is not a table: {other}"))),
        Err(e) => Err(SweepError::file(origin, e)),
    }
}

/// The base table with `overrides` set, read as the task's config and validated. Keys are
/// set one at a time and the table read back after each, so that a refused key (unknown, or
/// a value of the wrong type) is the one named.
fn effective<C: RunConfig>(
    base: &toml::Table,
    overrides: &Overrides,
    plan: &Path,
    plan_dir: &Path,
    task: Task,
) -> Result<C> {
    let mut table = base.clone();
    for (key, value) in overrides {
        set_dotted(&mut table, key, value.clone())
            .map_err(|p| SweepError::file(plan, format!("key `{key}`: {p}")))?;
        toml::Value::Table(table.clone()).try_into::<C>().map_err(|e| {
            SweepError::file(
                plan,
                format!(
                    "key `{key}` = {value}: the {task} config refuses it: {}",
                    e.message().trim()
                ),
            )
        })?;
    }
    let mut cfg: C = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| SweepError::file(plan, e.message().trim().to_string()))?;
    // Paths the plan sets are relative to the plan file (the base's were resolved against
    // its own folder when it was read).
    cfg.resolve_relative_paths(plan_dir);
    cfg.validate()
        .map_err(|e| SweepError::file(plan, format!("cell {}: {e}", describe(overrides))))?;
    // A key serde let through without keeping it (a field without deny_unknown_fields).
    let back = to_table(&cfg, plan)?;
    if let Some(key) = overrides.keys().find(|k| get_dotted(&back, k).is_none()) {
        return Err(SweepError::file(
            plan,
            format!("key `{key}` does not exist in the {task} config"),
        ));
    }
    Ok(cfg)
}

/// `key=value` pairs, for messages.
pub fn describe(overrides: &Overrides) -> String {
    if overrides.is_empty() {
        return "(base config)".to_string();
    }
    overrides.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// Sets dotted `key` in `table`, creating the tables on its path.
fn set_dotted(
    table: &mut toml::Table,
    key: &str,
    value: toml::Value,
) -> std::result::Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    let Some((last, path)) = parts.split_last() else { return Err("empty key".into()) };
    let mut t = table;
    for (i, part) in path.iter().enumerate() {
        let entry =
            t.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = match entry {
            toml::Value::Table(inner) => inner,
            _ => return Err(format!("`{}` is a value, not a table", parts[..=i].join("."))),
        };
    }
    t.insert(last.to_string(), value);
    Ok(())
}

fn get_dotted<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let mut parts = key.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

/// The JSON value with every object's keys in sorted order, whatever serde_json's map type
/// (its `preserve_order` feature may be on in the build graph).
pub fn canonical(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut entries: Vec<(String, serde_json::Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(canonical).collect())
        }
        other => other,
    }
}

/// The canonical key a cell's id hashes: compact JSON, keys sorted, of the task, the full
/// effective config, the manifest's BLAKE3, `folds` and `fold_seed` (`null` outside cls-cv).
pub fn cell_key(
    task: Task,
    config: &serde_json::Value,
    manifest_blake3: &str,
    folds: Option<usize>,
    fold_seed: Option<u64>,
) -> Result<String> {
    let key = serde_json::json!({
        "task": task.name(),
        "config": config,
        "manifest_blake3": manifest_blake3,
        "folds": folds,
        "fold_seed": fold_seed,
    });
    serde_json::to_string(&canonical(key)).map_err(|e| SweepError::file("cell key", e))
}

fn cell_id(
    task: Task,
    config: &serde_json::Value,
    manifest_blake3: &str,
    folds: Option<usize>,
    fold_seed: Option<u64>,
) -> Result<CellId> {
    let key = cell_key(task, config, manifest_blake3, folds, fold_seed)?;
    let hex = blake3::hash(key.as_bytes()).to_hex();
    Ok(CellId(hex[..CELL_ID_HEX].to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY_SEG: &str = "[model]\narch = \"unet\"\ninput_size = 32\nbase = 8\ndepth = 3\n\
                            [train]\nepochs = 2\nbatch_size = 4\n";

    /// A folder with a manifest, a base config and the plan `plan` (its `[sweep]` header
    /// given).
    fn setup(plan: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m1.csv"), "id,image\na,a.png\n").unwrap();
        std::fs::write(dir.path().join("m2.csv"), "id,image\nb,b.png\n").unwrap();
        std::fs::write(dir.path().join("base.toml"), TINY_SEG).unwrap();
        let p = dir.path().join("plan.toml");
        std::fs::write(&p, plan).unwrap();
        (dir, p)
    }

    const HEAD: &str = "[sweep]\nname = \"t\"\ntask = \"seg-train\"\nbase = \"base.toml\"\n\
                        manifests = [\"m1.csv\"]\n";

    fn ov(cell: &CellRecord, key: &str) -> serde_json::Value {
        cell.overrides[key].clone()
    }

    #[test]
    fn counts_are_list_times_grid_times_seeds_times_manifests() {
        let plan = "[sweep]\nname = \"t\"\ntask = \"seg-train\"\nbase = \"base.toml\"\n\
                    manifests = [\"m1.csv\", \"m2.csv\"]\nseeds = [1, 2, 3]\n\
                    [set]\n\"train.epochs\" = 3\n\
                    [grid]\n\"model.base\" = [4, 8]\n\"adam.lr\" = [0.001, 0.01]\n\
                    [[list]]\n\"model.input_size\" = 32\n[[list]]\n\"model.input_size\" = 64\n";
        let (_d, p) = setup(plan);
        let plan = load(&p, &[]).unwrap();
        assert_eq!(plan.record.cells.len(), 2 * 4 * 3 * 2);
        assert_eq!(plan.configs.len(), plan.record.cells.len());
        for (i, c) in plan.record.cells.iter().enumerate() {
            assert_eq!(c.index, i);
            assert_eq!(ov(c, "train.epochs"), serde_json::json!(3), "[set] reaches every cell");
        }
        assert_eq!(
            plan.record.axes,
            ["adam.lr", "model.base", "model.input_size", "seed", "manifest"]
        );
        // Every config says what its cell's overrides say.
        for (c, text) in plan.record.cells.iter().zip(&plan.configs) {
            let cfg: SegTrainConfig = toml::from_str(text).unwrap();
            assert_eq!(serde_json::json!(cfg.model.base), ov(c, "model.base"));
            assert_eq!(serde_json::json!(cfg.model.input_size), ov(c, "model.input_size"));
            assert_eq!(Some(cfg.train.seed), c.seed);
            assert_eq!(cfg.train.epochs, 3);
            assert_eq!(cfg.model.depth, 3, "the base's other keys are kept");
        }
    }

    #[test]
    fn order_is_list_grid_sorted_last_key_fastest_then_seeds_then_manifests() {
        let plan = format!(
            "{HEAD}seeds = [5, 6]\n[grid]\n\"model.base\" = [4, 8]\n\"adam.lr\" = [0.001, 0.01]\n\
             [[list]]\n\"model.input_size\" = 64\n[[list]]\n\"model.input_size\" = 32\n"
        )
        .replace("manifests = [\"m1.csv\"]", "manifests = [\"m1.csv\", \"m2.csv\"]");
        let (_d, p) = setup(&plan);
        let cells = load(&p, &[]).unwrap().record.cells;
        let row = |c: &CellRecord| {
            (
                ov(c, "model.input_size").as_i64().unwrap(),
                ov(c, "adam.lr").as_f64().unwrap(),
                ov(c, "model.base").as_i64().unwrap(),
                c.seed.unwrap(),
                c.manifest.file_name().unwrap().to_string_lossy().into_owned(),
            )
        };
        let got: Vec<_> = cells.iter().map(row).collect();
        let mut want = Vec::new();
        for size in [64, 32] {
            for lr in [0.001, 0.01] {
                for base in [4, 8] {
                    for seed in [5, 6] {
                        for m in ["m1.csv", "m2.csv"] {
                            want.push((size, lr, base, seed, m.to_string()));
                        }
                    }
                }
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn ids_are_stable_and_independent_of_position() {
        let a = format!("{HEAD}[grid]\n\"model.base\" = [4, 8, 16]\n");
        let b = format!("{HEAD}[grid]\n\"model.base\" = [16, 4]\n");
        let (_d, p) = setup(&a);
        let first = load(&p, &[]).unwrap().record.cells;
        let again = load(&p, &[]).unwrap().record.cells;
        assert_eq!(first, again, "the same plan expands to the same cells");
        std::fs::write(&p, &b).unwrap();
        let reordered = load(&p, &[]).unwrap().record.cells;
        let id_of = |cells: &[CellRecord], base: i64| {
            cells
                .iter()
                .find(|c| ov(c, "model.base") == serde_json::json!(base))
                .unwrap()
                .id
                .clone()
        };
        for base in [4, 16] {
            assert_eq!(id_of(&first, base), id_of(&reordered, base), "base {base}");
        }
        assert_ne!(id_of(&first, 4), id_of(&first, 8));
        // The id is a hash of content: a key set to the base's own value is the base's cell,
        // and another manifest content is another cell.
        std::fs::write(&p, format!("{HEAD}[set]\n\"model.depth\" = 3\n")).unwrap();
        let same_as_base = load(&p, &[]).unwrap().record.cells;
        std::fs::write(&p, HEAD).unwrap();
        let base_only = load(&p, &[]).unwrap().record.cells;
        assert_eq!(same_as_base[0].id, base_only[0].id);
        let other = load(&p, &[p.with_file_name("m2.csv")]).unwrap().record.cells;
        assert_ne!(other[0].id, base_only[0].id);
        assert!(CellId::parse(base_only[0].id.as_str()).is_some());
        // Pinned: the canonical key and its hash do not change between versions or machines.
        let key =
            cell_key(Task::ClsCv, &serde_json::json!({"b": 1, "a": [0.5]}), "ff", Some(5), Some(0))
                .unwrap();
        assert_eq!(
            key,
            r#"{"config":{"a":[0.5],"b":1},"fold_seed":0,"folds":5,"manifest_blake3":"ff","task":"cls-cv"}"#
        );
        let id =
            cell_id(Task::ClsCv, &serde_json::json!({"b": 1, "a": [0.5]}), "ff", Some(5), Some(0))
                .unwrap();
        assert_eq!(id.as_str(), &blake3::hash(key.as_bytes()).to_hex()[..CELL_ID_HEX]);
    }

    #[test]
    fn unknown_and_mistyped_keys_are_refused_naming_the_plan_and_the_key() {
        for (body, key) in [
            ("[grid]\n\"model.bogus\" = [1, 2]\n", "model.bogus"),
            ("[set]\n\"nosuch.section\" = 1\n", "nosuch.section"),
            ("[[list]]\n\"train.epochs\" = \"four\"\n", "train.epochs"),
            ("[set]\n\"train.epochs.x\" = 1\n", "train.epochs.x"),
        ] {
            let (_d, p) = setup(&format!("{HEAD}{body}"));
            let e = load(&p, &[]).unwrap_err().to_string();
            assert!(e.contains(&p.display().to_string()) && e.contains(&format!("`{key}`")), "{e}");
        }
        // Unquoted dotted keys are the same keys.
        let (_d, p) = setup(&format!("{HEAD}[grid]\nmodel.base = [4, 8]\n"));
        assert_eq!(load(&p, &[]).unwrap().record.cells.len(), 2);
        // A value the config's validation refuses.
        let (_d, p) = setup(&format!("{HEAD}[set]\n\"train.epochs\" = 0\n"));
        let e = load(&p, &[]).unwrap_err().to_string();
        assert!(e.contains("train.epochs"), "{e}");
    }

    #[test]
    fn plan_mistakes_are_refused() {
        for (body, needle) in [
            ("seeds = [1]\n[set]\n\"train.seed\" = 3\n", "`train.seed` is set by both"),
            (
                "[set]\n\"model.base\" = 4\n[grid]\n\"model.base\" = [4, 8]\n",
                "`model.base` is set by both",
            ),
            ("[grid]\n\"model.base\" = 4\n", "must be a list"),
            ("[grid]\n\"model.base\" = []\n", "no values"),
            ("[[list]]\n\"model.base\" = 4\n[[list]]\n\"model.base\" = 4\n", "same run"),
            ("folds = 3\n", "cls-cv only"),
            ("[sweeep]\n", "sweeep"),
        ] {
            // HEAD ends inside [sweep]: `folds` and `seeds` lines land there.
            let (_d, p) = setup(&format!("{HEAD}{body}"));
            let e = load(&p, &[]).unwrap_err().to_string();
            assert!(e.contains(needle), "{body}: {e}");
        }
        let (_d, p) = setup(&HEAD.replace("manifests = [\"m1.csv\"]\n", ""));
        assert!(load(&p, &[]).unwrap_err().to_string().contains("no manifest"));
        let (_d, p) = setup(&HEAD.replace("name = \"t\"", "name = \"../x\""));
        assert!(load(&p, &[]).unwrap_err().to_string().contains("sweep name"));
    }

    #[test]
    fn cls_cv_cells_cross_fold_seeds_and_record_folds() {
        let plan = "[sweep]\nname = \"cv\"\ntask = \"cls-cv\"\nmanifests = [\"m1.csv\"]\n\
                    folds = 3\nfold_seeds = [0, 1]\nseeds = [7]\n\
                    [grid]\n\"train.class_weighting\" = [\"none\", \"inverse-frequency\"]\n";
        let (_d, p) = setup(plan);
        let plan = load(&p, &[]).unwrap();
        let cells = &plan.record.cells;
        assert_eq!(cells.len(), 4);
        assert!(cells.iter().all(|c| c.folds == Some(3) && c.seed == Some(7)));
        assert_eq!(cells.iter().map(|c| c.fold_seed.unwrap()).collect::<Vec<_>>(), [0, 1, 0, 1]);
        assert_eq!(plan.record.axes, ["train.class_weighting", "fold_seed"]);
        // Fold seeds change the id, not the config.
        assert_ne!(cells[0].id, cells[1].id);
        assert_eq!(plan.configs[0], plan.configs[1]);
        let cfg: ClsTrainConfig = toml::from_str(&plan.configs[2]).unwrap();
        assert_eq!(cfg.train.class_weighting, lesion_cls::config::ClassWeighting::InverseFrequency);
    }
}
