//! Declares Warren's exchanges, queues and bindings from configuration. Idempotent: every
//! declaration matches what an earlier run made, so any process may run it at start-up.
//!
//! ```text
//! jobs exchange (topic) --kind--> <queue>          (x-dead-letter-exchange = DLX, key = <queue>)
//! DLX (direct)          --<queue>--> <queue>.dead
//! <queue>.retry.<delay>ms  (per-message TTL; expired jobs go back to <queue> via the default exchange)
//! results exchange (topic) --#--> results queue    (results of jobs that named no reply_to)
//! ```

use anyhow::Context as _;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::settings::{QueueType, Route, Settings};

pub async fn declare(channel: &Channel, settings: &Settings) -> anyhow::Result<()> {
    let t = &settings.topology;
    exchange(channel, &t.jobs_exchange, ExchangeKind::Topic).await?;
    exchange(channel, &t.results_exchange, ExchangeKind::Topic).await?;
    exchange(channel, &t.dead_letter_exchange, ExchangeKind::Direct).await?;
    if !t.results_queue.is_empty() {
        queue(channel, &t.results_queue, queue_args(settings, None)).await?;
        bind(channel, &t.results_queue, &t.results_exchange, "#").await?;
    }
    for route in &settings.routes {
        declare_route(channel, settings, route).await?;
    }
    Ok(())
}

async fn declare_route(channel: &Channel, settings: &Settings, route: &Route) -> anyhow::Result<()> {
    let t = &settings.topology;
    let dead = settings.dead_queue(&route.queue);
    queue(channel, &dead, queue_args(settings, None)).await?;
    bind(channel, &dead, &t.dead_letter_exchange, &route.queue).await?;
    queue(channel, &route.queue, queue_args(settings, Some(&route.queue))).await?;
    bind(channel, &route.queue, &t.jobs_exchange, &route.kind).await?;
    // One delay queue per backoff tier. Nothing consumes them: a job waits out its per-message
    // TTL there and the broker dead-letters it through the default exchange back to the work
    // queue. The per-message TTLs within a tier differ only by jitter, so a job at the head
    // delays those behind it by at most the jitter band.
    for delay in settings.retry_policy(route).tiers() {
        let name = settings.retry_queue(&route.queue, delay);
        let mut args = queue_args(settings, None);
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from("")));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(route.queue.as_str())));
        queue(channel, &name, args).await?;
    }
    Ok(())
}

fn queue_args(settings: &Settings, dead_letter_key: Option<&str>) -> FieldTable {
    let mut args = FieldTable::default();
    let kind = match settings.topology.queue_type {
        QueueType::Classic => "classic",
        QueueType::Quorum => "quorum",
    };
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from(kind)));
    if let Some(key) = dead_letter_key {
        // Anything the broker itself dead-letters (a reject without requeue, a delivery limit)
        // lands in the same dead-letter queue as what Warren dead-letters explicitly.
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(settings.topology.dead_letter_exchange.as_str())),
        );
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(key)));
        let limit = settings.topology.delivery_limit;
        if settings.topology.queue_type == QueueType::Quorum && limit > 0 {
            // The broker's own poison guard: past `limit` returns it dead-letters the job.
            args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(limit)));
        }
    }
    args
}

async fn exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> anyhow::Result<()> {
    channel
        .exchange_declare(
            ShortString::from(name),
            kind,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declare exchange {name}"))
}

async fn queue(channel: &Channel, name: &str, args: FieldTable) -> anyhow::Result<()> {
    channel
        .queue_declare(ShortString::from(name), QueueDeclareOptions::durable(), args)
        .await
        .with_context(|| format!("declare queue {name}"))?;
    Ok(())
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> anyhow::Result<()> {
    channel
        .queue_bind(
            ShortString::from(queue),
            ShortString::from(exchange),
            ShortString::from(key),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("bind queue {queue} to exchange {exchange} with key {key:?}"))
}
