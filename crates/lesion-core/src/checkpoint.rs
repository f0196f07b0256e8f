//! The one checkpoint format, for every task and optimiser: one safetensors file holding the
//! model (`model.*`), the optimiser's state (its own prefixes, see [`crate::optim`]) and step
//! count, and the trainer's [`TrainState`] (`meta.*`). Written to a temp file in the same folder, fsynced, then renamed, so a
//! kill at any moment leaves either the old or the new checkpoint, never a torn one.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::error::{Result, TrainError};
use crate::optim::Optimizer;
use crate::precision::GradScalerState;

const MODEL: &str = "model.";
const META_EPOCH: &str = "meta.epoch";
const META_STEP: &str = "meta.opt_step";
/// The step key of segmentation checkpoints written before the optimisers shared one format.
const LEGACY_META_STEP: &str = "meta.adam_step";
const META_BEST: &str = "meta.best_score";
const META_BEST_EPOCH: &str = "meta.best_epoch";
const META_LR: &str = "meta.lr";
const META_STALE: &str = "meta.stale_validations";
/// The learning rate the run's config set when the checkpoint was written (absent in older
/// checkpoints).
const META_CONFIG_LR: &str = "meta.config_lr";
/// The fp16 loss scaler's scale and growth tracker (absent unless the run trains in fp16).
const META_GRAD_SCALE: &str = "meta.grad_scale";
const META_GRAD_GROWTH: &str = "meta.grad_growth_tracker";

/// Trainer counters saved beside the weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainState {
    /// Number of completed epochs.
    pub epoch: usize,
    /// Best validation score so far (−∞ before any).
    pub best_score: f64,
    pub best_epoch: usize,
    pub lr: f64,
    /// Validations since the last improvement (plateau and early-stopping counter).
    pub stale_validations: usize,
    /// The learning rate the config sets (where `lr` started before any decay); `None` for a
    /// checkpoint written before it was recorded. A resumed run whose config now sets another
    /// one (an accepted config change) continues at the new rate.
    pub config_lr: Option<f64>,
    /// The fp16 loss scaler's state (`None`: not training in fp16, or none saved yet).
    pub grad_scaler: Option<GradScalerState>,
}

impl TrainState {
    /// The state of a run that has not trained yet.
    pub fn fresh(lr: f64) -> Self {
        Self {
            epoch: 0,
            best_score: f64::NEG_INFINITY,
            best_epoch: 0,
            lr,
            stale_validations: 0,
            config_lr: Some(lr),
            grad_scaler: None,
        }
    }
}

/// Writes `tensors` as safetensors to `path` atomically. As every writer of the workspace
/// ([`lesion_data::io::write_target`]): a symbolic link is followed (its target replaced, the
/// link kept), a character device or pipe is written through, a folder is refused.
pub fn write_tensors_atomic(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let cpu: Vec<(String, Tensor)> =
        tensors.iter().map(|(n, t)| (n.clone(), t.to_device(Device::Cpu).contiguous())).collect();
    let path = match lesion_data::io::write_target(path)? {
        lesion_data::io::WriteTarget::Replace(p) => p,
        lesion_data::io::WriteTarget::Stream(p) => {
            return Tensor::write_safetensors(&cpu, &p).map_err(|e| TrainError::file(&p, e));
        }
    };
    let path = path.as_path();
    let dir = path.parent().ok_or_else(|| TrainError::file(path, "no parent folder"))?;
    std::fs::create_dir_all(dir).map_err(|e| TrainError::file(dir, e))?;
    let file_name = path.file_name().and_then(|f| f.to_str()).unwrap_or("checkpoint");
    let tmp =
        dir.join(format!(".{file_name}{}{}", lesion_data::io::TMP_MARKER, std::process::id()));
    Tensor::write_safetensors(&cpu, &tmp).map_err(|e| TrainError::file(&tmp, e))?;
    let f = std::fs::File::open(&tmp).map_err(|e| TrainError::file(&tmp, e))?;
    f.sync_all().map_err(|e| TrainError::file(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::file(path, e))?;
    Ok(())
}

fn scalar(v: f64) -> Tensor {
    Tensor::from_slice(&[v]).to_kind(Kind::Double)
}

/// Saves the full training state: weights, optimiser state and counters.
pub fn save_training(
    path: &Path,
    vs: &VarStore,
    opt: &dyn Optimizer,
    state: &TrainState,
) -> Result<()> {
    let mut out: Vec<(String, Tensor)> =
        vs.variables().into_iter().map(|(n, t)| (format!("{MODEL}{n}"), t)).collect();
    out.extend(opt.state());
    out.push((META_EPOCH.into(), scalar(state.epoch as f64)));
    out.push((META_STEP.into(), scalar(opt.step_count() as f64)));
    out.push((META_BEST.into(), scalar(state.best_score)));
    out.push((META_BEST_EPOCH.into(), scalar(state.best_epoch as f64)));
    out.push((META_LR.into(), scalar(state.lr)));
    out.push((META_STALE.into(), scalar(state.stale_validations as f64)));
    if let Some(lr) = state.config_lr {
        out.push((META_CONFIG_LR.into(), scalar(lr)));
    }
    if let Some(g) = state.grad_scaler {
        out.push((META_GRAD_SCALE.into(), scalar(f64::from(g.scale))));
        out.push((META_GRAD_GROWTH.into(), scalar(g.growth_tracker as f64)));
    }
    write_tensors_atomic(path, &out)
}

/// Saves the model weights alone (for prediction).
pub fn save_model(path: &Path, vs: &VarStore) -> Result<()> {
    let tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    write_tensors_atomic(path, &tensors)
}

fn read_all(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let list = Tensor::read_safetensors(path)
        .map_err(|e| TrainError::file(path, format!("not a readable checkpoint: {e}")))?;
    Ok(list.into_iter().collect())
}

/// Copies `src` into the var store's variables; every variable must be present with its shape.
fn copy_into(
    vs: &VarStore,
    src: &BTreeMap<String, Tensor>,
    prefix: &str,
    path: &Path,
) -> Result<()> {
    let vars = vs.variables();
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vars {
            let key = format!("{prefix}{name}");
            let t = src
                .get(&key)
                .ok_or_else(|| TrainError::file(path, format!("missing tensor '{key}'")))?;
            if t.size() != var.size() {
                return Err(TrainError::file(
                    path,
                    format!("'{key}' has shape {:?}, model expects {:?}", t.size(), var.size()),
                ));
            }
            var.copy_(t);
        }
        Ok(())
    })
}

/// Loads model weights saved by [`save_model`] (or a training checkpoint) into `vs`.
pub fn load_model(path: &Path, vs: &VarStore) -> Result<()> {
    let all = read_all(path)?;
    let prefix = if all.contains_key(META_EPOCH) { MODEL } else { "" };
    copy_into(vs, &all, prefix, path)
}

/// Restores a checkpoint written by [`save_training`] into `vs` and a fresh `opt` (whose
/// learning rate becomes the saved one); returns the trainer state.
pub fn load_training(path: &Path, vs: &VarStore, opt: &mut dyn Optimizer) -> Result<TrainState> {
    let all = read_all(path)?;
    copy_into(vs, &all, MODEL, path)?;
    let get = |k: &str| -> Result<f64> {
        all.get(k)
            .map(|t| t.double_value(&[0]))
            .ok_or_else(|| TrainError::file(path, format!("missing '{k}'")))
    };
    let step = get(META_STEP).or_else(|_| get(LEGACY_META_STEP))? as i64;
    opt.restore(&all, vs.device(), step);
    let state = TrainState {
        epoch: get(META_EPOCH)? as usize,
        best_score: get(META_BEST)?,
        best_epoch: get(META_BEST_EPOCH)? as usize,
        lr: get(META_LR)?,
        stale_validations: get(META_STALE)? as usize,
        config_lr: get(META_CONFIG_LR).ok(),
        grad_scaler: match (get(META_GRAD_SCALE), get(META_GRAD_GROWTH)) {
            // The scale is a power of two in f32's range, so the f64 round trip is exact.
            (Ok(scale), Ok(growth)) => {
                Some(GradScalerState { scale: scale as f32, growth_tracker: growth as i64 })
            }
            _ => None,
        },
    };
    opt.set_lr(state.lr);
    Ok(state)
}

/// The number of epochs a checkpoint written by [`save_training`] has trained; reading it
/// reads (and so checks) the whole file.
pub fn training_epoch(path: &Path) -> Result<usize> {
    let all = read_all(path)?;
    let epoch = all.get(META_EPOCH).ok_or_else(|| {
        TrainError::file(path, format!("not a training checkpoint (no '{META_EPOCH}')"))
    })?;
    Ok(epoch.double_value(&[0]) as usize)
}

/// Paths of a run's checkpoints.
pub struct CheckpointPaths {
    pub last: PathBuf,
    pub best: PathBuf,
}

impl CheckpointPaths {
    pub fn new(run_dir: &Path) -> Self {
        let dir = run_dir.join("checkpoints");
        Self { last: dir.join("last.safetensors"), best: dir.join("best.safetensors") }
    }
}

/// A model to load: its run folder (for `config.toml`) and its weights file.
pub struct ModelSource {
    pub run_dir: PathBuf,
    pub weights: PathBuf,
}

/// Resolves a run folder (its best checkpoint) or a checkpoint file (its run folder is two
/// levels up); the weights file must exist.
pub fn resolve_model(path: &Path) -> Result<ModelSource> {
    let source = if path.is_dir() {
        ModelSource { run_dir: path.to_path_buf(), weights: CheckpointPaths::new(path).best }
    } else {
        let run_dir = path.parent().and_then(Path::parent).ok_or_else(|| {
            TrainError::file(path, "cannot find the run folder of this checkpoint")
        })?;
        ModelSource { run_dir: run_dir.to_path_buf(), weights: path.to_path_buf() }
    };
    if !source.weights.exists() {
        return Err(TrainError::file(
            &source.weights,
            "no checkpoint here (is the run folder right, and has it finished an epoch?)",
        ));
    }
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{zero_grad, Adam, AdamConfig};
    use tch::nn;

    #[test]
    fn training_state_round_trips_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ck").join("last.safetensors");
        let vs = VarStore::new(Device::Cpu);
        let lin = nn::linear(vs.root() / "fc", 4, 2, Default::default());
        let mut adam = Adam::new(AdamConfig::default());
        zero_grad(&vs);
        Tensor::ones([3, 4], (Kind::Float, Device::Cpu)).apply(&lin).sum(Kind::Float).backward();
        Optimizer::step(&mut adam, &vs);
        let state = TrainState {
            epoch: 3,
            best_score: 0.75,
            best_epoch: 2,
            lr: 5e-4,
            stale_validations: 1,
            config_lr: Some(1e-3),
            grad_scaler: Some(GradScalerState { scale: 32768.0, growth_tracker: 17 }),
        };
        save_training(&p, &vs, &adam, &state).unwrap();

        let vs2 = VarStore::new(Device::Cpu);
        let _lin2 = nn::linear(vs2.root() / "fc", 4, 2, Default::default());
        let mut adam2 = Adam::new(AdamConfig::default());
        let got = load_training(&p, &vs2, &mut adam2).unwrap();
        assert_eq!(got, state);
        assert_eq!(adam2.step, 1);
        for (name, t) in vs.variables() {
            let t2 = &vs2.variables()[&name];
            assert_eq!(f64::try_from((&t - t2).abs().max()).unwrap(), 0.0);
            assert_eq!(f64::try_from((&adam.m[&name] - &adam2.m[&name]).abs().max()).unwrap(), 0.0);
        }
        // No temp file is left behind.
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    /// A checkpoint written through a symbolic link replaces the link's target (the link
    /// stays); a FIFO gets the bytes and stays a FIFO; a folder in the way is refused by name.
    #[cfg(unix)]
    #[test]
    fn checkpoint_write_follows_links_and_streams_pipes() {
        use std::os::unix::fs::{symlink, FileTypeExt};
        let dir = tempfile::tempdir().unwrap();
        let vs = VarStore::new(Device::Cpu);
        let _ = nn::linear(vs.root() / "fc", 4, 2, Default::default());
        let real = dir.path().join("real.safetensors");
        std::fs::write(&real, b"old").unwrap();
        let link = dir.path().join("link.safetensors");
        symlink(&real, &link).unwrap();
        save_model(&link, &vs).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        load_model(&real, &vs).unwrap();

        let fifo = dir.path().join("pipe.safetensors");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        save_model(&fifo, &vs).unwrap();
        let copy = dir.path().join("from-pipe.safetensors");
        std::fs::write(&copy, reader.join().unwrap()).unwrap();
        load_model(&copy, &vs).unwrap();
        assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

        let folder = dir.path().join("best.safetensors");
        std::fs::create_dir(&folder).unwrap();
        let e = save_model(&folder, &vs).unwrap_err().to_string();
        assert!(e.contains("best.safetensors") && e.contains("is a folder"), "{e}");
    }

    #[test]
    fn shape_mismatch_names_the_file_and_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let vs = VarStore::new(Device::Cpu);
        let _ = nn::linear(vs.root() / "fc", 4, 2, Default::default());
        save_model(&p, &vs).unwrap();
        let vs2 = VarStore::new(Device::Cpu);
        let _ = nn::linear(vs2.root() / "fc", 5, 2, Default::default());
        let err = load_model(&p, &vs2).unwrap_err().to_string();
        assert!(err.contains("m.safetensors") && err.contains("fc.weight"), "{err}");
    }

    #[test]
    fn garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.safetensors");
        std::fs::write(&p, b"not a checkpoint").unwrap();
        let vs = VarStore::new(Device::Cpu);
        let err = load_model(&p, &vs).unwrap_err().to_string();
        assert!(err.contains("junk.safetensors"), "{err}");
    }
}
