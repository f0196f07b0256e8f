//! Segmentation losses on logits. The soft dice loss is computed per image and averaged over
//! the batch (the paper's choice), with smoothing 1 so that an empty mask predicted empty
//! costs nothing.
use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

/// Smoothing added to numerator and denominator of the soft dice / Jaccard.
pub const SMOOTH: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    Dice,
    Bce,
    Jaccard,
    BceDice,
}

impl LossKind {
    /// Loss of `logits` (N×1×H×W) against `target` (N×1×H×W in {0,1}); a scalar.
    pub fn compute(self, logits: &Tensor, target: &Tensor) -> Tensor {
        match self {
            LossKind::Dice => soft_dice_loss(logits, target),
            LossKind::Bce => logits.binary_cross_entropy_with_logits::<Tensor>(
                target,
                None,
                None,
                Reduction::Mean,
            ),
            LossKind::Jaccard => soft_jaccard_loss(logits, target),
            LossKind::BceDice => {
                logits.binary_cross_entropy_with_logits::<Tensor>(
                    target,
                    None,
                    None,
                    Reduction::Mean,
                ) + soft_dice_loss(logits, target)
            }
        }
    }
}

/// Per-image sums of p·t and of p + t over the spatial dims.
fn overlap(logits: &Tensor, target: &Tensor) -> (Tensor, Tensor) {
    let p = logits.sigmoid().flatten(1, -1);
    let t = target.flatten(1, -1);
    let inter = (&p * &t).sum_dim_intlist(1, false, Kind::Float);
    let total = p.sum_dim_intlist(1, false, Kind::Float) + t.sum_dim_intlist(1, false, Kind::Float);
    (inter, total)
}

/// 1 − mean over images of (2·|P∩T| + s) / (|P| + |T| + s).
pub fn soft_dice_loss(logits: &Tensor, target: &Tensor) -> Tensor {
    let (inter, total) = overlap(logits, target);
    let dice = (inter * 2.0 + SMOOTH) / (total + SMOOTH);
    dice.mean(Kind::Float).neg() + 1.0
}

/// 1 − mean over images of (|P∩T| + s) / (|P∪T| + s).
pub fn soft_jaccard_loss(logits: &Tensor, target: &Tensor) -> Tensor {
    let (inter, total) = overlap(logits, target);
    let union = &total - &inter;
    let j = (inter + SMOOTH) / (union + SMOOTH);
    j.mean(Kind::Float).neg() + 1.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v).view([1, 1, 1, v.len() as i64])
    }

    #[test]
    fn dice_matches_hand_computation() {
        // Huge logits make p exactly 0/1: |P∩T| = 1, |P| = 2, |T| = 2 → dice = (2+1)/(4+1).
        let logits = t(&[50.0, 50.0, -50.0, -50.0]);
        let target = t(&[1.0, 0.0, 1.0, 0.0]);
        let l = soft_dice_loss(&logits, &target).double_value(&[]);
        assert!((l - (1.0 - 3.0 / 5.0)).abs() < 1e-6, "{l}");
        let j = soft_jaccard_loss(&logits, &target).double_value(&[]);
        assert!((j - (1.0 - 2.0 / 4.0)).abs() < 1e-6, "{j}");
    }

    #[test]
    fn perfect_and_empty_cost_nothing() {
        let target = t(&[1.0, 1.0, 0.0, 0.0]);
        let logits = &target * 100.0 - 50.0;
        assert!(soft_dice_loss(&logits, &target).double_value(&[]) < 1e-6);
        let empty = Tensor::zeros([1, 1, 1, 4], (Kind::Float, Device::Cpu));
        assert!(soft_dice_loss(&(empty.shallow_clone() - 50.0), &empty).double_value(&[]) < 1e-6);
    }

    #[test]
    fn dice_is_per_image_mean() {
        // Image 1 perfect (loss 0); image 2 all wrong: dice = 1/(4+1) → mean loss = 0.4.
        let target =
            Tensor::from_slice(&[1.0f32, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]).view([2, 1, 1, 4]);
        let logits = Tensor::from_slice(&[50.0f32, 50.0, -50.0, -50.0, -50.0, -50.0, 50.0, 50.0])
            .view([2, 1, 1, 4]);
        let l = soft_dice_loss(&logits, &target).double_value(&[]);
        assert!((l - 0.5 * (1.0 - 1.0 / 5.0)).abs() < 1e-6, "{l}");
    }

    #[test]
    fn losses_have_gradients() {
        for kind in [LossKind::Dice, LossKind::Bce, LossKind::Jaccard, LossKind::BceDice] {
            let logits =
                Tensor::randn([2, 1, 4, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let target = Tensor::randn([2, 1, 4, 4], (Kind::Float, Device::Cpu))
                .gt(0.0)
                .to_kind(Kind::Float);
            kind.compute(&logits, &target).backward();
            assert!(logits.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0, "{kind:?}");
        }
    }
}
