//! How close one image is to another, for what compares pipelines (warren-bench, the tests of
//! scaled decoding): the `pipelines` feature, not what workers run.

use image::{ImageBuffer, Pixel};

/// Peak signal-to-noise ratio of `a` against `b` (the same size), in dB over every sample;
/// infinite when they are the same. The pixel type chooses the channels compared: RGB for
/// opaque outputs; RGBA counts alpha too, which two opaque images agree on everywhere, so their
/// figure is 10 log10(4/3) = 1.25 dB higher than over RGB.
pub fn psnr<P: Pixel<Subpixel = u8>>(a: &ImageBuffer<P, Vec<u8>>, b: &ImageBuffer<P, Vec<u8>>) -> Result<f64, String> {
    if a.dimensions() != b.dimensions() {
        return Err(format!("{:?} against {:?}: not the same size", a.dimensions(), b.dimensions()));
    }
    let se: f64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum();
    let mse = se / a.as_raw().len().max(1) as f64;
    Ok(if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64.powi(2) / mse).log10() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_is_infinite_for_the_same_image_and_falls_with_the_error() {
        let grey = |v: u8| image::RgbImage::from_pixel(4, 2, image::Rgb([v; 3]));
        assert_eq!(psnr(&grey(10), &grey(10)), Ok(f64::INFINITY));
        // Every sample off by 1: 10 log10(255^2 / 1) = 48.13 dB; by 16: 24.05.
        assert!((psnr(&grey(10), &grey(11)).expect("same size") - 48.13).abs() < 0.01);
        assert!((psnr(&grey(10), &grey(26)).expect("same size") - 24.05).abs() < 0.01);
        let opaque = |v: u8| image::RgbaImage::from_pixel(4, 2, image::Rgba([v, v, v, 255]));
        let rgba = psnr(&opaque(10), &opaque(11)).expect("same size");
        assert!((rgba - 48.13 - 10.0 * (4.0f64 / 3.0).log10()).abs() < 0.01, "{rgba}");
        assert!(psnr(&grey(1), &image::RgbImage::new(2, 4)).is_err());
    }
}
