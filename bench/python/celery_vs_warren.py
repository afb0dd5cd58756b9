#!/usr/bin/env python3
"""The same Python functions run by Celery and hosted by Warren, side by side on the same broker.

    python3 bench/python/celery_vs_warren.py [--rounds 3] [--noop 3000] [--thumbs 300] [--out F]

Celery 5: prefork with one process per core, acks_late, publisher confirms, results over the
rpc:// backend (a reply queue), JSON. Warren: the release `warren-consumer` hosting
bench_kinds.py in one child per core, results to the client's reply queue. Both take their jobs
from the Python clients of their own (celery's apply_async, warren_client's submit), every job
submitted first, then every result awaited. Each round runs both systems in turn (the order
alternating), each on a vhost of its own; a round's ratio is Warren's jobs/s over Celery's, and
the median of the rounds' ratios is reported (the machine is shared and noisy). CPU per job is
measured from /proc for the worker's process tree, the broker and this client.

Prints a table and, with --out, writes the figures as JSON."""

from __future__ import annotations

import argparse
import base64
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT / "clients" / "python")]

AMQP = os.environ.get("WARREN_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
MGMT = os.environ.get("WARREN_TEST_MGMT_URL", "http://127.0.0.1:15672")
CORES = os.cpu_count() or 1
TICK = os.sysconf("SC_CLK_TCK")


def mgmt(method: str, path: str, body: dict[str, Any] | None = None) -> None:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(MGMT + path, data=data, method=method,
                                 headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                                          "Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()


class Vhost:
    def __init__(self) -> None:
        self.name = f"warren-bench-celery-{uuid.uuid4().hex}"
        self.quoted = urllib.parse.quote(self.name, safe="")
        mgmt("PUT", f"/api/vhosts/{self.quoted}")
        mgmt("PUT", f"/api/permissions/{self.quoted}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
        self.url = f"{AMQP}/{self.quoted}"

    def delete(self) -> None:
        mgmt("DELETE", f"/api/vhosts/{self.quoted}")


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, IndexError, ValueError):
            pass
    return out


def tree(root: int) -> list[int]:
    """`root` and its live descendants."""
    parents: dict[int, int] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def broker_pids() -> list[int]:
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            # The default node's, not the test cluster's (scripts/cluster.sh).
            if b"beam.smp" in cmd and b"-s\x00rabbit\x00boot" in cmd and b"warren-cluster" not in cmd:
                pids.append(int(entry.name))
    return pids


class Worker:
    """A worker process, ready when `ready` appears in its log."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: pathlib.Path, ready: str) -> None:
        self.proc = subprocess.Popen(argv, env=dict(os.environ, **env), cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.log: list[str] = []
        up = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log.append(line)
                if ready in line:
                    up.set()
            up.set()

        threading.Thread(target=read, daemon=True).start()
        if not up.wait(120) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("the worker did not start:\n" + "".join(self.log[-30:]))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def warren_worker(vhost: Vhost) -> Worker:
    binary = ROOT / "target" / "release" / "warren-consumer"
    env = {"WARREN__BROKER__URL": vhost.url, "WARREN__PYTHON__MODULES": "bench_kinds",
           "WARREN__PYTHON__PATH": f"{HERE},{ROOT / 'clients' / 'python'}",
           "WARREN__PYTHON__CHILDREN": str(CORES), "WARREN__CONSUMER__KINDS": "bench.noop,bench.thumbnail",
           "WARREN__TELEMETRY__METRICS_ADDR": "127.0.0.1:0", "RUST_LOG": "warn,warren_consumer::app=info",
           "NO_COLOR": "1", "WARREN_CONFIG_DIR": str(ROOT / "config")}
    return Worker([str(binary)], env, ROOT, "consumer ready")


def celery_worker(vhost: Vhost) -> Worker:
    env = {"CELERY_BROKER_URL": vhost.url, "PYTHONPATH": f"{HERE}"}
    argv = [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "--pool=prefork",
            f"--concurrency={CORES}", "-Q", "celery.bench", "--loglevel=INFO", "--without-gossip",
            "--without-mingle", "--without-heartbeat"]
    return Worker(argv, env, HERE, " ready.")


def one(system: str, kind: str, job: dict[str, Any], n: int) -> dict[str, Any]:
    vhost = Vhost()
    try:
        worker = warren_worker(vhost) if system == "warren" else celery_worker(vhost)
        try:
            client = subprocess.Popen([sys.executable, str(HERE / "bench_client.py"), system, kind, str(n), vhost.url],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert client.stdin is not None and client.stdout is not None
            assert client.stdout.readline().strip() == "warm", "the client did not warm up"
            pids = tree(worker.proc.pid)
            before = (cpu_seconds(pids), cpu_seconds(broker_pids()))
            client.stdin.write("go\n")
            client.stdin.flush()
            measured = json.loads(client.stdout.readline())
            after = (cpu_seconds(tree(worker.proc.pid)), cpu_seconds(broker_pids()))
            client.wait(60)
            took = measured["seconds"]
        finally:
            worker.stop()
    finally:
        vhost.delete()

    def spent(b: dict[int, float], a: dict[int, float]) -> float:
        return sum(a[p] - b.get(p, 0.0) for p in a)

    me = measured["cpu_s"]
    return {"system": system, "kind": kind, "jobs": n, "seconds": took, "jobs_per_s": n / took,
            "cpu_ms_per_job": {"worker": 1000 * spent(before[0], after[0]) / n,
                               "broker": 1000 * spent(before[1], after[1]) / n, "client": 1000 * me / n}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--noop", type=int, default=3000)
    parser.add_argument("--thumbs", type=int, default=300)
    parser.add_argument("--out")
    args = parser.parse_args()
    photo = (ROOT / "samples" / "photos" / "photo_1920x1080.jpg").read_bytes()
    scenarios = [("bench.noop", {}, args.noop), ("bench.thumbnail", {"image": photo}, args.thumbs)]
    runs = []
    for r in range(args.rounds):
        for kind, job, n in scenarios:
            order = ["warren", "celery"] if r % 2 == 0 else ["celery", "warren"]
            for system in order:
                result = one(system, kind, job, n)
                result["round"] = r
                runs.append(result)
                print(f"round {r} {kind:16} {system:7} {result['jobs_per_s']:8.1f} jobs/s  "
                      f"cpu ms/job worker {result['cpu_ms_per_job']['worker']:.2f} "
                      f"broker {result['cpu_ms_per_job']['broker']:.2f} client {result['cpu_ms_per_job']['client']:.2f}",
                      flush=True)
    summary = {}
    for kind, _, _ in scenarios:
        ratios = []
        for r in range(args.rounds):
            w = next(x for x in runs if x["round"] == r and x["kind"] == kind and x["system"] == "warren")
            c = next(x for x in runs if x["round"] == r and x["kind"] == kind and x["system"] == "celery")
            ratios.append(w["jobs_per_s"] / c["jobs_per_s"])

        def med(system: str, key: str, part: str | None = None) -> float:
            xs = [x[key][part] if part else x[key] for x in runs if x["kind"] == kind and x["system"] == system]
            return statistics.median(xs)

        summary[kind] = {"ratio_median_of_rounds": statistics.median(ratios), "ratios": ratios,
                         "warren_jobs_per_s": med("warren", "jobs_per_s"), "celery_jobs_per_s": med("celery", "jobs_per_s"),
                         "warren_cpu_ms_per_job": {p: med("warren", "cpu_ms_per_job", p) for p in ("worker", "broker", "client")},
                         "celery_cpu_ms_per_job": {p: med("celery", "cpu_ms_per_job", p) for p in ("worker", "broker", "client")}}
        print(f"{kind}: Warren / Celery = {summary[kind]['ratio_median_of_rounds']:.2f} (rounds: "
              f"{', '.join(f'{x:.2f}' for x in ratios)})")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"cores": CORES, "runs": runs, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
