//! Results addressed to this producer. The reply queue is named `warren.reply.<uuid>`, durable,
//! and expires (`x-expires`) once unused for `producer.reply_queue_expires_ms`: it outlives a
//! lost connection or a broker restart, so results published meanwhile wait for us; after a
//! reconnection [`Replies::resume`] consumes it again. Each result is handed to whoever waits
//! on its correlation id, then acked. A result nobody waits for (an at-least-once duplicate, or
//! a job whose wait was given up) is logged and dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use tokio::sync::oneshot;
use warren_common::{Encoding, JobResult};

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<JobResult>>>>;

#[derive(Debug)]
pub struct Replies {
    queue: String,
    expires_ms: u64,
    waiters: Waiters,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Replies {
    pub async fn start(connection: &lapin::Connection, expires_ms: u64) -> anyhow::Result<Self> {
        let replies = Self {
            queue: format!("warren.reply.{}", uuid::Uuid::new_v4().simple()),
            expires_ms,
            waiters: Arc::default(),
            task: Mutex::new(None),
        };
        replies.resume(connection).await?;
        Ok(replies)
    }

    /// (Re)declares the reply queue on `connection` and consumes it.
    pub async fn resume(&self, connection: &lapin::Connection) -> anyhow::Result<()> {
        let channel = connection.create_channel().await.context("open reply channel")?;
        let mut args = FieldTable::default();
        args.insert("x-expires".into(), AMQPValue::LongLongInt(i64::try_from(self.expires_ms).unwrap_or(i64::MAX)));
        channel
            .queue_declare(self.queue.as_str().into(), QueueDeclareOptions::durable(), args)
            .await
            .with_context(|| format!("declare reply queue {}", self.queue))?;
        let mut consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                "warren-producer-replies".into(),
                BasicConsumeOptions { exclusive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .context("consume reply queue")?;
        let map = self.waiters.clone();
        let task = tokio::spawn(async move {
            let _channel = channel;
            while let Some(Ok(delivery)) = consumer.next().await {
                dispatch(&map, &delivery);
                if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                    tracing::debug!(error = %e, "ack of a result failed; it will come again");
                }
            }
            // The connection is gone; the producer resumes on its next connection.
        });
        if let Some(old) = lock(&self.task).replace(task) {
            old.abort();
        }
        Ok(())
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
}

impl Drop for Replies {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks; recover the value rather than propagate.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
