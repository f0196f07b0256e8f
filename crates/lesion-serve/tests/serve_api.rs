//! The service end to end on loopback: a small bundle (untrained tiny nets: the plumbing is
//! under test, not accuracy), every endpoint, bad uploads, the limits, the token, and answers
//! equal to `lesion predict --bundle`'s on the same images.
use std::io::Cursor;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use lesion_cls::config::ClsTrainConfig;
use lesion_cls::model::Pixels;
use lesion_cls::tta::{Pool, TtaMode};
use lesion_core::checkpoint::{save_model, CheckpointPaths};
use lesion_core::run::{self, RunConfig, Split, COMPLETE_FILE, CONFIG_FILE, SPLIT_FILE};
use lesion_data::cache::PreprocessCache;
use lesion_data::labels::{LabelledRow, LesionClass};
use lesion_data::manifest::ManifestRow;
use lesion_data::synth::{generate, SynthConfig};
use lesion_metrics::cls::{read_2017_csv, OperatingPoint};
use lesion_models::classifier::ClsNet;
use lesion_pipeline::bundle::{
    self, Bundle, ClsSettings, DecisionThresholds, ExportRequest, SegSettings,
};
use lesion_pipeline::calibrate::{self, CalibrateRequest};
use lesion_pipeline::engine::{AbsentClasses, Engine};
use lesion_seg::config::SegTrainConfig;
use lesion_seg::crop::CropSettings;
use lesion_seg::predict::PostProcess;
use lesion_serve::{Limits, RunningServer, ServeConfig};
use serde_json::Value;
use tch::{nn::VarStore, Device};

/// Body limit of the test servers: small, so an over-limit body still fits the socket buffers.
const BODY_LIMIT: usize = 64 << 10;
const PIXEL_LIMIT: u64 = 4_000_000;

fn seg_run(dir: &Path) -> PathBuf {
    let mut cfg = SegTrainConfig::default();
    cfg.model.input_size = 32;
    cfg.model.base = 4;
    cfg.model.depth = 2;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(CONFIG_FILE), cfg.to_toml().unwrap()).unwrap();
    tch::manual_seed(1);
    let vs = VarStore::new(Device::Cpu);
    cfg.model.build(&vs.root()).unwrap();
    save_model(&CheckpointPaths::new(dir).best, &vs).unwrap();
    run::write_json(&dir.join(SPLIT_FILE), &Split { train: vec!["x".into()], val: vec![] })
        .unwrap();
    run::write_json(&dir.join(COMPLETE_FILE), &serde_json::json!({"best_val_jaccard": 0.5}))
        .unwrap();
    dir.to_path_buf()
}

/// How much the fixture classifier's head weights are scaled from their random initialisation.
const HEAD_GAIN: f64 = 1e5;

fn cls_run(dir: &Path) -> PathBuf {
    let mut cfg = ClsTrainConfig::default();
    cfg.model.pretrained = false;
    cfg.model.input_size = 64;
    cfg.data.cache_size = Some(64);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(CONFIG_FILE), cfg.to_toml().unwrap()).unwrap();
    tch::manual_seed(2);
    let vs = VarStore::new(Device::Cpu);
    let net = ClsNet::build(&cfg.model, 3, &vs.root()).unwrap();
    // A random backbone's features are tiny (≈ 4e-6: its BatchNorms hold the initial running
    // statistics), so a fresh head scores every image ≈ 1/3 with differences near f32's
    // resolution, and their order differed between CPUs (a CI machine tied two). A head with
    // its weights scaled up and no bias spreads the scores so the orderings hold anywhere.
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if name.starts_with(net.head_prefix()) {
                let _ = if name.ends_with("bias") { t.zero_() } else { t.g_mul_scalar_(HEAD_GAIN) };
            }
        }
    });
    save_model(&CheckpointPaths::new(dir).best, &vs).unwrap();
    run::write_json(&dir.join(COMPLETE_FILE), &serde_json::json!({"val_auc": 0.5})).unwrap();
    dir.to_path_buf()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    bundle: PathBuf,
    rows: Vec<ManifestRow>,
}

/// A bundle (one segmentation net, one classifier on lesion crops, flip-free fixed8 TTA) and
/// four synthetic images.
/// Exports `seg` and `cls` as a bundle at `out` that classifies lesion crops with `tta`.
fn export_crop_bundle(seg: &Path, cls: &Path, out: &Path, tta: TtaMode) {
    bundle::export(&ExportRequest {
        seg_runs: vec![seg.to_path_buf()],
        cls_runs: vec![cls.to_path_buf()],
        out: out.to_path_buf(),
        segmentation: SegSettings { threshold: 0.5, post: PostProcess::default() },
        classification: ClsSettings {
            tta,
            pool: Pool::Avg,
            tta_seed: 0,
            crop: Some(CropSettings { margin: 0.1 }),
            thresholds: DecisionThresholds::default(),
        },
        notices: vec!["test notice".into()],
        torchscript: false,
        stack: None,
    })
    .unwrap();
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let seg = seg_run(&root.join("seg"));
    let cls = cls_run(&root.join("cls"));
    let bundle = root.join("bundle");
    export_crop_bundle(&seg, &cls, &bundle, TtaMode::Fixed8);
    let rows =
        generate(&SynthConfig { count: 4, width: 80, height: 64, seed: 5 }, &root.join("data"))
            .unwrap()
            .rows;
    Fixture { _tmp: tmp, root, bundle, rows }
}

fn config(bundle: &Path) -> ServeConfig {
    ServeConfig {
        bundle: bundle.to_path_buf(),
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        device: Device::Cpu,
        workers: 1,
        limits: Limits { max_body_bytes: BODY_LIMIT, max_pixels: PIXEL_LIMIT, ..Limits::default() },
        token: None,
        absent: Vec::new(),
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut r = r.expect("request failed");
    let content_type =
        r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let status = r.status().as_u16();
    let body = r.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap();
    Answer { status, content_type, body }
}

fn get(a: &ureq::Agent, url: &str, token: Option<&str>) -> Answer {
    let mut req = a.get(url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    answer(req.call())
}

fn post(a: &ureq::Agent, url: &str, content_type: &str, body: &[u8]) -> Answer {
    answer(a.post(url).header("Content-Type", content_type).send(body))
}

fn wait_ready(a: &ureq::Agent, base: &str) {
    let t0 = Instant::now();
    loop {
        let r = get(a, &format!("{base}/health/ready"), None);
        if r.status == 200 {
            return;
        }
        assert_eq!(r.status, 503, "readiness answers 200 or 503");
        assert!(t0.elapsed() < Duration::from_secs(120), "not ready after 120 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An error answer: the status, JSON `{"error": {status, code, message}}`.
fn assert_error(r: &Answer, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["error"]["status"], status, "{what}");
    assert!(v["error"]["code"].as_str().is_some_and(|c| !c.is_empty()), "{what}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
}

fn png_bytes(img: image::DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A real 1×1 PNG whose IHDR is rewritten to claim `w`×`h` (CRC fixed): a decompression bomb's
/// header.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut png = png_bytes(image::DynamicImage::new_rgb8(1, 1));
    // Signature (8) + length (4) + "IHDR" (4): width at 16, height at 20, CRC after 13 bytes.
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn multipart(field: &str, file_name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "lesion-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    let file =
        if file_name.is_empty() { String::new() } else { format!("; filename=\"{file_name}\"") };
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"{file}\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn every_endpoint_bad_uploads_and_equality_with_predict() {
    let f = fixture();
    let server: RunningServer = lesion_serve::start(&config(&f.bundle)).unwrap();
    let base = server.url();
    let a = agent();
    assert!(server.addr.ip().is_loopback());

    // Health, card, docs, page.
    assert_eq!(get(&a, &format!("{base}/health/live"), None).json()["status"], "live");
    wait_ready(&a, &base);
    let card = get(&a, &format!("{base}/v1/models"), None).json();
    assert_eq!(card["format"], "lesion-bundle");
    assert_eq!(card["models"].as_array().unwrap().len(), 2);
    assert_eq!(card["notices"][0], "test notice");
    let spec = get(&a, &format!("{base}/openapi.json"), None).json();
    for p in
        ["/v1/segment", "/v1/classify", "/v1/analyze", "/v1/models", "/health/ready", "/metrics"]
    {
        assert!(spec["paths"][p].is_object(), "OpenAPI lacks {p}");
    }
    for status in ["200", "400", "413", "415", "422", "429", "503"] {
        assert!(
            spec["paths"]["/v1/analyze"]["post"]["responses"][status].is_object(),
            "OpenAPI lacks /v1/analyze's {status}"
        );
    }
    let page = get(&a, &format!("{base}/"), None);
    assert!(page.content_type.starts_with("text/html"));
    let page = String::from_utf8(page.body).unwrap();
    assert!(page.to_lowercase().contains("not a medical device"), "the page's notice");
    assert!(!page.contains("https://"), "the page loads nothing from elsewhere");
    assert!(get(&a, &format!("{base}/docs"), None).content_type.starts_with("text/html"));

    // Answers equal to `lesion predict --bundle` on the same images (masks pixel for pixel,
    // the CSV's probabilities digit for digit).
    let pred = f.root.join("pred");
    let cache = PreprocessCache::new(&f.root.join("cache"));
    let b = Bundle::open(&f.bundle).unwrap();
    let summary = bundle::predict(&b, &f.rows, &pred, &cache, Device::Cpu, false).unwrap();
    // The fixture's 80×64 images are all under the size a concern is raised at.
    assert_eq!(summary.input_concerns.len(), f.rows.len());
    let csv = std::fs::read_to_string(pred.join(bundle::CLASSIFICATION_FULL_CSV)).unwrap();
    for (i, row) in f.rows.iter().enumerate() {
        let bytes = std::fs::read(&row.image_path).unwrap();
        let r = post(&a, &format!("{base}/v1/analyze?include_mask=true"), "image/png", &bytes);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["image"]["width"], row.width);
        let seg = &v["segmentation"];
        let png = base64::engine::general_purpose::STANDARD
            .decode(seg["mask_png_base64"].as_str().unwrap())
            .unwrap();
        let served = image::load_from_memory(&png).unwrap().to_luma8();
        let written = image::open(pred.join("masks").join(format!("{}_segmentation.png", row.id)))
            .unwrap()
            .to_luma8();
        assert_eq!(served, written, "{}: mask differs from lesion predict's", row.id);
        let area = written.pixels().filter(|p| p[0] > 127).count() as u64;
        assert_eq!(seg["area_px"], area);
        let p = &v["classification"]["probabilities"];
        let line = csv.lines().nth(i + 1).unwrap();
        let expected = format!(
            "{},{:.8},{:.8},{:.8}",
            row.id,
            p["melanoma"].as_f64().unwrap(),
            p["seborrheic_keratosis"].as_f64().unwrap(),
            p["nevus"].as_f64().unwrap()
        );
        assert_eq!(line, expected, "probabilities differ from lesion predict's");
        assert_eq!(v["classification"]["used_segmentation"], true);
        assert_eq!(v["classification"]["tta"], "fixed8");
    }
    // Bit for bit: the engine's file path (through the cache, as `predict` reads) gives the
    // same f64 as the service's in-memory path, for the first image's crop.
    let crop = pred.join("crops").join(format!("{}.png", f.rows[0].id));
    let mut crop_row = f.rows[0].clone();
    crop_row.image_path = crop.clone();
    crop_row.content_hash = lesion_data::io::content_hash(&crop).unwrap();
    let (w, h) = image::image_dimensions(&crop).unwrap();
    (crop_row.width, crop_row.height) = (w, h);
    crop_row.mask_path = None;
    let engine = Engine::load(Bundle::open(&f.bundle).unwrap(), Device::Cpu).unwrap();
    let from_files = engine
        .classify(
            &[LabelledRow { row: crop_row, class: LesionClass::Nevus }],
            Pixels::Cache(&cache),
            &Default::default(),
            None,
            &AbsentClasses::none(),
            false,
        )
        .unwrap();
    let bytes0 = std::fs::read(&f.rows[0].image_path).unwrap();
    let v = post(&a, &format!("{base}/v1/classify"), "image/png", &bytes0).json();
    let p = &v["classification"]["probabilities"];
    assert_eq!(p["melanoma"].as_f64().unwrap().to_bits(), from_files[0].probs[0].to_bits());
    assert_eq!(p["nevus"].as_f64().unwrap().to_bits(), from_files[0].probs[2].to_bits());

    // Segment: JSON, mask PNG, overlay PNG, multipart; classify with a lighter TTA.
    let s = post(&a, &format!("{base}/v1/segment"), "application/octet-stream", &bytes0);
    assert_eq!(s.status, 200);
    assert!(s.json()["segmentation"]["mask_png_base64"].is_null(), "mask only on request");
    let m = post(&a, &format!("{base}/v1/segment?output=mask"), "image/png", &bytes0);
    assert_eq!((m.status, m.content_type.as_str()), (200, "image/png"));
    let mask = image::load_from_memory(&m.body).unwrap();
    assert_eq!((mask.width(), mask.height()), (f.rows[0].width, f.rows[0].height));
    let o = post(&a, &format!("{base}/v1/segment?output=overlay"), "image/png", &bytes0);
    assert_eq!(o.status, 200);
    assert_eq!(image::load_from_memory(&o.body).unwrap().width(), f.rows[0].width);
    let (ct, body) = multipart("image", "x.png", &bytes0);
    let mp = post(&a, &format!("{base}/v1/segment"), &ct, &body);
    assert_eq!(mp.status, 200, "{}", String::from_utf8_lossy(&mp.body));
    assert_eq!(mp.json()["segmentation"]["area_px"], s.json()["segmentation"]["area_px"]);
    let light = post(&a, &format!("{base}/v1/classify?tta=none"), "image/png", &bytes0).json();
    assert_eq!(light["classification"]["tta"], "none");
    let sum: f64 = ["melanoma", "seborrheic_keratosis", "nevus"]
        .iter()
        .map(|k| light["classification"]["probabilities"][k].as_f64().unwrap())
        .sum();
    assert!((sum - 1.0).abs() < 1e-5, "probabilities sum to {sum}");

    // Input concerns, judged as `lesion predict` judges them: the fixture's 80×64 image is
    // small; the same image in grey is greyscale too; at 200×160 in colour it has none.
    assert_eq!(concern_kinds(&v), ["small"]);
    let img0 = image::open(&f.rows[0].image_path).unwrap();
    let grey = png_bytes(image::DynamicImage::ImageLuma8(img0.to_luma8()));
    let g = post(&a, &format!("{base}/v1/classify?tta=none"), "image/png", &grey);
    assert_eq!(g.status, 200, "{}", String::from_utf8_lossy(&g.body));
    assert_eq!(concern_kinds(&g.json()), ["greyscale", "small"]);
    assert!(g.json()["image"]["concerns"][0]["message"].as_str().unwrap().contains("greyscale"));
    let larger = png_bytes(img0.resize_exact(200, 160, image::imageops::FilterType::Triangle));
    let l = post(&a, &format!("{base}/v1/analyze"), "image/png", &larger);
    assert_eq!(concern_kinds(&l.json()), Vec::<String>::new());

    // Bad uploads: a 4xx JSON error each, and the server stays ready.
    let jpeg = {
        let mut out = Cursor::new(Vec::new());
        image::open(&f.rows[0].image_path)
            .unwrap()
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .unwrap();
        out.into_inner()
    };
    let bad: Vec<(&str, String, Vec<u8>, u16)> = vec![
        ("truncated JPEG", "image/jpeg".into(), jpeg[..jpeg.len() / 2].to_vec(), 422),
        ("a text file", "image/png".into(), b"just some text, not an image\n".to_vec(), 415),
        ("a 30000x30000 PNG header", "image/png".into(), png_claiming(30_000, 30_000), 413),
        ("an empty body", "image/png".into(), Vec::new(), 400),
        ("a wrong content type", "application/json".into(), b"{}".to_vec(), 415),
        ("a body over the limit", "image/png".into(), vec![0u8; BODY_LIMIT + 4096], 413),
        (
            "a multipart form without the image",
            multipart("other", "", b"x").0,
            multipart("other", "", b"x").1,
            400,
        ),
    ];
    for (what, ct, body, status) in &bad {
        for route in ["/v1/segment", "/v1/classify", "/v1/analyze"] {
            let r = post(&a, &format!("{base}{route}"), ct, body);
            assert_error(&r, *status, &format!("{what} to {route}"));
        }
        assert_eq!(get(&a, &format!("{base}/health/ready"), None).status, 200, "after {what}");
    }
    assert_error(
        &post(&a, &format!("{base}/v1/classify?tta=banana"), "image/png", &bytes0),
        422,
        "tta",
    );
    assert_error(
        &post(&a, &format!("{base}/v1/classify?age=400"), "image/png", &bytes0),
        422,
        "age",
    );
    assert_error(&get(&a, &format!("{base}/v1/nowhere"), None), 404, "unknown path");
    assert_error(&get(&a, &format!("{base}/v1/segment"), None), 405, "GET on a POST route");
    // Still answering correctly after all of that.
    let again = post(&a, &format!("{base}/v1/classify"), "image/png", &bytes0).json();
    assert_eq!(again["classification"]["probabilities"], v["classification"]["probabilities"]);

    // Metrics: requests by route and status, latency, queue depth, in flight.
    let metrics = String::from_utf8(get(&a, &format!("{base}/metrics"), None).body).unwrap();
    for needle in [
        "lesion_http_requests_total{method=\"POST\",route=\"/v1/analyze\",status=\"200\"}",
        "status=\"413\"",
        "status=\"415\"",
        "status=\"422\"",
        "lesion_http_request_duration_seconds_bucket{route=\"/v1/classify\"",
        "lesion_inference_queue_depth 0",
        "lesion_ready 1",
        "lesion_http_requests_in_flight",
    ] {
        assert!(metrics.contains(needle), "metrics lack {needle}:\n{metrics}");
    }
    server.stop().unwrap();
}

/// The `kind`s of an answer's `image.concerns`.
fn concern_kinds(v: &Value) -> Vec<String> {
    v["image"]["concerns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap().to_string())
        .collect()
}

/// The probabilities of one answer as `classification.full.csv` writes them.
fn csv_line(id: &str, v: &Value) -> String {
    let p = &v["classification"]["probabilities"];
    let f = |k: &str| p[k].as_f64().unwrap_or_else(|| panic!("no {k}: {v}"));
    format!("{id},{:.8},{:.8},{:.8}", f("melanoma"), f("seborrheic_keratosis"), f("nevus"))
}

/// Absent classes: per request (`absent=`) and by the server's default (`--absent`, undone by
/// `absent=none`), each answer equal to `lesion predict --bundle --absent`'s (or the plain
/// one's) digit for digit; classes that cannot be taken out are refused with 422, naming the
/// value; a server told of absent classes its bundle cannot take out does not start.
#[test]
fn absent_classes_per_request_and_by_default_equal_predict() {
    let f = fixture();
    let cache = PreprocessCache::new(&f.root.join("cache"));
    let b = Bundle::open(&f.bundle).unwrap();
    let plain = f.root.join("pred");
    bundle::predict(&b, &f.rows, &plain, &cache, Device::Cpu, false).unwrap();
    let no_sk = f.root.join("pred-no-sk");
    let options = bundle::PredictOptions { absent_classes: vec![LesionClass::SeborrheicKeratosis] };
    bundle::predict_with(&b, &f.rows, &no_sk, &cache, Device::Cpu, false, &options).unwrap();
    let lines = |dir: &Path| -> Vec<String> {
        let csv = std::fs::read_to_string(dir.join(bundle::CLASSIFICATION_FULL_CSV)).unwrap();
        csv.lines().skip(1).map(str::to_string).collect()
    };
    let (plain, no_sk) = (lines(&plain), lines(&no_sk));
    assert_ne!(plain, no_sk, "the renormalisation changes the probabilities");

    let a = agent();
    let server = lesion_serve::start(&config(&f.bundle)).unwrap();
    let base = server.url();
    wait_ready(&a, &base);
    for (i, row) in f.rows.iter().enumerate() {
        let bytes = std::fs::read(&row.image_path).unwrap();
        for query in ["absent=seborrheic_keratosis", "absent=seborrheic-keratosis"] {
            let v = post(&a, &format!("{base}/v1/classify?{query}"), "image/png", &bytes).json();
            assert_eq!(csv_line(&row.id, &v), no_sk[i], "{query}");
            let c = &v["classification"];
            assert_eq!(c["absent_classes"], serde_json::json!(["seborrheic_keratosis"]));
            assert_eq!(c["probabilities"]["seborrheic_keratosis"], 0.0);
            assert_eq!(c["decisions"]["seborrheic_keratosis"], false);
        }
        let v = post(&a, &format!("{base}/v1/analyze"), "image/png", &bytes).json();
        assert_eq!(csv_line(&row.id, &v), plain[i], "no absent= on a server without a default");
        assert_eq!(v["classification"]["absent_classes"], serde_json::json!([]));
    }
    let bytes = std::fs::read(&f.rows[0].image_path).unwrap();
    for (query, says) in [
        ("absent=melanoma,nevus", "fewer than two"),
        ("absent=keratosis", "'keratosis'"),
        ("absent=", "''"),
    ] {
        let r = post(&a, &format!("{base}/v1/classify?{query}"), "image/png", &bytes);
        assert_error(&r, 422, query);
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains("absent=") && msg.contains(says), "{query}: {msg}");
    }
    server.stop().unwrap();

    let mut cfg = config(&f.bundle);
    cfg.absent = vec![LesionClass::SeborrheicKeratosis];
    let server = lesion_serve::start(&cfg).unwrap();
    let base = server.url();
    wait_ready(&a, &base);
    for (i, row) in f.rows.iter().enumerate() {
        let bytes = std::fs::read(&row.image_path).unwrap();
        let v = post(&a, &format!("{base}/v1/analyze"), "image/png", &bytes).json();
        assert_eq!(csv_line(&row.id, &v), no_sk[i], "the server's default");
        let v = post(&a, &format!("{base}/v1/classify?absent=none"), "image/png", &bytes).json();
        assert_eq!(csv_line(&row.id, &v), plain[i], "absent=none undoes the default");
    }
    server.stop().unwrap();

    cfg.absent = vec![LesionClass::SeborrheicKeratosis, LesionClass::Nevus];
    let e = lesion_serve::start(&cfg).err().expect("two absent classes refused at start");
    assert!(e.to_string().contains("fewer than two"), "{e}");
}

#[test]
fn full_queue_answers_429_at_once_and_token_guards_all_but_health() {
    let f = fixture();
    let mut cfg = config(&f.bundle);
    cfg.limits.queue = 1;
    cfg.limits.max_in_flight = 2;
    cfg.token = Some("s3cret".into());
    let server = lesion_serve::start(&cfg).unwrap();
    let base = server.url();
    let a = agent();
    wait_ready(&a, &base);

    // The token: health and the page without it, everything else with it.
    assert_eq!(get(&a, &format!("{base}/health/live"), None).status, 200);
    assert_eq!(get(&a, &format!("{base}/"), None).status, 200);
    assert_error(&get(&a, &format!("{base}/v1/models"), None), 401, "no token");
    assert_error(&get(&a, &format!("{base}/v1/models"), Some("wrong")), 401, "wrong token");
    assert_error(&get(&a, &format!("{base}/metrics"), None), 401, "metrics without token");
    assert_eq!(get(&a, &format!("{base}/v1/models"), Some("s3cret")).status, 200);

    // 12 concurrent heavy requests (32 random TTA replicas each) against 2 in flight and 1
    // queued: some are refused at once with 429, the rest answered 200, nothing else.
    let bytes = std::fs::read(&f.rows[0].image_path).unwrap();
    let url = format!("{base}/v1/classify?tta=32");
    let results: Vec<(u16, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|_| {
                s.spawn(|| {
                    let t0 = Instant::now();
                    let r = answer(
                        agent()
                            .post(&url)
                            .header("Content-Type", "image/png")
                            .header("Authorization", "Bearer s3cret")
                            .send(&bytes[..]),
                    );
                    if r.status == 429 {
                        assert_eq!(r.json()["error"]["code"], "too_many_requests");
                    }
                    (r.status, t0.elapsed().as_secs_f64())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let busy: Vec<f64> = results.iter().filter(|r| r.0 == 429).map(|r| r.1).collect();
    assert_eq!(ok + busy.len(), 12, "only 200 and 429: {results:?}");
    assert!(ok >= 1 && !busy.is_empty(), "{results:?}");
    let slowest_ok = results.iter().filter(|r| r.0 == 200).map(|r| r.1).fold(0.0, f64::max);
    let slowest_busy = busy.iter().copied().fold(0.0, f64::max);
    assert!(slowest_busy < slowest_ok, "429s come at once ({slowest_busy} s vs {slowest_ok} s)");
    assert_eq!(get(&a, &format!("{base}/health/ready"), None).status, 200);
    server.stop().unwrap();
}

#[test]
fn a_request_past_its_timeout_gets_503_and_shutdown_finishes_requests_in_flight() {
    let f = fixture();
    let mut cfg = config(&f.bundle);
    cfg.limits.timeout = Duration::from_millis(1);
    let server = lesion_serve::start(&cfg).unwrap();
    let base = server.url();
    let a = agent();
    wait_ready(&a, &base);
    let bytes = std::fs::read(&f.rows[0].image_path).unwrap();
    let r = post(&a, &format!("{base}/v1/classify?tta=32"), "image/png", &bytes);
    assert_error(&r, 503, "timeout");
    assert_eq!(r.json()["error"]["code"], "timeout");
    server.stop().unwrap();

    // Graceful stop: a request in flight when the stop comes is still answered.
    let server = lesion_serve::start(&config(&f.bundle)).unwrap();
    let base = server.url();
    wait_ready(&a, &base);
    let url = format!("{base}/v1/classify?tta=32");
    let in_flight = std::thread::spawn(move || {
        answer(agent().post(&url).header("Content-Type", "image/png").send(&bytes[..])).status
    });
    // Let the request reach the worker before stopping.
    let t0 = Instant::now();
    while server.state.pool.status.queued.load(std::sync::atomic::Ordering::Acquire) == 0
        && server.state.metrics.in_flight_http.get() == 0
        && t0.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.stop().unwrap();
    assert_eq!(in_flight.join().unwrap(), 200, "the request in flight was answered");
}

/// A refusal decided before the body is read (bad parameter, missing token) still reads the
/// body first: a client that sends all of a large upload before reading gets the JSON error,
/// not a connection reset under it.
#[test]
fn refusals_before_the_body_answer_clients_that_send_it_all() {
    const LARGE: usize = 16 << 20;
    let f = fixture();
    let mut cfg = config(&f.bundle);
    cfg.limits = Limits::default();
    cfg.token = Some("s3cret".into());
    let server = lesion_serve::start(&cfg).unwrap();
    let base = server.url();
    let a = agent();
    wait_ready(&a, &base);
    let body = vec![0u8; LARGE];
    let r = answer(
        a.post(&format!("{base}/v1/classify?tta=banana"))
            .header("Content-Type", "image/png")
            .header("Authorization", "Bearer s3cret")
            .send(&body[..]),
    );
    assert_error(&r, 422, "bad tta with a 16 MiB body");
    let r = answer(
        a.post(&format!("{base}/v1/analyze")).header("Content-Type", "image/png").send(&body[..]),
    );
    assert_error(&r, 401, "no token with a 16 MiB body");
    server.stop().unwrap();
}

/// `lesion calibrate` end to end: the bundle predicts four images, their truth makes the two
/// highest melanoma scores melanomas, Youden's threshold is fitted between them and the rest,
/// the card records the fit, and the service decides with it. Predictions of another bundle,
/// an older `prediction.json` and a truth with an image the predictions lack are refused, each
/// leaving the card as it was.
#[test]
fn calibrated_thresholds_are_fitted_recorded_and_served() {
    let f = fixture();
    let pred = f.root.join("pred");
    let cache = PreprocessCache::new(&f.root.join("cache"));
    let b = Bundle::open(&f.bundle).unwrap();
    bundle::predict(&b, &f.rows, &pred, &cache, Device::Cpu, false).unwrap();
    let table = read_2017_csv(&pred.join(bundle::CLASSIFICATION_CSV)).unwrap();
    let mut by_mel: Vec<f64> = table.melanoma.clone();
    by_mel.sort_by(|a, b| b.total_cmp(a));
    assert!(by_mel[1] > by_mel[2], "the test needs distinct melanoma scores: {by_mel:?}");
    let melanoma: Vec<bool> = table.melanoma.iter().map(|&m| m >= by_mel[1]).collect();
    // Keratosis: the highest keratosis score among the others.
    let top_ker = (0..table.ids.len())
        .filter(|&i| !melanoma[i])
        .max_by(|&i, &j| table.keratosis[i].total_cmp(&table.keratosis[j]))
        .unwrap();
    let mut truth = String::from("image_id,melanoma,seborrheic_keratosis\n");
    for (i, id) in table.ids.iter().enumerate() {
        let k = i == top_ker;
        truth.push_str(&format!("{id},{}.0,{}.0\n", u8::from(melanoma[i]), u8::from(k)));
    }
    let truth_path = f.root.join("truth.csv");
    std::fs::write(&truth_path, &truth).unwrap();
    let card_path = f.bundle.join(bundle::CARD_FILE);
    let card_before = std::fs::read(&card_path).unwrap();
    fn req<'a>(bundle: &'a Path, predictions: &'a Path, truth: &'a Path) -> CalibrateRequest<'a> {
        CalibrateRequest {
            bundle,
            predictions,
            truth,
            melanoma: OperatingPoint::Youden,
            keratosis: OperatingPoint::Sensitivity(1.0),
        }
    }

    // Refusals first; none touches the card.
    let other = f.root.join("other-bundle");
    export_crop_bundle(&f.root.join("seg"), &f.root.join("cls"), &other, TtaMode::None);
    let other_pred = f.root.join("other-pred");
    bundle::predict(
        &Bundle::open(&other).unwrap(),
        &f.rows,
        &other_pred,
        &cache,
        Device::Cpu,
        false,
    )
    .unwrap();
    let e =
        calibrate::calibrate(&req(&f.bundle, &other_pred, &truth_path)).unwrap_err().to_string();
    assert!(e.contains("another bundle") && e.contains("prediction.json"), "{e}");
    let old_pred = f.root.join("old-pred");
    std::fs::create_dir_all(&old_pred).unwrap();
    std::fs::copy(pred.join(bundle::CLASSIFICATION_CSV), old_pred.join(bundle::CLASSIFICATION_CSV))
        .unwrap();
    let mut summary: Value =
        serde_json::from_slice(&std::fs::read(pred.join(bundle::PREDICTION_FILE)).unwrap())
            .unwrap();
    summary.as_object_mut().unwrap().remove("bundle_identity");
    std::fs::write(old_pred.join(bundle::PREDICTION_FILE), summary.to_string()).unwrap();
    let e = calibrate::calibrate(&req(&f.bundle, &old_pred, &truth_path)).unwrap_err().to_string();
    assert!(e.contains("does not say which bundle"), "{e}");
    let extra_truth = f.root.join("truth-extra.csv");
    std::fs::write(&extra_truth, format!("{truth}ISIC_9999999,1.0,0.0\n")).unwrap();
    let e = calibrate::calibrate(&req(&f.bundle, &pred, &extra_truth)).unwrap_err().to_string();
    assert!(e.contains("ISIC_9999999") && e.contains("no row"), "{e}");
    assert_eq!(std::fs::read(&card_path).unwrap(), card_before, "a refusal changed the card");
    // A bundle whose segmentation net trained on one of the images: its prediction says so,
    // and calibrating on that image is refused, naming it.
    let seen_seg = seg_run(&f.root.join("seg-seen"));
    let seen_id = f.rows[2].id.clone();
    let split = Split { train: vec!["x".into()], val: vec![seen_id.clone()] };
    run::write_json(&seen_seg.join(SPLIT_FILE), &split).unwrap();
    let seen = f.root.join("seen-bundle");
    export_crop_bundle(&seen_seg, &f.root.join("cls"), &seen, TtaMode::None);
    let seen_card = Bundle::open(&seen).unwrap().card;
    let record = seen_card.training_images.as_ref().unwrap();
    assert_eq!((record.images, record.unrecorded.clone()), (2, vec!["cls/0".to_string()]));
    let seen_pred = f.root.join("seen-pred");
    let summary = bundle::predict(
        &Bundle::open(&seen).unwrap(),
        &f.rows,
        &seen_pred,
        &cache,
        Device::Cpu,
        false,
    )
    .unwrap();
    assert_eq!(summary.seen_in_training.unwrap().ids, vec![seen_id.clone()]);
    let seen_card_before = std::fs::read(seen.join(bundle::CARD_FILE)).unwrap();
    let e = calibrate::calibrate(&req(&seen, &seen_pred, &truth_path)).unwrap_err().to_string();
    assert!(e.contains(&seen_id) && e.contains("1 of the 4 images") && e.contains("train"), "{e}");
    assert_eq!(std::fs::read(seen.join(bundle::CARD_FILE)).unwrap(), seen_card_before);

    // The fit.
    let fit = calibrate::calibrate(&req(&f.bundle, &pred, &truth_path)).unwrap();
    assert_eq!(fit.images, 4);
    let mel = &fit.tasks[0];
    assert!(by_mel[2] < mel.threshold && mel.threshold < by_mel[1], "{mel:?} {by_mel:?}");
    assert_eq!((mel.sensitivity, mel.specificity, mel.previous), (1.0, 1.0, 0.5));
    let ker = &fit.tasks[1];
    assert_eq!(ker.sensitivity, 1.0, "sensitivity=1.0 keeps every keratosis");
    assert!(ker.threshold < table.keratosis[top_ker]);
    // A card rewrite's temporary sibling (left by a killed `calibrate`) is not a foreign file.
    let leftover = f.bundle.join(format!(".bundle.json{}4242", lesion_data::io::TMP_MARKER));
    std::fs::write(&leftover, b"{").unwrap();
    let card = Bundle::open(&f.bundle).unwrap().card;
    std::fs::remove_file(&leftover).unwrap();
    assert_eq!(card.classification.thresholds.melanoma, mel.threshold);
    assert_eq!(card.classification.thresholds.seborrheic_keratosis, ker.threshold);
    assert_eq!(card.threshold_fit.as_ref(), Some(&fit));
    assert_eq!(card.identity().unwrap(), b.card.identity().unwrap(), "identity ignores thresholds");
    // `cls eval --thresholds-of` on the fitting images gives the fit's own counts.
    let at =
        calibrate::at_card_thresholds(&card, &truth_path, &pred.join(bundle::CLASSIFICATION_CSV))
            .unwrap();
    assert_eq!(at.len(), 2);
    assert_eq!((at[0].threshold, at[0].confusion), (mel.threshold, mel.confusion));
    assert_eq!((at[1].threshold, at[1].confusion), (ker.threshold, ker.confusion));

    // The service answers with the fitted thresholds.
    let server = lesion_serve::start(&config(&f.bundle)).unwrap();
    let base = server.url();
    let a = agent();
    wait_ready(&a, &base);
    for (i, row) in f.rows.iter().enumerate() {
        let k = table.ids.iter().position(|id| *id == row.id).unwrap();
        let bytes = std::fs::read(&row.image_path).unwrap();
        let v = post(&a, &format!("{base}/v1/classify"), "image/png", &bytes).json();
        let c = &v["classification"];
        assert_eq!(c["thresholds"]["melanoma"].as_f64().unwrap(), mel.threshold);
        assert_eq!(c["decisions"]["melanoma"], melanoma[k], "image {i}: {c}");
        let p_ker = c["probabilities"]["seborrheic_keratosis"].as_f64().unwrap();
        assert_eq!(c["decisions"]["seborrheic_keratosis"], p_ker > ker.threshold);
        if k == top_ker {
            assert_eq!(c["decisions"]["seborrheic_keratosis"], true, "the keratosis is kept");
        }
    }
    let served_card = get(&a, &format!("{base}/v1/models"), None).json();
    assert_eq!(served_card["threshold_fit"]["tasks"][0]["rule"]["rule"], "youden");
    server.stop().unwrap();
}
