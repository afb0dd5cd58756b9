#!/usr/bin/env bash
# Runs every test: prepares the machine (ONNX Runtime, RabbitMQ and its plugins, pika), builds
# the binaries the end-to-end tests drive, then runs the unit and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
eval "$(scripts/setup.sh --env)"
# The cluster tests start three RabbitMQ nodes beside the default one (scripts/cluster.sh);
# they are stopped again when the tests end, pass or fail.
trap 'scripts/cluster.sh stop >/dev/null 2>&1 || true' EXIT
cargo build --workspace --bins --locked
# --nocapture: the end-to-end tests print their counts (jobs, results, duplicates, timings).
log="$(mktemp)"
set +e
cargo test --workspace --locked "$@" -- --nocapture 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ {p += $4; f += $6} END {printf "tests: %d passed, %d failed\n", p, f}' "$log"
rm -f "$log"
exit "$status"
