//! The second, stronger check of a candidate pair: normalised cross-correlation of the two
//! thumbnails' detail (thumbnail minus its local mean), maximised over crops of either image.
//!
//! Invariant: the score is in [-1, 1], symmetric up to the crop search, and invariant to
//! brightness gain and offset (the detail is zero-mean and the correlation normalised).
//! A crop of up to [`MAX_CROP`] of each side's extent, at any position, is searched: first on
//! a coarse grid of [`COARSE_STEP`], then refined around the best window by [`FINE_STEP`].

use crate::fingerprint::{Fingerprint, Symmetry, THUMB};

/// Largest crop searched, as a fraction of width/height removed.
pub const MAX_CROP: f32 = 0.15;
/// Grid step of the coarse window search (fraction of the image side).
const COARSE_STEP: f32 = 0.05;
/// Step of the refinement around the best coarse window.
const FINE_STEP: f32 = 0.025;
/// Coarse scores below this are not refined (refinement adds well under 0.1 in practice).
const REFINE_MIN: f32 = 0.6;
/// Side of the sampling grid the correlation is computed on.
const GRID: usize = 32;
/// Radius of the box filter whose output is subtracted to get the detail (band-pass top).
const DETAIL_RADIUS: usize = 5;
/// Detail values are clipped at this multiple of the mean absolute detail.
const CLIP_FACTOR: f32 = 1.5;
/// Radius of the box filter smoothing the detail (band-pass bottom), against misalignment.
const SMOOTH_RADIUS: usize = 1;

/// A window of an image in fractions of its width and height. Invariant: all in [0, 1],
/// `x + w <= 1`, `y + h <= 1`, `w, h > 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl Window {
    pub const FULL: Window = Window { x: 0.0, y: 0.0, w: 1.0, h: 1.0 };
}

/// Result of confirming a pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Confirmation {
    /// Best normalised cross-correlation found.
    pub score: f32,
    /// Symmetry applied to the second image.
    pub symmetry: Symmetry,
}

/// Thumbnail detail: lightly smoothed value minus its local mean (a band-pass), as f32.
pub fn detail(thumb: &[u8]) -> Vec<f32> {
    let v: Vec<f32> = thumb.iter().map(|&p| f32::from(p)).collect();
    let smooth = box_filter(&v, SMOOTH_RADIUS);
    let mean = box_filter(&v, DETAIL_RADIUS);
    let d: Vec<f32> = smooth.iter().zip(&mean).map(|(a, b)| a - b).collect();
    // Strong edges (a dermoscope's dark vignette, rulers) would dominate the correlation and
    // make different images alike: clip the detail at a multiple of its mean magnitude.
    let limit = CLIP_FACTOR * d.iter().map(|v| v.abs()).sum::<f32>() / d.len() as f32;
    d.into_iter().map(|v| v.clamp(-limit, limit)).collect()
}

/// Mean over a (2r+1)² box, clipped at the borders.
fn box_filter(v: &[f32], radius: usize) -> Vec<f32> {
    let n = THUMB;
    let r = radius as isize;
    let mut out = vec![0f32; n * n];
    for y in 0..n as isize {
        for x in 0..n as isize {
            let mut sum = 0f32;
            let mut cnt = 0f32;
            for dy in -r..=r {
                for dx in -r..=r {
                    let (xx, yy) = (x + dx, y + dy);
                    if xx >= 0 && yy >= 0 && xx < n as isize && yy < n as isize {
                        sum += v[yy as usize * n + xx as usize];
                        cnt += 1.0;
                    }
                }
            }
            out[y as usize * n + x as usize] = sum / cnt;
        }
    }
    out
}

/// Samples `img` (THUMB×THUMB) bilinearly on a GRID×GRID grid over `win`, zero-mean, unit norm.
fn sample(img: &[f32], win: Window) -> Vec<f32> {
    let n = THUMB as f32;
    let mut out = Vec::with_capacity(GRID * GRID);
    for gy in 0..GRID {
        let fy = (win.y + win.h * (gy as f32 + 0.5) / GRID as f32) * n - 0.5;
        let y0 = fy.floor().clamp(0.0, n - 1.0);
        let ty = (fy - y0).clamp(0.0, 1.0);
        let y0 = y0 as usize;
        let y1 = (y0 + 1).min(THUMB - 1);
        for gx in 0..GRID {
            let fx = (win.x + win.w * (gx as f32 + 0.5) / GRID as f32) * n - 0.5;
            let x0 = fx.floor().clamp(0.0, n - 1.0);
            let tx = (fx - x0).clamp(0.0, 1.0);
            let x0 = x0 as usize;
            let x1 = (x0 + 1).min(THUMB - 1);
            let a = img[y0 * THUMB + x0] * (1.0 - tx) + img[y0 * THUMB + x1] * tx;
            let b = img[y1 * THUMB + x0] * (1.0 - tx) + img[y1 * THUMB + x1] * tx;
            out.push(a * (1.0 - ty) + b * ty);
        }
    }
    normalise(&mut out);
    out
}

fn normalise(v: &mut [f32]) {
    let mean = v.iter().sum::<f32>() / v.len() as f32;
    v.iter_mut().for_each(|x| *x -= mean);
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > f32::EPSILON {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Windows on a grid: sizes 1 - k·step down to 1 - MAX_CROP, positions every `step`.
fn windows_around(centre: Window, step: f32, span: usize) -> Vec<Window> {
    let mut out = Vec::new();
    let offsets: Vec<f32> = (-(span as i32)..=span as i32).map(|k| k as f32 * step).collect();
    let min_side = 1.0 - MAX_CROP - 1e-4;
    for dw in &offsets {
        for dh in &offsets {
            let (w, h) = (centre.w + dw, centre.h + dh);
            if w < min_side || h < min_side || w > 1.0 + 1e-4 || h > 1.0 + 1e-4 {
                continue;
            }
            for dx in &offsets {
                for dy in &offsets {
                    let (x, y) = (centre.x + dx, centre.y + dy);
                    if x < -1e-4 || y < -1e-4 || x + w > 1.0 + 1e-4 || y + h > 1.0 + 1e-4 {
                        continue;
                    }
                    out.push(Window { x: x.max(0.0), y: y.max(0.0), w: w.min(1.0), h: h.min(1.0) });
                }
            }
        }
    }
    out
}

/// Best correlation of `small` (whole) against the coarse grid of windows of `big`.
fn coarse_window(big: &[f32], small_full: &[f32]) -> (f32, Window) {
    let steps = (MAX_CROP / COARSE_STEP).round() as usize;
    let mut best = (f32::MIN, Window::FULL);
    for w in windows_around(Window::FULL, COARSE_STEP, steps) {
        let s = dot(&sample(big, w), small_full);
        if s > best.0 {
            best = (s, w);
        }
    }
    best
}

/// Refines a coarse window by FINE_STEP, then FINE_STEP / 2.
fn refine_window(big: &[f32], small_full: &[f32], mut best: (f32, Window)) -> (f32, Window) {
    for step in [FINE_STEP, FINE_STEP / 2.0] {
        let centre = best.1;
        for w in windows_around(centre, step, 1) {
            let s = dot(&sample(big, w), small_full);
            if s > best.0 {
                best = (s, w);
            }
        }
    }
    best
}

/// Precomputed detail of a fingerprint, for repeated confirmations.
#[derive(Debug, Clone)]
pub struct Detail {
    pub values: Vec<f32>,
}

impl Detail {
    pub fn of(fp: &Fingerprint) -> Detail {
        Detail { values: detail(&fp.thumb) }
    }
}

/// Confirms a pair under one symmetry of `b`: the best correlation of either image against
/// crops of the other.
pub fn confirm(a: &Detail, b: &Detail, symmetry: Symmetry) -> Confirmation {
    let b_sym = symmetry.apply(&b.values, THUMB);
    let a_full = sample(&a.values, Window::FULL);
    let b_full = sample(&b_sym, Window::FULL);
    let c1 = coarse_window(&a.values, &b_full);
    let c2 = coarse_window(&b_sym, &a_full);
    // Refine only the better direction, and only when it could still reach a threshold.
    let (big, small, coarse) =
        if c1.0 >= c2.0 { (&a.values, &b_full, c1) } else { (&b_sym, &a_full, c2) };
    if coarse.0 < REFINE_MIN {
        return Confirmation { score: coarse.0, symmetry };
    }
    let (score, _) = refine_window(big, small, coarse);
    Confirmation { score, symmetry }
}

/// The best confirmation over `symmetries`.
pub fn confirm_best(a: &Detail, b: &Detail, symmetries: &[Symmetry]) -> Confirmation {
    symmetries.iter().map(|&s| confirm(a, b, s)).fold(
        Confirmation { score: f32::MIN, symmetry: Symmetry::Identity },
        |acc, c| {
            if c.score > acc.score {
                c
            } else {
                acc
            }
        },
    )
}

/// Correlation of the whole images under one symmetry of `b` (no crop search).
pub fn quick_score(a: &Detail, b: &Detail, symmetry: Symmetry) -> f32 {
    let b_sym = symmetry.apply(&b.values, THUMB);
    dot(&sample(&a.values, Window::FULL), &sample(&b_sym, Window::FULL))
}
