"""Istio fault injection: a client-side abort is answered by the caller's sidecar and never retried.

The abort is part of the policy under test (``fault.abort`` in the VirtualService, as a chaos tool that
patches VirtualServices would write it). The evidence that it was live is Envoy's
``envoy_http_fault_aborts_injected`` counter, which must equal the aborted responses the client saw.
"""

from __future__ import annotations

from pytest_meshcheck import ClosedLoop, Scenario

SERVICE = "catalog-service"
ABORT_WITH_RETRIES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog-abort, namespace: platform-core}
spec:
  hosts: [catalog-service]
  http:
  - route:
    - destination: {host: catalog-service}
    retries: {attempts: 3, retryOn: 5xx}
    fault:
      abort:
        httpStatus: 503
        percentage: {value: 50}
"""


def test_client_side_abort_is_never_retried(mesh_scenario: Scenario) -> None:
    """fault.abort 503 at 50 % with attempts: 3, retryOn: 5xx: aborts reach the client unretried, 50 % of the time."""
    mesh_scenario.apply(ABORT_WITH_RETRIES)
    mesh_scenario.drive(SERVICE, ClosedLoop(concurrency=4))
    # percentage 40 or 60 is off by 0.1; a retried abort would answer 503 only 0.5^4 = 6 % of the time.
    mesh_scenario.expect_status_share(503, about=0.5, delta=0.1)
    mesh_scenario.expect_model_consistency(delta=0.1)
    mesh_scenario.expect_counter("envoy_http_fault_aborts_injected", equals="aborted")
    mesh_scenario.expect_counter("upstream_rq_retry", equals=0, role="claim")
    mesh_scenario.expect_counter("upstream_rq_total", equals="not_aborted")
