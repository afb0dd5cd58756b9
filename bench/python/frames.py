#!/usr/bin/env python3
"""What the frames between the worker and a Python child cost, for a job carrying a 1920x1080
JPEG (686 KB; base64 in the job's JSON, 915 KB): a real child (`python -m warren_worker.child
bench_kinds`) is sent N `bench.size` jobs (decode the bytes field, return its length) through
its pipes, one at a time as the worker does, against the same decoding done in-process (what
the child must do anyway). Prints bytes on the pipe per job against the job's JSON, and the time
per job of both.

    python3 bench/python/frames.py [N]
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT / "clients" / "python")]

from warren_worker import _protocol  # noqa: E402


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    photo = (ROOT / "samples" / "photos" / "photo_1920x1080.jpg").read_bytes()
    body = json.dumps({"image": base64.b64encode(photo).decode()}).encode()
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{ROOT / 'clients' / 'python'}")
    child = subprocess.Popen([sys.executable, "-m", "warren_worker.child", "bench_kinds"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=env, cwd=HERE)
    assert child.stdin is not None and child.stdout is not None
    _protocol.read_frame(child.stdout)
    sent = 0

    def one(i: int) -> None:
        nonlocal sent
        header = {"t": "job", "id": f"job-{i}", "kind": "bench.size", "attempt": 0, "deadline_ms": None}
        _protocol.write_frame(child.stdin, header, body)
        sent += 8 + len(json.dumps(header, separators=(",", ":"))) + len(body)
        frame = _protocol.read_frame(child.stdout)
        assert frame is not None and frame[0]["t"] == "ok", frame

    for i in range(20):
        one(i)
    sent = 0
    started = time.perf_counter()
    for i in range(n):
        one(i)
    piped = (time.perf_counter() - started) / n
    child.stdin.close()
    child.wait(10)
    started = time.perf_counter()
    for _ in range(n):
        len(base64.b64decode(json.loads(body)["image"], validate=True))
    in_process = (time.perf_counter() - started) / n
    print(json.dumps({
        "jobs": n, "image_bytes": len(photo), "job_json_bytes": len(body),
        "pipe_bytes_per_job": sent / n, "frame_overhead_bytes": sent / n - len(body),
        "ms_per_job_through_child": round(piped * 1000, 3), "ms_per_job_decoding_in_process": round(in_process * 1000, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
