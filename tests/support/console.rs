//! The console under test: a PostgreSQL database of a test's own, the console's HTTP API, and a
//! real headless Chromium driven through ChromeDriver (the W3C WebDriver protocol over HTTP).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::DEADLINE;

/// The machine's PostgreSQL (127.0.0.1:5432, trust auth; `scripts/setup.sh` starts it).
pub const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";

/// A database of its own on the machine's PostgreSQL, dropped with everything in it.
#[derive(Debug)]
pub struct PgDatabase {
    pub name: String,
}

fn psql(sql: &str) {
    psql_in("postgres", sql);
}

fn psql_in(db: &str, sql: &str) {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
}

impl PgDatabase {
    pub fn create(label: &str) -> Self {
        let name = format!("warren_test_{label}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        psql(&format!("CREATE DATABASE {name}"));
        Self { name }
    }

    pub fn url(&self) -> String {
        format!("{POSTGRES}/{}", self.name)
    }

    /// Runs SQL in this database (as the superuser), failing the test if it fails.
    pub fn sql(&self, sql: &str) {
        psql_in(&self.name, sql);
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .output();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// A request to the console: (status, JSON body or Null).
pub fn call(method: &str, url: &str, token: Option<&str>) -> (u16, Value) {
    let agent = agent();
    let result = match method {
        "GET" => {
            let mut r = agent.get(url);
            if let Some(t) = token {
                r = r.header("Authorization", &format!("Bearer {t}"));
            }
            r.call()
        }
        _ => {
            let mut r = agent.post(url);
            if let Some(t) = token {
                r = r.header("Authorization", &format!("Bearer {t}"));
            }
            r.send_empty()
        }
    };
    let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let text = resp.body_mut().read_to_string().expect("body");
    (resp.status().as_u16(), serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// GET `path` of the console at `addr` (blocking; call it from `block_in_place`).
pub fn api(addr: SocketAddr, path: &str) -> (u16, Value) {
    call("GET", &format!("http://{addr}{path}"), None)
}

/// Waits until `check` holds for the job's API answer; returns that answer.
pub async fn await_job(addr: SocketAddr, job_id: &str, check: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (status, body) = tokio::task::block_in_place(|| api(addr, &format!("/api/jobs/{job_id}")));
        if status == 200 && check(&body) {
            return body;
        }
        assert!(start.elapsed() < DEADLINE, "job {job_id} not as expected within {DEADLINE:?}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Headless Chromium through ChromeDriver, one session, closed when dropped.
#[derive(Debug)]
pub struct Browser {
    _driver: Driver,
    base: String,
}

/// The ChromeDriver process, killed when dropped (also when starting the session fails).
#[derive(Debug)]
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Browser {
    /// Starts ChromeDriver on a free port and a headless Chromium session.
    pub fn start() -> Self {
        let port = free_port();
        let driver = Driver(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver (Debian's chromium-driver; scripts/setup.sh installs it)"),
        );
        let server = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        let up = || agent().get(&format!("{server}/status")).call().is_ok_and(|r| r.status() == 200);
        while !up() {
            assert!(start.elapsed() < DEADLINE, "chromedriver did not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1700"]
        }}}});
        let resp = agent().post(&format!("{server}/session")).send_json(&caps);
        let body: Value = resp.expect("new session").body_mut().read_json().expect("session JSON");
        let id = body["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {body}")).to_owned();
        Self { _driver: driver, base: format!("{server}/session/{id}") }
    }

    fn send(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let agent = agent();
        let resp = match method {
            "GET" => agent.get(&url).call(),
            "DELETE" => agent.delete(&url).call(),
            _ => agent.post(&url).send_json(&body),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let value: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
        value["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.send("POST", "/url", json!({"url": url}));
    }

    /// The elements matching a CSS selector (their WebDriver ids).
    pub fn find_all(&self, css: &str) -> Vec<String> {
        let found = self.send("POST", "/elements", json!({"using": "css selector", "value": css}));
        found
            .as_array()
            .map(|a| a.iter().filter_map(|e| e.as_object()?.values().next()?.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    /// Waits for an element matching `css`.
    pub fn find(&self, css: &str) -> String {
        self.wait_for(css, |_| true)
    }

    /// Waits until the first element matching `css` has a text for which `check` holds.
    pub fn wait_for(&self, css: &str, check: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(id) = self.find_all(css).into_iter().next()
                && check(&self.text(&id))
            {
                return id;
            }
            assert!(start.elapsed() < DEADLINE, "no {css:?} as expected on the page within {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn text(&self, element: &str) -> String {
        self.send("GET", &format!("/element/{element}/text"), Value::Null).as_str().unwrap_or("").to_owned()
    }

    pub fn type_into(&self, element: &str, text: &str) {
        self.send("POST", &format!("/element/{element}/clear"), json!({}));
        self.send("POST", &format!("/element/{element}/value"), json!({"text": text}));
    }

    pub fn click(&self, element: &str) {
        self.send("POST", &format!("/element/{element}/click"), json!({}));
    }

    /// The page's HTML as the browser has it now.
    pub fn source(&self) -> String {
        self.send("GET", "/source", Value::Null).as_str().unwrap_or("").to_owned()
    }

    /// A PNG of the window.
    pub fn screenshot(&self, path: &Path) {
        let data = self.send("GET", "/screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD.decode(data.as_str().expect("base64 PNG")).expect("base64");
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session first; the driver goes with `self._driver`.
        let _ = agent().delete(&self.base).call();
    }
}
