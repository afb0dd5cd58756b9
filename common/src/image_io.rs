//! Decoding untrusted images within limits, and encoding outputs.
//!
//! The format is sniffed from the bytes (never trusted from a parameter), checked against the
//! allowed list, and the dimensions are read from the header and checked before any pixel
//! buffer is allocated. The `image` crate's decoders (PNG, WebP, and the JPEGs libjpeg-turbo
//! leaves) also get an allocation cap, as a second line of defence. libjpeg-turbo gets none:
//! the `turbojpeg` crate (1.5) does not expose `TJPARAM_MAXMEMORY` or `TJPARAM_MAXPIXELS`, so
//! its memory is bounded by Warren's header check alone: it decodes only a JPEG whose header it
//! reads as the size that check accepted.

use std::io::Cursor;

use image::{DynamicImage, ImageError, ImageFormat, ImageReader};
use serde::{Deserialize, Serialize};

use crate::error::JobError;
use crate::limits::Limits;
use crate::names::{self, UnknownName};

/// Image formats Warren reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Png,
    Jpeg,
    Webp,
}

impl Format {
    /// Every format, in declaration order.
    pub const ALL: [Self; 3] = [Self::Png, Self::Jpeg, Self::Webp];

    /// The format's name on the wire (serde's).
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

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Format {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        names::parse("image format", s, &Self::ALL, Self::as_str)
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
    let decoded = decode_for(bytes, limits, |w, h| (w, h))?;
    Ok((decoded.image, decoded.format))
}

/// An image decoded for a known output size, perhaps smaller than it is.
#[derive(Debug)]
pub struct Decoded {
    pub image: DynamicImage,
    pub format: Format,
    /// The size the image declares, whatever size it was decoded at.
    pub source: (u32, u32),
    /// The decode's scale denominator: 1 (full size), 2, 4 or 8. At 1/d the image holds the
    /// source at exactly 1/d of its size: its sides are rounded up, so a last column or row
    /// can be partly made of the encoder's edge padding.
    pub scale: u32,
}

impl Decoded {
    /// `region` (left, top, width, height in source pixels) in the pixels of [`Self::image`]:
    /// exactly `region / scale` (Pillow's `draft()` maps it so too), never the decoder's
    /// rounded-up last column or row beyond it, and kept inside the image, since the far edge
    /// computed in floating point can land a rounding step past it (480 * (4000 / 480) =
    /// 4000.0000000000005), which the resampler refuses.
    pub fn within(&self, region: [f64; 4]) -> [f64; 4] {
        let d = f64::from(self.scale);
        let (iw, ih) = (f64::from(self.image.width()), f64::from(self.image.height()));
        let [left, top, width, height] = region.map(|v| v / d);
        let (left, top) = (left.clamp(0.0, iw), top.clamp(0.0, ih));
        [left, top, width.min(iw - left), height.min(ih - top)]
    }

    /// The whole source in the pixels of [`Self::image`] ([`Self::within`]).
    pub fn whole(&self) -> [f64; 4] {
        self.within([0.0, 0.0, f64::from(self.source.0), f64::from(self.source.1)])
    }
}

/// Decodes like [`decode`], but asks first for the smallest size the caller can use (`needed`
/// gives it from the source size): a JPEG is then decoded by libjpeg-turbo at the scale
/// [`dct_scale`] picks, Pillow's `draft()` rule. The scaled inverse DCT computes a smaller block
/// per 8x8 of coefficients, skipping most of the decoding work and the full-size buffer; the
/// result is close to a box-filtered image, which the caller's resampling finishes. Other
/// formats decode at full size.
pub fn decode_for(
    bytes: &[u8],
    limits: &Limits,
    needed: impl FnOnce(u32, u32) -> (u32, u32),
) -> Result<Decoded, JobError> {
    let (format, source) = check(bytes, limits)?;
    if format == Format::Jpeg
        && let Some((image, scale)) = turbo::decode(bytes, source, dct_scale(source, needed(source.0, source.1)))?
    {
        return Ok(Decoded { image, format, source, scale });
    }
    Ok(Decoded { image: decode_checked(bytes, format, limits)?, format, source, scale: 1 })
}

/// The scale denominator a JPEG of `size` pixels decodes at when the caller needs `needed`:
/// the largest d of 8, 4 and 2 with `d * needed <= size` on both sides, else 1 (full size).
/// This is Pillow's `draft()` rule (`scale = min(w // tw, h // th)`, then the largest of 8, 4,
/// 2, 1 not above it), so Warren decodes where Pillow-draft does (tests/e2e/imaging.rs).
///
/// The image at exactly 1/d must cover what is needed; the size libjpeg-turbo hands back must
/// not be what qualifies a scale. It rounds the sides up, and the last column or row is then
/// partly the encoder's edge padding, which is cropped away ([`Decoded::within`]): a 1913x1080 photo at 1/8 is
/// 240x135 pixels but holds 239.125 columns of it, so a 240x135 output would be stretched from
/// fewer. While the rounded-up size qualified a scale, that job scored 0.28 dB below
/// Pillow-draft (which decodes it at 1/4), and bilinear jobs at 1/2 up to 5.1 dB below
/// (tests/e2e/imaging.rs, its boundary crops).
pub fn dct_scale(size: (u32, u32), needed: (u32, u32)) -> u32 {
    let fits = |d: u32, side: u32, need: u32| u64::from(d) * u64::from(need) <= u64::from(side);
    [8, 4, 2].into_iter().find(|&d| fits(d, size.0, needed.0) && fits(d, size.1, needed.1)).unwrap_or(1)
}

/// JPEG decoding through libjpeg-turbo (the TurboJPEG 3 API, built from the source the
/// `turbojpeg-sys` crate bundles, with its SIMD code).
mod turbo {
    use std::cell::RefCell;

    use image::DynamicImage;
    use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat, ScalingFactor};

    use crate::error::JobError;

    /// libjpeg-turbo's own ceiling (`TJFLAG_LIMITSCANS`) on progressive scans: every scan
    /// re-reads the whole coefficient buffer, so a small file with thousands of scans would cost
    /// minutes of CPU. Encoders write about 10; the `image` crate's decoder (zune-jpeg), which
    /// takes the files this path leaves, stops at 100 too.
    pub const MAX_SCANS: u32 = 100;

    thread_local! {
        /// One decompressor per pool thread, made on first use.
        static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
    }

    /// Decodes a checked JPEG of `size` pixels at 1/`denominator` (1, 2, 4 or 8). `None` for what
    /// this path leaves to the `image` crate's decoder: CMYK and YCCK, 12- and 16-bit samples,
    /// and any data libjpeg-turbo refuses or warns about (it reports damage zune-jpeg tolerates,
    /// such as stray bytes between markers; a truncated file was refused before).
    pub fn decode(bytes: &[u8], size: (u32, u32), denominator: u32) -> Result<Option<(DynamicImage, u32)>, JobError> {
        DECOMPRESSOR.with_borrow_mut(|slot| {
            let decompressor = match slot {
                Some(d) => d,
                None => match Decompressor::new().and_then(|mut d| d.set_scan_limit(MAX_SCANS).map(|()| d)) {
                    Ok(d) => slot.insert(d),
                    Err(_) => return Ok(None),
                },
            };
            run(decompressor, bytes, size, denominator)
        })
    }

    fn run(
        d: &mut Decompressor,
        bytes: &[u8],
        size: (u32, u32),
        denominator: u32,
    ) -> Result<Option<(DynamicImage, u32)>, JobError> {
        let Ok(header) = d.read_header(bytes) else { return Ok(None) };
        let format = match header.colorspace {
            Colorspace::Gray => PixelFormat::GRAY,
            Colorspace::YCbCr | Colorspace::RGB => PixelFormat::RGB,
            _ => return Ok(None),
        };
        if (header.width, header.height) != (size.0 as usize, size.1 as usize) {
            // The two header readers disagree (a crafted file): only the checked size is trusted.
            return Ok(None);
        }
        // Lossless and arithmetic-coded JPEGs never get here: the header check refuses them.
        let scale = ScalingFactor::new(1, denominator as usize);
        if d.set_scaling_factor(scale).is_err() {
            return Ok(None);
        }
        let (w, h) = (scale.scale(header.width), scale.scale(header.height));
        let mut pixels = vec![0u8; w * h * format.size()];
        let image = Image { pixels: pixels.as_mut_slice(), width: w, pitch: w * format.size(), height: h, format };
        if let Err(e) = d.decompress(bytes, image) {
            let message = e.to_string();
            if message.contains("more than") && message.contains("scans") {
                return Err(JobError::LimitExceeded(format!(
                    "a progressive JPEG with more than {MAX_SCANS} scans is refused (decoding it would take minutes)"
                )));
            }
            return Ok(None);
        }
        let (w, h) = (w as u32, h as u32);
        let image = match format {
            PixelFormat::GRAY => image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8),
            _ => image::RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8),
        };
        Ok(image.map(|image| (image, denominator)))
    }
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
    if format == Format::Jpeg
        && let Some(coding) = unsupported_jpeg_coding(bytes)
    {
        return Err(JobError::UnsupportedFormat(format!(
            "{coding} JPEG is not supported (baseline and progressive Huffman-coded JPEGs are)"
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

/// The JPEG's coding process, from its start-of-frame marker, when neither decoder reads it:
/// lossless (SOF3, 7, 11, 15), arithmetic-coded (SOF9-15) or hierarchical (SOF5-7, 13-15).
/// Walks the header's segments by their lengths (never into scan data) up to the first frame
/// or scan; `None` for the supported processes and for what it cannot parse (left to the
/// header reader, which reports the damage).
fn unsupported_jpeg_coding(bytes: &[u8]) -> Option<&'static str> {
    let mut at = 2; // after SOI
    loop {
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(at + 1)?;
        match marker {
            0xFF => at += 1, // fill byte
            0x01 | 0xD0..=0xD7 => at += 2,
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                return match marker {
                    0xC3 | 0xC7 | 0xCB | 0xCF => Some("a lossless"),
                    0xC9..=0xCF => Some("an arithmetic-coded"),
                    0xC5 | 0xC6 => Some("a hierarchical"),
                    _ => None,
                };
            }
            0xDA | 0xD9 => return None,
            _ => {
                let length = u16::from_be_bytes([*bytes.get(at + 2)?, *bytes.get(at + 3)?]);
                at += 2 + usize::from(length);
            }
        }
    }
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
    /// `jpeg-encoder` with AVX2 where the CPU has it. Same baseline JPEG, quantisation tables
    /// scaled from the standard ones by quality, and no chroma subsampling (4:4:4), as the
    /// `image` crate writes it; faster (warren-bench's image pipelines).
    Simd,
    /// The `image` crate's encoder (scalar code): warren-bench's baseline.
    #[cfg(feature = "pipelines")]
    ImageCrate,
}

/// JPEG quality when the job gives none.
const DEFAULT_JPEG_QUALITY: u8 = 85;

/// Encodes `img` as `format`; `quality` (1..=100) applies to JPEG. PNG and WebP are lossless.
pub fn encode(img: &DynamicImage, format: Format, quality: Option<u8>) -> Result<Vec<u8>, JobError> {
    encode_with(img, format, quality, JpegWriter::Simd)
}

/// [`encode`] with a choice of JPEG encoder (warren-bench measures one against the other).
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
        #[cfg(feature = "pipelines")]
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

    #[test]
    fn formats_parse_by_their_wire_names() {
        names::check_wire_names(&Format::ALL);
        // The file extension is not a format's name.
        assert_eq!("jpg".parse::<Format>().unwrap_err().expected, ["png", "jpeg", "webp"]);
    }

    fn jpeg() -> Vec<u8> {
        let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 90]));
        encode(&DynamicImage::ImageRgb8(img), Format::Jpeg, Some(90)).expect("encode")
    }

    /// Pillow's rule at every boundary: for each scale d, a side of d * needed - 1, d * needed
    /// and d * needed + 1 pixels (8 * 240 = 1920), on either side, and sizes that are not
    /// multiples of 8, where libjpeg-turbo's rounded-up size would cover the target but the
    /// image at exactly 1/d does not.
    #[rstest::rstest]
    #[case::below_an_eighth((1919, 1080), (240, 135), 4)]
    #[case::an_eighth((1920, 1080), (240, 135), 8)]
    #[case::above_an_eighth((1921, 1080), (240, 135), 8)]
    #[case::height_below_an_eighth((1920, 1079), (240, 135), 4)]
    #[case::both_below_an_eighth((1919, 1079), (240, 135), 4)]
    #[case::crop_rounding_up_to_an_eighth((1913, 1080), (240, 135), 4)]
    #[case::below_a_quarter((959, 540), (240, 135), 2)]
    #[case::a_quarter((960, 540), (240, 135), 4)]
    #[case::above_a_quarter((961, 541), (240, 135), 4)]
    #[case::below_a_half((479, 270), (240, 135), 1)]
    #[case::a_half((480, 270), (240, 135), 2)]
    #[case::above_a_half((481, 270), (240, 135), 2)]
    #[case::height_below_a_half((480, 269), (240, 135), 1)]
    #[case::the_target((240, 135), (240, 135), 1)]
    #[case::below_the_target((239, 135), (240, 135), 1)]
    #[case::fit_256((1920, 1080), (256, 144), 4)]
    #[case::fit_256_wider((1920, 1080), (257, 144), 4)]
    #[case::china_to_81x54((641, 427), (81, 54), 4)]
    #[case::china_half_too_small((640, 427), (400, 300), 1)]
    #[case::china_half((640, 427), (320, 10), 2)]
    #[case::one_block((8, 8), (1, 1), 8)]
    #[case::under_a_block((7, 7), (1, 1), 4)]
    #[case::one_pixel((1, 1), (1, 1), 1)]
    #[case::nothing_needed((100, 3), (0, 0), 8)]
    #[case::absurd_target((1, 1), (u32::MAX, u32::MAX), 1)]
    #[case::no_overflow((u32::MAX, u32::MAX), (u32::MAX / 8, u32::MAX / 8), 8)]
    fn the_scale_is_the_largest_whose_exact_size_covers_the_target(
        #[case] size: (u32, u32),
        #[case] needed: (u32, u32),
        #[case] scale: u32,
    ) {
        assert_eq!(dct_scale(size, needed), scale, "{size:?} for {needed:?}");
        assert_eq!(dct_scale((size.1, size.0), (needed.1, needed.0)), scale, "transposed");
    }

    /// Over every size up to 80x80 and every need up to 24x24, the scale is the one Pillow 12's
    /// `JpegImageFile.draft()` computes, written as Pillow writes it.
    #[test]
    fn the_scale_is_pillows_draft_scale_everywhere() {
        let pillow = |(w, h): (u32, u32), (tw, th): (u32, u32)| {
            let scale = (w / tw).min(h / th);
            [8, 4, 2, 1].into_iter().find(|&s| scale >= s).unwrap_or(1)
        };
        for size in (1..=80).flat_map(|w| (1..=80).map(move |h| (w, h))) {
            for needed in (1..=24).flat_map(|w| (1..=24).map(move |h| (w, h))) {
                assert_eq!(dct_scale(size, needed), pillow(size, needed), "{size:?} for {needed:?}");
            }
        }
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
