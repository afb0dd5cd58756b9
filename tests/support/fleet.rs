//! The real consumer, run in-process through its library, and readers of what it produced.

use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use warren_infra::Settings;

use crate::{Vhost, repo_root};

/// The repository's configuration, pointed at `vhost`, with short timeouts.
pub fn settings_for(vhost: &Vhost) -> Settings {
    let mut s = Settings::load(&repo_root().join("config")).expect("config/default.toml loads");
    s.broker.url = vhost.amqp_url();
    s.broker.confirm_timeout_ms = 10_000;
    s.consumer.drain_timeout_ms = 10_000;
    s.telemetry.metrics_addr = "127.0.0.1:0".into();
    s.consumer.worker_id = format!("test-{}", &vhost.name[vhost.name.len() - 6..]);
    s
}

/// A consumer running on the test's runtime until [`Fleet::stop`].
#[derive(Debug)]
pub struct Fleet {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    pub pool_size: usize,
    pub prefetch: u16,
    pub health: std::sync::Arc<warren_consumer::Health>,
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Fleet {
    pub async fn start(settings: Settings) -> Self {
        let app = warren_consumer::builtin::worker().build(settings).await.expect("consumer starts");
        let (pool_size, prefetch, health, metrics_addr) =
            (app.pool_size(), app.prefetch(), app.health(), app.metrics_addr());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Self { stop: Some(tx), task, pool_size, prefetch, health, metrics_addr }
    }

    /// Its `/metrics` now (from a multi-threaded test runtime: the scrape blocks).
    pub fn scrape(&self) -> crate::scrape::Scrape {
        let addr = self.metrics_addr.expect("the fleet serves metrics");
        tokio::task::block_in_place(|| crate::scrape::Scrape::take(addr))
    }

    /// Stops consuming, drains and closes; fails the test if the consumer had failed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = &mut self.task;
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("consumer stops within 30s")
            .expect("consumer task")
            .expect("consumer ran without error");
    }
}

/// Takes `n` messages from `queue` (acking each), or fails the test at `deadline`. One message
/// is prefetched at a time, so nothing beyond the `n` is taken: the rest stay in the queue.
pub async fn collect_messages(settings: &Settings, queue: &str, n: usize, deadline: Duration) -> Vec<Delivery> {
    let conn = warren_infra::connect(&settings.broker, "test-reader").await.expect("connect");
    let channel = conn.create_channel().await.expect("channel");
    channel.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = channel
        .basic_consume(queue.into(), "test-reader".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut out: Vec<Delivery> = Vec::with_capacity(n);
    let collect = async {
        while out.len() < n {
            match consumer.next().await {
                Some(Ok(d)) => {
                    d.ack(BasicAckOptions::default()).await.expect("ack");
                    out.push(d);
                }
                other => panic!("reading {queue}: {other:?}"),
            }
        }
    };
    if tokio::time::timeout(deadline, collect).await.is_err() {
        panic!("only {} of {n} messages arrived in {queue} within {deadline:?}", out.len());
    }
    let _ = conn.close(200, "done".into()).await;
    out
}

/// A consumer and a producer with a reply queue, both on `settings`.
pub async fn fleet_and_producer(settings: &Settings) -> (Fleet, warren_producer::Producer) {
    let fleet = Fleet::start(settings.clone()).await;
    let mut producer = warren_producer::Producer::connect(settings.clone()).await.expect("producer connects");
    producer.enable_replies().await.expect("reply queue");
    (fleet, producer)
}

/// Publishes `n` distinct checksum jobs asking for their results and waits until each
/// succeeded; their ids, in the order published.
pub async fn answer_checksum_jobs(producer: &warren_producer::Producer, n: u32) -> Vec<String> {
    let mut tickets = Vec::new();
    for i in 0..n {
        let job = warren_common::Job::from(warren_common::checksum::ChecksumJob {
            data: i.to_le_bytes().to_vec(),
            rounds: 1,
        });
        tickets.push(producer.publish(&job, &want_result()).await.expect("publish"));
    }
    let mut ids = Vec::new();
    for t in tickets {
        let r = t.wait(crate::DEADLINE).await.expect("every job answered");
        assert_eq!(r.status, warren_common::ResultStatus::Ok, "{r:?}");
        ids.push(r.job_id);
    }
    ids
}

/// Waits until `check` holds, asking every 50 ms, at most [`crate::DEADLINE`]; fails the test
/// with `what` past it.
pub async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = std::time::Instant::now() + crate::DEADLINE;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A durable queue `queue` bound to the events exchange with `#` (every event, as a status
/// store binds one), the topology declared first; the connection and a channel to read it on.
pub async fn listen_to_every_event(settings: &Settings, queue: &str) -> (lapin::Connection, lapin::Channel) {
    let conn = warren_infra::connect(&settings.broker, "test-events").await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    warren_infra::topology::declare(&ch, settings).await.expect("topology");
    let durable = lapin::options::QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(queue.into(), durable, FieldTable::default()).await.expect("queue");
    let exchange = settings.topology.events_exchange.as_str();
    ch.queue_bind(queue.into(), exchange.into(), "#".into(), Default::default(), FieldTable::default())
        .await
        .expect("bind");
    (conn, ch)
}

/// Publish options asking for the result.
pub fn want_result() -> warren_producer::PublishOptions {
    warren_producer::PublishOptions { want_result: true, ..Default::default() }
}

/// The number of ready messages in `queue` (a passive declare; fails the test if it is missing).
pub async fn queue_depth(settings: &Settings, queue: &str) -> u32 {
    let conn = warren_infra::connect(&settings.broker, "test-depth").await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("queue {queue}: {e}"));
    let _ = conn.close(200, "done".into()).await;
    q.message_count()
}
