"""Fixtures: a private vhost on the real broker (made and deleted through the management API),
and the real ``warren-consumer`` binary serving it. Run by ``scripts/test.sh`` after the Rust
tests; ``WARREN_TEST_AMQP_URL``, ``WARREN_TEST_MGMT_URL`` and ``WARREN_CONSUMER_BIN`` point
elsewhere."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
AMQP = os.environ.get("WARREN_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
MGMT = os.environ.get("WARREN_TEST_MGMT_URL", "http://127.0.0.1:15672")
AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


def mgmt(method: str, path: str, body: dict | None = None, timeout: float = 30) -> object:
    """One call of the management API as guest; its JSON answer (None when empty). An error
    status raises urllib.error.HTTPError."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(MGMT + path, data=data, method=method,
                                 headers={"Authorization": AUTH, "Content-Type": "application/json"})
    answer = urllib.request.urlopen(req, timeout=timeout).read()
    return json.loads(answer) if answer else None


def quoted(segment: str) -> str:
    """A path segment of the management API (a vhost's name, say), percent-encoded."""
    return urllib.parse.quote(segment, safe="")


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def vhost(request: pytest.FixtureRequest):
    name = f"warren-test-py-{request.node.name[:40]}-{uuid.uuid4().hex}".replace("[", "-").replace("]", "")
    enc = quoted(name)
    mgmt("PUT", f"/api/vhosts/{enc}")
    mgmt("PUT", f"/api/permissions/{enc}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    yield name
    mgmt("DELETE", f"/api/vhosts/{enc}")


def amqp_url(vhost: str) -> str:
    return f"{AMQP}/{quoted(vhost)}"


def terminate(proc: subprocess.Popen) -> int:
    """SIGTERM, 30 s to exit, then SIGKILL; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


class Consumer:
    """The warren-consumer binary on a vhost, its log kept, stopped with SIGTERM. ``env`` adds to
    (or replaces) its environment: ``overlay_env`` gives a configuration of a test's own."""

    def __init__(self, vhost: str, env: dict[str, str] | None = None) -> None:
        binary = os.environ.get("WARREN_CONSUMER_BIN", str(ROOT / "target" / "debug" / "warren-consumer"))
        if not os.path.exists(binary):
            pytest.fail(f"{binary} is not built: run `cargo build --workspace --bins` (scripts/test.sh does)")
        full_env = dict(os.environ, WARREN_CONFIG_DIR=str(ROOT / "config"), WARREN_ENV="test",
                        WARREN__BROKER__URL=amqp_url(vhost), RUST_LOG="info,ort=warn,lapin=error", NO_COLOR="1")
        full_env.update(env or {})
        self.proc = subprocess.Popen([binary], cwd=ROOT, env=full_env, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(60) or self.proc.poll() is not None:
            self.stop()
            pytest.fail("the consumer did not get ready:\n" + "".join(self.log))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            if "consumer ready" in line:
                self._ready.set()
        self._ready.set()  # it exited: no use waiting any longer

    def stop(self) -> int:
        return terminate(self.proc)


@pytest.fixture
def consumer(vhost: str):
    c = Consumer(vhost)
    yield c
    assert c.stop() == 0, "".join(c.log)


def overlay_env(tmp: pathlib.Path, edit) -> dict[str, str]:
    """The environment of a consumer whose configuration is the test overlay (config/test.toml)
    as ``edit(text)`` rewrites it: a config directory of its own beside ``tmp``, holding
    config/default.toml and the edited overlay. Routes are an array of tables, which the
    environment cannot set one key of. Relative paths in it (the model's) resolve against the
    directory's parent, ``tmp``: ``tmp/models`` links to the repository's."""
    config = tmp / "config"
    config.mkdir(parents=True, exist_ok=True)
    if not (tmp / "models").exists():
        (tmp / "models").symlink_to(ROOT / "models", target_is_directory=True)
    (config / "default.toml").write_text((ROOT / "config/default.toml").read_text())
    overlay = (ROOT / "config/test.toml").read_text()
    edited = edit(overlay)
    assert edited != overlay, "the edit changed nothing in config/test.toml"
    (config / "pytest.toml").write_text(edited)
    return {"WARREN_CONFIG_DIR": str(config), "WARREN_ENV": "pytest"}


class Console:
    """The warren-console binary on a vhost, on a free port, with a SQLite file of its own."""

    def __init__(self, vhost: str, tmp: pathlib.Path) -> None:
        binary = os.environ.get("WARREN_CONSOLE_BIN", str(ROOT / "target" / "debug" / "warren-console"))
        if not os.path.exists(binary):
            pytest.fail(f"{binary} is not built: run `cargo build --workspace --bins` (scripts/test.sh does)")
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        full_env = dict(os.environ, WARREN_CONFIG_DIR=str(ROOT / "config"), WARREN_ENV="test",
                        WARREN__BROKER__URL=amqp_url(vhost), WARREN__CONSOLE__ADDR=f"127.0.0.1:{port}",
                        WARREN__CONSOLE__DATABASE_URL=f"sqlite://{tmp / 'console.db'}", NO_COLOR="1")
        self.proc = subprocess.Popen([binary], cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def ready() -> bool:
            try:
                return urllib.request.urlopen(self.url + "/readyz", timeout=2).status == 200
            except OSError:
                return False
        wait_until("the console is ready", ready)

    def stop(self) -> int:
        return terminate(self.proc)


@pytest.fixture
def console(vhost: str, tmp_path: pathlib.Path):
    c = Console(vhost, tmp_path)
    yield c
    assert c.stop() == 0


def wait_until(what: str, condition, deadline: float = 60.0) -> None:
    until = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > until:
            pytest.fail(f"{what}: not within {deadline} s")
        time.sleep(0.1)


@contextlib.contextmanager
def memory_alarm():
    """The broker's memory alarm raised (a watermark of one byte), so it blocks every publishing
    connection, until the block ends; the watermark found is restored even when the test fails."""
    found = rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().").strip()
    # A relative watermark prints as a float, an absolute one as {absolute,N}.
    if found.startswith("{absolute,"):
        restore = ["absolute", found[len("{absolute,"):].rstrip("}").strip()]
    else:
        try:
            restore = [str(float(found))]
        except ValueError:
            restore = ["0.4"]

    def alarms() -> str:
        return subprocess.run(["rabbitmq-diagnostics", "-q", "alarms"], capture_output=True, text=True).stdout.lower()

    rabbitmqctl("set_vm_memory_high_watermark", "absolute", "1")
    try:
        wait_until("the memory alarm goes off", lambda: "memory" in alarms())
        yield
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", *restore)
    wait_until("the memory alarm clears", lambda: "memory" not in alarms())
