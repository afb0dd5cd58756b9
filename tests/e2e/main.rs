//! End-to-end tests against the real RabbitMQ (a private vhost each), the real consumer and
//! producer, the real ONNX Runtime and real images. Run by `scripts/test.sh`.

mod bench;
mod binaries;
mod console;
mod control;
mod crash;
mod credentials;
mod dashboard;
mod delivery;
mod digits;
mod events;
mod example;
mod failures;
mod imaging;
mod kinds;
mod observability;
mod pool;
mod publisher;
mod python_contract;
mod python_kinds;
mod references;
mod reliability;
mod stuck;
mod topology;
mod triton;
mod warrenctl;
