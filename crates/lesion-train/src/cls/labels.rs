//! The three classes and the documented mapping from manifest diagnoses.
//!
//! | manifest `diagnosis` (case- and space-insensitive) | class |
//! |---|---|
//! | `melanoma` | melanoma |
//! | `seborrheic keratosis`, `seborrheic_keratosis` | seborrheic keratosis |
//! | `nevus`, `common nevus`, `atypical nevus` | nevus (the "other" class of ISIC 2017) |
//! | anything else, or empty | excluded (counted and reported) |
use std::collections::BTreeMap;
use std::fmt;

use lesion_data::manifest::ManifestRow;
use serde::{Deserialize, Serialize};

/// One of the three ISIC 2017 Part 3 classes. Invariant: [`LesionClass::index`] is the
/// position of the class's logit in the net's output (0 melanoma, 1 keratosis, 2 nevus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LesionClass {
    Melanoma,
    SeborrheicKeratosis,
    Nevus,
}

/// Number of classes (logits of the head).
pub const NUM_CLASSES: usize = 3;

impl LesionClass {
    /// All classes in logit order.
    pub const ALL: [LesionClass; NUM_CLASSES] = [LesionClass::Melanoma, LesionClass::SeborrheicKeratosis, LesionClass::Nevus];

    pub fn index(self) -> usize {
        match self {
            LesionClass::Melanoma => 0,
            LesionClass::SeborrheicKeratosis => 1,
            LesionClass::Nevus => 2,
        }
    }

    pub fn from_index(i: usize) -> Option<LesionClass> {
        Self::ALL.get(i).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            LesionClass::Melanoma => "melanoma",
            LesionClass::SeborrheicKeratosis => "seborrheic_keratosis",
            LesionClass::Nevus => "nevus",
        }
    }
}

impl fmt::Display for LesionClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The class of a manifest diagnosis, `None` when it maps to none of the three.
pub fn map_diagnosis(diagnosis: &str) -> Option<LesionClass> {
    let norm: String = diagnosis.trim().to_lowercase().split(|c: char| c.is_whitespace() || c == '_').filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
    match norm.as_str() {
        "melanoma" => Some(LesionClass::Melanoma),
        "seborrheic keratosis" => Some(LesionClass::SeborrheicKeratosis),
        "nevus" | "common nevus" | "atypical nevus" => Some(LesionClass::Nevus),
        _ => None,
    }
}

/// A manifest row with its class.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledRow {
    pub row: ManifestRow,
    pub class: LesionClass,
}

/// How each distinct diagnosis was mapped. Invariant: `kept + excluded` = rows given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappingReport {
    /// Diagnosis text (`"(none)"` for an empty one) → (class or excluded, count).
    pub by_diagnosis: BTreeMap<String, (Option<LesionClass>, usize)>,
    pub kept: usize,
    pub excluded: usize,
}

impl MappingReport {
    /// Rows kept per class, in class order.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut c = [0; NUM_CLASSES];
        for (class, n) in self.by_diagnosis.values() {
            if let Some(k) = class {
                c[k.index()] += n;
            }
        }
        c
    }
}

/// Text used for rows without a diagnosis.
pub const NO_DIAGNOSIS: &str = "(none)";

impl fmt::Display for MappingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<28} {:<22} {:>6}", "diagnosis", "class", "images")?;
        for (diag, (class, n)) in &self.by_diagnosis {
            let c = class.map(|c| c.name().to_string()).unwrap_or_else(|| "EXCLUDED".into());
            writeln!(f, "{diag:<28} {c:<22} {n:>6}")?;
        }
        let counts = self.class_counts();
        write!(
            f,
            "kept {} (melanoma {}, seborrheic_keratosis {}, nevus {}), excluded {}",
            self.kept, counts[0], counts[1], counts[2], self.excluded
        )
    }
}

/// Maps every row; rows whose diagnosis maps to no class are left out and counted.
pub fn label_rows(rows: &[ManifestRow]) -> (Vec<LabelledRow>, MappingReport) {
    let mut report = MappingReport::default();
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let diag = r.diagnosis.as_deref().map(str::trim).filter(|d| !d.is_empty());
        let class = diag.and_then(map_diagnosis);
        let key = diag.unwrap_or(NO_DIAGNOSIS).to_string();
        report.by_diagnosis.entry(key).or_insert((class, 0)).1 += 1;
        match class {
            Some(class) => {
                report.kept += 1;
                out.push(LabelledRow { row: r.clone(), class });
            }
            None => report.excluded += 1,
        }
    }
    (out, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_table() {
        assert_eq!(map_diagnosis("melanoma"), Some(LesionClass::Melanoma));
        assert_eq!(map_diagnosis(" Seborrheic  Keratosis "), Some(LesionClass::SeborrheicKeratosis));
        assert_eq!(map_diagnosis("seborrheic_keratosis"), Some(LesionClass::SeborrheicKeratosis));
        for n in ["nevus", "common nevus", "Atypical nevus"] {
            assert_eq!(map_diagnosis(n), Some(LesionClass::Nevus), "{n}");
        }
        for n in ["basal cell carcinoma", "", "melanoma in situ?"] {
            assert_eq!(map_diagnosis(n), None, "{n}");
        }
        for c in LesionClass::ALL {
            assert_eq!(LesionClass::from_index(c.index()), Some(c));
        }
    }
}
