//! A real HTTPS server per test, standing in for presigned URLs: Python's `http.server` behind
//! TLS with a certificate for 127.0.0.1 from a CA made for the test (openssl), serving the files
//! of a directory (the query ignored, as a store checks a signature there). `/status/<code>`
//! answers that status; `/busy/<n>/<file>` answers 503 to the first `n` GETs, then the file;
//! `/hang/...` never answers.
//! It counts the GETs of each path ([`HttpsServer::requests`]). On a free port; killed, its
//! files removed, when dropped.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::{DEADLINE, TempDir};

const SERVER: &str = r#"
import http.server, json, ssl, sys, os, threading, time
root, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
lock, seen = threading.Lock(), {}
class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=root, **k)
    def do_GET(self):
        path = self.path.split("?")[0]
        with lock:
            seen[path] = seen.get(path, 0) + 1
            count = seen[path]
            with open(os.path.join(root, "..", "requests.json.new"), "w") as f:
                f.write(json.dumps(seen))
            os.replace(os.path.join(root, "..", "requests.json.new"), os.path.join(root, "..", "requests.json"))
        if path.startswith("/status/"):
            self.send_response(int(path.split("/")[2])); self.send_header("Content-Length", "0"); self.end_headers()
            return
        if path.startswith("/hang/"):
            time.sleep(60)
            return
        if path.startswith("/busy/"):
            _, _, n, path = path.split("/", 3)
            if count <= int(n):
                self.send_response(503); self.send_header("Content-Length", "0"); self.end_headers()
                return
            path = "/" + path
        self.path = path
        super().do_GET()
    def log_message(self, *a):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
"#;

#[derive(Debug)]
pub struct HttpsServer {
    _child: Child,
    dir: TempDir,
    pub port: u16,
}

impl HttpsServer {
    pub async fn start() -> Self {
        let dir = TempDir::new("warren-https").expect("dir");
        std::fs::create_dir_all(dir.path().join("files")).expect("files");
        let run = |args: &[&str]| {
            let out =
                std::process::Command::new("openssl").args(args).current_dir(dir.path()).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=warren-test-ca"]
            .iter()
            .chain(&["-keyout", "ca.key", "-out", "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE"])
            .copied()
            .collect::<Vec<_>>());
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(dir.path().join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ]);
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut child = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .args(["-c", SERVER])
            .arg(dir.path().join("files"))
            .arg(port.to_string())
            .arg(dir.path().join("server.pem"))
            .arg(dir.path().join("server.key"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python3");
        let mut stdout = child.stdout.take().expect("stdout");
        let ready = async {
            use tokio::io::AsyncReadExt as _;
            let mut buf = [0u8; 6];
            stdout.read_exact(&mut buf).await.map(|_| buf)
        };
        let said = tokio::time::timeout(DEADLINE, ready).await.expect("the HTTPS server started in time");
        // Bound and listening before it says so: connections wait in the backlog.
        assert_eq!(&said.expect("ready line"), b"ready\n");
        Self { _child: child, dir, port }
    }

    /// The CA certificate (PEM) the server's certificate chains to: the worker's `store.ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// How many GETs `path` (as given to [`HttpsServer::url`], without its query) was sent.
    pub fn requests(&self, path: &str) -> u64 {
        let path = format!("/{}", path.split('?').next().unwrap_or_default());
        std::fs::read(self.dir.path().join("requests.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|seen| seen[&path].as_u64())
            .unwrap_or(0)
    }

    /// Serves `bytes` at `/name`.
    pub fn put(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.dir.path().join("files").join(name), bytes).expect("file");
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}/{}", self.port, path.trim_start_matches('/'))
    }
}
