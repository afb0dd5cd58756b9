//! The real consumer binary under process faults: kill -9 with jobs in flight loses nothing;
//! SIGTERM finishes in-flight jobs, leaves the rest queued and exits 0.

use std::collections::HashMap;

use rstest::rstest;
use warren_common::fault::FaultJob;
use warren_common::{Job, ResultStatus};
use warren_e2e::{ConsumerProcess, DEADLINE, Vhost, collect_messages, queue_depth, settings_for, vhost};
use warren_producer::{Producer, PublishOptions};

/// A job that keeps its worker busy for `ms` (the `fault` route of config/test.toml).
fn slow_job(ms: u64) -> Job {
    Job::from(FaultJob { busy_ms: ms, ..FaultJob::default() })
}

/// The settings the binaries run with here: config/ with the WARREN_ENV=test overlay.
fn test_env_settings(vhost: &Vhost) -> warren_infra::Settings {
    let mut s = settings_for(vhost);
    s.routes.push(warren_infra::settings::Route::new("fault", "warren.fault"));
    s
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_jobs_in_flight_loses_nothing(vhost: Vhost) {
    const N: usize = 40;
    let settings = test_env_settings(&vhost);
    let env = [("WARREN__CONSUMER__POOL_SIZE", "2"), ("WARREN__CONSUMER__PREFETCH", "6")];
    let first = ConsumerProcess::start(&vhost, &env).await;
    let producer = Producer::connect(settings.clone()).await.expect("producer");
    // No reply_to: results go to the results queue, where every copy (duplicates too) is seen.
    let mut ids = Vec::new();
    for _ in 0..N {
        ids.push(producer.publish(&slow_job(100), &PublishOptions::default()).await.expect("publish").job_id);
    }
    let mut results: Vec<lapin::message::Delivery> = collect_messages(&settings, "warren.results", 5, DEADLINE).await;
    first.signal("KILL").await;
    let (code, _) = first.wait().await;
    assert_eq!(code, None, "killed by a signal");

    let second = ConsumerProcess::start(&vhost, &env).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut ok = 0;
    fn record(seen: &mut HashMap<String, usize>, d: &lapin::message::Delivery) {
        let id = d.properties.message_id().as_ref().expect("job id").to_string();
        *seen.entry(id).or_default() += 1;
    }
    results.iter().for_each(|d| record(&mut seen, d));
    while seen.len() < N {
        let more = collect_messages(&settings, "warren.results", 1, DEADLINE).await;
        more.iter().for_each(|d| record(&mut seen, d));
        results.extend(more);
    }
    for d in &results {
        let r = warren_common::JobResult::decode(&d.data, warren_common::Encoding::Json).expect("result");
        ok += usize::from(r.status == ResultStatus::Ok);
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    println!("kill -9: {N} jobs, {} results ({duplicates} duplicates marked by job id), 0 dead letters", results.len());
    assert!(ids.iter().all(|id| seen.contains_key(id)), "every job has a result");
    assert_eq!(ok, results.len(), "every result is a success");
    assert_eq!(queue_depth(&settings, "warren.fault.dead").await, 0);
    second.signal("TERM").await;
    assert_eq!(second.wait().await.0, Some(0));
    producer.close().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_jobs_and_leaves_the_rest_queued(vhost: Vhost) {
    const N: u32 = 12;
    let settings = test_env_settings(&vhost);
    let env = [("WARREN__CONSUMER__POOL_SIZE", "2"), ("WARREN__CONSUMER__PREFETCH", "2")];
    let consumer = ConsumerProcess::start(&vhost, &env).await;
    let producer = Producer::connect(settings.clone()).await.expect("producer");
    for _ in 0..N {
        producer.publish(&slow_job(300), &PublishOptions::default()).await.expect("publish");
    }
    // Once a result is out, the next jobs are in flight.
    let _first = collect_messages(&settings, "warren.results", 1, DEADLINE).await;
    consumer.signal("TERM").await;
    let (code, log) = consumer.wait().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("draining"), "{log}");
    let done = 1 + queue_depth(&settings, "warren.results").await;
    let queued = queue_depth(&settings, "warren.fault").await;
    println!("SIGTERM: {done} jobs finished and acked, {queued} left in the queue, exit code 0");
    assert_eq!(done + queued, N, "every job is either done or still queued");
    assert!(queued > 0, "SIGTERM came before the queue was empty");
    assert_eq!(queue_depth(&settings, "warren.fault.dead").await, 0);
    producer.close().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once(vhost: Vhost) {
    let settings = test_env_settings(&vhost);
    let env = [("WARREN__CONSUMER__DRAIN_TIMEOUT_MS", "60000"), ("RUST_LOG", "info,warren_consumer=debug,lapin=error")];
    let consumer = ConsumerProcess::start(&vhost, &env).await;
    let producer = Producer::connect(settings.clone()).await.expect("producer");
    producer.publish(&slow_job(20_000), &PublishOptions::default()).await.expect("publish");
    consumer.wait_for_log("job started").await;
    let start = std::time::Instant::now();
    consumer.signal("TERM").await;
    consumer.wait_for_log("shutdown requested").await;
    consumer.signal("INT").await;
    let (code, log) = consumer.wait().await;
    println!("second signal: exit code {code:?} after {:?} (the running job needed 20 s)", start.elapsed());
    assert_eq!(code, Some(130), "{log}");
    assert!(start.elapsed() < std::time::Duration::from_secs(15));
    // The job was not lost: it is back in the queue.
    assert_eq!(queue_depth(&settings, "warren.fault").await, 1);
    producer.close().await;
}
