#!/usr/bin/env bash
# Profiles a worker under benchmark load: runs one warren-bench scenario (image or ml), attaches
# perf to the first warren-consumer process it starts, and prints where that worker's CPU time
# goes, by binary and by function. Needs `perf` and a release build (cargo build --release --bins).
#
#   scripts/profile-worker.sh image        # an image.resize worker (JSON jobs)
#   scripts/profile-worker.sh ml 6         # the SqueezeNet ml.classify worker, 6 s of samples
#   scripts/profile-worker.sh image 6 WARREN__STORE__S3_ENDPOINT
#                                          # the first worker whose environment has that variable:
#                                          # the image fleet run by S3 reference (FILE_ROOTS: by file://)
set -euo pipefail
cd "$(dirname "$0")/.."

scenario="${1:-image}"
seconds="${2:-4}"
with_env="${3:-}"
case "$scenario" in
  image | ml) ;;
  *) echo "usage: $0 image|ml [seconds]" >&2; exit 2 ;;
esac
command -v perf >/dev/null || { echo "perf is not installed (Debian: linux-perf)" >&2; exit 1; }
[[ -x target/release/warren-bench ]] || { echo "build first: cargo build --release --bins" >&2; exit 1; }
eval "$(scripts/setup.sh --env 2>/dev/null)"

out="$(mktemp -d)"
trap 'kill "$bench" 2>/dev/null || true; rm -rf "$out"' EXIT
# Enough jobs that the worker is still busy when the samples end.
target/release/warren-bench --pairs 1 --scenarios "$scenario" --heavy-messages 3000 --measure-ms 300 \
  >"$out/bench.log" 2>&1 &
bench=$!

pid=""
for _ in $(seq 3000); do
  pid=""
  for p in $(pgrep -x warren-consumer || true); do
    if [[ -z "$with_env" ]] || tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -q "^$with_env="; then
      pid="$p"
    fi
  done
  [[ -n "$pid" ]] && break
  kill -0 "$bench" 2>/dev/null || { cat "$out/bench.log" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$pid" ]] || { echo "no warren-consumer${with_env:+ with $with_env} appeared within 300 s" >&2; exit 1; }
sleep 1 # past start-up, into the load
perf record -q -F 999 -p "$pid" -o "$out/perf.data" -- sleep "$seconds" >/dev/null 2>&1

# The benchmark itself is stopped on exit; its figures are warren-bench's job, not this one's.
report() { perf report -i "$out/perf.data" --no-children --sort "$1" --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -"$2" || true; }
echo "== $scenario worker (pid $pid), $seconds s of samples: by binary"
report dso 8
echo "== by function"
report dso,sym 30
