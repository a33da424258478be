"""Connection-pool overflow model (ground truth §4, one Envoy worker)."""

from __future__ import annotations

import pytest

from pytest_meshcheck.expect import Load, effective_policy, pool_capacity, predict_overflow
from pytest_meshcheck.expect.effective import MAX_UINT32, EffectivePolicy
from pytest_meshcheck.policy.model import (
    ConnectionPool,
    DestinationRule,
    HTTPSettings,
    OutlierDetection,
    PolicySet,
    TCPSettings,
    TrafficPolicy,
)
from pytest_meshcheck.topology import parse_topology

TOPO = parse_topology({"namespace": "shop", "services": [{"name": "httpbin", "versions": [{"name": "v1"}]}]})

# The istio.io circuit-breaking task's DestinationRule
TASK_POOL = ConnectionPool(
    TCPSettings(max_connections=1), HTTPSettings(http1_max_pending_requests=1, max_requests_per_connection=1)
)
TASK_OD = OutlierDetection(consecutive_5xx_errors=1, interval=1.0, base_ejection_time=180.0, max_ejection_percent=100)


def _policy(pool: ConnectionPool | None, od: OutlierDetection | None = None) -> EffectivePolicy:
    dr = DestinationRule("httpbin", "shop", "networking.istio.io/v1", "httpbin", TrafficPolicy(pool, od))
    return effective_policy(PolicySet((), (dr,)), TOPO, "httpbin")


@pytest.mark.parametrize(("concurrency", "level"), [(1, "never"), (2, "rare"), (3, "always"), (4, "always")])
def test_circuit_breaking_task_policy(concurrency: int, level: str) -> None:
    pred = predict_overflow(_policy(TASK_POOL, TASK_OD), Load(concurrency))
    assert pred.capacity == 2  # one active request on the single connection, one pending
    assert pred.level == level
    assert (pred.status, pred.flags) == (503, "UO")
    assert pred.expected is (level == "always")


def test_without_connection_churn_full_capacity_does_not_overflow() -> None:
    pool = ConnectionPool(TCPSettings(max_connections=1), HTTPSettings(http1_max_pending_requests=1))
    assert predict_overflow(_policy(pool), Load(2)).level == "never"
    assert predict_overflow(_policy(pool), Load(3)).level == "always"


def test_only_a_connection_limit_queues_instead_of_failing() -> None:
    # ground truth §4: max_connections 1 alone, concurrency 4: 80 / 0, requests queue
    pool = ConnectionPool(TCPSettings(max_connections=1))
    pred = predict_overflow(_policy(pool), Load(4))
    assert pred.level == "never"
    assert pred.capacity == 1 + MAX_UINT32


def test_active_request_limit_counts_like_connections_for_http1() -> None:
    # ground truth §4: limits 1 / 1 / max_requests 2 at concurrency 4 still gave 2 ok + 2 x 503 per round
    pool = ConnectionPool(
        TCPSettings(max_connections=1), HTTPSettings(http1_max_pending_requests=1, http2_max_requests=2)
    )
    assert pool_capacity(_policy(pool)) == 2
    assert predict_overflow(_policy(pool), Load(4)).level == "always"


def test_istio_defaults_never_overflow() -> None:
    pred = predict_overflow(_policy(None), Load(1000))
    assert pred.level == "never"
    assert any(r.source == "Istio default circuit breakers" for r in pred.reasons)


def test_http2_upgrade_lets_requests_share_connections() -> None:
    pool = ConnectionPool(
        TCPSettings(max_connections=1),
        HTTPSettings(http1_max_pending_requests=1, http2_max_requests=10, h2_upgrade_policy="UPGRADE"),
    )
    assert pool_capacity(_policy(pool)) == 11


def test_reasons_cite_the_limits() -> None:
    pred = predict_overflow(_policy(TASK_POOL), Load(3))
    fields = {r.field for r in pred.reasons}
    assert "spec.trafficPolicy.connectionPool.tcp.maxConnections" in fields
    assert "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests" in fields
    assert any("--concurrency 1" in r.effect for r in pred.reasons)


def test_a_cold_pool_may_overflow_its_pending_limit_when_connections_are_plenty() -> None:
    # fidelity case c3fe38d065b4: pending 1, unlimited connections, concurrency 4 -> 5-7 overflows at start
    pool = ConnectionPool(TCPSettings(), HTTPSettings(http1_max_pending_requests=1))
    pred = predict_overflow(_policy(pool), Load(4))
    assert pred.level == "rare"
    assert any("cold pool" in r.effect for r in pred.reasons)
    assert predict_overflow(_policy(pool), Load(1)).level == "never"
