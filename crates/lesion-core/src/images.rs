//! Image memory layout shared by both tasks' datasets.
use image::RgbImage;

/// HWC interleaved RGB → planar CHW bytes (the layout of a `3×H×W` tensor).
pub fn rgb_to_chw(img: &RgbImage) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0u8; 3 * plane];
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        out[i] = px[0];
        out[plane + i] = px[1];
        out[2 * plane + i] = px[2];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chw_layout() {
        let img = RgbImage::from_fn(2, 1, |x, _| image::Rgb([x as u8, 10 + x as u8, 20 + x as u8]));
        assert_eq!(rgb_to_chw(&img), vec![0, 1, 10, 11, 20, 21]);
    }
}
