//! The Python child adapter against a real `python -m warren_worker.child` (the kinds of
//! `clients/python/tests/sample_kinds.py`): no broker, the process and its pipes only.

use std::time::Duration;

use warren_common::{CancelFlag, ErrorClass, Progress};
use warren_consumer::python::{Answer, Child, Ended, JobFrame, Launch};

fn launch() -> Launch {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("clients").join("python");
    Launch {
        interpreter: std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()),
        modules: vec!["sample_kinds".into()],
        path: vec![root.display().to_string(), root.join("tests").display().to_string()],
        ..Launch::default()
    }
}

fn job<'a>(id: &'a str, kind: &'a str, body: &'a [u8], progress: &'a Progress, cancel: &'a CancelFlag) -> JobFrame<'a> {
    JobFrame { id, kind, attempt: 0, deadline_ms: None, body, progress, cancel }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_declares_its_kinds_answers_and_is_killed_past_the_limit() {
    let (mut child, kinds) = Child::spawn(&launch()).await.expect("child starts");
    let names: Vec<&str> = kinds.iter().map(|k| k.name.as_str()).collect();
    assert!(names.contains(&"sample.digest") && names.contains(&"sample.slow"), "{names:?}");
    let digest = kinds.iter().find(|k| k.name == "sample.digest").expect("digest");
    assert_eq!((digest.time_limit_ms, digest.bytes_fields.as_slice()), (5_000, ["data".to_owned()].as_slice()));
    let (progress, cancel) = (Progress::default(), CancelFlag::default());
    let limit = Duration::from_secs(10);
    // "aGVsbG8=" is "hello": decoded once, in the child.
    let answer = child.run(&job("1", "sample.digest", br#"{"data":"aGVsbG8="}"#, &progress, &cancel), limit).await;
    let Ok(Answer::Output(json, bytes_at)) = answer else { panic!("{answer:?}") };
    let out: serde_json::Value = serde_json::from_str(&json).expect("output JSON");
    assert_eq!(bytes_at, ["/echo"], "where the output holds bytes");
    assert_eq!(out["sha256"], "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    assert!(child.rss_bytes > 1_000_000 && child.jobs == 1, "{} bytes, {} jobs", child.rss_bytes, child.jobs);
    let answer = child.run(&job("2", "sample.fail", br#"{"how":"transient"}"#, &progress, &cancel), limit).await;
    let Ok(Answer::Failed(e)) = answer else { panic!("{answer:?}") };
    assert_eq!((e.class(), e.error_type()), (ErrorClass::Transient, "backend_down"));
    // Progress reports reach the job's reporter; a cancel reaches the running job.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reports = Progress::to({
        let seen = seen.clone();
        move |f, _| seen.lock().expect("lock").push(f)
    });
    let cancel_it = CancelFlag::default();
    let slow = job("3", "sample.slow", br#"{"steps":200}"#, &reports, &cancel_it);
    let running = child.run(&slow, limit);
    let (answer, ()) = tokio::join!(running, async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel_it.raise();
    });
    let Ok(Answer::Failed(e)) = answer else { panic!("{answer:?}") };
    assert_eq!(e.error_type(), "cancelled");
    assert!(!seen.lock().expect("lock").is_empty(), "progress reported");
    // Past its limit the child is killed.
    let started = std::time::Instant::now();
    let answer =
        child.run(&job("4", "sample.slow", br#"{"steps":200}"#, &progress, &cancel), Duration::from_millis(200)).await;
    assert_eq!(answer, Err(Ended::Killed));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // A child that dies: its next job's answer says so.
    let (mut child, _) = Child::spawn(&launch()).await.expect("another child");
    let answer = child.run(&job("5", "sample.fail", br#"{"how":"exit"}"#, &progress, &cancel), limit).await;
    assert_eq!(answer, Err(Ended::Died));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_without_kinds_or_a_missing_one_is_a_clear_start_up_error() {
    let missing = Launch { modules: vec!["no_such_module_here".into()], ..launch() };
    let e = Child::spawn(&missing).await.expect_err("refused");
    assert!(format!("{e:#}").contains("ended before saying which kinds"), "{e:#}");
}
