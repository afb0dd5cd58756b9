//! One connection's worth of work: connect, declare the topology, open the publishing channel
//! and one consuming channel per queue. When the connection or a channel is lost the session
//! ends and the application opens a new one; jobs still running from the old session finish
//! but cannot ack (their channel is gone, and the broker has already requeued them), so nothing
//! unconfirmed is ever acked.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};
use tokio_util::sync::CancellationToken;
use warren_common::JobKind;
use warren_common::classify::Classifier;
use warren_infra::{Publisher, Settings, topology};

use crate::batcher::Batcher;
use crate::handler::{Served, Worker};
use crate::metrics::Metrics;
use crate::pool::WorkerPool;

/// What outlives sessions: settings, the pool, the model, the queues served.
pub struct Shared {
    pub settings: Arc<Settings>,
    pub pool: WorkerPool,
    pub classifier: Option<Arc<dyn Classifier>>,
    pub worker_id: String,
    pub kinds: Vec<JobKind>,
    pub served: Vec<Arc<Served>>,
    pub prefetch: u16,
    pub metrics: Arc<Metrics>,
    pub batcher: Option<Batcher>,
}

pub struct Session {
    pub connection: Connection,
    pub worker: Arc<Worker>,
    pub consumers: Vec<(Arc<Served>, Channel, lapin::Consumer)>,
}

impl Session {
    pub async fn open(shared: &Shared) -> anyhow::Result<Self> {
        let settings = &shared.settings;
        let connection = warren_infra::connect(&settings.broker, "consumer").await?;
        let setup = connection.create_channel().await.context("open channel for topology")?;
        topology::declare(&setup, settings).await?;
        let _ = setup.close(200, "topology declared".into()).await;

        let confirm_timeout = Duration::from_millis(settings.broker.confirm_timeout_ms);
        let publisher = Publisher::open(&connection, confirm_timeout).await.context("open publishing channel")?;
        let mut consumers = Vec::with_capacity(shared.served.len());
        for served in &shared.served {
            let queue = served.queue.as_str();
            let prefetch = served.prefetch;
            let channel = connection.create_channel().await.context("open consuming channel")?;
            // Per consumer (global = false): each queue gets `prefetch` unacked deliveries.
            channel
                .basic_qos(prefetch, BasicQosOptions { global: false })
                .await
                .with_context(|| format!("set prefetch {prefetch} on queue {queue}"))?;
            let consumer = channel
                .basic_consume(
                    ShortString::from(queue),
                    ShortString::from(format!("{}/{queue}", shared.worker_id)),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("consume queue {queue}"))?;
            consumers.push((served.clone(), channel, consumer));
        }
        let worker = Arc::new(Worker {
            settings: settings.clone(),
            publisher,
            pool: shared.pool.clone(),
            classifier: shared.classifier.clone(),
            worker_id: shared.worker_id.clone(),
            kinds: shared.kinds.clone(),
            metrics: shared.metrics.clone(),
            batcher: shared.batcher.clone(),
            lost: CancellationToken::new(),
        });
        Ok(Self { connection, worker, consumers })
    }
}
