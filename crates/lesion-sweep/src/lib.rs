//! Sweeps: a plan of configs × seeds × folds × manifests expanded into **cells**, each an
//! ordinary run folder (`seg train`, `cls train` or `cls cv`) named by a stable hash of what it
//! computes, run by local workers or a Slurm job array, rerun safely, and collected.
//!
//! # Plan file (TOML)
//!
//! ```toml
//! [sweep]
//! name = "ph2-sweep"             # the default folder is sweeps/<name>
//! task = "cls-cv"                # seg-train | cls-train | cls-cv
//! base = "ph2-cls-lite0.toml"    # base config, relative to the plan file; absent = the task's defaults
//! manifests = ["../ph2.csv"]     # relative to the plan file, or absolute; an axis (`--manifest` replaces it)
//! seeds = [0, 1]                 # axis: sets `train.seed`
//! folds = 5                      # cls-cv only: `cls cv --folds` (default 5)
//! fold_seeds = [0]               # cls-cv only, axis: `cls cv --seed` (default [0])
//! external = "../archive.csv"    # optional; recorded in plan.json for the leaderboard and report
//! [set]                          # dotted config keys set in every cell
//! "train.epochs" = 4
//! [grid]                         # cartesian product over these dotted keys
//! "model.variant" = ["lite0", "lite1"]
//! "train.class_weighting" = ["none", "inverse-frequency"]
//! [[list]]                       # explicit alternatives, crossed with the grid; absent = one empty entry
//! "model.input_size" = 160
//! [[list]]
//! "model.input_size" = 192
//! ```
//!
//! Dotted keys may be quoted (`"train.epochs" = 4`) or written as TOML paths (`train.epochs = 4`,
//! `[set.train] epochs = 4`); a key is set by one of `[set]`, `[grid]`, `[[list]]` or `seeds`,
//! never two. Each cell's config is the base config (every key written out) with its keys
//! set, read back as the task's config type — an unknown key, a value of the wrong type or one
//! the config's validation refuses is an error naming the plan file and the key. Paths set by
//! the plan are relative to the plan file.
//!
//! **Cells and their order:** list × grid × seeds × fold_seeds × manifests, nested in that
//! order: `[[list]]` entries outermost (in file order), then the grid's combinations (keys in
//! sorted order, the last key varying fastest; values in file order), then seeds, fold seeds,
//! and manifests innermost. The index of a cell is its position in this order.
//!
//! **Cell id:** the first 12 hex digits of the BLAKE3 hash of a canonical JSON (compact, keys
//! sorted) of `{task, config, manifest_blake3, folds, fold_seed}` — the full effective config,
//! the BLAKE3 of the manifest file's bytes, and `null` folds/fold_seed outside cls-cv
//! ([`plan::cell_key`]). The same cell has the same id on every run and machine, wherever it
//! stands in the plan.
//!
//! # Sweep folder
//!
//! `plan.json` (written first, atomically; see [`plan::PlanRecord`]), then per cell
//! `cells/<id>/cell.json` ([`plan::CellRecord`]), `config.toml` (effective config), `run/`
//! (the run or cross-validation folder), `log.txt` (the cell's output, appended), and
//! `attempts.json` ([`folder::Attempt`]). A cell is complete exactly when its run folder is
//! ([`plan::Task::is_complete`]). Cells that leave an edited plan keep their folders and are
//! listed by `status`. `slurm/` holds the executor's scripts, `jobs.json` and task logs;
//! `collect.{csv,json}` the collected results.
//!
//! # Modules
//! [`plan`] (plan files, expansion, ids), [`folder`] (the sweep folder, cell states),
//! [`exec`] (running a cell, local workers), [`slurm`] (job arrays), [`status`], [`collect`].
pub mod collect;
pub mod error;
pub mod exec;
pub mod folder;
pub mod plan;
pub mod slurm;
pub mod status;

pub use error::{Result, SweepError};
pub use folder::{CellState, SweepDir};
pub use plan::{CellId, CellRecord, Plan, PlanRecord, Task};
