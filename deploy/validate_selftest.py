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
]


def copy_inputs(dest):
    """The files validate.py reads: compose and what it mounts, Dockerfile, config/, deploy/,
    the example worker's kinds and manifests."""
    for name in ("docker-compose.yml", "Dockerfile"):
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
