//! The pool bound: with pool size 2, never more than 2 jobs run at once, and 2 do.

use rstest::rstest;
use warren_common::checksum::ChecksumJob;
use warren_common::{Job, ResultStatus};
use warren_e2e::{DEADLINE, Vhost, fleet_and_producer, settings_for, vhost, want_result};

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_of_two_runs_two_at_a_time(vhost: Vhost) {
    let mut settings = settings_for(&vhost);
    settings.consumer.pool_size = 2;
    // A generous prefetch, so that only the pool can be what bounds concurrency.
    settings.consumer.prefetch = 10;
    let (fleet, producer) = fleet_and_producer(&settings).await;
    assert_eq!((fleet.pool_size, fleet.prefetch), (2, 10));
    let opts = want_result();
    // Each job hashes 64 KiB x 4000 = 256 MiB: tens of milliseconds, long enough to overlap.
    let job = Job::from(ChecksumJob { data: vec![7; 64 * 1024], rounds: 4000 });
    let mut tickets = Vec::new();
    for _ in 0..8 {
        tickets.push(producer.publish(&job, &opts).await.expect("publish"));
    }
    let mut spans = Vec::new();
    for t in tickets {
        let r = t.wait(DEADLINE).await.expect("result");
        assert_eq!(r.status, ResultStatus::Ok);
        spans.push((r.timing.started_at_us, r.timing.finished_at_us));
    }
    // Sweep: +1 at each start, -1 at each end; an end sorts before a start at the same instant
    // (a slot is freed before the next job takes it).
    let mut events: Vec<(u64, i32)> = spans.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    events.sort_by_key(|&(t, d)| (t, d));
    let (mut now, mut peak) = (0, 0);
    for (_, d) in events {
        now += d;
        peak = peak.max(now);
    }
    println!("pool bound: 8 jobs, peak concurrency {peak} (pool 2)");
    assert_eq!(peak, 2, "spans: {spans:?}");
    producer.close().await;
    fleet.stop().await;
}
