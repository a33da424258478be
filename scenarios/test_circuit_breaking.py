"""Circuit breaking: Istio's circuit-breaking task policy overflows with 503 UO beyond its capacity.

The DestinationRule is the one from istio.io's circuit-breaking task (maxConnections 1,
http1MaxPendingRequests 1, maxRequestsPerConnection 1). One Envoy worker (``--concurrency 1``) as in
a sidecar; each response takes 30 ms so requests overlap. Overflow is proven by the responses
(503 with ``x-envoy-overloaded``) and by Envoy's overflow counters, which must agree exactly.
"""

from __future__ import annotations

import pytest

from pytest_meshcheck.expect import Load, predict_overflow
from pytest_meshcheck.harness.scenario import Scenario

SERVICE = "order-service"
CIRCUIT_BREAKING_TASK = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: order-circuit-breaker, namespace: platform-core}
spec:
  host: order-service
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
"""
NO_RETRIES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: order-no-retries, namespace: platform-core}
spec:
  hosts: [order-service]
  http:
  - route:
    - destination: {host: order-service}
    retries: {attempts: 0}
"""


@pytest.mark.parametrize(("concurrency", "overflows"), [(1, False), (3, True)])
def test_connection_pool_overflows_beyond_its_capacity(scenario: Scenario, concurrency: int, overflows: bool) -> None:
    """maxConnections 1 + http1MaxPendingRequests 1 hold two requests: concurrency 1 never overflows, 3 always does."""
    scenario.policies.apply(CIRCUIT_BREAKING_TASK)
    scenario.policies.apply(NO_RETRIES, builtin=False)
    effective = scenario.effective(SERVICE)
    prediction = predict_overflow(effective, Load(concurrency=concurrency))
    scenario.explain(prediction.explain())
    with scenario.chaos.latency(SERVICE, 0.03) as injected:
        result = scenario.load.closed(SERVICE, concurrency=concurrency, requests=60 * concurrency)
        scenario.require_chaos(injected)
    statuses = result.status_histogram()
    overloaded = result.overloaded_count
    detail = f"status histogram {statuses}"
    if overflows:
        scenario.check_value("claim: 503 UO overflow responses", float(overloaded), at_least=1.0,
                             reasons=prediction.reasons, detail=detail)  # fmt: skip
    else:
        scenario.check_value("claim: 503 UO overflow responses", float(overloaded), expected=0.0,
                             reasons=prediction.reasons, detail=detail)  # fmt: skip
        scenario.check_value("claim: successful requests", float(result.success_count), expected=float(result.count))
    scenario.check_value(
        f"model: overflow {prediction.level} at concurrency {concurrency}",
        float(overloaded > 0),
        expected=float(prediction.level == "always") if prediction.level != "rare" else float(overloaded > 0),
        reasons=prediction.reasons,
    )
    scenario.check_value(
        "every 503 carries x-envoy-overloaded", float(overloaded), expected=float(statuses.get(503, 0))
    )
    prom = scenario.prom()
    counted = scenario.cluster_increase("envoy_cluster_upstream_rq_pending_overflow", SERVICE, prom) + (
        scenario.cluster_increase("envoy_cluster_upstream_rq_active_overflow", SERVICE, prom)
    )
    scenario.check_value(
        "Envoy overflow counters (pending + active) = overloaded responses",
        counted,
        expected=float(overloaded),
        reasons=prediction.reasons,
    )
