//! Candidate search: all pairs of 64-bit hashes within a Hamming radius, by multi-index
//! hashing (Norouzi et al.): each hash is cut into `m` chunks and indexed per chunk; by the
//! pigeonhole principle two hashes within radius `r` agree within `r / m` bits on at least one
//! chunk, so only those buckets are probed. Sub-quadratic for the radii used here.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::fingerprint::hamming;

/// Hash width in bits.
const HASH_BITS: u32 = 64;
/// Smallest and largest chunk width (a chunk's table has 2^width + 1 offsets).
const MIN_CHUNK_BITS: u32 = 8;
const MAX_CHUNK_BITS: u32 = 22;

/// One indexed hash: its value and the item (image) it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub hash: u64,
    pub item: u32,
}

/// A match of a query against the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub item: u32,
    pub distance: u32,
}

/// One chunk's table in compressed-row form: the entries whose chunk value is `v` are
/// `hashes[offsets[v]..offsets[v + 1]]` (with their items alongside), stored inline so a
/// bucket is one contiguous scan.
struct ChunkTable {
    start: u32,
    width: u32,
    offsets: Vec<u32>,
    hashes: Vec<u64>,
    items: Vec<u32>,
    /// XOR masks of every `width`-bit value within the probe sub-radius of 0.
    probes: Vec<u32>,
}

/// How far a search reaches. Invariant: `probe <= radius`.
///
/// Every pair within `probe` bits is found (pigeonhole over the chunks); pairs between `probe`
/// and `radius` bits are found when one chunk happens to be near enough, and every pair
/// reported is within `radius`. `probe == radius` is the exact search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchRadius {
    /// Largest distance reported.
    pub radius: u32,
    /// Largest distance guaranteed to be found.
    pub probe: u32,
}

impl SearchRadius {
    /// The exact search within `radius`.
    pub fn exact(radius: u32) -> SearchRadius {
        SearchRadius { radius, probe: radius }
    }
}

/// A multi-index hash table over [`Entry`]s. Invariant: the chunks partition the 64 bits,
/// each chunk at least log2(entries) bits wide (bounded), so buckets hold O(1) entries.
pub struct MultiIndex {
    tables: Vec<ChunkTable>,
    radius: u32,
    len: usize,
}

impl MultiIndex {
    /// Builds an index for exact searches within `radius`.
    pub fn new(entries: Vec<Entry>, radius: u32) -> MultiIndex {
        MultiIndex::with_radius(entries, SearchRadius::exact(radius))
    }

    /// Builds an index that finds every pair within `r.probe` and reports pairs within
    /// `r.radius` (see [`SearchRadius`]).
    pub fn with_radius(entries: Vec<Entry>, r: SearchRadius) -> MultiIndex {
        let probe = r.probe.min(r.radius);
        let n = entries.len().max(2) as f64;
        let bits = (n.log2().ceil() as u32).clamp(MIN_CHUNK_BITS, MAX_CHUNK_BITS);
        let m = (HASH_BITS / bits).max(HASH_BITS.div_ceil(MAX_CHUNK_BITS));
        let sub_radius = probe / m;
        let mut spans = Vec::with_capacity(m as usize);
        let mut start = 0;
        for c in 0..m {
            let width = (HASH_BITS - start) / (m - c);
            spans.push((start, width));
            start += width;
        }
        let tables = spans
            .par_iter()
            .map(|&(start, width)| {
                let size = 1usize << width;
                let mut offsets = vec![0u32; size + 1];
                for e in &entries {
                    offsets[chunk(e.hash, start, width) as usize + 1] += 1;
                }
                for v in 0..size {
                    offsets[v + 1] += offsets[v];
                }
                let mut fill = offsets.clone();
                let mut hashes = vec![0u64; entries.len()];
                let mut items = vec![0u32; entries.len()];
                for e in &entries {
                    let slot = &mut fill[chunk(e.hash, start, width) as usize];
                    hashes[*slot as usize] = e.hash;
                    items[*slot as usize] = e.item;
                    *slot += 1;
                }
                let mut probes = Vec::new();
                for_each_within(0, width, sub_radius, &mut |mask| probes.push(mask));
                ChunkTable { start, width, offsets, hashes, items, probes }
            })
            .collect();
        MultiIndex { tables, radius: r.radius, len: entries.len() }
    }

    /// Number of indexed entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends to `hits` every entry within the radius of `query` whose chunk is within the
    /// probe sub-radius (duplicates possible: one per chunk and entry).
    fn probe_into(&self, query: u64, hits: &mut Vec<Hit>) {
        for t in &self.tables {
            let q = chunk(query, t.start, t.width);
            for &mask in &t.probes {
                let key = (q ^ mask) as usize;
                let (lo, hi) = (t.offsets[key] as usize, t.offsets[key + 1] as usize);
                for (&h, &item) in t.hashes[lo..hi].iter().zip(&t.items[lo..hi]) {
                    let d = hamming(h, query);
                    if d <= self.radius {
                        hits.push(Hit { item, distance: d });
                    }
                }
            }
        }
    }

    /// Items with an entry within the radius of `query`, each with its smallest distance;
    /// sorted by item.
    pub fn query(&self, query: u64) -> Vec<Hit> {
        let mut hits: Vec<Hit> = Vec::new();
        self.probe_into(query, &mut hits);
        hits.sort_by_key(|h| (h.item, h.distance));
        hits.dedup_by_key(|h| h.item);
        hits
    }
}

fn chunk(h: u64, start: u32, width: u32) -> u32 {
    ((h >> start) & ((1u64 << width) - 1)) as u32
}

/// Calls `f` with every `width`-bit value within Hamming distance `r` of `v`.
fn for_each_within(v: u32, width: u32, r: u32, f: &mut dyn FnMut(u32)) {
    fn rec(v: u32, from: u32, width: u32, left: u32, f: &mut dyn FnMut(u32)) {
        f(v);
        if left == 0 {
            return;
        }
        for b in from..width {
            rec(v ^ (1 << b), b + 1, width, left - 1, f);
        }
    }
    rec(v, 0, width, r, f);
}

/// A candidate pair of items (a < b) with the smallest hash distance seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CandidatePair {
    pub a: u32,
    pub b: u32,
    pub distance: u32,
}

/// Self-join: for every item i and each of its query hashes, the items j != i of the index
/// within the radius. Pairs are deduplicated (a < b, smallest distance) and sorted.
///
/// Cache-friendly batch form of [`MultiIndex::query`]: per chunk table the lookups are sorted
/// by their chunk value, and each probe mask is then one sweep over the table in (nearly)
/// increasing bucket order instead of millions of random bucket reads; the (table, mask)
/// sweeps run in parallel.
pub fn self_join(index: &MultiIndex, queries: &[Vec<u64>]) -> Vec<CandidatePair> {
    let lookups: Vec<(u64, u32)> = queries
        .iter()
        .enumerate()
        .flat_map(|(i, qs)| qs.iter().map(move |&q| (q, i as u32)))
        .collect();
    let radius = index.radius;
    let mut pairs: Vec<CandidatePair> = Vec::new();
    // One table at a time (bounded memory): the lookups sorted by their chunk value, then
    // one parallel sweep per probe mask.
    for t in &index.tables {
        let mut sorted = lookups.clone();
        sorted.par_sort_unstable_by_key(|&(q, _)| chunk(q, t.start, t.width));
        let found = t
            .probes
            .par_iter()
            .map(|&mask| {
                let mut out = Vec::new();
                for &(q, i) in &sorted {
                    let key = (chunk(q, t.start, t.width) ^ mask) as usize;
                    let (lo, hi) = (t.offsets[key] as usize, t.offsets[key + 1] as usize);
                    for (&h, &j) in t.hashes[lo..hi].iter().zip(&t.items[lo..hi]) {
                        let d = hamming(h, q);
                        if d <= radius && j != i {
                            out.push(CandidatePair { a: i.min(j), b: i.max(j), distance: d });
                        }
                    }
                }
                out
            })
            .reduce(Vec::new, |mut a, mut b| {
                if a.len() < b.len() {
                    std::mem::swap(&mut a, &mut b);
                }
                a.extend(b);
                a
            });
        pairs.extend(found);
    }
    pairs.par_sort_unstable();
    pairs.dedup_by(|x, y| x.a == y.a && x.b == y.b);
    pairs
}

/// Brute-force reference of [`self_join`] (quadratic; for tests).
pub fn self_join_brute(entries: &[Entry], queries: &[Vec<u64>], radius: u32) -> Vec<CandidatePair> {
    let mut best: HashMap<(u32, u32), u32> = HashMap::new();
    for (i, qs) in queries.iter().enumerate() {
        for &q in qs {
            for e in entries {
                let i = i as u32;
                let d = hamming(q, e.hash);
                if e.item != i && d <= radius {
                    let key = (i.min(e.item), i.max(e.item));
                    let slot = best.entry(key).or_insert(d);
                    *slot = (*slot).min(d);
                }
            }
        }
    }
    let mut v: Vec<CandidatePair> =
        best.into_iter().map(|((a, b), distance)| CandidatePair { a, b, distance }).collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn mih_equals_brute_force(seed_hashes in proptest::collection::vec(any::<u64>(), 2..40),
                                  flips in proptest::collection::vec((0usize..40, any::<u64>()), 0..40),
                                  radius in 0u32..14) {
            // Near copies: flip a few random bits of some hashes.
            let mut hashes = seed_hashes.clone();
            for (i, mask) in flips {
                let base = seed_hashes[i % seed_hashes.len()];
                let few = mask & mask.rotate_left(7) & mask.rotate_left(19);
                hashes.push(base ^ few);
            }
            let entries: Vec<Entry> = hashes.iter().enumerate().map(|(i, &h)| Entry { hash: h, item: i as u32 }).collect();
            let queries: Vec<Vec<u64>> = hashes.iter().map(|&h| vec![h]).collect();
            let index = MultiIndex::new(entries.clone(), radius);
            prop_assert_eq!(self_join(&index, &queries), self_join_brute(&entries, &queries, radius));
            // A probe radius below the radius: a subset of the exact pairs (distances
            // included) that holds every pair within the probe radius.
            let probe = radius / 2;
            let partial = self_join(
                &MultiIndex::with_radius(entries.clone(), SearchRadius { radius, probe }),
                &queries,
            );
            let all = self_join_brute(&entries, &queries, radius);
            for p in &partial {
                prop_assert!(all.contains(p), "{:?} not within radius", p);
            }
            for p in all.iter().filter(|p| p.distance <= probe) {
                prop_assert!(partial.contains(p), "{:?} within probe radius missed", p);
            }
        }
    }
}
