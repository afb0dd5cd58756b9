//! The `publish` scenario: what one publish per confirm channel costs. The same persistent
//! 1 KiB messages, `concurrency` in flight, into one durable queue, published (a) all on one
//! confirm channel, each awaiting its own confirm (the earlier publisher, whose returns lapin
//! could pair with the wrong publish), and (b) through [`Publisher`], one publish per channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt as _};
use lapin::BasicProperties;
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use warren_e2e::{Vhost, settings_for};
use warren_infra::Publisher;

use crate::Cli;
use crate::fleet::{median, vhost};

/// One confirm channel for all publishes (baseline) vs one publish per channel (the publisher).
pub async fn run(cli: &Cli) -> anyhow::Result<Value> {
    let (mut shared, mut pooled) = (Vec::new(), Vec::new());
    for pair in 1..=cli.pairs {
        let v = vhost("bench-publish");
        let one = rate(&v, cli.messages, cli.concurrency, false).await?;
        let many = rate(&v, cli.messages, cli.concurrency, true).await?;
        println!("publish pair {pair}: one confirm channel {one:.0} msg/s, one publish per channel {many:.0} msg/s");
        shared.push(one);
        pooled.push(many);
    }
    let (one, many) = (median(shared.clone()), median(pooled.clone()));
    println!(
        "publish: {} persistent 1 KiB messages, {} in flight: one confirm channel {one:.0} msg/s, \
         one publish per channel {many:.0} msg/s, ratio {:.2}",
        cli.messages,
        cli.concurrency,
        many / one
    );
    Ok(
        json!({"shared_channel": shared, "channel_per_publish": pooled, "median_shared": one, "median_pooled": many, "ratio": many / one}),
    )
}

/// Messages per second published with one shared confirm channel (`pooled = false`) or the
/// channel-pool publisher (`pooled = true`).
async fn rate(vhost: &Vhost, count: u64, concurrency: usize, pooled: bool) -> anyhow::Result<f64> {
    let settings = settings_for(vhost);
    let conn = Arc::new(warren_infra::connect(&settings.broker, "bench-publish").await?);
    let ch = conn.create_channel().await?;
    ch.queue_declare("bench.publish".into(), QueueDeclareOptions::durable(), FieldTable::default()).await?;
    let shared = conn.create_channel().await?;
    shared.confirm_select(ConfirmSelectOptions::default()).await?;
    let pool = Publisher::open(conn.clone(), Duration::from_secs(60), concurrency).await?;
    let body = vec![7u8; 1024];
    let started = Instant::now();
    let failures = stream::iter(0..count)
        .map(|i| {
            let (shared, pool, body) = (&shared, &pool, &body);
            async move {
                let props = BasicProperties::default().with_delivery_mode(2).with_message_id(i.to_string().into());
                if pooled {
                    pool.publish("", "bench.publish", body, props, true).await.is_err()
                } else {
                    let sent =
                        shared.basic_publish("".into(), "bench.publish".into(), Default::default(), body, props).await;
                    match sent {
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
    let _ = conn.close(200, "done".into()).await;
    anyhow::ensure!(failures == 0, "{failures} publishes were not confirmed");
    Ok(rate)
}
