//! The HTTP API: routes, request parsing and limits, answers, errors, the OpenAPI document.
//!
//! Every error is JSON, `{"error": {"status", "code", "message"}}`, with the status that says
//! whose fault it is: 400 (malformed request, empty body), 401 (token), 404, 405, 413 (body or
//! decoded pixel count over the limit), 415 (not an accepted content type or image format),
//! 422 (an accepted format that does not decode: truncated, corrupt), 429 (queue or in-flight
//! cap full: answered at once, with `Retry-After`), 503 (not ready, stopping, timed out).
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use image::{ImageFormat, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Semaphore};
use utoipa::{IntoParams, OpenApi, ToSchema};

use lesion_cls::tta::TtaMode;
use lesion_data::io::InputConcern;
use lesion_data::labels::LesionClass;
use lesion_pipeline::bundle::{BundleCard, DecisionThresholds};
use lesion_pipeline::engine::{AbsentClasses, AbsentRule, Analysis, Segmented};

use crate::config::Limits;
use crate::pool::{deadline, Job, Pool, Refusal, Work};
use crate::telemetry::Metrics;

/// The page at `/` and the API docs page at `/docs`, compiled into the binary (no CDN).
const INDEX_HTML: &str = include_str!("../assets/index.html");
const DOCS_HTML: &str = include_str!("../assets/docs.html");
/// Seconds a client is told to wait before retrying a 429 or 503.
const RETRY_AFTER_SECONDS: &str = "1";
/// The most random TTA replicas a request may ask for (each is one forward pass).
pub const MAX_TTA_REPLICAS: usize = 32;
/// What `tta` says for a stacked classifier (each component predicts with its own).
const STACK_TTA: &str = "stack: each component's own";
/// Accepted patient ages, in years.
const AGE_RANGE: std::ops::RangeInclusive<f64> = 0.0..=120.0;
/// The `absent` query value of the three-class question.
const ABSENT_NONE: &str = "none";

/// What every handler shares.
pub struct AppState {
    pub pool: Pool,
    pub card: BundleCard,
    pub card_json: serde_json::Value,
    pub limits: Limits,
    pub metrics: Metrics,
    /// Requests past the body read (decoding, queued, or in inference): the in-flight cap.
    pub in_flight: Arc<Semaphore>,
    pub token: Option<String>,
    pub has_segmentation: bool,
    pub has_classification: bool,
    pub absent: AbsentPolicy,
    uploads: AtomicU64,
}

/// Which classes a request's classification leaves out.
#[derive(Debug, Clone)]
pub struct AbsentPolicy {
    /// What the bundle's classifiers allow (requests are checked against it).
    pub rule: AbsentRule,
    /// Without `absent=` in the request (`lesion serve --absent`; usually none).
    pub default: AbsentClasses,
}

impl AppState {
    pub fn new(
        pool: Pool,
        card: BundleCard,
        limits: Limits,
        metrics: Metrics,
        token: Option<String>,
        absent: AbsentPolicy,
    ) -> serde_json::Result<AppState> {
        Ok(AppState {
            pool,
            card_json: serde_json::to_value(&card)?,
            has_segmentation: card.models_of(lesion_pipeline::bundle::Task::Segmentation).count()
                > 0,
            has_classification: card.stack.is_some()
                || card.models_of(lesion_pipeline::bundle::Task::Classification).count() > 0,
            card,
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            limits,
            metrics,
            token,
            absent,
            uploads: AtomicU64::new(0),
        })
    }
}

pub type Shared = Arc<AppState>;

// ---------------------------------------------------------------------------------------------
// Errors

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// The HTTP status, repeated.
    pub status: u16,
    /// A stable machine-readable code (`payload_too_large`, `unsupported_media_type`, …).
    pub code: String,
    /// What was wrong, in words, with the limit or value involved.
    pub message: String,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }
    fn unsupported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
    }
    fn undecodable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable_image", message)
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameter", message)
    }
    fn busy(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
    }
    fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                status: self.status.as_u16(),
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut r = (self.status, Json(body)).into_response();
        if matches!(self.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        r
    }
}

/// 404 for any unknown path.
pub async fn not_found(req: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no route {}", req.uri().path()))
}

/// 405 for a known path with another method.
pub async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

// ---------------------------------------------------------------------------------------------
// Answers

/// The uploaded image as the server read it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageSize {
    pub width: u32,
    pub height: u32,
    /// What makes the answer on this image doubtful though it decoded (greyscale, very
    /// small), judged from its header as `lesion predict` judges manifest images; empty for
    /// an ordinary dermoscopic image.
    #[serde(default)]
    pub concerns: Vec<Concern>,
}

/// One [`lesion_data::io::InputConcern`] of an upload.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Concern {
    /// `greyscale` or `small`.
    pub kind: String,
    /// A sentence for people.
    pub message: String,
}

impl From<InputConcern> for Concern {
    fn from(c: InputConcern) -> Self {
        let kind = match c {
            InputConcern::Greyscale => "greyscale",
            InputConcern::Small { .. } => "small",
        };
        Concern { kind: kind.to_string(), message: c.describe() }
    }
}

/// A pixel rectangle: top-left corner and size.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct BoundingBox {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// The lesion the segmentation found.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Segmentation {
    /// Mean lesion probability above which a pixel is lesion (the bundle's).
    pub threshold: f64,
    pub lesion_found: bool,
    /// Lesion pixels, at the image's own size.
    pub area_px: u64,
    /// Lesion pixels / image pixels.
    pub area_fraction: f64,
    /// The lesion's bounding box; null when no lesion was found.
    pub bbox: Option<BoundingBox>,
    /// Boundary pixels (4-neighbour): the perimeter's estimate.
    pub perimeter_px: u64,
    /// perimeter² / (4π · area): about 0.8 for a digital disc, larger for irregular borders;
    /// null when no lesion was found.
    pub compactness: Option<f64>,
    /// The mask as an 8-bit grey PNG (lesion 255), base64, with `include_mask=true`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mask_png_base64: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct Probabilities {
    pub melanoma: f64,
    pub seborrheic_keratosis: f64,
    pub nevus: f64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct Decisions {
    pub melanoma: bool,
    pub seborrheic_keratosis: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct Thresholds {
    pub melanoma: f64,
    pub seborrheic_keratosis: f64,
}

impl From<DecisionThresholds> for Thresholds {
    fn from(t: DecisionThresholds) -> Self {
        Self { melanoma: t.melanoma, seborrheic_keratosis: t.seborrheic_keratosis }
    }
}

/// The classifiers' answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Classification {
    /// Averaged over the bundle's classifiers, each with its TTA.
    pub probabilities: Probabilities,
    /// The bundle's decision thresholds (probability above = positive).
    pub thresholds: Thresholds,
    pub decisions: Decisions,
    /// The TTA used (`fixed8`, `none`, a replica count).
    pub tta: String,
    /// Whether the classifiers saw the lesion-centred crop of the predicted mask.
    pub used_segmentation: bool,
    /// Classes treated as unable to occur (their probability 0, the rest renormalised per
    /// classifier); empty for the three-class question.
    pub absent_classes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SegmentResponse {
    pub image: ImageSize,
    pub segmentation: Segmentation,
    /// Server time for this request, from the body read to the answer.
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClassifyResponse {
    pub image: ImageSize,
    pub classification: Classification,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AnalyzeResponse {
    pub image: ImageSize,
    /// Null when the bundle has no segmentation nets.
    pub segmentation: Option<Segmentation>,
    /// Null when the bundle has no classifiers.
    pub classification: Option<Classification>,
    pub seconds: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

// ---------------------------------------------------------------------------------------------
// Queries

/// What `/v1/segment` answers with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SegmentOutput {
    /// JSON measurements (the default).
    #[default]
    Json,
    /// The mask itself: an 8-bit grey PNG at the image's size, lesion 255.
    Mask,
    /// The image with the lesion contour drawn in green, as PNG.
    Overlay,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SegmentQuery {
    /// `json` (default), `mask` or `overlay` (PNG answers).
    pub output: Option<SegmentOutput>,
    /// With JSON: include the mask as a base64 PNG.
    pub include_mask: Option<bool>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClassifyQuery {
    /// `bundle` (default: the bundle's TTA), `none`, `fixed8`, or a number of random replicas
    /// (at most 32). Anything but `bundle` may change the probabilities.
    pub tta: Option<String>,
    /// Patient age in years, for classifiers trained with it.
    pub age: Option<f64>,
    /// `male` or `female`, for classifiers trained with it.
    pub sex: Option<String>,
    /// Classes that cannot occur for this image, comma-separated (e.g.
    /// `seborrheic_keratosis` where keratoses are not seen), or `none` for the three-class
    /// question; default: the server's (`lesion serve --absent`). Refused for a stacked
    /// classifier.
    pub absent: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnalyzeQuery {
    /// Include the mask as a base64 PNG.
    pub include_mask: Option<bool>,
    /// As for `/v1/classify`.
    pub tta: Option<String>,
    pub age: Option<f64>,
    pub sex: Option<String>,
    /// As for `/v1/classify`.
    pub absent: Option<String>,
}

/// What a request asks of the classifiers beyond the image.
struct Asked {
    tta: Option<TtaMode>,
    meta: Vec<(String, String)>,
    absent: AbsentClasses,
}

/// The `absent` query value: the server's default when not given, `none`, or class names
/// separated by commas, checked against the bundle's classifiers.
fn parse_absent(policy: &AbsentPolicy, s: Option<&str>) -> Result<AbsentClasses, ApiError> {
    let Some(s) = s else { return Ok(policy.default.clone()) };
    if s.trim() == ABSENT_NONE {
        return Ok(AbsentClasses::none());
    }
    let classes = s
        .split(',')
        .map(|c| c.parse::<LesionClass>())
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| ApiError::invalid(format!("absent={s}: {e}; or '{ABSENT_NONE}'")))?;
    policy.rule.check(&classes).map_err(|e| ApiError::invalid(format!("absent={s}: {e}")))
}

fn parse_tta(s: Option<&str>) -> Result<Option<TtaMode>, ApiError> {
    match s {
        None | Some("bundle") => Ok(None),
        Some(t) => match TtaMode::parse(t) {
            Ok(TtaMode::Random(n)) if n > MAX_TTA_REPLICAS => Err(ApiError::invalid(format!(
                "tta={t}: at most {MAX_TTA_REPLICAS} replicas per request"
            ))),
            Ok(m) => Ok(Some(m)),
            Err(e) => Err(ApiError::invalid(format!("tta={t}: {e}; or 'bundle'"))),
        },
    }
}

fn parse_meta(age: Option<f64>, sex: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut meta = Vec::new();
    if let Some(a) = age {
        if !AGE_RANGE.contains(&a) {
            return Err(ApiError::invalid(format!("age={a}: expected 0 to 120 years")));
        }
        meta.push(("age".to_string(), a.to_string()));
    }
    if let Some(s) = sex {
        if s != "male" && s != "female" {
            return Err(ApiError::invalid(format!("sex={s}: expected male or female")));
        }
        meta.push(("sex".to_string(), s.to_string()));
    }
    Ok(meta)
}

fn query<T: serde::de::DeserializeOwned + Default>(req: &Request) -> Result<T, ApiError> {
    match Query::<T>::try_from_uri(req.uri()) {
        Ok(Query(q)) => Ok(q),
        Err(e) => Err(ApiError::bad_request(format!("query string: {}", e.body_text()))),
    }
}

// ---------------------------------------------------------------------------------------------
// Uploads

/// Media types a body may declare.
const RAW_TYPES: [&str; 5] =
    ["image/png", "image/jpeg", "image/bmp", "image/x-ms-bmp", "application/octet-stream"];
const MULTIPART: &str = "multipart/form-data";
/// The multipart field that carries the image (else the first field with a file name).
const IMAGE_FIELD: &str = "image";

fn body_too_large(limits: &Limits) -> ApiError {
    ApiError::too_large(format!(
        "request body is over the limit of {} bytes (lesion serve --max-body-mb)",
        limits.max_body_bytes
    ))
}

/// The image bytes of a request: its raw body, or the `image` field of a multipart form.
async fn read_upload(limits: &Limits, req: Request) -> Result<Vec<u8>, ApiError> {
    let declared =
        req.headers().get(CONTENT_TYPE).map(|v| v.to_str().unwrap_or("").to_string()).ok_or_else(
            || {
                ApiError::unsupported(
                    "no Content-Type: send the image as image/png, image/jpeg, image/bmp, \
                 application/octet-stream or multipart/form-data",
                )
            },
        )?;
    let media = declared.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    // A declared length over the limit is refused without keeping anything.
    if let Some(len) = req.headers().get(axum::http::header::CONTENT_LENGTH) {
        if len.to_str().ok().and_then(|s| s.parse::<usize>().ok()).unwrap_or(0)
            > limits.max_body_bytes
        {
            return Err(refuse(limits, req, body_too_large(limits)).await);
        }
    }
    let bytes = if media == MULTIPART {
        let mut form = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::bad_request(format!("multipart form: {}", e.body_text())))?;
        let mut found = None;
        loop {
            let field = form.next_field().await.map_err(|e| multipart_error(limits, e))?;
            let Some(field) = field else { break };
            if field.name() == Some(IMAGE_FIELD) || field.file_name().is_some_and(|n| !n.is_empty())
            {
                found = Some(field.bytes().await.map_err(|e| multipart_error(limits, e))?);
                break;
            }
        }
        found
            .ok_or_else(|| ApiError::bad_request("multipart form without an 'image' field"))?
            .to_vec()
    } else if RAW_TYPES.contains(&media.as_str()) {
        read_body(limits, req.into_body()).await?
    } else {
        return Err(ApiError::unsupported(format!(
            "Content-Type '{declared}': send image/png, image/jpeg, image/bmp, \
             application/octet-stream or multipart/form-data"
        )));
    };
    if bytes.is_empty() {
        return Err(ApiError::bad_request("empty body: no image was sent"));
    }
    Ok(bytes)
}

fn multipart_error(limits: &Limits, e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        body_too_large(limits)
    } else {
        ApiError::bad_request(format!("multipart form: {}", e.body_text()))
    }
}

/// The raw body, at most `max_body_bytes`. An over-limit body is still read, and discarded,
/// up to another limit's worth before the 413 goes out: a client that sends its whole body
/// before reading the answer then gets the 413 instead of a closed connection.
async fn read_body(limits: &Limits, mut body: Body) -> Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt;
    let mut buf = Vec::new();
    let mut over = false;
    let mut discarded = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        let Some(data) = frame.data_ref() else { continue };
        if over {
            discarded += data.len();
            if discarded > limits.max_body_bytes {
                break;
            }
        } else if buf.len() + data.len() > limits.max_body_bytes {
            over = true;
            buf = Vec::new();
        } else {
            buf.extend_from_slice(data);
        }
    }
    if over {
        return Err(body_too_large(limits));
    }
    Ok(buf)
}

/// Decodes an upload after checking its format and, from the header alone, its pixel count
/// (a decompression bomb is refused before any pixel is decoded). Decoding itself is
/// `lesion_data::io::rgb_from_bytes`, the function that reads manifest images, so the
/// service sees the same pixels as `lesion predict`.
pub fn decode_upload(bytes: &[u8], limits: &Limits, name: &str) -> Result<RgbImage, ApiError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
    let accepted = limits.format_names();
    let Some(format) = reader.format() else {
        return Err(ApiError::unsupported(format!(
            "the body is not an image this server reads ({accepted})"
        )));
    };
    if !limits.formats.contains(&format) {
        return Err(ApiError::unsupported(format!(
            "{} images are not accepted here ({accepted})",
            format_name(format)
        )));
    }
    let (w, h) = reader.into_dimensions().map_err(|e| {
        ApiError::undecodable(format!("{} header cannot be read: {e}", format_name(format)))
    })?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_pixels {
        return Err(ApiError::too_large(format!(
            "the image is {w}×{h} = {pixels} pixels; this server decodes at most {} \
             (lesion serve --max-pixels)",
            limits.max_pixels
        )));
    }
    lesion_data::io::rgb_from_bytes(std::path::Path::new(name), bytes)
        .map_err(|e| ApiError::undecodable(e.to_string()))
}

fn format_name(f: ImageFormat) -> &'static str {
    f.extensions_str().first().copied().unwrap_or("this format")
}

// ---------------------------------------------------------------------------------------------
// Inference

struct Done {
    image: Arc<RgbImage>,
    concerns: Vec<InputConcern>,
    analysis: Analysis,
    started: Instant,
}

/// The steps every inference route shares: readiness, the in-flight cap, the body read,
/// decoding (off the async runtime), the queue, the timeout.
async fn infer(state: &Shared, req: Request, work: Work, asked: &Asked) -> Result<Done, ApiError> {
    if !state.pool.status.is_ready() {
        return Err(refuse(&state.limits, req, not_ready(state)).await);
    }
    let started = Instant::now();
    let Ok(_permit) = Arc::clone(&state.in_flight).try_acquire_owned() else {
        let busy = ApiError::busy(format!(
            "{} requests are in flight, the limit (lesion serve --max-in-flight); retry shortly",
            state.limits.max_in_flight
        ));
        return Err(refuse(&state.limits, req, busy).await);
    };
    let bytes = read_upload(&state.limits, req).await?;
    let n = state.uploads.fetch_add(1, Ordering::Relaxed);
    let id = format!("upload-{n}");
    let limits = state.limits.clone();
    let name = id.clone();
    let (image, concerns) = tokio::task::spawn_blocking(move || {
        let image = decode_upload(&bytes, &limits, &name)?;
        // The header decoded a moment ago, so this cannot fail on a decodable image.
        let concerns = lesion_data::io::input_concerns(std::path::Path::new(&name), &bytes)
            .map_err(|e| ApiError::undecodable(e.to_string()))?;
        Ok::<_, ApiError>((image, concerns))
    })
    .await
    .map_err(|e| ApiError::internal(format!("decoder task: {e}")))??;
    let image = Arc::new(image);
    let (reply, answer) = oneshot::channel();
    let due = deadline(state.limits.timeout);
    let job = Job {
        work,
        id,
        image: Arc::clone(&image),
        meta: asked.meta.clone(),
        tta: asked.tta,
        absent: asked.absent.clone(),
        deadline: due,
        reply,
    };
    match state.pool.submit(job) {
        Ok(()) => {}
        Err(Refusal::Busy) => {
            return Err(ApiError::busy(format!(
                "the inference queue is full ({} waiting, lesion serve --queue); retry shortly",
                state.limits.queue
            )))
        }
        Err(Refusal::Stopped) => {
            return Err(ApiError::unavailable("stopping", "the server is shutting down"))
        }
    }
    let timed_out = || {
        ApiError::unavailable(
            "timeout",
            format!(
                "no answer within {} s (lesion serve --timeout-s); the server is overloaded",
                state.limits.timeout.as_secs_f64()
            ),
        )
    };
    let analysis = match tokio::time::timeout(state.limits.timeout, answer).await {
        Err(_) => return Err(timed_out()),
        // A worker drops a job it takes after its deadline; that can beat the timer.
        Ok(Err(_)) if Instant::now() >= due => return Err(timed_out()),
        Ok(Err(_)) => return Err(ApiError::internal("the inference worker stopped")),
        Ok(Ok(Err(msg))) => return Err(ApiError::undecodable(format!("inference failed: {msg}"))),
        Ok(Ok(Ok(a))) => a,
    };
    Ok(Done { image, concerns, analysis, started })
}

/// Runs a request's checks that need no body (query, bundle capabilities). A refusal still
/// reads the body first ([`refuse`]).
async fn checked<T>(
    limits: &Limits,
    req: Request,
    check: impl FnOnce(&Request) -> Result<T, ApiError>,
) -> Result<(T, Request), ApiError> {
    match check(&req) {
        Ok(v) => Ok((v, req)),
        Err(e) => Err(refuse(limits, req, e).await),
    }
}

/// Reads and discards the body (up to the body limit, frame by frame: nothing accumulates)
/// before a refusal is answered. A client that sends its whole body before reading the answer
/// (most do) would otherwise see the connection closed under it instead of the 429 or 503.
pub(crate) async fn refuse(limits: &Limits, req: Request, error: ApiError) -> ApiError {
    use http_body_util::BodyExt;
    let mut body = req.into_body();
    let mut seen = 0usize;
    while seen <= limits.max_body_bytes {
        match body.frame().await {
            Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
            Some(Err(_)) | None => break,
        }
    }
    error
}

fn not_ready(state: &Shared) -> ApiError {
    match state.pool.status.failure() {
        Some(f) => ApiError::unavailable("bundle_failed", f),
        None if state.pool.status.stopping.load(Ordering::Acquire) => {
            ApiError::unavailable("stopping", "the server is shutting down")
        }
        None => ApiError::unavailable("loading", "the bundle is loading; retry shortly"),
    }
}

fn png_bytes(img: image::DynamicImage) -> Result<Vec<u8>, ApiError> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .map_err(|e| ApiError::internal(format!("cannot encode PNG: {e}")))?;
    Ok(out.into_inner())
}

fn segmentation_json(
    s: &Segmented,
    threshold: f64,
    include_mask: bool,
) -> Result<Segmentation, ApiError> {
    let shape = lesion_seg::descriptors::shape(&s.mask);
    let total = u64::from(s.mask.width()) * u64::from(s.mask.height());
    let area = shape.area_pixels as u64;
    let perimeter = shape.perimeter_pixels as u64;
    let mask_png_base64 = if include_mask {
        let png = png_bytes(image::DynamicImage::ImageLuma8(s.mask.clone()))?;
        Some(base64::engine::general_purpose::STANDARD.encode(png))
    } else {
        None
    };
    Ok(Segmentation {
        threshold,
        lesion_found: area > 0,
        area_px: area,
        area_fraction: if total > 0 { area as f64 / total as f64 } else { 0.0 },
        bbox: s.lesion_box.map(|b| BoundingBox {
            x: b.x0,
            y: b.y0,
            width: b.width(),
            height: b.height(),
        }),
        perimeter_px: perimeter,
        compactness: shape.compactness(),
        mask_png_base64,
    })
}

fn classification_json(state: &Shared, p: [f64; 3], asked: &Asked) -> Classification {
    let tta = asked.tta;
    let c = &state.card.classification;
    let t = c.thresholds;
    Classification {
        probabilities: Probabilities { melanoma: p[0], seborrheic_keratosis: p[1], nevus: p[2] },
        thresholds: t.into(),
        decisions: Decisions {
            melanoma: p[0] > t.melanoma,
            seborrheic_keratosis: p[1] > t.seborrheic_keratosis,
        },
        tta: if state.card.stack.is_some() {
            STACK_TTA.to_string()
        } else {
            tta.unwrap_or(c.tta).to_string()
        },
        used_segmentation: c.crop.is_some() && state.has_segmentation,
        absent_classes: asked.absent.classes().iter().map(|c| c.name().to_string()).collect(),
    }
}

fn size_of(done: &Done) -> ImageSize {
    ImageSize {
        width: done.image.width(),
        height: done.image.height(),
        concerns: done.concerns.iter().copied().map(Concern::from).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// The error answers every inference route may give (OpenAPI).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // documentation only: never constructed
pub enum InferenceErrors {
    #[response(status = 400, description = "Empty or malformed request")]
    BadRequest(ErrorBody),
    #[response(status = 413, description = "Body or pixel count over the limit")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "Not an accepted content type or image format")]
    Unsupported(ErrorBody),
    #[response(status = 422, description = "The image does not decode, or a bad parameter")]
    Unprocessable(ErrorBody),
    #[response(status = 429, description = "Queue or in-flight limit full")]
    Busy(ErrorBody),
    #[response(status = 503, description = "Not ready, stopping or timed out")]
    Unavailable(ErrorBody),
}

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "The process answers", body = Health)))]
pub async fn live() -> Json<Health> {
    Json(Health { status: "live".into() })
}

/// The bundle is loaded and one warm-up pass has run: requests will be answered.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses(
    (status = 200, description = "Ready", body = Health),
    (status = 503, description = "Loading, failed to load, or stopping", body = ErrorBody)))]
pub async fn ready(State(state): State<Shared>) -> Result<Json<Health>, ApiError> {
    if state.pool.status.is_ready() {
        Ok(Json(Health { status: "ready".into() }))
    } else {
        Err(not_ready(&state))
    }
}

/// The bundle's model card (`bundle.json`): nets, input sizes, normalisation, classes,
/// thresholds, TTA, training summary, validation metrics, notices, file digests.
#[utoipa::path(get, path = "/v1/models", tag = "models", responses(
    (status = 200, description = "The model card", body = Object)))]
pub async fn models(State(state): State<Shared>) -> Json<serde_json::Value> {
    Json(state.card_json.clone())
}

/// Segments the lesion: JSON measurements, or the mask / an overlay as PNG.
#[utoipa::path(post, path = "/v1/segment", tag = "inference", params(SegmentQuery),
    request_body(description = "The image: raw body (PNG, JPEG or BMP) or multipart field 'image'",
        content(("image/png"), ("image/jpeg"), ("image/bmp"), ("application/octet-stream"),
            ("multipart/form-data"))),
    responses(
        (status = 200, description = "Measurements (or a PNG with output=mask|overlay)", body = SegmentResponse),
        InferenceErrors))]
pub async fn segment(State(state): State<Shared>, req: Request) -> Result<Response, ApiError> {
    let (q, req) = checked(&state.limits, req, |req| {
        if !state.has_segmentation {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_segmentation",
                "this bundle has no segmentation nets",
            ));
        }
        query::<SegmentQuery>(req)
    })
    .await?;
    let asked = Asked { tta: None, meta: Vec::new(), absent: AbsentClasses::none() };
    let done = infer(&state, req, Work::Segment, &asked).await?;
    let image = size_of(&done);
    let s = done
        .analysis
        .segmented
        .ok_or_else(|| ApiError::internal("the segmentation gave no mask"))?;
    let png = |img| -> Result<Response, ApiError> {
        Ok(([(CONTENT_TYPE, "image/png")], png_bytes(img)?).into_response())
    };
    match q.output.unwrap_or_default() {
        SegmentOutput::Mask => png(image::DynamicImage::ImageLuma8(s.mask)),
        SegmentOutput::Overlay => png(image::DynamicImage::ImageRgb8(
            lesion_seg::predict::overlay(&done.image, &s.mask, None),
        )),
        SegmentOutput::Json => {
            let segmentation = segmentation_json(
                &s,
                state.card.segmentation.threshold,
                q.include_mask.unwrap_or(false),
            )?;
            Ok(Json(SegmentResponse {
                image,
                segmentation,
                seconds: done.started.elapsed().as_secs_f64(),
            })
            .into_response())
        }
    }
}

/// Melanoma / seborrheic keratosis / nevus probabilities with the bundle's TTA (or a lighter
/// one on request), on the lesion-centred crop when the bundle's classifiers were trained so.
#[utoipa::path(post, path = "/v1/classify", tag = "inference", params(ClassifyQuery),
    request_body(description = "The image: raw body (PNG, JPEG or BMP) or multipart field 'image'",
        content(("image/png"), ("image/jpeg"), ("image/bmp"), ("application/octet-stream"),
            ("multipart/form-data"))),
    responses(
        (status = 200, description = "Probabilities and decisions", body = ClassifyResponse),
        InferenceErrors))]
pub async fn classify(State(state): State<Shared>, req: Request) -> Result<Response, ApiError> {
    let (asked, req) = checked(&state.limits, req, |req| {
        if !state.has_classification {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_classification",
                "this bundle has no classifiers",
            ));
        }
        let q: ClassifyQuery = query(req)?;
        Ok(Asked {
            tta: parse_tta(q.tta.as_deref())?,
            meta: parse_meta(q.age, q.sex.as_deref())?,
            absent: parse_absent(&state.absent, q.absent.as_deref())?,
        })
    })
    .await?;
    let done = infer(&state, req, Work::Analyze, &asked).await?;
    let p = done
        .analysis
        .probabilities
        .ok_or_else(|| ApiError::internal("the classifiers gave no probabilities"))?;
    Ok(Json(ClassifyResponse {
        image: size_of(&done),
        classification: classification_json(&state, p, &asked),
        seconds: done.started.elapsed().as_secs_f64(),
    })
    .into_response())
}

/// Both: the segmentation and the classification of one image.
#[utoipa::path(post, path = "/v1/analyze", tag = "inference", params(AnalyzeQuery),
    request_body(description = "The image: raw body (PNG, JPEG or BMP) or multipart field 'image'",
        content(("image/png"), ("image/jpeg"), ("image/bmp"), ("application/octet-stream"),
            ("multipart/form-data"))),
    responses(
        (status = 200, description = "Segmentation and classification", body = AnalyzeResponse),
        InferenceErrors))]
pub async fn analyze(State(state): State<Shared>, req: Request) -> Result<Response, ApiError> {
    let ((include_mask, asked), req) = checked(&state.limits, req, |req| {
        let q: AnalyzeQuery = query(req)?;
        let asked = Asked {
            tta: parse_tta(q.tta.as_deref())?,
            meta: parse_meta(q.age, q.sex.as_deref())?,
            absent: parse_absent(&state.absent, q.absent.as_deref())?,
        };
        Ok((q.include_mask.unwrap_or(false), asked))
    })
    .await?;
    let done = infer(&state, req, Work::Analyze, &asked).await?;
    let segmentation = match &done.analysis.segmented {
        Some(s) => Some(segmentation_json(s, state.card.segmentation.threshold, include_mask)?),
        None => None,
    };
    let classification =
        done.analysis.probabilities.map(|p| classification_json(&state, p, &asked));
    Ok(Json(AnalyzeResponse {
        image: size_of(&done),
        segmentation,
        classification,
        seconds: done.started.elapsed().as_secs_f64(),
    })
    .into_response())
}

/// Prometheus text: requests by route and status, latency histograms, requests in flight,
/// queue depth, readiness.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text exposition format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<Shared>) -> Result<Response, ApiError> {
    let s = &state.pool.status;
    state.metrics.queue_depth.set(s.queued.load(Ordering::Acquire) as i64);
    state.metrics.ready.set(i64::from(s.is_ready()));
    state.metrics.in_flight_inference.set(
        (state.limits.max_in_flight
            - state.in_flight.available_permits().min(state.limits.max_in_flight)) as i64,
    );
    let text = state.metrics.render().map_err(ApiError::internal)?;
    Ok(([(CONTENT_TYPE, crate::telemetry::PROMETHEUS_CONTENT_TYPE)], text).into_response())
}

/// The OpenAPI 3.1 document of this API.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

pub async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

pub async fn docs() -> Html<&'static str> {
    Html(DOCS_HTML)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "lesion",
        description = "Skin-lesion segmentation and melanoma / seborrheic keratosis / nevus \
            classification from a model bundle. A research tool, not a medical device.",
        license(name = "Apache-2.0")
    ),
    paths(live, ready, models, segment, classify, analyze, metrics),
    components(schemas(
        ErrorBody, ErrorDetail, ImageSize, Concern, BoundingBox, Segmentation, Probabilities, Decisions,
        Thresholds, Classification, SegmentResponse, ClassifyResponse, AnalyzeResponse, Health
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "inference", description = "One image in, answers out"),
        (name = "models", description = "What the server runs"),
        (name = "health", description = "Liveness and readiness (never need the token)"),
        (name = "operations", description = "Monitoring")
    )
)]
pub struct ApiDoc;

/// Declares the optional bearer token.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
