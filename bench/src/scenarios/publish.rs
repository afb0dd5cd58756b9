//! The `publish` scenario: Warren's publisher against raw lapin on one shared pipelined confirm
//! channel, the fastest way lapin publishes with confirms (and the one that can charge a return
//! or a nack to the wrong message). The same persistent 1 KiB mandatory messages, `concurrency`
//! in flight, into one durable queue; the publisher on 1, 2 and 4 confirm channels (lanes).
//! Runs alternate within each pair (the baseline first in odd pairs, last in even ones).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt as _};
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use warren_e2e::{Vhost, settings_for};
use warren_infra::Publisher;

use crate::Cli;
use crate::fleet::{median, vhost};

/// Lane counts measured; the first is the publisher's default.
const LANES: [usize; 3] = [Publisher::DEFAULT_LANES, 1, 4];

pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let mut raw = Vec::new();
    let mut lanes: Vec<Vec<f64>> = vec![Vec::new(); LANES.len()];
    for pair in 1..=cli.pairs {
        let v = vhost("bench-publish");
        // Odd pairs run the baseline first, even pairs last: neither side always goes first.
        let mut order: Vec<Option<usize>> = std::iter::once(None).chain((0..LANES.len()).map(Some)).collect();
        if pair % 2 == 0 {
            order.reverse();
        }
        let mut rates = vec![0.0; LANES.len()];
        let mut base = 0.0;
        for which in order {
            match which {
                None => base = rate(&v, cli.messages, cli.concurrency, None).await?,
                Some(i) => rates[i] = rate(&v, cli.messages, cli.concurrency, Some(LANES[i])).await?,
            }
        }
        raw.push(base);
        let mut line = format!("publish pair {pair}: raw shared channel {base:.0} msg/s");
        for (i, n) in LANES.iter().enumerate() {
            line += &format!(", publisher on {n} lane(s) {:.0} msg/s ({:.2})", rates[i], rates[i] / base);
            lanes[i].push(rates[i]);
        }
        println!("{line}");
    }
    let base = median(raw.clone());
    let medians: Vec<f64> = lanes.iter().map(|r| median(r.clone())).collect();
    let mut line = format!(
        "publish: {} persistent 1 KiB mandatory messages, {} in flight: raw lapin on one shared confirm channel \
         {base:.0} msg/s",
        cli.messages, cli.concurrency
    );
    for (n, m) in LANES.iter().zip(&medians) {
        line += &format!("; publisher on {n} lane(s) {m:.0} msg/s, ratio {:.2}", m / base);
    }
    println!("{line} (target >= 0.95 for the default, {} lanes)", Publisher::DEFAULT_LANES);
    let by_lanes: Vec<Value> = LANES
        .iter()
        .zip(&lanes)
        .zip(&medians)
        .map(|((n, runs), m)| json!({"lanes": n, "msg_per_s": runs, "median": m, "ratio": m / base}))
        .collect();
    Ok(json!({"raw_shared_channel": raw, "median_raw": base, "publisher": by_lanes, "ratio": medians[0] / base}))
}

/// Messages per second published on one shared confirm channel with raw lapin (`lanes` =
/// `None`) or through the publisher on `lanes` confirm channels.
async fn rate(vhost: &Vhost, count: u64, concurrency: usize, lanes: Option<usize>) -> anyhow::Result<f64> {
    let settings = settings_for(vhost);
    let conn = Arc::new(warren_infra::connect(&settings.broker, "bench-publish").await?);
    let ch = conn.create_channel().await?;
    ch.queue_declare("bench.publish".into(), QueueDeclareOptions::durable(), FieldTable::default()).await?;
    let shared = conn.create_channel().await?;
    shared.confirm_select(ConfirmSelectOptions::default()).await?;
    let publisher = match lanes {
        Some(n) => Some(Publisher::open_with_lanes(conn.clone(), Duration::from_secs(60), concurrency, n).await?),
        None => None,
    };
    let body = vec![7u8; 1024];
    let started = Instant::now();
    let failures = stream::iter(0..count)
        .map(|i| {
            let (shared, publisher, body) = (&shared, &publisher, &body);
            async move {
                let props = BasicProperties::default().with_delivery_mode(2).with_message_id(i.to_string().into());
                if let Some(publisher) = publisher {
                    publisher.publish("", "bench.publish", body, props, true).await.is_err()
                } else {
                    let options = BasicPublishOptions { mandatory: true, ..Default::default() };
                    match shared.basic_publish("".into(), "bench.publish".into(), options, body, props).await {
                        Ok(confirm) => !matches!(confirm.await, Ok(lapin::Confirmation::Ack(None))),
                        Err(_) => true,
                    }
                }
            }
        })
        .buffer_unordered(concurrency)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let _ = ch.queue_delete("bench.publish".into(), Default::default()).await;
    let _ = conn.close(200, "done".into()).await;
    anyhow::ensure!(failures == 0, "{failures} publishes were not confirmed");
    Ok(rate)
}
