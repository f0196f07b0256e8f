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
        PipelineConfig { standardize: true, pca_components: None, svm: SvmParams::default() }
    }
}

/// Largest gap, in log2 C, between neighbouring fits of a warm-started path
/// ([`SvmPipeline::fit_path`]); wider gaps between the requested `C`s are crossed by unscored
/// fits. Measured on ISIC 2017 Xception features (1,600 images, 2,052 features): from one
/// octave to the next a warm start needs 0-32 Newton steps; across ten octaves (2⁻¹¹ → 2⁻¹)
/// it ran into `max_iter` (1,000 steps, 14 s).
pub const PATH_STEP_LOG2: f64 = 1.0;

/// The configured transforms fitted on `x`, and `x` transformed by them.
fn fit_transforms(
    x: &FeatureMatrix,
    config: &PipelineConfig,
) -> Result<(Option<Standardizer>, Option<Pca>, FeatureMatrix), StackError> {
    let standardizer = if config.standardize { Some(Standardizer::fit(x)?) } else { None };
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
    Ok((standardizer, pca, z))
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
        let (standardizer, pca, z) = fit_transforms(x, config)?;
        let svm = LinearSvm::fit(&z, y, &config.svm)?;
        Ok(SvmPipeline { standardizer, pca, svm })
    }

    /// One pipeline per `C` of `cs` (in that order), sharing one fit of the transforms: the
    /// SVMs are solved along increasing `C`, each warm-started from the solution of the
    /// previous `C` ([`LinearSvm::fit_from`]; gaps wider than [`PATH_STEP_LOG2`] are crossed
    /// by unscored fits), as liblinear's `-C` search does. The `C` search uses it; a model
    /// that is kept is refitted from zero ([`CalibratedSvm::fit`]).
    ///
    /// Why: on nearly separable data (a fold of ~1,600 images and ~2,000 deep features) a
    /// cold start at `C` ≥ 2⁻⁴ needs hundreds of Newton steps and often stops at `max_iter`
    /// (measured on ISIC 2017 features, 11-16 s a fit); from the neighbouring solution the
    /// stopping rule is met in 0-32 steps.
    ///
    /// What it changes: every fit stops under the same rule as a cold one (`‖∇f‖ ≤ ε‖∇f(0)‖`,
    /// or `max_iter`). A
    /// previous solution that already meets a `C`'s rule is not used (that fit is the cold
    /// one, bit for bit: at large `C` the rule is loose, since `‖∇f(0)‖` grows with `C`, and
    /// the previous solution would be kept unchanged). Up to `C` ≈ 2⁻² warm and cold fits
    /// are the same minimiser (objectives equal to 6 digits on the ISIC features); between
    /// there and where the previous solution meets the rule, the warm fit meets the rule
    /// where the cold one often stops at `max_iter` (lower objectives).
    /// The order of the path is fixed by `cs` alone (ties keep their order), so the result
    /// does not depend on threads.
    pub fn fit_path(
        x: &FeatureMatrix,
        y: &[bool],
        config: &PipelineConfig,
        cs: &[f64],
    ) -> Result<Vec<SvmPipeline>, StackError> {
        let (standardizer, pca, z) = fit_transforms(x, config)?;
        let mut order: Vec<usize> = (0..cs.len()).collect();
        order.sort_by(|&a, &b| cs[a].total_cmp(&cs[b]));
        let mut svms: Vec<Option<LinearSvm>> = vec![None; cs.len()];
        // The last solution on the path and its log2 C.
        let mut previous: Option<(f64, LinearSvm)> = None;
        for &i in &order {
            let target = cs[i].log2();
            let params = SvmParams { c: cs[i], ..config.svm };
            // A previous solution that already meets this C's rule is not a start (the fit
            // is the cold one), so no stepping stones are walked towards it.
            let walk = match &previous {
                Some((_, start)) => !start.meets_rule(&z, y, &params)?,
                None => false,
            };
            // Stepping stones: unscored fits at most PATH_STEP_LOG2 apart, so that no warm
            // start is far from its solution.
            if walk {
                while let Some((at, start)) = previous.as_ref() {
                    if target - at <= PATH_STEP_LOG2 {
                        break;
                    }
                    let next = at + PATH_STEP_LOG2;
                    let params = SvmParams { c: next.exp2(), ..config.svm };
                    let svm = LinearSvm::fit_from(&z, y, &params, Some(start))?;
                    previous = Some((next, svm));
                }
            }
            let svm = LinearSvm::fit_from(&z, y, &params, previous.as_ref().map(|p| &p.1))?;
            svms[i] = Some(svm.clone());
            previous = Some((target, svm));
        }
        svms.into_iter()
            .map(|svm| {
                Ok(SvmPipeline {
                    standardizer: standardizer.clone(),
                    pca: pca.clone(),
                    svm: svm.ok_or(StackError::Empty)?,
                })
            })
            .collect()
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
///
/// The sigmoid is fitted on decisions divided by `scale` (the standard
/// deviation of the out-of-fold decisions): with a strongly regularised SVM
/// (C ≈ 2⁻¹⁴) decisions spread over ~1e-4, and Platt's Newton iterations,
/// which start at A = 0 and stop on a small gradient, then return an A of
/// either sign near 0. On unit-scale decisions the fit is well conditioned.
/// A sigmoid that would still invert the SVM's ranking (A > 0: higher
/// decision, lower probability) is replaced by the standard logistic of the
/// scaled decision, so calibration never reverses the order the SVM learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibratedSvm {
    pub pipeline: SvmPipeline,
    pub platt: PlattScaling,
    /// Decisions are divided by this before the sigmoid (1 in files written
    /// before it existed).
    #[serde(default = "unit_scale")]
    pub scale: f64,
}

fn unit_scale() -> f64 {
    1.0
}

/// Standard deviation of `v`, or 1 when it is 0 or not finite.
fn spread(v: &[f64]) -> f64 {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    if sd.is_finite() && sd > 0.0 {
        sd
    } else {
        1.0
    }
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
        let scale = spread(&oof);
        let scaled: Vec<f64> = oof.iter().map(|f| f / scale).collect();
        let mut platt = PlattScaling::fit(&scaled, y)?;
        if platt.a > 0.0 {
            platt = PlattScaling { a: -1.0, b: 0.0 };
        }
        let pipeline = SvmPipeline::fit(x, y, config)?;
        Ok(CalibratedSvm { pipeline, platt, scale })
    }

    /// Positive-class probabilities.
    pub fn predict_proba(&self, x: &FeatureMatrix) -> Result<Vec<f64>, StackError> {
        Ok(self
            .pipeline
            .decision_function(x)?
            .into_iter()
            .map(|f| self.platt.probability(f / self.scale))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decisions of a tiny-C SVM span ~1e-4; the calibrated probabilities must still rank
    /// as the decisions do (on PH2 features, fold 1, the unscaled fit gave A ≈ +4e-4: inverted,
    /// melanoma AUC 0.014).
    #[test]
    fn calibration_keeps_the_ranking_of_tiny_decisions() {
        let mut rows = Vec::new();
        let mut y = Vec::new();
        let mut g = Vec::new();
        for i in 0..60usize {
            let pos = i % 4 == 0;
            let noise = ((i * 37) % 11) as f64 / 11.0 - 0.5;
            rows.push(vec![if pos { 1.0 } else { 0.0 } + noise, noise * 0.5]);
            y.push(pos);
            g.push(i);
        }
        let x = FeatureMatrix::from_rows(&rows).unwrap();
        let cfg =
            PipelineConfig { svm: SvmParams::with_c(2f64.powi(-20)), ..PipelineConfig::default() };
        let m = CalibratedSvm::fit(&x, &y, &g, 5, &cfg).unwrap();
        assert!(m.platt.a < 0.0, "{:?}", m.platt);
        let d = m.pipeline.decision_function(&x).unwrap();
        let p = m.predict_proba(&x).unwrap();
        let spread_d = d.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
            - d.iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(spread_d < 1e-2, "decisions of a tiny C are tiny: {spread_d}");
        for i in 0..d.len() {
            for j in 0..d.len() {
                if d[i] > d[j] {
                    assert!(p[i] >= p[j], "ranking reversed");
                }
            }
        }
        let auc_d = lesion_metrics::cls::roc_auc(&y, &d).unwrap();
        let auc_p = lesion_metrics::cls::roc_auc(&y, &p).unwrap();
        assert!((auc_d - auc_p).abs() < 1e-9 && auc_p > 0.8, "{auc_d} {auc_p}");
    }
}
