//! Mask levels: which grey levels of a mask file mean "lesion", and the checks that keep a mask
//! from silently becoming empty when it is binarised.
//!
//! A mask is read as 8-bit luma. By default ([`MaskLevels::Grey`]) lesion is a grey level above
//! [`MASK_THRESHOLD`] (ISIC and PH2 masks are 0/255). Two kinds of file would binarise to an
//! empty mask although they mark a lesion, and are refused with an error naming the file and
//! what was seen:
//! * a 0/1 mask (values only 0 and 1): accepted only when asked for (`--masks-01` at import),
//!   which records [`MaskLevels::ZeroOne`] in the row's [`MASK_LEVELS_KEY`] metadata so that
//!   every later reader of the row reads 1 as lesion;
//! * a mask with no pixel above the threshold but other non-zero pixels (a pure red (255,0,0)
//!   mask has luma 76): never accepted.
//!
//! A mask with no non-zero pixel at all is a legitimate empty mask ([`MaskCheck::empty`]);
//! importers count it as a warning.

use std::path::Path;

use image::{DynamicImage, GrayImage};

use crate::error::{DataError, Result};
use crate::io::{read_bytes, MASK_OFF, MASK_ON, MASK_THRESHOLD};
use crate::manifest::ManifestRow;

/// Manifest metadata key recording a row's mask levels when they are not the default.
pub const MASK_LEVELS_KEY: &str = "mask_levels";
/// [`MASK_LEVELS_KEY`] value of a 0/1 mask.
pub const ZERO_ONE_TEXT: &str = "0/1";
/// The lesion value of a 0/1 mask.
const ZERO_ONE_LESION: u8 = 1;
/// Coloured pixels quoted in an error message, at most.
const QUOTED_PIXELS: usize = 1;

/// How a mask file's grey levels mean lesion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MaskLevels {
    /// Lesion = grey level > [`MASK_THRESHOLD`] (0/255 masks).
    #[default]
    Grey,
    /// Lesion = 1, background = 0; no other value allowed.
    ZeroOne,
}

impl MaskLevels {
    /// The levels a manifest row records (absent key: [`MaskLevels::Grey`]). An unknown value
    /// is an error naming the row's mask.
    pub fn of_row(row: &ManifestRow) -> Result<MaskLevels> {
        match row.meta_value(MASK_LEVELS_KEY) {
            None => Ok(MaskLevels::Grey),
            Some(ZERO_ONE_TEXT) => Ok(MaskLevels::ZeroOne),
            Some(other) => Err(DataError::InvalidArgument(format!(
                "manifest row {:?} (mask {}): {MASK_LEVELS_KEY} is {other:?}; expected {ZERO_ONE_TEXT:?} or empty",
                row.id,
                row.mask_path.as_deref().unwrap_or(Path::new("none")).display()
            ))),
        }
    }

    /// Records these levels in `row`'s metadata (the default is recorded as no key).
    pub fn record(self, row: &mut ManifestRow) {
        match self {
            MaskLevels::Grey => row.set_meta(MASK_LEVELS_KEY, ""),
            MaskLevels::ZeroOne => row.set_meta(MASK_LEVELS_KEY, ZERO_ONE_TEXT),
        }
    }
}

/// A checked, binarised mask.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskCheck {
    /// {[`MASK_OFF`], [`MASK_ON`]} mask of the file's size.
    pub mask: GrayImage,
    /// The levels the file was read with.
    pub levels: MaskLevels,
    /// No lesion pixel at all (a legitimate but suspicious mask).
    pub empty: bool,
}

/// Luma statistics of a mask.
struct LumaStats {
    above_threshold: usize,
    non_zero: usize,
    /// Pixels with a value other than 0 and 1.
    beyond_one: usize,
    max: u8,
}

fn luma_stats(luma: &GrayImage) -> LumaStats {
    let mut s = LumaStats { above_threshold: 0, non_zero: 0, beyond_one: 0, max: 0 };
    for &v in luma.as_raw() {
        s.above_threshold += usize::from(v > MASK_THRESHOLD);
        s.non_zero += usize::from(v != 0);
        s.beyond_one += usize::from(v > ZERO_ONE_LESION);
        s.max = s.max.max(v);
    }
    s
}

fn mask_error(path: &Path, problem: String) -> DataError {
    DataError::Decode { path: path.to_path_buf(), problem }
}

/// " (coloured pixels, e.g. RGB (255, 0, 0) at x 3, y 4)" when the file has colour, else "".
fn colour_note(img: &DynamicImage) -> String {
    if !img.color().has_color() {
        return String::new();
    }
    let rgb = img.to_rgb8();
    let quoted: Vec<String> = rgb
        .enumerate_pixels()
        .filter(|(_, _, p)| p.0 != [0, 0, 0] && !(p.0[0] == p.0[1] && p.0[1] == p.0[2]))
        .take(QUOTED_PIXELS)
        .map(|(x, y, p)| format!("RGB ({}, {}, {}) at x {x}, y {y}", p.0[0], p.0[1], p.0[2]))
        .collect();
    if quoted.is_empty() {
        String::new()
    } else {
        format!("; coloured pixels, e.g. {}", quoted.join(", "))
    }
}

/// Binarises `luma` in place: `lesion(v)` pixels become [`MASK_ON`], the others [`MASK_OFF`].
fn binarise(mut luma: GrayImage, lesion: impl Fn(u8) -> bool) -> GrayImage {
    for p in luma.pixels_mut() {
        p.0[0] = if lesion(p.0[0]) { MASK_ON } else { MASK_OFF };
    }
    luma
}

/// Checks and binarises a decoded mask. `expected`: the levels a manifest recorded
/// (`Some`), or `None` at import, where `accept_01` says whether a 0/1 mask is accepted.
fn check(
    path: &Path,
    img: &DynamicImage,
    expected: Option<MaskLevels>,
    accept_01: bool,
) -> Result<MaskCheck> {
    let luma = img.to_luma8();
    let s = luma_stats(&luma);
    if expected == Some(MaskLevels::ZeroOne) {
        if s.beyond_one > 0 {
            return Err(mask_error(
                path,
                format!(
                    "the manifest records this mask as 0/1 ({MASK_LEVELS_KEY} = {ZERO_ONE_TEXT}) but {} pixels have other grey levels (up to {}); the file changed since import: import it again",
                    s.beyond_one, s.max
                ),
            ));
        }
        let empty = s.non_zero == 0;
        let mask = binarise(luma, |v| v == ZERO_ONE_LESION);
        return Ok(MaskCheck { mask, levels: MaskLevels::ZeroOne, empty });
    }
    if s.above_threshold > 0 || s.non_zero == 0 {
        let empty = s.above_threshold == 0;
        let mask = binarise(luma, |v| v > MASK_THRESHOLD);
        return Ok(MaskCheck { mask, levels: MaskLevels::Grey, empty });
    }
    // No lesion pixel, yet non-zero pixels: binarising would silently empty the mask.
    if s.beyond_one == 0 {
        if accept_01 && expected.is_none() {
            let mask = binarise(luma, |v| v == ZERO_ONE_LESION);
            return Ok(MaskCheck { mask, levels: MaskLevels::ZeroOne, empty: false });
        }
        return Err(mask_error(
            path,
            format!(
                "mask values are only 0 and 1 ({} pixels are 1): read as lesion > {MASK_THRESHOLD} it would be empty; if 1 means lesion, import with --masks-01",
                s.non_zero
            ),
        ));
    }
    Err(mask_error(
        path,
        format!(
            "no pixel is above the lesion threshold {MASK_THRESHOLD} but {} pixels are non-zero (grey levels up to {}{}): the mask would be empty; save lesion pixels as white (255) on black",
            s.non_zero,
            s.max,
            colour_note(img)
        ),
    ))
}

/// Import: checks a decoded mask, detecting its levels (a 0/1 mask only when `accept_01`).
pub fn check_imported(path: &Path, img: &DynamicImage, accept_01: bool) -> Result<MaskCheck> {
    check(path, img, None, accept_01)
}

/// Checks and binarises a decoded mask read with known `levels`.
pub fn binarise_as(path: &Path, img: &DynamicImage, levels: MaskLevels) -> Result<GrayImage> {
    Ok(check(path, img, Some(levels), false)?.mask)
}

/// Loads a mask file read with `levels`, binarised to {0, 255}; masks that would silently
/// become empty are errors (see the module notes).
pub fn load_mask_as(path: &Path, levels: MaskLevels) -> Result<GrayImage> {
    let bytes = read_bytes(path)?;
    binarise_as(path, &crate::io::decode_bytes(path, &bytes)?, levels)
}

/// The mask of a manifest row (read with the levels the row records), `None` without one.
pub fn load_row_mask(row: &ManifestRow) -> Result<Option<GrayImage>> {
    match &row.mask_path {
        Some(m) => Ok(Some(load_mask_as(m, MaskLevels::of_row(row)?)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb, RgbImage};

    fn grey(values: &[u8]) -> DynamicImage {
        DynamicImage::ImageLuma8(GrayImage::from_fn(values.len() as u32, 1, |x, _| {
            Luma([values[x as usize]])
        }))
    }

    #[test]
    fn grey_masks_binarise_and_empty_is_flagged() {
        let c = check_imported(Path::new("m.png"), &grey(&[0, 127, 128, 255]), false).unwrap();
        assert_eq!(c.mask.as_raw(), &vec![0, 0, 255, 255]);
        assert_eq!((c.levels, c.empty), (MaskLevels::Grey, false));
        let c = check_imported(Path::new("m.png"), &grey(&[0, 0]), false).unwrap();
        assert!(c.empty);
    }

    #[test]
    fn red_mask_is_refused_with_what_was_seen() {
        let red = DynamicImage::ImageRgb8(RgbImage::from_fn(4, 4, |x, _| {
            Rgb(if x < 2 { [255, 0, 0] } else { [0, 0, 0] })
        }));
        let e = check_imported(Path::new("red_mask.png"), &red, true).unwrap_err().to_string();
        assert!(e.starts_with("red_mask.png: "), "{e}");
        assert!(e.contains("RGB (255, 0, 0)") && e.contains("8 pixels are non-zero"), "{e}");
    }

    #[test]
    fn zero_one_mask_needs_the_option_and_is_then_read_as_lesion() {
        let e = check_imported(Path::new("m01.png"), &grey(&[0, 1, 1]), false).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("m01.png") && e.contains("only 0 and 1") && e.contains("--masks-01"));
        let c = check_imported(Path::new("m01.png"), &grey(&[0, 1, 1]), true).unwrap();
        assert_eq!(c.mask.as_raw(), &vec![0, 255, 255]);
        assert_eq!(c.levels, MaskLevels::ZeroOne);
        // A 0/255 mask stays a grey mask with the option.
        assert_eq!(
            check_imported(Path::new("m.png"), &grey(&[0, 255]), true).unwrap().levels,
            MaskLevels::Grey
        );
        // Read back as 0/1; a file that is no longer 0/1 is refused.
        let m = binarise_as(Path::new("m01.png"), &grey(&[1, 0]), MaskLevels::ZeroOne).unwrap();
        assert_eq!(m.as_raw(), &vec![255, 0]);
        let e = binarise_as(Path::new("m01.png"), &grey(&[255, 0]), MaskLevels::ZeroOne);
        assert!(e.unwrap_err().to_string().contains("import it again"));
        // A 0/1 file read as grey (a manifest without the record) is refused, not emptied.
        assert!(binarise_as(Path::new("m01.png"), &grey(&[1, 0]), MaskLevels::Grey).is_err());
    }

    #[test]
    fn levels_round_trip_through_row_metadata() {
        let mut row = ManifestRow {
            id: "a".into(),
            source: "folder".into(),
            image_path: "a.png".into(),
            mask_path: Some("a_mask.png".into()),
            width: 1,
            height: 1,
            content_hash: String::new(),
            diagnosis: None,
            group: None,
            meta: Default::default(),
        };
        assert_eq!(MaskLevels::of_row(&row).unwrap(), MaskLevels::Grey);
        MaskLevels::ZeroOne.record(&mut row);
        assert_eq!(MaskLevels::of_row(&row).unwrap(), MaskLevels::ZeroOne);
        MaskLevels::Grey.record(&mut row);
        assert!(row.meta.is_empty());
        row.set_meta(MASK_LEVELS_KEY, "2");
        assert!(MaskLevels::of_row(&row).is_err());
    }
}
