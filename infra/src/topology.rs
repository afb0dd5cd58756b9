//! Warren's exchanges, queues and bindings, computed from configuration as a [`Plan`] and
//! declared idempotently: every declaration matches what an earlier run made, so any process
//! may run it at start-up, and `warrenctl topology diff` compares the same plan with the broker.
//!
//! ```text
//! jobs exchange (topic) --kind--> <queue>          (x-dead-letter-exchange = DLX, key = <queue>)
//! DLX (direct)          --<queue>--> <queue>.dead
//! <queue>.retry.<delay>ms  (per-message TTL; expired jobs go back to <queue> via the default exchange)
//! <queue>.returned          (jobs that came back unanswered; consumed one at a time per worker)
//! results exchange (topic) --#--> results queue    (results of jobs that named no reply_to)
//! ```

use anyhow::Context as _;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::settings::{QueueType, Settings};

/// Everything Warren declares.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// (name, type: "topic" or "direct")
    pub exchanges: Vec<(String, &'static str)>,
    /// (name, arguments)
    pub queues: Vec<(String, FieldTable)>,
    /// (queue, exchange, routing key)
    pub bindings: Vec<(String, String, String)>,
}

impl Plan {
    pub fn from_settings(settings: &Settings) -> Self {
        let t = &settings.topology;
        let mut plan = Plan {
            exchanges: vec![
                (t.jobs_exchange.clone(), "topic"),
                (t.results_exchange.clone(), "topic"),
                (t.dead_letter_exchange.clone(), "direct"),
            ],
            queues: Vec::new(),
            bindings: Vec::new(),
        };
        if !t.results_queue.is_empty() {
            plan.queues.push((t.results_queue.clone(), queue_args(settings, None)));
            plan.bindings.push((t.results_queue.clone(), t.results_exchange.clone(), "#".into()));
        }
        for route in &settings.routes {
            let dead = settings.dead_queue(&route.queue);
            plan.queues.push((dead.clone(), queue_args(settings, None)));
            plan.bindings.push((dead, t.dead_letter_exchange.clone(), route.queue.clone()));
            plan.queues.push((route.queue.clone(), queue_args(settings, Some(&route.queue))));
            plan.bindings.push((route.queue.clone(), t.jobs_exchange.clone(), route.kind.clone()));
            // The returned lane dead-letters like its work queue (quorum delivery limit included).
            plan.queues.push((settings.returned_queue(&route.queue), queue_args(settings, Some(&route.queue))));
            // One delay queue per backoff tier. Nothing consumes them: a job waits out its
            // per-message TTL there and the broker dead-letters it through the default exchange
            // back to the work queue. The per-message TTLs within a tier differ only by jitter,
            // so a job at the head delays those behind it by at most the jitter band.
            for delay in settings.retry_policy(route).tiers() {
                let mut args = queue_args(settings, None);
                args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from("")));
                args.insert(
                    "x-dead-letter-routing-key".into(),
                    AMQPValue::LongString(LongString::from(route.queue.as_str())),
                );
                plan.queues.push((settings.retry_queue(&route.queue, delay), args));
            }
        }
        plan
    }
}

pub async fn declare(channel: &Channel, settings: &Settings) -> anyhow::Result<()> {
    let plan = Plan::from_settings(settings);
    for (name, kind) in &plan.exchanges {
        let kind = if *kind == "direct" { ExchangeKind::Direct } else { ExchangeKind::Topic };
        channel
            .exchange_declare(
                ShortString::from(name.as_str()),
                kind,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declare exchange {name}"))?;
    }
    for (name, args) in &plan.queues {
        channel
            .queue_declare(ShortString::from(name.as_str()), QueueDeclareOptions::durable(), args.clone())
            .await
            .with_context(|| format!("declare queue {name}"))?;
    }
    for (queue, exchange, key) in &plan.bindings {
        channel
            .queue_bind(
                ShortString::from(queue.as_str()),
                ShortString::from(exchange.as_str()),
                ShortString::from(key.as_str()),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("bind queue {queue} to exchange {exchange} with key {key:?}"))?;
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
