"""The platform README's policies, loaded from the packaged copies, give the right predictions and reasons."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from pytest_meshcheck.expect import (
    DestinationFault,
    Load,
    effective_policy,
    predict_ejection,
    predict_latency,
    predict_overflow,
    predict_success,
)
from pytest_meshcheck.policy.loader import load_policies
from pytest_meshcheck.policy.model import PolicySet
from pytest_meshcheck.topology import Topology, load_topology

BASE = 0.025


@pytest.fixture(scope="module")
def platform() -> tuple[PolicySet, Topology]:
    folder = Path(str(resources.files("pytest_meshcheck").joinpath("examples/platform")))
    return load_policies(folder), load_topology()


def test_consecutive_errors_is_reported_as_ignored(platform: tuple[PolicySet, Topology]) -> None:
    policies, topo = platform
    pol = effective_policy(policies, topo, "order-service")
    pred = predict_ejection(pol, DestinationFault("error", 1.0, 500, instances=1))
    ignored = next(r for r in pred.reasons if r.field == "spec.trafficPolicy.outlierDetection.consecutiveErrors")
    assert ignored.value == "5"
    assert "ignored by istiod since 1.7" in ignored.effect
    assert ignored.location is not None
    assert ignored.location.endswith("circuit-breaker.yaml:20")
    default = next(r for r in pred.reasons if r.source == "Envoy default consecutive_5xx 5")
    assert "any 5xx" in default.effect
    # 500s count; maxEjectionPercent 50 of the 4 order-service instances allows 2 out at once
    assert (pred.counts, pred.failures_to_eject, pred.max_ejected, pred.ejected) == (True, 5, 2, 1)
    assert pred.ejection_durations[0] == (30.0, 60.0)  # baseEjectionTime 30s plus up to one 30s interval


def test_min_health_percent_50_panics_only_when_half_the_hosts_are_out(platform: tuple[PolicySet, Topology]) -> None:
    policies, topo = platform
    pol = effective_policy(policies, topo, "order-service")
    assert pol.panic_threshold == 50.0
    three_bad = predict_ejection(pol, DestinationFault("error", 1.0, 503, instances=3))
    assert (three_bad.ejected, three_bad.panic) == (2, False)  # 2 of 4 healthy is 50 %, not below it


def test_readme_retry_claim_of_99_percent_at_30_percent_errors(platform: tuple[PolicySet, Topology]) -> None:
    policies, topo = platform
    pol = effective_policy(policies, topo, "order-service")
    pred = predict_success(pol, DestinationFault("error", 0.3, 500), Load(concurrency=8))
    assert pred.p_success == pytest.approx(1 - 0.3**4)
    assert pred.lower_bound is None  # Istio's max_retries 4294967295 leaves retries alone
    covered = next(r for r in pred.reasons if "HTTP 500 is retried" in r.effect)
    assert covered.field == "spec.http[0].retries.retryOn"
    assert "'5xx'" in covered.effect


def test_readme_latency_scenario_ends_near_8_seconds(platform: tuple[PolicySet, Topology]) -> None:
    policies, topo = platform
    pol = effective_policy(policies, topo, "order-service")
    pred = predict_latency(pol, DestinationFault("latency", 1.0, delay=20.0))
    assert pred.slow_range == pytest.approx((8.0, 8.0 + BASE * 7))  # not the README's 10 s
    assert (pred.status, pred.flags) == (504, "URX,UT")
    inventory = predict_latency(
        effective_policy(policies, topo, "inventory-service"), DestinationFault("latency", 1.0, delay=20.0)
    )
    assert inventory.slow_range == pytest.approx((8.0, 8.0))  # 4 x 2 s meets the 8 s route timeout
    assert (inventory.flags, inventory.warnings) == ("UT", ())


def test_connection_pool_holds_150_requests(platform: tuple[PolicySet, Topology]) -> None:
    policies, topo = platform
    pol = effective_policy(policies, topo, "order-service")
    # 100 connections + 50 pending hold 150 in flight; at 51-149 only a cold pool can overflow, while its
    # connections are still being set up (fidelity case c3fe38d065b4), and 50 or fewer never do.
    levels = [predict_overflow(pol, Load(c)).level for c in (50, 51, 149, 150, 151)]
    assert levels == ["never", "rare", "rare", "rare", "always"]


def test_default_load_balancer_is_least_request_not_round_robin(platform: tuple[PolicySet, Topology]) -> None:
    policies, topo = platform
    reason = effective_policy(policies, topo, "catalog-service").reasons["lb"]
    assert reason.value == "LEAST_REQUEST"
    assert "not round robin" in reason.effect
