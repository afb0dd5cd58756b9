//! Property tests: no message content makes the parsing or decoding code panic. Each case is a
//! bounded run (a few thousand inputs); a failure prints the shrunk input that panicked.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use warren_common::image_io::{self, Format};
use warren_common::{Encoding, JobEnvelope, Limits};

fn small_limits() -> Limits {
    Limits { max_image_width: 512, max_image_height: 512, max_image_pixels: 100_000, ..Limits::default() }
}

fn sample_images() -> Vec<Vec<u8>> {
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(24, 16, |x, y| {
        image::Rgb([(x * 10) as u8, (y * 15) as u8, ((x + y) * 5) as u8])
    }));
    [Format::Png, Format::Jpeg, Format::Webp].iter().map(|f| image_io::encode(&img, *f, Some(80)).unwrap()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_as_an_envelope(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = JobEnvelope::decode(&body, Encoding::Json);
        let _ = JobEnvelope::decode(&body, Encoding::Bincode);
        let _ = JobEnvelope::peek_kind(&body, Encoding::Json);
        let _ = JobEnvelope::peek_kind(&body, Encoding::Bincode);
    }

    #[test]
    fn any_bincode_after_a_valid_prefix(kind in prop::sample::select(vec!["image.resize", "ml.classify", "checksum", "fault"]),
                                        tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut body = bincode::serde::encode_to_vec((1u32, kind), bincode::config::standard()).unwrap();
        body.extend_from_slice(&tail);
        if let Ok(job) = JobEnvelope::decode(&body, Encoding::Bincode) {
            let _ = job.validate(&small_limits());
        }
    }

    #[test]
    fn any_json_job_object(kind in prop::sample::select(vec!["image.resize", "ml.classify", "checksum", "fault", "x"]),
                           fields in proptest::collection::btree_map("[a-z_]{1,12}", any_json(), 0..6)) {
        let body = serde_json::json!({"version": 1, "kind": kind, "job": fields});
        let body = serde_json::to_vec(&body).unwrap();
        if let Ok(job) = JobEnvelope::decode(&body, Encoding::Json) {
            let _ = job.validate(&small_limits());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5_000, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_as_an_image(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = image_io::decode(&bytes, &small_limits());
    }

    #[test]
    fn corrupted_real_images(which in 0usize..3, flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
                             cut in any::<prop::sample::Index>(), truncate in any::<bool>()) {
        let mut bytes = sample_images()[which].clone();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok((img, _)) = image_io::decode(&bytes, &small_limits()) {
            prop_assert!(u64::from(img.width()) * u64::from(img.height()) <= 100_000);
        }
    }
}

fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        "[ -~]{0,16}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("aGVsbG8=")),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
