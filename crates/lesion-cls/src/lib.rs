//! Lesion classification (ISIC 2017 Part 3: melanoma / seborrheic keratosis / nevus) on the
//! core loop: the configuration ([`config`]), the colour/crop augmentation applied per batch
//! on tensors ([`augment`]), the classifier model and its image set ([`model`]), training
//! ([`trainer`], a [`lesion_core::Learner`]), test-time augmentation and prediction CSVs
//! ([`tta`]), stratified group k-fold cross-validation and the prediction of labelled rows
//! ([`cv`]), and the throughput benchmark against PyTorch ([`bench`]). The classes and their
//! one mapping from every source are [`lesion_data::labels`]'s.
pub mod augment;
pub mod bench;
pub mod config;
pub mod cv;
pub mod model;
pub mod trainer;
pub mod tta;

pub use config::ClsTrainConfig;
pub use lesion_data::labels::LesionClass;
pub use trainer::{train, ClsTrainRequest};
