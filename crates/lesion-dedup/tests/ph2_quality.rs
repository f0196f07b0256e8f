//! Near-duplicate quality on PH2 (set LESION_PH2 to the PH2 folder; skipped otherwise).

use lesion_data::import::{import, ImportOptions, SourceKind};
use lesion_dedup::bench::quality;
use lesion_dedup::pipeline::DedupConfig;

#[test]
fn ph2_copies_are_found() {
    let Some(root) = std::env::var_os("LESION_PH2") else {
        eprintln!("skipped: LESION_PH2 is not set (PH2 dataset folder)");
        return;
    };
    let rep = import(
        SourceKind::Ph2,
        std::path::Path::new(&root),
        &ImportOptions::default(),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let q = quality(
        &rep.manifest.rows,
        2,
        7,
        work.path(),
        &DedupConfig::default(),
    )
    .unwrap();
    println!("{q:#?}");
    assert!(q.recall >= 0.98 && q.precision >= 0.99, "{q:#?}");
}

#[test]
fn search_speed_small() {
    let r = lesion_dedup::bench::search_speed(20_000, 8, 1);
    assert_eq!(r.found_planted, r.planted_pairs);
}
