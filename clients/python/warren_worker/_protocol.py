"""The frames between the Rust worker and a Python child process, over the child's stdin and
stdout (its own prints go to stderr, which the worker logs with the job id).

Which job a stderr line belongs to travels on stderr itself: before a job the child writes the
line ``\x1ewarren-job "ID"`` (the id as a JSON string), after it ``\x1ewarren-job ""``, each
after flushing what Python and C's stdio buffered, and after a newline (the worker logs no
empty line). A line is so attributed by its place in the one stream, not
by when the worker happens to read it.

A frame is ``header length (u32 LE) | body length (u32 LE) | header (JSON) | body (bytes)``.
The body carries what is already bytes untouched: a job's JSON text as its envelope held it
(bytes fields base64 once, as the producer wrote them), an output's JSON text. Headers:

- worker -> child: ``{"t": "job", "id", "kind", "attempt", "deadline_ms"}`` (body: the job's
  JSON); ``{"t": "cancel", "id"}``; ``{"t": "stop"}``.
- child -> worker: ``{"t": "hello", "protocol": 1, "pid", "kinds": [...]}`` once at start;
  ``{"t": "progress", "id", "fraction", "text"}``; ``{"t": "ok", "id", "rss_bytes", "bytes_at"}``
  (body: the output's JSON; ``bytes_at``: JSON pointers to the base64 strings that were bytes); ``{"t": "error", "id", "class", "type", "message", "rss_bytes"}``.
"""

from __future__ import annotations

import json
import os
import struct
from typing import IO, Any

PROTOCOL = 1
#: Largest header or body accepted (the worker's body limit is 16 MiB by default).
MAX_PART = 1 << 30

_LENGTHS = struct.Struct("<II")

#: The start of a stderr line naming the job whose lines follow (``""``: none).
JOB_MARK = b"\x1ewarren-job "


def mark_job(fd: int, job_id: str) -> None:
    """Writes the line telling the worker that the stderr lines after it are ``job_id``'s."""
    # On a line of its own even after output that did not end its line (a progress bar).
    line = b"\n" + JOB_MARK + json.dumps(job_id).encode() + b"\n"
    while line:
        line = line[os.write(fd, line):]


class ProtocolError(Exception):
    """The other side wrote something that is not a frame."""


def write_frame(out: IO[bytes], header: dict[str, Any], body: bytes = b"") -> None:
    head = json.dumps(header, separators=(",", ":")).encode()
    out.write(_LENGTHS.pack(len(head), len(body)) + head)
    if body:
        out.write(body)
    out.flush()


def _read_exactly(inp: IO[bytes], n: int) -> bytes | None:
    chunks = []
    left = n
    while left:
        chunk = inp.read(left)
        if not chunk:
            if left == n:
                return None
            raise ProtocolError(f"the stream ended {left} bytes into a {n}-byte part")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(inp: IO[bytes]) -> tuple[dict[str, Any], bytes] | None:
    """The next frame, or None at the end of the stream (between frames)."""
    lengths = _read_exactly(inp, _LENGTHS.size)
    if lengths is None:
        return None
    head_len, body_len = _LENGTHS.unpack(lengths)
    if head_len > MAX_PART or body_len > MAX_PART:
        raise ProtocolError(f"a frame of {head_len} + {body_len} bytes is past the limit")
    head = _read_exactly(inp, head_len) if head_len else b""
    body = _read_exactly(inp, body_len) if body_len else b""
    try:
        header = json.loads(head or b"null")
    except ValueError as e:
        raise ProtocolError(f"a frame header that is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise ProtocolError("a frame header that is not a JSON object")
    return header, body or b""
