//! Benchmarks: near-duplicate quality on transformed copies of a set of originals, and the
//! speed of the candidate search over synthetic hashes.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use lesion_data::manifest::ManifestRow;
use lesion_data::par::CollectInOrder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::Result;
use crate::pipeline::{find_duplicates, fingerprint_rows, Decisions, DedupConfig};
use crate::search::{self_join, Entry, MultiIndex, SearchRadius};
use crate::transform::{transformed_copy, TransformRanges};

/// Quality and speed of one benchmark run.
#[derive(Debug, Clone)]
pub struct QualityReport {
    pub originals: usize,
    pub copies: usize,
    /// Pairs of images derived from the same original (including original–copy pairs).
    pub true_pairs: usize,
    /// Pairs put in one group by the tool.
    pub found_pairs: usize,
    pub correct_pairs: usize,
    pub precision: f64,
    pub recall: f64,
    pub candidates: usize,
    pub fingerprint_seconds: f64,
    pub images_per_second: f64,
    pub search_seconds: f64,
    pub confirm_seconds: f64,
}

/// Writes `copies_per_image` transformed JPEG copies of each original into `work_dir`, then
/// runs the full pipeline (decode, fingerprint, search, confirm, group) over originals and
/// copies and scores the groups' pairs against the truth (same original).
pub fn quality(
    originals: &[ManifestRow],
    copies_per_image: usize,
    seed: u64,
    work_dir: &Path,
    cfg: &DedupConfig,
) -> Result<QualityReport> {
    let ranges = TransformRanges::default();
    let made: Result<Vec<Vec<ManifestRow>>> = originals
        .par_iter()
        .enumerate()
        .map(|(i, o)| {
            let mut rng =
                ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let img = lesion_data::io::load_rgb(&o.image_path)?;
            (0..copies_per_image)
                .map(|k| {
                    let (bytes, _) = transformed_copy(&o.image_path, &img, &ranges, &mut rng)?;
                    let path = work_dir.join(format!("{}__copy{k}.jpg", o.id));
                    lesion_data::io::atomic_write(&path, &bytes)?;
                    let mut row = o.clone();
                    row.id = format!("{}__copy{k}", o.id);
                    row.image_path = path;
                    row.mask_path = None;
                    row.content_hash = lesion_data::io::hash_bytes(&bytes);
                    row.group = Some(o.id.clone());
                    Ok(row)
                })
                .collect()
        })
        .collect_in_order();
    let mut rows: Vec<ManifestRow> = originals
        .iter()
        .map(|o| {
            let mut r = o.clone();
            r.group = Some(o.id.clone());
            r
        })
        .collect();
    let copies: Vec<ManifestRow> = made?.into_iter().flatten().collect();
    let n_copies = copies.len();
    rows.extend(copies);
    let (fps, keys, stats) = fingerprint_rows(&rows, cfg)?;
    let report = find_duplicates(&rows, &fps, &keys, cfg, &Decisions::new());
    let truth = |i: usize| rows[i].group.clone().unwrap_or_default();
    let mut family: HashMap<String, usize> = HashMap::new();
    for i in 0..rows.len() {
        *family.entry(truth(i)).or_default() += 1;
    }
    let true_pairs: usize = family.values().map(|&k| k * (k - 1) / 2).sum();
    let mut found = HashSet::new();
    for g in &report.groups {
        for (x, &a) in g.iter().enumerate() {
            for &b in &g[x + 1..] {
                found.insert((a, b));
            }
        }
    }
    let correct = found.iter().filter(|&&(a, b)| truth(a) == truth(b)).count();
    Ok(QualityReport {
        originals: originals.len(),
        copies: n_copies,
        true_pairs,
        found_pairs: found.len(),
        correct_pairs: correct,
        precision: if found.is_empty() { 1.0 } else { correct as f64 / found.len() as f64 },
        recall: if true_pairs == 0 { 1.0 } else { correct as f64 / true_pairs as f64 },
        candidates: report.candidates,
        fingerprint_seconds: stats.seconds,
        images_per_second: rows.len() as f64 / stats.seconds.max(1e-9),
        search_seconds: report.search_seconds,
        confirm_seconds: report.confirm_seconds,
    })
}

/// The shape of a synthetic search: how many hashes each item stores and queries with, and
/// how far the search reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchSetting {
    /// Hashes indexed per item (the tool: the whole image and its crop windows).
    pub stored_per_item: usize,
    /// Hashes each item queries with (the tool: the whole image under each symmetry).
    pub queries_per_item: usize,
    pub radius: SearchRadius,
}

impl SearchSetting {
    /// The tool's own setting with the default configuration: 1 + 9 window hashes stored,
    /// 4 flipped lookups, the default radius and probe radius.
    pub fn tool_default() -> SearchSetting {
        let cfg = DedupConfig::default();
        SearchSetting {
            stored_per_item: 1 + crate::fingerprint::INDEX_WINDOWS.len(),
            queries_per_item: cfg.symmetry.symmetries().len(),
            radius: cfg.search_radius(),
        }
    }
}

/// Result of the synthetic search benchmark.
#[derive(Debug, Clone)]
pub struct SearchReport {
    pub items: usize,
    pub setting: SearchSetting,
    /// Indexed hashes (items × stored per item).
    pub hashes: usize,
    /// Lookups (items × queries per item).
    pub lookups: usize,
    pub planted_pairs: usize,
    pub found_planted: usize,
    /// Planted pairs within the probe radius (all must be found), and how many were.
    pub planted_within_probe: usize,
    pub found_within_probe: usize,
    pub pairs: usize,
    pub build_seconds: f64,
    pub search_seconds: f64,
}

/// Fraction of items followed by a planted near copy.
const PLANTED_FRACTION: f64 = 0.1;

/// Self-join of `n` synthetic items, each with `stored_per_item` random 64-bit hashes in the
/// index and `queries_per_item` query hashes (the first query is the first stored hash, as
/// the tool's identity hash is both). One item in ten is followed by a planted near copy
/// whose first hash is one of the original's stored hashes (a crop window, say) with up to
/// `radius` bits flipped.
pub fn search_speed(n: usize, setting: SearchSetting, seed: u64) -> SearchReport {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let stored_n = setting.stored_per_item.max(1);
    let query_n = setting.queries_per_item.max(1);
    let radius = setting.radius.radius;
    let mut stored: Vec<Vec<u64>> = Vec::with_capacity(n);
    let mut queries: Vec<Vec<u64>> = Vec::with_capacity(n);
    // For each planted copy (its index): distance to the original's hash it was made from.
    let mut planted: Vec<(usize, u32)> = Vec::new();
    let random_item = |rng: &mut ChaCha8Rng| -> (Vec<u64>, Vec<u64>) {
        let s: Vec<u64> = (0..stored_n).map(|_| rng.random()).collect();
        let mut q = vec![s[0]];
        q.extend((1..query_n).map(|_| rng.random::<u64>()));
        (s, q)
    };
    while stored.len() < n {
        let (s, q) = random_item(&mut rng);
        stored.push(s);
        queries.push(q);
        if stored.len() < n && rng.random_bool(PLANTED_FRACTION) {
            let prev = &stored[stored.len() - 1];
            let base = prev[rng.random_range(0..stored_n)];
            let mut c = base;
            for _ in 0..rng.random_range(0..=radius) {
                c ^= 1 << rng.random_range(0..64);
            }
            let (mut s, mut q) = random_item(&mut rng);
            s[0] = c;
            q[0] = c;
            planted.push((stored.len(), crate::fingerprint::hamming(base, c)));
            stored.push(s);
            queries.push(q);
        }
    }
    let t0 = Instant::now();
    let entries: Vec<Entry> = stored
        .iter()
        .enumerate()
        .flat_map(|(i, hs)| hs.iter().map(move |&hash| Entry { hash, item: i as u32 }))
        .collect();
    let hashes = entries.len();
    let index = MultiIndex::with_radius(entries, setting.radius);
    let build_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let pairs = self_join(&index, &queries);
    let search_seconds = t1.elapsed().as_secs_f64();
    let found: HashSet<(u32, u32)> = pairs.iter().map(|p| (p.a, p.b)).collect();
    let is_found = |i: usize| found.contains(&((i - 1) as u32, i as u32));
    let within: Vec<usize> =
        planted.iter().filter(|&&(_, d)| d <= setting.radius.probe).map(|&(i, _)| i).collect();
    SearchReport {
        items: n,
        setting,
        hashes,
        lookups: queries.iter().map(Vec::len).sum(),
        planted_pairs: planted.len(),
        found_planted: planted.iter().filter(|&&(i, _)| is_found(i)).count(),
        planted_within_probe: within.len(),
        found_within_probe: within.iter().filter(|&&i| is_found(i)).count(),
        pairs: pairs.len(),
        build_seconds,
        search_seconds,
    }
}
