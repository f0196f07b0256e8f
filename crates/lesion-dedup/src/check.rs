//! Contamination check: images of a test set with an exact or near duplicate in a train set.

use lesion_data::manifest::ManifestRow;
use rayon::prelude::*;

use crate::confirm::Detail;
use crate::error::Result;
use crate::fingerprint::Symmetry;
use crate::pipeline::{confirm_ranked, fingerprint_rows, DedupConfig, PairKind};
use crate::search::{Entry, MultiIndex};

/// A test image with a duplicate in train.
#[derive(Debug, Clone, PartialEq)]
pub struct Contamination {
    pub test_id: String,
    pub train_id: String,
    pub kind: PairKind,
    pub score: f32,
}

/// Every (test, train) duplicate pair, sorted by test id then train id.
pub fn check(
    train: &[ManifestRow],
    test: &[ManifestRow],
    cfg: &DedupConfig,
) -> Result<Vec<Contamination>> {
    let (train_fp, train_keys, _) = fingerprint_rows(train, cfg)?;
    let (test_fp, test_keys, _) = fingerprint_rows(test, cfg)?;
    let entries: Vec<Entry> = train_fp
        .iter()
        .enumerate()
        .flat_map(|(i, f)| f.index_hashes().map(move |hash| Entry { hash, item: i as u32 }))
        .collect();
    let index = MultiIndex::with_radius(entries, cfg.search_radius());
    let by_key: std::collections::HashMap<&str, usize> =
        train_keys.iter().enumerate().map(|(i, k)| (k.as_str(), i)).collect();
    let train_detail: Vec<Detail> = train_fp.par_iter().map(Detail::of).collect();
    let syms = cfg.symmetry.symmetries();
    let mut out: Vec<Contamination> = test_fp
        .par_iter()
        .enumerate()
        .flat_map_iter(|(t, fp)| {
            let mut found = Vec::new();
            if let Some(&j) = by_key.get(test_keys[t].as_str()) {
                found.push(Contamination {
                    test_id: test[t].id.clone(),
                    train_id: train[j].id.clone(),
                    kind: PairKind::Exact,
                    score: 1.0,
                });
            }
            let mut items: Vec<u32> = Vec::new();
            for s in syms {
                let k = Symmetry::ALL.iter().position(|x| x == s).unwrap_or(0);
                items.extend(index.query(fp.hashes[k]).into_iter().map(|h| h.item));
            }
            items.sort_unstable();
            items.dedup();
            let d = Detail::of(fp);
            for j in items {
                let j = j as usize;
                if train_keys[j] == test_keys[t] {
                    continue;
                }
                let c = confirm_ranked(&d, &train_detail[j], syms);
                if c.score >= cfg.threshold {
                    found.push(Contamination {
                        test_id: test[t].id.clone(),
                        train_id: train[j].id.clone(),
                        kind: PairKind::Near,
                        score: c.score,
                    });
                }
            }
            found
        })
        .collect();
    out.sort_by(|a, b| a.test_id.cmp(&b.test_id).then_with(|| a.train_id.cmp(&b.train_id)));
    Ok(out)
}
