//! TLS against the cluster's real TLS listeners (`scripts/cluster.sh` makes the certificates):
//! wr2 checks the server only, wr1 also requires a client certificate and lets it log in
//! (EXTERNAL). And URLs of a node list never show their passwords.

use warren_common::ResultStatus;
use warren_e2e::cluster::Cluster;
use warren_e2e::{DEADLINE, fleet_and_producer, want_result};
use warren_infra::Settings;

use crate::{cluster_settings, job};

/// Settings on `vhost` through the TLS listener at `url` (no vhost), trusting `ca`.
fn tls_settings(cluster: &Cluster, vhost: &warren_e2e::Vhost, url: &str, ca: &str) -> Settings {
    let mut s = cluster_settings(cluster, vhost, &[0]);
    s.broker.url = format!("{url}/{}", vhost.name);
    s.broker.tls_ca_file = ca.into();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_the_clusters_ca_runs_jobs() {
    let cluster = Cluster::get();
    let _turn = Cluster::turn().await;
    let vhost = cluster.vhost("tls");
    let settings =
        tls_settings(cluster, &vhost, cluster.env("WARREN_CLUSTER_TLS_URL"), cluster.env("WARREN_CLUSTER_CA"));
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let r = producer.publish(&job(1), &want_result()).await.expect("publish over TLS").wait(DEADLINE).await;
    assert_eq!(r.expect("result over TLS").status, ResultStatus::Ok);
    let (ready, readyz) = fleet.health.status();
    assert!(ready && readyz.contains("on node localhost:5692"), "/readyz names the node: {readyz}");
    println!("amqps with broker.tls_ca_file: a job and its result, consumer and producer over TLS; /readyz: {readyz}");
    producer.close().await;
    fleet.stop().await;
}

async fn refused(settings: &Settings) -> String {
    let e = warren_infra::connect(&settings.broker, "test-tls").await.expect_err("refused");
    format!("{e:#}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_a_wrong_host_name_or_a_missing_client_certificate_is_refused_with_the_reason() {
    let cluster = Cluster::get();
    let _turn = Cluster::turn().await;
    let vhost = cluster.vhost("tls-refused");
    let (ca, wrong_ca) = (cluster.env("WARREN_CLUSTER_CA"), cluster.env("WARREN_CLUSTER_WRONG_CA"));

    let e = refused(&tls_settings(cluster, &vhost, cluster.env("WARREN_CLUSTER_TLS_URL"), wrong_ca)).await;
    println!("wrong CA: {e}");
    assert!(e.contains("UnknownIssuer"), "names the reason: {e}");

    let e = refused(&tls_settings(cluster, &vhost, cluster.env("WARREN_CLUSTER_TLS_WRONG_HOST_URL"), ca)).await;
    println!("wrong host name: {e}");
    assert!(e.contains("not valid for name"), "names the reason: {e}");

    let mut no_cert = tls_settings(cluster, &vhost, cluster.env("WARREN_CLUSTER_TLS_CLIENT_CERT_URL"), ca);
    no_cert.broker.url = no_cert.broker.url.replace("amqps://", "amqps://guest:guest@");
    let e = refused(&no_cert).await;
    println!("no client certificate where one is required: {e}");
    // Under TLS 1.3 the listener's refusal comes after the client's handshake, as an alert on
    // the first read (CertificateRequired) or, when the socket closes first, as a reset: either
    // way the connection is refused at TLS, before any AMQP login.
    assert!(!e.contains("ACCESS_REFUSED") && !e.contains("NOT_ALLOWED"), "refused at TLS, not at login: {e}");

    let mut wrong_cert = no_cert.clone();
    wrong_cert.broker.tls_cert_file = cluster.env("WARREN_CLUSTER_WRONG_CLIENT_CERT").into();
    wrong_cert.broker.tls_key_file = cluster.env("WARREN_CLUSTER_WRONG_CLIENT_KEY").into();
    let e = refused(&wrong_cert).await;
    println!("a client certificate of another CA: {e}");
    // The same TLS 1.3 timing: an alert (UnknownCA) or a reset, never a login.
    assert!(!e.contains("ACCESS_REFUSED") && !e.contains("NOT_ALLOWED"), "refused at TLS, not at login: {e}");

    let mut half = no_cert.clone();
    half.broker.tls_cert_file = cluster.env("WARREN_CLUSTER_CLIENT_CERT").into();
    let e = refused(&half).await;
    assert!(e.contains("tls_cert_file and broker.tls_key_file go together"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_in_without_a_password() {
    let cluster = Cluster::get();
    let _turn = Cluster::turn().await;
    let vhost = cluster.vhost("tls-external");
    vhost.grant(cluster.env("WARREN_CLUSTER_TLS_CLIENT_CN"));
    let mut settings = tls_settings(
        cluster,
        &vhost,
        cluster.env("WARREN_CLUSTER_TLS_CLIENT_CERT_URL"),
        cluster.env("WARREN_CLUSTER_CA"),
    );
    settings.broker.url.push_str("?auth_mechanism=external");
    settings.broker.tls_cert_file = cluster.env("WARREN_CLUSTER_CLIENT_CERT").into();
    settings.broker.tls_key_file = cluster.env("WARREN_CLUSTER_CLIENT_KEY").into();
    let (fleet, producer) = fleet_and_producer(&settings).await;
    let r = producer.publish(&job(2), &want_result()).await.expect("publish").wait(DEADLINE).await;
    assert_eq!(r.expect("result").status, ResultStatus::Ok);
    // guest could log in too (PLAIN is on): the user shows it was the certificate's.
    let users = vhost.connection_users("consumer");
    let cn = cluster.env("WARREN_CLUSTER_TLS_CLIENT_CN");
    assert!(
        !users.is_empty() && users.iter().all(|u| u == cn),
        "consumer connections logged in as {users:?}, not {cn}"
    );
    println!(
        "EXTERNAL login with a client certificate: a job and its result; {} consumer connections as {cn}",
        users.len()
    );
    producer.close().await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_url_of_a_node_list_shows_its_password_in_an_error() {
    let mut settings = warren_infra::Settings::load(&warren_e2e::repo_root().join("config")).expect("config");
    settings.broker.url = "amqp://u:first-secret@127.0.0.1:1/%2f, amqp://u:second-secret@127.0.0.1:2/%2f,\
                           amqps://u:third-secret@127.0.0.1:3/v"
        .into();
    settings.broker.connect_timeout_ms = 2000;
    let e = format!("{:#}", warren_infra::connect(&settings.broker, "test").await.expect_err("nothing listens"));
    println!("{e}");
    assert!(e.contains("any of 3 RabbitMQ nodes"), "{e}");
    for secret in ["first-secret", "second-secret", "third-secret"] {
        assert!(!e.contains(secret), "{secret} shown: {e}");
    }
    assert!(!format!("{:?}", settings.broker).contains("secret"), "Debug shows no password either");
}
