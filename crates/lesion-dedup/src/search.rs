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
/// `members[offsets[v]..offsets[v + 1]]`.
struct ChunkTable {
    start: u32,
    width: u32,
    offsets: Vec<u32>,
    members: Vec<u32>,
}

/// A multi-index hash table over [`Entry`]s. Invariant: the chunks partition the 64 bits,
/// each chunk at least log2(entries) bits wide (bounded), so buckets hold O(1) entries.
pub struct MultiIndex {
    entries: Vec<Entry>,
    tables: Vec<ChunkTable>,
    radius: u32,
}

impl MultiIndex {
    /// Builds an index for searches within `radius`.
    pub fn new(entries: Vec<Entry>, radius: u32) -> MultiIndex {
        let n = entries.len().max(2) as f64;
        let bits = (n.log2().ceil() as u32).clamp(MIN_CHUNK_BITS, MAX_CHUNK_BITS);
        let m = (HASH_BITS / bits).max(HASH_BITS.div_ceil(MAX_CHUNK_BITS));
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
                let mut members = vec![0u32; entries.len()];
                for (i, e) in entries.iter().enumerate() {
                    let slot = &mut fill[chunk(e.hash, start, width) as usize];
                    members[*slot as usize] = i as u32;
                    *slot += 1;
                }
                ChunkTable {
                    start,
                    width,
                    offsets,
                    members,
                }
            })
            .collect();
        MultiIndex {
            entries,
            tables,
            radius,
        }
    }

    /// Items with an entry within the radius of `query`, each with its smallest distance;
    /// sorted by item.
    pub fn query(&self, query: u64) -> Vec<Hit> {
        let sub_radius = self.radius / self.tables.len() as u32;
        let mut hits: Vec<Hit> = Vec::new();
        for t in &self.tables {
            let q = chunk(query, t.start, t.width);
            for_each_within(q, t.width, sub_radius, &mut |key| {
                let (lo, hi) = (
                    t.offsets[key as usize] as usize,
                    t.offsets[key as usize + 1] as usize,
                );
                for &i in &t.members[lo..hi] {
                    let e = self.entries[i as usize];
                    let d = hamming(e.hash, query);
                    if d <= self.radius {
                        hits.push(Hit {
                            item: e.item,
                            distance: d,
                        });
                    }
                }
            });
        }
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
pub fn self_join(index: &MultiIndex, queries: &[Vec<u64>]) -> Vec<CandidatePair> {
    let mut pairs: Vec<CandidatePair> = queries
        .par_iter()
        .enumerate()
        .flat_map_iter(|(i, qs)| {
            let i = i as u32;
            let mut best: HashMap<u32, u32> = HashMap::new();
            for &q in qs {
                for h in index.query(q) {
                    if h.item != i {
                        let slot = best.entry(h.item).or_insert(h.distance);
                        *slot = (*slot).min(h.distance);
                    }
                }
            }
            best.into_iter().map(move |(j, d)| CandidatePair {
                a: i.min(j),
                b: i.max(j),
                distance: d,
            })
        })
        .collect();
    pairs.sort();
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
    let mut v: Vec<CandidatePair> = best
        .into_iter()
        .map(|((a, b), distance)| CandidatePair { a, b, distance })
        .collect();
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
        }
    }
}
