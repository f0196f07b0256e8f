//! Image fingerprints: a small grey thumbnail (for confirmation) and 64-bit DCT perceptual
//! hashes of it under the eight symmetries of the square (for candidate search).
//!
//! The thumbnail is the whole image resized (aspect not kept) to [`THUMB`]×[`THUMB`] with an
//! area-averaging filter, so it does not depend on the image's resolution; the hash keeps the
//! signs of the [`HASH_SIDE`]×[`HASH_SIDE`] lowest DCT frequencies relative to their median
//! (DC excluded), so additive brightness shifts and contrast gains do not change it.

use image::{GrayImage, RgbImage};
use lesion_data::cache::{resize_rgb, ResizeMethod};

use crate::error::Result;

/// Side of the stored thumbnail, pixels.
pub const THUMB: usize = 64;
/// Side of the image the DCT is taken of (the thumbnail averaged 2×2).
const DCT_SIDE: usize = 32;
/// Side of the block of low DCT frequencies kept.
const HASH_SIDE: usize = 8;
/// Number of symmetries of the square (identity, flips, rotations by 90°).
pub const N_VARIANTS: usize = 8;

/// One of the eight symmetries of the square, applied to an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Symmetry {
    Identity,
    FlipH,
    FlipV,
    Rot180,
    Transpose,
    Rot90,
    Rot270,
    AntiTranspose,
}

impl Symmetry {
    /// All eight, identity first; the first four are the flips only.
    pub const ALL: [Symmetry; N_VARIANTS] = [
        Symmetry::Identity,
        Symmetry::FlipH,
        Symmetry::FlipV,
        Symmetry::Rot180,
        Symmetry::Transpose,
        Symmetry::Rot90,
        Symmetry::Rot270,
        Symmetry::AntiTranspose,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Symmetry::Identity => "identity",
            Symmetry::FlipH => "flip_h",
            Symmetry::FlipV => "flip_v",
            Symmetry::Rot180 => "rot180",
            Symmetry::Transpose => "transpose",
            Symmetry::Rot90 => "rot90",
            Symmetry::Rot270 => "rot270",
            Symmetry::AntiTranspose => "anti_transpose",
        }
    }

    /// Source pixel (x, y) read for destination (x, y) in an n×n square.
    fn source(self, x: usize, y: usize, n: usize) -> (usize, usize) {
        let m = n - 1;
        match self {
            Symmetry::Identity => (x, y),
            Symmetry::FlipH => (m - x, y),
            Symmetry::FlipV => (x, m - y),
            Symmetry::Rot180 => (m - x, m - y),
            Symmetry::Transpose => (y, x),
            Symmetry::Rot90 => (y, m - x),
            Symmetry::Rot270 => (m - y, x),
            Symmetry::AntiTranspose => (m - y, m - x),
        }
    }

    /// Applies the symmetry to an n×n row-major square.
    pub fn apply<T: Copy>(self, src: &[T], n: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(n * n);
        for y in 0..n {
            for x in 0..n {
                let (sx, sy) = self.source(x, y, n);
                out.push(src[sy * n + sx]);
            }
        }
        out
    }
}

/// Which symmetries a search considers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SymmetryMode {
    /// Identity only.
    None,
    /// Identity and the horizontal, vertical and double flips (the default).
    #[default]
    Flips,
    /// All eight (flips and 90° rotations).
    Dihedral,
}

impl std::str::FromStr for SymmetryMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(SymmetryMode::None),
            "flips" => Ok(SymmetryMode::Flips),
            "dihedral" => Ok(SymmetryMode::Dihedral),
            other => Err(format!("unknown symmetry {other:?}: expected none, flips or dihedral")),
        }
    }
}

impl SymmetryMode {
    pub fn symmetries(self) -> &'static [Symmetry] {
        match self {
            SymmetryMode::None => &Symmetry::ALL[..1],
            SymmetryMode::Flips => &Symmetry::ALL[..4],
            SymmetryMode::Dihedral => &Symmetry::ALL,
        }
    }
}

/// Sub-windows of an image whose hashes are indexed besides the whole image's, so that a
/// copy cropped by up to about 10 % lands near one of them: (x, y, side) in fractions.
pub const INDEX_WINDOWS: [(f32, f32, f32); 9] = [
    (0.0, 0.0, 0.9),
    (0.1, 0.0, 0.9),
    (0.0, 0.1, 0.9),
    (0.1, 0.1, 0.9),
    (0.05, 0.05, 0.9),
    (0.025, 0.025, 0.95),
    (0.0, 0.0, 0.95),
    (0.05, 0.05, 0.95),
    (0.05, 0.0, 0.95),
];

/// Fingerprint of one image. Invariant: `thumb.len() == THUMB * THUMB`; `hashes[i]` is the
/// perceptual hash of the thumbnail under `Symmetry::ALL[i]`; `window_hashes[k]` is the hash
/// of the (unflipped) sub-window `INDEX_WINDOWS[k]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub thumb: Vec<u8>,
    pub hashes: [u64; N_VARIANTS],
    pub window_hashes: [u64; INDEX_WINDOWS.len()],
}

impl Fingerprint {
    /// Fingerprint of a decoded image; `path` names it in errors.
    pub fn of_image(path: &std::path::Path, img: &RgbImage) -> Result<Fingerprint> {
        let small = resize_rgb(path, img, THUMB as u32, ResizeMethod::Bilinear)?;
        let grey = image::DynamicImage::ImageRgb8(small).to_luma8();
        Ok(Fingerprint::of_thumb(grey.into_raw()))
    }

    /// Fingerprint of a THUMB×THUMB grey thumbnail.
    pub fn of_thumb(thumb: Vec<u8>) -> Fingerprint {
        let half = halve(&thumb);
        let mut hashes = [0u64; N_VARIANTS];
        for (h, s) in hashes.iter_mut().zip(Symmetry::ALL) {
            *h = dct_hash(&s.apply(&half, DCT_SIDE));
        }
        let mut window_hashes = [0u64; INDEX_WINDOWS.len()];
        for (h, &(x, y, side)) in window_hashes.iter_mut().zip(INDEX_WINDOWS.iter()) {
            *h = dct_hash(&resample(&thumb, x, y, side));
        }
        Fingerprint { thumb, hashes, window_hashes }
    }

    /// Every hash indexed for this image: the whole image's, then its windows'.
    pub fn index_hashes(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.hashes[0]).chain(self.window_hashes.iter().copied())
    }

    /// The identity hash (the one indexed).
    pub fn hash(&self) -> u64 {
        self.hashes[0]
    }

    /// The thumbnail as an image.
    pub fn thumb_image(&self) -> Option<GrayImage> {
        GrayImage::from_raw(THUMB as u32, THUMB as u32, self.thumb.clone())
    }
}

/// THUMB×THUMB u8 -> DCT_SIDE×DCT_SIDE f32 by 2×2 averaging.
fn halve(thumb: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; DCT_SIDE * DCT_SIDE];
    for y in 0..DCT_SIDE {
        for x in 0..DCT_SIDE {
            let p = |dx: usize, dy: usize| f32::from(thumb[(2 * y + dy) * THUMB + 2 * x + dx]);
            out[y * DCT_SIDE + x] = (p(0, 0) + p(1, 0) + p(0, 1) + p(1, 1)) * 0.25;
        }
    }
    out
}

/// The square window (x, y, side) of a THUMB×THUMB thumbnail, resampled bilinearly to
/// DCT_SIDE×DCT_SIDE with a 2×2 box prefilter (each output averages 4 bilinear taps).
fn resample(thumb: &[u8], x: f32, y: f32, side: f32) -> Vec<f32> {
    let n = THUMB as f32;
    let at = |fx: f32, fy: f32| -> f32 {
        let fx = fx.clamp(0.0, n - 1.0);
        let fy = fy.clamp(0.0, n - 1.0);
        let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(THUMB - 1), (y0 + 1).min(THUMB - 1));
        let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
        let p = |xx: usize, yy: usize| f32::from(thumb[yy * THUMB + xx]);
        (p(x0, y0) * (1.0 - tx) + p(x1, y0) * tx) * (1.0 - ty)
            + (p(x0, y1) * (1.0 - tx) + p(x1, y1) * tx) * ty
    };
    let step = side * n / (2 * DCT_SIDE) as f32;
    let mut out = Vec::with_capacity(DCT_SIDE * DCT_SIDE);
    for j in 0..DCT_SIDE {
        for i in 0..DCT_SIDE {
            let cx = x * n + (2 * i) as f32 * step - 0.5;
            let cy = y * n + (2 * j) as f32 * step - 0.5;
            out.push(
                (at(cx + 0.5 * step, cy + 0.5 * step)
                    + at(cx + 1.5 * step, cy + 0.5 * step)
                    + at(cx + 0.5 * step, cy + 1.5 * step)
                    + at(cx + 1.5 * step, cy + 1.5 * step))
                    * 0.25,
            );
        }
    }
    out
}

/// DCT-II basis rows for frequencies 0..HASH_SIDE over DCT_SIDE samples.
fn basis() -> &'static [[f32; DCT_SIDE]; HASH_SIDE] {
    static BASIS: std::sync::OnceLock<[[f32; DCT_SIDE]; HASH_SIDE]> = std::sync::OnceLock::new();
    BASIS.get_or_init(|| {
        let mut b = [[0f32; DCT_SIDE]; HASH_SIDE];
        for (u, row) in b.iter_mut().enumerate() {
            for (x, v) in row.iter_mut().enumerate() {
                *v = (std::f32::consts::PI * (2 * x + 1) as f32 * u as f32 / (2 * DCT_SIDE) as f32)
                    .cos();
            }
        }
        b
    })
}

/// 64-bit hash: bit k (k ≥ 1) is set when low-frequency DCT coefficient k (row-major over the
/// HASH_SIDE×HASH_SIDE block) is above the median of the 63 AC coefficients. Bit 0 (the DC
/// term) is always 0.
fn dct_hash(img: &[f32]) -> u64 {
    let b = basis();
    // Separable DCT: rows first (HASH_SIDE freqs per row), then columns.
    let mut rows = vec![[0f32; HASH_SIDE]; DCT_SIDE];
    for (y, r) in rows.iter_mut().enumerate() {
        let line = &img[y * DCT_SIDE..(y + 1) * DCT_SIDE];
        for (u, out) in r.iter_mut().enumerate() {
            *out = line.iter().zip(b[u].iter()).map(|(a, c)| a * c).sum();
        }
    }
    let mut coeffs = [0f32; HASH_SIDE * HASH_SIDE];
    for v in 0..HASH_SIDE {
        for u in 0..HASH_SIDE {
            coeffs[v * HASH_SIDE + u] = (0..DCT_SIDE).map(|y| rows[y][u] * b[v][y]).sum();
        }
    }
    let mut ac: Vec<f32> = coeffs[1..].to_vec();
    ac.sort_by(|a, c| a.total_cmp(c));
    let median = ac[ac.len() / 2];
    let mut h = 0u64;
    for (k, c) in coeffs.iter().enumerate().skip(1) {
        if *c > median {
            h |= 1 << k;
        }
    }
    h
}

/// Hamming distance of two hashes.
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(seed: u32) -> Vec<u8> {
        (0..THUMB * THUMB)
            .map(|i| {
                let (x, y) = ((i % THUMB) as u32, (i / THUMB) as u32);
                ((x * (3 + seed) + y * y * (1 + seed) / 7 + (x * y) / (2 + seed)) % 256) as u8
            })
            .collect()
    }

    #[test]
    fn symmetries_compose_and_hashes_follow() {
        let t = pattern(1);
        let f = Fingerprint::of_thumb(t.clone());
        for (i, s) in Symmetry::ALL.iter().enumerate() {
            let g = Fingerprint::of_thumb(s.apply(&t, THUMB));
            assert_eq!(g.hash(), f.hashes[i], "{s:?}");
        }
        // rot90 four times is identity
        let mut r = t.clone();
        for _ in 0..4 {
            r = Symmetry::Rot90.apply(&r, THUMB);
        }
        assert_eq!(r, t);
    }

    #[test]
    fn brightness_gain_and_offset_keep_hash_close() {
        let t = pattern(2);
        let f = Fingerprint::of_thumb(t.clone());
        let b: Vec<u8> = t.iter().map(|&v| (f32::from(v) * 0.9 + 10.0).min(255.0) as u8).collect();
        assert!(hamming(f.hash(), Fingerprint::of_thumb(b).hash()) <= 4);
        let other = Fingerprint::of_thumb(pattern(5));
        assert!(hamming(f.hash(), other.hash()) > 10);
    }
}
