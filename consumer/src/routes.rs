//! Which routes a worker serves and how it sizes them: pure functions of the settings and the
//! registered kinds, unit-tested like `decide.rs`.
//!
//! - Served kinds: `consumer.kinds`, or every registered kind when it is empty (an opt-in kind,
//!   such as the drills' `fault`, only when `[[routes]]` names it). A kind named in
//!   `consumer.kinds` that is not registered stops start-up.
//! - A served kind's route: its `[[routes]]` entry, what it leaves open taken from the kind's
//!   defaults (`Kind::route`).
//! - Prefetch: the route's, else `consumer.prefetch`, else [`PREFETCH_PER_SLOT`] per pool slot;
//!   raised for batching (room for full batches) and for async kinds (room for their
//!   concurrency).
//! - Time limits against the broker's `consumer_timeout` ([`check_time_limits`]).

use warren_common::RouteDefaults;
use warren_infra::Settings;
use warren_infra::settings::Route;

/// A registered kind as routing sees it.
#[derive(Debug, Clone)]
pub struct Declared<'a> {
    pub name: &'static str,
    pub defaults: &'a RouteDefaults,
    /// Served only when `[[routes]]` or `consumer.kinds` names it.
    pub opt_in: bool,
}

/// The routes this worker serves, in registration order, resolved against each kind's defaults.
pub fn served(settings: &Settings, registered: &[Declared<'_>]) -> anyhow::Result<Vec<Route>> {
    let names: Vec<&str> = registered.iter().map(|d| d.name).collect();
    for (i, n) in names.iter().enumerate() {
        anyhow::ensure!(!names[..i].contains(n), "kind {n:?} is registered twice");
    }
    for k in &settings.consumer.kinds {
        anyhow::ensure!(
            names.contains(&k.as_str()),
            "consumer.kinds names {k:?}, which this worker has not registered (it registers: {})",
            names.join(", ")
        );
    }
    let routes: Vec<Route> = registered
        .iter()
        .filter(|d| match settings.consumer.kinds.is_empty() {
            true => !d.opt_in || settings.route(d.name).is_some(),
            false => settings.consumer.kinds.iter().any(|k| k == d.name),
        })
        .map(|d| settings.route(d.name).cloned().unwrap_or_else(|| Route::new(d.name, "")).resolve(d.defaults))
        .collect();
    anyhow::ensure!(!routes.is_empty(), "no kinds to serve: register one, or check consumer.kinds");
    Ok(routes)
}

/// `[[routes]]` entries for kinds this worker does not register: other workers' routes.
pub fn foreign<'s>(settings: &'s Settings, registered: &[Declared<'_>]) -> Vec<&'s str> {
    settings.routes.iter().map(|r| r.kind.as_str()).filter(|k| !registered.iter().any(|d| d.name == *k)).collect()
}

/// Unacked deliveries per consumer, per pool slot, when neither the route nor `consumer.prefetch`
/// sets a prefetch. A job is done when it has run, but its delivery stays unacked until its result
/// is published and confirmed; with one delivery per slot, the slot idles through that round trip
/// and through the next delivery's arrival. Measured with `warren-bench --scenarios prefetch`
/// (docs/benchmarks.md), 2 slots, 1/2/4/8 per slot: trivial jobs 2823/3791/4201/5790 jobs/s,
/// image jobs 216/250/264/302 (past 4 the image gain varies between runs). Four per slot keep
/// the pool fed while bounding what one replica holds back from the others (and its memory:
/// prefetch x `max_body_bytes`).
pub const PREFETCH_PER_SLOT: usize = 4;

/// The prefetch a worker with `pool` slots uses for queues without one of their own.
pub fn default_prefetch(settings: &Settings, pool: usize) -> u16 {
    match settings.consumer.prefetch {
        0 => u16::try_from(pool * PREFETCH_PER_SLOT).unwrap_or(u16::MAX),
        n => n,
    }
}

/// How a route's jobs run, for sizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runs {
    /// Jobs one run takes (a full batch), 1 for unbatched kinds.
    pub per_run: usize,
    /// Whether runs take slots of the worker's pool; if not (async kinds), up to `concurrency`
    /// run at once on their own.
    pub on_pool: bool,
    pub concurrency: usize,
}

/// The prefetch of one route's queue: the route's own, else [`default_prefetch`]. A batching
/// queue gets at least `max_batch x pool`, or batches could not fill; an async kind's queue at
/// least its concurrency, or its concurrency could not be used.
pub fn prefetch_for(settings: &Settings, route: &Route, pool: usize, runs: Runs) -> u16 {
    let base = match route.prefetch {
        0 => default_prefetch(settings, pool),
        n => n,
    };
    let clamp = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    if !runs.on_pool {
        base.max(clamp(runs.concurrency))
    } else if runs.per_run > 1 {
        base.max(clamp(runs.per_run * pool))
    } else {
        base
    }
}

/// Refuses a configuration in which a delivery could stay unacked past the broker's
/// `consumer_timeout` (the broker would then close the channel and redeliver everything on it):
/// a job may wait for every other prefetched delivery of this worker to take a slot (or, for an
/// async kind, for its queue's others to take its concurrency), then run for its time limit,
/// then wait for its result's confirm and its retry's (or its dead letter's and error result's),
/// then, if the broker refused that, for three hand-back pauses and copies.
pub fn check_time_limits(settings: &Settings, routes: &[(Route, u16, Runs)], pool: usize) -> anyhow::Result<()> {
    // Runs needed to clear everything held on the pool: a batch takes one slot for its jobs.
    let on_pool = routes.iter().filter(|(_, _, r)| r.on_pool);
    let held: usize = on_pool.clone().map(|(_, prefetch, r)| usize::from(*prefetch).div_ceil(r.per_run.max(1))).sum();
    let rounds = held.div_ceil(pool.max(1)) as u64;
    let longest = on_pool.clone().map(|(route, ..)| route.time_limit_ms).max().unwrap_or(0);
    // A batch that panics is run again one job at a time (`batcher`): up to ceil(max_batch / pool)
    // more rounds of its time limit for a job of it.
    let rerun = on_pool
        .filter(|(_, _, r)| r.per_run > 1)
        .map(|(route, _, r)| route.time_limit_ms.saturating_mul(r.per_run.div_ceil(pool.max(1)) as u64))
        .max()
        .unwrap_or(0);
    let mut worst = (longest.saturating_mul(rounds).saturating_add(rerun), longest, rounds, held, rerun);
    for (route, prefetch, r) in routes.iter().filter(|(_, _, r)| !r.on_pool) {
        let rounds = usize::from(*prefetch).div_ceil(r.concurrency.max(1)) as u64;
        let wait = route.time_limit_ms.saturating_mul(rounds);
        if wait > worst.0 {
            worst = (wait, route.time_limit_ms, rounds, usize::from(*prefetch), 0);
        }
    }
    let (waits, longest, rounds, held, rerun) = worst;
    let broker = &settings.broker;
    let worst_ms = waits + 6 * broker.confirm_timeout_ms + 3 * broker.reconnect_max_ms;
    let budget_ms = settings.broker.consumer_timeout_ms / 10 * 9;
    anyhow::ensure!(
        worst_ms <= budget_ms,
        "a job could stay unacked for {worst_ms} ms (time limit {longest} ms x {rounds} rounds of the {held} runs \
         the prefetched jobs need on {pool} slots, plus {rerun} ms if its batch panics and is re-run one by one, \
         plus 6 confirm timeouts and 3 reconnect_max_ms pauses), over 90% of \
         broker.consumer_timeout_ms = {}: lower time_limit_ms or consumer.prefetch, raise consumer.pool_size, \
         or raise the broker's consumer_timeout and broker.consumer_timeout_ms with it",
        settings.broker.consumer_timeout_ms
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings() -> Settings {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        Settings::load(&dir).expect("the shipped configuration loads")
    }

    const ONE: Runs = Runs { per_run: 1, on_pool: true, concurrency: 1 };

    #[test]
    fn prefetch_is_four_per_slot_unless_set() {
        let mut s = settings();
        s.consumer.prefetch = 0;
        let image = Route::new("image.resize", "q");
        assert_eq!(prefetch_for(&s, &image, 2, ONE), 8);
        s.consumer.prefetch = 3;
        assert_eq!(prefetch_for(&s, &image, 2, ONE), 3);
        let own = Route { prefetch: 32, ..Route::new("checksum", "q") };
        assert_eq!(prefetch_for(&s, &own, 2, ONE), 32, "a route's own prefetch wins");
    }

    #[test]
    fn a_batching_queue_gets_room_for_full_batches_and_an_async_one_for_its_concurrency() {
        let mut s = settings();
        s.consumer.prefetch = 2;
        let classify = Route::new("ml.classify", "q");
        assert_eq!(prefetch_for(&s, &classify, 3, Runs { per_run: 8, ..ONE }), 24);
        assert_eq!(prefetch_for(&s, &classify, 3, ONE), 2, "no batching, no raise");
        let io = Runs { per_run: 1, on_pool: false, concurrency: 16 };
        assert_eq!(prefetch_for(&s, &classify, 3, io), 16);
    }

    fn defaults(time_limit_s: u64) -> RouteDefaults {
        RouteDefaults { time_limit: Duration::from_secs(time_limit_s), max_batch: 4, ..RouteDefaults::default() }
    }

    #[test]
    fn a_served_route_is_its_entry_over_the_kinds_defaults() {
        let mut s = settings();
        let d = defaults(7);
        let declared = |name| Declared { name, defaults: &d, opt_in: false };
        let kinds = [declared("image.resize"), declared("video.probe")];
        let routes = served(&s, &kinds).expect("serves both");
        assert_eq!(routes[0].queue, "warren.image.resize");
        assert_eq!(routes[0].time_limit_ms, 60_000, "the configured limit wins");
        assert_eq!(routes[0].max_batch, 4, "left open: the kind's");
        assert_eq!(routes[1].queue, "warren.video.probe", "no entry: warren.<kind>");
        assert_eq!(routes[1].time_limit_ms, 7_000);
        assert_eq!(foreign(&s, &kinds), ["ml.classify", "checksum"]);

        s.consumer.kinds = vec!["video.probe".into()];
        assert_eq!(served(&s, &kinds).expect("serves one").len(), 1);
        s.consumer.kinds = vec!["video.trim".into()];
        let e = served(&s, &kinds).expect_err("not registered").to_string();
        assert!(e.contains("\"video.trim\", which this worker has not registered"), "{e}");
        s.consumer.kinds.clear();
        let twice = [declared("a"), declared("a")];
        assert!(served(&s, &twice).is_err());
        // An opt-in kind is served when a route or consumer.kinds names it, not by default.
        let drills = [declared("image.resize"), Declared { name: "fault", defaults: &d, opt_in: true }];
        assert_eq!(served(&s, &drills).expect("serves").len(), 1);
        s.routes.push(Route::new("fault", ""));
        assert_eq!(served(&s, &drills).expect("serves").len(), 2);
        s.routes.pop();
        s.consumer.kinds = vec!["fault".into()];
        assert_eq!(served(&s, &drills).expect("serves")[0].kind, "fault");
    }

    #[test]
    fn time_limits_must_fit_the_consumer_timeout() {
        let mut s = settings();
        s.broker.consumer_timeout_ms = 1_800_000;
        let route = |ms| Route { time_limit_ms: ms, ..Route::new("a", "q") };
        // 8 prefetched on 2 slots: 4 rounds of 60 s, plus confirms and pauses, fits 30 min.
        assert!(check_time_limits(&s, &[(route(60_000), 8, ONE)], 2).is_ok());
        // 4 rounds of 10 min do not.
        let e = check_time_limits(&s, &[(route(600_000), 8, ONE)], 2).expect_err("too long").to_string();
        assert!(e.contains("x 4 rounds"), "{e}");
        // A batch of 8 takes one slot: 16 held are 2 runs, one round on 2 slots (plus its re-runs,
        // below).
        assert!(check_time_limits(&s, &[(route(200_000), 16, Runs { per_run: 8, ..ONE })], 2).is_ok());
        // A batch that panics is run again job by job: a job of it can wait its batch's run, then
        // ceil(max_batch / pool) more rounds of solo runs. 16 held in batches of 8 on 2 slots:
        // 1 round (its batch), then 4 solo rounds: 5 x 300 s + 270 s of confirms and pauses is
        // over 90 % of 1,800 s; 5 x 200 s + 270 s is not.
        let batched = Runs { per_run: 8, ..ONE };
        let e = check_time_limits(&s, &[(route(300_000), 16, batched)], 2).expect_err("reruns counted").to_string();
        assert!(e.contains("re-run one by one"), "{e}");
        assert!(check_time_limits(&s, &[(route(200_000), 16, batched)], 2).is_ok(), "6 x 200 s + 270 s fits");
        // An async kind waits on its own concurrency, not on the pool.
        let io = Runs { per_run: 1, on_pool: false, concurrency: 16 };
        assert!(check_time_limits(&s, &[(route(600_000), 16, io)], 1).is_ok());
        assert!(check_time_limits(&s, &[(route(600_000), 64, io)], 1).is_err());
    }
}
