#!/usr/bin/env bash
# Prepares this machine for Warren, idempotently and with a cache:
#   1. ONNX Runtime 1.31.1 (the shared library ort loads at run time), from PyPI's wheel;
#   2. a running RabbitMQ with the management and prometheus plugins;
#   3. the tools the build needs: cmake and nasm (the turbojpeg crate builds libjpeg-turbo 3.1
#      statically, with its SIMD code, because Debian 12 ships 2.1, older than the TurboJPEG 3
#      API the crate's pkg-config path needs);
#   4. the Python packages the contract example, the imaging quality test and the Pillow
#      baseline of warren-bench use (pika, Pillow);
#   5. NVIDIA Triton Inference Server 2.51 (CPU, from PyPI's nvidia-pytriton wheel) for the
#      Triton backend's tests and benchmark: scripts/triton.sh install, cached;
#   6. Debian's prometheus (the server the dashboard test runs) and pytest;
#   7. Debian's chromium and chromium-driver (the console's browser test) and a running
#      PostgreSQL (the console's tests against it);
#   8. s3s-fs 0.14.1 from crates.io: a real S3-compatible server over a directory, which the
#      tests of job references start on ports of their own (cargo install, cached).
# Prints nothing but progress; `source <(scripts/setup.sh --env)` exports ORT_DYLIB_PATH and
# WARREN_S3S_FS (the S3 server's binary).
set -euo pipefail

ORT_VERSION=1.31.1
CACHE_DIR="${WARREN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/warren}"
ORT_DIR="$CACHE_DIR/onnxruntime-$ORT_VERSION"
ORT_LIB="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
S3S_VERSION=0.14.1
S3S_FS="$CACHE_DIR/s3s-fs-$S3S_VERSION/bin/s3s-fs"
PYTHON="${PYTHON:-python3}"

log() { echo "setup: $*" >&2; }

if [[ "${1:-}" == "--env" ]]; then
  echo "export ORT_DYLIB_PATH='$ORT_LIB'"
  echo "export WARREN_S3S_FS='$S3S_FS'"
  exit 0
fi

fetch_onnxruntime() {
  if [[ -f "$ORT_LIB" ]]; then
    log "ONNX Runtime $ORT_VERSION cached at $ORT_LIB"
    return
  fi
  log "fetching ONNX Runtime $ORT_VERSION from PyPI's onnxruntime wheel"
  local tmp
  tmp="$(mktemp -d)"
  # The wheel is the only place a registry serves the prebuilt library; we take the .so and
  # leave the Python binding behind.
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    "onnxruntime==$ORT_VERSION" -d "$tmp"
  mkdir -p "$ORT_DIR"
  "$PYTHON" - "$tmp" "$ORT_DIR" "$ORT_VERSION" <<'PY'
import glob, os, sys, zipfile
src, dest, version = sys.argv[1:4]
wheel = glob.glob(os.path.join(src, "onnxruntime-*.whl"))[0]
name = f"onnxruntime/capi/libonnxruntime.so.{version}"
with zipfile.ZipFile(wheel) as z:
    data = z.read(name)
tmp = os.path.join(dest, ".partial")
with open(tmp, "wb") as f:
    f.write(data)
os.replace(tmp, os.path.join(dest, os.path.basename(name)))
PY
  rm -rf "$tmp"
  log "ONNX Runtime ready at $ORT_LIB"
}

# s3s-fs (0.15 and later need a newer Rust than this machine's): the server the tests of job
# references run, over a temporary directory each.
install_s3s_fs() {
  if [[ -x "$S3S_FS" ]]; then
    log "s3s-fs $S3S_VERSION cached at $S3S_FS"
    return
  fi
  log "building s3s-fs $S3S_VERSION from crates.io (once; a few minutes)"
  cargo install --quiet --locked s3s-fs --version "$S3S_VERSION" --features binary \
    --root "$CACHE_DIR/s3s-fs-$S3S_VERSION"
}

wait_for() { # wait_for DESCRIPTION SECONDS COMMAND...
  local what="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then log "gave up waiting for $what after ${secs}s"; return 1; fi
    sleep 1
  done
}

start_broker() {
  if ! command -v rabbitmqctl >/dev/null; then
    log "RabbitMQ is not installed; installing it from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  if ! rabbitmqctl -q status >/dev/null 2>&1; then
    log "RabbitMQ is not running; starting it"
    rabbitmq-server -detached
  fi
  wait_for "RabbitMQ to boot" 120 rabbitmqctl -q await_startup
  rabbitmq-plugins -q enable rabbitmq_management rabbitmq_prometheus >/dev/null
  # Python rather than curl: one fewer tool a fresh machine must have.
  wait_for "the management API on :15672" 120 "$PYTHON" -c '
import base64, urllib.request
req = urllib.request.Request("http://127.0.0.1:15672/api/overview",
                             headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
urllib.request.urlopen(req, timeout=5).read()'

  wait_for "AMQP on :5672" 60 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672'
  log "RabbitMQ is up (AMQP :5672, management :15672, prometheus :15692)"
}

build_tools() {
  local missing=()
  command -v cmake >/dev/null || missing+=(cmake)
  command -v nasm >/dev/null || missing+=(nasm)
  # The dashboard test evaluates the Grafana dashboard's queries on a real Prometheus (its
  # server is never left running: the test starts and stops its own); CI's config check uses
  # the package's promtool.
  command -v prometheus >/dev/null || missing+=(prometheus)
  # scripts/cluster.sh makes the test cluster's TLS certificates with it.
  command -v openssl >/dev/null || missing+=(openssl)
  # The console's page is tested in a real browser: headless Chromium through ChromeDriver.
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  # The console's PostgreSQL tests: a server from Debian's packages (usually there already).
  command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
  if ((${#missing[@]})); then
    log "installing ${missing[*]} (cmake and nasm build libjpeg-turbo with its SIMD code; prometheus runs the dashboard test; openssl makes the test cluster's certificates; chromium tests the console's page; postgresql stores its tests' events)"
    # Debian's prometheus package would start its service: policy-rc.d forbids services from
    # starting during this install (unless the machine has a policy of its own).
    local policy=/usr/sbin/policy-rc.d ours=""
    if [[ ! -e "$policy" ]]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && ours=1
    fi
    local ok=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || ok=$?
    [[ -z "$ours" ]] || rm -f "$policy"
    ((ok == 0)) || { log "installing ${missing[*]} failed"; exit 1; }
  fi
}

# Python packages, pinned where a version matters. Pillow: the imaging quality test compares
# Warren with Pillow's draft mode, and the bench's baseline is Pillow; a different Pillow (or its
# bundled libjpeg-turbo) moves both. kubernetes-validate ships the schemas deploy/validate.py
# checks the manifests against.
PYTHON_PINS=(
  "pika"                          # the Python client and the contract's example (any 1.x)
  "pytest==8.3.4"                 # the Python client's tests
  "mypy==1.13.0"                  # the Python client's type check
  "types-pika==1.2.0b1"
  "Pillow==12.0.0"
  "numpy==2.3.5"                  # the Python kinds' example (examples/python/) and its tests
  "celery==5.5.3"                 # bench/python/celery_vs_warren.py: Python kinds against Celery
  "kubernetes-validate==1.37.0"
)

python_deps() {
  # Each pin whose distribution is missing or of another version, installed in one pip call.
  local wanted
  wanted="$("$PYTHON" - "${PYTHON_PINS[@]}" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for pin in sys.argv[1:]:
    name, _, want = pin.partition("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have is None or (want and have != want):
        print(pin)
PY
)"
  if [[ -n "$wanted" ]]; then
    log "installing $(echo $wanted) (the Python client, its tests, the imaging baseline, the manifests' schemas)"
    # shellcheck disable=SC2086 # one pin per word
    "$PYTHON" -m pip install --quiet $wanted
  fi
}

# The console's tests store events in a real PostgreSQL on 127.0.0.1:5432 (trust auth, as this
# machine's comes): start its cluster when it is down.
start_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432; then
    log "PostgreSQL answering on 127.0.0.1:5432"
    return
  fi
  log "starting PostgreSQL"
  local version cluster
  read -r version cluster _ < <(pg_lsclusters --no-header | head -n 1)
  [[ -n "${version:-}" ]] || { log "no PostgreSQL cluster to start (pg_createcluster one)"; exit 1; }
  pg_ctlcluster "$version" "$cluster" start
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 && return
    sleep 0.5
  done
  log "PostgreSQL did not answer on 127.0.0.1:5432"
  exit 1
}

build_tools
fetch_onnxruntime
install_s3s_fs
start_broker
start_postgres
python_deps
"$(dirname "$0")/triton.sh" install
