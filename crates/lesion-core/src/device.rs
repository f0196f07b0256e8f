//! `--device cpu|cuda|cuda:N|auto`, chosen at run time; the CPU thread budget (`--threads`);
//! the CPU allocator setting.
use tch::Device;

use crate::error::{Result, TrainError};

/// libtorch's CUDA kernels and hooks. The binary does not link it: nothing references its
/// symbols, so the linker drops it (`--as-needed`), and loading it costs every CPU run start-up
/// time. It is loaded when a CUDA device is asked for; its static initialisers register the
/// CUDA backend, as when Python's `import torch` loads it.
pub const CUDA_LIBRARY: &std::ffi::CStr = c"libtorch_cuda.so";

/// Loads [`CUDA_LIBRARY`] (found through `LD_LIBRARY_PATH` and the binary's run path, i.e. the
/// torch it was built against) once per process; `Err` names the loader's complaint.
pub fn load_cuda_backend() -> Result<()> {
    static LOADED: std::sync::OnceLock<std::result::Result<(), String>> =
        std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            // SAFETY: dlopen takes a NUL-terminated name; the handle is kept open for the life
            // of the process (never dlclosed), as libtorch's registrations require.
            let handle =
                unsafe { libc::dlopen(CUDA_LIBRARY.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if handle.is_null() {
                // SAFETY: dlerror returns a NUL-terminated message or null, valid until the next
                // dl call on this thread.
                let msg = unsafe { libc::dlerror() };
                let why = if msg.is_null() {
                    "unknown error".to_string()
                } else {
                    unsafe { std::ffi::CStr::from_ptr(msg) }.to_string_lossy().into_owned()
                };
                return Err(why);
            }
            Ok(())
        })
        .clone()
        .map_err(|why| {
            TrainError::Config(format!(
                "CUDA requested but libtorch's CUDA backend ({}) could not be loaded: {why}",
                CUDA_LIBRARY.to_string_lossy()
            ))
        })
}

/// Parses a device name. `auto` picks the first CUDA device when one is usable, else the CPU.
pub fn parse_device(name: &str) -> Result<Device> {
    if name != "cpu" {
        match load_cuda_backend() {
            Ok(()) => {}
            Err(e) if name == "auto" => tracing::debug!("{e}"),
            Err(e) => return Err(e),
        }
    }
    let dev = match name {
        "cpu" => Device::Cpu,
        "auto" => Device::cuda_if_available(),
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::Cuda(i),
            _ => {
                return Err(TrainError::Config(format!(
                    "unknown device '{other}' (expected cpu, cuda, cuda:N or auto)"
                )))
            }
        },
    };
    if let Device::Cuda(i) = dev {
        let n = tch::Cuda::device_count();
        if (i as i64) >= n {
            return Err(TrainError::Config(format!(
                "device cuda:{i} requested but {n} CUDA device(s) are visible to libtorch"
            )));
        }
    }
    Ok(dev)
}

/// glibc's mmap and trim thresholds set by [`tune_cpu_allocator`]: 1 GiB, above any single
/// activation tensor of our nets at the sizes we train (lite0 at 224², batch 16: 77 MB).
pub const MALLOC_THRESHOLD_BYTES: i32 = 1 << 30;

/// Keeps libtorch's large CPU buffers in the heap instead of fresh `mmap`s.
///
/// Why: under `no_grad`, every activation is freed as soon as the next layer has used it, and
/// glibc serves each large (> 128 KiB, dynamically raised to at most 32 MiB) request with a new
/// `mmap` and returns it with `munmap`, so every forward pass page-faults all of its activation
/// memory again. Measured on EfficientNet-Lite0, 224², batch 16, 2 threads: 7.1 M minor page
/// faults and 32 img/s by default, 0.12 M and 64-70 img/s with both thresholds at 1 GiB
/// (`crates/lesion-models/examples/infer_probe.rs`). The cost: up to 1 GiB of freed memory
/// may stay mapped to the process instead of going back to the system.
/// No effect (and nothing to do) outside Linux with glibc. Call once, early in `main`.
pub fn tune_cpu_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes glibc allocator parameters; it is thread-safe and takes
        // plain integers.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_THRESHOLD_BYTES) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_THRESHOLD_BYTES) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

/// Threads per logical core that `--threads` may ask for at most: libtorch gains nothing past
/// the cores, and an unbounded request (100,000 threads) exhausts the system's thread limit.
pub const MAX_THREADS_PER_CORE: usize = 4;

/// Sets libtorch's CPU threads: `0` keeps libtorch's default (all cores); more than
/// [`MAX_THREADS_PER_CORE`] × the logical cores is refused. Returns the threads in use.
pub fn set_threads(threads: usize) -> Result<i32> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let limit = cores * MAX_THREADS_PER_CORE;
    if threads > limit {
        return Err(TrainError::Config(format!(
            "--threads {threads} is more than {MAX_THREADS_PER_CORE} × the {cores} logical cores of this machine ({limit})"
        )));
    }
    if threads > 0 {
        let n = i32::try_from(threads)
            .map_err(|_| TrainError::Config(format!("--threads {threads} is too large")))?;
        tch::set_num_threads(n);
    }
    Ok(tch::get_num_threads())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CUDA backend loads from the torch the binary runs on when that torch ships one (the
    /// registry's default wheel does, with or without a GPU), and a failure is an error that
    /// names the library, never a silent CPU run.
    #[test]
    fn the_cuda_backend_loads_when_the_torch_has_one() {
        let ships_cuda = std::env::var("LD_LIBRARY_PATH").unwrap_or_default().split(':').any(|d| {
            let d = std::path::Path::new(d);
            d.join("libtorch_cpu.so").exists() && d.join("libtorch_cuda.so").exists()
        });
        match load_cuda_backend() {
            Ok(()) => {}
            Err(e) => {
                assert!(!ships_cuda, "libtorch_cuda.so is there but did not load: {e}");
                assert!(e.to_string().contains("libtorch_cuda.so"), "{e}");
                eprintln!("skipped: this torch has no CUDA backend ({e})");
            }
        }
        // Loading it changes nothing for the CPU.
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
    }

    #[test]
    fn devices_and_threads() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").unwrap_err().to_string().contains("tpu"));
        assert!(set_threads(100_000).unwrap_err().to_string().contains("100000"));
        assert!(set_threads(0).unwrap() >= 1);
        assert_eq!(device_name(Device::Cuda(1)), "cuda:1");
    }
}
