//! Results addressed to this producer. The reply queue is named `warren.reply.<uuid>`, durable,
//! and expires (`x-expires`) once unused for `producer.reply_queue_expires_ms`: it outlives a
//! lost connection or a broker restart, so results published meanwhile wait for us; after a
//! reconnection it is consumed again. Each result is handed to whoever waits
//! on its correlation id, then acked. The queue is consumed on a connection of its own that is
//! re-established whenever it is lost. A result nobody waits for (an at-least-once duplicate, or
//! a job whose wait was given up) is logged and dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::sync::oneshot;
use warren_common::{Encoding, JobResult};
use warren_infra::backoff::Backoff;
use warren_infra::settings::BrokerSettings;

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<JobResult>>>>;

#[derive(Debug)]
pub struct Replies {
    queue: String,
    waiters: Waiters,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set when the producer closes: the consumer then ends quietly instead of reconnecting.
    stop: tokio::sync::watch::Sender<bool>,
}

impl Replies {
    /// Declares the reply queue and starts consuming it on a connection of its own, which is
    /// re-established (capped, jittered backoff) whenever it is lost, so results keep coming
    /// whether or not this producer publishes again.
    pub async fn start(broker: &BrokerSettings, args: FieldTable) -> anyhow::Result<Self> {
        let queue = format!("warren.reply.{}", uuid::Uuid::new_v4().simple());
        let waiters: Waiters = Arc::default();
        // The first session opens before we return: the queue must exist before any job names it.
        let first = Session::open(broker, &queue, &args).await?;
        let (broker, name, map) = (broker.clone(), queue.clone(), waiters.clone());
        let (stop, mut stopping) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut backoff = Backoff::new(
                Duration::from_millis(broker.reconnect_min_ms),
                Duration::from_millis(broker.reconnect_max_ms),
            );
            let mut session = Some(first);
            loop {
                if let Some(mut s) = session.take() {
                    tokio::select! {
                        () = s.run(&map) => {}
                        () = stopped(&mut stopping) => {
                            s.close().await;
                            return;
                        }
                    }
                    if *stopping.borrow() {
                        return;
                    }
                    tracing::warn!(queue = %name, "reply consumer lost the broker; reconnecting");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = stopped(&mut stopping) => return,
                }
                match Session::open(&broker, &name, &args).await {
                    Ok(s) => {
                        backoff.reset();
                        session = Some(s);
                    }
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "reply consumer could not reconnect"),
                }
            }
        });
        Ok(Self { queue, waiters, task: Mutex::new(Some(task)), stop })
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    pub fn register(&self, correlation_id: &str) -> Pending {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(correlation_id.to_owned(), tx);
        Pending { rx, waiters: Arc::downgrade(&self.waiters), correlation_id: correlation_id.to_owned() }
    }

    pub fn forget(&self, correlation_id: &str) {
        lock(&self.waiters).remove(correlation_id);
    }

    /// Stops consuming and closes the reply connection, quietly (the producer is closing).
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// One connection consuming the reply queue.
struct Session {
    connection: lapin::Connection,
    consumer: lapin::Consumer,
}

impl Session {
    async fn open(broker: &BrokerSettings, queue: &str, args: &FieldTable) -> anyhow::Result<Self> {
        let connection = warren_infra::connect(broker, "producer-replies").await?;
        let channel = connection.create_channel().await.context("open reply channel")?;
        channel
            .queue_declare(queue.into(), QueueDeclareOptions::durable(), args.clone())
            .await
            .with_context(|| format!("declare reply queue {queue}"))?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                "warren-producer-replies".into(),
                BasicConsumeOptions { exclusive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .context("consume reply queue")?;
        Ok(Self { connection, consumer })
    }

    /// Closes the connection (a clean close: the broker logs no lost client).
    async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.connection.close(200, "producer done".into())).await;
    }

    /// Hands results to their waiters until the connection is lost.
    async fn run(&mut self, waiters: &Waiters) {
        while let Some(Ok(delivery)) = self.consumer.next().await {
            dispatch(waiters, &delivery);
            if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                tracing::debug!(error = %e, "ack of a result failed; it will come again");
            }
        }
    }
}

fn dispatch(waiters: &Waiters, delivery: &lapin::message::Delivery) {
    let props = &delivery.properties;
    let ct = props.content_type().as_ref().map(|s| s.as_str());
    let Some(encoding) = Encoding::from_content_type(ct) else {
        tracing::warn!(content_type = ?ct, "result with an unknown content type dropped");
        return;
    };
    let result = match JobResult::decode(&delivery.data, encoding) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable result dropped");
            return;
        }
    };
    let key = props.correlation_id().as_ref().map(|c| c.to_string()).unwrap_or_default();
    let waiter = lock(waiters).remove(&key);
    match waiter {
        Some(tx) => {
            let _ = tx.send(result);
        }
        None => tracing::debug!(job_id = %result.job_id, "result nobody waits for (duplicate or given up)"),
    }
}

/// A result being waited for. Dropping it (a wait that timed out, say) unregisters the waiter,
/// so a result that arrives later is dropped instead of kept forever.
#[derive(Debug)]
pub struct Pending {
    pub(crate) rx: oneshot::Receiver<JobResult>,
    waiters: std::sync::Weak<Mutex<HashMap<String, oneshot::Sender<JobResult>>>>,
    correlation_id: String,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(w) = self.waiters.upgrade() {
            lock(&w).remove(&self.correlation_id);
        }
    }
}

/// Resolves once the producer asked the reply consumer to stop.
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    // The borrow `wait_for` returns is dropped here, before anything else awaits.
    let _ = stopping.wait_for(|stop| *stop).await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks; recover the value rather than propagate.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
