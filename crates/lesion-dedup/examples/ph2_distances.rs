//! Histogram of the smallest hash distance of true pairs (PH2 + transformed copies):
//! `cargo run --release -p lesion-dedup --example ph2_distances -- PH2_DIR [COPIES]`.
use lesion_data::import::{import, ImportOptions, SourceKind};
use lesion_dedup::fingerprint::{hamming, Fingerprint};
use lesion_dedup::transform::{transformed_copy, TransformRanges};
use rand::SeedableRng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = args.next().ok_or("give the PH2 folder")?;
    let copies: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let rep = import(SourceKind::Ph2, std::path::Path::new(&root), &ImportOptions::default())?;
    let ranges = TransformRanges::default();
    let mut whole = vec![0usize; 65];
    let mut any = vec![0usize; 65];
    let mut fps: Vec<(usize, Fingerprint)> = Vec::new();
    for (i, o) in rep.manifest.rows.iter().enumerate() {
        let img = lesion_data::io::load_rgb(&o.image_path)?;
        fps.push((i, Fingerprint::of_image(&o.image_path, &img)?));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i as u64 * 7 + 3);
        for _ in 0..copies {
            let (bytes, _) = transformed_copy(&o.image_path, &img, &ranges, &mut rng)?;
            let c = image::load_from_memory(&bytes)?.to_rgb8();
            fps.push((i, Fingerprint::of_image(&o.image_path, &c)?));
        }
    }
    let mut false_whole = vec![0usize; 65];
    for x in 0..fps.len() {
        for y in x + 1..fps.len() {
            let (a, b) = (&fps[x].1, &fps[y].1);
            let w = (0..4)
                .map(|s| hamming(a.hashes[s], b.hashes[0]).min(hamming(b.hashes[s], a.hashes[0])))
                .min()
                .unwrap_or(64);
            let mut d = w;
            for s in 0..4 {
                for h in b.index_hashes() {
                    d = d.min(hamming(a.hashes[s], h));
                }
                for h in a.index_hashes() {
                    d = d.min(hamming(b.hashes[s], h));
                }
            }
            if fps[x].0 == fps[y].0 {
                whole[w as usize] += 1;
                any[d as usize] += 1;
            } else {
                false_whole[d as usize] += 1;
            }
        }
    }
    println!("d\ttrue_whole\ttrue_any\tfalse_any");
    for d in 0..=32 {
        println!("{d}\t{}\t{}\t{}", whole[d], any[d], false_whole[d]);
    }
    Ok(())
}
