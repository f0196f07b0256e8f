//! Training and inference for the segmentation nets: losses, augmentation, an Adam whose state
//! lives in checkpoints, the trainer with its run folder, and prediction with ensembling.
pub mod augment;
pub mod checkpoint;
pub mod cls;
pub mod config;
pub mod dataset;
pub mod device;
pub mod error;
pub mod loss;
pub mod optim;
pub mod plots;
pub mod predict;
pub mod run;
pub mod trainer;

pub use config::SegTrainConfig;
pub use error::TrainError;
