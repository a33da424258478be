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
from pytest_meshcheck.load import LoadResult

SERVICE = "payment-service"
RATE = 60.0  # requests per second, open loop
# Slack on timing bounds: the load generator's clock reads response times, not Envoy's event times.
TIMING_TOLERANCE = 0.25


def outlier_policy(extra: str) -> str:
    """A DestinationRule for payment-service with consecutive5xxErrors 3, interval 0.5s, baseEjectionTime 2s."""
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: payment-outlier, namespace: platform-core}}
spec:
  host: payment-service
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 0.5s
      baseEjectionTime: 2s
{extra}
"""


def served_by(result: LoadResult, instance: str) -> tuple[np.ndarray, np.ndarray]:
    """Wall times and statuses of the responses ``instance`` sent, in time order."""
    rec = result.records
    n = result.count
    if instance not in rec.instances:
        return np.empty(0), np.empty(0)
    mask = np.asarray(rec.instance[:n]) == rec.instances.index(instance)
    times = result.started_wall + np.asarray(rec.done[:n])[mask]
    order = np.argsort(times)
    return times[order], np.asarray(rec.status[:n])[mask][order]


def test_failing_replica_is_ejected_then_returns(scenario: Scenario) -> None:
    """One of three replicas always failing is ejected after consecutive5xxErrors and returns after baseEjectionTime."""
    scenario.policies.apply(outlier_policy("      maxEjectionPercent: 50"))
    effective = scenario.effective(SERVICE)
    fault = DestinationFault("error", rate=1.0, status=503, instances=1)
    prediction = predict_ejection(effective, fault, Load(concurrency=1, rate=RATE))
    scenario.explain(prediction.explain())
    assert prediction.will_eject, "this claim needs a policy that ejects"
    assert prediction.failures_to_eject is not None and prediction.ejection_durations
    with scenario.chaos.error(SERVICE, rate=1.0, status=503, instances=1) as injected:
        result = scenario.load.open(SERVICE, rate=RATE, duration=4.0)
        scenario.require_chaos(injected)
    bad = injected.instances[0]
    times, statuses = served_by(result, bad)
    gaps = np.diff(times)
    scenario.check_value("responses from the failing replica", float(len(times)), at_least=float(prediction.failures_to_eject))
    first_gap = int(np.argmax(gaps > 1.0)) if (gaps > 1.0).any() else -1
    scenario.check_value(
        "failures before the first ejection",
        float(first_gap + 1 if first_gap >= 0 else len(times)),
        at_least=float(prediction.failures_to_eject),
        at_most=float(prediction.failures_to_eject + 1),
        reasons=prediction.reasons,
        detail="one more request may already be in flight when the ejection lands",
    )
    low, high = prediction.ejection_durations[0]
    gap = float(gaps[first_gap]) if first_gap >= 0 else 0.0
    scenario.check_value(
        "first ejection: time the failing replica served nothing (s)",
        gap,
        at_least=low - TIMING_TOLERANCE,
        at_most=high + TIMING_TOLERANCE,
        unit="s",
        reasons=prediction.reasons,
        detail=f"baseEjectionTime x 1 plus up to one interval: [{low:.2f}, {high:.2f}] s ± {TIMING_TOLERANCE} s",
    )
    ejected_from, ejected_to = times[first_gap], times[first_gap + 1]
    window = (result.started_wall + np.asarray(result.records.done[: result.count]) > ejected_from + 0.05) & (
        result.started_wall + np.asarray(result.records.done[: result.count]) < ejected_to - 0.05
    )
    failed_while_ejected = int((np.asarray(result.records.status[: result.count])[window] >= 500).sum())
    scenario.check_value(
        "failed requests while the replica was ejected",
        float(failed_while_ejected),
        expected=0.0,
        detail=f"{int(window.sum())} requests went to the healthy replicas during the ejection",
    )
    scenario.check_value("the replica returned after its ejection", float(len(times) - first_gap - 1), at_least=1.0)
    prom = scenario.prom()
    ejections = scenario.cluster_increase("envoy_cluster_outlier_detection_ejections_enforced_total", SERVICE, prom)
    scenario.check_value(
        "envoy_cluster_outlier_detection_ejections_enforced_total", ejections, at_least=1.0, reasons=prediction.reasons
    )
    assert statuses[0] == 503


def test_default_max_ejection_percent_ejects_nothing_with_three_replicas(scenario: Scenario) -> None:
    """Without maxEjectionPercent (Envoy's 10 %) no replica of three is ejected: (0 + 1) / 3 > 10 %."""
    scenario.policies.apply(outlier_policy(""))
    effective = scenario.effective(SERVICE)
    fault = DestinationFault("error", rate=1.0, status=503, instances=1)
    prediction = predict_ejection(effective, fault, Load(concurrency=1, rate=RATE))
    scenario.explain(prediction.explain())
    scenario.check_value("replicas the model lets Envoy eject", float(prediction.ejected), expected=0.0, reasons=prediction.reasons)
    with scenario.chaos.error(SERVICE, rate=1.0, status=503, instances=1) as injected:
        result = scenario.load.open(SERVICE, rate=RATE, duration=3.0)
        scenario.require_chaos(injected)
    times, _ = served_by(result, injected.instances[0])
    scenario.check_value(
        "longest pause of the failing replica (s)",
        float(np.diff(times).max()) if len(times) > 1 else 99.0,
        at_most=0.5,
        unit="s",
        reasons=prediction.reasons,
        detail="a replica that is never ejected keeps receiving its share at 60 requests/s",
    )
    prom = scenario.prom()
    enforced = scenario.cluster_increase("envoy_cluster_outlier_detection_ejections_enforced_total", SERVICE, prom)
    overflow = scenario.cluster_increase("envoy_cluster_outlier_detection_ejections_overflow", SERVICE, prom)
    scenario.check_value("envoy_cluster_outlier_detection_ejections_enforced_total", enforced, expected=0.0, reasons=prediction.reasons)
    scenario.check_value(
        "envoy_cluster_outlier_detection_ejections_overflow (ejections refused by maxEjectionPercent)",
        overflow,
        at_least=1.0,
        reasons=prediction.reasons,
    )
