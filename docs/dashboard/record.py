#!/usr/bin/env python3
"""Draws the Warren dashboard's main panels from a real run, where Grafana cannot run.

Starts a consumer (the built binary), runs a mixed load with warren-producer (image.resize on a
photo, checksum jobs, and some bad inputs that are dead-lettered), scrapes the consumer's
/metrics and RabbitMQ's management API once a second, and plots with the dashboard's own
formulas: throughput by kind and outcome, run-time p50/p95/p99 (from histogram buckets, as
histogram_quantile does), backlog per queue, pool utilisation. Writes docs/dashboard/dashboard.png.

Run from the repository root after `scripts/setup.sh` and a build:
    python3 docs/dashboard/record.py [--bin target/release]   (needs matplotlib)
"""
import argparse
import base64
import json
import os
import pathlib
import re
import signal
import subprocess
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
METRICS = "http://127.0.0.1:9464/metrics"
MGMT = "http://127.0.0.1:15672/api/queues/%2F"
AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()
SAMPLE = re.compile(r'^([a-z_]+)(\{([^}]*)\})? ([0-9.e+-]+|NaN|\+Inf)$')


def scrape():
    text = urllib.request.urlopen(METRICS, timeout=5).read().decode()
    out = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
            out.append((m.group(1), labels, float(m.group(4))))
    return out


def depths():
    req = urllib.request.Request(MGMT, headers={"Authorization": AUTH})
    return {q["name"]: q.get("messages_ready", 0) for q in json.load(urllib.request.urlopen(req, timeout=5))}


def total(samples, name, **want):
    return sum(v for n, l, v in samples if n == name and all(l.get(k) == x for k, x in want.items()))


def quantile(q, buckets):
    """histogram_quantile over (le, cumulative count) pairs."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / max(c - prev_c, 1e-12))
        prev_le, prev_c = le, c
    return prev_le


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release")
    ap.add_argument("--seconds", type=int, default=45)
    args = ap.parse_args()
    env = dict(os.environ, RUST_LOG="warn", WARREN__CONSUMER__POOL_SIZE="2")
    b = ROOT / args.bin
    consumer = subprocess.Popen([b / "warren-consumer"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            scrape()
            break
        except OSError:
            time.sleep(0.2)
    producer = lambda *a: subprocess.Popen([b / "warren-producer", *a], cwd=ROOT, env=env,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    loads = [
        producer("load", "--kind", "image.resize", "--input", "samples/images/china.jpg", "--width", "256",
                 "--height", "256", "--count", "900", "--rate", "30", "--concurrency", "400", "--wait"),
        producer("load", "--kind", "checksum", "--size", "65536", "--rounds", "200", "--count", "1500",
                 "--rate", "50", "--concurrency", "200", "--wait"),
    ]
    rows = []
    start = time.time()
    bad_sent = 0
    while time.time() - start < args.seconds:
        if int(time.time() - start) % 5 == 0 and bad_sent < int(time.time() - start) // 5 + 1:
            producer("classify", "Cargo.toml", "--wait")  # dead-lettered: not an image
            bad_sent += 1
        rows.append((time.time() - start, scrape(), depths()))
        time.sleep(1)
    for p in loads:
        p.send_signal(signal.SIGINT)
    consumer.send_signal(signal.SIGTERM)
    consumer.wait(timeout=60)
    plot(rows)


def plot(rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r[0] for r in rows[1:]]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    fig.suptitle("Warren: main dashboard panels from a real run (2-core machine, one consumer, pool 2)")

    ax = axes[0][0]
    for kind, outcome in [("image.resize", "ok"), ("checksum", "ok"), ("ml.classify", "dead_lettered")]:
        series = []
        for (t0, a, _), (t1, b_, _) in zip(rows, rows[1:]):
            d = total(b_, "warren_jobs_completed_total", kind=kind, outcome=outcome) - \
                total(a, "warren_jobs_completed_total", kind=kind, outcome=outcome)
            series.append(d / (t1 - t0))
        ax.plot(t, series, label=f"{kind} {outcome}")
    ax.set_title("Throughput by kind and outcome (jobs/s)")
    ax.legend(fontsize=8)

    ax = axes[0][1]
    for q in (0.5, 0.95, 0.99):
        series = []
        for (_, a, _), (_, b_, _) in zip(rows, rows[1:]):
            les = {}
            for n, l, v in b_:
                if n == "warren_job_run_seconds_bucket" and l.get("kind") == "image.resize":
                    les[float(l["le"])] = v
            for n, l, v in a:
                if n == "warren_job_run_seconds_bucket" and l.get("kind") == "image.resize":
                    les[float(l["le"])] -= v
            val = quantile(q, list(les.items()))
            series.append(val * 1000 if val is not None else float("nan"))
        ax.plot(t, series, label=f"p{int(q * 100)}")
    ax.set_title("image.resize run time (ms), per second")
    ax.legend(fontsize=8)

    ax = axes[1][0]
    for queue in ["warren.image.resize", "warren.checksum", "warren.ml.classify.dead"]:
        ax.plot(t, [r[2].get(queue, 0) for r in rows[1:]], label=queue)
    ax.set_title("Backlog per queue (ready messages)")
    ax.legend(fontsize=8)

    ax = axes[1][1]
    ax.plot(t, [total(r[1], "warren_jobs_in_flight") / max(total(r[1], "warren_pool_capacity"), 1) for r in rows[1:]])
    ax.set_ylim(0, 1.05)
    ax.set_title("Pool utilisation (in flight / capacity)")
    for a in axes.flat:
        a.set_xlabel("seconds")
        a.grid(alpha=0.3)
    fig.tight_layout()
    out = pathlib.Path(__file__).resolve().parent / "dashboard.png"
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
