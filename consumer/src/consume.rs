//! One session's consuming loop: deliveries to their handlers, and each queue's consumer kept
//! as `subscription` decides: restored when the broker ends it, cancelled while the model its
//! jobs need is not ready and subscribed again when it is.

use std::future::Future;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, FuturesUnordered, SelectAll};
use futures_util::{FutureExt as _, StreamExt as _};
use lapin::options::BasicCancelOptions;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::decide;
use crate::handler::handle;
use crate::session::{self, Session, Shared};
use crate::subscription::{self, Action, State};
use crate::worker::Served;

/// Why consuming stopped.
pub enum Ended {
    Shutdown,
    Lost(String),
    WornOut(usize),
}

/// How long a shutdown step waits for the broker's reply (it may be blocking our connection).
pub const BROKER_REPLY: Duration = Duration::from_secs(2);

pub type Deliveries = SelectAll<BoxStream<'static, Event>>;

pub enum Event {
    Delivery(usize, Box<Result<lapin::message::Delivery, lapin::Error>>),
    /// The consumer of queue `i` ended: we or the broker cancelled it, or its channel closed.
    Ended(usize),
}

pub fn events(i: usize, consumer: lapin::Consumer) -> BoxStream<'static, Event> {
    consumer.map(move |d| Event::Delivery(i, Box::new(d))).chain(stream::once(async move { Event::Ended(i) })).boxed()
}

/// Hands deliveries to handlers until shutdown, the session's loss, or the worker wearing out.
pub async fn consume(
    shared: &Shared,
    session: &Session,
    deliveries: &mut Deliveries,
    tracker: &TaskTracker,
    stop: &CancellationToken,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Ended {
    let mut resubscribing: FuturesUnordered<BoxFuture<'_, (usize, Result<lapin::Consumer, u32>)>> =
        FuturesUnordered::new();
    let mut cancelling: FuturesUnordered<BoxFuture<'_, ()>> = FuturesUnordered::new();
    let mut readiness = shared.registry.readiness();
    let mut states: Vec<State> =
        session.consumers.iter().map(|(_, _, c)| if c.is_some() { State::Consuming } else { State::Paused }).collect();
    let wanted = |i: usize| session.consumers[i].0.ready.as_ref().is_none_or(|r| *r.borrow());
    // What `subscription` decided, carried out.
    macro_rules! carry_out {
        ($i:expr, $event:expr, $attempt:expr) => {{
            let i = $i;
            let (next, action) = subscription::step(states[i], $event, wanted(i));
            states[i] = next;
            match action {
                Action::Nothing => {}
                Action::Cancel => {
                    shared.metrics.consuming(&session.consumers[i].0.queue, false);
                    cancelling.push(cancel(shared, session, i).boxed());
                }
                Action::Subscribe => resubscribing.push(resubscribe(shared, session, i, $attempt).boxed()),
            }
            action
        }};
    }
    // A model that went down or came back while the session was opened.
    for i in 0..states.len() {
        carry_out!(i, subscription::Event::Check, 0);
    }
    let mut check = tokio::time::interval(Duration::from_millis(250));
    let mut worn_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.as_mut() => return Ended::Shutdown,
            () = session.worker.lost.cancelled() => return Ended::Lost("the publishing connection failed".into()),
            _ = check.tick() => {
                // Noticed here too: with every queue paused nothing else would notice it.
                if !session.connection.status().connected() {
                    return Ended::Lost("the broker closed the connection".into());
                }
                let abandoned = shared.abandoned();
                shared.metrics.abandoned_now(abandoned);
                if !decide::worn_out(abandoned, shared.pool.size()) {
                    worn_since = None;
                } else if decide::must_stop(Some(worn_since.get_or_insert_with(tokio::time::Instant::now).elapsed())) {
                    return Ended::WornOut(abandoned);
                }
            }
            () = changed(&mut readiness) => {
                for i in 0..states.len() {
                    carry_out!(i, subscription::Event::Check, 0);
                }
            }
            Some(()) = cancelling.next() => {}
            Some((i, subscribed)) = resubscribing.next() => match subscribed {
                Ok(consumer) => {
                    deliveries.push(events(i, consumer));
                    if carry_out!(i, subscription::Event::Subscribed, 0) == Action::Nothing {
                        let served: &Served = &session.consumers[i].0;
                        tracing::info!(queue = %served.queue, "consuming the queue again");
                        shared.metrics.consuming(&served.queue, true);
                    }
                }
                Err(attempt) => {
                    carry_out!(i, subscription::Event::SubscribeFailed, attempt);
                }
            },
            // Empty while every consumer is paused or waits to be subscribed again: not a lost
            // connection.
            next = deliveries.next(), if !deliveries.is_empty() => match next {
                Some(Event::Delivery(i, delivery)) => match *delivery {
                    Ok(delivery) => {
                        let served = session.consumers[i].0.clone();
                        tracker.spawn(handle(session.worker.clone(), served, delivery, stop.clone()));
                    }
                    Err(e) => return Ended::Lost(format!("consuming queue {}: {e}", session.consumers[i].0.queue)),
                },
                Some(Event::Ended(i)) => {
                    let (served, channel, _) = &session.consumers[i];
                    if !channel.status().connected() || !session.connection.status().connected() {
                        return Ended::Lost(format!("the channel consuming {} closed", served.queue));
                    }
                    shared.metrics.consuming(&served.queue, false);
                    if states[i] == State::Consuming {
                        tracing::warn!(queue = %served.queue, "the broker cancelled our consumer (queue deleted, or its node down); not ready until it is back");
                        shared.metrics.consumer_cancelled(&served.queue);
                    } else {
                        tracing::info!(queue = %served.queue, "stopped consuming the queue while its model is not ready");
                    }
                    carry_out!(i, subscription::Event::Ended, 0);
                }
                // The last consumer ended (each end was handled above): with every queue paused
                // that is no lost connection, which the tick above notices on its own.
                None => {}
            },
        }
    }
}

/// Resolves when the readiness of a kind's backend changed; never, if none can change.
async fn changed(readiness: &mut Vec<watch::Receiver<bool>>) {
    // A watcher that ended (it ends only when nobody listens) changes nothing any more.
    readiness.retain(|rx| rx.has_changed().is_ok());
    if readiness.is_empty() {
        return std::future::pending().await;
    }
    let each = readiness.iter_mut().map(|rx| Box::pin(rx.changed()));
    let _ = futures_util::future::select_all(each).await;
}

/// Cancels queue `i`'s consumer; its end arrives as [`Event::Ended`].
async fn cancel(shared: &Shared, session: &Session, i: usize) {
    let (served, channel, _) = &session.consumers[i];
    let tag = session::consumer_tag(&shared.worker_id, &served.queue);
    match tokio::time::timeout(BROKER_REPLY, channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()))
        .await
    {
        Ok(Ok(())) => {}
        // A channel that fails here ends its consumer too, and that is noticed as a lost session.
        Ok(Err(e)) => tracing::warn!(queue = %served.queue, error = %e, "could not cancel the consumer"),
        Err(_) => tracing::warn!(queue = %served.queue, "no answer to cancelling the consumer"),
    }
}

/// After a pause (growing with `attempt`), declares the topology again and consumes queue `i`
/// again on its channel; `Err(next attempt)` if that failed.
async fn resubscribe(
    shared: &Shared,
    session: &Session,
    i: usize,
    attempt: u32,
) -> (usize, Result<lapin::Consumer, u32>) {
    let broker = &shared.settings.broker;
    let ceiling = Duration::from_millis(broker.reconnect_min_ms)
        .saturating_mul(1u32 << attempt.min(16))
        .min(Duration::from_millis(broker.reconnect_max_ms));
    tokio::time::sleep(ceiling).await;
    let (served, channel, _) = &session.consumers[i];
    let again = async {
        warren_infra::topology::declare_on(&session.connection, &shared.settings, &shared.routes).await?;
        session::subscribe(channel, served, &shared.worker_id).await
    };
    match again.await {
        Ok(consumer) => (i, Ok(consumer)),
        Err(e) => {
            tracing::warn!(queue = %served.queue, error = format!("{e:#}"), "could not consume the queue again");
            (i, Err(attempt.saturating_add(1)))
        }
    }
}
