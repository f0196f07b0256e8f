//! Prometheus metrics: requests by route, method and status; latency histograms by route;
//! requests in flight; the inference queue's depth; readiness.
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// The content type of the text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Latency buckets, in seconds: a warm forward pass is tens of ms on a GPU, seconds on 2 CPU
/// cores with TTA ×8.
const LATENCY_BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0];

/// The service's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    /// HTTP requests being answered (all routes).
    pub in_flight_http: IntGauge,
    /// Inference requests holding an in-flight permit (decoding, queued or running).
    pub in_flight_inference: IntGauge,
    pub queue_depth: IntGauge,
    pub ready: IntGauge,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new_custom(Some("lesion".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered, by route, method and status"),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "Time to answer, by route")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let in_flight_http =
            IntGauge::new("http_requests_in_flight", "HTTP requests being answered")?;
        let in_flight_inference = IntGauge::new(
            "inference_requests_in_flight",
            "Inference requests decoding, queued or running",
        )?;
        let queue_depth =
            IntGauge::new("inference_queue_depth", "Jobs waiting for an inference worker")?;
        let ready = IntGauge::new("ready", "1 when the bundle is loaded and warmed up")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(in_flight_http.clone()))?;
        registry.register(Box::new(in_flight_inference.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(ready.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            in_flight_http,
            in_flight_inference,
            queue_depth,
            ready,
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Result<String, String> {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .map_err(|e| format!("cannot encode metrics: {e}"))?;
        String::from_utf8(buf).map_err(|e| format!("metrics are not UTF-8: {e}"))
    }
}
