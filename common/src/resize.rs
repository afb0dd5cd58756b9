//! `image.resize`: decode a PNG, JPEG or WebP image, resize it (fit, fill or exact) with the
//! chosen filter, encode it to the requested format.

use image::imageops::FilterType;
use serde::{Deserialize, Serialize};

use crate::error::JobError;
use crate::image_io::{self, Format};
use crate::limits::Limits;

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

impl Filter {
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

pub fn resize(job: &ResizeJob, limits: &Limits) -> Result<ResizeOutput, JobError> {
    job.validate(limits)?;
    let (img, source_format) = image_io::decode(&job.image, limits)?;
    let filter = job.filter.filter_type();
    let out = match job.mode {
        ResizeMode::Fit => img.resize(job.width, job.height, filter),
        ResizeMode::Fill => img.resize_to_fill(job.width, job.height, filter),
        ResizeMode::Exact => img.resize_exact(job.width, job.height, filter),
    };
    let format = job.format.unwrap_or(source_format);
    let bytes = image_io::encode(&out, format, job.quality)?;
    Ok(ResizeOutput {
        image: bytes,
        format,
        width: out.width(),
        height: out.height(),
        source_width: img.width(),
        source_height: img.height(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

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
