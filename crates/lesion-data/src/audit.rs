//! Bias audit: per source and class, the distribution of metadata values; values that nearly
//! determine the label (the RECOD paper's cluster of benign archive images all from
//! 15-year-old patients is the model case); duplicate groups with conflicting labels.

use std::collections::BTreeMap;
use std::fmt;

use crate::labels::{keys, Stratum};
use crate::manifest::ManifestRow;

/// Columns audited besides the image size.
pub const AUDIT_COLUMNS: [&str; 6] =
    [keys::AGE, keys::SEX, keys::SITE, keys::IMAGE_TYPE, keys::DATASET, "image_type"];
/// Pseudo-column holding the image size bucket.
pub const SIZE_COLUMN: &str = "size";
/// A value is flagged when at least this many rows have it ...
pub const MIN_SUPPORT: usize = 20;
/// ... and this fraction of them has one class ...
pub const DETERMINING_FRACTION: f64 = 0.95;
/// ... while that class is at most this fraction of the source's rows.
pub const BASE_FRACTION_MAX: f64 = 0.85;
/// Image sides are bucketed to multiples of this many pixels.
const SIZE_BUCKET: u32 = 256;

/// A metadata value that nearly determines the label within a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    pub source: String,
    pub column: String,
    pub value: String,
    pub rows: usize,
    pub class: Stratum,
    /// Fraction of these rows of `class`.
    pub fraction: f64,
    /// Fraction of the source's rows of `class`.
    pub base_fraction: f64,
}

/// A duplicate group whose members do not all share one class.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub group: String,
    /// (id, class) of every member.
    pub members: Vec<(String, Stratum)>,
}

/// The audit's findings.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    /// (source, column, value) -> counts per class (indexed like `Stratum::ALL`).
    pub distributions: BTreeMap<(String, String, String), [usize; 3]>,
    pub flags: Vec<Flag>,
    pub conflicts: Vec<Conflict>,
}

fn value_of(row: &ManifestRow, column: &str) -> Option<String> {
    if column == SIZE_COLUMN {
        let b = |v: u32| v.div_ceil(SIZE_BUCKET) * SIZE_BUCKET;
        return (row.width > 0).then(|| format!("<={}x{}", b(row.width), b(row.height)));
    }
    row.meta_value(column).map(str::to_owned)
}

fn class_idx(c: Stratum) -> usize {
    Stratum::ALL.iter().position(|x| *x == c).unwrap_or(2)
}

/// Audits `rows`; `groups` gives extra duplicate groups (e.g. from `lesion data dedup`) as
/// lists of row indices, in addition to the rows' own `group` column.
pub fn audit(rows: &[ManifestRow], groups: &[Vec<usize>]) -> Audit {
    let mut a = Audit::default();
    let mut per_source: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    for r in rows {
        let c = class_idx(Stratum::of_row(r));
        per_source.entry(r.source.as_str()).or_insert([0; 3])[c] += 1;
        for col in AUDIT_COLUMNS.iter().copied().chain([SIZE_COLUMN]) {
            if let Some(v) = value_of(r, col) {
                a.distributions.entry((r.source.clone(), col.to_string(), v)).or_insert([0; 3])
                    [c] += 1;
            }
        }
    }
    for ((source, column, value), counts) in &a.distributions {
        let n: usize = counts.iter().sum();
        let base = per_source.get(source.as_str()).copied().unwrap_or([0; 3]);
        let base_n: usize = base.iter().sum::<usize>().max(1);
        for (k, class) in Stratum::ALL.iter().enumerate() {
            let fraction = counts[k] as f64 / n.max(1) as f64;
            let base_fraction = base[k] as f64 / base_n as f64;
            if n >= MIN_SUPPORT
                && fraction >= DETERMINING_FRACTION
                && base_fraction <= BASE_FRACTION_MAX
            {
                a.flags.push(Flag {
                    source: source.clone(),
                    column: column.clone(),
                    value: value.clone(),
                    rows: n,
                    class: *class,
                    fraction,
                    base_fraction,
                });
            }
        }
    }
    let mut by_group: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        if let Some(g) = &r.group {
            by_group.entry(g.clone()).or_default().push(i);
        }
    }
    for (k, g) in groups.iter().enumerate() {
        by_group.insert(format!("dedup:{}", k + 1), g.clone());
    }
    for (group, members) in by_group {
        let classes: Vec<(String, Stratum)> = members
            .iter()
            .filter_map(|&i| rows.get(i))
            .map(|r| (r.id.clone(), Stratum::of_row(r)))
            .collect();
        if classes.windows(2).any(|w| w[0].1 != w[1].1) {
            a.conflicts.push(Conflict { group, members: classes });
        }
    }
    a
}

impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<14} {:<10} {:<16} {:>9} {:>9} {:>9}",
            "source", "column", "value", "melanoma", "keratosis", "other"
        )?;
        for ((s, c, v), n) in &self.distributions {
            writeln!(f, "{:<14} {:<10} {:<16} {:>9} {:>9} {:>9}", s, c, v, n[0], n[1], n[2])?;
        }
        writeln!(f, "\n{} value(s) nearly determine the label:", self.flags.len())?;
        for fl in &self.flags {
            writeln!(
                f,
                "  FLAG {}: {} = {} -> {:.0}% {} of {} rows (source-wide {:.0}%)",
                fl.source,
                fl.column,
                fl.value,
                fl.fraction * 100.0,
                fl.class,
                fl.rows,
                fl.base_fraction * 100.0
            )?;
        }
        writeln!(f, "{} duplicate group(s) with conflicting labels:", self.conflicts.len())?;
        for c in &self.conflicts {
            let m: Vec<String> = c.members.iter().map(|(id, cl)| format!("{id}={cl}")).collect();
            writeln!(f, "  CONFLICT {}: {}", c.group, m.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn age_cluster_is_flagged_and_conflicts_found() {
        let mut rows = Vec::new();
        for i in 0..100 {
            let age = if i < 30 { 15 } else { 20 + i % 50 };
            let diag = if i >= 30 && i % 3 == 0 { "melanoma" } else { "nevus" };
            let mut r = ManifestRow {
                id: format!("r{i}"),
                source: "isic".into(),
                image_path: PathBuf::from("x"),
                mask_path: None,
                width: 100,
                height: 100,
                content_hash: String::new(),
                diagnosis: Some(diag.into()),
                group: (i < 2 || i == 33).then(|| "g".to_string()),
                meta: Default::default(),
            };
            r.set_meta(keys::AGE, age.to_string());
            rows.push(r);
        }
        let a = audit(&rows, &[]);
        assert!(
            a.flags
                .iter()
                .any(|f| f.column == keys::AGE && f.value == "15" && f.class == Stratum::Other),
            "{a}"
        );
        assert_eq!(a.conflicts.len(), 1);
    }
}
