"""Success-probability model: retryOn coverage, attempts, per-instance faults, breakers, client faults."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_meshcheck.expect import (
    DestinationFault,
    Load,
    Outcome,
    effective_policy,
    predict_success,
    retry_token,
)
from pytest_meshcheck.expect.effective import EffectivePolicy
from pytest_meshcheck.policy.model import (
    ConnectionPool,
    ConsistentHash,
    Destination,
    DestinationRule,
    FaultAbort,
    HTTPFaultInjection,
    HTTPRetry,
    HTTPRoute,
    HTTPRouteDestination,
    HTTPSettings,
    LoadBalancer,
    PolicySet,
    TrafficPolicy,
    VirtualService,
)
from pytest_meshcheck.topology import Topology, parse_topology

TOPO: Topology = parse_topology(
    {"namespace": "shop", "services": [{"name": "svc", "port": 8080, "versions": [{"name": "v1", "replicas": 3}]}]}
)
ENVOY_SELECTIONS = 6  # host_selection_retry_max_attempts 5, plus the first pick


def _policy(
    retries: HTTPRetry | None = None,
    *,
    timeout: float | None = None,
    fault: HTTPFaultInjection | None = None,
    traffic: TrafficPolicy | None = None,
    istio: str = "1.30",
    with_vs: bool = True,
) -> EffectivePolicy:
    route = HTTPRoute(route=(HTTPRouteDestination(Destination("svc")),), retries=retries, timeout=timeout, fault=fault)
    vss = (VirtualService("svc", "shop", "networking.istio.io/v1", ("svc",), http=(route,)),) if with_vs else ()
    drs = (DestinationRule("svc", "shop", "networking.istio.io/v1", "svc", traffic),) if traffic else ()
    return effective_policy(PolicySet(vss, drs), TOPO, "svc", istio=istio)


def _lb(simple: str) -> TrafficPolicy:
    return TrafficPolicy(load_balancer=LoadBalancer(simple=simple))  # type: ignore[arg-type]


# --- independent failures --------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "attempts"), [(0.5, 2), (0.3, 3), (0.1, 1), (0.9, 5), (0.5, 0)])
def test_independent_failures_follow_one_minus_p_to_the_attempts(rate: float, attempts: int) -> None:
    pred = predict_success(_policy(HTTPRetry(attempts, retry_on="5xx")), DestinationFault("error", rate, 503))
    assert pred.p_success == pytest.approx(1 - rate ** (attempts + 1))
    # each extra attempt happens only after all earlier ones failed
    assert pred.mean_attempts == pytest.approx(sum(rate**j for j in range(attempts + 1)))
    assert sum(pred.outcomes.values()) == pytest.approx(1.0)


def test_issue_example_50_percent_503_with_two_retries_gives_0_875() -> None:
    pred = predict_success(_policy(HTTPRetry(2, retry_on="5xx")), DestinationFault("error", 0.5, 503))
    assert pred.p_success == pytest.approx(0.875)
    assert pred.p(503, "URX") == pytest.approx(0.125)
    assert pred.covered == {"HTTP 503": True}


def test_issue_example_30_percent_with_three_retries_gives_0_9919() -> None:
    pred = predict_success(_policy(HTTPRetry(3, retry_on="5xx")), DestinationFault("error", 0.3, 500))
    assert round(pred.p_success, 4) == 0.9919


def test_500_with_retriable_status_codes_503_is_not_retried() -> None:
    pol = _policy(HTTPRetry(2, retry_on="retriable-status-codes,503"))
    pred = predict_success(pol, DestinationFault("error", 0.5, 500))
    assert pred.p_success == pytest.approx(0.5)
    assert pred.p(500, "-") == pytest.approx(0.5)
    assert pred.mean_attempts == pytest.approx(1.0)
    assert pred.covered == {"HTTP 500": False}
    assert any("HTTP 500 is NOT retried" in r.effect for r in pred.reasons)


@pytest.mark.parametrize(("istio", "expected"), [("1.23", 1 - 0.5**3), ("1.24", 0.5), ("1.30", 0.5)])
def test_default_retry_policy_retries_503_only_before_1_24(istio: str, expected: float) -> None:
    pol = _policy(with_vs=False, istio=istio)
    pred = predict_success(pol, DestinationFault("error", 0.5, 503))
    assert pred.p_success == pytest.approx(expected)
    source = next(r for r in pred.reasons if r.field is None and "retry policy" in r.source)
    assert source.source == f"Istio {istio} default retry policy"


def test_retries_without_retry_on_use_the_default_conditions() -> None:
    # attempts 3 but no retryOn: on 1.30 no status code is retried, connection failures are
    pol = _policy(HTTPRetry(3))
    assert predict_success(pol, DestinationFault("error", 0.5, 503)).p_success == pytest.approx(0.5)
    assert predict_success(pol, DestinationFault("refused", 0.5)).p_success == pytest.approx(1 - 0.5**4)


@pytest.mark.parametrize(
    ("retry_on", "fault", "retried"),
    [
        ("5xx", DestinationFault("error", 0.5, 500), True),
        ("gateway-error", DestinationFault("error", 0.5, 503), True),
        ("gateway-error", DestinationFault("error", 0.5, 500), False),  # ground truth §1 f
        ("5xx", DestinationFault("reset", 0.5), True),  # ground truth §1 h
        ("retriable-status-codes,503", DestinationFault("reset", 0.5), False),  # ground truth §1 h2
        ("reset", DestinationFault("reset", 0.5), True),
        ("connect-failure", DestinationFault("refused", 0.5), True),
        ("connect-failure", DestinationFault("error", 0.5, 503), False),
        ("reset-before-request", DestinationFault("refused", 0.5), True),
        ("reset-before-request", DestinationFault("reset", 0.5), False),
        ("retriable-4xx", DestinationFault("error", 0.5, 409), True),
        ("retriable-4xx", DestinationFault("error", 0.5, 404), False),
        ("5xx", DestinationFault("error", 0.5, 404), False),
        ("retriable-status-codes", DestinationFault("error", 0.5, 503), False),  # token without codes
        ("404,503", DestinationFault("error", 0.5, 404), True),
    ],
)
def test_retry_on_coverage(retry_on: str, fault: DestinationFault, retried: bool) -> None:
    pred = predict_success(_policy(HTTPRetry(2, retry_on=retry_on)), fault)
    assert pred.p_success == pytest.approx(1 - 0.5**3 if retried else 0.5)
    assert list(pred.covered.values()) == [retried]


def test_retry_token_names_the_covering_condition() -> None:
    pol = _policy(HTTPRetry(2, retry_on="connect-failure,gateway-error,5xx"))
    assert retry_token(pol, "status", 503) == "gateway-error"
    assert retry_token(pol, "status", 500) == "5xx"
    assert retry_token(pol, "refused") == "connect-failure"
    assert retry_token(pol, "per-try timeout") == "gateway-error"


def test_exhausted_resets_and_refusals_carry_envoy_flags() -> None:
    pol = _policy(HTTPRetry(1, retry_on="5xx"))
    assert predict_success(pol, DestinationFault("reset", 1.0)).outcomes == {Outcome(503, "URX,UC"): 1.0}
    assert predict_success(pol, DestinationFault("refused", 1.0)).outcomes == {Outcome(503, "URX,UF"): 1.0}
    unretried = _policy(HTTPRetry(1, retry_on="retriable-status-codes,503"))
    assert predict_success(unretried, DestinationFault("reset", 1.0)).outcomes == {Outcome(503, "UC"): 1.0}


def test_attempts_zero_disables_retries() -> None:
    pred = predict_success(_policy(HTTPRetry(0)), DestinationFault("error", 0.5, 503))
    assert pred.p_success == pytest.approx(0.5)
    assert pred.p(503, "-") == pytest.approx(0.5)
    assert any("no retry policy" in r.effect for r in pred.reasons)


# --- client-side faults and missing clusters --------------------------------------------------------


def test_client_abort_is_never_retried() -> None:
    # ground truth §5: abort 50 % plus upstream 503 at 50 % gives 0.5 x 0.875
    fault = HTTPFaultInjection(abort=FaultAbort(http_status=503, percentage=50.0))
    pred = predict_success(_policy(HTTPRetry(2, retry_on="5xx"), fault=fault), DestinationFault("error", 0.5, 503))
    assert pred.p_success == pytest.approx(0.5 * (1 - 0.5**3))
    assert pred.p(503, "FI") == pytest.approx(0.5)
    assert pred.mean_attempts == pytest.approx(1 + 0.5 + 0.25)  # per request that reached the router


def test_abort_without_percentage_aborts_nothing() -> None:
    fault = HTTPFaultInjection(abort=FaultAbort(http_status=500))
    pred = predict_success(_policy(HTTPRetry(2, retry_on="5xx"), fault=fault))
    assert pred.p_success == pytest.approx(1.0)
    assert any("0 %" in r.effect for r in pred.reasons)


def test_grpc_abort_is_a_failure_with_http_200() -> None:
    fault = HTTPFaultInjection(abort=FaultAbort(grpc_status="UNAVAILABLE", percentage=100.0))
    pred = predict_success(_policy(fault=fault))
    assert pred.p_success == 0.0
    assert pred.outcomes == {Outcome(200, "FI", "grpc-status UNAVAILABLE"): 1.0}


def test_route_to_an_undefined_subset_answers_503_nc() -> None:
    route = HTTPRoute(route=(HTTPRouteDestination(Destination("svc", subset="v9")),))
    vs = VirtualService("svc", "shop", "networking.istio.io/v1", ("svc",), http=(route,))
    pol = effective_policy(PolicySet((vs,)), TOPO, "svc")
    assert predict_success(pol).outcomes == {Outcome(503, "NC"): 1.0}


# --- per-instance faults and host selection ---------------------------------------------------------


def _simulate_random_lb(hosts: int, bad: int, rate: float, attempts: int, predicate: bool, n: int, seed: int) -> float:
    """Envoy-like random pick (LEAST_REQUEST at equal load); retries re-pick up to 5 times to avoid tried hosts."""
    rng = random.Random(seed)
    ok = 0
    for _ in range(n):
        tried: set[int] = set()
        for _attempt in range(attempts + 1):
            host = rng.randrange(hosts)
            for _ in range(ENVOY_SELECTIONS - 1):
                if not predicate or host not in tried:
                    break
                host = rng.randrange(hosts)
            tried.add(host)
            if not (host < bad and rng.random() < rate):
                ok += 1
                break
    return ok / n


def test_one_bad_host_of_three_with_one_retry_matches_the_closed_form() -> None:
    pol = _policy(HTTPRetry(1, retry_on="5xx"))
    pred = predict_success(pol, DestinationFault("error", 1.0, 503, instances=1))
    # fail only if the first pick is the bad host and all 6 re-picks land on it again
    assert pred.p_success == pytest.approx(1 - (1 / 3) * (1 / 3) ** ENVOY_SELECTIONS)


def test_two_bad_hosts_of_three_with_one_retry_matches_the_closed_form() -> None:
    pred = predict_success(_policy(HTTPRetry(1, retry_on="5xx")), DestinationFault("error", 1.0, 503, instances=2))
    stuck = (1 / 3) ** ENVOY_SELECTIONS
    second_bad = (1 - stuck) * 1 / 2 + stuck  # an untried host is bad half the time; a stuck pick is the bad one
    assert pred.p_success == pytest.approx(1 - 2 / 3 * second_bad)


@pytest.mark.parametrize(
    ("bad", "rate", "attempts", "predicate"),
    [(1, 1.0, 2, True), (2, 1.0, 2, True), (2, 0.6, 3, True), (2, 1.0, 2, False), (1, 0.7, 1, False)],
)
def test_per_instance_model_agrees_with_a_simulation(bad: int, rate: float, attempts: int, predicate: bool) -> None:
    retries = HTTPRetry(attempts, retry_on="5xx", retry_ignore_previous_hosts=predicate)
    pred = predict_success(_policy(retries), DestinationFault("error", rate, 503, instances=bad))
    # 40 000 simulated requests, fixed seed: the standard error is <= 0.0025; 5 SE keeps a true model far inside
    simulated = _simulate_random_lb(3, bad, rate, attempts, predicate, 40_000, seed=bad * 100 + attempts)
    assert pred.p_success == pytest.approx(simulated, abs=5 * 0.0025)


def test_without_the_predicate_every_attempt_picks_independently() -> None:
    retries = HTTPRetry(2, retry_on="5xx", retry_ignore_previous_hosts=False)
    pred = predict_success(_policy(retries, istio="1.26"), DestinationFault("error", 1.0, 503, instances=2))
    assert pred.p_success == pytest.approx(1 - (2 / 3) ** 3)


@pytest.mark.parametrize(("bad", "attempts", "expected"), [(1, 0, 2 / 3), (1, 1, 1.0), (2, 1, 0.5), (2, 2, 1.0)])
def test_round_robin_at_concurrency_one_walks_the_hosts_in_order(bad: int, attempts: int, expected: float) -> None:
    # Hosts 0..bad-1 fail. With 2 bad of 3 and one retry the pointer settles into a cycle:
    # start 0 -> hosts 0, 1 fail (pointer +2 -> 2); start 2 -> success (pointer -> 0): half the requests fail.
    pol = _policy(HTTPRetry(attempts, retry_on="5xx") if attempts else HTTPRetry(0), traffic=_lb("ROUND_ROBIN"))
    pred = predict_success(pol, DestinationFault("error", 1.0, 503, instances=bad), Load(concurrency=1))
    assert pred.p_success == pytest.approx(expected)


def test_round_robin_pointer_chain_with_a_flaky_host() -> None:
    # Host 0 fails half its requests, one retry. Pointer moves: from 0 -> 1 (success) or -> 2 (retry on 1);
    # from 1 -> 2; from 2 -> 0. Stationary shares (0.4, 0.2, 0.4); only starts at 0 make a 2nd attempt half
    # the time, so mean attempts = 1 + 0.4 x 0.5 = 1.2, and every request succeeds.
    pol = _policy(HTTPRetry(1, retry_on="5xx"), traffic=_lb("ROUND_ROBIN"))
    pred = predict_success(pol, DestinationFault("error", 0.5, 503, instances=1), Load(concurrency=1))
    assert pred.outcomes == {Outcome(200): pytest.approx(1.0)}
    assert pred.mean_attempts == pytest.approx(1.2)


def test_round_robin_under_concurrency_is_modelled_as_random_with_a_warning() -> None:
    pol = _policy(HTTPRetry(1, retry_on="5xx"), traffic=_lb("ROUND_ROBIN"))
    pred = predict_success(pol, DestinationFault("error", 1.0, 503, instances=1), Load(concurrency=4))
    assert pred.p_success == pytest.approx(1 - (1 / 3) ** (1 + ENVOY_SELECTIONS))
    assert any("round robin" in w.effect for w in pred.warnings)


def test_consistent_hash_retries_stay_on_the_same_host_from_1_23() -> None:
    traffic = TrafficPolicy(load_balancer=LoadBalancer(consistent_hash=ConsistentHash(http_header_name="x-user")))
    fault = DestinationFault("error", 1.0, 503, instances=1)
    sticky = predict_success(_policy(HTTPRetry(3, retry_on="5xx"), traffic=traffic, istio="1.23"), fault)
    assert sticky.p_success == pytest.approx(2 / 3)  # a bad host's requests fail every attempt
    older = predict_success(_policy(HTTPRetry(3, retry_on="5xx"), traffic=traffic, istio="1.22"), fault)
    assert older.p_success > 0.99  # the predicate moved retries to other hosts


# --- breakers, timeouts, reasons ---------------------------------------------------------------------


def test_concurrency_above_max_retries_is_flagged_with_a_floor() -> None:
    traffic = TrafficPolicy(connection_pool=ConnectionPool(http=HTTPSettings(max_retries=2)))
    pol = _policy(HTTPRetry(2, retry_on="5xx"), traffic=traffic)
    fault = DestinationFault("error", 0.5, 503)
    safe = predict_success(pol, fault, Load(concurrency=2))
    assert safe.warnings == ()
    assert safe.lower_bound is None
    risky = predict_success(pol, fault, Load(concurrency=3))
    assert risky.p_success == pytest.approx(0.875)
    assert risky.lower_bound == pytest.approx(0.5)
    assert [w.field for w in risky.warnings] == ["spec.trafficPolicy.connectionPool.http.maxRetries"]


def test_istio_default_retry_breaker_is_not_a_risk_but_envoy_default_is_mentioned() -> None:
    pred = predict_success(_policy(HTTPRetry(2, retry_on="5xx")), DestinationFault("error", 0.5, 503), Load(8))
    assert pred.lower_bound is None
    assert pred.warnings == ()
    assert any(r.source == "Envoy default max_retries 3" for r in pred.reasons)


def test_route_timeout_cuts_slow_attempts() -> None:
    pred = predict_success(_policy(HTTPRetry(2, retry_on="5xx"), timeout=1.0), DestinationFault("latency", delay=2.0))
    assert pred.outcomes == {Outcome(504, "UT"): 1.0}


def test_slow_attempts_under_the_per_try_timeout_succeed() -> None:
    pol = _policy(HTTPRetry(2, 0.3, "5xx"), timeout=1.0)
    assert predict_success(pol, DestinationFault("latency", delay=0.1)).p_success == pytest.approx(1.0)


def test_per_try_timeouts_on_half_the_requests_are_retried_like_errors() -> None:
    pol = _policy(HTTPRetry(2, 0.3, "gateway-error"))
    pred = predict_success(pol, DestinationFault("latency", 0.5, delay=1.0))
    assert pred.p_success == pytest.approx(1 - 0.5**3)
    assert pred.p(504, "URX,UT") == pytest.approx(0.5**3)
    assert pred.covered == {"per-try timeout": True}


def test_reasons_cite_the_policy_fields() -> None:
    pred = predict_success(_policy(HTTPRetry(2, retry_on="5xx")), DestinationFault("error", 0.5, 503))
    fields = {r.field for r in pred.reasons}
    assert {"spec.http[0].retries.attempts", "spec.http[0].retries.retryOn"} <= fields
    assert all(r.source for r in pred.reasons)


@settings(max_examples=60, deadline=None)
@given(
    attempts=st.integers(0, 4),
    rate=st.floats(0, 1),
    bad=st.one_of(st.none(), st.integers(1, 3)),
    kind=st.sampled_from(["error", "reset", "refused", "latency"]),
    retry_on=st.sampled_from(["5xx", "gateway-error", "connect-failure", "retriable-status-codes,503", "reset"]),
    lb=st.sampled_from(["LEAST_REQUEST", "ROUND_ROBIN", "RANDOM"]),
    concurrency=st.integers(1, 4),
)
def test_outcomes_form_a_distribution(
    attempts: int, rate: float, bad: int | None, kind: str, retry_on: str, lb: str, concurrency: int
) -> None:
    retries = HTTPRetry(attempts, 0.2, retry_on) if attempts else HTTPRetry(0)
    fault = DestinationFault(kind, rate, 503, delay=0.5, instances=bad)  # type: ignore[arg-type]
    pred = predict_success(_policy(retries, timeout=1.0, traffic=_lb(lb)), fault, Load(concurrency))
    assert sum(pred.outcomes.values()) == pytest.approx(1.0)
    assert 0.0 <= pred.p_success <= 1.0 + 1e-12
    assert 1.0 - 1e-9 <= pred.mean_attempts <= attempts + 1 + 1e-9
    if attempts == 0:
        return  # attempts 0 has no retry policy at all, so no per-try timeout: not comparable
    # one more attempt never lowers success
    more = HTTPRetry(attempts + 1, 0.2, retry_on)
    assert predict_success(_policy(more, timeout=1.0, traffic=_lb(lb)), fault, Load(concurrency)).p_success >= (
        pred.p_success - 1e-9
    )


def test_a_reset_decides_before_an_error_and_carries_no_delay() -> None:
    """The echo resets first (without sleeping), then delays, then answers the error (fidelity case 86847ca13c81)."""
    from pytest_meshcheck.expect.retries import _attempt_outcomes

    outcomes = _attempt_outcomes(
        [
            DestinationFault("error", rate=0.1, status=500),
            DestinationFault("latency", rate=1.0, delay=0.2),
            DestinationFault("reset", rate=0.5),
        ]
    )
    by_failure: dict[str | None, float] = {}
    for p, attempt in outcomes:
        by_failure[attempt.failure] = by_failure.get(attempt.failure, 0.0) + p
        if attempt.failure == "reset":
            assert attempt.delay == 0.0
        else:
            assert attempt.delay == 0.2
    assert by_failure["status"] == pytest.approx(0.5 * 0.1)
    assert by_failure["reset"] == pytest.approx(0.5)
