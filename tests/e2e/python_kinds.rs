//! Python kinds (`warren_worker`) hosted by the worker, against the real broker: the kinds of
//! `clients/python/tests/sample_kinds.py` in real child processes (issue 27, in progress).

use std::time::Duration;

use base64::Engine as _;
use rstest::rstest;
use warren_common::headers as h;
use warren_common::{Encoding, Job, ResultStatus};
use warren_e2e::{DEADLINE, Vhost, collect_messages, fleet_and_producer, repo_root, settings_for, vhost, want_result};
use warren_infra::fields;
use warren_producer::PublishOptions;

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_kinds_answer_fail_by_class_and_are_killed_past_their_deadline(vhost: Vhost) {
    let mut settings = settings_for(&vhost);
    let python = repo_root().join("clients").join("python");
    settings.python.modules = vec!["sample_kinds".into()];
    settings.python.path = vec![python.display().to_string(), python.join("tests").display().to_string()];
    settings.python.children = 2;
    settings.consumer.kinds = vec!["sample.digest".into(), "sample.fail".into(), "sample.slow".into()];
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let digest = |data: &[u8]| {
        Job::named("sample.digest", serde_json::json!({"data": base64::engine::general_purpose::STANDARD.encode(data)}))
    };
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
    // A bytes field that is not base64 is refused by the child with the reason.
    let opts = PublishOptions { encoding: Some(Encoding::Json), ..want_result() };
    let bad = Job::named("sample.digest", serde_json::json!({"data": "%%%"}));
    let r = producer.publish(&bad, &opts).await.expect("publish").wait(DEADLINE).await.expect("r");
    assert_eq!(r.error.map(|e| e.error_type).as_deref(), Some("invalid_params"));
    producer.close().await;
    fleet.stop().await;
}
