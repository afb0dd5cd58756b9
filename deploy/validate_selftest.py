#!/usr/bin/env python3
"""Proves deploy/validate.py's checks can fail: each case copies the files it reads into a temporary
directory, breaks one thing there, runs validate.py on the copy and expects exit status 1 with
the case's problem line. The unbroken copy must pass. The repository's files are never touched.
docker-compose and promtool are left out of these runs (validate.py --no-tools): CI runs them on
the real files.

    python3 deploy/validate_selftest.py
"""
import concurrent.futures
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
VALIDATE = ROOT / "deploy" / "validate.py"
K = "deploy/kubernetes/"

# (name, [(file, text to find, replacement)], a substring validate.py must print)
CASES = [
    ("Deployment field misspelled (strict schema)",
     [(K + "consumer-resize.yaml", "  replicas: 2\n", "  replica: 2\n")],
     "k8s schema 1.37/1.25: consumer-resize.yaml: Deployment warren-consumer-resize: spec: Additional properties are not allowed ('replica' was unexpected)"),
    ("Deployment field of the wrong type (schema)",
     [(K + "consumer-resize.yaml", "terminationGracePeriodSeconds: 45", 'terminationGracePeriodSeconds: "45"')],
     "spec.template.spec.terminationGracePeriodSeconds: '45' is not of type 'integer'"),
    ("Deployment in an API that does not exist",
     [(K + "consumer-checksum.yaml", "apiVersion: apps/v1\nkind: Deployment", "apiVersion: apps/v1beta1\nkind: Deployment")],
     "Deployment warren-consumer-checksum: no Deployment in API apps/v1beta1"),
    ("ConfigMap with an unknown field (strict schema)",
     [(K + "config.yaml", "data:\n  production.toml", "dta:\n  production.toml")],
     "ConfigMap warren-config: (top level): Additional properties are not allowed ('dta' was unexpected)"),
    ("duplicate key in a manifest",
     [(K + "consumer-classify.yaml", "  replicas: 1\n", "  replicas: 1\n  replicas: 3\n")],
     "found duplicate key 'replicas'"),
    ("selector does not match the pod template",
     [(K + "consumer-checksum.yaml", "matchLabels: {app.kubernetes.io/name: warren-consumer, warren/kind: checksum}",
       "matchLabels: {app.kubernetes.io/name: warren-consumer, warren/kind: sha}")],
     "selector warren/kind=sha does not match the pod template's labels"),
    ("broker URL from a Secret key that does not exist",
     [(K + "consumer-resize.yaml", "key: WARREN__BROKER__URL}", "key: BROKER_URL}")],
     "env WARREN__BROKER__URL reads key 'BROKER_URL', which Secret warren-broker does not have"),
    ("ScaledObject mode misspelled",
     [(K + "consumer-resize.yaml", "mode: QueueLength", "mode: Length")],
     "metadata.mode 'Length' is none of"),
    ("connection string inline in trigger metadata",
     [(K + "consumer-resize.yaml", "        protocol: http\n",
       "        protocol: http\n        host: http://warren:change-me@rabbitmq.rabbitmq.svc:15672/%2f\n")],
     "metadata.host: the connection string is inline"),
    ("queueName not one of Warren's queues",
     [(K + "consumer-classify.yaml", "queueName: warren.ml.classify", "queueName: warren.classify")],
     "metadata.queueName 'warren.classify' is none of Warren's work queues"),
    ("queueName of a kind the Deployment does not consume",
     [(K + "consumer-resize.yaml", "queueName: warren.image.resize", "queueName: warren.checksum")],
     "queue warren.checksum holds checksum jobs, which warren-consumer-resize does not consume"),
    ("authenticationRef to a missing TriggerAuthentication",
     [(K + "consumer-checksum.yaml", "        name: warren-rabbitmq", "        name: warren-rabbit")],
     "authenticationRef TriggerAuthentication 'warren-rabbit' is not in these files"),
    ("trigger without authenticationRef",
     [(K + "consumer-checksum.yaml", "      authenticationRef:\n        name: warren-rabbitmq\n", "")],
     "no authenticationRef: the connection string comes from a TriggerAuthentication"),
    ("trigger value not a number",
     [(K + "consumer-resize.yaml", 'value: "20"', 'value: "twenty"')],
     "metadata.value 'twenty' is not a positive number in a string"),
    ("trigger value unquoted (KEDA metadata is strings)",
     [(K + "consumer-resize.yaml", 'value: "20"', "value: 20")],
     "metadata.value 20 is not a string"),
    ("trigger protocol unknown",
     [(K + "consumer-resize.yaml", "protocol: http", "protocol: https")],
     "metadata.protocol 'https' is none of amqp, http, auto"),
    ("MessageRate over AMQP",
     [(K + "consumer-resize.yaml", "mode: QueueLength", "mode: MessageRate"),
      (K + "consumer-resize.yaml", "protocol: http", "protocol: amqp")],
     "mode MessageRate needs protocol http"),
    ("QueueLength over AMQP (ready messages only: prefetched work invisible)",
     [(K + "consumer-checksum.yaml", "protocol: http", "protocol: amqp")],
     "QueueLength over AMQP counts only ready messages"),
    ("unacked messages excluded",
     [(K + "consumer-classify.yaml", 'excludeUnacknowledged: "false"', 'excludeUnacknowledged: "true"')],
     "excludeUnacknowledged \"true\" counts only ready messages"),
    ("trigger type not rabbitmq",
     [(K + "consumer-resize.yaml", "type: rabbitmq", "type: rabbit")],
     "type 'rabbit': Warren scales on its RabbitMQ queues"),
    ("unknown key in trigger metadata",
     [(K + "consumer-resize.yaml", "queueName: warren.image.resize", "queue: warren.image.resize")],
     "metadata: unknown field 'queue'"),
    ("unknown key in ScaledObject spec",
     [(K + "consumer-classify.yaml", "  maxReplicaCount: 6", "  maxReplicas: 6")],
     "spec: unknown field 'maxReplicas'"),
    ("minReplicaCount above maxReplicaCount",
     [(K + "consumer-classify.yaml", "  minReplicaCount: 1", "  minReplicaCount: 8")],
     "minReplicaCount 8 > maxReplicaCount 6"),
    ("replica count not an integer",
     [(K + "consumer-classify.yaml", "  cooldownPeriod: 120", '  cooldownPeriod: "120"')],
     "spec.cooldownPeriod '120' is not a non-negative integer"),
    ("scaleTargetRef to a missing Deployment",
     [(K + "consumer-classify.yaml", "    name: warren-consumer-classify\n  minReplicaCount",
       "    name: warren-consumer-clasify\n  minReplicaCount")],
     "spec.scaleTargetRef.name 'warren-consumer-clasify' is no Deployment in these files"),
    ("TriggerAuthentication reads a Secret key that does not exist",
     [(K + "config.yaml", "      key: host", "      key: hostname")],
     "Secret warren-broker has no key 'hostname'"),
    ("TriggerAuthentication reads a Secret that does not exist",
     [(K + "config.yaml", "      name: warren-broker\n      key: host", "      name: warren-brokers\n      key: host")],
     "Secret 'warren-brokers' is not in these files"),
    ("TriggerAuthentication field misspelled",
     [(K + "config.yaml", "    - parameter: host", "    - paramter: host")],
     "spec.secretTargetRef[0]: unknown field 'paramter'"),
    ("TriggerAuthentication gives no host",
     [(K + "config.yaml", "    - parameter: host", "    - parameter: password")],
     "gives no host parameter (the connection string) from a Secret"),
    ("KEDA's scaler given the consumers' node list",
     [(K + "config.yaml", "      key: host", "      key: WARREN__BROKER__URL")],
     "is a list; KEDA reads one URL"),
    ("Deployment with no ScaledObject",
     [(K + "consumer-checksum.yaml", "kind: ScaledObject", "kind: ScaledJob")],
     "Deployment warren-consumer-checksum: has no KEDA ScaledObject"),
    ("manifest left out of the kustomization",
     [(K + "kustomization.yaml", "  - consumer-checksum.yaml\n", "")],
     "kustomization: consumer-checksum.yaml is not in resources"),
    ("the example worker scaled on a queue none of its kinds has",
     [("examples/worker/deploy/kubernetes.yaml", "queueName: warren.catalog.price", "queueName: warren.catalog.prices")],
     "metadata.queueName 'warren.catalog.prices' is none of Warren's work queues"),
    ("the example worker's Deployment without a readiness probe",
     [("examples/worker/deploy/kubernetes.yaml", "path: /readyz", "path: /ready")],
     "warren-example-worker: readiness is not /readyz"),
    ("compose grace period below the drain timeout (the root argument covers every file)",
     [("docker-compose.yml", "stop_grace_period: 40s", "stop_grace_period: 20s")],
     "stop_grace_period 20s <= drain timeout"),
    # warren-console: Kubernetes
    ("console on SQLite with two replicas",
     [(K + "console.yaml", "  replicas: 1\n", "  replicas: 2\n")],
     "warren-console: 2 replicas on one SQLite file"),
    ("console on SQLite replaced by a rolling update",
     [(K + "console.yaml", "  strategy: {type: Recreate}\n", "")],
     "warren-console: SQLite: strategy is not Recreate"),
    ("console's SQLite file off its PersistentVolumeClaim",
     [(K + "console.yaml", 'value: "sqlite:///data/console.db"', 'value: "sqlite:///app/console.db"')],
     "its SQLite file is in /app, which is not a PersistentVolumeClaim's mount"),
    ("console's claim not in the files",
     [(K + "console.yaml", "persistentVolumeClaim: {claimName: warren-console-data}", "persistentVolumeClaim: {claimName: console-data}")],
     "PersistentVolumeClaim 'console-data' is not in these files"),
    ("console's token inline",
     [(K + "console.yaml", "valueFrom: {secretKeyRef: {name: warren-console, key: WARREN__CONSOLE__TOKEN, optional: true}}",
       "value: s3cret")],
     "WARREN__CONSOLE__TOKEN is inline"),
    ("console listening on 127.0.0.1 (its default)",
     [(K + "console.yaml", 'value: "0.0.0.0:8470"', 'value: "127.0.0.1:8470"')],
     "WARREN__CONSOLE__ADDR '127.0.0.1:8470' does not listen on 0.0.0.0:<port>"),
    ("console's readiness probe on another path",
     [(K + "console.yaml", "path: /readyz", "path: /ready")],
     "warren-console: readiness is not /readyz"),
    ("console's probes on another port",
     [(K + "console.yaml", "httpGet: {path: /healthz, port: http}", "httpGet: {path: /healthz, port: 9464}")],
     "livenessProbe asks port 9464, not the console's 8470"),
    ("console not annotated for Prometheus on its port",
     [(K + "console.yaml", 'prometheus.io/port: "8470"', 'prometheus.io/port: "9464"')],
     "warren-console: pods not annotated for Prometheus on the console's port"),
    ("console's Service selecting other pods",
     [(K + "console.yaml", "  selector: {app.kubernetes.io/name: warren-console}", "  selector: {app.kubernetes.io/name: warren-consumer}")],
     "no Service in these files sends its port 8470 to the console's pods"),
    ("console on SQLite scaled by KEDA",
     [(K + "console.yaml", "apiVersion: v1\nkind: Service\n",
       "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: warren-console}\nspec:\n"
       "  scaleTargetRef: {name: warren-console}\n  triggers:\n    - type: rabbitmq\n"
       '      metadata: {protocol: http, queueName: warren.checksum, mode: QueueLength, value: "5"}\n'
       "      authenticationRef: {name: warren-rabbitmq}\n---\napiVersion: v1\nkind: Service\n")],
     "warren-console: scaled by console.yaml: ScaledObject warren-console, on one SQLite file"),
    ("console's image not the consumers'",
     [(K + "console.yaml", "image: warren:latest", "image: warren-console:latest")],
     "image 'warren-console:latest' is not the consumers' image"),
    ("console on PostgreSQL with the password in the manifest",
     [(K + "console.yaml", 'value: "sqlite:///data/console.db"', 'value: "postgres://warren:pw@db/warren"')],
     "WARREN__CONSOLE__DATABASE_URL holds a password inline"),
    # warren-console: compose, Prometheus, Dockerfile, dashboard
    ("compose console's SQLite file outside its volume",
     [("docker-compose.yml", "WARREN__CONSOLE__DATABASE_URL: sqlite:///data/console.db", "WARREN__CONSOLE__DATABASE_URL: sqlite:///app/console.db")],
     "compose: console: its SQLite file is in /app, which is no named volume of the file"),
    ("compose console with two replicas on SQLite",
     [("docker-compose.yml", "      - console-data:/data\n", "      - console-data:/data\n    deploy:\n      replicas: 2\n")],
     "compose: console: SQLite takes one console; 2 replicas need PostgreSQL"),
    ("compose console's token written in the file",
     [("docker-compose.yml", "WARREN__CONSOLE__TOKEN: ${WARREN_CONSOLE_TOKEN:-}", "WARREN__CONSOLE__TOKEN: s3cret")],
     "compose: console: WARREN__CONSOLE__TOKEN is written in the file"),
    ("compose console on 127.0.0.1",
     [("docker-compose.yml", "WARREN__CONSOLE__ADDR: 0.0.0.0:8470", "WARREN__CONSOLE__ADDR: 127.0.0.1:8470")],
     "compose: console: WARREN__CONSOLE__ADDR '127.0.0.1:8470' does not listen on 0.0.0.0:<port>"),
    ("Prometheus not scraping the console",
     [("deploy/prometheus/prometheus.yml", '      - targets: ["console:8470"]', '      - targets: ["console:9464"]')],
     "prometheus: does not scrape the console (console:8470)"),
    ("Dockerfile not copying a workspace member",
     [("Dockerfile", "COPY console console\n", "")],
     "Dockerfile: workspace member console is not copied"),
    ("Dockerfile not building warren-console",
     [("Dockerfile", " -p warren-console", "")],
     "Dockerfile: warren-console is not built and copied into the image"),
    ("dashboard JSON edited by hand",
     [("deploy/grafana/dashboards/warren.json", '"title": "Console: status store size"', '"title": "Console: store size"')],
     "dashboard: deploy/grafana/dashboards/warren.json is not what deploy/grafana/make_dashboard.py writes"),
]


def copy_inputs(dest):
    """The files validate.py reads: compose and what it mounts, Dockerfile, the workspace's
    Cargo.toml, config/, deploy/, the example worker's kinds and manifests."""
    for name in ("docker-compose.yml", "Dockerfile", "Cargo.toml"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("config", "deploy", "examples/worker/src", "examples/worker/deploy"):
        shutil.copytree(ROOT / name, dest / name)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for svc in (compose.get("services") or {}).values():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0] if isinstance(vol, str) else ""
            if src.startswith("./") and (ROOT / src).is_file() and not (dest / src).exists():
                (dest / src).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / src, dest / src)


def run(edits):
    with tempfile.TemporaryDirectory(prefix="warren-validate-") as tmp:
        dest = pathlib.Path(tmp)
        copy_inputs(dest)
        for rel, old, new in edits:
            f = dest / rel
            text = f.read_text()
            if text.count(old) != 1:
                return None, f"the text to break occurs {text.count(old)} times in {rel}: {old!r}"
            f.write_text(text.replace(old, new))
        r = subprocess.run([sys.executable, str(VALIDATE), "--no-tools", str(dest)], capture_output=True, text=True)
        return r.returncode, r.stdout + r.stderr


def main():
    passed, failed = 0, 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        baseline = pool.submit(run, [])
        results = [(name, expected, pool.submit(run, edits)) for name, edits, expected in CASES]
        rc, out = baseline.result()
        if rc == 0:
            passed += 1
            print("ok    unbroken copy passes")
        else:
            failed += 1
            print(f"FAIL  unbroken copy: exit {rc}\n{out}")
        for name, expected, fut in results:
            rc, out = fut.result()
            lines = [line for line in out.splitlines() if expected in line]
            if rc == 1 and lines:
                passed += 1
                print(f"ok    {name}: {lines[0]}")
            else:
                failed += 1
                print(f"FAIL  {name}: exit {rc}, expected a line with {expected!r}; got:\n{out}")
    print(f"validate selftest: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
