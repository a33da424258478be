"""Istio fault injection: a client-side abort is answered by the caller's sidecar and never retried."""

from __future__ import annotations

from pytest_meshcheck.harness.scenario import Scenario

SERVICE = "catalog-service"
RETRY_ALL_5XX = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog-retry, namespace: platform-core}
spec:
  hosts: [catalog-service]
  http:
  - route:
    - destination: {host: catalog-service}
    retries: {attempts: 3, retryOn: 5xx}
"""


def test_client_side_abort_is_never_retried(scenario: Scenario) -> None:
    """fault.abort 503 at 50 % with attempts: 3, retryOn: 5xx: aborts reach the client unretried, 50 % of the time."""
    scenario.policies.apply(RETRY_ALL_5XX)
    scenario.target(SERVICE)
    n = scenario.requests_for(0.5, 0.05)
    before = {i.name: i for i in scenario.mesh.instances(SERVICE)}
    with scenario.chaos.istio_abort(SERVICE, status=503, percent=50.0):
        effective = scenario.effective(SERVICE)
        scenario.explain(effective.reason("fault.abort", "retry.retry_on", "retry.attempts"))
        result = scenario.load.closed(SERVICE, concurrency=4, requests=n)
    aborted = result.status_histogram().get(503, 0)
    scenario.check_rate(
        "share of requests aborted by the fault filter", aborted, result.count, effective.fault.abort_fraction,
        tolerance=0.05, reasons=effective.reason("fault.abort"),
    )  # fmt: skip
    attempts = result.attempt_histogram()
    scenario.check_value(
        "aborted responses without x-envoy-attempt-count (never reached the router)",
        float(attempts.get(None, 0)),
        expected=float(aborted),
        detail=f"attempt histogram {attempts}",
    )
    prom = scenario.prom()
    retries = scenario.cluster_increase("envoy_cluster_upstream_rq_retry", SERVICE, prom)
    scenario.check_value("envoy_cluster_upstream_rq_retry", retries, expected=0.0, reasons=effective.reason("fault.abort"))
    injected = prom.counter_increase("envoy_http_fault_aborts_injected")
    scenario.check_value("envoy_http_fault_aborts_injected = aborted responses", injected, expected=float(aborted))
    upstream = scenario.cluster_increase("envoy_cluster_upstream_rq_total", SERVICE, prom)
    scenario.check_value(
        "requests that reached the destination = requests not aborted", upstream, expected=float(result.count - aborted)
    )
    assert len(before) == 3
