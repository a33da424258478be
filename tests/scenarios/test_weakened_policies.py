"""Every scenario fails on its intended claim when its policy is replaced by the nearest weaker one.

Each case runs a shipped scenario with its built-in policy replaced by a weaker one, through the same
substitution ``--mesh-policies`` performs, and expects :class:`ScenarioFailed` naming the intended
check, which must be a claim about the mesh (role ``claim``), never a model-only check. The weakenings
sit next to the claims: one retry fewer, a retryOn without the code, consecutive5xxErrors + 1, a
percentage or weight 10 or 5 points off, a route timeout 0.2 s longer.

Two claims cannot be broken by weakening and are not listed: "concurrency 1 never overflows" (fewer
limits never add overflow) and the admission-rejection test (it loads no policy into the mesh). The
catalog and order rows of the total-timeout table are bound by their per-try timeouts (four tries of
1 s and 2 s end before the 5 s and 10 s route timeouts), so removing the route timeout cannot break
them: their nearest weakening is a longer perTryTimeout.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_meshcheck.cli import platform_policies_dir
from pytest_meshcheck.harness.scenario import ScenarioFailed
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


ONE_MORE_ERROR = od.outlier_policy("      maxEjectionPercent: 50", consecutive=4)
TIGHT_POOL = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: order-circuit-breaker, namespace: platform-core}
spec:
  host: order-service
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 3, maxRequestsPerConnection: 1}
"""
PER_TRY_503_ONLY = (
    '    timeout: 2s\n    retries: {attempts: 2, perTryTimeout: 0.2s, retryOn: "retriable-status-codes,503"}'
)
PER_TRY_5XX = "    timeout: 2s\n    retries: {attempts: 2, perTryTimeout: 0.2s, retryOn: 5xx}"
SPLIT_85_15 = tm.SUBSETS + "---" + tm.CANARY.replace("weight: 90", "weight: 85").replace("weight: 10", "weight: 15")
WEIGHTS_ONLY = (
    "    - destination: {host: order-service, subset: v1}\n      weight: 90\n"
    "    - destination: {host: order-service, subset: v2}\n      weight: 10"
)
ORDER_TWO_RETRIES = pp.vs_yaml(
    "order-service", "{attempts: 2, perTryTimeout: 2s, retryOn: '5xx,reset,connect-failure,refused-stream'}", "10s",
    ", port: {number: 8084}",
)  # fmt: skip
CATALOG_ONE_RETRY = pp.vs_yaml("catalog-service", "{attempts: 1, retryOn: 5xx}", "5s")
CATALOG_LONG_PER_TRY = pp.vs_yaml("catalog-service", "{attempts: 3, perTryTimeout: 3s, retryOn: 5xx}", "20s")
PAYMENT_FOUR_ERRORS = pp.PAYMENT_CIRCUIT_BREAKER.replace("consecutive5xxErrors: 3", "consecutive5xxErrors: 4")
NO_ORDER_OUTLIER = """
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: order-service-circuit-breaker, namespace: platform-core}
spec:
  host: order-service.platform-core.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
"""

Case = tuple[str, Callable[..., None], dict[str, Any], PolicySet, str]
CASES: list[Case] = [
    ("two retries -> one", rt.test_two_retries_hide_most_503s, {},
     text(rt.retry_policy("{attempts: 1, retryOn: 5xx}")), "claim: success ratio at least 87.50%"),
    ("three retries -> two", rt.test_three_retries_hide_30_percent_errors, {},
     text(rt.retry_policy("{attempts: 2, retryOn: 5xx}")), "claim: success ratio at least 99.19%"),
    ("503-only retries -> 500 retried too", rt.test_500_is_not_retried_under_retriable_status_codes_503, {},
     text(rt.retry_policy('{attempts: 2, retryOn: "retriable-status-codes,500,503"}')),
     "claim: success ratio about 50.00%"),
    ("default policy -> explicit 5xx retries", rt.test_default_retry_policy_follows_the_istio_version, {},
     text(rt.retry_policy("{attempts: 2, retryOn: 5xx}")), "claim: success ratio about 50.00%"),
    ("dead replica retries -> none", rt.test_retries_skip_a_dead_replica, {},
     text(rt.retry_policy("{attempts: 0}")), "claim: success ratio at least 99.90%"),
    ("route timeout 0.5 s -> 0.7 s", to.test_route_timeout_ends_slow_requests_at_the_ceiling, {},
     text(to.timeout_policy("    timeout: 0.7s\n    retries: {attempts: 0}")), "claim: slowest request (s)"),
    ("per-try retried -> retryOn without 5xx", to.test_per_try_timeouts_are_retried_when_retry_on_has_5xx, {},
     text(to.timeout_policy(PER_TRY_503_ONLY)), "claim: requests that made 3 upstream tries (x-envoy-attempt-count)"),
    ("per-try not retried -> retryOn 5xx",
     to.test_per_try_timeout_is_not_retried_without_5xx_gateway_error_or_reset, {},
     text(to.timeout_policy(PER_TRY_5XX)), "claim: requests that made 1 upstream tries (x-envoy-attempt-count)"),
    ("consecutive5xxErrors 3 -> 4", od.test_failing_replica_is_ejected_then_returns, {}, text(ONE_MORE_ERROR),
     "claim: failures before the first ejection"),
    ("default maxEjectionPercent -> 50", od.test_default_max_ejection_percent_ejects_nothing_with_three_replicas, {},
     text(od.outlier_policy("      maxEjectionPercent: 50")), "claim: longest pause of the failing replica (s)"),
    ("pool holding 2 -> holding 4", cb.test_connection_pool_overflows_beyond_its_capacity,
     {"concurrency": 3, "overflows": True}, text(TIGHT_POOL + "---" + cb.NO_RETRIES),
     "claim: 503 UO overflow responses"),
    ("abort 50 % -> 40 %", fi.test_client_side_abort_is_never_retried, {},
     text(fi.ABORT_WITH_RETRIES.replace("value: 50", "value: 40")), "claim: share of 503 answers about 50.00%"),
    ("canary 90/10 -> 85/15", tm.test_canary_split_sends_ten_percent_to_v2, {}, text(SPLIT_85_15),
     "claim: share of requests served by v2"),
    ("header match -> removed", tm.test_header_match_routes_to_v2, {},
     text(tm.SUBSETS + "---" + vs("order-service", "", name="order-canary").replace(
         "    - destination: {host: order-service}", WEIGHTS_ONLY)), "claim: requests with x-version: v2 served by v2"),
    ("README order retries 3 -> 2", pp.test_order_retries_turn_30_percent_errors_into_99_percent, {},
     platform_with(ORDER_TWO_RETRIES, ("order-service-retry",)), "claim: success ratio at least 99.00%"),
    ("README catalog corrected 2 -> 1 retry", pp.test_catalog_retries_give_87_5_percent_corrected, {},
     platform_with(CATALOG_ONE_RETRY, ("catalog-service-retry",)), "claim: success ratio about 87.50%"),
    ("README inventory timeout -> removed", pp.test_inventory_times_out_after_8s_not_20s, {},
     platform_with("", ("inventory-service-retry",)), "claim: requests ending in 504"),
    ("README order 10 s corrected -> as written", pp.test_order_times_out_after_10s_corrected, {}, platform_with(""),
     "claim: fastest request (s)"),
    ("README total timeout table: payment timeout removed", pp.test_no_request_outlives_the_total_timeout,
     {"service": "payment-service", "total": 15.0}, platform_with("", ("payment-service-retry",)),
     "claim: slowest request (s)"),
    ("README total timeout table: catalog perTryTimeout 1 s -> 3 s, route timeout 20 s",
     pp.test_no_request_outlives_the_total_timeout, {"service": "catalog-service", "total": 5.0},
     platform_with(CATALOG_LONG_PER_TRY, ("catalog-service-retry",)),
     "claim: slowest request (s)"),
    ("README order circuit breaker -> no outlierDetection",
     pp.test_order_circuit_breaker_ejects_an_instance_after_5_errors, {},
     platform_with(NO_ORDER_OUTLIER, ("order-service-circuit-breaker",)),
     "claim: fewest errors a faulted instance served before its ejection"),
    ("README payment breaker corrected 3 -> 4 errors", pp.test_payment_circuit_breaker_opens_after_3_errors_corrected,
     {}, platform_with(PAYMENT_FOUR_ERRORS, ()),
     "claim: fewest errors an instance served before the breaker opened on it (README: 3)"),
]  # fmt: skip


@pytest.mark.prometheus
@pytest.mark.parametrize(("weakening", "scenario_fn", "kwargs", "weak", "intended"), CASES, ids=[c[0] for c in CASES])
def test_scenario_fails_its_claim_when_its_policy_is_weakened(
    fails_on_claim: Callable[..., ScenarioFailed],
    weakening: str,
    scenario_fn: Callable[..., None],
    kwargs: dict[str, Any],
    weak: PolicySet,
    intended: str,
) -> None:
    failure = fails_on_claim(weak, lambda sc: scenario_fn(sc, **kwargs), intended, weakening)
    # The message a user acts on: the failed check, the policy lines, and where the report is.
    assert "policy lines and defaults involved" in str(failure)
