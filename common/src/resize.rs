//! `image.resize`: decode a PNG, JPEG or WebP image, resize it (fit, fill or exact) with the
//! chosen filter, encode it to the requested format.

use image::DynamicImage;
use image::imageops::FilterType;
use serde::{Deserialize, Serialize};

use crate::error::JobError;
use crate::image_io::{self, Format, JpegWriter};
use crate::kind::{BlockingKind, Context, Kind};
use crate::limits::Limits;
use crate::names::{self, UnknownName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Keep the aspect ratio; the result fits inside width x height.
    #[default]
    Fit,
    /// Keep the aspect ratio; cover width x height, then crop the centre to exactly that.
    Fill,
    /// Stretch to exactly width x height.
    Exact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    Nearest,
    Triangle,
    CatmullRom,
    Gaussian,
    #[default]
    Lanczos3,
}

impl ResizeMode {
    /// Every mode, in declaration order.
    pub const ALL: [Self; 3] = [Self::Fit, Self::Fill, Self::Exact];

    /// The mode's name on the wire (serde's).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fit => "fit",
            Self::Fill => "fill",
            Self::Exact => "exact",
        }
    }
}

impl std::fmt::Display for ResizeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ResizeMode {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        names::parse("resize mode", s, &Self::ALL, Self::as_str)
    }
}

impl Filter {
    /// Every filter, in declaration order.
    pub const ALL: [Self; 5] = [Self::Nearest, Self::Triangle, Self::CatmullRom, Self::Gaussian, Self::Lanczos3];

    /// The filter's name on the wire (serde's).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nearest => "nearest",
            Self::Triangle => "triangle",
            Self::CatmullRom => "catmull_rom",
            Self::Gaussian => "gaussian",
            Self::Lanczos3 => "lanczos3",
        }
    }

    pub fn filter_type(self) -> FilterType {
        match self {
            Self::Nearest => FilterType::Nearest,
            Self::Triangle => FilterType::Triangle,
            Self::CatmullRom => FilterType::CatmullRom,
            Self::Gaussian => FilterType::Gaussian,
            Self::Lanczos3 => FilterType::Lanczos3,
        }
    }
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Filter {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        names::parse("filter", s, &Self::ALL, Self::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResizeJob {
    /// The input image: PNG, JPEG or WebP.
    #[serde(with = "crate::bytes")]
    pub image: Vec<u8>,
    pub width: u32,
    pub height: u32,
    #[serde(default)]
    pub mode: ResizeMode,
    #[serde(default)]
    pub filter: Filter,
    /// Output format; the input's format when absent.
    #[serde(default)]
    pub format: Option<Format>,
    /// JPEG quality, 1 to 100 (default 85). PNG and WebP output is lossless and ignores it.
    #[serde(default)]
    pub quality: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResizeOutput {
    #[serde(with = "crate::bytes")]
    pub image: Vec<u8>,
    pub format: Format,
    pub width: u32,
    pub height: u32,
    /// The input's dimensions, for the record.
    pub source_width: u32,
    pub source_height: u32,
}

impl ResizeJob {
    pub fn validate(&self, limits: &Limits) -> Result<(), JobError> {
        let (w, h) = (self.width, self.height);
        if w == 0 || h == 0 {
            return Err(JobError::InvalidParams(format!("width and height must be at least 1, got {w}x{h}")));
        }
        if w > limits.max_output_width || h > limits.max_output_height {
            return Err(JobError::LimitExceeded(format!(
                "requested output {w}x{h} exceeds the maximum of {}x{}",
                limits.max_output_width, limits.max_output_height
            )));
        }
        if let Some(q) = self.quality
            && !(1..=100).contains(&q)
        {
            return Err(JobError::InvalidParams(format!("quality must be 1 to 100, got {q}")));
        }
        Ok(())
    }
}

/// Which resampler a [`Pipeline`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resampler {
    /// `fast_image_resize` (SIMD: SSE4.1/AVX2 on x86_64, NEON on aarch64).
    Simd,
    /// The `image` crate's `imageops` (scalar code), the same filters: warren-bench's baseline.
    #[cfg(feature = "pipelines")]
    ImageCrate,
}

/// How an image job decodes, resamples and encodes. Workers run [`Pipeline::WORKER`]; with the
/// `pipelines` feature (warren-bench), the variants it is measured against are there too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipeline {
    /// Let a JPEG decode at 1/2, 1/4 or 1/8 scale where the output allows it.
    pub scaled_decode: bool,
    pub resampler: Resampler,
    pub jpeg: JpegWriter,
}

impl Pipeline {
    /// libjpeg-turbo's decode, scaled in the DCT domain where the output is small enough
    /// ([`Filter::decode_margin`]), SIMD resampling, JPEG outputs written by `jpeg-encoder`.
    pub const WORKER: Self = Self { scaled_decode: true, resampler: Resampler::Simd, jpeg: JpegWriter::Simd };
}

#[cfg(feature = "pipelines")]
impl Pipeline {
    /// The worker's, with every JPEG decoded at full size.
    pub const FULL_DECODE: Self = Self { scaled_decode: false, ..Self::WORKER };
    /// The worker's at full size, with the `image` crate's JPEG encoder.
    pub const IMAGE_JPEG_ENCODER: Self = Self { jpeg: JpegWriter::ImageCrate, ..Self::FULL_DECODE };
    /// The `image` crate's resampling and JPEG encoder after a full decode (libjpeg-turbo's, as
    /// in every pipeline).
    pub const REFERENCE: Self =
        Self { scaled_decode: false, resampler: Resampler::ImageCrate, jpeg: JpegWriter::ImageCrate };
}

impl Filter {
    /// How many times the output size (per side) a JPEG must still be when decoded at reduced
    /// scale. The scaled inverse DCT is close to a box filter: nearest and bilinear (triangle)
    /// resampling are no sharper than that, so the output size suffices, which is also what
    /// Pillow's `draft()` keeps. The wider filters (Catmull-Rom, Gaussian, Lanczos) would lose
    /// the sharpness they are chosen for, so they get twice the size and do the final low-pass
    /// themselves (the PSNR table in docs/benchmarks.md).
    pub fn decode_margin(self) -> u32 {
        match self {
            Self::Nearest | Self::Triangle => 1,
            Self::CatmullRom | Self::Gaussian | Self::Lanczos3 => 2,
        }
    }
}

/// Where a resize's output comes from in a `w x h` source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// The output's size.
    pub output: (u32, u32),
    /// The whole source scaled (aspect kept) to fit the output (`Fit`) or cover it (`Fill`,
    /// before its centre is cropped), or stretched to it (`Exact`): the smallest size a
    /// decode can shrink the source to without losing what the output shows.
    pub scaled: (u32, u32),
    /// The region of the source the output is resampled from, in source pixels (left, top,
    /// width, height): all of it, or for `Fill` its centre, cropped on whole pixels of the
    /// scaled source as the `image` crate does.
    pub region: [f64; 4],
}

impl ResizeJob {
    pub fn geometry(&self, w: u32, h: u32) -> Geometry {
        let scaled = |ratio: f64| {
            let side = |n: u32| ((f64::from(n) * ratio).round() as u32).max(1);
            (side(w), side(h))
        };
        let (wr, hr) = (f64::from(self.width) / f64::from(w), f64::from(self.height) / f64::from(h));
        let all = [0.0, 0.0, f64::from(w), f64::from(h)];
        match self.mode {
            ResizeMode::Fit => {
                let fit = scaled(wr.min(hr));
                Geometry { output: fit, scaled: fit, region: all }
            }
            ResizeMode::Fill => {
                let ((ow, oh), (sw, sh)) = ((self.width, self.height), scaled(wr.max(hr)));
                let (x, y) = (sw.saturating_sub(ow) / 2, sh.saturating_sub(oh) / 2);
                let (fx, fy) = (f64::from(w) / f64::from(sw), f64::from(h) / f64::from(sh));
                let region = [f64::from(x) * fx, f64::from(y) * fy, f64::from(ow) * fx, f64::from(oh) * fy];
                Geometry { output: (ow, oh), scaled: (sw, sh), region }
            }
            ResizeMode::Exact => {
                Geometry { output: (self.width, self.height), scaled: (self.width, self.height), region: all }
            }
        }
    }
}

impl ResizeJob {
    /// The smallest size a decode of a `w x h` source may shrink it to for this job: the whole
    /// source at [`Geometry::scaled`], times the filter's [`Filter::decode_margin`].
    /// [`image_io::dct_scale`] then compares it with the source, as Pillow's `draft()` is given
    /// the scaled size; for `Fill` that is also the crop's region against the output, since the
    /// scaled source has the region's proportion to the output.
    pub fn decode_target(&self, w: u32, h: u32) -> (u32, u32) {
        let (sw, sh) = self.geometry(w, h).scaled;
        let margin = self.filter.decode_margin();
        (sw.saturating_mul(margin), sh.saturating_mul(margin))
    }
}

pub fn resize(job: &ResizeJob, limits: &Limits) -> Result<ResizeOutput, JobError> {
    resize_with(job, limits, Pipeline::WORKER)
}

/// [`resize`] through another pipeline (warren-bench measures them against each other).
pub fn resize_with(job: &ResizeJob, limits: &Limits, pipeline: Pipeline) -> Result<ResizeOutput, JobError> {
    job.validate(limits)?;
    let decoded = image_io::decode_for(&job.image, limits, |w, h| {
        if pipeline.scaled_decode { job.decode_target(w, h) } else { (w, h) }
    })?;
    let Geometry { output: (ow, oh), region, .. } = job.geometry(decoded.source.0, decoded.source.1);
    let img = &decoded.image;
    let out = match (pipeline.resampler, job.mode) {
        #[cfg(feature = "pipelines")]
        (Resampler::ImageCrate, ResizeMode::Fill) => img.resize_to_fill(ow, oh, job.filter.filter_type()),
        #[cfg(feature = "pipelines")]
        (Resampler::ImageCrate, _) => img.resize_exact(ow, oh, job.filter.filter_type()),
        (Resampler::Simd, _) => resample(img, (ow, oh), job.filter, decoded.within(region))?,
    };
    let format = job.format.unwrap_or(decoded.format);
    let bytes = image_io::encode_with(&out, format, job.quality, pipeline.jpeg)?;
    Ok(ResizeOutput {
        image: bytes,
        format,
        width: out.width(),
        height: out.height(),
        source_width: decoded.source.0,
        source_height: decoded.source.1,
    })
}

/// Resamples with `fast_image_resize` to exactly `size` the `crop` (left, top, width, height)
/// of `img` ([`image_io::Decoded::within`]). Alpha is premultiplied while resampling, as
/// `image` does.
pub(crate) fn resample(
    img: &DynamicImage,
    size: (u32, u32),
    filter: Filter,
    [left, top, width, height]: [f64; 4],
) -> Result<DynamicImage, JobError> {
    use fast_image_resize::{FilterType as F, ResizeAlg, ResizeOptions, Resizer};
    let algorithm = match filter {
        Filter::Nearest => ResizeAlg::Nearest,
        Filter::Triangle => ResizeAlg::Convolution(F::Bilinear),
        Filter::CatmullRom => ResizeAlg::Convolution(F::CatmullRom),
        Filter::Gaussian => ResizeAlg::Convolution(F::Gaussian),
        Filter::Lanczos3 => ResizeAlg::Convolution(F::Lanczos3),
    };
    let options = ResizeOptions::new().resize_alg(algorithm).crop(left, top, width, height);
    let mut out = DynamicImage::new(size.0, size.1, img.color());
    Resizer::new().resize(img, &mut out, &options).map_err(|e| {
        JobError::Encode(format!("resampling {}x{} to {}x{}: {e}", img.width(), img.height(), size.0, size.1))
    })?;
    Ok(out)
}

/// The `image.resize` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resize;

impl Kind for Resize {
    const NAME: &'static str = "image.resize";
    type Input = ResizeJob;
    type Output = ResizeOutput;

    fn validate(&self, input: &ResizeJob, limits: &Limits) -> Result<(), JobError> {
        input.validate(limits)
    }
}

impl BlockingKind for Resize {
    fn run(&self, input: ResizeJob, cx: &Context) -> Result<ResizeOutput, JobError> {
        resize(&input, &cx.limits)
    }
}

impl From<ResizeJob> for crate::job::Job {
    fn from(job: ResizeJob) -> Self {
        crate::job::Job::new::<Resize>(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn modes_and_filters_parse_by_their_wire_names() {
        names::check_wire_names(&ResizeMode::ALL);
        names::check_wire_names(&Filter::ALL);
        assert_eq!(
            "bicubic".parse::<Filter>().unwrap_err().to_string(),
            r#"unknown filter "bicubic"; expected one of: nearest, triangle, catmull_rom, gaussian, lanczos3"#
        );
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        image_io::encode(&image::DynamicImage::ImageRgb8(img), Format::Png, None).expect("encode png")
    }

    fn job(mode: ResizeMode, format: Option<Format>) -> ResizeJob {
        ResizeJob { image: png(200, 100), width: 50, height: 50, mode, filter: Filter::Triangle, format, quality: None }
    }

    #[rstest]
    #[case::fit(ResizeMode::Fit, 50, 25)]
    #[case::fill(ResizeMode::Fill, 50, 50)]
    #[case::exact(ResizeMode::Exact, 50, 50)]
    fn modes_give_expected_dimensions(#[case] mode: ResizeMode, #[case] w: u32, #[case] h: u32) {
        let out = resize(&job(mode, None), &Limits::default()).expect("resize");
        assert_eq!((out.width, out.height), (w, h));
        assert_eq!(out.format, Format::Png);
        let back = image::load_from_memory(&out.image).expect("output decodes");
        assert_eq!((back.width(), back.height()), (w, h));
    }

    #[rstest]
    #[case(Format::Png)]
    #[case(Format::Jpeg)]
    #[case(Format::Webp)]
    fn every_output_format_round_trips(#[case] format: Format) {
        let out = resize(&job(ResizeMode::Fit, Some(format)), &Limits::default()).expect("resize");
        assert_eq!(image_io::sniff(&out.image).expect("sniff"), format);
    }

    fn sample(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/images").join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// PSNR of one encoded output against another, over RGBA (the PNG with alpha keeps it).
    #[cfg(feature = "pipelines")]
    fn psnr(a: &[u8], b: &[u8]) -> f64 {
        let load = |bytes| image::load_from_memory(bytes).expect("an output decodes").to_rgba8();
        crate::quality::psnr(&load(a), &load(b)).expect("the same size")
    }

    /// The SIMD resampling against the `image` crate's (`Pipeline::REFERENCE`), both after the
    /// same libjpeg-turbo decode, at full size or (the worker's pipeline) scaled: same
    /// dimensions, and at full size pixels a viewer cannot tell apart (PSNR above 40 dB;
    /// identical images would be infinite, JPEG at quality 85 is ~35-40).
    #[cfg(feature = "pipelines")]
    #[rstest]
    #[case::jpeg_fit("china.jpg", ResizeMode::Fit, 256, 256, Filter::Triangle)]
    #[case::jpeg_fill("china.jpg", ResizeMode::Fill, 160, 200, Filter::Lanczos3)]
    #[case::jpeg_exact_small("china.jpg", ResizeMode::Exact, 64, 48, Filter::CatmullRom)]
    #[case::jpeg_mild("china.jpg", ResizeMode::Fit, 500, 500, Filter::Lanczos3)]
    #[case::png_alpha("flower.png", ResizeMode::Fit, 100, 100, Filter::Triangle)]
    #[case::webp_fill("china_small.webp", ResizeMode::Fill, 90, 90, Filter::Gaussian)]
    fn the_simd_pipeline_matches_the_reference(
        #[case] name: &str,
        #[case] mode: ResizeMode,
        #[case] width: u32,
        #[case] height: u32,
        #[case] filter: Filter,
        #[values(Pipeline::FULL_DECODE, Pipeline::WORKER)] pipeline: Pipeline,
    ) {
        let job =
            ResizeJob { image: sample(name), width, height, mode, filter, format: Some(Format::Png), quality: None };
        let fast = resize_with(&job, &Limits::default(), pipeline).expect("fast");
        let reference = resize_with(&job, &Limits::default(), Pipeline::REFERENCE).expect("reference");
        assert_eq!(
            (fast.width, fast.height, fast.source_width, fast.source_height),
            (reference.width, reference.height, reference.source_width, reference.source_height)
        );
        let db = psnr(&fast.image, &reference.image);
        // A scaled decode is a box filter before the resampling: it differs from a full decode by
        // what the box removes (measured 39.6 dB at 1/2 with Triangle, 48.3 at 1/4 with
        // Catmull-Rom at twice the size; 34.2 and 43.0 while the region was mapped onto the
        // rounded-up decoded size instead of exactly 1/d); docs/benchmarks.md compares it with
        // Pillow's draft mode, the e2e imaging test asserts it is not worse.
        let floor = if pipeline.scaled_decode { 37.0 } else { 40.0 };
        println!("{name} {mode:?} {width}x{height} {filter:?} {pipeline:?}: PSNR {db:.1} dB");
        assert!(db > floor, "{name} {mode:?} {width}x{height} {pipeline:?}: PSNR {db:.1} dB");
    }

    /// The SIMD JPEG encoder is as faithful as the `image` crate's at the same quality: measured
    /// against the lossless (PNG) output of the same resize, within 0.5 dB PSNR, at no more than
    /// 5 % more bytes (measured: the same PSNR to 0.03 dB, 0.3-1.6 % more bytes).
    #[cfg(feature = "pipelines")]
    #[rstest]
    fn the_simd_jpeg_encoder_is_as_faithful_as_the_image_crates(#[values(40, 85, 95)] quality: u8) {
        let at = |format, pipeline| {
            let job = ResizeJob {
                image: sample("china.jpg"),
                width: 256,
                height: 256,
                mode: ResizeMode::Fit,
                filter: Filter::Triangle,
                format: Some(format),
                quality: Some(quality),
            };
            resize_with(&job, &Limits::default(), pipeline).expect("resize").image
        };
        let exact = at(Format::Png, Pipeline::FULL_DECODE);
        let (simd, image_crate) =
            (at(Format::Jpeg, Pipeline::FULL_DECODE), at(Format::Jpeg, Pipeline::IMAGE_JPEG_ENCODER));
        let (db_simd, db_image) = (psnr(&simd, &exact), psnr(&image_crate, &exact));
        println!(
            "quality {quality}: jpeg-encoder {db_simd:.2} dB {} bytes, image {db_image:.2} dB {} bytes",
            simd.len(),
            image_crate.len()
        );
        assert!(db_simd > db_image - 0.5, "quality {quality}: {db_simd:.2} dB against {db_image:.2} dB");
        assert!(
            simd.len() * 20 <= image_crate.len() * 21,
            "quality {quality}: {} against {} bytes",
            simd.len(),
            image_crate.len()
        );
    }

    /// What each mode and filter asks the decoder for, and the scale that gives, for a 1920x1080
    /// photo into 256x256: the scaled source (Fit 256x144, Fill 455x256 before its crop, Exact
    /// 256x256), twice it for the filters wider than bilinear.
    #[rstest]
    #[case::fit_nearest(ResizeMode::Fit, Filter::Nearest, (256, 144), 4)]
    #[case::fit_triangle(ResizeMode::Fit, Filter::Triangle, (256, 144), 4)]
    #[case::fit_catmull_rom(ResizeMode::Fit, Filter::CatmullRom, (512, 288), 2)]
    #[case::fit_gaussian(ResizeMode::Fit, Filter::Gaussian, (512, 288), 2)]
    #[case::fit_lanczos3(ResizeMode::Fit, Filter::Lanczos3, (512, 288), 2)]
    #[case::fill_nearest(ResizeMode::Fill, Filter::Nearest, (455, 256), 4)]
    #[case::fill_triangle(ResizeMode::Fill, Filter::Triangle, (455, 256), 4)]
    #[case::fill_catmull_rom(ResizeMode::Fill, Filter::CatmullRom, (910, 512), 2)]
    #[case::fill_gaussian(ResizeMode::Fill, Filter::Gaussian, (910, 512), 2)]
    #[case::fill_lanczos3(ResizeMode::Fill, Filter::Lanczos3, (910, 512), 2)]
    #[case::exact_nearest(ResizeMode::Exact, Filter::Nearest, (256, 256), 4)]
    #[case::exact_triangle(ResizeMode::Exact, Filter::Triangle, (256, 256), 4)]
    #[case::exact_catmull_rom(ResizeMode::Exact, Filter::CatmullRom, (512, 512), 2)]
    #[case::exact_gaussian(ResizeMode::Exact, Filter::Gaussian, (512, 512), 2)]
    #[case::exact_lanczos3(ResizeMode::Exact, Filter::Lanczos3, (512, 512), 2)]
    fn the_decode_target_is_the_scaled_source_times_the_filters_margin(
        #[case] mode: ResizeMode,
        #[case] filter: Filter,
        #[case] target: (u32, u32),
        #[case] scale: u32,
    ) {
        let job = ResizeJob { width: 256, height: 256, mode, filter, ..job(mode, None) };
        assert_eq!(job.decode_target(1920, 1080), target);
        assert_eq!(image_io::dct_scale((1920, 1080), target), scale);
    }

    /// The decode target at the edges: an upscale asks for more than the source (a full
    /// decode), an output of the source's size asks for all of it, and a huge output
    /// saturates instead of overflowing.
    #[rstest]
    #[case::upscale(ResizeMode::Fit, Filter::Triangle, (2000, 2000), (100, 50), (2000, 1000))]
    #[case::same_size(ResizeMode::Exact, Filter::Nearest, (640, 427), (640, 427), (640, 427))]
    #[case::one_pixel(ResizeMode::Fill, Filter::Lanczos3, (1, 1), (1920, 1080), (4, 2))]
    #[case::saturates(ResizeMode::Exact, Filter::Lanczos3, (u32::MAX, 2), (10, 10), (u32::MAX, 4))]
    fn the_decode_target_at_the_edges(
        #[case] mode: ResizeMode,
        #[case] filter: Filter,
        #[case] (width, height): (u32, u32),
        #[case] (w, h): (u32, u32),
        #[case] target: (u32, u32),
    ) {
        let job = ResizeJob { width, height, mode, filter, ..job(mode, None) };
        assert_eq!(job.decode_target(w, h), target);
    }

    #[test]
    fn a_jpeg_is_decoded_small_only_when_the_output_is_small() {
        let photo = sample("china.jpg"); // 640x427
        let at = |w, h| image_io::decode_for(&photo, &Limits::default(), |_, _| (w, h)).expect("decode");
        let quarter = at(150, 100);
        assert_eq!((quarter.image.width(), quarter.image.height()), (160, 107), "1/4 scale, not below 150x100");
        assert_eq!(quarter.source, (640, 427));
        let full = at(400, 300);
        assert_eq!((full.image.width(), full.image.height()), (640, 427), "less than half: full size");
    }

    #[test]
    fn a_truncated_jpeg_is_refused_on_the_scaled_path_too() {
        let mut photo = sample("china.jpg");
        photo.truncate(photo.len() / 2);
        let err = image_io::decode_for(&photo, &Limits::default(), |_, _| (10, 10)).unwrap_err();
        assert_eq!(err.error_type(), "corrupt_image");
    }

    #[test]
    fn geometry_keeps_the_aspect_and_crops_the_centre_on_whole_scaled_pixels() {
        let at = |mode, (width, height)| ResizeJob { width, height, mode, ..job(mode, None) }.geometry(1920, 1080);
        let fit = at(ResizeMode::Fit, (256, 256));
        assert_eq!((fit.output, fit.scaled, fit.region), ((256, 144), (256, 144), [0.0, 0.0, 1920.0, 1080.0]));
        let fill = at(ResizeMode::Fill, (256, 256));
        assert_eq!((fill.output, fill.scaled), ((256, 256), (455, 256)));
        // 455 - 256 = 199 scaled pixels to lose: 99 on the left, in source pixels 99 * 1920 / 455.
        let [left, top, width, height] = fill.region;
        assert!((left - 99.0 * 1920.0 / 455.0).abs() < 1e-9 && top == 0.0, "{:?}", fill.region);
        assert!((width - 256.0 * 1920.0 / 455.0).abs() < 1e-9 && height == 1080.0, "{:?}", fill.region);
        let exact = at(ResizeMode::Exact, (100, 300));
        assert_eq!((exact.output, exact.scaled, exact.region), ((100, 300), (100, 300), [0.0, 0.0, 1920.0, 1080.0]));
    }

    /// The crop region's far edge, computed in floating point, can land a rounding step past
    /// the image's edge (480 * (4000 / 480) = 4000.0000000000005); the resampler then refused the
    /// job as `encode_failed`.
    #[rstest]
    #[case::png_28x34_to_50x50((28, 34), (50, 50))]
    #[case::png_6000x4000_to_480x480((6000, 4000), (480, 480))]
    fn fill_never_crops_past_the_image_edge(#[case] (w, h): (u32, u32), #[case] (width, height): (u32, u32)) {
        for format in [Format::Png, Format::Jpeg] {
            let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
            let image = image_io::encode(&image::DynamicImage::ImageRgb8(img), format, Some(90)).expect("encode");
            let job = ResizeJob { image, width, height, mode: ResizeMode::Fill, ..job(ResizeMode::Fill, None) };
            let out = resize(&job, &Limits::default()).unwrap_or_else(|e| panic!("{w}x{h} {format:?}: {e}"));
            assert_eq!((out.width, out.height), (width, height));
        }
    }

    #[test]
    fn zero_size_is_invalid() {
        let mut j = job(ResizeMode::Fit, None);
        j.width = 0;
        assert_eq!(resize(&j, &Limits::default()).unwrap_err().error_type(), "invalid_params");
    }

    #[test]
    fn truncated_png_is_corrupt() {
        let mut j = job(ResizeMode::Fit, None);
        j.image.truncate(j.image.len() / 2);
        assert_eq!(resize(&j, &Limits::default()).unwrap_err().error_type(), "corrupt_image");
    }

    #[test]
    fn oversized_input_is_refused_before_decoding() {
        let limits = Limits { max_image_pixels: 10_000, ..Limits::default() };
        let err = resize(&job(ResizeMode::Fit, None), &limits).unwrap_err();
        assert_eq!(err.error_type(), "limit_exceeded", "{err}");
    }

    #[test]
    fn random_bytes_are_not_an_image() {
        let mut j = job(ResizeMode::Fit, None);
        j.image = vec![0x42; 64];
        assert_eq!(resize(&j, &Limits::default()).unwrap_err().error_type(), "unsupported_format");
    }
}
