"""warren_client against the real broker and a real warren-consumer."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import uuid
import zlib
from datetime import datetime, timedelta, timezone

import pika
import pytest

import warren_client
from warren_client import (Cancelled, Client, CorruptImage, DeadlineExceeded, Nacked, PermanentJobError, Timeout,
                           Unroutable, UnsupportedFormat, WarrenError)
from warren_client._client import cancel_record, control, envelope

from conftest import ROOT, Consumer, amqp_url, memory_alarm, mgmt, overlay_env, quoted, rabbitmqctl, wait_until


def test_every_kind_runs_and_comes_back_as_documented(vhost, consumer):
    expected = json.loads((ROOT / "models/digits/expected.json").read_text())
    with Client(amqp_url(vhost)) as client:
        r = client.run("checksum", {"data": b"hello from python"})
        assert (r.ok, r.kind, r.value) == (True, "checksum", {"bytes": 17, "rounds": 1,
                                                                "crc32": zlib.crc32(b"hello from python")})
        assert list(r.output) == ["checksum"], "output is keyed by the kind, as on the wire"

        photo = (ROOT / "samples/images/china.jpg").read_bytes()
        r = client.run("image.resize", {"image": photo, "width": 64, "height": 64, "format": "png"})
        assert r.ok and (r.value["width"], r.value["height"], r.value["format"]) == (64, 43, "png")
        assert r.image()[:8] == b"\x89PNG\r\n\x1a\n"

        sample = "001_label4.png"
        r = client.run("ml.classify", {"image": (ROOT / "models/digits/samples" / sample).read_bytes(), "top_k": 2})
        assert r.ok and r.value["predictions"][0]["index"] == expected["models"]["f32"]["predicted"][sample]
        assert len(r.value["predictions"]) == 2

        # The test overlay's fault route: one transient failure, then success on attempt 1.
        r = client.run("fault", {"transient_failures": 1})
        assert (r.ok, r.attempt, r.value) == (True, 1, {"attempt": 1})


def test_status_answers_what_happened_to_a_job_from_the_console(vhost, console, consumer):
    with Client(amqp_url(vhost), console_url=console.url) as client:
        assert client.status("no-such-job") is None
        job_id = client.submit("checksum", {"data": b"status"})
        assert client.result(job_id).ok
        found: dict = {}

        def succeeded() -> bool:
            found.update(client.status(job_id) or {})
            return found.get("job", {}).get("status") == "succeeded"
        wait_until("the console has the job's success", succeeded)
        assert [e["event"] for e in found["timeline"]] == ["received", "started", "succeeded"]
        assert found["job"]["kind"] == "checksum" and found["attempts"][0]["outcome"] == "succeeded"
        assert warren_client.status(job_id, console.url)["job"]["job_id"] == job_id
    with pytest.raises(warren_client.WarrenError):
        warren_client.status("x", "http://127.0.0.1:9", timeout=2)


def test_a_bad_input_is_an_error_result_with_its_exception_class(vhost, consumer):
    with Client(amqp_url(vhost)) as client:
        r = client.run("image.resize", {"image": b"not an image", "width": 8, "height": 8})
        assert (r.ok, r.status, r.value) == (False, "error", None)
        assert (r.error["type"], r.error["class"]) == ("unsupported_format", "permanent")
        with pytest.raises(UnsupportedFormat) as e:
            r.raise_for_error()
        assert isinstance(e.value, PermanentJobError) and e.value.job_id == r.job_id
        assert not isinstance(e.value, CorruptImage)
        r = client.run("image.resize", {"image": b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "width": 8, "height": 8})
        assert r.error["type"] in warren_client.BY_TYPE and isinstance(r.exception(), PermanentJobError)
        with pytest.raises(Unroutable):
            client.submit("no.such.kind", {})
        # The client goes on after an unroutable job.
        assert client.run("checksum", {"data": b"x"}).ok


def test_a_thousand_jobs_in_flight_from_one_thread(vhost, consumer):
    started = time.monotonic()
    with Client(amqp_url(vhost)) as client:
        ids = {client.submit("checksum", {"data": i.to_bytes(4, "little")}): i for i in range(1000)}
        submitted = time.monotonic() - started
        for job_id, i in ids.items():
            r = client.result(job_id, timeout=120)
            assert r.ok and r.value["crc32"] == zlib.crc32(i.to_bytes(4, "little")), r
        print(f"1000 jobs: submitted (each confirmed) in {submitted:.2f} s, all answered after "
              f"{time.monotonic() - started:.2f} s, {client.duplicates} duplicates dropped")
        assert len(ids) == 1000


def test_a_duplicate_result_is_dropped_by_job_id(vhost, consumer):
    with Client(amqp_url(vhost)) as client:
        job_id = client.submit("checksum", {"data": b"twice"})
        # Published again under the same id, as after a lost confirm: Warren runs it twice.
        assert client.submit("checksum", {"data": b"twice"}, job_id=job_id) == job_id
        assert client.result(job_id, timeout=60).ok
        # The second copy's result comes too, and is counted, never handed out.
        wait_until("the second result is dropped",
                   lambda: client.run("checksum", {"data": b"pump"}).ok and client.duplicates == 1)
        with pytest.raises(Timeout):
            client.result(job_id, timeout=1)
        assert client.duplicates == 1


def test_traceparent_rides_along_and_reply_false_answers_to_the_results_queue(vhost, consumer):
    traceparent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    with Client(amqp_url(vhost)) as client:
        assert client.run("checksum", {"data": b"t"}, traceparent=traceparent).traceparent == traceparent
        made = client.run("checksum", {"data": b"t"}).traceparent
        assert made is not None and made.startswith("00-") and len(made) == 55, made
        job_id = client.submit("checksum", {"data": b"elsewhere"}, reply=False)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url(vhost)))
    try:
        channel = connection.channel()
        seen: list[dict] = []

        def arrived() -> bool:
            method, _props, body = channel.basic_get("warren.results", auto_ack=True)
            if method is not None:
                seen.append(json.loads(body))
            return any(r["job_id"] == job_id for r in seen)

        wait_until("the result in warren.results", arrived)
        (result,) = [r for r in seen if r["job_id"] == job_id]
        assert (result["status"], result["output"]["checksum"]["crc32"]) == ("ok", zlib.crc32(b"elsewhere"))
    finally:
        connection.close()


def test_a_broker_restart_midway_loses_no_result(vhost, consumer):
    with Client(amqp_url(vhost), reconnect_timeout=120) as client:
        before = [client.submit("checksum", {"data": bytes([i])}) for i in range(100)]
        rabbitmqctl("stop_app")
        # The broker stays away for a while; submits wait for it, reconnecting.
        threading.Timer(3.0, lambda: rabbitmqctl("start_app")).start()
        after = [client.submit("checksum", {"data": bytes([i])}) for i in range(100)]
        rabbitmqctl("await_startup")
        results = [client.result(j, timeout=120) for j in before + after]
        assert all(r.ok for r in results) and len({r.job_id for r in results}) == 200
        print(f"broker restart: 200 jobs, 200 answered, client reconnected {client.reconnects}x, "
              f"{client.duplicates} duplicates dropped")
        assert client.reconnects >= 1

    def management_up() -> bool:
        try:
            mgmt("GET", "/api/overview", timeout=5)
            return True
        except (urllib.error.URLError, ConnectionError):
            return False

    wait_until("the management API is back", management_up)  # the vhost fixture deletes through it


def test_a_confirm_the_broker_withholds_ends_in_nacked_then_publishing_resumes(vhost, consumer):
    with Client(amqp_url(vhost), confirm_timeout=1.0, publish_timeout=4.0) as client:
        assert client.run("checksum", {"data": b"before"}).ok
        with memory_alarm():
            outcome: list[object] = []

            def attempt() -> None:
                try:
                    outcome.append(client.submit("checksum", {"data": b"blocked"}))
                except Exception as e:  # noqa: BLE001 - the test looks at what it was
                    outcome.append(e)

            started = time.monotonic()
            worker = threading.Thread(target=attempt, daemon=True)
            worker.start()
            worker.join(60)
            assert not worker.is_alive(), "submit blocked on a confirm that never came"
            print(f"a blocked broker: Nacked after {time.monotonic() - started:.1f} s "
                  f"(confirm_timeout 1 s, publish_timeout 4 s), {client.reconnects} reconnects")
            assert len(outcome) == 1 and isinstance(outcome[0], Nacked), outcome

        def resumed() -> bool:
            try:
                return client.run("checksum", {"data": b"after"}, timeout=30).ok
            except Nacked:
                return False

        wait_until("publishing resumes once the alarm is gone", resumed)


def test_a_deleted_reply_queue_is_declared_again(vhost, consumer):
    with Client(amqp_url(vhost)) as client:
        assert client.run("checksum", {"data": b"1"}).ok
        mgmt("DELETE", f"/api/queues/{quoted(vhost)}/{client.reply_queue}")
        # Waiting for anything lets the client see the broker cancel its reply consumer.
        with pytest.raises(Timeout):
            client.result("no-such-job", timeout=2)
        assert client.reconnects == 1, "the reply queue was declared again"
        r = client.run("checksum", {"data": b"2"}, timeout=30)
        assert r.ok and r.value["crc32"] == zlib.crc32(b"2")


def test_a_list_of_nodes_is_tried_in_order(vhost, consumer):
    # Port 1 refuses: the client goes on to the next node of the list, as for a cluster.
    with Client("amqp://guest:guest@127.0.0.1:1/%2f," + amqp_url(vhost)) as client:
        assert client.run("checksum", {"data": b"n"}).ok


def test_a_publish_the_broker_forbids_raises_at_once(vhost, consumer):
    # A user who may declare and read its reply queue but not publish to the jobs exchange.
    user, password = f"warren-test-py-{uuid.uuid4().hex}", "no-write"
    mgmt("PUT", f"/api/users/{user}", {"password": password, "tags": ""})
    try:
        mgmt("PUT", f"/api/permissions/{quoted(vhost)}/{user}",
             {"configure": "^warren\\.reply\\.", "write": "^warren\\.reply\\.", "read": ".*"})
        url = f"amqp://{user}:{password}@{amqp_url(vhost).split('@', 1)[1]}"
        with Client(url, reconnect_timeout=30) as client:
            started = time.monotonic()
            with pytest.raises(WarrenError, match="ACCESS_REFUSED") as e:
                client.submit("checksum", {"data": b"x"})
            assert not isinstance(e.value, Nacked), "refused, not retried until publish_timeout"
            assert client.reconnects == 0, "no reconnection waited for before raising"
            print(f"a forbidden publish: {e.value} after {time.monotonic() - started:.2f} s")
    finally:
        mgmt("DELETE", f"/api/users/{user}")


def test_closing_deletes_the_reply_queue(vhost, consumer):
    with Client(amqp_url(vhost)) as client:
        queue = client.reply_queue
        assert client.run("checksum", {"data": b"q"}).ok
    with pytest.raises(urllib.error.HTTPError) as e:
        mgmt("GET", f"/api/queues/{quoted(vhost)}/{queue}")
    assert e.value.code == 404


def test_it_installs_with_pip(tmp_path):
    venv = tmp_path / "venv"
    # The base Python's pika is visible to the venv; pip fetches the build backend (setuptools).
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    # From a copy: setuptools writes build/ and *.egg-info/ beside the sources it builds.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "clients/python", source, ignore=shutil.ignore_patterns("tests", "__pycache__", ".*cache"))
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", str(source)], check=True)
    code = "import warren_client, pathlib; print(warren_client.__version__, pathlib.Path(warren_client.__file__).parent)"
    shown = subprocess.run([str(py), "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert shown.startswith("0.1.0 ") and str(venv) in shown, shown


def test_the_package_type_checks_strictly():
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports", "warren_client"],
                         cwd=ROOT / "clients/python", capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# -- job control: deadline, priority, delay, cancel ------------------------------------------------

def test_the_envelope_and_cancel_record_are_as_the_contract_writes_them():
    # Without control the envelope is as before, field for field.
    assert json.loads(envelope("checksum", {"data": b"hi", "rounds": 1}, **control())) == \
        {"version": 1, "kind": "checksum", "job": {"data": "aGk=", "rounds": 1}}
    assert control() == {}
    now = 1_700_000_000.0
    fields = control(timeout=1.5, delay=0.25, now=now)
    assert fields == {"deadline_ms": 1_700_000_001_500, "not_before_ms": 1_700_000_000_250}
    body = envelope("checksum", {"data": b"hi"}, **fields)
    assert json.loads(body) == {"version": 1, "kind": "checksum", "deadline_ms": 1_700_000_001_500,
                                "not_before_ms": 1_700_000_000_250, "job": {"data": "aGk="}}
    assert body.startswith(b'{"version": 1, "kind": "checksum", "deadline_ms": '), "the control beside the kind"
    # Unix seconds or an aware datetime, written as integer Unix ms; a deadline rounds down and
    # a not-before up, so the job never runs outside what was asked.
    at = datetime(2024, 1, 2, 3, 4, 5, 678_900, tzinfo=timezone(timedelta(hours=2)))
    assert control(deadline=at, not_before=at) == {"deadline_ms": int(at.timestamp()) * 1000 + 678,
                                                   "not_before_ms": int(at.timestamp()) * 1000 + 679}
    assert control(deadline=12.3456, not_before=12.3451) == {"deadline_ms": 12_345, "not_before_ms": 12_346}
    assert all(type(v) is int for v in control(deadline=12.5, delay=1, now=now).values())
    for bad in ({"timeout": 1, "deadline": 2.0}, {"delay": 1, "not_before": 2.0},
                {"deadline": datetime(2024, 1, 1)}, {"timeout": -1}, {"delay": float("nan")},
                {"not_before": float("inf")}):
        with pytest.raises(ValueError):
            control(**bad)
    with pytest.raises(TypeError):
        control(deadline="tomorrow")
    assert json.loads(cancel_record(["a", "b"], 7)) == {"version": 1, "job_ids": ["a", "b"], "at_ms": 7}
    with pytest.raises(ValueError):
        cancel_record(["a", ""], 7)
    with pytest.raises(TypeError):
        cancel_record([["a"]], 7)  # type: ignore[list-item]


def test_a_job_past_its_deadline_is_answered_deadline_exceeded_and_one_within_it_runs(vhost, consumer):
    job = {"data": b"deadline", "rounds": 1}
    with Client(amqp_url(vhost)) as client:
        past = client.submit("checksum", job, deadline=time.time() - 1)
        past_datetime = client.submit("checksum", job, deadline=datetime.now(timezone.utc) - timedelta(seconds=1))
        within = client.submit("checksum", job, timeout=60)
        for job_id in (past, past_datetime):
            r = client.result(job_id, timeout=30)
            assert not r.ok and isinstance(r.exception(), DeadlineExceeded), r
            assert isinstance(r.exception(), PermanentJobError) and r.error["type"] == "deadline_exceeded"
        r = client.result(within, timeout=30)
        assert r.ok and r.value["crc32"] == zlib.crc32(b"deadline"), r
        # run() passes the control on; its own timeout is the wait, the job's is job_timeout.
        assert isinstance(client.run("checksum", job, deadline=time.time() - 1).exception(), DeadlineExceeded)
        assert client.run("checksum", job, timeout=30, job_timeout=60).ok
        for bad in ({"priority": 256}, {"priority": -1}, {"timeout": 1, "deadline": time.time() + 5},
                    {"delay": 1, "not_before": time.time() + 5}):
            with pytest.raises(ValueError):
                client.submit("checksum", job, **bad)


class RecordingClient(Client):
    """A client that notes the job id of every result in the order they arrive."""

    def __init__(self, url: str) -> None:
        self.arrivals: list[str] = []
        super().__init__(url)

    def _on_result(self, ch, method, props, body) -> None:  # type: ignore[no-untyped-def]
        self.arrivals.append(json.loads(body)["job_id"])
        super()._on_result(ch, method, props, body)


def test_high_priority_jobs_overtake_a_backlog_on_a_route_with_max_priority(vhost, tmp_path):
    env = overlay_env(tmp_path, lambda text: text.replace('queue = "warren.checksum"\n',
                                                          'queue = "warren.checksum"\nmax_priority = 10\n'))
    # A consumer started and stopped declares the topology: warren.checksum with x-max-priority.
    first = Consumer(vhost, env)
    queue = mgmt("GET", f"/api/queues/{quoted(vhost)}/warren.checksum")
    assert queue["arguments"].get("x-max-priority") == 10, queue["arguments"]
    assert first.stop() == 0, "".join(first.log)
    with RecordingClient(amqp_url(vhost)) as client:
        low = [client.submit("checksum", {"data": i.to_bytes(2, "little"), "rounds": 1}, priority=0)
               for i in range(300)]
        high = [client.submit("checksum", {"data": b"urgent" + bytes([i]), "rounds": 1}, priority=9)
                for i in range(20)]
        second = Consumer(vhost, env)
        try:
            results = {job_id: client.result(job_id, timeout=60) for job_id in high + low}
        finally:
            assert second.stop() == 0, "".join(second.log)
        assert all(r.ok for r in results.values())
        order = {job_id: i for i, job_id in enumerate(client.arrivals)}
        assert len(order) == 320
        sixtieth_low = sorted(order[j] for j in low)[59]
        last_high = max(order[j] for j in high)
        print(f"priority: the last of 20 priority-9 jobs answered as number {last_high + 1} of 320, "
              f"the 60th priority-0 one as number {sixtieth_low + 1}")
        assert last_high < sixtieth_low, (last_high, sixtieth_low)


def test_a_delayed_job_starts_no_sooner_than_asked_and_soon_after(vhost, consumer):
    with Client(amqp_url(vhost)) as client:
        before = time.time()
        job_id = client.submit("checksum", {"data": b"later", "rounds": 1}, delay=2.0)
        after = time.time()
        r = client.result(job_id, timeout=30)
        assert r.ok and r.value["crc32"] == zlib.crc32(b"later"), r
        started_us = r.timing["started_at_us"]
        print(f"delay 2 s: started {started_us / 1e6 - (before + 2.0):.3f} s after its not-before")
        assert started_us >= (before + 2.0) * 1e6, "started before its not-before"
        assert started_us <= (after + 2.0 + 3.0) * 1e6, "started more than 3 s after its not-before"


def test_cancelled_jobs_are_answered_cancelled_and_unknown_ids_are_no_error(vhost, consumer):
    with Client(amqp_url(vhost)) as client:
        # Two delayed jobs, cancelled in one record while they wait in the delay queues.
        a = client.submit("checksum", {"data": b"a", "rounds": 1}, delay=3)
        b = client.submit("checksum", {"data": b"b", "rounds": 1}, delay=3)
        client.cancel(a, b)
        for job_id in (a, b):
            r = client.result(job_id, timeout=30)
            assert not r.ok and isinstance(r.exception(), Cancelled), r
            assert (r.error["type"], r.error["class"]) == ("cancelled", "permanent")
        client.cancel("unknown-id")
        client.cancel()  # nothing to cancel, nothing published
        assert client.run("checksum", {"data": b"after", "rounds": 1}).ok
        with pytest.raises(ValueError):
            client.cancel("")
        with pytest.raises(ValueError):
            client.cancel("some-id", "")
        # The client goes on after refusing.
        assert client.run("checksum", {"data": b"still", "rounds": 1}).ok


def test_cancelling_before_any_worker_declared_the_stream_is_unroutable(vhost):
    with Client(amqp_url(vhost)) as client:
        with pytest.raises(Unroutable, match="no cancel stream 'warren.cancels'.*start a Warren consumer"):
            client.cancel("some-id")
        with Client(amqp_url(vhost), cancel_stream="") as off:
            with pytest.raises(WarrenError, match="cancelling is off"):
                off.cancel("some-id")


def test_python_kinds_hosted_by_the_worker_answer_the_client(vhost):
    """examples/python/media_kinds.py (Pillow and numpy) served by the Rust worker's children."""
    import base64
    import io

    from PIL import Image

    from warren_client import PermanentJobError

    env = {"WARREN__PYTHON__MODULES": "media_kinds",
           "WARREN__PYTHON__PATH": f"{ROOT / 'examples' / 'python'},{ROOT / 'clients' / 'python'}",
           "WARREN__CONSUMER__KINDS": "py.thumbnail,py.normalize"}
    consumer = Consumer(vhost, env)
    try:
        with Client(amqp_url(vhost)) as client:
            photo = (ROOT / "samples" / "images" / "china.jpg").read_bytes()
            r = client.run("py.thumbnail", {"image": photo, "size": 128}, timeout=60)
            assert r.ok, r
            thumb_job = r.job_id
            thumb = Image.open(io.BytesIO(base64.b64decode(r.value["image"])))
            assert thumb.format == "JPEG" and max(thumb.size) == 128 and (r.value["width"], r.value["height"]) == thumb.size
            r = client.run("py.normalize", {"vector": [3, 4]}, timeout=60)
            assert r.ok and r.value == {"vector": [0.6, 0.8], "norm": 5.0}, r
            r = client.run("py.normalize", {"vector": []}, timeout=60)
            assert isinstance(r.exception(), PermanentJobError) and r.error["type"] == "invalid_params", r
            r = client.run("py.thumbnail", {"image": b"not an image"}, timeout=60)
            assert r.error["type"] == "corrupt_image", r
            many = [client.submit("py.normalize", {"vector": [i, 1]}) for i in range(200)]
            assert all(client.result(j, timeout=60).ok for j in many)
            # Each kind logs just before it answers: every line still carries its own job's id.
            thumbs = [client.submit("py.thumbnail", {"image": photo, "size": 64}) for _ in range(40)]
            assert all(client.result(j, timeout=60).ok for j in thumbs)
    finally:
        assert consumer.stop() == 0, "".join(consumer.log)
    lines = [line for line in consumer.log if "thumbnail 128x" in line]
    assert lines and thumb_job in lines[0], f"a kind's log line reaches the worker's log with its job id: {lines}"
    ids = [m.group(1) if (m := re.search(r"job_id=(\S*)", line)) else None
           for line in consumer.log if "thumbnail 64x" in line]
    assert sorted(ids) == sorted(thumbs), f"each line with its own job's id: {ids}"


def test_references_go_as_ref_objects_and_output_to_beside_the_kind():
    from warren_client import Ref

    body = json.loads(envelope("image.resize", {"image": Ref("s3://photos/a.jpg"), "width": 8},
                               output_to="s3://thumbs/out/"))
    assert body == {"version": 1, "kind": "image.resize", "output_to": "s3://thumbs/out/",
                    "job": {"image": {"ref": "s3://photos/a.jpg"}, "width": 8}}
    assert repr(Ref("https://h/p?X-Amz-Signature=secret")) == "Ref('https://h/p')", "no signature shown"
    for bad in ["ftp://x/y", "s3://bucket", "file://relative/a", "https://", "s3://b/k\n"]:
        with pytest.raises(ValueError):
            Ref(bad)
    with pytest.raises(ValueError):
        envelope("image.resize", {}, output_to="https://h/out/")


def test_a_reference_is_fetched_and_the_output_written_under_output_to(vhost, tmp_path):
    """file:// references (the worker's store.file_roots) for a Rust kind and a Python kind; the
    output written where output_to says, the result naming it; a missing file is RefNotFound."""
    import io

    from PIL import Image

    from warren_client import Ref, RefNotFound

    photo = ROOT / "samples" / "images" / "china.jpg"
    (tmp_path / "in.jpg").write_bytes(photo.read_bytes())
    env = {"WARREN__STORE__FILE_ROOTS": str(tmp_path),
           "WARREN__PYTHON__MODULES": "media_kinds",
           "WARREN__PYTHON__PATH": f"{ROOT / 'examples' / 'python'},{ROOT / 'clients' / 'python'}",
           "WARREN__CONSUMER__KINDS": "image.resize,py.thumbnail"}
    consumer = Consumer(vhost, env)
    try:
        with Client(amqp_url(vhost)) as client:
            source = Ref(f"file://{tmp_path}/in.jpg")
            r = client.run("image.resize", {"image": source, "width": 64, "height": 64}, timeout=60,
                           output_to=f"file://{tmp_path}/out/")
            assert r.ok, r
            url = r.ref("image")
            assert url == f"file://{tmp_path}/out/{r.job_id}/0.jpg", r.value
            stored = (tmp_path / "out" / r.job_id / "0.jpg").read_bytes()
            assert r.value["image"]["size"] == len(stored)
            assert max(Image.open(io.BytesIO(stored)).size) == 64
            with pytest.raises(ValueError):
                r.image()
            # A Python kind's bytes field by reference: the worker fetches it for the child.
            r = client.run("py.thumbnail", {"image": source, "size": 32}, timeout=60)
            assert r.ok and max(Image.open(io.BytesIO(r.image())).size) == 32, r
            # ... and its output's bytes written under output_to, as a Rust kind's are; the
            # other members of its output stay as the kind wrote them.
            r = client.run("py.thumbnail", {"image": source, "size": 48}, timeout=60,
                           output_to=f"file://{tmp_path}/py/")
            assert r.ok and r.ref("image") == f"file://{tmp_path}/py/{r.job_id}/0.jpg", r.value
            stored = (tmp_path / "py" / r.job_id / "0.jpg").read_bytes()
            assert r.value["image"]["size"] == len(stored) and max(Image.open(io.BytesIO(stored)).size) == 48
            assert max(r.value["width"], r.value["height"]) == 48, r.value
            r = client.run("image.resize", {"image": Ref(f"file://{tmp_path}/missing.jpg"), "width": 8, "height": 8},
                           timeout=60)
            assert isinstance(r.exception(), RefNotFound), r
    finally:
        assert consumer.stop() == 0, "".join(consumer.log)
