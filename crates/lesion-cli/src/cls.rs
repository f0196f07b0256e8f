//! `lesion cls …`: classification (ISIC 2017 Part 3: melanoma, seborrheic keratosis, nevus).
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use lesion_metrics::cls::{evaluate_2017, Task2017Scores};

#[derive(Subcommand)]
pub enum ClsCommand {
    /// Score an ISIC 2017 Part 3 prediction CSV (`image_id,melanoma,seborrheic_keratosis`)
    /// against the ground truth as the 2017 scorer does: per task ROC AUC, average precision,
    /// accuracy / sensitivity / specificity at 0.5, specificity at sensitivity 82/89/95 %, and
    /// the means of the two tasks.
    Eval(EvalArgs),
}

#[derive(Args)]
pub struct EvalArgs {
    /// Ground truth CSV (ISIC-2017_*_Part3_GroundTruth.csv).
    pub truth: PathBuf,
    /// Prediction CSV in the same format.
    pub pred: PathBuf,
    /// Summary JSON (default: PRED with extension .scores.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Per-task CSV (default: PRED with extension .scores.csv).
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

fn sibling(pred: &Path, ext: &str) -> PathBuf {
    pred.with_extension(ext)
}

pub fn run(cmd: ClsCommand) -> Result<()> {
    match cmd {
        ClsCommand::Eval(a) => {
            let ev = evaluate_2017(&a.truth, &a.pred)?;
            let json = a.json.unwrap_or_else(|| sibling(&a.pred, "scores.json"));
            let csv = a.csv.unwrap_or_else(|| sibling(&a.pred, "scores.csv"));
            ev.write_json(&json)?;
            ev.write_csv(&csv)?;
            println!("{} images", ev.count);
            println!("{:24} {:>9} {:>9} {:>9}", "", "melanoma", "keratosis", "mean");
            let rows: [(&str, fn(&Task2017Scores) -> f64); 8] = [
                ("ROC AUC", |s| s.auc),
                ("average precision", |s| s.ap),
                ("accuracy @0.5", |s| s.accuracy),
                ("sensitivity @0.5", |s| s.sensitivity),
                ("specificity @0.5", |s| s.specificity),
                ("spec @ sens 82%", |s| s.spec_at_sens_82),
                ("spec @ sens 89%", |s| s.spec_at_sens_89),
                ("spec @ sens 95%", |s| s.spec_at_sens_95),
            ];
            for (name, f) in rows {
                println!(
                    "{name:24} {:9.4} {:9.4} {:9.4}",
                    f(&ev.melanoma.scores),
                    f(&ev.seborrheic_keratosis.scores),
                    f(&ev.mean)
                );
            }
            println!("summary: {}\nper task: {}", json.display(), csv.display());
            Ok(())
        }
    }
}
