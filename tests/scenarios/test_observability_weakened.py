"""Each passing scenario of ``scenarios/test_observability.py`` fails its intended claim under a weaker policy.

The same pattern as ``test_readme_claims_weakened.py``: the scenario's own policies are replaced through the
substitution ``--mesh-policies`` performs, and :class:`ScenarioFailed` must name the intended check, a claim
about the mesh (role ``claim``), never a model-only check.

* per-service graph, payment's DestinationRule removed (the platform as written): nothing ejects the failing
  payment host, so the order -> payment edge shows 0 hosts ejected, not one per order pod;
* per-service graph, payment's maxEjectionPercent 50 -> 10: (0 + 1) / 3 x 100 > 10, so nothing is ejected;
* README breaker test corrected, order-service's maxEjectionPercent 50 -> 10: (0 + 1) / 4 x 100 > 10, so the
  client -> order edge shows no host ejected.

The strict-xfail "as written" scenario is not listed: it already fails on its claim by design.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_meshcheck.cli import platform_policies_dir
from pytest_meshcheck.harness.scenario import Scenario, ScenarioFailed
from pytest_meshcheck.policy import PolicySet, load_policies, load_policy_text

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scenarios"))
import test_observability as ob

pytestmark = [pytest.mark.envoy, pytest.mark.prometheus]


def platform_with(*texts: str) -> PolicySet:
    """The platform's policies with ``texts`` added or replacing same-named resources."""
    policies = load_policies(platform_policies_dir())
    for text in texts:
        policies = policies.merged(load_policy_text(text, source="<weakened>"))
    return policies


def order_breaker(max_ejection_percent: int) -> str:
    """The platform's circuit-breaker.yaml (order-service) with another maxEjectionPercent."""
    text = (platform_policies_dir() / "circuit-breaker.yaml").read_text(encoding="utf-8")
    assert "maxEjectionPercent: 50 " in text
    return text.replace("maxEjectionPercent: 50 ", f"maxEjectionPercent: {max_ejection_percent} ")


PAYMENT_EJECTED = (
    "claim: graph order-service -> payment-service hosts ejected = the failing instance, once per order pod"
)
ORDER_EJECTED = "claim: graph client -> order-service hosts ejected (README: 'Circuit breaker open')"

Case = tuple[str, Callable[[Scenario], None], PolicySet, str]
CASES: list[Case] = [
    (
        "per service: no payment outlier detection",
        ob.test_graph_shows_open_circuits_and_retries_per_service,
        platform_with(),
        PAYMENT_EJECTED,
    ),
    (
        "per service: payment maxEjectionPercent 50 -> 10",
        ob.test_graph_shows_open_circuits_and_retries_per_service,
        platform_with(ob.PAYMENT_BREAKER.replace("maxEjectionPercent: 50", "maxEjectionPercent: 10")),
        PAYMENT_EJECTED,
    ),
    (
        "README breaker test corrected: order maxEjectionPercent 50 -> 10",
        ob.test_readme_breaker_test_graph_shows_failures_open_breaker_and_rerouting_corrected,
        platform_with(order_breaker(10)),
        ORDER_EJECTED,
    ),
]


@pytest.mark.parametrize(("weakening", "scenario_fn", "weak", "intended"), CASES, ids=[c[0] for c in CASES])
def test_observability_scenario_fails_its_claim_when_its_policy_is_weakened(
    fails_on_claim: Callable[..., ScenarioFailed],
    weakening: str,
    scenario_fn: Callable[[Scenario], None],
    weak: PolicySet,
    intended: str,
) -> None:
    fails_on_claim(weak, scenario_fn, intended, weakening)
