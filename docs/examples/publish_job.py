#!/usr/bin/env python3
"""Publish Warren jobs from Python with pika and read their results.

Usage: python3 publish_job.py [AMQP_URL] [IMAGE]
  AMQP_URL  default amqp://guest:guest@127.0.0.1:5672/%2f (or $WARREN_AMQP_URL)
  IMAGE     optional PNG/JPEG/WebP file to resize to 64x64 as well

Needs `pip install pika`. Prints one JSON line per result.
"""

import base64
import json
import os
import sys
import time
import uuid

import pika

url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
    "WARREN_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
image_path = sys.argv[2] if len(sys.argv) > 2 else None

connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.confirm_delivery()  # publisher confirms: basic_publish raises if the broker refuses

# A private queue for our results; the broker deletes it when we disconnect.
# Exclusive: simple, but results arriving after this connection is gone are lost (see Guarantees);
# a producer that must not lose them declares a durable queue of its own instead.
reply_queue = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue

jobs = [("checksum", {"data": base64.b64encode(b"hello from python").decode(), "rounds": 1})]
if image_path:
    with open(image_path, "rb") as f:
        image = base64.b64encode(f.read()).decode()
    jobs.append(("image.resize", {"image": image, "width": 64, "height": 64,
                                  "mode": "fit", "format": "png"}))

pending = {}
for kind, params in jobs:
    job_id = str(uuid.uuid4())
    correlation_id = str(uuid.uuid4())
    body = json.dumps({"version": 1, "kind": kind, "job": params}).encode()
    properties = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=2,  # persistent
        message_id=job_id,
        correlation_id=correlation_id,
        timestamp=int(time.time()),
        reply_to=reply_queue,
        headers={"warren-attempt": 0},
    )
    # mandatory=True: an unroutable job raises pika.exceptions.UnroutableError.
    channel.basic_publish(exchange="warren.jobs", routing_key=kind, body=body,
                          properties=properties, mandatory=True)
    pending[correlation_id] = job_id

deadline = time.time() + 60
for method, properties, body in channel.consume(reply_queue, auto_ack=True, inactivity_timeout=1):
    if method is not None and properties.correlation_id in pending:
        del pending[properties.correlation_id]
        result = json.loads(body)
        if result["status"] == "ok":
            # The output is keyed by the job kind; image bytes come back in base64.
            (kind, output), = result["output"].items()
            if "image" in output:
                output["image"] = f"<{len(base64.b64decode(output['image']))} bytes>"
            print(json.dumps({"job_id": result["job_id"], "kind": kind, "output": output}))
        else:
            print(json.dumps({"job_id": result["job_id"], "error": result["error"]}))
    if not pending or time.time() > deadline:
        break

connection.close()
sys.exit(1 if pending else 0)
