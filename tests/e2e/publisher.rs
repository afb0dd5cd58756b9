//! Publishing with confirms, judged by what the broker did: every publish through one
//! `Publisher` learns its own message's fate (stored or refused), never a neighbour's, on every
//! publishing path; a channel the broker closes fails the publishes it carried instead of
//! reporting them stored; and through the consumer binary, a result its `reply_to` queue refuses
//! is never acked as done while a stored one beside it is never retried.
//!
//! Sizes are knobs (environment variables, printed by each test). The defaults keep a test
//! within a CI budget on two cores; the sizes that reproduced the defect are given beside them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::future::join_all;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};
use rstest::rstest;
use warren_common::checksum::ChecksumJob;
use warren_common::headers as h;
use warren_common::image_io::Format;
use warren_common::resize::{Filter, ResizeJob, ResizeMode};
use warren_common::{Encoding, Job, JobEnvelope, JobResult, ResultStatus};
use warren_e2e::scrape::Scrape;
use warren_e2e::{ConsumerProcess, DEADLINE, Vhost, queue_depth, repo_root, settings_for, vhost};
use warren_infra::topology::{self, reply_queue_args};
use warren_infra::{PublishError, Publisher, Settings, fields};

/// The broker's largest frame (lapin's default `frame_max`): a body above it is split.
const FRAME_MAX: usize = 128 * 1024;

/// A size from the environment variable `name`, else `default`.
fn knob(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// `args` plus what makes a queue refuse every message: the broker nacks each publish to it.
fn refusing(mut args: FieldTable) -> FieldTable {
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    args.insert("x-overflow".into(), AMQPValue::LongString(LongString::from("reject-publish")));
    args
}

async fn declare(ch: &Channel, queue: &str, args: FieldTable) {
    ch.queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
        .await
        .unwrap_or_else(|e| panic!("declare queue {queue}: {e}"));
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    ch.queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap_or_else(|e| panic!("bind {queue} to {exchange} with {key:?}: {e}"));
}

fn message_id(d: &Delivery) -> String {
    d.properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default()
}

/// Every message in `queue` once nothing publishes to it any more, read without acks: tens of
/// thousands at once, where `collect_messages` takes one per round trip.
async fn drain(settings: &Settings, queue: &str) -> Vec<Delivery> {
    let n = queue_depth(settings, queue).await as usize;
    let conn = warren_infra::connect(&settings.broker, "test-drain").await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let options = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut consumer = ch
        .basic_consume(queue.into(), "test-drain".into(), options, FieldTable::default())
        .await
        .unwrap_or_else(|e| panic!("consume {queue}: {e}"));
    let mut out = Vec::with_capacity(n);
    let read = async {
        while out.len() < n {
            match consumer.next().await {
                Some(Ok(d)) => out.push(d),
                other => panic!("reading {queue}: {other:?}"),
            }
        }
    };
    if tokio::time::timeout(DEADLINE, read).await.is_err() {
        panic!("only {} of the {n} messages of {queue} arrived within {DEADLINE:?}", out.len());
    }
    let _ = conn.close(200, "done".into()).await;
    out
}

/// The publishing paths of Warren, each named by what travels it.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// A result to its job's `reply_to` queue, through the default exchange.
    ReplyTo,
    /// A result of a job that named no `reply_to`, through the results exchange.
    Results,
    /// A retry copy to its delay queue (`<queue>.retry.<delay>ms`), through the default exchange.
    Retry,
    /// A dead letter, through the dead-letter exchange with key = its work queue.
    DeadLetter,
    /// A producer's job, through the jobs exchange with key = its kind.
    Jobs,
}

/// Where one path sends the messages a queue refuses and those a queue stores.
#[derive(Debug)]
struct Lanes {
    exchange: String,
    refused_key: String,
    stored_key: String,
    stored_queue: String,
}

/// Declares the refusing queue of `path` beside Warren's (the plain queue is Warren's own where
/// the path has one) and says where each kind of message goes.
async fn lanes(path: Path, settings: &Settings, ch: &Channel) -> Lanes {
    let t = &settings.topology;
    let route = settings.route("checksum").expect("config/ has a checksum route");
    let lanes = |exchange: &str, refused_key: &str, stored_key: &str, stored_queue: &str| Lanes {
        exchange: exchange.to_owned(),
        refused_key: refused_key.to_owned(),
        stored_key: stored_key.to_owned(),
        stored_queue: stored_queue.to_owned(),
    };
    match path {
        Path::ReplyTo => {
            // Two requesters' reply queues, declared as producers declare theirs.
            declare(ch, "replies.refusing", refusing(reply_queue_args(settings))).await;
            declare(ch, "replies.plain", reply_queue_args(settings)).await;
            lanes("", "replies.refusing", "replies.plain", "replies.plain")
        }
        Path::Results => {
            declare(ch, "results.refusing", refusing(FieldTable::default())).await;
            declare(ch, "results.plain", FieldTable::default()).await;
            bind(ch, "results.refusing", &t.results_exchange, "refused").await;
            bind(ch, "results.plain", &t.results_exchange, "stored").await;
            lanes(&t.results_exchange, "refused", "stored", "results.plain")
        }
        Path::Retry => {
            let delay = *settings.retry_policy(route).tiers().first().expect("the checksum route retries");
            let refused = settings.retry_queue("refusing", delay);
            declare(ch, &refused, refusing(FieldTable::default())).await;
            let stored = settings.retry_queue(&route.queue, delay);
            lanes("", &refused, &stored, &stored)
        }
        Path::DeadLetter => {
            declare(ch, "refusing.dead", refusing(FieldTable::default())).await;
            bind(ch, "refusing.dead", &t.dead_letter_exchange, "refusing").await;
            lanes(&t.dead_letter_exchange, "refusing", &route.queue, &settings.dead_queue(&route.queue))
        }
        Path::Jobs => {
            declare(ch, "refusing.jobs", refusing(FieldTable::default())).await;
            bind(ch, "refusing.jobs", &t.jobs_exchange, "refusing").await;
            lanes(&t.jobs_exchange, "refusing", &route.kind, &route.queue)
        }
    }
}

/// Big bodies to a refusing queue alternate with small ones to a plain queue, all in flight at
/// once on runtime threads of their own: a big body is split into frames, so a publisher that
/// numbers a message on one thread and queues its frames on another can put two messages on
/// the wire in the other order; the broker numbers them in arrival order, and each publish is
/// then charged the other's fate (a refused result reported stored, a stored one refused).
/// (Through the earlier publisher's shared pipelined channel, `publish_either_way`, 1,700 to
/// 5,100 of the 20,000 publishes were told another fate on each path; through its one channel
/// per publish, none.)
#[rstest]
#[case::reply_to(Path::ReplyTo)]
#[case::results(Path::Results)]
#[case::retry(Path::Retry)]
#[case::dead_letter(Path::DeadLetter)]
#[case::jobs(Path::Jobs)]
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn every_publish_learns_its_own_fate_under_concurrency(#[case] path: Path, vhost: Vhost) {
    // The figures: 20,000 publishes, 4 MiB big bodies, on every path.
    let count = knob("WARREN_TEST_PUBLISH_COUNT", 20_000);
    let big = knob("WARREN_TEST_PUBLISH_BIG_BYTES", 256 * 1024);
    let in_flight = knob("WARREN_TEST_PUBLISH_IN_FLIGHT", 256);
    assert!(big > FRAME_MAX, "big bodies must span several frames: {big} bytes");
    let mut settings = settings_for(&vhost);
    // The results queue takes a copy of every result (binding "#"): the refused ones would be
    // stored there. The path's own two queues stand for it.
    settings.topology.results_queue = String::new();
    let conn = Arc::new(warren_infra::connect(&settings.broker, "test-fates").await.expect("connect"));
    let ch = conn.create_channel().await.expect("channel");
    topology::declare(&ch, &settings).await.expect("topology");
    let lanes = Arc::new(lanes(path, &settings, &ch).await);
    // The confirm timeout is not under test: a publish may wait its turn behind all the others.
    let publisher = Publisher::open(conn.clone(), DEADLINE * 2, in_flight).await.expect("publisher");
    let publisher = Arc::new(publisher);
    let big_body: Arc<[u8]> = (0..big).map(|i| i as u8).collect();
    let small_body: Arc<[u8]> = Arc::from(&b"0123456789"[..]);
    let refused = |i: usize| i.is_multiple_of(2);
    let start = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let (publisher, lanes) = (publisher.clone(), lanes.clone());
            let body = if refused(i) { big_body.clone() } else { small_body.clone() };
            tokio::spawn(async move {
                let key = if refused(i) { &lanes.refused_key } else { &lanes.stored_key };
                let props = BasicProperties::default().with_message_id(format!("{i}").into()).with_delivery_mode(2);
                publisher.publish(&lanes.exchange, key, &body, props, true).await
            })
        })
        .collect();
    let outcomes = tokio::time::timeout(DEADLINE * 3, join_all(tasks)).await.expect("every publish ends");
    let took = start.elapsed();
    let (mut stored, mut nacked, mut wrong) = (0, 0, Vec::new());
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match (refused(i), outcome.expect("publish task")) {
            (false, Ok(())) => stored += 1,
            (true, Err(PublishError::Nacked { .. })) => nacked += 1,
            (to_refusing, other) => wrong.push(format!("{i} (to the refusing queue: {to_refusing}): {other:?}")),
        }
    }
    let depth = queue_depth(&settings, &lanes.stored_queue).await as usize;
    println!(
        "{path:?} via {:?}: {count} publishes ({} of {big} bytes refused, {} of 10 bytes stored), {in_flight} in \
         flight, took {took:?}: {nacked} reported refused, {stored} reported stored, {} told another fate; \
         {depth} in {}",
        lanes.exchange,
        count.div_ceil(2),
        count / 2,
        wrong.len(),
        lanes.stored_queue
    );
    assert!(
        wrong.is_empty(),
        "{} publishes not told their own fate, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );
    assert_eq!(depth, stored, "the plain queue holds exactly what was reported stored");
    let _ = conn.close(200, "done".into()).await;
}

/// Publishes `id` to `exchange` and, once it is reported stored, says so on `stored`.
fn spawn_publish(
    publisher: &Arc<Publisher>,
    exchange: &'static str,
    body: &Arc<[u8]>,
    id: String,
    stored: &tokio::sync::mpsc::UnboundedSender<()>,
) -> tokio::task::JoinHandle<Result<(), PublishError>> {
    let (publisher, body, stored) = (publisher.clone(), body.clone(), stored.clone());
    tokio::spawn(async move {
        let props = BasicProperties::default().with_message_id(id.into()).with_delivery_mode(2);
        let outcome = publisher.publish(exchange, "kept", &body, props, true).await;
        if outcome.is_ok() {
            let _ = stored.send(());
        }
        outcome
    })
}

/// The exchange under many publishes in flight is deleted: the broker closes the channel of the
/// next publish to it (404). Whatever was reported stored must be in the queue, what was still
/// on its way must end as an error (promptly, not at the confirm timeout), and publishing goes
/// on: on a new channel of the same connection, or on a new connection when the broker closed
/// this one (lapin 4.12 sends the frames it still had queued for the closed channel after its
/// `close-ok`, and the broker answers 504 "expected 'channel.open'"; see docs/reliability.md).
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_channel_the_broker_closes_mid_flight_fails_every_publish_in_flight(vhost: Vhost) {
    // More than the 2047 channels of a connection: lapin 4.12 never frees the number of a
    // channel the broker closed, so a publisher that opens a channel per failed publish is left
    // with a connection that opens none (the earlier one was, from about 2,000 publishes).
    let before = knob("WARREN_TEST_CLOSED_IN_FLIGHT", 4000);
    let after = 200;
    let confirm_timeout = DEADLINE;
    let settings = settings_for(&vhost);
    let conn = Arc::new(warren_infra::connect(&settings.broker, "test-closed").await.expect("connect"));
    let ch = conn.create_channel().await.expect("channel");
    let declare_options = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare("doomed".into(), ExchangeKind::Direct, declare_options, FieldTable::default())
        .await
        .expect("declare exchange");
    declare(&ch, "kept", FieldTable::default()).await;
    bind(&ch, "kept", "doomed", "kept").await;
    let publisher = Arc::new(Publisher::open(conn.clone(), confirm_timeout, 256).await.expect("publisher"));
    let body: Arc<[u8]> = vec![7u8; 64 * 1024].into();
    let (stored_tx, mut stored_rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    let first: Vec<_> = (0..before)
        .map(|i| (format!("before-{i}"), spawn_publish(&publisher, "doomed", &body, format!("before-{i}"), &stored_tx)))
        .collect();
    // Deleted once the first publish is stored, while the others are still on their way.
    tokio::time::timeout(DEADLINE, stored_rx.recv()).await.expect("a first publish stored in time");
    ch.exchange_delete("doomed".into(), ExchangeDeleteOptions::default()).await.expect("delete the exchange");
    let deleted_at = start.elapsed();
    let then: Vec<_> = (0..after)
        .map(|i| (format!("after-{i}"), spawn_publish(&publisher, "doomed", &body, format!("after-{i}"), &stored_tx)))
        .collect();
    let mut outcomes = HashMap::new();
    for (id, task) in first.into_iter().chain(then) {
        outcomes.insert(id, tokio::time::timeout(DEADLINE * 2, task).await.expect("every publish ends").expect("task"));
    }
    let took = start.elapsed();
    // Publishing goes on: on a new channel, or on a new connection as the producer and the
    // consumer do when theirs is lost.
    let props = BasicProperties::default().with_message_id("survivor".into()).with_delivery_mode(2);
    let connection_survived = publisher.is_connected();
    let survivor = if connection_survived {
        publisher.publish("", "kept", b"survivor", props, true).await
    } else {
        let conn = Arc::new(warren_infra::connect(&settings.broker, "test-closed-again").await.expect("reconnect"));
        let fresh = Publisher::open(conn.clone(), confirm_timeout, 1).await.expect("publisher");
        let survivor = fresh.publish("", "kept", b"survivor", props, true).await;
        let _ = conn.close(200, "done".into()).await;
        survivor
    };

    let in_queue: HashSet<String> = drain(&settings, "kept").await.iter().map(message_id).collect();
    let reported_stored: Vec<&String> = outcomes.iter().filter(|(_, o)| o.is_ok()).map(|(id, _)| id).collect();
    let mut errors: HashMap<&'static str, usize> = HashMap::new();
    for outcome in outcomes.values() {
        if outcome.is_err() {
            *errors.entry(PublishError::outcome(outcome)).or_default() += 1;
        }
    }
    let stored_after = outcomes.iter().filter(|(id, o)| id.starts_with("after-") && o.is_ok()).count();
    let missing: Vec<&&String> = reported_stored.iter().filter(|id| !in_queue.contains(**id)).collect();
    println!(
        "closed channel: {before} publishes of 64 KiB in flight, the exchange deleted after {deleted_at:?}, {after} \
         more after that; {} reported stored ({} of them not in the queue), errors {errors:?} ({stored_after} of \
         the later ones stored); {} messages in the queue; all ended after {took:?}; the connection survived: \
         {connection_survived}; then a publish to an existing queue: {survivor:?}",
        reported_stored.len(),
        missing.len(),
        in_queue.len()
    );
    assert!(missing.is_empty(), "reported stored but not in the queue: {:?}", &missing[..missing.len().min(20)]);
    assert_eq!(stored_after, 0, "publishes to the deleted exchange reported stored");
    assert!(errors.values().sum::<usize>() > 0, "no publish failed");
    assert_eq!(errors.get("timeout"), None, "the closed channel's publishes waited out the confirm timeout");
    assert!(survivor.is_ok() && in_queue.contains("survivor"), "publishing does not go on after a closed channel");
    let _ = conn.close(200, "done".into()).await;
}

/// A free local port for the consumer's /metrics (the binary logs the one it picks, but the
/// support crate does not hand its log out while it runs).
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    listener.local_addr().expect("address").to_string()
}

/// The reproduction through the real binary: one worker (image.resize and checksum,
/// pool 4, a single attempt) answers big resize results to a `reply_to` queue that refuses them
/// and small checksum results to a plain one, all on its shared result channel at once. Every
/// resize job must end dead-lettered as `result_not_stored` (never acked as done), every
/// checksum job answered exactly once and never dead-lettered.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_results_are_never_acked_as_done_through_the_binary(vhost: Vhost) {
    // The figures: 120 resize jobs of 4096x4096 JPEG outputs, 30,000 checksum jobs
    // (RESIZE_JOBS=120 RESIZE_SIDE=4096 RESIZE_QUALITY=85: results of 2.9 MB, 1.2 s each in the
    // debug worker the tests run; 100 s in all on two cores). Twice as many results of 1.2 MB
    // lost as many jobs on the earlier publisher in a third of the time.
    let resizes = knob("WARREN_TEST_REFUSED_RESIZE_JOBS", 240);
    let checksums = knob("WARREN_TEST_REFUSED_CHECKSUM_JOBS", 30_000);
    let side = u32::try_from(knob("WARREN_TEST_REFUSED_RESIZE_SIDE", 1024)).expect("a side in pixels");
    let quality = u8::try_from(knob("WARREN_TEST_REFUSED_RESIZE_QUALITY", 100)).expect("a JPEG quality");
    let settings = settings_for(&vhost);
    // Nearest and quality 100: the most result bytes per second of work (the sample photo blown
    // up to 1024x1024: 1.2 MB in 0.15 s, where triangle and quality 85 make 0.24 MB in 0.45 s).
    let resize = ResizeJob {
        image: std::fs::read(repo_root().join("samples/images/china.jpg")).expect("samples/images/china.jpg"),
        width: side,
        height: side,
        mode: ResizeMode::Exact,
        filter: Filter::Nearest,
        format: Some(Format::Jpeg),
        quality: Some(quality),
    };
    // What each refused result carries, measured the way the worker makes it.
    let (output, made_in) = tokio::task::spawn_blocking({
        let (job, limits) = (resize.clone(), settings.limits.clone());
        move || {
            let start = Instant::now();
            let len = warren_common::resize::resize(&job, &limits).expect("the resize runs").image.len();
            (len, start.elapsed())
        }
    })
    .await
    .expect("resize task");
    assert!(output > 4 * FRAME_MAX, "a result must span several frames: {output} bytes");
    let metrics = free_addr();
    let env = [
        ("WARREN__CONSUMER__KINDS", "image.resize,checksum"),
        ("WARREN__CONSUMER__POOL_SIZE", "4"),
        ("WARREN__RETRY__MAX_ATTEMPTS", "1"),
        ("WARREN__TELEMETRY__METRICS_ADDR", metrics.as_str()),
    ];
    let consumer = ConsumerProcess::start(&vhost, &env).await;
    let conn = warren_infra::connect(&settings.broker, "test-requester").await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    // Without a producer's x-expires: nobody reads them until the end, which at the sizes
    // comes after `producer.reply_queue_expires_ms`.
    declare(&ch, "replies.refusing", refusing(FieldTable::default())).await;
    declare(&ch, "replies.plain", FieldTable::default()).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let resize_body = JobEnvelope::encode(&Job::from(resize), Encoding::Json).expect("encode");
    let checksum = Job::from(ChecksumJob { data: b"warren".to_vec(), rounds: 1 });
    let checksum_body = JobEnvelope::encode(&checksum, Encoding::Json).expect("encode");

    // Interleaved: one resize job every (total / resizes) jobs. Nothing here refuses a job, so
    // one pipelined channel serves, its confirms awaited at the end.
    let start = Instant::now();
    let total = resizes + checksums;
    let (mut resize_ids, mut checksum_ids, mut confirms) = (HashSet::new(), HashSet::new(), Vec::new());
    for i in 0..total {
        let is_resize = (i + 1) * resizes / total > i * resizes / total;
        let (kind, body, reply_to) = if is_resize {
            ("image.resize", &resize_body, "replies.refusing")
        } else {
            ("checksum", &checksum_body, "replies.plain")
        };
        let id = format!("{kind}-{i}");
        let props = BasicProperties::default()
            .with_message_id(id.as_str().into())
            .with_correlation_id(id.as_str().into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_reply_to(reply_to.into());
        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
        let exchange = settings.topology.jobs_exchange.as_str();
        let confirm =
            ch.basic_publish(exchange.into(), kind.into(), options, body, props).await.expect("publish a job");
        confirms.push(confirm);
        if is_resize { &mut resize_ids } else { &mut checksum_ids }.insert(id);
    }
    for confirm in confirms {
        assert!(matches!(confirm.await.expect("confirm"), Confirmation::Ack(None)), "every job is stored");
    }
    let published = start.elapsed();

    // Settled: every job acked, as done or dead-lettered (a single attempt: nothing retried).
    let metrics: std::net::SocketAddr = metrics.parse().expect("address");
    let settled = |s: &Scrape, kind: &str| {
        ["ok", "dead_lettered"]
            .iter()
            .map(|o| s.value("warren_jobs_completed_total", &[("kind", kind), ("outcome", o)]))
            .sum::<f64>()
    };
    // As long as every resize made one after another, plus a margin: the pool runs at least one.
    let deadline = start + DEADLINE * 2 + made_in * u32::try_from(resizes).unwrap_or(u32::MAX);
    let scrape = loop {
        let s = tokio::task::block_in_place(|| Scrape::take(metrics));
        if settled(&s, "image.resize") >= resizes as f64 && settled(&s, "checksum") >= checksums as f64 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: {} of {resizes} resize jobs, {} of {checksums} checksum jobs",
            settled(&s, "image.resize"),
            settled(&s, "checksum")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = start.elapsed();
    consumer.signal("TERM").await;
    let (code, log) = consumer.wait().await;
    assert_eq!(code, Some(0), "{log}");

    let resize_dead = drain(&settings, &settings.dead_queue("warren.image.resize")).await;
    let replies = drain(&settings, "replies.plain").await;
    let checksum_dead = queue_depth(&settings, &settings.dead_queue("warren.checksum")).await;
    let dead_ids: HashSet<String> = resize_dead.iter().map(message_id).collect();
    let not_stored = resize_dead
        .iter()
        .filter(|d| {
            let headers = d.properties.headers().as_ref();
            fields::get_str(headers, h::ERROR_TYPE).as_deref() == Some("result_not_stored")
                && fields::get_str(headers, h::DEAD_REASON).as_deref() == Some("attempts_exhausted")
        })
        .count();
    let lost: Vec<&String> = resize_ids.iter().filter(|id| !dead_ids.contains(*id)).collect();
    let mut answers: HashMap<String, Vec<ResultStatus>> = HashMap::new();
    for d in &replies {
        let result = JobResult::decode(&d.data, Encoding::Json).expect("a result");
        answers.entry(message_id(d)).or_default().push(result.status);
    }
    let once_ok =
        checksum_ids.iter().filter(|id| answers.get(*id).map(Vec::as_slice) == Some(&[ResultStatus::Ok][..])).count();
    let strays = answers.keys().filter(|id| !checksum_ids.contains(*id)).count();
    let resize_ok = scrape.value("warren_jobs_completed_total", &[("kind", "image.resize"), ("outcome", "ok")]) as u64;
    let result_nacks = scrape.value("warren_publishes_total", &[("target", "result"), ("outcome", "nacked")]);
    println!(
        "binary: {resizes} resize jobs ({side}x{side} JPEG (quality {quality}) results of {output} bytes made in \
         {made_in:?} each, refused by their reply queue) and \
         {checksums} checksum jobs, published in {published:?}, settled after {took:?}; resize: {} dead-lettered \
         ({not_stored} as result_not_stored), {} acked as done ({resize_ok} counted ok); checksum: {once_ok} answered \
         once, {} answered otherwise, {checksum_dead} dead-lettered; {result_nacks} results nacked; {strays} stray \
         replies",
        dead_ids.len(),
        lost.len(),
        checksums - once_ok
    );
    assert!(lost.is_empty(), "resize jobs acked as done though their results were refused: {lost:?}");
    assert_eq!(not_stored, resizes, "every resize job dead-lettered as result_not_stored, attempts exhausted");
    assert_eq!(resize_dead.len(), resizes, "one dead letter per resize job");
    assert_eq!(checksum_dead, 0, "checksum jobs whose results were stored were dead-lettered");
    assert_eq!(once_ok, checksums, "every checksum job answered once, with its result");
    assert_eq!(strays, 0, "answers to jobs that were not checksum jobs (a resize result stored?)");
    assert_eq!(replies.len(), checksums, "nothing else in the plain reply queue");
    assert_eq!(queue_depth(&settings, "replies.refusing").await, 0);
    assert_eq!(queue_depth(&settings, &settings.topology.results_queue).await, 0, "no result went elsewhere");
    let _ = conn.close(200, "done".into()).await;
}
