//! `warrenctl`, the operators' tool for a Warren fleet: what is in the queues, what is stuck,
//! and moving messages safely (peek, dump/load, dead-letter replay, purge), plus topology.
//!
//! Inspection goes through RabbitMQ's management HTTP API; moving messages goes through AMQP
//! with publisher confirms, and a message is removed from its source only after its copy is
//! confirmed, so a command killed midway loses nothing.

pub mod cli;
pub mod commands;
pub mod context;
pub mod dumpfile;
pub mod errors;
pub mod jobview;
pub mod messages;
pub mod mgmt;
pub mod output;
