//! One delivery, start to finish:
//!
//! ```text
//! receive -> on arrival (decide): run it / move it to the returned lane / give it up as poison
//!         -> parse + validate (common) -> run on the pool, unless its session is gone or the
//!            worker drains first
//!         -> result letter, or on failure (decide): retry letter / dead letter (+ error result)
//!         -> settle: publish, await the confirm, then ack; else hand back
//! ```
//!
//! Nothing here returns an error to the loop, and nothing here acks: every path ends in the
//! settle step, which acks only what the broker confirmed.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, field};
use warren_common::bytes::{self, Ref, Scheme};
use warren_common::headers as h;
use warren_common::{Encoding, JobEnvelope, JobError, JobResult, Output, Timing};
use warren_infra::fields;

use crate::decide::{self, Arrival, Facts, Failure, Return, Schedule};
use crate::letters::{self, FailureRecord, Recount};
use crate::pool::{Ran, now_us};
use crate::registry::{Input, Missing, Registered, RunCx};
use crate::settle::{self, Why};
use crate::worker::{Held, Served, Worker};

/// Handles one delivery. `stop` is cancelled when the drain timeout passes: a job still running
/// then is handed back to the broker rather than left hanging.
pub async fn handle(worker: Arc<Worker>, served: Arc<Served>, delivery: Delivery, stop: CancellationToken) {
    let props = &delivery.properties;
    let headers = props.headers().as_ref();
    let counts = [h::ATTEMPT, h::REDELIVERIES, h::HANDBACKS].map(|name| fields::get_u64(headers, name));
    let facts = Facts::new(props.message_id().as_ref().map(|s| s.as_str()), counts, delivery.redelivered, served.lane);
    // The W3C trace id the producer started; it is copied onto the result, so logs of producer,
    // worker and result consumer share it.
    let traceparent = fields::get_str(headers, h::TRACEPARENT);
    let trace_id = traceparent.as_deref().and_then(|t| t.split('-').nth(1)).unwrap_or("").to_owned();
    let span = tracing::info_span!(
        "job",
        job_id = %facts.job_id.as_deref().unwrap_or(""),
        trace_id = %trace_id,
        kind = field::Empty,
        attempt = facts.attempt,
        queue = %served.queue,
        redelivered = delivery.redelivered,
    );
    let held = Held {
        worker: &worker,
        served: &served,
        delivery: &delivery,
        facts: &facts,
        kind: "unknown",
        trace_id: &trace_id,
    };
    let work = async {
        tracing::debug!("job started");
        story(&held, &stop).await;
    };
    work.instrument(span).await;
}

/// The delivery's path. `stop` (the drain timeout) cuts only the wait for a slot and the run:
/// once a settle has begun it finishes (each publish bounded by the confirm timeout), so that a
/// copy the broker may already hold is never followed by a hand-back beside it.
async fn story(held: &Held<'_>, stop: &CancellationToken) {
    let Held { worker, served, delivery, facts, .. } = *held;
    if let Arrival::Returned(back) = decide::on_arrival(facts, worker.settings.consumer.max_redeliveries) {
        tracing::warn!("job came back unanswered");
        return returned(held, back, &peeked(delivery)).await;
    }
    let content_type = delivery.properties.content_type().as_ref().map(|s| s.as_str());
    let parsed = match parse(&delivery.data, content_type, facts, worker) {
        Ok(job) => job,
        Err(error) => {
            let kind = peeked(delivery);
            worker.metrics.job_received(&served.queue, worker.registry.label(&kind));
            let now = now_us();
            let timing = Timing { started_at_us: now, finished_at_us: now };
            return fail(held, &kind, &error, timing, None).await;
        }
    };
    let Parsed { registered, job, input, control, output_to, refs } = parsed;
    let kind = registered.runner.name();
    let held = &Held { kind, ..*held };
    tracing::Span::current().record("kind", kind);
    worker.metrics.job_received(&served.queue, kind);
    let now = now_us();
    let not_run = Timing { started_at_us: now, finished_at_us: now };
    let job_id = facts.job_id.as_deref().unwrap_or_default();
    worker.cancels.caught_up().await;
    if worker.cancels.is_cancelled(job_id) {
        let error = JobError::Cancelled("its job id was cancelled before it started".into());
        return fail(held, kind, &error, not_run, None).await;
    }
    match decide::on_schedule(&control, now / 1000, &served.delay_tiers, served.retry.jitter) {
        Schedule::Run => {}
        Schedule::Expired => {
            let error = JobError::DeadlineExceeded(match (control.deadline_ms, control.not_before_ms) {
                (Some(d), Some(nb)) if nb >= d => format!("its not_before_ms {nb} is not before its deadline_ms {d}"),
                (d, _) => format!("its deadline_ms {} passed before it started", d.unwrap_or_default()),
            });
            return fail(held, kind, &error, not_run, Some(Duration::ZERO)).await;
        }
        Schedule::Wait { tier, ttl } => return delay(held, &control, tier, ttl).await,
    }
    // The job's deadline on the monotonic clock, for the moment it gets a slot.
    let deadline = decide::deadline_left(&control, now / 1000).map(|left| std::time::Instant::now() + left);
    // References are fetched here, before a slot is taken: a worker's prefetched jobs download
    // while others run. `_holding`, a place among the jobs holding fetched bytes, is kept until
    // the job ends.
    let (input, _holding) = if refs.is_empty() {
        (input, None)
    } else {
        let fetching = async {
            let holding = worker.stores.hold().await;
            (fetched(worker, registered, job, &refs).await, Some(holding))
        };
        let (got, holding) = tokio::select! {
            got = fetching => got,
            () = stop.cancelled() => {
                tracing::warn!("drain timeout while fetching the job's references: handing it back");
                settle::hand_back(held, Why::Draining).await;
                return;
            }
        };
        match got {
            Ok(input) => (input, holding),
            Err(error) => {
                let left = decide::deadline_left(&control, now_us() / 1000);
                return fail(held, kind, &error, not_run, left).await;
            }
        }
    };
    worker.events.emit(|| held.event("received"));
    worker.events.emit(|| held.event("started"));
    let (progress, progress_end) = worker.events.reporter(|| held.event("progress"));
    let watch = worker.cancels.watch(job_id);
    let job = Job { id: job_id, attempt: facts.attempt, deadline, progress, cancel: watch.flag.clone() };
    let ran = tokio::select! {
        ran = run(worker, served, registered, input, job) => ran,
        () = stop.cancelled() => {
            tracing::warn!("drain timeout: handing the job back to the broker");
            progress_end.end();
            settle::hand_back(held, Why::Draining).await;
            return;
        }
    };
    // Whatever comes next, the run is over: reports from a thread still running (a job given
    // up at its time limit) would come after the step that ends it.
    progress_end.end();
    drop(watch);
    let (outcome, timing) = match ran {
        Ran::Done(outcome, timing) => (outcome, timing),
        Ran::Died(_) => {
            tracing::warn!("what ran the job died under it");
            return returned(held, decide::on_death(facts, worker.settings.consumer.max_redeliveries), kind).await;
        }
        Ran::NotStarted if worker.lost.is_cancelled() => {
            // The broker requeued it with its session; its delivery tag is dead.
            worker.metrics.not_started(&served.queue, "session_lost");
            return;
        }
        Ran::NotStarted => {
            worker.metrics.not_started(&served.queue, "draining");
            settle::hand_back(held, Why::Draining).await;
            return;
        }
    };
    let queued_for =
        settle::published_at_us(delivery).map(|p| Duration::from_micros(timing.started_at_us.saturating_sub(p)));
    let ran_for = Duration::from_micros(timing.finished_at_us.saturating_sub(timing.started_at_us));
    worker.metrics.job_ran(&served.queue, kind, queued_for, ran_for, served.pool.abandoned());
    let error = match outcome {
        Ok(output) => {
            let job_id = facts.job_id.clone().unwrap_or_default();
            let result =
                JobResult::ok(job_id, kind.to_owned(), output, facts.attempt, worker.worker_id.clone(), timing);
            let letter = match &output_to {
                None => letters::result(&delivery.properties, &result, encoding(delivery), results(worker), now_us()),
                Some(prefix) => stored(worker, delivery, &result, kind, prefix).await,
            };
            let output_bytes = letter.as_ref().map(|l| l.body.len()).unwrap_or_default();
            let sent = match letter {
                Ok(letter) => settle::deliver(held, letter, None).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(label) => {
                    tracing::info!(run_ms = ran_for.as_millis() as u64, "job done");
                    if label == "ok" {
                        worker.events.emit(|| {
                            let mut event = held.event("succeeded");
                            (event.run_ms, event.output_bytes) = (Some(ran_for.as_millis() as u64), Some(output_bytes));
                            event
                        });
                    }
                    return;
                }
                Err(e) => e,
            }
        }
        Err(e) => e,
    };
    fail(held, kind, &error, timing, decide::deadline_left(&control, now_us() / 1000)).await;
}

/// A job that came back unanswered, or whose runner died under it: to the returned lane with
/// one return more, or dead-lettered as poison past `consumer.max_redeliveries`.
async fn returned(held: &Held<'_>, back: Return, kind: &str) {
    let Held { worker, served, delivery, .. } = *held;
    worker.metrics.redelivered(&served.queue);
    match back {
        Return::ToLane { returns } => {
            tracing::warn!(returns, "moving the job to the returned lane");
            let copy = letters::requeue(settle::input(delivery), &served.returned_queue, Recount::Returns(returns));
            let held = &Held { kind: worker.registry.label(kind), ..*held };
            if settle::deliver(held, copy, None).await == Ok("requeued") {
                worker.events.emit(|| {
                    let mut event = held.event("returned");
                    event.returns = Some(returns);
                    event
                });
            }
        }
        Return::Poison { returns } => {
            let now = now_us();
            let timing = Timing { started_at_us: now, finished_at_us: now };
            let error = JobError::RedeliveryLimit { deliveries: returns };
            fail(held, kind, &error, timing, None).await;
        }
    }
}

/// Puts a job whose `not_before` is ahead in the delay queue of `tier` for `ttl`, unchanged,
/// and acks it once stored: it comes back to its work queue and is looked at again.
async fn delay(held: &Held<'_>, control: &warren_common::Control, tier: Duration, ttl: Duration) {
    let Held { worker, served, delivery, .. } = *held;
    let queue = worker.settings.retry_queue(&served.work_queue, tier);
    tracing::debug!(not_before_ms = control.not_before_ms, ttl_ms = ttl.as_millis() as u64, queue = %queue,
        "not before its time; waiting in a delay queue");
    let letter = letters::delay(settle::input(delivery), &queue, ttl);
    if let Ok("delayed") = settle::deliver(held, letter, None).await {
        worker.events.emit(|| {
            let mut event = held.event("delayed");
            event.delay_ms = Some(ttl.as_millis() as u64);
            event
        });
    }
}

/// What one run of a job gets besides its input.
struct Job<'a> {
    id: &'a str,
    attempt: u32,
    /// The job's own deadline, if it has one.
    deadline: Option<std::time::Instant>,
    progress: warren_common::Progress,
    cancel: warren_common::CancelFlag,
}

/// Runs the job in its kind's shape (on the served queue's pool, through a batcher, or on the
/// runtime), unless the worker's gate closes before it starts.
async fn run(worker: &Arc<Worker>, served: &Served, kind: &Registered, input: Input, job: Job<'_>) -> Ran<Output> {
    let cx = RunCx {
        job_id: job.id,
        attempt: job.attempt,
        lane: served.lane,
        pool: &served.pool,
        gate: &worker.gate,
        limits: &worker.limits,
        time_limit: served.time_limit,
        deadline: job.deadline,
        retry_timeouts: worker.settings.consumer.retry_timeouts,
        progress: job.progress,
        cancel: job.cancel,
    };
    kind.runner.run(input, cx).await
}

/// Retries or dead-letters a failed job (with an error result to `reply_to` when given up),
/// then settles the delivery. `kind` is the kind the envelope names, as results carry it;
/// `left`, the time to the job's deadline, if it has one.
async fn fail(held: &Held<'_>, kind: &str, error: &JobError, timing: Timing, left: Option<Duration>) {
    let Held { worker, served, delivery, facts, .. } = *held;
    let label = worker.registry.label(kind);
    let held = &Held { kind: label, ..*held };
    let failure = decide::on_failure(error, facts.attempt, facts.handbacks, &served.retry, left);
    let past_deadline;
    let error = if failure == Failure::PastDeadline {
        past_deadline = JobError::DeadlineExceeded(format!(
            "its next attempt would start past its deadline; it failed with: {error}"
        ));
        &past_deadline
    } else {
        error
    };
    worker.metrics.job_failed(&served.queue, label, error.error_type());
    let record =
        FailureRecord { error, queue: &served.work_queue, worker_id: &worker.worker_id, now_ms: now_us() / 1000 };
    let input = settle::input(delivery);
    let settled = match failure {
        Failure::HandBack => {
            // Through a delay queue of the route (acked once stored, so that no delivery is held
            // while it waits, and a lost connection meanwhile cannot count as a return); back
            // to the queue at once, after a pause, when the route has no delay queue.
            let tiers = served.retry.tiers();
            let Some(&delay) = tiers.get(facts.handbacks as usize).or(tiers.last()) else {
                tracing::warn!(error = %error, handbacks = facts.handbacks,
                    "the kind's backend is unavailable; handing the job back without spending an attempt");
                settle::hand_back(held, Why::Unavailable).await;
                return;
            };
            let ttl = served.retry.jittered(delay, rand::random::<f64>());
            let queue = worker.settings.retry_queue(&served.work_queue, delay);
            tracing::warn!(error = %error, handbacks = facts.handbacks, delay_ms = ttl.as_millis() as u64,
                "the kind's backend is unavailable; setting the job aside without spending an attempt");
            let handbacks = facts.handbacks.saturating_add(1);
            let letter = letters::set_aside(input, record, facts.attempt, handbacks, &queue, ttl);
            let settled = settle::deliver(held, letter, None).await;
            if settled == Ok("set_aside") {
                worker.events.emit(|| {
                    let mut event = held.event("handed_back");
                    (event.reason, event.delay_ms, event.error) =
                        (Some("unavailable"), Some(ttl.as_millis() as u64), Some(error.into()));
                    event
                });
            }
            settled
        }
        Failure::Retry { next_attempt, delay } => {
            let ttl = served.retry.jittered(delay, rand::random::<f64>());
            let queue = worker.settings.retry_queue(&served.work_queue, delay);
            tracing::info!(next_attempt, delay_ms = ttl.as_millis() as u64, error = %error, "transient failure; retrying later");
            let letter = letters::retry(input, record, next_attempt, &queue, ttl);
            let settled = settle::deliver(held, letter, None).await;
            if settled == Ok("retried") {
                worker.events.emit(|| {
                    let mut event = held.event("retried");
                    (event.delay_ms, event.error) = (Some(ttl.as_millis() as u64), Some(error.into()));
                    event
                });
            }
            settled
        }
        Failure::DeadLetter { .. } | Failure::PastDeadline => {
            let reason = decide::reason(error);
            tracing::warn!(reason, error_type = error.error_type(), error = %error,
                attempts = u64::from(facts.attempt) + 1, "job dead-lettered");
            let dlx = &worker.settings.topology.dead_letter_exchange;
            let letter = letters::dead_letter(input, record, facts.attempt, reason, dlx);
            let job_id = facts.job_id.clone().unwrap_or_default();
            let result =
                JobResult::failed(job_id, kind.to_owned(), error, facts.attempt, worker.worker_id.clone(), timing);
            let courtesy = delivery.properties.reply_to().as_ref().and_then(|_| {
                letters::result(&delivery.properties, &result, encoding(delivery), results(worker), now_us()).ok()
            });
            let settled = settle::deliver(held, letter, courtesy).await;
            if settled == Ok("dead_lettered") {
                // A cancelled job's last step is its cancel; its dead letter keeps it for replay.
                let step = if matches!(error, JobError::Cancelled(_)) { "cancelled" } else { "dead_lettered" };
                worker.events.emit(|| {
                    let mut event = held.event(step);
                    (event.error, event.reason) = (Some(error.into()), Some(reason));
                    event
                });
            }
            settled
        }
    };
    if let Err(e) = settled {
        // Only a result can come back as a failure, and this is a retry or dead letter.
        tracing::error!(error = %e, "a failure's own publish came back as a failure; handing the job back");
        settle::hand_back(held, Why::Refused).await;
    }
}

/// A job read at the boundary.
struct Parsed<'w, 'b> {
    registered: &'w Registered,
    /// The job's part of the body, to decode again once its references are fetched.
    job: warren_common::JobBody<'b>,
    /// Validated, unless it holds references (validated once they are fetched).
    input: Input,
    control: warren_common::Control,
    /// Where its output's bytes go.
    output_to: Option<String>,
    /// The references its bytes fields hold, in order.
    refs: Vec<Ref>,
}

/// Parses at the boundary: size, content type, envelope, kind (registered and served), the job's
/// fields (the kind's type), job id, then the kind's validation against the limits (for a job
/// holding references, once they are fetched: [`fetched`]).
fn parse<'w, 'b>(
    body: &'b [u8],
    content_type: Option<&str>,
    facts: &Facts,
    worker: &'w Worker,
) -> Result<Parsed<'w, 'b>, JobError> {
    let limits = &worker.limits;
    if body.len() > limits.max_body_bytes {
        return Err(JobError::BodyTooLarge { size: body.len(), limit: limits.max_body_bytes });
    }
    let Some(encoding) = Encoding::from_content_type(content_type) else {
        return Err(JobError::UnsupportedContentType(content_type.unwrap_or_default().to_owned()));
    };
    let opened = JobEnvelope::open(body, encoding)?;
    let registered = worker.registry.get(opened.kind).map_err(|missing| match missing {
        Missing::Unknown => JobError::UnknownKind(opened.kind.to_owned()),
        Missing::NotServed => JobError::KindNotServed(opened.kind.to_owned()),
    })?;
    let (input, refs) = bytes::collect_refs(|| registered.runner.decode(opened.job));
    let input = input?;
    if facts.job_id.is_none() {
        // Without an id its result cannot be matched and its duplicates cannot be recognised.
        return Err(JobError::MalformedEnvelope("the message has no message_id (the job id)".into()));
    }
    let output_to = opened.output_to.as_deref().map(|prefix| checked_output_to(prefix, worker)).transpose()?;
    if refs.is_empty() {
        registered.runner.validate(&input, limits)?;
    } else {
        for r in &refs {
            worker.stores.check(r)?;
        }
    }
    Ok(Parsed { registered, job: opened.job, input, control: opened.control, output_to, refs })
}

/// An `output_to` this worker can write under: an `s3://bucket/prefix` or a `file://`
/// directory under `store.file_roots`.
fn checked_output_to(prefix: &str, worker: &Worker) -> Result<String, JobError> {
    if prefix.contains(['?', '#']) {
        return Err(JobError::InvalidParams("output_to: a prefix holds no '?' or '#'".into()));
    }
    // The longest name an output can get under it: a job id of AMQP's 255 bytes, a field's.
    let longest = crate::store::output_prefix(prefix, &"x".repeat(255)) + "999.webp";
    Ref::new(longest).map_err(|e| JobError::InvalidParams(format!("output_to, with a job id and a name: {e}")))?;
    let probe = Ref::new(crate::store::output_prefix(prefix, "x") + "0")
        .map_err(|e| JobError::InvalidParams(format!("output_to: {e}")))?;
    if probe.scheme() == Scheme::Https {
        return Err(JobError::InvalidParams("output_to: outputs go to s3:// or file://, not https://".into()));
    }
    worker.stores.check(&probe)?;
    Ok(prefix.to_owned())
}

/// The job's input with its references' bytes in their place, validated: the references
/// fetched (bounded, within `limits.max_ref_bytes` in all), then `job` decoded again.
async fn fetched(
    worker: &Worker,
    registered: &Registered,
    job: warren_common::JobBody<'_>,
    refs: &[Ref],
) -> Result<Input, JobError> {
    let started = std::time::Instant::now();
    let fetched = worker.stores.fetch_all(refs, worker.limits.max_ref_bytes).await?;
    let size: usize = fetched.values().map(|(b, _)| b.len()).sum();
    worker.metrics.ref_transfer(registered.runner.name(), "fetched", size, started.elapsed());
    tracing::debug!(
        refs = refs.len(),
        bytes = size,
        fetch_ms = started.elapsed().as_millis() as u64,
        "references fetched"
    );
    let input = bytes::fill_refs(fetched, || registered.runner.decode(job))?;
    registered.runner.validate(&input, &worker.limits)?;
    Ok(input)
}

/// The result letter of a job with an `output_to`: its output's bytes fields written as
/// objects under `{output_to}{job id}/`, then the letter, carrying references, once they are.
async fn stored<'a>(
    worker: &Worker,
    delivery: &Delivery,
    result: &JobResult,
    kind: &'static str,
    output_to: &str,
) -> Result<letters::Letter<'a>, JobError> {
    let prefix = crate::store::output_prefix(output_to, &result.job_id);
    let (letter, objects) = bytes::upload_refs(&prefix, || {
        letters::result(&delivery.properties, result, encoding(delivery), results(worker), now_us())
    });
    let letter = letter?;
    let size: usize = objects.iter().map(|(_, b)| b.len()).sum();
    let started = std::time::Instant::now();
    worker.stores.store_all(objects).await?;
    worker.metrics.ref_transfer(kind, "stored", size, started.elapsed());
    tracing::debug!(bytes = size, store_ms = started.elapsed().as_millis() as u64, prefix = %prefix, "output stored");
    Ok(letter)
}

fn results(worker: &Worker) -> letters::ResultsRoute<'_> {
    let topology = &worker.settings.topology;
    letters::ResultsRoute { exchange: &topology.results_exchange, has_queue: !topology.results_queue.is_empty() }
}

/// Results travel in the job's encoding; JSON when the job's could not be understood.
fn encoding(delivery: &Delivery) -> Encoding {
    Encoding::from_content_type(delivery.properties.content_type().as_ref().map(|s| s.as_str()))
        .unwrap_or(Encoding::Json)
}

/// The kind the envelope names, if it can be read at all, for results and labels.
fn peeked(delivery: &Delivery) -> String {
    Encoding::from_content_type(delivery.properties.content_type().as_ref().map(|s| s.as_str()))
        .and_then(|enc| JobEnvelope::peek_kind(&delivery.data, enc))
        .unwrap_or_else(|| "unknown".to_owned())
}
