//! The real binaries: `warren-consumer` serves, `warren-producer` publishes files and waits for
//! the results, outputs land on disk, exit codes mean what the docs say, SIGTERM exits 0.

use std::path::Path;

use rstest::rstest;
use tokio::process::Command;
use warren_e2e::{ConsumerProcess, Vhost, bin, repo_root, vhost};

async fn producer(vhost: &Vhost, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin("warren-producer"))
        .args(args)
        .current_dir(repo_root())
        .env("WARREN_CONFIG_DIR", repo_root().join("config"))
        .env("WARREN__BROKER__URL", vhost.amqp_url())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run warren-producer");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("$ warren-producer {}\n{stdout}{stderr}", args.join(" "));
    // A clean exit is quiet: closing its reply queue is not a lost broker.
    assert!(!stderr.contains("lost the broker"), "a normal exit warned: {stderr}");
    // Both streams, so callers can look for what the producer says on stderr too.
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_and_producer_binaries_end_to_end(vhost: Vhost) {
    let out_dir = std::env::temp_dir().join(format!("warren-e2e-{}", vhost.name));
    let consumer = ConsumerProcess::start(&vhost, &[("WARREN__CONSUMER__POOL_SIZE", "2")]).await;

    let out = out_dir.to_str().expect("utf-8 temp dir");
    let (code, stdout) = producer(
        &vhost,
        &["resize", "--width", "64", "--height", "64", "--format", "png", "samples/images", "--wait", "--out", out],
    )
    .await;
    assert_eq!(code, 0);
    assert!(stdout.contains("3 jobs: 3 ok, 0 failed"), "{stdout}");
    for stem in ["china", "china_small", "flower"] {
        let img = image::open(out_dir.join(format!("{stem}.png"))).expect("resized output written");
        assert_eq!(img.width(), 64);
    }

    let digits = "models/digits/samples/000_label9.png";
    let (code, stdout) =
        producer(&vhost, &["--encoding", "bincode", "classify", "--top-k", "2", digits, "--wait", "--out", out]).await;
    assert_eq!(code, 0, "{stdout}");
    let labels: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("000_label9.json")).expect("labels written")).expect("json");
    assert_eq!(labels["predictions"].as_array().map(Vec::len), Some(2));

    // A job that fails: exit code 1, the reason on stdout.
    let (code, stdout) = producer(&vhost, &["classify", "Cargo.toml", "--wait"]).await;
    assert_eq!(code, 1);
    assert!(stdout.contains("unsupported_format"), "{stdout}");

    // Without --wait: confirmed publishes only.
    let (code, stdout) = producer(&vhost, &["checksum", "Cargo.toml", "config"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("jobs published and confirmed"), "{stdout}");

    // Load mode prints its report.
    let (code, stdout) =
        producer(&vhost, &["load", "--count", "50", "--concurrency", "8", "--wait", "--metrics-addr", "127.0.0.1:0"])
            .await;
    assert!(stdout.contains("metrics on http://127.0.0.1:"), "the producer serves its metrics: {stdout}");
    assert_eq!(code, 0);
    assert!(stdout.contains("published 50") && stdout.contains("end-to-end latency"), "{stdout}");

    // SIGTERM: drains and exits 0.
    consumer.signal("TERM").await;
    let (code, log) = consumer.wait().await;
    assert_eq!(code, Some(0), "consumer log:\n{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.contains("guest:guest"), "credentials must not be logged:\n{log}");
    let _ = std::fs::remove_dir_all(&out_dir);
    assert!(!Path::new(&out_dir).exists());
}

#[tokio::test]
async fn a_missing_onnx_runtime_is_a_clear_start_up_error() {
    let out = Command::new(bin("warren-consumer"))
        .current_dir(repo_root())
        .env("WARREN_CONFIG_DIR", repo_root().join("config"))
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.31.1")
        .env("WARREN_CACHE_DIR", "/nonexistent-cache")
        .env("WARREN__MODEL__ONNXRUNTIME_PATH", "")
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run warren-consumer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ONNX Runtime 1.31.1 not found"), "{stderr}");
    assert!(stderr.contains("scripts/setup.sh") && stderr.contains("ORT_DYLIB_PATH"), "{stderr}");
}

/// `<worker> routes --json`: the kinds a worker binary serves, their effective routes (its
/// `[[routes]]` entries over the kinds' defaults) and the topology, without connecting.
#[tokio::test]
async fn a_worker_prints_its_effective_routes_without_connecting() {
    let routes = |binary: &str, env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(bin(binary));
        cmd.args(["routes", "--json"])
            .current_dir(repo_root())
            .env("WARREN_CONFIG_DIR", repo_root().join("config"))
            .env("WARREN_ENV", "local")
            // Nothing listens here: printing routes must not dial.
            .env("WARREN__BROKER__URL", "amqp://guest:guest@127.0.0.1:1/%2f");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("runs");
        assert!(out.status.success(), "{binary} routes: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("one JSON document")
    };
    let stock = routes("warren-consumer", &[]);
    let kinds: Vec<&str> =
        stock["routes"].as_array().expect("routes").iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(kinds, ["image.resize", "ml.classify", "checksum"], "fault is opt-in: no route, not served");
    let classify = &stock["routes"][1];
    assert_eq!((classify["shape"].as_str(), classify["max_batch"].as_u64()), (Some("batched"), Some(8)));
    assert_eq!(classify["queue"], "warren.ml.classify");
    assert!(stock["queues"].as_array().expect("queues").iter().any(|q| q == "warren.checksum.dead"));

    let example = routes("warren-example-worker", &[("WARREN__CONSUMER__POOL_SIZE", "2")]);
    let rows = example["routes"].as_array().expect("routes");
    let shapes: Vec<(&str, &str)> =
        rows.iter().filter_map(|r| Some((r["kind"].as_str()?, r["shape"].as_str()?))).collect();
    assert_eq!(shapes, [("image.blurhash", "blocking"), ("vector.normalize", "batched"), ("catalog.price", "async")]);
    let catalog = &rows[2];
    assert_eq!((catalog["concurrency"].as_u64(), catalog["prefetch"].as_u64()), (Some(32), Some(32)), "{catalog}");
    assert_eq!(example["other_workers_routes"], serde_json::json!(["image.resize", "ml.classify", "checksum"]));

    let narrowed = routes("warren-consumer", &[("WARREN__CONSUMER__KINDS", "checksum,fault")]);
    let kinds: Vec<&str> =
        narrowed["routes"].as_array().expect("routes").iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(kinds, ["checksum", "fault"], "consumer.kinds serves an opt-in kind too");
}

/// A SIGTERM during start-up (here: while no broker answers) ends the worker cleanly, exit 0.
/// The worker listened for signals only once started: the default action killed it (and could
/// still, just after "consumer ready", before the first poll of its shutdown future).
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_start_up_ends_the_worker_cleanly(vhost: Vhost) {
    // A port nothing listens on: the worker waits for a broker node.
    let env =
        [("WARREN__BROKER__URL", "amqp://guest:guest@127.0.0.1:1/%2f"), ("WARREN__BROKER__RECONNECT_MAX_MS", "500")];
    let worker = ConsumerProcess::spawn_bin("warren-consumer", &vhost, &env);
    worker.wait_for_log("no broker node answers yet").await;
    worker.signal("TERM").await;
    let (code, log) = worker.wait().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("shutdown requested during start-up"), "{log}");
}
