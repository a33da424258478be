"""Platform README circuit-breaker claims that ``test_platform_policies.py`` does not cover yet (issue #13).

* "After 30s, instance added back (half-open state) / If still failing -> eject again" (README lines
  291-292, 299): a replica that keeps failing is ejected again, for 2 x baseEjectionTime, not 1 x. The
  re-ejection reaches the load balancer up to 1 s late (Envoy's ``update_merge_window``), so it is timed
  from the failure that triggered it, not from the pause the client sees (see :class:`EjectionTimeline`).
* "Need at least 2 instances for circuit breaker to work" (README line 710): with one instance and the
  README's ``maxEjectionPercent: 50`` nothing is ever ejected; with 100 the single instance is.
* "minHealthPercent: 50 # Min 50% must be healthy" (README line 280): not a floor on ejection but Envoy's
  panic threshold. With 2 of 3 replicas failing (maxEjectionPercent 100) both are ejected, and below 50 %
  healthy Envoy balances over every host again: the ejected, failing replicas get 2/3 of the requests.
  With Istio's default 0 they get none.

A README claim that cannot hold under Envoy's real semantics is a strict expected failure
(``raises=ScenarioFailed``, so only the claim failing counts) next to a corrected claim that holds.
Claim checks carry the numbers the claim states; the expectation model's own numbers
(``predict_ejection``) are checked last, so a weakened policy fails on a claim about the mesh.
Every timing check states its tolerance. ``docs/readme-claims.md`` maps every README claim to a test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest

from pytest_meshcheck.expect import DestinationFault, EjectionPrediction, Load, predict_ejection
from pytest_meshcheck.expect.backoff import (
    BackoffModel,
    BackoffPlan,
    envoy_model,
    fit,
    plan_backoff,
    readme_fixed_model,
)
from pytest_meshcheck.expect.balancing import BalancePrediction, predict_balance
from pytest_meshcheck.expect.ejection import MERGE_WINDOW
from pytest_meshcheck.harness.scenario import Scenario, ScenarioFailed
from pytest_meshcheck.metrics.attempts import join
from pytest_meshcheck.metrics.outlier_events import STAMP_RESOLUTION, EjectionCount
from pytest_meshcheck.report.record import CheckRecord
from pytest_meshcheck.report.sample_requests import AttemptSource

# Slack on timing bounds: the load generator's clock reads response times, not Envoy's event times,
# and two shared cores add scheduling noise (test_outlier_detection.py uses the same margin).
TIMING_TOLERANCE = 0.25
RATE = 60.0  # requests per second, open loop: about 20/s per replica of three

# ---------------------------------------------------------------------------------------------- helpers


# ---------------------------------------------------------------------------------------------- half-open

HALF_OPEN_SERVICE = "payment-service"
# The README's 30 s baseEjectionTime scaled to 1 s. Its interval (also 30 s) is shortened to half the base:
# un-ejection waits for the next sweep, so an ejection lasts n x base plus up to one interval, and with an
# interval equal to the base a 1 x ejection ([1, 2] s) and a 2 x one ([2, 3] s) could not be told apart.
# With 0.5 s they are [1, 1.5] s and [2, 2.5] s. consecutive5xxErrors 3 re-ejects a returned replica
# within ~0.15 s at 20 requests/s, well inside one interval, so Envoy's multiplier does not decay between
# the two ejections (it decays only while the host stays healthy through sweeps: ground truth §3, a2).
BASE, INTERVAL, CONSECUTIVE = 1.0, 0.5, 3
# A pause longer than this in a replica's answers is an ejection: at ~20 requests/s it otherwise answers
# every ~50 ms, and the shortest ejection here lasts 1 s.
EJECTION_PAUSE = 0.4


def half_open_policy(base: str = "1s", consecutive: int = CONSECUTIVE) -> str:
    """payment-service outlier detection: README's breaker scaled (base 1 s), one replica of three ejectable."""
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: payment-half-open, namespace: platform-core}}
spec:
  host: payment-service
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: {consecutive}
      interval: 0.5s
      baseEjectionTime: {base}
      maxEjectionPercent: 50
"""


@dataclass(frozen=True)
class EjectionTimeline:
    """What the always-failing replica did, from the client's records.

    Envoy's detector ejects a host as the ``CONSECUTIVE``-th consecutive failure is counted, but the load
    balancer learns of a health change only when Envoy's ``update_merge_window`` (1 s, which istiod leaves
    unset) allows: the first change after a quiet second lands at once, a change within 1 s of the previous
    one waits for the window to close. An un-ejection comes at least ``baseEjectionTime`` (1 s) after the
    ejection, so it lands at once, but the re-ejection that follows within ~0.15 s waits up to 1 s, during
    which the replica still gets (and fails) its share of requests. An ejection therefore starts at the
    ``CONSECUTIVE``-th failure after the replica's (re)start and ends at its first answer after a pause;
    the pause the client sees is shorter by the merge delay.

    Attributes:
        prediction: The model's prediction for the policy in force.
        responses: Responses the replica sent.
        failures: Failures the replica answered before each pause (an ejection reaching the load balancer).
        durations: Seconds from the ejecting failure to the replica's next answer, per ejection.
        lb_delays: Seconds from the ejecting failure to the replica's last answer before the pause.
        detail: A one-line summary for check messages.
    """

    prediction: EjectionPrediction
    responses: int
    failures: tuple[int, ...]
    durations: tuple[float, ...]
    lb_delays: tuple[float, ...]
    detail: str

    def failures_before(self, ejection: int) -> float:
        """Failures the replica answered between its previous return (or the start) and pause ``ejection``."""
        if len(self.failures) > ejection:
            return float(self.failures[ejection])
        return float(self.responses) if ejection == 0 else 0.0

    def duration(self, ejection: int) -> float:
        """Duration of ejection ``ejection`` (0-based), or 0 when the client did not see it end."""
        return self.durations[ejection] if len(self.durations) > ejection else 0.0


def run_still_failing(mesh_scenario: Scenario, policy: str) -> EjectionTimeline:
    """Apply ``policy``, make one payment replica answer 503 to everything, drive 5.5 s of open load."""
    mesh_scenario.policies.apply(policy)
    effective = mesh_scenario.effective(HALF_OPEN_SERVICE)
    fault = DestinationFault("error", rate=1.0, status=503, instances=1)
    prediction = predict_ejection(effective, fault, Load(concurrency=1, rate=RATE))
    mesh_scenario.explain(prediction.explain())
    # 5.5 s covers the worst case of two ejections and returns: 0.15 + 1.5 + 0.15 + 2.5 = 4.3 s, plus slack.
    with mesh_scenario.chaos.error(HALF_OPEN_SERVICE, rate=1.0, status=503, instances=1) as injected:
        result = mesh_scenario.load.open(HALF_OPEN_SERVICE, rate=RATE, duration=5.5)
        mesh_scenario.require_chaos(injected)
    times, statuses = result.responses_from(injected.instances[0])
    # The client must see the fault: Istio 1.30's default retry policy does not retry 503.
    assert len(statuses) == 0 or int(statuses[0]) == 503, statuses[:5]
    pauses = np.flatnonzero(np.diff(times) > EJECTION_PAUSE)
    failures: list[int] = []
    durations: list[float] = []
    delays: list[float] = []
    start = 0  # index of the first answer since the start or the last return
    for last in pauses:
        failures.append(int(last) + 1 - start)
        ejecting = start + CONSECUTIVE - 1  # the failure that made the detector eject
        if ejecting <= last:
            durations.append(float(times[last + 1] - times[ejecting]))
            delays.append(float(times[last] - times[ejecting]))
        start = int(last) + 1
    detail = (
        f"{len(times)} answers from {injected.instances[0]}; failures before each pause {failures}; "
        f"ejections (ejecting failure -> next answer) {[round(d, 3) for d in durations]} s; "
        f"load-balancer delay after the ejecting failure {[round(d, 3) for d in delays]} s"
    )
    return EjectionTimeline(prediction, len(times), tuple(failures), tuple(durations), tuple(delays), detail)


@pytest.mark.xfail(
    strict=True,
    raises=ScenarioFailed,
    reason="README 'How It Works' steps 6-7 imply the replica is ejected again for the same 30 s, but Envoy "
    "ejects a host for baseEjectionTime x (consecutive ejections): the second ejection lasts 2 x base",
)
def test_still_failing_replica_is_ejected_again_for_the_same_time_as_written(mesh_scenario: Scenario) -> None:
    """README lines 289-292: ejected for 30 s, added back, "if still failing -> eject again" for 30 s again.

    Scaled: baseEjectionTime 1 s, so the claim is a second ejection of 1 s plus up to one 0.5 s interval.
    """
    timeline = run_still_failing(mesh_scenario, half_open_policy())
    mesh_scenario.check_value(
        "claim: failures before the first ejection",
        timeline.failures_before(0),
        expected=float(CONSECUTIVE),
        reasons=timeline.prediction.reasons,
        detail=timeline.detail,
    )
    mesh_scenario.check_value(
        "claim: second ejection lasts one baseEjectionTime, like the first (s)",
        timeline.duration(1),
        at_least=BASE - TIMING_TOLERANCE,
        at_most=BASE + INTERVAL + TIMING_TOLERANCE,
        unit="s",
        reasons=timeline.prediction.reasons,
        detail=f"1 x base plus up to one interval: [{BASE}, {BASE + INTERVAL}] s ± {TIMING_TOLERANCE} s; "
        + timeline.detail,
    )


def test_still_failing_replica_is_ejected_again_for_twice_as_long(mesh_scenario: Scenario) -> None:
    """README lines 289-292, 299 corrected: the re-ejection of a still-failing replica lasts 2 x baseEjectionTime.

    There is no half-open probe either: the returned replica gets its full share of traffic again, the
    detector re-ejects it after the same 3 consecutive failures (not after one trial request), and it keeps
    receiving traffic until the load balancer learns of the re-ejection (up to 1 s later).
    """
    timeline = run_still_failing(mesh_scenario, half_open_policy())
    reasons = timeline.prediction.reasons
    # Exact: the first ejection reaches the load balancer at once, as the third error is counted; at 60/s
    # open loop no other request is in flight to that replica at that moment.
    mesh_scenario.check_value(
        "claim: failures before the first ejection",
        timeline.failures_before(0),
        expected=float(CONSECUTIVE),
        reasons=reasons,
        detail=timeline.detail,
    )
    mesh_scenario.check_value(
        "claim: second ejection of the still-failing replica (s)",
        timeline.duration(1),
        at_least=2 * BASE - TIMING_TOLERANCE,
        at_most=2 * BASE + INTERVAL + TIMING_TOLERANCE,
        unit="s",
        reasons=reasons,
        detail=f"2 x base plus up to one interval: [{2 * BASE}, {2 * BASE + INTERVAL}] s ± {TIMING_TOLERANCE} s, "
        f"from the {CONSECUTIVE}rd failure after its return to its next answer; " + timeline.detail,
    )
    mesh_scenario.check_value(
        "claim: failures after its return before the second ejection (no half-open probe)",
        timeline.failures_before(1),
        at_least=float(CONSECUTIVE),
        reasons=reasons,
        detail="a half-open breaker would re-open after one trial request; Envoy needs the full threshold "
        "again, and the load balancer keeps sending until the 1 s update_merge_window delivers the ejection",
    )
    mesh_scenario.check_value(
        "claim: first ejection (s)",
        timeline.duration(0),
        at_least=BASE - TIMING_TOLERANCE,
        at_most=BASE + INTERVAL + TIMING_TOLERANCE,
        unit="s",
        reasons=reasons,
        detail=f"1 x base plus up to one interval: [{BASE}, {BASE + INTERVAL}] s ± {TIMING_TOLERANCE} s",
    )
    # Evidence for reading the second ejection from its ejecting failure: traffic stopped within one merge window.
    mesh_scenario.check_value(
        "load-balancer delay of the second ejection (s)",
        timeline.lb_delays[1] if len(timeline.lb_delays) > 1 else 99.0,
        at_most=MERGE_WINDOW + TIMING_TOLERANCE,
        unit="s",
        detail=f"update_merge_window {MERGE_WINDOW:g} s ± {TIMING_TOLERANCE} s",
    )
    prom = mesh_scenario.prom()
    enforced = mesh_scenario.cluster_increase(
        "envoy_cluster_outlier_detection_ejections_enforced_total", HALF_OPEN_SERVICE, prom
    )
    mesh_scenario.check_value(
        "envoy_cluster_outlier_detection_ejections_enforced_total", enforced, at_least=2.0, reasons=reasons
    )
    # The model's numbers come last: a weaker policy must fail on a claim about the mesh, not on these.
    durations = timeline.prediction.ejection_durations
    for n, name in ((0, "first"), (1, "second")):
        low, high = durations[n] if len(durations) > n else (0.0, 0.0)
        mesh_scenario.check_value(
            f"model: {name} ejection duration (s)",
            timeline.duration(n),
            at_least=low - TIMING_TOLERANCE,
            at_most=high + TIMING_TOLERANCE,
            unit="s",
            reasons=reasons,
            detail=f"predict_ejection: [{low:g}, {high:g}] s ± {TIMING_TOLERANCE} s",
        )


# ---------------------------------------------------------------------------------------------- one instance

ONE_HOST_SERVICE = "order-service"
ONE_HOST_RATE = 40.0  # requests per second, open loop, all to the single v2 instance
ONE_HOST_LOAD = 2.0  # seconds; shorter than baseEjectionTime (5 s), so an ejected instance never returns


def one_host_policy(max_ejection_percent: int, consecutive: int = CONSECUTIVE) -> str:
    """Every order-service request goes to subset v2 (one instance), whose subset policy has outlier detection.

    ``retries: {attempts: 0}`` so each request is one attempt and the instance's count is the client's.
    ``minHealthPercent`` is left out: Istio's default 0 (panic mode off), so an ejected instance gets nothing.
    """
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: order-one-host, namespace: platform-core}}
spec:
  host: order-service
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
    trafficPolicy:
      outlierDetection:
        consecutive5xxErrors: {consecutive}
        interval: 0.5s
        baseEjectionTime: 5s
        maxEjectionPercent: {max_ejection_percent}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: order-one-host, namespace: platform-core}}
spec:
  hosts: [order-service]
  http:
  - route:
    - destination: {{host: order-service, subset: v2}}
    retries: {{attempts: 0}}
"""


@dataclass(frozen=True)
class OneHostRun:
    """One run against the one-instance cluster.

    Attributes:
        prediction: The model's prediction for the policy in force.
        sent: Requests the client sent.
        served: Requests the instance received (counted at the instance).
        longest_pause: Longest time the instance answered nothing, from the load's start to its end (s).
        flags: Response flags of the caller's sidecar for order-service, ``None`` when unavailable.
        detail: A one-line summary for check messages.
        ejection: Envoy's own split of the attempts it sent the instance at its first ejection, ``None`` when
            the context has no outlier event log or Envoy never ejected it.
        after_worker_knew: Attempts the ejecting sidecar sent the instance after it first answered 503 UH itself
            (its worker's load balancer then knew of the ejection); every attempt after the ejection when it
            never did. ``None`` without ``ejection``.
    """

    prediction: EjectionPrediction
    sent: int
    served: int
    longest_pause: float
    flags: dict[str, int] | None
    detail: str
    ejection: EjectionCount | None = None
    after_worker_knew: int | None = None


def run_one_host(mesh_scenario: Scenario, policy: str) -> OneHostRun:
    """Apply ``policy``; the single v2 instance answers 503 to its first ``CONSECUTIVE`` requests, under 2 s of load.

    The fault ends after ``CONSECUTIVE`` errors, as the breakers' faults do (``limit``). Envoy ejects on its main
    thread; when that thread is late (a flake bench, load average 2.4: the EJECT event came after the worker had
    dispatched a 4th attempt), an unlimited fault made that attempt a 4th error before the ejection. Now it gets
    a 200, so the count is exact however late the ejection, and a policy that needs a 4th error never ejects.
    """
    mesh_scenario.policies.apply(policy)
    effective = mesh_scenario.effective(ONE_HOST_SERVICE)
    fault = DestinationFault("error", rate=1.0, status=503)
    prediction = predict_ejection(effective, fault, Load(concurrency=1, rate=ONE_HOST_RATE))
    mesh_scenario.explain(prediction.explain())
    with mesh_scenario.chaos.error(ONE_HOST_SERVICE, rate=1.0, status=503, version="v2", limit=CONSECUTIVE) as injected:
        result = mesh_scenario.load.open(ONE_HOST_SERVICE, rate=ONE_HOST_RATE, duration=ONE_HOST_LOAD)
        mesh_scenario.require_chaos(injected)
        served = sum(p.served for p in injected.proof())
    times, _ = result.responses_from(injected.instances[0])
    # Pauses include the edges: an instance ejected for good answers nothing until the load ends.
    end = result.started_wall + result.elapsed
    edges = np.concatenate(([result.started_wall], times, [end]))
    longest = float(np.diff(edges).max())
    flags = mesh_scenario.mesh_response_flags(ONE_HOST_SERVICE)
    instance = injected.instances[0]
    end = mesh_scenario.traffic_ended_at
    counts = mesh_scenario.errors_before_ejection(ONE_HOST_SERVICE, end=end)
    ejection = None if counts is None else counts.get(instance)
    after_worker_knew = None
    if ejection is not None and isinstance(mesh_scenario.mesh, AttemptSource):
        data = mesh_scenario.mesh.attempt_records(mesh_scenario.window_start, end)
        host = {name: address for address, name in data.hosts.items()}[instance]
        mine = [r for r in data.records if r.sidecar == ejection.sidecar]
        # The first request the sidecar answered 503 UH itself was routed by a load balancer without the instance.
        uh = [r.start for r in mine if r.kind == "call" and "UH" in r.flags]
        knew = min(uh, default=ejection.ejected_at + STAMP_RESOLUTION)
        after_worker_knew = sum(1 for r in mine if r.kind == "attempt" and r.upstream_host == host and r.start > knew)
    envoy = f"; Envoy's logs: {ejection.describe()}" if ejection is not None else ""
    detail = (
        f"{result.count} requests sent, {served} reached {instance}, longest pause {longest:.3f} s; "
        f"statuses {result.status_histogram()}; sidecar response flags {flags}{envoy}"
    )
    return OneHostRun(prediction, result.count, served, longest, flags, detail, ejection, after_worker_knew)


def check_never_ejected(mesh_scenario: Scenario, run: OneHostRun) -> None:
    """The single instance stays in rotation: it receives every request and never pauses."""
    mesh_scenario.check_value(
        "claim: requests that reached the only instance (all: it is never ejected)",
        float(run.served),
        expected=float(run.sent),
        reasons=run.prediction.reasons,
        detail=run.detail,
    )
    mesh_scenario.check_value(
        "claim: longest pause of the only instance (s)",
        run.longest_pause,
        at_most=0.5,
        unit="s",
        reasons=run.prediction.reasons,
        detail="at 40 requests/s it answers every ~25 ms; an ejection would silence it for 5 s (baseEjectionTime)",
    )
    prom = mesh_scenario.prom()
    enforced = mesh_scenario.cluster_increase(
        "envoy_cluster_outlier_detection_ejections_enforced_total", ONE_HOST_SERVICE, prom
    )
    mesh_scenario.check_value(
        "claim: envoy_cluster_outlier_detection_ejections_enforced_total",
        enforced,
        expected=0.0,
        reasons=run.prediction.reasons,
    )
    overflow = mesh_scenario.cluster_increase(
        "envoy_cluster_outlier_detection_ejections_overflow", ONE_HOST_SERVICE, prom
    )
    mesh_scenario.check_value(
        "envoy_cluster_outlier_detection_ejections_overflow (ejections refused by maxEjectionPercent)",
        overflow,
        at_least=1.0,
        reasons=run.prediction.reasons,
    )


def test_one_instance_is_never_ejected_at_max_ejection_percent_50(mesh_scenario: Scenario) -> None:
    """README line 710, "Need at least 2 instances for circuit breaker to work", under its own maxEjectionPercent 50.

    What the line means exactly: with circuit-breaker.yaml's ``maxEjectionPercent: 50``, Envoy ejects a host
    only if (ejected + 1) / hosts x 100 <= 50, which first holds with 2 hosts. A one-instance cluster (here
    order-service subset v2) is never ejected however often it fails; each detection only bumps
    ``ejections_overflow``. In that sense the claim holds.
    """
    run = run_one_host(mesh_scenario, one_host_policy(50))
    check_never_ejected(mesh_scenario, run)
    mesh_scenario.check_value("model: instances in the cluster", float(run.prediction.hosts), expected=1.0)
    mesh_scenario.check_value(
        "model: instances Envoy may eject (max_ejectable)",
        float(run.prediction.max_ejected),
        expected=0.0,
        reasons=run.prediction.reasons,
    )


@pytest.mark.xfail(
    strict=True,
    raises=ScenarioFailed,
    reason="read literally ('with one instance the circuit breaker cannot work'), the README line is false: "
    "maxEjectionPercent: 100 lets Envoy eject the only instance, after exactly consecutive5xxErrors failures",
)
def test_one_instance_cannot_be_ejected_whatever_the_policy_as_written(mesh_scenario: Scenario) -> None:
    """README line 710 read as a general rule: a one-instance service can have no working circuit breaker.

    Checked with ``maxEjectionPercent: 100``, the one setting that lets a single host go: the same checks
    as the maxEjectionPercent 50 scenario.
    """
    check_never_ejected(mesh_scenario, run_one_host(mesh_scenario, one_host_policy(100)))


def test_one_instance_is_ejected_at_max_ejection_percent_100(mesh_scenario: Scenario) -> None:
    """README line 710 corrected: one instance is ejected when maxEjectionPercent is 100, and requests fail fast.

    With Istio's default ``minHealthPercent: 0`` the caller's sidecar then answers ``503 UH`` (no healthy
    upstream) itself: nothing reaches the failing instance until baseEjectionTime (5 s) has passed. With the
    README's ``minHealthPercent: 50`` Envoy would enter panic mode instead and keep sending it traffic.
    """
    run = run_one_host(mesh_scenario, one_host_policy(100))
    reasons = run.prediction.reasons
    # Exact: the errors on the attempts the sidecar sent the instance before its EJECT event. Envoy ejects on the
    # main thread and only then updates the worker's load balancer, so a request the worker routes in between
    # still reaches the instance: those are listed in the detail, not counted (without Envoy's logs, in a
    # cluster, the instance's own count is used, which includes them).
    before = run.ejection.errors_before if run.ejection is not None else run.served
    mesh_scenario.check_value(
        "claim: failures the only instance served before its ejection (then nothing)",
        float(before),
        expected=float(CONSECUTIVE),
        reasons=reasons,
        detail=run.detail,
    )
    if run.ejection is not None and run.after_worker_knew is not None:
        # "Then nothing", exactly: once the sidecar's worker routed a request without the instance (its first
        # 503 UH), no attempt reached the instance again; the 5 s ejection outlasts the 2 s load.
        mesh_scenario.check_value(
            "claim: attempts that reached the only instance once its sidecar answered 503 UH itself (then nothing)",
            float(run.after_worker_knew),
            expected=0.0,
            reasons=reasons,
            detail=run.detail,
        )
        # Nothing reached the instance that the sidecar's log does not account for: the attempts before the
        # ejection and those dispatched before the worker learned of it are all it served.
        mesh_scenario.check_value(
            "requests the only instance served = attempts Envoy sent it before + after its ejection",
            float(run.served),
            expected=float(run.ejection.attempts_before + len(run.ejection.dispatched_after)),
            reasons=reasons,
            detail=run.detail,
        )
    if run.flags is not None:
        mesh_scenario.check_value(
            "claim: requests the caller's sidecar answered 503 UH (no healthy upstream) itself",
            float(run.flags.get("UH", 0)),
            expected=float(run.sent - run.served),
            reasons=reasons,
            detail=run.detail,
        )
    prom = mesh_scenario.prom()
    enforced = mesh_scenario.cluster_increase(
        "envoy_cluster_outlier_detection_ejections_enforced_total", ONE_HOST_SERVICE, prom
    )
    mesh_scenario.check_value(
        "envoy_cluster_outlier_detection_ejections_enforced_total", enforced, expected=1.0, reasons=reasons
    )
    mesh_scenario.check_value("model: instances in the cluster", float(run.prediction.hosts), expected=1.0)
    mesh_scenario.check_value(
        "model: instances Envoy may eject (max_ejectable)",
        float(run.prediction.max_ejected),
        expected=1.0,
        reasons=reasons,
    )
    mesh_scenario.check_value(
        "model: consecutive failures that eject",
        float(run.prediction.failures_to_eject or 0),
        expected=float(CONSECUTIVE),
        reasons=reasons,
    )
    mesh_scenario.check_value(
        "model: no healthy upstream once ejected (503 UH)",
        float(run.prediction.no_healthy_upstream),
        expected=1.0,
        reasons=reasons,
    )


# ---------------------------------------------------------------------------------------------- back-off

BACKOFF_SERVICE = "catalog-service"
BACKOFF_RETRIES = 3  # the README's "Attempt 2, 3, 4": three retries, caps 25, 50 and 100 ms
# Four requests in flight. Back-off is per request, and without a DestinationRule istiod leaves max_retries at
# 4294967295, so no retry waits on another. Envoy's single worker then has at most four timers to serve, and the
# gaps it logs stayed inside the test's 3 ms allowance: KS D 0.000-0.013 over three runs against a critical value
# of 0.179 (0.013-0.079 at one in flight, 0.008-0.026 at eight); the longest gap before retry 3 (cap 100 ms) was
# 102.8 ms (102.7 at one, 103.1 at eight).
# Traffic 1.65 s instead of 5.6 s.
BACKOFF_CONCURRENCY = 4


def backoff_policy(backoff: str | None = None) -> str:
    """catalog-service retries 503 three times; ``backoff`` sets ``retries.backoff`` (honoured from Istio 1.26)."""
    extra = f", backoff: {backoff}" if backoff else ""
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: catalog-backoff, namespace: platform-core}}
spec:
  hosts: [catalog-service]
  http:
  - route:
    - destination: {{host: catalog-service}}
    retries: {{attempts: {BACKOFF_RETRIES}, retryOn: "503"{extra}}}
"""


@dataclass(frozen=True)
class BackoffRun:
    """The waits between the tries of every request, from the client sidecar's own per-attempt records.

    Attributes:
        plan: The planned sample and what it can detect.
        gaps_ms: Milliseconds from one try's logged end to the next try's start, by retry number (1 = before
            the first retry).
        requests: Requests sent.
        full: Requests whose tree shows all ``BACKOFF_RETRIES + 1`` tries.
        retries_counted: ``envoy_cluster_upstream_rq_retry_backoff_exponential`` over the run (one per wait).
        reasons: The policy lines and defaults behind the back-off.
    """

    plan: BackoffPlan
    gaps_ms: dict[int, list[float]]
    requests: int
    full: int
    retries_counted: float
    reasons: tuple[str, ...]


def run_backoff(mesh_scenario: Scenario, policy: str) -> BackoffRun:
    """Every catalog instance answers 503 at once; ``BACKOFF_CONCURRENCY`` requests in flight.

    No retry limit is in force, and an upstream that answers at once makes each gap the back-off plus Envoy's
    own work (which the test allows for, see :mod:`pytest_meshcheck.expect.backoff`).
    """
    if not isinstance(mesh_scenario.mesh, AttemptSource):
        pytest.skip("the back-off is read from per-attempt records, which only the local mesh's sidecars write")
    mesh_scenario.policies.apply(policy)
    effective = mesh_scenario.effective(BACKOFF_SERVICE)
    reasons = tuple(mesh_scenario.explain(effective.reason("retry.attempts", "retry.retry_on", "retry.backoff")))
    plan = plan_backoff(BACKOFF_RETRIES, alpha=mesh_scenario.settings.alpha, beta=mesh_scenario.settings.beta)
    with mesh_scenario.chaos.error(BACKOFF_SERVICE, rate=1.0, status=503) as injected:
        result = mesh_scenario.load.closed(BACKOFF_SERVICE, concurrency=BACKOFF_CONCURRENCY, requests=plan.requests)
        mesh_scenario.require_chaos(injected)
    start, end = result.started_wall - 0.5, result.started_wall + result.elapsed + 0.5
    trees = [t for t in join(mesh_scenario.mesh.attempt_records(start, end)) if t.record.service == BACKOFF_SERVICE]
    gaps: dict[int, list[float]] = {n: [] for n in range(1, BACKOFF_RETRIES + 1)}
    for tree in trees:
        for n in range(1, len(tree.attempts)):
            before, after = tree.attempts[n - 1].record, tree.attempts[n].record
            gaps.setdefault(n, []).append((after.start - before.end) * 1000.0)
    full = sum(len(t.attempts) == BACKOFF_RETRIES + 1 for t in trees)
    counted = mesh_scenario.cluster_increase(
        "envoy_cluster_upstream_rq_retry_backoff_exponential", BACKOFF_SERVICE, mesh_scenario.prom()
    )
    return BackoffRun(plan, gaps, result.count, full, counted, reasons)


def check_backoff_fit(
    mesh_scenario: Scenario, name: str, run: BackoffRun, model: BackoffModel, *, reasons: tuple[str, ...] = ()
) -> None:
    """Record the goodness-of-fit test of the run's waits against ``model``; raise when it does not fit."""
    result = fit(model, run.gaps_ms, alpha=run.plan.alpha)
    means = ", ".join(
        f"retry {n}: mean {np.mean(g):.1f} ms, max {np.max(g):.1f} ms" for n, g in run.gaps_ms.items() if g
    )
    check = CheckRecord(
        name=name,
        passed=result.passed,
        expected=result.critical,
        observed=result.statistic,
        n=result.n,
        confidence=1 - result.alpha,
        method="Kolmogorov-Smirnov (bounded for log resolution and Envoy's processing)",
        unit="KS D",
        reasons=list(reasons),
        detail=f"{result.summary}; {means}",
        role="claim" if name.startswith("claim") else "model",
        alternative="at-most",
        outcome="passed" if result.passed else "failed",
        alpha=result.alpha,
        beta=1 - min(run.plan.power.values()),
        detects=run.plan.detects,
    )
    mesh_scenario.record.checks.append(check)
    mesh_scenario.raise_failures([] if result.passed else [check])


def check_every_request_retried(mesh_scenario: Scenario, run: BackoffRun) -> None:
    """Evidence the waits are complete: every request made all its tries, and Envoy counted every wait."""
    mesh_scenario.check_value(
        f"requests whose records show {BACKOFF_RETRIES + 1} tries",
        float(run.full),
        expected=float(run.requests),
        reasons=run.reasons,
        detail=f"{run.requests} requests sent, {BACKOFF_CONCURRENCY} at a time, to instances answering 503 at once",
    )
    mesh_scenario.check_value(
        "envoy_cluster_upstream_rq_retry_backoff_exponential (one per wait)",
        run.retries_counted,
        expected=float(sum(len(g) for g in run.gaps_ms.values())),
    )


@pytest.mark.xfail(
    strict=True,
    raises=ScenarioFailed,
    reason="Envoy's back-off is fully jittered: retry n waits a random whole number of ms in [0, 25 x 2^(n-1)), "
    "so 25 / 50 / 100 ms are upper bounds (never reached), not the waits",
)
def test_retries_wait_25_50_100_ms_as_written(mesh_scenario: Scenario) -> None:
    """README lines 393-402: "Attempt 2: After 25ms, Attempt 3: After 50ms, Attempt 4: After 100ms"."""
    run = run_backoff(mesh_scenario, backoff_policy())
    check_every_request_retried(mesh_scenario, run)
    check_backoff_fit(
        mesh_scenario,
        "claim: waits before retries 1-3 are exactly 25 / 50 / 100 ms",
        run,
        readme_fixed_model(BACKOFF_RETRIES),
        reasons=run.reasons,
    )


def test_retries_wait_jittered_exponential_backoff(mesh_scenario: Scenario) -> None:
    """README lines 393-402 corrected: retry n waits uniformly in [0, 25 ms x 2^(n-1)), capped at 250 ms.

    Envoy's ``JitteredExponentialBackOffStrategy``: 25 ms base (Istio leaves it unset), doubled after each
    retry. The waits are read from Envoy's own per-attempt records and tested with a Kolmogorov-Smirnov test at
    the run's alpha, on a sample sized so that the README's fixed waits and the ``(2^n - 1) x 25 ms`` rule of
    Envoy's docs (25 / 75 / 175 ms caps) would each fail with probability at least 1 - beta.
    """
    run = run_backoff(mesh_scenario, backoff_policy())
    check_every_request_retried(mesh_scenario, run)
    check_backoff_fit(
        mesh_scenario,
        "claim: waits before retries 1-3 are uniform in [0, 25 / 50 / 100 ms)",
        run,
        envoy_model(BACKOFF_RETRIES),
        reasons=run.reasons,
    )
    effective = mesh_scenario.effective(BACKOFF_SERVICE)
    check_backoff_fit(
        mesh_scenario,
        "model: waits fit the back-off predicted from the policy",
        run,
        envoy_model(effective.retry.num_retries, effective.retry.backoff_base),
        reasons=run.reasons,
    )


# ---------------------------------------------------------------------------------------------- load balancing

LB_SERVICE = "catalog-service"
# 24 requests in flight: the claims hold at any concurrency, and 24 gets the planned ~2,200 requests through in
# about 7 s under round robin (75 requests/s at 6). The model's share moves little with it (14.0 % at 6, 11.5 % at 24).
LB_CONCURRENCY = 24
# Round robin's share does not depend on what is in flight (the model predicts a third at any concurrency), so
# its scenario, the one that needs the most requests (about 3,200: the slow replica holds a third of them for
# 200 ms each), sends them 72 at a time: 3.6 s of traffic instead of 11 s at 24.
RR_CONCURRENCY = 72
# One replica answers in 200 ms, the two others in 20 ms: latencies well above Envoy's and the client's own
# per-request work (~1 ms), which the model leaves out (adding 5 ms to every replica moves its slow share
# by 0.3 points at 24 in flight, 10 ms by 0.7: far below the checks' delta).
SLOW_DELAY, FAST_DELAY = 0.2, 0.02
# The claim's bound on the slow replica's share under LEAST_REQUEST: the model predicts 11.5 % at concurrency 24
# (17 % at 3, 14 % at 6); round robin's third is 0.133 above the bound, more than the delta.
LEAST_REQUEST_AT_MOST, LB_DELTA = 0.2, 0.1


def lb_policy(simple: str | None) -> str:
    """A catalog-service DestinationRule with ``loadBalancer.simple``; ``None``: no ``loadBalancer`` (Istio's default).

    The default case still applies a (field-less) rule, so that ``--mesh-policies`` can replace it.
    """
    traffic = "" if simple is None else f"\n  trafficPolicy:\n    loadBalancer: {{simple: {simple}}}"
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: catalog-lb, namespace: platform-core}}
spec:
  host: catalog-service{traffic}
"""


@dataclass(frozen=True)
class BalanceRun:
    """Who served what with one slow replica.

    Attributes:
        prediction: The model's shares for the policy in force (the slow replica first).
        slow: Requests the slow replica served.
        served: Requests any replica served.
        reasons: The policy lines and defaults behind the load balancer.
        detail: A one-line summary for check messages.
    """

    prediction: BalancePrediction
    slow: int
    served: int
    reasons: tuple[str, ...]
    detail: str


def run_one_slow_replica(
    mesh_scenario: Scenario, policy: str, claim: float, alternative: str, concurrency: int = LB_CONCURRENCY
) -> BalanceRun:
    """Apply ``policy``; one catalog replica answers in 200 ms, the others in 20 ms; a closed loop of ``concurrency``.

    The sample is planned before any request: the larger of what the claim (``claim``, ``alternative``, delta
    ``LB_DELTA``) and the model check (two-sided, delta 0.05) need.
    """
    mesh_scenario.policies.apply(policy)
    effective = mesh_scenario.effective(LB_SERVICE)
    reasons = tuple(mesh_scenario.explain(effective.reason("lb")))
    replicas = [i.name for i in mesh_scenario.mesh.instances(LB_SERVICE)]
    latencies = [SLOW_DELAY] + [FAST_DELAY] * (len(replicas) - 1)
    prediction = predict_balance(effective.lb, latencies, concurrency)
    mesh_scenario.explain([prediction.reason])
    requests = max(
        mesh_scenario.requests_for(claim, alternative=alternative, delta=LB_DELTA),
        mesh_scenario.requests_for(prediction.shares[0], alternative="two-sided", delta=0.05),
        4 * concurrency,
    )
    with (
        mesh_scenario.chaos.latency(LB_SERVICE, SLOW_DELAY, instances=replicas[:1]) as slow,
        mesh_scenario.chaos.latency(LB_SERVICE, FAST_DELAY, instances=replicas[1:]) as fast,
    ):
        result = mesh_scenario.load.closed(LB_SERVICE, concurrency=concurrency, requests=requests)
        mesh_scenario.require_chaos(slow, fast)
    counts = result.instance_counts()
    served = sum(c for name, c in counts.items() if name is not None)
    detail = (
        f"effective lb_policy {effective.lb}; {counts.get(replicas[0], 0)} of {served} requests served by the slow "
        f"replica {replicas[0]}; per replica {counts}; model shares {[round(s, 4) for s in prediction.shares]}"
    )
    return BalanceRun(prediction, counts.get(replicas[0], 0), served, reasons, detail)


def check_model_share(mesh_scenario: Scenario, run: BalanceRun) -> None:
    """The slow replica's share agrees with the model for the policy in force (two-sided, delta 0.05)."""
    mesh_scenario.check_rate(
        "model: slow replica's share predicted for the load balancer in force",
        run.slow,
        run.served,
        run.prediction.shares[0],
        alternative="two-sided",
        delta=0.05,
        role="model",
        reasons=[*run.reasons, run.prediction.reason],
    )


@pytest.mark.xfail(
    strict=True,
    raises=ScenarioFailed,
    reason="Istio's default load balancer is LEAST_REQUEST since 1.14, not round robin: a slow replica holds its "
    "requests longer and loses most of Envoy's two-choice draws, so it gets far less than a third",
)
def test_default_load_balancing_is_round_robin_as_written(mesh_scenario: Scenario) -> None:
    """README line 497: "Default: Round-robin across healthy instances": each replica gets a third, slow or not."""
    run = run_one_slow_replica(mesh_scenario, lb_policy(None), 1 / 3, "two-sided")
    mesh_scenario.check_rate(
        "claim: slow replica's share is a third (round robin)",
        run.slow,
        run.served,
        1 / 3,
        alternative="two-sided",
        delta=LB_DELTA,
        reasons=run.reasons,
    )


def test_default_load_balancing_sends_a_slow_replica_less(mesh_scenario: Scenario) -> None:
    """README line 497 corrected: Istio's default (LEAST_REQUEST) sends a slow replica far less than a third.

    No DestinationRule: istiod writes ``lb_policy: LEAST_REQUEST``. With 24 requests in flight and one replica
    ten times slower, the model (Envoy's two-choice pick, simulated) gives it 11.5 %; round robin would give 33.3 %.
    """
    run = run_one_slow_replica(mesh_scenario, lb_policy(None), LEAST_REQUEST_AT_MOST, "at-most")
    mesh_scenario.check_rate(
        f"claim: slow replica's share at most {LEAST_REQUEST_AT_MOST:.0%}",
        run.slow,
        run.served,
        LEAST_REQUEST_AT_MOST,
        alternative="at-most",
        delta=LB_DELTA,
        reasons=run.reasons,
    )
    check_model_share(mesh_scenario, run)


def test_round_robin_sends_a_slow_replica_a_third(mesh_scenario: Scenario) -> None:
    """README lines 507-508's ROUND_ROBIN option: each replica gets a third, however slow."""
    run = run_one_slow_replica(mesh_scenario, lb_policy("ROUND_ROBIN"), 1 / 3, "two-sided", RR_CONCURRENCY)
    mesh_scenario.check_rate(
        "claim: slow replica's share is a third",
        run.slow,
        run.served,
        1 / 3,
        alternative="two-sided",
        delta=LB_DELTA,
        reasons=run.reasons,
    )
    check_model_share(mesh_scenario, run)


def test_least_conn_is_accepted_as_least_request_with_a_warning(mesh_scenario: Scenario) -> None:
    """README lines 507-508: "simple: LEAST_CONN # Route to least busy instance".

    Istio accepts the deprecated ``LEAST_CONN`` and writes Envoy's ``LEAST_REQUEST`` for it (least active
    requests, not connections); meshcheck loads it with a warning saying so. It then behaves as the default.
    """
    run = run_one_slow_replica(mesh_scenario, lb_policy("LEAST_CONN"), LEAST_REQUEST_AT_MOST, "at-most")
    mesh_scenario.check_rate(
        f"claim: slow replica's share at most {LEAST_REQUEST_AT_MOST:.0%}",
        run.slow,
        run.served,
        LEAST_REQUEST_AT_MOST,
        alternative="at-most",
        delta=LB_DELTA,
        reasons=run.reasons,
    )
    warned = [w for w in mesh_scenario.policies.warnings if "LEAST_CONN" in w.message]
    mesh_scenario.check_value(
        "claim: LEAST_CONN is accepted with a warning that Istio uses LEAST_REQUEST",
        float(len(warned)),
        expected=1.0,
        detail="; ".join(str(w) for w in warned) or "no warning",
    )
    check_model_share(mesh_scenario, run)


# ---------------------------------------------------------------------------------------------- min health

MIN_HEALTH_SERVICE = "catalog-service"
MIN_HEALTH_FAILING = 2  # of catalog-service's 3 replicas: once both are ejected 1 of 3 (33 %) is healthy, below 50 %
# 1.5 s at RATE gives each failing replica ~20 requests; the 3rd consecutive 503 ejects it (~0.15 s in).
MIN_HEALTH_WARMUP = 1.5
# In panic Envoy balances over all 3 hosts, so the 2 failing ones get 2/3. Without panic they get 0, and with only
# the first ejection delivered (2 of 3 healthy, no panic) 1/2: a delta of 0.15 catches both with beta <= 0.05.
PANIC_SHARE, PANIC_DELTA = 2 / 3, 0.15
# Without panic not one request may reach an ejected host; 0.05 sizes that at-most-0 check at ~60 requests.
NO_PANIC_DELTA = 0.05


def min_health_policy(min_health_percent: int | None) -> str:
    """catalog-service outlier detection with ``minHealthPercent`` as given (``None``: left out, Istio's 0).

    ``maxEjectionPercent: 100`` isolates ``minHealthPercent``: under the README's own 50 Envoy ejects at most
    1 of 3 replicas, which leaves 67 % healthy, so the 50 % threshold could never be crossed. baseEjectionTime
    is the README's 30 s, longer than the whole scenario, so no ejected replica returns while it is measured.
    ``retries: {attempts: 0}``: each request is one attempt, so the instance that answered is the only one tried.
    """
    min_health = "" if min_health_percent is None else f"\n      minHealthPercent: {min_health_percent}"
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: catalog-min-health, namespace: platform-core}}
spec:
  host: catalog-service
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: {CONSECUTIVE}
      interval: 0.5s
      baseEjectionTime: 30s
      maxEjectionPercent: 100{min_health}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: catalog-min-health, namespace: platform-core}}
spec:
  hosts: [catalog-service]
  http:
  - route:
    - destination: {{host: catalog-service}}
    retries: {{attempts: 0}}
"""


@dataclass(frozen=True)
class MinHealthRun:
    """Two of three catalog replicas always fail: what Envoy ejected, then where the measured requests went.

    Attributes:
        prediction: The model's prediction for the policy in force.
        ejected: ``envoy_cluster_outlier_detection_ejections_active`` once it reached 2 (or when the wait ended).
        measured: Requests sent in the measured phase (planned before any was sent).
        served: Measured requests some instance answered.
        to_failing: Measured requests the failing (ejected) instances answered.
        successes: Measured requests answered 2xx.
        panics: ``envoy_cluster_lb_healthy_panic`` increase over the scenario (load-balancer picks in panic).
        reasons: The policy lines and defaults behind the prediction.
        detail: A one-line summary for check messages.
    """

    prediction: EjectionPrediction
    ejected: float
    measured: int
    served: int
    to_failing: int
    successes: int
    panics: float
    reasons: tuple[str, ...]
    detail: str


def run_min_health(
    mesh_scenario: Scenario, policy: str, claim: float | None, alternative: str = "two-sided", delta: float = 0.0
) -> MinHealthRun:
    """Apply ``policy``; 2 of 3 catalog replicas answer 503; eject both, then measure where requests go.

    The measured phase is planned before any request: the requests the claim (``claim``, ``alternative``,
    ``delta``) needs; ``claim=None`` stops once both replicas are ejected. It starts once Prometheus shows
    both ejections and the later one has had Envoy's update_merge_window (1 s) to reach the load balancer,
    timed from that replica's ejecting failure (its ``CONSECUTIVE``-th answer).
    """
    mesh_scenario.policies.apply(policy)
    effective = mesh_scenario.effective(MIN_HEALTH_SERVICE)
    fault = DestinationFault("error", rate=1.0, status=503, instances=MIN_HEALTH_FAILING)
    prediction = predict_ejection(effective, fault, Load(concurrency=1, rate=RATE))
    reasons = tuple(mesh_scenario.explain(prediction.explain()))
    requests = 0 if claim is None else mesh_scenario.requests_for(claim, alternative=alternative, delta=delta)
    with mesh_scenario.chaos.error(MIN_HEALTH_SERVICE, rate=1.0, status=503, instances=MIN_HEALTH_FAILING) as injected:
        warmup = mesh_scenario.load.open(MIN_HEALTH_SERVICE, rate=RATE, duration=MIN_HEALTH_WARMUP)
        mesh_scenario.require_chaos(injected)
        ejected = mesh_scenario.wait_for_gauge(
            "envoy_cluster_outlier_detection_ejections_active", MIN_HEALTH_SERVICE, MIN_HEALTH_FAILING, timeout=5.0
        )
        ejecting = [warmup.responses_from(name)[0] for name in injected.instances]
        # A replica that never reached its ejecting failure is timed from the warm-up's end; the checks on
        # the gauge and the shares then say what happened.
        last_ejection = max(
            float(t[CONSECUTIVE - 1]) if len(t) >= CONSECUTIVE else warmup.started_wall + warmup.elapsed
            for t in ejecting
        )
        lb_lag = last_ejection + MERGE_WINDOW + TIMING_TOLERANCE - time.time()
        if requests and lb_lag > 0:
            mesh_scenario.sleep(lb_lag, "Envoy's update_merge_window: the later ejection reaches the load balancer")
        served_before = {p.instance: p.served for p in injected.proof()}
        result = (
            mesh_scenario.load.open(MIN_HEALTH_SERVICE, rate=RATE, duration=requests / RATE, requests=requests)
            if requests
            else None
        )
        at_instances = sum(p.served - served_before.get(p.instance, 0) for p in injected.proof())
    panics = mesh_scenario.cluster_increase("envoy_cluster_lb_healthy_panic", MIN_HEALTH_SERVICE, mesh_scenario.prom())
    counts = result.instance_counts() if result is not None else {}
    served = sum(c for name, c in counts.items() if name is not None)
    to_failing = sum(counts.get(name, 0) for name in injected.instances)
    successes = result.success_count if result is not None else 0
    detail = (
        f"warm-up {warmup.count} requests, per replica {warmup.instance_counts()}; ejections_active {ejected:g}; "
        f"measured {requests} requests, {lb_lag:+.3f} s from the later ejection's merge window (+: waited): "
        f"{to_failing} of {served} answered by the failing replicas {list(injected.instances)} "
        f"({at_instances} counted at those replicas), {successes} succeeded, per replica {counts}, "
        f"statuses {result.status_histogram() if result is not None else {}}; lb_healthy_panic +{panics:g}"
    )
    return MinHealthRun(prediction, ejected, requests, served, to_failing, successes, panics, reasons, detail)


def check_min_health_model(mesh_scenario: Scenario, run: MinHealthRun, *, panic: bool) -> None:
    """The model's reading of the policy, checked last: both failing replicas ejected, panic as given."""
    mesh_scenario.check_value(
        "model: failing instances ejected at once",
        float(run.prediction.ejected),
        expected=float(MIN_HEALTH_FAILING),
        reasons=run.reasons,
    )
    mesh_scenario.check_value(
        "model: panic mode once they are ejected",
        float(run.prediction.panic),
        expected=float(panic),
        reasons=run.reasons,
    )


@pytest.mark.xfail(
    strict=True,
    raises=ScenarioFailed,
    reason="minHealthPercent is Envoy's healthy_panic_threshold, not a floor on ejection: Envoy ejects both failing "
    "replicas of 3 (1 of 3 healthy, 33 %), and only then, below 50 %, stops honouring the ejections (panic mode)",
)
def test_min_health_percent_keeps_half_the_instances_healthy_as_written(mesh_scenario: Scenario) -> None:
    """README line 280: "minHealthPercent: 50 # Min 50% must be healthy", read literally as a floor.

    The literal claim: the mesh keeps at least half of the instances healthy, so with 2 of 3 catalog replicas
    failing it ejects at most 1 (ejecting the second would leave 33 %). The comment says nothing about what
    happens to traffic, so the check is the number of hosts Envoy reports ejected at once. maxEjectionPercent
    is 100 here (the README's 50 alone caps ejections at 1 of 3, which would hide what minHealthPercent does).
    """
    run = run_min_health(mesh_scenario, min_health_policy(50), None)
    mesh_scenario.check_value(
        "claim: instances ejected at once (at least 50 % of 3 stay healthy: at most 1)",
        run.ejected,
        at_most=1.0,
        reasons=run.reasons,
        detail="envoy_cluster_outlier_detection_ejections_active, waited on for up to 5 s to reach 2; " + run.detail,
    )


def test_min_health_percent_50_is_a_panic_threshold(mesh_scenario: Scenario) -> None:
    """README line 280 corrected: below 50 % healthy Envoy panics and sends the ejected, failing hosts traffic again.

    minHealthPercent becomes the cluster's ``healthy_panic_threshold``. Once both failing replicas are ejected
    (1 of 3 healthy), Envoy balances over all three hosts, ejected ones included: the failing replicas get 2/3
    of the requests, which fail, and ``envoy_cluster_lb_healthy_panic`` counts the panicked picks. The breaker
    then protects nothing. maxEjectionPercent is 100 (under the README's 50 no second ejection would happen).
    """
    run = run_min_health(mesh_scenario, min_health_policy(50), PANIC_SHARE, "two-sided", PANIC_DELTA)
    mesh_scenario.check_rate(
        "claim: share of requests the failing, ejected instances served (panic: 2 of 3 hosts)",
        run.to_failing,
        run.served,
        PANIC_SHARE,
        alternative="two-sided",
        delta=PANIC_DELTA,
        reasons=run.reasons,
    )
    mesh_scenario.check_value(
        "claim: envoy_cluster_lb_healthy_panic (load-balancer picks made in panic mode)",
        run.panics,
        at_least=1.0,
        reasons=run.reasons,
        detail=run.detail,
    )
    mesh_scenario.check_value(
        "hosts ejected while measured (envoy_cluster_outlier_detection_ejections_active)",
        run.ejected,
        expected=float(MIN_HEALTH_FAILING),
        detail=run.detail,
    )
    mesh_scenario.check_value(
        "measured requests that succeeded: those the healthy instance served",
        float(run.successes),
        expected=float(run.served - run.to_failing),
        detail=run.detail,
    )
    check_min_health_model(mesh_scenario, run, panic=True)


def test_min_health_percent_0_keeps_ejected_hosts_out(mesh_scenario: Scenario) -> None:
    """Istio's default minHealthPercent 0 (panic off): with 2 of 3 replicas ejected all traffic goes to the third.

    The field is left out, as in most DestinationRules: Istio then writes ``healthy_panic_threshold: 0``. The
    503s come only before the ejections; once Envoy has both, not one request reaches a failing replica.
    """
    run = run_min_health(mesh_scenario, min_health_policy(None), 0.0, "at-most", NO_PANIC_DELTA)
    mesh_scenario.check_rate(
        "claim: share of requests the failing, ejected instances served (none)",
        run.to_failing,
        run.served,
        0.0,
        alternative="at-most",
        delta=NO_PANIC_DELTA,
        reasons=run.reasons,
    )
    mesh_scenario.check_value(
        "claim: measured requests that succeeded (all)",
        float(run.successes),
        expected=float(run.measured),
        reasons=run.reasons,
        detail=run.detail,
    )
    mesh_scenario.check_value(
        "claim: envoy_cluster_lb_healthy_panic (panic mode off)",
        run.panics,
        expected=0.0,
        reasons=run.reasons,
        detail=run.detail,
    )
    mesh_scenario.check_value(
        "hosts ejected while measured (envoy_cluster_outlier_detection_ejections_active)",
        run.ejected,
        expected=float(MIN_HEALTH_FAILING),
        detail=run.detail,
    )
    check_min_health_model(mesh_scenario, run, panic=False)
