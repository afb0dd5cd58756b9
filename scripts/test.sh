#!/usr/bin/env bash
# Runs every test: prepares the machine (ONNX Runtime, RabbitMQ and its plugins, pika), builds
# the binaries the end-to-end tests drive, then runs the unit and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
eval "$(scripts/setup.sh --env)"
cargo build --workspace --bins --locked
# --nocapture: the end-to-end tests print their counts (jobs, results, duplicates, timings).
cargo test --workspace --locked "$@" -- --nocapture
