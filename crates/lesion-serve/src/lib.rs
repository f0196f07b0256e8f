//! `lesion serve`: a model bundle behind an HTTP API and a web page.
//!
//! ```text
//! client ─HTTP─> axum (tokio) ── auth ── metrics ── handler: limits, body read,
//!                                                   decode (blocking pool) ──bounded queue──>
//!                                                   inference workers (OS threads, libtorch)
//! ```
//! The nets run on their own threads ([`pool`]); the async side only parses, limits, queues
//! and answers. A full queue or in-flight cap is answered 429 at once; a client waits at most
//! the timeout (503 after). SIGTERM or Ctrl-C stops accepting connections, lets the requests
//! in flight finish, then stops the workers.
pub mod api;
pub mod config;
pub mod pool;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use lesion_pipeline::bundle::Bundle;

pub use api::{ApiDoc, ApiError, Shared};
pub use config::{Limits, ServeConfig};

/// Paths answered without the bearer token: liveness and readiness (probes carry no token),
/// and the static page, docs page and OpenAPI document (they hold no model or data).
const PUBLIC_PATHS: [&str; 5] = ["/health/live", "/health/ready", "/", "/docs", "/openapi.json"];
/// Room for multipart framing around an image of `max_body_bytes`.
const MULTIPART_OVERHEAD: usize = 64 << 10;

/// Errors of starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Bundle(#[from] lesion_core::TrainError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Setup(String),
}

/// The routes, with the state they share.
pub fn router(state: Shared) -> Router {
    let limit = state.limits.max_body_bytes + MULTIPART_OVERHEAD;
    Router::new()
        .route("/", get(api::index))
        .route("/docs", get(api::docs))
        .route("/openapi.json", get(api::openapi))
        .route("/health/live", get(api::live))
        .route("/health/ready", get(api::ready))
        .route("/v1/models", get(api::models))
        .route("/v1/segment", post(api::segment))
        .route("/v1/classify", post(api::classify))
        .route("/v1/analyze", post(api::analyze))
        .route("/metrics", get(api::metrics))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), authorize))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), track))
        .with_state(state)
}

/// Counts and times every request (outermost layer: refusals are counted too).
async fn track(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let t0 = Instant::now();
    state.metrics.in_flight_http.inc();
    let response = next.run(req).await;
    state.metrics.in_flight_http.dec();
    let m = &state.metrics;
    m.latency.with_label_values(&[route.as_str()]).observe(t0.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[route.as_str(), method.as_str(), response.status().as_str()])
        .inc();
    response
}

/// The optional bearer token, compared in constant time.
async fn authorize(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let Some(token) = state.token.as_deref() else { return next.run(req).await };
    if PUBLIC_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        next.run(req).await
    } else {
        let refused = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server needs 'Authorization: Bearer <token>'",
        );
        let mut r = api::refuse(&state.limits, req, refused).await.into_response();
        r.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        r
    }
}

/// Equal length and equal bytes, without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Opens (verifies) the bundle, starts the workers and builds the shared state.
pub fn prepare(config: &ServeConfig) -> Result<Shared, ServeError> {
    let bundle = Bundle::open(&config.bundle)?;
    if config.workers == 0 {
        return Err(ServeError::Setup("--workers must be at least 1".into()));
    }
    if config.limits.queue == 0 || config.limits.max_in_flight == 0 {
        return Err(ServeError::Setup("--queue and --max-in-flight must be at least 1".into()));
    }
    let card = bundle.card.clone();
    // Checked before any worker loads: a server told of absent classes its bundle cannot
    // take out does not start.
    let absent_rule = lesion_pipeline::engine::AbsentRule::of(&bundle)?;
    let absent = absent_rule.check(&config.absent)?;
    let pool = pool::Pool::start(bundle, config.device, config.workers, config.limits.queue);
    let metrics = telemetry::Metrics::new().map_err(|e| ServeError::Setup(e.to_string()))?;
    let state = api::AppState::new(
        pool,
        card,
        config.limits.clone(),
        metrics,
        config.token.clone(),
        api::AbsentPolicy { rule: absent_rule, default: absent },
    )
    .map_err(|e| ServeError::Setup(format!("model card: {e}")))?;
    Ok(Arc::new(state))
}

/// Serves on `listener` until `shutdown` resolves, then lets the requests in flight finish
/// and stops the workers.
pub async fn run(
    listener: TcpListener,
    state: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(Arc::clone(&state));
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    let stopping = Arc::clone(&state);
    // Joining worker threads blocks: off the runtime.
    let _ = tokio::task::spawn_blocking(move || stopping.pool.stop()).await;
    served
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing the requests in flight");
}

/// A server running on its own threads (for tests and embedding).
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// Base URL, e.g. `http://127.0.0.1:43121`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop: as SIGTERM does.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(std::io::Error::other("server panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Binds `config.addr` and serves on a runtime of its own, in the background.
pub fn start(config: &ServeConfig) -> Result<RunningServer, ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Setup(format!("tokio runtime: {e}")))?;
    let listener = runtime
        .block_on(TcpListener::bind(config.addr))
        .map_err(|source| ServeError::Bind { addr: config.addr, source })?;
    let addr =
        listener.local_addr().map_err(|source| ServeError::Bind { addr: config.addr, source })?;
    let state = prepare(config)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = Arc::clone(&state);
    let thread = std::thread::Builder::new()
        .name("lesion-serve".into())
        .spawn(move || {
            runtime.block_on(run(listener, serving, async {
                let _ = stopped.await;
            }))
        })
        .map_err(|e| ServeError::Setup(format!("server thread: {e}")))?;
    Ok(RunningServer { addr, state, stop: Some(stop), thread: Some(thread) })
}

/// `lesion serve`: binds, says where, serves until SIGTERM / Ctrl-C.
pub fn serve_blocking(config: &ServeConfig) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Setup(format!("tokio runtime: {e}")))?;
    runtime.block_on(async {
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| ServeError::Bind { addr: config.addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr: config.addr, source })?;
        let state = prepare(config)?;
        // Machine-readable first line (scripts wait for it), then the human hints.
        println!("listening on http://{addr}");
        eprintln!(
            "lesion serve: page http://{addr}/ · API docs http://{addr}/docs · ready when \
             http://{addr}/health/ready says so (loading the bundle and one warm-up pass)"
        );
        run(listener, state, shutdown_signal())
            .await
            .map_err(|source| ServeError::Bind { addr, source })
    })
}
