"""One side's client in bench/python/celery_vs_warren.py, run in a process of its own (a fresh
Celery app per vhost): ``bench_client.py SYSTEM KIND N URL``. Warms up with a few jobs, prints
``warm``, waits for a line on stdin, submits N jobs and awaits every result, then prints one JSON
line: seconds, and its own CPU seconds for those N jobs."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import sys
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT / "clients" / "python")]


def main() -> int:
    system, kind, n, url = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    photo = (ROOT / "samples" / "photos" / "photo_1920x1080.jpg").read_bytes()
    job: dict[str, Any] = {} if kind == "bench.noop" else {"image": photo}
    if system == "warren":
        from warren_client import Client

        client = Client(url)

        def run(count: int) -> None:
            ids = [client.submit(kind, job) for _ in range(count)]
            for job_id in ids:
                r = client.result(job_id, timeout=300)
                assert r.ok, r
    else:
        os.environ["CELERY_BROKER_URL"] = url
        import celery_tasks

        task = celery_tasks.noop if kind == "bench.noop" else celery_tasks.thumbnail
        arg: Any = job if kind == "bench.noop" else base64.b64encode(photo).decode()

        def run(count: int) -> None:
            pending = [task.apply_async((arg,)) for _ in range(count)]
            for p in pending:
                p.get(timeout=300)

    run(min(50, n))
    print("warm", flush=True)
    sys.stdin.readline()
    cpu = os.times()
    started = time.perf_counter()
    run(n)
    seconds = time.perf_counter() - started
    after = os.times()
    print(json.dumps({"seconds": seconds, "cpu_s": (after.user + after.system) - (cpu.user + cpu.system)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
