//! Python kinds (`warren_worker`) hosted by the worker, against the real broker: the kinds of
//! `clients/python/tests/sample_kinds.py` in real child processes (issue 27, in progress).

use std::time::Duration;

use base64::Engine as _;
use rstest::rstest;
use warren_common::headers as h;
use warren_common::{Encoding, Job, ResultStatus};
use warren_e2e::{DEADLINE, Vhost, collect_messages, fleet_and_producer, repo_root, settings_for, vhost, want_result};
use warren_infra::{Settings, fields};
use warren_producer::PublishOptions;

/// A `sample.digest` job of `data` (a bytes field: base64 in JSON).
fn digest(data: &[u8]) -> Job {
    Job::named("sample.digest", serde_json::json!({"data": base64::engine::general_purpose::STANDARD.encode(data)}))
}

/// A worker serving the sample kinds in `children` children.
fn python_settings(vhost: &Vhost, children: usize) -> Settings {
    let mut settings = settings_for(vhost);
    let python = repo_root().join("clients").join("python");
    settings.python.modules = vec!["sample_kinds".into()];
    settings.python.path = vec![python.display().to_string(), python.join("tests").display().to_string()];
    settings.python.children = children;
    settings.consumer.kinds =
        ["sample.digest", "sample.fail", "sample.slow", "sample.pid", "sample.spin", "sample.noisy"]
            .map(String::from)
            .to_vec();
    settings
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_kinds_answer_fail_by_class_and_are_killed_past_their_deadline(vhost: Vhost) {
    let settings = python_settings(&vhost, 2);
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let r =
        producer.publish(&digest(b"hello"), &want_result()).await.expect("publish").wait(DEADLINE).await.expect("r");
    assert_eq!(r.status, ResultStatus::Ok, "{r:?}");
    let out = r.output.and_then(|o| o.to_json()).expect("output");
    assert_eq!(out["sha256"], "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    // Each class: a permanent error is dead-lettered at once, a transient one after its kind's
    // two attempts.
    for (how, error_type, attempts) in [("permanent", "bad_text", 0), ("transient", "backend_down", 1)] {
        let job = Job::named("sample.fail", serde_json::json!({"how": how}));
        let r = producer.publish(&job, &want_result()).await.expect("publish").wait(DEADLINE).await.expect("r");
        let e = r.error.as_ref().expect("an error");
        assert_eq!((e.error_type.as_str(), r.attempt), (error_type, attempts), "{r:?}");
    }
    let dead = collect_messages(&settings, "warren.sample.fail.dead", 2, DEADLINE).await;
    let reasons: Vec<_> = dead
        .iter()
        .map(|d| fields::get_str(d.properties.headers().as_ref(), h::DEAD_REASON).unwrap_or_default())
        .collect();
    assert_eq!(reasons, ["permanent_error", "attempts_exhausted"]);
    // A job past its deadline: its child is killed, the job ends deadline_exceeded, and the
    // kinds go on being served by a new child.
    let slow = Job::named("sample.slow", serde_json::json!({"steps": 400}));
    let started = std::time::Instant::now();
    let opts = want_result().timeout(Duration::from_millis(700));
    let r = producer.publish(&slow, &opts).await.expect("publish").wait(DEADLINE).await.expect("r");
    assert_eq!(r.error.as_ref().map(|e| e.error_type.as_str()), Some("deadline_exceeded"), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    for i in 0..20u8 {
        let r = producer.publish(&digest(&[i]), &want_result()).await.expect("p").wait(DEADLINE).await.expect("r");
        assert_eq!(r.status, ResultStatus::Ok, "{r:?}");
    }
    // A child writing bytes that are not UTF-8, then more than a pipe holds (about 250 KB), to
    // stderr: the worker goes on reading it (it used to stop at the first such byte and close
    // the pipe, so the child's next print failed with a broken pipe).
    for _ in 0..2 {
        let noisy = Job::named("sample.noisy", serde_json::json!({"lines": 2000}));
        let r = producer.publish(&noisy, &want_result()).await.expect("publish").wait(DEADLINE).await.expect("r");
        assert_eq!(r.status, ResultStatus::Ok, "{r:?}");
    }
    // A bytes field that is not base64 is refused by the child with the reason.
    let opts = PublishOptions { encoding: Some(Encoding::Json), ..want_result() };
    let bad = Job::named("sample.digest", serde_json::json!({"data": "%%%"}));
    let r = producer.publish(&bad, &opts).await.expect("publish").wait(DEADLINE).await.expect("r");
    assert_eq!(r.error.map(|e| e.error_type).as_deref(), Some("invalid_params"));
    producer.close().await;
    fleet.stop().await;
}

/// A child that dies (`os._exit`) counts a death, as a worker's would: its job goes to the
/// returned lane and, past `consumer.max_redeliveries`, is dead-lettered as poison; the
/// innocent jobs beside it all end as results, served by new children.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_dies_is_replaced_and_a_job_that_kills_children_is_poison(vhost: Vhost) {
    let mut settings = python_settings(&vhost, 2);
    settings.consumer.max_redeliveries = 2;
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let killer = Job::named("sample.fail", serde_json::json!({"how": "exit"}));
    let killer = producer.publish(&killer, &want_result()).await.expect("publish");
    let mut innocent = Vec::new();
    for i in 0..30u32 {
        innocent.push(producer.publish(&digest(&i.to_le_bytes()), &want_result()).await.expect("publish"));
    }
    let r = killer.wait(DEADLINE).await.expect("answered");
    assert_eq!(r.error.as_ref().map(|e| e.error_type.as_str()), Some("redelivery_limit"), "{r:?}");
    for t in innocent {
        assert_eq!(t.wait(DEADLINE).await.expect("answered").status, ResultStatus::Ok);
    }
    let dead = collect_messages(&settings, "warren.sample.fail.dead", 1, DEADLINE).await;
    let headers = dead[0].properties.headers().as_ref();
    assert_eq!(fields::get_str(headers, h::DEAD_REASON).as_deref(), Some("redelivery_limit"));
    println!(
        "a job that kills its child: dead-lettered after {} returns",
        fields::get_u64(headers, h::REDELIVERIES).unwrap_or(0)
    );
    producer.close().await;
    fleet.stop().await;
}

/// Recycling: with `max_jobs_per_child = 3` one child serves three jobs, then another takes
/// over; with `max_rss_mib`, a child that grew past it after a job is replaced.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_are_replaced_after_their_jobs_and_past_their_memory(vhost: Vhost) {
    let pids = |settings: Settings, jobs: Vec<serde_json::Value>| async move {
        let (fleet, producer) = fleet_and_producer(&settings).await;
        let mut pids = Vec::new();
        for job in jobs {
            let job = Job::named("sample.pid", job);
            let r = producer.publish(&job, &want_result()).await.expect("p").wait(DEADLINE).await.expect("answered");
            pids.push(r.output.and_then(|o| o.to_json()).expect("output")["pid"].as_u64().expect("pid"));
        }
        producer.close().await;
        fleet.stop().await;
        pids
    };
    let mut by_jobs = python_settings(&vhost, 1);
    by_jobs.python.max_jobs_per_child = 3;
    let seen = pids(by_jobs, vec![serde_json::json!({}); 9]).await;
    println!("max_jobs_per_child = 3: pids {seen:?}");
    assert!(seen.chunks(3).all(|c| c.iter().all(|p| *p == c[0])), "{seen:?}");
    assert!(seen[0] != seen[3] && seen[3] != seen[6], "{seen:?}");
    let mut by_memory = python_settings(&vhost, 1);
    by_memory.python.max_rss_mib = 120;
    let jobs =
        vec![serde_json::json!({}), serde_json::json!({}), serde_json::json!({"grow_mib": 150}), serde_json::json!({})];
    let seen = pids(by_memory, jobs).await;
    println!("max_rss_mib = 120: pids {seen:?} (the third job grew its child by 150 MiB)");
    assert_eq!((seen[0], seen[1]), (seen[2], seen[2]), "the same child until it grew: {seen:?}");
    assert_ne!(seen[3], seen[2], "replaced after it grew: {seen:?}");
}

/// An endless loop is stopped at its kind's time limit (1 s) by killing its child: the job is
/// dead-lettered as `timeout` (one attempt: the kind's `max_attempts`), and 1,000 jobs in flight
/// at once beside it are all answered. Then a drain: a job still running when the drain
/// timeout passes is handed back to the broker, its child killed.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_job_is_killed_at_its_limit_and_a_drain_hands_back_what_runs(vhost: Vhost) {
    let mut settings = python_settings(&vhost, 2);
    settings.consumer.drain_timeout_ms = 1_000;
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let spin = producer.publish(&Job::named("sample.spin", serde_json::json!({})), &want_result()).await.expect("p");
    let started = std::time::Instant::now();
    let mut tickets = Vec::new();
    for i in 0..1_000u32 {
        tickets.push(producer.publish(&digest(&i.to_le_bytes()), &want_result()).await.expect("publish"));
    }
    let r = spin.wait(DEADLINE).await.expect("answered");
    assert_eq!(r.error.as_ref().map(|e| e.error_type.as_str()), Some("timeout"), "{r:?}");
    let mut ok = 0;
    for t in tickets {
        ok += usize::from(t.wait(DEADLINE).await.expect("answered").status == ResultStatus::Ok);
    }
    println!("an endless Python job killed at 1 s; 1,000 jobs beside it answered in {:?}", started.elapsed());
    assert_eq!(ok, 1_000);
    let dead = collect_messages(&settings, "warren.sample.spin.dead", 1, DEADLINE).await;
    assert_eq!(fields::get_str(dead[0].properties.headers().as_ref(), h::ERROR_TYPE).as_deref(), Some("timeout"));
    // A 20 s job running when the worker stops: handed back after the 1 s drain timeout.
    let slow = Job::named("sample.slow", serde_json::json!({"steps": 400}));
    producer.publish(&slow, &PublishOptions::default()).await.expect("publish");
    let metrics = fleet.metrics_addr.expect("metrics");
    let running =
        || warren_e2e::scrape::Scrape::take(metrics).value("warren_jobs_received_total", &[("kind", "sample.slow")]);
    warren_e2e::eventually("the slow job runs", || async { tokio::task::block_in_place(running) >= 1.0 }).await;
    producer.close().await;
    let stopping = std::time::Instant::now();
    fleet.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(10), "{:?}", stopping.elapsed());
    assert_eq!(warren_e2e::queue_depth(&settings, "warren.sample.slow").await, 1, "handed back");
}
