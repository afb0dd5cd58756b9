//! `warrenctl`, the compiled binary, against queues each test makes in its own vhost.

use std::collections::HashSet;
use std::process::Stdio;

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, ByteArray, FieldArray, FieldTable, LongString};
use rstest::rstest;
use serde_json::Value;
use tokio::process::Command;
use warren_common::checksum::ChecksumJob;
use warren_common::{Job, JobResult, ResultStatus};
use warren_e2e::{
    DEADLINE, Fleet, Vhost, bin, broker, collect_messages, photo_resize, queue_depth, repo_root, settings_for, vhost,
};
use warren_infra::Settings;
use warren_producer::{Producer, PublishOptions};

async fn ctl(vhost: &Vhost, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("warrenctl"))
        .args(args)
        .current_dir(repo_root())
        .env("WARREN_CONFIG_DIR", repo_root().join("config"))
        .env("WARRENCTL_URL", vhost.amqp_url())
        .env("WARRENCTL_MGMT_URL", broker::management_url())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run warrenctl");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    println!("$ warrenctl {}\n{stdout}{stderr}", args.join(" "));
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Resize jobs a consumer with a tiny pixel limit dead-letters (limit_exceeded): real failures.
async fn dead_letters_from_real_failures(settings: &Settings, n: usize) -> Vec<String> {
    let mut strict = settings.clone();
    strict.limits.max_image_pixels = 10_000;
    let fleet = Fleet::start(strict).await;
    let producer = Producer::connect(settings.clone()).await.expect("producer");
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(producer.publish(&photo_resize(), &PublishOptions::default()).await.expect("publish").job_id);
    }
    let deadline = std::time::Instant::now() + DEADLINE;
    while queue_depth(settings, "warren.image.resize.dead").await < n as u32 {
        assert!(std::time::Instant::now() < deadline, "jobs were not dead-lettered");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    producer.close().await;
    fleet.stop().await;
    ids
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peek_shows_jobs_and_dead_letters_and_leaves_the_queues_as_they_were(vhost: Vhost) {
    let settings = settings_for(&vhost);
    let dead_ids = dead_letters_from_real_failures(&settings, 2).await;
    let producer = Producer::connect(settings.clone()).await.expect("producer");
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(producer.publish(&photo_resize(), &PublishOptions::default()).await.expect("publish").job_id);
    }
    assert_eq!(queue_depth(&settings, "warren.image.resize").await, 3);

    let (code, out, _) = ctl(&vhost, &["--json", "peek", "warren.image.resize", "-n", "2"]).await;
    assert_eq!(code, 0);
    let shown = json(&out);
    let shown = shown.as_array().expect("array");
    assert_eq!(shown.len(), 2);
    assert_eq!(shown[0]["job_id"], ids[0].as_str());
    assert_eq!(shown[0]["kind"], "image.resize");
    assert_eq!(shown[0]["image"]["format"], "jpeg");
    assert_eq!((shown[0]["image"]["width"].as_u64(), shown[0]["image"]["height"].as_u64()), (Some(640), Some(427)));
    assert_eq!(queue_depth(&settings, "warren.image.resize").await, 3, "peek leaves the depth unchanged");

    let (code, out, _) = ctl(&vhost, &["peek", "warren.image.resize.dead"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("limit_exceeded") && out.contains("warren.jobs/image.resize"), "{out}");
    assert!(out.contains(&dead_ids[0][..8]) && out.contains("marks them redelivered"), "{out}");
    let widest = out.lines().map(|l| l.chars().count()).max();
    assert!(widest.is_some_and(|w| w <= 120), "the default view fits 120 columns ({widest:?}):\n{out}");
    let (code, wide, _) = ctl(&vhost, &["peek", "warren.image.resize.dead", "--wide"]).await;
    assert_eq!(code, 0);
    assert!(wide.contains(&dead_ids[0]) && wide.contains(&dead_ids[1]), "--wide shows the whole ids: {wide}");
    assert_eq!(queue_depth(&settings, "warren.image.resize.dead").await, 2);

    // status counts the backlog and the dead letters from one listing of the vhost's queues; the
    // management API's figures trail the queues by up to its statistics interval.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let row = loop {
        let (code, out, _) = ctl(&vhost, &["--json", "status"]).await;
        assert_eq!(code, 0);
        let status = json(&out);
        let row = status["queues"].as_array().expect("queues").iter().find(|r| r["kind"] == "image.resize").cloned();
        let row = row.expect("an image.resize row");
        if (row["ready"].as_u64(), row["dead_letters"].as_u64()) == (Some(3), Some(2)) {
            break row;
        }
        assert!(tokio::time::Instant::now() < deadline, "status never showed 3 ready and 2 dead: {row}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!((row["queue"].as_str(), row["retrying"].as_u64()), (Some("warren.image.resize"), Some(0)), "{row}");

    let (code, _, err) = ctl(&vhost, &["peek", "no.such.queue"]).await;
    assert_eq!(code, 4, "{err}");
    producer.close().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_brings_real_dead_letters_back_and_the_fixed_consumer_completes_them(vhost: Vhost) {
    let settings = settings_for(&vhost);
    let ids = dead_letters_from_real_failures(&settings, 3).await;

    let (code, out, _) = ctl(&vhost, &["--json", "replay", "warren.image.resize.dead", "--dry-run"]).await;
    assert_eq!(code, 0);
    let plan = json(&out);
    assert_eq!(plan["replayed"], 3);
    assert_eq!(plan["plan"][0]["to"], "warren.jobs/image.resize");
    assert_eq!(queue_depth(&settings, "warren.image.resize.dead").await, 3, "a dry run changes nothing");
    let (code, out, _) = ctl(
        &vhost,
        &["--json", "replay", "warren.image.resize.dead", "--dry-run", "--limit", "1", "--to", "elsewhere/key"],
    )
    .await;
    assert_eq!(code, 0);
    let plan = json(&out);
    assert_eq!((plan["replayed"].as_u64(), plan["plan"][0]["to"].as_str()), (Some(1), Some("elsewhere/key")));

    let (code, out, _) =
        ctl(&vhost, &["replay", "warren.image.resize.dead", "--filter", "reason=attempts_exhausted"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("replayed 0, skipped 3"), "{out}");

    // The fix: a consumer with the default limits.
    let fleet = Fleet::start(settings.clone()).await;
    let (code, out, _) = ctl(
        &vhost,
        &["replay", "warren.image.resize.dead", "--filter", "reason=permanent_error,kind=image.resize,since=1h"],
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("replayed 3, skipped 0 (filter), failed 0"), "{out}");
    let results = collect_messages(&settings, "warren.results", 3, DEADLINE).await;
    let mut done = HashSet::new();
    for r in &results {
        let r = JobResult::decode(&r.data, warren_common::Encoding::Json).expect("result");
        assert_eq!(r.status, ResultStatus::Ok, "{:?}", r.error);
        assert_eq!(r.attempt, 0, "the attempt counter was reset");
        done.insert(r.job_id);
    }
    assert_eq!(done, ids.into_iter().collect::<HashSet<_>>());
    assert_eq!(queue_depth(&settings, "warren.image.resize.dead").await, 0);
    fleet.stop().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_then_load_reproduces_messages_byte_for_byte_with_header_types(vhost: Vhost) {
    let settings = settings_for(&vhost);
    let conn = warren_infra::connect(&settings.broker, "test").await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    ch.queue_declare("ctl.src".into(), QueueDeclareOptions::durable(), FieldTable::default()).await.expect("queue");
    for i in 0..5u8 {
        let mut nested = FieldTable::default();
        nested.insert("deep".into(), AMQPValue::Double(f64::from(i) + 0.25));
        let mut headers = FieldTable::default();
        headers.insert("i8".into(), AMQPValue::ShortShortInt(-(i as i8)));
        headers.insert("u16".into(), AMQPValue::ShortUInt(u16::from(i) * 1000));
        headers.insert("i32".into(), AMQPValue::LongInt(-70_000));
        headers.insert("i64".into(), AMQPValue::LongLongInt(1 << 40));
        headers.insert("bool".into(), AMQPValue::Boolean(i % 2 == 0));
        headers.insert("float".into(), AMQPValue::Float(1.5));
        headers.insert("when".into(), AMQPValue::Timestamp(1_795_000_000));
        headers.insert("text".into(), AMQPValue::LongString(LongString::from(format!("message {i} – ünïcode"))));
        headers.insert("bytes".into(), AMQPValue::ByteArray(ByteArray::from(vec![0u8, 255, i])));
        headers.insert(
            "list".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongInt(1), AMQPValue::Void])),
        );
        headers.insert("table".into(), AMQPValue::FieldTable(nested));
        let props = BasicProperties::default()
            .with_content_type("application/octet-stream".into())
            .with_message_id(format!("m{i}").into())
            .with_priority(i)
            .with_expiration("600000".into())
            .with_headers(headers);
        let body: Vec<u8> = (0..=255u8).cycle().skip(usize::from(i)).take(1000 + usize::from(i)).collect();
        ch.basic_publish("".into(), "ctl.src".into(), BasicPublishOptions::default(), &body, props)
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
    let dir = std::env::temp_dir().join(format!("warrenctl-{}", vhost.name));
    std::fs::create_dir_all(&dir).expect("dir");
    let (f1, f2, f3) = (dir.join("copy.jsonl"), dir.join("taken.jsonl"), dir.join("again.jsonl"));
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();

    let (code, out, _) = ctl(&vhost, &["dump", "ctl.src", "--out", &path(&f1)]).await;
    assert_eq!(code, 0);
    assert!(out.contains("dumped 5 message(s)"), "{out}");
    assert_eq!(queue_depth(&settings, "ctl.src").await, 5, "dump without --ack leaves them");
    let (code, _, _) = ctl(&vhost, &["dump", "ctl.src", "--out", &path(&f2), "--ack"]).await;
    assert_eq!(code, 0);
    assert_eq!(queue_depth(&settings, "ctl.src").await, 0, "dump --ack takes them");
    let (code, out, _) = ctl(&vhost, &["load", &path(&f2)]).await;
    assert_eq!(code, 0);
    assert!(out.contains("published 5"), "{out}");
    assert_eq!(queue_depth(&settings, "ctl.src").await, 5);
    let (code, _, _) = ctl(&vhost, &["dump", "ctl.src", "--out", &path(&f3)]).await;
    assert_eq!(code, 0);

    let read = |p: &std::path::Path| {
        warrenctl::dumpfile::read(std::io::BufReader::new(std::fs::File::open(p).expect("dump"))).expect("parses").1
    };
    let (before, after) = (read(&f2), read(&f3));
    assert_eq!(before.len(), 5);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.body, b.body, "body");
        assert_eq!(a.properties, b.properties, "properties and typed headers");
        assert_eq!((&a.exchange, &a.routing_key), (&b.exchange, &b.routing_key));
    }
    println!("dump/load: 5 messages, bodies, properties and 11 typed headers identical after a round trip");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = ch.queue_delete("ctl.src".into(), QueueDeleteOptions::default()).await;
    let _ = conn.close(200, "done".into()).await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_midway_loses_nothing(vhost: Vhost) {
    const N: u32 = 120;
    let settings = settings_for(&vhost);
    let mut strict = settings.clone();
    strict.limits.max_body_bytes = 100;
    let fleet = Fleet::start(strict).await;
    let producer = Producer::connect(settings.clone()).await.expect("producer");
    for _ in 0..N {
        let job = Job::from(ChecksumJob { data: vec![1; 200], rounds: 1 });
        producer.publish(&job, &PublishOptions::default()).await.expect("publish");
    }
    let deadline = std::time::Instant::now() + DEADLINE;
    while queue_depth(&settings, "warren.checksum.dead").await < N {
        assert!(std::time::Instant::now() < deadline, "not dead-lettered");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    fleet.stop().await;

    let mut replay = Command::new(bin("warrenctl"))
        .args(["replay", "warren.checksum.dead", "--rate", "40"])
        .env("WARREN_CONFIG_DIR", repo_root().join("config"))
        .env("WARRENCTL_URL", vhost.amqp_url())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start replay");
    let deadline = std::time::Instant::now() + DEADLINE;
    while queue_depth(&settings, "warren.checksum").await < 10 {
        assert!(std::time::Instant::now() < deadline, "replay made no progress");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    replay.start_kill().expect("kill -9");
    let _ = replay.wait().await;

    let (dead, back) =
        (queue_depth(&settings, "warren.checksum.dead").await, queue_depth(&settings, "warren.checksum").await);
    println!(
        "replay killed midway: {back} replayed, {dead} still dead, {} duplicate(s)",
        (dead + back).saturating_sub(N)
    );
    assert!(back < N, "killed before the end");
    assert!(dead + back >= N && dead + back <= N + 1, "{dead} + {back}");
    let mut ids = HashSet::new();
    for q in ["warren.checksum.dead", "warren.checksum"] {
        let n = queue_depth(&settings, q).await as usize;
        for m in collect_messages(&settings, q, n, DEADLINE).await {
            ids.insert(m.properties.message_id().as_ref().expect("id").to_string());
        }
    }
    assert_eq!(ids.len(), N as usize, "every job is somewhere");
    producer.close().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_asks_first_and_reports_what_it_removed(vhost: Vhost) {
    let settings = settings_for(&vhost);
    let producer = Producer::connect(settings.clone()).await.expect("producer");
    producer.declare_topology().await.expect("topology");
    for _ in 0..4 {
        let job = Job::from(ChecksumJob { data: vec![], rounds: 1 });
        producer.publish(&job, &PublishOptions::default()).await.expect("publish");
    }
    let (code, _, err) = ctl(&vhost, &["purge", "warren.checksum"]).await;
    assert_eq!(code, 2, "no --yes and no terminal: refused");
    assert!(err.contains("without --yes"), "{err}");
    assert_eq!(queue_depth(&settings, "warren.checksum").await, 4);
    let (code, out, _) = ctl(&vhost, &["purge", "warren.checksum", "--yes"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("purged 4 message(s) from warren.checksum"), "{out}");
    assert_eq!(queue_depth(&settings, "warren.checksum").await, 0);
    producer.close().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_apply_then_diff_and_status(vhost: Vhost) {
    let settings = settings_for(&vhost);
    let (code, out, _) = ctl(&vhost, &["topology", "diff"]).await;
    assert_eq!(code, 1, "an empty vhost differs");
    assert!(out.contains("+ queue warren.checksum is missing"), "{out}");
    let (code, out, _) = ctl(&vhost, &["topology", "apply"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("declared 4 exchanges"), "{out}");
    let (code, out, _) = ctl(&vhost, &["topology", "diff"]).await;
    assert_eq!((code, out.contains("no differences")), (0, true), "{out}");

    let conn = warren_infra::connect(&settings.broker, "test").await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_delete("warren.checksum.dead".into(), QueueDeleteOptions::default()).await.expect("delete");
    ch.queue_declare("warren.checksum.retry.999ms".into(), QueueDeclareOptions::durable(), FieldTable::default())
        .await
        .expect("leftover");
    let _ = conn.close(200, "done".into()).await;
    let (code, out, _) = ctl(&vhost, &["topology", "diff"]).await;
    assert_eq!(code, 1);
    assert!(out.contains("+ queue warren.checksum.dead is missing"), "{out}");
    assert!(out.contains("- queue warren.checksum.retry.999ms exists but is not in the configuration"), "{out}");

    // Status and queues see what the management API sees (sampled every few seconds).
    let producer = Producer::connect(settings.clone()).await.expect("producer");
    for _ in 0..3 {
        producer
            .publish(&Job::from(ChecksumJob { data: vec![], rounds: 1 }), &PublishOptions::default())
            .await
            .expect("publish");
    }
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let (code, out, _) = ctl(&vhost, &["--json", "status"]).await;
        assert_eq!(code, 0);
        let status = json(&out);
        let checksum = status["queues"].as_array().expect("queues").iter().find(|q| q["kind"] == "checksum").cloned();
        let checksum = checksum.expect("checksum row");
        // Ready is exact at once (AMQP); the oldest message's age comes from the management
        // API's statistics, a few seconds later.
        assert_eq!(checksum["ready"], 3, "{checksum}");
        if checksum["oldest_age_s"].as_f64().is_some() {
            assert!(checksum.get("dead_letters").is_some() && checksum.get("drain_estimate_s").is_some());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "status never showed the oldest message: {checksum}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let (code, out, _) = ctl(&vhost, &["queues"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("warren.checksum") && out.contains("ready"), "{out}");
    producer.close().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_pipe_exits_quietly(vhost: Vhost) {
    let script = format!("set -o pipefail; {} queues --all | (exec 0<&-; true)", bin("warrenctl").display());
    let out = Command::new("bash")
        .args(["-c", &script])
        .env("WARREN_CONFIG_DIR", repo_root().join("config"))
        .env("WARRENCTL_URL", vhost.amqp_url())
        .output()
        .await
        .expect("bash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_consumers_and_ready_jobs_exactly_at_once(vhost: Vhost) {
    let settings = settings_for(&vhost);
    let producer = Producer::connect(settings.clone()).await.expect("producer");
    producer.declare_topology().await.expect("topology");
    for _ in 0..3 {
        producer.publish(&photo_resize(), &PublishOptions::default()).await.expect("publish");
    }
    let mut checksum_only = settings.clone();
    checksum_only.consumer.kinds = vec!["checksum".into()];
    let fleet = Fleet::start(checksum_only).await;
    // Straight away: the management API's statistics would still say 0 consumers, 0 ready.
    let (code, stdout, _) = ctl(&vhost, &["status", "--json"]).await;
    assert_eq!(code, 0);
    let v = json(&stdout);
    let row = |queue: &str| v["queues"].as_array().expect("queues").iter().find(|q| q["queue"] == queue).cloned();
    let checksum = row("warren.checksum").expect("checksum row");
    assert_eq!((checksum["consumers"].as_u64(), checksum["counts"].as_str()), (Some(1), Some("amqp")), "{checksum}");
    let resize = row("warren.image.resize").expect("resize row");
    assert_eq!((resize["ready"].as_u64(), resize["consumers"].as_u64()), (Some(3), Some(0)), "{resize}");
    fleet.stop().await;
    producer.close().await;
}

/// `warrenctl cancel` records a cancel on the stream, and `status` counts the cancelled ids
/// and the jobs waiting in the delay queues; an empty id is a usage error. (What a worker does
/// with a cancel: `control.rs`.)
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_records_and_status_counts_delayed_and_cancelled(vhost: Vhost) {
    let settings = settings_for(&vhost);
    let fleet = Fleet::start(settings.clone()).await;
    let producer = Producer::connect(settings.clone()).await.expect("producer");
    let job = Job::from(ChecksumJob { data: b"later".to_vec(), rounds: 1 });
    // 80 s: the first hop waits 60 s in one delay queue, long enough for the management API's
    // statistics (sampled every few seconds) to see them there.
    let opts = PublishOptions::default().delay(std::time::Duration::from_secs(80));
    let ids = [
        producer.publish(&job, &opts).await.expect("publish").job_id,
        producer.publish(&job, &opts).await.expect("publish").job_id,
    ];
    let tier = settings.retry_queue("warren.checksum", std::time::Duration::from_secs(60));
    warren_e2e::eventually("both wait in the 60 s delay queue", || async { queue_depth(&settings, &tier).await == 2 })
        .await;
    let (code, out, _) = ctl(&vhost, &["--json", "cancel", &ids[1], "no-such-job"]).await;
    assert_eq!(code, 0);
    assert_eq!(json(&out)["cancelled"].as_array().map(Vec::len), Some(2), "{out}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (code, out, _) = ctl(&vhost, &["--json", "status"]).await;
        assert_eq!(code, 0);
        let status = json(&out);
        let row = status["queues"].as_array().expect("queues").iter().find(|r| r["kind"] == "checksum").cloned();
        if row.as_ref().and_then(|r| r["delayed"].as_u64()) == Some(2) {
            assert_eq!(status["cancelled"].as_u64(), Some(2), "the stream's one record of two ids: {status}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "status never showed 2 delayed: {status}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let (code, out, _) = ctl(&vhost, &["status"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("delayed") && out.contains("cancelled: 2 job id(s)"), "{out}");
    let (code, _, err) = ctl(&vhost, &["cancel", ""]).await;
    assert_ne!(code, 0, "{err}");
    producer.close().await;
    fleet.stop().await;
}
