//! Warren against a real three-node RabbitMQ cluster (`scripts/cluster.sh`) with quorum queues:
//! a node lost under load, a rolling restart of every node under load, warrenctl on the
//! cluster, and TLS against real TLS listeners (a CA, a wrong CA, a wrong host name, a client
//! certificate). The tests take turns ([`Cluster::turn`]): they stop and kill nodes. `cargo
//! test` runs this binary alone, after the others.

mod nodes;
mod tls;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use warren_common::checksum::ChecksumJob;
use warren_common::{Job, JobResult};
use warren_e2e::cluster::Cluster;
use warren_e2e::{Vhost, settings_for};
use warren_infra::Settings;
use warren_infra::settings::QueueType;

/// Settings on `vhost` of the cluster, quorum queues, dialling the nodes in `order`.
pub fn cluster_settings(cluster: &Cluster, vhost: &Vhost, order: &[usize]) -> Settings {
    let mut s = settings_for(vhost);
    s.broker.url = cluster.urls(vhost, order);
    s.broker.reconnect_min_ms = 100;
    s.broker.reconnect_max_ms = 1000;
    s.broker.connect_timeout_ms = 3000;
    s.topology.queue_type = QueueType::Quorum;
    s
}

/// A checksum job numbered `i` (its data says which).
pub fn job(i: usize) -> Job {
    Job::from(ChecksumJob { data: (i as u64).to_le_bytes().to_vec(), rounds: 1 })
}

/// Reads the results queue until every one of `jobs` job ids has a result (acking each), or
/// fails the test at `deadline`; returns how many results each job id got.
pub async fn results(settings: &Settings, jobs: usize, deadline: Duration) -> HashMap<String, usize> {
    let conn = warren_infra::connect(&settings.broker, "test-results").await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(200, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = ch
        .basic_consume(
            "warren.results".into(),
            "test-results".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume results");
    let mut seen: HashMap<String, usize> = HashMap::new();
    let read = async {
        while seen.len() < jobs {
            let Some(Ok(d)) = consumer.next().await else { panic!("the results consumer ended") };
            let r = JobResult::decode(&d.data, warren_common::Encoding::Json).expect("a result");
            assert_eq!(r.status, warren_common::ResultStatus::Ok, "{r:?}");
            *seen.entry(r.job_id).or_default() += 1;
            d.ack(BasicAckOptions::default()).await.expect("ack");
        }
    };
    if tokio::time::timeout(deadline, read).await.is_err() {
        panic!("only {} of {jobs} jobs had a result within {deadline:?}", seen.len());
    }
    let _ = conn.close(200, "done".into()).await;
    seen
}

/// Waits until `condition` holds, polling every 100 ms, or fails the test.
pub async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> F,
) {
    let started = Instant::now();
    while !condition().await {
        assert!(started.elapsed() < deadline, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The default deadline for what a node loss may take (elections, reconnections).
pub const SLOW: Duration = Duration::from_secs(120);

#[test]
fn the_cluster_fixture_names_three_nodes() {
    let c = Cluster::get();
    assert_eq!((c.amqp.len(), c.mgmt.len(), c.nodes.len()), (3, 3, 3), "{c:?}");
}
