"""A job's result, as Warren sends it (``docs/contract.md``, "Results")."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import JobError, job_error


@dataclass(frozen=True)
class Result:
    """One job's result. ``output`` is as on the wire: an object keyed by the job kind
    (``{"checksum": {"bytes": 5, ...}}``); ``value`` is the kind's part of it."""

    job_id: str
    kind: str
    status: str
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    attempt: int
    worker: str
    timing: dict[str, Any] = field(default_factory=dict)
    #: The job's W3C trace context, which Warren copies onto its result (header ``traceparent``).
    traceparent: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def value(self) -> dict[str, Any] | None:
        """The kind's output (``output[kind]``), or None for a failed job."""
        if not self.output:
            return None
        value = self.output.get(self.kind, next(iter(self.output.values()), None))
        return value if isinstance(value, dict) else None

    def image(self) -> bytes:
        """The output image of an ``image.resize`` job, decoded from base64. A job submitted
        with ``output_to`` has its image in the store instead: see ``ref``."""
        value = self.value or {}
        if "image" not in value:
            raise ValueError(f"job {self.job_id} ({self.kind}) has no output image")
        if isinstance(value["image"], dict):
            raise ValueError(f"job {self.job_id}'s output image was stored at {value['image'].get('ref')}: "
                             "read it from there (Result.ref)")
        return base64.b64decode(value["image"])

    def ref(self, field: str = "image") -> str | None:
        """Where the worker stored an output bytes field (``output_to``): its URL, or None when
        the field came inline."""
        value = (self.value or {}).get(field)
        return str(value["ref"]) if isinstance(value, dict) and "ref" in value else None

    def exception(self) -> JobError | None:
        """The exception of a failed job's error type (``errors.BY_TYPE``), or None."""
        return None if self.ok else job_error(dict(self.error or {}), self.job_id)

    def raise_for_error(self) -> "Result":
        """Raises the job's error as its exception class; returns the result when it succeeded."""
        e = self.exception()
        if e is not None:
            raise e
        return self

    @classmethod
    def from_body(cls, body: bytes, traceparent: str | None = None) -> "Result":
        d = json.loads(body)
        return cls(
            job_id=str(d["job_id"]),
            kind=str(d.get("kind", "")),
            status=str(d["status"]),
            output=d.get("output"),
            error=d.get("error"),
            attempt=int(d.get("attempt", 0)),
            worker=str(d.get("worker", "")),
            timing=d.get("timing") or {},
            traceparent=traceparent,
        )
