//! A private vhost per test, made and removed through the management HTTP API, so tests run in
//! parallel with the default names and leave nothing behind.

use std::time::Duration;

use base64::Engine as _;

/// Management API base URL (`WARREN_TEST_MGMT_URL`, default `http://127.0.0.1:15672`).
pub fn management_url() -> String {
    std::env::var("WARREN_TEST_MGMT_URL").unwrap_or_else(|_| "http://127.0.0.1:15672".into())
}

/// AMQP base URL without vhost (`WARREN_TEST_AMQP_URL`, default guest on 127.0.0.1:5672).
pub fn amqp_base() -> String {
    std::env::var("WARREN_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into())
}

fn auth() -> String {
    let user = std::env::var("WARREN_TEST_MGMT_USER").unwrap_or_else(|_| "guest".into());
    let pass = std::env::var("WARREN_TEST_MGMT_PASSWORD").unwrap_or_else(|_| "guest".into());
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(30))).build().into()
}

/// Waits until the management API answers (after a broker restart, say).
pub fn wait_for_management(deadline: Duration) {
    let until = std::time::Instant::now() + deadline;
    loop {
        let up = agent().get(&format!("{}/api/overview", management_url())).header("Authorization", &auth()).call();
        if up.is_ok() {
            return;
        }
        assert!(std::time::Instant::now() < until, "the management API did not come back");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[derive(Debug)]
pub struct Vhost {
    pub name: String,
    /// AMQP URL of its broker, without vhost.
    pub amqp_base: String,
    /// Management API of its broker.
    pub mgmt_base: String,
}

impl Vhost {
    /// Creates `warren-test-<label>-<uuid>` with full permissions for the test user, on the
    /// test broker.
    pub fn create(label: &str) -> Self {
        Self::create_at(label, &amqp_base(), &management_url())
    }

    /// The same on the broker whose AMQP URL (without vhost) and management API are given (a
    /// node of a cluster: the vhost exists on every node).
    pub fn create_at(label: &str, amqp: &str, mgmt: &str) -> Self {
        let name = format!("warren-test-{label}-{}", uuid::Uuid::new_v4().simple());
        let base = mgmt.to_owned();
        let agent = agent();
        agent.put(&format!("{base}/api/vhosts/{name}")).header("Authorization", &auth()).send_empty().unwrap_or_else(
            |e| panic!("creating vhost {name} via {base} (is the management plugin on? run scripts/setup.sh): {e}"),
        );
        let user = std::env::var("WARREN_TEST_MGMT_USER").unwrap_or_else(|_| "guest".into());
        agent
            .put(&format!("{base}/api/permissions/{name}/{user}"))
            .header("Authorization", &auth())
            .send_json(serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .unwrap_or_else(|e| panic!("granting permissions on {name}: {e}"));
        Self { name, amqp_base: amqp.trim_end_matches('/').to_owned(), mgmt_base: base }
    }

    pub fn amqp_url(&self) -> String {
        format!("{}/{}", self.amqp_base, self.name)
    }

    /// Gives `user` (which must exist) full permissions on this vhost.
    pub fn grant(&self, user: &str) {
        agent()
            .put(&format!("{}/api/permissions/{}/{}", self.mgmt_base, self.name, warrenctl::mgmt::enc(user)))
            .header("Authorization", &auth())
            .send_json(serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .unwrap_or_else(|e| panic!("granting {user} permissions on {}: {e}", self.name));
    }

    /// Force-closes this vhost's connections whose client-given name contains `role` (e.g.
    /// "consumer"), as a network failure or a broker operator would; returns how many.
    /// The management API lists a new connection only after its next statistics round (a few
    /// seconds), so this waits, up to a deadline, until there is one to close.
    pub fn close_connections(&self, role: &str) -> usize {
        let mut closed = 0;
        for name in self.connections(role) {
            agent()
                .delete(&format!("{}/api/connections/{}", self.mgmt_base, warrenctl::mgmt::enc(&name)))
                .header("Authorization", &auth())
                .call()
                .unwrap_or_else(|e| panic!("closing connection {name}: {e}"));
            closed += 1;
        }
        closed
    }

    /// Applies a policy (`definition`, e.g. `{"max-length": 0}`) to this vhost's queues matching
    /// `pattern`, as an operator would.
    pub fn set_policy(&self, name: &str, pattern: &str, definition: serde_json::Value) {
        let url = format!("{}/api/policies/{}/{name}", self.mgmt_base, self.name);
        agent()
            .put(&url)
            .header("Authorization", &auth())
            .send_json(
                serde_json::json!({"pattern": pattern, "definition": definition, "apply-to": "queues", "priority": 10}),
            )
            .unwrap_or_else(|e| panic!("setting policy {name}: {e}"));
    }

    pub fn clear_policy(&self, name: &str) {
        let url = format!("{}/api/policies/{}/{name}", self.mgmt_base, self.name);
        agent()
            .delete(&url)
            .header("Authorization", &auth())
            .call()
            .unwrap_or_else(|e| panic!("clearing policy {name}: {e}"));
    }

    /// The names of this vhost's connections whose client-given name contains `role`, waiting
    /// (up to a deadline) until the management API lists at least one.
    pub fn connections(&self, role: &str) -> Vec<String> {
        let base = &self.mgmt_base;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let conns: serde_json::Value = agent()
                .get(&format!("{base}/api/vhosts/{}/connections", self.name))
                .header("Authorization", &auth())
                .call()
                .and_then(|mut r| r.body_mut().read_json())
                .unwrap_or_else(|e| panic!("listing connections of {}: {e}", self.name));
            let matching: Vec<String> = conns
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["client_properties"]["connection_name"].as_str().unwrap_or("").contains(role))
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect();
            if !matching.is_empty() || std::time::Instant::now() > deadline {
                break matching;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// rstest fixture: a fresh vhost named after the running test (cargo names each test's thread
/// after the test), deleted when the test ends, pass or fail.
#[rstest::fixture]
pub fn vhost() -> Vhost {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("test");
    let label: String = name
        .rsplit("::")
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("-")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(48)
        .collect();
    Vhost::create(&label)
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let base = &self.mgmt_base;
        if let Err(e) =
            agent().delete(&format!("{base}/api/vhosts/{}", self.name)).header("Authorization", &auth()).call()
        {
            eprintln!("warning: could not delete vhost {}: {e}", self.name);
        }
    }
}
