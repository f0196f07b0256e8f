//! `--device cpu|cuda|cuda:N|auto`, chosen at run time; the CPU thread budget (`--threads`);
//! the CPU allocator setting.
use tch::Device;

use crate::error::{Result, TrainError};

/// Parses a device name. `auto` picks the first CUDA device when one is usable, else the CPU.
pub fn parse_device(name: &str) -> Result<Device> {
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

    #[test]
    fn devices_and_threads() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").unwrap_err().to_string().contains("tpu"));
        assert!(set_threads(100_000).unwrap_err().to_string().contains("100000"));
        assert!(set_threads(0).unwrap() >= 1);
        assert_eq!(device_name(Device::Cuda(1)), "cuda:1");
    }
}
