//! One pipelined confirm channel (a lane): many publishes in flight, each told its own fate.
//!
//! Two rules make that exact, each kept in one place here:
//! - **Numbers in wire order.** lapin takes a publish's confirm number and queues its frames in
//!   the first poll of `basic_publish`, under separate locks; two threads publishing at once
//!   could take n and n+1 and queue their frames the other way round, and the broker numbers
//!   messages in arrival order, so n's ack would be n+1's. [`Lane::send`] makes that first poll
//!   under the lane's lock: numbers are taken in the order frames are queued, and lapin writes a
//!   connection's frames in the order they were queued.
//! - **Every completion seen before judging.** The collector task owns every publish's future
//!   from its first poll on, so no confirm can complete unseen; it polls them all until a pass
//!   finds nothing new, and hands that batch to the [`Ledger`], which matches returns to their
//!   publishes by the tag each publish carries in its headers (see `ledger.rs`).
//!
//! A lane whose channel failed takes no new publish: everything in flight on it ends as an
//! error, never as stored, and the publisher opens another.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use lapin::message::BasicReturnMessage;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use warren_common::headers::PUBLISH_TAG;

use super::ledger::{Answer, Carried, Completion, Ledger, Seq, Verdict};
use crate::fields;

/// Where a probe goes: the default exchange routes by queue name, and no queue can be named
/// `amq.*` (the broker refuses such declarations and names its own `amq.gen-*`), so a probe is
/// acked and dropped. Not mandatory: it is never returned.
const PROBE_ROUTING_KEY: &str = "amq.warren.publisher-probe";

/// What a caller of [`Lane::send`] receives: a verdict, or the channel error that ended it.
pub type Outcome = Result<Verdict, lapin::Error>;

type Sending = Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + Send>>;

/// Why [`Lane::send`] did not send.
#[derive(Debug)]
pub enum NotSent {
    /// The lane is closed or broken: try another (the permit and properties come back).
    Unusable(OwnedSemaphorePermit, Box<BasicProperties>),
    /// lapin refused the publish at once.
    Failed(lapin::Error),
}

#[derive(Debug)]
pub struct Lane {
    /// Shared with every publish's future (an `Arc`: cloning a lapin `Channel` costs more).
    channel: Arc<Channel>,
    state: Arc<Mutex<State>>,
    /// `State::broken`, read without the lane's lock.
    broken: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    next: Seq,
    /// Publishes whose confirm has not completed.
    flying: HashMap<Seq, Stage>,
    /// Callers waiting for a verdict (a probe has none).
    waiters: HashMap<Seq, Waiter>,
    ledger: Ledger,
    collector: Option<Waker>,
    /// A publish on it failed, or its channel is gone: no new publishes. Written under the
    /// lane's lock, read without it by [`Lane::usable`].
    broken: Arc<AtomicBool>,
    /// The publisher let go of it.
    closed: bool,
    /// Publishes sent and not yet answered, over every lane of the publisher (probes too).
    unanswered: Arc<AtomicUsize>,
    probes: u64,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("next", &self.next).field("flying", &self.flying.len()).finish()
    }
}

impl State {
    fn broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    fn set_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }
}

enum Stage {
    /// Frames queued, not all written yet.
    Writing(Sending),
    Confirming(PublisherConfirm),
}

struct Waiter {
    reply: oneshot::Sender<Outcome>,
    /// Counts against the publisher's in-flight bound until the verdict.
    _permit: OwnedSemaphorePermit,
}

impl Lane {
    /// Opens a confirm channel on `connection` and starts its collector.
    /// `unanswered` counts the publishes sent on it and not yet answered.
    pub async fn open(connection: &Connection, unanswered: Arc<AtomicUsize>) -> Result<Arc<Self>, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let broken = Arc::new(AtomicBool::new(false));
        let state = State { broken: broken.clone(), unanswered, ..State::default() };
        let (channel, state) = (Arc::new(channel), Arc::new(Mutex::new(state)));
        tokio::spawn(collect(channel.clone(), state.clone()));
        Ok(Arc::new(Self { channel, state, broken }))
    }

    /// Whether it takes new publishes (without the lane's lock: asked before every publish).
    pub fn usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed) && self.channel.status().connected()
    }

    /// Probes sent so far (for tests and logs).
    pub fn probes(&self) -> u64 {
        lock(&self.state).probes
    }

    /// Publishes and returns where the verdict will come. `permit` is held until then.
    pub fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
        permit: OwnedSemaphorePermit,
    ) -> Result<oneshot::Receiver<Outcome>, NotSent> {
        let mut st = lock(&self.state);
        if st.broken() || st.closed {
            return Err(NotSent::Unusable(permit, Box::new(properties)));
        }
        let (reply, verdict) = oneshot::channel();
        let seq = start(&mut st, &self.channel, exchange, routing_key, body.to_vec(), properties, mandatory)
            .map_err(NotSent::Failed)?;
        st.waiters.insert(seq, Waiter { reply, _permit: permit });
        if let Some(collector) = &st.collector {
            collector.wake_by_ref();
        }
        Ok(verdict)
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        st.closed = true;
        if let Some(collector) = st.collector.take() {
            collector.wake();
        }
    }
}

/// Tags and sends one publish, under the lane's lock (the caller holds `st`).
fn start(
    st: &mut State,
    channel: &Arc<Channel>,
    exchange: &str,
    routing_key: &str,
    body: Vec<u8>,
    properties: BasicProperties,
    mandatory: bool,
) -> Result<Seq, lapin::Error> {
    let seq = st.next;
    st.next += 1;
    let mut headers = properties.headers().clone().unwrap_or_default();
    fields::set_u64(&mut headers, PUBLISH_TAG, seq);
    let properties = properties.with_headers(headers);
    let (channel, exchange, routing_key) =
        (channel.clone(), ShortString::from(exchange), ShortString::from(routing_key));
    let options = BasicPublishOptions { mandatory, ..Default::default() };
    // The future owns the body: it lives in the collector, past the caller's borrow.
    let mut sending: Sending =
        Box::pin(async move { channel.basic_publish(exchange, routing_key, options, &body, properties).await });
    // The first poll takes the confirm number and queues the frames (see the module doc); the
    // collector polls it again with its own waker.
    let stage = match sending.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Pending => Stage::Writing(sending),
        Poll::Ready(Ok(confirm)) => Stage::Confirming(confirm),
        Poll::Ready(Err(e)) => {
            st.set_broken();
            return Err(e);
        }
    };
    st.flying.insert(seq, stage);
    st.unanswered.fetch_add(1, Ordering::Relaxed);
    st.ledger.sent(seq);
    Ok(seq)
}

/// The lane's collector: settles publishes as their confirms complete, until the lane is
/// closed or broken and nothing is left in flight. Then it closes the channel.
async fn collect(channel: Arc<Channel>, state: Arc<Mutex<State>>) {
    std::future::poll_fn(|cx| step(&channel, &state, cx)).await;
    if channel.status().connected() {
        let _ = tokio::time::timeout(Duration::from_secs(5), channel.close(200, "publisher lane closed".into())).await;
    }
}

fn step(channel: &Arc<Channel>, state: &Mutex<State>, cx: &mut Context<'_>) -> Poll<()> {
    let mut st = lock(state);
    if !st.collector.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        st.collector = Some(cx.waker().clone());
    }
    loop {
        let before = st.flying.len();
        let (batch, mut errors) = scan(&mut st.flying, cx);
        st.unanswered.fetch_sub(before - st.flying.len(), Ordering::Relaxed);
        if !batch.is_empty() {
            if batch.iter().any(|c| c.answer == Answer::Failed) {
                st.set_broken();
            }
            let strays = st.ledger.strays();
            let verdicts = st.ledger.settle(batch);
            if st.ledger.strays() > strays {
                tracing::warn!(strays = st.ledger.strays(), "publisher lane: a return matched no publish in flight");
            }
            deliver(&mut st, verdicts, &mut errors);
        }
        if !st.broken() && !channel.status().connected() {
            st.set_broken();
        }
        if !st.flying.is_empty() {
            return Poll::Pending;
        }
        if st.ledger.undecided() > 0 && !st.broken() {
            // Nothing else will complete on this channel to show that lapin holds no more
            // returns: a probe will (see ledger.rs). The loop polls it at once.
            st.probes += 1;
            tracing::debug!(undecided = st.ledger.undecided(), "publisher lane: sending a probe");
            if let Err(e) =
                start(&mut st, channel, "", PROBE_ROUTING_KEY, Vec::new(), BasicProperties::default(), false)
            {
                tracing::warn!(error = %e, "publisher lane: the probe could not be sent");
            }
            continue;
        }
        if st.broken() || st.closed {
            let verdicts = st.ledger.abandon();
            deliver(&mut st, verdicts, &mut errors);
            return Poll::Ready(());
        }
        return Poll::Pending;
    }
}

/// Polls every publish in flight until a pass completes none: everything that completed before
/// any completion in the batch is in the batch (or was in an earlier one).
fn scan(flying: &mut HashMap<Seq, Stage>, cx: &mut Context<'_>) -> (Vec<Completion>, HashMap<Seq, lapin::Error>) {
    let (mut batch, mut errors) = (Vec::new(), HashMap::new());
    loop {
        let before = batch.len();
        flying.retain(|&seq, stage| {
            if let Stage::Writing(sending) = stage {
                match sending.as_mut().poll(cx) {
                    Poll::Pending => return true,
                    Poll::Ready(Ok(confirm)) => *stage = Stage::Confirming(confirm),
                    Poll::Ready(Err(e)) => {
                        errors.insert(seq, e);
                        batch.push(Completion { seq, answer: Answer::Failed });
                        return false;
                    }
                }
            }
            let Stage::Confirming(confirm) = stage else { return true };
            let answer = match Pin::new(confirm).poll(cx) {
                Poll::Pending => return true,
                Poll::Ready(Ok(Confirmation::Ack(returned))) => Answer::Ack(carried(returned)),
                Poll::Ready(Ok(Confirmation::Nack(returned))) => Answer::Nack(carried(returned)),
                Poll::Ready(Ok(Confirmation::NotRequested)) => Answer::Ack(Carried::Nothing),
                Poll::Ready(Err(e)) => {
                    errors.insert(seq, e);
                    Answer::Failed
                }
            };
            batch.push(Completion { seq, answer });
            false
        });
        if batch.len() == before {
            return (batch, errors);
        }
    }
}

fn carried(returned: Option<BasicReturnMessage>) -> Carried {
    match returned {
        None => Carried::Nothing,
        Some(r) => Carried::Return {
            owner: fields::get_u64(r.delivery.properties.headers().as_ref(), PUBLISH_TAG),
            reply: format!("{} {}", r.reply_code, r.reply_text),
        },
    }
}

fn deliver(st: &mut State, verdicts: Vec<(Seq, Verdict)>, errors: &mut HashMap<Seq, lapin::Error>) {
    for (seq, verdict) in verdicts {
        let Some(waiter) = st.waiters.remove(&seq) else { continue };
        let outcome = match (verdict, errors.remove(&seq)) {
            (Verdict::Failed, Some(e)) => Err(e),
            (verdict, _) => Ok(verdict),
        };
        // The caller may have given up waiting (its confirm timeout): nothing to tell.
        let _ = waiter.reply.send(outcome);
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Nothing panics while holding it; a poisoned lock still holds consistent books.
    state.lock().unwrap_or_else(|p| p.into_inner())
}
