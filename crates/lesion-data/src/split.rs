//! The one splitter: every split of the workspace is made here. Stratified, group-aware,
//! seeded hold-out and k-fold assignments with a report (`lesion data split`); the run's
//! train/validation [`Split`] of segmentation ([`holdout`], [`read_split_file`]) and
//! classification ([`stratified_holdout`]); classification CV folds
//! ([`stratified_group_folds`]); and the SVM search's [`group_k_fold`].
//!
//! Rows that share a duplicate group (`group`), a patient or a lesion id (metadata `patient`,
//! `lesion`) form one unit that is never split. Units are taken largest first (ties in a
//! seeded random order) and each goes to the fold whose class counts are furthest below their
//! targets, weighted by the unit's own class counts. Invariants: every row gets exactly one
//! fold; no unit spans two folds; when every unit is a single image, each fold's count of each
//! class is within one image of its target (share × class total).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::Hash;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};
use serde::{Deserialize, Serialize};

use crate::labels::{keys, LabelledRow, Stratum, NUM_CLASSES};
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
            SplitKind::KFold { k } => {
                Err(DataError::InvalidArgument(format!("k-fold needs k >= 2, got {k}")))
            }
        }
    }
}

/// Fold of every row (index into the shares), in row order.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldAssignment {
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
    let c = Stratum::of_row(r);
    Stratum::ALL.iter().position(|x| *x == c).unwrap_or(Stratum::ALL.len() - 1)
}

/// Splits `rows` (see the module doc).
pub fn split(rows: &[ManifestRow], kind: SplitKind, seed: u64) -> Result<FoldAssignment> {
    let shares = kind.shares()?;
    let unit_of = units(rows);
    let n_units = unit_of.iter().max().map_or(0, |m| m + 1);
    let n_classes = Stratum::ALL.len();
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
    Ok(FoldAssignment {
        fold_of: unit_of.iter().map(|&u| fold_of_unit[u]).collect(),
        shares,
        unit_of,
    })
}

/// A run's training and validation ids (`split.json` of a run folder). Invariant: sorted,
/// disjoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<String>,
    pub val: Vec<String>,
}

impl Split {
    /// Every row trains; nothing is held out.
    pub fn all_train(rows: &[ManifestRow]) -> Split {
        Split { train: rows.iter().map(|r| r.id.clone()).collect(), val: Vec::new() }
    }
}

/// One fold of [`group_k_fold`]. Invariants: `train` and `test` are disjoint, sorted, and
/// together hold every sample index once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fold {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// Fewest folds that make a k-fold split.
pub const MIN_FOLDS: usize = 2;

/// The duplicate group of a row: its `group`, or the row alone. A row without a group is keyed
/// `"\0" + id` so it can never collide with a group name (and sorts before every group).
pub fn group_key(row: &ManifestRow) -> String {
    row.group.clone().unwrap_or_else(|| format!("\u{0}{}", row.id))
}

/// Rows (indices) by duplicate group, sorted by group key: the seeded splitters below shuffle
/// this list, so its order is part of their determinism.
fn groups_of<'a>(rows: impl Iterator<Item = &'a ManifestRow>) -> Vec<(String, Vec<usize>)> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, r) in rows.enumerate() {
        let g = group_key(r);
        let gi = *index.entry(g.clone()).or_insert_with(|| {
            groups.push((g, Vec::new()));
            groups.len() - 1
        });
        groups[gi].1.push(i);
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    groups
}

/// Group-aware seeded hold-out (segmentation's validation split): whole groups, in a seeded
/// order, go to validation until `fraction` of the images are there.
pub fn holdout(rows: &[ManifestRow], fraction: f64, seed: u64) -> Split {
    let mut groups = groups_of(rows.iter());
    groups.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let target = (rows.len() as f64 * fraction).round() as usize;
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (_, members) in groups {
        let ids = members.into_iter().map(|i| rows[i].id.clone());
        if val.len() < target {
            val.extend(ids);
        } else {
            train.extend(ids);
        }
    }
    train.sort();
    val.sort();
    Split { train, val }
}

/// Stratified, group-aware k-fold of labelled rows (classification CV): the groups, shuffled
/// with the seed, are taken largest first and each given to the fold that holds the fewest
/// images of the group's majority class (ties: fewest images, then lowest fold). Returns the
/// fold of each row, in `0..k`. Invariant: the images of one group are always in one fold.
pub fn stratified_group_folds(rows: &[LabelledRow], k: usize, seed: u64) -> Vec<usize> {
    let k = k.max(1);
    let mut groups = groups_of(rows.iter().map(|r| &r.row));
    groups.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    // Stable sort: larger groups first, shuffled order among equals.
    groups.sort_by_key(|g| std::cmp::Reverse(g.1.len()));
    let mut per_class = vec![[0usize; NUM_CLASSES]; k];
    let mut sizes = vec![0usize; k];
    let mut fold_of = vec![0usize; rows.len()];
    for (_, members) in &groups {
        let mut counts = [0usize; NUM_CLASSES];
        for &i in members {
            counts[rows[i].class.index()] += 1;
        }
        let major =
            (0..NUM_CLASSES).max_by_key(|&c| (counts[c], std::cmp::Reverse(c))).unwrap_or(0);
        let f = (0..k).min_by_key(|&f| (per_class[f][major], sizes[f], f)).unwrap_or(0);
        for &i in members {
            fold_of[i] = f;
            per_class[f][rows[i].class.index()] += 1;
        }
        sizes[f] += members.len();
    }
    fold_of
}

/// A stratified, group-aware train/validation split holding out about `fraction` of the
/// labelled rows (fold 0 of `round(1 / fraction)` [`stratified_group_folds`]).
pub fn stratified_holdout(rows: &[LabelledRow], fraction: f64, seed: u64) -> Split {
    let k = (1.0 / fraction.max(f64::EPSILON)).round().max(2.0) as usize;
    let folds = stratified_group_folds(rows, k, seed);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (r, f) in rows.iter().zip(folds) {
        if f == 0 {
            val.push(r.row.id.clone())
        } else {
            train.push(r.row.id.clone())
        }
    }
    train.sort();
    val.sort();
    Split { train, val }
}

/// Reads an id list: one image id per line, `#` starts a comment, blank lines are skipped.
/// Returns (line number, id) pairs; an empty list is an error naming the file.
pub fn read_id_list(path: &Path) -> Result<Vec<(usize, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::read(path, e))?;
    let ids: Vec<(usize, String)> = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.split('#').next().unwrap_or("").trim().to_string()))
        .filter(|(_, id)| !id.is_empty())
        .collect();
    if ids.is_empty() {
        return Err(DataError::InvalidArgument(format!("{}: no image ids", path.display())));
    }
    Ok(ids)
}

/// Reads a split file ([`read_id_list`]: the validation ids). Every id must be in `rows`;
/// the other rows train.
pub fn read_split_file(path: &Path, rows: &[ManifestRow]) -> Result<Split> {
    let known: BTreeSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let mut val = BTreeSet::new();
    for (line, id) in read_id_list(path)? {
        if !known.contains(id.as_str()) {
            return Err(DataError::InvalidArgument(format!(
                "{}: line {line}: id '{id}' is not in the manifest",
                path.display()
            )));
        }
        val.insert(id);
    }
    let train = rows.iter().filter(|r| !val.contains(&r.id)).map(|r| r.id.clone()).collect();
    Ok(Split { train, val: val.into_iter().collect() })
}

/// Deterministic, balanced group k-fold over arbitrary group labels (scikit-learn `GroupKFold`
/// without shuffling; the SVM C search uses it on feature rows): groups are taken by
/// decreasing size (ties: first appearance first) and each goes to the test fold with the
/// fewest samples so far (ties: lowest fold index). No group is split across folds; every
/// sample is in exactly one test fold.
pub fn group_k_fold<G: Eq + Hash>(groups: &[G], k: usize) -> Result<Vec<Fold>> {
    if k < MIN_FOLDS {
        return Err(DataError::InvalidArgument(format!("k-fold needs k >= {MIN_FOLDS}, got {k}")));
    }
    let mut index: HashMap<&G, usize> = HashMap::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let next = members.len();
        let gi = *index.entry(g).or_insert(next);
        if gi == next {
            members.push(Vec::new());
        }
        members[gi].push(i);
    }
    if members.len() < k {
        return Err(DataError::InvalidArgument(format!(
            "{} groups cannot fill {k} folds",
            members.len()
        )));
    }
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&a, &b| members[b].len().cmp(&members[a].len()).then(a.cmp(&b)));
    let mut test: Vec<Vec<usize>> = vec![Vec::new(); k];
    for g in order {
        let lightest = (0..k).min_by_key(|&f| (test[f].len(), f)).unwrap_or(0);
        test[lightest].extend_from_slice(&members[g]);
    }
    let mut fold_of = vec![0usize; groups.len()];
    for (f, t) in test.iter().enumerate() {
        for &i in t {
            fold_of[i] = f;
        }
    }
    Ok((0..k)
        .map(|f| {
            let (test, train): (Vec<usize>, Vec<usize>) =
                (0..groups.len()).partition(|&i| fold_of[i] == f);
            Fold { train, test }
        })
        .collect())
}

/// Achieved vs target counts per fold and class.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitReport {
    /// `counts[f][c]`: rows of class `Stratum::ALL[c]` in fold `f`.
    pub counts: Vec<[usize; 3]>,
    /// `targets[f][c]`: share × class total.
    pub targets: Vec<[f64; 3]>,
    pub units: usize,
}

impl SplitReport {
    pub fn of(rows: &[ManifestRow], s: &FoldAssignment) -> SplitReport {
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
            .map(|sh| [sh * totals[0] as f64, sh * totals[1] as f64, sh * totals[2] as f64])
            .collect();
        let units = s.unit_of.iter().max().map_or(0, |m| m + 1);
        SplitReport { counts, targets, units }
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
        writeln!(f, "{} units (duplicate / patient / lesion groups kept whole)", self.units)?;
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
        writeln!(f, "largest deviation from target: {:.2} images", self.max_deviation())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::LesionClass;
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

    fn labelled(id: &str, group: Option<&str>, class: LesionClass) -> LabelledRow {
        let mut r = row(0, 0, None);
        r.id = id.into();
        r.image_path = PathBuf::from(id);
        r.diagnosis = Some(class.name().into());
        r.group = group.map(String::from);
        LabelledRow { row: r, class }
    }

    #[test]
    fn cv_folds_are_stratified_and_group_aware() {
        let mut rows = Vec::new();
        for i in 0..30 {
            rows.push(labelled(&format!("m{i}"), None, LesionClass::Melanoma));
        }
        for i in 0..120 {
            let g = (i % 40 == 0).then(|| format!("g{}", i / 40));
            rows.push(labelled(&format!("n{i}"), g.as_deref(), LesionClass::Nevus));
        }
        rows.push(labelled("dup", Some("g0"), LesionClass::Nevus));
        let folds = stratified_group_folds(&rows, 5, 1);
        assert_eq!(folds, stratified_group_folds(&rows, 5, 1));
        for f in 0..5 {
            let mel = rows
                .iter()
                .zip(&folds)
                .filter(|(r, &g)| g == f && r.class == LesionClass::Melanoma)
                .count();
            assert_eq!(mel, 6, "fold {f}");
        }
        let g0: Vec<usize> = rows
            .iter()
            .zip(&folds)
            .filter(|(r, _)| r.row.group.as_deref() == Some("g0"))
            .map(|(_, &f)| f)
            .collect();
        assert!(g0.len() == 2 && g0[0] == g0[1]);
        let split = stratified_holdout(&rows, 0.2, 3);
        assert_eq!(split.train.len() + split.val.len(), rows.len());
        assert!((25..=35).contains(&split.val.len()), "{}", split.val.len());
    }

    #[test]
    fn holdout_keeps_groups_together_and_is_seeded() {
        let rows: Vec<ManifestRow> =
            (0..40).map(|i| row(i, 0, (i % 4 == 0).then_some((i / 8) as u8))).collect();
        let s = holdout(&rows, 0.25, 5);
        assert_eq!(s, holdout(&rows, 0.25, 5));
        assert_eq!(s.train.len() + s.val.len(), 40);
        assert!((10..=12).contains(&s.val.len()), "{}", s.val.len());
        for g in 0..5u8 {
            let members: Vec<&ManifestRow> = rows
                .iter()
                .filter(|r| r.group.as_deref() == Some(format!("g{g}").as_str()))
                .collect();
            let in_val = members.iter().filter(|r| s.val.contains(&r.id)).count();
            assert!(in_val == 0 || in_val == members.len(), "group {g} split");
        }
    }

    #[test]
    fn split_and_id_files_name_their_problems() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<ManifestRow> = (0..4).map(|i| row(i, 0, None)).collect();
        let f = dir.path().join("val.txt");
        std::fs::write(&f, format!("# validation\n{}  # first\n\n{}\n", rows[1].id, rows[3].id))
            .unwrap();
        let s = read_split_file(&f, &rows).unwrap();
        assert_eq!(s.val, vec![rows[1].id.clone(), rows[3].id.clone()]);
        assert_eq!(s.train.len(), 2);
        std::fs::write(&f, "nope\n").unwrap();
        let err = read_split_file(&f, &rows).unwrap_err().to_string();
        assert!(err.contains("val.txt") && err.contains("line 1") && err.contains("nope"), "{err}");
        std::fs::write(&f, "# nothing\n").unwrap();
        assert!(read_id_list(&f).unwrap_err().to_string().contains("no image ids"));
    }

    #[test]
    fn group_k_fold_refuses_too_few_groups() {
        assert!(group_k_fold(&[1, 1, 2], 3).is_err());
        assert!(group_k_fold(&[1, 2, 3], 1).is_err());
        let folds = group_k_fold(&[1, 1, 2, 3], 3).unwrap();
        assert_eq!(folds[0].test, vec![0, 1]);
    }
}
