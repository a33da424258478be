"""Every call-graph scenario fails on its intended claim when its policy is replaced by the nearest weaker one.

As ``test_weakened_policies.py`` does for the single-hop scenarios: the scenario's own policies are replaced
through the same substitution ``--mesh-policies`` performs, and the run must raise :class:`ScenarioFailed`
naming the intended check, which must be a claim about the mesh (role ``claim``).

The weakenings: one payment retry more (20 calls per request instead of the README's 16); a breaker that may
eject only half of payment's hosts; a route timeout removed (the nearest weakening a 0.25 s timing tolerance
can see: 0.2 s longer is inside it); payment retries on 5xx with a per-try timeout shorter than its latency;
a pending queue of 100 instead of 1 in front of the slow dependency.
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
import test_call_graph as cg

pytestmark = [pytest.mark.envoy, pytest.mark.prometheus]


def platform_with(*texts: str) -> PolicySet:
    """The platform's policies with ``texts`` added or replacing same-named resources."""
    policies = load_policies(platform_policies_dir())
    for text in texts:
        policies = policies.merged(load_policy_text(text, source="<weakened>"))
    return policies


def payment_retries(attempts: int, retry_on: str, per_try: str | None) -> str:
    per_try_line = f"\n      perTryTimeout: {per_try}" if per_try else ""
    return f"""
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: payment-service-retry, namespace: platform-core}}
spec:
  hosts: [payment-service.platform-core.svc.cluster.local]
  http:
  - route:
    - destination: {{host: payment-service.platform-core.svc.cluster.local}}
    retries:
      attempts: {attempts}
      retryOn: {retry_on}{per_try_line}
    timeout: 15s
"""


ONE_MORE_PAYMENT_RETRY = payment_retries(4, "5xx,reset,connect-failure,refused-stream", "5s")
HALF_EJECTABLE = cg.PAYMENT_CIRCUIT_BREAKER.replace("maxEjectionPercent: 100", "maxEjectionPercent: 50")
# Scaled by the scenario's 0.1: a 0.2 s per-try timeout, shorter than the slow payment's 0.3 s.
RETRIED_SLOW_PAYMENT = payment_retries(2, "5xx,connect-failure,refused-stream", "2s")

Case = tuple[str, Callable[[Scenario], None], PolicySet, str]
CASES: list[Case] = [
    (
        "scenario 1 as written: one payment retry more",
        cg.test_scenario_1_as_written_orders_fail_with_16_payment_calls_each_and_recover,
        platform_with(ONE_MORE_PAYMENT_RETRY),
        "claim: payment-service calls per /api/orders request, fewest (README: 4 tries x 4 tries)",
    ),
    (
        "scenario 1 corrected: maxEjectionPercent 50",
        cg.test_scenario_1_corrected_breaker_ejects_payment_fails_fast_and_resumes,
        platform_with(HALF_EJECTABLE),
        "claim: payment-service calls once the breaker is open (README: 'traffic stops going to payment-service')",
    ),
    (
        "amplification: one payment retry more",
        cg.test_retry_amplification_stays_within_the_readme_bound,
        platform_with(ONE_MORE_PAYMENT_RETRY),
        "claim: most payment-service calls for one /api/orders request (README: 4 tries x 4 tries)",
    ),
    (
        "outer budget: order's route timeout removed",
        cg.test_outer_timeout_cuts_the_request_while_inner_work_goes_on,
        load_policy_text(cg.budget_policies(None, "3s"), source="<weakened>"),
        "claim: /api/orders requests ending in 504",
    ),
    (
        "inner budget: payment's route timeout removed",
        cg.test_inner_timeout_returns_early,
        load_policy_text(cg.budget_policies("1.5s", None), source="<weakened>"),
        "claim: /api/orders requests ending in 504",
    ),
    (
        "no duplicate payment: payment retries 5xx with a per-try timeout",
        cg.test_slow_payment_is_never_executed_twice_corrected,
        platform_with(cg.CORRECTED_NO_DUPLICATES, RETRIED_SLOW_PAYMENT),
        "claim: /api/orders requests whose POST /pay was executed more than once (README: don't retry payments)",
    ),
    (
        "cascade: a pending queue of 100",
        cg.test_slow_inventory_is_contained_by_orders_connection_pool,
        platform_with(cg.inventory_pool(100)),
        "claim: p99 latency of /api/orders (s): no request queues behind the slow inventory-service",
    ),
]


@pytest.mark.parametrize(("weakening", "scenario_fn", "weak", "intended"), CASES, ids=[c[0] for c in CASES])
def test_call_graph_scenario_fails_its_claim_when_its_policy_is_weakened(
    fails_on_claim: Callable[..., ScenarioFailed],
    weakening: str,
    scenario_fn: Callable[[Scenario], None],
    weak: PolicySet,
    intended: str,
) -> None:
    fails_on_claim(weak, scenario_fn, intended, weakening)
