//! A private vhost per test, made and removed through the management HTTP API (warrenctl's
//! client, the one Warren has), so tests run in parallel with the default names and leave
//! nothing behind.

use std::time::Duration;

use warrenctl::mgmt::Mgmt;

/// Management API base URL (`WARREN_TEST_MGMT_URL`, default `http://127.0.0.1:15672`).
pub fn management_url() -> String {
    std::env::var("WARREN_TEST_MGMT_URL").unwrap_or_else(|_| "http://127.0.0.1:15672".into())
}

/// AMQP base URL without vhost (`WARREN_TEST_AMQP_URL`, default guest on 127.0.0.1:5672).
pub fn amqp_base() -> String {
    std::env::var("WARREN_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into())
}

/// The test user (`WARREN_TEST_MGMT_USER`, `WARREN_TEST_MGMT_PASSWORD`, default guest).
fn user() -> (String, String) {
    let user = std::env::var("WARREN_TEST_MGMT_USER").unwrap_or_else(|_| "guest".into());
    let pass = std::env::var("WARREN_TEST_MGMT_PASSWORD").unwrap_or_else(|_| "guest".into());
    (user, pass)
}

/// The management API at `base`, as the test user.
pub fn mgmt(base: &str) -> Mgmt {
    let (user, pass) = user();
    Mgmt::new(base, &user, &pass)
}

/// Waits until the management API answers (after a broker restart, say).
pub fn wait_for_management(deadline: Duration) {
    let until = std::time::Instant::now() + deadline;
    let api = mgmt(&management_url());
    while api.overview().is_err() {
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
    api: Mgmt,
}

impl Vhost {
    /// Creates `warren-test-<label>-<uuid>` with full permissions for the test user, on the
    /// test broker.
    pub fn create(label: &str) -> Self {
        Self::create_at(label, &amqp_base(), &management_url())
    }

    /// The same on the broker whose AMQP URL (without vhost) and management API are given (a
    /// node of a cluster: the vhost exists on every node).
    pub fn create_at(label: &str, amqp: &str, mgmt_base: &str) -> Self {
        let name = format!("warren-test-{label}-{}", uuid::Uuid::new_v4().simple());
        let api = mgmt(mgmt_base);
        api.create_vhost(&name).unwrap_or_else(|e| {
            panic!("creating vhost {name} via {mgmt_base} (is the management plugin on? run scripts/setup.sh): {e}")
        });
        api.grant(&name, &user().0).unwrap_or_else(|e| panic!("granting permissions on {name}: {e}"));
        Self { name, amqp_base: amqp.trim_end_matches('/').to_owned(), mgmt_base: mgmt_base.to_owned(), api }
    }

    pub fn amqp_url(&self) -> String {
        format!("{}/{}", self.amqp_base, self.name)
    }

    /// Gives `user` (which must exist) full permissions on this vhost.
    pub fn grant(&self, user: &str) {
        self.api
            .grant(&self.name, user)
            .unwrap_or_else(|e| panic!("granting {user} permissions on {}: {e}", self.name));
    }

    /// Force-closes this vhost's connections whose client-given name contains `role` (e.g.
    /// "consumer"), as a network failure or a broker operator would; returns how many.
    /// The management API lists a new connection only after its next statistics round (a few
    /// seconds), so this waits, up to a deadline, until there is one to close.
    pub fn close_connections(&self, role: &str) -> usize {
        let mut closed = 0;
        for name in self.connections(role) {
            match self.api.close_connection(&name) {
                Ok(()) => closed += 1,
                // Listed a moment after it closed (the API's listing lags): already gone.
                Err(e) if e.to_string().contains("HTTP 404") => {}
                Err(e) => panic!("closing connection {name}: {e}"),
            }
        }
        closed
    }

    /// Applies a policy (`definition`, e.g. `{"max-length": 0}`) to this vhost's queues matching
    /// `pattern`, as an operator would.
    pub fn set_policy(&self, name: &str, pattern: &str, definition: serde_json::Value) {
        self.api
            .set_policy(&self.name, name, pattern, &definition)
            .unwrap_or_else(|e| panic!("setting policy {name}: {e}"));
    }

    pub fn clear_policy(&self, name: &str) {
        self.api.clear_policy(&self.name, name).unwrap_or_else(|e| panic!("clearing policy {name}: {e}"));
    }

    /// The names of this vhost's connections whose client-given name contains `role`, waiting
    /// (up to a deadline) until the management API lists at least one.
    pub fn connections(&self, role: &str) -> Vec<String> {
        self.connection_fields(role, "name")
    }

    /// The users those connections logged in as (as [`Vhost::connections`] waits).
    pub fn connection_users(&self, role: &str) -> Vec<String> {
        self.connection_fields(role, "user")
    }

    fn connection_fields(&self, role: &str, field: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let conns = self
                .api
                .connections(&self.name)
                .unwrap_or_else(|e| panic!("listing connections of {}: {e}", self.name));
            let matching: Vec<String> = conns
                .iter()
                .filter(|c| c["client_properties"]["connection_name"].as_str().unwrap_or("").contains(role))
                .filter_map(|c| c[field].as_str().map(str::to_owned))
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
        if let Err(e) = self.api.delete_vhost(&self.name) {
            eprintln!("warning: could not delete vhost {}: {e}", self.name);
        }
    }
}
