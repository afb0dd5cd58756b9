//! The status store against the real databases: a SQLite file and the machine's PostgreSQL
//! (127.0.0.1:5432, trust auth; `scripts/setup.sh` starts it), a database of the test's own.

use std::process::Command;

use warren_console::event::{Event, EventError, Received};
use warren_console::store::{ListQuery, Store};

fn event(job: &str, step: &str, at_us: i64, attempt: u32) -> Received {
    let mut e = Event::new(step, job, "checksum", "warren.checksum", "w1", at_us, attempt);
    if step == "retried" {
        e.error = Some(EventError { class: "transient".into(), error_type: "timeout".into(), message: "slow".into() });
    }
    if step == "succeeded" {
        e.run_ms = Some(7);
    }
    if step == "progress" {
        e.fraction = Some(0.25);
        e.text = Some("a quarter".into());
    }
    let raw = serde_json::to_string(&e).expect("json");
    Received { event: e, raw }
}

fn psql(sql: &str) {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("psql");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
}

async fn exercise(store: &Store) {
    let now = 1_800_000_000_000_000;
    // Two batches, the second out of order and with a copy of the first's last event.
    let first = [event("a", "received", now, 0), event("a", "started", now + 1, 0), event("a", "retried", now + 2, 0)];
    let second = [
        event("a", "succeeded", now + 20, 1),
        event("a", "retried", now + 2, 0),
        event("a", "started", now + 11, 1),
        event("a", "received", now + 10, 1),
        event("b", "received", now + 5, 0),
        event("c", "progress", now + 3, 0),
    ];
    let s1 = store.store(&first).await.expect("first batch");
    assert_eq!((s1.new, s1.duplicate, s1.jobs), (3, 0, 1));
    let s2 = store.store(&second).await.expect("second batch");
    assert_eq!((s2.new, s2.duplicate, s2.jobs), (5, 1, 3));
    let a = store.job("a").await.expect("query").expect("job a");
    assert_eq!((a.status.as_str(), a.attempts, a.first_us, a.last_us), ("succeeded", 2, now, now + 20));
    assert_eq!(a.error.as_ref().map(|e| e.error_type.as_str()), Some("timeout"));
    assert_eq!(a.run_ms, Some(7));
    assert_eq!(a.progress, Some(1.0));
    // The same again changes nothing.
    let s3 = store.store(&second).await.expect("again");
    assert_eq!((s3.new, s3.duplicate), (0, 6));
    assert_eq!(store.job("a").await.expect("query"), Some(a.clone()));
    let timeline: Vec<String> = store
        .timeline("a")
        .await
        .expect("timeline")
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(timeline, ["received", "started", "retried", "received", "started", "succeeded"]);
    // Lists: filters and keyset pages.
    let c = store.job("c").await.expect("query").expect("job c");
    assert_eq!((c.status.as_str(), c.progress, c.progress_text.as_deref()), ("running", Some(0.25), Some("a quarter")));
    let all = store.list(&ListQuery { limit: 10, ..ListQuery::default() }).await.expect("list");
    assert_eq!(all.iter().map(|j| j.job_id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    let page = store.list(&ListQuery { limit: 2, ..ListQuery::default() }).await.expect("page");
    let after = Some((page[1].last_us, page[1].job_id.clone()));
    let next = store.list(&ListQuery { limit: 2, after, ..ListQuery::default() }).await.expect("next");
    assert_eq!(next.iter().map(|j| j.job_id.as_str()).collect::<Vec<_>>(), ["c"]);
    let received = store
        .list(&ListQuery { status: Some("received".into()), limit: 10, ..ListQuery::default() })
        .await
        .expect("by status");
    assert_eq!(received.len(), 1);
    let counts = store.counts(0).await.expect("counts");
    assert_eq!(counts.len(), 3);
    let minutes = store.minutes(0).await.expect("minutes");
    assert_eq!(minutes.iter().map(|m| (m.succeeded, m.retried)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)), (1, 1));
    assert_eq!(minutes.iter().find(|m| m.succeeded == 1).and_then(|m| m.avg_run_ms), Some(7.0));
    let failures = store.failures(0).await.expect("failures");
    assert_eq!((failures.len(), failures[0].error_type.as_str(), failures[0].jobs), (1, "timeout", 1));
    assert!(store.bytes().await.expect("bytes") > 0);
    // Retention: b and c (last heard at now + 5, now + 3) go with their events; a (now + 20)
    // stays whole, its older events included.
    let (jobs, events) = store.expire(now + 6).await.expect("expire");
    assert_eq!((jobs, events), (2, 2));
    assert_eq!(store.size().await.expect("size"), (1, 6));
    assert!(store.job("b").await.expect("query").is_none());
}

#[tokio::test]
async fn the_store_on_sqlite_merges_dedupes_pages_and_expires() {
    let dir = std::env::temp_dir().join(format!("warren-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let store = Store::open(&format!("sqlite://{}", dir.join("s.db").display())).await.expect("open");
    exercise(&store).await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_store_on_postgres_merges_dedupes_pages_and_expires() {
    let name = format!("warren_store_test_{}", std::process::id());
    psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    psql(&format!("CREATE DATABASE {name}"));
    let store = Store::open(&format!("postgres://postgres@127.0.0.1:5432/{name}")).await.expect("open");
    exercise(&store).await;
    store.close().await;
    psql(&format!("DROP DATABASE {name} WITH (FORCE)"));
}

/// Several consoles share one PostgreSQL database (`docs/console.md`, "replicas"): started
/// together on an empty one, each creates the tables; PostgreSQL's `CREATE TABLE IF NOT EXISTS`
/// is not safe against itself (two at once may both create the table's type, and one fails on
/// `pg_type`'s unique index), so the store creates them under an advisory lock. Then their
/// batches of the same jobs, written at once, merge into one row each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consoles_started_together_on_one_postgres_database_share_it() {
    const CONSOLES: usize = 8;
    let db = Database::create(&format!("warren_store_together_{}", std::process::id()));
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", db.0);
    let opened = futures_util::future::join_all((0..CONSOLES).map(|_| Store::open(&url))).await;
    let stores: Vec<Store> = opened.into_iter().map(|s| s.expect("every console opens the shared database")).collect();
    // Each writes one step of the same 50 jobs, all at once.
    let steps = ["received", "started", "succeeded"];
    let writes = stores.iter().enumerate().map(|(i, store)| {
        let step = steps[i % steps.len()];
        let batch: Vec<Received> =
            (0..50).map(|j| event(&format!("job-{j:02}"), step, 1_000 + (i % steps.len()) as i64, 0)).collect();
        async move { store.store(&batch).await }
    });
    for written in futures_util::future::join_all(writes).await {
        written.expect("each batch is stored");
    }
    let query = ListQuery { kind: None, status: None, since_us: None, after: None, limit: 100 };
    let jobs = stores[0].list(&query).await.expect("list");
    assert_eq!(jobs.len(), 50);
    assert!(jobs.iter().all(|j| j.status == "succeeded"), "{:?}", jobs.first());
    // More consoles start while the first ones write: a console starting takes no lock that a
    // writing one's transaction could deadlock with (CREATE INDEX IF NOT EXISTS did).
    let writing = stores.iter().enumerate().map(|(i, store)| async move {
        for round in 0..20 {
            let batch: Vec<Received> = (0..50)
                .map(|j| event(&format!("job-{j:02}"), "progress", 2_000 + (i * 100 + round) as i64, 0))
                .collect();
            store.store(&batch).await.expect("a batch stored while consoles start");
        }
    });
    let starting = futures_util::future::join_all((0..CONSOLES).map(|_| Store::open(&url)));
    let (_, late) = tokio::join!(futures_util::future::join_all(writing), starting);
    for store in late {
        store.expect("a console starting beside writing ones opens").close().await;
    }
    for store in stores {
        store.close().await;
    }
}

/// A database of the test's own, dropped when the test ends, pass or fail.
struct Database(String);

impl Database {
    fn create(name: &str) -> Self {
        psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        psql(&format!("CREATE DATABASE {name}"));
        Self(name.to_owned())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0))
            .output();
    }
}
