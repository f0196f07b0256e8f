//! Model bundles: one self-describing folder that carries every net a prediction needs, out
//! of the run folders that trained them.
//!
//! ```text
//! BUNDLE/
//!   bundle.json                              the model card (see [`BundleCard`])
//!   seg/<i>/config.toml                      each segmentation net's training config
//!   seg/<i>/checkpoints/best.safetensors     and its weights
//!   cls/<i>/config.toml, cls/<i>/checkpoints/best.safetensors
//!   training-images.txt                      every image a model of it saw in training
//! ```
//!
//! Each model folder has a run folder's layout, so the task crates' own loaders read it. The
//! card lists every other file with its size and SHA-256; [`Bundle::open`] refuses a bundle
//! with a changed, missing or unlisted ("foreign") file, naming it, before anything is loaded.
//! A bundle is written into a hidden staging folder and renamed into place when complete, so
//! a half-written bundle never looks usable.
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::Device;

use indicatif::ProgressBar;
use lesion_cls::config::ClsTrainConfig;
use lesion_cls::model::Pixels;
use lesion_cls::tta::{write_full_csv, write_isic2017_csv};
use lesion_cls::tta::{Pool, TtaMode};
use lesion_core::checkpoint::CheckpointPaths;
use lesion_core::run::{
    self, RunConfig, RunInfo, Split, COMPLETE_FILE, CONFIG_FILE, RUN_FILE, SPLIT_FILE,
};
use lesion_core::staged::StagedDir;
use lesion_core::{Result, TrainError};

use crate::calibrate::ThresholdFit;
use crate::engine::{Engine, SegUse};
use lesion_cls::cv::FOLDS_FILE;
use lesion_data::cache::PreprocessCache;
use lesion_data::io::InputConcern;
use lesion_data::labels::LabelledRow;
use lesion_data::labels::LesionClass;
use lesion_data::manifest::ManifestRow;
use lesion_metrics::cls::Task as Task2017;
use lesion_seg::config::SegTrainConfig;
use lesion_seg::crop::CropSettings;
use lesion_seg::predict::{PostProcess, SUBMISSION_SUFFIX};
use lesion_stack::stacking::{
    fold_count, fold_dir, svm_fold_file, ComponentKind, LoadedStack, StackFile, StackMode,
    STACK_JSON,
};
use lesion_stack::svm_head::{read_head, DescriptorTable, SvmHead, SVM_HEAD_FILE};

/// The card's file name.
pub const CARD_FILE: &str = "bundle.json";
/// What `format` says in every card.
pub const FORMAT: &str = "lesion-bundle";
/// The card layout this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const SEG_DIR: &str = "seg";
const CLS_DIR: &str = "cls";
/// The bundle's list of images its models saw in training, one id a line, sorted.
pub const TRAINING_IMAGES_FILE: &str = "training-images.txt";
/// How many of the seen ids an error or warning names.
const SEEN_EXAMPLES: usize = 3;
/// Read buffer of the hashing loop.
const HASH_CHUNK: usize = 1 << 20;
/// The ISIC 2017 scorer's decision threshold (its accuracy, sensitivity and specificity).
pub const DEFAULT_DECISION_THRESHOLD: f64 = 0.5;

/// Which task a net of the bundle does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    Segmentation,
    Classification,
}

impl Task {
    fn dir(self) -> &'static str {
        match self {
            Task::Segmentation => SEG_DIR,
            Task::Classification => CLS_DIR,
        }
    }
}

/// Size and SHA-256 (lower-case hex) of one bundle file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub bytes: u64,
    pub sha256: String,
}

/// One net of the bundle, as the card describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelEntry {
    pub task: Task,
    /// Its folder inside the bundle (`seg/0`, `cls/1`, …).
    pub dir: String,
    /// The run folder it was exported from (as given at export).
    pub source_run: PathBuf,
    /// Architecture and input, in words (e.g. `efficientnet-lite0 192²`).
    pub net: String,
    pub input_size: i64,
    /// The input normalisation, as the config names it.
    pub normalization: String,
    /// The run's `run.json`: commit, seed, device, training and validation image counts,
    /// manifest.
    pub training: Option<RunInfo>,
    /// The run's `COMPLETE.json`: its validation metrics and health warnings.
    pub validation: serde_json::Value,
}

/// Probability above which the decision is positive, per task.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecisionThresholds {
    pub melanoma: f64,
    pub seborrheic_keratosis: f64,
}

impl DecisionThresholds {
    pub fn of(&self, task: Task2017) -> f64 {
        match task {
            Task2017::Melanoma => self.melanoma,
            Task2017::Keratosis => self.seborrheic_keratosis,
        }
    }

    pub fn of_mut(&mut self, task: Task2017) -> &mut f64 {
        match task {
            Task2017::Melanoma => &mut self.melanoma,
            Task2017::Keratosis => &mut self.seborrheic_keratosis,
        }
    }
}

impl Default for DecisionThresholds {
    fn default() -> Self {
        Self {
            melanoma: DEFAULT_DECISION_THRESHOLD,
            seborrheic_keratosis: DEFAULT_DECISION_THRESHOLD,
        }
    }
}

/// How the bundle's segmentation nets predict.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SegSettings {
    /// Mean probability above which a pixel is lesion.
    pub threshold: f64,
    pub post: PostProcess,
}

/// How the bundle's classifiers predict.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClsSettings {
    pub tta: TtaMode,
    pub pool: Pool,
    pub tta_seed: u64,
    /// Classify the lesion-centred crop of the bundle's own predicted mask (the classifiers
    /// were trained on such crops); `None` = the whole image.
    pub crop: Option<CropSettings>,
    pub thresholds: DecisionThresholds,
}

/// `bundle.json`: what the bundle holds and how to use it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleCard {
    pub format: String,
    pub version: u32,
    pub lesion_version: String,
    pub created_unix: u64,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub created: String,
    /// The commit of the code that exported it (`+dirty` when modified).
    pub source_commit: Option<String>,
    /// Class names, in the order of every probability vector.
    pub classes: Vec<String>,
    pub models: Vec<ModelEntry>,
    pub segmentation: SegSettings,
    pub classification: ClsSettings,
    /// The stacked classifier, when the bundle classifies with one (instead of `cls/` nets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackEntry>,
    /// Licences and provenance the user must know of (e.g. non-commercial weights).
    #[serde(default)]
    pub notices: Vec<String>,
    /// TorchScript copies of the nets (`lesion export --torchscript`, see
    /// [`crate::torchscript`]); none in bundles exported without it, and older cards.
    #[serde(default)]
    pub torchscript: Vec<crate::torchscript::TorchScriptEntry>,
    /// Every file of the bundle but the card, by path relative to the bundle (`/`-separated).
    pub files: BTreeMap<String, FileDigest>,
    /// Where `classification.thresholds` came from when `lesion calibrate` fitted them;
    /// absent = the scorer's 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_fit: Option<ThresholdFit>,
    /// The record of the images the models trained on (absent in bundles exported before
    /// it existed: then nobody can tell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_images: Option<TrainingImagesEntry>,
}

/// The card's entry for [`TRAINING_IMAGES_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingImagesEntry {
    pub file: String,
    /// Distinct ids in it: every training and validation image of every net and head.
    pub images: usize,
    /// Bundle folders of models whose run folder had no `split.json` (their images are not
    /// in the list, so an image missing from it may still have been seen).
    pub unrecorded: Vec<String>,
}

/// Which of some images the bundle's models saw in training (their run's training or
/// validation split): scores on those are not held-out estimates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenInTraining {
    /// The seen ids among those asked about, in the order asked.
    pub ids: Vec<String>,
    /// Models whose training images are not recorded (see [`TrainingImagesEntry`]).
    pub unrecorded: Vec<String>,
}

impl SeenInTraining {
    /// `"2 of the 150 images (ISIC_1, ISIC_2)"`: for errors and warnings.
    pub fn describe(&self, of: usize) -> String {
        let mut shown: Vec<&str> =
            self.ids.iter().take(SEEN_EXAMPLES).map(String::as_str).collect();
        if self.ids.len() > SEEN_EXAMPLES {
            shown.push("…");
        }
        format!("{} of the {of} images ({})", self.ids.len(), shown.join(", "))
    }
}

/// The images a bundle's models saw, gathered at export from their run folders' splits.
struct SeenImages {
    /// The staging folder, so that members are named by their place in the bundle.
    staging: PathBuf,
    ids: BTreeSet<String>,
    unrecorded: Vec<String>,
}

impl SeenImages {
    fn new(staging: &Path) -> SeenImages {
        SeenImages { staging: staging.to_path_buf(), ids: BTreeSet::new(), unrecorded: Vec::new() }
    }

    /// Adds the training and validation ids of the run folder exported to `to`.
    fn add_run(&mut self, run_dir: &Path, to: &Path) -> Result<()> {
        let path = run_dir.join(SPLIT_FILE);
        if !path.is_file() {
            let member = to.strip_prefix(&self.staging).unwrap_or(to);
            self.unrecorded.push(member.display().to_string());
            return Ok(());
        }
        let split: Split = run::read_json(&path)?;
        self.ids.extend(split.train);
        self.ids.extend(split.val);
        Ok(())
    }

    /// Writes the list into the staging folder; returns the card's entry.
    fn write(self) -> Result<TrainingImagesEntry> {
        let text: String = self.ids.iter().map(|id| format!("{id}\n")).collect();
        run::atomic_write(&self.staging.join(TRAINING_IMAGES_FILE), text.as_bytes())?;
        Ok(TrainingImagesEntry {
            file: TRAINING_IMAGES_FILE.to_string(),
            images: self.ids.len(),
            unrecorded: self.unrecorded,
        })
    }
}

impl BundleCard {
    /// SHA-256 (hex) of the card without its decision thresholds and their fit: what makes
    /// the bundle's probabilities (nets, files, settings), so predictions made before a
    /// calibration still match the calibrated bundle, and those of any other bundle do not.
    pub fn identity(&self) -> Result<String> {
        let mut card = self.clone();
        card.classification.thresholds = DecisionThresholds::default();
        card.threshold_fit = None;
        let bytes = serde_json::to_vec(&card).map_err(|e| TrainError::file(CARD_FILE, e))?;
        Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn models_of(&self, task: Task) -> impl Iterator<Item = &ModelEntry> {
        self.models.iter().filter(move |m| m.task == task)
    }
}

/// The card's description of a stacked classifier (`stack/` in the bundle: `stack.json` with
/// component folders relative to it, each component's fold nets and SVM folds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackEntry {
    pub dir: String,
    /// The `lesion stack train` folder it was exported from.
    pub source: PathBuf,
    /// Component names and kinds (`cv`, `svm-layer`, `run`) with their net counts.
    pub components: Vec<StackComponentEntry>,
    /// Images the meta-learner was trained on.
    pub images: usize,
    /// The stack's `COMPLETE.json` (its out-of-fold AUCs).
    pub validation: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackComponentEntry {
    pub name: String,
    pub kind: String,
    pub nets: usize,
}

/// What `lesion export` was asked.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub seg_runs: Vec<PathBuf>,
    pub cls_runs: Vec<PathBuf>,
    /// A complete `lesion stack train` folder: its components' nets, SVM layers and the
    /// meta-learner classify instead of `cls_runs` (one or the other).
    pub stack: Option<PathBuf>,
    pub out: PathBuf,
    pub segmentation: SegSettings,
    pub classification: ClsSettings,
    pub notices: Vec<String>,
    /// Also trace every net into `torchscript/` (listed and hashed like every file).
    pub torchscript: bool,
}

/// SHA-256 and size of a file, streamed.
pub fn digest_file(path: &Path) -> Result<FileDigest> {
    let mut f = std::fs::File::open(path).map_err(|e| TrainError::file(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| TrainError::file(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(FileDigest { bytes, sha256 })
}

/// Every regular file under `root` (relative, `/`-separated), sorted; links and other
/// special files are errors (a bundle is plain files only).
fn list_files(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| TrainError::file(&dir, e))? {
            let entry = entry.map_err(|e| TrainError::file(&dir, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| TrainError::file(&path, e))?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                // An atomic write's temporary sibling (`lesion calibrate` rewriting the card,
                // or one it left when killed) is not part of the bundle.
                if entry.file_name().to_string_lossy().contains(lesion_data::io::TMP_MARKER) {
                    continue;
                }
                let rel = path.strip_prefix(root).map_err(|e| TrainError::file(&path, e))?;
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            } else {
                return Err(TrainError::file(
                    &path,
                    "not a regular file or folder (a bundle holds plain files only)",
                ));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (the proleptic Gregorian calendar, UTC).
pub fn utc_timestamp(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| TrainError::file(parent, e))?;
    }
    std::fs::copy(from, to)
        .map_err(|e| TrainError::file(from, format!("copy into bundle: {e}")))?;
    Ok(())
}

/// Describes one run and copies its config and best weights to `<staging>/<dir>`.
fn export_run(
    run_dir: &Path,
    task: Task,
    index: usize,
    staging: &Path,
    seen: &mut SeenImages,
) -> Result<ModelEntry> {
    if !run::is_complete(run_dir) {
        return Err(TrainError::file(
            run_dir,
            "not a complete run (no COMPLETE.json): finish or resume it before exporting",
        ));
    }
    let weights = CheckpointPaths::new(run_dir).best;
    if !weights.exists() {
        return Err(TrainError::file(&weights, "the run has no best checkpoint"));
    }
    let config = run_dir.join(CONFIG_FILE);
    let (net, input_size, normalization) = match task {
        Task::Segmentation => {
            let cfg = SegTrainConfig::from_toml_file(&config)?;
            let m = &cfg.model;
            (
                format!("{} {}²", m.arch.name(), m.input_size),
                m.input_size,
                format!("{:?}", m.input_norm()),
            )
        }
        Task::Classification => {
            let cfg = ClsTrainConfig::from_toml_file(&config)?;
            let m = &cfg.model;
            let norm = serde_json::to_value(m.normalization)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            (m.describe(), m.input_size, norm)
        }
    };
    let dir = format!("{}/{index}", task.dir());
    let target = staging.join(task.dir()).join(index.to_string());
    seen.add_run(run_dir, &target)?;
    copy_file(&config, &target.join(CONFIG_FILE))?;
    let target_ck = CheckpointPaths::new(&target).best;
    copy_file(&weights, &target_ck)?;
    // An SVM head on the backbone's features travels with it.
    let head = run_dir.join(SVM_HEAD_FILE);
    if task == Task::Classification && head.exists() {
        copy_file(&head, &target.join(SVM_HEAD_FILE))?;
    }
    let info_path = run_dir.join(RUN_FILE);
    let training =
        if info_path.exists() { Some(run::read_json::<RunInfo>(&info_path)?) } else { None };
    let validation: serde_json::Value = run::read_json(&run_dir.join(COMPLETE_FILE))?;
    Ok(ModelEntry {
        task,
        dir,
        source_run: run_dir.to_path_buf(),
        net,
        input_size,
        normalization,
        training,
        validation,
    })
}

/// The folder of a stack inside a bundle.
const STACK_DIR: &str = "stack";
/// An SVM layer's CV (its fold nets) inside the layer's bundle folder.
const SVM_LAYER_CV_DIR: &str = "cv";

/// Copies what loading a run folder's best model needs (config, best weights, its records).
fn copy_run_files(run_dir: &Path, to: &Path, seen: &mut SeenImages) -> Result<()> {
    seen.add_run(run_dir, to)?;
    copy_file(&run_dir.join(CONFIG_FILE), &to.join(CONFIG_FILE))?;
    let weights = CheckpointPaths::new(run_dir).best;
    if !weights.exists() {
        return Err(TrainError::file(&weights, "the run has no best checkpoint"));
    }
    copy_file(&weights, &CheckpointPaths::new(to).best)?;
    for f in [COMPLETE_FILE, RUN_FILE] {
        if run_dir.join(f).exists() {
            copy_file(&run_dir.join(f), &to.join(f))?;
        }
    }
    Ok(())
}

/// Copies a CV folder's fold nets and `folds.json`; returns the fold count.
fn copy_cv(cv: &Path, to: &Path, seen: &mut SeenImages) -> Result<usize> {
    let k = fold_count(cv)?;
    copy_file(&cv.join(FOLDS_FILE), &to.join(FOLDS_FILE))?;
    for f in 0..k {
        copy_run_files(&fold_dir(cv, f), &fold_dir(to, f), seen)?;
    }
    Ok(k)
}

/// Copies a complete stack into `<staging>/stack`, its `stack.json` rewritten with component
/// folders relative to it (read back by [`Bundle::load_stack`]).
fn export_stack(stack_dir: &Path, staging: &Path, seen: &mut SeenImages) -> Result<StackEntry> {
    if !run::is_complete(stack_dir) {
        return Err(TrainError::file(
            stack_dir,
            "not a complete stack folder (no COMPLETE.json: `lesion stack train` did not finish here)",
        ));
    }
    let mut file: StackFile = run::read_json(&stack_dir.join(STACK_JSON))?;
    // The holdout meta-learner trained on images no component's split holds.
    if let StackMode::Holdout { meta_ids, .. } = &file.mode {
        seen.ids.extend(meta_ids.iter().cloned());
    }
    let target = staging.join(STACK_DIR);
    let mut components = Vec::new();
    for (i, c) in file.components.iter_mut().enumerate() {
        let rel = format!("c{i}");
        let to = target.join(&rel);
        let (kind, nets) = match &mut c.kind {
            ComponentKind::Run => {
                copy_run_files(&c.dir, &to, seen)?;
                ("run", 1)
            }
            ComponentKind::Cv => ("cv", copy_cv(&c.dir, &to, seen)?),
            ComponentKind::SvmLayer(info) => {
                let k = copy_cv(&info.cv, &to.join(SVM_LAYER_CV_DIR), seen)?;
                for f in 0..k {
                    copy_file(&svm_fold_file(&c.dir, f), &svm_fold_file(&to, f))?;
                }
                info.cv = PathBuf::from(&rel).join(SVM_LAYER_CV_DIR);
                ("svm-layer", k)
            }
        };
        components.push(StackComponentEntry { name: c.name.clone(), kind: kind.into(), nets });
        c.dir = PathBuf::from(rel);
    }
    run::write_json(&target.join(STACK_JSON), &file)?;
    let validation: serde_json::Value = run::read_json(&stack_dir.join(COMPLETE_FILE))?;
    Ok(StackEntry {
        dir: STACK_DIR.to_string(),
        source: stack_dir.to_path_buf(),
        components,
        images: file.images,
        validation,
    })
}

/// Writes a bundle from complete run folders. `out` must not exist (or be an empty folder);
/// the bundle appears there only once every file and the card are written.
pub fn export(req: &ExportRequest) -> Result<BundleCard> {
    if req.seg_runs.is_empty() && req.cls_runs.is_empty() && req.stack.is_none() {
        return Err(TrainError::Config(
            "a bundle needs at least one --seg or --cls run, or a --stack".into(),
        ));
    }
    if req.stack.is_some() && !req.cls_runs.is_empty() {
        return Err(TrainError::Config(
            "give --cls runs or a --stack, not both (the stack is the classifier)".into(),
        ));
    }
    if req.classification.crop.is_some() && req.seg_runs.is_empty() {
        return Err(TrainError::Config(
            "crop classification needs the segmentation nets that draw the crop (--seg)".into(),
        ));
    }
    if req.seg_runs.is_empty() {
        for r in &req.cls_runs {
            let cfg = lesion_cls::config::ClsTrainConfig::from_toml_file(&r.join(CONFIG_FILE))?;
            if cfg.model.pooling.needs_mask() {
                return Err(TrainError::file(
                    r,
                    "this classifier pools its features by the lesion (model.pooling = global-and-lesion): the bundle needs the segmentation nets that draw the mask (--seg)",
                ));
            }
        }
    }
    if let Some(c) = req.classification.crop {
        c.validate()?;
    }
    let staged = StagedDir::begin(&req.out)?;
    let staging = staged.path().to_path_buf();
    let written = (|| -> Result<BundleCard> {
        let mut models = Vec::new();
        let mut seen = SeenImages::new(&staging);
        for (i, r) in req.seg_runs.iter().enumerate() {
            models.push(export_run(r, Task::Segmentation, i, &staging, &mut seen)?);
        }
        for (i, r) in req.cls_runs.iter().enumerate() {
            models.push(export_run(r, Task::Classification, i, &staging, &mut seen)?);
        }
        let stack = match &req.stack {
            Some(dir) => Some(export_stack(dir, &staging, &mut seen)?),
            None => None,
        };
        let training_images = Some(seen.write()?);
        // Traced on the CPU: the files' weights are CPU constants, loadable anywhere.
        let torchscript = if req.torchscript {
            crate::torchscript::export_torchscript(&staging, &models, Device::Cpu)?
        } else {
            Vec::new()
        };
        let mut files = BTreeMap::new();
        for rel in list_files(&staging)? {
            files.insert(rel.clone(), digest_file(&staging.join(&rel))?);
        }
        let created_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let card = BundleCard {
            format: FORMAT.to_string(),
            version: FORMAT_VERSION,
            lesion_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix,
            created: utc_timestamp(created_unix),
            // The exporting checkout's commit; outside one, the commit the nets were trained at.
            source_commit: run::git_commit().or_else(|| {
                models.iter().find_map(|m| m.training.as_ref().and_then(|t| t.git_commit.clone()))
            }),
            classes: LesionClass::ALL.iter().map(|c| c.to_string()).collect(),
            models,
            segmentation: req.segmentation,
            classification: req.classification,
            stack,
            notices: req.notices.clone(),
            torchscript,
            files,
            threshold_fit: None,
            training_images,
        };
        run::write_json(&staging.join(CARD_FILE), &card)?;
        Ok(card)
    })();
    // On an error the staging folder is removed when `staged` drops.
    let card = written?;
    staged.commit()?;
    Ok(card)
}

/// A bundle whose every file was checked against its card.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub root: PathBuf,
    pub card: BundleCard,
}

impl Bundle {
    /// Reads the card and checks every file: a missing one, one whose size or SHA-256
    /// differs, and one the card does not list are each an error naming the file.
    pub fn open(root: &Path) -> Result<Bundle> {
        let card_path = root.join(CARD_FILE);
        if !card_path.exists() {
            return Err(TrainError::file(root, format!("not a model bundle (no {CARD_FILE})")));
        }
        let card: BundleCard = run::read_json(&card_path)?;
        if card.format != FORMAT || card.version != FORMAT_VERSION {
            return Err(TrainError::file(
                &card_path,
                format!(
                    "format {} version {}; this lesion reads {FORMAT} version {FORMAT_VERSION}",
                    card.format, card.version
                ),
            ));
        }
        let present: Vec<String> =
            list_files(root)?.into_iter().filter(|f| f != CARD_FILE).collect();
        for f in &present {
            if !card.files.contains_key(f) {
                return Err(TrainError::file(
                    root.join(f),
                    "foreign file: not listed in bundle.json (remove it, or re-export the bundle)",
                ));
            }
        }
        for (rel, want) in &card.files {
            let path = root.join(rel);
            if !path.is_file() {
                return Err(TrainError::file(&path, "listed in bundle.json but missing"));
            }
            let have = digest_file(&path)?;
            if have != *want {
                return Err(TrainError::file(
                    &path,
                    format!(
                        "changed since export: {} bytes, SHA-256 {} (bundle.json: {} bytes, {})",
                        have.bytes, have.sha256, want.bytes, want.sha256
                    ),
                ));
            }
        }
        if let Some(t) = &card.training_images {
            if t.file != TRAINING_IMAGES_FILE || !card.files.contains_key(TRAINING_IMAGES_FILE) {
                return Err(TrainError::file(
                    &card_path,
                    format!(
                        "training_images names {}, not a listed {TRAINING_IMAGES_FILE}",
                        t.file
                    ),
                ));
            }
        }
        for m in &card.models {
            let dir = root.join(&m.dir);
            if !dir.join(CONFIG_FILE).is_file() {
                return Err(TrainError::file(&dir, "model folder without config.toml"));
            }
        }
        Ok(Bundle { root: root.to_path_buf(), card })
    }

    /// Which of `ids` the bundle's models saw in training; `None` for a bundle exported
    /// before the record existed. The file was checked against the card by [`Bundle::open`].
    pub fn seen_in_training<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<SeenInTraining>> {
        let Some(entry) = &self.card.training_images else { return Ok(None) };
        let path = self.root.join(TRAINING_IMAGES_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::file(&path, e))?;
        let trained: BTreeSet<&str> = text.lines().collect();
        Ok(Some(SeenInTraining {
            ids: ids.into_iter().filter(|id| trained.contains(id)).map(str::to_string).collect(),
            unrecorded: entry.unrecorded.clone(),
        }))
    }

    /// The folders of the task's nets (run-folder layout), in card order.
    pub fn model_dirs(&self, task: Task) -> Vec<PathBuf> {
        self.card.models_of(task).map(|m| self.root.join(&m.dir)).collect()
    }

    /// Loads the segmentation nets.
    pub fn load_seg(&self, device: Device) -> Result<Vec<lesion_seg::predict::LoadedModel>> {
        self.model_dirs(Task::Segmentation)
            .iter()
            .map(|d| lesion_seg::predict::load_model(d, device))
            .collect()
    }

    /// Loads the stacked classifier, when the bundle has one (component folders resolved
    /// inside the bundle).
    pub fn load_stack(&self, device: Device) -> Result<Option<LoadedStack>> {
        let Some(entry) = &self.card.stack else { return Ok(None) };
        let dir = self.root.join(&entry.dir);
        let mut file: StackFile = run::read_json(&dir.join(STACK_JSON))?;
        for c in &mut file.components {
            c.dir = dir.join(&c.dir);
            if let ComponentKind::SvmLayer(info) = &mut c.kind {
                info.cv = dir.join(&info.cv);
            }
        }
        LoadedStack::load(file, device).map(Some)
    }

    /// Loads the classifiers, each with its SVM head when it has one.
    pub fn load_cls(
        &self,
        device: Device,
    ) -> Result<Vec<(lesion_cls::model::ClsModel, Option<SvmHead>)>> {
        self.model_dirs(Task::Classification)
            .iter()
            .map(|d| Ok((lesion_cls::model::load_model(d, device)?, read_head(d)?)))
            .collect()
    }
}

/// File names of a bundle prediction.
pub const MASKS_DIR: &str = "masks";
pub const CROPS_DIR: &str = "crops";
/// Masks of the classifiers' pixels (lesion pooling), in a bundle prediction's staging.
pub const CLASSIFIER_MASKS_DIR: &str = "classifier-masks";
pub const CLASSIFICATION_CSV: &str = "classification.csv";
pub const CLASSIFICATION_FULL_CSV: &str = "classification.full.csv";
pub const PREDICTION_FILE: &str = "prediction.json";

/// What a bundle prediction wrote (`prediction.json`, written last).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PredictionSummary {
    pub bundle: PathBuf,
    pub images: usize,
    pub masks_written: usize,
    /// Images whose predicted mask is empty (their crop is the whole image).
    pub empty_masks: Vec<String>,
    pub classified: usize,
    pub seconds: f64,
    /// The predicting bundle's [`BundleCard::identity`] (absent in older files), which
    /// `lesion calibrate` checks.
    #[serde(default)]
    pub bundle_identity: Option<String>,
    /// The predicted images the bundle's models trained on (absent when the bundle keeps
    /// no record, and in older files).
    #[serde(default)]
    pub seen_in_training: Option<SeenInTraining>,
    /// Classes the prediction treated as unable to occur ([`crate::engine::AbsentClasses`]);
    /// empty (and absent from the file) for the three-class question.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent_classes: Vec<LesionClass>,
    /// The images with an [`InputConcern`] (greyscale, very small), in row order; empty
    /// (and absent from the file) when none has one, and in older files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_concerns: Vec<ImageConcerns>,
}

/// One image's [`InputConcern`]s (never empty in a [`PredictionSummary`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConcerns {
    pub id: String,
    pub concerns: Vec<InputConcern>,
}

/// Options of [`predict_with`] beyond the images and the output.
#[derive(Debug, Clone, Default)]
pub struct PredictOptions {
    /// Classes that cannot occur among the images (checked by [`crate::engine::AbsentRule::check`]).
    pub absent_classes: Vec<LesionClass>,
}

/// [`predict_with`] with the default options: the three-class question.
pub fn predict(
    bundle: &Bundle,
    rows: &[ManifestRow],
    out: &Path,
    cache: &PreprocessCache,
    device: Device,
    progress: bool,
) -> Result<PredictionSummary> {
    predict_with(bundle, rows, out, cache, device, progress, &PredictOptions::default())
}

/// Predicts `rows` with every net of the bundle into `out`: `masks/<id>_segmentation.png`
/// (ISIC PNGs at each image's own size) when it has segmentation nets, `classification.csv`
/// (ISIC 2017: `image_id,melanoma,seborrheic_keratosis`) and `classification.full.csv` when it
/// has classifiers (on the lesion-centred crops when the bundle says so). Written in a staging
/// folder renamed into place at the end: `out` never holds a partial or mixed prediction, and
/// an existing non-empty `out` is refused.
pub fn predict_with(
    bundle: &Bundle,
    rows: &[ManifestRow],
    out: &Path,
    cache: &PreprocessCache,
    device: Device,
    progress: bool,
    options: &PredictOptions,
) -> Result<PredictionSummary> {
    if rows.is_empty() {
        return Err(TrainError::Config("no images to predict".into()));
    }
    let t0 = std::time::Instant::now();
    let staged = StagedDir::begin(out)?;
    let staging = staged.path().to_path_buf();
    let result = (|| -> Result<PredictionSummary> {
        let engine = Engine::load(bundle.clone(), device)?;
        let absent = engine.absent_rule().check(&options.absent_classes)?;
        let mut descriptors = DescriptorTable::new();
        let mut cls_rows: Vec<LabelledRow> = Vec::with_capacity(rows.len());
        let mut empty_masks = Vec::new();
        let mut masks_written = 0;
        let bar = if progress && engine.has_segmentation() {
            ProgressBar::new(rows.len() as u64)
        } else {
            ProgressBar::hidden()
        };
        let mut input_concerns = Vec::new();
        for row in rows {
            // Read once: the header judges the image, the segmentation decodes the same bytes.
            let bytes = lesion_data::io::read_bytes(&row.image_path)?;
            let concerns = lesion_data::io::input_concerns(&row.image_path, &bytes)?;
            if !concerns.is_empty() {
                let said: Vec<String> = concerns.iter().map(InputConcern::describe).collect();
                tracing::warn!("{} ({}): {}", row.id, row.image_path.display(), said.join("; "));
                input_concerns.push(ImageConcerns { id: row.id.clone(), concerns });
            }
            let mut cls_row = row.clone();
            if engine.has_segmentation() {
                let img = lesion_data::io::rgb_from_bytes(&row.image_path, &bytes)?;
                let Some(seg) = engine.segment(&img, &row.image_path, SegUse::ForClassification)?
                else {
                    return Err(TrainError::Config("segmentation nets vanished".into()));
                };
                if let Some(d) = seg.descriptors {
                    descriptors.insert(row.id.clone(), d);
                }
                if seg.lesion_box.is_none() {
                    empty_masks.push(row.id.clone());
                }
                if let Some(cropped) = seg.crop {
                    // Written losslessly and read back through the cache: the classifiers see
                    // the same pixels as the service's in-memory crop.
                    let p = staging.join(CROPS_DIR).join(format!("{}.png", row.id));
                    cls_row.width = cropped.width();
                    cls_row.height = cropped.height();
                    lesion_data::io::save_png_atomic(&p, &image::DynamicImage::ImageRgb8(cropped))?;
                    cls_row.content_hash = lesion_data::io::content_hash(&p)?;
                    cls_row.image_path = p;
                }
                let mask_path =
                    staging.join(MASKS_DIR).join(format!("{}{SUBMISSION_SUFFIX}", row.id));
                lesion_data::io::save_png_atomic(
                    &mask_path,
                    &image::DynamicImage::ImageLuma8(seg.mask),
                )?;
                masks_written += 1;
                cls_row.mask_path = None;
                if let Some(m) = seg.classifier_mask {
                    // The mask of the classifiers' pixels, read back through the cache with
                    // them (lesion pooling), as the service passes its in-memory one.
                    let p = staging.join(CLASSIFIER_MASKS_DIR).join(format!("{}.png", row.id));
                    lesion_data::io::save_png_atomic(&p, &image::DynamicImage::ImageLuma8(m))?;
                    cls_row.mask_path = Some(p);
                }
            } else {
                cls_row.mask_path = None;
            }
            // The class is not used in prediction; rows need one.
            cls_rows.push(LabelledRow { row: cls_row, class: LesionClass::Nevus });
            bar.inc(1);
        }
        bar.finish_and_clear();
        let mut classified = 0;
        if engine.has_classification() {
            let preds = engine.classify(
                &cls_rows,
                Pixels::Cache(cache),
                &descriptors,
                None,
                &absent,
                progress,
            )?;
            write_isic2017_csv(&staging.join(CLASSIFICATION_CSV), &preds)?;
            write_full_csv(&staging.join(CLASSIFICATION_FULL_CSV), &preds)?;
            classified = preds.len();
        }
        let summary = PredictionSummary {
            bundle: bundle.root.clone(),
            images: rows.len(),
            masks_written,
            empty_masks,
            classified,
            seconds: t0.elapsed().as_secs_f64(),
            bundle_identity: Some(bundle.card.identity()?),
            seen_in_training: bundle.seen_in_training(rows.iter().map(|r| r.id.as_str()))?,
            absent_classes: absent.classes().to_vec(),
            input_concerns,
        };
        run::write_json(&staging.join(PREDICTION_FILE), &summary)?;
        Ok(summary)
    })();
    let summary = result?;
    staged.commit()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_utc() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_795_996_800 + 3_661), "2026-11-30T01:01:01Z");
    }

    #[test]
    fn digest_is_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"abc").unwrap();
        let d = digest_file(&p).unwrap();
        assert_eq!(d.bytes, 3);
        assert_eq!(d.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
