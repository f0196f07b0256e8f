//! What segmentation and classification training share, written once:
//!
//! - [`run`]: run folders (create, record the start, resume, complete) and the model resolver;
//!   [`lock`]: one writer per run folder; [`staged`]: output folders that appear whole;
//! - [`resume`]: what `--resume` checks first (config unchanged or accepted, history whole);
//! - [`checkpoint`]: the one checkpoint format (weights, optimiser state, [`TrainState`]);
//! - [`optim`]: the [`Optimizer`] trait with Adam/AdamW, RMSProp and SGD, their state in the
//!   open so a resumed run continues exactly;
//! - [`metrics_log`]: `metrics.csv` + `metrics.jsonl`, generic over the task's epoch record;
//! - [`seed`]: per-(seed, epoch, sample) seeds and epoch orders;
//! - [`device`]: `--device`, the thread budget and the CPU allocator setting;
//! - [`fit`]: the one epoch loop, driven by a task's [`Learner`] (its train step and its
//!   validation), as burn's `TrainStep`/`ValidStep` drive its learner;
//! - [`precision`]: `--precision` (fp32/bf16/fp16), the autocast guard, fp16 loss scaling
//!   (`torch.amp.GradScaler`'s law) and channels-last weights and inputs;
//! - [`reference`]: the runner of the PyTorch reference scripts the benchmarks compare with.
pub mod checkpoint;
pub mod device;
pub mod error;
pub mod fit;
pub mod images;
pub mod lock;
pub mod metrics_log;
pub mod optim;
pub mod plots;
pub mod precision;
pub mod reference;
pub mod resume;
pub mod run;
pub mod seed;
pub mod staged;

pub use checkpoint::TrainState;
pub use error::{Result, TrainError};
pub use fit::{
    fit, BatchOf, BatchSource, FitOutcome, FitSettings, Learner, Plateau, StepOutput, ValidOutcome,
};
pub use optim::Optimizer;
pub use precision::{Autocast, GradScaler, Precision};
pub use run::RunOptions;
