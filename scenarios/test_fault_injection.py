"""Istio fault injection: a client-side abort is answered by the caller's sidecar and never retried.

The abort is part of the policy under test (``fault.abort`` in the VirtualService, as a chaos tool that
patches VirtualServices would write it). The evidence that it was live is Envoy's
``envoy_http_fault_aborts_injected`` counter, which must equal the aborted responses the client saw.
"""

from __future__ import annotations

from pytest_meshcheck.harness.scenario import Scenario

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


def test_client_side_abort_is_never_retried(scenario: Scenario) -> None:
    """fault.abort 503 at 50 % with attempts: 3, retryOn: 5xx: aborts reach the client unretried, 50 % of the time."""
    scenario.policies.apply(ABORT_WITH_RETRIES)
    effective = scenario.effective(SERVICE)
    reasons = effective.reason("fault.abort", "retry.retry_on", "retry.attempts")
    scenario.explain(reasons)
    n = scenario.requests_for(0.5, 0.05)
    result = scenario.load.closed(SERVICE, concurrency=4, requests=n)
    aborted = result.status_histogram().get(503, 0)
    scenario.check_rate(
        "claim: share of requests aborted by the fault filter", aborted, result.count, 0.5,
        tolerance=0.05, reasons=reasons,
    )  # fmt: skip
    scenario.check_rate(
        f"model: abort share {effective.fault.abort_fraction:.0%} from the policy", aborted, result.count,
        effective.fault.abort_fraction, tolerance=0.05, reasons=reasons,
    )  # fmt: skip
    attempts = result.attempt_histogram()
    scenario.check_value(
        "aborted responses without x-envoy-attempt-count (they never reached the router)",
        float(attempts.get(None, 0)),
        expected=float(aborted),
        detail=f"attempt histogram {attempts}",
    )
    prom = scenario.prom()
    injected = prom.counter_increase("envoy_http_fault_aborts_injected")
    scenario.check_value(
        "fault live: envoy_http_fault_aborts_injected = aborted responses", injected, expected=float(aborted)
    )
    retries = scenario.cluster_increase("envoy_cluster_upstream_rq_retry", SERVICE, prom)
    scenario.check_value("claim: envoy_cluster_upstream_rq_retry (aborts are never retried)", retries, expected=0.0,
                         reasons=reasons)  # fmt: skip
    upstream = scenario.cluster_increase("envoy_cluster_upstream_rq_total", SERVICE, prom)
    scenario.check_value(
        "requests that reached the destination = requests not aborted", upstream, expected=float(result.count - aborted)
    )
