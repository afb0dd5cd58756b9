//! The delivery path's decisions, as pure functions of plain data: what to do with a delivery
//! when it arrives, with a failed job, and with the input once a publish for it has ended. The
//! adapters (handler, settle) only carry these out; every case is unit-tested here.

use std::time::Duration;

use warren_common::retry::RetryPolicy;
use warren_common::{Control, ErrorClass, JobError};

/// Which of a route's two queues a delivery came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The work queue: many deliveries held per worker.
    Main,
    /// The returned lane: jobs that came back unanswered, one held per worker, run as soon as
    /// they arrive; a worker that dies holding one was running it.
    Returned,
}

/// What Warren's headers and the broker's flag say about a delivery, read without trusting
/// the values: missing or absurd numbers saturate instead of overflowing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The job id (`message_id`); `None` when missing or empty.
    pub job_id: Option<String>,
    /// Attempts made before this one (`warren-attempt`).
    pub attempt: u32,
    /// Returns counted so far (`warren-redeliveries`).
    pub returns: u32,
    /// Hand-backs after a refused publish so far (`warren-handbacks`).
    pub handbacks: u32,
    /// The broker delivered it before, and it was not acked.
    pub redelivered: bool,
    pub lane: Lane,
}

impl Facts {
    /// `counts`: the `warren-attempt`, `warren-redeliveries` and `warren-handbacks` headers.
    pub fn new(message_id: Option<&str>, counts: [Option<u64>; 3], redelivered: bool, lane: Lane) -> Self {
        let narrow = |v: Option<u64>| u32::try_from(v.unwrap_or(0)).unwrap_or(u32::MAX);
        let [attempt, returns, handbacks] = counts;
        Self {
            job_id: message_id.filter(|id| !id.is_empty()).map(str::to_owned),
            attempt: narrow(attempt),
            returns: narrow(returns),
            handbacks: narrow(handbacks),
            redelivered,
            lane,
        }
    }
}

/// What to do with a delivery as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// Run it.
    Process,
    /// It came back unanswered.
    Returned(Return),
}

/// A job that came back unanswered, or whose runner died under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Return {
    /// Republish it to the returned lane with `returns` counted, and ack it once that copy is
    /// confirmed.
    ToLane { returns: u32 },
    /// It came back once more than `consumer.max_redeliveries` allows: dead-letter it.
    Poison { returns: u32 },
}

/// A first delivery runs. A job that comes back unanswered counts one return and moves to the
/// returned lane (from either queue); past `max_redeliveries` returns it is poison. Since the
/// lane is taken one job at a time and each is run as it arrives, a return from the lane means
/// its worker died (or lost the broker) while running it; a return from the work queue may just
/// as well be a job that waited in a dying worker's prefetch, and is counted once whatever
/// happens to it there. Warren's own hand-backs are fresh copies, never redeliveries.
pub fn on_arrival(facts: &Facts, max_redeliveries: u32) -> Arrival {
    if !facts.redelivered {
        return Arrival::Process;
    }
    Arrival::Returned(on_death(facts, max_redeliveries))
}

/// A job whose runner died under it (a worker, or a Python kind's child process): one return
/// more, to the returned lane, or poison past `max_redeliveries`.
pub fn on_death(facts: &Facts, max_redeliveries: u32) -> Return {
    let returns = facts.returns.saturating_add(1);
    if returns > max_redeliveries { Return::Poison { returns } } else { Return::ToLane { returns } }
}

/// What becomes of a failed job.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Another attempt, numbered `next_attempt`, after about `delay` (the tier's nominal delay).
    Retry { next_attempt: u32, delay: Duration },
    /// Given up, with this reason (`warren-dead-reason`).
    DeadLetter { reason: &'static str },
    /// Not the job's fault: its kind's backend (model server) was down. Back to its queue
    /// without spending an attempt (`warren-handbacks` + 1, after a pause that grows with it).
    HandBack,
    /// Another attempt (or hand-back) would start after the job's deadline: given up as
    /// `deadline_exceeded` instead.
    PastDeadline,
}

/// How many times a job goes back without spending an attempt because its backend was
/// unavailable; past that, such a failure spends attempts like any transient one, so that a
/// backend that keeps failing one job while it answers the others cannot hold it forever.
pub const UNAVAILABLE_HANDBACKS: u32 = 20;

/// A backend (model server, or the store behind a job's references) that was unavailable hands the job back (up to [`UNAVAILABLE_HANDBACKS`] times,
/// counted by `handbacks`); other transient failures with attempts left are retried; anything
/// else is dead-lettered. `left`: the time to the job's deadline, if it has one; a retry or
/// hand-back whose delay would reach past it is [`Failure::PastDeadline`].
pub fn on_failure(
    error: &JobError,
    attempt: u32,
    handbacks: u32,
    policy: &RetryPolicy,
    left: Option<Duration>,
) -> Failure {
    // A copy in a delay queue may wait its delay plus the jitter.
    let reaches_past = |delay: Duration| left.is_some_and(|left| policy.jittered(delay, 1.0) >= left);
    // Its time limit was cut to the deadline, which has passed: that is what ended it.
    if matches!(error, JobError::TimedOut { .. }) && left.is_some_and(|left| left.is_zero()) {
        return Failure::PastDeadline;
    }
    if matches!(error, JobError::ModelUnavailable(_) | JobError::StoreUnavailable(_))
        && handbacks < UNAVAILABLE_HANDBACKS
    {
        let tiers = policy.tiers();
        let pause = tiers.get(handbacks as usize).or(tiers.last()).copied().unwrap_or_default();
        return if reaches_past(pause) { Failure::PastDeadline } else { Failure::HandBack };
    }
    if error.class() == ErrorClass::Transient && policy.should_retry(attempt) {
        let next_attempt = attempt.saturating_add(1);
        let delay = policy.nominal_delay(next_attempt);
        if reaches_past(delay) {
            return Failure::PastDeadline;
        }
        return Failure::Retry { next_attempt, delay };
    }
    Failure::DeadLetter { reason: reason(error) }
}

/// When a job that may run (not cancelled) runs, by its control and the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Now (once it has a slot: [`at_start`]).
    Run,
    /// Its deadline has passed, or comes no later than its `not_before`: never run.
    Expired,
    /// Not yet: it waits `ttl` in the delay queue of tier `tier`, and is looked at again when
    /// it comes back.
    Wait { tier: Duration, ttl: Duration },
}

/// A job past its deadline is not started; one whose `not_before` is ahead waits in a delay
/// queue, none of which a worker holds. `tiers`: the route's delay queues, by their nominal
/// delay (ascending); `jitter`: the fraction by which retries in them may outlast their tier.
///
/// A queue expires messages only at its head, so a job may wait behind an older one that
/// expires later than itself: at most the tier plus its jitter after it was queued. So a wait
/// takes the longest tier whose jittered bound still ends before `not_before`, with the tier
/// as its TTL; the last stretch, shorter than every tier's bound, goes into the shortest tier
/// with the exact time left, and may end up to that tier's bound late (the tolerance).
pub fn on_schedule(control: &Control, now_ms: u64, tiers: &[Duration], jitter: f64) -> Schedule {
    if let Some(deadline) = control.deadline_ms
        && (deadline <= now_ms || control.not_before_ms.is_some_and(|nb| nb >= deadline))
    {
        return Schedule::Expired;
    }
    let left = |until: u64| Duration::from_millis(until.saturating_sub(now_ms));
    if let Some(not_before) = control.not_before_ms.filter(|&nb| nb > now_ms) {
        let wait = left(not_before);
        let bound = |tier: &Duration| tier.mul_f64(1.0 + jitter.clamp(0.0, 1.0));
        if let Some(&tier) = tiers.iter().rev().find(|t| bound(t) <= wait) {
            return Schedule::Wait { tier, ttl: tier };
        }
        if let Some(&tier) = tiers.first() {
            return Schedule::Wait { tier, ttl: wait };
        }
    }
    Schedule::Run
}

/// At the moment a job would start (it has its pool slot, its permit, or its batch's slot): one
/// cancelled or past its deadline while it waited does not start; the others run for the
/// route's `time_limit` cut to the time `left` before their deadline.
pub fn at_start(cancelled: bool, left: Option<Duration>, time_limit: Duration) -> Result<Duration, JobError> {
    if cancelled {
        return Err(JobError::Cancelled("cancelled while it waited to start".into()));
    }
    match left {
        Some(left) if left.is_zero() => {
            Err(JobError::DeadlineExceeded("its deadline passed while it waited to start".into()))
        }
        Some(left) => Ok(time_limit.min(left)),
        None => Ok(time_limit),
    }
}

/// The time left to a job's deadline, if it has one (zero once past).
pub fn deadline_left(control: &Control, now_ms: u64) -> Option<Duration> {
    control.deadline_ms.map(|d| Duration::from_millis(d.saturating_sub(now_ms)))
}

/// Why a job was given up.
pub fn reason(error: &JobError) -> &'static str {
    match (error, error.class()) {
        (JobError::RedeliveryLimit { .. }, _) => "redelivery_limit",
        (JobError::DeadlineExceeded(_), _) => "deadline_exceeded",
        (JobError::Cancelled(_), _) => "cancelled",
        (_, ErrorClass::Permanent) => "permanent_error",
        (_, ErrorClass::Transient) => "attempts_exhausted",
    }
}

/// What was published for a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The job's result; `must_route`: it goes to the results exchange, which has a results
    /// queue, so a return means that queue is missing (not that nobody is listening).
    Result { must_route: bool },
    /// The error result sent to `reply_to` after the dead letter was stored (a courtesy).
    ErrorResult,
    /// A copy in a delay queue, for the next attempt.
    Retry,
    /// A copy in a delay queue for the same attempt: its backend was unavailable.
    SetAside,
    /// A copy in a delay queue for the same attempt: its `not_before` is ahead.
    Delay,
    /// A copy in the dead-letter queue.
    DeadLetter,
    /// A copy put back in a work queue or returned lane (a hand-back, or a counted return).
    Requeue,
}

/// How the broker answered a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Confirmed and routed: the broker stored it.
    Stored,
    /// Confirmed but returned: no queue took it.
    Unroutable,
    /// Nacked (or a return that was not this message's): not stored.
    Refused,
    /// No confirm in time: it may or may not be stored.
    TimedOut,
    /// The channel or connection failed: this session is gone.
    Lost,
}

/// What to do with the input once a publish made for it has ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    /// Its outcome is stored: ack it.
    Ack,
    /// The job must fail with this error (retried later or dead-lettered), never acked as done.
    Fail(JobError),
    /// Nothing it depends on is stored: give it back to the broker, after a pause so that a
    /// broker refusing publishes is not met with a tight loop.
    HandBack,
    /// The session is gone: the broker has requeued the delivery already.
    Abandon,
}

/// The table of what a publish outcome means for the input.
pub fn after_publish(purpose: Purpose, published: Published) -> Settle {
    use {Published as P, Purpose as U};
    match (purpose, published) {
        (_, P::Lost) => Settle::Abandon,
        (_, P::Stored) => Settle::Ack,
        // Nobody can receive the result (the requester went away): redoing the job would not
        // change that. The error result only accompanies a dead letter that is stored.
        (U::Result { must_route: false }, P::Unroutable) | (U::ErrorResult, _) => Settle::Ack,
        (U::Result { must_route: true }, P::Unroutable) => {
            Settle::Fail(JobError::ResultNotStored("no queue took it from the results exchange".into()))
        }
        (U::Result { .. }, P::Refused) => Settle::Fail(JobError::ResultNotStored("the broker refused it".into())),
        (U::Result { .. }, P::TimedOut) => Settle::Fail(JobError::ResultNotStored("no confirm in time".into())),
        (U::Retry | U::SetAside | U::Delay | U::DeadLetter | U::Requeue, P::Unroutable | P::Refused | P::TimedOut) => {
            Settle::HandBack
        }
    }
}

/// How a settled delivery is counted (`warren_jobs_completed_total{outcome}`): only an ack that
/// went out settles a job; a failed ack leaves it to the broker, which will redeliver it.
pub fn counted_outcome(settle: &Settle, what: Purpose, ack_sent: bool) -> &'static str {
    match (settle, ack_sent) {
        (Settle::Ack, false) | (Settle::Abandon, _) => "abandoned",
        (Settle::Ack, true) => match what {
            Purpose::Result { .. } => "ok",
            Purpose::Retry => "retried",
            Purpose::SetAside => "set_aside",
            Purpose::Delay => "delayed",
            Purpose::DeadLetter | Purpose::ErrorResult => "dead_lettered",
            Purpose::Requeue => "requeued",
        },
        (Settle::HandBack, _) => "handed_back",
        (Settle::Fail(_), _) => "failed",
    }
}

/// How long to wait before handing back a job whose needed publish the broker refused, after
/// `handbacks` such hand-backs of the same job: from `min`, doubling, up to `max`, drawn in the
/// upper half (`unit` uniform in [0, 1)) so that it is never near zero. Counted per job (in its
/// header), so that one job the broker keeps refusing waits longer each time whatever else
/// succeeds meanwhile.
pub fn hand_back_pause(handbacks: u32, min: Duration, max: Duration, unit: f64) -> Duration {
    let ceiling = min.saturating_mul(1u32 << handbacks.min(20)).min(max.max(min));
    ceiling.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// What a worker's readiness depends on.
#[derive(Debug, Clone, Copy)]
pub struct Readiness<'a> {
    pub connected: bool,
    /// Each served queue: whether it is consumed.
    pub consuming: &'a [bool],
    /// Every served kind's backend (model) is ready.
    pub model_ready: bool,
    /// No part of the topology (an exchange) is known to be missing.
    pub topology_whole: bool,
    pub abandoned: usize,
    pub pool: usize,
}

/// Whether a worker is ready for work: connected, consuming every queue it serves, its model
/// (if any) ready, its topology whole, and not worn down by job threads that ran past their
/// time limits.
pub fn ready(r: Readiness<'_>) -> bool {
    r.connected && r.consuming.iter().all(|c| *c) && r.model_ready && r.topology_whole && !worn_out(r.abandoned, r.pool)
}

/// Threads abandoned at their time limit keep running and cannot be stopped. Once there are
/// as many as pool slots, the process holds twice the CPU work it was sized for: it is not
/// ready, and if that lasts [`WORN_OUT_GRACE`] it stops and exits non-zero, so that its
/// supervisor starts a fresh one (a job that only overran a little ends within the grace).
pub fn worn_out(abandoned: usize, pool: usize) -> bool {
    abandoned >= pool.max(1)
}

/// How long a worker may stay worn out before it stops.
pub const WORN_OUT_GRACE: Duration = Duration::from_secs(5);

/// Whether a worker worn out for `worn_for` (None: it is not) must stop now.
pub fn must_stop(worn_for: Option<Duration>) -> bool {
    worn_for.is_some_and(|d| d >= WORN_OUT_GRACE)
}

/// Unavailable transfers in a row after which a store's place stops being tried ([`Breaker`]).
pub const BREAKER_FAILURES: u32 = 3;
/// The first pause of an open [`Breaker`]; it doubles each time a probe fails, up to
/// [`BREAKER_MAX_PAUSE`].
pub const BREAKER_PAUSE: Duration = Duration::from_secs(1);
pub const BREAKER_MAX_PAUSE: Duration = Duration::from_secs(30);

/// Whether a transfer to a store's place (the S3 store, a file root, an https host) goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Go,
    /// The only transfer let through after a pause: its answer closes or reopens the breaker.
    Probe,
    /// Not tried: the job is set aside at once (`store_unavailable`), `for` this long still.
    Refuse {
        failures: u32,
        left: Duration,
    },
}

/// A circuit breaker per store place: after [`BREAKER_FAILURES`] unavailable transfers in a
/// row, jobs naming the place are set aside without a transfer for a pause, so that a store that
/// hangs holds no transfer slots or places among the held jobs past its first failures; then one
/// transfer probes it. A store that answers (even "not found") closes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Breaker {
    failures: u32,
    /// Pauses so far while it stays down (the next one is twice as long).
    opened: u32,
    open_until: Option<std::time::Instant>,
    probing: bool,
}

impl Breaker {
    pub fn admit(&mut self, now: std::time::Instant) -> Admit {
        match self.open_until {
            None => Admit::Go,
            Some(until) if now < until => Admit::Refuse { failures: self.failures, left: until - now },
            Some(_) if self.probing => Admit::Refuse { failures: self.failures, left: Duration::ZERO },
            Some(_) => {
                self.probing = true;
                Admit::Probe
            }
        }
    }

    /// Whether a transfer let through before (it then waited for a slot) may still go: not
    /// once the breaker is open, unless it is the probe.
    pub fn still_admits(&self, probe: bool) -> bool {
        probe || self.open_until.is_none()
    }

    /// Whether it is open (its place not tried but by a probe).
    pub fn is_open(&self) -> bool {
        self.open_until.is_some()
    }

    /// A transfer's end: `unavailable` (no answer, a timeout, a 5xx) or answered.
    pub fn record(&mut self, unavailable: bool, probe: bool, now: std::time::Instant) {
        if probe {
            self.probing = false;
        }
        if !unavailable {
            *self = Self::default();
            return;
        }
        self.failures = self.failures.saturating_add(1);
        // Transfers already under way when it opened do not lengthen the pause; a probe does.
        if probe || (self.open_until.is_none() && self.failures >= BREAKER_FAILURES) {
            let pause = BREAKER_PAUSE.saturating_mul(1 << self.opened.min(16)).min(BREAKER_MAX_PAUSE);
            self.opened = self.opened.saturating_add(1);
            self.open_until = Some(now + pause);
        }
    }

    /// The probe let through will not answer (its job was dropped: a drain, a cancel): the
    /// next transfer after the pause probes instead.
    pub fn abandon_probe(&mut self) {
        self.probing = false;
    }

    /// Unavailable transfers in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(redelivered: bool, returns: u32, lane: Lane) -> Facts {
        Facts { job_id: Some("j".into()), attempt: 0, returns, handbacks: 0, redelivered, lane }
    }

    #[test]
    fn a_breaker_opens_after_failures_in_a_row_then_lets_one_probe_through_per_pause() {
        let t0 = std::time::Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut b = Breaker::default();
        b.record(true, false, at(0));
        b.record(true, false, at(0));
        assert_eq!(b.admit(at(0)), Admit::Go, "two failures: still tried");
        b.record(false, false, at(0));
        assert_eq!(b, Breaker::default(), "an answer resets the count");
        for _ in 0..BREAKER_FAILURES {
            b.record(true, false, at(10));
        }
        assert_eq!(b.admit(at(500)), Admit::Refuse { failures: 3, left: Duration::from_millis(510) });
        // Transfers already under way fail too: the pause is not lengthened.
        b.record(true, false, at(600));
        assert!(!b.still_admits(false), "one waiting for a slot is not let through now");
        assert_eq!(b.admit(at(1009)), Admit::Refuse { failures: 4, left: Duration::from_millis(1) });
        // After the pause: one probe, the others still refused.
        assert_eq!(b.admit(at(1010)), Admit::Probe);
        assert!(b.still_admits(true) && !b.still_admits(false), "only the probe, even after the pause");
        assert_eq!(b.admit(at(1011)), Admit::Refuse { failures: 4, left: Duration::ZERO });
        // The probe fails: twice the pause.
        b.record(true, true, at(1500));
        assert_eq!(b.admit(at(1500)), Admit::Refuse { failures: 5, left: Duration::from_secs(2) });
        assert_eq!(b.admit(at(3500)), Admit::Probe);
        b.record(true, true, at(3500));
        assert_eq!(b.admit(at(3500)), Admit::Refuse { failures: 6, left: Duration::from_secs(4) });
        // A probe dropped before its answer (a drain) lets the next transfer probe.
        assert_eq!(b.admit(at(7500)), Admit::Probe);
        b.abandon_probe();
        // A probe that is answered (even "not found") closes it.
        assert_eq!(b.admit(at(7500)), Admit::Probe);
        b.record(false, true, at(7600));
        assert!(b == Breaker::default() && b.admit(at(7600)) == Admit::Go);
        // The pause never passes its cap.
        let mut down = Breaker::default();
        for i in 0..40 {
            down.record(true, i >= BREAKER_FAILURES, at(0));
        }
        assert_eq!(down.admit(at(0)), Admit::Refuse { failures: 40, left: BREAKER_MAX_PAUSE });
    }

    #[test]
    fn headers_are_read_without_trusting_them() {
        let f = Facts::new(Some(""), [Some(u64::MAX), Some(u64::from(u32::MAX) + 7), Some(3)], false, Lane::Main);
        assert_eq!((f.job_id, f.attempt, f.returns, f.handbacks), (None, u32::MAX, u32::MAX, 3));
        let f = Facts::new(Some("id"), [None, Some(2), None], true, Lane::Returned);
        assert_eq!((f.job_id.as_deref(), f.attempt, f.returns, f.handbacks), (Some("id"), 0, 2, 0));
    }

    #[test]
    fn hand_back_pauses_grow_per_job_and_are_never_near_zero() {
        let (min, max) = (Duration::from_millis(200), Duration::from_secs(30));
        assert_eq!(hand_back_pause(0, min, max, 0.0), Duration::from_millis(100));
        assert_eq!(hand_back_pause(0, min, max, 1.0), Duration::from_millis(200));
        assert_eq!(hand_back_pause(3, min, max, 1.0), Duration::from_millis(1600));
        assert_eq!(hand_back_pause(u32::MAX, min, max, 1.0), max, "capped, no overflow");
    }

    #[test]
    fn first_deliveries_run_and_returns_are_counted_then_stopped() {
        assert_eq!(on_arrival(&facts(false, 7, Lane::Main), 3), Arrival::Process);
        assert_eq!(on_arrival(&facts(false, 7, Lane::Returned), 3), Arrival::Process);
        assert_eq!(on_arrival(&facts(true, 0, Lane::Main), 3), Arrival::Returned(Return::ToLane { returns: 1 }));
        assert_eq!(on_arrival(&facts(true, 1, Lane::Returned), 3), Arrival::Returned(Return::ToLane { returns: 2 }));
        assert_eq!(on_arrival(&facts(true, 2, Lane::Returned), 3), Arrival::Returned(Return::ToLane { returns: 3 }));
        assert_eq!(on_arrival(&facts(true, 3, Lane::Returned), 3), Arrival::Returned(Return::Poison { returns: 4 }));
        assert_eq!(on_arrival(&facts(true, 0, Lane::Main), 0), Arrival::Returned(Return::Poison { returns: 1 }));
        assert_eq!(
            on_arrival(&facts(true, u32::MAX, Lane::Main), 3),
            Arrival::Returned(Return::Poison { returns: u32::MAX })
        );
    }

    #[test]
    fn a_job_that_kills_every_worker_is_stopped_after_max_plus_one_deaths() {
        let max = 3;
        let (mut f, mut deaths) = (facts(false, 0, Lane::Main), 0);
        loop {
            match on_arrival(&f, max) {
                Arrival::Process => {
                    deaths += 1; // it runs, and its worker dies
                    f.redelivered = true;
                }
                Arrival::Returned(Return::ToLane { returns }) => f = facts(false, returns, Lane::Returned),
                Arrival::Returned(Return::Poison { .. }) => break,
            }
        }
        assert_eq!(deaths, max + 1);
    }

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 3, base_delay_ms: 100, max_delay_ms: 1000, jitter: 0.1 }
    }

    #[test]
    fn transient_failures_are_retried_until_the_last_attempt() {
        let transient = JobError::Injected("x".into());
        assert_eq!(
            on_failure(&transient, 0, 0, &policy(), None),
            Failure::Retry { next_attempt: 1, delay: Duration::from_millis(100) }
        );
        assert_eq!(
            on_failure(&transient, 1, 0, &policy(), None),
            Failure::Retry { next_attempt: 2, delay: Duration::from_millis(200) }
        );
        assert_eq!(on_failure(&transient, 2, 0, &policy(), None), Failure::DeadLetter { reason: "attempts_exhausted" });
        assert_eq!(
            on_failure(&transient, u32::MAX, 0, &policy(), None),
            Failure::DeadLetter { reason: "attempts_exhausted" }
        );
    }

    #[test]
    fn permanent_failures_and_poison_are_dead_lettered_at_once() {
        let corrupt = JobError::CorruptImage("x".into());
        assert_eq!(on_failure(&corrupt, 0, 0, &policy(), None), Failure::DeadLetter { reason: "permanent_error" });
        let poison = JobError::RedeliveryLimit { deliveries: 4 };
        assert_eq!(on_failure(&poison, 0, 0, &policy(), None), Failure::DeadLetter { reason: "redelivery_limit" });
        let unencodable = JobError::Encode("x".into());
        assert_eq!(on_failure(&unencodable, 0, 0, &policy(), None), Failure::DeadLetter { reason: "permanent_error" });
        let not_stored = JobError::ResultNotStored("x".into());
        assert!(matches!(on_failure(&not_stored, 0, 0, &policy(), None), Failure::Retry { .. }));
    }

    #[test]
    fn only_what_the_broker_stored_lets_the_input_be_acked() {
        use {Published as P, Purpose as U};
        let (reply, record) = (U::Result { must_route: false }, U::Result { must_route: true });
        for purpose in [reply, record, U::ErrorResult, U::Retry, U::SetAside, U::DeadLetter, U::Requeue] {
            assert_eq!(after_publish(purpose, P::Stored), Settle::Ack);
            assert_eq!(after_publish(purpose, P::Lost), Settle::Abandon);
        }
        assert_eq!(after_publish(reply, P::Unroutable), Settle::Ack, "the requester went away: dropped");
        let missing_queue = after_publish(record, P::Unroutable);
        assert!(matches!(missing_queue, Settle::Fail(JobError::ResultNotStored(_))), "{missing_queue:?}");
        for result in [reply, record] {
            assert!(matches!(after_publish(result, P::Refused), Settle::Fail(JobError::ResultNotStored(_))));
            assert!(matches!(after_publish(result, P::TimedOut), Settle::Fail(JobError::ResultNotStored(_))));
        }
        for purpose in [U::Retry, U::SetAside, U::DeadLetter, U::Requeue] {
            for outcome in [P::Unroutable, P::Refused, P::TimedOut] {
                assert_eq!(after_publish(purpose, outcome), Settle::HandBack, "{purpose:?} {outcome:?}");
            }
        }
        for outcome in [P::Unroutable, P::Refused, P::TimedOut] {
            assert_eq!(after_publish(U::ErrorResult, outcome), Settle::Ack, "the dead letter is the record");
        }
    }

    #[test]
    fn an_ack_that_did_not_go_out_is_not_counted_as_settled() {
        let result = Purpose::Result { must_route: false };
        assert_eq!(counted_outcome(&Settle::Ack, result, true), "ok");
        assert_eq!(counted_outcome(&Settle::Ack, result, false), "abandoned");
        assert_eq!(counted_outcome(&Settle::Ack, Purpose::Retry, false), "abandoned");
        assert_eq!(counted_outcome(&Settle::Ack, Purpose::DeadLetter, true), "dead_lettered");
        assert_eq!(counted_outcome(&Settle::HandBack, Purpose::Retry, true), "handed_back");
    }

    #[test]
    fn a_store_down_sets_the_job_aside_and_a_missing_or_denied_reference_is_dead_lettered() {
        let down = JobError::StoreUnavailable("s3://b/k: could not connect".into());
        assert_eq!(on_failure(&down, 2, 0, &policy(), None), Failure::HandBack, "no attempt spent");
        assert!(matches!(on_failure(&down, 0, UNAVAILABLE_HANDBACKS, &policy(), None), Failure::Retry { .. }));
        for gone in [JobError::RefNotFound("s3://b/k".into()), JobError::RefDenied("s3://b/k: 403".into())] {
            assert_eq!(on_failure(&gone, 0, 0, &policy(), None), Failure::DeadLetter { reason: "permanent_error" });
        }
    }

    #[test]
    fn a_backend_down_hands_the_job_back_without_spending_an_attempt() {
        let down = JobError::ModelUnavailable("Triton answered UNAVAILABLE".into());
        assert_eq!(on_failure(&down, 0, 0, &policy(), None), Failure::HandBack);
        assert_eq!(on_failure(&down, 2, 0, &policy(), None), Failure::HandBack, "even with no attempt left");
        assert_eq!(on_failure(&down, 0, UNAVAILABLE_HANDBACKS - 1, &policy(), None), Failure::HandBack);
        // Handed back that often: it spends attempts like any transient failure.
        assert!(matches!(on_failure(&down, 0, UNAVAILABLE_HANDBACKS, &policy(), None), Failure::Retry { .. }));
        assert_eq!(
            on_failure(&down, 2, UNAVAILABLE_HANDBACKS, &policy(), None),
            Failure::DeadLetter { reason: "attempts_exhausted" }
        );
        // Other transient failures are the job's own: they spend attempts.
        let inference = JobError::Inference("bad tensor".into());
        assert!(matches!(on_failure(&inference, 0, 0, &policy(), None), Failure::Retry { .. }));
    }

    #[test]
    fn readiness_needs_every_queue_the_model_the_topology_and_a_pool_not_worn_out() {
        let all = Readiness {
            connected: true,
            consuming: &[true, true],
            model_ready: true,
            topology_whole: true,
            abandoned: 0,
            pool: 2,
        };
        assert!(ready(all));
        assert!(!ready(Readiness { connected: false, ..all }));
        assert!(!ready(Readiness { consuming: &[true, false], ..all }), "one queue not consumed");
        assert!(!ready(Readiness { model_ready: false, ..all }), "the model is not ready");
        assert!(!ready(Readiness { topology_whole: false, ..all }), "an exchange is missing");
        assert!(ready(Readiness { consuming: &[true], abandoned: 1, ..all }));
        assert!(!ready(Readiness { consuming: &[true], abandoned: 2, ..all }), "as many abandoned threads as slots");
        assert!(worn_out(1, 0));
    }

    #[test]
    fn a_worn_out_worker_stops_only_after_the_grace() {
        assert!(!must_stop(None));
        assert!(!must_stop(Some(Duration::from_secs(1))));
        assert!(must_stop(Some(WORN_OUT_GRACE)));
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_retry_or_hand_back_is_never_scheduled_past_the_deadline() {
        let transient = JobError::Inference("x".into());
        // The first retry waits 100 ms, up to 110 ms with the jitter: with 110 ms or less left
        // it could start too late.
        assert_eq!(on_failure(&transient, 0, 0, &policy(), Some(ms(110))), Failure::PastDeadline);
        assert_eq!(on_failure(&transient, 0, 0, &policy(), Some(ms(0))), Failure::PastDeadline);
        assert!(matches!(on_failure(&transient, 0, 0, &policy(), Some(ms(111))), Failure::Retry { .. }));
        assert_eq!(on_failure(&transient, 1, 0, &policy(), Some(ms(220))), Failure::PastDeadline, "200 ms tier");
        let down = JobError::ModelUnavailable("x".into());
        assert_eq!(on_failure(&down, 0, 1, &policy(), Some(ms(220))), Failure::PastDeadline, "2nd hand-back tier");
        assert_eq!(on_failure(&down, 0, 0, &policy(), Some(ms(200))), Failure::HandBack);
        // A run cut at its deadline ends as that, whatever the timeouts' class or the attempt.
        for retry in [true, false] {
            let cut = JobError::TimedOut { limit: ms(5), retry };
            assert_eq!(on_failure(&cut, 2, 0, &policy(), Some(Duration::ZERO)), Failure::PastDeadline);
            assert_ne!(on_failure(&cut, 0, 0, &policy(), None), Failure::PastDeadline);
        }
        // A permanent failure is what it is, deadline or not; attempts run out before it, too.
        let corrupt = JobError::CorruptImage("x".into());
        assert_eq!(
            on_failure(&corrupt, 0, 0, &policy(), Some(ms(0))),
            Failure::DeadLetter { reason: "permanent_error" }
        );
        assert_eq!(
            on_failure(&transient, 2, 0, &policy(), Some(ms(10))),
            Failure::DeadLetter { reason: "attempts_exhausted" }
        );
        assert_eq!(reason(&JobError::DeadlineExceeded(String::new())), "deadline_exceeded");
        assert_eq!(reason(&JobError::Cancelled(String::new())), "cancelled");
        assert_eq!(JobError::DeadlineExceeded(String::new()).class(), ErrorClass::Permanent);
        assert_eq!(JobError::Cancelled(String::new()).class(), ErrorClass::Permanent);
    }

    #[test]
    fn a_job_past_its_deadline_never_runs_and_one_before_it_runs_within_it() {
        let tiers = [ms(1000), ms(4000)];
        let limit = Duration::from_secs(60);
        let at = |deadline_ms, not_before_ms| Control { deadline_ms, not_before_ms };
        assert_eq!(on_schedule(&at(None, None), 5_000, &tiers, 0.2), Schedule::Run);
        assert_eq!(on_schedule(&at(Some(5_000), None), 5_000, &tiers, 0.2), Schedule::Expired);
        assert_eq!(on_schedule(&at(Some(0), None), 5_000, &tiers, 0.2), Schedule::Expired);
        assert_eq!(on_schedule(&at(Some(u64::MAX), None), 5_000, &tiers, 0.2), Schedule::Run);
        // A deadline no later than the start it allows can never be met.
        assert_eq!(on_schedule(&at(Some(9_000), Some(9_000)), 5_000, &tiers, 0.2), Schedule::Expired);
        assert!(matches!(on_schedule(&at(Some(9_001), Some(9_000)), 5_000, &tiers, 0.2), Schedule::Wait { .. }));
        // At its start: the time limit cut to the deadline; nothing once it has passed, or
        // once cancelled while it waited.
        assert_eq!(at_start(false, Some(ms(2_500)), limit), Ok(ms(2_500)));
        assert_eq!(at_start(false, None, limit), Ok(limit));
        assert_eq!(at_start(false, Some(Duration::MAX), limit), Ok(limit));
        assert_eq!(at_start(false, Some(Duration::ZERO), limit).map_err(|e| e.error_type()), Err("deadline_exceeded"));
        assert_eq!(at_start(true, Some(ms(2_500)), limit).map_err(|e| e.error_type()), Err("cancelled"));
    }

    #[test]
    fn a_delayed_job_waits_in_the_longest_tier_that_cannot_make_it_late() {
        let tiers = [ms(1000), ms(4000), ms(16000)];
        let wait = |not_before_ms| on_schedule(&Control { deadline_ms: None, not_before_ms }, 0, &tiers, 0.2);
        // A past or present not_before runs now.
        assert_eq!(wait(Some(0)), Schedule::Run);
        // 16 s jittered is 19.2 s: a 19.2 s wait may use it, a 19.1 s one takes 4 s.
        assert_eq!(wait(Some(19_200)), Schedule::Wait { tier: ms(16000), ttl: ms(16000) });
        assert_eq!(wait(Some(19_199)), Schedule::Wait { tier: ms(4000), ttl: ms(4000) });
        assert_eq!(wait(Some(600_000)), Schedule::Wait { tier: ms(16000), ttl: ms(16000) });
        assert_eq!(wait(Some(1_200)), Schedule::Wait { tier: ms(1000), ttl: ms(1000) });
        // The last stretch: the exact time left, in the shortest tier.
        assert_eq!(wait(Some(1_199)), Schedule::Wait { tier: ms(1000), ttl: ms(1199) });
        assert_eq!(wait(Some(1)), Schedule::Wait { tier: ms(1000), ttl: ms(1) });
        // Every hop ends no later than not_before, whatever waits ahead of it in its queue.
        for not_before in (1..60_000).step_by(997) {
            let mut now = 0;
            while let Schedule::Wait { tier, ttl } =
                on_schedule(&Control { deadline_ms: None, not_before_ms: Some(not_before) }, now, &tiers, 0.2)
            {
                let worst = ttl.max(tier.mul_f64(1.2)).as_millis() as u64;
                assert!(now + ttl.as_millis() as u64 <= not_before, "{not_before}: a hop past not_before");
                if now + worst > not_before {
                    assert!(tier == tiers[0], "{not_before}: only the last stretch may end late");
                    assert!(
                        now + worst - not_before <= 1200,
                        "{not_before}: late by at most the shortest tier's bound"
                    );
                }
                now += ttl.as_millis() as u64;
            }
            assert_eq!(now, not_before, "{not_before}: hops add up to the wait");
        }
    }

    #[test]
    fn a_runner_that_dies_counts_a_return_whether_or_not_the_broker_redelivered() {
        let fresh = facts(false, 0, Lane::Main);
        assert_eq!(on_death(&fresh, 3), Return::ToLane { returns: 1 });
        let worn = facts(false, 3, Lane::Returned);
        assert_eq!(on_death(&worn, 3), Return::Poison { returns: 4 });
    }
}
