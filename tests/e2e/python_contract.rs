//! The contract holds for a producer that is not Rust: `docs/examples/publish_job.py`, the
//! Python example in `docs/contract.md`, publishes with pika and reads the results; and Warren's
//! error types are those the Python client and the contract name, each in its class.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rstest::rstest;
use tokio::process::Command;
use warren_common::JobError;
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

/// One of each of Warren's job errors. The match stops compiling when a variant is added, so
/// whoever adds one is sent here, and from here to the Python client and the contract.
fn every_job_error() -> Vec<JobError> {
    let all = vec![
        JobError::UnsupportedContentType(String::new()),
        JobError::BodyTooLarge { size: 0, limit: 0 },
        JobError::MalformedEnvelope(String::new()),
        JobError::UnsupportedVersion { found: 0, supported: 1 },
        JobError::UnknownKind(String::new()),
        JobError::KindNotServed(String::new()),
        JobError::InvalidParams(String::new()),
        JobError::UnsupportedFormat(String::new()),
        JobError::CorruptImage(String::new()),
        JobError::LimitExceeded(String::new()),
        JobError::ModelInputMismatch(String::new()),
        JobError::Encode(String::new()),
        JobError::RedeliveryLimit { deliveries: 0 },
        JobError::Panicked(String::new()),
        // Transient by default (`consumer.retry_timeouts`), as the Python client files it.
        JobError::TimedOut { limit: Duration::ZERO, retry: true },
        JobError::Injected(String::new()),
        // ModelRequestFailed is not listed: it is `model_unavailable` on the wire too (it only
        // spends an attempt where ModelUnavailable does not), so it has no type of its own.
        JobError::ModelUnavailable(String::new()),
        JobError::Inference(String::new()),
        JobError::ResultNotStored(String::new()),
        JobError::DeadlineExceeded(String::new()),
        JobError::Cancelled(String::new()),
        JobError::RefNotFound(String::new()),
        JobError::RefDenied(String::new()),
        JobError::StoreUnavailable(String::new()),
    ];
    for e in &all {
        match e {
            JobError::UnsupportedContentType(_)
            | JobError::BodyTooLarge { .. }
            | JobError::MalformedEnvelope(_)
            | JobError::UnsupportedVersion { .. }
            | JobError::UnknownKind(_)
            | JobError::KindNotServed(_)
            | JobError::InvalidParams(_)
            | JobError::UnsupportedFormat(_)
            | JobError::CorruptImage(_)
            | JobError::LimitExceeded(_)
            | JobError::ModelInputMismatch(_)
            | JobError::Encode(_)
            | JobError::RedeliveryLimit { .. }
            | JobError::Panicked(_)
            | JobError::TimedOut { .. }
            | JobError::Injected(_)
            | JobError::ModelUnavailable(_)
            | JobError::ModelRequestFailed(_)
            | JobError::Inference(_)
            | JobError::ResultNotStored(_)
            | JobError::DeadlineExceeded(_)
            | JobError::Cancelled(_)
            | JobError::RefNotFound(_)
            | JobError::RefDenied(_)
            | JobError::StoreUnavailable(_) => {}
            // A kind's own error: its type is documented by the kind, not in the contract's table.
            JobError::Kind { .. } => {}
        }
    }
    all
}

/// The error types the contract lists after the first `lead` in `text`: `` `a`, `b` `` up to
/// the end of the sentence or a parenthesis, whichever comes first.
fn listed_after<'a>(text: &'a str, lead: &str) -> (BTreeSet<String>, &'a str) {
    let start = text.find(lead).unwrap_or_else(|| panic!("docs/contract.md has no {lead:?}")) + lead.len();
    let rest = &text[start..];
    let end = [". ", " ("].iter().filter_map(|stop| rest.find(stop)).min().unwrap_or(rest.len());
    (rest[..end].split('`').skip(1).step_by(2).map(str::to_owned).collect(), &rest[end..])
}

#[test]
fn warrens_error_types_are_the_python_clients_and_the_contracts_each_in_its_class() {
    let warren: BTreeMap<String, String> =
        every_job_error().iter().map(|e| (e.error_type().to_owned(), e.class().as_str().to_owned())).collect();
    assert_eq!(warren.len(), every_job_error().len(), "each error has a type of its own");
    let failed_request = JobError::ModelRequestFailed(String::new());
    assert_eq!(
        (failed_request.error_type(), failed_request.class().as_str()),
        ("model_unavailable", "transient"),
        "a failed model request is model_unavailable on the wire"
    );

    let code = "import json, warren_client as w\n\
                print(json.dumps({t: 'transient' if issubclass(c, w.TransientJobError) else 'permanent'\n\
                                  for t, c in w.BY_TYPE.items()}))";
    let out = std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .args(["-c", code])
        .env("PYTHONPATH", repo_root().join("clients/python"))
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let python: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).expect("a JSON object");
    assert_eq!(python, warren, "warren_client.BY_TYPE (left) against Warren's JobError (right)");

    let doc = std::fs::read_to_string(repo_root().join("docs/contract.md")).expect("contract.md");
    let in_class = |class: &str| -> BTreeSet<String> {
        warren.iter().filter(|(_, c)| *c == class).map(|(t, _)| t.clone()).collect()
    };
    let (permanent, rest) = listed_after(&doc, "Error types. Permanent: ");
    assert_eq!(permanent, in_class("permanent"), "contract.md's permanent types");
    let (transient, _) = listed_after(rest, "Transient: ");
    let timeout_too: BTreeSet<String> = transient.iter().cloned().chain(["timeout".to_owned()]).collect();
    // `timeout` is named in a sentence of its own after the list ("transient unless ...").
    assert!(doc.contains("`timeout` is transient unless `consumer.retry_timeouts = false`"));
    assert_eq!(timeout_too, in_class("transient"), "contract.md's transient types");
}
