"""Run what a scenario declared: predict, plan, inject, drive, prove the fault, and decide every check.

The order is fixed so that a scenario cannot decide on data it chose after seeing it: the model's
prediction and the sample size come first, from the policy alone; then the fault is injected and the
planned load is sent once; then every declared check is decided on that one sample, and all of them are
recorded before the first failure is raised. Nothing is retried.
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import numpy as np

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.harness.declare import (
    ClosedLoop,
    CounterExpectation,
    Drive,
    EjectionExpectation,
    EveryRequest,
    Expectation,
    Fault,
    LatencyExpectation,
    OpenLoop,
    OverflowExpectation,
    RateExpectation,
)
from pytest_meshcheck.harness.plan import PlannedRate, plan_rate, sample_size
from pytest_meshcheck.report.record import CheckRecord

if TYPE_CHECKING:
    from pytest_meshcheck.expect import LatencyPrediction, OverflowPrediction, SuccessPrediction
    from pytest_meshcheck.harness.chaos import FaultHandle, InstanceProof
    from pytest_meshcheck.harness.scenario import Scenario
    from pytest_meshcheck.load import LoadResult
    from pytest_meshcheck.metrics.prom import Prom

# How far the SPRT may run past the fixed-sample plan before it stops undecided (inconclusive).
SEQUENTIAL_CAP = 3
# Requests per SPRT batch: the test decides between batches, so a batch is what a decision can overshoot by. At
# least four rounds of the closed loop, so that every batch keeps all its requests in flight.
SEQUENTIAL_BATCH = 200


@dataclass
class Declarations:
    """What a scenario declared, in order; consumed by :func:`verify`."""

    faults: list[tuple[str, Fault]] = field(default_factory=list)
    drive: Drive | None = None
    expectations: list[Expectation] = field(default_factory=list)
    verified: bool = False
    where: dict[int, str] = field(default_factory=dict)

    def add(self, expectation: Expectation) -> None:
        """Declare an expectation, remembering the user's line that declared it (for failure messages)."""
        self.expectations.append(expectation)
        self.where[id(expectation)] = _caller_outside_the_package()

    @property
    def pending(self) -> bool:
        """True when something was declared and not yet verified."""
        return not self.verified and bool(self.drive or self.expectations or self.faults)

    def tag(self, expectation: Expectation, failed: list[CheckRecord]) -> list[CheckRecord]:
        """Point each failed check at the line that declared it: verify() runs after the test returned."""
        where = self.where.get(id(expectation), "")
        for check in failed:
            if where and "declared at" not in check.detail:
                check.detail += f"; declared at {where}"
        return failed


def _caller_outside_the_package() -> str:
    package = str(Path(__file__).resolve().parents[1])
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(package) or "/examples/" in filename:
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back
    return ""


@dataclass(frozen=True)
class ScenarioPlan:
    """The model's prediction and the planned checks of a declared scenario.

    Attributes:
        service: Where the load goes.
        prediction: The model's success prediction for the active policy, fault and load (``None`` when no
            check needs it, such as a routing share).
        rates: Every rate check, planned.
        n: Requests to send (closed loop), or ``None`` for an open loop (its duration decides).
        latency: The model's latency bounds under the declared latency fault (``None`` without one).
        overflow: The model's pool-overflow prediction at the declared load (with an overflow claim).
    """

    service: str
    prediction: SuccessPrediction | None
    rates: tuple[PlannedRate, ...]
    n: int | None
    latency: LatencyPrediction | None = None
    overflow: OverflowPrediction | None = None


def model_value(prediction: SuccessPrediction | None, measure: str) -> float | None:
    """The model's rate for a measure: ``success``, ``status:<code>`` or a given value; ``None`` for others."""
    if measure.startswith("given:"):
        return float(measure.split(":", 1)[1])
    if prediction is None:
        return None
    if measure == "success":
        return prediction.p_success
    if measure.startswith("status:"):
        return prediction.p(int(measure.split(":", 1)[1]))
    return None


def plan(scenario: Scenario, declared: Declarations) -> ScenarioPlan:
    """Predict and plan (no traffic). Works on any backend; the power tests use it without a mesh.

    Raises:
        MeshcheckError: Nothing to drive, or a check that cannot be planned.
    """
    from pytest_meshcheck.expect import predict_ejection, predict_latency, predict_overflow, predict_success

    if declared.drive is None:
        raise MeshcheckError("declare the load with drive(service, ClosedLoop(...)) before verify()")
    service = declared.drive.service
    limited = [f for s, f in declared.faults if f.limit is not None]
    rated = [e.name for e in declared.expectations if isinstance(e, RateExpectation)]
    if limited and rated:
        raise MeshcheckError(
            f"Fault.error(limit={limited[0].limit}) ends after {limited[0].limit} errors per instance, but the "
            f"rate checks ({', '.join(rated)}) are predicted for a fault that does not end; use limit= only "
            "with ejection, every-request and latency expectations, or remove it"
        )
    faults = [f.model() for s, f in declared.faults if s == service]
    # Resolved once, and only when a prediction needs it: a split route (a canary) has no single policy.
    effective = functools.cache(lambda: scenario.effective(service))
    needs_model = bool(faults) or any(
        isinstance(e, RateExpectation) and (e.measure == "success" or e.measure.startswith("status:"))
        for e in declared.expectations
    )
    prediction = None
    if needs_model:
        prediction = predict_success(effective(), faults, declared.drive.load.model())
        scenario.explain(prediction.explain())
    settings = scenario.settings
    delta_scale = scenario.delta_scale
    latency = None
    slow = [f for f in faults if f.kind == "latency"]
    if slow:
        latency = predict_latency(effective(), slow[0])
        scenario.explain(latency.explain())
    # A delay that a timeout cuts ends every request exactly as the latency model says (status, tries,
    # time): those exact model checks replace the success-ratio model check, which they imply.
    exact_latency_model = latency is not None and latency.status is not None
    rates: list[PlannedRate] = []
    overflow_claimed = any(isinstance(e, OverflowExpectation) for e in declared.expectations)
    for e in declared.expectations:
        if not isinstance(e, RateExpectation):
            continue
        if (overflow_claimed or exact_latency_model) and e.role == "model" and e.measure == "success":
            # Which requests overflow depends on timing the success model does not predict; the overflow
            # model (never / always at this concurrency) is the model check instead.
            continue
        value = model_value(prediction, e.measure) if e.expected is None or e.role == "claim" else e.expected
        if e.role == "model":
            if value is None:
                raise MeshcheckError(f"{e.name}: the model has no prediction for {e.measure!r}; pass model=")
            expected = value
        else:
            assert e.expected is not None
            expected = e.expected
        rates.append(plan_rate(e, expected, value, alpha=settings.alpha, beta=settings.beta, delta_scale=delta_scale))
    load = declared.drive.load
    n: int | None
    if isinstance(load, ClosedLoop):
        n = load.requests if load.requests is not None else sample_size(rates, floor=4 * load.concurrency)
    else:
        n = None
    if faults and any(isinstance(e, EjectionExpectation) for e in declared.expectations):
        # The reasons (thresholds, maxEjectionPercent, defaults) go into the report and failure messages.
        scenario.explain(predict_ejection(effective(), faults[0], declared.drive.load.model()).explain())
    overflow = None
    if any(isinstance(e, OverflowExpectation) for e in declared.expectations):
        overflow = predict_overflow(effective(), declared.drive.load.model())
        scenario.explain(overflow.explain())
    return ScenarioPlan(service, prediction, tuple(rates), n, latency, overflow)


def verify(scenario: Scenario, declared: Declarations) -> LoadResult:
    """Run the declared scenario once and decide every check (see the module docstring).

    Raises:
        ScenarioFailed: At least one claim or model check failed or was inconclusive; every failed
            check is listed.
        ChaosNotEffective: The fault did not hit the destination at the declared rate.
    """
    __tracebackhide__ = True
    declared.verified = True
    the_plan = plan(scenario, declared)
    assert declared.drive is not None
    drive = declared.drive
    handles = [_inject(scenario, s, f) for s, f in declared.faults]
    ejection = next((e for e in declared.expectations if isinstance(e, EjectionExpectation)), None)
    reached_late: int | None = None
    sequential: tuple[PlannedRate, object] | None = None
    try:
        if ejection is not None and ejection.within is not None:
            result, reached_late = _drive_in_two_phases(scenario, drive, ejection.within, handles)
        else:
            result, sequential = _drive(scenario, drive, the_plan)
        scenario.require_chaos(*handles)
    finally:
        for h in handles:
            h.revert()
    failed: list[CheckRecord] = []
    for planned in the_plan.rates:
        if sequential is not None and planned is sequential[0]:
            fs = scenario.record_sequential(planned, sequential[1])
        elif sequential is not None:
            fs = scenario.decide_anytime(planned, *planned.expectation.count(result))
        else:
            fs = scenario.decide_rate(planned, *planned.expectation.count(result))
        failed += declared.tag(planned.expectation, fs)
    prom = None
    # Read once (the caller's sidecar access log), for the latency claims and the model's latency checks.
    mesh_latencies = functools.cache(lambda: scenario.mesh_latencies(drive.service, result))
    for e in declared.expectations:
        if isinstance(e, CounterExpectation):
            prom = prom or scenario.prom()
            failed += declared.tag(e, _counter(scenario, e, drive.service, result, prom))
        elif isinstance(e, EveryRequest):
            failed += declared.tag(e, _every_request(scenario, e, result))
        elif isinstance(e, LatencyExpectation):
            failed += declared.tag(e, _latency(scenario, e, mesh_latencies(), result))
        elif isinstance(e, EjectionExpectation):
            prom = prom or scenario.prom()
            failed += declared.tag(e, _ejection(scenario, e, drive.service, handles, reached_late, prom))
        elif isinstance(e, OverflowExpectation):
            prom = prom or scenario.prom()
            failed += declared.tag(e, _overflow(scenario, e, drive.service, result, prom, the_plan.overflow))
    wants_model = any(isinstance(e, RateExpectation) and e.role == "model" for e in declared.expectations)
    if wants_model and the_plan.latency is not None and the_plan.latency.status is not None:
        # Only a delay that a timeout cuts has a modelled end; an uncut delay just adds its own length.
        slack = max((e.slack for e in declared.expectations if isinstance(e, LatencyExpectation)), default=0.0)
        failed += _latency_model(scenario, the_plan.latency, drive.service, result, mesh_latencies(), slack)
    scenario.raise_failures(failed)
    return result


def _inject(scenario: Scenario, service: str, fault: Fault):  # type: ignore[no-untyped-def]
    if fault.kind == "error":
        return scenario.chaos.error(service, fault.rate, fault.status, instances=fault.instances, limit=fault.limit)
    if fault.kind == "latency":
        return scenario.chaos.latency(service, fault.delay, fault.rate, instances=fault.instances)
    return scenario.chaos.reset(service, fault.rate, instances=fault.instances)


def _drive(
    scenario: Scenario, drive: Drive, the_plan: ScenarioPlan
) -> tuple[LoadResult, tuple[PlannedRate, object] | None]:
    load = drive.load
    if isinstance(load, OpenLoop):
        result = scenario.load.open(
            drive.service, rate=load.rate, duration=load.duration, path=drive.path, headers=drive.headers
        )
        return result, None
    assert the_plan.n is not None
    claims = [
        r
        for r in the_plan.rates
        if r.expectation.role == "claim"
        and r.rule.alternative != "two-sided"
        and 0.0 < r.rule.expected < 1.0
        and r.expectation.measure == "success"
    ]
    if scenario.settings.sequential and len(claims) == 1 and load.requests is None:
        return scenario.sequential_claim(drive, load.concurrency, claims[0], SEQUENTIAL_CAP * the_plan.n)
    result = scenario.load.closed(
        drive.service,
        concurrency=load.concurrency,
        requests=the_plan.n,
        duration=max(60.0, the_plan.n / 200.0),
        path=drive.path,
        headers=drive.headers,
    )
    return result, None


def client_retries(result: LoadResult) -> int:
    """Retries the client saw: the sum over requests of ``x-envoy-attempt-count - 1``."""
    return sum((a - 1) * c for a, c in result.attempt_histogram().items() if a)


def _client_count(name: str, result: LoadResult) -> float:
    counts = {
        "client_retries": lambda: client_retries(result),
        "overloaded": lambda: result.overloaded_count,
        "requests": lambda: result.count,
        "successes": lambda: result.success_count,
        # An abort of Istio's fault filter never reaches the router, so it carries no x-envoy-attempt-count.
        "aborted": lambda: result.attempt_histogram().get(None, 0),
        "not_aborted": lambda: result.count - result.attempt_histogram().get(None, 0),
    }
    if name not in counts:
        raise MeshcheckError(f"expect_counter(equals={name!r}): use a number or one of {', '.join(counts)}")
    return float(counts[name]())


def _counter(
    scenario: Scenario, e: CounterExpectation, service: str, result: LoadResult, prom: Prom
) -> list[CheckRecord]:
    metric = e.metric if e.metric.startswith("envoy_") else f"envoy_cluster_{e.metric}"
    observed = (
        prom.counter_increase(metric)
        if metric.startswith("envoy_http_")
        else scenario.cluster_increase(metric, service, prom)
    )
    expected = _client_count(e.equals, result) if isinstance(e.equals, str) else e.equals
    label = f" = {e.equals}" if isinstance(e.equals, str) else ""
    return scenario.decide_value(
        f"{metric}{label}",
        observed,
        expected=expected,
        at_least=e.at_least,
        at_most=e.at_most,
        role=e.role,
    )


def _every_request(scenario: Scenario, e: EveryRequest, result: LoadResult) -> list[CheckRecord]:
    failed: list[CheckRecord] = []
    statuses = result.status_histogram()
    attempts = result.attempt_histogram()
    if e.status is not None:
        failed += scenario.decide_value(
            f"claim: requests ending in {e.status}",
            float(statuses.get(e.status, 0)),
            expected=float(result.count),
            role=e.role,
            detail=f"status histogram {statuses}",
        )
    if e.max_attempts is not None:
        over = sum(c for a, c in attempts.items() if a is None or a > e.max_attempts)
        failed += scenario.decide_value(
            f"claim: requests that needed more than {e.max_attempts} tries (x-envoy-attempt-count)",
            float(over),
            expected=0.0,
            role=e.role,
            detail=f"attempt histogram {attempts}",
        )
    if e.attempts is not None:
        failed += scenario.decide_value(
            f"claim: requests that made {e.attempts} upstream tries (x-envoy-attempt-count)",
            float(attempts.get(e.attempts, 0)),
            expected=float(result.count),
            role=e.role,
            detail=f"attempt histogram {attempts}",
        )
    return failed


def _latency(
    scenario: Scenario, e: LatencyExpectation, measured: tuple[np.ndarray, str], result: LoadResult
) -> list[CheckRecord]:
    latencies, source = measured
    failed: list[CheckRecord] = []
    slack = f"{e.slack:g} s scheduling slack; " if e.slack else ""
    if e.at_most is not None:
        which = "slowest request" if e.percentile is None else f"p{e.percentile:g} latency"
        value = float(latencies.max() if e.percentile is None else np.percentile(latencies, e.percentile))
        failed += scenario.decide_value(
            f"claim: {which} (s)", value, at_most=e.at_most + e.slack, unit="s", role=e.role, detail=slack + source
        )
    if e.at_least is not None:
        floor, floor_source = scenario.floor_latencies(result)
        failed += scenario.decide_value(
            "claim: fastest request (s)",
            float(floor.min()),
            at_least=e.at_least - 0.01,
            unit="s",
            role=e.role,
            detail=f"a timeout cannot fire early (10 ms for clock granularity); {floor_source}",
        )
    return failed


def _latency_model(
    scenario: Scenario,
    latency: LatencyPrediction,
    service: str,
    result: LoadResult,
    measured: tuple[np.ndarray, str],
    slack: float,
) -> list[CheckRecord]:
    failed: list[CheckRecord] = []
    statuses = result.status_histogram()
    low, high = latency.slow_range or (0.0, float("inf"))
    latencies, source = measured
    floor, floor_source = scenario.floor_latencies(result)
    failed += scenario.decide_value(
        f"model: requests ending in {latency.status}",
        float(statuses.get(latency.status or 0, 0)),
        expected=float(result.count),
        role="model",
        detail=f"status histogram {statuses}",
    )
    failed += scenario.decide_value(
        f"model: fastest request not before the predicted {low:.3f} s",
        float(floor.min()),
        at_least=low - 0.01,
        unit="s",
        role="model",
        detail=floor_source,
    )
    failed += scenario.decide_value(
        f"model: slowest request within the predicted {high:.3f} s",
        float(latencies.max()),
        at_most=high + slack,
        unit="s",
        role="model",
        detail=source,
    )
    flags = scenario.mesh_response_flags(service)
    if latency.flags and flags is not None:
        failed += scenario.decide_value(
            f"model: response flag {latency.flags} (access log)",
            float(flags.get(latency.flags, 0)),
            expected=float(result.count),
            role="model",
            detail=f"access-log flags {flags}",
        )
    return failed


def _drive_in_two_phases(
    scenario: Scenario, drive: Drive, within: float, handles: list[FaultHandle]
) -> tuple[LoadResult, int]:
    """Open-loop load up to ``within`` seconds, then the rest; requests the faulted instances got after."""
    from pytest_meshcheck.load import LoadResult

    load = drive.load
    if not isinstance(load, OpenLoop) or load.duration <= within:
        raise MeshcheckError(f"expect_ejection(within={within:g}) needs an OpenLoop load longer than {within:g} s")
    first = scenario.load.open(drive.service, rate=load.rate, duration=within, path=drive.path, headers=drive.headers)
    before = sum(p.served for h in handles for p in h.proof())
    rest = scenario.load.open(
        drive.service, rate=load.rate, duration=load.duration - within, path=drive.path, headers=drive.headers
    )
    after = sum(p.served for h in handles for p in h.proof())
    return LoadResult.concat([first, rest]), after - before


def fewest_errors_before_ejection(
    scenario: Scenario, service: str, proof: list[InstanceProof], per_instance: str
) -> tuple[int, str]:
    """The fewest errors a faulted instance served before Envoy ejected it, and the check's detail.

    From Envoy's event and per-attempt logs where the context has them: per ejected instance, the errors on
    attempts the sidecar dispatched before the EJECT event. Attempts dispatched after it, before the ejection
    reached the worker's load balancer, are shown in the detail, not counted. The fewest over the instances,
    because Envoy's detector fires on the N-th consecutive error on the worker, but the main thread ejects
    the host: when it is busy (serving a Prometheus scrape of the admin endpoint, for example) another attempt
    can reach the host and fail first. A flake-bench run saw 4, 4 and 3 errors before the EJECT events of three
    instances with consecutive5xxErrors 3. The fewest is N unless every instance's ejection was late; a policy
    with N + 1 gives at least N + 1 at every instance, one with N - 1 at most N - 1 at the earliest.
    A fault limited to N errors (``Fault.error(limit=N)``) removes the race: a late attempt is served.
    Without those logs (a cluster) the instances' own counts of errors are used, which include the late
    attempts; with a limited fault they cannot tell an ejection from none there, so pair the check with
    ``instances=`` (Envoy's count of enforced ejections).
    """
    faulted = {p.instance for p in proof}
    errors = min((p.injected for p in proof), default=0)
    counts = scenario.errors_before_ejection(service)
    if counts is None:
        return errors, (
            f"counted at the instances ({per_instance}): this context has no outlier event log, so attempts "
            "dispatched while an ejection was on its way to Envoy's worker count too"
        )
    ejected = sorted((c for i, c in counts.items() if i in faulted), key=lambda c: c.ejected_at)
    if not ejected:
        # 0, not the errors served: with a limited fault those equal the threshold even when nothing ejects.
        return 0, f"Envoy logged no ejection of a faulted instance after any number of errors; {per_instance}"
    lines = "; ".join(c.describe() for c in ejected)
    return min(c.errors_before for c in ejected), (
        f"from Envoy's event and per-attempt logs, in ejection order: {lines}; at the instances, {per_instance}"
    )


def _ejection(
    scenario: Scenario,
    e: EjectionExpectation,
    service: str,
    handles: list[FaultHandle],
    reached_late: int | None,
    prom: Prom,
) -> list[CheckRecord]:
    failed: list[CheckRecord] = []
    proof = [p for h in handles for p in h.final_proof]
    per_instance = "per instance: " + ", ".join(f"{p.instance} failed {p.injected} of {p.served}" for p in proof)
    if e.after_errors is not None:
        first, detail = fewest_errors_before_ejection(scenario, service, proof, per_instance)
        failed += scenario.decide_value(
            "claim: fewest errors a faulted instance served before its ejection",
            float(first),
            expected=float(e.after_errors),
            role=e.role,
            detail=detail,
        )
    if reached_late is not None:
        failed += scenario.decide_value(
            f"claim: requests that reached a faulted instance after {e.within:g} s",
            float(reached_late),
            expected=0.0,
            role=e.role,
            detail=per_instance,
        )
    if e.instances is not None:
        enforced = scenario.cluster_increase("envoy_cluster_outlier_detection_ejections_enforced_total", service, prom)
        failed += scenario.decide_value(
            "claim: envoy_cluster_outlier_detection_ejections_enforced_total",
            enforced,
            at_least=float(e.instances),
            role=e.role,
        )
    return failed


def _overflow(
    scenario: Scenario,
    e: OverflowExpectation,
    service: str,
    result: LoadResult,
    prom: Prom,
    model: OverflowPrediction | None,
) -> list[CheckRecord]:
    overloaded = float(result.overloaded_count)
    statuses = result.status_histogram()
    detail = f"status histogram {statuses}"
    failed = scenario.decide_value(
        "claim: 503 UO overflow responses",
        overloaded,
        expected=e.equals,
        at_least=e.at_least,
        role=e.role,
        detail=detail,
    )
    if e.equals == 0:
        failed += scenario.decide_value(
            "claim: successful requests", float(result.success_count), expected=float(result.count), role=e.role
        )
    failed += scenario.decide_value(
        "every 503 carries x-envoy-overloaded", overloaded, expected=float(statuses.get(503, 0)), role="evidence"
    )
    counted = scenario.cluster_increase("envoy_cluster_upstream_rq_pending_overflow", service, prom)
    counted += scenario.cluster_increase("envoy_cluster_upstream_rq_active_overflow", service, prom)
    failed += scenario.decide_value(
        "Envoy overflow counters (pending + active) = overloaded responses",
        counted,
        expected=overloaded,
        role="evidence",
    )
    if model is not None and model.level != "rare":
        failed += scenario.decide_value(
            f"model: overflow {model.level} at this concurrency",
            float(overloaded > 0),
            expected=float(model.level == "always"),
            role="model",
        )
    return failed


def ordered_outcomes(result: LoadResult) -> list[bool]:
    """Success of each request in completion order (what a sequential test sees)."""
    status = np.asarray(result.records.status[: result.count])
    order = np.argsort(np.asarray(result.records.done[: result.count]), kind="stable")
    return [bool(200 <= s < 300) for s in status[order]]


def now() -> float:
    """Wall clock, for records."""
    return time.time()
