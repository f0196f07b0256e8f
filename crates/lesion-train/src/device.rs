//! `--device cpu|cuda|cuda:N|auto`, chosen at run time.
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
            _ => return Err(TrainError::Config(format!("unknown device '{other}' (expected cpu, cuda, cuda:N or auto)"))),
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

pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}
