//! Issue 25, point 1: lifecycle events. Every step of a job is published to the events
//! exchange (`<kind>.<event>`, JSON, `docs/contract.md`), after the step is settled, off the
//! delivery path.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use rstest::rstest;
use serde_json::Value;
use warren_common::checksum::ChecksumJob;
use warren_common::fault::FaultJob;
use warren_common::{Job, ResultStatus};
use warren_e2e::{
    DEADLINE, Fleet, Vhost, answer_checksum_jobs, listen_to_every_event, queue_depth, scrape, settings_for, vhost,
    want_result,
};
use warren_producer::Producer;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_of_a_job_is_an_event_routed_by_kind_and_step(vhost: Vhost) {
    let mut settings = settings_for(&vhost);
    settings.routes.push(warren_infra::settings::Route::new("fault", "warren.fault"));
    settings.consumer.kinds = vec!["checksum".into(), "fault".into()];
    (settings.retry.base_delay_ms, settings.retry.max_delay_ms) = (100, 100);
    let mut producer = Producer::connect(settings.clone()).await.expect("producer");
    producer.declare_topology().await.expect("topology");
    producer.enable_replies().await.expect("replies");
    // A tool listening to every event.
    let queue = "test.events";
    let (conn, ch) = listen_to_every_event(&settings, queue).await;
    let fleet = Fleet::start(settings.clone()).await;

    let reply = want_result();
    let ok = producer.publish(&Job::from(ChecksumJob { data: b"x".to_vec(), rounds: 1 }), &reply).await;
    let flaky = Job::from(FaultJob { transient_failures: 1, ..FaultJob::default() });
    let flaky = producer.publish(&flaky, &reply).await.expect("publish");
    let bad = producer.publish_raw("checksum", b"{ not json", Some("application/json"), &reply).await;
    let (ok, bad) = (ok.expect("publish"), bad.expect("publish"));
    let ids = [ok.job_id.clone(), flaky.job_id.clone(), bad.job_id.clone()];
    assert_eq!(ok.wait(DEADLINE).await.expect("ok result").status, ResultStatus::Ok);
    assert_eq!(flaky.wait(DEADLINE).await.expect("flaky result").attempt, 1);
    assert_eq!(bad.wait(DEADLINE).await.expect("bad result").status, ResultStatus::Error);

    // 3 + 6 + 1 events, each routed `<kind>.<event>`.
    const EVENTS: usize = 10;
    let mut consumer = ch
        .basic_consume(queue.into(), "test".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut by_job: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut seen = 0;
    let collect = async {
        while seen < EVENTS {
            let d = consumer.next().await.expect("an event").expect("delivery");
            d.ack(BasicAckOptions::default()).await.expect("ack");
            assert_eq!(d.properties.content_type().as_ref().map(|c| c.as_str()), Some("application/json"));
            assert_eq!(*d.properties.delivery_mode(), Some(1), "transient unless consumer.events_persistent");
            // A JSON array of the events queued together that share this routing key.
            let events: Vec<Value> = serde_json::from_slice(&d.data).expect("a JSON array");
            assert!(!events.is_empty());
            for e in events {
                let key = format!("{}.{}", e["kind"].as_str().expect("kind"), e["event"].as_str().expect("event"));
                assert_eq!(d.routing_key.as_str(), key, "routed by kind and step");
                by_job.entry(e["job_id"].as_str().expect("job id").to_owned()).or_default().push(e);
                seen += 1;
            }
        }
    };
    tokio::time::timeout(DEADLINE, collect).await.expect("every event within the deadline");
    assert_eq!(seen, EVENTS);
    let steps = |id: &str| -> Vec<(String, u64)> {
        let mut events = by_job.get(id).cloned().unwrap_or_default();
        events.sort_by_key(|e| e["at_us"].as_u64().expect("at_us"));
        events
            .iter()
            .map(|e| (e["event"].as_str().expect("event").to_owned(), e["attempt"].as_u64().expect("attempt")))
            .collect()
    };
    let s = |v: &[(&str, u64)]| v.iter().map(|(e, a)| ((*e).to_owned(), *a)).collect::<Vec<_>>();
    assert_eq!(steps(&ids[0]), s(&[("received", 0), ("started", 0), ("succeeded", 0)]));
    assert_eq!(
        steps(&ids[1]),
        s(&[("received", 0), ("started", 0), ("retried", 0), ("received", 1), ("started", 1), ("succeeded", 1)])
    );
    assert_eq!(steps(&ids[2]), s(&[("dead_lettered", 0)]));

    let one = |id: &str, event: &str| by_job[id].iter().find(|e| e["event"] == event).expect("that event").clone();
    let succeeded = one(&ids[0], "succeeded");
    assert!(succeeded["run_ms"].is_u64() && succeeded["output_bytes"].as_u64().is_some_and(|b| b > 0), "{succeeded}");
    assert_eq!(succeeded["worker_id"], settings.consumer.worker_id.as_str());
    assert_eq!(succeeded["queue"], "warren.checksum");
    assert_eq!(succeeded["version"], 1);
    assert!(succeeded["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{succeeded}");
    let retried = one(&ids[1], "retried");
    assert_eq!(retried["error"]["type"], "injected_fault");
    assert_eq!(retried["error"]["class"], "transient");
    assert!(retried["delay_ms"].is_u64(), "{retried}");
    let dead = one(&ids[2], "dead_lettered");
    assert_eq!((dead["kind"].as_str(), dead["reason"].as_str()), (Some("unknown"), Some("permanent_error")));
    assert_eq!(dead["error"]["type"], "malformed_envelope");
    assert_eq!(queue_depth(&settings, queue).await, 0, "no event beyond the {EVENTS}");

    let addr = fleet.metrics_addr.expect("metrics");
    let m = tokio::task::block_in_place(|| scrape::Scrape::take(addr));
    let (published, dropped) = (
        m.value("warren_events_total", &[("outcome", "published")]),
        m.value("warren_events_total", &[("outcome", "dropped")]),
    );
    println!("lifecycle events: {EVENTS} for 3 jobs, {published} published, {dropped} dropped");
    assert_eq!((published, dropped), (EVENTS as f64, 0.0));
    let _ = conn.close(200, "done".into()).await;
    producer.close().await;
    fleet.stop().await;
}

/// A worker stopped right after its last job's result still publishes that job's events: the
/// drain sends what is queued (or lingering) before it closes the connection.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_after_its_last_result_still_publishes_its_events(vhost: Vhost) {
    const JOBS: usize = 40;
    let mut settings = settings_for(&vhost);
    settings.consumer.kinds = vec!["checksum".into()];
    let mut producer = Producer::connect(settings.clone()).await.expect("producer");
    producer.declare_topology().await.expect("topology");
    producer.enable_replies().await.expect("replies");
    let queue = "test.events.drain";
    let (conn, ch) = listen_to_every_event(&settings, queue).await;
    let fleet = Fleet::start(settings.clone()).await;
    answer_checksum_jobs(&producer, JOBS as u32).await;
    // At once: the last jobs' succeeded events are at most queued or lingering now.
    fleet.stop().await;
    let mut consumer = ch
        .basic_consume(queue.into(), "test".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut seen = 0;
    let collect = async {
        while seen < 3 * JOBS {
            let d = consumer.next().await.expect("an event").expect("delivery");
            d.ack(BasicAckOptions::default()).await.expect("ack");
            seen += serde_json::from_slice::<Vec<Value>>(&d.data).expect("a JSON array").len();
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), collect).await;
    println!("stopped after its last result: {seen} of {} events published", 3 * JOBS);
    assert_eq!(seen, 3 * JOBS, "every event of every job, the last ones included");
    let _ = conn.close(200, "done".into()).await;
    producer.close().await;
}
