//! Settling a delivery: the one place that publishes for a delivery and acks, nacks or leaves
//! it. "Ack only after confirm" lives here: [`deliver`] publishes a letter, waits for the
//! broker's answer, asks `decide::after_publish` what that means for the input, and carries it
//! out. A job is counted as settled only when its ack went out.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use warren_common::JobError;
use warren_infra::PublishError;

use std::sync::Arc;

use crate::decide::{self, Published, Purpose, Settle};
use crate::letters::{Input, Letter, Recount};
use crate::pool::now_us;
use crate::worker::{Held, Worker};

/// How a delivery ended, for the caller's metrics and logs.
pub type Label = &'static str;

/// The delivery as the letters need it.
pub fn input(delivery: &Delivery) -> Input<'_> {
    Input {
        exchange: delivery.exchange.as_str(),
        routing_key: delivery.routing_key.as_str(),
        body: &delivery.data,
        properties: &delivery.properties,
    }
}

/// Publishes `letter` and waits for the broker's answer. A failed channel ends the session.
pub async fn publish(worker: &Arc<Worker>, letter: &Letter<'_>) -> Published {
    let (exchange, key, body) = (&letter.exchange, &letter.routing_key, &letter.body);
    let mut result = worker.publisher.publish(exchange, key, body, letter.properties.clone(), true).await;
    worker.metrics.published(target(letter.purpose), PublishError::outcome(&result));
    if result.as_ref().is_err_and(PublishError::missing_exchange) {
        // Deleted under us: declare the topology again and publish once more (at least once: a
        // publish sent before the failing one on its channel may have been stored).
        tracing::warn!(exchange = %exchange, "a publish met a missing exchange; declaring the topology again");
        if worker.restore_topology("publish").await {
            result = worker.publisher.publish(exchange, key, body, letter.properties.clone(), true).await;
            worker.metrics.published(target(letter.purpose), PublishError::outcome(&result));
        }
    }
    let published = match &result {
        Ok(()) => Published::Stored,
        Err(PublishError::Unroutable { .. }) => Published::Unroutable,
        Err(PublishError::Nacked { .. } | PublishError::Uncertain(_)) => Published::Refused,
        Err(PublishError::ConfirmTimeout(_)) => Published::TimedOut,
        // The channel broke under a publish; if the connection is still up the publisher opens a
        // new channel next time, else the session is over.
        Err(PublishError::Amqp(_)) if worker.publisher.is_connected() => Published::TimedOut,
        Err(PublishError::Amqp(_)) => Published::Lost,
    };
    match (&result, letter.purpose) {
        (Ok(()), _) => {}
        (Err(e), Purpose::Result { must_route: false } | Purpose::ErrorResult)
            if published == Published::Unroutable =>
        {
            tracing::warn!(error = %e, "result unroutable: nobody is listening for it; dropping it");
        }
        (Err(e), purpose) => {
            tracing::warn!(error = %e, ?purpose, "publish not stored by the broker");
            if published == Published::Unroutable {
                worker.redeclare_topology();
            }
        }
    }
    if published == Published::Lost {
        worker.lost.cancel();
    }
    published
}

/// Publishes `letter` for `delivery` and settles the delivery by what the broker answered;
/// `then` (an error result, say) is published after `letter` is stored and before the ack.
/// `Err` hands the job back to the caller as a failure to dispose of (a result the broker did
/// not store), never acked.
pub async fn deliver(held: &Held<'_>, letter: Letter<'_>, then: Option<Letter<'_>>) -> Result<Label, JobError> {
    let Held { worker, served, delivery, facts, kind, .. } = *held;
    let published = publish(worker, &letter).await;
    let settle = decide::after_publish(letter.purpose, published);
    if settle == Settle::Ack
        && let Some(extra) = then
    {
        // The dead letter holds the record; this courtesy's outcome changes nothing.
        let _ = publish(worker, &extra).await;
    }
    let label = match &settle {
        Settle::Fail(e) => return Err(e.clone()),
        Settle::Ack => {
            let sent = ack(delivery).await;
            decide::counted_outcome(&settle, letter.purpose, sent)
        }
        // A move to the returned lane that failed: nack, so that its return is counted again
        // from the same header when it comes back (a copy would forget it).
        Settle::HandBack if letter.purpose == Purpose::Requeue => {
            pause(worker, facts.handbacks).await;
            if !worker.lost.is_cancelled() && nack_requeue(delivery).await { "handed_back" } else { "abandoned" }
        }
        Settle::HandBack => return Ok(hand_back(held, Why::Refused).await),
        Settle::Abandon => decide::counted_outcome(&settle, letter.purpose, false),
    };
    let since = (label == "ok")
        .then(|| published_at_us(delivery).map(|p| Duration::from_micros(now_us().saturating_sub(p))))
        .flatten();
    worker.metrics.job_settled(&served.queue, kind, label, since);
    Ok(label)
}

/// How long a drain waits, after its timeout, for the settles begun to finish: a settle
/// publishes at most three times in a row once the worker drains (a result that is not stored,
/// then its retry copy or dead letter, then one hand-back copy; or a letter and its error
/// result), each bounded by the confirm timeout, and may declare the topology again once
/// (bounded by 10 s), then acks.
pub fn drain_settle_bound(confirm_timeout: Duration) -> Duration {
    confirm_timeout.saturating_mul(3) + Duration::from_secs(12)
}

/// Why Warren hands a job back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The worker drains (or the job never started before it did).
    Draining,
    /// The broker did not store a publish the job needed (its retry copy or dead letter).
    Refused,
    /// The kind's backend was unavailable: not the job's fault, so no attempt is spent.
    Unavailable,
}

/// Gives the delivery back to the broker as a fresh copy at the end of its queue, acked once the
/// copy is confirmed, so that Warren's own hand-backs never look like a worker that died. After
/// a refusal it first waits, longer each time the same job is handed back (`warren-handbacks`),
/// so that a broker refusing it is not met with a tight loop, and tries the copy a few times;
/// only when no copy can be stored is the delivery nacked with requeue (that return counts).
pub async fn hand_back(held: &Held<'_>, why: Why) -> Label {
    let Held { worker, served, delivery, facts, kind, .. } = *held;
    const TRIES: u32 = 3;
    let (count, tries) = match why {
        Why::Draining => (Recount::Nothing, 1),
        // While the worker drains, one try: the drain waits for settles begun for a bounded
        // time (`drain_settle_bound`).
        Why::Refused | Why::Unavailable if worker.gate.is_cancelled() => {
            (Recount::HandBacks(facts.handbacks.saturating_add(1)), 1)
        }
        Why::Refused | Why::Unavailable => (Recount::HandBacks(facts.handbacks.saturating_add(1)), TRIES),
    };
    let mut label = "abandoned";
    for i in 0..tries {
        if why != Why::Draining {
            pause(worker, facts.handbacks.saturating_add(i)).await;
        }
        if worker.lost.is_cancelled() {
            break;
        }
        let copy = crate::letters::requeue(input(delivery), &served.queue, count);
        match publish(worker, &copy).await {
            Published::Stored => {
                label = if ack(delivery).await { "handed_back" } else { "abandoned" };
                break;
            }
            Published::Lost => break,
            // The last try, or the worker started draining meanwhile (one try then).
            _ if i + 1 == tries || (why != Why::Draining && worker.gate.is_cancelled()) => {
                label = if nack_requeue(delivery).await { "handed_back" } else { "abandoned" };
                break;
            }
            _ => {}
        }
    }
    worker.metrics.job_settled(&served.queue, kind, label, None);
    if label == "handed_back" {
        worker.events.emit(|| {
            let mut event = held.event("handed_back");
            event.reason = Some(match why {
                Why::Draining => "draining",
                Why::Refused => "refused",
                Why::Unavailable => "unavailable",
            });
            event
        });
    }
    label
}

/// Waits before a hand-back (`decide::hand_back_pause`), unless the session goes or the worker
/// starts draining first.
async fn pause(worker: &Worker, handbacks: u32) {
    let broker = &worker.settings.broker;
    let pause = decide::hand_back_pause(
        handbacks,
        Duration::from_millis(broker.reconnect_min_ms),
        Duration::from_millis(broker.reconnect_max_ms),
        rand::random::<f64>(),
    );
    tracing::warn!(?pause, handbacks, "handing the job back after a pause");
    tokio::select! {
        () = tokio::time::sleep(pause) => {}
        () = worker.gate.cancelled() => {}
    }
}

/// Metric label of a publish's purpose.
fn target(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Result { .. } => "result",
        Purpose::ErrorResult => "error_result",
        Purpose::Retry => "retry",
        Purpose::SetAside => "set_aside",
        Purpose::Delay => "delay",
        Purpose::DeadLetter => "dead_letter",
        Purpose::Requeue => "requeue",
    }
}

/// The job's `timestamp` property (seconds) in microseconds, when it has one.
pub fn published_at_us(delivery: &Delivery) -> Option<u64> {
    delivery.properties.timestamp().map(|s| s.saturating_mul(1_000_000))
}

/// Whether the ack went out; when it did not, the channel is gone and the broker redelivers.
async fn ack(delivery: &Delivery) -> bool {
    match delivery.ack(BasicAckOptions::default()).await {
        Ok(sent) => sent,
        Err(e) => {
            tracing::warn!(error = %e, "ack failed; the broker will redeliver the job");
            false
        }
    }
}

async fn nack_requeue(delivery: &Delivery) -> bool {
    match delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await {
        Ok(sent) => sent,
        Err(e) => {
            tracing::warn!(error = %e, "nack failed; the broker requeues the job when the channel closes");
            false
        }
    }
}
