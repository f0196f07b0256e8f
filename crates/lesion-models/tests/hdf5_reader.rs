//! The pure-Rust HDF5 reader against files written by h5py (libver='earliest'); fixtures and
//! their generator: `tools/fixtures/make_hdf5_fixture.py`.
use std::path::{Path, PathBuf};

use lesion_models::weights::hdf5::read_hdf5;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hdf5").join(name)
}

/// Every dataset (nested groups, a multi-level group B-tree, f32/f64/i64/i32/u8/i16, a scalar,
/// an empty one, a compact one, one whose header continues in a second block) with the values
/// h5py wrote, in path order.
#[test]
fn reads_what_h5py_writes() {
    let arrays = read_hdf5(&fixture("small.h5")).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(fixture("small_expected.json")).unwrap();
    let expected: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = arrays.iter().map(|a| a.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "datasets come in path order");
    assert_eq!(arrays.len(), expected.len(), "{names:?}");
    for a in &arrays {
        let e = expected.get(&a.name).unwrap_or_else(|| panic!("unexpected dataset {}", a.name));
        let dims: Vec<i64> =
            e["dims"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect();
        assert_eq!(a.dims, dims, "{}", a.name);
        let values: Vec<f32> =
            e["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_eq!(a.data, values, "{}", a.name);
    }
    let scalar = arrays.iter().find(|a| a.name == "i64_scalar").unwrap();
    assert!(scalar.dims.is_empty() && scalar.data == vec![7.0]);
    assert!(arrays.iter().any(|a| a.name == "a/b/c/w" && a.dims == vec![2, 3, 4]));
    assert_eq!(arrays.iter().filter(|a| a.name.starts_with("many/")).count(), 300);
}

/// Chunked, compressed storage is refused with the dataset's path and the reason.
#[test]
fn refuses_chunked_storage_naming_the_dataset() {
    let err = read_hdf5(&fixture("chunked.h5")).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("chunked.h5"), "{err}");
    assert!(err.contains("layers/zipped/vars/0"), "{err}");
    assert!(err.contains("chunked") || err.contains("compressed"), "{err}");
}

/// A file that is not HDF5 at all names the file.
#[test]
fn truncated_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("small.h5")).unwrap();
    let cut = dir.path().join("cut.h5");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let err = read_hdf5(&cut).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("cut.h5"), "{err}");
}
