//! Issue 24, item 3: an exchange of Warren's topology deleted under a running worker is declared
//! again. A publish that meets it (a result, a dead letter) declares the topology again and goes
//! on; the periodic check (`consumer.topology_check_ms`) finds the exchanges the worker never
//! publishes to itself (the jobs exchange; the dead-letter exchange the broker uses) and declares
//! them again, bindings included.

use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions};
use lapin::types::FieldTable;
use rstest::rstest;
use warren_common::checksum::ChecksumJob;
use warren_common::headers as h;
use warren_common::{Encoding, Job, JobResult, ResultStatus};
use warren_e2e::{DEADLINE, Fleet, Vhost, collect_messages, queue_depth, scrape, settings_for, vhost, want_result};
use warren_infra::{Settings, fields};
use warren_producer::{Producer, PublishOptions};

async fn delete_exchange(settings: &Settings, name: &str) {
    let conn = warren_infra::connect(&settings.broker, "test-delete").await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.exchange_delete(name.into(), ExchangeDeleteOptions::default()).await.expect("delete the exchange");
    let _ = conn.close(200, "done".into()).await;
}

async fn exchange_exists(settings: &Settings, name: &str) -> bool {
    let conn = warren_infra::connect(&settings.broker, "test-exists").await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let options = ExchangeDeclareOptions { passive: true, ..Default::default() };
    let exists =
        ch.exchange_declare(name.into(), lapin::ExchangeKind::Direct, options, FieldTable::default()).await.is_ok();
    let _ = conn.close(200, "done".into()).await;
    exists
}

fn redeclared(fleet: &Fleet, found_by: &str) -> f64 {
    let addr = fleet.metrics_addr.expect("metrics served");
    tokio::task::block_in_place(|| scrape::Scrape::take(addr))
        .value("warren_topology_redeclared_total", &[("found_by", found_by)])
}

/// Without the periodic check, only the publish can find the exchange missing: a result to the
/// deleted results exchange, a dead letter to the deleted dead-letter exchange. Before, the
/// result became a `result_not_stored` dead letter and the dead letter was handed back forever.
#[rstest]
#[case::results_exchange("results")]
#[case::dead_letter_exchange("dead_letters")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_meets_a_deleted_exchange_declares_the_topology_again_and_goes_on(
    #[case] which: &str,
    vhost: Vhost,
) {
    let mut settings = settings_for(&vhost);
    settings.consumer.topology_check_ms = 0;
    settings.consumer.kinds = vec!["checksum".into()];
    let fleet = Fleet::start(settings.clone()).await;
    let producer = Producer::connect(settings.clone()).await.expect("producer");
    let t = &settings.topology;
    match which {
        "results" => {
            delete_exchange(&settings, &t.results_exchange).await;
            let job = Job::from(ChecksumJob { data: b"x".to_vec(), rounds: 1 });
            let ticket = producer.publish(&job, &PublishOptions::default()).await.expect("publish");
            let got = collect_messages(&settings, &t.results_queue, 1, DEADLINE).await;
            let result = JobResult::decode(&got[0].data, Encoding::Json).expect("a result");
            assert_eq!((result.job_id.as_str(), result.status), (ticket.job_id.as_str(), ResultStatus::Ok));
        }
        _ => {
            delete_exchange(&settings, &t.dead_letter_exchange).await;
            let ticket = producer
                .publish_raw("checksum", b"{ this is not json", Some("application/json"), &PublishOptions::default())
                .await
                .expect("publish");
            let dead = collect_messages(&settings, "warren.checksum.dead", 1, DEADLINE).await;
            let headers = dead[0].properties.headers().as_ref();
            assert_eq!(dead[0].properties.message_id().as_ref().map(|m| m.as_str()), Some(ticket.job_id.as_str()));
            assert_eq!(fields::get_str(headers, h::ERROR_TYPE).as_deref(), Some("malformed_envelope"));
        }
    }
    assert_eq!(queue_depth(&settings, "warren.checksum").await, 0, "nothing handed back");
    assert_eq!(queue_depth(&settings, "warren.checksum.dead").await, 0, "nothing else dead-lettered");
    let found = redeclared(&fleet, "publish");
    println!("deleted {which} exchange: the publish declared the topology again ({found} times)");
    assert!(found >= 1.0);
    assert!(fleet.health.is_ready(), "ready again: {}", fleet.health.status().1);
    producer.close().await;
    fleet.stop().await;
}

/// The periodic check finds each exchange deleted and declares the topology again, bindings
/// included: a job published through the jobs exchange is answered, and the broker's own dead
/// letters and results are routed again. Before, a deleted exchange stayed deleted.
#[rstest]
#[case::jobs_exchange("warren.jobs", "checksum")]
#[case::results_exchange("warren.results", "checksum")]
#[case::dead_letter_exchange("warren.dlx", "warren.checksum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_finds_a_deleted_exchange_and_declares_it_again(
    #[case] exchange: &str,
    #[case] bound_key: &str,
    vhost: Vhost,
) {
    let mut settings = settings_for(&vhost);
    settings.consumer.topology_check_ms = 200;
    settings.consumer.kinds = vec!["checksum".into()];
    let fleet = Fleet::start(settings.clone()).await;
    delete_exchange(&settings, exchange).await;
    let start = Instant::now();
    // The exchange exists again, and the check says it declared it (first seen missing by it).
    while !exchange_exists(&settings, exchange).await {
        assert!(start.elapsed() < DEADLINE, "{exchange} was never declared again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("deleted {exchange}: declared again by the check after {:?} (every 200 ms)", start.elapsed());
    // Counted once the declaration (which made the exchange exist) has ended, bindings included.
    while redeclared(&fleet, "check") < 1.0 {
        assert!(start.elapsed() < DEADLINE, "the check never counted its declaration");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its binding is back: a mandatory publish is routed (no return).
    let conn = std::sync::Arc::new(warren_infra::connect(&settings.broker, "test-route").await.expect("connect"));
    let publisher = warren_infra::Publisher::open(conn.clone(), Duration::from_secs(10), 4).await.expect("publisher");
    let props = lapin::BasicProperties::default().with_content_type("application/json".into());
    publisher.publish(exchange, bound_key, b"{}", props, true).await.expect("routed through the declared exchange");
    let _ = conn.close(200, "done".into()).await;
    if exchange == "warren.jobs" {
        let mut producer = Producer::connect(settings.clone()).await.expect("producer");
        producer.enable_replies().await.expect("replies");
        let job = Job::from(ChecksumJob { data: b"y".to_vec(), rounds: 1 });
        let r = producer.publish(&job, &want_result()).await.expect("publish").wait(DEADLINE).await.expect("answered");
        assert_eq!(r.status, ResultStatus::Ok);
        producer.close().await;
    }
    fleet.stop().await;
}
