//! The scenarios, one module each; each returns its part of the report.

pub mod cluster;
pub mod console;
pub mod events;
pub mod image;
pub mod latency;
pub mod memory;
pub mod ml;
pub mod prefetch;
pub mod publish;
pub mod relay;
pub mod triton;

/// A scenario: its name on the command line is its key in the report. Declared in the order
/// they run, whatever the order asked for (`latency` after `relay`, whose median rate it uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A raw lapin relay vs the fleet running the trivial `checksum` kind.
    Relay,
    /// The fleet's throughput by prefetch per pool slot.
    Prefetch,
    /// A 1920x1080 photo to a 256 px JPEG: Pillow (full decode and draft, 1 and all cores),
    /// Warren in-process, and the fleet's `image.resize` with JSON and bincode jobs and by
    /// reference (the photo in s3s-fs, the output written back).
    Image,
    /// ONNX Runtime in-process at batch sizes 1..32 vs the fleet's `ml.classify`.
    Ml,
    /// The same models on a Triton server (CPU) beside ONNX Runtime in-process: the gRPC hop,
    /// whole jobs, and the fleet with either backend.
    Triton,
    /// A worker's RSS under, after and across image loads, with either allocator.
    Memory,
    /// Warren's publisher (1, 2, 4 lanes) vs raw lapin on one shared confirm channel.
    Publish,
    /// p50/p95/p99 at 50% of the relay's maximum rate, fleet vs relay.
    Latency,
    /// Classic queues on the one default node vs quorum queues on the three-node cluster.
    Cluster,
    /// The trivial fleet with lifecycle events off against on (each routed to a queue).
    Events,
    /// The trivial fleet with events read by warren-console (SQLite, PostgreSQL) against events
    /// routed to a plain queue: rate, catch-up, event-to-queryable p99, bytes per job.
    Console,
}
