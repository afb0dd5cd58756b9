//! A real three-node RabbitMQ cluster beside the default broker (`scripts/cluster.sh`: nodes
//! wr1, wr2, wr3 on their own ports, wr1 and wr2 also with TLS listeners), started once per test
//! binary; the tests that kill or restart its nodes take turns through [`Cluster::turn`].

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::{Vhost, repo_root};

#[derive(Debug)]
pub struct Cluster {
    /// Each node's AMQP URL without vhost.
    pub amqp: Vec<String>,
    /// Each node's management API (no credentials: the test user's are sent as a header).
    pub mgmt: Vec<String>,
    /// Each node's name (`wr1@localhost`, ...).
    pub nodes: Vec<String>,
    env: HashMap<String, String>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Cluster {
    /// The cluster, started by `scripts/cluster.sh start` the first time (idempotent).
    pub fn get() -> &'static Cluster {
        CLUSTER.get_or_init(|| {
            let started = Instant::now();
            let status = std::process::Command::new("bash")
                .arg(repo_root().join("scripts/cluster.sh"))
                .arg("start")
                .status()
                .expect("run scripts/cluster.sh start");
            assert!(status.success(), "scripts/cluster.sh start failed");
            println!("cluster: three nodes up and clustered after {:?}", started.elapsed());
            let out = std::process::Command::new("bash")
                .arg(repo_root().join("scripts/cluster.sh"))
                .arg("--env")
                .output()
                .expect("scripts/cluster.sh --env");
            let env: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
                .collect();
            let list = |k: &str| -> Vec<String> {
                env.get(k)
                    .unwrap_or_else(|| panic!("{k} missing from scripts/cluster.sh --env"))
                    .split(',')
                    .map(str::to_owned)
                    .collect()
            };
            let mgmt = list("WARREN_CLUSTER_MGMT")
                .into_iter()
                .map(|u| match u.split_once("://").and_then(|(s, r)| Some((s, r.split_once('@')?.1))) {
                    Some((scheme, host)) => format!("{scheme}://{host}"),
                    None => u,
                })
                .collect();
            Cluster { amqp: list("WARREN_CLUSTER_AMQP"), mgmt, nodes: list("WARREN_CLUSTER_NODES"), env }
        })
    }

    /// One test at a time may kill or restart nodes (or rely on all of them running).
    pub async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
        TURN.lock().await
    }

    /// A value `scripts/cluster.sh --env` printed (certificate paths, TLS URLs).
    pub fn env(&self, key: &str) -> &str {
        self.env.get(key).unwrap_or_else(|| panic!("{key} missing from scripts/cluster.sh --env"))
    }

    /// A fresh vhost on the cluster (made through the nodes' management APIs, the first that answers).
    pub fn vhost(&self, label: &str) -> Vhost {
        // Every node's API, asked in turn: the vhost is deleted even when a test panics with wr1 down.
        Vhost::create_at(label, &self.amqp[0], &self.mgmt_urls(&[0, 1, 2]))
    }

    /// `broker.url` listing the nodes in `order` (indexes into [`Cluster::nodes`]), for `vhost`.
    pub fn urls(&self, vhost: &Vhost, order: &[usize]) -> String {
        order.iter().map(|&i| format!("{}/{}", self.amqp[i], vhost.name)).collect::<Vec<_>>().join(",")
    }

    /// The management APIs in `order`, comma-separated (for warrenctl).
    pub fn mgmt_urls(&self, order: &[usize]) -> String {
        order.iter().map(|&i| self.mgmt[i].clone()).collect::<Vec<_>>().join(",")
    }

    /// `scripts/cluster.sh <action> <node>` (kill, stop, restart), failing the test if it fails.
    pub async fn node(&self, action: &str, node: usize) -> Duration {
        let name = self.nodes[node].split('@').next().unwrap_or_default().to_owned();
        let started = Instant::now();
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/cluster.sh"))
            .args([action, &name])
            .status()
            .await
            .expect("run scripts/cluster.sh");
        assert!(status.success(), "scripts/cluster.sh {action} {name} failed");
        started.elapsed()
    }

    /// Whether every node runs and is clustered (`scripts/cluster.sh status`).
    pub async fn healthy(&self) -> bool {
        Command::new("bash")
            .arg(repo_root().join("scripts/cluster.sh"))
            .arg("status")
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success())
    }
}
