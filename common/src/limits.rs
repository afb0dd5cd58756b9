//! Input limits: the guard rails between a message's content and the worker's memory and time.
//! Every violation is a permanent error with a reason naming the limit.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest message body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest input image width and height, in pixels (checked from the header, before decoding).
    pub max_image_width: u32,
    pub max_image_height: u32,
    /// Largest input pixel count: stops decompression bombs that stay under each side's limit.
    pub max_image_pixels: u64,
    /// Largest requested output width and height for `image.resize`.
    pub max_output_width: u32,
    pub max_output_height: u32,
    /// Input image formats accepted: any of "png", "jpeg", "webp".
    pub allowed_formats: Vec<String>,
    /// Most `rounds` a `checksum` job may ask for.
    pub max_checksum_rounds: u32,
    /// Largest object a job's reference (`{"ref": ...}` in a bytes field) may name, in bytes:
    /// checked against the store's size before downloading.
    pub max_ref_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            max_image_width: 8192,
            max_image_height: 8192,
            max_image_pixels: 40_000_000,
            max_output_width: 4096,
            max_output_height: 4096,
            allowed_formats: vec!["png".into(), "jpeg".into(), "webp".into()],
            max_checksum_rounds: 1_000_000,
            max_ref_bytes: 64 * 1024 * 1024,
        }
    }
}
