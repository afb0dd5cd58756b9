//! Issue 25: the status store and web console. The real fleet publishes lifecycle events; the
//! real console stores them in a real SQLite file or a real PostgreSQL database and answers
//! each job by id; its page is driven in a real headless Chromium.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use rstest::rstest;
use serde_json::Value;
use warren_common::checksum::ChecksumJob;
use warren_common::fault::FaultJob;
use warren_common::{Job, ResultStatus};
use warren_console::Console;
use warren_console::store::Store;
use warren_e2e::console::{Browser, PgDatabase, api, await_job, call};
use warren_e2e::{
    ConsumerProcess, DEADLINE, Fleet, TempDir, Vhost, answer_checksum_jobs, eventually, queue_depth, repo_root, route,
    settings_for, vhost, want_result,
};
use warren_infra::Settings;
use warren_infra::settings::Secret;
use warren_producer::Producer;

/// Where a test's console keeps its events.
enum Db {
    Sqlite(TempDir),
    Postgres(PgDatabase),
}

impl Db {
    fn new(backend: &str) -> Self {
        match backend {
            "sqlite" => Db::Sqlite(TempDir::new("warren-console").expect("temp dir")),
            _ => Db::Postgres(PgDatabase::create("console")),
        }
    }

    fn url(&self) -> String {
        match self {
            Db::Sqlite(dir) => format!("sqlite://{}", dir.path().join("console.db").display()),
            Db::Postgres(db) => db.url(),
        }
    }
}

fn console_settings(vhost: &Vhost, db: &Db) -> Settings {
    let mut s = settings_for(vhost);
    route(&mut s, "fault").queue = "warren.fault".into();
    s.consumer.kinds = vec!["checksum".into(), "fault".into()];
    (s.retry.base_delay_ms, s.retry.max_delay_ms) = (100, 100);
    s.console.addr = "127.0.0.1:0".into();
    s.console.database_url = db.url();
    s.console.batch_wait_ms = 20;
    s
}

fn metric(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    tokio::task::block_in_place(|| warren_e2e::scrape::Scrape::take(addr)).value(name, labels)
}

async fn await_metric(addr: SocketAddr, name: &str, labels: &[(&str, &str)], at_least: f64) {
    eventually(&format!("{name}{labels:?} reaches {at_least}"), || async { metric(addr, name, labels) >= at_least })
        .await;
}

/// The console's queue and what it is bound to, declared as a console that ran once leaves them.
async fn declare_console_queue(settings: &Settings) {
    let conn = warren_infra::connect(&settings.broker, "test-console-queue").await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let plan = warren_infra::topology::Plan::console(settings);
    warren_infra::topology::declare_plan(&ch, settings, &plan).await.expect("the console's queue declared");
    let _ = conn.close(200, "declared".into()).await;
}

fn steps(answer: &Value) -> Vec<(String, u64)> {
    answer["timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .map(|e| (e["event"].as_str().unwrap_or("").to_owned(), e["attempt"].as_u64().unwrap_or(99)))
        .collect()
}

fn owned(v: &[(&str, u64)]) -> Vec<(String, u64)> {
    v.iter().map(|(e, a)| ((*e).to_owned(), *a)).collect()
}

/// Reads the live stream in a thread of its own; returns its lines as they come.
fn listen(url: String) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(DEADLINE)).build().into();
        let Ok(resp) = agent.get(&url).call() else { return };
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[rstest]
#[case::sqlite("sqlite")]
#[case::postgres("postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_tells_what_happened_to_each_job(vhost: Vhost, #[case] backend: &str) {
    let db = Db::new(backend);
    let settings = console_settings(&vhost, &db);
    let console = Console::start(settings.clone()).await.expect("console starts");
    let addr = console.addr;
    let stream = listen(format!("http://{addr}/api/stream?kind=checksum"));
    let fleet = Fleet::start(settings.clone()).await;
    let mut producer = Producer::connect(settings.clone()).await.expect("producer");
    producer.enable_replies().await.expect("replies");

    let reply = want_result();
    let ok = producer.publish(&Job::from(ChecksumJob { data: b"x".to_vec(), rounds: 1 }), &reply).await.expect("ok");
    let flaky = Job::from(FaultJob { transient_failures: 1, ..FaultJob::default() });
    let flaky = producer.publish(&flaky, &reply).await.expect("flaky");
    let slow = producer.publish(&Job::from(FaultJob { busy_ms: 900, ..FaultJob::default() }), &reply).await;
    let slow = slow.expect("slow");
    let bad = producer.publish_raw("checksum", b"{ not json", Some("application/json"), &reply).await.expect("bad");
    let ids = [ok.job_id.clone(), flaky.job_id.clone(), slow.job_id.clone(), bad.job_id.clone()];
    for t in [ok, flaky, slow, bad] {
        t.wait(DEADLINE).await.expect("a result");
    }

    // By id: status, attempts and the timeline in the order things happened.
    let a = await_job(addr, &ids[0], |b| b["job"]["status"] == "succeeded").await;
    assert_eq!(steps(&a), owned(&[("received", 0), ("started", 0), ("succeeded", 0)]));
    assert_eq!((a["job"]["kind"].as_str(), a["job"]["attempts"].as_u64()), (Some("checksum"), Some(1)));
    assert_eq!(a["job"]["worker_id"], settings.consumer.worker_id.as_str());
    assert!(a["job"]["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{a}");
    assert!(a["job"]["output_bytes"].as_u64().is_some_and(|b| b > 0) && a["job"]["run_ms"].is_u64(), "{a}");
    let b = await_job(addr, &ids[1], |b| b["job"]["status"] == "succeeded").await;
    assert_eq!(
        steps(&b),
        owned(&[("received", 0), ("started", 0), ("retried", 0), ("received", 1), ("started", 1), ("succeeded", 1)])
    );
    let attempts = b["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{b}");
    assert_eq!(
        (attempts[0]["outcome"].as_str(), attempts[0]["error"]["type"].as_str()),
        (Some("retried"), Some("injected_fault"))
    );
    assert!(attempts[0]["end_us"].as_i64() <= attempts[1]["start_us"].as_i64());
    assert_eq!(attempts[1]["outcome"], "succeeded");
    assert_eq!(b["job"]["error"]["type"], "injected_fault", "the error it met is kept");
    // A kind's progress reports, from its context, in the timeline.
    let c = await_job(addr, &ids[2], |b| b["job"]["status"] == "succeeded").await;
    let progress: Vec<&Value> =
        c["timeline"].as_array().expect("timeline").iter().filter(|e| e["event"] == "progress").collect();
    assert!((2..=10).contains(&progress.len()), "900 ms busy: a report at once, then at most 5 a second: {c}");
    assert!(
        progress
            .iter()
            .all(|p| p["text"] == "busy" && p["fraction"].as_f64().is_some_and(|f| (0.0..=1.0).contains(&f)))
    );
    assert_eq!(c["job"]["progress"], 1.0);
    let d = await_job(addr, &ids[3], |b| b["job"]["status"] == "dead_lettered").await;
    assert_eq!(
        (d["job"]["kind"].as_str(), d["job"]["error"]["type"].as_str()),
        (Some("unknown"), Some("malformed_envelope"))
    );
    let (status, missing) = tokio::task::block_in_place(|| api(addr, "/api/jobs/no-such-job"));
    assert_eq!(status, 404, "{missing}");
    // warrenctl job: the same from the command line.
    let console_url = format!("http://{addr}");
    let ctl = |args: Vec<String>| {
        let out = std::process::Command::new(warren_e2e::bin("warrenctl"))
            .args(&args)
            .current_dir(repo_root())
            .env("WARREN_CONFIG_DIR", repo_root().join("config"))
            .output()
            .expect("run warrenctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = ctl(vec!["job".into(), ids[1].clone(), "--console-url".into(), console_url.clone()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("fault succeeded after 2 attempt(s)") && out.contains("injected_fault"), "{out}");
    assert_eq!(out.matches(" received ").count(), 2, "both attempts' steps are listed: {out}");
    let (code, _, err) = ctl(vec!["job".into(), "no-such-job".into(), "--console-url".into(), console_url.clone()]);
    assert_eq!(code, Some(4), "an unknown job: {err}");
    let (code, out, _) = ctl(vec!["--json".into(), "job".into(), ids[2].clone(), "--console-url".into(), console_url]);
    let doc: Value = serde_json::from_str(&out).expect("--json prints the API's answer");
    assert_eq!((code, doc["job"]["status"].as_str()), (Some(0), Some("succeeded")));

    // The list: filters, pages, and a clear refusal of nonsense.
    let (_, fault) = tokio::task::block_in_place(|| api(addr, "/api/jobs?kind=fault"));
    let mut listed: Vec<&str> =
        fault["jobs"].as_array().expect("jobs").iter().filter_map(|j| j["job_id"].as_str()).collect();
    listed.sort_unstable();
    let mut want = vec![ids[1].as_str(), ids[2].as_str()];
    want.sort_unstable();
    assert_eq!(listed, want);
    let (_, dead) = tokio::task::block_in_place(|| api(addr, "/api/jobs?status=dead_lettered&since=1h"));
    assert_eq!(dead["jobs"].as_array().map(Vec::len), Some(1));
    let (_, first) = tokio::task::block_in_place(|| api(addr, "/api/jobs?limit=3"));
    let next = first["next"].as_str().expect("a next page").to_owned();
    let (_, second) = tokio::task::block_in_place(|| api(addr, &format!("/api/jobs?limit=3&cursor={next}")));
    let mut all: Vec<String> = [&first, &second]
        .iter()
        .flat_map(|p| p["jobs"].as_array().cloned().unwrap_or_default())
        .filter_map(|j| j["job_id"].as_str().map(str::to_owned))
        .collect();
    assert!(second["next"].is_null(), "4 jobs: the second page is the last");
    all.sort_unstable();
    let mut every = ids.to_vec();
    every.sort_unstable();
    assert_eq!(all, every, "two pages hold each job once");
    for nonsense in ["/api/jobs?status=happy", "/api/jobs?limit=0", "/api/jobs?since=soonish", "/api/jobs?cursor=x"] {
        let (status, body) = tokio::task::block_in_place(|| api(addr, nonsense));
        assert_eq!(status, 400, "{nonsense}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }

    // Counts, per-minute rates and failures grouped by error type.
    let (_, stats) = tokio::task::block_in_place(|| api(addr, "/api/stats?since=1h"));
    let count = |kind: &str, status: &str| {
        stats["counts"]
            .as_array()
            .expect("counts")
            .iter()
            .find(|c| c["kind"] == kind && c["status"] == status)
            .map(|c| c["jobs"].clone())
    };
    assert_eq!(count("checksum", "succeeded"), Some(1.into()));
    assert_eq!(count("fault", "succeeded"), Some(2.into()));
    let minutes_ok: u64 =
        stats["minutes"].as_array().expect("minutes").iter().filter_map(|m| m["succeeded"].as_u64()).sum();
    assert_eq!(minutes_ok, 3);
    let failures = stats["failures"].as_array().expect("failures");
    let failure = |ty: &str| failures.iter().find(|f| f["error_type"] == ty).cloned().unwrap_or(Value::Null);
    assert_eq!(
        (failure("injected_fault")["jobs"].as_u64(), failure("injected_fault")["dead_lettered"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(failure("malformed_envelope")["dead_lettered"].as_u64(), Some(1));

    // The live stream sent the checksum job as it succeeded.
    let streamed = tokio::task::block_in_place(|| {
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match stream.recv_timeout(left) {
                Ok(line) if line.starts_with("data:") && line.contains(&ids[0]) && line.contains("succeeded") => {
                    return line;
                }
                Ok(_) => {}
                Err(e) => panic!("no stream update for {}: {e}", ids[0]),
            }
        }
    });
    assert!(!streamed.contains("\"fault\""), "the stream's kind filter holds: {streamed}");

    // An event delivered twice is stored once; a message that is not events is dead-lettered
    // with the consumer going on.
    let conn = warren_infra::connect(&settings.broker, "test-console").await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let exchange = settings.topology.events_exchange.as_str();
    let again = serde_json::to_vec(&vec![a["timeline"][2].clone()]).expect("json");
    for body in [b"not events".to_vec(), again] {
        ch.basic_publish(
            exchange.into(),
            "checksum.succeeded".into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("routed");
    }
    await_metric(addr, "warren_console_events_total", &[("outcome", "duplicate")], 1.0).await;
    assert_eq!(metric(addr, "warren_console_events_total", &[("outcome", "malformed")]), 1.0);
    let dead_queue = settings.dead_queue(&settings.console.queue);
    let start = Instant::now();
    while queue_depth(&settings, &dead_queue).await < 1 {
        assert!(start.elapsed() < DEADLINE, "the malformed message reaches {dead_queue}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a_again = await_job(addr, &ids[0], |_| true).await;
    assert_eq!(steps(&a_again).len(), 3, "the duplicate added nothing");
    let stored = metric(addr, "warren_console_events_total", &[("outcome", "stored")]);
    println!("console ({backend}): 4 jobs, {stored} events stored, 1 duplicate, 1 malformed message dead-lettered");
    assert_eq!(stored, 3.0 + 6.0 + (3.0 + progress.len() as f64) + 1.0);
    let _ = conn.close(200, "done".into()).await;
    producer.close().await;
    fleet.stop().await;
    console.shutdown().await;
}

/// The console's binary on `db`, serving on a free port, once it reads events.
async fn console_binary(vhost: &Vhost, db: &Db) -> (ConsumerProcess, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let (addr_text, url) = (addr.to_string(), db.url());
    let env = [
        ("WARREN__CONSOLE__ADDR", addr_text.as_str()),
        ("WARREN__CONSOLE__DATABASE_URL", url.as_str()),
        ("WARREN__CONSOLE__BATCH", "50"),
    ];
    let p = ConsumerProcess::spawn_bin("warren-console", vhost, &env);
    p.wait_for_log("reading lifecycle events").await;
    (p, addr)
}

/// The console as its binary: killed (SIGKILL) while the fleet runs, started again on the same
/// file, it ends with every job and every event exactly once.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_killed_mid_stream_loses_no_event(vhost: Vhost) {
    const JOBS: usize = 400;
    let db = Db::new("sqlite");
    let settings = console_settings(&vhost, &db);
    let (first, addr) = console_binary(&vhost, &db).await;
    let fleet = Fleet::start(settings.clone()).await;
    let mut producer = Producer::connect(settings.clone()).await.expect("producer");
    producer.enable_replies().await.expect("replies");
    let mut tickets = Vec::new();
    for i in 0..JOBS {
        let job = Job::from(ChecksumJob { data: format!("job {i}").into_bytes(), rounds: 1 });
        tickets.push(producer.publish(&job, &want_result()).await.expect("publish"));
        if i == JOBS / 4 {
            // Some stored: the console is in the middle of the stream.
            let start = Instant::now();
            while tokio::task::block_in_place(|| api(addr, "/api/jobs?limit=1")).1["jobs"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                assert!(start.elapsed() < DEADLINE, "the console stores something");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if i == JOBS / 2 {
            first.signal("KILL").await;
        }
    }
    for t in tickets {
        assert_eq!(t.wait(DEADLINE).await.expect("result").status, ResultStatus::Ok);
    }
    let (_, log) = first.wait().await;
    let (second, addr) = console_binary(&vhost, &db).await;
    let start = Instant::now();
    loop {
        let (_, stats) = tokio::task::block_in_place(|| api(addr, "/api/stats?since=1h"));
        let done = stats["counts"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["status"] == "succeeded"))
            .and_then(|c| c["jobs"].as_u64());
        if done == Some(JOBS as u64) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "every job succeeded in the store: {stats}\nfirst console's log:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.signal("TERM").await;
    let (code, _) = second.wait().await;
    assert_eq!(code, Some(0), "SIGTERM stops the console cleanly");
    let store = Store::open(&db.url()).await.expect("the store opens");
    let (jobs, events) = store.size().await.expect("size");
    let bytes = store.bytes().await.expect("bytes");
    println!(
        "console killed mid-stream: {jobs} jobs, {events} events after the restart ({} bytes, {} per job)",
        bytes,
        bytes / jobs.max(1)
    );
    assert_eq!((jobs, events), (JOBS as i64, 3 * JOBS as i64), "every event once: none lost, none twice");
    store.close().await;
    producer.close().await;
    fleet.stop().await;
}

/// Reading is open; replaying needs the token. In a real browser: find a dead-lettered job by
/// id, see its timeline, replay it from the page (a wrong token refused), see it answered.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_finds_a_job_and_replays_its_dead_letter_with_the_token(vhost: Vhost) {
    const TOKEN: &str = "console-test-token-7f3a";
    let db = Db::new("sqlite");
    let mut settings = console_settings(&vhost, &db);
    settings.console.token = Secret(TOKEN.into());
    settings.consumer.retry_timeouts = false;
    route(&mut settings, "fault").time_limit_ms = 500;
    let console = Console::start(settings.clone()).await.expect("console starts");
    let addr = console.addr;
    let fleet = Fleet::start(settings.clone()).await;
    let mut producer = Producer::connect(settings.clone()).await.expect("producer");
    producer.enable_replies().await.expect("replies");
    // A job past its time limit is dead-lettered (timeouts are permanent here); a few others
    // fill the page.
    let slow = producer.publish(&Job::from(FaultJob { busy_ms: 1200, ..FaultJob::default() }), &want_result()).await;
    let slow = slow.expect("publish");
    let id = slow.job_id.clone();
    for i in 0..5 {
        let job = Job::from(ChecksumJob { data: vec![i; 64], rounds: 1 });
        producer.publish(&job, &want_result()).await.expect("publish").wait(DEADLINE).await.expect("result");
    }
    let flaky =
        producer.publish(&Job::from(FaultJob { transient_failures: 1, ..FaultJob::default() }), &want_result()).await;
    flaky.expect("publish").wait(DEADLINE).await.expect("result");
    assert_eq!(slow.wait(DEADLINE).await.expect("error result").status, ResultStatus::Error);
    await_job(addr, &id, |b| b["job"]["status"] == "dead_lettered").await;
    let dead_queue = settings.dead_queue("warren.fault");

    // The API refuses a replay without the token or with another, and changes nothing.
    let url = format!("http://{addr}/api/dead/{dead_queue}/replay");
    for token in [None, Some("wrong-token")] {
        let (status, body) = tokio::task::block_in_place(|| call("POST", &url, token));
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(!body.to_string().contains(TOKEN));
    }
    assert_eq!(queue_depth(&settings, &dead_queue).await, 1);
    // The operator raises the time limit; the dead letter can now be answered.
    fleet.stop().await;
    route(&mut settings, "fault").time_limit_ms = 10_000;
    let fleet = Fleet::start(settings.clone()).await;

    let base = format!("http://{addr}/");
    let shot = TempDir::new("warren-console-shot").expect("temp dir");
    let page = tokio::task::spawn_blocking({
        let (id, dead_queue) = (id.clone(), dead_queue.clone());
        let shot = shot.path().join("console.png");
        move || {
            let browser = Browser::start();
            browser.goto(&base);
            let input = browser.find("#job-id");
            browser.type_into(&input, &id);
            browser.click(&browser.find("#find button"));
            browser.wait_for("#job-status", |t| t == "dead_lettered");
            let steps: Vec<String> = browser.find_all("#timeline tr.ev").iter().map(|e| browser.text(e)).collect();
            assert!(steps.iter().any(|s| s.contains("dead_lettered")), "the timeline shows the dead letter: {steps:?}");
            let attempts = browser.text(&browser.find("#attempts"));
            assert!(attempts.contains("timeout:"), "its error is shown: {attempts}");
            // The dead-letter queue, with its message (the management API samples every 5 s).
            let row = format!("#dead tr[data-queue=\"{dead_queue}\"] td.depth");
            browser.wait_for(&row, |t| t == "1");
            let token = browser.find("#token");
            browser.type_into(&token, "wrong-token");
            browser.click(&browser.find(&format!("#dead button[data-queue=\"{dead_queue}\"]")));
            browser.wait_for("#replay-result", |t| t.contains("Bearer"));
            browser.type_into(&token, TOKEN);
            browser.click(&browser.find(&format!("#dead button[data-queue=\"{dead_queue}\"]")));
            browser.wait_for("#replay-result", |t| t.contains("Replayed 1"));
            // The replayed job is answered, and the page says so.
            let start = Instant::now();
            loop {
                browser.click(&browser.find("#find button"));
                let status = browser.wait_for("#job-status", |t| !t.is_empty());
                if browser.text(&status) == "succeeded" {
                    break;
                }
                assert!(start.elapsed() < DEADLINE, "the replayed job succeeds on the page");
                std::thread::sleep(Duration::from_millis(200));
            }
            let runs: Vec<String> = browser.find_all("#attempts tbody tr").iter().map(|r| browser.text(r)).collect();
            assert_eq!(runs.len(), 2, "two lives: dead-lettered, then replayed and answered: {runs:?}");
            assert!(runs[0].contains("dead_lettered") && runs[1].contains("succeeded"), "{runs:?}");
            assert!(!browser.source().contains(TOKEN), "the token is not in the page");
            browser.screenshot(&shot);
            if let Ok(to) = std::env::var("WARREN_CONSOLE_SCREENSHOT") {
                std::fs::copy(&shot, repo_root().join(to)).expect("copy the screenshot");
            }
        }
    });
    page.await.expect("the browser session");
    let answered = await_job(addr, &id, |b| b["job"]["status"] == "succeeded").await;
    assert!(steps(&answered).iter().any(|(e, _)| e == "dead_lettered"), "the timeline keeps the first life");
    assert_eq!(queue_depth(&settings, &dead_queue).await, 0);
    assert_eq!(metric(addr, "warren_console_replays_total", &[("outcome", "refused")]), 3.0);
    assert_eq!(metric(addr, "warren_console_replays_total", &[("outcome", "done")]), 1.0);
    producer.close().await;
    fleet.stop().await;
    console.shutdown().await;
}

/// Publishes event messages (each a JSON array of events) to the events exchange, back to back.
async fn publish_events(settings: &Settings, messages: &[Vec<Value>]) {
    let conn = warren_infra::connect(&settings.broker, "test-console-events").await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let exchange = settings.topology.events_exchange.as_str();
    let mut sent = Vec::new();
    for events in messages {
        let body = serde_json::to_vec(events).expect("json");
        let props = BasicProperties::default();
        let publish =
            ch.basic_publish(exchange.into(), "checksum.received".into(), BasicPublishOptions::default(), &body, props);
        sent.push(publish.await.expect("publish"));
    }
    for confirm in sent {
        confirm.await.expect("confirmed");
    }
    let _ = conn.close(200, "done".into()).await;
}

fn received(job_id: &str) -> Value {
    let now = warren_console::ingest::now_us();
    let e = warren_console::event::Event::new("received", job_id, "checksum", "warren.checksum", "w", now, 0);
    serde_json::to_value(e).expect("json")
}

/// The database fails under the console (a table taken away): it holds the events, says it is
/// not ready, and stores them once the table is back. The database refuses one message for what
/// it holds (a CHECK constraint): that message is dead-lettered, its batch's others stored.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_holds_events_while_its_database_fails_and_dead_letters_what_it_refuses(vhost: Vhost) {
    let pg = PgDatabase::create("failing");
    let db = Db::Postgres(pg);
    let Db::Postgres(pg) = &db else { unreachable!("postgres") };
    let settings = console_settings(&vhost, &db);
    let console = Console::start(settings.clone()).await.expect("console starts");
    let addr = console.addr;
    await_metric(addr, "warren_console_connected", &[], 1.0).await;

    pg.sql("ALTER TABLE warren_events RENAME TO warren_events_away");
    publish_events(&settings, &[vec![received("held-1")], vec![received("held-2")], vec![received("held-3")]]).await;
    await_metric(addr, "warren_console_batches_total", &[("outcome", "failed")], 2.0).await;
    let (ready, why) = tokio::task::block_in_place(|| warren_e2e::scrape::get(addr, "/readyz"));
    assert_eq!(ready, 503, "{why}");
    assert!(why.contains("refuses writes"), "{why}");
    assert_eq!(tokio::task::block_in_place(|| api(addr, "/api/jobs/held-1")).0, 404, "nothing stored yet");
    pg.sql("ALTER TABLE warren_events_away RENAME TO warren_events");
    for id in ["held-1", "held-2", "held-3"] {
        await_job(addr, id, |b| b["job"]["status"] == "received").await;
    }
    assert_eq!(tokio::task::block_in_place(|| warren_e2e::scrape::get(addr, "/readyz")).0, 200);
    assert_eq!(metric(addr, "warren_console_events_total", &[("outcome", "stored")]), 3.0, "each once");

    // A message the database refuses for what it holds, in one batch with a good one.
    pg.sql("ALTER TABLE warren_events ADD CONSTRAINT no_poison CHECK (job_id <> 'poison')");
    publish_events(&settings, &[vec![received("poison")], vec![received("fine")]]).await;
    await_job(addr, "fine", |b| b["job"]["status"] == "received").await;
    let dead_queue = settings.dead_queue(&settings.console.queue);
    let start = Instant::now();
    while queue_depth(&settings, &dead_queue).await < 1 {
        assert!(start.elapsed() < DEADLINE, "the refused message reaches {dead_queue}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(addr, "warren_console_events_total", &[("outcome", "refused")]), 1.0);
    assert_eq!(tokio::task::block_in_place(|| api(addr, "/api/jobs/poison")).0, 404);
    publish_events(&settings, &[vec![received("after")]]).await;
    await_job(addr, "after", |_| true).await;
    println!(
        "console, database failing: {} failed tries held 3 events, all stored once back; 1 refused message dead-lettered",
        metric(addr, "warren_console_batches_total", &[("outcome", "failed")])
    );
    console.shutdown().await;
}

/// The console away for long: its queue fills up to `console.queue_max_bytes`, then the broker
/// refuses further event messages (the workers count them `not_stored`) instead of growing until
/// its memory alarm blocks every publisher. Every job is answered all the same, and the console,
/// back, stores what its queue held.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_away_fills_its_bounded_queue_and_never_holds_the_fleet_up(vhost: Vhost) {
    // About 1.4 MB of events against a bound of 256 KiB, which holds several of the largest
    // event messages (512 events, about 120 KB): a message over the bound is refused even by an
    // empty queue.
    const JOBS: u32 = 2_000;
    let db = Db::new("sqlite");
    let mut settings = console_settings(&vhost, &db);
    settings.console.queue_max_bytes = 256 * 1024;
    declare_console_queue(&settings).await;
    let (fleet, producer) = warren_e2e::fleet_and_producer(&settings).await;
    answer_checksum_jobs(&producer, JOBS).await;
    // Each job's three events end published or refused, none dropped.
    let workers = fleet.metrics_addr.expect("metrics served");
    let events = |outcome: &str| metric(workers, "warren_events_total", &[("outcome", outcome)]);
    let all = f64::from(3 * JOBS);
    eventually("every event published or refused", || async { events("published") + events("not_stored") >= all })
        .await;
    let (published, refused) = (events("published"), events("not_stored"));
    println!("console away: {published} events stored in its queue, {refused} refused past its bound");
    assert!(refused > 0.0 && published > 0.0, "published {published}, refused {refused}");
    assert_eq!(events("dropped"), 0.0);
    let held = queue_depth(&settings, &settings.console.queue).await;
    assert!(held > 0, "the queue holds what came before its bound");

    // Back, the console stores what its queue held.
    let console = Console::start(settings.clone()).await.expect("console starts");
    eventually("the console reads its queue", || async { queue_depth(&settings, &settings.console.queue).await == 0 })
        .await;
    await_metric(console.addr, "warren_console_events_total", &[("outcome", "stored")], published).await;
    let stored = metric(console.addr, "warren_console_events_total", &[("outcome", "stored")]);
    assert_eq!(stored, published, "every event the queue took is stored");
    producer.close().await;
    fleet.stop().await;
    console.shutdown().await;
}

/// Two consoles on one PostgreSQL database and one queue (replicas), started together on an
/// empty database: they share the fleet's events as competing consumers, store each once
/// between them, and each answers for every job, whichever of them stored its events.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consoles_on_one_postgres_database_share_the_events_and_answer_for_every_job(vhost: Vhost) {
    const JOBS: u32 = 200;
    let db = Db::new("postgres");
    let mut settings = console_settings(&vhost, &db);
    // Small batches: each console takes a share of the messages.
    settings.console.prefetch = 2;
    let (a, b) = tokio::join!(Console::start(settings.clone()), Console::start(settings.clone()));
    let consoles = [a.expect("the first console starts"), b.expect("the second console starts")];
    for c in &consoles {
        await_metric(c.addr, "warren_console_connected", &[], 1.0).await;
    }
    let (fleet, producer) = warren_e2e::fleet_and_producer(&settings).await;
    let ids = answer_checksum_jobs(&producer, JOBS).await;
    let stored = |c: &Console| metric(c.addr, "warren_console_events_total", &[("outcome", "stored")]);
    let all = f64::from(3 * JOBS);
    eventually("the consoles store every event", || async { consoles.iter().map(stored).sum::<f64>() >= all }).await;
    let shares: Vec<f64> = consoles.iter().map(stored).collect();
    println!("two consoles: {shares:?} events stored by each");
    assert_eq!(shares.iter().sum::<f64>(), f64::from(3 * JOBS), "each event stored once");
    assert!(shares.iter().all(|s| *s > 0.0), "both consoles took a share: {shares:?}");
    for id in ids.iter().step_by(10) {
        for c in &consoles {
            let job = await_job(c.addr, id, |b| b["job"]["status"] == "succeeded").await;
            assert_eq!(steps(&job), owned(&[("received", 0), ("started", 0), ("succeeded", 0)]));
        }
    }
    producer.close().await;
    fleet.stop().await;
    for c in consoles {
        c.shutdown().await;
    }
}

/// A console's queue declared by an earlier build, without `console.queue_max_bytes`: the broker
/// refuses to declare it again with the bound ("inequivalent arg"), and the console reads it as
/// it is (with a warning) rather than read nothing while it grows.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_reads_its_queue_declared_by_an_earlier_build_without_the_bound(vhost: Vhost) {
    let db = Db::new("sqlite");
    let settings = console_settings(&vhost, &db);
    let mut earlier = settings.clone();
    earlier.console.queue_max_bytes = 0;
    declare_console_queue(&earlier).await;
    assert!(settings.console.queue_max_bytes > 0);
    let console = Console::start(settings.clone()).await.expect("console starts");
    await_metric(console.addr, "warren_console_connected", &[], 1.0).await;
    publish_events(&settings, &[vec![received("earlier-1")], vec![received("earlier-2")]]).await;
    await_metric(console.addr, "warren_console_events_total", &[("outcome", "stored")], 2.0).await;
    await_job(console.addr, "earlier-2", |b| b["job"]["status"] == "received").await;
    console.shutdown().await;
}
