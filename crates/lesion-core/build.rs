//! Compiles `shim/autocast.cpp` (libtorch's per-device autocast state, see `src/precision.rs`)
//! against the libtorch tch links, found as torch-sys finds it: torch-sys (`links = "tch"`)
//! prints `cargo:libtorch_lib=<lib>`, which reaches this script as `DEP_TCH_LIBTORCH_LIB`; the
//! headers are in `<lib>/../include`. Flags as torch-sys's own libtch build.
use std::path::PathBuf;

const SHIM: &str = "shim/autocast.cpp";
const LIB_ENV: &str = "DEP_TCH_LIBTORCH_LIB";
/// torch-sys reads the ABI from Python with LIBTORCH_USE_PYTORCH, else from this variable
/// (default "1"); the venv's torch 2.11 reports `_GLIBCXX_USE_CXX11_ABI = True`.
const ABI_ENV: &str = "LIBTORCH_CXX11_ABI";
const DEFAULT_ABI: &str = "1";

fn main() {
    println!("cargo:rerun-if-changed={SHIM}");
    println!("cargo:rerun-if-env-changed={LIB_ENV}");
    println!("cargo:rerun-if-env-changed={ABI_ENV}");
    let Some(lib) = std::env::var_os(LIB_ENV).map(PathBuf::from) else {
        // A build script has no error channel but its exit status: stop with the reason.
        eprintln!("{LIB_ENV} is not set: torch-sys did not say where libtorch is");
        std::process::exit(1);
    };
    let include = lib.join("../include");
    let abi = std::env::var(ABI_ENV).unwrap_or_else(|_| DEFAULT_ABI.to_owned());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file(SHIM)
        .compile("lesion_autocast");
}
