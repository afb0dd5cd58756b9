#!/usr/bin/env python3
"""Writes deploy/grafana/dashboards/warren.json, the provisioned Warren dashboard.

The panels are defined here as data, so the JSON stays consistent (ids, grid positions, the
datasource). Run: python3 deploy/grafana/make_dashboard.py
"""
import json
import pathlib

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


def panel(i, title, unit, targets):
    return {
        "id": i + 1,
        "type": "timeseries",
        "title": title,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [{"refId": chr(65 + j), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for j, (legend, expr) in enumerate(targets)],
    }


dashboard = {
    "uid": "warren",
    "title": "Warren",
    "tags": ["warren"],
    "timezone": "browser",
    "schemaVersion": 39,
    "version": 1,
    "refresh": "10s",
    "time": {"from": "now-30m", "to": "now"},
    "panels": [panel(i, *p) for i, p in enumerate(PANELS)],
}

out = pathlib.Path(__file__).resolve().parent / "dashboards" / "warren.json"
out.write_text(json.dumps(dashboard, indent=2) + "\n")
print(f"wrote {out} ({len(PANELS)} panels)")
