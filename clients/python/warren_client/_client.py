"""The client: one connection with publisher confirms, a durable reply queue of its own, and
reconnection. Not thread-safe: use one ``Client`` per thread."""

from __future__ import annotations

import base64
import json
import logging
import math
import random
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import OrderedDict
from datetime import datetime
from typing import Any, Mapping, Sequence

import pika
import pika.exceptions as px

from .errors import ConnectionLost, Nacked, Timeout, Unroutable, WarrenError
from .result import Result

log = logging.getLogger("warren_client")

ENVELOPE_VERSION = 1
#: The version of the cancel stream's records.
CANCEL_VERSION = 1

#: Errors after which the connection is replaced and the operation tried again (the connection's
#: errors, StreamLostError among them; a channel's; the socket's).
_LOST = (px.AMQPConnectionError, px.ChannelWrongStateError, px.ChannelClosedByBroker, OSError)


class Ref:
    """A reference to bytes kept outside the message, given in place of a bytes field
    (``{"image": Ref("s3://photos/a.jpg")}``): the worker fetches it before the kind runs.
    ``s3://bucket/key`` (the worker's S3-compatible store), ``file:///path`` (a mount the
    worker shares, under its ``store.file_roots``) or ``https://...`` (a presigned URL)."""

    __slots__ = ("url",)
    SCHEMES = ("s3", "file", "https")
    MAX_LEN = 4096

    def __init__(self, url: str) -> None:
        if not isinstance(url, str):
            raise TypeError(f"a reference is a URL string, not {type(url).__name__}")
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in self.SCHEMES:
            raise ValueError(f"references are s3://, file:// or https:// URLs, not {url.split('?')[0]!r}")
        if len(url.encode()) > self.MAX_LEN or any(ord(c) < 32 or 127 <= ord(c) <= 159 for c in url):
            raise ValueError("a reference is at most 4096 bytes, without control characters")
        host, _, path = rest.partition("/")
        fits = {"s3": bool(host and path), "file": not host and bool(path), "https": bool(host.split("?")[0])}
        if not fits[scheme.lower()]:
            raise ValueError(f"{url.split('?')[0]!r} is not of the form s3://bucket/key, file:///path or https://host/path")
        self.url = url

    def __repr__(self) -> str:
        # Without the query: a presigned URL's signature is there.
        return f"Ref({self.url.split('?')[0]!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ref) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)


def _encode(value: Any) -> Any:
    """``bytes`` anywhere in a job become standard base64 text, as the contract wants; a
    ``Ref`` becomes ``{"ref": url}``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Ref):
        return {"ref": value.url}
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _unix_ms(at: float | datetime, name: str, *, round_up: bool) -> int:
    """Unix milliseconds of ``at`` (Unix seconds, or an aware datetime). A deadline rounds down
    and a not-before up, so neither lets the job run outside what was asked."""
    if isinstance(at, datetime):
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"{name} must be an aware datetime (with a tzinfo), not a naive one: {at!r}")
        seconds = at.timestamp()
    elif isinstance(at, (int, float)) and not isinstance(at, bool):
        seconds = float(at)
    else:
        raise TypeError(f"{name} must be Unix seconds (a number) or an aware datetime, not {type(at).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite time after 1970, not {at!r}")
    ms = seconds * 1000
    return int(math.ceil(ms) if round_up else math.floor(ms))


def _seconds(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite, non-negative number of seconds, not {value!r}")
    return float(value)


def control(*, timeout: float | None = None, deadline: float | datetime | None = None, delay: float | None = None,
            not_before: float | datetime | None = None, now: float | None = None) -> dict[str, int]:
    """The envelope's job control fields for ``submit``'s arguments: ``deadline_ms`` from
    ``timeout`` (seconds from ``now``) or ``deadline`` (Unix seconds, or an aware datetime),
    ``not_before_ms`` from ``delay`` or ``not_before`` likewise; only those given. ``now``
    defaults to ``time.time()``. Giving both of a pair is a ValueError."""
    if timeout is not None and deadline is not None:
        raise ValueError("give timeout or deadline, not both")
    if delay is not None and not_before is not None:
        raise ValueError("give delay or not_before, not both")
    if now is None and (timeout is not None or delay is not None):
        now = time.time()
    fields: dict[str, int] = {}
    if timeout is not None:
        assert now is not None
        fields["deadline_ms"] = _unix_ms(now + _seconds(timeout, "timeout"), "timeout", round_up=False)
    elif deadline is not None:
        fields["deadline_ms"] = _unix_ms(deadline, "deadline", round_up=False)
    if delay is not None:
        assert now is not None
        fields["not_before_ms"] = _unix_ms(now + _seconds(delay, "delay"), "delay", round_up=True)
    elif not_before is not None:
        fields["not_before_ms"] = _unix_ms(not_before, "not_before", round_up=True)
    return fields


def envelope(kind: str, job: Mapping[str, Any], *, deadline_ms: int | None = None,
             not_before_ms: int | None = None, output_to: str | None = None) -> bytes:
    """The JSON envelope ``submit`` publishes (docs/contract.md): ``{"version": 1, "kind": ..,
    "job": {..}}``, with ``deadline_ms``, ``not_before_ms`` (Unix ms) and ``output_to`` beside the
    kind when given. ``bytes`` anywhere in ``job`` become base64, a ``Ref`` ``{"ref": url}``."""
    body: dict[str, Any] = {"version": ENVELOPE_VERSION, "kind": kind}
    if deadline_ms is not None:
        body["deadline_ms"] = int(deadline_ms)
    if not_before_ms is not None:
        body["not_before_ms"] = int(not_before_ms)
    if output_to is not None:
        if not isinstance(output_to, str) or not output_to.lower().startswith(("s3://", "file://")):
            raise ValueError(f"output_to is an s3:// or file:// prefix, not {output_to!r}")
        body["output_to"] = output_to
    body["job"] = _encode(job)
    return json.dumps(body).encode()


def cancel_record(job_ids: Sequence[str], at_ms: int) -> bytes:
    """The cancel stream's record for ``job_ids``: ``{"version": 1, "job_ids": [..], "at_ms":
    <unix ms>}``. An id that is not a non-empty string is refused."""
    for job_id in job_ids:
        if not isinstance(job_id, str):
            raise TypeError(f"job ids are strings, not {type(job_id).__name__}: {job_id!r}")
        if not job_id:
            raise ValueError("an empty job id cannot be cancelled")
    return json.dumps({"version": CANCEL_VERSION, "job_ids": list(job_ids), "at_ms": int(at_ms)}).encode()


def _check_priority(priority: int | None) -> int | None:
    if priority is None:
        return None
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int from 0 to 255, not {type(priority).__name__}")
    if not 0 <= priority <= 255:
        raise ValueError(f"priority must be from 0 to 255 (the route's max_priority bounds it), not {priority}")
    return priority


def _traceparent() -> str:
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"


class Client:
    """Publishes Warren jobs and collects their results.

    ``url`` is an AMQP URL (``amqp://user:password@host:5672/vhost``; ``amqps://`` for TLS), or
    a cluster's, one per node separated by commas (tried in order).
    Jobs are persistent, published with ``mandatory`` and confirmed before ``submit`` returns;
    results come to a durable queue ``warren.reply.<uuid>`` of this client's that survives a
    lost connection and a broker restart, and expires ``reply_queue_expires_ms`` after the
    client is gone. A lost connection is re-established (capped, jittered backoff) for up to
    ``reconnect_timeout`` seconds. A publish the broker refuses, or does not confirm within
    ``confirm_timeout`` seconds, is sent again (same job id) for up to ``publish_timeout``
    seconds. Results are at least once: duplicates are dropped by job id. ``cancel`` publishes
    to the RabbitMQ stream ``cancel_stream`` (Warren's ``topology.cancel_stream``; "" turns
    cancelling off).
    """

    def __init__(
        self,
        url: str,
        *,
        jobs_exchange: str = "warren.jobs",
        cancel_stream: str = "warren.cancels",
        queue_type: str = "classic",
        reply_queue_expires_ms: int = 300_000,
        publish_timeout: float = 60.0,
        confirm_timeout: float = 30.0,
        reconnect_timeout: float = 60.0,
        connection_name: str = "warren-client-python",
        console_url: str = "http://127.0.0.1:8470",
    ) -> None:
        if queue_type not in ("classic", "quorum"):
            raise ValueError(f"queue_type must be 'classic' or 'quorum', not {queue_type!r}")
        self._params = [pika.URLParameters(u.strip()) for u in url.split(",") if u.strip()]
        if not self._params:
            raise ValueError("url names no broker")
        for params in self._params:
            params.client_properties = {"connection_name": connection_name}
        self._exchange = jobs_exchange
        self._cancel_stream = cancel_stream
        self.console_url = console_url
        self._reply_args = {"x-expires": int(reply_queue_expires_ms), "x-queue-type": queue_type}
        self._publish_timeout = publish_timeout
        self._confirm_timeout = confirm_timeout
        self._reconnect_timeout = reconnect_timeout
        self._consumer_cancelled = False
        self.reply_queue = f"warren.reply.{uuid.uuid4().hex}"
        self._results: dict[str, Result] = {}
        # Job ids whose result was handed out: a later copy is a duplicate (bounded memory).
        self._delivered: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0
        self.reconnects = 0
        self._conn: pika.BlockingConnection | None = None
        self._ch: Any = None
        self._connect()

    # -- connection ------------------------------------------------------------------------

    def _connect(self) -> None:
        conn = pika.BlockingConnection(self._params)
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.queue_declare(self.reply_queue, durable=True, arguments=self._reply_args)
            ch.basic_qos(prefetch_count=1000)
            # The broker cancels the consumer when the reply queue is deleted: declare it again.
            ch.add_on_cancel_callback(self._on_cancelled)
            ch.basic_consume(self.reply_queue, self._on_result, auto_ack=False)
        except BaseException:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - the error that matters is being raised
                pass
            raise
        self._conn, self._ch = conn, ch
        self._consumer_cancelled = False

    def _on_cancelled(self, _frame: Any) -> None:
        log.warning("the broker cancelled the reply consumer of %s (queue deleted?)", self.reply_queue)
        self._consumer_cancelled = True

    def _live(self) -> pika.BlockingConnection:
        """The connection, when it, its channel and the reply consumer are up; otherwise raises
        one of the errors after which the caller reconnects."""
        conn = self._conn
        if conn is None or not conn.is_open or self._ch is None or not self._ch.is_open or self._consumer_cancelled:
            raise px.ChannelWrongStateError("no open connection, channel or reply consumer")
        return conn

    def _reconnect(self, why: BaseException) -> None:
        """Replaces the connection, waiting between attempts, or raises ConnectionLost."""
        log.warning("lost the broker (%s); reconnecting", why)
        self._close_quietly()
        give_up = time.monotonic() + self._reconnect_timeout
        pause = 0.1
        while True:
            try:
                self._connect()
                self.reconnects += 1
                log.info("reconnected")
                return
            except _LOST as e:
                if time.monotonic() >= give_up:
                    raise ConnectionLost(f"the broker did not come back within {self._reconnect_timeout} s: {e}") from e
                time.sleep(random.uniform(pause / 2, pause))
                pause = min(pause * 2, 5.0)

    def _close_quietly(self) -> None:
        try:
            if self._conn is not None and self._conn.is_open:
                self._conn.close()
        except Exception:  # noqa: BLE001 - it is being replaced anyway
            pass
        self._conn, self._ch = None, None

    def _on_result(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        headers = getattr(props, "headers", None) or {}
        traceparent = headers.get("traceparent")
        if isinstance(traceparent, bytes):
            traceparent = traceparent.decode("utf-8", "replace")
        try:
            result = Result.from_body(body, traceparent if isinstance(traceparent, str) else None)
        except (ValueError, KeyError, TypeError) as e:
            log.error("dropping a message in %s that is not a result: %s", self.reply_queue, e)
        else:
            if result.job_id in self._results or result.job_id in self._delivered:
                self.duplicates += 1
            else:
                self._results[result.job_id] = result
        ch.basic_ack(method.delivery_tag)

    # -- jobs ------------------------------------------------------------------------------

    def submit(self, kind: str, job: Mapping[str, Any], *, reply: bool = True, traceparent: str | None = None,
               job_id: str | None = None, priority: int | None = None, timeout: float | None = None,
               deadline: float | datetime | None = None, delay: float | None = None,
               not_before: float | datetime | None = None, output_to: str | None = None) -> str:
        """Publishes a job of ``kind`` and returns its id once the broker confirmed it. ``bytes``
        values are sent as base64. ``reply=False`` sends the result to Warren's results exchange
        instead of this client. Raises ``Unroutable`` when no queue takes the kind.

        Job control: ``priority`` (0-255) is the AMQP priority, honoured up to the route's
        ``max_priority``. ``timeout`` (seconds from now) or ``deadline`` (Unix seconds, or an
        aware datetime): past it the job is not started, nor retried, and is answered with
        ``DeadlineExceeded``. ``delay`` (seconds from now) or ``not_before`` (likewise): the job
        waits in Warren's delay queues until then. Giving both of a pair raises ValueError.

        Payloads by reference: a ``Ref("s3://bucket/key")`` in place of a bytes value is fetched
        by the worker; ``output_to`` (``"s3://bucket/prefix/"``, ``"file:///dir/"``) makes it
        write the output's bytes there, the result carrying ``{"ref": .., "size": ..}`` for them
        (``Result.ref``)."""
        priority = _check_priority(priority)
        fields = control(timeout=timeout, deadline=deadline, delay=delay, not_before=not_before)
        job_id = job_id or str(uuid.uuid4())
        body = envelope(kind, job, output_to=output_to, **fields)
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2,
            priority=priority,
            message_id=job_id,
            correlation_id=job_id,
            timestamp=int(time.time()),
            reply_to=self.reply_queue if reply else None,
            type=kind,
            app_id="warren-client-python",
            headers={"warren-attempt": 0, "traceparent": traceparent or _traceparent()},
        )
        self._publish_confirmed(self._exchange, kind, body, props, what=f"job {job_id}",
                                unroutable=f"no queue takes jobs of kind {kind!r} on exchange {self._exchange!r}")
        return job_id

    def cancel(self, *job_ids: str) -> None:
        """Cancels jobs by id, in one record on the cancel stream, confirmed by the broker. None
        of them starts after this returns (on any worker, one started later included, within
        Warren's ``topology.cancel_retention_s``): each is answered with ``Cancelled``; a running
        job is told, and stops if its kind looks. Unknown ids are no error; no ids, nothing to do.
        An empty id raises ValueError; a stream that does not exist yet, ``Unroutable``."""
        body = cancel_record(job_ids, int(time.time() * 1000))
        if not job_ids:
            return
        if not self._cancel_stream:
            raise WarrenError("cancelling is off: this client's cancel_stream is empty")
        props = pika.BasicProperties(content_type="application/json", delivery_mode=2, type="warren.cancel")
        stream = self._cancel_stream
        self._publish_confirmed(
            "", stream, body, props, what=f"the cancel record of {len(job_ids)} job(s)",
            unroutable=f"no cancel stream {stream!r} on this vhost: start a Warren consumer, which declares it, "
                       "or `warrenctl topology apply`")

    def _publish_confirmed(self, exchange: str, routing_key: str, body: bytes, props: pika.BasicProperties, *,
                           what: str, unroutable: str) -> None:
        """Publishes until the broker confirms, reconnecting when the connection is lost, for up
        to ``publish_timeout`` seconds (then ``Nacked``). ``unroutable`` is the message of the
        ``Unroutable`` raised when no queue takes it; ``what`` names it in other errors."""
        give_up = time.monotonic() + self._publish_timeout
        pause = 0.1
        while True:
            failure: BaseException
            lost = False
            try:
                self._publish(exchange, routing_key, body, props)
                return
            except px.UnroutableError as e:
                raise Unroutable(unroutable) from e
            except px.NackError as e:
                failure = e
            except px.ChannelClosedByBroker as e:
                if e.reply_code in (403, 404):
                    # Waiting does not change these; the next call connects again.
                    self._close_quietly()
                    if e.reply_code == 404:
                        raise WarrenError(f"exchange {exchange!r} does not exist: start a Warren consumer "
                                          "(it declares the topology) or `warren-producer --declare`") from e
                    raise WarrenError(f"the broker refused {what}: {e.reply_text}") from e
                failure, lost = e, True
            except _LOST as e:
                failure, lost = e, True
            if time.monotonic() >= give_up:
                if lost:
                    self._close_quietly()  # the next call connects again
                raise Nacked(f"the broker did not store {what} within {self._publish_timeout} s "
                             f"(the last attempt: {failure!r})") from failure
            if lost:
                self._reconnect(failure)
            else:
                self._pause(pause)
            pause = min(pause * 2, 5.0)

    def _publish(self, exchange: str, routing_key: str, body: bytes, props: pika.BasicProperties) -> None:
        """One confirmed publish. A confirm that does not come within ``confirm_timeout`` (a
        blocked connection, a queue without its quorum) ends the connection, as pika's own
        heartbeat check does, so the caller reconnects and publishes again."""
        conn = self._live()
        impl: Any = getattr(conn, "_impl")
        timeout = self._confirm_timeout

        def no_confirm() -> None:
            impl._terminate_stream(px.StreamLostError(f"no publisher confirm within {timeout} s"))

        timer = impl.ioloop.call_later(timeout, no_confirm)
        try:
            self._ch.basic_publish(exchange, routing_key, body, props, mandatory=True)
        finally:
            impl.ioloop.remove_timeout(timer)
        # Results that came meanwhile are taken (and acked) now: a long run of submits must not
        # hold them unacknowledged past the broker's consumer_timeout. The message is stored: a
        # connection lost here is replaced by the next call, it is not published again.
        try:
            conn.process_data_events(time_limit=0)
        except _LOST as e:
            log.warning("lost the broker after a publish was confirmed (%s); reconnecting on the next call", e)
            self._close_quietly()

    def _pause(self, seconds: float) -> None:
        """Waits, keeping the connection serviced; a connection lost meanwhile is replaced."""
        try:
            self._live().sleep(seconds)
        except _LOST as e:
            self._reconnect(e)

    def result(self, job_id: str, timeout: float = 60.0) -> Result:
        """Waits up to ``timeout`` seconds for the result of ``job_id``. A failed job is a
        ``Result`` with ``status == "error"`` (``raise_for_error()`` raises it); only a missing
        result raises (``Timeout``), or a broker gone for good (``ConnectionLost``)."""
        deadline = time.monotonic() + timeout
        while job_id not in self._results:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"no result for job {job_id} within {timeout} s")
            try:
                # pika takes fractions of a second here, whatever its stubs say.
                self._live().process_data_events(time_limit=min(left, 0.5))  # type: ignore[arg-type]
            except _LOST as e:
                self._reconnect(e)
        result = self._results.pop(job_id)
        self._delivered[job_id] = None
        if len(self._delivered) > 100_000:
            self._delivered.popitem(last=False)
        return result

    def status(self, job_id: str, timeout: float = 10.0) -> dict[str, Any] | None:
        """What warren-console knows of ``job_id`` (``console_url``): ``{"job": {...}, "attempts":
        [...], "timeline": [...]}`` as ``GET /api/jobs/{id}`` answers (docs/console.md), or None
        when the console has not heard of it (yet)."""
        return status(job_id, self.console_url, timeout)

    def run(self, kind: str, job: Mapping[str, Any], timeout: float = 60.0, *, job_timeout: float | None = None,
            **submit: Any) -> Result:
        """``submit`` then ``result``. ``timeout`` is how long to wait for the result; the job's
        own timeout (``submit``'s ``timeout``) is ``job_timeout`` here. Every other keyword
        (``priority``, ``deadline``, ``delay``, ``not_before``, ``reply``, ...) goes to ``submit``."""
        if job_timeout is not None:
            submit["timeout"] = job_timeout
        return self.result(self.submit(kind, job, **submit), timeout)

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Deletes the reply queue (results still due are dropped) and closes the connection."""
        try:
            if self._ch is not None and self._ch.is_open:
                self._ch.queue_delete(self.reply_queue)
        except Exception:  # noqa: BLE001 - the queue expires by itself anyway
            pass
        self._close_quietly()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def status(job_id: str, console_url: str = "http://127.0.0.1:8470", timeout: float = 10.0) -> dict[str, Any] | None:
    """``Client.status`` without a client: the console's answer for ``job_id``, or None when it
    has not heard of it. Raises ``WarrenError`` when the console does not answer."""
    url = f"{console_url.rstrip('/')}/api/jobs/{urllib.parse.quote(job_id, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            found: dict[str, Any] = json.loads(answer.read())
            return found
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise WarrenError(f"console {console_url}: {e.code} {e.read().decode(errors='replace')}") from e
    except (urllib.error.URLError, OSError) as e:
        raise WarrenError(f"console {console_url}: {e}") from e
