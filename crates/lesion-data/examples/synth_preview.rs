//! Writes a contact sheet of synthetic samples (image above mask) and times rendering.
//! `cargo run --release -p lesion-data --example synth_preview -- OUT.png`
use image::{GenericImage, RgbImage};
use lesion_data::synth::{render, SynthConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "synth_preview.png".into());
    let cfg = SynthConfig { count: 100, width: 256, height: 256, seed: 1 };
    let t = std::time::Instant::now();
    let samples: Vec<_> = (0..cfg.count).map(|i| render(&cfg, i)).collect();
    println!("rendered {} in {:?}", samples.len(), t.elapsed());
    let cols = 6u32;
    let mut sheet = RgbImage::new(cols * 256, 2 * 256);
    for (i, s) in samples.iter().take(cols as usize).enumerate() {
        sheet.copy_from(&s.image, i as u32 * 256, 0)?;
        let m = image::DynamicImage::ImageLuma8(s.mask.clone()).to_rgb8();
        sheet.copy_from(&m, i as u32 * 256, 256)?;
        println!("{} {}", s.id, s.diagnosis);
    }
    sheet.save(out)?;
    Ok(())
}
