//! A small client for RabbitMQ's management HTTP API (port 15672): only the calls warrenctl
//! needs, with errors that name the URL (never the password). Given several nodes' APIs (a
//! cluster), it asks the first that answers, as the AMQP side dials nodes.

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::errors::{CtlError, Result};

#[derive(Debug, Clone)]
pub struct Mgmt {
    bases: Vec<String>,
    /// The node that answered last: asked first next time.
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    auth: String,
    agent: ureq::Agent,
}

impl Mgmt {
    /// `bases`: one URL, or several separated by commas.
    pub fn new(bases: &str, user: &str, password: &str) -> Self {
        let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        let bases = warren_infra::nodes::split(bases).into_iter().map(|b| b.trim_end_matches('/').to_owned()).collect();
        Self { bases, current: Default::default(), auth, agent }
    }

    fn get(&self, path: &str) -> Result<Option<Value>> {
        use std::sync::atomic::Ordering;
        let mut failures = Vec::new();
        let mut answered = None;
        for i in warren_infra::nodes::dial_order(self.bases.len(), self.current.load(Ordering::Relaxed)) {
            let url = format!("{}{path}", self.bases[i]);
            match self.agent.get(&url).header("Authorization", &self.auth).call() {
                Ok(resp) => {
                    self.current.store(i, Ordering::Relaxed);
                    answered = Some((url, resp));
                    break;
                }
                Err(e) => failures.push(format!("GET {url}: {e}")),
            }
        }
        let Some((url, mut resp)) = answered else {
            return Err(CtlError::Management(format!(
                "{} (is the management plugin enabled?)",
                if failures.is_empty() { "no management URL".to_owned() } else { failures.join("; ") }
            )));
        };
        match resp.status().as_u16() {
            200 => resp.body_mut().read_json().map(Some).map_err(|e| CtlError::Management(format!("GET {url}: {e}"))),
            404 => Ok(None),
            401 => {
                Err(CtlError::Management(format!("GET {url}: 401 unauthorized (check --mgmt-user/--mgmt-password)")))
            }
            code => Err(CtlError::Management(format!("GET {url}: HTTP {code}"))),
        }
    }

    /// Every queue of `vhost`, with statistics.
    pub fn queues(&self, vhost: &str) -> Result<Vec<Value>> {
        let v = self.get(&format!("/api/queues/{}", enc(vhost)))?;
        let v = v.ok_or_else(|| CtlError::Config(format!("vhost {vhost:?} not found")))?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    pub fn exchanges(&self, vhost: &str) -> Result<Vec<Value>> {
        Ok(self.get(&format!("/api/exchanges/{}", enc(vhost)))?.and_then(|v| v.as_array().cloned()).unwrap_or_default())
    }

    pub fn bindings(&self, vhost: &str) -> Result<Vec<Value>> {
        Ok(self.get(&format!("/api/bindings/{}", enc(vhost)))?.and_then(|v| v.as_array().cloned()).unwrap_or_default())
    }
}

/// Percent-encodes a path segment (vhost "/" is "%2F").
pub fn enc(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
