//! Nodes lost and restarted under load: nothing lost, duplicates only as marked redeliveries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use warren_common::Job;
use warren_e2e::cluster::Cluster;
use warren_e2e::{ConsumerProcess, DEADLINE, bin, queue_depth as depth, repo_root};
use warren_producer::{Producer, PublishOptions};

use crate::{SLOW, cluster_settings, job, results, until};

/// The environment that makes a consumer binary use `settings`' broker list and quorum queues.
fn consumer_env(settings: &warren_infra::Settings) -> Vec<(String, String)> {
    vec![
        ("WARREN__BROKER__URL".into(), settings.broker.url.clone()),
        ("WARREN__BROKER__CONNECT_TIMEOUT_MS".into(), "3000".into()),
        ("WARREN__TOPOLOGY__QUEUE_TYPE".into(), "quorum".into()),
        ("WARREN__CONSUMER__KINDS".into(), "checksum".into()),
    ]
}

async fn start_consumer(vhost: &warren_e2e::Vhost, env: &[(String, String)]) -> ConsumerProcess {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ConsumerProcess::start(vhost, &env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_under_load_loses_no_job_and_its_consumers_move_on() {
    const JOBS: usize = 5000;
    let cluster = Cluster::get();
    let _turn = Cluster::turn().await;
    let vhost = cluster.vhost("node-loss");
    // Consumers dial node A (wr1) first, the producer node B (wr2), observers node C (wr3).
    let on_a = cluster_settings(cluster, &vhost, &[0, 1, 2]);
    let on_b = cluster_settings(cluster, &vhost, &[1, 2, 0]);
    let on_c = cluster_settings(cluster, &vhost, &[2, 1]);
    let env = consumer_env(&on_a);
    let consumers = [start_consumer(&vhost, &env).await, start_consumer(&vhost, &env).await];
    for c in &consumers {
        c.wait_for_log("node=127.0.0.1:5681").await;
    }
    let producer = Arc::new(Producer::connect(on_b.clone()).await.expect("producer on node B"));
    let publishing = tokio::spawn({
        let producer = producer.clone();
        async move {
            futures_util::stream::iter(0..JOBS)
                .map(|i| {
                    let producer = producer.clone();
                    // No reply_to: results go to the (quorum) results queue, every copy kept.
                    async move {
                        producer
                            .publish(&job(i), &PublishOptions::default())
                            .await
                            .unwrap_or_else(|e| panic!("job {i}: {e}"))
                            .job_id
                    }
                })
                .buffer_unordered(64)
                .collect::<Vec<_>>()
                .await
        }
    });
    until("a fifth of the results", SLOW, || async { depth(&on_c, "warren.results").await as usize >= JOBS / 5 }).await;
    let before = depth(&on_c, "warren.results").await;
    let killed = Instant::now();
    cluster.node("kill", 0).await;
    let mut moved = Vec::new();
    for c in &consumers {
        c.wait_for_log("reconnected; consuming again").await;
        moved.push(killed.elapsed());
    }
    let ids = tokio::time::timeout(SLOW, publishing).await.expect("every job published").expect("publisher");
    let rejoined = cluster.node("restart", 0).await;
    assert!(cluster.healthy().await, "node A is back in the cluster");
    let seen = results(&on_c, JOBS, SLOW).await;
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let dead = depth(&on_c, "warren.checksum.dead").await;
    println!(
        "node loss: {JOBS} jobs, node A SIGKILLed after {before} results; consumers consuming again after {:?}; \
         node A back in the cluster {rejoined:?} after its restart; {} jobs answered, {duplicates} duplicate \
         results (marked by job id), {dead} dead letters",
        moved,
        seen.len()
    );
    assert_eq!(ids.len(), JOBS);
    assert!(ids.iter().all(|id| seen.contains_key(id)), "every job has a result: 0 lost");
    assert_eq!(dead, 0, "nothing dead-lettered");
    for c in &consumers {
        c.signal("TERM").await;
    }
    for c in consumers {
        let (code, log) = c.wait().await;
        assert_eq!(code, Some(0), "{log}");
        assert!(log.contains("node=127.0.0.1:5682") || log.contains("node=127.0.0.1:5683"), "moved on: {log}");
        assert!(log.contains("guest:***@") && !log.contains("guest:guest@"), "every URL of the list redacted: {log}");
    }
    Arc::into_inner(producer).expect("sole owner").close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_under_load_loses_no_job() {
    let cluster = Cluster::get();
    let _turn = Cluster::turn().await;
    let vhost = cluster.vhost("rolling");
    let all = cluster_settings(cluster, &vhost, &[0, 1, 2]);
    let env = consumer_env(&all);
    let consumers = [start_consumer(&vhost, &env).await, start_consumer(&vhost, &env).await];
    let producer = Arc::new(Producer::connect(cluster_settings(cluster, &vhost, &[1, 2, 0])).await.expect("producer"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A steady load for as long as the restarts take: 100 jobs/s, 32 in flight.
    let publishing = tokio::spawn({
        let (producer, stop) = (producer.clone(), stop.clone());
        async move {
            let mut ids = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut in_flight = futures_util::stream::FuturesUnordered::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || !in_flight.is_empty() {
                tokio::select! {
                    _ = tick.tick(), if in_flight.len() < 32 && !stop.load(std::sync::atomic::Ordering::Relaxed) => {
                        let producer = producer.clone();
                        in_flight.push(async move { producer.publish(&job(i), &PublishOptions::default()).await });
                        i += 1;
                    }
                    Some(done) = in_flight.next() => ids.push(done.unwrap_or_else(|e| panic!("a publish failed: {e}")).job_id),
                }
            }
            ids
        }
    });
    let started = Instant::now();
    let mut took = Vec::new();
    for node in 0..3 {
        until("the cluster is whole", SLOW, || cluster.healthy()).await;
        // A clean stop and start, as an operator's upgrade does, one node at a time.
        cluster.node("stop", node).await;
        took.push(cluster.node("restart", node).await);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ids = tokio::time::timeout(SLOW, publishing).await.expect("publishing ends").expect("publisher");
    let seen = results(&all, ids.len(), SLOW).await;
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let dead = depth(&all, "warren.checksum.dead").await;
    println!(
        "rolling restart of wr1, wr2, wr3 in {:?} (each back in {took:?}): {} jobs published, {} answered, \
         {duplicates} duplicates, {dead} dead letters",
        started.elapsed(),
        ids.len(),
        seen.len()
    );
    assert!(ids.len() > 500, "the load ran through the restarts");
    assert!(ids.iter().all(|id| seen.contains_key(id)), "every job has a result: 0 lost");
    assert_eq!(dead, 0);
    for c in &consumers {
        c.signal("TERM").await;
    }
    for c in consumers {
        assert_eq!(c.wait().await.0, Some(0));
    }
    Arc::into_inner(producer).expect("sole owner").close().await;
}

async fn ctl(cluster: &Cluster, vhost: &warren_e2e::Vhost, args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(bin("warrenctl"))
        .args(args)
        .current_dir(repo_root())
        .env("WARREN_CONFIG_DIR", repo_root().join("config"))
        .env("WARREN__TOPOLOGY__QUEUE_TYPE", "quorum")
        // Node A first: it is stopped below, so warrenctl must move on to the others.
        .env("WARRENCTL_URL", cluster.urls(vhost, &[0, 1, 2]))
        .env("WARRENCTL_MGMT_URL", cluster.mgmt_urls(&[0, 1, 2]))
        .output()
        .await
        .expect("run warrenctl");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("$ warrenctl {}\n{stdout}{stderr}", args.join(" "));
    (out.status.code().unwrap_or(-1), stdout.into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warrenctl_status_and_replay_work_on_the_cluster_with_a_node_down() {
    let cluster = Cluster::get();
    let _turn = Cluster::turn().await;
    let vhost = cluster.vhost("warrenctl");
    let settings = cluster_settings(cluster, &vhost, &[1, 2, 0]);
    // Dead letters from real failures: checksum jobs nobody can run (a kind not served) ...
    let producer = Producer::connect(settings.clone()).await.expect("producer");
    producer.declare_topology().await.expect("topology");
    let mut strict = settings.clone();
    strict.consumer.kinds = vec!["checksum".into()];
    strict.limits.max_body_bytes = 16;
    let fleet = warren_e2e::Fleet::start(strict).await;
    for i in 0..5 {
        let big = Job::from(warren_common::checksum::ChecksumJob { data: vec![i; 64], rounds: 1 });
        producer.publish(&big, &PublishOptions::default()).await.expect("publish");
    }
    until("5 dead letters", DEADLINE, || async { depth(&settings, "warren.checksum.dead").await == 5 }).await;
    fleet.stop().await;
    producer.close().await;

    cluster.node("stop", 0).await;
    // The management API's statistics lag by a few seconds: ask until they show the five.
    until("warrenctl status shows the dead letters", DEADLINE, || async {
        let (code, out) = ctl(cluster, &vhost, &["status", "--json"]).await;
        assert_eq!(code, 0, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v["queues"].as_array().into_iter().flatten().any(|q| q["kind"] == "checksum" && q["dead_letters"] == 5)
    })
    .await;
    let (code, replay) = ctl(cluster, &vhost, &["replay", "warren.checksum.dead"]).await;
    assert_eq!(code, 0, "{replay}");
    cluster.node("restart", 0).await;
    until("the replayed jobs reach the work queue", DEADLINE, || async {
        depth(&settings, "warren.checksum").await == 5 && depth(&settings, "warren.checksum.dead").await == 0
    })
    .await;
    println!("warrenctl on the cluster with wr1 down: status listed the dead letters, replay moved 5 back");
}

/// A worker started while no node of its list answers waits for one (issue 24, item 11): alive
/// on `/healthz`, not ready on `/readyz`, then consuming once the node is back 20 s later, its
/// jobs answered, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_while_its_broker_is_down_waits_for_it() {
    let cluster = Cluster::get();
    let _turn = Cluster::turn().await;
    let vhost = cluster.vhost("startup-wait");
    let on_a = cluster_settings(cluster, &vhost, &[0]);
    let on_b = cluster_settings(cluster, &vhost, &[1, 2]);
    cluster.node("stop", 0).await;
    let mut env = consumer_env(&on_a);
    env.push(("WARREN__BROKER__RECONNECT_MAX_MS".into(), "2000".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut worker = ConsumerProcess::spawn_bin("warren-consumer", &vhost, &env);
    worker.wait_for_log("no broker node answers yet").await;
    let log = worker.log();
    let addr = log
        .lines()
        .find(|l| l.contains("serving /metrics"))
        .and_then(|l| l.split("addr=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .expect("the worker serves /healthz before it connects")
        .to_owned();
    let get = |path: &str| match ureq::get(&format!("http://{addr}{path}")).call() {
        Ok(r) => r.status().as_u16(),
        Err(ureq::Error::StatusCode(code)) => code,
        Err(e) => panic!("{path}: {e}"),
    };
    // The broker stays away for 20 s: that is the scenario, not a wait for a condition.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(!worker.exited(), "the worker waited:\n{}", worker.log());
    assert_eq!((get("/healthz"), get("/readyz")), (200, 503), "alive, not ready");
    assert!(!worker.log().contains("change-me") && !worker.log().contains(":guest@"), "no credential logged");
    cluster.node("restart", 0).await;
    worker.wait_for_log("consumer ready").await;
    until("the worker ready", DEADLINE, || std::future::ready(get("/readyz") == 200)).await;
    let mut producer = Producer::connect(on_b.clone()).await.expect("producer on node B");
    producer.enable_replies().await.expect("a reply queue");
    for i in 0..20 {
        let ticket = producer.publish(&job(i), &warren_e2e::want_result()).await.expect("publish");
        assert!(ticket.wait(DEADLINE).await.expect("answered").status == warren_common::ResultStatus::Ok);
    }
    let tries = worker.log().matches("no broker node answers yet").count();
    println!("startup wait: {tries} tries while the node was down, then consuming; 20 jobs answered");
    assert!(!worker.exited(), "no restart");
    worker.signal("TERM").await;
    assert_eq!(worker.wait().await.0, Some(0));
    producer.close().await;
}

/// Job control on quorum queues: a delayed job runs on time through the quorum delay queues, a
/// cancel through the (replicated) stream stops one, an expired deadline is refused, and a
/// second worker started after the cancel knows it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_control_works_on_quorum_queues() {
    use warren_common::ResultStatus;
    let cluster = Cluster::get();
    let _turn = Cluster::turn().await;
    let vhost = cluster.vhost("control");
    let settings = cluster_settings(cluster, &vhost, &[0, 1, 2]);
    let fleet = warren_e2e::Fleet::start(settings.clone()).await;
    let mut producer = Producer::connect(cluster_settings(cluster, &vhost, &[1, 2, 0])).await.expect("producer");
    producer.enable_replies().await.expect("a reply queue");
    let opts = warren_e2e::want_result().delay(Duration::from_secs(3));
    let not_before = opts.control.not_before_ms.expect("set");
    let delayed = producer.publish(&job(1), &opts).await.expect("publish");
    let cancelled = producer.publish(&job(2), &opts).await.expect("publish");
    let expired =
        producer.publish(&job(3), &warren_e2e::want_result().deadline(std::time::SystemTime::now())).await.expect("p");
    producer.cancel(&[&cancelled.job_id]).await.expect("cancel on the cluster's stream");
    let r = delayed.wait(DEADLINE).await.expect("answered");
    assert_eq!(r.status, ResultStatus::Ok, "{r:?}");
    let late_ms = (r.timing.started_at_us / 1000).checked_sub(not_before).expect("not early");
    let error = |r: warren_common::JobResult| r.error.map(|e| e.error_type).unwrap_or_default();
    assert_eq!(error(cancelled.wait(DEADLINE).await.expect("answered")), "cancelled");
    assert_eq!(error(expired.wait(DEADLINE).await.expect("answered")), "deadline_exceeded");
    fleet.stop().await;
    // A worker started now reads the cancel from the stream's start.
    let target = producer.publish(&job(4), &warren_e2e::want_result()).await.expect("publish");
    producer.cancel(&[&target.job_id]).await.expect("cancel");
    let fleet = warren_e2e::Fleet::start(settings.clone()).await;
    assert_eq!(error(target.wait(DEADLINE).await.expect("answered")), "cancelled");
    println!("job control on quorum queues: a delayed job {late_ms} ms late, cancels and deadlines honoured");
    producer.close().await;
    fleet.stop().await;
}
