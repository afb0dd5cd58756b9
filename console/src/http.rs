//! The console's HTTP side: the API (`docs/console.md`), the live stream, the operator's page,
//! and `/metrics`, `/healthz`, `/readyz`.
//!
//! Reading is open to whoever reaches the bound address; actions that change a queue (replay)
//! need `Authorization: Bearer <console.token>`. The token is compared in constant time and
//! never written to a log, an error or a page.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use futures_util::StreamExt as _;
use prometheus::{Encoder as _, Registry, TextEncoder};
use serde::Deserialize;
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;
use warrenctl::commands::replay;
use warrenctl::context::Ctx;

use crate::event::{self, Event, STATUSES};
use crate::ingest::{Shared, now_us};
use crate::store::ListQuery;

const PAGE: &str = include_str!("page.html");

/// Jobs a list returns at most per page.
pub const MAX_LIMIT: i64 = 500;

#[derive(Clone)]
struct App {
    shared: Shared,
    ctl: Arc<Ctx>,
    registry: Registry,
    stop: tokio_util::sync::CancellationToken,
}

pub fn router(shared: Shared, ctl: Arc<Ctx>, registry: Registry, stop: tokio_util::sync::CancellationToken) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/jobs", get(list))
        .route("/api/jobs/{id}", get(job))
        .route("/api/stats", get(stats))
        .route("/api/stream", get(stream))
        .route("/api/dead", get(dead))
        .route("/api/dead/{queue}/replay", post(replay_dead))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(App { shared, ctl, registry, stop })
}

/// An API error: its status and a JSON body saying why.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({"error": self.1}))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::warn!(error = %e, "status store query failed");
        ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("the status store did not answer: {e}"))
    }
}

fn bad(why: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, why.into())
}

async fn job(State(app): State<App>, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let store = &app.shared.store;
    let Some(job) = store.job(&id).await? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id:?} in the status store (yet)")));
    };
    let timeline = store.timeline(&id).await?;
    let events: Vec<Event> = timeline.iter().filter_map(|v| serde_json::from_value(v.clone()).ok()).collect();
    Ok(Json(json!({"job": job, "attempts": event::attempts(&events), "timeline": timeline})))
}

#[derive(Debug, Deserialize)]
struct ListParams {
    kind: Option<String>,
    status: Option<String>,
    since: Option<String>,
    limit: Option<i64>,
    /// `next` of the previous page.
    cursor: Option<String>,
}

/// `since`: an age (`15m`, `2h`), an RFC 3339 time or epoch milliseconds; in microseconds.
fn since_us(since: Option<&str>, default_age: Option<Duration>) -> Result<Option<i64>, ApiError> {
    match since.filter(|s| !s.is_empty()) {
        Some(s) => {
            let ms = replay::parse_since(s).map_err(|e| bad(e.to_string()))?;
            i64::try_from(ms)
                .ok()
                .and_then(|ms| ms.checked_mul(1000))
                .map(Some)
                .ok_or_else(|| bad("since: too far ahead"))
        }
        None => Ok(default_age.map(|age| now_us() - age.as_micros() as i64)),
    }
}

fn cursor(c: &str) -> Result<(i64, String), ApiError> {
    let (at, id) = c.split_once(':').ok_or_else(|| bad("cursor: give the `next` of the previous page"))?;
    Ok((at.parse().map_err(|_| bad("cursor: not a cursor"))?, id.to_owned()))
}

async fn list(State(app): State<App>, Query(p): Query<ListParams>) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(s) = p.status.as_deref().filter(|s| !s.is_empty() && !STATUSES.contains(s)) {
        return Err(bad(format!("status {s:?}: one of {}", STATUSES.join(", "))));
    }
    let limit = p.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad(format!("limit: 1 to {MAX_LIMIT}")));
    }
    let q = ListQuery {
        kind: p.kind.filter(|k| !k.is_empty()),
        status: p.status.filter(|s| !s.is_empty()),
        since_us: since_us(p.since.as_deref(), None)?,
        after: p.cursor.as_deref().filter(|c| !c.is_empty()).map(cursor).transpose()?,
        limit,
    };
    let jobs = app.shared.store.list(&q).await?;
    let next = match jobs.last() {
        Some(last) if jobs.len() as i64 == limit => json!(format!("{}:{}", last.last_us, last.job_id)),
        _ => serde_json::Value::Null,
    };
    Ok(Json(json!({"jobs": jobs, "next": next})))
}

#[derive(Debug, Deserialize)]
struct StatsParams {
    since: Option<String>,
}

async fn stats(State(app): State<App>, Query(p): Query<StatsParams>) -> Result<Json<serde_json::Value>, ApiError> {
    let since = since_us(p.since.as_deref(), Some(Duration::from_secs(3600)))?.unwrap_or(0);
    let store = &app.shared.store;
    Ok(Json(json!({
        "since_us": since,
        "counts": store.counts(since).await?,
        "minutes": store.minutes(since).await?,
        "failures": store.failures(since).await?,
    })))
}

#[derive(Debug, Deserialize)]
struct StreamParams {
    kind: Option<String>,
    status: Option<String>,
    job: Option<String>,
}

/// Server-sent events: one `job` event per job that changed, as it is after the change.
async fn stream(
    State(app): State<App>,
    Query(p): Query<StreamParams>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    // Ends with the console, so that a page left open does not hold its shutdown.
    let updates = BroadcastStream::new(app.shared.updates.subscribe()).take_until(app.stop.clone().cancelled_owned());
    let keep = move |j: &crate::store::Job| {
        p.kind.as_deref().is_none_or(|k| k.is_empty() || j.kind == k)
            && p.status.as_deref().is_none_or(|s| s.is_empty() || j.status == s)
            && p.job.as_deref().is_none_or(|id| id.is_empty() || j.job_id == id)
    };
    let events = updates.flat_map(move |batch| {
        let out: Vec<Result<SseEvent, Infallible>> = match batch {
            Ok(jobs) => jobs
                .iter()
                .filter(|j| keep(j))
                .filter_map(|j| SseEvent::default().event("job").json_data(j).ok())
                .map(Ok)
                .collect(),
            // Too slow a reader: tell it to fetch the list again.
            Err(_) => vec![Ok(SseEvent::default().event("lagged").data("missed updates: reload the list"))],
        };
        futures_util::stream::iter(out)
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// The dead-letter queues of the vhost with their depth.
async fn dead(State(app): State<App>) -> Result<Json<serde_json::Value>, ApiError> {
    let ctl = app.ctl.clone();
    let suffix = app.shared.settings.topology.dead_letter_suffix.clone();
    let queues = tokio::task::spawn_blocking(move || ctl.mgmt.queues(&ctl.vhost))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, format!("RabbitMQ's management API: {e}")))?;
    let dead: Vec<serde_json::Value> = queues
        .iter()
        .filter(|q| q.name.ends_with(&suffix))
        .map(|q| json!({"queue": q.name, "messages": q.messages, "consumers": q.consumers}))
        .collect();
    Ok(Json(json!({"queues": dead})))
}

#[derive(Debug, Deserialize)]
struct ReplayParams {
    job_id: Option<String>,
    limit: Option<u64>,
}

/// Whether `headers` carry the configured bearer token (compared in constant time).
pub fn authorised(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return false;
    };
    !token.is_empty()
        && given.len() == token.len()
        && given.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Replays a dead-letter queue's messages (all, up to `limit`, or the one job `job_id`) with
/// `warrenctl replay`'s code.
async fn replay_dead(
    State(app): State<App>,
    Path(queue): Path<String>,
    Query(p): Query<ReplayParams>,
    headers: HeaderMap,
) -> Result<Json<replay::Report>, ApiError> {
    let token = &app.shared.settings.console.token;
    if token.is_empty() {
        app.shared.metrics.replays.with_label_values(&["refused"]).inc();
        return Err(ApiError(StatusCode::FORBIDDEN, "actions are off: console.token is not set".into()));
    }
    if !authorised(&headers, token.expose()) {
        app.shared.metrics.replays.with_label_values(&["refused"]).inc();
        return Err(ApiError(StatusCode::UNAUTHORIZED, "replay needs Authorization: Bearer <console.token>".into()));
    }
    if !queue.ends_with(&app.shared.settings.topology.dead_letter_suffix) {
        return Err(bad(format!("{queue:?} is not a dead-letter queue")));
    }
    let opts = replay::Options {
        filter: p.job_id.as_ref().filter(|id| !id.is_empty()).map(|id| format!("job_id={id}")),
        limit: p.limit,
        ..replay::Options::default()
    };
    match replay::replay(&app.ctl, &queue, opts, false).await {
        Ok(report) => {
            app.shared.metrics.replays.with_label_values(&["done"]).inc();
            tracing::info!(queue = %queue, replayed = report.replayed, failed = report.failed, "replayed from the console");
            Ok(Json(report))
        }
        Err(e) => {
            app.shared.metrics.replays.with_label_values(&["failed"]).inc();
            Err(ApiError(StatusCode::BAD_GATEWAY, format!("replay from {queue}: {e}")))
        }
    }
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let mut body = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&app.registry.gather(), &mut body) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, encoder.format_type().to_owned())], body),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_owned())],
            e.to_string().into_bytes(),
        ),
    }
}

async fn readyz(State(app): State<App>) -> impl IntoResponse {
    let consuming = app.shared.consuming.load(Ordering::Relaxed);
    let store = app.shared.store.ping().await.is_ok() && app.shared.store_ok.load(Ordering::Relaxed);
    match (consuming, store) {
        (true, true) => (StatusCode::OK, "ready: reading events, status store answering\n".to_owned()),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: not connected to the broker\n".to_owned()),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: the status store refuses writes\n".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().expect("header value"));
        h
    }

    #[test]
    fn only_the_configured_bearer_token_authorises() {
        assert!(authorised(&with("Bearer s3cret"), "s3cret"));
        assert!(!authorised(&with("Bearer s3cre"), "s3cret"));
        assert!(!authorised(&with("Bearer s3cret!"), "s3cret"));
        assert!(!authorised(&with("Basic s3cret"), "s3cret"));
        assert!(!authorised(&HeaderMap::new(), "s3cret"));
        assert!(!authorised(&with("Bearer "), ""), "no token configured authorises nobody");
    }

    #[test]
    fn since_takes_ages_times_and_milliseconds() {
        assert_eq!(since_us(Some("1700000000000"), None).ok().flatten(), Some(1_700_000_000_000_000));
        let hour_ago = since_us(Some("1h"), None).ok().flatten().expect("an age");
        assert!((now_us() - hour_ago - 3_600_000_000).abs() < 5_000_000);
        assert!(since_us(Some("soon"), None).is_err());
        assert!(since_us(Some("18446744073709551"), None).is_err(), "no overflow");
        assert_eq!(since_us(None, None).ok().flatten(), None);
        assert_eq!(cursor("12:ab:c").ok(), Some((12, "ab:c".to_owned())));
        assert!(cursor("x").is_err());
    }
}
