//! The duplicate-finding pipeline over manifest rows: fingerprints (parallel, cached),
//! exact duplicates, candidate search, confirmation, a person's decisions, groups.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use lesion_data::manifest::ManifestRow;
use lesion_data::par::CollectInOrder;
use rayon::prelude::*;

use crate::cache::FingerprintCache;
use crate::confirm::{confirm_best, Detail};
use crate::error::{DedupError, Result};
use crate::fingerprint::{Fingerprint, Symmetry, SymmetryMode};
use crate::groups::UnionFind;
use crate::search::{self_join, Entry, MultiIndex, SearchRadius};

/// Default Hamming radius of the candidate search (64-bit hashes).
pub const DEFAULT_RADIUS: u32 = 12;
/// Default probe radius: every pair within it is found for certain; pairs between it and
/// [`DEFAULT_RADIUS`] are found when one chunk of the hash happens to be near enough (see
/// [`crate::search::SearchRadius`]). 8 keeps the search over a million images (10 stored
/// hashes, 4 flipped lookups each) under a minute on 2 cores; see BENCHMARKS.md.
pub const DEFAULT_PROBE_RADIUS: u32 = 8;
/// Default confirmation threshold on the correlation score.
pub const DEFAULT_THRESHOLD: f32 = 0.82;
/// Uncropped correlation above which no crop search is needed (well above any threshold used).
const QUICK_ACCEPT: f32 = 0.95;
/// Symmetries kept for the full crop search after ranking them by an uncropped correlation.
const SYMMETRIES_REFINED: usize = 2;

/// How to look for duplicates.
#[derive(Debug, Clone)]
pub struct DedupConfig {
    /// Hamming radius of the candidate search.
    pub radius: u32,
    /// Distance within which every candidate is found for certain (at most `radius`).
    pub probe_radius: u32,
    /// A candidate pair with a confirmation score at or above this is a near-duplicate.
    pub threshold: f32,
    /// Symmetries searched (flips by default).
    pub symmetry: SymmetryMode,
    /// Fingerprint cache folder (none: no cache).
    pub cache_dir: Option<PathBuf>,
    /// Show progress bars on stderr.
    pub progress: bool,
}

impl DedupConfig {
    /// The candidate search's reach.
    pub fn search_radius(&self) -> SearchRadius {
        SearchRadius { radius: self.radius, probe: self.probe_radius.min(self.radius) }
    }
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            radius: DEFAULT_RADIUS,
            probe_radius: DEFAULT_PROBE_RADIUS,
            threshold: DEFAULT_THRESHOLD,
            symmetry: SymmetryMode::Flips,
            cache_dir: None,
            progress: false,
        }
    }
}

/// Counts and timings of fingerprinting.
#[derive(Debug, Clone, Default)]
pub struct FingerprintStats {
    pub images: usize,
    pub from_cache: usize,
    pub seconds: f64,
}

fn progress(len: usize, msg: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
    {
        pb.set_style(style);
    }
    pb.set_message(msg.to_string());
    pb
}

/// The content hash of a row: the manifest's when present, else the file's blake3.
pub fn content_key(row: &ManifestRow) -> Result<String> {
    if row.content_hash.is_empty() {
        Ok(lesion_data::io::content_hash(&row.image_path)?)
    } else {
        Ok(row.content_hash.clone())
    }
}

/// Fingerprints every row in parallel (decode + downscale), using and filling the cache.
/// Returns fingerprints in row order and the rows' content keys.
pub fn fingerprint_rows(
    rows: &[ManifestRow],
    cfg: &DedupConfig,
) -> Result<(Vec<Fingerprint>, Vec<String>, FingerprintStats)> {
    let start = Instant::now();
    let cache = cfg.cache_dir.as_deref().map(FingerprintCache::new);
    let hits = AtomicUsize::new(0);
    let pb = progress(rows.len(), "hashing", cfg.progress);
    let out: Result<Vec<(Fingerprint, String)>> = rows
        .par_iter()
        .map(|row| {
            let key = content_key(row)?;
            if let Some(fp) = cache.as_ref().and_then(|c| c.get(&key)) {
                hits.fetch_add(1, Ordering::Relaxed);
                pb.inc(1);
                return Ok((fp, key));
            }
            let img = lesion_data::io::load_rgb(&row.image_path)?;
            let fp = Fingerprint::of_image(&row.image_path, &img)?;
            if let Some(c) = &cache {
                c.put(&key, &fp)?;
            }
            pb.inc(1);
            Ok((fp, key))
        })
        .collect_in_order();
    pb.finish_and_clear();
    let (fps, keys) = out?.into_iter().unzip();
    let stats = FingerprintStats {
        images: rows.len(),
        from_cache: hits.into_inner(),
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((fps, keys, stats))
}

/// How a pair was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairKind {
    /// Same content hash.
    Exact,
    /// Perceptual-hash candidate.
    Near,
    /// Only listed in the decisions file.
    Decided,
}

impl PairKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PairKind::Exact => "exact",
            PairKind::Near => "near",
            PairKind::Decided => "decided",
        }
    }
}

/// A person's verdict on a pair, read back from the decisions file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Confirmed,
    Rejected,
}

/// One scored pair. Invariant: `a < b` (row indices); `duplicate` is the final verdict
/// (a decision overrides the score).
#[derive(Debug, Clone, PartialEq)]
pub struct PairScore {
    pub a: usize,
    pub b: usize,
    pub kind: PairKind,
    /// Smallest hash distance (0 for exact duplicates).
    pub hash_distance: u32,
    /// Confirmation score (1 for exact duplicates).
    pub score: f32,
    pub symmetry: Symmetry,
    pub decision: Option<Decision>,
    pub duplicate: bool,
}

/// Pairs and the groups they make.
#[derive(Debug, Clone)]
pub struct DedupReport {
    /// Every candidate pair, duplicate or not, sorted by (a, b).
    pub pairs: Vec<PairScore>,
    /// Groups of row indices joined by duplicate pairs (size ≥ 2).
    pub groups: Vec<Vec<usize>>,
    pub candidates: usize,
    pub search_seconds: f64,
    pub confirm_seconds: f64,
}

/// Decisions keyed by an unordered id pair.
pub type Decisions = HashMap<(String, String), Decision>;

fn pair_key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// Header of the decisions file.
pub const DECISIONS_HEADER: [&str; 3] = ["id_a", "id_b", "decision"];

/// Reads a decisions CSV (`id_a,id_b,decision` with decision `confirmed` / `rejected`, or
/// empty for undecided). Errors name the file and line.
pub fn read_decisions(path: &Path) -> Result<Decisions> {
    let bytes = std::fs::read(path)
        .map_err(|e| lesion_data::DataError::Read { path: path.to_path_buf(), source: e })?;
    let mut r = csv::Reader::from_reader(bytes.as_slice());
    let mut out = Decisions::new();
    for (i, rec) in r.records().enumerate() {
        let line = i + 2;
        let err = |problem: String| DedupError::Table { path: path.to_path_buf(), line, problem };
        let rec = rec.map_err(|e| err(e.to_string()))?;
        let (a, b, d) =
            (rec.get(0).unwrap_or(""), rec.get(1).unwrap_or(""), rec.get(2).unwrap_or("").trim());
        let decision = match d.to_ascii_lowercase().as_str() {
            "confirmed" | "confirm" | "yes" | "duplicate" => Decision::Confirmed,
            "rejected" | "reject" | "no" | "distinct" => Decision::Rejected,
            "" => continue,
            other => return Err(err(format!("decision {other:?} is not confirmed or rejected"))),
        };
        out.insert(pair_key(a, b), decision);
    }
    Ok(out)
}

/// Finds exact and near duplicates among `rows` given their fingerprints and content keys.
pub fn find_duplicates(
    rows: &[ManifestRow],
    fps: &[Fingerprint],
    keys: &[String],
    cfg: &DedupConfig,
    decisions: &Decisions,
) -> DedupReport {
    let t0 = Instant::now();
    let n = rows.len();
    let mut pairs: BTreeMap<(usize, usize), PairScore> = BTreeMap::new();
    // Exact duplicates: same content key.
    let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        by_key.entry(k.as_str()).or_default().push(i);
    }
    for members in by_key.values() {
        for w in members.windows(2) {
            pairs.insert(
                (w[0], w[1]),
                PairScore {
                    a: w[0],
                    b: w[1],
                    kind: PairKind::Exact,
                    hash_distance: 0,
                    score: 1.0,
                    symmetry: Symmetry::Identity,
                    decision: None,
                    duplicate: true,
                },
            );
        }
    }
    // Near-duplicate candidates.
    let entries: Vec<Entry> = fps
        .iter()
        .enumerate()
        .flat_map(|(i, f)| f.index_hashes().map(move |hash| Entry { hash, item: i as u32 }))
        .collect();
    let syms = cfg.symmetry.symmetries();
    let queries: Vec<Vec<u64>> = fps
        .iter()
        .map(|f| {
            syms.iter()
                .map(|s| f.hashes[Symmetry::ALL.iter().position(|x| x == s).unwrap_or(0)])
                .collect()
        })
        .collect();
    let index = MultiIndex::with_radius(entries, cfg.search_radius());
    let candidates = self_join(&index, &queries);
    let search_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let details: Vec<Detail> = fps.par_iter().map(Detail::of).collect();
    let pb = progress(candidates.len(), "confirming", cfg.progress);
    let scored: Vec<PairScore> = candidates
        .par_iter()
        .filter(|c| keys[c.a as usize] != keys[c.b as usize])
        .map(|c| {
            let (a, b) = (c.a as usize, c.b as usize);
            let conf = confirm_ranked(&details[a], &details[b], syms);
            pb.inc(1);
            PairScore {
                a,
                b,
                kind: PairKind::Near,
                hash_distance: c.distance,
                score: conf.score,
                symmetry: conf.symmetry,
                decision: None,
                duplicate: conf.score >= cfg.threshold,
            }
        })
        .collect();
    pb.finish_and_clear();
    for p in scored {
        pairs.insert((p.a, p.b), p);
    }
    // Decisions override; confirmed pairs not found are added.
    let index_of: HashMap<&str, usize> =
        rows.iter().enumerate().map(|(i, r)| (r.id.as_str(), i)).collect();
    for ((ida, idb), d) in decisions {
        let (Some(&a), Some(&b)) = (index_of.get(ida.as_str()), index_of.get(idb.as_str())) else {
            continue;
        };
        let (a, b) = (a.min(b), a.max(b));
        let entry = pairs.entry((a, b)).or_insert(PairScore {
            a,
            b,
            kind: PairKind::Decided,
            hash_distance: u32::MAX,
            score: f32::NAN,
            symmetry: Symmetry::Identity,
            decision: None,
            duplicate: false,
        });
        entry.decision = Some(*d);
        entry.duplicate = *d == Decision::Confirmed;
    }
    let mut uf = UnionFind::new(n);
    for p in pairs.values().filter(|p| p.duplicate) {
        uf.union(p.a, p.b);
    }
    DedupReport {
        pairs: pairs.into_values().collect(),
        groups: uf.groups(),
        candidates: candidates.len(),
        search_seconds,
        confirm_seconds: t1.elapsed().as_secs_f64(),
    }
}

/// Ranks symmetries by the uncropped correlation, then runs the crop search on the best few.
/// An uncropped correlation already at or above `QUICK_ACCEPT` is returned as is (the crop
/// search could only raise it).
pub fn confirm_ranked(a: &Detail, b: &Detail, syms: &[Symmetry]) -> crate::confirm::Confirmation {
    let mut ranked: Vec<(f32, Symmetry)> =
        syms.iter().map(|&s| (crate::confirm::quick_score(a, b, s), s)).collect();
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0));
    if let Some(&(score, symmetry)) = ranked.first() {
        if score >= QUICK_ACCEPT {
            return crate::confirm::Confirmation { score, symmetry };
        }
    }
    let top: Vec<Symmetry> = ranked.iter().take(SYMMETRIES_REFINED).map(|x| x.1).collect();
    confirm_best(a, b, &top)
}
