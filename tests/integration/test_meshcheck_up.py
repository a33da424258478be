"""``meshcheck up`` as the user runs it: a subprocess with OS-assigned ports, driven over HTTP, stopped by Ctrl-C.

The command runs as ``python -m pytest_meshcheck.cli up --gateway-port 0 --chaos-port 0`` (the console
script's entry point) with a private ``TMPDIR``, so its state files and work directory can be checked
without seeing other meshes on the machine. Every process is stopped by its PID in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from _proc_helpers import alive as _alive
from _proc_helpers import children as _children

from pytest_meshcheck.errors import MeshTimeoutError
from pytest_meshcheck.local.process import ProcessGroup
from pytest_meshcheck.local.prometheus import PrometheusServer, free_port

pytestmark = [pytest.mark.envoy, pytest.mark.prometheus]

GATEWAY_ROUTES = {
    "/api/catalog": "catalog-service",
    "/api/orders": "order-service",
    "/api/payments": "payment-service",
    "/api/inventory": "inventory-service",
}
_URL = re.compile(r"^\s+(gateway|chaos API|sidecar|prometheus|envoy admin)\s+(http://127\.0\.0\.1:\d+)")
_READY = re.compile(r"local mesh ready in (\d+\.\d+)s \(Istio")


@dataclass
class Up:
    proc: subprocess.Popen[str]
    state_root: Path
    urls: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    ready_printed: float = 0.0  # what the command says
    ready_wall: float = 0.0  # from spawning the process to the ready line


def _read_lines_until(proc: subprocess.Popen[str], done: re.Pattern[str], timeout: float) -> list[str]:
    """Lines of stdout up to and including one matching ``done``, read from the raw pipe.

    Reading the descriptor directly (not the buffered file object) keeps ``select`` truthful: a line
    already in a Python buffer would otherwise wait for more bytes that never come.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    lines: list[str] = []
    pending = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                lines.append(raw.decode(errors="replace"))
                if done.search(lines[-1]):
                    return lines
    raise AssertionError(f"meshcheck up did not print {done.pattern!r} within {timeout}s; got: {lines}")


def _start(tmp: Path, *args: str) -> Up:
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    with (tmp / "stderr.txt").open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_meshcheck.cli", "up", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    up = Up(proc, tmp / f"pytest-meshcheck-{os.getuid()}")
    try:
        up.lines = _read_lines_until(proc, re.compile(r"press Ctrl-C to stop"), timeout=30)
    except BaseException as exc:
        _stop(proc)
        raise AssertionError(f"{exc}\nstderr:\n{(tmp / 'stderr.txt').read_text()}") from exc
    up.ready_wall = time.monotonic() - t0
    for line in up.lines:
        if m := _URL.match(line):
            up.urls[m.group(1)] = m.group(2)
        if m := _READY.search(line):
            up.ready_printed = float(m.group(1))
    return up


def _stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    running = _start(tmp_path_factory.mktemp("up"), "--gateway-port", "0", "--chaos-port", "0")
    try:
        yield running
    finally:
        _stop(running.proc)


@pytest.fixture
def client(up: Up) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c
        # Whatever a test did, the next one starts with no fault.
        active = c.get(f"{up.urls['chaos API']}/api/chaos/scenarios").json()
        for service in GATEWAY_ROUTES.values():
            if any(instance.startswith(f"{service}-") for instance in active):
                c.delete(f"{up.urls['chaos API']}/api/chaos/scenarios/{service}")
        assert c.get(f"{up.urls['chaos API']}/api/chaos/scenarios").json() == {}


# ------------------------------------------------------------------------------------------------ start


def test_up_reports_ready_and_prints_every_url(up: Up, client: httpx.Client) -> None:
    # How fast it gets ready is a figure of bench/bench_timings.py (meshcheck_up_ready_*), not a test.
    print(f"\nmeshcheck up: ready printed {up.ready_printed:.2f}s; spawn to ready line {up.ready_wall:.2f}s")
    assert set(up.urls) == {"gateway", "chaos API", "sidecar", "prometheus", "envoy admin"}
    assert len(set(up.urls.values())) == 5  # OS-assigned, all distinct, none is port 0
    assert not any(u.endswith(":0") for u in up.urls.values())
    assert up.ready_printed > 0  # the ready line carries its start-up time
    assert [line for line in up.lines if "local mesh ready" in line] == [
        next(line for line in up.lines if _READY.search(line))
    ]
    gateway_line = next(line for line in up.lines if line.lstrip().startswith("gateway"))
    assert gateway_line.endswith(f"({', '.join(GATEWAY_ROUTES)})")
    assert client.get(up.urls["prometheus"] + "/-/ready").status_code == 200
    assert client.get(up.urls["envoy admin"] + "/ready").text.strip() == "LIVE"
    assert client.get(up.urls["chaos API"] + "/api/chaos/scenarios").json() == {}


def test_gateway_reaches_every_service(up: Up, client: httpx.Client) -> None:
    for prefix, service in GATEWAY_ROUTES.items():
        r = client.get(f"{up.urls['gateway']}{prefix}/1")
        assert r.status_code == 200, (prefix, r.text)
        assert r.headers["x-meshcheck-service"] == service
        assert r.json()["namespace"] == "platform-core"


# ------------------------------------------------------------------------------------------------ chaos API


@pytest.mark.parametrize(("error_type", "status"), [(None, 500), ("HTTP_503", 503)])
def test_chaos_error_fails_orders_until_deleted(
    up: Up, client: httpx.Client, error_type: str | None, status: int
) -> None:
    chaos, gateway = up.urls["chaos API"], up.urls["gateway"]
    body: dict[str, object] = {"service": "order-service", "errorRate": 1.0}
    if error_type is not None:
        body["errorType"] = error_type
    r = client.post(f"{chaos}/api/chaos/error", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["spec"] == {"status": status, "probability": 1.0}
    assert len(r.json()["instances"]) == 4
    for _ in range(3):
        failed = client.get(f"{gateway}/api/orders")
        assert failed.status_code == status
        assert failed.headers["x-meshcheck-fault"] == "error"
        # The platform policy retries 5xx 3 times, and every attempt met the fault.
        assert failed.headers["x-envoy-attempt-count"] == "4"
    assert client.get(f"{gateway}/api/catalog").status_code == 200  # other services unaffected

    r = client.delete(f"{chaos}/api/chaos/scenarios/order-service")
    assert r.status_code == 200
    assert r.json()["cleared"] == "order-service"
    assert [client.get(f"{gateway}/api/orders").status_code for _ in range(5)] == [200] * 5


def test_chaos_reset_fails_orders_until_deleted(up: Up, client: httpx.Client) -> None:
    chaos, gateway = up.urls["chaos API"], up.urls["gateway"]
    r = client.post(
        f"{chaos}/api/chaos/error", json={"service": "order-service", "errorRate": 1.0, "errorType": "RESET"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["applied"] == "reset"
    failed = client.get(f"{gateway}/api/orders")
    assert failed.status_code == 503
    assert "reset" in failed.text
    assert "x-meshcheck-service" not in failed.headers  # no workload answered
    assert client.delete(f"{chaos}/api/chaos/scenarios/order-service").status_code == 200
    assert [client.get(f"{gateway}/api/orders").status_code for _ in range(5)] == [200] * 5


def test_chaos_latency_slows_responses_until_deleted(up: Up, client: httpx.Client) -> None:
    chaos, gateway = up.urls["chaos API"], up.urls["gateway"]

    def get() -> tuple[float, str | None]:
        """Seconds the request took, and the fault the workload says it applied (None: no fault)."""
        t0 = time.monotonic()
        r = client.get(f"{gateway}/api/catalog")
        assert r.status_code == 200
        return time.monotonic() - t0, r.headers.get("x-meshcheck-fault")

    # Whether a response was delayed is read from the workload's fault header, not from an upper bound on
    # wall-clock time, which a loaded machine breaks; the latencies are figures of bench/bench_timings.py.
    assert [get()[1] for _ in range(3)] == [None] * 3
    r = client.post(f"{chaos}/api/chaos/latency", json={"service": "catalog-service", "delayMs": 400})
    assert r.status_code == 200, r.text
    assert r.json()["spec"] == {"delay_ms": 400, "probability": 1.0}
    delayed = [get() for _ in range(3)]
    assert [fault for _, fault in delayed] == ["delay"] * 3
    # A lower bound: load can only make a response later, so this cannot flake.
    assert min(took for took, _ in delayed) >= 0.4
    assert client.delete(f"{chaos}/api/chaos/scenarios/catalog-service").status_code == 200
    assert [get()[1] for _ in range(3)] == [None] * 3


BAD_REQUESTS = [
    ("POST", "/api/chaos/error", b"{not json", 400, "must be JSON"),
    ("POST", "/api/chaos/error", b"[1, 2]", 400, "must be a JSON object"),
    ("POST", "/api/chaos/error", b'{"errorRate": 1}', 400, "'service' is required"),
    ("POST", "/api/chaos/error", b'{"service": "nope", "errorRate": 1}', 404, "unknown service 'nope'"),
    ("POST", "/api/chaos/error", b'{"service": "order-service", "errorRate": "all"}', 400,
     "'errorRate' must be a number"),
    ("POST", "/api/chaos/error", b'{"service": "order-service", "errorRate": 1.5}', 400, "outside 0.0-1.0"),
    ("POST", "/api/chaos/error", b'{"service": "order-service", "errorRate": 1, "errorType": "HTTP_9"}', 400,
     "HTTP_<status>"),
    ("POST", "/api/chaos/latency", b'{"service": "order-service", "delayMs": -5}', 400, "negative"),
    ("POST", "/api/chaos/latency", b'{"service": "order-service"}', 400, "'delayMs' must be a number"),
    ("DELETE", "/api/chaos/scenarios/nope", b"", 404, "unknown service 'nope'"),
    ("POST", "/api/chaos/error", b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    ("POST", "/api/chaos/error", b'{"service": "order-service", "errorRate": 0.5, "status": 503}', 400,
     "unknown field(s) 'status'; accepted fields: service, errorRate, errorType"),
    ("POST", "/api/chaos/latency", b'{"service": "order-service", "delayMs": 5, "delay": 5}', 400,
     "accepted fields: service, delayMs, probability"),
]  # fmt: skip


def test_chaos_api_bad_input_is_refused_with_a_message_and_changes_nothing(up: Up, client: httpx.Client) -> None:
    chaos = up.urls["chaos API"]
    # A fault already in force must survive every bad request.
    r = client.post(
        f"{chaos}/api/chaos/error", json={"service": "order-service", "errorRate": 1.0, "errorType": "RESET"}
    )
    assert r.status_code == 200
    before = client.get(f"{chaos}/api/chaos/scenarios").json()
    assert len(before) == 4
    for method, path, payload, status, message in BAD_REQUESTS:
        r = client.request(method, chaos + path, content=payload, headers={"content-type": "application/json"})
        assert (r.status_code, message in r.json()["error"]) == (status, True), (payload, r.text)
        assert client.get(f"{chaos}/api/chaos/scenarios").json() == before, payload


# ------------------------------------------------------------------------------------------------ lifecycle


def test_ctrl_c_stops_up_and_leaves_no_process(tmp_path: Path) -> None:
    running = _start(tmp_path, "--gateway-port", "0", "--chaos-port", "0", "--no-policies")
    try:
        children = _children(running.proc.pid)
        # Workload hosts (one per core, at most one per service), the client's Envoy, the 4 order-service
        # pods' Envoys, Prometheus.
        hosts = min(4, max(1, os.cpu_count() or 1))
        assert len(children) == hosts + 5 + 1
        assert len(list(running.state_root.glob("*.json"))) == 1
        # Right after ready, while the first-scrape wait (~5.5 s after start) still runs. The stop time is
        # a figure of bench/bench_timings.py (meshcheck_up_ctrl_c_to_exit_s); 10 s is only a hang guard.
        t0 = time.monotonic()
        running.proc.send_signal(signal.SIGINT)
        assert running.proc.wait(10) == 0
        print(f"\nmeshcheck up: Ctrl-C right after ready to exit {time.monotonic() - t0:.2f}s")
        assert running.proc.stdout is not None
        assert "meshcheck: stopping" in running.proc.stdout.read()
        assert [p for p in children if _alive(p)] == []
        assert list(running.state_root.iterdir()) == []  # state file and work directory removed
    finally:
        _stop(running.proc)


@pytest.mark.parametrize("option", ["--chaos-port", "--gateway-port"])
def test_busy_port_fails_fast_with_a_clear_message(tmp_path: Path, option: str) -> None:
    other = "--gateway-port" if option == "--chaos-port" else "--chaos-port"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "TMPDIR": str(tmp_path)}
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_meshcheck.cli", "up", option, str(port), other, "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            _stop(proc)
        took = time.monotonic() - t0
    print(f"\n{option} busy: failed after {took:.2f}s")
    assert proc.returncode == 1
    assert f"127.0.0.1:{port} is busy" in err
    assert option in err
    assert "ready" not in out
    state_root = tmp_path / f"pytest-meshcheck-{os.getuid()}"
    assert not state_root.exists() or list(state_root.iterdir()) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line mentions ``text`` (the test's TMPDIR, in every child's config path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and _alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _spawn_in_own_group(
    tmp: Path, *args: str, sigint_ignored: bool = False, env_extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``meshcheck up`` as the leader of a new process group, like a script's job.

    ``sigint_ignored`` reproduces a non-interactive shell's background job (``meshcheck up &``), which
    starts with SIGINT ignored. Its output goes to ``tmp/output.txt``.
    """
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1", **(env_extra or {})}

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    with (tmp / "output.txt").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pytest_meshcheck.cli", "up", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=ignore_sigint if sigint_ignored else None,
        )


def _stop_everything(proc: subprocess.Popen[bytes], tmp: Path) -> None:
    """Stop ``proc`` and anything it left, each by PID, whatever the test's outcome."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for pid in _processes_mentioning(str(tmp)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_for(what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"meshcheck up exited with {proc.returncode} before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.002)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


def _orders_ok(client: httpx.Client, gateway_port: int) -> bool:
    try:
        return client.get(f"http://127.0.0.1:{gateway_port}/api/orders/1").status_code == 200
    except httpx.HTTPError:
        return False


def test_chaos_api_accepts_before_the_gateway_does(tmp_path: Path) -> None:
    # A script waits for the gateway, then posts chaos: that post must never be refused.
    gateway_port, chaos_port = _free_port(), _free_port()
    proc = _spawn_in_own_group(tmp_path, "--gateway-port", str(gateway_port), "--chaos-port", str(chaos_port))
    try:
        _wait_for("gateway connection", lambda: _accepts(gateway_port), proc)
        assert _accepts(chaos_port), "the gateway accepts connections but the chaos API refuses them"
        with httpx.Client(timeout=10.0) as client:
            _wait_for("200 from /api/orders", lambda: _orders_ok(client, gateway_port), proc)
            r = client.post(
                f"http://127.0.0.1:{chaos_port}/api/chaos/error", json={"service": "order-service", "errorRate": 1.0}
            )
            assert r.status_code == 200, r.text
            assert client.get(f"http://127.0.0.1:{gateway_port}/api/orders/1").status_code == 500
    finally:
        _stop_everything(proc, tmp_path)
    assert proc.returncode == 0


@pytest.mark.parametrize("moment", ["first child started", "gateway first answers 200"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_at_any_moment_of_start_up_stops_everything(tmp_path: Path, sig: signal.Signals, moment: str) -> None:
    # Started as a script's background job, with SIGINT ignored; the signal goes to the whole group
    # (kill -INT -PGID), as a script's "wait for the platform, then stop it" does.
    gateway_port = _free_port()
    proc = _spawn_in_own_group(tmp_path, "--gateway-port", str(gateway_port), "--chaos-port", "0", sigint_ignored=True)
    state_root = tmp_path / f"pytest-meshcheck-{os.getuid()}"
    try:
        with httpx.Client(timeout=2.0) as client:
            if moment == "first child started":
                _wait_for(moment, lambda: bool(_children(proc.pid)), proc)
            else:
                _wait_for(moment, lambda: _orders_ok(client, gateway_port), proc)
        children = _children(proc.pid)
        os.killpg(proc.pid, sig)
        t0 = time.monotonic()
        try:
            code = proc.wait(10)  # a hang guard, not a speed bound
        except subprocess.TimeoutExpired:
            pytest.fail(f"meshcheck up still runs 10 s after {sig.name} at '{moment}'")
        print(f"\n{sig.name} at '{moment}': exited {code} after {time.monotonic() - t0:.2f}s")
        assert code in (0, 130), (tmp_path / "output.txt").read_text()
        assert [p for p in children if _alive(p)] == []
        assert _processes_mentioning(str(tmp_path)) == []
        assert not state_root.exists() or list(state_root.iterdir()) == []
    finally:
        _stop_everything(proc, tmp_path)


def test_stopping_ends_the_first_scrape_wait_at_once(tmp_path: Path) -> None:
    # Stopping sets the cancel event; the wait must end then, not when the first scrape lands ~5.5 s after
    # Prometheus started (or at its timeout). No Prometheus here: nothing answers, so only cancel ends it.
    server = PrometheusServer(ProcessGroup("test", tmp_path), binary=Path("/nonexistent"))
    server.port = free_port()
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(MeshTimeoutError, match="stopped waiting"):
            server.wait_scraped(["envoy"], timeout=30.0, cancel=cancel)
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 10  # a hang guard: without cancel this waits the full 30 s


FAKE_PROMETHEUS = """#!{python}
# Answers like a Prometheus that is ready but has not scraped anything yet, and never will.
import http.server, sys
port = int(next(a for a in sys.argv if a.startswith("--web.listen-address=")).rsplit(":", 1)[1])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"Ready" if self.path.startswith("/-/ready") else b'{{"status": "success", "data": {{"result": []}}}}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def test_ctrl_c_does_not_wait_for_the_first_scrape(tmp_path: Path) -> None:
    # With a Prometheus that never scrapes, a stop that waited for the first scrape would wait for its
    # 30 s timeout: exiting within the 10 s hang guard shows that stopping ends the wait.
    fake = tmp_path / "prometheus"
    fake.write_text(FAKE_PROMETHEUS.format(python=sys.executable))
    fake.chmod(0o755)
    proc = _spawn_in_own_group(
        tmp_path, "--gateway-port", "0", "--chaos-port", "0", env_extra={"PYTEST_MESHCHECK_PROMETHEUS_BIN": str(fake)}
    )
    output = tmp_path / "output.txt"
    try:
        _wait_for("the ready banner", lambda: "press Ctrl-C to stop" in output.read_text(), proc)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail("meshcheck up still runs 10 s after Ctrl-C: it waits for Prometheus' first scrape")
        print(f"\nCtrl-C with the first scrape still awaited: exited {code} after {time.monotonic() - t0:.2f}s")
        assert code == 0
        assert "prometheus has scraped" not in output.read_text()
        assert _processes_mentioning(str(tmp_path)) == []
    finally:
        _stop_everything(proc, tmp_path)


TOPOLOGY = """
namespace: shop
services:
  - name: orders
  - name: payments
gateway:
  routes:
    - {prefix: /shop/orders, service: orders}
    - {prefix: /pay, service: payments}
"""


def test_topology_banner_lists_its_gateway_routes_and_says_ready_once(tmp_path: Path) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY)
    running = _start(tmp_path, "--gateway-port", "0", "--chaos-port", "0", "--no-policies", "--topology", str(topology))
    try:
        assert len([line for line in running.lines if "local mesh ready" in line]) == 1, running.lines
        gateway_line = next(line for line in running.lines if line.lstrip().startswith("gateway"))
        assert gateway_line.endswith("(/shop/orders, /pay)"), gateway_line
        r = httpx.get(f"{running.urls['gateway']}/pay/1", timeout=10.0)
        assert (r.status_code, r.headers["x-meshcheck-service"]) == (200, "payments")
    finally:
        _stop(running.proc)
