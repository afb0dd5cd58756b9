//! Property tests: no message content makes the parsing or decoding code panic. Each case is a
//! bounded run (a few thousand inputs); a failure prints the shrunk input that panicked.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use warren_common::checksum::Checksum;
use warren_common::classify::ClassifyJob;
use warren_common::fault::Fault;
use warren_common::image_io::{self, Format};
use warren_common::resize::Resize;
use warren_common::{Encoding, JobEnvelope, Kind, Limits};

fn small_limits() -> Limits {
    Limits { max_image_width: 512, max_image_height: 512, max_image_pixels: 100_000, ..Limits::default() }
}

fn sample_images() -> Vec<Vec<u8>> {
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(24, 16, |x, y| {
        image::Rgb([(x * 10) as u8, (y * 15) as u8, ((x + y) * 5) as u8])
    }));
    let mut images: Vec<_> = [Format::Png, Format::Jpeg, Format::Webp]
        .iter()
        .map(|f| image_io::encode(&img, *f, Some(80)).unwrap())
        .collect();
    images.push(progressive_jpeg(64, 48));
    images
}

/// A progressive, 4:2:0 JPEG (what cameras and Pillow write), from libjpeg-turbo's encoder: the
/// paths through the decoder that Warren's own baseline 4:4:4 JPEGs do not walk.
fn progressive_jpeg(w: usize, h: usize) -> Vec<u8> {
    let pixels: Vec<u8> = (0..w * h).flat_map(|i| [(i % w * 4) as u8, (i / w * 5) as u8, (i % 97) as u8]).collect();
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_subsamp(turbojpeg::Subsamp::Sub2x2).unwrap();
    c.set_progressive(true).unwrap();
    c.set_quality(80).unwrap();
    let image = turbojpeg::Image {
        pixels: pixels.as_slice(),
        width: w,
        pitch: w * 3,
        height: h,
        format: turbojpeg::PixelFormat::RGB,
    };
    c.compress_to_vec(image).unwrap()
}

/// `jpeg` with its last scan (SOS segment and its entropy-coded data) repeated `times` times.
fn with_last_scan_repeated(jpeg: &[u8], times: usize) -> Vec<u8> {
    let sos = jpeg.windows(2).rposition(|m| m == [0xFF, 0xDA]).unwrap();
    let eoi = jpeg.len() - 2;
    let mut out = jpeg[..eoi].to_vec();
    for _ in 0..times {
        out.extend_from_slice(&jpeg[sos..eoi]);
    }
    out.extend_from_slice(&jpeg[eoi..]);
    out
}

#[test]
fn a_progressive_jpeg_with_too_many_scans_is_refused_not_decoded_for_minutes() {
    let jpeg = progressive_jpeg(64, 48);
    assert!(image_io::decode(&jpeg, &small_limits()).is_ok(), "the file itself decodes");
    let hostile = with_last_scan_repeated(&jpeg, 1_000);
    let err = image_io::decode(&hostile, &small_limits()).unwrap_err();
    assert_eq!(err.error_type(), "limit_exceeded", "{err}");
    let err = image_io::decode_for(&hostile, &small_limits(), |_, _| (8, 6)).unwrap_err();
    assert_eq!(err.error_type(), "limit_exceeded", "{err}");
}

/// What neither Warren's header check nor the `image` crate reads is refused up front with a
/// clear error, on the full and the scaled path alike (docs/design.md).
#[test]
fn lossless_and_arithmetic_jpegs_are_refused_with_a_reason() {
    let (w, h) = (32, 16);
    let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
    let image = || turbojpeg::Image {
        pixels: pixels.as_slice(),
        width: w,
        pitch: w * 3,
        height: h,
        format: turbojpeg::PixelFormat::RGB,
    };
    let mut lossless = turbojpeg::Compressor::new().unwrap();
    lossless.set_lossless(true).unwrap();
    let mut arithmetic = turbojpeg::Compressor::new().unwrap();
    arithmetic.set_arithmetic(true).unwrap();
    for (what, mut c) in [("lossless", lossless), ("arithmetic", arithmetic)] {
        let jpeg = c.compress_to_vec(image()).unwrap();
        let full = image_io::decode(&jpeg, &small_limits()).unwrap_err();
        let scaled = image_io::decode_for(&jpeg, &small_limits(), |_, _| (4, 2)).unwrap_err();
        println!("{what}: {full}");
        assert_eq!(full.to_string(), scaled.to_string(), "{what}");
        assert_eq!(full.error_type(), "unsupported_format", "{what}: {full}");
        assert!(full.to_string().contains(what), "{what}: {full}");
    }
}

#[test]
fn a_progressive_subsampled_jpeg_decodes_at_every_scale() {
    let jpeg = progressive_jpeg(64, 48);
    for (target, expect) in [((64, 48), (64, 48)), ((32, 24), (32, 24)), ((16, 12), (16, 12)), ((1, 1), (8, 6))] {
        let decoded = image_io::decode_for(&jpeg, &small_limits(), |_, _| target).unwrap();
        assert_eq!((decoded.image.width(), decoded.image.height()), expect, "for at least {target:?}");
        assert_eq!(decoded.source, (64, 48));
    }
}

/// What a worker does with a body: open it, parse the job as its kind's input, validate it.
fn open_and_validate(body: &[u8], encoding: Encoding) {
    fn as_kind<K: Kind>(kind: &K, job: warren_common::JobBody<'_>) {
        if let Ok(input) = job.decode::<K::Input>() {
            let _ = kind.validate(&input, &small_limits());
        }
    }
    let Ok(opened) = JobEnvelope::open(body, encoding) else { return };
    match opened.kind {
        "image.resize" => as_kind(&Resize, opened.job),
        "checksum" => as_kind(&Checksum, opened.job),
        "fault" => as_kind(&Fault, opened.job),
        "ml.classify" => {
            let _ = opened.job.decode::<ClassifyJob>().map(|j| j.validate());
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_as_an_envelope(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = JobEnvelope::open(&body, Encoding::Json);
        let _ = JobEnvelope::open(&body, Encoding::Bincode);
        let _ = JobEnvelope::peek_kind(&body, Encoding::Json);
        let _ = JobEnvelope::peek_kind(&body, Encoding::Bincode);
    }

    #[test]
    fn any_bincode_after_a_valid_prefix(kind in prop::sample::select(vec!["image.resize", "ml.classify", "checksum", "fault"]),
                                        tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut body = bincode::serde::encode_to_vec((1u32, kind), bincode::config::standard()).unwrap();
        body.extend_from_slice(&tail);
        open_and_validate(&body, Encoding::Bincode);
    }

    #[test]
    fn any_json_job_object(kind in prop::sample::select(vec!["image.resize", "ml.classify", "checksum", "fault", "x"]),
                           fields in proptest::collection::btree_map("[a-z_]{1,12}", any_json(), 0..6)) {
        let body = serde_json::json!({"version": 1, "kind": kind, "job": fields});
        let body = serde_json::to_vec(&body).unwrap();
        open_and_validate(&body, Encoding::Json);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5_000, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_as_an_image(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = image_io::decode(&bytes, &small_limits());
    }

    #[test]
    fn corrupted_real_images(which in 0usize..4, flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
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
        // The scaled path (libjpeg-turbo at 1/8) on the same damage.
        if let Ok(decoded) = image_io::decode_for(&bytes, &small_limits(), |w, h| (w / 8, h / 8)) {
            prop_assert!(decoded.image.width() <= decoded.source.0 && decoded.image.height() <= decoded.source.1);
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
