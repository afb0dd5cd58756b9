//! Where the console keeps each job's summary and timeline: SQLite (one file, embedded) or
//! PostgreSQL (several consoles sharing one database), through sqlx's `Any` driver with SQL that
//! both accept.
//!
//! Two tables: `warren_events`, every event once (keyed by job, instant, step and worker, so a
//! message delivered twice stores nothing twice), and `warren_jobs`, one row per job merged with
//! the rules of [`crate::event::Summary::merge`] inside the upsert itself, so two consoles
//! writing events of one job at once still end where one would.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row as _};

use crate::event::{Received, Summary};

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            anyhow::bail!("console.database_url must start with sqlite:// or postgres:// (got {})", redact(url))
        }
    }
}

/// A database URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    warren_infra::redact_url(url)
}

/// The advisory lock consoles take on a shared PostgreSQL database while they create its
/// tables (an arbitrary key of Warren's: "warrenco" in ASCII).
const MIGRATION_LOCK: i64 = 0x7761_7272_656e_636f;

const SCHEMA: [&str; 6] = [
    "CREATE TABLE IF NOT EXISTS warren_jobs (
        job_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        queue TEXT NOT NULL,
        first_us BIGINT NOT NULL,
        last_us BIGINT NOT NULL,
        status TEXT NOT NULL,
        status_key BIGINT NOT NULL,
        worker_id TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        trace_id TEXT NOT NULL,
        error_class TEXT,
        error_type TEXT,
        error_message TEXT,
        error_key BIGINT NOT NULL,
        run_ms BIGINT,
        output_bytes BIGINT,
        progress DOUBLE PRECISION,
        progress_text TEXT,
        progress_key BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS warren_jobs_last ON warren_jobs (last_us)",
    "CREATE INDEX IF NOT EXISTS warren_jobs_kind_last ON warren_jobs (kind, last_us)",
    "CREATE INDEX IF NOT EXISTS warren_jobs_status_last ON warren_jobs (status, last_us)",
    "CREATE TABLE IF NOT EXISTS warren_events (
        job_id TEXT NOT NULL,
        at_us BIGINT NOT NULL,
        event TEXT NOT NULL,
        worker_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        attempt BIGINT NOT NULL,
        run_ms BIGINT,
        body TEXT NOT NULL,
        PRIMARY KEY (job_id, at_us, event, worker_id)
    )",
    "CREATE INDEX IF NOT EXISTS warren_events_at ON warren_events (at_us)",
];

/// The table or index a statement of [`SCHEMA`] creates: the word after `IF NOT EXISTS`.
fn created(statement: &str) -> Option<&str> {
    let mut words = statement.split_whitespace();
    words.by_ref().find(|w| *w == "EXISTS")?;
    words.next()
}

/// PostgreSQL chose this transaction as a deadlock's victim (SQLSTATE 40P01).
fn is_deadlock(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "40P01")
}

const UPSERT_HEAD: &str = "INSERT INTO warren_jobs (job_id, kind, queue, first_us, last_us, status, status_key,
        worker_id, attempts, trace_id, error_class, error_type, error_message, error_key, run_ms, output_bytes,
        progress, progress_text, progress_key)
    VALUES ";

/// Parameters of one job's row in the upsert.
const JOB_PARAMS: usize = 19;

/// Job rows per upsert statement (one statement per job made the transaction a round trip per
/// job; 19 x 50 parameters is well inside both databases' limits).
const JOB_ROWS: usize = 50;

const UPSERT_TAIL: &str = "
    ON CONFLICT (job_id) DO UPDATE SET
        kind = CASE WHEN warren_jobs.kind = 'unknown' THEN excluded.kind ELSE warren_jobs.kind END,
        first_us = CASE WHEN excluded.first_us < warren_jobs.first_us THEN excluded.first_us ELSE warren_jobs.first_us END,
        last_us = CASE WHEN excluded.last_us > warren_jobs.last_us THEN excluded.last_us ELSE warren_jobs.last_us END,
        status = CASE WHEN excluded.status_key >= warren_jobs.status_key THEN excluded.status ELSE warren_jobs.status END,
        worker_id = CASE WHEN excluded.status_key >= warren_jobs.status_key THEN excluded.worker_id ELSE warren_jobs.worker_id END,
        queue = CASE WHEN excluded.status_key >= warren_jobs.status_key THEN excluded.queue ELSE warren_jobs.queue END,
        status_key = CASE WHEN excluded.status_key >= warren_jobs.status_key THEN excluded.status_key ELSE warren_jobs.status_key END,
        attempts = CASE WHEN excluded.attempts > warren_jobs.attempts THEN excluded.attempts ELSE warren_jobs.attempts END,
        trace_id = CASE WHEN warren_jobs.trace_id = '' THEN excluded.trace_id ELSE warren_jobs.trace_id END,
        error_class = CASE WHEN excluded.error_key > warren_jobs.error_key THEN excluded.error_class ELSE warren_jobs.error_class END,
        error_type = CASE WHEN excluded.error_key > warren_jobs.error_key THEN excluded.error_type ELSE warren_jobs.error_type END,
        error_message = CASE WHEN excluded.error_key > warren_jobs.error_key THEN excluded.error_message ELSE warren_jobs.error_message END,
        error_key = CASE WHEN excluded.error_key > warren_jobs.error_key THEN excluded.error_key ELSE warren_jobs.error_key END,
        run_ms = COALESCE(excluded.run_ms, warren_jobs.run_ms),
        output_bytes = COALESCE(excluded.output_bytes, warren_jobs.output_bytes),
        progress = CASE WHEN excluded.progress_key > warren_jobs.progress_key THEN excluded.progress ELSE warren_jobs.progress END,
        progress_text = CASE WHEN excluded.progress_key > warren_jobs.progress_key THEN excluded.progress_text ELSE warren_jobs.progress_text END,
        progress_key = CASE WHEN excluded.progress_key > warren_jobs.progress_key THEN excluded.progress_key ELSE warren_jobs.progress_key END";

/// Rows of `warren_events` per INSERT statement (8 parameters each: well inside SQLite's and
/// PostgreSQL's limits).
const EVENT_ROWS: usize = 100;

const JOB_COLUMNS: &str = "job_id, kind, queue, first_us, last_us, status, worker_id, attempts, trace_id, \
    error_class, error_type, error_message, run_ms, output_bytes, progress, progress_text";

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Job {
    pub job_id: String,
    pub kind: String,
    pub queue: String,
    pub status: String,
    pub first_us: i64,
    pub last_us: i64,
    pub worker_id: String,
    pub attempts: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub trace_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_text: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobError {
    pub class: String,
    #[serde(rename = "type")]
    pub error_type: String,
    pub message: String,
}

fn job_of(row: &AnyRow) -> Result<Job, sqlx::Error> {
    let error_type: Option<String> = row.try_get("error_type")?;
    Ok(Job {
        job_id: row.try_get("job_id")?,
        kind: row.try_get("kind")?,
        queue: row.try_get("queue")?,
        status: row.try_get("status")?,
        first_us: row.try_get("first_us")?,
        last_us: row.try_get("last_us")?,
        worker_id: row.try_get("worker_id")?,
        attempts: row.try_get("attempts")?,
        trace_id: row.try_get("trace_id")?,
        error: match error_type {
            Some(error_type) => Some(JobError {
                class: row.try_get::<Option<String>, _>("error_class")?.unwrap_or_default(),
                error_type,
                message: row.try_get::<Option<String>, _>("error_message")?.unwrap_or_default(),
            }),
            None => None,
        },
        run_ms: row.try_get("run_ms")?,
        output_bytes: row.try_get("output_bytes")?,
        progress: row.try_get("progress")?,
        progress_text: row.try_get("progress_text")?,
    })
}

/// What one list query asks for.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub kind: Option<String>,
    pub status: Option<String>,
    /// Jobs heard of since (microseconds since the epoch).
    pub since_us: Option<i64>,
    /// The page after this (last_us, job_id) of the previous page.
    pub after: Option<(i64, String)>,
    pub limit: i64,
}

/// Per kind and status, how many jobs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Count {
    pub kind: String,
    pub status: String,
    pub jobs: i64,
}

/// One minute of one kind: steps finished and their run time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Minute {
    pub kind: String,
    pub minute_us: i64,
    pub succeeded: i64,
    pub retried: i64,
    pub dead_lettered: i64,
    pub avg_run_ms: Option<f64>,
    pub max_run_ms: Option<i64>,
}

/// Failures of one kind and error type.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    pub kind: String,
    pub error_type: String,
    pub jobs: i64,
    pub dead_lettered: i64,
    pub last_us: i64,
    /// One of their messages.
    pub message: String,
    pub example_job: String,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// What storing a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    /// Events written.
    pub new: u64,
    /// Events already held (a message delivered again).
    pub duplicate: u64,
    /// Jobs whose row changed.
    pub jobs: u64,
}

impl Store {
    /// Opens (creating a SQLite file when missing) and makes the tables.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url)?;
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
            }
            _ => url.to_owned(),
        };
        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        // SQLite has one writer; one connection writes while readers use the others (WAL).
        // synchronous = FULL: a commit the console acks for survives a power loss too (WAL's
        // NORMAL may roll the last commits back), at one fsync per batch.
        let options = match backend {
            Backend::Sqlite => options.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    for pragma in
                        ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL", "PRAGMA busy_timeout = 10000"]
                    {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            }),
            Backend::Postgres => options.max_connections(8),
        };
        let pool =
            options.connect(&url).await.with_context(|| format!("open the console's database {}", redact(&url)))?;
        let store = Self { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    /// Creates the tables, in one transaction. On PostgreSQL, where consoles share the
    /// database, under an advisory lock (two `CREATE TABLE IF NOT EXISTS` of one table at once
    /// fail on `pg_type`'s unique index), and only what is missing once the lock is held:
    /// `CREATE INDEX IF NOT EXISTS` locks its table before it finds the index there, and that
    /// lock, held to the end of the transaction, deadlocked with another console's batch (CI,
    /// 2026-12-06). Tried again when PostgreSQL still picks it as a deadlock's victim (tables
    /// partly there while others write: a newer schema).
    async fn migrate(&self) -> anyhow::Result<()> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.create_tables().await {
                Ok(()) => return Ok(()),
                Err(e) if tries < 5 && is_deadlock(&e) => {
                    tracing::info!(tries, "creating the console's tables met a deadlock; trying again");
                    tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                }
                Err(e) => return Err(anyhow::Error::new(e).context("create the console's tables")),
            }
        }
    }

    async fn create_tables(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        for statement in SCHEMA {
            let missing = match (self.backend, created(statement)) {
                (Backend::Postgres, Some(name)) => {
                    let (found,): (i64,) = sqlx::query_as(
                        "SELECT COUNT(*) AS found FROM (SELECT to_regclass($1) AS r) AS x WHERE r IS NOT NULL",
                    )
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await?;
                    found == 0
                }
                _ => true,
            };
            if missing {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
        }
        tx.commit().await
    }

    /// Stores a batch in one transaction: every event (once) and each job's merged summary.
    pub async fn store(&self, batch: &[Received]) -> Result<Stored, sqlx::Error> {
        let mut stored = Stored::default();
        if batch.is_empty() {
            return Ok(stored);
        }
        let summaries = crate::event::summarise(batch.iter().map(|r| &r.event));
        let mut tx = self.pool.begin().await?;
        for chunk in batch.chunks(EVENT_ROWS) {
            let mut sql = String::from(
                "INSERT INTO warren_events (job_id, at_us, event, worker_id, kind, attempt, run_ms, body) VALUES ",
            );
            for i in 0..chunk.len() {
                let p = i * 8;
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6,
                    p + 7,
                    p + 8
                ));
            }
            sql.push_str(" ON CONFLICT DO NOTHING");
            let mut q = sqlx::query(&sql);
            for r in chunk {
                let e = &r.event;
                q = q
                    .bind(e.job_id.clone())
                    .bind(e.at_us)
                    .bind(e.event.clone())
                    .bind(e.worker_id.clone())
                    .bind(e.kind.clone())
                    .bind(i64::from(e.attempt))
                    .bind(e.run_ms)
                    .bind(r.raw.clone());
            }
            let written = q.execute(&mut *tx).await?.rows_affected();
            stored.new += written;
            stored.duplicate += chunk.len() as u64 - written.min(chunk.len() as u64);
        }
        // Sorted by job id (a BTreeMap): writers sharing a database take rows in one order.
        let mut rows: Vec<(String, Summary)> = summaries.into_iter().collect();
        stored.jobs = rows.len() as u64;
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(JOB_ROWS));
            upsert(&mut tx, std::mem::replace(&mut rows, rest)).await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// One job, or None when the console has not heard of it.
    pub async fn job(&self, job_id: &str) -> Result<Option<Job>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM warren_jobs WHERE job_id = $1"))
            .bind(job_id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_of).transpose()
    }

    /// The jobs named, as they are now (for the live stream).
    pub async fn jobs(&self, ids: &[String]) -> Result<Vec<Job>, sqlx::Error> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!("SELECT {JOB_COLUMNS} FROM warren_jobs WHERE job_id IN ({})", marks.join(","));
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.clone());
            }
            for row in q.fetch_all(&self.pool).await? {
                out.push(job_of(&row)?);
            }
        }
        Ok(out)
    }

    /// A job's events in the order they happened.
    pub async fn timeline(&self, job_id: &str) -> Result<Vec<serde_json::Value>, sqlx::Error> {
        let rows = sqlx::query("SELECT event, at_us, body FROM warren_events WHERE job_id = $1")
            .bind(job_id.to_owned())
            .fetch_all(&self.pool)
            .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let event: String = row.try_get("event")?;
            let at_us: i64 = row.try_get("at_us")?;
            let body: String = row.try_get("body")?;
            let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
            events.push((crate::event::order_key(at_us, &event), value));
        }
        events.sort_by_key(|(key, _)| *key);
        Ok(events.into_iter().map(|(_, v)| v).collect())
    }

    /// A page of jobs, the most recently heard of first.
    pub async fn list(&self, q: &ListQuery) -> Result<Vec<Job>, sqlx::Error> {
        let mut conditions = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if q.kind.is_some() {
            conditions.push(format!("kind = {}", next()));
        }
        if q.status.is_some() {
            conditions.push(format!("status = {}", next()));
        }
        if q.since_us.is_some() {
            conditions.push(format!("last_us >= {}", next()));
        }
        if q.after.is_some() {
            let (a, b, c) = (next(), next(), next());
            conditions.push(format!("(last_us < {a} OR (last_us = {b} AND job_id < {c}))"));
        }
        let limit = next();
        let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
        let sql =
            format!("SELECT {JOB_COLUMNS} FROM warren_jobs {filter} ORDER BY last_us DESC, job_id DESC LIMIT {limit}");
        let mut query = sqlx::query(&sql);
        if let Some(k) = &q.kind {
            query = query.bind(k.clone());
        }
        if let Some(s) = &q.status {
            query = query.bind(s.clone());
        }
        if let Some(since) = q.since_us {
            query = query.bind(since);
        }
        if let Some((last, id)) = &q.after {
            query = query.bind(*last).bind(*last).bind(id.clone());
        }
        query = query.bind(q.limit);
        query.fetch_all(&self.pool).await?.iter().map(job_of).collect()
    }

    /// Jobs per kind and status among those heard of since `since_us`.
    pub async fn counts(&self, since_us: i64) -> Result<Vec<Count>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT kind, status, COUNT(*) AS jobs FROM warren_jobs WHERE last_us >= $1
             GROUP BY kind, status ORDER BY kind, status",
        )
        .bind(since_us)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(Count { kind: r.try_get("kind")?, status: r.try_get("status")?, jobs: r.try_get("jobs")? }))
            .collect()
    }

    /// Per kind and minute since `since_us`: jobs succeeded, retried, dead-lettered, run time.
    pub async fn minutes(&self, since_us: i64) -> Result<Vec<Minute>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT kind, (at_us / 60000000) * 60000000 AS minute_us,
                    SUM(CASE WHEN event = 'succeeded' THEN 1 ELSE 0 END) AS succeeded,
                    SUM(CASE WHEN event = 'retried' THEN 1 ELSE 0 END) AS retried,
                    SUM(CASE WHEN event = 'dead_lettered' THEN 1 ELSE 0 END) AS dead_lettered,
                    CAST(AVG(run_ms) AS DOUBLE PRECISION) AS avg_run_ms,
                    MAX(run_ms) AS max_run_ms
             FROM warren_events
             WHERE at_us >= $1 AND event IN ('succeeded', 'retried', 'dead_lettered')
             GROUP BY kind, (at_us / 60000000) * 60000000 ORDER BY minute_us, kind",
        )
        .bind(since_us)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Minute {
                    kind: r.try_get("kind")?,
                    minute_us: r.try_get("minute_us")?,
                    succeeded: r.try_get("succeeded")?,
                    retried: r.try_get("retried")?,
                    dead_lettered: r.try_get("dead_lettered")?,
                    avg_run_ms: r.try_get("avg_run_ms")?,
                    max_run_ms: r.try_get("max_run_ms")?,
                })
            })
            .collect()
    }

    /// Jobs that met an error since `since_us`, grouped by kind and error type, most first.
    pub async fn failures(&self, since_us: i64) -> Result<Vec<Failure>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT kind, error_type, COUNT(*) AS jobs,
                    SUM(CASE WHEN status = 'dead_lettered' THEN 1 ELSE 0 END) AS dead_lettered,
                    MAX(last_us) AS last_us, MAX(error_message) AS message, MAX(job_id) AS example_job
             FROM warren_jobs WHERE error_type IS NOT NULL AND last_us >= $1
             GROUP BY kind, error_type ORDER BY jobs DESC, kind, error_type LIMIT 200",
        )
        .bind(since_us)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Failure {
                    kind: r.try_get("kind")?,
                    error_type: r.try_get("error_type")?,
                    jobs: r.try_get("jobs")?,
                    dead_lettered: r.try_get("dead_lettered")?,
                    last_us: r.try_get("last_us")?,
                    message: r.try_get::<Option<String>, _>("message")?.unwrap_or_default(),
                    example_job: r.try_get::<Option<String>, _>("example_job")?.unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Deletes jobs not heard of since `before_us`, and their events (and events of no job
    /// that old). Returns (jobs, events) deleted.
    pub async fn expire(&self, before_us: i64) -> Result<(u64, u64), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let events = sqlx::query(
            "DELETE FROM warren_events WHERE at_us < $1 AND NOT EXISTS
                (SELECT 1 FROM warren_jobs j WHERE j.job_id = warren_events.job_id AND j.last_us >= $2)",
        )
        .bind(before_us)
        .bind(before_us)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let jobs = sqlx::query("DELETE FROM warren_jobs WHERE last_us < $1")
            .bind(before_us)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok((jobs, events))
    }

    /// (jobs, events) held.
    pub async fn size(&self) -> Result<(i64, i64), sqlx::Error> {
        let jobs: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM warren_jobs").fetch_one(&self.pool).await?.try_get("n")?;
        let events: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM warren_events").fetch_one(&self.pool).await?.try_get("n")?;
        Ok((jobs, events))
    }

    /// Bytes the console's tables take on disk (SQLite: the whole file; PostgreSQL: both
    /// tables with their indexes).
    pub async fn bytes(&self) -> Result<i64, sqlx::Error> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT (SELECT page_count FROM pragma_page_count()) * (SELECT page_size FROM pragma_page_size()) AS n"
            }
            Backend::Postgres => {
                "SELECT CAST(pg_total_relation_size('warren_jobs') + pg_total_relation_size('warren_events') AS BIGINT) AS n"
            }
        };
        sqlx::query(sql).fetch_one(&self.pool).await?.try_get("n")
    }

    /// The database answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn upsert(tx: &mut sqlx::Transaction<'_, sqlx::Any>, rows: Vec<(String, Summary)>) -> Result<(), sqlx::Error> {
    let mut sql = String::from(UPSERT_HEAD);
    for i in 0..rows.len() {
        let p = i * JOB_PARAMS;
        let marks: Vec<String> = (1..=JOB_PARAMS)
            .map(|n| if n == 17 { format!("NULLIF(${}, -1.0)", p + n) } else { format!("${}", p + n) })
            .collect();
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!("({})", marks.join(", ")));
    }
    sql.push_str(UPSERT_TAIL);
    let mut q = sqlx::query(&sql);
    for (job_id, s) in rows {
        let (class, ty, message) = match s.error {
            Some(e) => (Some(e.class), Some(e.error_type), Some(e.message)),
            None => (None, None, None),
        };
        q = q
            .bind(job_id)
            .bind(s.kind)
            .bind(s.queue)
            .bind(s.first_us)
            .bind(s.last_us)
            .bind(s.status.to_owned())
            .bind(s.status_key)
            .bind(s.worker_id)
            .bind(s.attempts)
            .bind(s.trace_id)
            .bind(class)
            .bind(ty)
            .bind(message)
            .bind(s.error_key)
            .bind(s.run_ms)
            .bind(s.output_bytes)
            // Never a NULL float: sqlx 0.8.6's Any driver sends a NULL f64 to PostgreSQL typed
            // as a float4 (any/arguments.rs swaps Real and Double), and the statement, prepared
            // with that type, then refuses the next f64 ("incorrect binary data format"). -1
            // stands for none and NULLIF turns it back.
            .bind(s.progress.unwrap_or(-1.0))
            .bind(s.progress_text)
            .bind(s.progress_key);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// The jobs a batch names, each once (for the live stream).
pub fn job_ids(batch: &[Received]) -> Vec<String> {
    let ids: BTreeSet<&str> = batch.iter().map(|r| r.event.job_id.as_str()).collect();
    ids.into_iter().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_names_what_it_creates() {
        let names: Vec<&str> = SCHEMA.iter().filter_map(|s| created(s)).collect();
        assert_eq!(
            names,
            [
                "warren_jobs",
                "warren_jobs_last",
                "warren_jobs_kind_last",
                "warren_jobs_status_last",
                "warren_events",
                "warren_events_at"
            ]
        );
    }
}
