//! The small HTTP server every Warren process runs for its operators: `/metrics` (Prometheus
//! text format), `/healthz` (the process is alive) and `/readyz` (connected and working, as the
//! caller's probe says, with a line saying which broker node, or why not). It binds to
//! `telemetry.metrics_addr`; port 0 picks a free port.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder as _, Registry, TextEncoder};

/// Ready or not, and a line for the operator: the node it is on, or what is missing.
pub type Readiness = (bool, String);

type ReadyProbe = Arc<dyn Fn() -> Readiness + Send + Sync>;

#[derive(Clone)]
struct Served {
    registry: Registry,
    ready: ReadyProbe,
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn spawn(
    addr: &str,
    registry: Registry,
    ready: impl Fn() -> Readiness + Send + Sync + 'static,
) -> anyhow::Result<SocketAddr> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind metrics server to {addr}"))?;
    let bound = listener.local_addr().context("metrics server address")?;
    let state = Served { registry, ready: Arc::new(ready) };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");
    Ok(bound)
}

async fn metrics(State(s): State<Served>) -> impl IntoResponse {
    let mut body = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&s.registry.gather(), &mut body) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, encoder.format_type().to_owned())], body),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_owned())],
            e.to_string().into_bytes(),
        ),
    }
}

async fn readyz(State(s): State<Served>) -> impl IntoResponse {
    match (s.ready)() {
        (true, detail) => (StatusCode::OK, format!("ready: {detail}\n")),
        (false, detail) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {detail}\n")),
    }
}

/// A registry with the process collector (CPU seconds, resident memory, open fds) registered.
pub fn registry() -> Registry {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    {
        // Registration only fails on a duplicate, which a fresh registry cannot have.
        let _ = registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
    }
    registry
}
