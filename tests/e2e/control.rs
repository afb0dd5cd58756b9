//! Job control against the real broker and worker: deadlines, priorities, delayed jobs and
//! cancellation by id (docs/contract.md, "Job control").

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use rstest::rstest;
use warren_common::checksum::ChecksumJob;
use warren_common::fault::FaultJob;
use warren_common::headers as h;
use warren_common::retry::RetryPolicy;
use warren_common::{Encoding, Job, JobResult, ResultStatus};
use warren_e2e::{
    DEADLINE, Fleet, Vhost, collect_messages, fleet_and_producer, queue_depth, settings_for, vhost, want_result,
};
use warren_infra::settings::Route;
use warren_infra::{Settings, fields};
use warren_producer::{Producer, PublishOptions, unix_ms};

fn checksum(i: u32) -> Job {
    Job::from(ChecksumJob { data: i.to_le_bytes().to_vec(), rounds: 1 })
}

fn with_fault_route(vhost: &Vhost, retry: RetryPolicy) -> Settings {
    let mut s = settings_for(vhost);
    s.routes.push(Route { time_limit_ms: 20_000, retry: Some(retry), ..Route::new("fault", "warren.fault") });
    s
}

fn error_type(r: &JobResult) -> &str {
    r.error.as_ref().map_or("", |e| e.error_type.as_str())
}

/// The dead letter of `queue` (one), its reason and error type.
async fn dead_letter_of(settings: &Settings, queue: &str) -> (String, String, String) {
    let dead = collect_messages(settings, &settings.dead_queue(queue), 1, DEADLINE).await;
    let headers = dead[0].properties.headers().as_ref();
    let id = dead[0].properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default();
    let reason = fields::get_str(headers, h::DEAD_REASON).unwrap_or_default();
    let error_type = fields::get_str(headers, h::ERROR_TYPE).unwrap_or_default();
    (id, reason, error_type)
}

/// A job whose deadline passed while it was queued is never started: it is answered
/// `deadline_exceeded` and dead-lettered with that reason, in either encoding; one with time
/// left runs.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_deadline_is_not_started_but_dead_lettered(
    vhost: Vhost,
    #[values(Encoding::Json, Encoding::Bincode)] encoding: Encoding,
) {
    let settings = settings_for(&vhost);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let opts = PublishOptions { encoding: Some(encoding), ..want_result() };
    let late = producer.publish(&checksum(1), &opts.clone().deadline(SystemTime::now())).await.expect("publish");
    let timely = producer.publish(&checksum(2), &opts.clone().timeout(DEADLINE)).await.expect("publish");
    let late_id = late.job_id.clone();
    let late = late.wait(DEADLINE).await.expect("answered");
    assert_eq!((late.status, error_type(&late)), (ResultStatus::Error, "deadline_exceeded"), "{late:?}");
    assert_eq!(late.timing.started_at_us, late.timing.finished_at_us, "never started: {late:?}");
    let timely = timely.wait(DEADLINE).await.expect("answered");
    assert_eq!(timely.status, ResultStatus::Ok, "{timely:?}");
    let (id, reason, error) = dead_letter_of(&settings, "warren.checksum").await;
    assert_eq!(
        (id.as_str(), reason.as_str(), error.as_str()),
        (late_id.as_str(), "deadline_exceeded", "deadline_exceeded")
    );
    producer.close().await;
    fleet.stop().await;
}

/// A transient failure whose next attempt would start past the deadline ends the job as
/// `deadline_exceeded` at once (attempt 0), instead of a retry that would run too late; and a
/// running job is given up at its deadline, not at its route's 20 s time limit.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_a_retry_nor_a_run_goes_past_the_deadline(vhost: Vhost) {
    let retry = RetryPolicy { max_attempts: 5, base_delay_ms: 2_000, max_delay_ms: 2_000, jitter: 0.0 };
    let settings = with_fault_route(&vhost, retry);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let failing = Job::from(FaultJob { transient_failures: 3, ..FaultJob::default() });
    let opts = want_result().timeout(Duration::from_millis(1_500));
    let r = producer.publish(&failing, &opts).await.expect("publish").wait(DEADLINE).await.expect("answered");
    assert_eq!((error_type(&r), r.attempt), ("deadline_exceeded", 0), "{r:?}");
    // With time for one retry (2 s) but not two, it ends after attempt 1.
    let opts = want_result().timeout(Duration::from_millis(3_000));
    let r = producer.publish(&failing, &opts).await.expect("publish").wait(DEADLINE).await.expect("answered");
    assert_eq!((error_type(&r), r.attempt), ("deadline_exceeded", 1), "{r:?}");
    // A 10 s job with 1 s left is cut at about 1 s.
    let slow = Job::from(FaultJob { busy_ms: 10_000, ..FaultJob::default() });
    let started = std::time::Instant::now();
    let opts = want_result().timeout(Duration::from_millis(1_000));
    let r = producer.publish(&slow, &opts).await.expect("publish").wait(DEADLINE).await.expect("answered");
    let took = started.elapsed();
    assert_eq!(error_type(&r), "deadline_exceeded", "{r:?}");
    assert!(took < Duration::from_secs(5), "given up at its deadline, not its time limit: {took:?}");
    producer.close().await;
    fleet.stop().await;
}

/// Priorities: 2,000 low-priority jobs queued, then 50 high-priority ones; the worker starts
/// after. Every high-priority job is answered before a tenth of the low backlog is.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_jobs_overtake_a_low_priority_backlog(vhost: Vhost) {
    let mut settings = settings_for(&vhost);
    warren_e2e::route(&mut settings, "checksum").max_priority = 10;
    let mut producer = Producer::connect(settings.clone()).await.expect("producer");
    producer.declare_topology().await.expect("topology");
    producer.enable_replies().await.expect("replies");
    let (mut low, mut high) = (Vec::new(), Vec::new());
    for i in 0..2_000 {
        low.push(producer.publish(&checksum(i), &want_result().priority(1)).await.expect("publish"));
    }
    for i in 0..50 {
        high.push(producer.publish(&checksum(10_000 + i), &want_result().priority(9)).await.expect("publish"));
    }
    let fleet = Fleet::start(settings.clone()).await;
    // Each result's place in the order results were answered (the worker's finish time).
    let mut finished: Vec<(u64, bool)> = Vec::new();
    for (tickets, is_high) in [(high, true), (low, false)] {
        for t in tickets {
            let r = t.wait(DEADLINE).await.expect("answered");
            assert_eq!(r.status, ResultStatus::Ok, "{r:?}");
            finished.push((r.timing.finished_at_us, is_high));
        }
    }
    finished.sort();
    let last_high = finished.iter().rposition(|(_, h)| *h).expect("high jobs");
    let low_before = finished[..last_high].iter().filter(|(_, h)| !h).count();
    println!(
        "priority: the last of 50 high-priority jobs finished after {low_before} of 2,000 low-priority ones \
         (prefetch {})",
        fleet.prefetch
    );
    assert!(low_before < 200, "every high-priority job answered before a tenth of the backlog: {low_before}");
    producer.close().await;
    fleet.stop().await;
}

/// RabbitMQ 3.10's quorum queues have no priorities: a route asking for them stops start-up
/// with the reason, before anything is declared.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_on_quorum_queues_stop_start_up_with_the_reason(vhost: Vhost) {
    let mut settings = settings_for(&vhost);
    settings.topology.queue_type = warren_infra::settings::QueueType::Quorum;
    warren_e2e::route(&mut settings, "checksum").max_priority = 5;
    let Err(err) = warren_consumer::builtin::worker().build(settings).await else { panic!("start-up went on") };
    let said = format!("{err:#}");
    assert!(said.contains("max_priority") && said.contains("quorum"), "{said}");
}

/// 1,000 jobs delayed 2-20 s among normal traffic: none runs early, none is held by a worker
/// while it waits (they sit in delay queues), and each runs within the tolerance after its
/// time (docs/contract.md: the shortest delay tier plus its jitter, 1.2 s by default).
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_wait_in_delay_queues_and_run_on_time(vhost: Vhost) {
    let settings = settings_for(&vhost);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let mut delayed = Vec::new();
    let mut normal = Vec::new();
    for i in 0..1_000u32 {
        let delay = Duration::from_millis(2_000 + u64::from(i) * 18);
        let opts = want_result().delay(delay);
        let not_before = opts.control.not_before_ms.expect("set");
        delayed.push((producer.publish(&checksum(i), &opts).await.expect("publish"), not_before));
        if i % 4 == 0 {
            normal.push(producer.publish(&checksum(100_000 + i), &want_result()).await.expect("publish"));
        }
    }
    for t in normal {
        assert_eq!(t.wait(DEADLINE).await.expect("answered").status, ResultStatus::Ok);
    }
    // While they wait, the delay queues hold them: at most the consumers' prefetch is in
    // transit between two hops at any moment.
    let tiers: Vec<String> = settings
        .delay_tiers(settings.route("checksum").expect("route"))
        .into_iter()
        .map(|t| settings.retry_queue("warren.checksum", t))
        .collect();
    // The queues are counted one after the other, so a job moving between two hops may be
    // missed once: a bound of a few times the prefetch. The work queue's ready jobs are
    // counted too (they are in no worker either).
    let in_transit_bound = u32::from(fleet.prefetch) * 4;
    let mut samples = Vec::new();
    for _ in 0..5 {
        let mut waiting = queue_depth(&settings, "warren.checksum").await;
        for q in &tiers {
            waiting += queue_depth(&settings, q).await;
        }
        let now = unix_ms(SystemTime::now());
        let due_later = delayed.iter().filter(|(_, nb)| *nb > now + 1_500).count() as u32;
        samples.push((due_later, waiting));
        assert!(
            waiting + in_transit_bound >= due_later,
            "{due_later} jobs not due for 1.5 s, only {waiting} in the delay queues"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut lateness_ms = Vec::new();
    for (t, not_before) in delayed {
        let r = t.wait(DEADLINE).await.expect("answered");
        assert_eq!(r.status, ResultStatus::Ok, "{r:?}");
        let started_ms = r.timing.started_at_us / 1000;
        assert!(started_ms >= not_before, "started {} ms early", not_before - started_ms);
        lateness_ms.push(started_ms - not_before);
    }
    lateness_ms.sort_unstable();
    let at = |q: f64| lateness_ms[((lateness_ms.len() - 1) as f64 * q) as usize];
    println!(
        "delayed jobs: 1,000 delayed 2-20 s; late by p50 {} ms, p99 {} ms, max {} ms; (due later, in delay queues) \
         samples {samples:?}",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    assert!(at(1.0) <= 2_500, "the tolerance (1.2 s + the worker's own latency): max {} ms late", at(1.0));
    producer.close().await;
    fleet.stop().await;
}

/// A delayed job outlives the worker: stopped while the job waits, a new worker runs it, on
/// time and not early.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_survives_a_worker_restart(vhost: Vhost) {
    let settings = settings_for(&vhost);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let opts = want_result().delay(Duration::from_millis(4_000));
    let not_before = opts.control.not_before_ms.expect("set");
    let ticket = producer.publish(&checksum(7), &opts).await.expect("publish");
    // It is in a delay queue once the worker has looked at it.
    let delay_queue = settings.retry_queue("warren.checksum", Duration::from_millis(1_000));
    warren_e2e::eventually("the job waits in a delay queue", || async {
        queue_depth(&settings, &delay_queue).await == 1
    })
    .await;
    fleet.stop().await;
    let fleet = Fleet::start(settings.clone()).await;
    let r = ticket.wait(DEADLINE).await.expect("answered by the new worker");
    assert_eq!(r.status, ResultStatus::Ok, "{r:?}");
    assert!(r.timing.started_at_us / 1000 >= not_before, "not early");
    producer.close().await;
    fleet.stop().await;
}

/// Cancellation: a job queued behind a backlog and cancelled while the backlog drains is
/// answered `cancelled` and never started, the backlog around it runs; an unknown id is no
/// error and changes nothing; a delayed job cancelled while it waits is answered `cancelled`.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_never_starts_and_is_answered_cancelled(vhost: Vhost) {
    let retry = RetryPolicy { max_attempts: 1, base_delay_ms: 100, max_delay_ms: 100, jitter: 0.0 };
    let settings = with_fault_route(&vhost, retry);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    // About 4 s of work for the worker's pool, the target last.
    let busy = Job::from(FaultJob { busy_ms: 20, ..FaultJob::default() });
    let mut backlog = Vec::new();
    for _ in 0..(200 * fleet.pool_size) {
        backlog.push(producer.publish(&busy, &want_result()).await.expect("publish"));
    }
    let quick = Job::from(FaultJob::default());
    let target = producer.publish(&quick, &want_result()).await.expect("publish");
    let delayed = producer.publish(&quick, &want_result().delay(Duration::from_secs(3))).await.expect("publish");
    producer.cancel(&[&target.job_id, &delayed.job_id, "no-such-job"]).await.expect("cancel recorded");
    // The two were published last: with two messages still ready, both are.
    let waiting = queue_depth(&settings, "warren.fault").await;
    assert!(waiting >= 2, "the target was still queued behind the backlog when cancelled ({waiting} ready)");
    for t in backlog {
        assert_eq!(t.wait(DEADLINE).await.expect("answered").status, ResultStatus::Ok);
    }
    for t in [target, delayed] {
        let r = t.wait(DEADLINE).await.expect("answered");
        assert_eq!((r.status, error_type(&r)), (ResultStatus::Error, "cancelled"), "{r:?}");
        assert_eq!(r.timing.started_at_us, r.timing.finished_at_us, "never started: {r:?}");
    }
    let dead = collect_messages(&settings, "warren.fault.dead", 2, DEADLINE).await;
    for d in &dead {
        let reason = fields::get_str(d.properties.headers().as_ref(), h::DEAD_REASON);
        assert_eq!(reason.as_deref(), Some("cancelled"));
    }
    // The unknown id changed nothing.
    warren_e2e::answer_checksum_jobs(&producer, 20).await;
    producer.close().await;
    fleet.stop().await;
}

/// A worker that starts after the cancel reads it too: jobs queued, one cancelled while no
/// worker runs, a worker that consumes part of the backlog and is stopped, then another that
/// drains it. The cancelled job is never started by either.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_holds_for_workers_started_after_it(vhost: Vhost) {
    let settings = settings_for(&vhost);
    let mut producer = Producer::connect(settings.clone()).await.expect("producer");
    producer.declare_topology().await.expect("topology");
    producer.enable_replies().await.expect("replies");
    // The target first: a worker that took jobs before it had read the cancel would run it.
    let target = producer.publish(&checksum(99_999), &want_result()).await.expect("publish");
    let target_id = target.job_id.clone();
    let mut tickets = Vec::new();
    for i in 0..499 {
        tickets.push(producer.publish(&checksum(i), &want_result()).await.expect("publish"));
    }
    producer.cancel(&[&target_id]).await.expect("cancel");
    let first = Fleet::start(settings.clone()).await;
    first.stop().await;
    let second = Fleet::start(settings.clone()).await;
    let mut ok = 0;
    for t in tickets {
        ok += usize::from(t.wait(DEADLINE).await.expect("answered").status == ResultStatus::Ok);
    }
    assert_eq!(ok, 499);
    let r = target.wait(DEADLINE).await.expect("answered");
    assert_eq!(error_type(&r), "cancelled", "{r:?}");
    producer.close().await;
    second.stop().await;
}

/// A running job is told through its context: one that checks stops early with `cancelled`;
/// one that does not runs to its end and its result is delivered as usual.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_is_told_and_its_result_still_comes(vhost: Vhost) {
    let retry = RetryPolicy { max_attempts: 1, base_delay_ms: 100, max_delay_ms: 100, jitter: 0.0 };
    let settings = with_fault_route(&vhost, retry);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let metrics = fleet.metrics_addr.expect("metrics");
    let running = || warren_e2e::scrape::Scrape::take(metrics).value("warren_jobs_in_flight", &[]);
    let mut results = HashMap::new();
    for stops in [true, false] {
        let job = Job::from(FaultJob { busy_ms: 3_000, stop_when_cancelled: stops, ..FaultJob::default() });
        let ticket = producer.publish(&job, &want_result()).await.expect("publish");
        warren_e2e::eventually("the job runs", || async { tokio::task::block_in_place(running) >= 1.0 }).await;
        producer.cancel(&[&ticket.job_id]).await.expect("cancel");
        let r = ticket.wait(DEADLINE).await.expect("answered");
        let ran_ms = (r.timing.finished_at_us - r.timing.started_at_us) / 1000;
        results.insert(stops, (r.status, error_type(&r).to_owned(), ran_ms));
    }
    println!("running jobs cancelled: {results:?}");
    let (status, error, ran_ms) = &results[&true];
    assert_eq!((*status, error.as_str()), (ResultStatus::Error, "cancelled"));
    assert!(*ran_ms < 3_000, "stopped early: {ran_ms} ms");
    let (status, _, ran_ms) = &results[&false];
    assert_eq!(*status, ResultStatus::Ok, "a job that ignores the cancel answers as usual");
    assert!(*ran_ms >= 3_000);
    producer.close().await;
    fleet.stop().await;
}

/// The checks hold at the moment a job starts, not only when it arrives: with one pool slot
/// busy, a job waiting in the worker's prefetch that is cancelled meanwhile, and one whose
/// deadline passes meanwhile, never start.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_or_expired_while_it_waits_for_a_slot_never_starts(vhost: Vhost) {
    let retry = RetryPolicy { max_attempts: 1, base_delay_ms: 100, max_delay_ms: 100, jitter: 0.0 };
    let mut settings = with_fault_route(&vhost, retry);
    settings.consumer.pool_size = 1;
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let busy = Job::from(FaultJob { busy_ms: 3_000, ..FaultJob::default() });
    let quick = Job::from(FaultJob::default());
    let first = producer.publish(&busy, &want_result()).await.expect("publish");
    let cancelled = producer.publish(&quick, &want_result()).await.expect("publish");
    let expiring = producer.publish(&quick, &want_result().timeout(Duration::from_millis(1_000))).await.expect("p");
    // All three are in the worker (none ready in the queue), the first one running.
    warren_e2e::eventually("the worker holds the three jobs", || async {
        queue_depth(&settings, "warren.fault").await == 0
    })
    .await;
    producer.cancel(&[&cancelled.job_id]).await.expect("cancel");
    assert_eq!(first.wait(DEADLINE).await.expect("answered").status, ResultStatus::Ok);
    for (ticket, expected) in [(cancelled, "cancelled"), (expiring, "deadline_exceeded")] {
        let r = ticket.wait(DEADLINE).await.expect("answered");
        assert_eq!(error_type(&r), expected, "{r:?}");
        assert_eq!(r.timing.started_at_us, r.timing.finished_at_us, "never started: {r:?}");
    }
    producer.close().await;
    fleet.stop().await;
}
