//! The real consumer binary against jobs that never end and jobs that kill it: SIGTERM still
//! exits in time, abandoned threads stop the worker for its supervisor, and a job that aborts
//! its process is stopped after the configured deaths while innocent jobs that shared those
//! deaths all end as results.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rstest::rstest;
use warren_common::fault::FaultJob;
use warren_common::headers as h;
use warren_common::{Encoding, Job, JobResult, ResultStatus};
use warren_e2e::{ConfigDir, ConsumerProcess, DEADLINE, Vhost, collect_messages, queue_depth, settings_for, vhost};
use warren_infra::fields;
use warren_producer::{Producer, PublishOptions};

fn settings(vhost: &Vhost) -> warren_infra::Settings {
    let mut s = settings_for(vhost);
    s.routes.push(warren_infra::settings::Route::new("fault", "warren.fault"));
    s
}

fn job(f: FaultJob) -> Job {
    Job::from(f)
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_in_time_while_a_job_never_ends(vhost: Vhost) {
    let settings = settings(&vhost);
    let env = [
        ("WARREN__CONSUMER__KINDS", "fault"),
        ("WARREN__CONSUMER__POOL_SIZE", "1"),
        ("WARREN__CONSUMER__DRAIN_TIMEOUT_MS", "1000"),
        ("RUST_LOG", "info,warren_consumer=debug,lapin=error"),
    ];
    let consumer = ConsumerProcess::start(&vhost, &env).await;
    let producer = Producer::connect(settings.clone()).await.expect("producer");
    producer
        .publish(&job(FaultJob { hang: true, ..FaultJob::default() }), &PublishOptions::default())
        .await
        .expect("publish");
    consumer.wait_for_log("job started").await;
    let start = Instant::now();
    consumer.signal("TERM").await;
    let (code, log) = consumer.wait().await;
    let took = start.elapsed();
    println!("SIGTERM with a job that never ends: exit code {code:?} after {took:?} (drain timeout 1 s)");
    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    let back = collect_messages(&settings, "warren.fault", 1, DEADLINE).await;
    assert!(!back[0].redelivered, "handed back as a fresh copy, not left for the broker to redeliver");
    producer.close().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_threads_reaching_the_pool_size_stop_the_worker_for_its_supervisor(vhost: Vhost) {
    let settings = settings(&vhost);
    let config = ConfigDir::with_overlay(
        r#"
[[routes]]
kind = "fault"
queue = "warren.fault"
time_limit_ms = 300
retry = { max_attempts = 1, base_delay_ms = 100, max_delay_ms = 100, jitter = 0.0 }
"#,
    );
    let env = [
        ("WARREN_CONFIG_DIR", config.path()),
        ("WARREN__CONSUMER__KINDS", "fault"),
        ("WARREN__CONSUMER__POOL_SIZE", "2"),
    ];
    let consumer = ConsumerProcess::start(&vhost, &env).await;
    let producer = Producer::connect(settings.clone()).await.expect("producer");
    let start = Instant::now();
    for _ in 0..2 {
        producer
            .publish(&job(FaultJob { hang: true, ..FaultJob::default() }), &PublishOptions::default())
            .await
            .expect("publish");
    }
    let (code, log) = consumer.wait().await;
    println!("two stuck jobs on a pool of two: exit code {code:?} after {:?}", start.elapsed());
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("cannot be stopped"), "{log}");
    let dead = collect_messages(&settings, "warren.fault.dead", 2, DEADLINE).await;
    for d in &dead {
        assert_eq!(fields::get_str(d.properties.headers().as_ref(), h::ERROR_TYPE).as_deref(), Some("timeout"));
    }
    producer.close().await;
}

/// On quorum queues too, with the broker's own delivery limit below the deaths Warren needs to
/// call a job poison: the returned lane republishes each returned job as a fresh message, so the
/// broker's count never reaches its limit, and the verdict (and the dead letter's reason) is
/// Warren's.
#[rstest]
#[case::classic("classic")]
#[case::quorum_with_a_delivery_limit_of_2("quorum")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_kills_its_worker_is_stopped_while_innocent_jobs_all_end_as_results(
    #[case] queue_type: &str,
    vhost: Vhost,
) {
    const INNOCENT: usize = 12;
    const MAX_REDELIVERIES: usize = 2;
    let mut settings = settings(&vhost);
    if queue_type == "quorum" {
        settings.topology.queue_type = warren_infra::settings::QueueType::Quorum;
        settings.topology.delivery_limit = 2;
    }
    let env = [
        ("WARREN__CONSUMER__KINDS", "fault"),
        ("WARREN__CONSUMER__POOL_SIZE", "2"),
        ("WARREN__CONSUMER__PREFETCH", "8"),
        ("WARREN__CONSUMER__MAX_REDELIVERIES", "2"),
        ("WARREN__TOPOLOGY__QUEUE_TYPE", queue_type),
        ("WARREN__TOPOLOGY__DELIVERY_LIMIT", "2"),
    ];
    let producer = Producer::connect(settings.clone()).await.expect("producer");
    producer.declare_topology().await.expect("topology");
    // The poison first, so that the innocent jobs wait in the prefetch of the worker it kills.
    let poison = producer
        .publish(&job(FaultJob { abort: true, busy_ms: 50, ..FaultJob::default() }), &PublishOptions::default())
        .await
        .expect("publish")
        .job_id;
    let mut innocent = HashSet::new();
    for _ in 0..INNOCENT {
        let slow = job(FaultJob { busy_ms: 300, ..FaultJob::default() });
        innocent.insert(producer.publish(&slow, &PublishOptions::default()).await.expect("publish").job_id);
    }
    // A supervisor: restart the worker whenever it dies, until the poison is dead-lettered.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut deaths = 0;
    let survivor = loop {
        let mut consumer = ConsumerProcess::start(&vhost, &env).await;
        let stopped = loop {
            if consumer.exited() {
                break false;
            }
            if queue_depth(&settings, "warren.fault.dead").await >= 1 {
                break true;
            }
            assert!(Instant::now() < deadline, "{deaths} deaths and no dead letter yet");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if stopped {
            break consumer;
        }
        let (code, _) = consumer.wait().await;
        assert_eq!(code, None, "died by a signal (abort)");
        deaths += 1;
    };
    let dead = collect_messages(&settings, "warren.fault.dead", 1, DEADLINE).await;
    let headers = dead[0].properties.headers().as_ref();
    assert_eq!(dead[0].properties.message_id().as_ref().map(|s| s.to_string()), Some(poison));
    assert_eq!(fields::get_str(headers, h::DEAD_REASON).as_deref(), Some("redelivery_limit"));
    // The last worker finishes the innocent jobs (at least once: a job interrupted by a death
    // may answer twice).
    let mut answered = HashSet::new();
    while answered.len() < INNOCENT {
        for d in collect_messages(&settings, "warren.results", 1, DEADLINE).await {
            let r = JobResult::decode(&d.data, Encoding::Json).expect("result");
            assert_eq!(r.status, ResultStatus::Ok, "{:?}", r.error);
            answered.insert(r.job_id);
        }
    }
    survivor.signal("TERM").await;
    assert_eq!(survivor.wait().await.0, Some(0));
    assert_eq!(queue_depth(&settings, "warren.fault.dead").await, 0, "only the poison was dead-lettered");
    println!(
        "poison on {queue_type} queues: dead-lettered after {deaths} worker deaths (max_redeliveries \
         {MAX_REDELIVERIES}); {INNOCENT} innocent jobs held through those deaths all ended as results"
    );
    assert_eq!(deaths, MAX_REDELIVERIES + 1);
    assert_eq!(answered, innocent);
    producer.close().await;
}
