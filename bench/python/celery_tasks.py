"""The comparison's work as Celery tasks: prefork, acks_late, publisher confirms, results over
RabbitMQ (the rpc:// backend: a reply queue per client, as Warren's reply_to)."""

from __future__ import annotations

import base64
import os
from typing import Any

from celery import Celery

import work

app = Celery("bench", broker=os.environ["CELERY_BROKER_URL"], backend="rpc://")
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=int(os.environ.get("CELERY_PREFETCH_MULTIPLIER", "4")),
    broker_transport_options={"confirm_publish": True},
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue="celery.bench",
)


@app.task(name="bench.noop")
def noop(job: dict[str, Any]) -> dict[str, Any]:
    return work.noop(job)


@app.task(name="bench.thumbnail")
def thumbnail(image_b64: str) -> dict[str, Any]:
    # JSON carries bytes as base64 in Celery too.
    return {"image": base64.b64encode(work.thumbnail(base64.b64decode(image_b64))).decode()}
