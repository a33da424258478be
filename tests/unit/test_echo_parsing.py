"""Unit tests of the echo workload's pure helpers: codes, headers, chaos, metrics, CLI, ready line, HTTP parser."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import subprocess
import sys
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.procfs import proc_stat
from pytest_meshcheck.workload.echo.app import EchoApp
from pytest_meshcheck.workload.echo.chaos import (
    Chaos,
    ErrorFault,
    LatencyFault,
    ResetFault,
    decode_chaos_body,
    parse_chaos,
)
from pytest_meshcheck.workload.echo.cli import parse_args
from pytest_meshcheck.workload.echo.connection import HttpConnection
from pytest_meshcheck.workload.echo.overrides import parse_codes, parse_overrides, parse_response_headers, pick_code
from pytest_meshcheck.workload.echo.parent import parent_alive
from pytest_meshcheck.workload.echo.ready import ReadyInfo, parse_ready_line, ready_line
from pytest_meshcheck.workload.echo.replica import Identity

# --- codes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "pairs"),
    [
        ("503:1,200:1", [(503, 1), (200, 1)]),
        ("500", [(500, 1)]),
        ("200:0,418:3", [(200, 0), (418, 3)]),
        ("599:2", [(599, 2)]),
    ],
)
def test_codes_valid(spec: str, pairs: list[tuple[int, int]]) -> None:
    assert parse_codes(spec) == pairs


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("abc", "code must be an integer"),
        ("199", "200-599"),
        ("600:1", "200-599"),
        ("503:-1", "0 or more"),
        ("503:x", "weight must be an integer"),
        ("503:1:2", "want code or code:weight"),
        ("", "code must be an integer"),
        ("503:1,", "code must be an integer"),
        ("200:0,503:0", "at least one weight"),
    ],
)
def test_codes_invalid(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_codes(spec)


def test_pick_code_never_picks_zero_weight_and_follows_weights() -> None:
    rng = random.Random(7)
    pairs = [(200, 0), (503, 1), (500, 3)]
    n = 4000
    picks = [pick_code(pairs, rng) for _ in range(n)]
    assert 200 not in picks
    # 500 has probability 3/4; n=4000 gives sd = sqrt(4000*0.75*0.25) ~ 27.4. A +-5 sd band (~137) fails
    # with probability < 1e-6 for a correct picker, and a picker ignoring weights (p=1/2) lands ~1000 away.
    assert abs(picks.count(500) - 3000) < 137


# --- response headers ----------------------------------------------------------------------------------


def test_headers_valid() -> None:
    assert parse_response_headers("x-a:1,Cache-Control:no-store,x-t:a:b") == [
        ("x-a", "1"),
        ("Cache-Control", "no-store"),
        ("x-t", "a:b"),
    ]
    assert parse_response_headers("x-empty:") == [("x-empty", "")]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nocolon", "want name:value"),
        (":v", "invalid header name"),
        ("bad name:v", "invalid header name"),
        ("x-a:line\r\nx-injected:1", "printable ASCII"),
        ("x-a:caf\u00e9", "printable ASCII"),
        ("Content-Length:5", "server manages it"),
        ("connection:close", "server manages it"),
    ],
)
def test_headers_invalid(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_response_headers(spec)


# --- overrides from the query string -------------------------------------------------------------------


def test_overrides_all_three() -> None:
    got = parse_overrides("codes=503%3A1%2C200%3A3&delay=250ms&headers=x-a:1,x-b:2&other=x")
    assert got.codes == [(503, 1), (200, 3)]
    assert got.delay_s == pytest.approx(0.25)
    assert got.headers == [("x-a", "1"), ("x-b", "2")]
    assert got.used() == ["codes", "delay", "headers"]


def test_overrides_absent_or_blank_are_ignored() -> None:
    got = parse_overrides("codes=&delay=&x=1")
    assert got.used() == []


def test_overrides_first_value_wins() -> None:
    assert parse_overrides("codes=500&codes=garbage").codes == [(500, 1)]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("codes=999", "codes"),
        ("codes=200&delay=5", "delay"),
        ("delay=-1s", "delay"),
        ("delay=2h", "delay"),
        ("delay=1s&headers=oops", "headers"),
        ("codes=200:1&delay=1ms&headers=:x", "headers"),
    ],
)
def test_overrides_invalid_name_the_parameter(query: str, param: str) -> None:
    with pytest.raises(ValueError, match=f"^query parameter '{param}': "):
        parse_overrides(query)


# --- chaos documents -----------------------------------------------------------------------------------


def test_chaos_full_document_round_trips() -> None:
    doc = {
        "error": {"status": 503, "probability": 0.5},
        "latency": {"delay_ms": 200, "probability": 1.0},
        "reset": {"probability": 0.3},
    }
    chaos = parse_chaos(doc)
    assert chaos == Chaos(ErrorFault(503, 0.5), LatencyFault(200, 1.0), ResetFault(0.3))
    assert parse_chaos(chaos.to_json()) == chaos
    assert chaos.active() == {"error": 0.5, "delay": 1.0, "reset": 0.3}


def test_chaos_error_limit_round_trips_and_is_optional() -> None:
    chaos = parse_chaos({"error": {"status": 500, "limit": 3}})
    assert chaos == Chaos(ErrorFault(500, 1.0, 3))
    assert chaos.to_json() == {"error": {"status": 500, "probability": 1.0, "limit": 3}}
    assert parse_chaos(chaos.to_json()) == chaos
    assert "limit" not in Chaos(ErrorFault(500)).to_json()["error"]


def test_chaos_subset_and_default_probability() -> None:
    assert parse_chaos({"reset": {}}) == Chaos(reset=ResetFault(1.0))
    assert parse_chaos({}) == Chaos()
    assert Chaos().active() == {"error": 0.0, "delay": 0.0, "reset": 0.0}


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "chaos body must be a JSON object"),
        ({"errors": {}}, "'errors'"),
        ({"error": 503}, "'error'"),
        ({"error": {"probability": 1}}, "'error.status'"),
        ({"error": {"status": "503"}}, "'error.status'"),
        ({"error": {"status": 200}}, "'error.status'"),
        ({"error": {"status": 503.0}}, "'error.status'"),
        ({"error": {"status": True}}, "'error.status'"),
        ({"error": {"status": 503, "probability": 1.5}}, "'error.probability'"),
        ({"error": {"status": 503, "probability": -0.1}}, "'error.probability'"),
        ({"error": {"status": 503, "probability": "0.5"}}, "'error.probability'"),
        ({"error": {"status": 503, "prob": 0.5}}, "'error.prob'"),
        ({"error": {"status": 503, "limit": 0}}, "'error.limit'"),
        ({"error": {"status": 503, "limit": 2.5}}, "'error.limit'"),
        ({"error": {"status": 503, "limit": True}}, "'error.limit'"),
        ({"error": {"status": 503, "limit": "3"}}, "'error.limit'"),
        ({"latency": {"probability": 1}}, "'latency.delay_ms'"),
        ({"latency": {"delay_ms": -1}}, "'latency.delay_ms'"),
        ({"latency": {"delay_ms": 4_000_000}}, "'latency.delay_ms'"),
        ({"latency": {"delay_ms": None}}, "'latency.delay_ms'"),
        ({"reset": {"probability": False}}, "'reset.probability'"),
        ({"reset": {"status": 503}}, "'reset.status'"),
    ],
)
def test_chaos_invalid_names_the_field(doc: Any, field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(field)):
        parse_chaos(doc)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b'{"latency": {"delay_ms": NaN}}', "NaN is not allowed"),
        (b'{"reset": {"probability": Infinity}}', "Infinity is not allowed"),
        (b"\xff", "UTF-8"),
    ],
)
def test_chaos_body_decoding(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_chaos_body(body)


# --- Prometheus text format ----------------------------------------------------------------------------

_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
_SAMPLE = re.compile(rf"^({_METRIC_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)\}})? (\S+)$")
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse the text format strictly enough to catch malformed output (TYPE before samples, escapes)."""
    assert text.endswith("\n"), "exposition must end with a newline"
    typed: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert re.fullmatch(_METRIC_NAME, name), name
            assert kind in _TYPES, kind
            assert name not in typed, f"second TYPE line for {name}"
            typed[name] = kind
            continue
        match = _SAMPLE.match(line)
        assert match, f"malformed sample line: {line!r}"
        name, label_text, value = match.group(1), match.group(2) or "", match.group(len(match.groups()))
        assert name in typed, f"sample {name} has no TYPE line before it"
        if typed[name] == "counter":
            assert name.endswith("_total")
        labels = frozenset(
            (k, v.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\"))
            for k, v in re.findall(_LABEL, label_text)
        )
        key = (name, labels)
        assert key not in samples, f"duplicate series {key}"
        samples[key] = float(value)
    return samples


def test_metrics_text_parses_and_escapes_labels() -> None:
    identity = Identity(service='we"ird', version="v\\1", instance="a\nb", namespace="ns")
    app = EchoApp(identity, random.Random(1), 1)
    app.counters.by_status[503] = 4
    app.counters.faults["reset"] = 2
    app.set_chaos(Chaos(error=ErrorFault(503, 0.25)))
    samples = parse_exposition(app.metrics_text())
    base = {("service", 'we"ird'), ("version", "v\\1"), ("instance", "a\nb"), ("namespace", "ns")}
    assert samples[("meshcheck_echo_requests_total", frozenset({*base, ("code", "503")}))] == 4
    assert samples[("meshcheck_echo_requests_total", frozenset({*base, ("code", "200")}))] == 0
    assert samples[("meshcheck_echo_faults_injected_total", frozenset({*base, ("fault", "reset")}))] == 2
    assert samples[("meshcheck_echo_faults_injected_total", frozenset({*base, ("fault", "error")}))] == 0
    assert samples[("meshcheck_echo_chaos_active", frozenset({*base, ("fault", "error")}))] == 1
    assert samples[("meshcheck_echo_chaos_active", frozenset({*base, ("fault", "delay")}))] == 0
    assert samples[("meshcheck_echo_chaos_probability", frozenset({*base, ("fault", "error")}))] == 0.25
    assert samples[("meshcheck_echo_chaos_generation", frozenset(base))] == 1


# --- command line and ready line -----------------------------------------------------------------------

REQUIRED = ["--service", "s", "--version", "v1", "--instance", "s-0", "--namespace", "ns"]


def test_cli_defaults() -> None:
    opts = parse_args(REQUIRED)
    assert opts.spec.single
    (inst,) = opts.spec.instances
    assert inst.identity == Identity("s", "v1", "s-0", "ns")
    assert (inst.host, inst.port, opts.admin_host, opts.admin_port) == ("127.0.0.1", 0, "127.0.0.1", 0)
    assert opts.parent_pid is None
    assert inst.seed is None
    assert inst.calls == ()
    assert inst.outbound is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (REQUIRED[2:], "--service"),
        ([*REQUIRED, "--port", "70000"], "--port: must be an integer 0-65535"),
        ([*REQUIRED, "--admin-port", "x"], "--admin-port: must be an integer 0-65535"),
        ([*REQUIRED, "--parent-pid", "0"], "--parent-pid: must be a positive process id"),
        ([*REQUIRED[:1], "", *REQUIRED[2:]], "--service: must be non-empty printable"),
        ([*REQUIRED, "--seed", "abc"], "--seed"),
    ],
)
def test_cli_rejects_bad_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_ready_line() -> None:
    line = 'MESHCHECK_READY {"port": 1234, "admin_port": 5678, "pid": 42}\n'
    assert parse_ready_line(line) == ReadyInfo(port=1234, admin_port=5678, pid=42)
    assert ready_line(ReadyInfo(port=1234, admin_port=5678, pid=42)) == line
    assert parse_ready_line(line.encode()) == ReadyInfo(port=1234, admin_port=5678, pid=42)
    with pytest.raises(MeshSetupError, match="instead of its ready line"):
        parse_ready_line("Traceback (most recent call last):")
    with pytest.raises(MeshSetupError, match="malformed"):
        parse_ready_line('MESHCHECK_READY {"port": 1}')


# --- parent liveness -----------------------------------------------------------------------------------


def test_parent_alive_for_running_exited_and_reused_pids() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)
    assert parent_alive(proc.pid, None) is False
    stat = proc_stat(1)
    assert stat is not None
    assert parent_alive(1, stat[1]) is True
    # Same pid, different start time: a new process reusing the pid is not our parent.
    assert parent_alive(1, stat[1] + 1) is False


def test_parent_alive_is_false_for_a_zombie() -> None:
    # An exited child that nobody has reaped yet still answers kill(pid, 0).
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while (stat := proc_stat(proc.pid)) is not None and stat[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stat is not None
        assert stat[0] == "Z"
        os.kill(proc.pid, 0)  # does not raise: the pid still exists
        assert parent_alive(proc.pid, stat[1]) is False
    finally:
        proc.wait(timeout=10)


# --- HTTP parser, fed through a recording transport ----------------------------------------------------


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


PIPELINE = (
    b"GET /a HTTP/1.1\r\nHost: x\r\nX-Envoy-Attempt-Count: 2\r\n\r\n"
    b"POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
    b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nx-trailer: 1\r\n\r\n"
    b"GET /d?codes=418 HTTP/1.1\r\nConnection: close\r\n\r\n"
)


def _responses(raw: bytes) -> list[tuple[int, dict[str, str], dict[str, Any]]]:
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers["content-length"])
        out.append((int(lines[0].split(" ")[1]), headers, json.loads(rest[:length])))
        raw = rest[length:]
    return out


def _feed(chunks: list[bytes]) -> tuple[RecordingTransport, EchoApp]:
    app = EchoApp(Identity("s", "v1", "s-0", "ns"), random.Random(1), 1)
    conn = HttpConnection(app, keep_body=False, registry=set())
    transport = RecordingTransport()
    conn.connection_made(transport)
    for chunk in chunks:
        conn.data_received(chunk)
    return transport, app


@given(st.lists(st.integers(min_value=1, max_value=len(PIPELINE) - 1), max_size=12, unique=True))
def test_parser_gives_the_same_answers_however_the_bytes_are_split(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(PIPELINE)]
    transport, app = _feed([PIPELINE[a:b] for a, b in itertools.pairwise(bounds)])
    got = _responses(bytes(transport.out))
    assert [(status, body["method"], body["path"]) for status, _, body in got] == [
        (200, "GET", "/a"),
        (200, "POST", "/b"),
        (200, "PUT", "/c"),
        (418, "GET", "/d"),
    ]
    assert got[0][2]["x-envoy-attempt-count"] == "2"
    assert got[3][1]["connection"] == "close"
    assert transport.closed
    assert app.counters.received == 4


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno-colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET / HTTP/1.1\r\nx: " + b"a" * 70_000, 431),
    ],
)
def test_parser_rejects_malformed_requests_and_closes(raw: bytes, status: int) -> None:
    transport, app = _feed([raw])
    got = _responses(bytes(transport.out))
    assert [s for s, _, _ in got] == [status]
    assert "error" in got[0][2]
    assert transport.closed
    assert app.counters.by_status[status] == 1
