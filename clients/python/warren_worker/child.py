"""A Python child process of the Rust worker: ``python -m warren_worker.child MODULE...``.

It imports the modules (their ``@warren_worker.kind`` functions register themselves), says which
kinds it has, then runs one job at a time as the worker sends them, over its stdin and stdout
(``_protocol``). Its own prints, and its C extensions', go to stderr: the worker logs them with
the job's id. A job past its time limit is the worker's to stop: it kills the process."""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import logging
import os
import queue
import sys
import threading
import time
from typing import IO, Any

from . import _protocol
from ._kinds import Context, KindSpec, registered

_STOP = object()


def resident_bytes() -> int:
    """The process's resident memory now (Linux), or its peak elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def to_json_value(value: Any, bytes_at: list[str] | None = None, at: str = "") -> Any:
    """An output made JSON-ready: ``bytes`` as standard base64, tuples as lists. Where bytes
    were is appended to ``bytes_at`` as JSON pointers (RFC 6901): the worker writes those to the
    store when the job has an ``output_to``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        if bytes_at is not None:
            bytes_at.append(at)
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {str(k): to_json_value(v, bytes_at, f"{at}/{_escaped(str(k))}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v, bytes_at, f"{at}/{i}") for i, v in enumerate(value)]
    return value


def _escaped(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def decode_input(spec: KindSpec, body: bytes) -> dict[str, Any]:
    """The job's input from its JSON text, its bytes fields decoded (strict standard base64)."""
    try:
        job = json.loads(body)
    except ValueError as e:
        raise _Refused("invalid_params", f"job: not JSON: {e}") from e
    if not isinstance(job, dict):
        raise _Refused("invalid_params", f"job: a JSON object is expected, got {type(job).__name__}")
    for name in spec.bytes_fields:
        if name in job:
            value = job[name]
            if not isinstance(value, str):
                raise _Refused("invalid_params", f"job: {name}: base64 text is expected")
            try:
                job[name] = base64.b64decode(value, validate=True)
            except binascii.Error as e:
                raise _Refused("invalid_params", f"job: {name}: not standard base64: {e}") from e
    return job


def _libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None)
    except (OSError, ImportError):
        return None


_LIBC = _libc()


def _lines_belong_to(job_id: str) -> None:
    """Flushes what Python holds for stderr (and stdout, which goes there), then marks the lines
    after as ``job_id``'s (``""``: between jobs) on stderr itself (``_protocol.mark_job``)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if _LIBC is not None:
        _LIBC.fflush(None)  # C extensions' stdio buffers too
    _protocol.mark_job(2, job_id)


class _Refused(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class Child:
    """The loop of one child: frames in, one job at a time, frames out."""

    def __init__(self, inp: IO[bytes], out: IO[bytes]) -> None:
        self.inp, self.out = inp, out
        self.write_lock = threading.Lock()
        self.jobs: queue.Queue[Any] = queue.Queue()
        self.current: tuple[str, threading.Event] | None = None
        self.current_lock = threading.Lock()

    def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        with self.write_lock:
            _protocol.write_frame(self.out, header, body)

    def read(self) -> None:
        """The reader thread: jobs to the queue, cancels to the running job."""
        try:
            while (frame := _protocol.read_frame(self.inp)) is not None:
                header, body = frame
                if header.get("t") == "job":
                    self.jobs.put((header, body))
                elif header.get("t") == "cancel":
                    with self.current_lock:
                        if self.current is not None and self.current[0] == header.get("id"):
                            self.current[1].set()
                elif header.get("t") == "stop":
                    break
        except _protocol.ProtocolError as e:
            print(f"warren_worker.child: {e}; stopping", file=sys.stderr)
        self.jobs.put(_STOP)

    def run(self) -> None:
        kinds = registered()
        self.send({"t": "hello", "protocol": _protocol.PROTOCOL, "pid": os.getpid(),
                   "kinds": [k.describe() for k in kinds.values()]})
        threading.Thread(target=self.read, name="warren-frames", daemon=True).start()
        while (item := self.jobs.get()) is not _STOP:
            header, body = item
            self.run_one(kinds, header, body)

    def run_one(self, kinds: Any, header: dict[str, Any], body: bytes) -> None:
        job_id = str(header.get("id", ""))
        name = str(header.get("kind", ""))
        spec: KindSpec | None = kinds.get(name)
        if spec is None:
            self.fail(job_id, "permanent", "unknown_kind", f"unknown job kind {name!r} in this Python child")
            return
        cancelled = threading.Event()
        with self.current_lock:
            self.current = (job_id, cancelled)
        _lines_belong_to(job_id)
        last = [0.0]

        def progress(fraction: float, text: str) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.2 or fraction >= 1.0:
                last[0] = now
                self.send({"t": "progress", "id": job_id, "fraction": fraction, "text": text})

        deadline = time.time() + spec.time_limit
        if isinstance(header.get("deadline_ms"), int):
            deadline = min(deadline, header["deadline_ms"] / 1000)
        cx = Context(job_id, name, int(header.get("attempt", 0)), deadline, progress, cancelled)
        try:
            job = decode_input(spec, body)
            output = spec.function(job, cx)
            bytes_at: list[str] = []
            try:
                text = json.dumps(to_json_value(output, bytes_at), separators=(",", ":"), allow_nan=False).encode()
            except (TypeError, ValueError) as e:
                self.fail(job_id, "permanent", "encode_failed", f"the output is not JSON: {e}")
                return
            self.send({"t": "ok", "id": job_id, "rss_bytes": resident_bytes(), "bytes_at": bytes_at}, text)
        except _Refused as e:
            self.fail(job_id, "permanent", e.error_type, e.message)
        except Exception as e:  # noqa: BLE001 - every failure of a kind is answered, classified
            error_class, error_type, message = spec.classify(e)
            self.fail(job_id, error_class, error_type, message)
        finally:
            _lines_belong_to("")
            with self.current_lock:
                self.current = None

    def fail(self, job_id: str, error_class: str, error_type: str, message: str) -> None:
        self.send({"t": "error", "id": job_id, "class": error_class, "type": error_type,
                   "message": message[:2048], "rss_bytes": resident_bytes()})


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m warren_worker.child MODULE...", file=sys.stderr)
        return 2
    # The frames keep stdin and stdout; everything else printing to stdout goes to stderr.
    inp = os.fdopen(os.dup(0), "rb", buffering=0)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    sys.stdout = sys.stderr
    # A kind's log records (Context.logger) go to stderr too: the worker logs each line with
    # the job it belongs to.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, os.getcwd())
    for module in argv:
        importlib.import_module(module)
    if not registered():
        print(f"warren_worker.child: no kind registered by {', '.join(argv)}", file=sys.stderr)
        return 2
    Child(inp, out).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
