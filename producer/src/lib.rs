//! Publishing Warren jobs and awaiting their results, as a library for Rust services and as the
//! `warren-producer` command (files, directories, and a load generator for benchmarks).
//!
//! Every publish waits for the broker's confirm and is `mandatory`: a job no queue would take
//! is an error ([`ProducerError::Publish`] with `Unroutable`), never a silent loss.

pub mod app;
pub mod cli;
pub mod client;
pub mod commands;
pub mod context;
pub mod exit_code;
pub mod inputs;
pub mod load;
pub mod metrics;
pub mod output;
pub mod replies;

pub use client::{Producer, ProducerError, PublishOptions, Ticket, unix_ms};
