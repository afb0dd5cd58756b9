//! The message contract: both encodings round-trip every kind, and every malformation is
//! refused with its own error type.

#![allow(clippy::unwrap_used)] // tests state their expectations with unwrap_err

use rstest::rstest;
use warren_common::checksum::{Checksum, ChecksumJob, ChecksumOutput};
use warren_common::classify::{Classify, ClassifyJob};
use warren_common::image_io::Format;
use warren_common::resize::{Filter, Resize, ResizeJob, ResizeMode};
use warren_common::{Control, Encoding, Job, JobEnvelope, JobError, JobResult, Kind, Output, Timing};

fn resize() -> ResizeJob {
    ResizeJob {
        image: vec![1, 2, 3],
        width: 10,
        height: 20,
        mode: ResizeMode::Fill,
        filter: Filter::CatmullRom,
        format: Some(Format::Webp),
        quality: Some(70),
    }
}

fn classify() -> ClassifyJob {
    ClassifyJob { image: vec![9; 100], top_k: Some(3) }
}

fn checksum() -> ChecksumJob {
    ChecksumJob { data: b"hello".to_vec(), rounds: 4 }
}

/// What a worker does with an envelope: open it, find the kind, parse the job as its type.
fn decode<K: Kind>(body: &[u8], encoding: Encoding) -> Result<K::Input, JobError> {
    let opened = JobEnvelope::open(body, encoding)?;
    if opened.kind != K::NAME {
        return Err(JobError::UnknownKind(opened.kind.to_owned()));
    }
    opened.job.decode()
}

#[rstest]
fn every_kind_round_trips(#[values(Encoding::Json, Encoding::Bincode)] encoding: Encoding) {
    let body = JobEnvelope::encode(&Job::new::<Resize>(resize()), encoding).expect("encode");
    assert_eq!(decode::<Resize>(&body, encoding).expect("decode"), resize());
    assert_eq!(JobEnvelope::peek_kind(&body, encoding).as_deref(), Some("image.resize"));
    let body = JobEnvelope::encode(&Job::new::<Classify>(classify()), encoding).expect("encode");
    assert_eq!(decode::<Classify>(&body, encoding).expect("decode"), classify());
    let body = JobEnvelope::encode(&Job::new::<Checksum>(checksum()), encoding).expect("encode");
    assert_eq!(decode::<Checksum>(&body, encoding).expect("decode"), checksum());
    assert_eq!(JobEnvelope::open(&body, encoding).expect("open").kind, "checksum");
}

#[test]
fn a_job_named_at_run_time_is_json_only() {
    let job = Job::named("video.probe", serde_json::json!({"url": "file:///a.mp4"}));
    let body = JobEnvelope::encode(&job, Encoding::Json).expect("json");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v, serde_json::json!({"version": 1, "kind": "video.probe", "job": {"url": "file:///a.mp4"}}));
    let e = JobEnvelope::encode(&job, Encoding::Bincode).unwrap_err().to_string();
    assert!(e.contains("cannot be written as bincode"), "{e}");
}

#[test]
fn json_is_the_documented_shape() {
    let body = JobEnvelope::encode(&Job::new::<Checksum>(checksum()), Encoding::Json).expect("encode");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v, serde_json::json!({"version": 1, "kind": "checksum", "job": {"data": "aGVsbG8=", "rounds": 4}}));
}

#[test]
fn json_defaults_apply() {
    let body = br#"{"version":1,"kind":"image.resize","job":{"image":"AAEC","width":5,"height":6},"extra":true}"#;
    let j = decode::<Resize>(body, Encoding::Json).expect("decode");
    assert_eq!((j.mode, j.filter, j.format, j.quality), (ResizeMode::Fit, Filter::Lanczos3, None, None));
}

#[rstest]
#[case::not_json(b"not json".as_slice(), "malformed_envelope")]
#[case::empty(b"".as_slice(), "malformed_envelope")]
#[case::no_version(br#"{"kind":"checksum","job":{}}"#.as_slice(), "malformed_envelope")]
#[case::string_version(br#"{"version":"1","kind":"checksum","job":{}}"#.as_slice(), "malformed_envelope")]
#[case::future_version(br#"{"version":2,"anything":"else"}"#.as_slice(), "unsupported_version")]
#[case::no_job(br#"{"version":1,"kind":"checksum"}"#.as_slice(), "malformed_envelope")]
#[case::unknown_kind(br#"{"version":1,"kind":"video.transcode","job":{}}"#.as_slice(), "unknown_kind")]
#[case::wrong_types(br#"{"version":1,"kind":"image.resize","job":{"image":"AAEC","width":"wide","height":6}}"#.as_slice(), "invalid_params")]
#[case::bad_base64(br#"{"version":1,"kind":"image.resize","job":{"image":"%%%","width":5,"height":6}}"#.as_slice(), "invalid_params")]
fn json_malformations(#[case] body: &[u8], #[case] expected: &str) {
    let err = decode::<Resize>(body, Encoding::Json).unwrap_err();
    assert_eq!(err.error_type(), expected, "{err}");
}

#[rstest]
fn job_control_round_trips(#[values(Encoding::Json, Encoding::Bincode)] encoding: Encoding) {
    let job = Job::new::<Checksum>(checksum());
    for control in [
        Control { deadline_ms: Some(1_800_000_000_123), not_before_ms: None },
        Control { deadline_ms: None, not_before_ms: Some(7) },
        Control { deadline_ms: Some(u64::MAX), not_before_ms: Some(0) },
        Control::default(),
    ] {
        let body = JobEnvelope::encode_with(&job, encoding, control).expect("encode");
        let opened = JobEnvelope::open(&body, encoding).expect("open");
        assert_eq!((opened.kind, opened.control), ("checksum", control));
        assert_eq!(opened.job.decode::<ChecksumJob>().expect("job"), checksum());
        assert_eq!(JobEnvelope::peek_kind(&body, encoding).as_deref(), Some("checksum"));
    }
}

#[test]
fn job_control_keeps_old_readers_reading() {
    // Without control the bincode envelope is still version 1, byte for byte.
    let job = Job::new::<Checksum>(checksum());
    let plain = JobEnvelope::encode(&job, Encoding::Bincode).expect("v1");
    let v1 = bincode::serde::encode_to_vec((1u32, "checksum", checksum()), bincode::config::standard()).expect("v1");
    assert_eq!(plain, v1);
    // With control it is version 2: (2, kind, (deadline, not_before), job).
    let control = Control { deadline_ms: Some(5), not_before_ms: None };
    let v2 = JobEnvelope::encode_with(&job, Encoding::Bincode, control).expect("v2");
    let expected = bincode::serde::encode_to_vec(
        (2u32, "checksum", (Some(5u64), None::<u64>), checksum()),
        bincode::config::standard(),
    )
    .expect("v2");
    assert_eq!(v2, expected);
    // JSON stays version 1 with the fields beside `kind`; a reader that ignores unknown fields
    // reads the job as before.
    let json = JobEnvelope::encode_with(&job, Encoding::Json, control).expect("json");
    let v: serde_json::Value = serde_json::from_slice(&json).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"version": 1, "kind": "checksum", "deadline_ms": 5, "job": {"data": "aGVsbG8=", "rounds": 4}})
    );
}

#[rstest]
fn output_to_round_trips_as_json_and_bincode_version_3(
    #[values(Encoding::Json, Encoding::Bincode)] encoding: Encoding,
) {
    let job = Job::new::<Checksum>(checksum());
    for control in [Control::default(), Control { deadline_ms: Some(9), not_before_ms: Some(3) }] {
        let body = JobEnvelope::encode_full(&job, encoding, control, Some("s3://out/thumbs/")).expect("encode");
        let opened = JobEnvelope::open(&body, encoding).expect("open");
        assert_eq!(
            (opened.kind, opened.control, opened.output_to.as_deref()),
            ("checksum", control, Some("s3://out/thumbs/"))
        );
        assert_eq!(opened.job.decode::<ChecksumJob>().expect("job"), checksum());
        assert_eq!(JobEnvelope::peek_kind(&body, encoding).as_deref(), Some("checksum"));
    }
    if encoding == Encoding::Bincode {
        let body = JobEnvelope::encode_full(&job, encoding, Control::default(), Some("file:///o/")).expect("v3");
        let expected = bincode::serde::encode_to_vec(
            (3u32, "checksum", (None::<u64>, None::<u64>, Some("file:///o/")), checksum()),
            bincode::config::standard(),
        )
        .expect("v3");
        assert_eq!(body, expected, "the documented layout");
        let cut = &body[..body.len() - checksum_len() - 3];
        assert_eq!(JobEnvelope::open(cut, encoding).unwrap_err().error_type(), "malformed_envelope");
    } else {
        let v: serde_json::Value = serde_json::from_slice(
            &JobEnvelope::encode_full(&job, encoding, Control::default(), Some("s3://b/o/")).expect("json"),
        )
        .expect("json");
        assert_eq!(v["output_to"], "s3://b/o/");
    }
}

#[test]
fn an_escaped_output_to_is_read_as_its_text() {
    // Writers escape as they like: PHP writes `\/`, Python's json.dumps `\u00f1`.
    let body = br#"{"version":1,"kind":"checksum","output_to":"s3:\/\/b\/a\u00f1o\/","job":{"data":"","rounds":1}}"#;
    let opened = JobEnvelope::open(body, Encoding::Json).expect("open");
    assert_eq!(opened.output_to.as_deref(), Some("s3://b/año/"));
}

fn checksum_len() -> usize {
    bincode::serde::encode_to_vec(checksum(), bincode::config::standard()).expect("enc").len()
}

#[rstest]
#[case::string_deadline(br#"{"version":1,"kind":"checksum","deadline_ms":"soon","job":{}}"#.as_slice())]
#[case::negative_not_before(br#"{"version":1,"kind":"checksum","not_before_ms":-1,"job":{}}"#.as_slice())]
#[case::fractional_deadline(br#"{"version":1,"kind":"checksum","deadline_ms":1.5,"job":{}}"#.as_slice())]
fn job_control_malformations(#[case] body: &[u8]) {
    let err = JobEnvelope::open(body, Encoding::Json).unwrap_err();
    assert_eq!(err.error_type(), "malformed_envelope", "{err}");
}

#[test]
fn json_nulls_mean_no_control() {
    let body =
        br#"{"version":1,"kind":"checksum","deadline_ms":null,"not_before_ms":null,"job":{"data":"","rounds":1}}"#;
    assert_eq!(JobEnvelope::open(body, Encoding::Json).expect("open").control, Control::default());
}

#[test]
fn bincode_malformations() {
    let future = bincode::serde::encode_to_vec((7u32, "checksum"), bincode::config::standard()).expect("enc");
    assert!(matches!(
        JobEnvelope::open(&future, Encoding::Bincode),
        Err(JobError::UnsupportedVersion { found: 7, supported: 3 })
    ));
    let zero = bincode::serde::encode_to_vec((0u32, "checksum"), bincode::config::standard()).expect("enc");
    assert_eq!(JobEnvelope::open(&zero, Encoding::Bincode).unwrap_err().error_type(), "unsupported_version");
    // Version 2 without its control tuple.
    let short = bincode::serde::encode_to_vec((2u32, "checksum"), bincode::config::standard()).expect("enc");
    assert_eq!(JobEnvelope::open(&short, Encoding::Bincode).unwrap_err().error_type(), "malformed_envelope");
    let unknown = bincode::serde::encode_to_vec((1u32, "nope"), bincode::config::standard()).expect("enc");
    assert_eq!(decode::<Checksum>(&unknown, Encoding::Bincode).unwrap_err().error_type(), "unknown_kind");
    let mut good = JobEnvelope::encode(&Job::new::<Checksum>(checksum()), Encoding::Bincode).expect("enc");
    good.truncate(good.len() - 1);
    assert_eq!(decode::<Checksum>(&good, Encoding::Bincode).unwrap_err().error_type(), "invalid_params");
    // A length prefix claiming 4 GiB must fail cleanly, not allocate.
    let mut hostile = bincode::serde::encode_to_vec((1u32, "checksum"), bincode::config::standard()).expect("enc");
    hostile.extend_from_slice(&[0xFC, 0xFF, 0xFF, 0xFF, 0xFF]);
    assert!(decode::<Checksum>(&hostile, Encoding::Bincode).is_err());
    // So must a kind whose length runs past the body.
    let mut cut = bincode::serde::encode_to_vec((1u32, "checksum"), bincode::config::standard()).expect("enc");
    cut.truncate(cut.len() - 2);
    assert_eq!(JobEnvelope::open(&cut, Encoding::Bincode).unwrap_err().error_type(), "malformed_envelope");
}

#[rstest]
fn results_round_trip(#[values(Encoding::Json, Encoding::Bincode)] encoding: Encoding) {
    let ok = JobResult::ok(
        "id-1".into(),
        "checksum".into(),
        Output::new::<Checksum>(ChecksumOutput { bytes: 5, rounds: 1, crc32: 42 }),
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
        let back = JobResult::decode(&body, encoding).expect("decode");
        assert_eq!(back, r);
        assert_eq!(back.output_as::<Checksum>(), r.output_as::<Checksum>());
    }
}

/// The result's output in each encoding, as docs/contract.md writes it: JSON an object keyed by
/// the kind; bincode the pair (kind, payload bytes), the payload the output alone in bincode.
#[test]
fn an_output_travels_under_its_kind() {
    let out = ChecksumOutput { bytes: 5, rounds: 1, crc32: 42 };
    let r = JobResult::ok(
        "id".into(),
        "checksum".into(),
        Output::new::<Checksum>(out.clone()),
        0,
        "w".into(),
        Timing::default(),
    );
    let json: serde_json::Value = serde_json::from_slice(&r.encode(Encoding::Json).unwrap()).unwrap();
    assert_eq!(json["output"], serde_json::json!({"checksum": {"bytes": 5, "rounds": 1, "crc32": 42}}));

    let body = r.encode(Encoding::Bincode).unwrap();
    let cfg = bincode::config::standard();
    type Head = (u32, String, String, u8, u8, String);
    let (head, used): (Head, usize) = bincode::serde::decode_from_slice(&body, cfg).unwrap();
    assert_eq!(
        head,
        (1, "id".into(), "checksum".into(), 0, 1, "checksum".into()),
        "version, job_id, kind, status ok, Some, kind"
    );
    let (payload, _): (Vec<u8>, usize) = bincode::serde::decode_from_slice(&body[used..], cfg).unwrap();
    assert_eq!(payload, bincode::serde::encode_to_vec(&out, cfg).unwrap());
    // A reader that does not know the kind still reads the rest of the result.
    let back = JobResult::decode(&body, Encoding::Bincode).unwrap();
    assert_eq!((back.attempt, back.worker.as_str()), (0, "w"));
    assert_eq!(back.output.as_ref().map(Output::kind), Some("checksum"));
    assert_eq!(back.output_as::<Checksum>(), Some(out));
    assert!(back.output_as::<Resize>().is_none(), "another kind's output is not taken for this one's");
}

#[rstest]
#[case(None, Some(Encoding::Json))]
#[case(Some("application/json; charset=utf-8"), Some(Encoding::Json))]
#[case(Some("application/x-bincode"), Some(Encoding::Bincode))]
#[case(Some("text/plain"), None)]
fn content_types(#[case] ct: Option<&str>, #[case] expected: Option<Encoding>) {
    assert_eq!(Encoding::from_content_type(ct), expected);
}

/// The bincode layouts docs/contract.md writes out for other languages, pinned byte by byte
/// (enum variants by index: reordering a Rust enum must not change the wire).
#[test]
fn bincode_layouts_are_the_documented_ones() {
    use warren_common::fault::{Fault, FaultJob, FaultOutput};
    let job = ResizeJob {
        image: vec![0xAB, 0xCD],
        width: 300,
        height: 2,
        mode: ResizeMode::Exact,
        filter: Filter::Gaussian,
        format: Some(Format::Jpeg),
        quality: None,
    };
    let body = JobEnvelope::encode(&Job::new::<Resize>(job), Encoding::Bincode).unwrap();
    let mut expected = vec![1, 12];
    expected.extend_from_slice(b"image.resize");
    // image (len 2), width 300 (251 + u16 LE), height 2, mode exact = 2, filter gaussian = 3,
    // format Some(jpeg = 1), quality None.
    expected.extend_from_slice(&[2, 0xAB, 0xCD, 251, 0x2C, 0x01, 2, 2, 3, 1, 1, 0]);
    assert_eq!(body, expected);
    for (mode, i) in [(ResizeMode::Fit, 0u8), (ResizeMode::Fill, 1), (ResizeMode::Exact, 2)] {
        assert_eq!(bincode::serde::encode_to_vec(mode, bincode::config::standard()).unwrap(), [i]);
    }
    for (filter, i) in [
        (Filter::Nearest, 0u8),
        (Filter::Triangle, 1),
        (Filter::CatmullRom, 2),
        (Filter::Gaussian, 3),
        (Filter::Lanczos3, 4),
    ] {
        assert_eq!(bincode::serde::encode_to_vec(filter, bincode::config::standard()).unwrap(), [i]);
    }
    for (format, i) in [(Format::Png, 0u8), (Format::Jpeg, 1), (Format::Webp, 2)] {
        assert_eq!(bincode::serde::encode_to_vec(format, bincode::config::standard()).unwrap(), [i]);
    }
    // checksum: data bytes, rounds; ml.classify: image bytes, top_k Option of u32.
    let body = JobEnvelope::encode(&Job::new::<Checksum>(checksum()), Encoding::Bincode).unwrap();
    assert_eq!(&body[body.len() - 7..], [5, b'h', b'e', b'l', b'l', b'o', 4]);
    let body = JobEnvelope::encode(
        &Job::new::<Classify>(ClassifyJob { image: vec![7, 8], top_k: Some(3) }),
        Encoding::Bincode,
    )
    .unwrap();
    assert_eq!(&body[body.len() - 5..], [2, 7, 8, 1, 3]);
    // Outputs: image.resize and ml.classify, as the contract's table writes them.
    let cfg = bincode::config::standard();
    let resized = warren_common::resize::ResizeOutput {
        image: vec![9],
        format: Format::Jpeg,
        width: 2,
        height: 3,
        source_width: 4,
        source_height: 5,
    };
    assert_eq!(bincode::serde::encode_to_vec(&resized, cfg).unwrap(), [1, 9, 1, 2, 3, 4, 5]);
    let classified = warren_common::classify::ClassifyOutput {
        model: "m".into(),
        predictions: vec![warren_common::classify::Prediction { label: "a".into(), index: 1, score: 0.5 }],
    };
    assert_eq!(bincode::serde::encode_to_vec(&classified, cfg).unwrap(), [1, b'm', 1, 1, b'a', 1, 0, 0, 0, 0x3f]);
    // Every field is written, false ones too: bincode takes fields by position.
    let fault = FaultJob { busy_ms: 5, ..FaultJob::default() };
    let body = JobEnvelope::encode(&Job::new::<Fault>(fault.clone()), Encoding::Bincode).unwrap();
    assert_eq!(&body[body.len() - 7..], [0, 0, 5, 0, 0, 0, 0]);
    assert_eq!(decode::<Fault>(&body, Encoding::Bincode).unwrap(), fault);
    let out = Output::new::<Fault>(FaultOutput { attempt: 2, unencodable: false });
    let r = JobResult::ok("j".into(), "fault".into(), out, 2, "w".into(), Timing::default());
    let back = JobResult::decode(&r.encode(Encoding::Bincode).unwrap(), Encoding::Bincode).unwrap();
    assert_eq!(back.output_as::<Fault>(), Some(FaultOutput { attempt: 2, unencodable: false }));
    let json: serde_json::Value = serde_json::from_slice(&r.encode(Encoding::Json).unwrap()).unwrap();
    assert_eq!(json["output"], serde_json::json!({"fault": {"attempt": 2}}));
}
