//! The benchmarks' side of "the same work in PyTorch": a timing helper both sides agree on and
//! the one runner of the reference scripts in `bench/` (each prints one JSON object as its last
//! line, the same record our side measures).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::de::DeserializeOwned;
use tch::Device;

use crate::error::{Result, TrainError};

/// The environment variable naming the Python with torch (set by `env.sh`).
pub const PYTHON_ENV: &str = "LESION_PYTHON";
/// The Python used when neither an explicit one nor [`PYTHON_ENV`] is given.
const DEFAULT_PYTHON: &str = "python3";

/// Waits for the device's queued work (CUDA kernels run asynchronously).
pub fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Times `f` over `warmup` untimed and `steps` timed calls; returns the timed seconds.
pub fn timed(device: Device, warmup: usize, steps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    sync(device);
    let t = Instant::now();
    for _ in 0..steps {
        f();
    }
    sync(device);
    t.elapsed().as_secs_f64()
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The Python to run a reference with: `explicit`, else `$LESION_PYTHON`, else `python3`.
pub fn python(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(PYTHON_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PYTHON))
}

/// `--name value` pairs as command-line arguments.
pub fn flags(pairs: &[(&str, String)]) -> Vec<String> {
    pairs.iter().flat_map(|(k, v)| [k.to_string(), v.clone()]).collect()
}

/// Runs `python script args…` and parses the last line of its standard output as `T`.
/// Errors name the script and show its standard error or the unexpected line.
pub fn run_script<T: DeserializeOwned>(python: &Path, script: &Path, args: &[String]) -> Result<T> {
    let out = Command::new(python).arg(script).args(args).output().map_err(|e| {
        TrainError::file(script, format!("could not run it with {}: {e}", python.display()))
    })?;
    if !out.status.success() {
        return Err(TrainError::file(
            script,
            format!("failed: {}", String::from_utf8_lossy(&out.stderr)),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("");
    serde_json::from_str(last)
        .map_err(|e| TrainError::file(script, format!("unexpected output {last:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_a_script_and_names_it_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.sh");
        std::fs::write(&ok, "echo noise\necho '{\"x\": 2.5}'\n").unwrap();
        #[derive(Debug, serde::Deserialize)]
        struct X {
            x: f64,
        }
        let v: X = run_script(Path::new("sh"), &ok, &[]).unwrap();
        assert_eq!(v.x, 2.5);
        let bad = dir.path().join("bad.sh");
        std::fs::write(&bad, "echo oops >&2\nexit 3\n").unwrap();
        let err = run_script::<X>(Path::new("sh"), &bad, &[]).unwrap_err().to_string();
        assert!(err.contains("bad.sh") && err.contains("oops"), "{err}");
        assert!(timed(Device::Cpu, 1, 2, || {}) >= 0.0);
    }
}
