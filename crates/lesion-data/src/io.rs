//! File I/O: atomic writes, image/mask loading with clear errors, content hashing.

use std::fs::{self, File};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::error::LimitErrorKind;
use image::{DynamicImage, GrayImage, ImageError, ImageFormat, ImageReader, Limits, RgbImage};

use crate::error::{DataError, Result};

/// Mask pixels strictly above this grey level are lesion (255); the rest background (0).
pub const MASK_THRESHOLD: u8 = 127;
/// Value of a lesion pixel in a binarised mask.
pub const MASK_ON: u8 = 255;
/// Value of a background pixel in a binarised mask.
pub const MASK_OFF: u8 = 0;

/// Environment variable setting the memory one image may take while decoding, in MiB.
pub const IMAGE_MEMORY_ENV: &str = "LESION_IMAGE_MEMORY_MIB";
/// Default of [`IMAGE_MEMORY_ENV`]: the image crate's own default limit.
pub const DEFAULT_IMAGE_MEMORY_MIB: u64 = 512;
const MIB: u64 = 1024 * 1024;
/// Bytes per pixel assumed when suggesting a memory limit (RGBA, 8 bits per channel).
const SUGGESTED_BYTES_PER_PIXEL: u64 = 4;

/// Marker inside temporary file names; files containing it are never read as data.
pub const TMP_MARKER: &str = ".tmp-";

/// JPEG marker bytes: every marker starts with 0xFF; entropy-coded data stuffs 0xFF as 0xFF 0x00,
/// so SOS/EOI byte pairs appear only as real markers (or inside metadata segments before the scan).
const JPEG_MARKER_PREFIX: u8 = 0xFF;
const JPEG_SOS: u8 = 0xDA;
const JPEG_EOI: u8 = 0xD9;

/// Makes temporary names unique among threads of this process (the pid separates processes).
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The folder a file lives in ("." for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A fresh temporary path in the same folder as `path` (so that `rename` stays on one
/// file system and is atomic). Hidden (leading dot) and marked with [`TMP_MARKER`].
fn temp_path_for(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| DataError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
    })?;
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp_name = format!(".{}{}{}-{}", name.to_string_lossy(), TMP_MARKER, std::process::id(), n);
    Ok(parent_dir(path).join(tmp_name))
}

/// Symbolic links followed at most this many times before a path is refused (Linux's own
/// `ELOOP` limit), so that a link cycle ends in an error instead of a hang.
const MAX_LINK_HOPS: usize = 40;

/// Where a write to a path given by the user goes, once links are followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteTarget {
    /// A regular file or a path that does not exist yet (symbolic links already followed):
    /// replaced atomically by a temporary file renamed over it. The links themselves stay.
    Replace(PathBuf),
    /// A character device or a pipe (`/dev/null`, `/dev/stdout`, a FIFO): written through in
    /// order, never renamed over (that would turn `/dev/null` into a regular file).
    Stream(PathBuf),
}

fn write_refused(path: &Path, problem: String) -> DataError {
    DataError::Write { path: path.to_path_buf(), source: std::io::Error::other(problem) }
}

/// Classifies `path` for writing: symbolic links are followed to their target (a dangling
/// link to a missing file names the file to create), character devices and pipes are
/// written through, and folders, sockets and block devices are refused with a message that
/// says what was found. Nothing is written.
pub fn write_target(path: &Path) -> Result<WriteTarget> {
    let mut target = path.to_path_buf();
    for _ in 0..MAX_LINK_HOPS {
        let meta = match fs::symlink_metadata(&target) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(WriteTarget::Replace(target))
            }
            Err(source) => return Err(DataError::Write { path: target, source }),
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            let link = fs::read_link(&target)
                .map_err(|source| DataError::Write { path: target.clone(), source })?;
            // A relative link is relative to the folder holding the link.
            target = parent_dir(&target).join(link);
            continue;
        }
        if kind.is_file() {
            return Ok(WriteTarget::Replace(target));
        }
        if kind.is_dir() {
            return Err(write_refused(
                &target,
                "is a folder, not a file; give the path of a file (e.g. inside this folder)".into(),
            ));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if kind.is_char_device() || kind.is_fifo() {
                return Ok(WriteTarget::Stream(target));
            }
            let what = if kind.is_block_device() {
                "a block device (a disk)"
            } else if kind.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            };
            return Err(write_refused(
                &target,
                format!("is {what}; refusing to write there: give the path of a regular file"),
            ));
        }
        #[cfg(not(unix))]
        return Err(write_refused(
            &target,
            "is not a regular file; give the path of a regular file".into(),
        ));
    }
    Err(write_refused(
        path,
        format!("more than {MAX_LINK_HOPS} symbolic links to follow (a link cycle?); give the path of a regular file"),
    ))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder is written,
/// fsynced, then renamed over `path`. Readers therefore see either the old file, no file,
/// or the complete new file, never a partial one, even if the process is killed.
/// Creates missing parent folders. `path` is first resolved by [`write_target`]: a symbolic
/// link stays a link and its target is replaced; a character device or a pipe is written
/// through; a folder is refused.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let path = match write_target(path)? {
        WriteTarget::Replace(p) => p,
        WriteTarget::Stream(p) => return write_through(&p, bytes),
    };
    let path = path.as_path();
    let dir = parent_dir(path);
    fs::create_dir_all(&dir).map_err(|source| DataError::Write { path: dir.clone(), source })?;
    let tmp = temp_path_for(path)?;
    let written = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(source) = written {
        // Best effort: a leftover temp file is harmless (never read) but untidy.
        let _ = fs::remove_file(&tmp);
        return Err(DataError::Write { path: path.to_path_buf(), source });
    }
    // Best effort: persist the rename itself. Not all platforms allow opening a folder.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `bytes` into an existing character device or pipe, in order (no temp file, no
/// rename: see [`WriteTarget::Stream`]).
pub fn write_through(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.flush()))
        .map_err(|source| DataError::Write { path: path.to_path_buf(), source })
}

/// Encodes `img` as PNG in memory.
pub(crate) fn encode_png(path: &Path, img: &DynamicImage) -> Result<Vec<u8>> {
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, ImageFormat::Png)
        .map_err(|e| DataError::Encode { path: path.to_path_buf(), problem: e.to_string() })?;
    Ok(buf.into_inner())
}

/// Saves `img` as a PNG at `path`, atomically (see [`atomic_write`]).
pub fn save_png_atomic(path: &Path, img: &DynamicImage) -> Result<()> {
    let bytes = encode_png(path, img)?;
    atomic_write(path, &bytes)
}

/// Reads a whole file; a missing file gives [`DataError::Missing`].
/// A file's bytes; a missing or unreadable file is an error naming it.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| DataError::read(path, e))
}

fn decode_error(path: &Path, problem: impl Into<String>) -> DataError {
    DataError::Decode { path: path.to_path_buf(), problem: problem.into() }
}

/// The decoding memory limit of one image, in MiB: [`IMAGE_MEMORY_ENV`] when set to a positive
/// whole number, else [`DEFAULT_IMAGE_MEMORY_MIB`] (an unusable value is logged and ignored).
pub fn image_memory_limit_mib() -> u64 {
    match std::env::var(IMAGE_MEMORY_ENV) {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(mib) if mib > 0 => mib,
            _ => {
                tracing::warn!(
                    "{IMAGE_MEMORY_ENV}={v:?} is not a positive number of MiB; using {DEFAULT_IMAGE_MEMORY_MIB}"
                );
                DEFAULT_IMAGE_MEMORY_MIB
            }
        },
        Err(_) => DEFAULT_IMAGE_MEMORY_MIB,
    }
}

/// A reader for `bytes` with its format guessed from the content (not the extension), under
/// the memory limit of [`image_memory_limit_mib`].
fn reader_for<'a>(path: &Path, bytes: &'a [u8]) -> Result<ImageReader<Cursor<&'a [u8]>>> {
    if bytes.is_empty() {
        return Err(decode_error(path, "file is empty"));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::read(path, e))?;
    if reader.format().is_none() {
        return Err(decode_error(path, "unknown image format"));
    }
    let mut limits = Limits::default();
    limits.max_alloc = Some(image_memory_limit_mib().saturating_mul(MIB));
    reader.limits(limits);
    Ok(reader)
}

/// Where decoding stopped, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeStage {
    Header,
    Pixels,
}

/// The message of a decoder error: a file that ends too early says "truncated" and where; a
/// memory limit says which limit, the image's size and how to raise it.
fn describe_decode_error(
    path: &Path,
    bytes: &[u8],
    format: Option<ImageFormat>,
    stage: DecodeStage,
    e: ImageError,
) -> DataError {
    let fmt = format.map(|f| format!("{f:?} ")).unwrap_or_default();
    match e {
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            // Decoding reads the header too: say so when the file ends inside it.
            if stage == DecodeStage::Pixels {
                if let Err(header) = header_dims(path, bytes) {
                    return header;
                }
            }
            let where_ = match stage {
                DecodeStage::Header => "inside its header",
                DecodeStage::Pixels => "before all its pixel data",
            };
            decode_error(
                path,
                format!("truncated {fmt}file: it ends {where_} ({} bytes)", bytes.len()),
            )
        }
        ImageError::Limits(l) if matches!(l.kind(), LimitErrorKind::InsufficientMemory) => {
            let limit = image_memory_limit_mib();
            let size = match header_dims(path, bytes) {
                Ok(d) => {
                    let need = u64::from(d.width) * u64::from(d.height) * SUGGESTED_BYTES_PER_PIXEL;
                    let suggest = need.div_ceil(MIB).next_power_of_two().max(limit * 2);
                    format!(
                        "a {}x{} image needs more than the {limit} MiB one image may use while decoding; raise the limit with {IMAGE_MEMORY_ENV}={suggest} (MiB) if the machine has the memory",
                        d.width, d.height
                    )
                }
                Err(_) => format!(
                    "the image needs more than the {limit} MiB one image may use while decoding; raise the limit with {IMAGE_MEMORY_ENV} (MiB)"
                ),
            };
            decode_error(path, size)
        }
        other => decode_error(path, format!("corrupt or truncated {fmt}file: {other}")),
    }
}

/// Checks that a JPEG ends properly: its last end-of-image marker must come after its last
/// start-of-scan marker. The JPEG decoder tolerates truncated scans (it fills them with
/// grey), so without this check a truncated download would be accepted as a valid image.
fn check_jpeg_complete(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut last_sos = None;
    let mut last_eoi = None;
    for (i, w) in bytes.windows(2).enumerate() {
        if w[0] == JPEG_MARKER_PREFIX {
            if w[1] == JPEG_SOS {
                last_sos = Some(i);
            } else if w[1] == JPEG_EOI {
                last_eoi = Some(i);
            }
        }
    }
    match (last_sos, last_eoi) {
        (Some(s), Some(e)) if e > s => Ok(()),
        (None, _) => Err(decode_error(path, "corrupt JPEG: no image scan")),
        _ => Err(decode_error(path, "truncated JPEG: no end-of-image marker after the last scan")),
    }
}

/// Image width and height read from the file header only (no pixel decoding).
pub fn header_dims(path: &Path, bytes: &[u8]) -> Result<ImageDims> {
    let reader = reader_for(path, bytes)?;
    let format = reader.format();
    let (width, height) = reader.into_dimensions().map_err(|e| match e {
        ImageError::IoError(_) => {
            describe_decode_error(path, bytes, format, DecodeStage::Header, e)
        }
        other => decode_error(path, other.to_string()),
    })?;
    Ok(ImageDims { width, height })
}

/// Width and height of an image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageDims {
    pub width: u32,
    pub height: u32,
}

/// Shorter sides under this many pixels are an [`InputConcern::Small`]: the nets take 224² to
/// 299² inputs, so such an image is upsampled more than about 2× and its fine structure (the
/// network, dots, streaks that tell melanoma from nevus) was never in it.
pub const MIN_INPUT_SHORT_SIDE: u32 = 128;

/// Something about an image that decodes but makes a prediction on it doubtful. Reported beside
/// the prediction (`prediction.json`, the service's answer, a warning naming the file); never
/// a refusal and never a silently different answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum InputConcern {
    /// Stored without colour (grey, or grey + alpha): it is expanded to three equal channels,
    /// but every model here learnt from colour dermoscopy, and colour (blue-white veil,
    /// variegation) is much of what separates the classes.
    Greyscale,
    /// Its shorter side is under [`MIN_INPUT_SHORT_SIDE`] pixels.
    Small { width: u32, height: u32 },
}

impl InputConcern {
    /// A sentence for warnings and the web page.
    pub fn describe(&self) -> String {
        match self {
            InputConcern::Greyscale => "the image is greyscale; the models learnt from colour \
                 dermoscopy, so its probabilities are not comparable"
                .to_string(),
            InputConcern::Small { width, height } => format!(
                "the image is only {width}×{height} px (shorter side under \
                 {MIN_INPUT_SHORT_SIDE}); it is upsampled to the nets' input, which adds no detail"
            ),
        }
    }
}

/// The [`InputConcern`]s of image bytes, from the header alone (colour type and size; no pixel
/// is decoded), so that every path (manifests, uploads) judges an image the same way. An image
/// stored as RGB whose three channels happen to be equal is not detected.
pub fn input_concerns(path: &Path, bytes: &[u8]) -> Result<Vec<InputConcern>> {
    let decoder = reader_for(path, bytes)?
        .into_decoder()
        .map_err(|e| decode_error(path, format!("header cannot be read: {e}")))?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    let colour = image::ImageDecoder::color_type(&decoder);
    let mut concerns = Vec::new();
    if !colour.has_color() {
        concerns.push(InputConcern::Greyscale);
    }
    if width.min(height) < MIN_INPUT_SHORT_SIDE {
        concerns.push(InputConcern::Small { width, height });
    }
    Ok(concerns)
}

/// Fully decodes in-memory image bytes; `path` is only used in error messages.
pub(crate) fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<DynamicImage> {
    let reader = reader_for(path, bytes)?;
    let format = reader.format();
    if format == Some(ImageFormat::Jpeg) {
        check_jpeg_complete(path, bytes)?;
    }
    let img = reader
        .decode()
        .map_err(|e| describe_decode_error(path, bytes, format, DecodeStage::Pixels, e))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(decode_error(path, "image has zero width or height"));
    }
    Ok(img)
}

/// Loads an image as 8-bit RGB (alpha dropped, grey expanded). Missing, empty, corrupt or
/// truncated files give an error naming the file and the problem.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = read_bytes(path)?;
    rgb_from_bytes(path, &bytes)
}

/// Decodes in-memory image bytes as [`load_rgb`] decodes a file (same checks, same pixels);
/// `path` only names the image in error messages.
pub fn rgb_from_bytes(path: &Path, bytes: &[u8]) -> Result<RgbImage> {
    Ok(decode_bytes(path, bytes)?.to_rgb8())
}

/// Loads a segmentation mask: any colour type is converted to 8-bit luma, then binarised
/// to {0, 255} with lesion = grey level > [`MASK_THRESHOLD`]. A mask that this would silently
/// empty (0/1 values, dark colours) is an error: see [`crate::mask`], which also reads the
/// 0/1 masks a manifest row records.
pub fn load_mask(path: &Path) -> Result<GrayImage> {
    crate::mask::load_mask_as(path, crate::mask::MaskLevels::Grey)
}

/// In place: pixels > [`MASK_THRESHOLD`] become [`MASK_ON`], the others [`MASK_OFF`].
pub fn binarize_mask(mask: &mut GrayImage) {
    for p in mask.pixels_mut() {
        p.0[0] = if p.0[0] > MASK_THRESHOLD { MASK_ON } else { MASK_OFF };
    }
}

/// blake3 hash (lower-case hex) of in-memory bytes; equal to [`content_hash`] of a file
/// holding them.
pub fn hash_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// blake3 hash (lower-case hex, 64 characters) of a file's bytes, streamed.
pub fn content_hash(path: &Path) -> Result<String> {
    let file = File::open(path).map_err(|e| DataError::read(path, e))?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(file).map_err(|e| DataError::read(path, e))?;
    Ok(hasher.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb};

    fn png_bytes(img: &DynamicImage) -> Vec<u8> {
        encode_png(Path::new("x.png"), img).unwrap()
    }

    fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
        let mut buf = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img).write_to(&mut buf, ImageFormat::Jpeg).unwrap();
        buf.into_inner()
    }

    #[test]
    fn atomic_write_creates_parents_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/c.bin");
        atomic_write(&p, b"hello").unwrap();
        atomic_write(&p, b"world").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"world");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    /// A link stays a link and its target gets the bytes (also a dangling link: its target
    /// is created); a FIFO is written through and stays a FIFO; a folder is refused by name.
    #[cfg(unix)]
    #[test]
    fn atomic_write_follows_links_streams_pipes_and_refuses_folders() {
        use std::os::unix::fs::{symlink, FileTypeExt};
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.csv");
        fs::write(&target, b"old").unwrap();
        let link = dir.path().join("link.csv");
        symlink("real.csv", &link).unwrap();
        atomic_write(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "link replaced");
        assert_eq!(fs::read(&target).unwrap(), b"new");
        let dangling = dir.path().join("dangling.csv");
        symlink(dir.path().join("sub/made.csv"), &dangling).unwrap();
        atomic_write(&dangling, b"made").unwrap();
        assert!(fs::symlink_metadata(&dangling).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(dir.path().join("sub/made.csv")).unwrap(), b"made");

        let fifo = dir.path().join("pipe");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read(fifo).unwrap())
        };
        atomic_write(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "FIFO replaced");
        // Only classified, never written: a wrong answer here must not touch the real one.
        if fs::metadata("/dev/null").map(|m| m.file_type().is_char_device()).unwrap_or(false) {
            assert_eq!(
                write_target(Path::new("/dev/null")).unwrap(),
                WriteTarget::Stream("/dev/null".into())
            );
        }

        let folder = dir.path().join("out.csv");
        fs::create_dir(&folder).unwrap();
        let e = atomic_write(&folder, b"x").unwrap_err().to_string();
        assert!(e.contains("out.csv") && e.contains("is a folder"), "{e}");
        let loop_a = dir.path().join("a");
        symlink("b", &loop_a).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        let e = atomic_write(&loop_a, b"x").unwrap_err().to_string();
        assert!(e.contains("symbolic links"), "{e}");
    }

    #[test]
    fn input_concerns_flag_grey_and_small_images_from_the_header() {
        let p = Path::new("x");
        let grey = GrayImage::from_fn(200, 150, |x, _| Luma([(x % 256) as u8]));
        let grey_png = png_bytes(&DynamicImage::ImageLuma8(grey.clone()));
        assert_eq!(input_concerns(p, &grey_png).unwrap(), vec![InputConcern::Greyscale]);
        let mut buf = Cursor::new(Vec::new());
        DynamicImage::ImageLuma8(grey).write_to(&mut buf, ImageFormat::Jpeg).unwrap();
        assert_eq!(input_concerns(p, buf.get_ref()).unwrap(), vec![InputConcern::Greyscale]);
        // Colour at and just under the size limit (JPEG: the colour type of a CMYK or YCbCr
        // file is RGB, so a colour JPEG is never called grey).
        let side = MIN_INPUT_SHORT_SIDE;
        assert_eq!(input_concerns(p, &jpeg_bytes(side + 40, side)).unwrap(), vec![]);
        assert_eq!(
            input_concerns(p, &jpeg_bytes(side + 40, side - 1)).unwrap(),
            vec![InputConcern::Small { width: side + 40, height: side - 1 }]
        );
        let tiny_grey = png_bytes(&DynamicImage::ImageLuma16(image::ImageBuffer::new(10, 400)));
        assert_eq!(
            input_concerns(p, &tiny_grey).unwrap(),
            vec![InputConcern::Greyscale, InputConcern::Small { width: 10, height: 400 }]
        );
        let e = input_concerns(Path::new("bad.png"), b"not an image").unwrap_err().to_string();
        assert!(e.contains("bad.png"), "{e}");
        assert!(InputConcern::Greyscale.describe().contains("greyscale"));
    }

    #[test]
    fn load_rgb_errors_name_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.png");
        let e = load_rgb(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.png") && e.contains("not found"), "{e}");

        let corrupt = dir.path().join("corrupt.png");
        fs::write(&corrupt, b"this is not an image at all").unwrap();
        let e = load_rgb(&corrupt).unwrap_err().to_string();
        assert!(e.contains("corrupt.png") && e.contains("decode"), "{e}");

        let empty = dir.path().join("empty.jpg");
        fs::write(&empty, b"").unwrap();
        let e = load_rgb(&empty).unwrap_err().to_string();
        assert!(e.contains("empty.jpg") && e.contains("empty"), "{e}");
    }

    #[test]
    fn truncated_png_and_jpeg_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 64, |x, y| {
            Rgb([(x * 3) as u8, (y * 3) as u8, ((x ^ y) * 4) as u8])
        }));
        let png = png_bytes(&img);
        let p = dir.path().join("trunc.png");
        fs::write(&p, &png[..png.len() / 2]).unwrap();
        let e = load_rgb(&p).unwrap_err().to_string();
        assert!(e.contains("trunc.png"), "{e}");

        let jpg = jpeg_bytes(64, 64);
        let p = dir.path().join("trunc.jpg");
        fs::write(&p, &jpg[..jpg.len() * 2 / 3]).unwrap();
        let e = load_rgb(&p).unwrap_err().to_string();
        assert!(e.contains("trunc.jpg") && e.contains("truncated"), "{e}");

        let ok = dir.path().join("ok.jpg");
        fs::write(&ok, &jpg).unwrap();
        assert_eq!(load_rgb(&ok).unwrap().dimensions(), (64, 64));
    }

    #[test]
    fn mask_is_binarised_at_127_from_any_colour_type() {
        let dir = tempfile::tempdir().unwrap();
        let grey = GrayImage::from_fn(4, 1, |x, _| Luma([[0u8, 127, 128, 255][x as usize]]));
        let p = dir.path().join("m.png");
        save_png_atomic(&p, &DynamicImage::ImageLuma8(grey)).unwrap();
        let m = load_mask(&p).unwrap();
        assert_eq!(m.as_raw(), &vec![0, 0, 255, 255]);

        let rgb = RgbImage::from_fn(3, 1, |x, _| Rgb([[0u8, 100, 255][x as usize]; 3]));
        let p = dir.path().join("m.bmp");
        DynamicImage::ImageRgb8(rgb).save(&p).unwrap();
        let m = load_mask(&p).unwrap();
        assert_eq!(m.as_raw(), &vec![0, 0, 255]);
    }

    /// CRC-32 of PNG chunks (ISO 3309), bit by bit: enough for a test fixture.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = u32::MAX;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    /// Issue 13, item 10: a BMP cut inside its header said "failed to fill whole buffer".
    #[test]
    fn bmp_cut_inside_its_header_says_truncated_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cut.bmp");
        DynamicImage::ImageRgb8(RgbImage::new(16, 16)).save(&p).unwrap();
        let full = fs::read(&p).unwrap();
        fs::write(&p, &full[..30]).unwrap();
        let e = load_rgb(&p).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: ", p.display())), "{e}");
        assert!(e.contains("truncated Bmp file: it ends inside its header (30 bytes)"), "{e}");
        assert!(!e.contains("fill whole buffer"), "{e}");
    }

    /// Issue 13, item 10: a 20000² PNG said only "Memory limit exceeded".
    #[test]
    fn huge_png_names_the_memory_limit_and_how_to_raise_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut png = png_bytes(&DynamicImage::ImageRgb8(RgbImage::new(1, 1)));
        // IHDR: width at 16..20, height at 20..24, CRC of type + data at 29..33.
        png[16..20].copy_from_slice(&20_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let p = dir.path().join("huge.png");
        fs::write(&p, &png).unwrap();
        let e = load_rgb(&p).unwrap_err().to_string();
        assert!(e.contains("huge.png") && e.contains("20000x20000"), "{e}");
        assert!(e.contains(&format!("{DEFAULT_IMAGE_MEMORY_MIB} MiB")), "{e}");
        assert!(e.contains(IMAGE_MEMORY_ENV), "{e}");
    }

    #[test]
    fn content_hash_matches_hash_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(content_hash(&p).unwrap(), hash_bytes(b"abc"));
        assert_eq!(content_hash(&p).unwrap().len(), 64);
        let e = content_hash(&dir.path().join("g")).unwrap_err().to_string();
        assert!(e.contains("g: file not found"), "{e}");
    }
}
