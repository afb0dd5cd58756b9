"""The exceptions of warren_client.

Two families:

- what goes wrong between you and the broker: ``Unroutable`` (no queue takes that kind),
  ``Nacked`` (the broker did not store the job, or did not say so in time), ``Timeout`` (no result in time),
  ``ConnectionLost`` (the broker stayed away longer than the client's patience);
- what went wrong with a job, one class per Warren error type (``CorruptImage``,
  ``ModelUnavailable``, ...), under ``PermanentJobError`` or ``TransientJobError``. A failed job
  does not raise by itself: ``client.result()`` returns a ``Result`` with ``status == "error"``,
  and ``Result.raise_for_error()`` raises the class of its error type.
"""

from __future__ import annotations


class WarrenError(Exception):
    """Base class of every exception this package raises."""


class Unroutable(WarrenError):
    """The broker could route the job to no queue: no worker fleet serves that kind."""


class Nacked(WarrenError):
    """The broker did not store the job: it refused it (a nack), or did not confirm it, every time
    the client tried within ``publish_timeout``."""


class Timeout(WarrenError):
    """No result arrived within the time asked for."""


class ConnectionLost(WarrenError):
    """The broker could not be reached again within the client's reconnect patience."""


class JobError(WarrenError):
    """A job's failure, as its result reports it: ``type`` (Warren's fixed identifier),
    ``error_class`` (``"permanent"`` or ``"transient"``), ``message`` (for people) and the job id."""

    error_type = "unknown"

    def __init__(self, message: str, *, job_id: str = "", error_type: str | None = None,
                 error_class: str = "permanent") -> None:
        super().__init__(message)
        self.message = message
        self.job_id = job_id
        self.type = error_type or self.error_type
        self.error_class = error_class


class PermanentJobError(JobError):
    """Retrying cannot help: bad input, unsupported parameters, a job that crashed its worker."""


class TransientJobError(JobError):
    """Warren retried it and gave up (its attempts ran out); it may succeed later."""


def _kind(name: str, error_type: str, base: type[JobError]) -> type[JobError]:
    return type(name, (base,), {"error_type": error_type, "__doc__": f"Warren error type ``{error_type}``."})


UnsupportedContentType = _kind("UnsupportedContentType", "unsupported_content_type", PermanentJobError)
BodyTooLarge = _kind("BodyTooLarge", "body_too_large", PermanentJobError)
MalformedEnvelope = _kind("MalformedEnvelope", "malformed_envelope", PermanentJobError)
UnsupportedVersion = _kind("UnsupportedVersion", "unsupported_version", PermanentJobError)
UnknownKind = _kind("UnknownKind", "unknown_kind", PermanentJobError)
KindNotServed = _kind("KindNotServed", "kind_not_served", PermanentJobError)
InvalidParams = _kind("InvalidParams", "invalid_params", PermanentJobError)
UnsupportedFormat = _kind("UnsupportedFormat", "unsupported_format", PermanentJobError)
CorruptImage = _kind("CorruptImage", "corrupt_image", PermanentJobError)
LimitExceeded = _kind("LimitExceeded", "limit_exceeded", PermanentJobError)
ModelInputMismatch = _kind("ModelInputMismatch", "model_input_mismatch", PermanentJobError)
EncodeFailed = _kind("EncodeFailed", "encode_failed", PermanentJobError)
JobPanicked = _kind("JobPanicked", "panic", PermanentJobError)
RedeliveryLimit = _kind("RedeliveryLimit", "redelivery_limit", PermanentJobError)
#: ``timeout`` is transient unless the worker runs with ``consumer.retry_timeouts = false``: catch
#: ``JobTimedOut`` for either; ``job_error`` gives a permanent one ``PermanentJobTimedOut``.
JobTimedOut = _kind("JobTimedOut", "timeout", JobError)
TransientJobTimedOut: type[JobError] = type("TransientJobTimedOut", (JobTimedOut, TransientJobError),
                            {"__doc__": "Warren error type ``timeout``, transient (retried, then given up)."})
PermanentJobTimedOut: type[JobError] = type("PermanentJobTimedOut", (JobTimedOut, PermanentJobError),
                            {"__doc__": "Warren error type ``timeout`` from a worker that does not retry timeouts."})
ModelUnavailable = _kind("ModelUnavailable", "model_unavailable", TransientJobError)
InferenceFailed = _kind("InferenceFailed", "inference_failed", TransientJobError)
InjectedFault = _kind("InjectedFault", "injected_fault", TransientJobError)
ResultNotStored = _kind("ResultNotStored", "result_not_stored", TransientJobError)
DeadlineExceeded = _kind("DeadlineExceeded", "deadline_exceeded", PermanentJobError)
Cancelled = _kind("Cancelled", "cancelled", PermanentJobError)
#: A job's reference (``Ref``) names no object, or one the worker may not read (or write, for
#: ``output_to``); a store that does not answer is ``store_unavailable`` (set aside, then retried).
RefNotFound = _kind("RefNotFound", "ref_not_found", PermanentJobError)
RefDenied = _kind("RefDenied", "ref_denied", PermanentJobError)
StoreUnavailable = _kind("StoreUnavailable", "store_unavailable", TransientJobError)

#: Warren's error types (``docs/contract.md``), each to its exception class.
BY_TYPE: dict[str, type[JobError]] = {
    c.error_type: c
    for c in (UnsupportedContentType, BodyTooLarge, MalformedEnvelope, UnsupportedVersion, UnknownKind,
              KindNotServed, InvalidParams, UnsupportedFormat, CorruptImage, LimitExceeded, ModelInputMismatch,
              EncodeFailed, JobPanicked, RedeliveryLimit, TransientJobTimedOut, ModelUnavailable, InferenceFailed,
              InjectedFault, ResultNotStored, DeadlineExceeded, Cancelled, RefNotFound, RefDenied,
              StoreUnavailable)
}

#: Types whose class the worker's configuration decides: (type, class on the wire) -> exception.
_BY_TYPE_AND_CLASS: dict[tuple[str, str], type[JobError]] = {
    ("timeout", "transient"): TransientJobTimedOut,
    ("timeout", "permanent"): PermanentJobTimedOut,
}


__all__ = ["WarrenError", "Unroutable", "Nacked", "Timeout", "ConnectionLost", "JobError", "PermanentJobError",
           "TransientJobError", "BY_TYPE", "job_error", "JobTimedOut", "PermanentJobTimedOut"] + \
    [c.__name__ for c in BY_TYPE.values()]


def job_error(error: dict[str, object], job_id: str = "") -> JobError:
    """The exception for a result's ``error`` object: its type's class, in the family its class on
    the wire says (``timeout`` can be either); a type Warren does not list (a kind's own) is
    ``TransientJobError`` or ``PermanentJobError`` by its class."""
    error_type = str(error.get("type", "unknown"))
    error_class = str(error.get("class", "permanent"))
    cls = (_BY_TYPE_AND_CLASS.get((error_type, error_class)) or BY_TYPE.get(error_type)
           or (TransientJobError if error_class == "transient" else PermanentJobError))
    return cls(str(error.get("message", error_type)), job_id=job_id, error_type=error_type, error_class=error_class)
