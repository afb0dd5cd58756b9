//! The contract holds for a producer that is not Rust: `docs/examples/publish_job.py`, the
//! Python example in `docs/contract.md`, publishes with pika and reads the results.

use rstest::rstest;
use tokio::process::Command;
use warren_e2e::{Fleet, Vhost, repo_root, settings_for, vhost};

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_python_example_works(vhost: Vhost) {
    let root = repo_root();
    let script = root.join("docs/examples/publish_job.py");
    let doc = std::fs::read_to_string(root.join("docs/contract.md")).expect("contract.md");
    let example = std::fs::read_to_string(&script).expect("example");
    assert!(doc.contains(example.trim()), "docs/contract.md must include docs/examples/publish_job.py verbatim");

    let settings = settings_for(&vhost);
    let fleet = Fleet::start(settings).await;
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(&script)
        .arg(vhost.amqp_url())
        .arg(root.join("samples/images/flower.png"))
        .output()
        .await
        .expect("python3 runs (scripts/setup.sh installs pika)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python example failed");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 2);
    let checksum = lines.iter().find(|l| l["kind"] == "checksum").expect("checksum result");
    let crc = crc32fast::hash(b"hello from python");
    assert_eq!(checksum["output"]["crc32"].as_u64(), Some(u64::from(crc)));
    let resize = lines.iter().find(|l| l["kind"] == "image.resize").expect("resize result");
    assert_eq!(resize["output"]["width"].as_u64(), Some(64));
    assert_eq!(resize["output"]["format"], "png");
    fleet.stop().await;
}
