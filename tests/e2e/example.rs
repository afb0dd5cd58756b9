//! The example worker (`examples/worker`: a user's own crate on warren-consumer, three kinds of
//! its own, one of each shape) as a real process on the real broker, its jobs submitted by the
//! Python client: results of every kind; a transient failure retried; permanent failures
//! dead-lettered with the kind's own error type; a job that kills its worker each time stopped
//! as poison; a drain on SIGTERM that finishes the job in flight; metrics labelled with its kinds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rstest::rstest;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Notify;
use warren_common::headers as h;
use warren_common::{Job, ResultStatus};
use warren_e2e::{ConsumerProcess, DEADLINE, Vhost, collect_messages, queue_depth, repo_root, settings_for, vhost};
use warren_infra::fields;
use warren_producer::Producer;

/// A catalog service for `catalog.price`, answering by SKU:
/// `OK-<cents>` a price; `FLAKY-<cents>` 503 the first time, then the price; `NONE` 404;
/// `SLOW-<cents>` the price after 1.5 s; `CRASH` never (the test kills the worker instead).
struct Catalog {
    addr: SocketAddr,
    requests: Arc<Mutex<HashMap<String, u32>>>,
    /// Notified at each request that arrives.
    arrived: Arc<Notify>,
}

impl Catalog {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let arrived = Arc::new(Notify::new());
        let (seen, notify) = (requests.clone(), arrived.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, seen.clone(), notify.clone()));
            }
        });
        Self { addr, requests, arrived }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self, sku: &str) -> u32 {
        self.requests.lock().expect("lock").get(sku).copied().unwrap_or(0)
    }
}

async fn serve(mut socket: tokio::net::TcpStream, seen: Arc<Mutex<HashMap<String, u32>>>, arrived: Arc<Notify>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let sku = head.split_whitespace().nth(1).and_then(|p| p.strip_prefix("/items/")).unwrap_or("").to_owned();
    let n = {
        let mut seen = seen.lock().expect("lock");
        let n = seen.entry(sku.clone()).or_default();
        *n += 1;
        *n
    };
    arrived.notify_waiters();
    let price = |s: &str| s.rsplit('-').next().unwrap_or("0").to_owned();
    let (status, body) = match sku.split('-').next().unwrap_or("") {
        "OK" => ("200 OK", format!(r#"{{"price_cents": {}}}"#, price(&sku))),
        "FLAKY" if n == 1 => ("503 Service Unavailable", String::new()),
        "FLAKY" => ("200 OK", format!(r#"{{"price_cents": {}}}"#, price(&sku))),
        "SLOW" => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            ("200 OK", format!(r#"{{"price_cents": {}}}"#, price(&sku)))
        }
        "CRASH" => return std::future::pending().await,
        _ => ("404 Not Found", String::new()),
    };
    let reply = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    let _ = socket.write_all(reply.as_bytes()).await;
}

async fn worker(vhost: &Vhost, catalog: &Catalog) -> ConsumerProcess {
    let url = catalog.url();
    ConsumerProcess::start_bin("warren-example-worker", vhost, &[("CATALOG_URL", url.as_str())]).await
}

/// Submits `jobs` (the JSON list tests/e2e/submit_jobs.py reads) with the Python client and
/// returns each awaited result, by the job's position.
async fn python_submit(vhost: &Vhost, jobs: serde_json::Value) -> Vec<serde_json::Value> {
    let mut child = tokio::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(repo_root().join("tests/e2e/submit_jobs.py"))
        .arg(vhost.amqp_url())
        .env("PYTHONPATH", repo_root().join("clients/python"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/setup.sh installs pika)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(jobs.to_string().as_bytes()).await.expect("write jobs");
    drop(stdin);
    let out = tokio::time::timeout(DEADLINE * 3, child.wait_with_output()).await.expect("in time").expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the Python client failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

fn metrics(addr: &str) -> String {
    ureq::get(&format!("http://{addr}/metrics")).call().expect("metrics").into_body().read_to_string().expect("text")
}

/// The metrics address the worker logged.
fn metrics_addr(log: &str) -> String {
    let line = log.lines().find(|l| l.contains("serving /metrics")).expect("the worker serves its metrics");
    let addr = line.split("addr=").nth(1).expect("addr=").split_whitespace().next().expect("an address");
    addr.to_owned()
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_workers_kinds_keep_warrens_guarantees(vhost: Vhost) {
    let catalog = Catalog::start().await;
    let settings = settings_for(&vhost);
    let process = worker(&vhost, &catalog).await;
    let flower = repo_root().join("samples/images/flower.png");
    let jobs = serde_json::json!([
        {"kind": "image.blurhash", "job": {"x_components": 4, "y_components": 3}, "files": {"image": flower}},
        {"kind": "vector.normalize", "job": {"values": [3.0, 4.0]}},
        {"kind": "vector.normalize", "job": {"values": [0.0, 0.0]}},
        {"kind": "catalog.price", "job": {"sku": "OK-1250"}},
        {"kind": "catalog.price", "job": {"sku": "FLAKY-700"}},
        {"kind": "catalog.price", "job": {"sku": "NONE"}},
    ]);
    let r = python_submit(&vhost, jobs).await;
    println!("{}", r.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n"));
    let (w, hgt) = image::image_dimensions(&flower).expect("flower.png");
    assert_eq!((r[0]["status"].as_str(), r[0]["value"]["width"].as_u64()), (Some("ok"), Some(u64::from(w))));
    assert_eq!(r[0]["value"]["height"].as_u64(), Some(u64::from(hgt)));
    assert_eq!(r[0]["value"]["hash"].as_str().map(str::len), Some(28), "4 x 3 components");
    assert_eq!(r[1]["value"]["norm"].as_f64(), Some(5.0));
    assert_eq!(r[1]["value"]["unit"], serde_json::json!([0.6, 0.8]));
    assert_eq!(r[2]["error"]["type"], "zero_vector", "{}", r[2]);
    assert_eq!(r[2]["error"]["class"], "permanent");
    assert_eq!(r[3]["value"], serde_json::json!({"sku": "OK-1250", "price_cents": 1250}));
    // Transient, retried through the delay queues: answered by its second attempt.
    assert_eq!((r[4]["status"].as_str(), r[4]["attempt"].as_u64()), (Some("ok"), Some(1)), "{}", r[4]);
    assert_eq!(catalog.requests("FLAKY-700"), 2);
    assert_eq!((r[5]["error"]["type"].as_str(), r[5]["attempt"].as_u64()), (Some("sku_not_found"), Some(0)));

    // Each permanent failure is a dead letter carrying the kind's own error type.
    for (queue, error_type) in
        [("warren.vector.normalize.dead", "zero_vector"), ("warren.catalog.price.dead", "sku_not_found")]
    {
        let dead = collect_messages(&settings, queue, 1, DEADLINE).await;
        let headers = dead[0].properties.headers().as_ref();
        assert_eq!(fields::get_str(headers, h::ERROR_TYPE).as_deref(), Some(error_type), "{queue}");
    }

    let text = metrics(&metrics_addr(&process.log()));
    for needle in [
        r#"kind="image.blurhash",outcome="ok",queue="warren.image.blurhash""#,
        r#"kind="vector.normalize",outcome="dead_lettered""#,
        r#"error_type="catalog_unavailable",kind="catalog.price""#,
        r#"warren_batch_size_count{backend="",kind="vector.normalize",model=""}"#,
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }

    // Drain: a job awaiting the catalog when SIGTERM comes is finished and answered; exit 0.
    let mut producer = Producer::connect(settings.clone()).await.expect("producer");
    producer.enable_replies().await.expect("a reply queue");
    let arrived = catalog.arrived.notified();
    let slow = Job::named("catalog.price", serde_json::json!({"sku": "SLOW-42"}));
    let ticket = producer.publish(&slow, &warren_e2e::want_result()).await.expect("publish");
    tokio::time::timeout(DEADLINE, arrived).await.expect("the job reached the catalog");
    process.signal("TERM").await;
    let result = ticket.wait(DEADLINE).await.expect("its result");
    assert_eq!(result.status, ResultStatus::Ok, "{:?}", result.error);
    assert_eq!(result.output.and_then(|o| o.to_json()), Some(serde_json::json!({"sku": "SLOW-42", "price_cents": 42})));
    let (code, log) = process.wait().await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(queue_depth(&settings, "warren.catalog.price").await, 0);
    producer.close().await;
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_kills_the_example_worker_each_time_is_stopped_as_poison(vhost: Vhost) {
    let catalog = Catalog::start().await;
    let settings = settings_for(&vhost);
    let mut process = worker(&vhost, &catalog).await;
    let r =
        python_submit(&vhost, serde_json::json!([{"kind": "catalog.price", "job": {"sku": "CRASH"}, "wait": false}]))
            .await;
    assert!(r[0]["submitted"].is_string());
    let mut deaths: u64 = 0;
    loop {
        // Either the job runs again (its request reaches the catalog) or it was given up as poison.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let running = loop {
            if u64::from(catalog.requests("CRASH")) > deaths {
                break true;
            }
            if queue_depth(&settings, "warren.catalog.price.dead").await > 0 {
                break false;
            }
            assert!(tokio::time::Instant::now() < deadline, "neither ran again nor given up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if !running {
            break;
        }
        assert!(deaths < 8, "still not given up after {deaths} deaths");
        process.signal("KILL").await;
        assert_eq!(process.wait().await.0, None, "killed");
        deaths += 1;
        process = worker(&vhost, &catalog).await;
    }
    let dead = collect_messages(&settings, "warren.catalog.price.dead", 1, DEADLINE).await;
    let headers = dead[0].properties.headers().as_ref();
    assert_eq!(fields::get_str(headers, h::ERROR_TYPE).as_deref(), Some("redelivery_limit"));
    // As docs/contract.md says: 4 deaths, dead-lettered on the 5th delivery, 3 returns recorded.
    assert_eq!(fields::get_u64(headers, h::REDELIVERIES), Some(3));
    let message = fields::get_str(headers, h::ERROR_MESSAGE).unwrap_or_default();
    assert!(message.contains("delivered 4 times"), "{message}");
    println!("poison: given up after {deaths} worker deaths, {} requests", catalog.requests("CRASH"));
    assert_eq!(u64::from(catalog.requests("CRASH")), deaths, "one run per death, none after");
    assert!(deaths >= 2, "it ran again after the first death");
    process.signal("TERM").await;
    assert_eq!(process.wait().await.0, Some(0));
}
