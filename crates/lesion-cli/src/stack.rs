//! `lesion stack …`: SVM layers on deep features and the stacked meta-learner over component
//! models (RECOD 2017's Part 3 ensemble), cross-fitted by default.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use lesion_cls::config::ClsTrainConfig;
use lesion_cls::tta;
use lesion_cls::tta::TtaMode;
use lesion_core::run::RunConfig;
use lesion_stack::cv::{SearchConfig, LOG2_C_MAX, LOG2_C_MIN};
use lesion_stack::ensemble::{
    MetaConfig, MetadataEncoding, RowPooling, DEFAULT_COMBINATIONS, DEFAULT_INNER_FOLDS,
    DEFAULT_META_DRAWS,
};
use lesion_stack::pipeline::PipelineConfig;
use lesion_stack::stacking::{self, StackMode, StackTrainRequest, SvmLayerRequest, SvmRows};
use lesion_stack::svm_head::{self, SvmHeadRequest};

use crate::{GlobalOpts, RuntimeArgs};

/// Random C draws of an SVM layer (the paper: 10).
const DEFAULT_SVM_LAYER_DRAWS: usize = 10;

#[derive(Subcommand)]
pub enum StackCommand {
    /// Train an SVM layer on the penultimate features of every fold model of a `lesion cls cv`
    /// folder (fitted on the fold's training images, scoring its test images with TTA replicas):
    /// a new component with out-of-fold predictions on the same folds.
    SvmLayer(SvmLayerArgs),
    /// Train an SVM head on a pretrained backbone's features, nothing fine-tuned: features under
    /// TTA (+ lesion descriptors from `lesion crop`), out-of-fold AUC by stratified group k-fold,
    /// then the head on every image. Writes a run folder `lesion export --cls` bundles.
    SvmHead(SvmHeadArgs),
    /// Train the meta-learner over component folders and write a report comparing each single
    /// component, their plain average and the stack on the same folds.
    Train(TrainArgs),
    /// Predict images with a trained stack (every component predicts, the meta-learner
    /// combines); writes the ISIC 2017 CSV and `<out>.full.csv`.
    Predict(PredictArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RowsArg {
    Replica,
    Image,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Oof,
    Holdout,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PoolArg {
    Avg,
    Extreme,
}

/// Patient metadata the meta-learner can append.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetaField {
    Age,
    Sex,
}

#[derive(Args)]
pub struct SvmLayerArgs {
    /// The manifest the CV was run on.
    #[arg(long)]
    pub manifest: PathBuf,
    /// A `lesion cls cv` output folder.
    #[arg(long)]
    pub cv: PathBuf,
    /// Output component folder.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Training rows: one per TTA replica, or one per image (mean of its replicas' features).
    #[arg(long, value_enum, default_value = "replica")]
    pub rows: RowsArg,
    #[command(flatten)]
    pub search: SvmSearchArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// The SVM's C search and feature projection, shared by `svm-layer` and `svm-head`.
#[derive(Args)]
pub struct SvmSearchArgs {
    /// Random draws of C = 2^U(-16, 16).
    #[arg(long, default_value_t = DEFAULT_SVM_LAYER_DRAWS)]
    pub draws: usize,
    /// Project the standardised features onto this many principal components first.
    #[arg(long)]
    pub pca: Option<usize>,
    /// Seed of the C draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SvmSearchArgs {
    fn config(&self) -> SearchConfig {
        search(self.draws, DEFAULT_INNER_FOLDS, self.seed, self.pca)
    }
}

#[derive(Args)]
pub struct SvmHeadArgs {
    /// Labelled manifest.
    #[arg(long)]
    pub manifest: PathBuf,
    /// Classification config whose `[model]` is the backbone (pretrained) and `[data]` its
    /// cache size and resize.
    #[arg(long)]
    pub config: PathBuf,
    /// Output folder (new).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Folds of the out-of-fold estimate.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Seed of the fold assignment.
    #[arg(long, default_value_t = 0)]
    pub fold_seed: u64,
    /// Feature TTA: none | fixed8 | N random replicas (features are averaged per image).
    #[arg(long, default_value = "fixed8")]
    pub tta: TtaMode,
    /// Lesion descriptors (`descriptors.csv` of `lesion crop`) appended to the features.
    #[arg(long)]
    pub descriptors: Option<PathBuf>,
    /// Patient metadata appended to the features (the manifest's `age` / `sex`); repeatable.
    #[arg(long, value_enum)]
    pub metadata: Vec<MetaField>,
    /// Reuse the features of an earlier `svm-head` folder (same backbone config, TTA and
    /// images; checked) instead of a second pass through the backbone.
    #[arg(long)]
    pub features_from: Option<PathBuf>,
    #[command(flatten)]
    pub search: SvmSearchArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Args)]
pub struct TrainArgs {
    /// The manifest with the diagnoses (and, for --metadata, age / sex).
    #[arg(long)]
    pub manifest: PathBuf,
    /// Component folders (`lesion cls cv` folders, `lesion stack svm-layer` folders; in holdout
    /// mode also `lesion cls train` run folders). Repeat the flag.
    #[arg(long = "component", required = true)]
    pub components: Vec<PathBuf>,
    /// Output folder.
    #[arg(short, long)]
    pub out: PathBuf,
    /// oof: cross-fitted meta features (components are CVs on common folds; a leak stops
    /// training). holdout: the paper's scheme on --meta-split, overlap reported.
    #[arg(long, value_enum, default_value = "oof")]
    pub mode: ModeArg,
    /// Holdout mode: file with the meta-training image ids, one per line.
    #[arg(long, required_if_eq("mode", "holdout"))]
    pub meta_split: Option<PathBuf>,
    /// Holdout mode: folds of the meta set for the report.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Replica combinations per image (training rows; pooled at prediction).
    #[arg(long, default_value_t = DEFAULT_COMBINATIONS)]
    pub combinations: usize,
    /// Random draws of C = 2^U(-16, 16) for each task's meta SVM.
    #[arg(long, default_value_t = DEFAULT_META_DRAWS)]
    pub draws: usize,
    /// Group k-fold folds of the C search and of the Platt calibration.
    #[arg(long, default_value_t = DEFAULT_INNER_FOLDS)]
    pub inner_folds: usize,
    /// How an image's rows are pooled.
    #[arg(long, value_enum, default_value = "avg")]
    pub pooling: PoolArg,
    /// Patient metadata to append: comma-separated of `age`, `sex`.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub metadata: Vec<MetaField>,
    /// Seed of the C draws (and, for `train`, of the replica combinations and holdout folds).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Args)]
pub struct PredictArgs {
    /// A `lesion stack train` output folder.
    #[arg(long)]
    pub stack: PathBuf,
    /// Manifest of the images to predict.
    #[arg(long)]
    pub manifest: PathBuf,
    /// ISIC 2017 Part 3 CSV to write.
    #[arg(short, long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

fn search(draws: usize, folds: usize, seed: u64, pca: Option<usize>) -> SearchConfig {
    SearchConfig {
        draws,
        folds,
        seed,
        log2_c_min: LOG2_C_MIN,
        log2_c_max: LOG2_C_MAX,
        base: PipelineConfig { pca_components: pca, ..PipelineConfig::default() },
    }
}

pub fn run(cmd: StackCommand, g: &GlobalOpts) -> Result<()> {
    let progress = g.progress();
    match cmd {
        StackCommand::SvmLayer(a) => {
            let rows = crate::cls::labelled(&a.manifest)?;
            let cache = a.runtime.cache();
            let s = stacking::train_svm_layer(SvmLayerRequest {
                cv_dir: a.cv.clone(),
                out_dir: a.out.clone(),
                rows: &rows,
                cache: &cache,
                device: a.runtime.device,
                svm_rows: match a.rows {
                    RowsArg::Replica => SvmRows::Replica,
                    RowsArg::Image => SvmRows::Image,
                },
                search: a.search.config(),
                progress,
            })?;
            let f = |v: &Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
            println!("{:>5} {:>10} {:>10} {:>8}", "fold", "AUC mel", "AUC sk", "log2 C");
            for (i, (m, k)) in s.fold_auc_melanoma.iter().zip(&s.fold_auc_keratosis).enumerate() {
                println!(
                    "{:>5} {:>10} {:>10} {:>8}",
                    i,
                    f(m),
                    f(k),
                    s.melanoma_log2_c
                        .get(i)
                        .and_then(|c| c.map(|c| format!("{c:.2}")))
                        .unwrap_or_else(|| "-".into())
                );
            }
            println!("SVM layer in {:.0}s -> {}", s.seconds, a.out.display());
            Ok(())
        }
        StackCommand::SvmHead(a) => {
            let rows = crate::cls::labelled(&a.manifest)?;
            let cache = a.runtime.cache();
            let cfg = ClsTrainConfig::from_toml_file(&a.config)?;
            let descriptors =
                a.descriptors.as_deref().map(svm_head::read_descriptors).transpose()?;
            let weights = crate::weights_cache();
            let c = svm_head::train_svm_head(SvmHeadRequest {
                cfg,
                rows: &rows,
                out: a.out.clone(),
                cache: &cache,
                weights_cache: &weights,
                device: a.runtime.device,
                folds: a.folds,
                fold_seed: a.fold_seed,
                tta: a.tta,
                tta_seed: 0,
                search: a.search.config(),
                descriptors: descriptors.as_ref(),
                metadata: MetadataEncoding {
                    age: a.metadata.contains(&MetaField::Age),
                    sex: a.metadata.contains(&MetaField::Sex),
                },
                features_from: a.features_from.clone(),
                progress,
            })?;
            let f = |v: &Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
            for (i, (m, k)) in c.fold_auc_melanoma.iter().zip(&c.fold_auc_keratosis).enumerate() {
                println!("fold {i}: AUC melanoma {} keratosis {}", f(m), f(k));
            }
            let sp = |s: &Option<lesion_metrics::summary::Spread>| {
                s.map(|s| format!("{:.4} ± {:.4}", s.mean, s.std)).unwrap_or_else(|| "-".into())
            };
            println!(
                "melanoma AUC {} (pooled out-of-fold {}), keratosis {} (pooled {}); {} images without descriptors; {:.0}s -> {}",
                sp(&c.auc_melanoma),
                f(&c.pooled_auc_melanoma),
                sp(&c.auc_keratosis),
                f(&c.pooled_auc_keratosis),
                c.images_without_descriptors,
                c.seconds,
                a.out.display()
            );
            Ok(())
        }
        StackCommand::Train(a) => {
            let rows = crate::cls::labelled(&a.manifest)?;
            let cache = a.runtime.cache();
            let metadata = MetadataEncoding {
                age: a.metadata.contains(&MetaField::Age),
                sex: a.metadata.contains(&MetaField::Sex),
            };
            let mode = match a.mode {
                ModeArg::Oof => StackMode::Oof,
                ModeArg::Holdout => {
                    let path =
                        a.meta_split.clone().context("--meta-split is required in holdout mode")?;
                    let meta_ids = lesion_data::split::read_id_list(&path)?
                        .into_iter()
                        .map(|(_, id)| id)
                        .collect();
                    StackMode::Holdout { meta_ids, folds: a.folds, seed: a.seed }
                }
            };
            let config = MetaConfig {
                combinations: a.combinations,
                pooling: match a.pooling {
                    PoolArg::Avg => RowPooling::Avg,
                    PoolArg::Extreme => RowPooling::Extreme,
                },
                search: search(a.draws, a.inner_folds, a.seed, None),
                metadata,
                seed: a.seed,
            };
            let out = stacking::train_stack(StackTrainRequest {
                components: a.components.clone(),
                rows: &rows,
                mode,
                config,
                out_dir: a.out.clone(),
                cache: &cache,
                device: a.runtime.device,
                progress,
            })?;
            print!("{}", stacking::report_markdown(&out.report, &out.file));
            if out.missing > 0 {
                println!(
                    "{} labelled images had no prediction from every component and were left out",
                    out.missing
                );
            }
            println!("-> {}", a.out.display());
            Ok(())
        }
        StackCommand::Predict(a) => {
            let rows = crate::cls::labelled_or_all(&a.manifest)?;
            let cache = a.runtime.cache();
            let preds =
                stacking::predict_stack(&a.stack, &rows, &cache, a.runtime.device, progress)?;
            tta::write_isic2017_csv(&a.out, &preds)?;
            let full = crate::cls::sibling(&a.out, "full.csv");
            tta::write_full_csv(&full, &preds)?;
            println!("{} images -> {} and {}", preds.len(), a.out.display(), full.display());
            Ok(())
        }
    }
}
