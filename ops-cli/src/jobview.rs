//! A job shown to people whatever its kind: its JSON parameters with every bytes field (long
//! base64 text) replaced by a summary (its size, and format and dimensions when it is an image).
//! Bincode jobs are laid out by their kind's Rust type, which this tool need not have: only
//! their kind is shown.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use warren_common::{Encoding, JobBody, JobEnvelope};

/// Base64 text shorter than this is shown as it is (it is a parameter, not a payload).
const PAYLOAD_CHARS: usize = 64;

/// The job's parameters, summarised, and the summary of its first image, if it has one.
pub fn view(body: &[u8], encoding: Encoding) -> (Option<Value>, Option<Value>) {
    let Ok(opened) = JobEnvelope::open(body, encoding) else { return (None, None) };
    let JobBody::Json(text) = opened.job else { return (None, None) };
    let Ok(mut job) = serde_json::from_str::<Value>(text) else { return (None, None) };
    let mut first_image = None;
    summarise(&mut job, &mut first_image);
    (Some(job), first_image)
}

fn summarise(v: &mut Value, first_image: &mut Option<Value>) {
    match v {
        Value::String(s) if s.len() >= PAYLOAD_CHARS => {
            if let Ok(bytes) = STANDARD.decode(s.as_bytes()) {
                let summary = summarise_bytes(&bytes);
                if first_image.is_none() && !summary["format"].is_null() {
                    *first_image = Some(summary.clone());
                }
                *v = summary;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| summarise(i, first_image)),
        // A reference shown without its query, where a presigned URL keeps its signature.
        Value::Object(fields) if fields.get("ref").and_then(Value::as_str).is_some_and(|r| r.contains('?')) => {
            if let Some(Value::String(url)) = fields.get_mut("ref") {
                url.truncate(url.find('?').unwrap_or(url.len()));
                url.push_str("?…");
            }
        }
        Value::Object(fields) => fields.values_mut().for_each(|f| summarise(f, first_image)),
        _ => {}
    }
}

/// Size, and format and dimensions when the bytes are an image.
pub fn summarise_bytes(bytes: &[u8]) -> Value {
    let format = warren_common::image_io::sniff(bytes).map(|f| f.as_str()).ok();
    let dims = format.and_then(|_| {
        image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().ok()?.into_dimensions().ok()
    });
    json!({"format": format, "width": dims.map(|d| d.0), "height": dims.map(|d| d.1), "bytes": bytes.len()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_fields_of_any_kind_are_summarised_and_short_text_is_kept() {
        let png = {
            let img = image::DynamicImage::ImageLuma8(image::GrayImage::new(30, 20));
            let mut out = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).expect("png");
            out
        };
        let body = json!({"version": 1, "kind": "video.probe", "job": {
            "clip": STANDARD.encode(vec![7u8; 300]), "poster": STANDARD.encode(&png), "name": "short", "n": 3,
            "signed": {"ref": "https://h/a.jpg?X-Amz-Signature=secret"}, "plain": {"ref": "s3://b/k"},
        }});
        let (job, image) = view(&serde_json::to_vec(&body).expect("json"), Encoding::Json);
        let job = job.expect("a JSON job");
        assert_eq!(job["clip"], json!({"format": null, "width": null, "height": null, "bytes": 300}));
        assert_eq!((job["poster"]["format"].as_str(), job["poster"]["width"].as_u64()), (Some("png"), Some(30)));
        assert_eq!((job["name"].as_str(), job["n"].as_u64()), (Some("short"), Some(3)));
        assert_eq!(
            (job["signed"]["ref"].as_str(), job["plain"]["ref"].as_str()),
            (Some("https://h/a.jpg?…"), Some("s3://b/k"))
        );
        assert_eq!(image.expect("an image")["height"], 20);
    }
}
