//! Test-time augmentation: each image is seen as R replicas (random replicas of the training
//! augmentation, or the eight flips × quarter turns), all replicas of one image forming one
//! batch and one forward pass; the per-replica softmax probabilities are pooled per class.
//! Outputs: the ISIC 2017 CSV (`image_id,melanoma,seborrheic_keratosis`), a full CSV with the
//! three probabilities, and optionally the penultimate features (safetensors).
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use lesion_core::{Result, TrainError};
use lesion_data::labels::{LesionClass, NUM_CLASSES};

use crate::augment::{augment_batch, dihedral8, sample_params, ClsAugParams, ClsAugmentConfig};

/// Probability around which "extreme" pooling measures confidence.
const EXTREME_CENTRE: f64 = 0.5;

/// How replicas are pooled, per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pool {
    /// Mean of the replicas' probabilities (rows still sum to 1).
    Avg,
    /// Largest probability over replicas, per class.
    Max,
    /// Per class, the replica probability farthest from 0.5 (the most extreme logit of the
    /// class's one-vs-rest sigmoid view); ties keep the first replica.
    Extreme,
}

impl FromStr for Pool {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "avg" | "mean" => Ok(Pool::Avg),
            "max" => Ok(Pool::Max),
            "extreme" => Ok(Pool::Extreme),
            other => Err(TrainError::Config(format!(
                "unknown pool '{other}' (expected avg, max or extreme)"
            ))),
        }
    }
}

/// Which replicas each image gets. In a config: `"none"`, `"fixed8"`, or a number of random
/// replicas (as a string or an integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TtaSpec", into = "String")]
pub enum TtaMode {
    /// The image once, unchanged.
    None,
    /// Flips × quarter turns.
    Fixed8,
    /// N draws of the training augmentation.
    Random(usize),
}

/// A TTA mode as a config writes it.
#[derive(Deserialize)]
#[serde(untagged)]
enum TtaSpec {
    Text(String),
    Count(u64),
}

impl TryFrom<TtaSpec> for TtaMode {
    type Error = TrainError;
    fn try_from(spec: TtaSpec) -> Result<Self> {
        match spec {
            TtaSpec::Text(s) => TtaMode::parse(&s),
            TtaSpec::Count(n) => TtaMode::parse(&n.to_string()),
        }
    }
}

impl From<TtaMode> for String {
    fn from(m: TtaMode) -> String {
        m.to_string()
    }
}

impl std::fmt::Display for TtaMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TtaMode::None => f.write_str("none"),
            TtaMode::Fixed8 => f.write_str("fixed8"),
            TtaMode::Random(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for TtaMode {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        TtaMode::parse(s)
    }
}

impl TtaMode {
    /// `none` | `fixed8` | a positive number.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "none" | "1" => Ok(TtaMode::None),
            "fixed8" => Ok(TtaMode::Fixed8),
            n => match n.parse::<usize>() {
                Ok(k) if k > 0 => Ok(TtaMode::Random(k)),
                _ => Err(TrainError::Config(format!(
                    "tta '{s}': expected none, fixed8 or a positive number of replicas"
                ))),
            },
        }
    }

    /// The replicas' parameters for image `sample` (a pure function of its arguments).
    pub fn params(&self, aug: &ClsAugmentConfig, seed: u64, sample: u64) -> Vec<ClsAugParams> {
        match *self {
            TtaMode::None => vec![ClsAugParams::IDENTITY],
            TtaMode::Fixed8 => dihedral8(),
            TtaMode::Random(n) => {
                (0..n as u64).map(|r| sample_params(aug, seed, r, sample)).collect()
            }
        }
    }
}

/// Pools R×K replica probabilities into K values (see [`Pool`]).
pub fn pool(probs: &Tensor, how: Pool) -> Tensor {
    match how {
        Pool::Avg => probs.mean_dim([0i64].as_slice(), false, Kind::Float),
        Pool::Max => probs.amax([0i64].as_slice(), false),
        Pool::Extreme => {
            let idx = (probs - EXTREME_CENTRE).abs().argmax(0, true);
            probs.gather(0, &idx, false).squeeze_dim(0)
        }
    }
}

/// What one image's forward pass gives: logits R×K and features R×F.
pub struct ForwardOut {
    pub logits: Tensor,
    pub features: Option<Tensor>,
}

/// One image's pooled prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePrediction {
    pub id: String,
    /// Pooled probabilities in class order (melanoma, keratosis, nevus).
    pub probs: [f64; NUM_CLASSES],
    /// Each replica's probabilities, in replica order (the stacking meta-learner draws
    /// combinations of them).
    pub replicas: Vec<[f64; NUM_CLASSES]>,
}

/// Predictions plus optional features (R×F per image, on the CPU).
pub struct TtaOutput {
    pub predictions: Vec<ImagePrediction>,
    pub features: Vec<Tensor>,
}

/// Runs TTA over `images` (each 1×3×S×S float on [0, 1], with its id): one call of `forward`
/// per image, on the batch of its replicas (`out_size`² each).
pub fn predict_tta<F>(
    images: &mut dyn Iterator<Item = Result<(String, Tensor)>>,
    mode: TtaMode,
    aug: &ClsAugmentConfig,
    seed: u64,
    how: Pool,
    out_size: i64,
    mut forward: F,
) -> Result<TtaOutput>
where
    F: FnMut(&Tensor) -> ForwardOut,
{
    let mut predictions = Vec::new();
    let mut features = Vec::new();
    for (index, item) in images.enumerate() {
        let (id, img) = item?;
        let params = mode.params(aug, seed, index as u64);
        let batch = augment_batch(
            &img.expand([params.len() as i64, -1, -1, -1], false).contiguous(),
            &params,
            out_size,
        );
        let out = tch::no_grad(|| forward(&batch));
        let probs = out.logits.softmax(-1, Kind::Float).to_device(tch::Device::Cpu);
        let pooled = Vec::<f32>::try_from(pool(&probs, how)).map_err(TrainError::from)?;
        let mut p = [0.0; NUM_CLASSES];
        for (d, s) in p.iter_mut().zip(pooled) {
            *d = f64::from(s);
        }
        let flat = Vec::<f32>::try_from(probs.contiguous().view([-1])).map_err(TrainError::from)?;
        let replicas = flat
            .chunks_exact(NUM_CLASSES)
            .map(|c| {
                let mut r = [0.0; NUM_CLASSES];
                for (d, s) in r.iter_mut().zip(c) {
                    *d = f64::from(*s);
                }
                r
            })
            .collect();
        predictions.push(ImagePrediction { id, probs: p, replicas });
        if let Some(f) = out.features {
            features.push(f.to_device(tch::Device::Cpu));
        }
    }
    Ok(TtaOutput { predictions, features })
}

/// Writes the ISIC 2017 Part 3 CSV (`image_id,melanoma,seborrheic_keratosis`), atomically.
pub fn write_isic2017_csv(path: &Path, preds: &[ImagePrediction]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| TrainError::file(path, e);
    w.write_record(["image_id", "melanoma", "seborrheic_keratosis"]).map_err(err)?;
    for p in preds {
        w.write_record([p.id.clone(), format!("{:.8}", p.probs[0]), format!("{:.8}", p.probs[1])])
            .map_err(err)?;
    }
    let bytes = w.into_inner().map_err(|e| TrainError::file(path, e.to_string()))?;
    lesion_core::run::atomic_write(path, &bytes)
}

/// Writes all three probabilities (`image_id,melanoma,seborrheic_keratosis,nevus`), atomically.
pub fn write_full_csv(path: &Path, preds: &[ImagePrediction]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| TrainError::file(path, e);
    w.write_record(["image_id", "melanoma", "seborrheic_keratosis", "nevus"]).map_err(err)?;
    for p in preds {
        w.write_record([
            p.id.clone(),
            format!("{:.8}", p.probs[0]),
            format!("{:.8}", p.probs[1]),
            format!("{:.8}", p.probs[2]),
        ])
        .map_err(err)?;
    }
    let bytes = w.into_inner().map_err(|e| TrainError::file(path, e.to_string()))?;
    lesion_core::run::atomic_write(path, &bytes)
}

/// How features are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureExport {
    /// `features`: N×F, the mean over each image's replicas.
    PerImage,
    /// `features`: N×R×F.
    PerReplica,
}

/// Writes features as safetensors (`features`) plus `<path>.ids.txt` (one id a line, the row
/// order of `features`). Every image must have the same replica count.
pub fn write_features(
    path: &Path,
    ids: &[String],
    features: &[Tensor],
    how: FeatureExport,
) -> Result<()> {
    if features.len() != ids.len() || features.is_empty() {
        return Err(TrainError::file(
            path,
            format!("{} feature tensors for {} images", features.len(), ids.len()),
        ));
    }
    let stacked = Tensor::stack(features, 0);
    let t = match how {
        FeatureExport::PerImage => stacked.mean_dim([1i64].as_slice(), false, Kind::Float),
        FeatureExport::PerReplica => stacked,
    };
    lesion_core::checkpoint::write_tensors_atomic(path, &[("features".to_string(), t)])?;
    let mut ids_path = path.as_os_str().to_owned();
    ids_path.push(".ids.txt");
    lesion_core::run::atomic_write(Path::new(&ids_path), (ids.join("\n") + "\n").as_bytes())
}

/// Writes `image_id,fold,replica,melanoma,seborrheic_keratosis,nevus` atomically.
pub fn write_replicas_csv<'a>(
    path: &Path,
    rows: impl IntoIterator<Item = (&'a str, usize, &'a [[f64; NUM_CLASSES]])>,
) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| TrainError::file(path, e);
    w.write_record(["image_id", "fold", "replica", "melanoma", "seborrheic_keratosis", "nevus"])
        .map_err(err)?;
    for (id, fold, replicas) in rows {
        for (r, p) in replicas.iter().enumerate() {
            w.write_record([
                id.to_string(),
                fold.to_string(),
                r.to_string(),
                format!("{:.8}", p[0]),
                format!("{:.8}", p[1]),
                format!("{:.8}", p[2]),
            ])
            .map_err(err)?;
        }
    }
    let bytes = w.into_inner().map_err(|e| TrainError::file(path, e.to_string()))?;
    lesion_core::run::atomic_write(path, &bytes)
}

/// One line of an ISIC 2017 Part 3 prediction CSV.
#[derive(Debug, serde::Deserialize)]
struct Isic2017Line {
    image_id: String,
    melanoma: f64,
    seborrheic_keratosis: f64,
}

/// One line of a full prediction CSV ([`write_full_csv`]).
#[derive(Debug, serde::Deserialize)]
struct FullLine {
    image_id: String,
    melanoma: f64,
    seborrheic_keratosis: f64,
    nevus: f64,
}

/// How far a full CSV's three probabilities may sum from 1 (they are written with 8 decimals).
const PROBABILITY_SUM_TOLERANCE: f64 = 1e-4;

/// Checks one prediction line: every probability on [0, 1] (NaN refused) and the id not seen
/// before in the file. Errors name the file and the line.
fn check_prediction_line(
    path: &Path,
    line: usize,
    id: &str,
    values: &[f64],
    seen: &mut std::collections::BTreeSet<String>,
) -> Result<()> {
    if let Some(v) = values.iter().find(|v| !(0.0..=1.0).contains(*v)) {
        return Err(TrainError::file(path, format!("line {line}: probability {v} outside [0, 1]")));
    }
    if !seen.insert(id.to_string()) {
        return Err(TrainError::file(path, format!("line {line}: {id} appears twice")));
    }
    Ok(())
}

/// Reads an ISIC 2017 prediction CSV (`image_id,melanoma,seborrheic_keratosis`) in file order.
/// A duplicated id, or a probability outside [0, 1], is an error naming the file and line.
pub fn read_isic2017_csv(path: &Path) -> Result<Vec<(String, [f64; 2])>> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| TrainError::file(path, e))?;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (i, rec) in reader.deserialize::<Isic2017Line>().enumerate() {
        let line = i + 2;
        let r = rec.map_err(|e| TrainError::file(path, format!("line {line}: {e}")))?;
        let probs = [r.melanoma, r.seborrheic_keratosis];
        check_prediction_line(path, line, &r.image_id, &probs, &mut seen)?;
        out.push((r.image_id, probs));
    }
    if out.is_empty() {
        return Err(TrainError::file(path, "no predictions"));
    }
    Ok(out)
}

/// Reads a full prediction CSV (`image_id,melanoma,seborrheic_keratosis,nevus`, as
/// [`write_full_csv`] writes it) in file order. Besides [`read_isic2017_csv`]'s checks, each
/// line's three probabilities must sum to 1: they are one distribution over the classes.
pub fn read_full_csv(path: &Path) -> Result<Vec<ImagePrediction>> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| TrainError::file(path, e))?;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (i, rec) in reader.deserialize::<FullLine>().enumerate() {
        let line = i + 2;
        let r = rec.map_err(|e| TrainError::file(path, format!("line {line}: {e}")))?;
        let probs = [r.melanoma, r.seborrheic_keratosis, r.nevus];
        check_prediction_line(path, line, &r.image_id, &probs, &mut seen)?;
        let sum: f64 = probs.iter().sum();
        if (sum - 1.0).abs() > PROBABILITY_SUM_TOLERANCE {
            return Err(TrainError::file(
                path,
                format!(
                    "line {line}: {}'s probabilities sum to {sum:.6}, not 1: not one \
                     distribution over the three classes",
                    r.image_id
                ),
            ));
        }
        out.push(ImagePrediction { id: r.image_id, probs, replicas: Vec::new() });
    }
    if out.is_empty() {
        return Err(TrainError::file(path, "no predictions"));
    }
    Ok(out)
}

/// Adapts predictions to a population in which the `absent` classes do not occur (e.g. PH2,
/// which has melanomas and nevi but no keratoses): the label-shift correction of Saerens et
/// al. (2002) with the absent classes' prior set to zero and the others' ratios kept, which is
/// each present class's probability divided by the present classes' sum. Absent classes get
/// 0; the pooled probabilities and every replica are adapted alike.
///
/// Why it matters: a net trained on three classes that sees a melanoma it finds
/// keratosis-like gives it a low P(melanoma) and a high P(keratosis); where keratoses cannot
/// occur, what counts is P(melanoma) against P(nevus), which P(melanoma) alone hides.
/// Errors: fewer than two classes left, or an image with no probability on any of them.
pub fn without_classes(
    preds: &[ImagePrediction],
    absent: &[LesionClass],
) -> Result<Vec<ImagePrediction>> {
    let present: Vec<bool> = LesionClass::ALL.iter().map(|c| !absent.contains(c)).collect();
    if present.iter().filter(|&&p| p).count() < 2 {
        return Err(TrainError::Config(format!(
            "absent classes {absent:?} leave fewer than two classes: nothing to rank"
        )));
    }
    let adapt = |id: &str, p: &[f64; NUM_CLASSES]| -> Result<[f64; NUM_CLASSES]> {
        let mass: f64 = p.iter().zip(&present).filter(|(_, &k)| k).map(|(v, _)| v).sum();
        if mass.is_nan() || mass <= 0.0 {
            return Err(TrainError::Config(format!(
                "{id}: probability 0 on every present class; it cannot be renormalised"
            )));
        }
        let mut out = [0.0; NUM_CLASSES];
        for ((o, v), &k) in out.iter_mut().zip(p).zip(&present) {
            *o = if k { v / mass } else { 0.0 };
        }
        Ok(out)
    };
    preds
        .iter()
        .map(|p| {
            Ok(ImagePrediction {
                id: p.id.clone(),
                probs: adapt(&p.id, &p.probs)?,
                replicas: p.replicas.iter().map(|r| adapt(&p.id, r)).collect::<Result<_>>()?,
            })
        })
        .collect()
}

/// The mean of several ISIC 2017 prediction CSVs over the same images (the first file's order).
/// Every file must have exactly the first file's ids: one missing or extra is an error naming
/// the file and the id, never a silently smaller average.
pub fn average_isic2017_csvs(paths: &[std::path::PathBuf]) -> Result<Vec<ImagePrediction>> {
    let first = paths.first().ok_or_else(|| TrainError::Config("no prediction files".into()))?;
    let base = read_isic2017_csv(first)?;
    let mut sums: Vec<[f64; 2]> = base.iter().map(|(_, p)| *p).collect();
    let index: std::collections::BTreeMap<&str, usize> =
        base.iter().enumerate().map(|(i, (id, _))| (id.as_str(), i)).collect();
    for path in &paths[1..] {
        let other = read_isic2017_csv(path)?;
        if other.len() != base.len() {
            return Err(TrainError::file(
                path,
                format!("{} images, {} has {}", other.len(), first.display(), base.len()),
            ));
        }
        for (id, p) in other {
            let i = *index.get(id.as_str()).ok_or_else(|| {
                TrainError::file(path, format!("{id} is not in {}", first.display()))
            })?;
            sums[i][0] += p[0];
            sums[i][1] += p[1];
        }
    }
    let n = paths.len() as f64;
    Ok(base
        .into_iter()
        .zip(sums)
        .map(|((id, _), s)| {
            let (m, k) = (s[0] / n, s[1] / n);
            let probs = [m, k, (1.0 - m - k).max(0.0)];
            ImagePrediction { id, probs, replicas: vec![probs] }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(id: &str, probs: [f64; NUM_CLASSES]) -> ImagePrediction {
        ImagePrediction { id: id.into(), probs, replicas: vec![probs, [0.2, 0.2, 0.6]] }
    }

    /// Without keratoses, a melanoma the net found keratosis-like ([0.1, 0.8, 0.1]) is as
    /// likely a melanoma as a nevus; every output is a distribution over the present
    /// classes, and their odds are the input's (Saerens et al.'s correction keeps them).
    #[test]
    fn absent_classes_are_renormalised_away() {
        let sk = [LesionClass::SeborrheicKeratosis];
        let out = without_classes(&[pred("a", [0.1, 0.8, 0.1])], &sk).unwrap();
        assert_eq!(out[0].probs, [0.5, 0.0, 0.5]);
        let replicas: Vec<f64> = out[0].replicas.iter().flatten().copied().collect();
        for (got, want) in replicas.iter().zip([0.5, 0.0, 0.5, 0.25, 0.0, 0.75]) {
            assert!((got - want).abs() < 1e-12, "{replicas:?}");
        }
        let mut state = 7u64;
        let mut draw = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64).max(1e-6)
        };
        for absent in [LesionClass::Melanoma, LesionClass::SeborrheicKeratosis, LesionClass::Nevus]
        {
            for i in 0..200 {
                let raw = [draw(), draw(), draw()];
                let total: f64 = raw.iter().sum();
                let p = raw.map(|v| v / total);
                let q = without_classes(&[pred(&i.to_string(), p)], &[absent]).unwrap()[0].probs;
                assert!((q.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{q:?}");
                assert_eq!(q[absent.index()], 0.0);
                let (a, b) = match absent.index() {
                    0 => (1, 2),
                    1 => (0, 2),
                    _ => (0, 1),
                };
                assert!((q[a] / q[b] - p[a] / p[b]).abs() < 1e-9 * (p[a] / p[b]).max(1.0));
            }
        }
        // Fewer than two classes left, or no probability on them: refused, naming the image.
        let two = [LesionClass::SeborrheicKeratosis, LesionClass::Nevus];
        assert!(without_classes(&[pred("a", [0.1, 0.8, 0.1])], &two).is_err());
        let err = without_classes(&[pred("b", [0.0, 1.0, 0.0])], &sk).unwrap_err().to_string();
        assert!(err.contains("b:"), "{err}");
    }

    /// A full CSV reads back as written; a line whose probabilities are not one distribution,
    /// a NaN, a repeated id or a missing nevus column is refused, naming the file and line.
    #[test]
    fn full_csv_round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.full.csv");
        let preds = vec![pred("x", [0.25, 0.25, 0.5]), pred("y", [0.125, 0.375, 0.5])];
        write_full_csv(&path, &preds).unwrap();
        let back = read_full_csv(&path).unwrap();
        assert_eq!(
            back.iter().map(|p| (p.id.as_str(), p.probs)).collect::<Vec<_>>(),
            [("x", [0.25, 0.25, 0.5]), ("y", [0.125, 0.375, 0.5])]
        );
        for (text, want) in [
            ("image_id,melanoma,seborrheic_keratosis,nevus\nx,0.5,0.25,0.5\n", "line 2"),
            ("image_id,melanoma,seborrheic_keratosis,nevus\nx,NaN,0.5,0.5\n", "line 2"),
            ("image_id,melanoma,seborrheic_keratosis,nevus\nx,0.5,0,0.5\nx,0.5,0,0.5\n", "line 3"),
            ("image_id,melanoma,seborrheic_keratosis\nx,0.5,0.25\n", "nevus"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = read_full_csv(&path).unwrap_err().to_string();
            assert!(err.contains("p.full.csv") && err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn pooling_math() {
        let p =
            Tensor::from_slice(&[0.7f32, 0.2, 0.1, 0.1, 0.3, 0.6, 0.4, 0.05, 0.55]).view([3, 3]);
        let get = |how| Vec::<f32>::try_from(pool(&p, how)).unwrap();
        let avg = get(Pool::Avg);
        for (g, w) in avg.iter().zip([0.4f32, 0.55 / 3.0, 1.25 / 3.0]) {
            assert!((g - w).abs() < 1e-6, "{avg:?}");
        }
        assert_eq!(get(Pool::Max), vec![0.7, 0.3, 0.6]);
        // |p − 0.5|: col0 0.2,0.4,0.1 → 0.1; col1 0.3,0.2,0.45 → 0.05; col2 0.4,0.1,0.05 → 0.1.
        assert_eq!(get(Pool::Extreme), vec![0.1, 0.05, 0.1]);
    }

    #[test]
    fn averages_need_the_same_images() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        let b = dir.path().join("b.csv");
        let c = dir.path().join("c.csv");
        std::fs::write(&a, "image_id,melanoma,seborrheic_keratosis\nx,0.2,0.4\ny,1,0\n").unwrap();
        std::fs::write(&b, "image_id,melanoma,seborrheic_keratosis\ny,0,0\nx,0.4,0.2\n").unwrap();
        std::fs::write(&c, "image_id,melanoma,seborrheic_keratosis\nx,0.4,0.2\nz,0,0\n").unwrap();
        let avg = average_isic2017_csvs(&[a.clone(), b]).unwrap();
        assert_eq!(avg[0].id, "x");
        assert!((avg[0].probs[0] - 0.3).abs() < 1e-12 && (avg[0].probs[1] - 0.3).abs() < 1e-12);
        assert!((avg[1].probs[0] - 0.5).abs() < 1e-12);
        let e = average_isic2017_csvs(&[a, c]).unwrap_err().to_string();
        assert!(e.contains("c.csv") && e.contains('z'), "{e}");
    }

    #[test]
    fn modes_parse() {
        assert_eq!(TtaMode::parse("fixed8").unwrap(), TtaMode::Fixed8);
        assert_eq!(TtaMode::parse("50").unwrap(), TtaMode::Random(50));
        assert_eq!(TtaMode::parse("none").unwrap(), TtaMode::None);
        assert!(TtaMode::parse("0").is_err() && TtaMode::parse("x").is_err());
        assert_eq!(TtaMode::Fixed8.params(&ClsAugmentConfig::default(), 0, 0).len(), 8);
    }
}
