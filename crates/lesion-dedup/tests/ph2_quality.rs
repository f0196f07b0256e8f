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
    let rep =
        import(SourceKind::Ph2, std::path::Path::new(&root), &ImportOptions::default()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let q = quality(&rep.manifest.rows, 2, 7, work.path(), &DedupConfig::default()).unwrap();
    println!("{q:#?}");
    assert!(q.recall >= 0.98 && q.precision >= 0.99, "{q:#?}");
}

#[test]
fn search_speed_small() {
    use lesion_dedup::bench::{search_speed, SearchSetting};
    use lesion_dedup::search::SearchRadius;
    // Exact search: every planted pair is found.
    let exact =
        SearchSetting { stored_per_item: 1, queries_per_item: 1, radius: SearchRadius::exact(8) };
    let r = search_speed(20_000, exact, 1);
    assert_eq!(r.found_planted, r.planted_pairs);
    // The tool's setting: every planted pair within the probe radius is found.
    let r = search_speed(20_000, SearchSetting::tool_default(), 1);
    assert!(r.planted_within_probe > 0);
    assert_eq!(r.found_within_probe, r.planted_within_probe, "{r:#?}");
    assert!(r.found_planted >= r.found_within_probe);
}
