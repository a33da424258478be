"""``meshcheck up`` as the user runs it: a subprocess with OS-assigned ports, driven over HTTP, stopped by Ctrl-C.

The command runs as ``python -m pytest_meshcheck.cli up --gateway-port 0 --chaos-port 0`` (the console
script's entry point) with a private ``TMPDIR``, so its state files and work directory can be checked
without seeing other meshes on the machine. Every process is stopped by its PID in a ``finally``.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from _proc_helpers import alive as _alive
from _proc_helpers import children as _children

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
        assert len(children) == 13 + 2  # echo workloads, Envoy, Prometheus
        assert len(list(running.state_root.glob("*.json"))) == 1
        running.proc.send_signal(signal.SIGINT)
        assert running.proc.wait(15) == 0
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
