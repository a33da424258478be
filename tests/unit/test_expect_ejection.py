"""Outlier-ejection model: which errors count, the max_ejection_percent rule, panic, durations."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_meshcheck.expect import (
    DestinationFault,
    Load,
    effective_policy,
    expected_attempts_to_eject,
    max_ejectable,
    predict_ejection,
)
from pytest_meshcheck.expect.effective import EffectivePolicy
from pytest_meshcheck.policy.model import (
    Destination,
    DestinationRule,
    HTTPRetry,
    HTTPRoute,
    HTTPRouteDestination,
    OutlierDetection,
    PolicySet,
    TrafficPolicy,
    VirtualService,
)
from pytest_meshcheck.topology import parse_topology

TOPO = parse_topology({"namespace": "shop", "services": [{"name": "svc", "versions": [{"name": "v1", "replicas": 3}]}]})
ALWAYS_500_ON_ONE = DestinationFault("error", 1.0, 500, instances=1)


def _policy(
    od: OutlierDetection | None, *, retries: HTTPRetry | None = None, timeout: float | None = None, istio: str = "1.30"
) -> EffectivePolicy:
    drs = (DestinationRule("svc", "shop", "networking.istio.io/v1", "svc", TrafficPolicy(outlier_detection=od)),)
    route = HTTPRoute(route=(HTTPRouteDestination(Destination("svc")),), retries=retries, timeout=timeout)
    vss = (VirtualService("svc", "shop", "networking.istio.io/v1", ("svc",), http=(route,)),)
    return effective_policy(PolicySet(vss, drs), TOPO, "svc", istio=istio)


def test_default_max_ejection_percent_ejects_nothing_with_three_hosts() -> None:
    pred = predict_ejection(_policy(OutlierDetection(consecutive_5xx_errors=5)), ALWAYS_500_ON_ONE)
    assert pred.counts
    assert pred.failures_to_eject == 5
    assert (pred.max_ejected, pred.ejected, pred.will_eject) == (0, 0, False)
    assert any(r.source == "Envoy default max_ejection_percent 10" for r in pred.reasons)
    assert pred.warnings
    assert "ejections_overflow" in pred.warnings[0].effect


@pytest.mark.parametrize(("mep", "bad", "ejected"), [(33, 1, 0), (34, 1, 1), (50, 2, 1), (100, 2, 2), (10, 2, 0)])
def test_ground_truth_max_ejection_percent_table(mep: int, bad: int, ejected: int) -> None:
    pol = _policy(OutlierDetection(consecutive_5xx_errors=5, max_ejection_percent=mep))
    pred = predict_ejection(pol, DestinationFault("error", 1.0, 503, instances=bad))
    assert pred.ejected == ejected


@pytest.mark.parametrize("hosts", range(1, 13))
def test_max_ejectable_matches_the_rule_applied_one_host_at_a_time(hosts: int) -> None:
    for mep in range(1, 101):
        ejected = 0
        # Envoy's check in double arithmetic (DetectorImpl::ejectHost), host by host
        while ejected < hosts and 100.0 * (ejected + 1) / hosts <= mep:
            ejected += 1
        assert max_ejectable(hosts, mep) == ejected, (hosts, mep)


def test_two_bad_hosts_at_100_percent_both_ejected_panic_depends_on_min_health_percent() -> None:
    fault = DestinationFault("error", 1.0, 503, instances=2)
    no_panic = predict_ejection(_policy(OutlierDetection(max_ejection_percent=100)), fault)
    assert (no_panic.ejected, no_panic.panic, no_panic.no_healthy_upstream) == (2, False, False)
    panic = predict_ejection(_policy(OutlierDetection(max_ejection_percent=100, min_health_percent=50)), fault)
    assert (panic.ejected, panic.panic) == (2, True)  # 1 of 3 healthy is below 50 %
    low = predict_ejection(_policy(OutlierDetection(max_ejection_percent=100, min_health_percent=30)), fault)
    assert low.panic is False  # 33 % healthy is not below 30 %


def test_every_host_ejected_with_panic_disabled_gives_no_healthy_upstream() -> None:
    pred = predict_ejection(_policy(OutlierDetection(max_ejection_percent=100)), DestinationFault("error", 1.0, 503))
    assert (pred.ejected, pred.no_healthy_upstream, pred.panic) == (3, True, False)
    assert any("503 UH" in r.effect for r in pred.reasons)


def test_deprecated_consecutive_errors_is_ignored_for_envoys_default_of_five() -> None:
    pred = predict_ejection(
        _policy(OutlierDetection(consecutive_errors=1, max_ejection_percent=100)), ALWAYS_500_ON_ONE
    )
    assert pred.failures_to_eject == 5  # not 1
    assert pred.ejected == 1  # and 500 counts, unlike pre-1.7 gateway-only counting
    ignored = next(r for r in pred.reasons if r.field and r.field.endswith("consecutiveErrors"))
    assert "ignored" in ignored.effect


def test_gateway_errors_alone_keep_the_default_5xx_detector() -> None:
    # ground truth §3 c: only consecutiveGatewayErrors set; 500s still eject through the 5xx default
    pol = _policy(OutlierDetection(consecutive_gateway_errors=2, max_ejection_percent=100))
    assert predict_ejection(pol, ALWAYS_500_ON_ONE).failures_to_eject == 5
    assert predict_ejection(pol, DestinationFault("error", 1.0, 503, instances=1)).failures_to_eject == 2


def test_500_is_not_a_gateway_error() -> None:
    # ground truth §3 d: 5xx detector off, gateway detector on: 500 never ejects, 503 does
    pol = _policy(OutlierDetection(consecutive_5xx_errors=0, consecutive_gateway_errors=5, max_ejection_percent=100))
    assert predict_ejection(pol, ALWAYS_500_ON_ONE).will_eject is False
    assert predict_ejection(pol, DestinationFault("error", 1.0, 503, instances=1)).will_eject is True


def test_gateway_failures_without_enforcement_are_only_detected() -> None:
    # ground truth §3 f: 5xx off and no consecutiveGatewayErrors: Envoy's gateway enforcement defaults to 0
    pol = _policy(OutlierDetection(consecutive_5xx_errors=0, max_ejection_percent=100))
    pred = predict_ejection(pol, DestinationFault("error", 1.0, 503, instances=1))
    assert (pred.counts, pred.ejected) == (False, 0)
    assert any("never enforced" in r.effect for r in pred.reasons)


@pytest.mark.parametrize(
    ("fault", "counts"),
    [
        (DestinationFault("reset", 1.0, instances=1), True),  # ground truth §3 g
        (DestinationFault("refused", 1.0, instances=1), True),
        (DestinationFault("error", 1.0, 404, instances=1), False),
        (DestinationFault("latency", 1.0, delay=0.5, instances=1), False),  # no timeout: slow but successful
    ],
)
def test_which_failures_count(fault: DestinationFault, counts: bool) -> None:
    assert predict_ejection(_policy(OutlierDetection(max_ejection_percent=100)), fault).counts is counts


def test_latency_counts_once_a_timeout_fires() -> None:
    od = OutlierDetection(max_ejection_percent=100)
    slow = DestinationFault("latency", 1.0, delay=2.0, instances=1)
    assert predict_ejection(_policy(od, retries=HTTPRetry(2, 0.5, "5xx")), slow).counts is True
    assert predict_ejection(_policy(od, timeout=1.0), slow).counts is True
    assert predict_ejection(_policy(od, timeout=3.0), slow).counts is False


def test_no_outlier_detection_means_no_ejection() -> None:
    pred = predict_ejection(_policy(None), ALWAYS_500_ON_ONE)
    assert (pred.enabled, pred.will_eject) == (False, False)
    assert any("no instance is ever ejected" in r.effect for r in pred.reasons)


@pytest.mark.parametrize(
    ("base", "interval", "expected"),
    [
        (2.0, 1.0, [(2, 3), (4, 5), (6, 7)]),  # ground truth §3: base x n, plus up to one interval
        (200.0, 1.0, [(200, 201), (300, 301), (300, 301)]),  # capped by max_ejection_time 300 s
        (400.0, 10.0, [(400, 410), (400, 410), (400, 410)]),  # the cap is never below the base
    ],
)
def test_ejection_durations(base: float, interval: float, expected: list[tuple[float, float]]) -> None:
    od = OutlierDetection(interval=interval, base_ejection_time=base, max_ejection_percent=100)
    assert list(predict_ejection(_policy(od), ALWAYS_500_ON_ONE).ejection_durations) == expected


def _markov_expected_attempts(rate: float, threshold: int) -> float:
    """Expected attempts to reach ``threshold`` consecutive failures, by solving the hitting-time equations."""
    # state k = current run of failures; E_k = 1 + rate E_{k+1} + (1 - rate) E_0, E_threshold = 0
    a = np.zeros((threshold, threshold))
    b = np.ones(threshold)
    for k in range(threshold):
        a[k, k] += 1
        a[k, 0] -= 1 - rate
        if k + 1 < threshold:
            a[k, k + 1] -= rate
    return float(np.linalg.solve(a, b)[0])


@pytest.mark.parametrize(("rate", "threshold"), [(1.0, 5), (0.5, 5), (0.3, 3), (0.9, 1), (0.8, 7)])
def test_expected_attempts_to_eject(rate: float, threshold: int) -> None:
    assert expected_attempts_to_eject(rate, threshold) == pytest.approx(_markov_expected_attempts(rate, threshold))


def test_time_to_ejection_uses_the_load_rate() -> None:
    pol = _policy(OutlierDetection(max_ejection_percent=100))
    pred = predict_ejection(pol, ALWAYS_500_ON_ONE, Load(rate=30.0))
    # 5 failures at one of 3 hosts sharing 30 req/s: about 0.5 s (ground truth §3 a: ejected at 0.473 s)
    assert any("0.5 s at 30 req/s" in r.effect for r in pred.reasons)


def test_several_ejections_name_envoys_update_merge_window() -> None:
    # Measured on Envoy 1.40: the first ejection stops traffic at once, later ones only when the 1 s
    # update_merge_window closes; a prediction of several ejections must say so.
    several = predict_ejection(_policy(OutlierDetection(max_ejection_percent=100)), DestinationFault("error", 1.0, 503))
    assert several.ejected == 3
    assert any("update_merge_window" in r.source for r in several.reasons)
    one = predict_ejection(_policy(OutlierDetection(max_ejection_percent=100)), ALWAYS_500_ON_ONE)
    assert one.ejected == 1
    assert not any("update_merge_window" in r.source for r in one.reasons)
