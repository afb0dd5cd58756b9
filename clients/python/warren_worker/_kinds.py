"""Job kinds written in Python: the decorator, the job's context and the errors a kind raises.

A kind is a function of the job's input (a dict, its bytes fields as ``bytes``) and a
:class:`Context`, returning a JSON-serialisable output (``bytes`` values in it are sent as
base64, as the contract writes bytes in JSON). The Rust worker runs it in a child process and
gives it Warren's delivery path: confirms, retries, dead letters, poison counting, drain."""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Context", "KindSpec", "Permanent", "Transient", "kind", "registered", "clear"]

_NAME = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
_ERROR_TYPE = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")


class _KindError(Exception):
    """A failure a kind reports on purpose, with its fixed type (lowercase words joined by ``_``)."""

    error_class = "permanent"

    def __init__(self, error_type: str, message: str = "") -> None:
        if not _ERROR_TYPE.match(error_type):
            raise ValueError(f"error type {error_type!r}: lowercase words of a-z and 0-9 joined by _")
        super().__init__(message or error_type)
        self.error_type = error_type
        self.message = message or error_type


class Permanent(_KindError):
    """Retrying cannot help (the input is wrong for the kind): dead-lettered at once."""

    error_class = "permanent"


class Transient(_KindError):
    """A later attempt may succeed (a service was down): retried through the delay queues."""

    error_class = "transient"


Job = dict[str, Any]
Function = Callable[[Job, "Context"], Any]


@dataclass(frozen=True)
class KindSpec:
    """A registered kind: its name, its function and the defaults of its route."""

    name: str
    function: Function
    #: Longest one job may run, in seconds; past it the worker kills the child running it.
    time_limit: float = 60.0
    #: Attempts in all (None: the worker's ``[retry]`` policy).
    max_attempts: int | None = None
    #: Fields of the input that carry bytes (base64 in the JSON envelope), given as ``bytes``.
    bytes_fields: tuple[str, ...] = ()
    #: The class of an exception that is neither ``Permanent`` nor ``Transient``.
    default_class: str = "permanent"
    #: Exception types counted as transient whatever ``default_class`` says.
    retry_on: tuple[type[BaseException], ...] = ()

    def describe(self) -> dict[str, Any]:
        """What the worker learns of the kind at start-up."""
        return {
            "name": self.name,
            "time_limit_ms": int(self.time_limit * 1000),
            "max_attempts": self.max_attempts,
            "bytes_fields": list(self.bytes_fields),
            "default_class": self.default_class,
        }

    def classify(self, error: BaseException) -> tuple[str, str, str]:
        """``(class, type, message)`` of an exception the function raised."""
        if isinstance(error, _KindError):
            return error.error_class, error.error_type, error.message
        message = f"{type(error).__name__}: {error}"
        if self.retry_on and isinstance(error, self.retry_on):
            return "transient", "python_exception", message
        return self.default_class, "python_exception", message


_REGISTRY: dict[str, KindSpec] = {}
_LOCK = threading.Lock()


def kind(
    name: str,
    *,
    time_limit: float = 60.0,
    max_attempts: int | None = None,
    bytes_fields: Iterable[str] = (),
    default_class: str = "permanent",
    retry_on: Iterable[type[BaseException]] = (),
) -> Callable[[Function], Function]:
    """Registers the decorated function as the job kind ``name`` (its routing key: lowercase
    words of ``a-z``, ``0-9``, ``_``, ``-`` joined by dots). The function is returned unchanged,
    so it stays callable (and testable) as plain code."""
    if not _NAME.match(name) or len(name) > 100:
        raise ValueError(f"{name!r} is not a job kind's name: lowercase words of a-z, 0-9, _ or - joined by dots")
    if not (math.isfinite(time_limit) and time_limit > 0):
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    if max_attempts is not None and max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    if default_class not in ("permanent", "transient"):
        raise ValueError(f"default_class must be 'permanent' or 'transient', got {default_class!r}")

    def register(function: Function) -> Function:
        spec = KindSpec(name, function, time_limit, max_attempts, tuple(bytes_fields), default_class,
                        tuple(retry_on))
        with _LOCK:
            if name in _REGISTRY and _REGISTRY[name].function is not function:
                raise ValueError(f"kind {name!r} is registered twice")
            _REGISTRY[name] = spec
        return function

    return register


def registered() -> Mapping[str, KindSpec]:
    """The kinds registered so far, by name."""
    with _LOCK:
        return dict(_REGISTRY)


def clear() -> None:
    """Forgets every registered kind (for tests)."""
    with _LOCK:
        _REGISTRY.clear()


@dataclass
class Context:
    """One job's circumstances, as its function sees them."""

    job_id: str
    kind: str
    #: Which attempt this is, from 0.
    attempt: int
    #: When the job must be done by (Unix seconds): its time limit, cut to its own deadline.
    deadline: float
    _progress: Callable[[float, str], None] = field(default=lambda fraction, text: None, repr=False)
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry the job's id and kind."""
        return logging.LoggerAdapter(logging.getLogger(f"warren.{self.kind}"),
                                     {"job_id": self.job_id, "kind": self.kind})

    def remaining(self) -> float:
        """Seconds left before the deadline (0 once past it)."""
        return max(0.0, self.deadline - time.time())

    def progress(self, fraction: float, text: str = "") -> None:
        """Reports how far the job is (0 to 1, clamped) with a short text: a ``progress``
        lifecycle event. Cheap; never blocks."""
        fraction = 0.0 if math.isnan(fraction) else min(1.0, max(0.0, fraction))
        self._progress(fraction, text[:200])

    def is_cancelled(self) -> bool:
        """Whether the job was cancelled by id while it runs (cooperative: stopping is up to
        the kind, e.g. ``raise Permanent("cancelled", ...)``)."""
        return self._cancelled.is_set()
