//! Metrics and probes of a running consumer, scraped over HTTP during real work.

use std::time::Duration;

use rstest::rstest;
use warren_common::checksum::ChecksumJob;
use warren_common::{Job, ResultStatus};
use warren_e2e::scrape::{Scrape, get};
use warren_e2e::{DEADLINE, Vhost, fleet_and_producer, settings_for, vhost, want_result};

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_histograms_move_by_the_right_amounts_and_readyz_follows_the_broker(vhost: Vhost) {
    let settings = settings_for(&vhost);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let addr = fleet.metrics_addr.expect("metrics served");
    assert_eq!(get(addr, "/healthz").0, 200);
    assert_eq!(get(addr, "/readyz").0, 200);
    let before = tokio::task::block_in_place(|| Scrape::take(addr));

    let mut tickets = Vec::new();
    for i in 0..5u8 {
        let job = Job::from(ChecksumJob { data: vec![i; 100], rounds: 1 });
        tickets.push(producer.publish(&job, &want_result()).await.expect("publish"));
    }
    for _ in 0..2 {
        let body = br#"{"version":1,"kind":"image.resize","job":{"image":"/9j/AAAA","width":8,"height":8}}"#;
        tickets.push(
            producer
                .publish_raw("image.resize", body, Some("application/json"), &want_result())
                .await
                .expect("publish"),
        );
    }
    let mut ok = 0;
    for t in tickets {
        ok += usize::from(t.wait(DEADLINE).await.expect("result").status == ResultStatus::Ok);
    }
    assert_eq!(ok, 5);
    let checksum = [("queue", "warren.checksum"), ("kind", "checksum")];
    let resize = [("queue", "warren.image.resize"), ("kind", "image.resize")];
    // A result can reach us before its confirm reaches the consumer, which counts it then: wait
    // until the last events are in.
    let deadline = std::time::Instant::now() + DEADLINE;
    let after = loop {
        let s = tokio::task::block_in_place(|| Scrape::take(addr));
        let settled = s.value("warren_jobs_completed_total", &[]) - before.value("warren_jobs_completed_total", &[]);
        let published = |s: &Scrape| {
            s.value("warren_publishes_total", &[("target", "result")])
                + s.value("warren_publishes_total", &[("target", "error_result")])
        };
        let results = published(&s) - published(&before);
        if settled >= 7.0 && results >= 7.0 {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "metrics never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let delta = |name: &str, labels: &[(&str, &str)]| after.value(name, labels) - before.value(name, labels);
    assert_eq!(delta("warren_jobs_received_total", &checksum), 5.0);
    assert_eq!(delta("warren_jobs_received_total", &resize), 2.0);
    assert_eq!(delta("warren_jobs_completed_total", &[checksum[0], checksum[1], ("outcome", "ok")]), 5.0);
    assert_eq!(delta("warren_jobs_completed_total", &[resize[0], resize[1], ("outcome", "dead_lettered")]), 2.0);
    assert_eq!(delta("warren_job_errors_total", &[resize[0], ("error_type", "corrupt_image")]), 2.0);
    assert_eq!(delta("warren_job_run_seconds_count", &checksum), 5.0);
    assert_eq!(delta("warren_job_queue_wait_seconds_count", &checksum), 5.0);
    assert_eq!(delta("warren_job_end_to_end_seconds_count", &checksum), 5.0);
    assert_eq!(delta("warren_publishes_total", &[("target", "result"), ("outcome", "acked")]), 5.0);
    assert_eq!(delta("warren_publishes_total", &[("target", "error_result"), ("outcome", "acked")]), 2.0);
    assert_eq!(delta("warren_publishes_total", &[("target", "dead_letter"), ("outcome", "acked")]), 2.0);
    assert!(after.value("warren_job_run_seconds_sum", &checksum) > 0.0);
    assert_eq!(after.value("warren_pool_capacity", &[]), fleet.pool_size as f64);
    assert_eq!(after.value("warren_prefetch", &[("queue", "warren.checksum")]), f64::from(fleet.prefetch));
    assert_eq!(after.value("warren_jobs_in_flight", &[]), 0.0);
    assert_eq!(after.value("warren_connected", &[]), 1.0);
    assert!(after.value("warren_model_load_seconds", &[]) > 0.0);
    assert!(after.value("process_resident_memory_bytes", &[]) > 1e6);
    println!("metrics: 5 ok + 2 dead-lettered jobs moved every counter and histogram by exactly that");

    // The producer's side, served the same way.
    let served =
        warren_infra::serve::spawn("127.0.0.1:0", producer.metrics().registry.clone(), || (true, String::new()))
            .await
            .expect("serve");
    let p = tokio::task::block_in_place(|| Scrape::take(served));
    assert_eq!(p.value("warren_producer_published_total", &[("kind", "checksum"), ("outcome", "acked")]), 5.0);
    assert_eq!(p.value("warren_producer_published_total", &[("kind", "image.resize"), ("outcome", "acked")]), 2.0);
    assert_eq!(p.value("warren_producer_confirm_seconds_count", &[]), 7.0);
    assert_eq!(p.value("warren_producer_results_total", &[("status", "ok")]), 5.0);
    assert_eq!(p.value("warren_producer_results_total", &[("status", "error")]), 2.0);
    assert_eq!(p.value("warren_producer_connected", &[]), 1.0);

    // The broker drops the connection: unready, then ready again once reconnected.
    let closed = tokio::task::block_in_place(|| vhost.close_connections("consumer"));
    assert_eq!(closed, 1);
    let (mut saw_unready, deadline) = (false, std::time::Instant::now() + DEADLINE);
    loop {
        let ready = tokio::task::block_in_place(|| get(addr, "/readyz").0) == 200;
        saw_unready |= !ready;
        if saw_unready && ready {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "readyz never went unready and back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last = tokio::task::block_in_place(|| Scrape::take(addr));
    assert_eq!(last.value("warren_reconnects_total", &[]), 1.0);
    assert_eq!(last.value("warren_connected", &[]), 1.0);
    producer.close().await;
    fleet.stop().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exported(vhost: Vhost) {
    let dashboard: serde_json::Value = serde_json::from_slice(
        &std::fs::read(warren_e2e::repo_root().join("deploy/grafana/dashboards/warren.json")).expect("dashboard"),
    )
    .expect("dashboard JSON parses");
    let mut wanted = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        // A row ("Console") has no queries of its own.
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                // The console's own metrics come from warren-console, not a consumer:
                // tests/e2e/dashboard.rs scrapes one, and each query of its row must return data.
                let console = word.starts_with("warren_console_");
                if (word.starts_with("warren_") && !console) || word.starts_with("process_") {
                    wanted.insert(word.to_owned());
                }
            }
        }
    }
    assert!(wanted.len() >= 8, "{wanted:?}");

    // Work that makes every labelled series appear: a success, a failure, an inference.
    let settings = settings_for(&vhost);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let digit = std::fs::read(warren_e2e::repo_root().join("models/digits/samples/001_label4.png")).expect("digit");
    let jobs = [
        Job::from(ChecksumJob { data: vec![1], rounds: 1 }),
        Job::from(warren_common::classify::ClassifyJob { image: digit, top_k: Some(1) }),
        Job::from(warren_common::classify::ClassifyJob { image: b"not an image".to_vec(), top_k: None }),
    ];
    for job in &jobs {
        producer.publish(job, &want_result()).await.expect("publish").wait(DEADLINE).await.expect("result");
    }
    let addr = fleet.metrics_addr.expect("metrics served");
    let exported = tokio::task::block_in_place(|| Scrape::take(addr)).names();
    // Triton's request errors come only from a worker whose model is on Triton: checked by
    // tests/e2e/triton.rs.
    let missing: Vec<&String> =
        wanted.iter().filter(|w| !exported.contains(*w) && !w.starts_with("warren_triton_")).collect();
    println!("dashboard: {} metrics queried, all exported by a running consumer", wanted.len());
    assert!(missing.is_empty(), "the dashboard queries metrics no binary exports: {missing:?}");
    producer.close().await;
    fleet.stop().await;
}
