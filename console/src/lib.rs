//! `warren-console`: the status store and web console (`docs/console.md`).
//!
//! It reads every lifecycle event the workers publish (`docs/contract.md`, "Lifecycle
//! events") from a durable queue of its own, keeps each job's summary and timeline in SQLite or
//! PostgreSQL (acking events only once their transaction committed), and answers "what happened
//! to job X?" over HTTP: an API, a live stream, and a page for operators, with a replay action
//! that needs a token.

pub mod event;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use warren_infra::Settings;

use crate::ingest::Shared;
use crate::store::Store;

/// A running console: its address, and a token that stops it.
#[derive(Debug)]
pub struct Console {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    store: Store,
}

impl Console {
    /// Opens the store, starts reading events, retention and the server; returns once serving.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let c = &settings.console;
        anyhow::ensure!(
            !settings.topology.events_exchange.is_empty(),
            "topology.events_exchange is \"\": workers publish no events to read"
        );
        anyhow::ensure!(c.batch > 0 && c.prefetch > 0, "console.batch and console.prefetch must be positive");
        let store = Store::open(&c.database_url).await?;
        let registry = warren_infra::serve::registry();
        let metrics = crate::metrics::Metrics::new(&registry);
        let shared = Shared {
            settings: settings.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            updates: broadcast::channel(256).0,
            consuming: Arc::new(AtomicBool::new(false)),
            store_ok: Arc::new(AtomicBool::new(true)),
        };
        let ctl = warrenctl::context::Ctx::from_settings((*settings).clone(), None, None, None, true)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let stop = CancellationToken::new();
        let listener =
            tokio::net::TcpListener::bind(&c.addr).await.with_context(|| format!("bind the console to {}", c.addr))?;
        let addr = listener.local_addr().context("console address")?;
        let app = http::router(shared.clone(), Arc::new(ctl), registry, stop.clone());
        let mut tasks = Vec::new();
        let serving = stop.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move { serving.cancelled().await };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "console server stopped");
            }
        }));
        tasks.push(tokio::spawn(ingest::run(shared.clone(), stop.clone())));
        tasks.push(tokio::spawn(housekeeping(shared, stop.clone())));
        tracing::info!(%addr, store = %store::redact(&c.database_url), "console serving");
        Ok(Self { addr, stop, tasks, store })
    }

    /// Stops reading (uncommitted events stay in the queue) and serving, then closes the store.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for mut t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(10), &mut t).await.is_err() {
                tracing::warn!("a console task did not stop within 10 s; aborted");
                t.abort();
            }
        }
        self.store.close().await;
    }
}

/// Every `console.retention_check_ms`: retention, then the store's size for the metrics (a
/// COUNT over both tables: not something to run more often).
async fn housekeeping(shared: Shared, stop: CancellationToken) {
    let c = &shared.settings.console;
    let every = Duration::from_millis(c.retention_check_ms.max(1000));
    let keep_us = i64::try_from(c.retention_hours.saturating_mul(3_600_000_000)).unwrap_or(i64::MAX);
    loop {
        match shared.store.expire(ingest::now_us().saturating_sub(keep_us)).await {
            Ok((jobs, events)) => {
                shared.metrics.expired.inc_by(jobs);
                if jobs + events > 0 {
                    tracing::info!(jobs, events, "retention deleted old jobs");
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention failed; trying again later"),
        }
        if let (Ok((jobs, events)), Ok(bytes)) = (shared.store.size().await, shared.store.bytes().await) {
            shared.metrics.jobs.set(jobs);
            shared.metrics.stored_events.set(events);
            shared.metrics.store_bytes.set(bytes);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
