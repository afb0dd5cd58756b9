"""warren_worker without a broker: the decorator, the frames, and a real child process driven
through its stdin and stdout as the Rust worker drives it."""

from __future__ import annotations

import base64
import io
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

import pytest

import warren_worker
from warren_worker import _protocol
from warren_worker._kinds import KindSpec

HERE = pathlib.Path(__file__).resolve().parent
PACKAGE = HERE.parent


def test_the_decorator_registers_kinds_and_refuses_bad_ones() -> None:
    warren_worker.clear()

    @warren_worker.kind("a.b", time_limit=2.5, max_attempts=3, bytes_fields=["img"])
    def f(job: dict[str, Any], cx: warren_worker.Context) -> int:
        return 1

    spec = warren_worker.registered()["a.b"]
    assert spec.describe() == {"name": "a.b", "time_limit_ms": 2500, "max_attempts": 3,
                               "bytes_fields": ["img"], "default_class": "permanent"}
    assert f({}, None) == 1  # type: ignore[arg-type]  # still plain code
    for bad in ({"name": "A.b"}, {"name": "a..b"}, {"name": "a", "time_limit": 0},
                {"name": "a", "max_attempts": 0}, {"name": "a", "default_class": "sometimes"}):
        name = str(bad.pop("name"))
        with pytest.raises(ValueError):
            warren_worker.kind(name, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        warren_worker.kind("a.b")(lambda job, cx: 2)
    with pytest.raises(ValueError):
        warren_worker.Permanent("Not A Type")
    warren_worker.clear()


def test_exceptions_are_classified() -> None:
    spec = KindSpec("k", lambda job, cx: None, retry_on=(ConnectionError,))
    assert spec.classify(warren_worker.Permanent("bad_input", "no")) == ("permanent", "bad_input", "no")
    assert spec.classify(warren_worker.Transient("down")) == ("transient", "down", "down")
    assert spec.classify(ConnectionError("x"))[:2] == ("transient", "python_exception")
    assert spec.classify(KeyError("x")) == ("permanent", "python_exception", "KeyError: 'x'")
    lenient = KindSpec("k", lambda job, cx: None, default_class="transient")
    assert lenient.classify(ValueError("v"))[0] == "transient"


def test_frames_round_trip_and_bad_ones_are_errors() -> None:
    buf = io.BytesIO()
    _protocol.write_frame(buf, {"t": "job", "id": "1"}, b'{"a":1}')
    _protocol.write_frame(buf, {"t": "stop"})
    buf.seek(0)
    assert _protocol.read_frame(buf) == ({"t": "job", "id": "1"}, b'{"a":1}')
    assert _protocol.read_frame(buf) == ({"t": "stop"}, b"")
    assert _protocol.read_frame(buf) is None, "the end between frames"
    with pytest.raises(_protocol.ProtocolError):
        _protocol.read_frame(io.BytesIO(b"\x05\x00\x00\x00\x00\x00\x00\x00ab"))
    with pytest.raises(_protocol.ProtocolError):
        _protocol.read_frame(io.BytesIO(b"\x02\x00\x00\x00\x00\x00\x00\x00[]"))
    with pytest.raises(_protocol.ProtocolError):
        _protocol.read_frame(io.BytesIO(b"\xff\xff\xff\xff\x00\x00\x00\x00"))


class ChildProcess:
    """``python -m warren_worker.child sample_kinds``, spoken to as the worker does."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=f"{PACKAGE}{os.pathsep}{HERE}")
        self.proc = subprocess.Popen([sys.executable, "-m", "warren_worker.child", "sample_kinds"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, cwd=HERE)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.inp, self.out = self.proc.stdin, self.proc.stdout

    def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        _protocol.write_frame(self.inp, header, body)

    def read(self) -> tuple[dict[str, Any], bytes]:
        frame = _protocol.read_frame(self.out)
        assert frame is not None, self.stderr()
        return frame

    def job(self, job_id: str, kind: str, job: dict[str, Any], **header: Any) -> tuple[dict[str, Any], bytes]:
        self.send({"t": "job", "id": job_id, "kind": kind, "attempt": 0, **header}, json.dumps(job).encode())
        while True:
            header_in, body = self.read()
            if header_in["t"] != "progress":
                return header_in, body

    def stderr(self) -> str:
        self.proc.kill()
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")


@pytest.fixture
def child():  # type: ignore[no-untyped-def]
    c = ChildProcess()
    yield c
    c.proc.kill()
    c.proc.wait()


def test_a_child_says_its_kinds_then_answers_jobs_with_bytes_once(child: ChildProcess) -> None:
    hello, _ = child.read()
    assert hello["t"] == "hello" and hello["protocol"] == 1 and hello["pid"] == child.proc.pid
    kinds = {k["name"]: k for k in hello["kinds"]}
    assert set(kinds) == {"sample.digest", "sample.fail", "sample.slow", "sample.unencodable", "sample.pid",
                          "sample.spin", "sample.noisy"}
    assert kinds["sample.digest"]["bytes_fields"] == ["data"] and kinds["sample.fail"]["max_attempts"] == 2
    data = os.urandom(3000)
    header, body = child.job("j1", "sample.digest", {"data": base64.b64encode(data).decode()})
    assert header["t"] == "ok" and header["id"] == "j1" and header["rss_bytes"] > 1_000_000, header
    assert header["bytes_at"] == ["/echo"], "where the output held bytes, for output_to"
    import hashlib
    assert json.loads(body) == {"sha256": hashlib.sha256(data).hexdigest(), "attempt": 0,
                                "echo": base64.b64encode(data[:4]).decode()}
    header, _ = child.job("j2", "sample.digest", {"data": "%%%"})
    assert (header["t"], header["class"], header["type"]) == ("error", "permanent", "invalid_params"), header
    header, _ = child.job("j3", "nope", {})
    assert header["type"] == "unknown_kind"
    child.send({"t": "stop"})
    assert child.proc.wait(timeout=10) == 0
    # Prints go to stderr, between the marks of the job that made them (flushed before the end
    # mark, Python's and C's stdio, though stdout is a pipe and block-buffered): the worker
    # attributes each line by its place in the stream.
    lines = child.stderr().split("\n")  # not splitlines: \x1e is a line boundary to it
    marks = [i for i, line in enumerate(lines) if line.startswith("\x1ewarren-job ")]
    assert [lines[i][len("\x1ewarren-job "):] for i in marks] == ['"j1"', '""', '"j2"', '""'], lines
    assert [line for line in lines[marks[0] + 1:marks[1]] if line] == ["digesting 3000 bytes", "C says 3000"], lines


def test_each_exception_class_and_an_unencodable_output(child: ChildProcess) -> None:
    child.read()
    expected = {"permanent": ("permanent", "bad_text"), "transient": ("transient", "backend_down"),
                "connection": ("transient", "python_exception"), "other": ("permanent", "python_exception")}
    for how, (error_class, error_type) in expected.items():
        header, _ = child.job(how, "sample.fail", {"how": how})
        assert (header["t"], header["class"], header["type"]) == ("error", error_class, error_type), header
    header, _ = child.job("u", "sample.unencodable", {})
    assert (header["class"], header["type"]) == ("permanent", "encode_failed"), header
    header, _ = child.job("d", "sample.digest", {"data": ""})
    assert header["t"] == "ok", "the child goes on after every failure"


def test_progress_deadline_and_cancel(child: ChildProcess) -> None:
    child.read()
    child.send({"t": "job", "id": "s", "kind": "sample.slow", "attempt": 1,
                "deadline_ms": int((time.time() + 5) * 1000)}, b'{"steps": 10}')
    frames = []
    while True:
        header, body = child.read()
        frames.append(header)
        if header["t"] != "progress":
            break
    # The kind's 30 s time limit is cut to the job's deadline, 5 s away.
    assert header["t"] == "ok" and json.loads(body)["left_s"] in (4, 5), (header, body)
    progress = [f for f in frames if f["t"] == "progress"]
    assert 1 <= len(progress) <= 5 and progress[-1]["fraction"] == 1.0, progress
    child.send({"t": "job", "id": "c", "kind": "sample.slow", "attempt": 0}, b'{"steps": 200}')
    time.sleep(0.2)
    child.send({"t": "cancel", "id": "other"})
    child.send({"t": "cancel", "id": "c"})
    while (header := child.read()[0])["t"] == "progress":
        pass
    assert (header["t"], header["type"]) == ("error", "cancelled"), header
    assert "stopped at step" in header["message"]


def test_a_child_that_dies_ends_its_stream(child: ChildProcess) -> None:
    child.read()
    child.send({"t": "job", "id": "x", "kind": "sample.fail", "attempt": 0}, b'{"how": "exit"}')
    assert _protocol.read_frame(child.out) is None
    assert child.proc.wait(timeout=10) == 3


def test_warren_worker_type_checks_strictly() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports", "warren_worker"],
                         cwd=PACKAGE, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_an_outputs_bytes_are_base64_and_their_places_json_pointers() -> None:
    from warren_worker.child import to_json_value

    at: list[str] = []
    out = to_json_value({"image": b"\xff\xd8", "a/b~c": [1, bytearray(b"x")], "t": (b"y",), "n": 2}, at)
    assert out == {"image": "/9g=", "a/b~c": [1, "eA=="], "t": ["eQ=="], "n": 2}
    assert at == ["/image", "/a~1b~0c/1", "/t/0"]
