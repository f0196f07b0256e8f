//! Class labels: the ONE mapping from a manifest row (source, diagnosis text, metadata) to the
//! three classes of the ISIC 2017 challenge's Part 3, and the metadata key names shared by the
//! data tools.
//!
//! Two views of the same mapping:
//! * [`LesionClass`], the workspace's one class enum: the training label (its `index()` is the
//!   logit position), `None` for an excluded row ([`map_row`], [`label_rows`]);
//! * [`Stratum`]: the coarse stratum used by split, audit and recipes, where an excluded
//!   row counts as [`Stratum::Other`] ([`Stratum::of_row`]).
//!
//! Diagnoses are compared after [`normalize_diagnosis`] (lower case, `_`, `-` and runs of
//! white space become one space, trimmed). Mapping, per source (the "sources" column says where
//! each text comes from; only rows marked *only* depend on the row's `source`):
//!
//! | diagnosis | sources | class |
//! |---|---|---|
//! | `melanoma` | all (ISIC 2017/2018/2019, HAM10000, PH2, ISIC Archive, synthetic, RECOD) | melanoma |
//! | `melanoma in situ`, `melanoma invasive`, `melanoma, nos`, `melanoma metastasis` | ISIC Archive (`diagnosis_3`) | melanoma |
//! | `malignant` | *only* `isic2016` (its Part 3 "malignant" is melanoma) | melanoma |
//! | `seborrheic keratosis` | ISIC 2017, ISIC Archive, synthetic, RECOD | seborrheic keratosis |
//! | `benign keratosis`, `pigmented benign keratosis`, `bkl` | HAM10000 (`dx` = bkl), ISIC 2018 Task 3, ISIC 2019, ISIC Archive | seborrheic keratosis only when the row's metadata (`diagnosis_3`, `diagnosis_4`, `diagnosis_5` or `diagnosis_detail`) names seborrheic keratosis; otherwise excluded (the category mixes solar lentigo, seborrheic keratosis and lichen-planus like keratosis) |
//! | `nevus` | ISIC 2017, HAM10000, ISIC 2018 Task 3, ISIC 2019, ISIC Archive, synthetic | nevus |
//! | `common nevus`, `atypical nevus` | PH2 | nevus |
//! | `non melanoma non keratosis` | RECOD 2017 lists (neither flag set: the paper's "other") | nevus (the third class) |
//! | `benign` | `isic2016` (nevi and keratoses together) | excluded |
//! | `basal cell carcinoma`, `actinic keratosis`, `squamous cell carcinoma`, `dermatofibroma`, `vascular lesion`, `unknown` | HAM10000, ISIC 2018 Task 3, ISIC 2019 | excluded |
//! | `solar lentigo`, `lichenoid keratosis`, `lichen planus like keratosis`, `lentigo`, `atypical melanocytic proliferation`, `other` | ISIC Archive, RECOD | excluded |
//! | anything else, or no diagnosis | | excluded (counted and reported by [`label_rows`]) |
//!
//! Invariant: [`MAPPING`] holds exactly the rows of this table (a unit test checks that every
//! text of [`MAPPING`] appears in this doc), and a text not in [`MAPPING`] is excluded.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

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
    /// A finer diagnosis than the row's `diagnosis` (e.g. the ISIC Archive's `diagnosis_3`
    /// copied onto a HAM10000 row), read by the benign-keratosis rule of [`super::map_row`].
    pub const DIAGNOSIS_DETAIL: &str = "diagnosis_detail";
}

/// Separator between subset names in the `subsets` metadata cell.
pub const SUBSET_SEPARATOR: char = ';';

/// Source text of ISIC 2016 rows (the only source whose `malignant` / `benign` are mapped).
pub const ISIC2016_SOURCE: &str = "isic2016";
/// Diagnosis text of a RECOD 2017 list entry that is neither melanoma nor keratosis: the
/// paper's third class.
pub const RECOD_OTHER: &str = "non melanoma non keratosis";

/// Metadata keys whose value, when it names [`SEBORRHEIC_KERATOSIS`], turns a benign-keratosis
/// row into a seborrheic keratosis (ISIC Archive hierarchy levels 3 to 5, or an explicit detail).
pub const KERATOSIS_EVIDENCE_KEYS: [&str; 4] =
    ["diagnosis_3", "diagnosis_4", "diagnosis_5", keys::DIAGNOSIS_DETAIL];

/// Normalised text of a seborrheic keratosis diagnosis.
pub const SEBORRHEIC_KERATOSIS: &str = "seborrheic keratosis";

/// Number of classes (logits of a classification head).
pub const NUM_CLASSES: usize = 3;

/// One of the three ISIC 2017 Part 3 classes: the training label. Invariant:
/// [`LesionClass::index`] is the position of the class's logit in a net's output
/// (0 melanoma, 1 seborrheic keratosis, 2 nevus) and `ALL[c.index()] == c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LesionClass {
    Melanoma,
    SeborrheicKeratosis,
    /// Nevus (ISIC 2017's "nevus or other" class; only nevi are mapped to it).
    Nevus,
}

impl LesionClass {
    /// All classes in logit order.
    pub const ALL: [LesionClass; NUM_CLASSES] =
        [LesionClass::Melanoma, LesionClass::SeborrheicKeratosis, LesionClass::Nevus];

    /// Logit position.
    pub fn index(self) -> usize {
        match self {
            LesionClass::Melanoma => 0,
            LesionClass::SeborrheicKeratosis => 1,
            LesionClass::Nevus => 2,
        }
    }

    /// The class at logit position `i`, `None` past the last.
    pub fn from_index(i: usize) -> Option<LesionClass> {
        Self::ALL.get(i).copied()
    }

    /// Name used in CSV headers and reports.
    pub fn name(self) -> &'static str {
        match self {
            LesionClass::Melanoma => "melanoma",
            LesionClass::SeborrheicKeratosis => "seborrheic_keratosis",
            LesionClass::Nevus => "nevus",
        }
    }

    /// The coarse stratum of this class.
    pub fn coarse(self) -> Stratum {
        match self {
            LesionClass::Melanoma => Stratum::Melanoma,
            LesionClass::SeborrheicKeratosis => Stratum::Keratosis,
            LesionClass::Nevus => Stratum::Other,
        }
    }
}

impl std::str::FromStr for LesionClass {
    type Err = String;

    /// A class by its [`LesionClass::name`], with `-` accepted for `_`
    /// (`seborrheic-keratosis` as serde and command lines write it).
    fn from_str(s: &str) -> Result<LesionClass, String> {
        let wanted = s.trim().replace('-', "_");
        LesionClass::ALL.into_iter().find(|c| c.name() == wanted).ok_or_else(|| {
            let names: Vec<&str> = LesionClass::ALL.iter().map(|c| c.name()).collect();
            format!("unknown class '{s}': expected one of {}", names.join(", "))
        })
    }
}

impl fmt::Display for LesionClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a [`MAPPING`] entry applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Rows of any source.
    AnySource,
    /// Only rows whose `source` is this text.
    Source(&'static str),
}

/// What a [`MAPPING`] entry does with a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The row gets this class.
    Class(LesionClass),
    /// Mixed benign-keratosis category: seborrheic keratosis when one of
    /// [`KERATOSIS_EVIDENCE_KEYS`] names it, else excluded.
    KeratosisIfMetadata,
    /// The row is excluded (listed so that the table documents it).
    Exclude,
}

/// The mapping table documented in the module doc: (scope, normalised diagnosis, rule).
/// Invariant: no two entries with the same diagnosis have overlapping scopes.
pub const MAPPING: [(Scope, &str, Rule); 27] = {
    use LesionClass::{Melanoma, Nevus, SeborrheicKeratosis};
    use Rule::{Class, Exclude, KeratosisIfMetadata};
    use Scope::{AnySource, Source};
    [
        (AnySource, "melanoma", Class(Melanoma)),
        (AnySource, "melanoma in situ", Class(Melanoma)),
        (AnySource, "melanoma invasive", Class(Melanoma)),
        (AnySource, "melanoma, nos", Class(Melanoma)),
        (AnySource, "melanoma metastasis", Class(Melanoma)),
        (Source(ISIC2016_SOURCE), "malignant", Class(Melanoma)),
        (AnySource, SEBORRHEIC_KERATOSIS, Class(SeborrheicKeratosis)),
        (AnySource, "benign keratosis", KeratosisIfMetadata),
        (AnySource, "pigmented benign keratosis", KeratosisIfMetadata),
        (AnySource, "bkl", KeratosisIfMetadata),
        (AnySource, "nevus", Class(Nevus)),
        (AnySource, "common nevus", Class(Nevus)),
        (AnySource, "atypical nevus", Class(Nevus)),
        (AnySource, RECOD_OTHER, Class(Nevus)),
        (Source(ISIC2016_SOURCE), "benign", Exclude),
        (AnySource, "basal cell carcinoma", Exclude),
        (AnySource, "actinic keratosis", Exclude),
        (AnySource, "squamous cell carcinoma", Exclude),
        (AnySource, "dermatofibroma", Exclude),
        (AnySource, "vascular lesion", Exclude),
        (AnySource, "unknown", Exclude),
        (AnySource, "solar lentigo", Exclude),
        (AnySource, "lichenoid keratosis", Exclude),
        (AnySource, "lentigo", Exclude),
        (AnySource, "atypical melanocytic proliferation", Exclude),
        (AnySource, "other", Exclude),
        // Hierarchy level 3 spelling of the ISIC Archive for lichen-planus like keratosis.
        (AnySource, "lichen planus like keratosis", Exclude),
    ]
};

/// Lower case; `_`, `-` and runs of white space become one space; trimmed.
pub fn normalize_diagnosis(text: &str) -> String {
    text.to_lowercase()
        .split(|c: char| c.is_whitespace() || c == '_' || c == '-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The [`MAPPING`] rule for `diagnosis` (already normalised) in `source`; `None` when no
/// entry applies (the row is then excluded).
pub fn rule_for(source: &str, normalized: &str) -> Option<Rule> {
    MAPPING
        .iter()
        .find(|(scope, text, _)| {
            *text == normalized
                && match scope {
                    Scope::AnySource => true,
                    Scope::Source(s) => s.eq_ignore_ascii_case(source.trim()),
                }
        })
        .map(|(_, _, rule)| *rule)
}

/// Whether one of [`KERATOSIS_EVIDENCE_KEYS`] in `meta` names seborrheic keratosis.
pub fn meta_says_seborrheic_keratosis(meta: &BTreeMap<String, String>) -> bool {
    KERATOSIS_EVIDENCE_KEYS.iter().any(|k| {
        meta.get(*k).is_some_and(|v| normalize_diagnosis(v).contains(SEBORRHEIC_KERATOSIS))
    })
}

/// How one row was mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped {
    /// The class, `None` when the row is excluded.
    pub class: Option<LesionClass>,
    /// The class came from the benign-keratosis metadata rule.
    pub by_metadata: bool,
}

/// Maps (source, diagnosis, metadata) by [`MAPPING`].
pub fn map_labelled(
    source: &str,
    diagnosis: Option<&str>,
    meta: &BTreeMap<String, String>,
) -> Mapped {
    let excluded = Mapped { class: None, by_metadata: false };
    let Some(d) = diagnosis else {
        return excluded;
    };
    match rule_for(source, &normalize_diagnosis(d)) {
        Some(Rule::Class(c)) => Mapped { class: Some(c), by_metadata: false },
        Some(Rule::KeratosisIfMetadata) if meta_says_seborrheic_keratosis(meta) => {
            Mapped { class: Some(LesionClass::SeborrheicKeratosis), by_metadata: true }
        }
        Some(Rule::KeratosisIfMetadata) | Some(Rule::Exclude) | None => excluded,
    }
}

/// The class of a manifest row by the one mapping, `None` when excluded.
pub fn map_row(row: &ManifestRow) -> Option<LesionClass> {
    map_labelled(&row.source, row.diagnosis.as_deref(), &row.meta).class
}

/// The class of a diagnosis text alone (any source, no metadata: source-only entries such
/// as ISIC 2016's `malignant` and the benign-keratosis rule never apply); `None` when excluded.
pub fn map_diagnosis(diagnosis: &str) -> Option<LesionClass> {
    map_labelled("", Some(diagnosis), &BTreeMap::new()).class
}

/// The coarse classes used to stratify, audit and filter: melanoma, seborrheic keratosis,
/// and everything else (nevi AND rows the mapping excludes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stratum {
    Melanoma,
    Keratosis,
    Other,
}

impl Stratum {
    /// All classes, in table order.
    pub const ALL: [Stratum; 3] = [Stratum::Melanoma, Stratum::Keratosis, Stratum::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            Stratum::Melanoma => "melanoma",
            Stratum::Keratosis => "keratosis",
            Stratum::Other => "other",
        }
    }

    /// Position in [`Stratum::ALL`].
    pub fn index(self) -> usize {
        match self {
            Stratum::Melanoma => 0,
            Stratum::Keratosis => 1,
            Stratum::Other => 2,
        }
    }

    /// Coarse class of a diagnosis text alone, by [`map_diagnosis`] (no source, no
    /// metadata); excluded and missing diagnoses are [`Stratum::Other`].
    pub fn from_diagnosis(diagnosis: Option<&str>) -> Stratum {
        diagnosis.and_then(map_diagnosis).map_or(Stratum::Other, LesionClass::coarse)
    }

    /// Coarse class of a manifest row, by [`map_row`] (source and metadata included).
    pub fn of_row(row: &ManifestRow) -> Stratum {
        map_row(row).map_or(Stratum::Other, LesionClass::coarse)
    }
}

impl fmt::Display for Stratum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A manifest row with its class.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledRow {
    pub row: ManifestRow,
    pub class: LesionClass,
}

/// Text used for rows without a diagnosis in a [`MappingReport`].
pub const NO_DIAGNOSIS: &str = "(none)";

/// Suffix of a [`MappingReport`] key whose rows got their class from metadata.
pub const BY_METADATA_SUFFIX: &str = " [metadata: seborrheic keratosis]";

/// How each distinct diagnosis was mapped. Invariant: `kept + excluded` = rows given, and
/// the counts of `by_diagnosis` sum to the same.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappingReport {
    /// Diagnosis text ([`NO_DIAGNOSIS`] for none; with [`BY_METADATA_SUFFIX`] for rows the
    /// benign-keratosis rule kept) → (class or excluded, count).
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

impl fmt::Display for MappingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<28} {:<22} {:>6}", "diagnosis", "class", "images")?;
        for (diag, (class, n)) in &self.by_diagnosis {
            let c = class.map_or("EXCLUDED", LesionClass::name);
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

/// Maps every row by [`map_row`]; rows that map to no class are left out and counted.
pub fn label_rows(rows: &[ManifestRow]) -> (Vec<LabelledRow>, MappingReport) {
    let mut report = MappingReport::default();
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let diag = r.diagnosis.as_deref().map(str::trim).filter(|d| !d.is_empty());
        let mapped = map_labelled(&r.source, diag, &r.meta);
        let mut key = diag.unwrap_or(NO_DIAGNOSIS).to_string();
        if mapped.by_metadata {
            key.push_str(BY_METADATA_SUFFIX);
        }
        report.by_diagnosis.entry(key).or_insert((mapped.class, 0)).1 += 1;
        match mapped.class {
            Some(class) => {
                report.kept += 1;
                out.push(LabelledRow { row: r.clone(), class });
            }
            None => report.excluded += 1,
        }
    }
    (out, report)
}

/// Counts of rows per source × class, with totals; rows and columns in sorted order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceClassTable {
    /// source -> counts indexed like [`Stratum::ALL`].
    pub counts: std::collections::BTreeMap<String, [usize; 3]>,
}

impl SourceClassTable {
    /// Counts `rows` by their `source` and class.
    pub fn of_rows<'a>(rows: impl IntoIterator<Item = &'a ManifestRow>) -> SourceClassTable {
        let mut t = SourceClassTable::default();
        for r in rows {
            t.add(&r.source, Stratum::of_row(r));
        }
        t
    }

    /// Adds one row of `source` and `class`.
    pub fn add(&mut self, source: &str, class: Stratum) {
        self.counts.entry(source.to_string()).or_insert([0; 3])[class.index()] += 1;
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
        writeln!(f, "{:<16} {:>9} {:>9} {:>9} {:>9}", "TOTAL", t[0], t[1], t[2], self.total())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn classes_parse_by_name_with_either_separator() {
        for c in LesionClass::ALL {
            assert_eq!(c.name().parse::<LesionClass>(), Ok(c));
            assert_eq!(c.name().replace('_', "-").parse::<LesionClass>(), Ok(c));
        }
        let err = "keratosis".parse::<LesionClass>().unwrap_err();
        assert!(err.contains("'keratosis'") && err.contains("seborrheic_keratosis"), "{err}");
    }

    fn row(source: &str, diagnosis: Option<&str>, meta: &[(&str, &str)]) -> ManifestRow {
        ManifestRow {
            id: "r".into(),
            source: source.into(),
            image_path: PathBuf::from("r.jpg"),
            mask_path: None,
            width: 1,
            height: 1,
            content_hash: String::new(),
            diagnosis: diagnosis.map(str::to_string),
            group: None,
            meta: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    /// Every documented text, with the class it must map to for a row of `source` without
    /// metadata (the benign-keratosis texts are excluded without metadata).
    const DOCUMENTED: [(&str, &str, Option<LesionClass>); 28] = {
        use LesionClass::{Melanoma as M, Nevus as N, SeborrheicKeratosis as K};
        [
            ("ph2", "melanoma", Some(M)),
            ("table", "melanoma in situ", Some(M)),
            ("table", "melanoma invasive", Some(M)),
            ("table", "Melanoma, NOS", Some(M)),
            ("table", "melanoma metastasis", Some(M)),
            ("isic2016", "malignant", Some(M)),
            ("isic2017", "seborrheic keratosis", Some(K)),
            ("isic2019", "benign keratosis", None),
            ("table", "pigmented benign keratosis", None),
            ("table", "bkl", None),
            ("isic2017", "nevus", Some(N)),
            ("ph2", "common nevus", Some(N)),
            ("ph2", "atypical nevus", Some(N)),
            ("dermofit", "non-melanoma non-keratosis", Some(N)),
            ("isic2016", "benign", None),
            ("isic2019", "basal cell carcinoma", None),
            ("isic2019", "actinic keratosis", None),
            ("isic2019", "squamous cell carcinoma", None),
            ("isic2019", "dermatofibroma", None),
            ("isic2019", "vascular lesion", None),
            ("isic2019", "unknown", None),
            ("table", "solar lentigo", None),
            ("table", "lichenoid keratosis", None),
            ("table", "lichen-planus like keratosis", None),
            ("table", "lentigo", None),
            ("table", "atypical melanocytic proliferation", None),
            ("isic2017", "other", None),
            ("folder", "something else", None),
        ]
    };

    #[test]
    fn every_documented_text_maps_as_documented() {
        for (source, text, want) in DOCUMENTED {
            assert_eq!(map_row(&row(source, Some(text), &[])), want, "{source} {text}");
        }
        // Every MAPPING entry is exercised above and written in the module doc.
        let doc = include_str!("labels.rs");
        for (_, text, _) in MAPPING {
            assert!(
                DOCUMENTED.iter().any(|(_, d, _)| normalize_diagnosis(d) == text),
                "{text} untested"
            );
            assert!(doc.contains(&format!("`{text}`")), "{text} not in the doc");
        }
    }

    #[test]
    fn spelling_and_scope() {
        assert_eq!(map_diagnosis(" Seborrheic_Keratosis "), Some(LesionClass::SeborrheicKeratosis));
        assert_eq!(map_diagnosis("Atypical  Nevus"), Some(LesionClass::Nevus));
        assert_eq!(map_diagnosis(""), None);
        assert_eq!(map_diagnosis("melanoma in situ?"), None);
        // `malignant` is melanoma only in ISIC 2016.
        assert_eq!(map_diagnosis("malignant"), None);
        assert_eq!(map_row(&row("ph2", Some("malignant"), &[])), None);
        assert_eq!(map_row(&row("ISIC2016", Some("Malignant"), &[])), Some(LesionClass::Melanoma));
        assert_eq!(map_row(&row("isic2017", None, &[])), None);
    }

    #[test]
    fn benign_keratosis_needs_metadata() {
        for key in KERATOSIS_EVIDENCE_KEYS {
            for diag in ["benign keratosis", "bkl", "Pigmented benign keratosis"] {
                let r = row("isic2019", Some(diag), &[(key, "Seborrheic keratosis")]);
                assert_eq!(map_row(&r), Some(LesionClass::SeborrheicKeratosis), "{key} {diag}");
                assert_eq!(Stratum::of_row(&r), Stratum::Keratosis);
            }
        }
        for other in ["Solar lentigo", "Lichen planus like keratosis", ""] {
            let r = row("table", Some("benign keratosis"), &[("diagnosis_3", other)]);
            assert_eq!(map_row(&r), None, "{other}");
            assert_eq!(Stratum::of_row(&r), Stratum::Other);
        }
        // Evidence under an unrelated key does not count.
        let r = row("table", Some("bkl"), &[("notes", "seborrheic keratosis")]);
        assert_eq!(map_row(&r), None);
        // Metadata never overrides a diagnosis that is not benign keratosis.
        let r = row("table", Some("nevus"), &[("diagnosis_3", "seborrheic keratosis")]);
        assert_eq!(map_row(&r), Some(LesionClass::Nevus));
    }

    #[test]
    fn coarse_classes_follow_the_mapping() {
        assert_eq!(Stratum::from_diagnosis(Some("Melanoma")), Stratum::Melanoma);
        assert_eq!(Stratum::from_diagnosis(Some("seborrheic keratosis")), Stratum::Keratosis);
        for d in
            ["actinic keratosis", "atypical melanocytic proliferation", "nevus", "benign keratosis"]
        {
            assert_eq!(Stratum::from_diagnosis(Some(d)), Stratum::Other, "{d}");
        }
        assert_eq!(Stratum::from_diagnosis(None), Stratum::Other);
        for c in LesionClass::ALL {
            assert_eq!(LesionClass::from_index(c.index()), Some(c));
        }
        for c in Stratum::ALL {
            assert_eq!(Stratum::ALL[c.index()], c);
        }
    }

    #[test]
    fn report_counts_excluded_and_metadata_rows() {
        let rows = [
            row("ph2", Some("common nevus"), &[]),
            row("isic2019", Some("benign keratosis"), &[("diagnosis_3", "Seborrheic keratosis")]),
            row("isic2019", Some("benign keratosis"), &[]),
            row("isic2019", Some("unknown"), &[]),
            row("isic2019", None, &[]),
        ];
        let (kept, report) = label_rows(&rows);
        assert_eq!((kept.len(), report.kept, report.excluded), (2, 2, 3));
        assert_eq!(report.class_counts(), [0, 1, 1]);
        assert_eq!(report.by_diagnosis.get("benign keratosis"), Some(&(None, 1)));
        assert_eq!(
            report.by_diagnosis.get(&format!("benign keratosis{BY_METADATA_SUFFIX}")),
            Some(&(Some(LesionClass::SeborrheicKeratosis), 1))
        );
        assert_eq!(report.by_diagnosis.get(NO_DIAGNOSIS), Some(&(None, 1)));
        let total: usize = report.by_diagnosis.values().map(|(_, n)| n).sum();
        assert_eq!(total, rows.len());
        assert!(report.to_string().contains("EXCLUDED"));
    }
}
