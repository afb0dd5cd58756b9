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

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.image_format());
    let mut caps = image::Limits::default();
    caps.max_image_width = Some(limits.max_image_width);
    caps.max_image_height = Some(limits.max_image_height);
    // Room for the widest pixel type (RGBA, 16 bits a channel) of the largest allowed image.
    caps.max_alloc = Some(limits.max_image_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(caps);
    let img = reader.decode().map_err(|e| map_image_error(e, "decoding"))?;
    Ok((img, format))
}

/// True when an end-of-image marker (FF D9) follows the last start-of-scan marker (FF DA).
/// Entropy-coded data stuffs every FF with 00, so neither marker can appear inside a scan;
/// EXIF thumbnails sit before the main image's scans and do not fool the check.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_scan {
        Some(pos) => bytes[pos..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
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

/// Encodes `img` as `format`; `quality` (1..=100) applies to JPEG. PNG and WebP are lossless.
pub fn encode(img: &DynamicImage, format: Format, quality: Option<u8>) -> Result<Vec<u8>, JobError> {
    let mut out = Cursor::new(Vec::new());
    let result = match format {
        Format::Jpeg => {
            // JPEG has no alpha channel; flatten to RGB first.
            let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.unwrap_or(85));
            rgb.write_with_encoder(enc)
        }
        Format::Png => img.write_with_encoder(image::codecs::png::PngEncoder::new(&mut out)),
        Format::Webp => {
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
    fn format_not_allowed() {
        let limits = Limits { allowed_formats: vec!["png".into()], ..Limits::default() };
        assert_eq!(decode(&jpeg(), &limits).unwrap_err().error_type(), "unsupported_format");
    }

    #[test]
    fn empty_input_is_corrupt() {
        assert_eq!(decode(&[], &Limits::default()).unwrap_err().error_type(), "corrupt_image");
    }
}
