//! Tests that disturb the whole broker (restart it, raise its memory alarm), so they cannot
//! share it with anything else: `cargo test` runs test binaries one after another, so nothing
//! else runs meanwhile, and the tests of this binary take turns through [`BROKER`]. Not for
//! `cargo nextest`, which would run binaries side by side.

use std::time::Duration;

use rstest::rstest;
use tokio::process::Command;
use warren_common::checksum::ChecksumJob;
use warren_common::{Job, ResultStatus};
use warren_e2e::{DEADLINE, Vhost, broker, fleet_and_producer, settings_for, vhost, want_result};

async fn readyz(addr: std::net::SocketAddr) -> u16 {
    tokio::task::block_in_place(|| warren_e2e::scrape::get(addr, "/readyz").0)
}

async fn await_readyz(addr: std::net::SocketAddr, want: u16) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while readyz(addr).await != want {
        assert!(std::time::Instant::now() < deadline, "/readyz never answered {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl").args(args).output().await.expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// One test at a time may disturb the broker.
static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Raises the broker's memory alarm (a watermark of one byte) until dropped, which restores the
/// watermark it found, even when the test fails.
struct MemoryAlarm(String);

impl MemoryAlarm {
    async fn raise() -> Self {
        let out = Command::new("rabbitmqctl")
            .args(["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."])
            .output()
            .await
            .expect("rabbitmqctl runs");
        let found = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // A relative watermark prints as a float, an absolute one as {absolute, N}.
        let restore = match found.strip_prefix("{absolute,").and_then(|v| v.strip_suffix('}')) {
            Some(bytes) => format!("absolute {}", bytes.trim()),
            None if found.parse::<f64>().is_ok() => found,
            None => "0.4".to_owned(),
        };
        rabbitmqctl(&["set_vm_memory_high_watermark", "absolute", "1"]).await;
        let deadline = std::time::Instant::now() + DEADLINE;
        while !alarms().await.to_lowercase().contains("memory") {
            assert!(std::time::Instant::now() < deadline, "the memory alarm never went off");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self(restore)
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        let mut args = vec!["set_vm_memory_high_watermark"];
        args.extend(self.0.split_whitespace());
        let restored = std::process::Command::new("rabbitmqctl").args(&args).status();
        assert!(restored.is_ok_and(|s| s.success()), "restoring the memory watermark {}", self.0);
    }
}

async fn alarms() -> String {
    let out = Command::new("rabbitmq-diagnostics").args(["-q", "alarms"]).output().await.expect("diagnostics runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_while_the_broker_blocks_us_fails_within_the_confirm_timeout(vhost: Vhost) {
    let _turn = BROKER.lock().await;
    let settings = settings_for(&vhost);
    let conn = std::sync::Arc::new(warren_infra::connect(&settings.broker, "test-blocked").await.expect("connect"));
    let timeout = Duration::from_secs(2);
    let publisher = warren_infra::Publisher::open(conn.clone(), timeout, 2).await.expect("publisher");
    let raw = conn.create_channel().await.expect("channel");
    raw.confirm_select(Default::default()).await.expect("confirms");
    let alarm = MemoryAlarm::raise().await;
    let props = lapin::BasicProperties::default().with_delivery_mode(2);
    // What a caller that bounds only the confirm would see: does sending alone return?
    let send = raw.basic_publish("".into(), "nowhere".into(), Default::default(), b"x", props.clone());
    let sent = tokio::time::timeout(Duration::from_secs(3), send).await.is_ok();
    println!("blocked connection: lapin's basic_publish alone returned within 3 s: {sent}");
    let start = std::time::Instant::now();
    let published = tokio::time::timeout(DEADLINE, publisher.publish("", "nowhere", b"x", props, true))
        .await
        .expect("the publish must not hang while the broker blocks the connection");
    let took = start.elapsed();
    drop(alarm);
    println!("blocked connection: publish ended after {took:?} with {published:?} (confirm timeout {timeout:?})");
    assert!(matches!(published, Err(warren_infra::PublishError::ConfirmTimeout(_))), "{published:?}");
    assert!(took < timeout + Duration::from_secs(2), "{took:?}");
    let deadline = std::time::Instant::now() + DEADLINE;
    while alarms().await.to_lowercase().contains("memory alarm on") {
        assert!(std::time::Instant::now() < deadline, "the memory alarm did not clear");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.close(200, "done".into())).await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_run_loses_nothing(vhost: Vhost) {
    let _turn = BROKER.lock().await;
    const N: usize = 30;
    let mut settings = settings_for(&vhost);
    settings.broker.reconnect_min_ms = 100;
    settings.broker.reconnect_max_ms = 1000;
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let producer = std::sync::Arc::new(producer);
    let job = |i: usize| Job::from(ChecksumJob { data: (i as u32).to_le_bytes().to_vec(), rounds: 1 });
    // The first half before the restart; some may still be in flight when the broker stops.
    let mut tickets = Vec::new();
    for i in 0..N / 2 {
        tickets.push(producer.publish(&job(i), &want_result()).await.expect("confirmed before the restart"));
    }
    let metrics = fleet.metrics_addr.expect("metrics served");
    assert_eq!(readyz(metrics).await, 200);
    rabbitmqctl(&["stop_app"]).await;
    await_readyz(metrics, 503).await;
    // The second half is published while the broker is down: each publish waits, reconnecting,
    // until the broker is back and confirms it.
    let publishing = tokio::spawn({
        let producer = producer.clone();
        async move {
            let mut tickets = Vec::new();
            for i in N / 2..N {
                tickets.push(
                    producer.publish(&job(i), &want_result()).await.expect("every publish is confirmed in the end"),
                );
            }
            tickets
        }
    });
    rabbitmqctl(&["start_app"]).await;
    rabbitmqctl(&["await_startup"]).await;
    await_readyz(metrics, 200).await;
    println!("broker restart: /readyz went 200 -> 503 while the broker was down -> 200 after it returned");
    tickets.extend(tokio::time::timeout(DEADLINE, publishing).await.expect("publishing finishes").expect("task"));
    let mut ids = std::collections::HashSet::new();
    for t in tickets {
        let r = t.wait(DEADLINE).await.expect("every job answers after the restart");
        assert_eq!(r.status, ResultStatus::Ok);
        ids.insert(r.job_id);
    }
    let (consumer_reconnects, producer_reconnects) = (fleet.health.reconnects(), producer.reconnects().await);
    println!(
        "broker restart: {N} jobs, {} answered; consumer reconnected {consumer_reconnects}x, producer {producer_reconnects}x",
        ids.len()
    );
    assert_eq!(ids.len(), N);
    assert!(consumer_reconnects >= 1 && producer_reconnects >= 1);
    // The vhost is deleted through the management API, which restarts with the broker.
    broker::wait_for_management(DEADLINE);
    match std::sync::Arc::try_unwrap(producer) {
        Ok(p) => p.close().await,
        Err(_) => panic!("publisher task still holds the producer"),
    }
    fleet.stop().await;
}

/// `consumer.events_persistent`: event messages waiting in a queue outlive a broker restart
/// when persistent; transient ones (the default, cheaper for the broker when nobody reads
/// them: docs/benchmarks.md) are lost with it, as docs/contract.md says.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_events_outlive_a_broker_restart_and_transient_ones_do_not(vhost: Vhost) {
    use warren_e2e::{eventually, listen_to_every_event, queue_depth};
    let _turn = BROKER.lock().await;
    let transient = Vhost::create("events-transient");
    let mut runs = Vec::new();
    for (v, persistent) in [(&vhost, true), (&transient, false)] {
        let mut settings = settings_for(v);
        settings.consumer.events_persistent = persistent;
        let (fleet, producer) = fleet_and_producer(&settings).await;
        let (conn, _) = listen_to_every_event(&settings, "test.events").await;
        let _ = conn.close(200, "bound".into()).await;
        warren_e2e::answer_checksum_jobs(&producer, 1).await;
        // Its three events (received, started, succeeded) are in the queue.
        let metrics = fleet.metrics_addr.expect("metrics served");
        let published =
            || warren_e2e::scrape::Scrape::take(metrics).value("warren_events_total", &[("outcome", "published")]);
        eventually("the job's events are published", || async { tokio::task::block_in_place(published) >= 3.0 }).await;
        producer.close().await;
        fleet.stop().await;
        let held = queue_depth(&settings, "test.events").await;
        assert!(held > 0, "the job's event messages are in the queue");
        runs.push((settings, held));
    }
    rabbitmqctl(&["stop_app"]).await;
    rabbitmqctl(&["start_app"]).await;
    rabbitmqctl(&["await_startup"]).await;
    let (persistent_after, transient_after) =
        (queue_depth(&runs[0].0, "test.events").await, queue_depth(&runs[1].0, "test.events").await);
    println!(
        "broker restart: persistent event messages {} -> {persistent_after}, transient {} -> {transient_after}",
        runs[0].1, runs[1].1
    );
    assert_eq!(persistent_after, runs[0].1, "persistent events outlive the restart");
    assert_eq!(transient_after, 0, "transient events are lost with it");
    // The vhosts are deleted through the management API, which restarts with the broker.
    broker::wait_for_management(DEADLINE);
}

/// A delayed job waits in a delay queue as a persistent message: it outlives a broker restart
/// with no worker running, and the worker started after runs it, not before its time.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_survives_a_broker_restart(vhost: Vhost) {
    use warren_e2e::{Fleet, eventually, queue_depth};
    let _turn = BROKER.lock().await;
    let settings = settings_for(&vhost);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let job = warren_common::Job::from(warren_common::checksum::ChecksumJob { data: b"d".to_vec(), rounds: 1 });
    // No reply_to: the result goes to the results queue, which outlives the producer.
    let opts = warren_producer::PublishOptions::default().delay(Duration::from_secs(25));
    let not_before = opts.control.not_before_ms.expect("set");
    let job_id = producer.publish(&job, &opts).await.expect("publish").job_id;
    // Its first hop: the 10 s tier (10 s x 1.2 ends before 25 s).
    let tier = settings.retry_queue("warren.checksum", Duration::from_secs(10));
    eventually("the job waits in its delay queue", || async { queue_depth(&settings, &tier).await == 1 }).await;
    producer.close().await;
    fleet.stop().await;
    rabbitmqctl(&["stop_app"]).await;
    rabbitmqctl(&["start_app"]).await;
    rabbitmqctl(&["await_startup"]).await;
    let fleet = Fleet::start(settings.clone()).await;
    let answered = warren_e2e::collect_messages(&settings, "warren.results", 1, Duration::from_secs(90)).await;
    let result = warren_common::JobResult::decode(&answered[0].data, warren_common::Encoding::Json).expect("result");
    println!(
        "delayed job across a broker restart: started {} ms after not_before",
        result.timing.started_at_us / 1000 - not_before
    );
    assert_eq!((result.job_id.as_str(), result.status), (job_id.as_str(), warren_common::ResultStatus::Ok));
    assert!(result.timing.started_at_us / 1000 >= not_before, "not early");
    fleet.stop().await;
    broker::wait_for_management(DEADLINE);
}

/// Issue 24, item 5: the drain timeout must not cut a settle in half. A job fails once (its
/// retry copy must replace it), the memory alarm holds that copy's confirm, and SIGTERM comes
/// with a drain timeout of 1 s. Cutting the settle then (as the drain did) handed the job back
/// beside its retry copy, and the broker stored both once the alarm cleared: two copies of one
/// job. Once begun, a settle finishes (bounded by the confirm timeout): one copy.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_never_cuts_a_settle_in_half(vhost: Vhost) {
    use warren_common::fault::FaultJob;
    use warren_e2e::{ConfigDir, ConsumerProcess, queue_depth};
    let _turn = BROKER.lock().await;
    let mut settings = settings_for(&vhost);
    settings.routes.push(warren_infra::settings::Route::new("fault", "warren.fault"));
    let config = ConfigDir::with_overlay(
        r#"
[[routes]]
kind = "fault"
queue = "warren.fault"
retry = { max_attempts = 3, base_delay_ms = 300, max_delay_ms = 300, jitter = 0.0 }
"#,
    );
    let producer = warren_producer::Producer::connect(settings.clone()).await.expect("producer");
    producer.declare_topology().await.expect("topology");
    let job = Job::from(FaultJob { transient_failures: 1, ..FaultJob::default() });
    producer.publish(&job, &warren_producer::PublishOptions::default()).await.expect("publish");
    producer.close().await;
    let alarm = MemoryAlarm::raise().await;
    let env = [
        ("WARREN_CONFIG_DIR", config.path()),
        ("WARREN__CONSUMER__KINDS", "fault"),
        ("WARREN__CONSUMER__DRAIN_TIMEOUT_MS", "1000"),
        ("WARREN__BROKER__CONFIRM_TIMEOUT_MS", "20000"),
        ("RUST_LOG", "info,lapin=error"),
    ];
    let consumer = ConsumerProcess::start(&vhost, &env).await;
    // The job failed and its retry copy is on its way, its confirm held by the alarm.
    consumer.wait_for_log("transient failure; retrying later").await;
    consumer.signal("TERM").await;
    consumer.wait_for_log("drain timeout").await;
    drop(alarm);
    let (code, log) = consumer.wait().await;
    assert_eq!(code, Some(0), "{log}");
    let retry_queue = "warren.fault.retry.300ms";
    let deadline = std::time::Instant::now() + DEADLINE;
    while queue_depth(&settings, retry_queue).await > 0 {
        assert!(std::time::Instant::now() < deadline, "the retry copy never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let returned = settings.returned_queue("warren.fault");
    let mut copies = 0;
    for queue in ["warren.fault", returned.as_str(), "warren.fault.dead", retry_queue] {
        let n = queue_depth(&settings, queue).await;
        println!("drain under a memory alarm: {n} copies in {queue}");
        copies += n;
    }
    assert_eq!(copies, 1, "one job, one copy across all queues\n{log}");
}

/// Issue 24, item 6: nothing piles up while the broker holds confirms back. Under a memory
/// alarm, 400 publishes of 64 KiB to a queue that does not exist (mandatory: each would come
/// back as a return, as a result to a deleted reply queue does) all give up at their confirm
/// timeout; the publishes sent and unanswered never exceed the in-flight bound (plus one probe
/// per lane), each holding its body, and all are answered once the alarm clears.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_held_back_by_a_memory_alarm_stay_within_the_in_flight_bound(vhost: Vhost) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const IN_FLIGHT: usize = 8;
    const PUBLISHES: usize = 400;
    const BODY: usize = 64 * 1024;
    let _turn = BROKER.lock().await;
    let settings = settings_for(&vhost);
    let conn = Arc::new(warren_infra::connect(&settings.broker, "test-held").await.expect("connect"));
    let timeout = Duration::from_millis(500);
    let publisher = warren_infra::Publisher::open(conn.clone(), timeout, IN_FLIGHT).await.expect("publisher");
    let lanes = warren_infra::Publisher::DEFAULT_LANES;
    let alarm = MemoryAlarm::raise().await;
    let (peak, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let sampler = tokio::spawn({
        let (publisher, peak, done) = (publisher.clone(), peak.clone(), done.clone());
        async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(publisher.unanswered(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let body = vec![7u8; BODY];
    let started = std::time::Instant::now();
    let outcomes = futures_util::future::join_all((0..PUBLISHES).map(|_| {
        let props = lapin::BasicProperties::default();
        publisher.publish("", "warren.no-such-reply-queue", &body, props, true)
    }))
    .await;
    let held_for = started.elapsed();
    let timed_out = outcomes.iter().filter(|o| matches!(o, Err(warren_infra::PublishError::ConfirmTimeout(_)))).count();
    let while_blocked = publisher.unanswered();
    drop(alarm);
    let deadline = std::time::Instant::now() + DEADLINE;
    while publisher.unanswered() > 0 {
        assert!(std::time::Instant::now() < deadline, "{} publishes never answered", publisher.unanswered());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done.store(true, Ordering::Relaxed);
    sampler.await.expect("sampler");
    let after = publisher.publish("", "warren.no-such-reply-queue", b"x", Default::default(), true).await;
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "memory alarm for {held_for:?}: {PUBLISHES} publishes of {} KiB, {timed_out} timed out; at most {peak} sent and \
         unanswered at once (bound {IN_FLIGHT} + {lanes} probes, {} KiB of bodies), {while_blocked} when the alarm cleared, \
         0 after; the next publish: {after:?}",
        BODY / 1024,
        (IN_FLIGHT + lanes) * BODY / 1024
    );
    assert_eq!(timed_out, PUBLISHES, "every publish gave up at its confirm timeout");
    assert!(peak <= IN_FLIGHT + lanes, "{peak} publishes held at once");
    assert!(peak >= 1, "the alarm held some back: the test proves something");
    assert!(matches!(after, Err(warren_infra::PublishError::Unroutable { .. })), "{after:?}");
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.close(200, "done".into())).await;
}
