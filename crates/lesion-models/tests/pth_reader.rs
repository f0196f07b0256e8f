//! The pure-Rust `.pth` reader against tiny files written by torch itself
//! (`tools/fixtures/make_pth_reader_fixture.py`): legacy and zip formats, non-contiguous
//! tensors, storage offsets, shared storages, f16/bf16/f64/int64, nested dicts.
use std::path::{Path, PathBuf};

use lesion_models::weights::pth::{read_pth, PthFormat, StorageDtype};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/effnet").join(name)
}

fn dtype_name(d: StorageDtype) -> &'static str {
    match d {
        StorageDtype::F32 => "float32",
        StorageDtype::F64 => "float64",
        StorageDtype::F16 => "float16",
        StorageDtype::BF16 => "bfloat16",
        StorageDtype::I64 => "int64",
        StorageDtype::I32 => "int32",
        StorageDtype::I16 => "int16",
        StorageDtype::I8 => "int8",
        StorageDtype::U8 => "uint8",
        StorageDtype::Bool => "bool",
    }
}

#[test]
fn legacy_and_zip_match_torch() {
    let text =
        std::fs::read_to_string(fixture("small_expected.json")).unwrap_or_else(|e| panic!("{e}"));
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let expected = expected.as_array().cloned().unwrap_or_default();
    assert_eq!(expected.len(), 9);
    for (file, format) in
        [("small_legacy.pth", PthFormat::Legacy), ("small_zip.pth", PthFormat::Zip)]
    {
        let sd = read_pth(&fixture(file)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sd.format, format, "{file}");
        assert_eq!(sd.tensors.len(), expected.len(), "{file}");
        for (t, want) in sd.tensors.iter().zip(&expected) {
            assert_eq!(t.name, want["name"].as_str().unwrap_or_default(), "{file}");
            assert_eq!(
                dtype_name(t.dtype),
                want["dtype"].as_str().unwrap_or_default(),
                "{file} {}",
                t.name
            );
            let shape: Vec<i64> = want["shape"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
                .unwrap_or_default();
            assert_eq!(t.dims, shape, "{file} {}", t.name);
            let values: Vec<f64> = want["values"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
                .unwrap_or_default();
            let got = t.to_f32();
            assert_eq!(got.len(), values.len(), "{file} {}", t.name);
            for (g, w) in got.iter().zip(&values) {
                // Values were exact in their own dtype; f64 is rounded to f32 by to_f32.
                assert_eq!(*g, *w as f32, "{file} {}", t.name);
            }
        }
        // float_arrays drops only the int64 counter.
        let floats = sd.float_arrays();
        assert_eq!(floats.len(), expected.len() - 1);
        assert!(floats.iter().all(|a| a.name != "bn.num_batches_tracked"));
    }
}

#[test]
fn truncated_file_is_an_error_naming_it() {
    let bytes = std::fs::read(fixture("small_legacy.pth")).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cut = dir.path().join("cut.pth");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap_or_else(|e| panic!("{e}"));
    let err = read_pth(&cut).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("cut.pth") && err.contains("storage"), "{err}");
}
