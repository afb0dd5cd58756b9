//! Results addressed to this producer: an exclusive, server-named queue (deleted with the
//! connection), consumed with auto-ack, results handed to whoever waits on their correlation id.
//! A result whose correlation id nobody waits for (an at-least-once duplicate, or a job whose
//! wait timed out) is logged and dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::sync::oneshot;
use warren_common::{Encoding, JobResult};

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<JobResult>>>>;

#[derive(Debug)]
pub struct Replies {
    queue: String,
    waiters: Waiters,
    _task: tokio::task::JoinHandle<()>,
}

impl Replies {
    pub async fn start(connection: &lapin::Connection) -> anyhow::Result<Self> {
        let channel = connection.create_channel().await.context("open reply channel")?;
        let queue = channel
            .queue_declare("".into(), QueueDeclareOptions::exclusive().auto_delete(), FieldTable::default())
            .await
            .context("declare reply queue")?;
        let name = queue.name().to_string();
        let mut consumer = channel
            .basic_consume(
                queue.name().clone(),
                "warren-producer-replies".into(),
                BasicConsumeOptions { no_ack: true, exclusive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .context("consume reply queue")?;
        let waiters: Waiters = Arc::default();
        let map = waiters.clone();
        let task = tokio::spawn(async move {
            let _channel = channel;
            while let Some(delivery) = consumer.next().await {
                let Ok(delivery) = delivery else { break };
                let props = &delivery.properties;
                let ct = props.content_type().as_ref().map(|s| s.as_str());
                let Some(encoding) = Encoding::from_content_type(ct) else {
                    tracing::warn!(content_type = ?ct, "result with an unknown content type dropped");
                    continue;
                };
                let result = match JobResult::decode(&delivery.data, encoding) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable result dropped");
                        continue;
                    }
                };
                let key = props.correlation_id().as_ref().map(|c| c.to_string()).unwrap_or_default();
                let waiter = lock(&map).remove(&key);
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(result);
                    }
                    None => {
                        tracing::debug!(job_id = %result.job_id, "result nobody waits for (duplicate or timed out)")
                    }
                }
            }
            // Dropping the senders tells every waiter the consumer is gone.
            lock(&map).clear();
        });
        Ok(Self { queue: name, waiters, _task: task })
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
    // Nothing panics while holding this lock; recover the map rather than propagate.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
