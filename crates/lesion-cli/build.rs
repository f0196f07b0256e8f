//! Links `lesion` so that it finds the libtorch it was built against without `env.sh`:
//! RUNPATH entries for that folder, absolute and relative to the binary (so a moved checkout
//! still works). RUNPATH, not RPATH (`--enable-new-dtags`): `LD_LIBRARY_PATH` still wins,
//! which is how a GPU machine points the same binary at its own CUDA libtorch.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        println!("cargo:warning=torch-sys did not say where libtorch is: no rpath set");
        return;
    };
    if !cfg!(target_os = "linux") {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-Wl,--enable-new-dtags");
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{}", lib.display());
    // target/<profile>/lesion → the workspace root is two folders up from $ORIGIN.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if let (Ok(ws), Ok(lib)) = (workspace.canonicalize(), lib.canonicalize()) {
        if let Ok(rel) = lib.strip_prefix(&ws) {
            println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN/../../{}", rel.display());
        }
    }
}
