//! Lesion segmentation on the core loop: the training configuration ([`config`]), the
//! in-memory dataset ([`dataset`]), the paper's augmentation law ([`augment`]), losses
//! ([`loss`]), training ([`trainer`], a [`lesion_core::Learner`]), prediction at each image's
//! own size with ensembling ([`predict`]) and the throughput
//! benchmark against PyTorch ([`bench`]).
pub mod augment;
pub mod bench;
pub mod config;
pub mod crop;
pub mod dataset;
pub mod descriptors;
pub mod loss;
pub mod predict;
pub mod trainer;

pub use config::SegTrainConfig;
pub use trainer::{train, TrainRequest};
