//! Reading a process's `/metrics` (Prometheus text format) and probes, for assertions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// One scrape: every sample, keyed by metric name and its labels.
#[derive(Debug, Default)]
pub struct Scrape {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    pub fn take(addr: SocketAddr) -> Self {
        let text = get(addr, "/metrics").1;
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (head, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().expect("sample value");
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => (n.to_owned(), parse_labels(rest.trim_end_matches('}'))),
                None => (head.to_owned(), BTreeMap::new()),
            };
            samples.push((name, labels, value));
        }
        Self { samples }
    }

    /// The sum of the samples of `name` whose labels include all of `labels` (0 if none).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, _, v)| v)
            .sum()
    }

    pub fn names(&self) -> std::collections::BTreeSet<String> {
        self.samples.iter().map(|(n, _, _)| n.clone()).collect()
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    s.split("\",")
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().trim_start_matches(',').to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// GET a path; returns the status code and body.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(&format!("http://{addr}{path}")).call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (resp.status().as_u16(), resp.body_mut().read_to_string().expect("body"))
}
