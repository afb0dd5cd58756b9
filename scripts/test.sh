#!/usr/bin/env bash
# Runs every test: prepares the machine (ONNX Runtime, RabbitMQ and its plugins, Triton, pika,
# pytest), builds the binaries the end-to-end tests drive, then runs the unit and end-to-end tests
# and the Python client's tests.
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
# The Python client's tests, against the same broker and the consumer binary built above
# (after the Rust tests: one of them restarts the broker).
PYTHONPATH=clients/python "${PYTHON:-python3}" -m pytest -q -s clients/python/tests 2>&1 | tee -a "$log"
py_status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary, pytest one).
awk '/^test result:/ {p += $4; f += $6}
     /^[0-9]+ (passed|failed)/ {for (i = 1; i < NF; i++) {if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i}}
     END {printf "tests: %d passed, %d failed\n", p, f}' "$log"
rm -f "$log"
if ((status == 0)); then status=$py_status; fi
exit "$status"
