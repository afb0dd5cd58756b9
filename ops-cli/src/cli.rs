//! Command-line arguments. Every global flag can also be set by an environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "warrenctl", version, about = "Inspect Warren's queues and move messages safely")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Warren configuration directory (queue names, topology, broker URL).
    #[arg(long, env = "WARREN_CONFIG_DIR", global = true)]
    pub config_dir: Option<PathBuf>,
    /// AMQP URL, credentials and vhost included (default: broker.url of the configuration);
    /// several nodes of a cluster separated by commas.
    #[arg(long, env = "WARRENCTL_URL", global = true, hide_env_values = true)]
    pub url: Option<String>,
    /// Management API base URL (default: http://<AMQP host>:15672 of each AMQP node); several
    /// separated by commas, asked in turn until one answers.
    #[arg(long, env = "WARRENCTL_MGMT_URL", global = true)]
    pub mgmt_url: Option<String>,
    /// Management API user (default: the AMQP URL's).
    #[arg(long, env = "WARRENCTL_MGMT_USER", global = true)]
    pub mgmt_user: Option<String>,
    /// Management API password (default: the AMQP URL's).
    #[arg(long, env = "WARRENCTL_MGMT_PASSWORD", global = true, hide_env_values = true)]
    pub mgmt_password: Option<String>,
    /// Machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The fleet at a glance: Warren's queues, backlog, rates, oldest message, dead letters.
    Status,
    /// Queues with their depth, consumers and rates (Warren's, or --all).
    Queues {
        #[arg(long)]
        all: bool,
    },
    /// Show messages without removing them (they return to the queue marked redelivered).
    Peek {
        queue: String,
        #[arg(short = 'n', long, default_value_t = 10)]
        count: u32,
        /// Every field in full, one line per message (the default view fits 120 columns).
        #[arg(long)]
        wide: bool,
    },
    /// Copy messages (body, properties, headers) to a file; with --ack, remove them.
    Dump {
        queue: String,
        #[arg(long)]
        out: PathBuf,
        /// Remove the dumped messages from the queue (after the file is written and synced).
        #[arg(long)]
        ack: bool,
        /// At most this many messages (default: all).
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Publish the messages of a dump file, exactly as dumped (to their exchange and key).
    Load {
        file: PathBuf,
        /// Publish to this exchange instead (routing keys kept); "" is the default exchange.
        #[arg(long)]
        to: Option<String>,
    },
    /// Send dead letters back to where they came from (or --to), confirmed one by one.
    Replay {
        dead_queue: String,
        /// Only matching messages: reason=..,kind=..,since=<RFC 3339 or epoch ms>,error_type=..,job_id=..
        #[arg(long)]
        filter: Option<String>,
        #[arg(long)]
        limit: Option<u64>,
        /// Messages per second (default: as fast as confirms allow).
        #[arg(long)]
        rate: Option<f64>,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// EXCHANGE or EXCHANGE/ROUTING_KEY instead of each message's origin.
        #[arg(long)]
        to: Option<String>,
    },
    /// What happened to a job: its status, attempts and timeline, from warren-console.
    Job {
        job_id: String,
        /// The console's base URL (default: http://<console.addr of the configuration>).
        #[arg(long, env = "WARRENCTL_CONSOLE_URL")]
        console_url: Option<String>,
    },
    /// Cancel jobs by id: none of them starts after this (on any worker, one started later
    /// included, for topology.cancel_retention_s); each is answered with error type `cancelled`
    /// and dead-lettered. A job already running is told (cooperative). Unknown ids are no error.
    Cancel {
        #[arg(required = true)]
        job_ids: Vec<String>,
    },
    /// Remove every ready message of a queue.
    Purge {
        queue: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Declare (apply) or compare (diff) exchanges, queues and bindings from the configuration.
    Topology {
        #[arg(value_enum)]
        action: TopologyAction,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum TopologyAction {
    Apply,
    Diff,
}
