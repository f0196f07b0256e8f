//! Copying a checkpoint's named arrays into a built net's [`VarStore`], and per-variable
//! trainability (freezing a backbone, replacing a head).
//!
//! The nets name their variables after the checkpoint keys, so loading is a direct,
//! **strict** copy: every checkpoint key must be a variable of the same shape, and every
//! variable under the prefix must be loaded — except names the caller explicitly skips (e.g. a
//! replaced classification head). Anything else is an error naming the file and the key, so a
//! silently half-loaded net cannot happen.
use std::path::Path;

use tch::{nn::VarStore, Tensor};

use crate::weights::NamedArray;
use crate::ModelError;

/// What a strict load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Variable names written, in checkpoint order.
    pub loaded: Vec<String>,
    /// Checkpoint keys that the skip predicate excluded.
    pub skipped: Vec<String>,
}

/// Copies `arrays` into the variables `{prefix}{name}` of `vs`. `skip(name)` (called with the
/// checkpoint key, without prefix) excludes a key from both sides of the strictness check.
/// `origin` names the checkpoint in errors.
pub fn load_arrays_strict(
    vs: &VarStore,
    prefix: &str,
    arrays: &[NamedArray],
    skip: impl Fn(&str) -> bool,
    origin: &Path,
) -> Result<LoadReport, ModelError> {
    let err = |problem: String| ModelError::Weights { path: origin.to_path_buf(), problem };
    let vars = vs.variables();
    let mut report = LoadReport::default();
    tch::no_grad(|| -> Result<(), ModelError> {
        for a in arrays {
            if skip(&a.name) {
                report.skipped.push(a.name.clone());
                continue;
            }
            let key = format!("{prefix}{}", a.name);
            let mut var = vars
                .get(&key)
                .map(Tensor::shallow_clone)
                .ok_or_else(|| err(format!("the model has no variable '{key}'")))?;
            if var.size() != a.dims {
                return Err(err(format!(
                    "'{}' has shape {:?}, the model's '{key}' has {:?}",
                    a.name,
                    a.dims,
                    var.size()
                )));
            }
            let src = Tensor::from_slice(&a.data)
                .view(a.dims.as_slice())
                .to_kind(var.kind())
                .to_device(var.device());
            var.copy_(&src);
            report.loaded.push(key);
        }
        Ok(())
    })?;
    let mut missing: Vec<&String> = vars
        .keys()
        .filter(|k| {
            k.starts_with(prefix) && !skip(&k[prefix.len()..]) && !report.loaded.contains(k)
        })
        .collect();
    if !missing.is_empty() {
        missing.sort();
        return Err(err(format!(
            "the checkpoint has no tensor for {} model variable(s): {missing:?}",
            missing.len()
        )));
    }
    Ok(report)
}

/// Sets `requires_grad` of every variable whose name satisfies `select` to `trainable`; returns
/// how many changed. Frozen variables stay in the optimiser's list but get no gradient, so
/// libtorch's optimisers leave them untouched. BatchNorm running statistics are buffers, not
/// parameters: to keep a frozen backbone's statistics fixed, also run it with `train = false`.
pub fn set_trainable_where(vs: &VarStore, select: impl Fn(&str) -> bool, trainable: bool) -> usize {
    let mut n = 0;
    // Buffers (running_mean/var) never require grad; only touch the trainable set.
    let trainable_ptrs: Vec<*mut std::ffi::c_void> =
        vs.trainable_variables().iter().map(Tensor::data_ptr).collect();
    for (name, t) in vs.variables() {
        if select(&name) && trainable_ptrs.contains(&t.data_ptr()) && t.requires_grad() != trainable
        {
            let _ = t.set_requires_grad(trainable);
            n += 1;
        }
    }
    n
}

/// Removes the variables whose full names are in `names` from `vs` (named and trainable sets),
/// so that new variables can be created under the same names (tch would otherwise rename them
/// `name__N`). Returns how many were removed.
pub fn remove_variables(vs: &VarStore, names: &[String]) -> usize {
    let Ok(mut vars) = vs.variables_.lock() else { return 0 };
    let mut removed = Vec::new();
    for name in names {
        if let Some(t) = vars.named_variables.remove(name) {
            removed.push(t.data_ptr());
        }
    }
    vars.trainable_variables.retain(|v| !removed.contains(&v.tensor.data_ptr()));
    removed.len()
}
