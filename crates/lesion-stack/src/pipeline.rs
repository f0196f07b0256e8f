//! Standardise → PCA → linear SVM, and its Platt-calibrated form.

use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::cv::cross_val_decision;
use crate::matrix::FeatureMatrix;
use crate::platt::PlattScaling;
use crate::preprocess::{Pca, Standardizer};
use crate::svm::{LinearSvm, SvmParams};
use crate::StackError;

/// What to fit. Transforms run in the order standardise, PCA, SVM.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PipelineConfig {
    /// Centre and scale every feature first.
    pub standardize: bool,
    /// Project onto this many principal components (after standardising).
    pub pca_components: Option<usize>,
    pub svm: SvmParams,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            standardize: true,
            pca_components: None,
            svm: SvmParams::default(),
        }
    }
}

/// A fitted pipeline; every part was fitted on the same training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvmPipeline {
    pub standardizer: Option<Standardizer>,
    pub pca: Option<Pca>,
    pub svm: LinearSvm,
}

impl SvmPipeline {
    /// Fits the configured transforms and the SVM on `(x, y)`.
    pub fn fit(
        x: &FeatureMatrix,
        y: &[bool],
        config: &PipelineConfig,
    ) -> Result<SvmPipeline, StackError> {
        let standardizer = if config.standardize {
            Some(Standardizer::fit(x)?)
        } else {
            None
        };
        let mut z = match &standardizer {
            Some(s) => s.transform(x)?,
            None => x.clone(),
        };
        let pca = match config.pca_components {
            Some(k) => {
                let p = Pca::fit(&z, k)?;
                z = p.transform(&z)?;
                Some(p)
            }
            None => None,
        };
        let svm = LinearSvm::fit(&z, y, &config.svm)?;
        Ok(SvmPipeline {
            standardizer,
            pca,
            svm,
        })
    }

    /// Applies the fitted transforms (not the SVM).
    pub fn transform(&self, x: &FeatureMatrix) -> Result<FeatureMatrix, StackError> {
        let mut z = match &self.standardizer {
            Some(s) => s.transform(x)?,
            None => x.clone(),
        };
        if let Some(p) = &self.pca {
            z = p.transform(&z)?;
        }
        Ok(z)
    }

    /// SVM decision values of the transformed rows.
    pub fn decision_function(&self, x: &FeatureMatrix) -> Result<Vec<f64>, StackError> {
        self.svm.decision_function(&self.transform(x)?)
    }
}

/// A pipeline fitted on all rows plus a Platt sigmoid fitted on its
/// out-of-fold decision values (group k-fold), so that the calibration
/// never sees decisions on the SVM's own training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibratedSvm {
    pub pipeline: SvmPipeline,
    pub platt: PlattScaling,
}

impl CalibratedSvm {
    /// Fits; `groups` (e.g. image ids) keep replicas in one fold.
    pub fn fit<G: Eq + Hash + Sync>(
        x: &FeatureMatrix,
        y: &[bool],
        groups: &[G],
        folds: usize,
        config: &PipelineConfig,
    ) -> Result<CalibratedSvm, StackError> {
        let oof = cross_val_decision(x, y, groups, folds, config)?;
        let platt = PlattScaling::fit(&oof, y)?;
        let pipeline = SvmPipeline::fit(x, y, config)?;
        Ok(CalibratedSvm { pipeline, platt })
    }

    /// Positive-class probabilities.
    pub fn predict_proba(&self, x: &FeatureMatrix) -> Result<Vec<f64>, StackError> {
        Ok(self
            .pipeline
            .decision_function(x)?
            .into_iter()
            .map(|f| self.platt.probability(f))
            .collect())
    }
}
