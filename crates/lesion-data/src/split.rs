//! Stratified, group-aware, seeded hold-out and k-fold splits, with a report.
//!
//! Rows that share a duplicate group (`group`), a patient or a lesion id (metadata `patient`,
//! `lesion`) form one unit that is never split. Units are taken largest first (ties in a
//! seeded random order) and each goes to the fold whose class counts are furthest below their
//! targets, weighted by the unit's own class counts. Invariants: every row gets exactly one
//! fold; no unit spans two folds; when every unit is a single image, each fold's count of each
//! class is within one image of its target (share × class total).

use std::collections::HashMap;
use std::fmt;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};
use crate::labels::{keys, LesionClass};
use crate::manifest::ManifestRow;

/// Which split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SplitKind {
    /// Two folds: 0 = train, 1 = test holding `test_fraction` of each class.
    Holdout { test_fraction: f64 },
    /// `k` folds of equal share.
    KFold { k: usize },
}

impl SplitKind {
    /// Share of each fold. Invariant: positive, summing to 1.
    pub fn shares(self) -> Result<Vec<f64>> {
        match self {
            SplitKind::Holdout { test_fraction } if test_fraction > 0.0 && test_fraction < 1.0 => {
                Ok(vec![1.0 - test_fraction, test_fraction])
            }
            SplitKind::Holdout { test_fraction } => Err(DataError::InvalidArgument(format!(
                "test fraction {test_fraction} is not strictly between 0 and 1"
            ))),
            SplitKind::KFold { k } if k >= 2 => Ok(vec![1.0 / k as f64; k]),
            SplitKind::KFold { k } => Err(DataError::InvalidArgument(format!(
                "k-fold needs k >= 2, got {k}"
            ))),
        }
    }
}

/// Fold of every row (index into the shares), in row order.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub fold_of: Vec<usize>,
    pub shares: Vec<f64>,
    /// Unit (group) index of every row.
    pub unit_of: Vec<usize>,
}

/// The units (rows that must stay together) of `rows`, as a unit index per row.
pub fn units(rows: &[ManifestRow]) -> Vec<usize> {
    let n = rows.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    let mut first: HashMap<(u8, &str), usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let ids = [
            (0u8, r.group.as_deref()),
            (1u8, r.meta_value(keys::PATIENT)),
            (2u8, r.meta_value(keys::LESION)),
        ];
        for (kind, id) in ids {
            if let Some(id) = id.filter(|s| !s.is_empty()) {
                match first.get(&(kind, id)) {
                    Some(&j) => {
                        let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                        parent[a] = b;
                    }
                    None => {
                        first.insert((kind, id), i);
                    }
                }
            }
        }
    }
    let mut label: HashMap<usize, usize> = HashMap::new();
    (0..n)
        .map(|i| {
            let r = find(&mut parent, i);
            let next = label.len();
            *label.entry(r).or_insert(next)
        })
        .collect()
}

fn class_index(r: &ManifestRow) -> usize {
    let c = LesionClass::of_row(r);
    LesionClass::ALL
        .iter()
        .position(|x| *x == c)
        .unwrap_or(LesionClass::ALL.len() - 1)
}

/// Splits `rows` (see the module doc).
pub fn split(rows: &[ManifestRow], kind: SplitKind, seed: u64) -> Result<Split> {
    let shares = kind.shares()?;
    let unit_of = units(rows);
    let n_units = unit_of.iter().max().map_or(0, |m| m + 1);
    let n_classes = LesionClass::ALL.len();
    let mut unit_counts = vec![vec![0usize; n_classes]; n_units];
    for (i, r) in rows.iter().enumerate() {
        unit_counts[unit_of[i]][class_index(r)] += 1;
    }
    let mut totals = vec![0usize; n_classes];
    for u in &unit_counts {
        for (t, c) in totals.iter_mut().zip(u) {
            *t += c;
        }
    }
    let mut order: Vec<usize> = (0..n_units).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order.sort_by_key(|&u| std::cmp::Reverse(unit_counts[u].iter().sum::<usize>()));
    let mut have = vec![vec![0usize; n_classes]; shares.len()];
    let mut fold_of_unit = vec![0usize; n_units];
    for u in order {
        let counts = &unit_counts[u];
        let mut best = (f64::MIN, 0usize);
        for (f, share) in shares.iter().enumerate() {
            let score: f64 = (0..n_classes)
                .map(|c| counts[c] as f64 * (share * totals[c] as f64 - have[f][c] as f64))
                .sum();
            // Ties go to the fold with the larger share, then the lower index.
            if score > best.0 + 1e-9 {
                best = (score, f);
            }
        }
        fold_of_unit[u] = best.1;
        for c in 0..n_classes {
            have[best.1][c] += counts[c];
        }
    }
    Ok(Split {
        fold_of: unit_of.iter().map(|&u| fold_of_unit[u]).collect(),
        shares,
        unit_of,
    })
}

/// Achieved vs target counts per fold and class.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitReport {
    /// `counts[f][c]`: rows of class `LesionClass::ALL[c]` in fold `f`.
    pub counts: Vec<[usize; 3]>,
    /// `targets[f][c]`: share × class total.
    pub targets: Vec<[f64; 3]>,
    pub units: usize,
}

impl SplitReport {
    pub fn of(rows: &[ManifestRow], s: &Split) -> SplitReport {
        let mut counts = vec![[0usize; 3]; s.shares.len()];
        let mut totals = [0usize; 3];
        for (r, &f) in rows.iter().zip(&s.fold_of) {
            let c = class_index(r);
            counts[f][c] += 1;
            totals[c] += 1;
        }
        let targets = s
            .shares
            .iter()
            .map(|sh| {
                [
                    sh * totals[0] as f64,
                    sh * totals[1] as f64,
                    sh * totals[2] as f64,
                ]
            })
            .collect();
        let units = s.unit_of.iter().max().map_or(0, |m| m + 1);
        SplitReport {
            counts,
            targets,
            units,
        }
    }

    /// Largest |achieved − target| over folds and classes, in images.
    pub fn max_deviation(&self) -> f64 {
        self.counts
            .iter()
            .zip(&self.targets)
            .flat_map(|(c, t)| c.iter().zip(t).map(|(a, b)| (*a as f64 - b).abs()))
            .fold(0.0, f64::max)
    }
}

impl fmt::Display for SplitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} units (duplicate / patient / lesion groups kept whole)",
            self.units
        )?;
        writeln!(
            f,
            "{:<6} {:>18} {:>18} {:>18} {:>7}",
            "fold", "melanoma (target)", "keratosis (target)", "other (target)", "total"
        )?;
        for (i, (c, t)) in self.counts.iter().zip(&self.targets).enumerate() {
            writeln!(
                f,
                "{:<6} {:>8} ({:>7.1}) {:>8} ({:>7.1}) {:>8} ({:>7.1}) {:>7}",
                i,
                c[0],
                t[0],
                c[1],
                t[1],
                c[2],
                t[2],
                c.iter().sum::<usize>()
            )?;
        }
        writeln!(
            f,
            "largest deviation from target: {:.2} images",
            self.max_deviation()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn row(i: usize, class: u8, group: Option<u8>) -> ManifestRow {
        ManifestRow {
            id: format!("r{i}"),
            source: "t".into(),
            image_path: PathBuf::from(format!("r{i}.jpg")),
            mask_path: None,
            width: 1,
            height: 1,
            content_hash: String::new(),
            diagnosis: Some(
                ["melanoma", "seborrheic keratosis", "nevus"][class as usize % 3].into(),
            ),
            group: group.map(|g| format!("g{g}")),
            meta: Default::default(),
        }
    }

    fn kind_strategy() -> impl Strategy<Value = SplitKind> {
        prop_oneof![
            (0.05f64..0.95).prop_map(|f| SplitKind::Holdout { test_fraction: f }),
            (2usize..7).prop_map(|k| SplitKind::KFold { k }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn groups_never_split(spec in proptest::collection::vec((0u8..3, proptest::option::of(0u8..20)), 1..120),
                              kind in kind_strategy(), seed in any::<u64>()) {
            let rows: Vec<ManifestRow> = spec.iter().enumerate().map(|(i, (c, g))| row(i, *c, *g)).collect();
            let s = split(&rows, kind, seed).unwrap();
            let mut fold_of_group: HashMap<String, usize> = HashMap::new();
            for (r, &f) in rows.iter().zip(&s.fold_of) {
                prop_assert!(f < s.shares.len());
                if let Some(g) = &r.group {
                    let first = *fold_of_group.entry(g.clone()).or_insert(f);
                    prop_assert_eq!(first, f, "group {} in two folds", g);
                }
            }
            prop_assert_eq!(split(&rows, kind, seed).unwrap(), s);
        }

        #[test]
        fn singletons_within_one_image(classes in proptest::collection::vec(0u8..3, 1..300),
                                       kind in kind_strategy(), seed in any::<u64>()) {
            let rows: Vec<ManifestRow> = classes.iter().enumerate().map(|(i, c)| row(i, *c, None)).collect();
            let s = split(&rows, kind, seed).unwrap();
            let rep = SplitReport::of(&rows, &s);
            prop_assert!(rep.max_deviation() <= 1.0 + 1e-9, "{}", rep);
        }
    }

    #[test]
    fn patient_ids_join_units() {
        let mut a = row(0, 0, None);
        let mut b = row(1, 2, Some(7));
        let c = row(2, 2, Some(7));
        a.set_meta(keys::PATIENT, "p1");
        b.set_meta(keys::PATIENT, "p1");
        let u = units(&[a, b, c]);
        assert!(u[0] == u[1] && u[1] == u[2]);
        assert!(split(&[], SplitKind::KFold { k: 1 }, 0).is_err());
    }
}
