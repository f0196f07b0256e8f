//! The leaderboard and the report on tiny real runs trained here on synthetic images: a loose
//! `cls cv` (2 folds), `cls train` and `seg train`, and a sweep folder made by hand whose
//! cells are a complete CV, a cell not started and an interrupted CV. Checked against what the
//! runs' files hold and what the scorers and `lesion_metrics::stats` compute independently.
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use lesion_cls::config::{BatchNormMode, ClassWeighting, ClsTrainConfig, OptimizerKind};
use lesion_cls::cv::{self, CvRequest, CvSummary, PredictSettings};
use lesion_cls::trainer::{self, ClsCompletion, ClsEpochRecord, ClsTrainRequest};
use lesion_cls::tta::{self, TtaMode};
use lesion_core::run::{self, RunOptions, COMPLETE_FILE};
use lesion_data::cache::PreprocessCache;
use lesion_data::labels::{label_rows, LabelledRow, LesionClass};
use lesion_data::manifest::{Manifest, ManifestRow};
use lesion_data::synth::{self, SynthConfig};
use lesion_metrics::stats::{delong_auc, BootstrapConfig};
use lesion_report::internal::{Internal, InternalBasis};
use lesion_report::leaderboard::{self, External, Format, LeaderboardRequest, Row, SortKey};
use lesion_report::predictions::{self, PredictContext, SOURCE_JSON};
use lesion_report::report::{EvalSet, Marked, ReportRequest};
use lesion_report::scores::{ClsTable, ClsTask};
use lesion_report::source::RunState;
use lesion_seg::trainer::{Completion as SegCompletion, TrainRequest};
use lesion_seg::SegTrainConfig;
use lesion_stack::cv::SearchConfig;
use lesion_stack::ensemble::MetaConfig;
use lesion_stack::stacking::{self, StackMode, StackTrainRequest};
use tch::Device;

const IMAGES: usize = 30;
const EXTERNAL_IMAGES: usize = 15;
const SIDE: u32 = 48;
const FOLDS: usize = 2;
const FOLD_SEED: u64 = 3;

/// One test at a time: they share the runs and their prediction caches.
static SERIAL: Mutex<()> = Mutex::new(());

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    external: PathBuf,
    /// The external set without seborrheic keratoses (PH2-like).
    external_mel: PathBuf,
    cache: PreprocessCache,
    cv_a: PathBuf,
    cls_t: PathBuf,
    seg: PathBuf,
    sweep: PathBuf,
    /// The sweep's cell ids: complete, not started, interrupted.
    cells: Vec<String>,
    /// `lesion stack train` over cv-a and the sweep's complete cell.
    stack: PathBuf,
}

impl Fixture {
    fn ctx(&self) -> PredictContext<'_> {
        PredictContext { cache: &self.cache, device: Device::Cpu, progress: false }
    }

    /// The run folder of the sweep's cell `i`.
    fn cell(&self, i: usize) -> PathBuf {
        self.sweep.join("cells").join(&self.cells[i]).join("run")
    }

    /// The leaderboard name of the sweep's cell `i`.
    fn cell_name(&self, i: usize) -> String {
        format!("sw/{}", self.cells[i])
    }

    fn inputs(&self) -> Vec<PathBuf> {
        vec![self.cv_a.clone(), self.cls_t.clone(), self.seg.clone(), self.sweep.clone()]
    }
}

fn tiny_cls(seed: u64) -> ClsTrainConfig {
    let mut cfg = ClsTrainConfig::default();
    cfg.model.input_size = SIDE as i64;
    cfg.model.pretrained = false;
    cfg.data.val_fraction = Some(0.0);
    cfg.train.epochs = 1;
    cfg.train.batch_size = 8;
    cfg.train.seed = seed;
    cfg.train.freeze_backbone_epochs = 0;
    cfg.train.optimizer = OptimizerKind::Adamw;
    cfg.train.batchnorm = BatchNormMode::Frozen;
    cfg.tta.replicas = TtaMode::None;
    cfg
}

fn opts(dir: &Path, manifest: &Path, tmp: &Path) -> RunOptions {
    RunOptions {
        manifest: Some(manifest.to_path_buf()),
        ..RunOptions::new(dir, Device::Cpu, tmp.join("no-weights"))
    }
}

fn write_manifest(rows: Vec<ManifestRow>, path: &Path) -> PathBuf {
    Manifest::new(rows).write_csv(path).unwrap();
    path.to_path_buf()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn build_fixture() -> Fixture {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let data = synth::generate(
        &SynthConfig { count: IMAGES, width: SIDE, height: SIDE, seed: 11 },
        &root.join("data"),
    )
    .unwrap();
    let manifest = write_manifest(data.rows.clone(), &root.join("data/manifest.csv"));
    let ext = synth::generate(
        &SynthConfig { count: EXTERNAL_IMAGES, width: SIDE, height: SIDE, seed: 29 },
        &root.join("ext"),
    )
    .unwrap();
    let external = write_manifest(ext.rows.clone(), &root.join("ext/manifest.csv"));
    let mel_only: Vec<ManifestRow> = label_rows(&ext.rows)
        .0
        .into_iter()
        .filter(|r| r.class != LesionClass::SeborrheicKeratosis)
        .map(|r| r.row)
        .collect();
    let external_mel = write_manifest(mel_only, &root.join("ext/manifest-mel.csv"));
    let cache = PreprocessCache::new(&root.join("cache"));
    let rows = label_rows(&data.rows).0;
    let runs = root.join("runs");

    let cv_run = |dir: &Path, cfg: ClsTrainConfig| {
        cv::run_cv(CvRequest {
            cfg,
            rows: &rows,
            folds: FOLDS,
            seed: FOLD_SEED,
            cache: &cache,
            run: opts(dir, &manifest, &root),
        })
        .unwrap();
    };
    let cv_a = runs.join("cv-a");
    cv_run(&cv_a, tiny_cls(1));

    let cls_t = runs.join("cls-t");
    let mut cfg = tiny_cls(5);
    cfg.data.val_fraction = Some(0.4);
    cfg.train.epochs = 2;
    trainer::train(ClsTrainRequest {
        cfg,
        rows: &rows,
        cache: &cache,
        run: opts(&cls_t, &manifest, &root),
    })
    .unwrap();

    let seg = runs.join("seg");
    let mut scfg = SegTrainConfig::default();
    scfg.model.input_size = 32;
    scfg.model.base = 8;
    scfg.model.depth = 3;
    scfg.train.epochs = 2;
    scfg.train.batch_size = 4;
    scfg.data.split_seed = 7;
    lesion_seg::train(TrainRequest {
        cfg: scfg,
        rows: &data.rows,
        cache: &cache,
        run: opts(&seg, &manifest, &root),
    })
    .unwrap();

    // A sweep folder written by the sweep driver's own code (plan.json, cells/<id>/): cell 0
    // complete (trained below), cell 1 not started, cell 2 a CV killed after its first fold.
    let sweep = root.join("sweep");
    let plan_file = root.join("plan.toml");
    std::fs::write(
        &plan_file,
        format!(
            "[sweep]\nname = \"sw\"\ntask = \"cls-cv\"\nmanifests = [{manifest:?}]\n\
             seeds = [2, 3, 4]\nfolds = {FOLDS}\nfold_seeds = [{FOLD_SEED}]\n"
        ),
    )
    .unwrap();
    let plan = lesion_sweep::plan::load(&plan_file, &[]).unwrap();
    lesion_sweep::folder::SweepDir::new(&sweep).write_plan(&plan).unwrap();
    let cells: Vec<String> = plan.record.cells.iter().map(|c| c.id.as_str().to_string()).collect();
    let fx = Fixture {
        _tmp: tmp,
        root: root.clone(),
        external,
        external_mel,
        cache,
        cv_a: cv_a.clone(),
        cls_t,
        seg,
        sweep,
        cells,
        stack: runs.join("stack"),
    };
    let mut cfg = tiny_cls(2);
    cfg.train.class_weighting = ClassWeighting::InverseFrequency;
    cv::run_cv(CvRequest {
        cfg,
        rows: &rows,
        folds: FOLDS,
        seed: FOLD_SEED,
        cache: &fx.cache,
        run: opts(&fx.cell(0), &manifest, &root),
    })
    .unwrap();
    // Cell 2: a CV killed after its first fold.
    let d = fx.cell(2);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(cv_a.join(cv::FOLDS_FILE), d.join(cv::FOLDS_FILE)).unwrap();
    copy_dir(&cv_a.join("fold-0"), &d.join("fold-0"));
    // A stack of the two CVs (same folds), as `lesion stack train` makes it.
    let search = SearchConfig { draws: 2, folds: 3, ..SearchConfig::default() };
    stacking::train_stack(StackTrainRequest {
        components: vec![cv_a.clone(), fx.cell(0)],
        rows: &rows,
        mode: StackMode::Oof,
        config: MetaConfig { combinations: 2, search, ..MetaConfig::default() },
        out_dir: fx.stack.clone(),
        cache: &fx.cache,
        device: Device::Cpu,
        progress: false,
    })
    .unwrap();
    fx
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

fn row<'a>(rows: &'a [Row], name: &str) -> &'a Row {
    rows.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no row {name}"))
}

/// The pooled melanoma AUC of a CV, from its `oof.csv` (class column and probabilities).
fn oof_melanoma_auc(dir: &Path) -> f64 {
    let mut r = csv::Reader::from_path(dir.join(cv::OOF_CSV)).unwrap();
    let (mut truth, mut score) = (Vec::new(), Vec::new());
    for rec in r.records() {
        let rec = rec.unwrap();
        truth.push(&rec[2] == LesionClass::Melanoma.name());
        score.push(rec[3].parse::<f64>().unwrap());
    }
    lesion_metrics::cls::roc_auc(&truth, &score).unwrap()
}

fn source_mtimes(rows: &[Row]) -> Vec<std::time::SystemTime> {
    rows.iter()
        .filter_map(|r| r.external.as_ref().and_then(External::cache))
        .map(|c| std::fs::metadata(c.join(SOURCE_JSON)).unwrap().modified().unwrap())
        .collect()
}

#[test]
fn leaderboard_lists_every_run_with_the_metrics_its_files_hold() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture();
    let inputs = fx.inputs();
    let request = |external: &'static Path, sort| LeaderboardRequest {
        inputs: &inputs,
        external: Some(external),
        sort,
        ctx: fx.ctx(),
    };
    let ext: &'static Path = &fx.external;
    let lb = leaderboard::build(&request(ext, SortKey::Internal)).unwrap();
    let names: Vec<&str> = lb.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), 6, "{names:?}");
    let cells: Vec<String> = (0..3).map(|i| fx.cell_name(i)).collect();
    for n in ["cv-a", "cls-t", "seg"].into_iter().chain(cells.iter().map(String::as_str)) {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(names.last(), Some(&"seg"), "segmentation ranked apart, after classification");

    // A CV: cv.json's numbers, which are the scorer's on its out-of-fold predictions.
    let s: CvSummary = run::read_json(&fx.cv_a.join(cv::CV_JSON)).unwrap();
    let Some(Internal::Cls { basis, auc, folds_melanoma, folds_keratosis }) =
        &row(&lb.rows, "cv-a").internal
    else {
        panic!("cv-a internal")
    };
    assert_eq!(*basis, InternalBasis::OutOfFold);
    assert_eq!((auc.melanoma, auc.keratosis), (s.pooled_melanoma_auc, s.pooled_keratosis_auc));
    assert_eq!((*folds_melanoma, *folds_keratosis), (s.melanoma_auc, s.keratosis_auc));
    let ev = lesion_metrics::cls::evaluate_2017(
        &fx.cv_a.join(cv::TRUTH_ISIC_CSV),
        &fx.cv_a.join(cv::OOF_ISIC_CSV),
    )
    .unwrap();
    assert!((auc.melanoma.unwrap() - ev.melanoma.scores.auc).abs() < 1e-6);
    assert!((auc.keratosis.unwrap() - ev.seborrheic_keratosis.scores.auc).abs() < 1e-6);
    assert!((auc.mean.unwrap() - ev.mean.auc).abs() < 1e-6);
    assert!((auc.melanoma.unwrap() - oof_melanoma_auc(&fx.cv_a)).abs() < 1e-6);

    // A training run: its best epoch's validation AUCs; a segmentation run: COMPLETE.json's.
    let c: ClsCompletion = run::read_json(&fx.cls_t.join(COMPLETE_FILE)).unwrap();
    let log: Vec<ClsEpochRecord> = lesion_core::metrics_log::read(&fx.cls_t).unwrap();
    let best = log.iter().find(|r| r.epoch == c.best_epoch).unwrap();
    let r = row(&lb.rows, "cls-t");
    let aucs = r.internal.as_ref().and_then(Internal::cls_aucs).unwrap();
    assert_eq!(
        (aucs.melanoma, aucs.keratosis, aucs.mean),
        (best.val_auc_melanoma, best.val_auc_keratosis, c.best_val_auc_mean)
    );
    assert_eq!(r.seconds, Some(c.seconds));
    let sc: SegCompletion = run::read_json(&fx.seg.join(COMPLETE_FILE)).unwrap();
    assert_eq!(row(&lb.rows, "seg").internal, Some(Internal::Seg { jaccard: sc.best_val_jaccard }));

    // Sweep cells: overrides; the ones not complete are listed with their state.
    let b = row(&lb.rows, &cells[0]);
    assert_eq!(b.state, RunState::Complete);
    assert_eq!((b.config["seed"].as_str(), b.config["fold_seed"].as_str()), ("2", "3"));
    assert_eq!(row(&lb.rows, &cells[1]).state, RunState::NotStarted);
    assert_eq!(
        row(&lb.rows, &cells[2]).state,
        RunState::Interrupted { detail: Some(format!("1 of {FOLDS} folds complete")) }
    );
    for n in &cells[1..] {
        assert!(matches!(row(&lb.rows, n).external, Some(External::Unavailable { .. })), "{n}");
        assert!(row(&lb.rows, n).internal.is_none(), "{n}");
    }

    // External metrics: the scorer's on a prediction CSV written here from the fold models.
    let Some(External::Cls { auc: xa, images, .. }) = &row(&lb.rows, "cv-a").external else {
        panic!("cv-a external")
    };
    let ext_rows: Vec<LabelledRow> = label_rows(&Manifest::read_csv(&fx.external).unwrap().rows).0;
    assert_eq!(*images, ext_rows.len());
    let models: Vec<_> = (0..FOLDS)
        .map(|f| {
            lesion_cls::model::load_model(&fx.cv_a.join(format!("fold-{f}")), Device::Cpu).unwrap()
        })
        .collect();
    let settings =
        PredictSettings { mode: TtaMode::None, pool: tta::Pool::Avg, seed: 0, features: None };
    let pred =
        cv::predict_rows(&models, &ext_rows, &fx.cache, &settings, Device::Cpu, false).unwrap();
    let mine = fx.root.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    tta::write_isic2017_csv(&mine.join("pred.csv"), &pred.predictions).unwrap();
    cv::write_truth_csv(&mine.join("truth.csv"), &ext_rows).unwrap();
    let ev = lesion_metrics::cls::evaluate_2017(&mine.join("truth.csv"), &mine.join("pred.csv"))
        .unwrap();
    assert!((xa.melanoma.unwrap() - ev.melanoma.scores.auc).abs() < 1e-9);
    assert!((xa.keratosis.unwrap() - ev.seborrheic_keratosis.scores.auc).abs() < 1e-9);
    assert!((xa.mean.unwrap() - ev.mean.auc).abs() < 1e-9);
    // Segmentation: the official scorer on masks predicted here.
    let Some(External::Seg { jaccard, .. }) = &row(&lb.rows, "seg").external else {
        panic!("seg external")
    };
    let model = lesion_seg::predict::load_model(&fx.seg, Device::Cpu).unwrap();
    let ext_manifest = Manifest::read_csv(&fx.external).unwrap().rows;
    lesion_seg::predict::predict_rows(
        std::slice::from_ref(&model),
        &ext_manifest,
        &mine.join("masks"),
        Device::Cpu,
        &Default::default(),
    )
    .unwrap();
    lesion_seg::predict::write_truth_masks(&ext_manifest, &mine.join("truth")).unwrap();
    let sev = lesion_metrics::seg::evaluate_dirs(&mine.join("truth"), &mine.join("masks")).unwrap();
    assert!((jaccard - sev.mean.jaccard).abs() < 1e-12, "{jaccard} vs {}", sev.mean.jaccard);

    // The cache is reused: nothing predicted the second time, no cache folder rewritten.
    let complete = lb.rows.iter().filter(|r| r.state.is_complete()).count();
    assert_eq!(complete, 4);
    let mtimes = source_mtimes(&lb.rows);
    assert_eq!(mtimes.len(), complete);
    let made = predictions::predictions_made();
    let again = leaderboard::build(&request(ext, SortKey::External)).unwrap();
    assert_eq!((again.predictions_computed, again.predictions_reused), (0, complete));
    assert_eq!(predictions::predictions_made(), made);
    assert_eq!(source_mtimes(&again.rows).len(), complete);
    let mut m1 = mtimes.clone();
    let mut m2 = source_mtimes(&again.rows);
    m1.sort();
    m2.sort();
    assert_eq!(m1, m2);
    // Sorted by the external metric within each task.
    let ext_means: Vec<f64> = again
        .rows
        .iter()
        .filter(|r| r.task() == Some(lesion_report::source::Task::Classification))
        .filter_map(|r| r.external.as_ref().and_then(External::headline))
        .collect();
    assert!(ext_means.windows(2).all(|w| w[0] >= w[1]), "{ext_means:?}");

    // Formats.
    let md = again.render(Format::Markdown).unwrap();
    assert!(
        md.contains(&format!("| {} |", fx.cell_name(1)))
            && md.contains("not started")
            && md.contains("incomplete (1 of 2 folds complete)"),
        "{md}"
    );
    let csv_text = again.render(Format::Csv).unwrap();
    assert_eq!(csv::Reader::from_reader(csv_text.as_bytes()).records().count(), 6);
    let json: serde_json::Value =
        serde_json::from_str(&again.render(Format::Json).unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 6);

    // Melanoma-only external data: keratosis is undefined, said so.
    let mel: &'static Path = &fx.external_mel;
    let lb = leaderboard::build(&request(mel, SortKey::Internal)).unwrap();
    let Some(External::Cls { auc, undefined, .. }) = &row(&lb.rows, "cv-a").external else {
        panic!("mel-only external")
    };
    assert!(auc.melanoma.is_some() && auc.keratosis.is_none() && auc.mean == auc.melanoma);
    assert!(
        undefined.as_deref().unwrap_or_default().contains("seborrheic_keratosis"),
        "{undefined:?}"
    );
    assert!(lb.to_markdown().contains("undefined"));
}

/// `src=` / `href=` attribute values of an HTML text.
fn link_targets(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            let end = rest.find('"').unwrap_or(rest.len());
            out.push(rest[..end].to_string());
        }
    }
    out
}

#[test]
fn report_is_one_self_contained_file_with_every_plot() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let fx = fixture();
    let inputs = fx.inputs();
    let out_dir = fx.root.join("report");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("report.html");
    let bootstrap = BootstrapConfig { replicates: 200, seed: 7, ..Default::default() };
    let request = ReportRequest {
        inputs: &inputs,
        external: Some(&fx.external),
        stack: None,
        out: &out,
        top: 3,
        gallery: 4,
        bootstrap: bootstrap.clone(),
        ctx: fx.ctx(),
    };
    let rep = lesion_report::write_report(&request).unwrap();
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 1, "one file, nothing beside it");
    let html = std::fs::read_to_string(&out).unwrap();
    if let Some(keep) = std::env::var_os("LESION_REPORT_KEEP") {
        std::fs::copy(&out, keep).unwrap();
    }
    for target in link_targets(&html) {
        assert!(
            target.starts_with("data:image/png;base64,"),
            "external reference: {}",
            &target[..target.len().min(80)]
        );
    }
    assert!(!html.contains("<script") && !html.contains("<link"));
    for h in [
        "<h2>Leaderboard</h2>",
        "<h2>Internal vs external AUC (Fig. 1)</h2>",
        "<h2>ROC curves</h2>",
        "<h2>AUC with 95 % confidence intervals (DeLong)</h2>",
        "<h2>Paired DeLong test</h2>",
        "<h2>Calibration</h2>",
        "<h2>Segmentation</h2>",
        "<h2>Learning curves</h2>",
    ] {
        assert!(html.contains(h), "{h}");
    }
    // Fig. 1: 3 panels; ROC: 2 tasks × (internal, external); calibration: internal, external;
    // 1 Jaccard histogram; learning curves of the 5 runs that have epochs (not the unstarted cell).
    let expected = 3 + 4 + 2 + 1 + 5;
    assert_eq!(html.matches("<svg").count(), expected);
    assert_eq!(rep.plots, expected);
    assert_eq!(html.matches("<img").count(), 4, "gallery of the 4 worst images");

    // Fig. 1: the three complete classifiers, a line through them, the top 3 marked.
    // The fixture's classifiers are barely trained (random backbone, frozen BatchNorm): their
    // AUCs on 15 images may tie, and whether they do can differ between CPUs. So the line is
    // asserted where both axes spread, and the page's note where one does not.
    let spread = |v: Vec<f64>| v.iter().any(|&a| a != v[0]);
    for p in &rep.fig1 {
        assert_eq!(p.points.len(), 3, "{:?}", p.metric);
        assert!(p.points.iter().all(|q| q.marked));
        let xs = p.points.iter().map(|q| q.internal).collect();
        let ys = p.points.iter().map(|q| q.external).collect();
        match &p.regression {
            Some(fit) => {
                assert!(spread(xs) && spread(ys), "{:?}: a line through tied AUCs", p.metric);
                let title = format!("R = {:.2}", fit.pearson_r);
                assert!(html.contains(&title), "{title}");
            }
            None => {
                assert!(!spread(xs) || !spread(ys), "{:?}: AUCs spread but no line", p.metric);
                let note = p.note.as_deref().unwrap_or_default();
                assert!(note.contains("no regression line") && html.contains(note), "{note}");
            }
        }
    }
    assert!(matches!(&rep.marked, Marked::TopInternal { members } if members.len() == 3));
    assert!(html.contains("No --stack given"));

    // DeLong CIs: stats::delong_auc on the CV's out-of-fold predictions, shown in the page.
    let oof =
        ClsTable::read(&fx.cv_a.join(cv::TRUTH_ISIC_CSV), &fx.cv_a.join(cv::OOF_ISIC_CSV)).unwrap();
    for task in ClsTask::ALL {
        let want = delong_auc(oof.truth(task), oof.score(task), 0.95).unwrap();
        let got = rep
            .ci
            .iter()
            .find(|c| c.model == "cv-a" && c.set == EvalSet::Internal && c.task == task)
            .unwrap();
        assert_eq!(got.ci.as_ref().unwrap(), &want);
        assert_eq!(got.images, IMAGES);
        let shown = format!("{:.4} [{:.4}, {:.4}]", want.auc, want.ci_low, want.ci_high);
        assert!(html.contains(&shown), "{shown}");
    }
    // The paired test between the two best, on the images both predicted (internal: the
    // cls train run's validation images are a subset of the CVs' out-of-fold ones).
    assert_eq!(rep.paired.len(), 4);
    assert!(rep.paired.iter().all(|p| p.test.is_ok() && p.images > 0));
    let seg = &rep.segmentation[0];
    assert_eq!(seg.worst.len(), 4);
    assert!(seg.worst.windows(2).all(|w| w[0].1 <= w[1].1));
    assert!(html.contains(&format!("{:.1} %", seg.share_below * 100.0)));
    assert!(html.contains("seed 7"), "bootstrap seed recorded in the page");

    // Again: every prediction comes from the cache, and the seeded bootstrap repeats.
    let again = lesion_report::write_report(&request).unwrap();
    assert_eq!((again.leaderboard.predictions_computed, again.predictions_computed), (0, 0));
    assert_eq!(again.roc, rep.roc);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), html);

    // With the stack: its two components are marked, the cls train run is not.
    let stacked = ReportRequest { stack: Some(&fx.stack), ..request };
    let rep = lesion_report::write_report(&stacked).unwrap();
    let Marked::Stack { members, not_listed, .. } = &rep.marked else { panic!("{:?}", rep.marked) };
    assert_eq!((members.len(), *not_listed), (2, 0), "{members:?}");
    for p in &rep.fig1 {
        let marked: Vec<&str> =
            p.points.iter().filter(|q| q.marked).map(|q| q.model.as_str()).collect();
        assert_eq!(marked.len(), 2, "{marked:?}");
        assert!(
            marked.contains(&"cv-a") && marked.contains(&fx.cell_name(0).as_str()),
            "{marked:?}"
        );
    }
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains("components of the stack") && !html.contains("No --stack given"));
}
