#!/usr/bin/env python3
"""Checks the deployment files without a Docker engine or a cluster: they parse, and they say
what Warren needs (probes, drain-friendly grace periods, a KEDA ScaledObject per consumer
Deployment, a console whose SQLite file is on a volume and is written by one replica, whose
token is a secret, Prometheus scraping consumers, the console and RabbitMQ, a dashboard whose
panels have queries and that is what deploy/grafana/make_dashboard.py writes).
`docker-compose config -q` (compose schema) runs too when docker-compose is installed.
The Kubernetes manifests are validated against Kubernetes' own schemas (kubernetes-validate,
strict), KEDA's objects against the fields KEDA documents, and their references to each other
and to config/default.toml's routes are followed.

    python3 deploy/validate.py [--no-tools] [ROOT]
    ROOT: a copy of the repository (default: this one); --no-tools: skip docker-compose and
    promtool (deploy/validate_selftest.py runs it so on broken copies).

Exit status 1 with one line per problem.
"""
import base64
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

import yaml

args = sys.argv[1:]
NO_TOOLS = "--no-tools" in args
args = [a for a in args if a != "--no-tools"]
ROOT = pathlib.Path(args[0]).resolve() if args else pathlib.Path(__file__).resolve().parent.parent
problems = []
# Warren's own configuration: its routes and its drain timeout, which the manifests must follow.
CONFIG = tomllib.loads((ROOT / "config" / "default.toml").read_text())
DRAIN_TIMEOUT_S = CONFIG["consumer"]["drain_timeout_ms"] / 1000


def check(cond, message):
    if not cond:
        problems.append(message)


# docker-compose.yml
compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
services = compose.get("services", {})
for name in ["rabbitmq", "consumer-resize", "consumer-classify", "consumer-checksum", "console", "producer", "prometheus",
             "grafana"]:
    check(name in services, f"compose: service {name} missing")


def runs_console(entrypoint, command):
    """Whether a container runs warren-console (the image's entrypoint is warren-consumer)."""
    words = [w for part in (entrypoint, command) for w in (part if isinstance(part, list) else str(part or "").split())]
    return bool(words) and str(words[0]).rsplit("/", 1)[-1] == "warren-console"


def console_port(addr):
    """The port of a console.addr that other hosts reach (0.0.0.0:P or [::]:P), else None."""
    host, _, port = str(addr or "").rpartition(":")
    return int(port) if host in ("0.0.0.0", "[::]") and port.isdigit() else None


def sqlite_dir(url):
    """The directory of a sqlite:// database's file, or None for another database."""
    url = str(url or "")
    if not url.startswith("sqlite:"):
        return None
    path = url.removeprefix("sqlite://").removeprefix("sqlite:").split("?")[0]
    return str(pathlib.PurePosixPath(path).parent) if path.startswith("/") else ""


CONSUMER_IMAGE = (services.get("consumer-resize") or {}).get("image")
compose_consoles = {}  # service name -> console port
for name, svc in services.items():
    for vol in svc.get("volumes", []):
        src = vol.split(":")[0]
        if src.startswith("./"):
            check((ROOT / src).exists(), f"compose: {name} mounts {src}, which does not exist")
    if name.startswith("consumer-"):
        env = svc.get("environment", {})
        check("WARREN__CONSUMER__KINDS" in env, f"compose: {name} names no kinds")
        grace = svc.get("stop_grace_period", "10s")
        check(int(grace.rstrip("s")) > DRAIN_TIMEOUT_S, f"compose: {name} stop_grace_period {grace} <= drain timeout")
        check("healthcheck" in svc, f"compose: {name} has no healthcheck")
        check("replicas" in svc.get("deploy", {}), f"compose: {name} sets no replicas")
    if runs_console(svc.get("entrypoint"), svc.get("command")):
        # warren-console: the consumers' image, reachable, its SQLite file on a named volume,
        # one replica, the token never written in the file.
        env = svc.get("environment", {})
        env = env if isinstance(env, dict) else dict(str(e).split("=", 1) for e in env if "=" in str(e))
        check(svc.get("image") == CONSUMER_IMAGE, f"compose: {name} runs image {svc.get('image')!r}, not the consumers' {CONSUMER_IMAGE!r} (which carries warren-console)")
        check("WARREN__BROKER__URL" in env, f"compose: {name} has no WARREN__BROKER__URL")
        port = console_port(env.get("WARREN__CONSOLE__ADDR"))
        check(port is not None, f"compose: {name}: WARREN__CONSOLE__ADDR {env.get('WARREN__CONSOLE__ADDR')!r} does not listen on 0.0.0.0:<port> "
                                "(console.addr's default 127.0.0.1 is out of reach of the port, Prometheus and the healthcheck)")
        if port is not None:
            compose_consoles[name] = port
            published = [str(x) for x in svc.get("ports", [])]
            check(any(x == str(port) or x.endswith(f":{port}") for x in published), f"compose: {name} does not publish port {port}")
            check(f"/{port}" in str((svc.get("healthcheck") or {}).get("test")) and "/readyz" in str((svc.get("healthcheck") or {}).get("test")),
                  f"compose: {name} has no healthcheck on /readyz of port {port}")
        db = env.get("WARREN__CONSOLE__DATABASE_URL")
        check(db is not None, f"compose: {name}: WARREN__CONSOLE__DATABASE_URL not set (the default is a file in the container's working directory, lost with the container)")
        folder = sqlite_dir(db)
        if folder is not None:
            mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in svc.get("volumes", []) if isinstance(v, str) and ":" in v}
            volume = mounts.get(folder)
            check(volume is not None and not volume.startswith((".", "/")) and volume in (compose.get("volumes") or {}),
                  f"compose: {name}: its SQLite file is in {folder or 'the working directory'}, which is no named volume of the file")
            check(svc.get("deploy", {}).get("replicas", 1) == 1, f"compose: {name}: SQLite takes one console; {svc.get('deploy', {}).get('replicas')} replicas need PostgreSQL")
        token = env.get("WARREN__CONSOLE__TOKEN")
        check(token is None or str(token) == "" or str(token).startswith("${"),
              f"compose: {name}: WARREN__CONSOLE__TOKEN is written in the file; take it from the environment (${{WARREN_CONSOLE_TOKEN:-}})")
plugins = (ROOT / "deploy/rabbitmq/enabled_plugins").read_text()
check("rabbitmq_prometheus" in plugins and "rabbitmq_management" in plugins, "rabbitmq: plugins not enabled")
if NO_TOOLS:
    pass
elif shutil.which("docker-compose"):
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
# cargo reads every workspace member's manifest, so the build stage copies each of them.
copied = re.findall(r"^COPY (\S+) \S+$", dockerfile, re.MULTILINE)
for member in tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]:
    check(any(member == c or member.startswith(c + "/") for c in copied), f"Dockerfile: workspace member {member} is not copied into the build (cargo cannot load the workspace)")
check(re.search(r"cargo build [^\n]*-p warren-console\b", dockerfile) and "target/release/warren-console" in dockerfile,
      "Dockerfile: warren-console is not built and copied into the image (the console services run it)")

# Prometheus
prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
jobs = {j["job_name"]: j for j in prom.get("scrape_configs", [])}
check("warren-consumer" in jobs and "rabbitmq" in jobs, "prometheus: consumer or rabbitmq job missing")
names = [n for j in jobs.values() for sd in j.get("dns_sd_configs", []) for n in sd.get("names", [])]
for n in names:
    check(n in services, f"prometheus: scrapes {n}, which is not a compose service")
static = [t for j in jobs.values() for sc in j.get("static_configs", []) for t in sc.get("targets", [])]
for t in static:
    check(t.rsplit(":", 1)[0] in services, f"prometheus: scrapes {t}, which is not a compose service")
for name, port in compose_consoles.items():
    check(f"{name}:{port}" in static, f"prometheus: does not scrape the console ({name}:{port})")

if NO_TOOLS:
    pass
elif shutil.which("promtool"):
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
    if p.get("type") == "row":  # a row groups the panels after it; it has no query
        check(not p.get("targets"), f"dashboard: row {p.get('title')} has queries")
        continue
    check(all(t.get("expr") for t in p.get("targets", [])) and p.get("targets"), f"dashboard: panel {p.get('title')} has no query")
check(any(p.get("type") == "row" and p.get("title") == "Console" for p in dash.get("panels", [])), "dashboard: no row Console")
# The JSON is generated: a hand edit would be lost the next time make_dashboard.py runs.
r = subprocess.run([sys.executable, str(ROOT / "deploy/grafana/make_dashboard.py"), "--check"], capture_output=True, text=True)
check(r.returncode == 0, "dashboard: deploy/grafana/dashboards/warren.json is not what deploy/grafana/make_dashboard.py writes "
                         f"(run it): {(r.stdout + r.stderr).strip()}")
for f in (ROOT / "deploy/grafana/provisioning").rglob("*.yml"):
    yaml.safe_load(f.read_text())

# Kubernetes: every object except KEDA's against Kubernetes' own OpenAPI schemas (the strict ones:
# an unknown field is an error), as shipped by PyPI's kubernetes-validate; KEDA's ScaledObject and
# TriggerAuthentication against the fields KEDA documents (ScaledObject spec and the RabbitMQ
# scaler, KEDA 2.x); then what Warren needs of them and the references between them.
# The newest Kubernetes the package ships, and its oldest: the manifests must apply to both.
KUBERNETES_VERSIONS = ("1.37", "1.25")
K8S = ROOT / "deploy/kubernetes"


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; kubectl refuses them. So do we."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v):
    try:
        return isinstance(v, str) and float(v) == float(v) and float(v) not in (float("inf"), float("-inf"))
    except ValueError:
        return False


def unknown_keys(obj, allowed, where):
    if isinstance(obj, dict):
        for k in obj:
            check(k in allowed, f"{where}: unknown field {k!r} (KEDA documents {', '.join(sorted(allowed))})")


def yaml_error(e):
    mark = getattr(e, "problem_mark", None)
    if getattr(e, "problem", None) and mark is not None:
        return f"{e.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(e).split())


def secret_value(secret, key):
    """The value of a Secret's key, or None when it cannot be read (absent, not base64)."""
    if key in (secret.get("stringData") or {}):
        return str(secret["stringData"][key])
    try:
        return base64.b64decode((secret.get("data") or {})[key], validate=True).decode()
    except (KeyError, ValueError, TypeError):
        return None


routes = {r["queue"]: r["kind"] for r in CONFIG.get("routes", [])}  # work queue -> job kind
# The example worker's kinds (examples/worker: their `const NAME`s), each on its default queue
# warren.<kind>; its manifests (examples/*/deploy/) are checked with deploy/kubernetes's.
for source in sorted(ROOT.glob("examples/*/src/*.rs")):
    for kind in re.findall(r'const NAME: &\'static str = "([^"]+)";', source.read_text()):
        routes[f"warren.{kind}"] = kind
docs = []  # (label, document) of every Kubernetes object in deploy/kubernetes and examples/*/deploy
for f in sorted(K8S.glob("*.yaml")) + sorted(ROOT.glob("examples/*/deploy/*.yaml")):
    if f.name == "kustomization.yaml":
        continue
    try:
        loaded = list(yaml.load_all(f.read_text(), Loader=UniqueKeyLoader))
    except yaml.YAMLError as e:
        check(False, f"k8s: {f.name}: not valid YAML: {yaml_error(e)}")
        continue
    for i, d in enumerate(loaded):
        if d is None:
            continue
        if not (isinstance(d, dict) and all(isinstance(d.get(k), str) for k in ("apiVersion", "kind"))
                and isinstance(d.get("metadata"), dict) and isinstance(d["metadata"].get("name"), str)):
            check(False, f"k8s: {f.name}: document {i + 1} has no apiVersion, kind and metadata.name")
            continue
        docs.append((f"{f.name}: {d['kind']} {d['metadata']['name']}", d))


def ns(d):
    return d["metadata"].get("namespace", "default")


objects = {}  # (kind, namespace, name) -> document
for label, d in docs:
    key = (d["kind"], ns(d), d["metadata"]["name"])
    check(key not in objects, f"k8s: {label}: defined twice")
    objects[key] = d


def find(kind, namespace, name):
    return objects.get((kind, namespace, name))


# Kubernetes' own schemas
try:
    import kubernetes_validate
except ImportError:
    kubernetes_validate = None
    check(False, "k8s schema: kubernetes-validate is not installed (python3 -m pip install kubernetes-validate)")
if kubernetes_validate:
    schema_checked = 0
    for label, d in docs:
        if d["apiVersion"].split("/")[0] == "keda.sh":
            continue  # no schema ships for KEDA's custom resources: checked below
        failures = {}  # one problem per distinct failure, with the versions it fails on
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = ".".join(str(p) for p in e.path) or "(top level)"
                failures.setdefault(f"{where}: {e.message}", []).append(version)
            except kubernetes_validate.SchemaNotFoundError:
                failures.setdefault(f"no {d['kind']} in API {d['apiVersion']}", []).append(version)
        for what, versions in failures.items():
            check(False, f"k8s schema {'/'.join(versions)}: {label}: {what}")
        schema_checked += 1
    print(f"kubernetes-validate {kubernetes_validate.__version__}: {schema_checked} object(s) checked against "
          f"Kubernetes {' and '.join(KUBERNETES_VERSIONS)} (strict)")

# Deployments: Warren's consumers, and its console (a container whose command is warren-console)
deployments = {(ns(d), d["metadata"]["name"]): (label, d) for label, d in docs if d["kind"] == "Deployment"}
scaled_targets = {}  # (namespace, Deployment name) -> ScaledObject labels
deployment_kinds = {}  # (namespace, Deployment name) -> job kinds it consumes
consoles = {}  # (namespace, Deployment name) -> whether it keeps its events in SQLite
CONSUMER_IMAGES = set()  # the images of deploy/kubernetes's consumers, which carry warren-console too
for label, d in docs:
    if d["kind"] == "Deployment" and label.startswith("consumer-"):
        for c in ((((d.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []):
            if isinstance(c, dict):
                CONSUMER_IMAGES.add(c.get("image"))


def container_port(c, port):
    """A probe's or a Service's port (a number or a container port's name) as a number."""
    if is_int(port):
        return port
    named = {p.get("name"): p.get("containerPort") for p in c.get("ports") or [] if isinstance(p, dict)}
    return named.get(port)


def check_console(key, label, d, pod, c, env):
    """What warren-console needs of its Deployment; the Service in front of it."""
    check(c.get("image") in CONSUMER_IMAGES, f"k8s: {label}: image {c.get('image')!r} is not the consumers' image ({', '.join(sorted(map(str, CONSUMER_IMAGES)))}), which carries warren-console")
    addr = (env.get("WARREN__CONSOLE__ADDR") or {}).get("value")
    port = console_port(addr)
    check(port is not None, f"k8s: {label}: WARREN__CONSOLE__ADDR {addr!r} does not listen on 0.0.0.0:<port> "
                            "(console.addr's default 127.0.0.1 is out of reach of the probes, the Service and Prometheus)")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        check(get.get("path") == path, f"k8s: {label}: {probe.removesuffix('Probe')} is not {path}")
        check(port is None or get.get("path") != path or container_port(c, get.get("port")) == port,
              f"k8s: {label}: {probe} asks port {get.get('port')!r}, not the console's {port}")
    annotations = (((d.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("annotations") or {}
    check(annotations.get("prometheus.io/scrape") == "true" and annotations.get("prometheus.io/port") == str(port),
          f"k8s: {label}: pods not annotated for Prometheus on the console's port (prometheus.io/scrape \"true\", prometheus.io/port \"{port}\")")
    check("secretKeyRef" in ((env.get("WARREN__BROKER__URL") or {}).get("valueFrom") or {}), f"k8s: {label}: broker URL not from a Secret")
    token = env.get("WARREN__CONSOLE__TOKEN")
    check(token is None or "secretKeyRef" in (token.get("valueFrom") or {}),
          f"k8s: {label}: WARREN__CONSOLE__TOKEN is inline; it comes from a Secret (valueFrom.secretKeyRef)")
    db = env.get("WARREN__CONSOLE__DATABASE_URL") or {}
    url = db.get("value")
    check(db, f"k8s: {label}: WARREN__CONSOLE__DATABASE_URL not set (the default is a file in the container, lost with the pod)")
    check(not re.match(r"^postgres(ql)?://[^/@:]+:[^/@]+@", str(url or "")),
          f"k8s: {label}: WARREN__CONSOLE__DATABASE_URL holds a password inline; take the URL from a Secret")
    folder = sqlite_dir(url)
    consoles[key] = folder is not None
    if folder is not None:
        spec = d.get("spec") or {}
        check(spec.get("replicas", 1) == 1, f"k8s: {label}: {spec.get('replicas')} replicas on one SQLite file; SQLite takes one console (PostgreSQL for more)")
        check((spec.get("strategy") or {}).get("type") == "Recreate",
              f"k8s: {label}: SQLite: strategy is not Recreate (a rolling update runs two consoles on the file)")
        claims = {v.get("name"): (v.get("persistentVolumeClaim") or {}).get("claimName") for v in pod.get("volumes") or []
                  if isinstance(v, dict) and v.get("persistentVolumeClaim")}
        mounted = [m.get("name") for m in c.get("volumeMounts") or [] if isinstance(m, dict) and m.get("mountPath") == folder]
        claim = next((claims[m] for m in mounted if m in claims), None)
        check(claim is not None, f"k8s: {label}: its SQLite file is in {folder or 'the working directory'}, which is not a PersistentVolumeClaim's mount (lost with the pod)")
        check(claim is None or find("PersistentVolumeClaim", key[0], claim) is not None,
              f"k8s: {label}: PersistentVolumeClaim {claim!r} is not in these files")
    labels = (((d.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
    served = False
    for _, svc in docs:
        if svc["kind"] != "Service" or ns(svc) != key[0]:
            continue
        selector = (svc.get("spec") or {}).get("selector") or {}
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            served |= any(container_port(c, p.get("targetPort", p.get("port"))) == port
                          for p in (svc.get("spec") or {}).get("ports") or [] if isinstance(p, dict))
    check(served, f"k8s: {label}: no Service in these files sends its port {port} to the console's pods")


for key, (label, d) in deployments.items():
    pod = ((d.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = [c for c in pod.get("containers") or [] if isinstance(c, dict)] or [{}]
    c = containers[0]
    env = {e.get("name"): e for e in c.get("env") or [] if isinstance(e, dict)}
    if runs_console(c.get("command"), c.get("args")):
        check_console(key, label, d, pod, c, env)
    else:
        kinds = [k.strip() for k in str(env.get("WARREN__CONSUMER__KINDS", {}).get("value", "")).split(",") if k.strip()]
        deployment_kinds[key] = kinds
        check(kinds, f"k8s: {label}: names no kinds (WARREN__CONSUMER__KINDS)")
        for k in kinds:
            check(k in routes.values(), f"k8s: {label}: consumes {k!r}, which is no route in config/default.toml")
        check(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", f"k8s: {label}: liveness is not /healthz")
        check(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", f"k8s: {label}: readiness is not /readyz")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        check(not is_int(grace) or grace > DRAIN_TIMEOUT_S, f"k8s: {label}: grace period {grace} s <= drain timeout")
        check("secretKeyRef" in (env.get("WARREN__BROKER__URL", {}).get("valueFrom") or {}), f"k8s: {label}: broker URL not from a Secret")
    # What the API server checks beyond the schema, and references to the other files.
    selector = ((d.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    template_labels = (((d.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
    for k, v in selector.items():
        check(template_labels.get(k) == v, f"k8s: {label}: selector {k}={v} does not match the pod template's labels")
    for c in containers:
        for e in c.get("env") or []:
            ref = ((e or {}).get("valueFrom") or {}).get("secretKeyRef")
            if isinstance(ref, dict) and not ref.get("optional"):
                s = find("Secret", key[0], ref.get("name"))
                check(s is not None, f"k8s: {label}: env {e.get('name')} reads Secret {ref.get('name')!r}, which is not in these files")
                check(s is None or ref.get("key") in {**(s.get("data") or {}), **(s.get("stringData") or {})},
                      f"k8s: {label}: env {e.get('name')} reads key {ref.get('key')!r}, which Secret {ref.get('name')} does not have")
    config_volumes = {}
    for v in pod.get("volumes") or []:
        cm = (v or {}).get("configMap")
        if isinstance(cm, dict):
            m = find("ConfigMap", key[0], cm.get("name"))
            check(m is not None, f"k8s: {label}: volume {v.get('name')} is ConfigMap {cm.get('name')!r}, which is not in these files")
            config_volumes[v.get("name")] = m
    for c in containers:
        for mount in c.get("volumeMounts") or []:
            m = config_volumes.get((mount or {}).get("name"))
            if m is not None and mount.get("subPath"):
                check(mount["subPath"] in (m.get("data") or {}),
                      f"k8s: {label}: mounts {mount['subPath']!r} of ConfigMap {m['metadata']['name']}, which has no such key")
for queue, kind in routes.items():
    check(any(kind in ks for ks in deployment_kinds.values()), f"k8s: no Deployment consumes {kind} (queue {queue})")

# KEDA (keda.sh/v1alpha1), from its documentation: ScaledObject specification and the RabbitMQ
# scaler's trigger specification and authentication parameters.
SCALED_OBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
                      "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"}
SCALE_TARGET_REF = {"apiVersion", "kind", "name", "namePrefix", "labelSelector", "envSourceContainerName"}
FALLBACK = {"failureThreshold", "replicas", "behavior"}
FALLBACK_BEHAVIORS = {"static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower", "scalingModifiers"}
ADVANCED = {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig", "scalingModifiers"}
TRIGGER = {"type", "metadata", "name", "useCachedMetrics", "authenticationRef", "metricType"}
AUTHENTICATION_REF = {"name", "kind"}
RABBITMQ_METADATA = {"host", "protocol", "mode", "value", "activationValue", "queueName", "vhostName", "hostFromEnv",
                     "usernameFromEnv", "passwordFromEnv", "unsafeSsl", "timeout", "useRegex", "pageSize", "operation",
                     "excludeUnacknowledged", "queueLength"}
RABBITMQ_MODES = {"QueueLength", "MessageRate", "DeliverGetRate", "PublishedToDeliveredRatio", "ExpectedQueueConsumptionTime"}
RABBITMQ_PROTOCOLS = {"amqp", "http", "auto"}
RABBITMQ_AUTH_PARAMETERS = {"host", "username", "password", "vhostName", "tls", "ca", "cert", "key"}
SECRET_TARGET_REF = {"parameter", "name", "key"}

for label, d in docs:
    if d["apiVersion"].split("/")[0] != "keda.sh":
        continue
    check(d["apiVersion"] == "keda.sh/v1alpha1", f"keda: {label}: apiVersion {d['apiVersion']} (KEDA's is keda.sh/v1alpha1)")
    if d["kind"] not in ("ScaledObject", "TriggerAuthentication"):
        check(False, f"keda: {label}: kind {d['kind']} is not checked here (ScaledObject, TriggerAuthentication)")
        continue
    unknown_keys(d, {"apiVersion", "kind", "metadata", "spec"}, f"keda: {label}")
    for k in ("labels", "annotations"):
        m = d["metadata"].get(k, {})
        check(isinstance(m, dict) and all(isinstance(v, str) for v in m.values()), f"keda: {label}: metadata.{k} is not a map of strings")
    spec = d.get("spec")
    if not isinstance(spec, dict):
        check(False, f"keda: {label}: no spec")
        continue
    if d["kind"] == "TriggerAuthentication":
        for k in spec:
            check(k == "secretTargetRef", f"keda: {label}: spec.{k}: Warren's connection string comes from a Secret (spec.secretTargetRef only)")
        refs = spec.get("secretTargetRef")
        check(isinstance(refs, list) and refs, f"keda: {label}: spec.secretTargetRef is not a non-empty list")
        parameters = []
        for i, r in enumerate(refs if isinstance(refs, list) else []):
            where = f"keda: {label}: spec.secretTargetRef[{i}]"
            if not isinstance(r, dict):
                check(False, f"{where}: not a mapping of parameter, name, key")
                continue
            unknown_keys(r, SECRET_TARGET_REF, where)
            for k in ("parameter", "name", "key"):
                check(isinstance(r.get(k), str) and r[k], f"{where}: {k} missing or not a string")
            parameters.append(r.get("parameter"))
            check(r.get("parameter") in RABBITMQ_AUTH_PARAMETERS, f"{where}: parameter {r.get('parameter')!r} is none of the RabbitMQ scaler's ({', '.join(sorted(RABBITMQ_AUTH_PARAMETERS))})")
            s = find("Secret", ns(d), r.get("name"))
            check(s is not None, f"{where}: Secret {r.get('name')!r} is not in these files")
            check(s is None or r.get("key") in {**(s.get("data") or {}), **(s.get("stringData") or {})},
                  f"{where}: Secret {r.get('name')} has no key {r.get('key')!r}")
        check(len(parameters) == len(set(parameters)), f"keda: {label}: a parameter is given twice in spec.secretTargetRef")
        check("host" in parameters, f"keda: {label}: gives no host parameter (the connection string) from a Secret")
        continue

    # ScaledObject
    unknown_keys(spec, SCALED_OBJECT_SPEC, f"keda: {label}: spec")
    for k in ("pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount", "minReplicaCount", "maxReplicaCount"):
        if k in spec:
            check(is_int(spec[k]) and spec[k] >= 0, f"keda: {label}: spec.{k} {spec[k]!r} is not a non-negative integer")
    lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if is_int(lo) and is_int(hi):
        check(lo <= hi, f"keda: {label}: minReplicaCount {lo} > maxReplicaCount {hi}")
        check(hi >= 1, f"keda: {label}: maxReplicaCount {hi} < 1")
        idle = spec.get("idleReplicaCount")
        check(idle is None or not is_int(idle) or idle < lo, f"keda: {label}: idleReplicaCount {idle} is not below minReplicaCount {lo}")
    if "fallback" in spec:
        fb = spec["fallback"] if isinstance(spec["fallback"], dict) else {}
        unknown_keys(fb, FALLBACK, f"keda: {label}: spec.fallback")
        for k in ("failureThreshold", "replicas"):
            check(is_int(fb.get(k)) and fb[k] >= 0, f"keda: {label}: spec.fallback.{k} missing or not a non-negative integer")
        check(fb.get("behavior", "static") in FALLBACK_BEHAVIORS, f"keda: {label}: spec.fallback.behavior {fb.get('behavior')!r} is none of {', '.join(sorted(FALLBACK_BEHAVIORS))}")
    if "advanced" in spec:
        unknown_keys(spec["advanced"], ADVANCED, f"keda: {label}: spec.advanced")

    ref = spec.get("scaleTargetRef")
    target = None
    if not isinstance(ref, dict):
        check(False, f"keda: {label}: spec.scaleTargetRef missing")
    else:
        unknown_keys(ref, SCALE_TARGET_REF, f"keda: {label}: spec.scaleTargetRef")
        check(ref.get("apiVersion", "apps/v1") == "apps/v1" and ref.get("kind", "Deployment") == "Deployment",
              f"keda: {label}: spec.scaleTargetRef is not an apps/v1 Deployment")
        check(isinstance(ref.get("name"), str), f"keda: {label}: spec.scaleTargetRef.name missing (Warren names its Deployments)")
        target = deployments.get((ns(d), ref.get("name")))
        check(target is not None, f"keda: {label}: spec.scaleTargetRef.name {ref.get('name')!r} is no Deployment in these files")
        if target is not None:
            scaled_targets.setdefault((ns(d), ref["name"]), []).append(label)
            names = [c.get("name") for c in (((target[1].get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
                     if isinstance(c, dict)]
            check(ref.get("envSourceContainerName") in (None, *names),
                  f"keda: {label}: spec.scaleTargetRef.envSourceContainerName {ref.get('envSourceContainerName')!r} is no container of {ref['name']}")

    triggers = spec.get("triggers")
    check(isinstance(triggers, list) and triggers, f"keda: {label}: spec.triggers is not a non-empty list")
    for i, t in enumerate(triggers if isinstance(triggers, list) else []):
        where = f"keda: {label}: trigger {i}"
        if not isinstance(t, dict):
            check(False, f"{where}: not a mapping")
            continue
        unknown_keys(t, TRIGGER, where)
        check(t.get("type") == "rabbitmq", f"{where}: type {t.get('type')!r}: Warren scales on its RabbitMQ queues (type rabbitmq)")
        check(t.get("metricType", "AverageValue") in ("AverageValue", "Value"), f"{where}: metricType {t.get('metricType')!r} is neither AverageValue nor Value")
        check(isinstance(t.get("useCachedMetrics", False), bool), f"{where}: useCachedMetrics is not true or false")
        check(isinstance(t.get("name", ""), str), f"{where}: name is not a string")
        md = t.get("metadata")
        if not isinstance(md, dict):
            check(False, f"{where}: no metadata")
            md = {}
        unknown_keys(md, RABBITMQ_METADATA, f"{where}: metadata")
        for k, v in md.items():
            check(isinstance(v, str), f"{where}: metadata.{k} {v!r} is not a string (KEDA's metadata is strings only: quote it)")
        check("host" not in md, f"{where}: metadata.host: the connection string is inline; it belongs in a Secret, through a TriggerAuthentication")
        check("hostFromEnv" not in md, f"{where}: metadata.hostFromEnv: the connection string comes from a TriggerAuthentication, not the container's environment")
        check("queueLength" not in md, f"{where}: metadata.queueLength is deprecated (mode: QueueLength and value)")
        queue = md.get("queueName")
        check(queue in routes, f"{where}: metadata.queueName {queue!r} is none of Warren's work queues ({', '.join(sorted(routes))})")
        if queue in routes and target is not None:
            kinds = deployment_kinds.get((ns(d), ref["name"]), [])
            check(routes[queue] in kinds, f"{where}: queue {queue} holds {routes[queue]} jobs, which {ref['name']} does not consume ({', '.join(kinds)})")
        check(md.get("useRegex", "false") == "false", f"{where}: metadata.useRegex: queueName must name one queue")
        mode = md.get("mode")
        check(mode in RABBITMQ_MODES, f"{where}: metadata.mode {mode!r} is none of {', '.join(sorted(RABBITMQ_MODES))}")
        protocol = md.get("protocol", "auto")
        check(protocol in RABBITMQ_PROTOCOLS, f"{where}: metadata.protocol {protocol!r} is none of amqp, http, auto")
        check(mode in (None, "QueueLength") or protocol == "http", f"{where}: mode {mode} needs protocol http (KEDA reads rates from the management API)")
        check(protocol == "http" or mode != "QueueLength",
              f"{where}: protocol {protocol}: QueueLength over AMQP counts only ready messages, so a fleet busy with "
              "full prefetches looks idle and is scaled down mid-job (kedacore/keda#5050): use protocol http, whose "
              "QueueLength counts ready and unacked messages")
        check(md.get("excludeUnacknowledged", "false") != "true",
              f"{where}: metadata.excludeUnacknowledged \"true\" counts only ready messages: jobs held in prefetch would not count")
        value = md.get("value")
        check(is_number(value) and float(value) > 0, f"{where}: metadata.value {value!r} is not a positive number in a string")
        if "activationValue" in md:
            check(is_number(md["activationValue"]) and float(md["activationValue"]) >= 0, f"{where}: metadata.activationValue {md['activationValue']!r} is not a number >= 0")
        for k in ("unsafeSsl", "excludeUnacknowledged"):
            check(md.get(k, "false") in ("true", "false"), f"{where}: metadata.{k} {md.get(k)!r} is neither \"true\" nor \"false\"")
        for k in ("timeout", "pageSize"):
            check(k not in md or str(md[k]).isdigit(), f"{where}: metadata.{k} {md.get(k)!r} is not a whole number")
        check(md.get("operation", "sum") in ("sum", "max", "avg"), f"{where}: metadata.operation {md.get('operation')!r} is none of sum, max, avg")

        auth = t.get("authenticationRef")
        if not isinstance(auth, dict):
            check(False, f"{where}: no authenticationRef: the connection string comes from a TriggerAuthentication")
            continue
        unknown_keys(auth, AUTHENTICATION_REF, f"{where}: authenticationRef")
        auth_kind = auth.get("kind", "TriggerAuthentication")
        ta = find(auth_kind, ns(d) if auth_kind == "TriggerAuthentication" else "default", auth.get("name"))
        check(ta is not None, f"{where}: authenticationRef {auth_kind} {auth.get('name')!r} is not in these files")
        if ta is None:
            continue
        host_refs = [r for r in (ta.get("spec") or {}).get("secretTargetRef") or [] if isinstance(r, dict) and r.get("parameter") == "host"]
        for r in host_refs:
            s = find("Secret", ns(ta), r.get("name"))
            url = secret_value(s, r.get("key")) if s else None
            if url is None:
                continue
            check("," not in url, f"{where}: host from Secret {r.get('name')} key {r.get('key')} is a list; KEDA reads one URL")
            schemes = {"amqp": ("amqp://", "amqps://"), "http": ("http://", "https://")}.get(protocol, ("amqp://", "amqps://", "http://", "https://"))
            check(url.startswith(schemes), f"{where}: host from Secret {r.get('name')} key {r.get('key')} is not a {'/'.join(x.rstrip(':/') for x in schemes)} URL (protocol {protocol})")

for key, (label, d) in deployments.items():
    targets = scaled_targets.get(key, [])
    if key in consoles:
        check(not (targets and consoles[key]), f"k8s: {label}: scaled by {'; '.join(targets)}, on one SQLite file (PostgreSQL for several consoles)")
        continue
    check(targets, f"k8s: {label}: has no KEDA ScaledObject")
    check(len(targets) <= 1, f"k8s: {label}: scaled by {len(targets)} ScaledObjects ({'; '.join(targets)}); KEDA takes one")

# kustomization.yaml: a Kustomize file, not a Kubernetes object
try:
    kustom = yaml.load((K8S / "kustomization.yaml").read_text(), Loader=UniqueKeyLoader) or {}
except OSError as e:
    kustom = {}
    check(False, f"kustomization: {e}")
except yaml.YAMLError as e:
    kustom = {}
    check(False, f"kustomization: not valid YAML: {yaml_error(e)}")
check(kustom.get("apiVersion") == "kustomize.config.k8s.io/v1beta1" and kustom.get("kind") == "Kustomization",
      "kustomization: not a kustomize.config.k8s.io/v1beta1 Kustomization")
resources = kustom.get("resources") or []
for r in resources:
    check((K8S / r).exists(), f"kustomization: {r} missing")
check(len(resources) == len(set(resources)), "kustomization: a resource is listed twice")
for f in sorted(K8S.glob("*.yaml")):
    check(f.name == "kustomization.yaml" or f.name in resources, f"kustomization: {f.name} is not in resources (kubectl apply -k would leave it out)")

for p in problems:
    print("deploy:", p)
print(f"deploy: {len(problems)} problem(s) in compose, Dockerfile, Prometheus, Grafana, Kubernetes files")
sys.exit(1 if problems else 0)
