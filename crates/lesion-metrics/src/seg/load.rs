//! Loading a mask the way the official scorer does (`load_segmentation_image`).
//!
//! The scorer opens images with Pillow, converts mode `1` (1-bit) to `L` and
//! rejects every other mode that is not `L`. The `image` crate expands
//! palettes and transparency while decoding, so the Pillow mode is decided
//! from the file header instead of the decoded colour type:
//!
//! * PNG: greyscale colour type (0) with bit depth 1 (mode `1`) or 2/4/8
//!   (mode `L`, low depths scaled to 0..=255) is accepted, with or without a
//!   `tRNS` chunk. Palette PNGs are mode `P` in Pillow and rejected, even if
//!   the palette is grey; 16-bit greyscale (`I;16`) is rejected.
//! * BMP: Pillow reads a 1/4/8-bit palette BMP as `1`/`L` when its palette
//!   is the identity grey ramp (for 2 colours: black then white); otherwise
//!   `P`. The same test is applied to the palette here.
//! * Anything else (JPEG, ...): accepted only if it decodes as 8-bit luma.

use std::path::Path;

use image::{DynamicImage, ImageFormat};

use crate::MetricsError;

/// PNG colour type for greyscale without alpha (PNG spec, IHDR).
const PNG_COLOR_TYPE_GREY: u8 = 0;
/// Byte offsets of bit depth and colour type in a PNG file (signature + IHDR header).
const PNG_BIT_DEPTH_OFFSET: usize = 24;
const PNG_COLOR_TYPE_OFFSET: usize = 25;
/// Greyscale PNG bit depths that Pillow opens as `1` or `L`.
const PNG_GREY_DEPTHS: [u8; 4] = [1, 2, 4, 8];

/// BMP file header size; the DIB header follows it.
const BMP_FILE_HEADER_LEN: usize = 14;
/// DIB header size of the old OS/2 `BITMAPCOREHEADER` (3-byte palette entries).
const BMP_CORE_HEADER_LEN: usize = 12;
/// Offsets of bits-per-pixel in the core header and in `BITMAPINFOHEADER`+.
const BMP_CORE_BPP_OFFSET: usize = 24;
const BMP_INFO_BPP_OFFSET: usize = 28;
/// Offset of `biClrUsed` in `BITMAPINFOHEADER`+.
const BMP_INFO_COLORS_USED_OFFSET: usize = 46;
/// Palette bit depths Pillow may read as greyscale.
const BMP_PALETTE_DEPTHS: [u16; 3] = [1, 4, 8];

/// A decoded mask: row-major 8-bit grey values, `pixels.len() == width * height`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreyMask {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// Whether Pillow would open the file as a single-channel image (`L` or `1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PilGrey {
    /// Header says greyscale: take the luma (or first) channel of the decoded image.
    Yes,
    /// Header says not greyscale.
    No,
    /// Format without a header rule: judge by the decoded colour type.
    Unknown,
}

/// Reads `path` as the official scorer does and returns its grey values.
///
/// Errors name `path`: unreadable file, undecodable image, or an image that
/// is not single-channel greyscale.
pub fn load_mask(path: &Path) -> Result<GreyMask, MetricsError> {
    let bytes = std::fs::read(path)
        .map_err(|source| MetricsError::Io { path: path.to_path_buf(), source })?;
    let format = image::guess_format(&bytes)
        .map_err(|source| MetricsError::Decode { path: path.to_path_buf(), source })?;
    let decoded = image::load_from_memory_with_format(&bytes, format)
        .map_err(|source| MetricsError::Decode { path: path.to_path_buf(), source })?;
    let hint = match format {
        ImageFormat::Png => png_hint(&bytes),
        ImageFormat::Bmp => bmp_hint(&bytes),
        _ => PilGrey::Unknown,
    };
    let not_grey = |decoded: &DynamicImage| MetricsError::NotSingleChannel {
        path: path.to_path_buf(),
        color: format!("{:?} ({:?})", decoded.color(), format),
    };
    let (width, height) = (decoded.width(), decoded.height());
    let pixels = match (hint, &decoded) {
        (PilGrey::No, _) => return Err(not_grey(&decoded)),
        (_, DynamicImage::ImageLuma8(buf)) => buf.as_raw().clone(),
        (PilGrey::Yes, DynamicImage::ImageLumaA8(buf)) => first_channel(buf.as_raw(), 2),
        (PilGrey::Yes, DynamicImage::ImageRgb8(buf)) => first_channel(buf.as_raw(), 3),
        (PilGrey::Yes, DynamicImage::ImageRgba8(buf)) => first_channel(buf.as_raw(), 4),
        _ => return Err(not_grey(&decoded)),
    };
    Ok(GreyMask { width, height, pixels })
}

fn first_channel(raw: &[u8], channels: usize) -> Vec<u8> {
    raw.iter().step_by(channels).copied().collect()
}

fn png_hint(bytes: &[u8]) -> PilGrey {
    match (bytes.get(PNG_BIT_DEPTH_OFFSET), bytes.get(PNG_COLOR_TYPE_OFFSET)) {
        (Some(depth), Some(&PNG_COLOR_TYPE_GREY)) if PNG_GREY_DEPTHS.contains(depth) => {
            PilGrey::Yes
        }
        (Some(_), Some(_)) => PilGrey::No,
        _ => PilGrey::Unknown,
    }
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at + 2)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn bmp_hint(bytes: &[u8]) -> PilGrey {
    bmp_palette_is_grey(bytes).map_or(PilGrey::Unknown, |grey| {
        if grey {
            PilGrey::Yes
        } else {
            PilGrey::No
        }
    })
}

/// `Some(true)` when Pillow would open this BMP as mode `1` or `L`,
/// `Some(false)` when as `P`/`RGB`/..., `None` when the header is unreadable.
fn bmp_palette_is_grey(bytes: &[u8]) -> Option<bool> {
    let dib_len = read_u32(bytes, BMP_FILE_HEADER_LEN)? as usize;
    let (bpp, entry_len, colors_used) = if dib_len == BMP_CORE_HEADER_LEN {
        (read_u16(bytes, BMP_CORE_BPP_OFFSET)?, 3usize, 0u32)
    } else {
        (
            read_u16(bytes, BMP_INFO_BPP_OFFSET)?,
            4usize,
            read_u32(bytes, BMP_INFO_COLORS_USED_OFFSET)?,
        )
    };
    if !BMP_PALETTE_DEPTHS.contains(&bpp) {
        return Some(false);
    }
    let colors = if colors_used == 0 { 1usize << bpp } else { colors_used as usize };
    let palette_start = BMP_FILE_HEADER_LEN + dib_len;
    let expected: Vec<u8> = if colors == 2 {
        vec![0, u8::MAX]
    } else {
        (0..colors).map(|i| i.min(usize::from(u8::MAX)) as u8).collect()
    };
    for (index, value) in expected.iter().enumerate() {
        let at = palette_start + index * entry_len;
        let entry = bytes.get(at..at + 3)?;
        if entry.iter().any(|c| c != value) {
            return Some(false);
        }
    }
    Some(true)
}
