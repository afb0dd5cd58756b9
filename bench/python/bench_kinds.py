"""The comparison's work as Warren Python kinds."""

from __future__ import annotations

from typing import Any

import warren_worker
from warren_worker import Context

import work


@warren_worker.kind("bench.noop", time_limit=30)
def noop(job: dict[str, Any], cx: Context) -> dict[str, Any]:
    return work.noop(job)


@warren_worker.kind("bench.thumbnail", time_limit=30, bytes_fields=("image",))
def thumbnail(job: dict[str, Any], cx: Context) -> dict[str, Any]:
    return {"image": work.thumbnail(job["image"])}


@warren_worker.kind("bench.size", time_limit=30, bytes_fields=("image",))
def size(job: dict[str, Any], cx: Context) -> dict[str, Any]:
    return {"bytes": len(job["image"])}
