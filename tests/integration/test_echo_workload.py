"""The echo workload as real processes on 127.0.0.1: serving, chaos, counters, lifetime.

Each echo runs as ``python -I -S echo.py`` from the shipped files (isolated, no site-packages), exactly as in a
pod, which also proves that the bundle holds every module it imports and that they need only the standard
library. Every process is stopped by PID in a ``finally`` or a fixture.
"""

from __future__ import annotations

import atexit
import functools
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from scipy.stats import binom

from pytest_meshcheck.chaos.echo_admin import Chaos, EchoAdmin, EchoStats, ErrorFault, LatencyFault, ResetFault
from pytest_meshcheck.errors import ChaosError
from pytest_meshcheck.workload.bundle import ECHO_FILES, write_bundle
from pytest_meshcheck.workload.echo.ready import parse_ready_line

IDENTITY = ["--service", "reviews", "--version", "v2", "--instance", "reviews-v2-0", "--namespace", "bookinfo"]
READY = re.compile(r'MESHCHECK_READY \{"port": [1-9]\d*, "admin_port": [1-9]\d*, "pid": [1-9]\d*\}\n')


@dataclass
class Echo:
    proc: subprocess.Popen[bytes]
    ready_line: str
    port: int
    admin_port: int
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().decode() if ready else ""


@functools.cache
def _echo_script() -> Path:
    """The shipped echo files, laid out once per test process as a pod and the local mesh lay them out."""
    root = Path(tempfile.mkdtemp(prefix="meshcheck-echo-bundle-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return write_bundle(ECHO_FILES, root) / "echo.py"


def _command(*extra: str, identity: list[str] = IDENTITY) -> list[str]:
    return [sys.executable, "-I", "-S", str(_echo_script()), *identity, *extra]


def start_echo(tmp_path: Path, *extra: str) -> Echo:
    stderr_path = tmp_path / f"echo-{time.monotonic_ns()}.stderr"
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(_command(*extra), stdout=subprocess.PIPE, stderr=err)
    line = _read_line(proc, timeout=10)
    if not line:
        stop(proc)
        pytest.fail(f"echo printed no ready line; stderr:\n{stderr_path.read_text()}")
    info = parse_ready_line(line)
    assert info.pid == proc.pid
    return Echo(proc, line, info.port, info.admin_port, stderr_path)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def tmp_echo(tmp_path: Path) -> Iterator[Echo]:
    """A fresh echo for tests that need clean counters or kill it."""
    e = start_echo(tmp_path)
    try:
        yield e
    finally:
        stop(e.proc)


@pytest.fixture(scope="module")
def shared_echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Echo]:
    e = start_echo(tmp_path_factory.mktemp("echo"))
    try:
        yield e
    finally:
        stop(e.proc)


@pytest.fixture
def admin(shared_echo: Echo) -> Iterator[EchoAdmin]:
    with EchoAdmin(shared_echo.admin_url) as a:
        a.clear_chaos()
        yield a
        a.clear_chaos()


@pytest.fixture
def client(shared_echo: Echo) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_echo.url, timeout=10, trust_env=False) as c:
        yield c


def _diff(after: EchoStats, before: EchoStats) -> dict[str, object]:
    """Changes of every counter between two snapshots (missing status codes count as 0)."""
    codes = set(after.responses_by_status) | set(before.responses_by_status)
    return {
        "received": after.requests_received - before.requests_received,
        "responses": after.responses_total - before.responses_total,
        "by_status": {
            c: after.responses_by_status.get(c, 0) - before.responses_by_status.get(c, 0)
            for c in codes
            if after.responses_by_status.get(c, 0) != before.responses_by_status.get(c, 0)
        },
        "faults": {k: after.faults_injected[k] - before.faults_injected[k] for k in after.faults_injected},
        "overrides": {k: after.query_overrides[k] - before.query_overrides[k] for k in after.query_overrides},
        "override_requests": after.override_requests - before.override_requests,
        "connections": after.connections - before.connections,
        "abandoned": after.abandoned - before.abandoned,
    }


def _alive(pid: int) -> bool:
    """Running and not a zombie (an exited process nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in (b"Z", b"X")


def _wait_gone(pid: int, timeout: float) -> float:
    start = time.monotonic()
    while _alive(pid) and time.monotonic() - start < timeout:
        time.sleep(0.01)
    return time.monotonic() - start


# --- start-up, identity, keep-alive --------------------------------------------------------------------


def test_ready_line_is_exactly_one_json_line(shared_echo: Echo) -> None:
    assert READY.fullmatch(shared_echo.ready_line), shared_echo.ready_line
    doc = json.loads(shared_echo.ready_line.split(" ", 1)[1])
    assert list(doc) == ["port", "admin_port", "pid"]
    assert doc["pid"] == shared_echo.proc.pid
    assert doc["port"] != doc["admin_port"]


def test_identity_headers_and_body(client: httpx.Client) -> None:
    r = client.get("/some/path?x=1", headers={"x-envoy-attempt-count": "3"})
    assert r.status_code == 200
    assert r.headers["x-meshcheck-service"] == "reviews"
    assert r.headers["x-meshcheck-version"] == "v2"
    assert r.headers["x-meshcheck-instance"] == "reviews-v2-0"
    assert r.headers["content-type"] == "application/json"
    assert "x-meshcheck-fault" not in r.headers
    assert r.json() == {
        "service": "reviews",
        "version": "v2",
        "instance": "reviews-v2-0",
        "namespace": "bookinfo",
        "method": "GET",
        "path": "/some/path",
        "x-envoy-attempt-count": "3",
    }
    r = client.request("DELETE", "/other")
    assert r.json()["method"] == "DELETE"
    assert "x-envoy-attempt-count" not in r.json()


def test_keep_alive_serves_many_requests_on_one_connection(shared_echo: Echo, admin: EchoAdmin) -> None:
    before = admin.stats()
    conn = http.client.HTTPConnection("127.0.0.1", shared_echo.port, timeout=10)
    try:
        conn.connect()
        sock = conn.sock
        paths = []
        for i in range(6):
            if i % 3 == 1:
                conn.request("POST", f"/k{i}", body=b"x" * 5000)
            elif i % 3 == 2:
                conn.request("PUT", f"/k{i}", body=iter([b"abc", b"d" * 3000]), encode_chunked=True)
            else:
                conn.request("GET", f"/k{i}")
            resp = conn.getresponse()
            assert resp.status == 200
            assert not resp.will_close
            paths.append(json.loads(resp.read())["path"])
            assert conn.sock is sock, "the client had to reconnect"
    finally:
        conn.close()
    assert paths == [f"/k{i}" for i in range(6)]
    diff = _diff(admin.stats(), before)
    assert diff["connections"] == 1
    assert diff["responses"] == 6
    assert diff["by_status"] == {200: 6}


def test_pipelined_requests_are_answered_in_order(shared_echo: Echo) -> None:
    with socket.create_connection(("127.0.0.1", shared_echo.port), timeout=10) as s:
        s.sendall(
            b"GET /p1?delay=50ms HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /p2 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /p3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert re.findall(rb'"path":"(/p\d)"', data) == [b"/p1", b"/p2", b"/p3"]


# --- chaos ---------------------------------------------------------------------------------------------

N_FIXED = 20


def test_chaos_error_probability_one_and_zero(admin: EchoAdmin, client: httpx.Client) -> None:
    admin.set_chaos(error=ErrorFault(status=503, probability=1.0))
    before = admin.stats()
    responses = [client.get(f"/e{i}") for i in range(N_FIXED)]
    assert [r.status_code for r in responses] == [503] * N_FIXED
    assert all(r.headers["x-meshcheck-fault"] == "error" for r in responses)
    assert all(r.headers["x-meshcheck-instance"] == "reviews-v2-0" for r in responses)
    assert _diff(admin.stats(), before)["faults"] == {"error": N_FIXED, "delay": 0, "reset": 0}

    admin.set_chaos(error=ErrorFault(status=503, probability=0.0))
    before = admin.stats()
    assert [client.get("/").status_code for _ in range(N_FIXED)] == [200] * N_FIXED
    assert _diff(admin.stats(), before)["faults"] == {"error": 0, "delay": 0, "reset": 0}


def test_chaos_error_limit_fails_the_first_requests_then_serves(admin: EchoAdmin, client: httpx.Client) -> None:
    admin.set_chaos(error=ErrorFault(status=500, probability=1.0, limit=3))
    before = admin.stats()
    assert [client.get(f"/l{i}").status_code for i in range(6)] == [500, 500, 500, 200, 200, 200]
    assert _diff(admin.stats(), before)["faults"] == {"error": 3, "delay": 0, "reset": 0}
    assert httpx.get(f"{admin.base_url}/chaos").json()["errors_left"] == 0
    # A new state is a new fault: its limit counts from the start again.
    admin.set_chaos(error=ErrorFault(status=500, probability=1.0, limit=1))
    assert [client.get("/").status_code for _ in range(2)] == [500, 200]
    admin.clear_chaos()


def test_chaos_latency_probability_one_and_zero(admin: EchoAdmin, client: httpx.Client) -> None:
    admin.set_chaos(latency=LatencyFault(delay_ms=200, probability=1.0))
    for _ in range(3):
        start = time.monotonic()
        r = client.get("/slow")
        assert time.monotonic() - start >= 0.2
        assert r.status_code == 200
        assert r.headers["x-meshcheck-fault"] == "delay"

    # A 2 s delay at probability 0: ten requests together must take less than one delay.
    admin.set_chaos(latency=LatencyFault(delay_ms=2000, probability=0.0))
    before = admin.stats()
    start = time.monotonic()
    statuses = [client.get("/fast").status_code for _ in range(10)]
    assert time.monotonic() - start < 2.0
    assert statuses == [200] * 10
    assert _diff(admin.stats(), before)["faults"] == {"error": 0, "delay": 0, "reset": 0}


def test_latency_then_error_apply_together(admin: EchoAdmin, client: httpx.Client) -> None:
    admin.set_chaos(error=ErrorFault(status=500), latency=LatencyFault(delay_ms=100))
    start = time.monotonic()
    r = client.get("/both")
    assert time.monotonic() - start >= 0.1
    assert r.status_code == 500
    assert r.headers["x-meshcheck-fault"] == "delay,error"


def _raw_get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        return s.recv(65536)


def test_chaos_reset_probability_one_and_zero(shared_echo: Echo, admin: EchoAdmin) -> None:
    admin.set_chaos(reset=ResetFault(probability=1.0), error=ErrorFault(status=503))
    before = admin.stats()
    # A raw socket tells RST (ECONNRESET) from FIN (recv returns b"") and from a response.
    for _ in range(5):
        with pytest.raises(ConnectionResetError):
            _raw_get(shared_echo.port, "/rst")
    with httpx.Client(base_url=shared_echo.url, timeout=10, trust_env=False) as c, pytest.raises(httpx.TransportError):
        c.get("/rst")
    diff = _diff(admin.stats(), before)
    assert diff["faults"] == {"error": 0, "delay": 0, "reset": 6}, "reset must win over error"
    assert diff["received"] == 6
    assert diff["responses"] == 0

    admin.set_chaos(reset=ResetFault(probability=0.0))
    for _ in range(5):
        assert _raw_get(shared_echo.port, "/ok").startswith(b"HTTP/1.1 200 OK\r\n")


def test_error_rate_at_probability_half_is_binomial(admin: EchoAdmin, client: httpx.Client) -> None:
    # n = 400 Bernoulli(0.5) trials. The 99.99 % central binomial interval is [161, 239]: a correct echo
    # fails this test with probability < 1e-4; a stuck or inverted probability (0, 1, or 0.25/0.75) is far out.
    n, confidence = 400, 0.9999
    low, high = binom.interval(confidence, n, 0.5)
    admin.set_chaos(error=ErrorFault(status=503, probability=0.5))
    before = admin.stats()
    seen = Counter(client.get(f"/b{i}").status_code for i in range(n))
    assert set(seen) <= {200, 503}
    assert low <= seen[503] <= high, f"{seen[503]} errors of {n}, want [{low:.0f}, {high:.0f}]"
    diff = _diff(admin.stats(), before)
    assert diff["faults"]["error"] == seen[503]  # type: ignore[index]
    assert diff["by_status"] == {k: v for k, v in seen.items() if v}


def test_same_seed_gives_the_same_fault_sequence(tmp_path: Path) -> None:
    runs = []
    for seed in ("42", "42", "43"):
        e = start_echo(tmp_path, "--seed", seed)
        try:
            with EchoAdmin(e.admin_url) as a, httpx.Client(base_url=e.url, trust_env=False) as c:
                a.set_chaos(error=ErrorFault(status=503, probability=0.5))
                assert a.stats().seed == int(seed)
                runs.append([c.get("/").status_code for _ in range(60)])
        finally:
            stop(e.proc)
    assert runs[0] == runs[1]
    # Two different seeds agree on all 60 fair coin flips with probability 2**-60.
    assert runs[0] != runs[2]


# --- counters and metrics ------------------------------------------------------------------------------


def _metric_values(text: str) -> dict[tuple[str, str], float]:
    """``(family, distinguishing label value)`` -> value for the echo's own single-identity exposition."""
    out: dict[tuple[str, str], float] = {}
    for m in re.finditer(r"^(meshcheck_echo_\w+)\{([^}]*)\} (\S+)$", text, re.MULTILINE):
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
        assert labels["service"] == "reviews"
        assert labels["namespace"] == "bookinfo"
        key = labels.get("code") or labels.get("fault") or labels.get("override") or ""
        out[(m.group(1), key)] = float(m.group(3))
    return out


def test_counters_and_metrics_agree_with_what_the_client_saw(admin: EchoAdmin, client: httpx.Client) -> None:
    admin.set_chaos(error=ErrorFault(status=500, probability=0.3), latency=LatencyFault(delay_ms=1, probability=0.2))
    before, metrics_before = admin.stats(), _metric_values(admin.metrics_text())
    statuses: Counter[int] = Counter()
    faults: Counter[str] = Counter()
    for i in range(150):
        r = client.get("/m?codes=418:1" if i % 3 == 0 else "/m")
        statuses[r.status_code] += 1
        for fault in filter(None, r.headers.get("x-meshcheck-fault", "").split(",")):
            faults[fault] += 1
    after, metrics_after = admin.stats(), _metric_values(admin.metrics_text())
    diff = _diff(after, before)

    assert diff["by_status"] == {k: v for k, v in statuses.items() if v}
    assert diff["faults"] == {"error": faults["error"], "delay": faults["delay"], "reset": 0}
    assert faults["error"] == statuses[500]
    # Injected errors replace the overrides, so only the non-error ?codes requests count as override uses.
    assert diff["overrides"] == {"codes": statuses[418], "delay": 0, "headers": 0}
    assert diff["override_requests"] == statuses[418]
    assert diff["received"] == diff["responses"] == 150

    def delta(family: str, key: str) -> float:
        return metrics_after.get((family, key), 0.0) - metrics_before.get((family, key), 0.0)

    for code, count in statuses.items():
        assert delta("meshcheck_echo_requests_total", str(code)) == count
    for fault in ("error", "delay", "reset"):
        assert delta("meshcheck_echo_faults_injected_total", fault) == faults[fault]
    assert delta("meshcheck_echo_query_overrides_total", "codes") == statuses[418]
    assert delta("meshcheck_echo_requests_received_total", "") == 150
    assert metrics_after[("meshcheck_echo_chaos_active", "error")] == 1
    assert metrics_after[("meshcheck_echo_chaos_active", "delay")] == 1
    assert metrics_after[("meshcheck_echo_chaos_active", "reset")] == 0
    assert metrics_after[("meshcheck_echo_chaos_probability", "error")] == 0.3
    assert metrics_after[("meshcheck_echo_chaos_generation", "")] == after.chaos_generation


def test_abandoned_delayed_request_is_counted_and_not_answered(shared_echo: Echo, admin: EchoAdmin) -> None:
    before = admin.stats()
    with socket.create_connection(("127.0.0.1", shared_echo.port), timeout=10) as s:
        s.sendall(b"GET /gone?delay=500ms HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
    deadline = time.monotonic() + 5
    while (diff := _diff(admin.stats(), before))["abandoned"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert diff["abandoned"] == 1
    assert diff["received"] == 1
    time.sleep(0.6)  # past the delay: the cancelled response must never be counted
    assert _diff(admin.stats(), before)["responses"] == 0


# --- query overrides -----------------------------------------------------------------------------------


def test_query_overrides(admin: EchoAdmin, client: httpx.Client) -> None:
    before = admin.stats()
    assert client.get("/q", params={"codes": "503:1"}).status_code == 503
    assert client.get("/q", params={"codes": "200:0,429:1"}).status_code == 429
    start = time.monotonic()
    assert client.get("/q", params={"delay": "250ms"}).status_code == 200
    assert time.monotonic() - start >= 0.25
    r = client.get("/q", params={"headers": "x-a:1,x-b:two"})
    assert (r.headers["x-a"], r.headers["x-b"]) == ("1", "two")
    diff = _diff(admin.stats(), before)
    assert diff["overrides"] == {"codes": 2, "delay": 1, "headers": 1}
    assert diff["override_requests"] == 4

    for params, name in (
        ({"codes": "abc"}, "codes"),
        ({"delay": "10"}, "delay"),
        ({"headers": "content-length:1"}, "headers"),
    ):
        r = client.get("/q", params=params)
        assert r.status_code == 400
        assert r.json()["error"].startswith(f"query parameter '{name}': ")
        assert r.headers["x-meshcheck-service"] == "reviews"


# --- admin API -----------------------------------------------------------------------------------------


def test_chaos_get_put_delete_and_generation(admin: EchoAdmin) -> None:
    start = admin.get_chaos()
    assert start.chaos == Chaos()
    state = admin.set_chaos(error=ErrorFault(503, 0.5), latency=LatencyFault(200), reset=ResetFault(0.3))
    assert state.generation == start.generation + 1
    assert state.chaos == Chaos(ErrorFault(503, 0.5), LatencyFault(200, 1.0), ResetFault(0.3))
    assert admin.get_chaos() == state
    # PUT replaces the whole state.
    state = admin.set_chaos(reset=ResetFault(0.1))
    assert state.chaos == Chaos(reset=ResetFault(0.1))
    cleared = admin.clear_chaos()
    assert cleared.chaos == Chaos()
    assert cleared.generation == start.generation + 3
    assert admin.stats().chaos_generation == cleared.generation


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"error": {"status": 200}}', "'error.status'"),
        (b'{"error": {"status": 503, "probability": 2}}', "'error.probability'"),
        (b'{"latency": {"delay": 100}}', "'latency.delay'"),
        (b'{"latency": {"probability": 1}}', "'latency.delay_ms'"),
        (b'{"reset": {"probability": "high"}}', "'reset.probability'"),
        (b'{"abort": {}}', "'abort'"),
        (b"not json", "not valid JSON"),
    ],
)
def test_bad_chaos_is_rejected_naming_the_field(shared_echo: Echo, admin: EchoAdmin, body: bytes, field: str) -> None:
    admin.set_chaos(error=ErrorFault(502, 0.25))
    before = admin.get_chaos()
    r = httpx.put(f"{shared_echo.admin_url}/chaos", content=body, trust_env=False)
    assert r.status_code == 400
    assert field in r.json()["error"]
    assert admin.get_chaos() == before, "a rejected PUT must not change the state"


def test_client_raises_chaos_error_with_the_server_message(admin: EchoAdmin) -> None:
    with pytest.raises(ChaosError, match=r"HTTP 400.*'error\.status'"):
        admin.set_chaos(error=ErrorFault(status=200))
    with EchoAdmin("http://127.0.0.1:1") as dead, pytest.raises(ChaosError, match="could not read stats"):
        dead.stats()


def test_admin_health_and_unknown_paths(shared_echo: Echo, admin: EchoAdmin) -> None:
    assert admin.healthy()
    with httpx.Client(base_url=shared_echo.admin_url, trust_env=False) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/nope")
        assert r.status_code == 404
        assert "/chaos" in r.json()["error"]
        r = c.post("/stats")
        assert r.status_code == 405
        assert r.headers["allow"] == "GET"
        assert c.get("/metrics").headers["content-type"].startswith("text/plain; version=0.0.4")


# --- lifetime ------------------------------------------------------------------------------------------


def test_sigterm_exits_zero_quickly_even_with_a_request_in_flight(tmp_echo: Echo) -> None:
    with socket.create_connection(("127.0.0.1", tmp_echo.port), timeout=10) as s:
        s.sendall(b"GET /?delay=30s HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        start = time.monotonic()
        os.kill(tmp_echo.proc.pid, signal.SIGTERM)
        assert tmp_echo.proc.wait(timeout=5) == 0
        assert time.monotonic() - start < 1.0
    assert tmp_echo.proc.stdout is not None
    assert tmp_echo.proc.stdout.read() == b"", "stdout must hold only the ready line"


def test_exits_when_parent_pid_dies(tmp_path: Path) -> None:
    # The watched process is not echo's parent here, so only the poll can notice its death.
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    e = None
    try:
        e = start_echo(tmp_path, "--parent-pid", str(parent.pid))
        time.sleep(0.3)
        assert e.proc.poll() is None, "echo must keep running while the parent lives"
        parent.kill()
        parent.wait(timeout=5)
        start = time.monotonic()
        assert e.proc.wait(timeout=5) == 0
        assert time.monotonic() - start < 1.0
        assert "parent process" in e.stderr_path.read_text()
    finally:
        stop(parent)
        if e is not None:
            stop(e.proc)


def test_exits_when_its_real_parent_is_sigkilled(tmp_path: Path) -> None:
    # The parent launches echo itself and passes its own pid, as a launcher would. After SIGKILL the parent
    # stays a zombie (this test does not reap it yet), so kill(pid, 0) alone would think it still lives.
    launcher = (
        "import os, subprocess, sys, time\n"
        f"subprocess.Popen({_command()!r} + ['--parent-pid', str(os.getpid())])\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE)
    echo_pid = None
    try:
        line = _read_line(parent, timeout=10)
        assert line, "the launched echo printed no ready line"
        echo_pid = parse_ready_line(line).pid
        assert _alive(echo_pid)
        os.kill(parent.pid, signal.SIGKILL)
        took = _wait_gone(echo_pid, timeout=5)
        assert not _alive(echo_pid)
        assert took < 1.0
    finally:
        stop(parent)
        if echo_pid is not None and _alive(echo_pid):
            os.kill(echo_pid, signal.SIGKILL)


def test_dead_parent_pid_at_start_is_refused(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=10)
    r = subprocess.run(_command("--parent-pid", str(gone.pid)), capture_output=True, timeout=10, check=False)
    assert r.returncode == 1
    assert f"--parent-pid {gone.pid} is not running" in r.stderr.decode()
    assert r.stdout == b""


@pytest.mark.parametrize(
    ("extra", "identity", "message"),
    [
        ([], IDENTITY[2:], "the following arguments are required: --service"),
        (["--port", "-1"], IDENTITY, "argument --port: must be an integer 0-65535"),
        (["--bogus"], IDENTITY, "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_exit_2(extra: list[str], identity: list[str], message: str) -> None:
    r = subprocess.run(_command(*extra, identity=identity), capture_output=True, timeout=10, check=False)
    assert r.returncode == 2
    assert message in r.stderr.decode()
    assert r.stdout == b""


def test_busy_port_exits_1_naming_the_option(shared_echo: Echo) -> None:
    r = subprocess.run(
        _command("--admin-port", str(shared_echo.admin_port)), capture_output=True, timeout=10, check=False
    )
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{shared_echo.admin_port} (--admin-host/--admin-port)" in r.stderr.decode()
    assert r.stdout == b""
