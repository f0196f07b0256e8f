//! Summaries of repeated measurements (folds, seeds).
use serde::{Deserialize, Serialize};

/// Mean and sample standard deviation (n − 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(v: &[f64]) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Some(Spread { mean, std: var.sqrt(), n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let m = Spread::of(&[1.0, 2.0, 3.0]).unwrap();
        assert!((m.mean - 2.0).abs() < 1e-12 && (m.std - 1.0).abs() < 1e-12 && m.n == 3);
        assert_eq!(Spread::of(&[4.0]).unwrap().std, 0.0);
        assert!(Spread::of(&[]).is_none());
    }
}
