//! A broker password never shows, whatever it holds (issue 24, item 1): a URL whose password
//! holds a reserved character unencoded is refused by every binary with a reason that names the
//! problem and shows no credential; the same password percent-encoded works.

use base64::Engine as _;
use rstest::rstest;
use warren_e2e::{Vhost, bin, management_url, repo_root, settings_for, vhost};

/// A distinctive password around `c`: none of "Xq7" or "Zk9" may ever show.
fn password(c: char) -> String {
    format!("Xq7{c}Zk9")
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_with_reserved_characters_is_refused_without_showing_it(vhost: Vhost) {
    for c in ['/', '?', '#', '@'] {
        let url = format!("amqp://guest:{}@127.0.0.1:5672/{}", password(c), vhost.name);
        for (binary, args) in [
            ("warren-consumer", &[][..]),
            ("warren-producer", &["load", "--count", "1"][..]),
            ("warrenctl", &["status"][..]),
        ] {
            let out = tokio::process::Command::new(bin(binary))
                .args(args)
                .current_dir(repo_root())
                .env("WARREN_CONFIG_DIR", repo_root().join("config"))
                .env("WARREN_ENV", "test")
                .env("WARREN__BROKER__URL", &url)
                .env("RUST_LOG", "debug")
                .output()
                .await
                .expect("runs");
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            println!("{binary} with {c:?}: {}", text.lines().last().unwrap_or(""));
            assert!(!out.status.success(), "{binary} {c:?}: {text}");
            assert!(text.contains("percent-encode"), "{binary} {c:?} names the problem: {text}");
            assert!(!text.contains("Xq7") && !text.contains("Zk9"), "{binary} {c:?} shows the password: {text}");
        }
    }
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percent_encoded_password_with_every_reserved_character_works(vhost: Vhost) {
    let user = format!("warren-test-{}", uuid::Uuid::new_v4().simple());
    let secret = "Xq7/?#@,:%Zk9";
    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("guest:guest"));
    let put = |path: String, body: serde_json::Value| {
        ureq::put(&format!("{}{path}", management_url())).header("authorization", &auth).send_json(body)
    };
    put(format!("/api/users/{user}"), serde_json::json!({"password": secret, "tags": ""})).expect("create the user");
    vhost.grant(&user);
    let encoded = "Xq7%2F%3F%23%40%2C%3A%25Zk9";
    let mut settings = settings_for(&vhost);
    settings.broker.url = format!("amqp://{user}:{encoded}@127.0.0.1:5672/{}", vhost.name);
    let connected = warren_infra::connect(&settings.broker, "credentials").await;
    let debug = format!("{:?} {}", settings.broker, settings.broker.redacted_url());
    assert!(!debug.contains("Xq7") && !debug.contains("Zk9"), "{debug}");
    let connection = connected.expect("the percent-encoded password logs in");
    let _ = connection.close(200, "done".into()).await;
    // A comma needs no encoding: it does not cut the URL in two (nor a list of nodes).
    put(format!("/api/users/{user}"), serde_json::json!({"password": "Xq7,Zk9", "tags": ""})).expect("a new password");
    settings.broker.url =
        format!("amqp://{user}:Xq7,Zk9@127.0.0.1:5672/{0},amqp://{user}:Xq7,Zk9@127.0.0.1:5672/{0}", vhost.name);
    let shown = settings.broker.redacted_url();
    assert!(!shown.contains("Xq7") && !shown.contains("Zk9"), "{shown}");
    let connection =
        warren_infra::connect(&settings.broker, "credentials").await.expect("a comma in a password logs in");
    let _ = connection.close(200, "done".into()).await;
    // A wrong password: refused, and the error shows none of it.
    settings.broker.url = format!("amqp://{user}:Xq7wrongZk9@127.0.0.1:5672/{}", vhost.name);
    let e = format!("{:#}", warren_infra::connect(&settings.broker, "credentials").await.expect_err("refused"));
    assert!(!e.contains("Xq7") && !e.contains("Zk9"), "{e}");
    let _ = ureq::delete(&format!("{}/api/users/{user}", management_url())).header("authorization", &auth).call();
}
