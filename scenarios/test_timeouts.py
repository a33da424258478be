"""Timeouts: a slow destination ends in 504 at the policy's ceiling, never later.

The ceiling, final status and response flags come from the expectation model: the route ``timeout``
covers every attempt and back-off; a per-try timeout ends one attempt and is retried only when
``retryOn`` has ``5xx``, ``gateway-error`` or ``reset``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_meshcheck import ClosedLoop, Fault, Scenario

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
    mesh_scenario: Scenario, policy: str, delay: float, claim: Claim, *, requests: int = 24, concurrency: int = 12
) -> None:
    """Delay every response by ``delay`` seconds; check the claim, then that the mesh did what the model says."""
    mesh_scenario.apply(policy)
    mesh_scenario.inject(SERVICE, Fault.latency(delay))
    mesh_scenario.drive(SERVICE, ClosedLoop(concurrency=concurrency, requests=requests))
    mesh_scenario.expect_every_request(status=claim.status, attempts=claim.attempts)
    mesh_scenario.expect_latency(at_least=claim.ends_after, at_most=claim.ends_before, slack=LATENCY_TOLERANCE)
    mesh_scenario.expect_model_consistency()


def test_route_timeout_ends_slow_requests_at_the_ceiling(mesh_scenario: Scenario) -> None:
    """timeout: 0.5s turns a 1 s destination delay into 504 UT at 0.5 s, never above the ceiling."""
    run_timeout_claim(
        mesh_scenario,
        timeout_policy("    timeout: 0.5s\n    retries: {attempts: 0}"),
        delay=1.0,
        claim=Claim(status=504, attempts=1, ends_after=0.5, ends_before=0.5),
    )


def test_per_try_timeouts_are_retried_when_retry_on_has_5xx(mesh_scenario: Scenario) -> None:
    """perTryTimeout: 0.2s with attempts: 2 and retryOn: 5xx makes three tries: 504 URX,UT after ~0.6 s."""
    run_timeout_claim(
        mesh_scenario,
        timeout_policy("    timeout: 2s\n    retries: {attempts: 2, perTryTimeout: 0.2s, retryOn: 5xx}"),
        delay=1.0,
        # Three tries of 0.2 s plus the two jittered back-offs (at most 25 ms and 50 ms).
        claim=Claim(status=504, attempts=3, ends_after=0.6, ends_before=0.675),
    )


def test_per_try_timeout_is_not_retried_without_5xx_gateway_error_or_reset(mesh_scenario: Scenario) -> None:
    """retryOn: retriable-status-codes,503 does not cover a per-try timeout: one try, 504 UT at 0.2 s."""
    run_timeout_claim(
        mesh_scenario,
        timeout_policy(
            '    timeout: 2s\n    retries: {attempts: 2, perTryTimeout: 0.2s, retryOn: "retriable-status-codes,503"}'
        ),
        delay=1.0,
        claim=Claim(status=504, attempts=1, ends_after=0.2, ends_before=0.2),
    )
