"""Hypothesis strategies for valid resilience policies, destination faults, loads and Istio versions.

Values come from small grids rather than continuous ranges, for two reasons: a shrunk counterexample
reads like a policy a person would write, and delays and timeouts stay at least 50 ms apart, so no
example hinges on which of two nearly equal timers fires first on a busy machine (a race the model
does not claim to predict). Every example is bounded so that it runs in about a second: latency faults
are short, and :func:`bounded` raises the concurrency (or arrival rate) so the planned requests finish
in about :data:`TARGET_SECONDS`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from hypothesis import strategies as st

from tests.fidelity.cases import Case, FaultSpec, LoadSpec
from tests.fidelity.predict import mean_request_seconds

ISTIO_VERSIONS = ("1.30", "1.23", "1.31")  # current; before the 1.24 retry default; panic threshold 0 from 1.31
RETRY_TOKENS = ("5xx", "gateway-error", "reset", "connect-failure", "refused-stream", "retriable-4xx")
STATUSES = (500, 502, 503, 504, 429)
DELAYS = (0.02, 0.15, 0.3)  # destination delays, seconds
PER_TRY = ("0.08s", "0.2s", "0.45s")  # never within 50 ms of a delay
ROUTE_TIMEOUTS = ("0.1s", "0.25s", "0.5s", "1s")
RATES = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
TARGET_SECONDS = 1.5
MAX_CONCURRENCY = 64

rates = st.sampled_from(RATES)


@st.composite
def retries(draw: st.DrawFn) -> dict[str, Any]:
    """A ``retries`` block: attempts 0-5, retryOn tokens (with retriable-status-codes), perTryTimeout."""
    block: dict[str, Any] = {"attempts": draw(st.integers(0, 5))}
    if block["attempts"] == 0:
        return block  # Istio's admission rejects retryOn or perTryTimeout next to attempts: 0
    tokens = draw(st.lists(st.sampled_from(RETRY_TOKENS), unique=True, max_size=3))
    codes = draw(st.lists(st.sampled_from(STATUSES), unique=True, max_size=2))
    if codes:
        tokens = [*tokens, "retriable-status-codes", *map(str, codes)]
    if tokens:
        block["retryOn"] = ",".join(tokens)
    if draw(st.booleans()):
        block["perTryTimeout"] = draw(st.sampled_from(PER_TRY))
    return block


@st.composite
def istio_fault(draw: st.DrawFn) -> dict[str, Any]:
    """Istio's client-side fault injection: an abort, a short delay, or both."""
    fault: dict[str, Any] = {}
    if draw(st.booleans()):
        fault["abort"] = {
            "httpStatus": draw(st.sampled_from((500, 503, 429))),
            "percentage": {"value": draw(st.sampled_from((10.0, 25.0, 50.0)))},
        }
    if not fault or draw(st.booleans()):
        fault["delay"] = {"fixedDelay": "0.02s", "percentage": {"value": draw(st.sampled_from((10.0, 50.0)))}}
    return fault


@st.composite
def route(draw: st.DrawFn) -> dict[str, Any]:
    """Extra fields of the VirtualService route: retries, timeout, fault; any may be absent."""
    out: dict[str, Any] = {}
    if draw(st.integers(0, 3)):  # 1 in 4 routes keeps Istio's default retry policy
        out["retries"] = draw(retries())
    if draw(st.booleans()):
        out["timeout"] = draw(st.sampled_from(ROUTE_TIMEOUTS))
    if draw(st.integers(0, 4)) == 0:
        out["fault"] = draw(istio_fault())
    return out


@st.composite
def outlier(draw: st.DrawFn) -> dict[str, Any]:
    """Outlier detection: consecutive counters, interval, base ejection time, max ejection %, min health %."""
    od: dict[str, Any] = {}
    if draw(st.booleans()):
        od["consecutive5xxErrors"] = draw(st.integers(0, 10))
    if draw(st.booleans()):
        od["consecutiveGatewayErrors"] = draw(st.integers(0, 5))
    od["interval"] = draw(st.sampled_from(("1s", "5s", "10s")))
    # Long ejections: an ejection ends only on an interval sweep after it, never within an example.
    od["baseEjectionTime"] = draw(st.sampled_from(("30s", "60s")))
    if draw(st.booleans()):
        od["maxEjectionPercent"] = draw(st.sampled_from((0, 10, 34, 50, 100)))
    if draw(st.booleans()):
        od["minHealthPercent"] = draw(st.sampled_from((0, 50, 100)))
    return od


@st.composite
def connection_pool(draw: st.DrawFn) -> dict[str, Any]:
    """Connection-pool limits small enough to matter at the drawn concurrency."""
    pool: dict[str, Any] = {}
    if draw(st.booleans()):
        pool["tcp"] = {"maxConnections": draw(st.integers(1, 8))}
    http: dict[str, Any] = {}
    if draw(st.booleans()):
        http["http1MaxPendingRequests"] = draw(st.integers(1, 8))
    if draw(st.booleans()):
        http["maxRetries"] = draw(st.integers(1, 8))
    if http:
        pool["http"] = http
    return pool or {"tcp": {"maxConnections": draw(st.integers(1, 8))}}


@st.composite
def traffic_policy(draw: st.DrawFn) -> dict[str, Any]:
    """A DestinationRule ``trafficPolicy``, possibly empty (no DestinationRule)."""
    tp: dict[str, Any] = {}
    if draw(st.integers(0, 2)) == 0:
        tp["outlierDetection"] = draw(outlier())
    if draw(st.integers(0, 3)) == 0:
        tp["connectionPool"] = draw(connection_pool())
    if draw(st.integers(0, 2)) == 0:
        tp["loadBalancer"] = {"simple": draw(st.sampled_from(("ROUND_ROBIN", "RANDOM", "LEAST_REQUEST")))}
    return tp


@st.composite
def faults(draw: st.DrawFn) -> tuple[FaultSpec, ...]:
    """At most one fault of each kind (a second of the same kind would replace the first at an instance)."""
    out: list[FaultSpec] = []
    # Nearly every example has a fault: without one every prediction is certain (100 % success).
    size = draw(st.sampled_from((1, 2, 1, 2, 1, 0)))
    kinds = draw(st.lists(st.sampled_from(("error", "latency", "reset")), unique=True, min_size=size, max_size=size))
    for kind in kinds:
        instances = draw(st.sampled_from((None, None, None, 1, 2)))
        if kind == "error":
            out.append(FaultSpec("error", draw(rates), status=draw(st.sampled_from(STATUSES)), instances=instances))
        elif kind == "latency":
            out.append(FaultSpec("latency", draw(rates), delay=draw(st.sampled_from(DELAYS)), instances=instances))
        else:
            out.append(FaultSpec("reset", draw(rates), instances=instances))
    return tuple(out)


loads = st.one_of(
    st.builds(LoadSpec, st.just("closed"), concurrency=st.sampled_from((1, 2, 4, 8))),
    st.builds(LoadSpec, st.just("open"), rate=st.sampled_from((200.0, 500.0, 1000.0))),
)


def bounded(case: Case, n: int) -> Case:
    """``case`` with enough concurrency (or arrival rate) that ``n`` requests take about TARGET_SECONDS."""
    per_request = mean_request_seconds(case)
    if case.load.kind == "closed":
        needed = min(MAX_CONCURRENCY, math.ceil(n * per_request / TARGET_SECONDS))
        if needed > case.load.concurrency:
            # Round up to a power of two so shrinking sees few distinct loads.
            concurrency = min(MAX_CONCURRENCY, 2 ** math.ceil(math.log2(needed)))
            return replace(case, load=replace(case.load, concurrency=concurrency))
        return case
    needed_rate = n / TARGET_SECONDS
    if needed_rate > case.load.rate:
        return replace(case, load=replace(case.load, rate=float(min(2000, math.ceil(needed_rate / 100) * 100))))
    return case


MAX_SECONDS = 6.0


def too_slow(case: Case, n: int) -> bool:
    """The example would take more than MAX_SECONDS: a small pool serialises slow requests.

    Such examples are rejected (``hypothesis.assume``): an open loop would then also leave requests
    unanswered past the load engine's grace period (status 0, a client-side limit, not the mesh's; found
    case ``found/0f6dffbfa1cb.yaml``), and a closed loop would spend tens of seconds on one example.
    """
    per_request = mean_request_seconds(case)
    parallel = float(case.load.concurrency) if case.load.kind == "closed" else max(1.0, case.load.rate * per_request)
    pool = case.traffic_policy.get("connectionPool", {})
    connections = pool.get("tcp", {}).get("maxConnections")
    if connections is not None:
        parallel = min(parallel, float(connections))
    seconds = n * per_request / parallel
    if case.load.kind == "open" and connections is not None:
        # The queue must drain while arrivals are still scheduled, not in the engine's grace period
        # (found/44d141874911.yaml: 4 connections, 25 % of requests 0.3 s late, 19 unanswered in time).
        return seconds > min(MAX_SECONDS, n / case.load.rate + 1.0)
    return seconds > MAX_SECONDS


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A whole example: Istio version, VirtualService route, DestinationRule, destination faults, load."""
    has_vs = draw(st.integers(0, 5)) > 0
    return Case(
        istio=draw(st.sampled_from(ISTIO_VERSIONS)),
        route=draw(route()) if has_vs else {},
        traffic_policy=draw(traffic_policy()),
        faults=draw(faults()),
        load=draw(loads),
        has_vs=has_vs,
    )


__all__ = ["ISTIO_VERSIONS", "bounded", "cases", "too_slow"]
