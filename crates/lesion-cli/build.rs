// tch-rs's advice for binaries that must find CUDA at run time: force-link libtorch
// (the linker would otherwise drop libtorch_cuda, which nothing references by symbol).
fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
    }
}
