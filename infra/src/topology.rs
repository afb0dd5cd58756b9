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
//! <cancel stream>           (a stream of cancel records, read by every worker: `cancels`)
//! ```
//!
//! With `topology.queue_type = "quorum"` (a cluster) every queue is a quorum queue, the
//! producers' reply queues included, and the queues the broker dead-letters from (work queues,
//! returned lanes, delay queues) dead-letter at least once (`x-dead-letter-strategy`), so a job
//! whose retry delay ends while its work queue's leader moves is not dropped on the way back.

use anyhow::Context as _;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::settings::{QueueType, Route, Settings};

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
    /// The fleet's topology: the routes of `[[routes]]`.
    pub fn from_settings(settings: &Settings) -> Self {
        Self::with_routes(settings, &[])
    }

    /// The fleet's topology and that of `own` routes (a worker's resolved routes, some of which
    /// `[[routes]]` may not name).
    pub fn with_routes(settings: &Settings, own: &[Route]) -> Self {
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
        if !t.events_exchange.is_empty() {
            plan.exchanges.push((t.events_exchange.clone(), "topic"));
        }
        if !t.results_queue.is_empty() {
            plan.queues.push((t.results_queue.clone(), queue_args(settings, None)));
            plan.bindings.push((t.results_queue.clone(), t.results_exchange.clone(), "#".into()));
        }
        if !t.cancel_stream.is_empty() {
            plan.queues.push((t.cancel_stream.clone(), crate::cancels::stream_args(settings)));
        }
        let mut routes: Vec<&Route> = own.iter().collect();
        routes.extend(settings.routes.iter().filter(|r| !own.iter().any(|o| o.kind == r.kind)));
        for route in routes {
            let dead = settings.dead_queue(&route.queue);
            plan.queues.push((dead.clone(), queue_args(settings, None)));
            plan.bindings.push((dead, t.dead_letter_exchange.clone(), route.queue.clone()));
            let mut work_args = queue_args(settings, Some(&route.queue));
            if route.max_priority > 0 {
                // Both queues a route's jobs are consumed from honour their priority.
                work_args.insert("x-max-priority".into(), AMQPValue::LongLongInt(i64::from(route.max_priority)));
            }
            plan.queues.push((route.queue.clone(), work_args.clone()));
            plan.bindings.push((route.queue.clone(), t.jobs_exchange.clone(), route.kind.clone()));
            // The returned lane dead-letters like its work queue (quorum delivery limit included).
            plan.queues.push((settings.returned_queue(&route.queue), work_args));
            // One delay queue per backoff tier and per delay tier. Nothing consumes them: a job waits out its
            // per-message TTL there and the broker dead-letters it through the default exchange
            // back to the work queue. The per-message TTLs within a tier differ only by jitter,
            // so a job at the head delays those behind it by at most the jitter band.
            for delay in settings.delay_tiers(route) {
                let mut args = queue_args(settings, None);
                dead_letter_to(settings, &mut args, "", &route.queue);
                plan.queues.push((settings.retry_queue(&route.queue, delay), args));
            }
        }
        plan
    }

    /// What `warren-console` consumes: its queue, bound to the events exchange with `#`, which
    /// dead-letters (an event message it cannot read) to its own dead-letter queue.
    pub fn console(settings: &Settings) -> Self {
        let t = &settings.topology;
        let queue = settings.console.queue.clone();
        let dead = settings.dead_queue(&queue);
        Plan {
            exchanges: vec![(t.events_exchange.clone(), "topic"), (t.dead_letter_exchange.clone(), "direct")],
            queues: vec![(dead.clone(), queue_args(settings, None)), (queue.clone(), console_args(settings, &queue))],
            bindings: vec![
                (dead, t.dead_letter_exchange.clone(), queue.clone()),
                (queue, t.events_exchange.clone(), "#".into()),
            ],
        }
    }
}

/// The arguments of a producer's reply queue: durable, expiring once unused for
/// `producer.reply_queue_expires_ms`, of the configured type.
pub fn reply_queue_args(settings: &Settings) -> FieldTable {
    let mut args = queue_args(settings, None);
    let expires = i64::try_from(settings.producer.reply_queue_expires_ms).unwrap_or(i64::MAX);
    args.insert("x-expires".into(), AMQPValue::LongLongInt(expires));
    args
}

pub async fn declare(channel: &Channel, settings: &Settings) -> anyhow::Result<()> {
    declare_with(channel, settings, &[]).await
}

/// [`declare_with`] on a channel of its own, opened on `connection` and closed after (a refused
/// declaration closes its channel, so none of a caller's is used).
pub async fn declare_on(connection: &lapin::Connection, settings: &Settings, own: &[Route]) -> anyhow::Result<()> {
    let channel = connection.create_channel().await.context("open channel for topology")?;
    declare_with(&channel, settings, own).await?;
    let _ = channel.close(200, "topology declared".into()).await;
    Ok(())
}

/// Declares the fleet's topology and that of a worker's own routes.
pub async fn declare_with(channel: &Channel, settings: &Settings, own: &[Route]) -> anyhow::Result<()> {
    declare_plan(channel, settings, &Plan::with_routes(settings, own)).await
}

/// Declares `plan`'s exchanges, queues and bindings (idempotently).
pub async fn declare_plan(channel: &Channel, settings: &Settings, plan: &Plan) -> anyhow::Result<()> {
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
            .map_err(|e| match explain_inequivalent(name, &e.to_string(), settings.topology.queue_type) {
                Some(why) => anyhow::anyhow!(why),
                None => anyhow::Error::new(e).context(format!("declare queue {name}")),
            })?;
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
        dead_letter_to(settings, &mut args, &settings.topology.dead_letter_exchange, key);
        let limit = settings.topology.delivery_limit;
        if settings.topology.queue_type == QueueType::Quorum && limit > 0 {
            // The broker's own poison guard: past `limit` returns it dead-letters the job.
            args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(limit)));
        }
    }
    args
}

/// The console's queue: it dead-letters what it rejects (a message that is not events) to its
/// dead-letter queue, but has no delivery limit on quorum queues: events held by a console
/// that lost its connection (or its database) many times are its to store, not poison.
fn console_args(settings: &Settings, queue: &str) -> FieldTable {
    let mut args = queue_args(settings, None);
    dead_letter_to(settings, &mut args, &settings.topology.dead_letter_exchange, queue);
    // Bounded while the console is away: past the bound new event messages are refused (their
    // publishers are told) and the ones held are kept, so that what the console leaves in the
    // broker cannot grow until the memory alarm blocks the jobs' publishers with the events'.
    let bound = settings.console.queue_max_bytes;
    if bound > 0 {
        args.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(i64::try_from(bound).unwrap_or(i64::MAX)));
        args.insert("x-overflow".into(), AMQPValue::LongString(LongString::from("reject-publish")));
    }
    args
}

/// Dead-letter through `exchange` with routing key `key`; on quorum queues at least once
/// (which needs `x-overflow = reject-publish`: RabbitMQ 3.10+).
fn dead_letter_to(settings: &Settings, args: &mut FieldTable, exchange: &str, key: &str) {
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from(exchange)));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(key)));
    if settings.topology.queue_type == QueueType::Quorum {
        args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString(LongString::from("at-least-once")));
        args.insert("x-overflow".into(), AMQPValue::LongString(LongString::from("reject-publish")));
    }
}

/// What the broker says when a queue exists with other arguments than a declaration gives.
const INEQUIVALENT: &str = "inequivalent arg";

/// Whether [`declare_plan`] failed because a queue exists with other arguments.
pub fn is_inequivalent(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains(INEQUIVALENT)
}

/// What to tell the operator when the broker refuses a declaration because the queue exists
/// with other arguments (PRECONDITION_FAILED, "inequivalent arg"); None for any other error.
pub fn explain_inequivalent(queue: &str, broker_says: &str, configured: QueueType) -> Option<String> {
    if !broker_says.contains(INEQUIVALENT) {
        return None;
    }
    let wanted = match configured {
        QueueType::Classic => "classic",
        QueueType::Quorum => "quorum",
    };
    let other = if configured == QueueType::Classic { "quorum" } else { "classic" };
    let moving = format!(
        "move its messages: `warrenctl dump {queue} --ack --out saved.jsonl`, delete the queue, \
         `warrenctl topology apply`, `warrenctl load saved.jsonl`"
    );
    Some(if broker_says.contains("'x-queue-type'") {
        format!(
            "queue {queue} exists on the broker as another type of queue than topology.queue_type = \"{wanted}\", \
             and a queue's type cannot change. Either set topology.queue_type = \"{other}\" to keep it, or {moving}. \
             (The broker said: {broker_says})"
        )
    } else {
        format!(
            "queue {queue} exists on the broker with other arguments than the configuration gives it; \
             `warrenctl topology diff` lists them. Either configure what it has, or {moving}. \
             (The broker said: {broker_says})"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consoles_queue_is_bounded_and_refuses_past_its_bound() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut settings = Settings::load(&dir).expect("config/default.toml loads");
        let arg = |args: &FieldTable, key: &str| args.inner().get(key).cloned();
        let args = console_args(&settings, "warren.console");
        assert_eq!(arg(&args, "x-max-length-bytes"), Some(AMQPValue::LongLongInt(1 << 30)));
        assert_eq!(arg(&args, "x-overflow"), Some(AMQPValue::LongString("reject-publish".into())));
        settings.topology.queue_type = QueueType::Quorum;
        let args = console_args(&settings, "warren.console");
        assert_eq!(arg(&args, "x-max-length-bytes"), Some(AMQPValue::LongLongInt(1 << 30)), "quorum too");
        assert_eq!(arg(&args, "x-overflow"), Some(AMQPValue::LongString("reject-publish".into())));
        assert_eq!(arg(&args, "x-dead-letter-strategy"), Some(AMQPValue::LongString("at-least-once".into())));
        settings.topology.queue_type = QueueType::Classic;
        settings.console.queue_max_bytes = 0;
        let args = console_args(&settings, "warren.console");
        assert_eq!((arg(&args, "x-max-length-bytes"), arg(&args, "x-overflow")), (None, None), "0: no bound");
    }

    #[test]
    fn a_queue_of_the_other_type_is_explained_with_what_to_do() {
        let said = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'warren.checksum' in vhost \
                    '/': received 'quorum' but current is 'classic'";
        let why = explain_inequivalent("warren.checksum", said, QueueType::Quorum).expect("explained");
        assert!(why.contains("topology.queue_type = \"quorum\""), "{why}");
        assert!(why.contains("set topology.queue_type = \"classic\" to keep it"), "{why}");
        assert!(why.contains("warrenctl dump warren.checksum --ack"), "{why}");
        let limit = "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'q'";
        let why = explain_inequivalent("q", limit, QueueType::Quorum).expect("explained");
        assert!(why.contains("warrenctl topology diff"), "{why}");
        assert_eq!(explain_inequivalent("q", "NOT_FOUND - no exchange", QueueType::Classic), None);
    }
}
