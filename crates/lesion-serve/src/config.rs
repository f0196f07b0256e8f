//! What `lesion serve` is told: where to listen, the bundle, workers and limits.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use image::ImageFormat;
use lesion_data::labels::LesionClass;
use tch::Device;

/// Default body limit: a full-resolution dermoscopic JPEG is 1-10 MB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 << 20;
/// Default decoded pixel limit: the largest ISIC Archive images are about 6700×4500.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_QUEUE: usize = 64;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 128;
/// The formats decoded by default (what dermoscopy data sets ship).
pub const DEFAULT_FORMATS: [ImageFormat; 3] =
    [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Bmp];

/// Request limits; every one can be changed on the command line.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// Width × height above which an image is refused from its header, before decoding.
    pub max_pixels: u64,
    /// Accepted image formats (sniffed from the bytes, not the declared type).
    pub formats: Vec<ImageFormat>,
    /// Longest a client waits for its answer (503 after).
    pub timeout: Duration,
    /// Jobs waiting for a worker; one more is answered 429 at once.
    pub queue: usize,
    /// Inference requests past the body read at once; one more is answered 429 at once.
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_pixels: DEFAULT_MAX_PIXELS,
            formats: DEFAULT_FORMATS.to_vec(),
            timeout: DEFAULT_TIMEOUT,
            queue: DEFAULT_QUEUE,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

impl Limits {
    /// The accepted formats in words (`png, jpg, bmp`).
    pub fn format_names(&self) -> String {
        let names: Vec<&str> =
            self.formats.iter().filter_map(|f| f.extensions_str().first().copied()).collect();
        names.join(", ")
    }
}

/// Everything the server needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub bundle: PathBuf,
    /// 127.0.0.1 unless told otherwise; port 0 = any free port.
    pub addr: SocketAddr,
    pub device: Device,
    /// Inference threads, each with its own copy of the nets.
    pub workers: usize,
    pub limits: Limits,
    /// When set, every route but health, the page and the API docs needs
    /// `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Classes that cannot occur among the images this server will see (a clinic that sees
    /// no keratoses): its answers are renormalised without them unless a request says
    /// otherwise (`absent=`). Checked against the bundle at start.
    pub absent: Vec<LesionClass>,
}
