"""Kinds the child-process tests run (``python -m warren_worker.child sample_kinds``)."""

from __future__ import annotations

import ctypes
import hashlib
import os
import sys
import time
from typing import Any

import warren_worker
from warren_worker import Context, Permanent, Transient


_LIBC = ctypes.CDLL(None)


@warren_worker.kind("sample.digest", time_limit=5, bytes_fields=("data",))
def digest(job: dict[str, Any], cx: Context) -> dict[str, Any]:
    data: bytes = job["data"]
    print(f"digesting {len(data)} bytes")  # to stderr: the worker logs it
    _LIBC.printf(b"C says %d\n", ctypes.c_int(len(data)))  # C stdio, buffered on a pipe
    return {"sha256": hashlib.sha256(data).hexdigest(), "attempt": cx.attempt, "echo": data[:4]}


@warren_worker.kind("sample.fail", max_attempts=2, retry_on=(ConnectionError,))
def fail(job: dict[str, Any], cx: Context) -> None:
    how = job.get("how")
    if how == "permanent":
        raise Permanent("bad_text", "the text is not one we take")
    if how == "transient":
        raise Transient("backend_down", "the backend is down")
    if how == "connection":
        raise ConnectionError("refused")
    if how == "exit":
        os._exit(3)
    raise KeyError(how)


@warren_worker.kind("sample.slow", time_limit=30)
def slow(job: dict[str, Any], cx: Context) -> dict[str, Any]:
    steps = int(job.get("steps", 10))
    for i in range(steps):
        if cx.is_cancelled():
            raise Permanent("cancelled", f"stopped at step {i}")
        cx.progress((i + 1) / steps, f"step {i + 1}")
        time.sleep(0.05)
    return {"steps": steps, "left_s": round(cx.remaining())}


@warren_worker.kind("sample.unencodable")
def unencodable(job: dict[str, Any], cx: Context) -> object:
    return {"value": object()}


_HELD: list[bytearray] = []


@warren_worker.kind("sample.pid")
def pid(job: dict[str, Any], cx: Context) -> dict[str, Any]:
    """Which child ran it; with ``grow_mib``, keeps that much memory for the child's life."""
    grow = int(job.get("grow_mib", 0))
    if grow:
        _HELD.append(bytearray(os.urandom(1)) * (grow << 20))
    return {"pid": os.getpid()}


@warren_worker.kind("sample.noisy", time_limit=5, max_attempts=1)
def noisy(job: dict[str, Any], cx: Context) -> dict[str, Any]:
    """Writes bytes that are not UTF-8, then more than a pipe holds, to stderr."""
    os.write(2, b"\xff\xfe not UTF-8\n")
    lines = int(job.get("lines", 2000))
    for i in range(lines):
        print(f"line {i} " + "x" * 100, file=sys.stderr)
    print("y" * 40_000, file=sys.stderr)  # one line longer than the worker logs at once
    return {"lines": lines}


@warren_worker.kind("sample.spin", time_limit=1, max_attempts=1)
def spin(job: dict[str, Any], cx: Context) -> None:
    """Never returns: only killing its child stops it."""
    while True:
        pass
