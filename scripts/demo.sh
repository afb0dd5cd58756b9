#!/usr/bin/env bash
# The main job, end to end, on this machine's RabbitMQ (vhost "/"): set up, build (release),
# start the console and a consumer, publish sample jobs of every kind, print results, show a
# job's timeline from the console, measure overhead, stop.
# Outputs go to out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
eval "$(scripts/setup.sh --env)"
echo "== building (release)"
cargo build --release --bins --locked

OUT=out/demo
rm -rf "$OUT" && mkdir -p "$OUT"
CONSUMER=target/release/warren-consumer
PRODUCER=target/release/warren-producer

# Waits (60 s at most) until $OUT/NAME.log says READY, or fails with the log if PID died.
await_log() {
  local name=$1 pid=$2 ready=$3 deadline=$((SECONDS + 60))
  until grep -q "$ready" "$OUT/$name.log"; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
      echo "the $name did not start:"; cat "$OUT/$name.log"; exit 1
    fi
    sleep 0.2
  done
}

CONSOLE_URL=http://127.0.0.1:8470
echo "== starting warren-console (store: $OUT/console.db, page and API: $CONSOLE_URL, log: $OUT/console.log)"
WARREN__CONSOLE__DATABASE_URL="sqlite://$OUT/console.db" NO_COLOR=1 target/release/warren-console \
  >"$OUT/console.log" 2>&1 &
CONSOLE_PID=$!
trap 'kill -TERM $CONSOLE_PID 2>/dev/null || true' EXIT
await_log console "$CONSOLE_PID" "reading lifecycle events"

echo "== starting warren-consumer (log: $OUT/consumer.log)"
NO_COLOR=1 "$CONSUMER" >"$OUT/consumer.log" 2>&1 &
CONSUMER_PID=$!
trap 'kill -TERM $CONSUMER_PID $CONSOLE_PID 2>/dev/null || true' EXIT
await_log consumer "$CONSUMER_PID" "consumer ready"

echo "== image.resize: three photos (JPEG, PNG, WebP) to 256x256 WebP"
"$PRODUCER" resize --width 256 --height 256 --format webp samples/images --wait --out "$OUT/resize"
echo "== ml.classify: ten hand-written digits (file names carry the true label)"
"$PRODUCER" classify --top-k 3 models/digits/samples/00[0-9]_*.png --wait --out "$OUT/classify"
echo "== checksum: every file under samples/images, bincode encoding"
"$PRODUCER" --encoding bincode checksum samples/images --wait --out "$OUT/checksum"
echo "== bad input: a file that is not an image (dead-lettered with its reason)"
"$PRODUCER" classify Cargo.toml --wait || true
echo "== warrenctl: the fleet at a glance, and the dead letter decoded"
target/release/warrenctl status
target/release/warrenctl peek warren.ml.classify.dead -n 3
echo "== warren-console: what happened to that job (GET $CONSOLE_URL/api/jobs/<id>, warrenctl job <id>)"
dead_id=""
deadline=$((SECONDS + 30))
until [[ -n "$dead_id" ]] || ((SECONDS >= deadline)); do
  dead_id="$(python3 -c 'import json, sys, urllib.request
jobs = json.load(urllib.request.urlopen(sys.argv[1] + "/api/jobs?status=dead_lettered&kind=ml.classify&limit=1"))["jobs"]
print(jobs[0]["job_id"] if jobs else "")' "$CONSOLE_URL")" || true
  [[ -n "$dead_id" ]] || sleep 0.2
done
if [[ -n "$dead_id" ]]; then target/release/warrenctl job "$dead_id"; else echo "the console has no dead-lettered job"; exit 1; fi
echo "== overhead: 2000 checksum jobs of 1 KiB, 64 in flight"
"$PRODUCER" load --kind checksum --count 2000 --concurrency 64 --wait

echo "== a few of the consumer's metrics (http://127.0.0.1:9464/metrics)"
python3 -c 'import urllib.request; print("\n".join(l for l in urllib.request.urlopen("http://127.0.0.1:9464/metrics").read().decode().splitlines() if l.startswith(("warren_jobs_completed_total", "warren_pool_capacity"))))' || true
echo "== stopping the consumer and the console (SIGTERM)"
kill -TERM "$CONSUMER_PID"
wait "$CONSUMER_PID" && echo "consumer exited 0"
kill -TERM "$CONSOLE_PID"
wait "$CONSOLE_PID" && echo "console exited 0"
trap - EXIT
echo "== outputs in $OUT:"
ls "$OUT"/*
