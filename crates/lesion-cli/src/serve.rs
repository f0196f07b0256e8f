//! `lesion serve`: parsing only; the server is `lesion_serve`'s.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use lesion_serve::config::{
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PIXELS, DEFAULT_QUEUE,
    DEFAULT_TIMEOUT,
};
use lesion_serve::{Limits, ServeConfig};

use crate::RuntimeArgs;

/// The environment variable that may carry the bearer token (instead of `--token-file`).
const TOKEN_ENV: &str = "LESION_SERVE_TOKEN";
const MIB: usize = 1 << 20;

/// Image formats the server may accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UploadFormat {
    Png,
    Jpeg,
    Bmp,
}

impl UploadFormat {
    fn image_format(self) -> image::ImageFormat {
        match self {
            UploadFormat::Png => image::ImageFormat::Png,
            UploadFormat::Jpeg => image::ImageFormat::Jpeg,
            UploadFormat::Bmp => image::ImageFormat::Bmp,
        }
    }
}

#[derive(Args)]
pub struct ServeArgs {
    /// The model bundle (from `lesion export`); every file is checked against its card first.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Address to bind. The default keeps the service on this machine; give 0.0.0.0 to
    /// expose it (then set a token).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Port (0 = any free port; the first line printed says which).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Inference worker threads, each with its own copy of the nets.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Jobs waiting for a worker; beyond it requests get 429 at once.
    #[arg(long, default_value_t = DEFAULT_QUEUE)]
    pub queue: usize,
    /// Inference requests accepted at once (reading, decoding, queued or running); beyond it
    /// requests get 429 at once.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES / MIB)]
    pub max_body_mb: usize,
    /// Largest image, in pixels (width × height, read from the header before decoding).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Accepted image formats.
    #[arg(long, value_delimiter = ',', default_values_t = [UploadFormat::Png, UploadFormat::Jpeg, UploadFormat::Bmp])]
    pub formats: Vec<UploadFormat>,
    /// Longest a request waits for its answer, in seconds (503 after).
    #[arg(long, default_value_t = DEFAULT_TIMEOUT.as_secs_f64())]
    pub timeout_s: f64,
    /// A file holding the bearer token every route but health, the page and the docs needs
    /// (or set $LESION_SERVE_TOKEN).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// A class that cannot occur among the images this server will see (repeatable; e.g.
    /// seborrheic-keratosis where keratoses are not seen): answers are renormalised without
    /// it unless a request says `absent=none`. Refused at start for a bundle that cannot.
    #[arg(long, value_parser = crate::cls::parse_class)]
    pub absent: Vec<lesion_data::labels::LesionClass>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl UploadFormat {
    fn value_name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }
}

impl std::fmt::Display for UploadFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.value_name())
    }
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let token = match &a.token_file {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("{}: cannot read the token file", p.display()))?;
            Some(t.trim().to_string())
        }
        None => std::env::var(TOKEN_ENV).ok().map(|t| t.trim().to_string()),
    };
    if token.as_deref() == Some("") {
        anyhow::bail!("the bearer token is empty");
    }
    if !(a.timeout_s.is_finite() && a.timeout_s > 0.0) {
        anyhow::bail!("--timeout-s must be a positive number of seconds");
    }
    if a.formats.is_empty() {
        anyhow::bail!("--formats: give at least one of png, jpeg, bmp");
    }
    let config = ServeConfig {
        bundle: a.bundle,
        addr: SocketAddr::new(a.host, a.port),
        device: a.runtime.device,
        workers: a.workers,
        limits: Limits {
            max_body_bytes: a.max_body_mb.saturating_mul(MIB),
            max_pixels: a.max_pixels,
            formats: a.formats.iter().map(|f| f.image_format()).collect(),
            timeout: Duration::from_secs_f64(a.timeout_s),
            queue: a.queue,
            max_in_flight: a.max_in_flight,
        },
        token,
        absent: a.absent,
    };
    if !config.addr.ip().is_loopback() && config.token.is_none() {
        eprintln!(
            "warning: serving on {} without a token: anyone who reaches this address can use it",
            config.addr
        );
    }
    lesion_serve::serve_blocking(&config)?;
    Ok(())
}
