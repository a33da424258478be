"""Circuit breaking: Istio's circuit-breaking task policy overflows with 503 UO beyond its capacity.

The DestinationRule is the one from istio.io's circuit-breaking task (maxConnections 1,
http1MaxPendingRequests 1, maxRequestsPerConnection 1). One Envoy worker (``--concurrency 1``) as in
a sidecar; each response takes 30 ms so requests overlap. Overflow is proven by the responses
(503 with ``x-envoy-overloaded``) and by Envoy's overflow counters, which must agree exactly.
"""

from __future__ import annotations

import pytest

from pytest_meshcheck import ClosedLoop, Fault, Scenario

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
def test_connection_pool_overflows_beyond_its_capacity(
    mesh_scenario: Scenario, concurrency: int, overflows: bool
) -> None:
    """maxConnections 1 + http1MaxPendingRequests 1 hold two requests: concurrency 1 never overflows, 3 does."""
    mesh_scenario.apply(CIRCUIT_BREAKING_TASK)
    mesh_scenario.apply(NO_RETRIES, builtin=False)
    mesh_scenario.inject(SERVICE, Fault.latency(0.03))
    mesh_scenario.drive(SERVICE, ClosedLoop(concurrency=concurrency, requests=60 * concurrency))
    if overflows:
        mesh_scenario.expect_overflow(at_least=1)
    else:
        mesh_scenario.expect_overflow(equals=0)
    mesh_scenario.expect_model_consistency()
