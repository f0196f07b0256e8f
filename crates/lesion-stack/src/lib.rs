//! lesion-stack: the classical-learning half of the RECOD Titans ISIC 2017
//! system, in pure Rust.
//!
//! * [`svm`]: binary linear SVM solving liblinear's L2-regularised
//!   squared-hinge primal (`l2r_l2_svc_fun`) with trust-region Newton (TRON),
//!   i.e. scikit-learn's `LinearSVC(penalty='l2', loss='squared_hinge',
//!   dual=False)`, bias handled as liblinear (regularised bias feature).
//! * [`preprocess`]: optional standardisation and PCA before the SVM;
//!   [`pipeline`] chains them.
//! * [`platt`]: Platt scaling (Lin, Lin & Weng 2007) to probabilities.
//! * [`cv`]: the seeded random
//!   search of `C = 2^U(-16, 16)` by mean ROC AUC (parallel with rayon).
//! * [`meta`]: task probabilities and their clipped log2-odds.
//! * [`ensemble`]: the meta-learner over component models (replica combinations,
//!   metadata, `oof` leak check and `holdout` overlap, single / average / stacked report).
//! * [`stacking`]: the runs: SVM layers on the features of a classification CV's fold models,
//!   `stack train` (components read from their run folders, the cross-fitting invariant checked
//!   from the files) and `stack predict` (every fold model of every component, then the
//!   meta-learner).

pub mod cv;
pub mod ensemble;
pub mod error;
pub mod matrix;
pub mod meta;
pub mod pipeline;
pub mod platt;
pub mod preprocess;
pub mod stacking;
pub mod svm;
pub mod svm_head;

pub use error::StackError;
pub use matrix::FeatureMatrix;

/// SVM and meta-learner errors reach the run-level error whole.
impl From<StackError> for lesion_core::TrainError {
    fn from(e: StackError) -> Self {
        lesion_core::TrainError::External(Box::new(e))
    }
}
