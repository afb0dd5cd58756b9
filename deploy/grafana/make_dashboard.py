#!/usr/bin/env python3
"""Writes deploy/grafana/dashboards/warren.json, the provisioned Warren dashboard.

The panels are defined here as data, so the JSON stays consistent (ids, grid positions, the
datasource). Run: python3 deploy/grafana/make_dashboard.py
With --check it writes nothing and exits 1 when the JSON on disk is not what it would write
(deploy/validate.py runs it so).
"""
import json
import pathlib
import sys

DS = {"type": "prometheus", "uid": "prometheus"}
Q = 'queue=~"warren\\\\..*"'


def quantiles(metric, by="kind"):
    legend = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(","))
    return [(f"p{int(q * 100)} {legend}",
             f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket[1m])))") for q in (0.5, 0.95, 0.99)]


PANELS = [
    ("Throughput by kind and outcome (jobs/s)", "reqps",
     [("{{kind}} {{outcome}}", "sum by (kind, outcome) (rate(warren_jobs_completed_total[1m]))")]),
    ("Run time p50 / p95 / p99", "s", quantiles("warren_job_run_seconds")),
    ("Queue wait p50 / p95 / p99 (timestamp to start)", "s", quantiles("warren_job_queue_wait_seconds")),
    ("End-to-end p50 / p95 / p99 (timestamp to result)", "s", quantiles("warren_job_end_to_end_seconds")),
    ("Backlog per queue (ready messages)", "short",
     [("{{queue}}", f"sum by (queue) (rabbitmq_queue_messages_ready{{{Q}}})")]),
    ("Oldest message age per queue", "s",
     [("{{queue}}", f"time() - max by (queue) (rabbitmq_queue_head_message_timestamp{{{Q}}} > 0)")]),
    ("Pool utilisation", "percentunit",
     [("in flight / capacity", "sum(warren_jobs_in_flight) / sum(warren_pool_capacity)")]),
    ("Dead letters and retries (jobs/s)", "reqps",
     [("dead-lettered {{kind}}", 'sum by (kind) (rate(warren_jobs_completed_total{outcome="dead_lettered"}[5m]))'),
      ("retried {{kind}}", 'sum by (kind) (rate(warren_jobs_completed_total{outcome="retried"}[5m]))')]),
    ("Dead-letter queues (messages waiting)", "short",
     [("{{queue}}", 'sum by (queue) (rabbitmq_queue_messages_ready{queue=~".*\\\\.dead"})')]),
    ("Errors by type (per s)", "reqps",
     [("{{error_type}}", "sum by (error_type) (rate(warren_job_errors_total[5m]))")]),
    ("Publishes by target and outcome (per s)", "reqps",
     [("{{target}} {{outcome}}", "sum by (target, outcome) (rate(warren_publishes_total[1m]))")]),
    ("Reconnects and connected consumers", "short",
     [("reconnects (5m)", "sum(increase(warren_reconnects_total[5m]))"),
      ("connected", "sum(warren_connected)")]),
    ("Inference time p50 / p95 / p99", "s", quantiles("warren_inference_seconds", by="model, backend")),
    ("Model readiness and Triton request errors", "short",
     [("ready {{model}} {{backend}}", "min by (model, backend) (warren_model_ready)"),
      ("Triton errors {{code}} (per s)", "sum by (code) (rate(warren_triton_errors_total[5m]))")]),
    ("Consumer memory (RSS)", "bytes",
     [("{{instance}}", 'process_resident_memory_bytes{job="warren-consumer"}')]),
]

# The "Console" row: warren-console's own metrics (console/src/metrics.rs), and the events the
# workers could not hand to the broker, which no console ever sees. The console's replicas share
# one store and one queue, so what they measure of those is taken once (max), not added up.
CONSOLE = [
    ("Console: events read by outcome (per s)", "reqps",
     [("{{outcome}}", "sum by (outcome) (rate(warren_console_events_total[1m]))")]),
    ("Console: event lag p99 (job step to queryable) and commit p99", "s",
     [("event lag p99", "histogram_quantile(0.99, sum by (le) (rate(warren_console_event_lag_seconds_bucket[1m])))"),
      ("commit p99", "histogram_quantile(0.99, sum by (le) (rate(warren_console_commit_seconds_bucket[1m])))")]),
    ("Console: backlog (event messages waiting) and connected consoles", "short",
     [("backlog", "max(warren_console_backlog_messages)"),
      ("connected", "sum(warren_console_connected)")]),
    ("Events lost by workers (per s): buffer full, not confirmed", "reqps",
     [("dropped", 'sum(rate(warren_events_total{outcome="dropped"}[5m])) or vector(0)'),
      ("not stored", 'sum(rate(warren_events_total{outcome="not_stored"}[5m])) or vector(0)')]),
    ("Console: status store size", "bytes",
     [("store", "max(warren_console_store_bytes)")]),
    ("Console: jobs and events held", "short",
     [("jobs", "max(warren_console_jobs)"),
      ("events", "max(warren_console_stored_events)")]),
]


def panel(pid, i, y, title, unit, targets):
    """Panel id `pid`, the `i`th of its section, whose first row starts at `y`: two a row."""
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": y + (i // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [{"refId": chr(65 + j), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for j, (legend, expr) in enumerate(targets)],
    }


def layout():
    """The fleet's panels first (ids 1..15 as before), then a row "Console" and its panels."""
    panels = [panel(i + 1, i, 0, *p) for i, p in enumerate(PANELS)]
    y = ((len(PANELS) + 1) // 2) * 8
    panels.append({"id": len(panels) + 1, "type": "row", "title": "Console", "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
    panels += [panel(len(panels) + 1 + i, i, y + 1, *p) for i, p in enumerate(CONSOLE)]
    return panels


dashboard = {
    "uid": "warren",
    "title": "Warren",
    "tags": ["warren"],
    "timezone": "browser",
    "schemaVersion": 39,
    "version": 1,
    "refresh": "10s",
    "time": {"from": "now-30m", "to": "now"},
    "panels": layout(),
}

out = pathlib.Path(__file__).resolve().parent / "dashboards" / "warren.json"
text = json.dumps(dashboard, indent=2) + "\n"
count = f"{len(PANELS) + len(CONSOLE)} panels, one row"
if "--check" in sys.argv[1:]:
    same = out.exists() and out.read_text() == text
    print(f"{out}: {'what' if same else 'NOT what'} make_dashboard.py writes ({count})")
    sys.exit(0 if same else 1)
out.write_text(text)
print(f"wrote {out} ({count})")
