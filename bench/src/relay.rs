//! The baseline for broker overhead: a raw lapin relay that does what the fleet does around a
//! job and nothing else. It consumes with the same prefetch, answers each delivery on its
//! `reply_to` (or, without one, to the results exchange under the job's routing key) with a
//! result of the same shape, waits for the confirm, then acks; one task per delivery, like the
//! fleet. No envelope parsing, no pool, no job.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::oneshot;
use warren_common::checksum::{Checksum, ChecksumOutput};
use warren_common::{Encoding, JobResult, Output, Timing};
use warren_infra::{PublishError, Publisher, Settings};

pub struct Relay {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    connection: std::sync::Arc<lapin::Connection>,
}

impl Relay {
    pub async fn start(settings: &Settings, queue: &str, prefetch: u16) -> anyhow::Result<Self> {
        let connection = std::sync::Arc::new(warren_infra::connect(&settings.broker, "relay").await?);
        let publisher = Publisher::open(connection.clone(), Duration::from_secs(30), usize::from(prefetch)).await?;
        let channel = connection.create_channel().await?;
        channel.basic_qos(prefetch, BasicQosOptions { global: false }).await?;
        let mut consumer = channel
            .basic_consume(queue.into(), "relay".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        let output = Output::new::<Checksum>(ChecksumOutput { bytes: 1024, rounds: 1, crc32: 0 });
        let results: Arc<str> = settings.topology.results_exchange.as_str().into();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                let delivery = tokio::select! {
                    _ = &mut stopped => break,
                    d = consumer.next() => match d { Some(Ok(d)) => d, _ => break },
                };
                let (publisher, output, results) = (publisher.clone(), output.clone(), results.clone());
                tokio::spawn(async move {
                    let props = &delivery.properties;
                    let id = props.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default();
                    let result = JobResult::ok(id, "checksum".into(), output, 0, "relay".into(), Timing::default());
                    let Ok(body) = result.encode(Encoding::Json) else { return };
                    let reply = BasicProperties::default()
                        .with_content_type(Encoding::Json.content_type().into())
                        .with_delivery_mode(2)
                        .with_correlation_id(props.correlation_id().clone().unwrap_or_default());
                    let (exchange, to) = match props.reply_to().as_ref() {
                        Some(to) => ("", to.to_string()),
                        None => (&*results, delivery.routing_key.to_string()),
                    };
                    let published = publisher.publish(exchange, &to, &body, reply, true).await;
                    // Like the fleet: a result nobody waits for any more is acked all the same.
                    if matches!(published, Ok(()) | Err(PublishError::Unroutable { .. })) {
                        let _ = delivery.ack(BasicAckOptions::default()).await;
                    }
                });
            }
        });
        Ok(Self { stop, task, connection })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        let _ = self.connection.close(200, "relay done".into()).await;
    }
}
