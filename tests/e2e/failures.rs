//! Bad messages are dead-lettered with their reason, answered with an error result when a reply
//! is expected, and never stop the consumer; nothing published is lost; an unroutable publish
//! is an error.

use rstest::rstest;
use std::collections::BTreeMap;

use warren_common::checksum::ChecksumJob;
use warren_common::headers as h;
use warren_common::{Encoding, Job, JobEnvelope, ResultStatus};
use warren_e2e::{
    DEADLINE, Vhost, collect_messages, fleet_and_producer, repo_root, settings_for, small_resize, vhost, want_result,
};
use warren_infra::{PublishError, fields};
use warren_producer::{Producer, ProducerError, PublishOptions};

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_dead_lettered_and_the_next_job_succeeds(vhost: Vhost) {
    let settings = settings_for(&vhost);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let reply = want_result();

    let mut jpeg = std::fs::read(repo_root().join("samples/images/china.jpg")).expect("photo");
    jpeg.truncate(jpeg.len() / 3);
    let corrupt = JobEnvelope::encode(&small_resize(jpeg), Encoding::Json).expect("encode");
    let unknown_kind = br#"{"version":1,"kind":"video.transcode","job":{}}"#.to_vec();
    let malformed = b"{ this is not json".to_vec();
    let future_version = br#"{"version":9,"kind":"checksum","job":{}}"#.to_vec();

    // (routing key, body, content type, expected error type, expected queue)
    type Case = (&'static str, Vec<u8>, Option<&'static str>, &'static str, &'static str);
    let bad: Vec<Case> = vec![
        ("image.resize", corrupt, Some("application/json"), "corrupt_image", "warren.image.resize"),
        ("checksum", unknown_kind, Some("application/json"), "unknown_kind", "warren.checksum"),
        ("checksum", malformed, Some("application/json"), "malformed_envelope", "warren.checksum"),
        ("checksum", future_version, None, "unsupported_version", "warren.checksum"),
        ("checksum", b"{}".to_vec(), Some("text/plain"), "unsupported_content_type", "warren.checksum"),
    ];
    let mut expected_by_id = BTreeMap::new();
    let mut tickets = Vec::new();
    for (key, body, ct, error_type, queue) in &bad {
        let t = producer.publish_raw(key, body, *ct, &reply).await.expect("bad job is still routable");
        expected_by_id.insert(t.job_id.clone(), (*error_type, *queue));
        tickets.push(t);
    }
    // The good job after the bad ones: the consumer is still there and still right.
    let good = producer
        .publish(&Job::from(ChecksumJob { data: b"still alive".to_vec(), rounds: 1 }), &reply)
        .await
        .expect("publish good");

    for t in tickets {
        let id = t.job_id.clone();
        let r = t.wait(DEADLINE).await.expect("an error result for a bad job");
        let (error_type, _) = expected_by_id[&id];
        assert_eq!(r.status, ResultStatus::Error);
        let e = r.error.expect("error details");
        assert_eq!(e.error_type, error_type, "{}", e.message);
        assert_eq!(e.class, warren_common::ErrorClass::Permanent);
        assert!(!e.message.is_empty());
    }
    let ok = good.wait(DEADLINE).await.expect("good result");
    assert_eq!(ok.status, ResultStatus::Ok);

    // Every bad job is in its queue's dead-letter queue, body intact, with the reason.
    let resize_dead = collect_messages(&settings, "warren.image.resize.dead", 1, DEADLINE).await;
    let checksum_dead = collect_messages(&settings, "warren.checksum.dead", 4, DEADLINE).await;
    let mut seen = 0;
    for d in resize_dead.iter().chain(&checksum_dead) {
        let headers = d.properties.headers().as_ref();
        let id = d.properties.message_id().as_ref().expect("message id kept").to_string();
        let (error_type, queue) = expected_by_id[&id];
        assert_eq!(fields::get_str(headers, h::ERROR_TYPE).as_deref(), Some(error_type));
        assert_eq!(fields::get_str(headers, h::DEAD_REASON).as_deref(), Some("permanent_error"));
        assert_eq!(fields::get_str(headers, h::ERROR_CLASS).as_deref(), Some("permanent"));
        assert_eq!(fields::get_str(headers, h::ORIGINAL_QUEUE).as_deref(), Some(queue));
        assert_eq!(fields::get_str(headers, h::ORIGINAL_EXCHANGE).as_deref(), Some("warren.jobs"));
        assert!(fields::get_str(headers, h::ERROR_MESSAGE).is_some_and(|m| !m.is_empty()));
        assert!(fields::get_u64(headers, h::FAILED_AT).is_some());
        assert!(fields::get_str(headers, h::CONSUMER).is_some());
        let original = bad.iter().find(|b| b.3 == error_type).expect("known case");
        assert_eq!(d.data, original.1, "the dead letter keeps the original body");
        seen += 1;
    }
    assert_eq!(seen, bad.len());
    println!("bad inputs: {} dead-lettered with reasons, good job ok", seen);
    producer.close().await;
    fleet.stop().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_every_job_is_a_result_or_a_dead_letter(vhost: Vhost) {
    let settings = settings_for(&vhost);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let reply = want_result();
    let (mut tickets, mut bad) = (Vec::new(), 0);
    for i in 0..60u32 {
        let t = if i % 5 == 0 {
            bad += 1;
            producer.publish(&small_resize(vec![0xFF, 0xD8, 0xFF, 0x00]), &reply).await
        } else {
            let encoding = Some(if i % 2 == 0 { Encoding::Json } else { Encoding::Bincode });
            let opts = PublishOptions { encoding, ..reply.clone() };
            producer.publish(&Job::from(ChecksumJob { data: i.to_le_bytes().to_vec(), rounds: 1 }), &opts).await
        };
        tickets.push(t.expect("publish confirmed"));
    }
    let (mut ok, mut failed) = (0, 0);
    let mut ids = std::collections::HashSet::new();
    for t in tickets {
        let r = t.wait(DEADLINE).await.expect("every job answers");
        assert!(ids.insert(r.job_id.clone()), "one answer per job id");
        match r.status {
            ResultStatus::Ok => ok += 1,
            ResultStatus::Error => failed += 1,
        }
    }
    let dead = collect_messages(&settings, "warren.image.resize.dead", bad, DEADLINE).await;
    println!("accounting: published 60, results ok {ok}, errors {failed}, dead letters {}", dead.len());
    assert_eq!(ok + failed, 60);
    assert_eq!(failed, bad);
    assert_eq!(dead.len(), bad);
    producer.close().await;
    fleet.stop().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_publish_is_an_error(vhost: Vhost) {
    let settings = settings_for(&vhost);
    let producer = Producer::connect(settings).await.expect("producer");
    producer.declare_topology().await.expect("topology");
    let err = producer
        .publish_raw("no.such.kind", b"{}", None, &PublishOptions::default())
        .await
        .expect_err("no queue is bound for this key");
    assert!(
        matches!(err, ProducerError::Publish(PublishError::Unroutable { ref routing_key, .. }) if routing_key == "no.such.kind"),
        "{err}"
    );
    // A routable one on the same channel still works.
    producer
        .publish(&Job::from(ChecksumJob { data: vec![], rounds: 1 }), &PublishOptions::default())
        .await
        .expect("routable publish");
    producer.close().await;
}
