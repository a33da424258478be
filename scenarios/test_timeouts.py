"""Timeouts: a slow destination ends in 504 at the policy's ceiling, never later.

The ceiling, final status and response flags come from the expectation model: the route ``timeout``
covers every attempt and back-off; a per-try timeout ends one attempt and is retried only when
``retryOn`` has ``5xx``, ``gateway-error`` or ``reset``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_meshcheck.expect import DestinationFault, predict_latency
from pytest_meshcheck.harness.scenario import Scenario

SERVICE = "inventory-service"
# Scheduling noise allowed above a ceiling on this 2-core machine: Envoy's timer fires on time, but the
# load generator and Envoy share the CPUs. Stated in every check so a reader knows the margin.
LATENCY_TOLERANCE = 0.15


def timeout_policy(body: str) -> str:
    """An inventory-service VirtualService whose single route has ``body`` (YAML lines, indented 4)."""
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: inventory-timeout, namespace: platform-core}}
spec:
  hosts: [inventory-service]
  http:
  - route:
    - destination: {{host: inventory-service}}
{body}
"""


@dataclass(frozen=True)
class Claim:
    """What the scenario promises for every request: final status, upstream tries and when it ends (s)."""

    status: int
    attempts: int
    ends_after: float
    ends_before: float


def run_timeout_claim(
    scenario: Scenario, policy: str, delay: float, claim: Claim, *, requests: int = 24, concurrency: int = 12
) -> None:
    """Delay every response by ``delay`` seconds; check the claim, then that the mesh did what the model says."""
    scenario.policies.apply(policy)
    effective = scenario.effective(SERVICE)
    prediction = predict_latency(effective, DestinationFault("latency", rate=1.0, delay=delay))
    scenario.explain(prediction.explain())
    with scenario.chaos.latency(SERVICE, delay) as injected:
        result = scenario.load.closed(SERVICE, concurrency=concurrency, requests=requests)
        scenario.require_chaos(injected)
    statuses, attempts = result.status_histogram(), result.attempt_histogram()
    latencies = result.latencies
    reasons = prediction.reasons
    scenario.check_value(
        f"claim: requests ending in {claim.status}",
        float(statuses.get(claim.status, 0)),
        expected=float(result.count),
        reasons=reasons,
        detail=f"status histogram {statuses}",
    )
    scenario.check_value(
        f"claim: requests that made {claim.attempts} upstream tries (x-envoy-attempt-count)",
        float(attempts.get(claim.attempts, 0)),
        expected=float(result.count),
        reasons=reasons,
        detail=f"attempt histogram {attempts}",
    )
    scenario.check_value(
        "claim: slowest request (s)",
        float(latencies.max()),
        at_most=claim.ends_before + LATENCY_TOLERANCE,
        unit="s",
        reasons=reasons,
        detail=f"{LATENCY_TOLERANCE} s scheduling tolerance",
    )
    scenario.check_value(
        "claim: fastest request (s)",
        float(latencies.min()),
        at_least=claim.ends_after - 0.01,
        unit="s",
        reasons=reasons,
        detail="a timeout cannot fire early",
    )
    # The model must agree with what the mesh did, for whatever policy is active.
    low, high = prediction.slow_range or (0.0, float("inf"))
    scenario.check_value(
        f"model: fastest request not before the predicted {low:.3f} s",
        float(latencies.min()),
        at_least=low - 0.01,
        unit="s",
        reasons=reasons,
    )
    scenario.check_value(
        f"model: requests ending in {prediction.status}",
        float(statuses.get(prediction.status or 0, 0)),
        expected=float(result.count),
        reasons=reasons,
    )
    scenario.check_value(
        f"model: slowest request within the predicted {high:.3f} s",
        float(latencies.max()),
        at_most=high + LATENCY_TOLERANCE,
        unit="s",
        reasons=reasons,
    )
    flags = scenario.mesh_response_flags(SERVICE)
    if prediction.flags and flags is not None:
        scenario.check_value(
            f"model: response flag {prediction.flags} (access log)",
            float(flags.get(prediction.flags, 0)),
            expected=float(result.count),
            reasons=reasons,
            detail=f"access-log flags {flags}",
        )


def test_route_timeout_ends_slow_requests_at_the_ceiling(scenario: Scenario) -> None:
    """timeout: 0.5s turns a 1 s destination delay into 504 UT at 0.5 s, never above the ceiling."""
    run_timeout_claim(
        scenario, timeout_policy("    timeout: 0.5s\n    retries: {attempts: 0}"), delay=1.0,
        claim=Claim(status=504, attempts=1, ends_after=0.5, ends_before=0.5),
    )  # fmt: skip


def test_per_try_timeouts_are_retried_when_retry_on_has_5xx(scenario: Scenario) -> None:
    """perTryTimeout: 0.2s with attempts: 2 and retryOn: 5xx makes three tries: 504 URX,UT after ~0.6 s."""
    run_timeout_claim(
        scenario,
        timeout_policy("    timeout: 2s\n    retries: {attempts: 2, perTryTimeout: 0.2s, retryOn: 5xx}"),
        delay=1.0,
        # Three tries of 0.2 s plus the two jittered back-offs (at most 25 ms and 50 ms).
        claim=Claim(status=504, attempts=3, ends_after=0.6, ends_before=0.675),
    )


def test_per_try_timeout_is_not_retried_without_5xx_gateway_error_or_reset(scenario: Scenario) -> None:
    """retryOn: retriable-status-codes,503 does not cover a per-try timeout: one try, 504 UT at 0.2 s."""
    run_timeout_claim(
        scenario,
        timeout_policy(
            '    timeout: 2s\n    retries: {attempts: 2, perTryTimeout: 0.2s, retryOn: "retriable-status-codes,503"}'
        ),
        delay=1.0,
        claim=Claim(status=504, attempts=1, ends_after=0.2, ends_before=0.2),
    )
