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
#   6. Debian's prometheus (the server the dashboard test runs) and pytest.
# Prints nothing but progress; `source <(scripts/setup.sh --env)` exports ORT_DYLIB_PATH.
set -euo pipefail

ORT_VERSION=1.31.1
CACHE_DIR="${WARREN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/warren}"
ORT_DIR="$CACHE_DIR/onnxruntime-$ORT_VERSION"
ORT_LIB="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
PYTHON="${PYTHON:-python3}"

log() { echo "setup: $*" >&2; }

if [[ "${1:-}" == "--env" ]]; then
  echo "export ORT_DYLIB_PATH='$ORT_LIB'"
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
  # server is never left running: the test starts and stops its own).
  command -v prometheus >/dev/null || missing+=(prometheus)
  if ((${#missing[@]})); then
    log "installing ${missing[*]} (cmake and nasm build libjpeg-turbo with its SIMD code; prometheus runs the dashboard test)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian's package starts a Prometheus service where it can; the tests run their own.
    pkill -x prometheus 2>/dev/null || true
  fi
}

PILLOW_VERSION=12.0.0
PYTEST_VERSION=8.3.4
MYPY_VERSION=1.13.0
TYPES_PIKA_VERSION=1.2.0b1

python_deps() {
  if ! "$PYTHON" -c "import pika" 2>/dev/null; then
    log "installing pika (the Python client and the contract's example)"
    "$PYTHON" -m pip install --quiet pika
  fi
  if [[ "$("$PYTHON" -c 'import pytest; print(pytest.__version__)' 2>/dev/null)" != "$PYTEST_VERSION" ]]; then
    log "installing pytest $PYTEST_VERSION (the Python client's tests)"
    "$PYTHON" -m pip install --quiet "pytest==$PYTEST_VERSION"
  fi
  if [[ "$("$PYTHON" -c 'import mypy.version; print(mypy.version.__version__)' 2>/dev/null)" != "$MYPY_VERSION" ]]; then
    log "installing mypy $MYPY_VERSION (the Python client's type check)"
    "$PYTHON" -m pip install --quiet "mypy==$MYPY_VERSION" "types-pika==$TYPES_PIKA_VERSION"
  fi
  # Pinned: the imaging quality test compares Warren with Pillow's draft mode, and the bench's
  # baseline is Pillow; a different Pillow (or its bundled libjpeg-turbo) moves both.
  if [[ "$("$PYTHON" -c 'import PIL; print(PIL.__version__)' 2>/dev/null)" != "$PILLOW_VERSION" ]]; then
    log "installing Pillow $PILLOW_VERSION (the imaging test's and the bench's baseline)"
    "$PYTHON" -m pip install --quiet "Pillow==$PILLOW_VERSION"
  fi
}

build_tools
fetch_onnxruntime
start_broker
python_deps
"$(dirname "$0")/triton.sh" install
