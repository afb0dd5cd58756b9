//! The message contract: both encodings round-trip every kind, and every malformation is
//! refused with its own error type.

#![allow(clippy::unwrap_used)] // tests state their expectations with unwrap_err

use rstest::rstest;
use warren_common::checksum::ChecksumJob;
use warren_common::classify::ClassifyJob;
use warren_common::image_io::Format;
use warren_common::resize::{Filter, ResizeJob, ResizeMode};
use warren_common::{Encoding, Job, JobEnvelope, JobError, JobOutput, JobResult, Timing};

fn jobs() -> Vec<Job> {
    vec![
        Job::Resize(ResizeJob {
            image: vec![1, 2, 3],
            width: 10,
            height: 20,
            mode: ResizeMode::Fill,
            filter: Filter::CatmullRom,
            format: Some(Format::Webp),
            quality: Some(70),
        }),
        Job::Classify(ClassifyJob { image: vec![9; 100], top_k: Some(3) }),
        Job::Checksum(ChecksumJob { data: b"hello".to_vec(), rounds: 4 }),
    ]
}

#[rstest]
fn every_kind_round_trips(#[values(Encoding::Json, Encoding::Bincode)] encoding: Encoding) {
    for job in jobs() {
        let body = JobEnvelope::encode(&job, encoding).expect("encode");
        assert_eq!(JobEnvelope::decode(&body, encoding).expect("decode"), job);
        assert_eq!(JobEnvelope::peek_kind(&body, encoding).as_deref(), Some(job.kind().as_str()));
    }
}

#[test]
fn json_is_the_documented_shape() {
    let body = JobEnvelope::encode(&jobs()[2], Encoding::Json).expect("encode");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v, serde_json::json!({"version": 1, "kind": "checksum", "job": {"data": "aGVsbG8=", "rounds": 4}}));
}

#[test]
fn json_defaults_apply() {
    let body = br#"{"version":1,"kind":"image.resize","job":{"image":"AAEC","width":5,"height":6},"extra":true}"#;
    let Job::Resize(j) = JobEnvelope::decode(body, Encoding::Json).expect("decode") else { panic!("kind") };
    assert_eq!((j.mode, j.filter, j.format, j.quality), (ResizeMode::Fit, Filter::Lanczos3, None, None));
}

#[rstest]
#[case::not_json(b"not json".as_slice(), "malformed_envelope")]
#[case::empty(b"".as_slice(), "malformed_envelope")]
#[case::no_version(br#"{"kind":"checksum","job":{}}"#.as_slice(), "malformed_envelope")]
#[case::string_version(br#"{"version":"1","kind":"checksum","job":{}}"#.as_slice(), "malformed_envelope")]
#[case::future_version(br#"{"version":2,"anything":"else"}"#.as_slice(), "unsupported_version")]
#[case::unknown_kind(br#"{"version":1,"kind":"video.transcode","job":{}}"#.as_slice(), "unknown_kind")]
#[case::wrong_types(br#"{"version":1,"kind":"image.resize","job":{"image":"AAEC","width":"wide","height":6}}"#.as_slice(), "invalid_params")]
#[case::bad_base64(br#"{"version":1,"kind":"checksum","job":{"data":"%%%"}}"#.as_slice(), "invalid_params")]
fn json_malformations(#[case] body: &[u8], #[case] expected: &str) {
    let err = JobEnvelope::decode(body, Encoding::Json).unwrap_err();
    assert_eq!(err.error_type(), expected, "{err}");
}

#[test]
fn bincode_malformations() {
    let future = bincode::serde::encode_to_vec((7u32, "checksum"), bincode::config::standard()).expect("enc");
    assert!(matches!(
        JobEnvelope::decode(&future, Encoding::Bincode),
        Err(JobError::UnsupportedVersion { found: 7, .. })
    ));
    let unknown = bincode::serde::encode_to_vec((1u32, "nope"), bincode::config::standard()).expect("enc");
    assert_eq!(JobEnvelope::decode(&unknown, Encoding::Bincode).unwrap_err().error_type(), "unknown_kind");
    let mut good = JobEnvelope::encode(&jobs()[2], Encoding::Bincode).expect("enc");
    good.truncate(good.len() - 1);
    assert_eq!(JobEnvelope::decode(&good, Encoding::Bincode).unwrap_err().error_type(), "invalid_params");
    // A length prefix claiming 4 GiB must fail cleanly, not allocate.
    let mut hostile = bincode::serde::encode_to_vec((1u32, "checksum"), bincode::config::standard()).expect("enc");
    hostile.extend_from_slice(&[0xFC, 0xFF, 0xFF, 0xFF, 0xFF]);
    assert!(JobEnvelope::decode(&hostile, Encoding::Bincode).is_err());
}

#[rstest]
fn results_round_trip(#[values(Encoding::Json, Encoding::Bincode)] encoding: Encoding) {
    let ok = JobResult::ok(
        "id-1".into(),
        "checksum".into(),
        JobOutput::Checksum(warren_common::checksum::ChecksumOutput { bytes: 5, rounds: 1, crc32: 42 }),
        0,
        "w1".into(),
        Timing { started_at_us: 1, finished_at_us: 2 },
    );
    let failed = JobResult::failed(
        "id-2".into(),
        "nope".into(),
        &JobError::UnknownKind("nope".into()),
        0,
        "w1".into(),
        Timing::default(),
    );
    for r in [ok, failed] {
        let body = r.encode(encoding).expect("encode");
        assert_eq!(JobResult::decode(&body, encoding).expect("decode"), r);
    }
}

#[rstest]
#[case(None, Some(Encoding::Json))]
#[case(Some("application/json; charset=utf-8"), Some(Encoding::Json))]
#[case(Some("application/x-bincode"), Some(Encoding::Bincode))]
#[case(Some("text/plain"), None)]
fn content_types(#[case] ct: Option<&str>, #[case] expected: Option<Encoding>) {
    assert_eq!(Encoding::from_content_type(ct), expected);
}
