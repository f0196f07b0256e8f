//! Speed of the candidate search over synthetic hashes:
//! `cargo run --release -p lesion-dedup --example search_speed -- [N] [RADIUS] [PROBE] [STORED] [QUERIES]`
//! Defaults: 1,000,000 items in the tool's own setting (radius 12, probe radius 8, 10 stored
//! hashes and 4 flipped lookups per item).
use lesion_dedup::bench::{search_speed, SearchSetting};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut next =
        |default: usize| -> usize { args.next().and_then(|a| a.parse().ok()).unwrap_or(default) };
    let mut setting = SearchSetting::tool_default();
    let n = next(1_000_000);
    setting.radius.radius = next(setting.radius.radius as usize) as u32;
    setting.radius.probe = (next(setting.radius.probe as usize) as u32).min(setting.radius.radius);
    setting.stored_per_item = next(setting.stored_per_item);
    setting.queries_per_item = next(setting.queries_per_item);
    let s = search_speed(n, setting, 2017);
    println!("{s:#?}");
    println!(
        "{} items ({} hashes indexed, {} lookups), radius {} probe {}: index {:.2}s + search {:.2}s = {:.2}s; {} pairs; planted found {}/{} (within probe {}/{})",
        s.items, s.hashes, s.lookups, setting.radius.radius, setting.radius.probe,
        s.build_seconds, s.search_seconds, s.build_seconds + s.search_seconds, s.pairs,
        s.found_planted, s.planted_pairs, s.found_within_probe, s.planted_within_probe
    );
}
