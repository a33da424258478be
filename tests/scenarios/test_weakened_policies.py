"""Every scenario fails when the policy it checks is removed or weakened.

Each case runs a shipped scenario with its built-in policy replaced by a weaker one, through the same
substitution ``--mesh-policies`` performs, and expects :class:`ScenarioFailed` (a failed claim), not an
error. Two claims cannot be broken by weakening and are not listed: "concurrency 1 never overflows"
(fewer limits never add overflow) and the admission-rejection test (it loads no policy into the mesh).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_meshcheck.cli import platform_policies_dir
from pytest_meshcheck.harness.scenario import Scenario, ScenarioFailed
from pytest_meshcheck.policy import PolicySet, load_policies, load_policy_text

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scenarios"))
import test_circuit_breaking as cb
import test_fault_injection as fi
import test_outlier_detection as od
import test_platform_policies as pp
import test_retries as rt
import test_timeouts as to
import test_traffic_management as tm


def vs(service: str, body: str, name: str | None = None) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name or service + "-weakened"}, namespace: platform-core}}
spec:
  hosts: [{service}]
  http:
  - route:
    - destination: {{host: {service}}}
{body}
"""


def platform_with(text: str, drop: tuple[str, ...] = ()) -> PolicySet:
    """The platform's policies with the named objects dropped and ``text`` added."""
    base = load_policies(platform_policies_dir())
    extra = load_policy_text(text, source="<weakened>") if text else PolicySet()
    return PolicySet(
        tuple(v for v in base.virtual_services if v.name not in drop) + extra.virtual_services,
        tuple(d for d in base.destination_rules if d.name not in drop) + extra.destination_rules,
    )


def text(yaml_text: str) -> PolicySet:
    return load_policy_text(yaml_text, source="<weakened>")


NO_OUTLIER = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment-no-outlier, namespace: platform-core}
spec:
  host: payment-service
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
"""
LOOSE_POOL = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: order-loose-pool, namespace: platform-core}
spec:
  host: order-service
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 100}
      http: {http1MaxPendingRequests: 100}
"""
SUBSETS = tm.SUBSETS
PER_TRY_503_ONLY = (
    '    timeout: 2s\n    retries: {attempts: 2, perTryTimeout: 0.2s, retryOn: "retriable-status-codes,503"}'
)
PER_TRY_5XX = "    timeout: 2s\n    retries: {attempts: 2, perTryTimeout: 0.2s, retryOn: 5xx}"
WEIGHTS_ONLY = (
    "    - destination: {host: order-service, subset: v1}\n      weight: 90\n"
    "    - destination: {host: order-service, subset: v2}\n      weight: 10"
)
ORDER_NO_RETRIES = pp.vs_yaml("order-service", "{attempts: 0}", "10s", ", port: {number: 8084}")

CASES: list[tuple[str, Callable[..., None], dict[str, Any], PolicySet]] = [
    ("two retries -> none", rt.test_two_retries_hide_most_503s, {},
     text(rt.retry_policy("{attempts: 0}"))),
    ("three retries -> one", rt.test_three_retries_hide_30_percent_errors, {},
     text(rt.retry_policy("{attempts: 1, retryOn: 5xx}"))),
    ("503-only retries -> 5xx retries", rt.test_500_is_not_retried_under_retriable_status_codes_503, {},
     text(rt.retry_policy("{attempts: 2, retryOn: 5xx}"))),
    ("default policy -> explicit 5xx retries", rt.test_default_retry_policy_follows_the_istio_version, {},
     text(rt.retry_policy("{attempts: 2, retryOn: 5xx}"))),
    ("dead replica retries -> none", rt.test_retries_skip_a_dead_replica, {},
     text(rt.retry_policy("{attempts: 0}"))),
    ("route timeout -> 5 s", to.test_route_timeout_ends_slow_requests_at_the_ceiling, {},
     text(to.timeout_policy("    timeout: 5s\n    retries: {attempts: 0}"))),
    ("per-try retried -> retryOn without 5xx", to.test_per_try_timeouts_are_retried_when_retry_on_has_5xx, {},
     text(to.timeout_policy(PER_TRY_503_ONLY))),
    ("per-try not retried -> retryOn 5xx",
     to.test_per_try_timeout_is_not_retried_without_5xx_gateway_error_or_reset, {},
     text(to.timeout_policy(PER_TRY_5XX))),
    ("outlier detection -> removed", od.test_failing_replica_is_ejected_then_returns, {}, text(NO_OUTLIER)),
    ("default maxEjectionPercent -> 50", od.test_default_max_ejection_percent_ejects_nothing_with_three_replicas, {},
     text(od.outlier_policy("      maxEjectionPercent: 50"))),
    ("connection pool -> 100/100", cb.test_connection_pool_overflows_beyond_its_capacity,
     {"concurrency": 3, "overflows": True}, text(LOOSE_POOL)),
    ("fault abort -> removed", fi.test_client_side_abort_is_never_retried, {},
     text(vs("catalog-service", "    retries: {attempts: 3, retryOn: 5xx}"))),
    ("canary 90/10 -> 50/50", tm.test_canary_split_sends_ten_percent_to_v2, {},
     text(SUBSETS + "---" + tm.CANARY.replace("weight: 90", "weight: 50").replace("weight: 10", "weight: 50"))),
    ("header match -> removed", tm.test_header_match_routes_to_v2, {},
     text(SUBSETS + "---" + vs("order-service", "", name="order-canary").replace(
         "    - destination: {host: order-service}", WEIGHTS_ONLY))),
    ("README order retries -> none", pp.test_order_retries_turn_30_percent_errors_into_99_percent, {},
     platform_with(ORDER_NO_RETRIES, ("order-service-retry",))),
    ("README catalog corrected -> one retry", pp.test_catalog_retries_give_87_5_percent_corrected, {},
     platform_with(pp.vs_yaml("catalog-service", "{attempts: 1, retryOn: 5xx}", "5s"), ("catalog-service-retry",))),
    ("README inventory timeout -> removed", pp.test_inventory_times_out_after_8s_not_20s, {},
     platform_with("", ("inventory-service-retry",))),
    ("README order 10 s corrected -> as written", pp.test_order_times_out_after_10s_corrected, {}, platform_with("")),
    ("README total timeout table -> payment timeout removed", pp.test_no_request_outlives_the_total_timeout,
     {"service": "payment-service", "total": 15.0}, platform_with("", ("payment-service-retry",))),
    ("README order circuit breaker -> removed", pp.test_order_circuit_breaker_ejects_an_instance_after_5_errors, {},
     platform_with("", ("order-service-circuit-breaker",))),
    ("README payment breaker corrected -> as written", pp.test_payment_circuit_breaker_opens_after_3_errors_corrected,
     {}, platform_with("")),
]  # fmt: skip


@pytest.mark.prometheus
@pytest.mark.parametrize(("weakening", "scenario_fn", "kwargs", "weak"), CASES, ids=[c[0] for c in CASES])
def test_scenario_fails_when_its_policy_is_weakened(
    scenario_with: Callable[[PolicySet], Scenario],
    weakening: str,
    scenario_fn: Callable[..., None],
    kwargs: dict[str, Any],
    weak: PolicySet,
) -> None:
    sc = scenario_with(weak)
    with pytest.raises(ScenarioFailed) as failure:
        scenario_fn(sc, **kwargs)
    # The message a user acts on: the failed check, the policy lines, and where the report is.
    message = str(failure.value)
    assert "policy lines and defaults involved" in message
    assert "report:" in message
