"""Latency model: route vs per-try timeouts, back-off bounds, flags (ground truth §2)."""

from __future__ import annotations

import pytest

from pytest_meshcheck.expect import (
    DestinationFault,
    backoff_ranges,
    effective_per_try_timeout,
    effective_policy,
    latency_ceiling,
    predict_latency,
    predict_success,
)
from pytest_meshcheck.expect.effective import EffectivePolicy
from pytest_meshcheck.policy.model import (
    Destination,
    FaultDelay,
    HTTPFaultInjection,
    HTTPRetry,
    HTTPRoute,
    HTTPRouteDestination,
    PolicySet,
    VirtualService,
)
from pytest_meshcheck.topology import parse_topology

TOPO = parse_topology({"namespace": "shop", "services": [{"name": "svc", "versions": [{"name": "v1", "replicas": 3}]}]})
SLOW = DestinationFault("latency", 1.0, delay=2.0)  # every upstream delays 2 s, as in the ground-truth runs
BASE = 0.025


def _policy(
    retries: HTTPRetry | None, timeout: float | None, *, istio: str = "1.30", fault: HTTPFaultInjection | None = None
) -> EffectivePolicy:
    route = HTTPRoute(route=(HTTPRouteDestination(Destination("svc")),), retries=retries, timeout=timeout, fault=fault)
    vs = VirtualService("svc", "shop", "networking.istio.io/v1", ("svc",), http=(route,))
    return effective_policy(PolicySet((vs,)), TOPO, "svc", istio=istio)


@pytest.mark.parametrize(
    ("retries", "timeout", "low", "high", "flags", "attempts"),
    [
        # ground truth §2 rows; expected times are per_try x attempts plus 0..(25 + 50) ms of back-off
        (HTTPRetry(2, 0.3, "5xx"), 1.0, 0.9, 0.9 + BASE + 2 * BASE, "URX,UT", 3),
        (HTTPRetry(2, 0.4, "5xx"), 1.0, 1.0, 1.0, "UT", 3),  # the route timeout cuts the 3rd attempt
        (HTTPRetry(2, None, "5xx"), 1.0, 1.0, 1.0, "UT", 1),
        (HTTPRetry(2, 0.3, "retriable-status-codes,503"), 1.0, 0.3, 0.3, "UT", 1),  # not retried
        (HTTPRetry(2, 0.3, "gateway-error"), 1.0, 0.9, 0.975, "URX,UT", 3),
        (HTTPRetry(2, 0.3, "reset"), 1.0, 0.9, 0.975, "URX,UT", 3),
        (HTTPRetry(2, 0.3, "5xx"), None, 0.9, 0.975, "URX,UT", 3),  # timeout 0: per-try still applies
    ],
)
def test_ground_truth_timeout_table(
    retries: HTTPRetry, timeout: float | None, low: float, high: float, flags: str, attempts: int
) -> None:
    pred = predict_latency(_policy(retries, timeout), SLOW)
    assert pred.slow_range == pytest.approx((low, high))
    assert pred.status == 504
    assert pred.flags == flags
    assert pred.attempts == attempts
    assert predict_success(_policy(retries, timeout), SLOW).p(504, flags) == pytest.approx(1.0)


def test_per_try_timeout_is_not_retried_without_5xx_gateway_error_or_reset() -> None:
    for retry_on in ("connect-failure,refused-stream", "retriable-status-codes,503", "retriable-4xx"):
        pred = predict_latency(_policy(HTTPRetry(3, 0.2, retry_on), None), SLOW)
        assert (pred.flags, pred.attempts, pred.slow_range) == ("UT", 1, (0.2, 0.2))
        assert any("NOT retried" in r.effect for r in pred.reasons)


def test_per_try_timeout_at_or_above_the_route_timeout_is_ignored() -> None:
    pol = _policy(HTTPRetry(2, 1.0, "5xx"), 1.0)
    per_try, reason = effective_per_try_timeout(pol)
    assert per_try is None
    assert reason is not None
    assert reason.field == "spec.http[0].retries.perTryTimeout"
    pred = predict_latency(pol, SLOW)
    assert (pred.per_try_timeout, pred.flags, pred.slow_range) == (None, "UT", (1.0, 1.0))
    assert reason in pred.reasons


def test_backoff_is_fully_jittered_exponential_capped_at_ten_times_base() -> None:
    ranges = backoff_ranges(_policy(HTTPRetry(6, retry_on="5xx"), None).retry)
    expected = [min(BASE * 2 ** (n - 1), 10 * BASE) for n in range(1, 7)]
    assert [lo for lo, _ in ranges] == [0.0] * 6
    assert [hi for _, hi in ranges] == pytest.approx(expected)
    assert ranges[-1][1] == pytest.approx(0.25)


def test_policy_backoff_is_honoured_from_1_26_only() -> None:
    retries = HTTPRetry(2, retry_on="5xx", backoff=0.1)
    new = backoff_ranges(_policy(retries, None, istio="1.26").retry)
    assert [hi for _, hi in new] == pytest.approx([0.1, 0.2])
    old = _policy(retries, None, istio="1.25")
    assert [hi for _, hi in backoff_ranges(old.retry)] == pytest.approx([BASE, 2 * BASE])
    assert "ignored" in old.reasons["retry.backoff"].effect


def test_readme_order_service_times_out_after_about_8_seconds_not_10() -> None:
    # attempts 3, perTryTimeout 2s, retryOn 5xx,..., timeout 10s; the destination delays 20 s
    pol = _policy(HTTPRetry(3, 2.0, "5xx,reset,connect-failure,refused-stream"), 10.0)
    pred = predict_latency(pol, DestinationFault("latency", 1.0, delay=20.0))
    assert pred.slow_range == pytest.approx((8.0, 8.0 + BASE * (1 + 2 + 4)))
    assert (pred.status, pred.flags, pred.attempts) == (504, "URX,UT", 4)
    assert pred.ceiling == pytest.approx(8.0 + BASE * 7)


def test_no_timeouts_means_no_ceiling() -> None:
    pred = predict_latency(_policy(None, None))
    assert pred.ceiling is None
    assert pred.slow_range is None
    assert pred.route_timeout is None
    assert any("no timeout bounds" in w.effect for w in pred.warnings)


def test_fast_enough_delay_returns_the_upstream_answer() -> None:
    pred = predict_latency(_policy(HTTPRetry(2, 0.5, "5xx"), 1.0), DestinationFault("latency", 1.0, delay=0.2))
    assert (pred.slow_range, pred.status, pred.flags) == ((0.2, 0.2), None, "-")


def test_ceiling_is_the_smaller_of_route_timeout_and_all_per_try_timeouts() -> None:
    assert latency_ceiling(_policy(HTTPRetry(2, 0.3, "5xx"), 5.0)) == pytest.approx(0.9 + 0.075)
    assert latency_ceiling(_policy(HTTPRetry(2, 0.5, "5xx"), 1.0)) == pytest.approx(1.0)
    assert latency_ceiling(_policy(None, 2.5)) == pytest.approx(2.5)


def test_client_fault_delay_is_reported_outside_the_route_timeout() -> None:
    fault = HTTPFaultInjection(delay=FaultDelay(0.3, percentage=50.0))
    pred = predict_latency(_policy(None, 0.2, fault=fault), DestinationFault("latency", 1.0, delay=0.1))
    assert pred.client_delay == (0.3, 0.5)
    assert pred.ceiling == pytest.approx(0.2)  # the delay is not counted against it
    assert any(r.field == "spec.http[0].fault.delay.percentage" for r in pred.reasons)


def test_random_backoff_deciding_the_flag_is_a_warning() -> None:
    # 3 x 0.3 = 0.9 s of per-try timeouts: with back-offs of up to 75 ms the route timeout of 0.95 s
    # fires first on some requests only
    pred = predict_latency(_policy(HTTPRetry(2, 0.3, "5xx"), 0.95), SLOW)
    assert pred.warnings
    assert "random back-off" in pred.warnings[0].effect
    assert pred.slow_range == pytest.approx((0.9, 0.95))


def test_latency_fault_kind_is_checked() -> None:
    from pytest_meshcheck.errors import MeshcheckError

    with pytest.raises(MeshcheckError, match="kind 'latency'"):
        predict_latency(_policy(None, None), DestinationFault("error", 0.5, 503))
