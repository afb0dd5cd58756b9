//! `image.blurhash`: the BlurHash placeholder of an image (a short text a page shows, blurred,
//! while the image loads). Blocking CPU work: decoded within Warren's image limits (a JPEG at a
//! reduced scale), shrunk to at most 64 pixels a side, then encoded with the `blurhash` crate.
//!
//! Errors: `invalid_params` (components outside 1..=9, permanent); the image errors of Warren's
//! decoder (`unsupported_format`, `corrupt_image`, `limit_exceeded`, permanent).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use warren_consumer::common::bytes;
use warren_consumer::common::image_io;
use warren_consumer::{BlockingKind, Context, JobError, Kind, Limits, RouteDefaults};

/// Largest side the hash is computed from: BlurHash keeps only a few components, and its cost
/// grows with the pixels.
const SIDE: u32 = 64;

#[derive(Debug, Clone, Copy, Default)]
pub struct Blurhash;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlurhashJob {
    /// PNG, JPEG or WebP (base64 in JSON).
    #[serde(with = "bytes")]
    pub image: Vec<u8>,
    /// Components across and down, 1 to 9 each (default 4 x 3).
    #[serde(default = "four")]
    pub x_components: u32,
    #[serde(default = "three")]
    pub y_components: u32,
}

fn four() -> u32 {
    4
}

fn three() -> u32 {
    3
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlurhashOutput {
    pub hash: String,
    /// The source image's size.
    pub width: u32,
    pub height: u32,
}

impl Kind for Blurhash {
    const NAME: &'static str = "image.blurhash";
    type Input = BlurhashJob;
    type Output = BlurhashOutput;

    fn validate(&self, job: &BlurhashJob, _limits: &Limits) -> Result<(), JobError> {
        for (name, n) in [("x_components", job.x_components), ("y_components", job.y_components)] {
            if !(1..=9).contains(&n) {
                return Err(JobError::InvalidParams(format!("{name} must be 1 to 9, got {n}")));
            }
        }
        Ok(())
    }

    fn route() -> RouteDefaults {
        RouteDefaults { time_limit: Duration::from_secs(20), ..RouteDefaults::default() }
    }
}

impl BlockingKind for Blurhash {
    fn run(&self, job: BlurhashJob, cx: &Context) -> Result<BlurhashOutput, JobError> {
        let decoded = image_io::decode_for(&job.image, &cx.limits, |w, h| (w.min(SIDE), h.min(SIDE)))?;
        let (width, height) = decoded.source;
        let small = decoded.image.thumbnail(SIDE, SIDE).to_rgba8();
        let hash = blurhash::encode(job.x_components, job.y_components, small.width(), small.height(), small.as_raw())
            .map_err(|e| JobError::InvalidParams(format!("blurhash: {e}")))?;
        Ok(BlurhashOutput { hash, width, height })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    fn cx() -> Context {
        Context::new(0, Instant::now() + Duration::from_secs(5), Arc::new(Limits::default()))
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, _| image::Rgb([(x * 255 / w) as u8, 80, 160]));
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .expect("png");
        out
    }

    #[test]
    fn an_image_gets_a_hash_of_its_components_and_its_size() {
        let job = BlurhashJob { image: png(300, 200), x_components: 4, y_components: 3 };
        let out = Blurhash.run(job, &cx()).expect("hashed");
        // 1 size flag + 1 max AC + 4 DC + 2 per AC component (4 x 3 - 1 of them).
        assert_eq!(out.hash.len(), 6 + 2 * 11, "{}", out.hash);
        assert_eq!((out.width, out.height), (300, 200));
        let again = Blurhash.run(BlurhashJob { image: png(300, 200), x_components: 4, y_components: 3 }, &cx());
        assert_eq!(again.expect("hashed").hash, out.hash, "the same image, the same hash");
    }

    #[test]
    fn bad_input_is_a_permanent_error_with_its_type() {
        let job = BlurhashJob { image: png(8, 8), x_components: 10, y_components: 3 };
        assert_eq!(Blurhash.validate(&job, &Limits::default()).unwrap_err().error_type(), "invalid_params");
        let junk = BlurhashJob { image: b"not an image".to_vec(), x_components: 4, y_components: 3 };
        let e = Blurhash.run(junk, &cx()).unwrap_err();
        assert_eq!((e.error_type(), e.class().as_str()), ("unsupported_format", "permanent"));
    }
}
