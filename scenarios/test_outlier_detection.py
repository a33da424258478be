"""Outlier detection: a failing replica is ejected, serves nothing while ejected, and comes back.

The evidence is threefold: Envoy's ejection counters (Prometheus), the load records (which replica
answered each request, and when), and the expectation model's rules: consecutive-error thresholds,
``maxEjectionPercent`` enforced even for the first ejection ((ejected + 1) / hosts * 100 <= percent),
and un-ejection on the next ``interval`` tick after ``baseEjectionTime`` x ejections.
"""

from __future__ import annotations

import numpy as np

from pytest_meshcheck.expect import DestinationFault, Load, predict_ejection
from pytest_meshcheck.harness.scenario import Scenario

SERVICE = "payment-service"
RATE = 60.0  # requests per second, open loop
# Slack on timing bounds: the load generator's clock reads response times, not Envoy's event times.
TIMING_TOLERANCE = 0.25


def outlier_policy(extra: str, consecutive: int = 3) -> str:
    """A DestinationRule for payment-service with consecutive5xxErrors 3, interval 0.5s, baseEjectionTime 2s."""
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: payment-outlier, namespace: platform-core}}
spec:
  host: payment-service
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: {consecutive}
      interval: 0.5s
      baseEjectionTime: 2s
{extra}
"""


def test_failing_replica_is_ejected_then_returns(mesh_scenario: Scenario) -> None:
    """A failing replica is ejected after 3 consecutive 5xx and returns after baseEjectionTime (2 s).

    The replica fails its first 3 requests, then serves: the claimed threshold is then exact however late
    Envoy's main thread ejects it (an attempt routed to it meanwhile gets a 200, not a 4th error), and a
    policy that needs a 4th error never ejects it.
    """
    claimed_failures, base, interval = 3, 2.0, 0.5
    mesh_scenario.policies.apply(outlier_policy("      maxEjectionPercent: 50"))
    effective = mesh_scenario.effective(SERVICE)
    fault = DestinationFault("error", rate=1.0, status=503, instances=1)
    prediction = predict_ejection(effective, fault, Load(concurrency=1, rate=RATE))
    mesh_scenario.explain(prediction.explain())
    with mesh_scenario.chaos.error(SERVICE, rate=1.0, status=503, instances=1, limit=claimed_failures) as injected:
        result = mesh_scenario.load.open(SERVICE, rate=RATE, duration=4.0)
        mesh_scenario.require_chaos(injected)
    times, statuses = result.responses_from(injected.instances[0])
    gaps = np.diff(times)
    ejected = bool((gaps > 1.0).any())
    first_gap = int(np.argmax(gaps > 1.0)) if ejected else len(times) - 1
    # Exact: the third error ejects the replica, and the fault ends there, so a request routed to it while the
    # ejection was on its way to Envoy's worker is served. 0 when it was never ejected.
    before = np.asarray(statuses[: first_gap + 1])
    failures = int((before >= 500).sum()) if ejected else 0
    mesh_scenario.check_value(
        "claim: failures before the first ejection",
        float(failures),
        expected=float(claimed_failures),
        reasons=prediction.reasons,
        detail=f"{len(times)} responses from the failing replica, {first_gap + 1} before its first gap of over "
        f"1 s ({len(before) - failures} of them served after the fault's {claimed_failures} errors)"
        if ejected
        else f"{len(times)} responses from the failing replica and no gap of over 1 s: never ejected",
    )
    gap = float(gaps[first_gap]) if 0 <= first_gap < len(gaps) else 0.0
    mesh_scenario.check_value(
        "claim: first ejection, time the failing replica served nothing (s)",
        gap,
        at_least=base - TIMING_TOLERANCE,
        at_most=base + interval + TIMING_TOLERANCE,
        unit="s",
        reasons=prediction.reasons,
        detail=f"baseEjectionTime x 1 plus up to one interval: [{base}, {base + interval}] s ± {TIMING_TOLERANCE} s",
    )
    if prediction.ejection_durations:
        low, high = prediction.ejection_durations[0]
        mesh_scenario.check_value(
            "model: first ejection duration (s)",
            gap,
            at_least=low - TIMING_TOLERANCE,
            at_most=high + TIMING_TOLERANCE,
            unit="s",
            reasons=prediction.reasons,
        )
    done = result.started_wall + np.asarray(result.records.done[: result.count])
    if 0 <= first_gap < len(gaps):
        window = (done > times[first_gap] + 0.05) & (done < times[first_gap + 1] - 0.05)
        failed_while_ejected = int((np.asarray(result.records.status[: result.count])[window] >= 500).sum())
        mesh_scenario.check_value(
            "claim: failed requests while the replica was ejected",
            float(failed_while_ejected),
            expected=0.0,
            detail=f"{int(window.sum())} requests went to the healthy replicas during the ejection",
        )
    mesh_scenario.check_value(
        "claim: the replica returned after its ejection", float(len(times) - first_gap - 1), at_least=1.0
    )
    prom = mesh_scenario.prom()
    ejections = mesh_scenario.cluster_increase(
        "envoy_cluster_outlier_detection_ejections_enforced_total", SERVICE, prom
    )
    mesh_scenario.check_value(
        "envoy_cluster_outlier_detection_ejections_enforced_total", ejections, at_least=1.0, reasons=prediction.reasons
    )
    assert statuses[0] == 503
    # The model's own numbers come last: a weaker policy must fail on a claim about the mesh, not on these.
    mesh_scenario.check_value(
        "model: replicas ejected at once", float(prediction.ejected), expected=1.0, reasons=prediction.reasons
    )
    mesh_scenario.check_value(
        "model: consecutive failures that eject",
        float(prediction.failures_to_eject or 0),
        expected=float(claimed_failures),
        reasons=prediction.reasons,
    )


def test_default_max_ejection_percent_ejects_nothing_with_three_replicas(mesh_scenario: Scenario) -> None:
    """Without maxEjectionPercent (Envoy's 10 %) no replica of three is ejected: (0 + 1) / 3 > 10 %."""
    mesh_scenario.policies.apply(outlier_policy(""))
    effective = mesh_scenario.effective(SERVICE)
    fault = DestinationFault("error", rate=1.0, status=503, instances=1)
    prediction = predict_ejection(effective, fault, Load(concurrency=1, rate=RATE))
    mesh_scenario.explain(prediction.explain())
    with mesh_scenario.chaos.error(SERVICE, rate=1.0, status=503, instances=1) as injected:
        result = mesh_scenario.load.open(SERVICE, rate=RATE, duration=3.0)
        mesh_scenario.require_chaos(injected)
    times, _ = result.responses_from(injected.instances[0])
    mesh_scenario.check_value(
        "claim: longest pause of the failing replica (s)",
        float(np.diff(times).max()) if len(times) > 1 else 99.0,
        at_most=0.5,
        unit="s",
        reasons=prediction.reasons,
        detail="a replica that is never ejected keeps receiving its share at 60 requests/s",
    )
    prom = mesh_scenario.prom()
    enforced = mesh_scenario.cluster_increase("envoy_cluster_outlier_detection_ejections_enforced_total", SERVICE, prom)
    overflow = mesh_scenario.cluster_increase("envoy_cluster_outlier_detection_ejections_overflow", SERVICE, prom)
    mesh_scenario.check_value(
        "claim: envoy_cluster_outlier_detection_ejections_enforced_total",
        enforced,
        expected=0.0,
        reasons=prediction.reasons,
    )
    mesh_scenario.check_value(
        "envoy_cluster_outlier_detection_ejections_overflow (ejections refused by maxEjectionPercent)",
        overflow,
        at_least=1.0,
        reasons=prediction.reasons,
    )
    mesh_scenario.check_value(
        "model: replicas Envoy may eject", float(prediction.ejected), expected=0.0, reasons=prediction.reasons
    )
