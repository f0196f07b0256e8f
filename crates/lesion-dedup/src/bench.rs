//! Benchmarks: near-duplicate quality on transformed copies of a set of originals, and the
//! speed of the candidate search over synthetic hashes.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use lesion_data::manifest::ManifestRow;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::Result;
use crate::pipeline::{find_duplicates, fingerprint_rows, Decisions, DedupConfig};
use crate::search::{self_join, Entry, MultiIndex};
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
        .collect();
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
        precision: if found.is_empty() {
            1.0
        } else {
            correct as f64 / found.len() as f64
        },
        recall: if true_pairs == 0 {
            1.0
        } else {
            correct as f64 / true_pairs as f64
        },
        candidates: report.candidates,
        fingerprint_seconds: stats.seconds,
        images_per_second: rows.len() as f64 / stats.seconds.max(1e-9),
        search_seconds: report.search_seconds,
        confirm_seconds: report.confirm_seconds,
    })
}

/// Result of the synthetic search benchmark.
#[derive(Debug, Clone)]
pub struct SearchReport {
    pub hashes: usize,
    pub radius: u32,
    pub planted_pairs: usize,
    pub found_planted: usize,
    pub pairs: usize,
    pub build_seconds: f64,
    pub search_seconds: f64,
}

/// Self-join of `n` synthetic 64-bit hashes (one per item) within `radius`: random hashes,
/// one in ten followed by a copy with up to `radius` bits flipped (planted pairs).
pub fn search_speed(n: usize, radius: u32, seed: u64) -> SearchReport {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut hashes = Vec::with_capacity(n);
    let mut planted = 0;
    while hashes.len() < n {
        let h: u64 = rng.random();
        hashes.push(h);
        if hashes.len() < n && rng.random_bool(0.1) {
            let mut c = h;
            for _ in 0..rng.random_range(0..=radius) {
                c ^= 1 << rng.random_range(0..64);
            }
            hashes.push(c);
            planted += 1;
        }
    }
    let t0 = Instant::now();
    let entries: Vec<Entry> = hashes
        .iter()
        .enumerate()
        .map(|(i, &h)| Entry {
            hash: h,
            item: i as u32,
        })
        .collect();
    let index = MultiIndex::new(entries, radius);
    let build_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let queries: Vec<Vec<u64>> = hashes.iter().map(|&h| vec![h]).collect();
    let pairs = self_join(&index, &queries);
    let search_seconds = t1.elapsed().as_secs_f64();
    // A planted copy directly follows its original.
    let found: HashSet<(u32, u32)> = pairs.iter().map(|p| (p.a, p.b)).collect();
    let mut found_planted = 0;
    for i in 1..n {
        if crate::fingerprint::hamming(hashes[i - 1], hashes[i]) <= radius
            && found.contains(&((i - 1) as u32, i as u32))
        {
            found_planted += 1;
        }
    }
    SearchReport {
        hashes: n,
        radius,
        planted_pairs: planted,
        found_planted,
        pairs: pairs.len(),
        build_seconds,
        search_seconds,
    }
}
