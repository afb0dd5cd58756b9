"""Submits jobs with the Python client and prints each result as a JSON line.

Usage: submit_jobs.py AMQP_URL < jobs.json, where jobs.json is a list of
{"kind": K, "job": {...}, "files": {"field": "path"}, "wait": true}; a file's bytes become that
field of the job (bytes, which the client sends as base64). Jobs with "wait": false are only
submitted (their ids are printed as {"submitted": id}).
"""

import json
import sys

from warren_client import Client


def main() -> None:
    url = sys.argv[1]
    jobs = json.load(sys.stdin)
    with Client(url) as client:
        waiting = []
        for spec in jobs:
            job = dict(spec.get("job", {}))
            for field, path in spec.get("files", {}).items():
                with open(path, "rb") as f:
                    job[field] = f.read()
            job_id = client.submit(spec["kind"], job)
            if spec.get("wait", True):
                waiting.append(job_id)
            else:
                print(json.dumps({"submitted": job_id}), flush=True)
        for job_id in waiting:
            r = client.result(job_id, timeout=120)
            print(json.dumps({"job_id": r.job_id, "kind": r.kind, "status": r.status, "value": r.value,
                              "error": r.error, "attempt": r.attempt}), flush=True)


if __name__ == "__main__":
    main()
