//! Decoding untrusted images within limits, and encoding outputs.
//!
//! The format is sniffed from the bytes (never trusted from a parameter), checked against the
//! allowed list, and the dimensions are read from the header and checked before any pixel
//! buffer is allocated; the decoder also gets an allocation cap, as a second line of defence.

use std::io::Cursor;

use image::{DynamicImage, ImageError, ImageFormat, ImageReader};
use serde::{Deserialize, Serialize};

use crate::error::JobError;
use crate::limits::Limits;

/// Image formats Warren reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Png,
    Jpeg,
    Webp,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::Webp => "webp",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            Self::Png => ImageFormat::Png,
            Self::Jpeg => ImageFormat::Jpeg,
            Self::Webp => ImageFormat::WebP,
        }
    }
}

/// Sniffs the format of `bytes`; only formats this build can decode are recognised.
pub fn sniff(bytes: &[u8]) -> Result<Format, JobError> {
    if bytes.is_empty() {
        return Err(JobError::CorruptImage("the image is empty (0 bytes)".into()));
    }
    match image::guess_format(bytes) {
        Ok(ImageFormat::Png) => Ok(Format::Png),
        Ok(ImageFormat::Jpeg) => Ok(Format::Jpeg),
        Ok(ImageFormat::WebP) => Ok(Format::Webp),
        Ok(other) => {
            Err(JobError::UnsupportedFormat(format!("{other:?} images are not supported (PNG, JPEG or WebP)")))
        }
        Err(_) => {
            Err(JobError::UnsupportedFormat("the data is not a recognised image (PNG, JPEG or WebP expected)".into()))
        }
    }
}

/// Decodes an untrusted image, enforcing `limits`. Returns the image and its source format.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<(DynamicImage, Format), JobError> {
    let (format, _) = check(bytes, limits)?;
    Ok((decode_checked(bytes, format, limits)?, format))
}

/// An image decoded for a known output size, perhaps smaller than it is.
#[derive(Debug)]
pub struct Decoded {
    pub image: DynamicImage,
    pub format: Format,
    /// The size the image declares, whatever size it was decoded at.
    pub source: (u32, u32),
}

/// Decodes like [`decode`], but asks first for the size the caller will produce (`target` gives
/// the output size from the source size): a JPEG that will be shrunk to half its size or less
/// is decoded at 1/2, 1/4 or 1/8 scale, never below that output size. The decoder then computes
/// a smaller inverse DCT per block, skipping most of the decoding work and the full-size buffer;
/// the result is a box-filtered image, which the caller's resampling finishes. Other formats,
/// and JPEGs shrunk by less than half, decode at full size.
pub fn decode_for(
    bytes: &[u8],
    limits: &Limits,
    target: impl FnOnce(u32, u32) -> (u32, u32),
) -> Result<Decoded, JobError> {
    let (format, (w, h)) = check(bytes, limits)?;
    let (tw, th) = target(w, h);
    if format == Format::Jpeg
        && tw.saturating_mul(2) <= w
        && th.saturating_mul(2) <= h
        && let Some(image) = decode_jpeg_scaled(bytes, (tw, th), limits)?
    {
        return Ok(Decoded { image, format, source: (w, h) });
    }
    Ok(Decoded { image: decode_checked(bytes, format, limits)?, format, source: (w, h) })
}

/// The scaled-IDCT JPEG decode of [`decode_for`]; `None` for what it does not handle (CMYK),
/// which the full decoder then takes.
fn decode_jpeg_scaled(bytes: &[u8], at_least: (u32, u32), limits: &Limits) -> Result<Option<DynamicImage>, JobError> {
    use jpeg_decoder::PixelFormat;
    let corrupt = |e: jpeg_decoder::Error| JobError::CorruptImage(format!("decoding: {e}"));
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.set_max_decoding_buffer_size(usize::try_from(alloc_cap(limits)).unwrap_or(usize::MAX));
    // The checked limits keep both sides within u16 (8192 by default); beyond that, decode in full.
    let (Ok(rw), Ok(rh)) = (u16::try_from(at_least.0), u16::try_from(at_least.1)) else { return Ok(None) };
    let (ow, oh) = decoder.scale(rw, rh).map_err(corrupt)?;
    let info = decoder.info().ok_or_else(|| JobError::CorruptImage("decoding: no frame header".into()))?;
    let image = match info.pixel_format {
        PixelFormat::RGB24 => {
            let pixels = decoder.decode().map_err(corrupt)?;
            image::RgbImage::from_raw(ow.into(), oh.into(), pixels).map(DynamicImage::ImageRgb8)
        }
        PixelFormat::L8 => {
            let pixels = decoder.decode().map_err(corrupt)?;
            image::GrayImage::from_raw(ow.into(), oh.into(), pixels).map(DynamicImage::ImageLuma8)
        }
        PixelFormat::L16 | PixelFormat::CMYK32 => return Ok(None),
    };
    image.map(Some).ok_or_else(|| JobError::CorruptImage("decoding: the decoder returned too few pixels".into()))
}

/// Room for the widest pixel type (RGBA, 16 bits a channel) of the largest allowed image.
fn alloc_cap(limits: &Limits) -> u64 {
    limits.max_image_pixels.saturating_mul(8).max(1 << 20)
}

/// Every check made before decoding: format sniffed and allowed, dimensions from the header
/// within limits, JPEG complete. Returns the format and the declared size.
fn check(bytes: &[u8], limits: &Limits) -> Result<(Format, (u32, u32)), JobError> {
    let format = sniff(bytes)?;
    if !limits.allowed_formats.iter().any(|f| f == format.as_str()) {
        return Err(JobError::UnsupportedFormat(format!(
            "{} input is not allowed here (allowed: {})",
            format.as_str(),
            limits.allowed_formats.join(", ")
        )));
    }
    let (w, h) = ImageReader::with_format(Cursor::new(bytes), format.image_format())
        .into_dimensions()
        .map_err(|e| map_image_error(e, "reading the image header"))?;
    check_dimensions(w, h, limits)?;
    if format == Format::Jpeg && !jpeg_is_complete(bytes) {
        // The JPEG decoder fills a truncated scan with grey and reports success; a cut-off
        // upload must be refused, not turned into a half-grey result.
        return Err(JobError::CorruptImage("truncated JPEG: no end-of-image marker after the last scan".into()));
    }
    Ok((format, (w, h)))
}

fn decode_checked(bytes: &[u8], format: Format, limits: &Limits) -> Result<DynamicImage, JobError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.image_format());
    let mut caps = image::Limits::default();
    caps.max_image_width = Some(limits.max_image_width);
    caps.max_image_height = Some(limits.max_image_height);
    caps.max_alloc = Some(alloc_cap(limits));
    reader.limits(caps);
    reader.decode().map_err(|e| map_image_error(e, "decoding"))
}

/// True when an end-of-image marker (FF D9) follows the last start-of-scan marker (FF DA).
/// Entropy-coded data stuffs every FF with 00, so neither marker can appear inside a scan;
/// EXIF thumbnails sit before the main image's scans and do not fool the check.
///
/// Searched as: the last EOI (normally the file's last two bytes), no scan after it, and a scan
/// before it (normally a few hundred bytes in), so the scan data between is never read: a
/// whole-file search cost 3.5 % of a resize worker's CPU (perf, docs/benchmarks.md).
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    const SOS: [u8; 2] = [0xFF, 0xDA];
    let Some(eoi) = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]) else { return false };
    !bytes[eoi..].windows(2).any(|w| w == SOS) && bytes[..eoi].windows(2).any(|w| w == SOS)
}

fn check_dimensions(w: u32, h: u32, limits: &Limits) -> Result<(), JobError> {
    if w == 0 || h == 0 {
        return Err(JobError::CorruptImage(format!("the image declares {w}x{h} pixels")));
    }
    if w > limits.max_image_width || h > limits.max_image_height {
        return Err(JobError::LimitExceeded(format!(
            "image of {w}x{h} pixels exceeds the maximum of {}x{}",
            limits.max_image_width, limits.max_image_height
        )));
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_image_pixels {
        return Err(JobError::LimitExceeded(format!(
            "image of {w}x{h} = {pixels} pixels exceeds the maximum of {} pixels",
            limits.max_image_pixels
        )));
    }
    Ok(())
}

fn map_image_error(e: ImageError, stage: &str) -> JobError {
    match e {
        ImageError::Limits(l) => JobError::LimitExceeded(format!("{stage}: {l}")),
        ImageError::Unsupported(u) => JobError::UnsupportedFormat(format!("{stage}: {u}")),
        other => JobError::CorruptImage(format!("{stage}: {other}")),
    }
}

/// Which JPEG encoder writes JPEG outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegWriter {
    /// The `image` crate's encoder (scalar code).
    ImageCrate,
    /// `jpeg-encoder` with AVX2 where the CPU has it. Same baseline JPEG, quantisation tables
    /// scaled from the standard ones by quality, and no chroma subsampling (4:4:4), as the
    /// `image` crate writes it; faster (warren-bench's image pipelines).
    Simd,
}

/// JPEG quality when the job gives none.
const DEFAULT_JPEG_QUALITY: u8 = 85;

/// Encodes `img` as `format`; `quality` (1..=100) applies to JPEG. PNG and WebP are lossless.
pub fn encode(img: &DynamicImage, format: Format, quality: Option<u8>) -> Result<Vec<u8>, JobError> {
    encode_with(img, format, quality, JpegWriter::Simd)
}

/// [`encode`] with a choice of JPEG encoder (to measure one against the other).
pub fn encode_with(
    img: &DynamicImage,
    format: Format,
    quality: Option<u8>,
    jpeg: JpegWriter,
) -> Result<Vec<u8>, JobError> {
    let mut out = Cursor::new(Vec::new());
    let quality = quality.unwrap_or(DEFAULT_JPEG_QUALITY);
    let result = match (format, jpeg) {
        (Format::Jpeg, JpegWriter::Simd) => {
            return encode_jpeg(img, quality).map_err(|e| JobError::Encode(format!("jpeg encoding: {e}")));
        }
        (Format::Jpeg, JpegWriter::ImageCrate) => {
            // JPEG has no alpha channel; flatten to RGB first.
            let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
            rgb.write_with_encoder(enc)
        }
        (Format::Png, _) => img.write_with_encoder(image::codecs::png::PngEncoder::new(&mut out)),
        (Format::Webp, _) => {
            // The WebP encoder takes 8-bit RGB(A) only.
            let img = if img.color().has_alpha() {
                DynamicImage::ImageRgba8(img.to_rgba8())
            } else {
                DynamicImage::ImageRgb8(img.to_rgb8())
            };
            img.write_with_encoder(image::codecs::webp::WebPEncoder::new_lossless(&mut out))
        }
    };
    result.map_err(|e| JobError::Encode(format!("{} encoding: {e}", format.as_str())))?;
    Ok(out.into_inner())
}

/// JPEG through `jpeg-encoder`: grey stays one channel, anything else is flattened to RGB (JPEG
/// has no alpha), without a copy when the pixels are RGB already.
fn encode_jpeg(img: &DynamicImage, quality: u8) -> Result<Vec<u8>, String> {
    use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
    let side = |n: u32| u16::try_from(n).map_err(|_| format!("{n} pixels is over JPEG's limit of 65535"));
    let (w, h) = (side(img.width())?, side(img.height())?);
    let mut out = Vec::new();
    let mut encoder = Encoder::new(&mut out, quality.clamp(1, 100));
    encoder.set_sampling_factor(SamplingFactor::F_1_1);
    let converted;
    let (pixels, color): (&[u8], ColorType) = match img {
        DynamicImage::ImageLuma8(g) => (g.as_raw(), ColorType::Luma),
        DynamicImage::ImageRgb8(rgb) => (rgb.as_raw(), ColorType::Rgb),
        other => {
            converted = other.to_rgb8();
            (converted.as_raw(), ColorType::Rgb)
        }
    };
    encoder.encode(pixels, w, h, color).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg() -> Vec<u8> {
        let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 90]));
        encode(&DynamicImage::ImageRgb8(img), Format::Jpeg, Some(90)).expect("encode")
    }

    #[test]
    fn complete_jpeg_decodes() {
        let (img, format) = decode(&jpeg(), &Limits::default()).expect("decode");
        assert_eq!((img.width(), img.height(), format), (64, 48, Format::Jpeg));
    }

    #[test]
    fn truncated_jpeg_is_corrupt() {
        let mut bytes = jpeg();
        bytes.truncate(bytes.len() * 2 / 3);
        assert_eq!(decode(&bytes, &Limits::default()).unwrap_err().error_type(), "corrupt_image");
    }

    #[test]
    fn jpeg_completeness_is_an_end_marker_after_the_last_scan() {
        let (sos, eoi) = ([0xFF, 0xDA], [0xFF, 0xD9]);
        let join = |parts: &[&[u8]]| parts.concat();
        assert!(jpeg_is_complete(&join(&[b"hdr", &sos, b"data", &eoi])));
        assert!(jpeg_is_complete(&join(&[b"hdr", &sos, b"data", &eoi, b"trailing"])));
        assert!(!jpeg_is_complete(&join(&[b"hdr", &sos, b"data"])), "cut in the scan");
        assert!(!jpeg_is_complete(&join(&[b"thumb", &sos, &eoi, b"hdr", &sos, b"data"])), "only a thumbnail ended");
        assert!(!jpeg_is_complete(&join(&[b"hdr", &eoi])), "no scan at all");
    }

    #[test]
    fn format_not_allowed() {
        let limits = Limits { allowed_formats: vec!["png".into()], ..Limits::default() };
        assert_eq!(decode(&jpeg(), &limits).unwrap_err().error_type(), "unsupported_format");
    }

    #[test]
    fn empty_input_is_corrupt() {
        assert_eq!(decode(&[], &Limits::default()).unwrap_err().error_type(), "corrupt_image");
    }

    #[test]
    fn jpeg_output_keeps_grey_as_grey_and_drops_alpha() {
        let grey = DynamicImage::ImageLuma8(image::GrayImage::from_fn(40, 30, |x, y| image::Luma([(x * 6 + y) as u8])));
        let back = image::load_from_memory(&encode(&grey, Format::Jpeg, Some(90)).expect("grey")).expect("decodes");
        assert_eq!((back.width(), back.height(), back.color()), (40, 30, image::ColorType::L8));
        let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(17, 9, image::Rgba([200, 40, 10, 128])));
        let back = image::load_from_memory(&encode(&rgba, Format::Jpeg, None).expect("rgba")).expect("decodes");
        assert_eq!((back.width(), back.height(), back.color()), (17, 9, image::ColorType::Rgb8));
        let px = back.to_rgb8().get_pixel(8, 4).0;
        assert!(px.iter().zip([200u8, 40, 10]).all(|(a, b)| a.abs_diff(b) <= 6), "{px:?}");
    }

    #[test]
    fn jpeg_output_over_jpegs_size_limit_is_an_encode_error() {
        let wide = DynamicImage::ImageLuma8(image::GrayImage::new(70_000, 1));
        let err = encode(&wide, Format::Jpeg, None).unwrap_err();
        assert_eq!(err.error_type(), "encode_failed", "{err}");
        assert!(err.to_string().contains("65535"), "{err}");
    }
}
