"""The load engine against a real Envoy (``--concurrency 1``) and a real stdlib upstream, all on 127.0.0.1.

Timing tolerances below are bounds on scheduling noise of a shared 2-core machine, each stated where used;
no test is retried. Figures that only say how fast the engine is (achieved rate, run times) are printed by
``bench/bench_timings.py`` instead of asserted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from pytest_meshcheck.load import ClosedLoop, LoadError, LoadResult, OpenLoop, run_load, run_load_async
from tests.doubles.static_envoy import EnvoyProcess, bootstrap
from tests.doubles.upstream import UpstreamProcess

pytestmark = pytest.mark.envoy

HOST = "order-service"


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamProcess]:
    with UpstreamProcess(instance="u0") as up:
        yield up


@pytest.fixture(scope="module")
def envoy(upstream: UpstreamProcess) -> Iterator[EnvoyProcess]:
    with EnvoyProcess(bootstrap(upstream_port=upstream.port)) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def direct_envoy() -> Iterator[EnvoyProcess]:
    with EnvoyProcess(bootstrap()) as proxy:
        yield proxy


@pytest.fixture(autouse=True)
def _reset_upstream(request: pytest.FixtureRequest) -> None:
    if "upstream" in request.fixturenames:
        up: UpstreamProcess = request.getfixturevalue("upstream")
        up.control("/__set?delay=0")
        up.control("/__stall?seconds=0")
        up.control("/__clear")


def max_overlap(result: LoadResult) -> int:
    """Most requests in flight at once, from the records' own send and completion times."""
    rec = result.records
    events = sorted([(float(t), 1) for t in rec.sent] + [(float(t), -1) for t in rec.done], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def test_open_loop_at_modest_rate_keeps_count_and_spacing(envoy: EnvoyProcess) -> None:
    result = run_load(f"{envoy.url}/open", OpenLoop(rate=200, duration=1, max_requests=1000), host=HOST)

    assert result.count == 200
    assert result.status_histogram() == {200: 200}
    intended = result.records.intended
    assert intended[0] == 0.0
    assert np.allclose(np.diff(intended), 1 / 200, rtol=0, atol=1e-9)
    # Never early. How close to 200/s the sends came is a figure of bench/bench_timings.py
    # (open_loop_200_achieved_rate), not a test: a loaded machine delays sends.
    assert np.all(result.records.sent >= intended)


def test_open_loop_latency_from_intended_time_includes_a_backend_stall(
    envoy: EnvoyProcess, upstream: UpstreamProcess
) -> None:
    stall = 0.3

    async def scenario() -> tuple[LoadResult, float, float]:
        task = asyncio.create_task(
            run_load_async(f"{envoy.url}/co", OpenLoop(rate=200, duration=1.5, max_requests=300), host=HOST)
        )
        deadline = time.monotonic() + 15
        while (await asyncio.to_thread(upstream.control, "/__stats"))["requests"] < 20:  # the load is flowing
            assert time.monotonic() < deadline, "load never reached the upstream"
            await asyncio.sleep(0.02)
        before = time.monotonic()
        await asyncio.to_thread(upstream.control, f"/__stall?seconds={stall}")
        after = time.monotonic()
        return await task, before, after

    result, before, after = asyncio.run(scenario())
    rec = result.records
    intended_abs = result.started_monotonic + rec.intended
    done_abs = result.started_monotonic + rec.done

    # Nothing was omitted: the whole schedule was sent and answered, at the planned spacing.
    assert result.count == 300
    assert result.success_count == 300
    assert np.allclose(np.diff(rec.intended), 1 / 200, rtol=0, atol=1e-9)
    # Requests due after the stall was set and before it ended arrived during the stall, so none can have
    # completed before it ended (the upstream set its end no earlier than `before + stall`).
    window = (intended_abs >= after) & (intended_abs < before + stall)
    assert window.sum() >= 20, f"stall window too short to judge: {after - before:.3f}s spent setting it"
    assert np.all(done_abs[window] >= before + stall)
    assert np.all(result.latencies[window] >= before + stall - intended_abs[window])
    # ...and they were sent on schedule, not held back behind the stalled ones (that would be coordinated
    # omission). 0.1 s bounds scheduler noise and stays well below the 0.3 s stall.
    assert np.all(rec.sent[window] - rec.intended[window] < 0.1)
    assert result.latency_percentiles([99])[99] >= 0.2


def test_closed_loop_never_exceeds_concurrency(envoy: EnvoyProcess, upstream: UpstreamProcess) -> None:
    upstream.control("/__set?delay=0.02")
    result = run_load(f"{envoy.url}/closed", ClosedLoop(concurrency=4, duration=0.6, max_requests=1000), host=HOST)

    stats = upstream.control("/__stats")
    # With a 20 ms hold the four workers always overlap, so the bound is also reached.
    assert stats["max_in_flight"] == 4
    assert max_overlap(result) == 4
    assert result.status_histogram() == {200: result.count}
    assert stats["requests"] == result.count
    assert np.all(result.latencies >= 0.02)


def test_request_count_bound_comes_first(direct_envoy: EnvoyProcess) -> None:
    # The count ends each run, not the 60 s duration: half the duration only guards against the engine
    # waiting it out (the runs take well under a second; bench/bench_timings.py prints how long).
    duration = 60
    closed = run_load(direct_envoy.url, ClosedLoop(concurrency=3, duration=duration, max_requests=40), host=HOST)
    assert closed.count == 40
    assert closed.status_histogram() == {200: 40}
    assert closed.elapsed < duration / 2

    opened = run_load(direct_envoy.url, OpenLoop(rate=1000, duration=duration, max_requests=50), host=HOST)
    assert opened.count == 50
    assert opened.records.intended.max() == pytest.approx(49 / 1000)
    assert opened.elapsed < duration / 2


def test_duration_bound_comes_first(envoy: EnvoyProcess, upstream: UpstreamProcess) -> None:
    upstream.control("/__set?delay=0.01")
    started = time.monotonic()
    closed = run_load(envoy.url, ClosedLoop(concurrency=2, duration=0.4, max_requests=10**7), host=HOST)
    assert time.monotonic() - started < 10
    assert np.all(closed.records.sent < 0.4)
    assert 10 <= closed.count < 10**7
    assert closed.status_histogram() == {200: closed.count}

    opened = run_load(envoy.url, OpenLoop(rate=100, duration=0.4, max_requests=10**6), host=HOST)
    assert opened.count == 40
    assert opened.status_histogram() == {200: 40}


def test_in_flight_at_deadline_get_grace_then_are_cancelled(envoy: EnvoyProcess, upstream: UpstreamProcess) -> None:
    upstream.control("/__set?delay=3")
    closed = run_load(envoy.url, ClosedLoop(concurrency=2, duration=0.3, max_requests=100), host=HOST, grace=0.3)
    # The 3 s responses were not waited for: both requests ended cancelled, not answered.
    assert closed.count == 2
    assert closed.status_histogram() == {0: 2}
    assert closed.error_histogram() == {"cancelled": 2}
    # Not before duration + grace = 0.6 s. The deadline timer runs on the event loop's clock, which uvloop
    # keeps in whole milliseconds, while `done` is read from time.monotonic(): allow that 1 ms granularity.
    # How soon after 0.6 s they were cancelled is a figure of bench/bench_timings.py, not a test.
    assert np.all(closed.records.done >= 0.6 - 0.002)

    opened = run_load(envoy.url, OpenLoop(rate=20, duration=0.3, max_requests=100), host=HOST, grace=0.2)
    assert opened.count == 6
    assert opened.error_histogram() == {"cancelled": 6}
    # Open-loop latency of a cancelled request runs from its intended time to the cancellation at 0.5 s.
    assert opened.latencies == pytest.approx(opened.records.done - opened.records.intended)


def test_slow_response_is_a_client_timeout(envoy: EnvoyProcess, upstream: UpstreamProcess) -> None:
    upstream.control("/__set?delay=2")
    result = run_load(envoy.url, ClosedLoop(concurrency=1, duration=0.5, max_requests=100), host=HOST, timeout=0.2)
    assert result.count >= 2
    assert result.error_histogram() == {"timeout": result.count}
    assert result.status_histogram() == {0: result.count}
    # Functional, not a timing figure: the 0.2 s timeout ended each request long before the 2 s delay
    # would have (how close to 0.2 s it fires is bench material).
    assert np.all((result.latencies >= 0.2) & (result.latencies < 1.0))


def test_connection_refused_is_status_0_connect() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again at once: nothing listens there
    result = run_load(f"http://127.0.0.1:{port}/", ClosedLoop(concurrency=2, duration=0.3, max_requests=50))
    assert result.count > 0
    assert result.status_histogram() == {0: result.count}
    assert result.error_histogram() == {"connect": result.count}
    assert result.instance_counts() == {None: result.count}


@pytest.fixture
def resetting_server() -> Iterator[int]:
    """A server that reads each request and answers with a TCP RST; a thread, stopped in teardown."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    conn.recv(4096)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_connection_reset_is_status_0_reset(resetting_server: int) -> None:
    result = run_load(f"http://127.0.0.1:{resetting_server}/", ClosedLoop(concurrency=1, duration=0.3, max_requests=20))
    assert result.count > 0
    assert result.error_histogram() == {"reset": result.count}
    assert result.status_histogram() == {0: result.count}


def test_response_headers_are_recorded(envoy: EnvoyProcess) -> None:
    result = run_load(
        f"{envoy.url}/chunked?x=1",
        ClosedLoop(concurrency=2, duration=2, max_requests=20),
        host=HOST,
        record_headers=["Server", "x-not-there"],
    )
    assert result.status_histogram() == {200: 20}
    assert result.instance_counts() == {"u0": 20}
    assert result.attempt_histogram() == {1: 20}
    assert result.overloaded_count == 0
    rows = result.to_records()
    assert [r.index for r in rows] == list(range(20))
    assert {(r.instance, r.attempt_count, r.overloaded, tuple(r.headers.items())) for r in rows} == {
        ("u0", 1, False, (("server", "envoy"),))
    }


def test_overloaded_responses_from_envoy_circuit_breaker(upstream: UpstreamProcess) -> None:
    limits = {"max_connections": 1, "max_pending_requests": 1, "max_requests": 1}
    upstream.control("/__set?delay=0.05")
    with EnvoyProcess(bootstrap(upstream_port=upstream.port, circuit_breakers=limits)) as proxy:
        result = run_load(proxy.url, ClosedLoop(concurrency=6, duration=0.5, max_requests=300), host=HOST)
    over = result.records.overloaded
    # Six clients against room for two: the breaker must overflow.
    assert over.sum() > 0
    assert set(result.records.status[over].tolist()) == {503}
    assert set(result.records.status[~over].tolist()) == {200}
    assert np.all(result.records.instance[over] == -1)  # answered by Envoy, not the upstream


def test_async_variant_runs_in_the_callers_loop(direct_envoy: EnvoyProcess) -> None:
    async def scenario() -> LoadResult:
        return await run_load_async(
            direct_envoy.url, OpenLoop(rate=500, duration=0.2, max_requests=100), host=HOST, isolate=False
        )

    result = asyncio.run(scenario())
    assert result.count == 100
    assert result.event_loop.startswith("asyncio.")
    assert result.status_histogram() == {200: 100}


def test_sync_entry_refuses_to_block_a_running_loop(direct_envoy: EnvoyProcess) -> None:
    async def scenario() -> None:
        run_load(direct_envoy.url, ClosedLoop(1, 0.1, 1), isolate=False)

    with pytest.raises(LoadError, match="run_load_async"):
        asyncio.run(scenario())
