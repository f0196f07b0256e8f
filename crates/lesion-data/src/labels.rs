//! The ISIC 2017 classification labels (melanoma / seborrheic keratosis / other) derived from
//! a manifest row's free-text diagnosis, and the metadata key names shared by the data tools.

use std::fmt;

use crate::manifest::ManifestRow;

/// Metadata keys ([`ManifestRow::meta`]) written and read by the data tools.
pub mod keys {
    /// Approximate age in years (text of an integer).
    pub const AGE: &str = "age";
    /// "male" / "female".
    pub const SEX: &str = "sex";
    /// Anatomical site.
    pub const SITE: &str = "site";
    /// Per-sample training weight (text of a number).
    pub const WEIGHT: &str = "weight";
    /// Name of the recipe rule that decided the row's fate (or "default").
    pub const RULE: &str = "rule";
    /// "kept" / "dropped".
    pub const STATUS: &str = "status";
    /// Named subsets the row belongs to, separated by [`super::SUBSET_SEPARATOR`].
    pub const SUBSETS: &str = "subsets";
    /// "benign" / "malignant" when the source says so.
    pub const BENIGN_MALIGNANT: &str = "benign_malignant";
    /// Patient id, when the source has one (splits keep a patient on one side).
    pub const PATIENT: &str = "patient";
    /// Lesion id, when the source has one (splits keep a lesion on one side).
    pub const LESION: &str = "lesion";
    /// Dermoscopic "d" or clinical "c" image (RECOD lists).
    pub const IMAGE_TYPE: &str = "type";
    /// The original dataset name inside a merged list (RECOD lists).
    pub const DATASET: &str = "dataset";
}

/// Separator between subset names in the `subsets` metadata cell.
pub const SUBSET_SEPARATOR: char = ';';

/// The three classes of the ISIC 2017 challenge's Part 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LesionClass {
    Melanoma,
    Keratosis,
    Other,
}

impl LesionClass {
    /// All classes, in table order.
    pub const ALL: [LesionClass; 3] = [
        LesionClass::Melanoma,
        LesionClass::Keratosis,
        LesionClass::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LesionClass::Melanoma => "melanoma",
            LesionClass::Keratosis => "keratosis",
            LesionClass::Other => "other",
        }
    }

    /// Class of a diagnosis text: any text naming melanoma (but not "melanoma in situ"'s
    /// absence: in-situ melanomas are melanomas) or "malignant" alone is melanoma; seborrheic
    /// keratosis (any spelling with "seborrh" or "keratosis" without "actinic") is keratosis;
    /// everything else, including a missing diagnosis, is other.
    pub fn from_diagnosis(diagnosis: Option<&str>) -> LesionClass {
        let Some(d) = diagnosis else {
            return LesionClass::Other;
        };
        let d = d.to_ascii_lowercase();
        if d.contains("melanoma") && !d.contains("atypical melanocytic") || d.trim() == "malignant"
        {
            LesionClass::Melanoma
        } else if d.contains("seborrh") || (d.contains("keratosis") && !d.contains("actinic")) {
            LesionClass::Keratosis
        } else {
            LesionClass::Other
        }
    }

    /// Class of a manifest row (from its diagnosis).
    pub fn of_row(row: &ManifestRow) -> LesionClass {
        LesionClass::from_diagnosis(row.diagnosis.as_deref())
    }
}

impl fmt::Display for LesionClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_from_text() {
        assert_eq!(
            LesionClass::from_diagnosis(Some("Melanoma")),
            LesionClass::Melanoma
        );
        assert_eq!(
            LesionClass::from_diagnosis(Some("malignant")),
            LesionClass::Melanoma
        );
        assert_eq!(
            LesionClass::from_diagnosis(Some("seborrheic keratosis")),
            LesionClass::Keratosis
        );
        assert_eq!(
            LesionClass::from_diagnosis(Some("actinic keratosis")),
            LesionClass::Other
        );
        assert_eq!(
            LesionClass::from_diagnosis(Some("atypical melanocytic proliferation")),
            LesionClass::Other
        );
        assert_eq!(
            LesionClass::from_diagnosis(Some("nevus")),
            LesionClass::Other
        );
        assert_eq!(LesionClass::from_diagnosis(None), LesionClass::Other);
    }
}

/// Counts of rows per source × class, with totals; rows and columns in sorted order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceClassTable {
    /// source -> counts indexed like [`LesionClass::ALL`].
    pub counts: std::collections::BTreeMap<String, [usize; 3]>,
}

impl SourceClassTable {
    /// Counts `rows` by their `source` and class.
    pub fn of_rows<'a>(rows: impl IntoIterator<Item = &'a ManifestRow>) -> SourceClassTable {
        let mut t = SourceClassTable::default();
        for r in rows {
            t.add(&r.source, LesionClass::of_row(r));
        }
        t
    }

    /// Adds one row of `source` and `class`.
    pub fn add(&mut self, source: &str, class: LesionClass) {
        let idx = LesionClass::ALL
            .iter()
            .position(|c| *c == class)
            .unwrap_or(2);
        self.counts.entry(source.to_string()).or_insert([0; 3])[idx] += 1;
    }

    /// Totals per class over all sources.
    pub fn class_totals(&self) -> [usize; 3] {
        let mut t = [0; 3];
        for c in self.counts.values() {
            for (a, b) in t.iter_mut().zip(c) {
                *a += b;
            }
        }
        t
    }

    /// Number of rows counted.
    pub fn total(&self) -> usize {
        self.class_totals().iter().sum()
    }
}

impl fmt::Display for SourceClassTable {
    /// A plain-text table: one line per source, then a total line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<16} {:>9} {:>9} {:>9} {:>9}",
            "source", "melanoma", "keratosis", "other", "total"
        )?;
        for (s, c) in &self.counts {
            writeln!(
                f,
                "{:<16} {:>9} {:>9} {:>9} {:>9}",
                s,
                c[0],
                c[1],
                c[2],
                c.iter().sum::<usize>()
            )?;
        }
        let t = self.class_totals();
        writeln!(
            f,
            "{:<16} {:>9} {:>9} {:>9} {:>9}",
            "TOTAL",
            t[0],
            t[1],
            t[2],
            self.total()
        )
    }
}
