//! Cancellation by job id: a RabbitMQ stream (`topology.cancel_stream`) of cancel records that
//! every worker reads from its start, so that a job cancelled while queued, delayed or waiting
//! for a worker that has not started yet is never started. A stream keeps its records for
//! `topology.cancel_retention_s` whoever has read them; a queue would hand each to one reader.
//!
//! A record is JSON: `{"version": 1, "job_ids": ["..."], "at_ms": <unix ms>}`. A reader that
//! must know it has read everything published before a moment (a worker before it consumes
//! jobs, `warrenctl status`) publishes a marker `{"version": 1, "marker": "<unique>"}` and
//! reads until it meets it: the stream keeps publishing order.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection};

pub use warren_common::cancel::{CancelSet, Record};

use crate::publish::Publisher;
use crate::settings::Settings;

/// Records the stream's consumers may hold unacked (a stream needs a prefetch; acks are credit).
const PREFETCH: u16 = 500;
/// Largest segment of the stream: retention drops whole segments, so small ones let old
/// records go close to their age (a record is about 100 bytes).
const SEGMENT_BYTES: i64 = 1_000_000;

/// The stream's arguments: its type, its retention by age, small segments.
pub fn stream_args(settings: &Settings) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("stream")));
    let age = format!("{}s", settings.topology.cancel_retention_s);
    args.insert("x-max-age".into(), AMQPValue::LongString(LongString::from(age)));
    args.insert("x-stream-max-segment-size-bytes".into(), AMQPValue::LongLongInt(SEGMENT_BYTES));
    args
}

/// Publishes one record to the stream, confirmed; unroutable when the stream does not exist.
pub async fn publish(publisher: &Publisher, settings: &Settings, record: &Record) -> anyhow::Result<()> {
    let stream = &settings.topology.cancel_stream;
    anyhow::ensure!(!stream.is_empty(), "cancellation is off (topology.cancel_stream is empty)");
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_type("warren.cancel".into());
    publisher
        .publish("", stream, &record.encode(), properties, true)
        .await
        .with_context(|| format!("publish to the cancel stream {stream}"))
}

/// Records a cancel of `job_ids`, stamped now (Unix ms, returned): what `warrenctl cancel` and
/// the producer library call. An empty id is refused; no id at all publishes nothing.
pub async fn cancel(publisher: &Publisher, settings: &Settings, job_ids: &[&str]) -> anyhow::Result<u64> {
    anyhow::ensure!(!job_ids.contains(&""), "a job id to cancel is empty");
    let at_ms = now_ms();
    if !job_ids.is_empty() {
        let job_ids = job_ids.iter().map(|id| (*id).to_owned()).collect();
        publish(publisher, settings, &Record::Cancel { job_ids, at_ms }).await?;
    }
    Ok(at_ms)
}

/// Unix milliseconds now.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Where a reader starts: the first record kept, or the one after the last it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    First,
    Offset(u64),
}

/// Reads the stream from `from` on a channel of its own, handing each record and its offset
/// to `each`, until the channel or connection closes (or `each` returns false).
pub async fn follow(
    connection: &Connection,
    settings: &Settings,
    from: From,
    tag: &str,
    mut each: impl FnMut(u64, Result<Record, String>) -> bool,
) -> anyhow::Result<()> {
    let stream = settings.topology.cancel_stream.as_str();
    let channel = connection.create_channel().await.context("open the cancel stream's channel")?;
    channel.basic_qos(PREFETCH, BasicQosOptions { global: false }).await.context("prefetch on the cancel stream")?;
    let mut args = FieldTable::default();
    let offset = match from {
        From::First => AMQPValue::LongString(LongString::from("first")),
        From::Offset(n) => AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX)),
    };
    args.insert("x-stream-offset".into(), offset);
    let mut consumer = channel
        .basic_consume(ShortString::from(stream), ShortString::from(tag), BasicConsumeOptions::default(), args)
        .await
        .with_context(|| format!("read the cancel stream {stream}"))?;
    let mut going = true;
    while going {
        let Some(delivery) = consumer.next().await else { break };
        let delivery = delivery.context("cancel stream delivery")?;
        let offset =
            crate::fields::get_u64(delivery.properties.headers().as_ref(), "x-stream-offset").unwrap_or_default();
        going = each(offset, Record::decode(&delivery.data));
        // On a stream an ack is credit for the next deliveries, nothing else.
        let _ = delivery.ack(BasicAckOptions::default()).await;
    }
    let _ = channel.close(200, "done".into()).await;
    Ok(())
}

/// Every job id cancelled within the retention, read to a marker of its own: for
/// `warrenctl status`. Bounded by `within`.
pub async fn read_all(
    connection: &Connection,
    publisher: &Publisher,
    settings: &Settings,
    within: Duration,
) -> anyhow::Result<CancelSet> {
    let now_ms = now_ms();
    let marker = format!("read-all/{}", uuid::Uuid::new_v4());
    let set =
        Arc::new(std::sync::Mutex::new(CancelSet::new(Duration::from_secs(settings.topology.cancel_retention_s))));
    let reading = {
        let (set, marker) = (set.clone(), marker.clone());
        async move {
            follow(connection, settings, From::First, &format!("warrenctl/{marker}"), |_, record| match record {
                Ok(Record::Cancel { job_ids, at_ms }) => {
                    set.lock().unwrap_or_else(|p| p.into_inner()).insert(&job_ids, at_ms, now_ms);
                    true
                }
                Ok(Record::Marker(m)) => m != marker,
                Err(_) => true,
            })
            .await
        }
    };
    publish(publisher, settings, &Record::Marker(marker.clone())).await?;
    tokio::time::timeout(within, reading)
        .await
        .map_err(|_| anyhow::anyhow!("the cancel stream was not read to its end within {within:?}"))??;
    let set = set.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(set)
}
