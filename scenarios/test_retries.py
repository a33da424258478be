"""Retries: how many destination failures the caller's sidecar hides, per ``retryOn`` and ``attempts``.

Every expectation comes from the policy through the expectation model (``pytest_meshcheck.expect``),
so ``--mesh-policies`` or another ``--mesh-istio-version`` changes what is expected, not the test code.
Retries are proven twice: by the client's ``x-envoy-attempt-count`` headers and by Envoy's own
``envoy_cluster_upstream_rq_retry`` counter read through Prometheus; the two must agree exactly.
"""

from __future__ import annotations

from pytest_meshcheck.expect import DestinationFault, Load, predict_success
from pytest_meshcheck.harness.scenario import Scenario
from pytest_meshcheck.load import LoadResult

SERVICE = "catalog-service"


def retry_policy(retries: str) -> str:
    """A VirtualService for catalog-service with the given ``retries`` block (YAML flow mapping)."""
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: catalog-retry, namespace: platform-core}}
spec:
  hosts: [catalog-service]
  http:
  - route:
    - destination: {{host: catalog-service}}
    retries: {retries}
"""


NO_RETRY_FIELD = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog-default-retries, namespace: platform-core}
spec:
  hosts: [catalog-service]
  http:
  - route:
    - destination: {host: catalog-service}
"""


def run_retry_claim(
    scenario: Scenario,
    policy: str,
    fault: DestinationFault,
    *,
    tolerance: float,
    at_least: float | None = None,
    retries: str = "some",
    concurrency: int = 4,
) -> None:
    """Apply ``policy``, inject ``fault`` on catalog-service, and check the claim and the model.

    Args:
        scenario: The scenario fixture.
        policy: The scenario's VirtualService (replaced by ``--mesh-policies`` when given).
        fault: The destination fault.
        tolerance: Allowed distance from the expected rate (before the profile's scaling).
        at_least: The claim: the success ratio is at least this.
        retries: The claim about retries: ``some`` happen, or ``none`` do.
        concurrency: Closed-loop concurrency.
    """
    scenario.policies.apply(policy)
    effective = scenario.effective(SERVICE)
    prediction = predict_success(effective, [fault], Load(concurrency=concurrency))
    scenario.explain(prediction.explain())
    n = scenario.requests_for(min(prediction.p_success, at_least or 1.0), tolerance)
    sequential = scenario.settings.sequential and at_least is not None and at_least < 1.0
    with scenario.chaos.error(SERVICE, rate=fault.rate, status=fault.status, instances=fault.instances) as injected:
        if sequential:
            # --mesh-sequential: the claim is decided batch by batch, stopping once the evidence is clear.
            batches = scenario.sequential_rate(
                f"claim: success ratio at least {at_least:.2%}", SERVICE, at_least or 0.0, tolerance=tolerance,
                concurrency=concurrency, max_requests=4 * n, reasons=prediction.reasons,
            )  # fmt: skip
            result = LoadResult.concat(batches)
        else:
            result = scenario.load.closed(SERVICE, concurrency=concurrency, requests=n)
        scenario.require_chaos(injected)
    if at_least is not None and not sequential:
        scenario.check_rate(
            f"claim: success ratio at least {at_least:.2%}", result.success_count, result.count, at_least,
            tolerance=tolerance, alternative="at-least", reasons=prediction.reasons,
        )  # fmt: skip
    scenario.check_rate(
        f"model: success ratio {prediction.p_success:.2%} predicted from the policy",
        result.success_count, result.count, prediction.p_success, tolerance=tolerance, reasons=prediction.reasons,
    )  # fmt: skip
    retries_seen_by_client = sum((a - 1) * c for a, c in result.attempt_histogram().items() if a)
    prom = scenario.prom()
    counted = scenario.cluster_increase("envoy_cluster_upstream_rq_retry", SERVICE, prom)
    scenario.check_value(
        "envoy_cluster_upstream_rq_retry = retries seen in x-envoy-attempt-count",
        counted,
        expected=float(retries_seen_by_client),
        detail=f"client saw {retries_seen_by_client} retries over {result.count} requests",
    )
    if retries == "none":
        scenario.check_value("claim: no retries (envoy_cluster_upstream_rq_retry)", counted, expected=0.0,
                             reasons=prediction.reasons)  # fmt: skip
    else:
        scenario.check_value("claim: retries happen (envoy_cluster_upstream_rq_retry)", counted, at_least=1.0,
                             reasons=prediction.reasons)  # fmt: skip


def test_two_retries_hide_most_503s(scenario: Scenario) -> None:
    """attempts: 2, retryOn: 5xx turns 50 % 503s at the destination into 1 - 0.5^3 = 87.5 % success."""
    run_retry_claim(
        scenario, retry_policy("{attempts: 2, retryOn: 5xx}"), DestinationFault("error", rate=0.5, status=503),
        tolerance=0.03, at_least=0.875,
    )  # fmt: skip


def test_three_retries_hide_30_percent_errors(scenario: Scenario) -> None:
    """attempts: 3, retryOn: 5xx turns 30 % 503s into 1 - 0.3^4 = 99.2 % success."""
    run_retry_claim(
        scenario, retry_policy("{attempts: 3, retryOn: 5xx}"), DestinationFault("error", rate=0.3, status=503),
        tolerance=0.01, at_least=0.992,
    )  # fmt: skip


def test_500_is_not_retried_under_retriable_status_codes_503(scenario: Scenario) -> None:
    """retryOn: retriable-status-codes,503 does not retry a 500: 50 % 500s stay 50 % failures, zero retries."""
    run_retry_claim(
        scenario,
        retry_policy('{attempts: 2, retryOn: "retriable-status-codes,503"}'),
        DestinationFault("error", rate=0.5, status=500),
        tolerance=0.04,
        retries="none",
    )


def test_default_retry_policy_follows_the_istio_version(scenario: Scenario) -> None:
    """A route without retries gets Istio's default policy: it retries 503 before Istio 1.24, not since."""
    retries_503 = scenario.mesh.istio_version.default_retries_503
    run_retry_claim(
        scenario, NO_RETRY_FIELD, DestinationFault("error", rate=0.5, status=503), tolerance=0.04,
        at_least=0.875 if retries_503 else None, retries="some" if retries_503 else "none",
    )  # fmt: skip


def test_retries_skip_a_dead_replica(scenario: Scenario) -> None:
    """With one of three replicas always failing, previous_hosts sends each retry to a replica not yet tried."""
    run_retry_claim(
        scenario, retry_policy("{attempts: 2, retryOn: 5xx}"),
        DestinationFault("error", rate=1.0, status=503, instances=1), tolerance=0.02, at_least=0.99,
    )  # fmt: skip
