//! Tests that disturb the whole broker (restart it), so they cannot share it with anything else:
//! `cargo test` runs test binaries one after another, so nothing else runs meanwhile; keep one
//! test in this binary (or run it with `--test-threads=1`). Not for `cargo nextest`, which would
//! run binaries side by side.

use std::time::Duration;

use rstest::rstest;
use tokio::process::Command;
use warren_common::checksum::ChecksumJob;
use warren_common::{Job, ResultStatus};
use warren_e2e::{DEADLINE, Vhost, broker, fleet_and_producer, settings_for, vhost, want_result};

async fn readyz(addr: std::net::SocketAddr) -> u16 {
    tokio::task::block_in_place(|| warren_e2e::scrape::get(addr, "/readyz").0)
}

async fn await_readyz(addr: std::net::SocketAddr, want: u16) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while readyz(addr).await != want {
        assert!(std::time::Instant::now() < deadline, "/readyz never answered {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl").args(args).output().await.expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_run_loses_nothing(vhost: Vhost) {
    const N: usize = 30;
    let mut settings = settings_for(&vhost);
    settings.broker.reconnect_min_ms = 100;
    settings.broker.reconnect_max_ms = 1000;
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let producer = std::sync::Arc::new(producer);
    let job = |i: usize| Job::Checksum(ChecksumJob { data: (i as u32).to_le_bytes().to_vec(), rounds: 1 });
    // The first half before the restart; some may still be in flight when the broker stops.
    let mut tickets = Vec::new();
    for i in 0..N / 2 {
        tickets.push(producer.publish(&job(i), &want_result()).await.expect("confirmed before the restart"));
    }
    let metrics = fleet.metrics_addr.expect("metrics served");
    assert_eq!(readyz(metrics).await, 200);
    rabbitmqctl(&["stop_app"]).await;
    await_readyz(metrics, 503).await;
    // The second half is published while the broker is down: each publish waits, reconnecting,
    // until the broker is back and confirms it.
    let publishing = tokio::spawn({
        let producer = producer.clone();
        async move {
            let mut tickets = Vec::new();
            for i in N / 2..N {
                tickets.push(
                    producer.publish(&job(i), &want_result()).await.expect("every publish is confirmed in the end"),
                );
            }
            tickets
        }
    });
    rabbitmqctl(&["start_app"]).await;
    rabbitmqctl(&["await_startup"]).await;
    await_readyz(metrics, 200).await;
    println!("broker restart: /readyz went 200 -> 503 while the broker was down -> 200 after it returned");
    tickets.extend(tokio::time::timeout(DEADLINE, publishing).await.expect("publishing finishes").expect("task"));
    let mut ids = std::collections::HashSet::new();
    for t in tickets {
        let r = t.wait(DEADLINE).await.expect("every job answers after the restart");
        assert_eq!(r.status, ResultStatus::Ok);
        ids.insert(r.job_id);
    }
    let (consumer_reconnects, producer_reconnects) = (fleet.health.reconnects(), producer.reconnects().await);
    println!(
        "broker restart: {N} jobs, {} answered; consumer reconnected {consumer_reconnects}x, producer {producer_reconnects}x",
        ids.len()
    );
    assert_eq!(ids.len(), N);
    assert!(consumer_reconnects >= 1 && producer_reconnects >= 1);
    // The vhost is deleted through the management API, which restarts with the broker.
    broker::wait_for_management(DEADLINE);
    match std::sync::Arc::try_unwrap(producer) {
        Ok(p) => p.close().await,
        Err(_) => panic!("publisher task still holds the producer"),
    }
    fleet.stop().await;
}
