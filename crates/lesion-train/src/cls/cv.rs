//! Stratified, group-aware k-fold cross-validation and the prediction of labelled rows with
//! test-time augmentation.
//!
//! Folds: the rows' groups (`ManifestRow.group`, or the row alone when it has none) are
//! shuffled with the seed, then taken largest first and each given to the fold that currently
//! holds the fewest images of the group's majority class (ties: fewest images, then lowest
//! fold). Invariant: the images of one group are always in one fold.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use lesion_data::cache::PreprocessCache;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::Device;
use tracing::info;

use crate::cls::augment::to_unit;
use crate::cls::config::ClsTrainConfig;
use crate::cls::labels::{LabelledRow, LesionClass, NUM_CLASSES};
use crate::cls::trainer::{self, one_vs_rest_auc, ClsDataset, ClsModel, ClsTrainRequest};
use crate::cls::tta::{self, FeatureExport, ForwardOut, ImagePrediction, Pool, TtaMode};
use crate::error::{Result, TrainError};
use crate::run::{self, Split};

/// Fold of each row (same order as `rows`), in `0..k`.
pub fn stratified_group_folds(rows: &[LabelledRow], k: usize, seed: u64) -> Vec<usize> {
    let k = k.max(1);
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let g = r.row.group.clone().unwrap_or_else(|| format!("\u{0}{}", r.row.id));
        let gi = *index.entry(g.clone()).or_insert_with(|| {
            groups.push((g, Vec::new()));
            groups.len() - 1
        });
        groups[gi].1.push(i);
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    groups.shuffle(&mut rng);
    // Stable sort: larger groups first, shuffled order among equals.
    groups.sort_by_key(|g| std::cmp::Reverse(g.1.len()));
    let mut per_class = vec![[0usize; NUM_CLASSES]; k];
    let mut sizes = vec![0usize; k];
    let mut fold_of = vec![0usize; rows.len()];
    for (_, members) in &groups {
        let mut counts = [0usize; NUM_CLASSES];
        for &i in members {
            counts[rows[i].class.index()] += 1;
        }
        let major = (0..NUM_CLASSES).max_by_key(|&c| (counts[c], std::cmp::Reverse(c))).unwrap_or(0);
        let f = (0..k).min_by_key(|&f| (per_class[f][major], sizes[f], f)).unwrap_or(0);
        for &i in members {
            fold_of[i] = f;
            per_class[f][rows[i].class.index()] += 1;
        }
        sizes[f] += members.len();
    }
    fold_of
}

/// A stratified, group-aware train/validation split holding out about `fraction` of the rows
/// (fold 0 of `round(1 / fraction)` folds).
pub fn stratified_split(rows: &[LabelledRow], fraction: f64, seed: u64) -> Split {
    let k = (1.0 / fraction.max(f64::EPSILON)).round().max(2.0) as usize;
    let folds = stratified_group_folds(rows, k, seed);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (r, f) in rows.iter().zip(folds) {
        if f == 0 { val.push(r.row.id.clone()) } else { train.push(r.row.id.clone()) }
    }
    train.sort();
    val.sort();
    Split { train, val }
}

/// How to predict.
#[derive(Debug, Clone)]
pub struct PredictSettings {
    pub mode: TtaMode,
    pub pool: Pool,
    pub seed: u64,
    /// Export penultimate features (single model only).
    pub features: Option<FeatureExport>,
}

/// Predictions of an ensemble (pooled probabilities averaged over models) and, with one model
/// and `features` set, each image's R×F replica features.
pub struct Predicted {
    pub predictions: Vec<ImagePrediction>,
    pub features: Vec<tch::Tensor>,
}

/// Predicts `rows` with every model (each sees the images at its own cache size), TTA as set.
pub fn predict_rows(models: &[ClsModel], rows: &[LabelledRow], cache: &PreprocessCache, settings: &PredictSettings, device: Device, progress: bool) -> Result<Predicted> {
    if models.is_empty() {
        return Err(TrainError::Config("no models to predict with".into()));
    }
    if settings.features.is_some() && models.len() > 1 {
        return Err(TrainError::Config("feature export needs exactly one model".into()));
    }
    let mut sum: Option<Vec<ImagePrediction>> = None;
    let mut features = Vec::new();
    for m in models {
        let data = ClsDataset::prepare(rows, m.cfg.cache_size(), m.cfg.data.resize, cache, progress)?;
        let mut images = (0..data.len()).map(|i| Ok((data.ids[i].clone(), to_unit(&data.images_at(&[i as i64]), device))));
        let mut failure: Option<TrainError> = None;
        let out = tta::predict_tta(&mut images, settings.mode, &m.cfg.augment, settings.seed, settings.pool, m.cfg.model.input_size, |batch| {
            match m.eval_with_features(batch) {
                Ok((logits, f)) => ForwardOut { logits, features: settings.features.map(|_| f) },
                Err(e) => {
                    failure = Some(e);
                    ForwardOut { logits: tch::Tensor::zeros([batch.size()[0], NUM_CLASSES as i64], (tch::Kind::Float, device)), features: None }
                }
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        features = out.features;
        sum = Some(match sum.take() {
            None => out.predictions,
            Some(mut acc) => {
                for (a, p) in acc.iter_mut().zip(out.predictions) {
                    for c in 0..NUM_CLASSES {
                        a.probs[c] += p.probs[c];
                    }
                    // Replica r of every model saw the same transform (same mode and seed).
                    if a.replicas.len() != p.replicas.len() {
                        return Err(TrainError::Config(format!("models gave {} and {} replicas of {}", a.replicas.len(), p.replicas.len(), a.id)));
                    }
                    for (ar, pr) in a.replicas.iter_mut().zip(&p.replicas) {
                        for c in 0..NUM_CLASSES {
                            ar[c] += pr[c];
                        }
                    }
                }
                acc
            }
        });
    }
    let mut predictions = sum.unwrap_or_default();
    for p in &mut predictions {
        let n = models.len() as f64;
        for v in p.probs.iter_mut().chain(p.replicas.iter_mut().flatten()) {
            *v /= n;
        }
    }
    Ok(Predicted { predictions, features })
}

/// Writes the ISIC 2017 ground-truth CSV of labelled rows (1.0 / 0.0 per task), atomically.
pub fn write_truth_csv(path: &Path, rows: &[LabelledRow]) -> Result<()> {
    let preds: Vec<ImagePrediction> = rows
        .iter()
        .map(|r| {
            let mut probs = [0.0; NUM_CLASSES];
            probs[r.class.index()] = 1.0;
            ImagePrediction { id: r.row.id.clone(), probs, replicas: vec![probs] }
        })
        .collect();
    tta::write_isic2017_csv(path, &preds)
}

/// One fold's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldResult {
    pub fold: usize,
    pub train_images: usize,
    pub test_images: usize,
    pub auc_melanoma: Option<f64>,
    pub auc_keratosis: Option<f64>,
    pub best_epoch: usize,
    pub train_seconds: f64,
}

/// Mean and sample standard deviation (n − 1) of the defined values (one definition, shared
/// with the stacking report).
pub use lesion_stack::ensemble::Spread as MeanStd;

/// `cv.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvSummary {
    pub folds: Vec<FoldResult>,
    pub melanoma_auc: Option<MeanStd>,
    pub keratosis_auc: Option<MeanStd>,
    /// AUCs of all out-of-fold predictions pooled.
    pub pooled_melanoma_auc: Option<f64>,
    pub pooled_keratosis_auc: Option<f64>,
    pub tta: String,
    pub pool: Pool,
    pub seconds: f64,
}

/// Cross-validation request. `out_dir/fold-<i>` are ordinary run folders; a complete one is
/// reused and an interrupted one resumed, so rerunning the same command continues a CV.
pub struct CvRequest<'a> {
    pub cfg: ClsTrainConfig,
    pub rows: &'a [LabelledRow],
    pub folds: usize,
    pub seed: u64,
    pub out_dir: PathBuf,
    pub device: Device,
    pub cache: &'a PreprocessCache,
    pub weights_cache: PathBuf,
    pub command: Vec<String>,
    pub progress: bool,
    pub manifest: Option<PathBuf>,
}

pub const FOLDS_FILE: &str = "folds.json";
pub const OOF_CSV: &str = "oof.csv";
/// Every out-of-fold replica's probabilities (`image_id,fold,replica,melanoma,…`): the
/// input of `lesion stack`.
pub const OOF_REPLICAS_CSV: &str = "oof-replicas.csv";
pub const OOF_ISIC_CSV: &str = "oof-isic2017.csv";
pub const TRUTH_ISIC_CSV: &str = "truth-isic2017.csv";
pub const CV_JSON: &str = "cv.json";

pub fn run_cv(req: CvRequest<'_>) -> Result<CvSummary> {
    if req.folds < 2 {
        return Err(TrainError::Config(format!("need at least 2 folds, got {}", req.folds)));
    }
    req.cfg.validate()?;
    let t0 = std::time::Instant::now();
    std::fs::create_dir_all(&req.out_dir).map_err(|e| TrainError::file(&req.out_dir, e))?;
    let folds_path = req.out_dir.join(FOLDS_FILE);
    let fold_of: BTreeMap<String, usize> = if folds_path.exists() {
        run::read_json(&folds_path)?
    } else {
        let f = stratified_group_folds(req.rows, req.folds, req.seed);
        let map: BTreeMap<String, usize> = req.rows.iter().zip(f).map(|(r, f)| (r.row.id.clone(), f)).collect();
        run::write_json(&folds_path, &map)?;
        map
    };
    let mode = TtaMode::parse(&req.cfg.tta.replicas)?;
    let settings = PredictSettings { mode, pool: req.cfg.tta.pool, seed: req.cfg.tta.seed, features: None };
    let mut results = Vec::new();
    let mut oof: Vec<(usize, LabelledRow, ImagePrediction)> = Vec::new();
    for fold in 0..req.folds {
        let fold_id = |r: &LabelledRow| fold_of.get(&r.row.id).copied();
        if req.rows.iter().any(|r| fold_id(r).is_none()) {
            return Err(TrainError::file(&folds_path, "a labelled row has no fold (the manifest changed since this CV started)"));
        }
        let train_rows: Vec<LabelledRow> = req.rows.iter().filter(|r| fold_id(r) != Some(fold)).cloned().collect();
        let test_rows: Vec<LabelledRow> = req.rows.iter().filter(|r| fold_id(r) == Some(fold)).cloned().collect();
        let run_dir = req.out_dir.join(format!("fold-{fold}"));
        let completion = if run::is_complete(&run_dir) {
            info!(fold, "fold already trained; reusing {}", run_dir.display());
            run::read_json::<trainer::ClsCompletion>(&run_dir.join(run::COMPLETE_FILE))?
        } else {
            let resume = run_dir.join(run::CONFIG_FILE).exists();
            info!(fold, train = train_rows.len(), test = test_rows.len(), resume, "training fold");
            trainer::train(ClsTrainRequest {
                cfg: req.cfg.clone(),
                rows: &train_rows,
                run_dir: run_dir.clone(),
                device: req.device,
                cache: req.cache,
                resume,
                weights_cache: req.weights_cache.clone(),
                command: req.command.clone(),
                progress: req.progress,
                manifest: req.manifest.clone(),
            })?
            .completion
        };
        let model = trainer::load_model(&run_dir, req.device)?;
        let pred = predict_rows(std::slice::from_ref(&model), &test_rows, req.cache, &settings, req.device, req.progress)?;
        let classes: Vec<LesionClass> = test_rows.iter().map(|r| r.class).collect();
        let probs: Vec<[f64; NUM_CLASSES]> = pred.predictions.iter().map(|p| p.probs).collect();
        let r = FoldResult {
            fold,
            train_images: train_rows.len(),
            test_images: test_rows.len(),
            auc_melanoma: one_vs_rest_auc(&classes, &probs, LesionClass::Melanoma),
            auc_keratosis: one_vs_rest_auc(&classes, &probs, LesionClass::SeborrheicKeratosis),
            best_epoch: completion.best_epoch,
            train_seconds: completion.seconds,
        };
        info!(fold, auc_melanoma = ?r.auc_melanoma, auc_keratosis = ?r.auc_keratosis, "fold done");
        results.push(r);
        oof.extend(test_rows.into_iter().zip(pred.predictions).map(|(row, p)| (fold, row, p)));
    }
    oof.sort_by(|a, b| a.1.row.id.cmp(&b.1.row.id));
    write_oof(&req.out_dir.join(OOF_CSV), &oof)?;
    crate::cls::stacking::write_replicas_csv(&req.out_dir.join(OOF_REPLICAS_CSV), oof.iter().map(|(f, r, p)| (r.row.id.as_str(), *f, p.replicas.as_slice())))?;
    let preds: Vec<ImagePrediction> = oof.iter().map(|o| o.2.clone()).collect();
    let rows: Vec<LabelledRow> = oof.iter().map(|o| o.1.clone()).collect();
    tta::write_isic2017_csv(&req.out_dir.join(OOF_ISIC_CSV), &preds)?;
    write_truth_csv(&req.out_dir.join(TRUTH_ISIC_CSV), &rows)?;
    let classes: Vec<LesionClass> = rows.iter().map(|r| r.class).collect();
    let probs: Vec<[f64; NUM_CLASSES]> = preds.iter().map(|p| p.probs).collect();
    let summary = CvSummary {
        melanoma_auc: MeanStd::of(&results.iter().filter_map(|r| r.auc_melanoma).collect::<Vec<_>>()),
        keratosis_auc: MeanStd::of(&results.iter().filter_map(|r| r.auc_keratosis).collect::<Vec<_>>()),
        pooled_melanoma_auc: one_vs_rest_auc(&classes, &probs, LesionClass::Melanoma),
        pooled_keratosis_auc: one_vs_rest_auc(&classes, &probs, LesionClass::SeborrheicKeratosis),
        folds: results,
        tta: req.cfg.tta.replicas.clone(),
        pool: req.cfg.tta.pool,
        seconds: t0.elapsed().as_secs_f64(),
    };
    run::write_json(&req.out_dir.join(CV_JSON), &summary)?;
    Ok(summary)
}

fn write_oof(path: &Path, oof: &[(usize, LabelledRow, ImagePrediction)]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| TrainError::file(path, e);
    w.write_record(["image_id", "fold", "class", "melanoma", "seborrheic_keratosis", "nevus"]).map_err(err)?;
    for (fold, row, p) in oof {
        w.write_record([
            row.row.id.clone(),
            fold.to_string(),
            row.class.name().to_string(),
            format!("{:.8}", p.probs[0]),
            format!("{:.8}", p.probs[1]),
            format!("{:.8}", p.probs[2]),
        ])
        .map_err(err)?;
    }
    let bytes = w.into_inner().map_err(|e| TrainError::file(path, e.to_string()))?;
    run::atomic_write(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lesion_data::manifest::ManifestRow;

    fn row(id: &str, group: Option<&str>, class: LesionClass) -> LabelledRow {
        LabelledRow {
            row: ManifestRow {
                id: id.into(),
                source: "t".into(),
                image_path: id.into(),
                mask_path: None,
                width: 1,
                height: 1,
                content_hash: String::new(),
                diagnosis: Some(class.name().into()),
                group: group.map(String::from),
                meta: Default::default(),
            },
            class,
        }
    }

    #[test]
    fn folds_are_stratified_and_group_aware() {
        let mut rows = Vec::new();
        for i in 0..30 {
            rows.push(row(&format!("m{i}"), None, LesionClass::Melanoma));
        }
        for i in 0..120 {
            let g = (i % 40 == 0).then(|| format!("g{}", i / 40));
            rows.push(row(&format!("n{i}"), g.as_deref(), LesionClass::Nevus));
        }
        rows.push(row("dup", Some("g0"), LesionClass::Nevus));
        let folds = stratified_group_folds(&rows, 5, 1);
        assert_eq!(folds, stratified_group_folds(&rows, 5, 1));
        for f in 0..5 {
            let mel = rows.iter().zip(&folds).filter(|(r, &g)| g == f && r.class == LesionClass::Melanoma).count();
            assert_eq!(mel, 6, "fold {f}");
        }
        let g0: Vec<usize> = rows.iter().zip(&folds).filter(|(r, _)| r.row.group.as_deref() == Some("g0")).map(|(_, &f)| f).collect();
        assert!(g0.len() == 2 && g0[0] == g0[1]);
        let split = stratified_split(&rows, 0.2, 3);
        assert_eq!(split.train.len() + split.val.len(), rows.len());
        assert!((25..=35).contains(&split.val.len()), "{}", split.val.len());
    }

    #[test]
    fn mean_std() {
        let m = MeanStd::of(&[1.0, 2.0, 3.0]).unwrap();
        assert!((m.mean - 2.0).abs() < 1e-12 && (m.std - 1.0).abs() < 1e-12);
        assert!(MeanStd::of(&[]).is_none());
    }
}
