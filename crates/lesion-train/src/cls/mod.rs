//! Lesion classification (ISIC 2017 Part 3): melanoma / seborrheic keratosis / nevus on a
//! pretrained EfficientNet-Lite with a new 3-class head. Mapping of manifest diagnoses to the
//! three classes ([`labels`]), the configuration ([`config`]), the colour/crop augmentation
//! applied per batch on tensors ([`augment`]), RMSProp with its state in the open
//! ([`rmsprop`]), the trainer with its run folder ([`trainer`]), test-time augmentation and
//! prediction CSVs ([`tta`]), stratified group k-fold cross-validation ([`cv`]), and stacking components (out-of-fold
//! replica predictions, SVM layers on features: [`stacking`]).
pub mod augment;
pub mod config;
pub mod cv;
pub mod labels;
pub mod net;
pub mod rmsprop;
pub mod sgd;
pub mod stacking;
pub mod trainer;
pub mod tta;

pub use config::ClsTrainConfig;
pub use labels::LesionClass;
