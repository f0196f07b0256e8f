//! Fuzz harness of the pure-Rust weight readers (stable toolchain, proptest; see
//! `lesion-data/tests/common/mutate.rs`): PyTorch `.pth` (legacy pickle and zip) and the
//! pickle machine itself, ONNX protobuf, safetensors, HDF5 and Keras `.keras` archives, and
//! `read_any`'s dispatch by extension. Each target feeds arbitrary bytes and mutations of small
//! real files (the torch-written fixtures, files built here) and checks that the reader returns
//! `Ok` or an error naming the file, never a panic. Cases per target: `PROPTEST_CASES` (256 by
//! default).
#[path = "../../lesion-data/tests/common/mutate.rs"]
mod mutate;

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use lesion_models::weights::onnx::{
    initializers_from_bytes, GraphProto, ModelProto, TensorProto, ONNX_FLOAT,
};
use lesion_models::weights::{hdf5, pickle, pth, read_any, safetensors as st};
use mutate::{inputs, outcome};
use proptest::prelude::*;
use prost::Message;

fn fixture(rel: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn pth_seeds() -> Vec<Vec<u8>> {
    vec![fixture("effnet/small_legacy.pth"), fixture("effnet/small_zip.pth")]
}

/// The pickles inside the fixtures: `data.pkl` of the zip file and the legacy file's stream.
fn pickle_seeds() -> Vec<Vec<u8>> {
    let mut zip = zip::ZipArchive::new(Cursor::new(fixture("effnet/small_zip.pth"))).unwrap();
    let name = (0..zip.len())
        .map(|i| zip.by_index(i).unwrap().name().to_string())
        .find(|n| n.ends_with("data.pkl"))
        .unwrap();
    let mut pkl = Vec::new();
    zip.by_name(&name).unwrap().read_to_end(&mut pkl).unwrap();
    vec![pkl, fixture("effnet/small_legacy.pth")]
}

/// A small ONNX model: float initializers as `raw_data` and as `float_data`, a scalar, and an
/// int64 one (skipped by the reader).
fn onnx_seeds() -> Vec<Vec<u8>> {
    let raw: Vec<u8> = (0..6).flat_map(|i| (i as f32 * 0.5).to_le_bytes()).collect();
    let tensor = |name: &str, dims: Vec<i64>, data_type, raw_data, float_data| TensorProto {
        dims,
        data_type,
        float_data,
        name: name.into(),
        raw_data,
        data_location: 0,
    };
    let model = ModelProto {
        ir_version: 7,
        producer_name: "fuzz".into(),
        graph: Some(GraphProto {
            name: "g".into(),
            initializer: vec![
                tensor("conv.weight", vec![2, 3], ONNX_FLOAT, raw, vec![]),
                tensor("conv.bias", vec![2], ONNX_FLOAT, vec![], vec![0.25, -1.0]),
                tensor("scale", vec![], ONNX_FLOAT, vec![], vec![3.0]),
                tensor("steps", vec![1], 7, 7i64.to_le_bytes().to_vec(), vec![]),
            ],
        }),
    };
    vec![model.encode_to_vec()]
}

/// A small safetensors file in every float dtype the reader converts (and an integer one it
/// skips), and the VGG-16 fixture.
fn safetensors_seeds() -> Vec<Vec<u8>> {
    use safetensors::tensor::{serialize, Dtype, TensorView};
    let f32s: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let f64s: Vec<u8> = (0..2).flat_map(|i| (i as f64 - 0.5).to_le_bytes()).collect();
    let f16s: Vec<u8> = [0x3C00u16, 0xC000].iter().flat_map(|v| v.to_le_bytes()).collect();
    let bf16s: Vec<u8> = [0x3F80u16, 0x4000].iter().flat_map(|v| v.to_le_bytes()).collect();
    let i64s: Vec<u8> = 3i64.to_le_bytes().to_vec();
    let views = vec![
        ("a.weight", TensorView::new(Dtype::F32, vec![2, 3], &f32s).unwrap()),
        ("b.f64", TensorView::new(Dtype::F64, vec![2], &f64s).unwrap()),
        ("c.f16", TensorView::new(Dtype::F16, vec![2], &f16s).unwrap()),
        ("d.bf16", TensorView::new(Dtype::BF16, vec![1, 2], &bf16s).unwrap()),
        ("e.steps", TensorView::new(Dtype::I64, vec![], &i64s).unwrap()),
    ];
    vec![serialize(views, None).unwrap(), fixture("vgg16/vgg16_activations.safetensors")]
}

fn hdf5_seeds() -> Vec<Vec<u8>> {
    vec![fixture("hdf5/chunked.h5"), fixture("hdf5/small.h5")]
}

/// `.keras` archives: the HDF5 fixture as `model.weights.h5`, stored (as Keras writes it) and
/// deflated, beside the archive's JSON config.
fn keras_seeds() -> Vec<Vec<u8>> {
    [zip::CompressionMethod::Stored, zip::CompressionMethod::Deflated]
        .into_iter()
        .map(|method| {
            let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
            let options = zip::write::SimpleFileOptions::default().compression_method(method);
            zip.start_file("config.json", options).unwrap();
            zip.write_all(br#"{"class_name": "Functional"}"#).unwrap();
            zip.start_file(hdf5::KERAS_WEIGHTS_MEMBER, options).unwrap();
            zip.write_all(&fixture("hdf5/small.h5")).unwrap();
            zip.finish().unwrap().into_inner()
        })
        .collect()
}

fn write_tmp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Every reader accepts its unmutated seeds, so mutations start from files that reach deep
/// into it.
#[test]
fn seeds_are_accepted_by_their_readers() {
    let origin = Path::new("seed");
    for s in pth_seeds() {
        assert!(!pth::read_pth_bytes(&s, origin).unwrap().tensors.is_empty());
    }
    for s in pickle_seeds() {
        pickle::run(&s, Ok).unwrap();
    }
    assert_eq!(initializers_from_bytes(&onnx_seeds()[0], origin).unwrap().len(), 3);
    assert_eq!(st::safetensors_bytes_f32(&safetensors_seeds()[0], origin).unwrap().len(), 4);
    // small.h5 reads whole; chunked.h5 gets as far as its one compressed dataset.
    let [chunked, small] = <[Vec<u8>; 2]>::try_from(hdf5_seeds()).unwrap();
    assert!(!hdf5::read_hdf5_bytes(&small, origin).unwrap().is_empty());
    let err = hdf5::read_hdf5_bytes(&chunked, origin).unwrap_err().to_string();
    assert!(err.contains("layers/zipped/vars/0") && err.contains("compressed"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    for s in keras_seeds() {
        let p = write_tmp(tmp.path(), "m.keras", &s);
        assert!(!hdf5::read_keras_archive(&p).unwrap().is_empty());
    }
}

proptest! {
    #[test]
    fn pth_reads_or_refuses(bytes in inputs(pth_seeds())) {
        let origin = Path::new("fuzzed.pth");
        outcome("read_pth_bytes", Some("fuzzed.pth"), pth::read_pth_bytes(&bytes, origin))?;
    }

    #[test]
    fn pickles_run_or_refuse(bytes in inputs(pickle_seeds())) {
        outcome("pickle::run_plain", None, pickle::run_plain(&bytes))?;
        outcome("pickle::run", None, pickle::run(&bytes, Ok))?;
    }

    #[test]
    fn onnx_reads_or_refuses(bytes in inputs(onnx_seeds())) {
        let origin = Path::new("fuzzed.onnx");
        outcome("initializers_from_bytes", Some("fuzzed.onnx"), initializers_from_bytes(&bytes, origin))?;
    }

    #[test]
    fn safetensors_read_or_refuse(bytes in inputs(safetensors_seeds())) {
        let origin = Path::new("fuzzed.safetensors");
        outcome("safetensors_bytes_f32", Some("fuzzed.safetensors"), st::safetensors_bytes_f32(&bytes, origin))?;
    }

    #[test]
    fn hdf5_reads_or_refuses(bytes in inputs(hdf5_seeds())) {
        let origin = Path::new("fuzzed.h5");
        outcome("read_hdf5_bytes", Some("fuzzed.h5"), hdf5::read_hdf5_bytes(&bytes, origin))?;
    }

    #[test]
    fn keras_archives_read_or_refuse(bytes in inputs(keras_seeds())) {
        let tmp = tempfile::tempdir().unwrap();
        let p = write_tmp(tmp.path(), "fuzzed.keras", &bytes);
        outcome("read_keras_archive", Some("fuzzed.keras"), hdf5::read_keras_archive(&p))?;
    }

    /// `read_any` on any bytes under each extension it dispatches on (and one it refuses).
    #[test]
    fn read_any_reads_or_refuses(bytes in inputs(
        [pth_seeds(), onnx_seeds(), safetensors_seeds(), hdf5_seeds(), keras_seeds()].concat()
    )) {
        let tmp = tempfile::tempdir().unwrap();
        for ext in ["pth", "onnx", "safetensors", "h5", "keras", "npz"] {
            let name = format!("fuzzed.{ext}");
            let p = write_tmp(tmp.path(), &name, &bytes);
            outcome("read_any", Some(&name), read_any(&p))?;
        }
    }
}
