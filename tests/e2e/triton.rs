//! `model.backend = "triton"` against a real Triton 2.51 server (CPU, Python backend running
//! the same ONNX files with ONNX Runtime): the same answers as in-process ONNX Runtime, a
//! server killed and restarted mid-run with no job lost, models that do not fit refused at
//! start-up, and a request past its deadline cancelled and retried.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use rstest::rstest;
use warren_common::classify::ClassifyJob;
use warren_common::{Encoding, Job, headers as h};
use warren_e2e::triton::{Served, Triton};
use warren_e2e::{DEADLINE, Fleet, Vhost, collect_messages, fleet_and_producer, repo_root, settings_for, vhost};
use warren_infra::settings::ModelBackend;
use warren_infra::{Settings, fields};
use warren_producer::PublishOptions;

/// A classify-only worker on `vhost` whose model is `model` on `triton`.
fn triton_settings(vhost: &Vhost, triton: &Triton, model: &str) -> Settings {
    let mut s = settings_for(vhost);
    s.consumer.kinds = vec!["ml.classify".into()];
    s.model.backend = ModelBackend::Triton;
    s.model.triton_url = triton.url();
    s.model.triton_model = model.into();
    s.model.triton_ready_interval_ms = 200;
    s.model.triton_startup_timeout_ms = 10_000;
    s
}

/// The digits samples with the answers ONNX Runtime gave in Python (`expected.json`).
fn samples(variant: &str) -> Vec<(String, Vec<u8>, u64)> {
    let dir = repo_root().join("models/digits");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).expect("expected.json")).expect("json");
    let predicted: BTreeMap<String, u64> =
        serde_json::from_value(expected["models"][variant]["predicted"].clone()).expect("predicted");
    predicted
        .into_iter()
        .map(|(name, p)| {
            let image = std::fs::read(dir.join("samples").join(&name)).expect("sample");
            (name, image, p)
        })
        .collect()
}

fn classify(image: &[u8]) -> Job {
    Job::from(ClassifyJob { image: image.to_vec(), top_k: Some(1) })
}

#[rstest]
#[case::f32("f32", Encoding::Json)]
#[case::f16_tensors("f16", Encoding::Bincode)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_digit_through_triton_gets_the_answer_onnx_runtime_gave(
    #[case] variant: &str,
    #[case] encoding: Encoding,
    vhost: Vhost,
) {
    let triton = Triton::start(&[Served::digits("digits", variant)]).await;
    let settings = triton_settings(&vhost, &triton, "digits");
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let opts = PublishOptions { encoding: Some(encoding), want_result: true, ..Default::default() };
    let samples = samples(variant);
    let answers: Vec<(String, u64, u64)> = futures_util::stream::iter(&samples)
        .map(|(name, image, expected)| {
            let (opts, producer) = (opts.clone(), &producer);
            async move {
                let t = producer.publish(&classify(image), &opts).await.expect("publish");
                let r = t.wait(DEADLINE).await.expect("result");
                let Some(out) = r.output_as::<warren_common::classify::Classify>() else {
                    panic!("{name}: {:?}", r.error)
                };
                (name.clone(), u64::from(out.predictions[0].index), *expected)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(answers.len(), 360, "every sample answered");
    let wrong: Vec<_> = answers.iter().filter(|(_, got, want)| got != want).collect();
    assert!(wrong.is_empty(), "Triton and ONNX Runtime in Python disagree on {wrong:?}");
    let addr = fleet.metrics_addr.expect("metrics");
    let s = tokio::task::block_in_place(|| warren_e2e::scrape::Scrape::take(addr));
    let runs = s.value("warren_inference_seconds_count", &[("backend", "triton")]);
    let jobs = s.value("warren_batch_size_sum", &[("backend", "triton")]);
    println!("digits {variant} through Triton: 360/360 as recorded; {jobs} jobs in {runs} requests");
    assert_eq!(jobs, 360.0);
    assert!(runs < 360.0, "micro-batches went as single requests: {runs} requests");
    producer.close().await;
    fleet.stop().await;
}

/// Polls `condition` every 50 ms until it holds, or fails the test at `deadline`.
async fn until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < deadline, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

fn readyz(fleet: &Fleet) -> u16 {
    let url = format!("http://{}/readyz", fleet.metrics_addr.expect("metrics"));
    tokio::task::block_in_place(|| match ureq::get(&url).call() {
        Ok(r) => r.status().as_u16(),
        Err(ureq::Error::StatusCode(code)) => code,
        Err(e) => panic!("GET {url}: {e}"),
    })
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triton_killed_mid_run_and_restarted_loses_no_job_and_readiness_follows_it(vhost: Vhost) {
    const JOBS: usize = 1500;
    let mut triton = Triton::start(&[Served::digits("digits", "f32")]).await;
    let settings = triton_settings(&vhost, &triton, "digits");
    let (fleet, producer) = fleet_and_producer(&settings).await;
    assert_eq!(readyz(&fleet), 200);
    let samples = Arc::new(samples("f32"));
    let producer = Arc::new(producer);
    let answered = Arc::new(AtomicUsize::new(0));
    let run = tokio::spawn({
        let (producer, samples, answered) = (producer.clone(), samples.clone(), answered.clone());
        async move {
            futures_util::stream::iter(0..JOBS)
                .map(|i| {
                    let (producer, samples, answered) = (producer.clone(), samples.clone(), answered.clone());
                    async move {
                        let (name, image, expected) = &samples[i % samples.len()];
                        let t = producer.publish(&classify(image), &warren_e2e::want_result()).await.expect("publish");
                        let id = t.job_id.clone();
                        let r = t.wait(DEADLINE).await.unwrap_or_else(|e| panic!("job {i} ({name}) lost: {e}"));
                        let Some(out) = r.output_as::<warren_common::classify::Classify>() else {
                            panic!("{name}: {:?}", r.error)
                        };
                        assert_eq!(u64::from(out.predictions[0].index), *expected, "{name}");
                        answered.fetch_add(1, Ordering::Relaxed);
                        (id, r.attempt)
                    }
                })
                .buffer_unordered(64)
                .collect::<Vec<_>>()
                .await
        }
    });

    until("a quarter answered", DEADLINE, || answered.load(Ordering::Relaxed) >= JOBS / 4).await;
    triton.kill().await;
    let killed_at = Instant::now();
    let at_kill = answered.load(Ordering::Relaxed);
    let not_ready = until("the worker notices", Duration::from_secs(10), || !fleet.health.is_ready()).await;
    assert_eq!(readyz(&fleet), 503, "/readyz follows the model");
    // Paused: the queue has no consumer, so its jobs wait in the broker, unheld.
    let consumers = queue_consumers(&settings, "warren.ml.classify").await;
    assert_eq!(consumers, 0, "the classify queue is not consumed while Triton is down");
    let while_down = answered.load(Ordering::Relaxed);
    triton.restart().await;
    let restarted_at = Instant::now();
    let back = until("the worker is ready again", Duration::from_secs(30), || fleet.health.is_ready()).await;
    let answers = tokio::time::timeout(Duration::from_secs(120), run).await.expect("every job answered in time");
    let answers = answers.expect("publisher task");

    let ids: BTreeSet<&String> = answers.iter().map(|(id, _)| id).collect();
    let retried = answers.iter().filter(|(_, attempt)| *attempt > 0).count();
    let addr = fleet.metrics_addr.expect("metrics");
    let s = tokio::task::block_in_place(|| warren_e2e::scrape::Scrape::take(addr));
    let errors = s.value("warren_triton_errors_total", &[]);
    let dashboard =
        std::fs::read_to_string(repo_root().join("deploy/grafana/dashboards/warren.json")).expect("dashboard");
    for name in ["warren_triton_errors_total", "warren_model_ready", "warren_inference_seconds_bucket"] {
        assert!(dashboard.contains(name), "the dashboard shows {name}");
        assert!(s.names().contains(name), "a Triton-backed worker exports {name}");
    }
    println!(
        "Triton killed after {at_kill} of {JOBS} answers: not ready after {not_ready:?}, down {:?}, ready again {back:?} \
         after the restart; {} answers while down; {JOBS} jobs, {} distinct jobs answered, {retried} after a retry, \
         {errors} failed Triton requests",
        restarted_at - killed_at,
        while_down - at_kill,
        ids.len()
    );
    assert_eq!(ids.len(), JOBS, "every job answered, none lost");
    assert_eq!(readyz(&fleet), 200);
    Arc::into_inner(producer).expect("sole owner").close().await;
    fleet.stop().await;
}

/// Issue 24, item 2: an outage spends no attempts. Triton is stopped (SIGSTOP: it accepts
/// connections and answers nothing), 500 jobs wait, and the worker's connection is closed three
/// times meanwhile. Before, each new session subscribed every queue before pausing the classify
/// queue again, so a prefetch's worth of jobs failed as `model_unavailable` and was retried
/// with its attempt raised, each time. Now a paused queue is never subscribed, and a job whose
/// backend was unavailable goes back without spending an attempt: no retry, no dead letter.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_with_lost_connections_spends_no_attempt(vhost: Vhost) {
    const JOBS: usize = 500;
    let triton = Triton::start(&[Served::digits("digits", "f32")]).await;
    let mut settings = triton_settings(&vhost, &triton, "digits");
    settings.model.triton_timeout_ms = 1_000;
    settings.broker.reconnect_min_ms = 100;
    settings.broker.reconnect_max_ms = 500;
    let (fleet, producer) = fleet_and_producer(&settings).await;
    triton.signal("STOP").await;
    let not_ready = until("the worker notices", Duration::from_secs(20), || !fleet.health.is_ready()).await;
    let samples = samples("f32");
    let mut tickets = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        let t = producer.publish(&classify(&samples[i % samples.len()].1), &warren_e2e::want_result()).await;
        tickets.push(t.expect("publish"));
    }
    for round in 1..=3 {
        let before = fleet.health.reconnects();
        // The API lists a new connection a moment after it opens.
        let start = Instant::now();
        while tokio::task::block_in_place(|| vhost.close_connections("consumer")) == 0 {
            assert!(
                start.elapsed() < DEADLINE,
                "round {round}: the worker's connection was never listed ({})",
                fleet.health.status().1
            );
        }
        until("the worker reconnects", DEADLINE, || fleet.health.reconnects() > before).await;
        let consumers = queue_consumers(&settings, "warren.ml.classify").await;
        assert_eq!(consumers, 0, "round {round}: the classify queue is not consumed while Triton is down");
        // Not a condition to await: the window in which jobs a new session took (before: every
        // queue was subscribed for a moment) would fail at Triton's 1 s request deadline.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    triton.signal("CONT").await;
    let back = until("the worker is ready again", Duration::from_secs(30), || fleet.health.is_ready()).await;
    let mut attempts = BTreeMap::new();
    for t in tickets {
        let r = t.wait(DEADLINE).await.expect("every job answered once Triton is back");
        assert!(r.error.is_none(), "{:?}", r.error);
        *attempts.entry(r.attempt).or_insert(0usize) += 1;
    }
    let addr = fleet.metrics_addr.expect("metrics");
    let s = tokio::task::block_in_place(|| warren_e2e::scrape::Scrape::take(addr));
    let retries = s.value("warren_publishes_total", &[("target", "retry"), ("outcome", "acked")]);
    let dead = s.value("warren_publishes_total", &[("target", "dead_letter"), ("outcome", "acked")]);
    println!(
        "Triton stopped, {JOBS} jobs, 3 lost connections: not ready after {not_ready:?}, ready {back:?} after SIGCONT; \
         results by attempt {attempts:?}; {} retry copies, {} dead letters",
        retries + 0.0,
        dead + 0.0
    );
    assert_eq!(attempts.get(&0), Some(&JOBS), "every job answered on its first attempt: {attempts:?}");
    assert_eq!((retries, dead), (0.0, 0.0), "no retry copy, no dead letter");
    assert_eq!(warren_e2e::queue_depth(&settings, "warren.ml.classify.dead").await, 0);
    producer.close().await;
    fleet.stop().await;
}

/// Issue 24, item 4: a model that changes under a running worker dead-letters nothing. With
/// explicit model control, version 2 of `digits` (12 classes) is loaded under the same name
/// and 100 jobs are published at once. Before, every job the worker took then failed as a
/// permanent `model_input_mismatch`, one attempt each, at full speed. Now the readiness check
/// reads the model's metadata again and pauses the route (not ready) while it is not the model
/// the worker started with, the jobs that met it go back without spending an attempt, and the
/// worker resumes when version 1 is served again.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_changes_under_the_worker_pauses_its_route_and_dead_letters_nothing(vhost: Vhost) {
    const JOBS: usize = 100;
    let v1 = Served::digits("digits", "f32");
    let v2 = Served {
        edits: vec![("dims: [ 10 ]".into(), "dims: [ 12 ]".into())],
        parameters: vec![("extra_classes".into(), "2".into())],
        ..v1.clone()
    };
    let triton =
        Triton::start_with(std::slice::from_ref(&v1), &["--model-control-mode=explicit", "--load-model=digits"]).await;
    let mut settings = triton_settings(&vhost, &triton, "digits");
    (settings.broker.reconnect_min_ms, settings.broker.reconnect_max_ms) = (100, 500);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    triton.load(&v2, 2).await;
    let samples = samples("f32");
    let opts = warren_e2e::want_result();
    let mut tickets = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        let (name, image, expected) = &samples[i % samples.len()];
        tickets.push((name, *expected, producer.publish(&classify(image), &opts).await.expect("publish")));
    }
    let paused = until("the worker sees the model changed", Duration::from_secs(20), || !fleet.health.is_ready()).await;
    let why = fleet.health.status().1;
    println!("version 2 loaded: not ready after {paused:?}: {why}");
    assert!(why.contains("ml.classify"), "{why}");
    let consumers = queue_consumers(&settings, "warren.ml.classify").await;
    assert_eq!(consumers, 0, "the classify queue is paused while the model does not fit");
    triton.load(&v1, 1).await;
    let back = until("the worker is ready again", Duration::from_secs(30), || fleet.health.is_ready()).await;
    let mut first_attempt = 0;
    for (name, expected, t) in tickets {
        let r = t.wait(DEADLINE).await.expect("every job answered once version 1 is back");
        let Some(out) = r.output_as::<warren_common::classify::Classify>() else { panic!("{name}: {:?}", r.error) };
        assert_eq!(u64::from(out.predictions[0].index), expected, "{name}");
        first_attempt += usize::from(r.attempt == 0);
    }
    let addr = fleet.metrics_addr.expect("metrics");
    let s = tokio::task::block_in_place(|| warren_e2e::scrape::Scrape::take(addr));
    let handed_back = s.value("warren_jobs_completed_total", &[("outcome", "handed_back")])
        + s.value("warren_jobs_completed_total", &[("outcome", "set_aside")])
        + 0.0;
    let dead = s.value("warren_publishes_total", &[("target", "dead_letter")]) + 0.0;
    println!(
        "model changed under the worker: {JOBS} jobs, {handed_back} handed back while version 2 was served, \
         ready again {back:?} after version 1 returned; {first_attempt} answered on their first attempt, {dead} dead letters"
    );
    assert_eq!(dead, 0.0, "nothing dead-lettered");
    assert_eq!(first_attempt, JOBS, "no attempt spent");
    assert_eq!(warren_e2e::queue_depth(&settings, "warren.ml.classify.dead").await, 0);
    producer.close().await;
    fleet.stop().await;
}

/// Consumers of `queue` now (a passive declare: exact, unlike the management API's statistics).
async fn queue_consumers(settings: &Settings, queue: &str) -> u32 {
    let conn = warren_infra::connect(&settings.broker, "test-consumers").await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("queue");
    let _ = conn.close(200, "done".into()).await;
    q.consumer_count()
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_triton_lacks_or_that_does_not_fit_stops_start_up_with_the_reason(vhost: Vhost) {
    let flat = Served {
        edits: vec![("dims: [ 1, 8, 8 ]".into(), "dims: [ 64 ]".into())],
        ..Served::digits("digits_flat", "f32")
    };
    let small_batches = Served { max_batch_size: 4, ..Served::digits("digits_b4", "f32") };
    let triton = Triton::start(&[Served::digits("digits", "f32"), flat, small_batches]).await;
    let refused = |change: &dyn Fn(&mut Settings)| {
        let mut s = triton_settings(&vhost, &triton, "digits");
        change(&mut s);
        async move {
            let started = Instant::now();
            let e = warren_consumer::builtin::worker().build(s).await.expect_err("refused");
            (format!("{e:#}"), started.elapsed())
        }
    };
    let (e, took) = refused(&|s| s.model.triton_model = "resnet".into()).await;
    println!("unknown model, after {took:?}: {e}");
    assert!(e.contains("does not serve a model named \"resnet\""), "{e}");
    assert!(e.contains("digits, digits_b4, digits_flat"), "names what it has: {e}");
    assert!(took < Duration::from_secs(5), "a missing model is an error at once, not after the start-up wait");

    let (e, _) = refused(&|s| s.model.triton_model = "digits_flat".into()).await;
    println!("flat input: {e}");
    assert!(e.contains("has shape [-1, 64]; Warren sends NCHW images"), "{e}");

    let (e, _) = refused(&|s| s.model.height = 28).await;
    println!("height: {e}");
    assert!(e.contains("model.height = 28 but the model declares 8"), "{e}");

    let (e, _) = refused(&|s| {
        s.model.triton_model = "digits_b4".into();
        warren_e2e::route(s, "ml.classify").max_batch = 8;
    })
    .await;
    println!("batch: {e}");
    assert!(e.contains("max_batch = 8 but Triton's model \"digits_b4\" takes at most 4"), "{e}");

    let (e, _) = refused(&|s| s.model.labels_path = repo_root().join("models/squeezenet/labels.txt")).await;
    assert!(e.contains("gives 10 classes but model.labels_path has 1000 labels"), "{e}");

    // And a server that is not there at all: start-up waits for it, then gives up with why.
    let (e, took) = refused(&|s| {
        s.model.triton_url = "http://127.0.0.1:1".into();
        s.model.triton_startup_timeout_ms = 1_000;
    })
    .await;
    println!("no server, after {took:?}: {e}");
    assert!(e.contains("was not ready within 1s") && e.contains("the server does not answer"), "{e}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_cancelled_and_its_job_retried_then_dead_lettered(vhost: Vhost) {
    let slow = Served { parameters: vec![("delay_ms".into(), "3000".into())], ..Served::digits("slow", "f32") };
    let triton = Triton::start(&[slow]).await;
    let mut settings = triton_settings(&vhost, &triton, "slow");
    settings.model.triton_timeout_ms = 300;
    settings.retry.max_attempts = 2;
    settings.retry.base_delay_ms = 100;
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let (_, image, _) = samples("f32").swap_remove(0);
    let started = Instant::now();
    let t = producer.publish(&classify(&image), &warren_e2e::want_result()).await.expect("publish");
    let r = t.wait(DEADLINE).await.expect("result");
    let took = started.elapsed();
    let e = r.error.expect("fails");
    println!("past the deadline: {} after {took:?} ({} attempts): {}", e.error_type, r.attempt + 1, e.message);
    assert_eq!((e.error_type.as_str(), r.attempt), ("model_unavailable", 1), "{e:?}");
    assert!(e.message.contains("deadline_exceeded"), "{}", e.message);
    // Two attempts of 300 ms and a retry delay, against 6 s had each waited for the model.
    assert!(took < Duration::from_secs(3), "{took:?}: the requests were not cut at their deadline");
    let dead = collect_messages(&settings, "warren.ml.classify.dead", 1, DEADLINE).await;
    let headers = dead[0].properties.headers().as_ref();
    assert_eq!(fields::get_str(headers, h::ERROR_TYPE).as_deref(), Some("model_unavailable"));
    assert_eq!(fields::get_str(headers, h::ERROR_CLASS).as_deref(), Some("transient"));
    let addr = fleet.metrics_addr.expect("metrics");
    let s = tokio::task::block_in_place(|| warren_e2e::scrape::Scrape::take(addr));
    // At least one per attempt. Once in five full runs under CI load a third was counted, with
    // the job still answered after 2 attempts (not explained yet: see the closing note of
    // 2026-12-06); the count is printed so that a run shows it.
    let cut = s.value("warren_triton_errors_total", &[("code", "deadline_exceeded")]);
    println!("deadline_exceeded requests counted: {cut}");
    assert!(cut >= 2.0, "{cut}");
    producer.close().await;
    fleet.stop().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_triton_refuses_requests_and_their_jobs_are_handed_back_until_answered(vhost: Vhost) {
    // Triton's own overload answer: a model whose queue holds one request and that takes
    // 200 ms a run refuses the rest with UNAVAILABLE ("Exceeds maximum queue size"). No job's
    // fault: each goes back to the queue after a pause, without spending an attempt.
    let busy = Served {
        edits: vec![(
            "dynamic_batching { }".into(),
            "dynamic_batching { default_queue_policy { max_queue_size: 1 } }".into(),
        )],
        parameters: vec![("delay_ms".into(), "200".into())],
        ..Served::digits("busy", "f32")
    };
    let triton = Triton::start(&[busy]).await;
    let mut settings = triton_settings(&vhost, &triton, "busy");
    settings.consumer.pool_size = 6;
    warren_e2e::route(&mut settings, "ml.classify").max_batch = 1;
    (settings.broker.reconnect_min_ms, settings.broker.reconnect_max_ms) = (100, 1000);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let samples = samples("f32");
    let (jobs, opts) =
        (samples.iter().take(24).map(|(_, image, _)| classify(image)).collect::<Vec<_>>(), warren_e2e::want_result());
    let tickets = futures_util::future::join_all(jobs.iter().map(|job| producer.publish(job, &opts))).await;
    let mut retried = 0;
    for (t, (name, _, expected)) in tickets.into_iter().zip(&samples) {
        let r = t.expect("publish").wait(DEADLINE).await.expect("result");
        let Some(out) = r.output_as::<warren_common::classify::Classify>() else { panic!("{name}: {:?}", r.error) };
        assert_eq!(u64::from(out.predictions[0].index), *expected, "{name}");
        retried += usize::from(r.attempt > 0);
    }
    let addr = fleet.metrics_addr.expect("metrics");
    let s = tokio::task::block_in_place(|| warren_e2e::scrape::Scrape::take(addr));
    let refused = s.value("warren_triton_errors_total", &[("code", "unavailable")]);
    let handed_back = s.value("warren_jobs_completed_total", &[("outcome", "handed_back")])
        + s.value("warren_jobs_completed_total", &[("outcome", "set_aside")]);
    println!(
        "overloaded Triton: 24 of 24 answered, {retried} after retries, {refused} requests refused, \
         {handed_back} jobs handed back"
    );
    assert!(refused > 0.0 && handed_back > 0.0, "the server was never overloaded: the test proves nothing");
    assert_eq!(retried, 0, "an overloaded server spends no job's attempts");
    producer.close().await;
    fleet.stop().await;
}

/// A job's deadline reaches Triton: the request's timeout is the time the job has left (1 s),
/// not `model.triton_timeout_ms` (30 s here), so a model that takes 3 s is cut at the
/// deadline (counted as `deadline_exceeded` by the worker), and the job ends `deadline_exceeded`.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_deadline_is_its_triton_requests_timeout(vhost: Vhost) {
    let slow = Served { parameters: vec![("delay_ms".into(), "3000".into())], ..Served::digits("slow", "f32") };
    let triton = Triton::start(&[slow]).await;
    let mut settings = triton_settings(&vhost, &triton, "slow");
    settings.model.triton_timeout_ms = 30_000;
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let (_, image, _) = samples("f32").swap_remove(0);
    let started = Instant::now();
    let opts = warren_e2e::want_result().timeout(Duration::from_secs(1));
    let r = producer.publish(&classify(&image), &opts).await.expect("publish").wait(DEADLINE).await.expect("result");
    let took = started.elapsed();
    let e = r.error.expect("fails");
    assert_eq!(e.error_type, "deadline_exceeded", "{e:?}");
    let addr = fleet.metrics_addr.expect("metrics");
    let cut = || {
        tokio::task::block_in_place(|| warren_e2e::scrape::Scrape::take(addr))
            .value("warren_triton_errors_total", &[("code", "deadline_exceeded")])
    };
    warren_e2e::eventually("the request is cut at the job's deadline", || async { cut() >= 1.0 }).await;
    let cut_after = started.elapsed();
    println!(
        "a 3 s model, a job with 1 s left: answered {} after {took:?}, its request cut by {cut_after:?}",
        e.error_type
    );
    assert!(cut_after < Duration::from_millis(2_800), "the request ran past the job's deadline: {cut_after:?}");
    producer.close().await;
    fleet.stop().await;
}
