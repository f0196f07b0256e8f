//! `lesion leaderboard` and `lesion report`: comparing runs (`lesion-report` does the work).
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use lesion_report::{Format, LeaderboardRequest, PredictContext, SortKey};

use crate::{GlobalOpts, RuntimeArgs};

/// The leaderboard's file formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Md,
    Csv,
    Json,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Md => Format::Markdown,
            FormatArg::Csv => Format::Csv,
            FormatArg::Json => Format::Json,
        }
    }
}

/// What the rows are ranked by.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SortArg {
    /// Internal mean AUC (validation or pooled out-of-fold) or validation Jaccard.
    Internal,
    /// External mean AUC or mean Jaccard (needs --external).
    External,
}

impl From<SortArg> for SortKey {
    fn from(s: SortArg) -> SortKey {
        match s {
            SortArg::Internal => SortKey::Internal,
            SortArg::External => SortKey::External,
        }
    }
}

#[derive(Args)]
pub struct LeaderboardArgs {
    /// Run folders (seg train, cls train, cls cv, stack svm-head) and sweep folders (every
    /// cell is listed, finished or not).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// A second labelled manifest (the paper's official validation set): each complete run
    /// predicts it once (cached in <run>/external/<hash>/) and is scored on it. Default: the
    /// one the sweeps' plan.json names, when they name one.
    #[arg(long)]
    pub external: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "md")]
    pub format: FormatArg,
    #[arg(long, value_enum, default_value = "internal")]
    pub sort: SortArg,
    /// Write the table here (default: standard output).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn leaderboard(a: LeaderboardArgs, g: &GlobalOpts) -> Result<()> {
    let cache = a.runtime.cache();
    let ctx = PredictContext { cache: &cache, device: a.runtime.device, progress: g.progress() };
    let lb = lesion_report::build_leaderboard(&LeaderboardRequest {
        inputs: &a.runs,
        external: a.external.as_deref(),
        sort: a.sort.into(),
        ctx,
    })?;
    let text = lb.render(a.format.into())?;
    match &a.out {
        Some(path) => {
            lesion_core::run::atomic_write(path, text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("{} runs -> {}", lb.rows.len(), path.display());
        }
        None => print!("{text}"),
    }
    if lb.external.is_some() {
        eprintln!(
            "external predictions: {} computed, {} reused from the cache",
            lb.predictions_computed, lb.predictions_reused
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct ReportArgs {
    /// Run folders and sweep folders, as for `lesion leaderboard`.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// The external manifest (Fig. 1's y axis, external ROC curves and CIs); predictions are
    /// the leaderboard's cached ones.
    #[arg(long)]
    pub external: Option<PathBuf>,
    /// A `lesion stack train` folder: its components are marked in Fig. 1 (default: the top 3
    /// by internal mean AUC, said so in the page).
    #[arg(long)]
    pub stack: Option<PathBuf>,
    /// The HTML file to write (one self-contained file).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Classifiers drawn in the ROC plots (the best by internal mean AUC).
    #[arg(long, default_value_t = lesion_report::report::DEFAULT_TOP_MODELS)]
    pub top: usize,
    /// Worst segmentation images shown per run.
    #[arg(long, default_value_t = lesion_report::report::DEFAULT_GALLERY)]
    pub gallery: usize,
    /// Bootstrap replicates of the ROC bands.
    #[arg(long, default_value_t = lesion_metrics::stats::DEFAULT_REPLICATES)]
    pub replicates: usize,
    /// Seed of the bootstrap (recorded in the page).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn report(a: ReportArgs, g: &GlobalOpts) -> Result<()> {
    let cache = a.runtime.cache();
    let ctx = PredictContext { cache: &cache, device: a.runtime.device, progress: g.progress() };
    let bootstrap = lesion_metrics::stats::BootstrapConfig {
        replicates: a.replicates,
        seed: a.seed,
        ..Default::default()
    };
    let out = lesion_report::write_report(&lesion_report::ReportRequest {
        inputs: &a.runs,
        external: a.external.as_deref(),
        stack: a.stack.as_deref(),
        out: &a.out,
        top: a.top,
        gallery: a.gallery,
        bootstrap,
        ctx,
    })?;
    println!(
        "{} runs, {} plots -> {} (predictions: {} computed, {} reused)",
        out.leaderboard.rows.len(),
        out.plots,
        out.path.display(),
        out.leaderboard.predictions_computed + out.predictions_computed,
        out.leaderboard.predictions_reused
    );
    Ok(())
}
