//! `cargo run --release -p lesion-dedup --example search_speed -- N RADIUS`
fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let r: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let s = lesion_dedup::bench::search_speed(n, r, 2017);
    println!("{s:?}");
}
