//! The Grafana dashboard's queries on a real Prometheus: it scrapes two running consumers (one
//! on ONNX Runtime, one on a Triton server that is too slow for its deadline), a producer, a
//! console storing the first consumer's lifecycle events (SQLite) and RabbitMQ's per-queue
//! metrics while jobs of every kind run, some failing; then every PromQL expression of
//! `deploy/grafana/dashboards/warren.json` must parse and return data.

use std::time::{Duration, Instant};

use rstest::rstest;
use warren_common::Job;
use warren_common::checksum::ChecksumJob;
use warren_common::classify::ClassifyJob;
use warren_common::fault::FaultJob;
use warren_e2e::prometheus::Prometheus;
use warren_e2e::triton::{Served, Triton};
use warren_e2e::{
    DEADLINE, TempDir, Vhost, fleet_and_producer, photo_resize, repo_root, settings_for, small_resize, vhost,
};
use warren_infra::settings::{ModelBackend, Route};

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_parses_and_returns_data_on_a_real_prometheus(vhost: Vhost) {
    let dashboard: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("deploy/grafana/dashboards/warren.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let exprs: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| Some((title.clone(), t["expr"].as_str()?.to_owned())))
        })
        .collect();
    assert!(exprs.len() >= 15, "{exprs:?}");
    assert!(
        dashboard["panels"].as_array().expect("panels").iter().any(|p| p["type"] == "row" && p["title"] == "Console"),
        "the dashboard has a row Console"
    );

    // Vhost A: a consumer of every kind on ONNX Runtime, and the fault route for retries.
    let mut settings = settings_for(&vhost);
    settings.routes.push(Route::new("fault", "warren.fault"));
    // The console first, so its queue is bound before the first event is published.
    let store = TempDir::new("warren-dashboard-console").expect("temp dir");
    settings.console.addr = "127.0.0.1:0".into();
    settings.console.database_url = format!("sqlite://{}", store.path().join("c.db").display());
    let console = warren_console::Console::start(settings.clone()).await.expect("console starts");
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let producer_metrics =
        warren_infra::serve::spawn("127.0.0.1:0", producer.metrics().registry.clone(), || (true, String::new()))
            .await
            .expect("serve the producer's metrics");
    // Vhost B: a classify consumer whose Triton model is slower than its deadline.
    let other = tokio::task::block_in_place(|| Vhost::create("dashboard-triton"));
    let slow = Served { parameters: vec![("delay_ms".into(), "2000".into())], ..Served::digits("slow", "f32") };
    let triton = Triton::start(&[slow]).await;
    let mut on_triton = settings_for(&other);
    on_triton.consumer.kinds = vec!["ml.classify".into()];
    on_triton.model.backend = ModelBackend::Triton;
    (on_triton.model.triton_url, on_triton.model.triton_model) = (triton.url(), "slow".into());
    (on_triton.model.triton_timeout_ms, on_triton.retry.max_attempts) = (200, 1);
    let (triton_fleet, triton_producer) = fleet_and_producer(&on_triton).await;

    let addr = |a: Option<std::net::SocketAddr>| a.expect("metrics served").to_string();
    let prometheus = tokio::task::block_in_place(|| {
        Prometheus::start(&[
            ("warren-consumer", "/metrics", vec![addr(fleet.metrics_addr), addr(triton_fleet.metrics_addr)]),
            ("warren-producer", "/metrics", vec![producer_metrics.to_string()]),
            ("warren-console", "/metrics", vec![console.addr.to_string()]),
            ("rabbitmq", "/metrics/per-object", vec!["127.0.0.1:15692".into()]),
        ])
    });

    // Work of every kind, successes and failures, spread over a few scrapes.
    let digit = std::fs::read(repo_root().join("models/digits/samples/001_label4.png")).expect("digit");
    let opts = warren_e2e::want_result();
    for round in 0..4 {
        let jobs = [
            Job::from(ChecksumJob { data: vec![round; 64], rounds: 1 }),
            Job::from(ClassifyJob { image: digit.clone(), top_k: Some(1) }),
            photo_resize(),
            small_resize(b"not an image".to_vec()),
            Job::from(FaultJob { transient_failures: 1, ..FaultJob::default() }),
        ];
        for job in &jobs {
            producer.publish(job, &opts).await.expect("publish").wait(DEADLINE).await.expect("a result");
        }
        let classify = Job::from(ClassifyJob { image: digit.clone(), top_k: Some(1) });
        triton_producer.publish(&classify, &opts).await.expect("publish").wait(DEADLINE).await.expect("a result");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // (The oldest-message panel measures the dead-letter queue's head: the undecodable images.
    // The consumers keep running: a target that stops answering makes its series stale.)

    // Every expression: no parse error, and a non-empty answer once the scrapes have it.
    let until = Instant::now() + DEADLINE;
    let mut pending = exprs.clone();
    while !pending.is_empty() {
        pending.retain(|(title, expr)| {
            let answer = tokio::task::block_in_place(|| prometheus.query(expr));
            assert_eq!(answer["status"], "success", "panel {title:?}: {expr} does not evaluate: {answer}");
            answer["data"]["result"].as_array().is_none_or(Vec::is_empty)
        });
        if pending.is_empty() {
            break;
        }
        assert!(Instant::now() < until, "these dashboard queries returned no data: {pending:#?}\n{}", prometheus.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("dashboard: {} PromQL expressions evaluated on Prometheus, each with data", exprs.len());
    producer.close().await;
    triton_producer.close().await;
    fleet.stop().await;
    triton_fleet.stop().await;
    console.shutdown().await;
}
