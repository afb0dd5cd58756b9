//! Warren's one client of RabbitMQ's management HTTP API (port 15672): warrenctl's inspections,
//! and the vhosts, permissions, policies and connections the end-to-end tests manage. Queue
//! listings are typed ([`QueueInfo`]); path segments are percent-encoded by the
//! `percent-encoding` crate; errors name the URL, never the password. Given several nodes'
//! APIs (a cluster), it asks the first that answers, as the AMQP side dials nodes.
//!
//! Why not the RabbitMQ team's `rabbitmq_http_client` crate: it would bring reqwest (a second
//! HTTP client stack beside ureq and hyper) into a CLI that needs eight calls, and its blocking
//! API needs a runtime of its own; the calls here are few and stable.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::Value;

use crate::errors::{CtlError, Result};

/// Path-segment characters left as they are: RFC 3986's unreserved ones.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes a path segment (vhost "/" is "%2F").
pub fn enc(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// A queue as the management API lists it (the fields Warren reads). Its counts and rates come
/// from statistics the broker samples every few seconds. Fields the broker leaves out take
/// their defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct QueueInfo {
    pub name: String,
    /// "classic", "quorum" or "stream".
    #[serde(rename = "type")]
    pub queue_type: Option<String>,
    pub arguments: serde_json::Map<String, Value>,
    pub messages: u64,
    pub messages_ready: u64,
    pub messages_unacknowledged: u64,
    pub consumers: u64,
    /// The `timestamp` property of the message at the head, seconds since the epoch.
    pub head_message_timestamp: Option<f64>,
    pub message_stats: MessageStats,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MessageStats {
    pub publish_details: Option<Rate>,
    pub deliver_get_details: Option<Rate>,
    pub ack_details: Option<Rate>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Rate {
    pub rate: f64,
}

#[derive(Debug, Clone)]
pub struct Mgmt {
    bases: Vec<String>,
    /// The node that answered last: asked first next time.
    current: Arc<AtomicUsize>,
    auth: String,
    agent: ureq::Agent,
}

enum Body<'a> {
    None,
    Json(&'a Value),
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

    /// One request to the first node that answers: its status and body.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Body<'_>,
    ) -> Result<(u16, String, ureq::http::Response<ureq::Body>)> {
        let mut failures = Vec::new();
        for i in warren_infra::nodes::dial_order(self.bases.len(), self.current.load(Ordering::Relaxed)) {
            let url = format!("{}{path}", self.bases[i]);
            let sent = match (method, &body) {
                ("GET", _) => self.agent.get(&url).header("Authorization", &self.auth).call(),
                ("DELETE", _) => self.agent.delete(&url).header("Authorization", &self.auth).call(),
                ("PUT", Body::Json(v)) => self.agent.put(&url).header("Authorization", &self.auth).send_json(v),
                ("PUT", Body::None) => self.agent.put(&url).header("Authorization", &self.auth).send_empty(),
                _ => return Err(CtlError::Management(format!("{method} is not a call this client makes"))),
            };
            match sent {
                Ok(resp) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok((resp.status().as_u16(), url, resp));
                }
                Err(e) => failures.push(format!("{method} {url}: {e}")),
            }
        }
        Err(CtlError::Management(format!(
            "{} (is the management plugin enabled?)",
            if failures.is_empty() { "no management URL".to_owned() } else { failures.join("; ") }
        )))
    }

    fn get(&self, path: &str) -> Result<Option<Value>> {
        let (status, url, mut resp) = self.call("GET", path, Body::None)?;
        match status {
            200 => resp.body_mut().read_json().map(Some).map_err(|e| CtlError::Management(format!("GET {url}: {e}"))),
            404 => Ok(None),
            401 => {
                Err(CtlError::Management(format!("GET {url}: 401 unauthorized (check --mgmt-user/--mgmt-password)")))
            }
            code => Err(CtlError::Management(format!("GET {url}: HTTP {code}"))),
        }
    }

    /// A PUT or DELETE that must succeed (2xx).
    fn change(&self, method: &str, path: &str, body: Body<'_>) -> Result<()> {
        let (status, url, _) = self.call(method, path, body)?;
        match status {
            200..=299 => Ok(()),
            code => Err(CtlError::Management(format!("{method} {url}: HTTP {code}"))),
        }
    }

    /// Every queue of `vhost`, with statistics.
    pub fn queues(&self, vhost: &str) -> Result<Vec<QueueInfo>> {
        let v = self.get(&format!("/api/queues/{}", enc(vhost)))?;
        let v = v.ok_or_else(|| CtlError::Config(format!("vhost {vhost:?} not found")))?;
        serde_json::from_value(v).map_err(|e| CtlError::Management(format!("the queue listing of {vhost:?}: {e}")))
    }

    pub fn exchanges(&self, vhost: &str) -> Result<Vec<Value>> {
        Ok(self.get(&format!("/api/exchanges/{}", enc(vhost)))?.and_then(|v| v.as_array().cloned()).unwrap_or_default())
    }

    pub fn bindings(&self, vhost: &str) -> Result<Vec<Value>> {
        Ok(self.get(&format!("/api/bindings/{}", enc(vhost)))?.and_then(|v| v.as_array().cloned()).unwrap_or_default())
    }

    /// The broker's overview; Ok once the API answers.
    pub fn overview(&self) -> Result<Value> {
        self.get("/api/overview")?.ok_or_else(|| CtlError::Management("no overview".into()))
    }

    /// The connections of `vhost` (their names, client properties, ...).
    pub fn connections(&self, vhost: &str) -> Result<Vec<Value>> {
        Ok(self
            .get(&format!("/api/vhosts/{}/connections", enc(vhost)))?
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default())
    }

    pub fn create_vhost(&self, vhost: &str) -> Result<()> {
        self.change("PUT", &format!("/api/vhosts/{}", enc(vhost)), Body::None)
    }

    pub fn delete_vhost(&self, vhost: &str) -> Result<()> {
        self.change("DELETE", &format!("/api/vhosts/{}", enc(vhost)), Body::None)
    }

    /// Full permissions (configure, write, read) for `user` on `vhost`.
    pub fn grant(&self, vhost: &str, user: &str) -> Result<()> {
        let all = serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"});
        self.change("PUT", &format!("/api/permissions/{}/{}", enc(vhost), enc(user)), Body::Json(&all))
    }

    /// A policy `definition` (e.g. `{"max-length": 0}`) on the queues of `vhost` matching `pattern`.
    pub fn set_policy(&self, vhost: &str, name: &str, pattern: &str, definition: &Value) -> Result<()> {
        let policy =
            serde_json::json!({"pattern": pattern, "definition": definition, "apply-to": "queues", "priority": 10});
        self.change("PUT", &format!("/api/policies/{}/{}", enc(vhost), enc(name)), Body::Json(&policy))
    }

    pub fn clear_policy(&self, vhost: &str, name: &str) -> Result<()> {
        self.change("DELETE", &format!("/api/policies/{}/{}", enc(vhost), enc(name)), Body::None)
    }

    /// Force-closes a connection, as an operator would.
    pub fn close_connection(&self, name: &str) -> Result<()> {
        self.change("DELETE", &format!("/api/connections/{}", enc(name)), Body::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded_except_unreserved_characters() {
        assert_eq!(enc("/"), "%2F");
        assert_eq!(enc("warren-test_a.b~c"), "warren-test_a.b~c");
        assert_eq!(enc("127.0.0.1:5672 -> 127.0.0.1:5681"), "127.0.0.1%3A5672%20-%3E%20127.0.0.1%3A5681");
        assert_eq!(enc("é"), "%C3%A9");
    }

    #[test]
    fn a_queue_listing_is_read_into_typed_fields_missing_statistics_included() {
        let listed = serde_json::json!([
            {"name": "warren.checksum", "type": "quorum", "arguments": {"x-queue-type": "quorum"}, "messages": 3,
             "messages_ready": 2, "messages_unacknowledged": 1, "consumers": 1, "head_message_timestamp": 1795000000,
             "message_stats": {"publish_details": {"rate": 2.5}}},
            {"name": "fresh"}
        ]);
        let qs: Vec<QueueInfo> = serde_json::from_value(listed).expect("typed");
        assert_eq!((qs[0].messages_ready, qs[0].consumers, qs[0].queue_type.as_deref()), (2, 1, Some("quorum")));
        assert_eq!(qs[0].message_stats.publish_details.map(|r| r.rate), Some(2.5));
        assert_eq!((qs[1].messages, qs[1].head_message_timestamp, qs[1].queue_type.as_deref()), (0, None, None));
    }
}
