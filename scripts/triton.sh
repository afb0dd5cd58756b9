#!/usr/bin/env bash
# NVIDIA Triton Inference Server 2.51 for Warren's Triton backend, CPU only, idempotently and
# with a cache. PyPI's nvidia-pytriton 0.7.0 wheel carries a complete `tritonserver` binary,
# its Python backend and Python stubs; we install that wheel (without its Python dependencies:
# PyTriton's own API is not used) plus onnxruntime and numpy into a venv, and lay out a backend
# directory holding the Python backend with the stub for this Python. Models are served by
# Triton's Python backend running models/triton/model.py, which runs the ONNX file with
# ONNX Runtime. See models/triton/README.md.
#
#   scripts/triton.sh install                  venv + backend dir under $CACHE_DIR/triton-2.51
#   scripts/triton.sh --env                    prints export lines (after install)
#   scripts/triton.sh repo DIR NAME ONNX MAXB  writes DIR/NAME/config.pbtxt and DIR/NAME/1/model.py
#   scripts/triton.sh serve REPO GRPC HTTP METRICS [tritonserver args...]
#                                              execs tritonserver in the foreground on 127.0.0.1
set -euo pipefail

TRITON_VERSION=2.51
PYTRITON_VERSION=0.7.0
ORT_VERSION=1.31.1
# The Python stub's pybind11 predates NumPy 2 (it imports numpy.core.multiarray); PyTriton 0.7.0
# itself pins numpy<2. onnxruntime 1.31.1 accepts numpy>=1.21.6.
NUMPY_VERSION=1.26.4
CACHE_DIR="${WARREN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/warren}"
TRITON_DIR="$CACHE_DIR/triton-$TRITON_VERSION"
VENV="$TRITON_DIR/venv"
BACKENDS="$TRITON_DIR/backends"
ENV_FILE="$TRITON_DIR/env.sh"
MARKER="$TRITON_DIR/.installed"
PYTHON="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODEL_PY="$HERE/../models/triton/model.py"

log() { echo "triton: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  sed -n '/^#   scripts/,/^#  *execs/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# What an install is made of; a cache whose marker says otherwise is rebuilt.
wanted() {
  echo "nvidia-pytriton==$PYTRITON_VERSION onnxruntime==$ORT_VERSION numpy==$NUMPY_VERSION" \
    "python=$("$PYTHON" -c 'import platform; print(platform.python_version())')"
}

install() {
  mkdir -p "$CACHE_DIR"
  # Two callers (parallel test runs) must not build the same directory at once.
  exec 9>"$CACHE_DIR/triton-$TRITON_VERSION.lock"
  flock 9
  local want
  want="$(wanted)"
  if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$want" ]]; then
    log "Triton $TRITON_VERSION cached at $TRITON_DIR"
    return
  fi
  log "installing Triton $TRITON_VERSION (PyPI nvidia-pytriton $PYTRITON_VERSION) into $TRITON_DIR"
  rm -rf "$TRITON_DIR"
  mkdir -p "$TRITON_DIR"
  "$PYTHON" -m venv "$VENV"
  local pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all:)
  "${pip[@]}" "onnxruntime==$ORT_VERSION" "numpy==$NUMPY_VERSION"
  # --no-deps: the wheel's dependencies (tritonclient, grpcio, ...) serve PyTriton's Python API,
  # which we do not use (it fails on CPython 3.11.7: RLock._recursion_count). Installed last, so
  # that pip's dependency check of the other install does not list what it leaves out.
  "${pip[@]}" --no-deps "nvidia-pytriton==$PYTRITON_VERSION"

  local site pyver libdir
  site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  pyver="$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  # The stub links libpython$pyver.so.1.0; take the one of the Python the venv was made from
  # (Debian's /usr/lib may hold another build of the same version).
  libdir="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
  [[ -f "$libdir/libpython$pyver.so.1.0" ]] \
    || die "$PYTHON has no shared libpython$pyver.so.1.0 in $libdir (the Python stub needs one)"
  local server="$site/pytriton/tritonserver"
  [[ -f "$server/python_backend_stubs/$pyver/triton_python_backend_stub" ]] \
    || die "the wheel has no Python stub for Python $pyver"

  # Triton loads backend "python" from <backend-directory>/python/libtriton_python.so and runs
  # the triton_python_backend_stub it finds beside it.
  mkdir -p "$BACKENDS/python"
  cp "$server/backends/python/libtriton_python.so" \
    "$server/backends/python/triton_python_backend_utils.py" \
    "$server/python_backend_stubs/$pyver/triton_python_backend_stub" "$BACKENDS/python/"

  local ld="$site/nvidia_pytriton.libs:$libdir"
  if LD_LIBRARY_PATH="$ld" ldd "$server/bin/tritonserver" "$BACKENDS/python/libtriton_python.so" \
    "$BACKENDS/python/triton_python_backend_stub" | grep 'not found' >&2; then
    die "tritonserver or the Python backend misses the libraries above"
  fi
  "$VENV/bin/python" -c 'import numpy, onnxruntime' || die "the venv cannot import numpy and onnxruntime"

  cat >"$ENV_FILE" <<EOF
export WARREN_TRITONSERVER='$server/bin/tritonserver'
export WARREN_TRITON_BACKENDS='$BACKENDS'
export WARREN_TRITON_LD_LIBRARY_PATH='$ld'
export WARREN_TRITON_SITE_PACKAGES='$site'
export WARREN_TRITON_PYTHON='$VENV/bin/python'
export WARREN_TRITON_MODEL_PY='$(cd "$(dirname "$MODEL_PY")" && pwd)/model.py'
EOF
  echo "$want" >"$MARKER"
  log "Triton $TRITON_VERSION ready: $server/bin/tritonserver ($(du -sh "$TRITON_DIR" | cut -f1))"
}

load_env() {
  [[ -f "$MARKER" && -f "$ENV_FILE" ]] || die "Triton is not installed; run: scripts/triton.sh install"
  # shellcheck disable=SC1090
  source "$ENV_FILE"
}

# repo DIR NAME ONNX MAX_BATCH_SIZE: a Python-backend model entry for an ONNX model, its inputs
# and outputs (names, element types, dims without the batch dim) read from the ONNX file.
repo() {
  (($# == 4)) || usage
  local dir="$1" name="$2" onnx="$3" max_batch="$4"
  [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad model name: $name"
  [[ "$max_batch" =~ ^[0-9]+$ ]] || die "max_batch_size must be a number: $max_batch"
  [[ -f "$onnx" ]] || die "no ONNX file at $onnx"
  load_env
  mkdir -p "$dir/$name/1"
  cp "$MODEL_PY" "$dir/$name/1/model.py"
  "$WARREN_TRITON_PYTHON" - "$dir/$name/config.pbtxt" "$name" "$(realpath "$onnx")" "$max_batch" \
    "$WARREN_TRITON_SITE_PACKAGES" <<'PY'
import os, sys
import onnxruntime as ort

out, name, onnx, max_batch, site = sys.argv[1:6]
max_batch = int(max_batch)
types = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16",
         "tensor(double)": "TYPE_FP64", "tensor(int64)": "TYPE_INT64",
         "tensor(int32)": "TYPE_INT32", "tensor(uint8)": "TYPE_UINT8",
         "tensor(int8)": "TYPE_INT8", "tensor(bool)": "TYPE_BOOL"}
sess = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])


def tensors(args, what):
    lines = []
    for arg in args:
        if arg.type not in types:
            sys.exit(f"triton: {what} {arg.name} has unsupported type {arg.type}")
        dims = [d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape]
        if max_batch > 0:
            if not dims or isinstance(arg.shape[0], int):
                sys.exit(f"triton: {what} {arg.name} has no dynamic batch dim "
                         f"(shape {arg.shape}); use max_batch_size 0")
            dims = dims[1:]
        lines.append(f'  {{ name: "{arg.name}" data_type: {types[arg.type]} '
                     f'dims: [ {", ".join(map(str, dims))} ] }}')
    return ",\n".join(lines)


text = f'''name: "{name}"
backend: "python"
max_batch_size: {max_batch}
input [
{tensors(sess.get_inputs(), "input")}
]
output [
{tensors(sess.get_outputs(), "output")}
]
{"dynamic_batching { }" + chr(10) if max_batch > 0 else ""}instance_group [ {{ kind: KIND_CPU count: 1 }} ]
parameters {{ key: "onnx_path" value: {{ string_value: "{onnx}" }} }}
parameters {{ key: "site_packages" value: {{ string_value: "{site}" }} }}
'''
tmp = out + ".partial"
with open(tmp, "w") as f:
    f.write(text)
os.replace(tmp, out)
PY
  log "wrote $dir/$name (config.pbtxt, 1/model.py) for $onnx"
}

# serve REPO GRPC HTTP METRICS [args...]: exec, so the caller's child *is* tritonserver. Our
# configs are complete, so auto-complete (an extra stub launch per model) is off: ready in ~1.2 s
# instead of ~3 s, same /config. Its
# Python stubs are its children: a caller that may SIGKILL it should start it in a process group
# of its own and kill the group (see README.md).
serve() {
  (($# >= 4)) || usage
  local repo="$1" grpc="$2" http="$3" metrics="$4"
  shift 4
  [[ -d "$repo" ]] || die "no model repository at $repo"
  load_env
  export LD_LIBRARY_PATH="$WARREN_TRITON_LD_LIBRARY_PATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export WARREN_TRITON_SITE_PACKAGES
  exec "$WARREN_TRITONSERVER" --model-repository="$(realpath "$repo")" \
    --backend-directory="$WARREN_TRITON_BACKENDS" \
    --http-address=127.0.0.1 --grpc-address=127.0.0.1 --metrics-address=127.0.0.1 \
    --disable-auto-complete-config \
    --grpc-port="$grpc" --http-port="$http" --metrics-port="$metrics" "$@"
}

case "${1:-}" in
  install) install ;;
  --env) load_env; cat "$ENV_FILE" ;;
  repo) shift; repo "$@" ;;
  serve) shift; serve "$@" ;;
  *) usage ;;
esac
