#!/usr/bin/env python3
"""Checks the deployment files without a Docker engine or a cluster: they parse, and they say
what Warren needs (probes, drain-friendly grace periods, a KEDA ScaledObject per consumer
Deployment, Prometheus scraping consumers and RabbitMQ, a dashboard whose panels have queries).
`docker-compose config -q` (compose schema) runs too when docker-compose is installed.
Exit status 1 with one line per problem.
"""
import json
import pathlib
import re
import shutil
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
problems = []


def check(cond, message):
    if not cond:
        problems.append(message)


def drain_timeout_s():
    text = (ROOT / "config" / "default.toml").read_text()
    return int(re.search(r"^drain_timeout_ms = (\d+)", text, re.M).group(1)) / 1000


# docker-compose.yml
compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
services = compose.get("services", {})
for name in ["rabbitmq", "consumer-resize", "consumer-classify", "consumer-checksum", "producer", "prometheus", "grafana"]:
    check(name in services, f"compose: service {name} missing")
for name, svc in services.items():
    for vol in svc.get("volumes", []):
        src = vol.split(":")[0]
        if src.startswith("./"):
            check((ROOT / src).exists(), f"compose: {name} mounts {src}, which does not exist")
    if name.startswith("consumer-"):
        env = svc.get("environment", {})
        check("WARREN__CONSUMER__KINDS" in env, f"compose: {name} names no kinds")
        grace = svc.get("stop_grace_period", "10s")
        check(int(grace.rstrip("s")) > drain_timeout_s(), f"compose: {name} stop_grace_period {grace} <= drain timeout")
        check("healthcheck" in svc, f"compose: {name} has no healthcheck")
        check("replicas" in svc.get("deploy", {}), f"compose: {name} sets no replicas")
plugins = (ROOT / "deploy/rabbitmq/enabled_plugins").read_text()
check("rabbitmq_prometheus" in plugins and "rabbitmq_management" in plugins, "rabbitmq: plugins not enabled")
if shutil.which("docker-compose"):
    r = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                       capture_output=True, text=True, cwd=ROOT)
    check(r.returncode == 0, f"compose schema: {r.stderr.strip()}")
    print("docker-compose config: schema ok" if r.returncode == 0 else "docker-compose config: FAILED")
else:
    print("docker-compose not installed: compose schema check skipped")

# Dockerfile
dockerfile = (ROOT / "Dockerfile").read_text()
check(dockerfile.count("FROM ") >= 2, "Dockerfile: not multi-stage")
check("ORT_DYLIB_PATH" in dockerfile, "Dockerfile: ONNX Runtime path not set")

# Prometheus
prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
jobs = {j["job_name"]: j for j in prom.get("scrape_configs", [])}
check("warren-consumer" in jobs and "rabbitmq" in jobs, "prometheus: consumer or rabbitmq job missing")
names = [n for j in jobs.values() for sd in j.get("dns_sd_configs", []) for n in sd.get("names", [])]
for n in names:
    check(n in services, f"prometheus: scrapes {n}, which is not a compose service")

if shutil.which("promtool"):
    r = subprocess.run(["promtool", "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")],
                       capture_output=True, text=True)
    check(r.returncode == 0, f"promtool: {r.stdout.strip()} {r.stderr.strip()}")
    print("promtool check config: ok" if r.returncode == 0 else "promtool check config: FAILED")
else:
    print("promtool not installed: Prometheus config syntax check skipped")

# Grafana
dash = json.loads((ROOT / "deploy/grafana/dashboards/warren.json").read_text())
check(len(dash.get("panels", [])) >= 10, "dashboard: too few panels")
for p in dash.get("panels", []):
    check(all(t.get("expr") for t in p.get("targets", [])) and p.get("targets"), f"dashboard: panel {p.get('title')} has no query")
for f in (ROOT / "deploy/grafana/provisioning").rglob("*.yml"):
    yaml.safe_load(f.read_text())

# Kubernetes
docs = []
for f in sorted((ROOT / "deploy/kubernetes").glob("*.yaml")):
    for d in yaml.safe_load_all(f.read_text()):
        if d:
            check(all(k in d for k in ("apiVersion", "kind")), f"k8s: {f.name}: a document without apiVersion/kind")
            docs.append((f.name, d))
deployments = {d["metadata"]["name"]: d for _, d in docs if d.get("kind") == "Deployment"}
scaled = {d["spec"]["scaleTargetRef"]["name"]: d for _, d in docs if d.get("kind") == "ScaledObject"}
check(len(deployments) == 3, f"k8s: expected 3 consumer Deployments, found {len(deployments)}")
for name, d in deployments.items():
    pod = d["spec"]["template"]["spec"]
    c = pod["containers"][0]
    check(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", f"k8s: {name} liveness is not /healthz")
    check(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", f"k8s: {name} readiness is not /readyz")
    check(pod.get("terminationGracePeriodSeconds", 30) > drain_timeout_s(), f"k8s: {name} grace period <= drain timeout")
    check(name in scaled, f"k8s: {name} has no KEDA ScaledObject")
    env = {e["name"]: e for e in c.get("env", [])}
    check("secretKeyRef" in env.get("WARREN__BROKER__URL", {}).get("valueFrom", {}), f"k8s: {name} broker URL not from a Secret")
for name, s in scaled.items():
    trig = s["spec"]["triggers"][0]
    check(trig["type"] == "rabbitmq" and trig["metadata"].get("queueName"), f"k8s: ScaledObject {name} does not scale on a queue")
kustom = yaml.safe_load((ROOT / "deploy/kubernetes/kustomization.yaml").read_text())
for r in kustom["resources"]:
    check((ROOT / "deploy/kubernetes" / r).exists(), f"kustomization: {r} missing")

for p in problems:
    print("deploy:", p)
print(f"deploy: {len(problems)} problem(s) in compose, Dockerfile, Prometheus, Grafana, Kubernetes files")
sys.exit(1 if problems else 0)
