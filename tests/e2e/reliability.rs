//! At-least-once under failures: transient failures retried with backoff through delay queues,
//! given up after the last attempt, panics and time limits contained, poison jobs stopped, every
//! bad input dead-lettered with its own reason, and a time limit the broker would not tolerate
//! refused at start-up.

use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicNackOptions};
use lapin::types::FieldTable;
use rstest::rstest;
use warren_common::fault::FaultJob;
use warren_common::headers as h;
use warren_common::retry::RetryPolicy;
use warren_common::{ErrorClass, Job, JobEnvelope, ResultStatus};
use warren_e2e::{
    DEADLINE, Vhost, collect_messages, fleet_and_producer, queue_depth, settings_for, vhost, want_result,
};
use warren_infra::settings::Route;
use warren_infra::{Settings, fields};

fn with_fault_route(vhost: &Vhost, time_limit_ms: u64, retry: RetryPolicy) -> Settings {
    let mut s = settings_for(vhost);
    s.routes.push(Route { time_limit_ms, retry: Some(retry), ..Route::new("fault", "warren.fault") });
    s
}

fn fault(transient_failures: u32, panic: bool, busy_ms: u64) -> Job {
    Job::from(FaultJob { transient_failures, panic, busy_ms, ..FaultJob::default() })
}

fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy { max_attempts, base_delay_ms: 200, max_delay_ms: 1000, jitter: 0.1 }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_fails_twice_succeeds_on_its_third_attempt_after_the_delays(vhost: Vhost) {
    let settings = with_fault_route(&vhost, 10_000, fast_retries(4));
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let published_at = std::time::SystemTime::now();
    let ticket = producer.publish(&fault(2, false, 0), &want_result()).await.expect("publish");
    let result = ticket.wait(DEADLINE).await.expect("a result");
    assert_eq!(result.status, ResultStatus::Ok, "{:?}", result.error);
    assert_eq!(result.attempt, 2);
    assert_eq!(
        result.output_as::<warren_common::fault::Fault>(),
        Some(warren_common::fault::FaultOutput { attempt: 2, unencodable: false })
    );
    // Delays of 200 ms then 400 ms, each at least 90% of nominal with 10% jitter.
    let published_us = published_at.duration_since(std::time::UNIX_EPOCH).expect("clock").as_micros() as u64;
    let waited_ms = (result.timing.started_at_us - published_us) / 1000;
    println!("transient: succeeded on attempt {} after {waited_ms} ms (delays 200 + 400 ms nominal)", result.attempt);
    assert!(waited_ms >= 540, "third attempt started only {waited_ms} ms after publishing");
    for queue in ["warren.fault.dead", "warren.fault.retry.200ms", "warren.fault.retry.400ms", "warren.fault"] {
        assert_eq!(queue_depth(&settings, queue).await, 0, "{queue} should be empty");
    }
    producer.close().await;
    fleet.stop().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_always_fails_is_dead_lettered_after_max_attempts(vhost: Vhost) {
    let settings = with_fault_route(&vhost, 10_000, fast_retries(3));
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let ticket = producer.publish(&fault(1000, false, 0), &want_result()).await.expect("publish");
    let job_id = ticket.job_id.clone();
    let result = ticket.wait(DEADLINE).await.expect("an error result");
    let error = result.error.expect("error");
    assert_eq!((error.class, error.error_type.as_str(), result.attempt), (ErrorClass::Transient, "injected_fault", 2));

    let dead = collect_messages(&settings, "warren.fault.dead", 1, DEADLINE).await;
    let headers = dead[0].properties.headers().as_ref();
    assert_eq!(dead[0].properties.message_id().as_ref().map(|s| s.as_str()), Some(job_id.as_str()));
    assert_eq!(fields::get_str(headers, h::DEAD_REASON).as_deref(), Some("attempts_exhausted"));
    assert_eq!(fields::get_u64(headers, h::ATTEMPTS), Some(3));
    assert_eq!(fields::get_str(headers, h::ERROR_TYPE).as_deref(), Some("injected_fault"));
    assert_eq!(fields::get_str(headers, h::ORIGINAL_EXCHANGE).as_deref(), Some("warren.jobs"));
    assert_eq!(fields::get_str(headers, h::ORIGINAL_ROUTING_KEY).as_deref(), Some("fault"));
    let first = fields::get_u64(headers, h::FIRST_FAILED_AT).expect("first failure time");
    let last = fields::get_u64(headers, h::FAILED_AT).expect("last failure time");
    println!("always failing: dead-lettered after 3 attempts, {} ms from first to last failure", last - first);
    assert!(last - first >= 540, "200 + 400 ms of backoff between first and last failure, got {}", last - first);
    producer.close().await;
    fleet.stop().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_is_dead_lettered_and_the_consumer_goes_on(vhost: Vhost) {
    let settings = with_fault_route(&vhost, 10_000, fast_retries(3));
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let panicking = producer.publish(&fault(0, true, 0), &want_result()).await.expect("publish");
    let r = panicking.wait(DEADLINE).await.expect("error result");
    let e = r.error.expect("error");
    assert_eq!((e.class, e.error_type.as_str()), (ErrorClass::Permanent, "panic"));
    assert!(e.message.contains("fault job asked to panic"), "{}", e.message);
    let dead = collect_messages(&settings, "warren.fault.dead", 1, DEADLINE).await;
    let headers = dead[0].properties.headers().as_ref();
    assert_eq!(fields::get_str(headers, h::DEAD_REASON).as_deref(), Some("permanent_error"));
    let after = producer.publish(&fault(0, false, 0), &want_result()).await.expect("publish");
    assert_eq!(after.wait(DEADLINE).await.expect("result").status, ResultStatus::Ok);
    producer.close().await;
    fleet.stop().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_time_limit_fails_and_frees_its_slot(vhost: Vhost) {
    let mut settings = with_fault_route(&vhost, 300, fast_retries(3));
    settings.consumer.pool_size = 1;
    settings.consumer.retry_timeouts = false;
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let start = Instant::now();
    let slow = producer.publish(&fault(0, false, 3000), &want_result()).await.expect("publish");
    let quick = producer.publish(&fault(0, false, 0), &want_result()).await.expect("publish");
    let r = slow.wait(DEADLINE).await.expect("timeout result");
    let e = r.error.expect("error");
    assert_eq!((e.class, e.error_type.as_str()), (ErrorClass::Permanent, "timeout"));
    // One slot only: the quick job runs as soon as the slow one is given up, long before the
    // slow one's thread would have freed it.
    assert_eq!(quick.wait(DEADLINE).await.expect("quick result").status, ResultStatus::Ok);
    let elapsed = start.elapsed();
    println!("time limit: slow job given up at 300 ms, next job done after {elapsed:?} (the slow one runs 3 s)");
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    let dead = collect_messages(&settings, "warren.fault.dead", 1, DEADLINE).await;
    assert_eq!(fields::get_str(dead[0].properties.headers().as_ref(), h::ERROR_TYPE).as_deref(), Some("timeout"));
    producer.close().await;
    fleet.stop().await;
}

/// Publishes one job per entry of `redeliveries_so_far` (as its `warren-redeliveries` header),
/// then takes them all and hands them back the way a dying worker does, so that the broker
/// marks each redelivered, before any Warren consumer runs. Returns the job ids.
async fn publish_and_bounce(settings: &Settings, redeliveries_so_far: &[u64]) -> Vec<String> {
    let producer = warren_producer::Producer::connect(settings.clone()).await.expect("producer");
    producer.declare_topology().await.expect("topology");
    let body = JobEnvelope::encode(&fault(0, false, 0), warren_common::Encoding::Json).expect("encode");
    let conn = warren_infra::connect(&settings.broker, "test-bouncer").await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(Default::default()).await.expect("confirms");
    let mut ids = Vec::new();
    for &n in redeliveries_so_far {
        let mut headers = FieldTable::default();
        fields::set_u64(&mut headers, h::REDELIVERIES, n);
        let job_id = uuid::Uuid::new_v4().to_string();
        let props = lapin::BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(job_id.as_str().into())
            .with_delivery_mode(2)
            .with_headers(headers);
        ch.basic_publish("warren.jobs".into(), "fault".into(), Default::default(), &body, props)
            .await
            .expect("publish")
            .await
            .expect("confirmed");
        ids.push(job_id);
    }
    let mut taken = Vec::new();
    for _ in redeliveries_so_far {
        let got = ch.basic_get("warren.fault".into(), BasicGetOptions::default()).await.expect("get").expect("a job");
        taken.push(got);
    }
    for got in taken {
        got.delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
    }
    let _ = conn.close(200, "done".into()).await;
    producer.close().await;
    ids
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_coming_back_is_dead_lettered_as_poison(vhost: Vhost) {
    let mut settings = with_fault_route(&vhost, 10_000, fast_retries(3));
    settings.consumer.max_redeliveries = 2;
    // One return so far plus this one: within the limit, the job runs. Two returns so far plus
    // this one: over the limit.
    let ids = publish_and_bounce(&settings, &[1, 2]).await;
    let (survivor, poison) = (ids[0].clone(), ids[1].clone());
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let dead = collect_messages(&settings, "warren.fault.dead", 1, DEADLINE).await;
    let headers = dead[0].properties.headers().as_ref();
    assert_eq!(dead[0].properties.message_id().as_ref().map(|s| s.to_string()), Some(poison));
    assert_eq!(fields::get_str(headers, h::DEAD_REASON).as_deref(), Some("redelivery_limit"));
    assert_eq!(fields::get_str(headers, h::ERROR_TYPE).as_deref(), Some("redelivery_limit"));
    // The survivor ran (its result went to the results queue, as it named no reply_to).
    let results = collect_messages(&settings, "warren.results", 1, DEADLINE).await;
    assert_eq!(results[0].properties.message_id().as_ref().map(|s| s.to_string()), Some(survivor));
    println!("poison: job over the redelivery limit dead-lettered, job within it completed");
    producer.close().await;
    fleet.stop().await;
}

#[rstest]
#[tokio::test]
async fn a_time_limit_the_broker_would_not_tolerate_is_refused(vhost: Vhost) {
    let mut settings = settings_for(&vhost);
    settings.broker.consumer_timeout_ms = 60_000;
    let err = warren_consumer::builtin::worker().build(settings).await.expect_err("refused");
    let message = format!("{err:#}");
    assert!(message.contains("consumer_timeout"), "{message}");
}

/// A PNG whose header declares `w` x `h` pixels, with no pixel data: a decompression bomb's
/// calling card.
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32fast::hash(&ihdr).to_be_bytes());
    // The start of a compressed stream that would inflate to 30 GB.
    let idat = b"IDAT\x78\x9c\xec\xc1\x01\x0d\x00\x00";
    png.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
    png.extend_from_slice(idat);
    png.extend_from_slice(&crc32fast::hash(idat).to_be_bytes());
    png.extend_from_slice(&[0, 0, 0, 0]);
    png.extend_from_slice(b"IEND");
    png.extend_from_slice(&crc32fast::hash(b"IEND").to_be_bytes());
    png
}

fn envelope(kind: &str, job: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"version": 1, "kind": kind, "job": job})).expect("json")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_dead_lettered_with_its_own_reason(vhost: Vhost) {
    let mut settings = settings_for(&vhost);
    settings.limits.max_body_bytes = 64 * 1024;
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let mut jpeg = std::fs::read(warren_e2e::repo_root().join("samples/images/china.jpg")).expect("photo");
    jpeg.truncate(jpeg.len() / 2);
    let mut small_jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(image::RgbImage::new(40, 30))
        .write_to(&mut std::io::Cursor::new(&mut small_jpeg), image::ImageFormat::Jpeg)
        .expect("jpeg");
    small_jpeg.truncate(small_jpeg.len() - 40);
    let mut strip = Vec::new();
    image::DynamicImage::ImageLuma8(image::GrayImage::new(400, 20))
        .write_to(&mut std::io::Cursor::new(&mut strip), image::ImageFormat::Png)
        .expect("png");
    let random: Vec<u8> = (0..512u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let resize =
        |image: &[u8]| envelope("image.resize", serde_json::json!({"image": b64(image), "width": 16, "height": 16}));

    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("truncated JPEG", "image.resize", resize(&small_jpeg), "corrupt_image"),
        ("JPEG cut in half (over 64 KiB)", "image.resize", resize(&jpeg), "body_too_large"),
        ("PNG declaring 100000x100000", "image.resize", resize(&png_declaring(100_000, 100_000)), "limit_exceeded"),
        ("zero-byte image", "image.resize", resize(&[]), "corrupt_image"),
        ("zero-byte body", "checksum", Vec::new(), "malformed_envelope"),
        ("random bytes", "checksum", random, "malformed_envelope"),
        (
            "wrong JSON types",
            "image.resize",
            envelope("image.resize", serde_json::json!({"image": 7, "width": "wide", "height": []})),
            "invalid_params",
        ),
        (
            "unknown version",
            "checksum",
            br#"{"version":2,"kind":"checksum","job":{"data":""}}"#.to_vec(),
            "unsupported_version",
        ),
        (
            "oversized body",
            "checksum",
            envelope("checksum", serde_json::json!({"data": b64(&[1; 70_000])})),
            "body_too_large",
        ),
        (
            "image the model cannot take",
            "ml.classify",
            envelope("ml.classify", serde_json::json!({"image": b64(&strip)})),
            "model_input_mismatch",
        ),
    ];
    let mut tickets = Vec::new();
    for (name, kind, body, expected) in &cases {
        let t = producer.publish_raw(kind, body, Some("application/json"), &want_result()).await.expect("publish");
        tickets.push((name, expected, t));
    }
    let mut by_id = std::collections::HashMap::new();
    for (name, expected, t) in tickets {
        let id = t.job_id.clone();
        let r = t.wait(DEADLINE).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let e = r.error.unwrap_or_else(|| panic!("{name} succeeded"));
        println!("bad input {name:32} -> {} ({})", e.error_type, e.message);
        assert_eq!(&e.error_type, expected, "{name}: {}", e.message);
        assert_eq!(e.class, ErrorClass::Permanent, "{name}");
        by_id.insert(id, expected);
    }
    let mut dead = collect_messages(&settings, "warren.image.resize.dead", 5, DEADLINE).await;
    dead.extend(collect_messages(&settings, "warren.checksum.dead", 4, DEADLINE).await);
    dead.extend(collect_messages(&settings, "warren.ml.classify.dead", 1, DEADLINE).await);
    for d in &dead {
        let id = d.properties.message_id().as_ref().expect("id").to_string();
        let t = fields::get_str(d.properties.headers().as_ref(), h::ERROR_TYPE);
        assert_eq!(t.as_deref(), Some(*by_id[&id]), "dead letter of {id}");
    }
    assert_eq!(dead.len(), cases.len());
    let ok = producer.publish(&fault_free_checksum(), &want_result()).await.expect("publish");
    assert_eq!(ok.wait(DEADLINE).await.expect("result").status, ResultStatus::Ok, "the consumer is still up");
    producer.close().await;
    fleet.stop().await;
}

fn fault_free_checksum() -> Job {
    Job::from(warren_common::checksum::ChecksumJob { data: b"fine".to_vec(), rounds: 1 })
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_connection_is_killed_reconnects_and_goes_on(vhost: Vhost) {
    let mut settings = settings_for(&vhost);
    settings.broker.reconnect_min_ms = 50;
    settings.broker.reconnect_max_ms = 500;
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let before = producer.publish(&fault_free_checksum(), &want_result()).await.expect("publish");
    assert_eq!(before.wait(DEADLINE).await.expect("result").status, ResultStatus::Ok);
    assert!(fleet.health.is_ready());

    let closed = tokio::task::block_in_place(|| vhost.close_connections("consumer"));
    assert_eq!(closed, 1, "the consumer's connection");
    // Jobs published while it is away wait in the queue and are done after it reconnects.
    let mut tickets = Vec::new();
    for _ in 0..10 {
        tickets.push(producer.publish(&fault_free_checksum(), &want_result()).await.expect("publish"));
    }
    for t in tickets {
        assert_eq!(t.wait(DEADLINE).await.expect("result after reconnecting").status, ResultStatus::Ok);
    }
    println!("reconnect: consumer reconnected {} time(s), 10 jobs done after", fleet.health.reconnects());
    assert!(fleet.health.reconnects() >= 1);
    assert!(fleet.health.is_ready());
    producer.close().await;
    fleet.stop().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_whose_connection_is_killed_reconnects_and_gets_its_results(vhost: Vhost) {
    let mut settings = with_fault_route(&vhost, 10_000, fast_retries(3));
    settings.broker.reconnect_min_ms = 50;
    settings.broker.reconnect_max_ms = 500;
    let (fleet, producer) = fleet_and_producer(&settings).await;
    // Results that come while the producer is away wait in its reply queue.
    let slow = producer.publish(&Job::from(FaultJob { busy_ms: 1500, ..fault_spec() }), &want_result()).await;
    let slow = slow.expect("publish");
    // Both of the producer's connections: the publishing one and the reply consumer's.
    let closed = tokio::task::block_in_place(|| vhost.close_connections("producer"));
    assert_eq!(closed, 2, "the producer's connections");
    let mut tickets = vec![slow];
    for _ in 0..10 {
        // The first of these finds the connection dead, reconnects and publishes again.
        tickets.push(producer.publish(&fault_free_checksum(), &want_result()).await.expect("confirmed publish"));
    }
    for t in tickets {
        assert_eq!(t.wait(DEADLINE).await.expect("result").status, ResultStatus::Ok);
    }
    let reconnects = producer.reconnects().await;
    println!("producer reconnect: 11 jobs published and answered across a killed connection ({reconnects} reconnect)");
    assert_eq!(reconnects, 1);
    producer.close().await;
    fleet.stop().await;
}

fn fault_spec() -> FaultJob {
    FaultJob::default()
}

#[rstest]
#[tokio::test]
async fn amqps_speaks_tls_and_a_failed_handshake_is_a_clear_error(vhost: Vhost) {
    // The plain AMQP port cannot complete a TLS handshake: the TLS path must be taken (and fail
    // with the redacted URL), not fall back to plain text or hang.
    let mut settings = settings_for(&vhost);
    settings.broker.url = vhost.amqp_url().replacen("amqp://", "amqps://", 1);
    let err = tokio::time::timeout(DEADLINE, warren_infra::connect(&settings.broker, "tls-probe"))
        .await
        .expect("fails in time")
        .expect_err("no TLS on the plain port");
    let message = format!("{err:#}");
    println!("amqps against a plain port: {message}");
    assert!(message.contains("amqps://guest:***@"), "{message}");
    assert!(!message.contains("guest:guest"), "{message}");
    // A CA file that does not exist is named in the error.
    settings.broker.tls_ca_file = "/nonexistent/ca.pem".into();
    let err = warren_infra::connect(&settings.broker, "tls-probe").await.expect_err("missing CA file");
    assert!(format!("{err:#}").contains("/nonexistent/ca.pem"));
}
