"""The ``scenario`` fixture: one resilience claim, checked on evidence, recorded for its report.

A scenario applies a policy, injects a fault, drives load, and then checks the outcome against what
the expectation model predicts from the policy: proportions with binomial confidence intervals whose
sample size was planned up front, latency bounds, and Envoy's own counters read through Prometheus.
A failed check raises :class:`ScenarioFailed` (an ``AssertionError``, so pytest reports a failure)
whose message carries expected vs observed, the interval, the sample size, the policy lines involved
and the report path. Nothing is ever re-run until it passes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.harness.chaos import Chaos, FaultHandle
from pytest_meshcheck.harness.declare import (
    ClosedLoop,
    Counter,
    CounterExpectation,
    Drive,
    EjectionExpectation,
    EveryRequest,
    Fault,
    LatencyExpectation,
    LoadShape,
    OverflowExpectation,
    RateExpectation,
    Role,
    bounds,
    status_share,
    success,
)
from pytest_meshcheck.harness.load import LoadDriver, LoadPhase
from pytest_meshcheck.harness.plan import PlannedRate, plan_rate
from pytest_meshcheck.harness.policies import MeshPolicies
from pytest_meshcheck.harness.timing import (
    LOG_FLAGS,
    LOG_SAMPLES,
    REPORT_PROM,
    REPORT_WRITE,
    SCRAPE_END,
    SCRAPE_GAUGE,
    SCRAPE_START,
    Timings,
)
from pytest_meshcheck.harness.verify import Declarations
from pytest_meshcheck.report.record import (
    ChaosRecord,
    CheckRecord,
    LoadSummary,
    PolicyRecord,
    ScenarioRecord,
    report_stem,
)

if TYPE_CHECKING:
    from pytest_meshcheck.backend import MeshBackend
    from pytest_meshcheck.expect import EffectivePolicy, Reason
    from pytest_meshcheck.harness.verify import ScenarioPlan
    from pytest_meshcheck.load import LoadResult
    from pytest_meshcheck.metrics.outlier_events import EjectionCount
    from pytest_meshcheck.metrics.prom import Prom
    from pytest_meshcheck.policy import PolicySet
    from pytest_meshcheck.policy.model import DestinationRule, VirtualService
    from pytest_meshcheck.settings import MeshSettings
    from pytest_meshcheck.verdict.power import RateDecision, RateOutcome
    from pytest_meshcheck.verdict.sequential import Direction

# Envoy cluster counters summarised in every report (names as Prometheus exposes them).
#: Envoy stamps ``%START_TIME%`` to the millisecond: a phase's first request can carry a stamp just before the
#: load generator's own start time.
LOG_STAMP_SLACK = 0.002
REPORT_COUNTERS = (
    "envoy_cluster_upstream_rq_total",
    "envoy_cluster_upstream_rq_retry",
    "envoy_cluster_upstream_rq_retry_success",
    "envoy_cluster_upstream_rq_retry_limit_exceeded",
    "envoy_cluster_upstream_rq_retry_overflow",
    "envoy_cluster_upstream_rq_timeout",
    "envoy_cluster_upstream_rq_per_try_timeout",
    "envoy_cluster_upstream_rq_pending_overflow",
    "envoy_cluster_upstream_rq_active_overflow",
    "envoy_cluster_upstream_cx_overflow",
    "envoy_cluster_outlier_detection_ejections_enforced_total",
    "envoy_cluster_outlier_detection_ejections_overflow",
    "envoy_cluster_lb_healthy_panic",
)
# Charted over the scenario window: name -> (expression template, is_counter).
REPORT_SERIES = {
    "retries": ("envoy_cluster_upstream_rq_retry", True),
    "ejections_active": ("envoy_cluster_outlier_detection_ejections_active", False),
    "overflow": ("envoy_cluster_upstream_rq_pending_overflow", True),
    "upstream_requests": ("envoy_cluster_upstream_rq_total", True),
}


class ScenarioFailed(AssertionError):
    """A resilience claim did not hold; the message says what was expected, what was seen, and where to look.

    Attributes:
        checks: The checks that failed or were inconclusive, with their names and roles.
    """

    def __init__(self, message: str, checks: tuple[CheckRecord, ...] = ()) -> None:
        super().__init__(message)
        self.checks = checks

    @property
    def check_names(self) -> tuple[str, ...]:
        """Names of the failed checks."""
        return tuple(c.name for c in self.checks)


def _cluster_regex(fqdn: str) -> str:
    return "outbound\\\\|[0-9]+\\\\|[^|]*\\\\|" + fqdn.replace(".", "\\\\.")


def _cluster_selector(metric: str, fqdns: Sequence[str], base: dict[str, str]) -> str:
    regex = "|".join(_cluster_regex(f) for f in fqdns)
    extra = "".join(f',{k}="{v}"' for k, v in sorted(base.items()))
    return " or ".join(f'{metric}{{{label}=~"{regex}"{extra}}}' for label in ("cluster_name", "envoy_cluster_name"))


class Scenario:
    """Everything one scenario test needs, and the record of what it did.

    Args:
        nodeid: The test's node id.
        title: The claim, in one line (the test docstring's first line).
        description: More about the claim (the rest of the docstring).
        mesh: The mesh backend.
        settings: Resolved plugin settings.
        policies: The test's policy fixture object.
        chaos: The test's chaos fixture object.
        load: The test's load fixture object.
        report_dir: Where the record and HTML are written.
    """

    def __init__(
        self,
        *,
        nodeid: str,
        title: str,
        description: str,
        mesh: MeshBackend,
        settings: MeshSettings,
        policies: MeshPolicies,
        chaos: Chaos,
        load: LoadDriver,
        report_dir: Path,
        run_id: str = "",
    ) -> None:
        self.mesh = mesh
        self.settings = settings
        self.policies = policies
        self.chaos = chaos
        self.load = load
        self.report_dir = report_dir
        self.started_at = time.time()
        self.services: list[str] = []
        self.record = ScenarioRecord(nodeid=nodeid, title=title, description=description, started_at=self.started_at)
        self.record.report_path = f"{report_stem(nodeid)}.html"
        self.record.context = {
            **mesh.describe(),
            "mesh_context": mesh.context,
            "istio_version": str(mesh.istio_version),
            "seed": settings.seed,
            "profile": settings.profile,
            "confidence": settings.confidence,
            "run_id": run_id,
        }
        self._reasons: list[str] = []
        self.declared = Declarations()
        # One clock for the scenario and its fixtures, so the bench can say where the time went.
        self.timings = Timings()
        policies.timings = chaos.timings = load.timings = self.timings
        # Counters are diffed from a scrape taken after the scenario began and before any of its traffic,
        # so the tail of an earlier test's traffic never leaks into this window.
        from pytest_meshcheck.metrics.prom import Prom

        baseline = Prom(mesh.prometheus_url, base_labels=mesh.client_proxy_labels)
        with self.timings.measure(SCRAPE_START):
            self.window_start = baseline.wait_scraped_after(self.started_at, mesh.client_proxy_labels, timeout=15.0)

    # ------------------------------------------------------------------ set-up helpers

    @property
    def confidence(self) -> float:
        """Confidence level of every statistical check."""
        return 1 - self.settings.alpha

    @property
    def report_file(self) -> Path:
        """Where this scenario's HTML report is written."""
        return self.report_dir / self.record.report_path

    def target(self, *services: str) -> None:
        """Name the services under test (their clusters' counters go into the report)."""
        for s in services:
            name = self.mesh.topology.service(s).name
            if name not in self.services:
                self.services.append(name)

    def effective(self, service: str, *, subset: str | None = None, route: int | None = None) -> EffectivePolicy:
        """The policy Envoy enforces on calls to ``service`` now, resolved as istiod would."""
        from pytest_meshcheck.expect import effective_policy

        self.target(service)
        return effective_policy(
            self.mesh.policies, self.mesh.topology, service, subset=subset, route=route, istio=self.mesh.istio_version
        )

    def explain(self, reasons: Iterable[Reason | str]) -> list[str]:
        """Remember the reasons behind the expectation (they go into messages and the report)."""
        lines = [str(r) for r in reasons]
        for line in lines:
            if line not in self._reasons:
                self._reasons.append(line)
        return lines

    # ------------------------------------------------------------------ declare, then verify

    def apply(
        self, policies: PolicySet | str | Path, *, builtin: bool = True, time_scale: float | None = None
    ) -> PolicySet:
        """Apply the scenario's policies (replaced by ``--mesh-policies`` when ``builtin``); see ``MeshPolicies``."""
        return self.policies.apply(policies, builtin=builtin, time_scale=time_scale)

    def inject(self, service: str, fault: Fault) -> None:
        """Declare a fault at ``service``'s instances; it is injected by :meth:`verify`, and always reverted."""
        self.target(service)
        self.declared.faults.append((self.mesh.topology.service(service).name, fault))

    def drive(
        self, service: str, load: LoadShape | None = None, *, headers: dict[str, str] | None = None, path: str = "/"
    ) -> None:
        """Declare the load: a :class:`ClosedLoop` (its size planned from the checks) or an :class:`OpenLoop`."""
        self.target(service)
        name = self.mesh.topology.service(service).name
        self.declared.drive = Drive(name, load or ClosedLoop(), headers, path)

    def expect_success_ratio(
        self,
        *,
        at_least: float | None = None,
        at_most: float | None = None,
        about: float | None = None,
        delta: float | None = None,
    ) -> None:
        """Claim the share of 2xx answers; ``delta`` is the smallest violation the check must catch."""
        alternative, value = bounds(at_least, at_most, about)
        word = {"at-least": "at least", "at-most": "at most", "two-sided": "about"}[alternative]
        self._expect_rate(f"claim: success ratio {word} {value:.2%}", "claim", alternative, value, delta, "success")

    def expect_status_share(
        self,
        status: int,
        *,
        at_least: float | None = None,
        at_most: float | None = None,
        about: float | None = None,
        delta: float | None = None,
    ) -> None:
        """Claim the share of answers with ``status``."""
        alternative, value = bounds(at_least, at_most, about)
        word = {"at-least": "at least", "at-most": "at most", "two-sided": "about"}[alternative]
        self._expect_rate(
            f"claim: share of {status} answers {word} {value:.2%}",
            "claim",
            alternative,
            value,
            delta,
            f"status:{status}",
            status_share(status),
        )

    def expect_share(
        self,
        name: str,
        count: Counter,
        *,
        at_least: float | None = None,
        at_most: float | None = None,
        about: float | None = None,
        delta: float | None = None,
        model: float | None = None,
        of_requests: float = 1.0,
    ) -> None:
        """Claim any share of requests: ``count(result)`` gives (requests meeting it, requests counted).

        ``model`` is the model's value for the active policy, when a ``predict_*`` function gives one: the
        check is then planned to fail when the model says the claim cannot hold. ``of_requests`` is the
        share of all requests that ``count`` counts (such as 0.3 for the retried ones), so the sample is
        planned for the denominator, not for every request.
        """
        alternative, value = bounds(at_least, at_most, about)
        if not 0.0 < of_requests <= 1.0:
            raise MeshcheckError(f"{name}: of_requests={of_requests!r} must be a share in (0, 1]")
        measure = f"custom:{name}" if model is None else f"given:{model!r}"
        self._expect_rate(f"claim: {name}", "claim", alternative, value, delta, measure, count, of_requests)

    def expect_model_consistency(self, *, delta: float | None = None) -> None:
        """The success ratio agrees with the model's prediction for the active policy (two-sided)."""
        self._expect_rate(
            "model: success ratio predicted from the policy", "model", "two-sided", None, delta, "success"
        )

    def expect_counter(
        self,
        metric: str,
        *,
        equals: float | str | None = None,
        at_least: float | None = None,
        at_most: float | None = None,
        role: Role = "evidence",
    ) -> None:
        """An Envoy counter's increase (read through Prometheus) equals a number or a client-side count.

        ``metric`` is a full name or an ``envoy_cluster_`` suffix such as ``upstream_rq_retry``. ``equals``
        may name a client-side count: ``client_retries``, ``overloaded``, ``requests``, ``successes``,
        ``aborted``, ``not_aborted``.
        """
        self.declared.add(CounterExpectation(metric, equals, at_least, at_most, role))

    def expect_every_request(
        self, *, status: int | None = None, max_attempts: int | None = None, attempts: int | None = None
    ) -> None:
        """An exact claim about every request: its final ``status`` and its upstream tries."""
        self.declared.add(EveryRequest(status, max_attempts, attempts))

    def expect_latency(
        self,
        *,
        at_most: float | None = None,
        at_least: float | None = None,
        percentile: float | None = None,
        slack: float = 0.0,
    ) -> None:
        """An exact claim on latency, in seconds: every request (or the ``percentile``) ends within the bounds.

        ``slack`` is the scheduling noise allowed above ``at_most`` (two shared cores: the load generator and
        Envoy compete for them); it is stated in the check. A timeout never fires early, so ``at_least`` has
        no slack.
        """
        if at_most is None and at_least is None:
            raise MeshcheckError("expect_latency needs at_most= and/or at_least= (seconds)")
        self.declared.add(LatencyExpectation(at_most, at_least, percentile, slack))

    def expect_ejection(
        self, *, after_errors: int | None = None, within: float | None = None, instances: int | None = None
    ) -> None:
        """A claim on outlier ejection of the faulted instances.

        ``after_errors``: the fewest errors a faulted instance served before Envoy ejected it, exactly, on the
        attempts Envoy sent it before its EJECT event (:meth:`errors_before_ejection`; at the instance where the
        context has no event log; the fewest because a busy main thread can eject one instance late).
        ``within``: after this many seconds of an :class:`OpenLoop` load, no request reaches a faulted
        instance (the load runs in two phases).
        ``instances``: at least this many ejections were enforced (Envoy's counter). Keep the load shorter
        than ``baseEjectionTime``, or an instance returns and serves again.
        """
        if after_errors is None and within is None and instances is None:
            raise MeshcheckError("expect_ejection needs after_errors=, within= and/or instances=")
        self.declared.add(EjectionExpectation(after_errors, within, instances))

    def expect_overflow(self, *, equals: int | None = None, at_least: int | None = None) -> None:
        """A claim on ``503 UO`` overflow answers; Envoy's overflow counters must agree with them exactly."""
        if equals is None and at_least is None:
            raise MeshcheckError("expect_overflow needs equals= (such as 0) or at_least= (such as 1)")
        self.declared.add(OverflowExpectation(equals, at_least))

    def _expect_rate(
        self,
        name: str,
        role: Role,
        alternative: str,
        value: float | None,
        delta: float | None,
        measure: str,
        count: Counter = success,
        of_requests: float = 1.0,
    ) -> None:
        if delta is not None and not 0.0 < delta < 1.0:
            raise MeshcheckError(f"{name}: delta={delta!r} must be in (0, 1), such as 0.05")
        self.declared.add(
            RateExpectation(name, role, alternative, value, delta, measure, count, of_requests)  # type: ignore[arg-type]
        )

    def plan(self) -> ScenarioPlan:
        """The model's prediction and every planned check, without sending traffic."""
        from pytest_meshcheck.harness.verify import plan

        return plan(self, self.declared)

    def verify(self) -> LoadResult:
        """Predict, plan, inject, drive and decide every declared check, once.

        Called automatically when the test function returns with declarations still pending.

        Raises:
            ScenarioFailed: A claim or model check failed or was inconclusive (all of them are listed).
        """
        __tracebackhide__ = True
        from pytest_meshcheck.harness.verify import verify

        return verify(self, self.declared)

    # ------------------------------------------------------------------ checks

    def _fail(self, checks: Sequence[CheckRecord], messages: Sequence[str]) -> ScenarioFailed:
        reasons = [r for c in checks for r in c.reasons] or self._reasons
        policy_lines = "\n    ".join(dict.fromkeys(reasons)) or "(none recorded)"
        pairs = zip(checks, messages, strict=True)
        details = "\n  ".join(m if m.startswith(c.name) else f"{c.name}: {m}" for c, m in pairs)
        text = (
            f"{self.record.title}\n  {details}\n"
            f"  policy lines and defaults involved:\n    {policy_lines}\n"
            f"  report: {self.report_file}"
        )
        self.record.message = text
        return ScenarioFailed(text, tuple(checks))

    def _add(self, check: CheckRecord) -> CheckRecord:
        self.record.checks.append(check)
        return check

    def raise_failures(self, failed: Sequence[CheckRecord]) -> None:
        """Raise one :class:`ScenarioFailed` naming every failed check, if there is any."""
        __tracebackhide__ = True
        if failed:
            raise self._fail(failed, [c.detail + (f"; {c.detects}" if c.detects else "") for c in failed])

    def _rate_record(self, planned: PlannedRate, decision: RateDecision, method: str, note: str = "") -> CheckRecord:
        e = planned.expectation
        model = "" if planned.model_value is None else f"; model {planned.model_value:.4%}"
        detail = (
            decision.summary + model + (f"; {planned.note}" if planned.note else "") + (f"; {note}" if note else "")
        )
        return self._add(
            CheckRecord(
                name=e.name,
                passed=decision.passed,
                expected=planned.rule.expected,
                observed=decision.observed,
                interval=list(decision.interval),
                n=decision.n,
                confidence=1 - planned.rule.alpha,
                method=method,
                unit="ratio",
                reasons=self.explain([]) or list(self._reasons),
                detail=detail,
                role=e.role,
                alternative=planned.rule.alternative,
                outcome=decision.outcome,
                alpha=decision.alpha,
                beta=decision.beta,
                delta=planned.rule.delta,
                detects=decision.detects,
            )
        )

    def decide_rate(self, planned: PlannedRate, successes: int, n: int) -> list[CheckRecord]:
        """Decide a planned rate on a fixed sample; return it in a list when it did not pass."""
        from pytest_meshcheck.verdict.power import decide

        if n == 0:
            # Nothing to judge (no retries happened, say): never a pass.
            check = self._add(
                CheckRecord(
                    name=planned.expectation.name,
                    passed=False,
                    expected=planned.rule.expected,
                    n=0,
                    method="exact binomial",
                    reasons=list(self._reasons),
                    role=planned.expectation.role,
                    alternative=planned.rule.alternative,
                    outcome="inconclusive",
                    detail=f"no requests to judge the {planned.rule.what} on: inconclusive, not a pass",
                )
            )
            return [check]
        # The region always comes from the claim at alpha; a refutation plan only made the sample larger.
        check = self._rate_record(planned, decide(planned.rule, successes, n), "exact binomial")
        return [] if check.passed else [check]

    def decide_anytime(self, planned: PlannedRate, successes: int, n: int) -> list[CheckRecord]:
        """Decide a rate on a sample whose size a sequential test chose: a confidence sequence, valid anyway.

        The claim holds while the level-``1 - alpha`` confidence sequence still reaches a rate that holds it;
        it failed when the sequence lies beyond ``delta``, and is inconclusive in between.
        """
        from pytest_meshcheck.verdict.anytime import confidence_sequence
        from pytest_meshcheck.verdict.power import decide

        rule = planned.rule
        fixed = decide(rule, successes, n)
        low, high = confidence_sequence(successes, n, rule.alpha)
        below = rule.alternative in ("at-least", "two-sided") and high < rule.expected
        above = rule.alternative in ("at-most", "two-sided") and low > rule.expected
        outcome: RateOutcome = "passed"
        if below or above:
            broken = (below and high < rule.expected - rule.delta) or (above and low > rule.expected + rule.delta)
            outcome = "failed" if broken else "inconclusive"
        decision = replace(fixed, outcome=outcome, interval=(low, high))
        note = "sample size chosen by the sequential test: decided with a confidence sequence (anytime-valid)"
        check = self._rate_record(planned, decision, "confidence sequence", note)
        return [] if check.passed else [check]

    def sequential_claim(
        self, drive: Drive, concurrency: int, planned: PlannedRate, max_requests: int
    ) -> tuple[LoadResult, tuple[PlannedRate, object]]:
        """Drive closed-loop batches until Wald's SPRT (Ville's bounds) decides ``planned`` (``--mesh-sequential``)."""
        from pytest_meshcheck.harness.verify import SEQUENTIAL_BATCH, ordered_outcomes
        from pytest_meshcheck.load import LoadResult
        from pytest_meshcheck.verdict import SequentialTest

        rule = planned.rule
        direction: Direction = "below" if rule.alternative == "at-least" else "above"
        p1 = rule.expected - rule.delta if direction == "below" else rule.expected + rule.delta
        beta = rule.beta
        if planned.refutation is not None:
            # The model says the claim cannot hold: test against the model's rate, missing it at most alpha.
            p1, beta = (planned.model_value or p1), rule.alpha
        tolerance = abs(rule.expected - p1)
        test = SequentialTest(
            rule.expected,
            tolerance,
            direction=direction,
            alpha=rule.alpha,
            beta=beta,
            max_n=max_requests,
            what=rule.what,
        )
        results: list[LoadResult] = []
        while test.decision == "continue":
            batch = min(max(SEQUENTIAL_BATCH, 4 * concurrency), max_requests - test.n)
            result = self.load.closed(
                drive.service, concurrency=concurrency, requests=batch, path=drive.path, headers=drive.headers
            )
            results.append(result)
            test.update_many(ordered_outcomes(result))
        return LoadResult.concat(results), (planned, test)

    def record_sequential(self, planned: PlannedRate, test: object) -> list[CheckRecord]:
        """Record the SPRT's decision of a claim; return it in a list when it did not pass."""
        from pytest_meshcheck.verdict import SequentialTest

        assert isinstance(test, SequentialTest)
        rule = planned.rule
        decision = test.decision
        outcome = {"pass": "passed", "fail": "failed"}.get(decision, "inconclusive")
        v = test.verdict()
        check = self._add(
            CheckRecord(
                name=planned.expectation.name,
                passed=outcome == "passed",
                expected=rule.expected,
                observed=v.observed,
                interval=[v.interval.low, v.interval.high] if v.interval else None,
                n=test.n,
                confidence=1 - rule.alpha,
                method="sprt",
                reasons=list(self._reasons),
                detail=f"{v.detail}; fixed-sample plan was {planned.n_needed} requests",
                role=planned.expectation.role,
                alternative=rule.alternative,
                outcome=outcome,  # type: ignore[arg-type]
                alpha=test.alpha,
                beta=test.beta,
                delta=rule.delta,
                detects=f"would have caught a {rule.what} of {test.alternatives[0]:.4%} with "
                f"{(1 - test.beta) * 100:g} % probability (SPRT, Ville's bounds)",
            )
        )
        return [] if check.passed else [check]

    def check_rate(
        self,
        name: str,
        successes: int,
        n: int,
        expected: float,
        *,
        alternative: str = "two-sided",
        delta: float | None = None,
        role: Role = "claim",
        reasons: Iterable[Reason | str] = (),
    ) -> CheckRecord:
        """Decide a rate on a sample you collected yourself (the declarative form plans it for you).

        The rule uses the run's alpha and beta and ``delta`` (profile-scaled); plan ``n`` with
        :meth:`requests_for` first, or the record says how little the check could detect.

        Raises:
            ScenarioFailed: The rate is off the claim (failed, or inconclusive).
        """
        __tracebackhide__ = True
        from pytest_meshcheck.harness.declare import success
        from pytest_meshcheck.verdict.power import decide

        self.explain(reasons)
        e = RateExpectation(name, role, alternative, expected, delta, "custom", success)  # type: ignore[arg-type]
        planned = plan_rate(
            e, expected, None, alpha=self.settings.alpha, beta=self.settings.beta, delta_scale=self.delta_scale
        )
        check = self._rate_record(planned, decide(planned.rule, successes, n), "exact binomial")
        self.raise_failures([] if check.passed else [check])
        return check

    def requests_for(self, expected: float, *, alternative: str = "two-sided", delta: float | None = None) -> int:
        """Requests a rate check needs to meet the run's alpha and beta at ``delta`` (profile-scaled)."""
        from pytest_meshcheck.harness.declare import success

        e = RateExpectation("rate", "claim", alternative, expected, delta, "custom", success)  # type: ignore[arg-type]
        return plan_rate(
            e, expected, None, alpha=self.settings.alpha, beta=self.settings.beta, delta_scale=self.delta_scale
        ).n_needed

    @property
    def delta_scale(self) -> float:
        """The profile's scale on every delta: ``smoke`` detects coarser violations, ``nightly`` finer ones."""
        return 1.0 / math.sqrt(self.settings.scale)

    def decide_value(
        self,
        name: str,
        observed: float,
        *,
        expected: float | None = None,
        at_most: float | None = None,
        at_least: float | None = None,
        unit: str = "count",
        role: Role = "claim",
        reasons: Iterable[Reason | str] = (),
        detail: str = "",
    ) -> list[CheckRecord]:
        """Record an exact check; return it in a list when it did not hold (see :meth:`check_value`)."""
        passed = True
        rule: list[str] = []
        if expected is not None:
            passed &= math.isclose(observed, expected, rel_tol=1e-9, abs_tol=1e-9)
            rule.append(f"= {expected:g}")
        if at_most is not None:
            passed &= observed <= at_most
            rule.append(f"<= {at_most:g}")
        if at_least is not None:
            passed &= observed >= at_least
            rule.append(f">= {at_least:g}")
        shown = expected if expected is not None else (at_most if at_most is not None else at_least)
        verdict = f"observed {observed:g} {unit}, expected {' and '.join(rule)}"
        check = self._add(
            CheckRecord(
                name=name,
                passed=passed,
                expected=shown,
                observed=observed,
                method="exact",
                unit=unit,
                reasons=self.explain(reasons),
                detail=verdict + (f"; {detail}" if detail else ""),
                role=role,
                alternative="exact",
                outcome="passed" if passed else "failed",
            )
        )
        return [] if passed else [check]

    def check_value(
        self,
        name: str,
        observed: float,
        *,
        expected: float | None = None,
        at_most: float | None = None,
        at_least: float | None = None,
        unit: str = "count",
        role: Role | None = None,
        reasons: Iterable[Reason | str] = (),
        detail: str = "",
    ) -> CheckRecord:
        """An exact check: ``observed`` equals ``expected`` or lies within the given bounds.

        ``role`` defaults from the name: ``claim: ...`` is a claim, ``model: ...`` a model check.

        Raises:
            ScenarioFailed: It does not.
        """
        __tracebackhide__ = True
        role = role or ("claim" if name.startswith("claim") else "model" if name.startswith("model") else "evidence")
        failed = self.decide_value(
            name,
            observed,
            expected=expected,
            at_most=at_most,
            at_least=at_least,
            unit=unit,
            role=role,
            reasons=reasons,
            detail=detail,
        )
        self.raise_failures(failed)
        return self.record.checks[-1]

    def require_chaos(self, *handles: FaultHandle) -> None:
        """Prove at the destination that every fault hit at its declared rate.

        The share of requests each fault hit is checked against its rate (exactly for a rate of 1, else a
        two-sided rate check at the run's alpha); a fault that missed is an error, never a pass.

        Raises:
            ChaosNotEffective: The fault injected nothing, or not at its rate.
        """
        __tracebackhide__ = True
        from pytest_meshcheck.errors import ChaosNotEffective
        from pytest_meshcheck.verdict.power import RateRule, decide

        for h in handles:
            proof = h.require_effective()
            if not proof:
                continue
            injected, served = sum(p.injected for p in proof), sum(p.served for p in proof)
            rate = float(h.spec.get("probability", 1.0))
            per_instance = ", ".join(f"{p.instance} {p.injected}/{p.served}" for p in proof)
            name = f"chaos live: {h.kind} on {h.service} at {rate:.0%}"
            limit = h.spec.get("limit")
            if rate >= 1.0 and limit is not None:
                # Each instance fails its first ``limit`` requests, then serves: exactly min(served, limit).
                due_per_instance = [min(p.served, int(limit)) for p in proof]
                due = sum(due_per_instance)
                held = all(p.injected == d for p, d in zip(proof, due_per_instance, strict=True))
                name = f"chaos live: {h.kind} on {h.service}, the first {limit} requests of each instance"
                check = CheckRecord(
                    name=name,
                    passed=held,
                    expected=float(due),
                    observed=float(injected),
                    n=served,
                    method="exact",
                    unit="count",
                    detail=f"each instance failed exactly its first min(served, {limit}) requests (faulted/served): "
                    f"{per_instance}",
                    role="evidence",
                    alternative="exact",
                    outcome="passed" if held else "error",
                )
            elif rate >= 1.0:
                held = injected == served
                detail = f"every request served was faulted: {per_instance}"
                check = CheckRecord(
                    name=name,
                    passed=held,
                    expected=1.0,
                    observed=injected / served if served else None,
                    n=served,
                    method="exact",
                    detail=detail,
                    role="evidence",
                    alternative="exact",
                    outcome="passed" if held else "error",
                )
            else:
                d = decide(
                    RateRule(
                        rate,
                        "two-sided",
                        min(0.1, rate, 1 - rate),
                        self.settings.alpha,
                        0.05,
                        what="share of requests faulted",
                    ),
                    injected,
                    served,
                )
                held = d.outcome == "passed"
                check = CheckRecord(
                    name=name,
                    passed=held,
                    expected=rate,
                    observed=d.observed,
                    interval=list(d.interval),
                    n=served,
                    confidence=1 - self.settings.alpha,
                    method="exact binomial",
                    unit="ratio",
                    detail=f"{d.summary}; {per_instance}",
                    role="evidence",
                    alternative="two-sided",
                    outcome="passed" if held else "error",
                    alpha=d.alpha,
                    beta=d.beta,
                    delta=d.rule.delta,
                    detects=d.detects,
                )
            self._add(check)
            if not held:
                raise ChaosNotEffective(
                    f"chaos not effective: {h.kind} fault at {rate:.0%} on {h.service} hit {injected} of {served} "
                    f"requests ({check.detail}); the verdict would not be about the declared fault, so the "
                    "scenario is an error, not a pass"
                )

    def mesh_response_flags(self, service: str) -> dict[str, int] | None:
        """Response flags of the caller's sidecar for ``service`` since the scenario began (``None`` if unknown)."""
        with self.timings.measure(LOG_FLAGS):
            return self.mesh.response_flags(service, self.window_start, time.time())

    @staticmethod
    def floor_latencies(result: LoadResult) -> tuple[np.ndarray, str]:
        """Each request's latency for a lower bound ("not before a timeout"): the load generator's.

        Envoy arms a timer from its event loop's cached time (libevent's, taken when the loop woke up), and
        its ``%DURATION%`` starts later, on the real clock, when the request is decoded. On a busy 2-core
        machine the gap reaches tens of ms, so Envoy can log less than the timeout it enforced (a flake-bench
        run: 2.983 s for a 3 s timeout). The loop woke up after the generator sent the request, and the
        generator reads the answer after Envoy sent it, so the generator's latency is never below the
        timeout. Ceilings are judged on Envoy's clock instead (:meth:`mesh_latencies`).

        Returns:
            Latencies in seconds, one per request, and a phrase naming their source for check details.
        """
        return result.latencies, (
            "the load generator's latencies: a lower bound holds on its clock, which starts before Envoy's "
            "timer and stops after it (Envoy's own duration can read short by its event loop's cached time)"
        )

    def mesh_latencies(self, service: str, result: LoadResult) -> tuple[np.ndarray, str]:
        """Each request's latency on the mesh's clock when the context has it, else the load generator's.

        A timeout is the mesh's: Envoy's own ``%DURATION%`` of each request (the caller's sidecar access
        log) is what it enforced. The load generator's latency adds its own scheduling, which on a busy
        2-core machine has been 0.29 s over a 1.6 s route timeout that Envoy kept to the millisecond.

        Returns:
            Latencies in seconds, one per request, and a phrase naming their source for check details.
        """
        start = result.started_wall - LOG_STAMP_SLACK
        with self.timings.measure(LOG_FLAGS):
            durations = self.mesh.request_durations(service, start, result.started_wall + result.elapsed)
        client = result.latencies
        slowest = f"{float(client.max()):.3f} s" if len(client) else "-"
        if durations is not None and len(durations) == result.count:
            return np.asarray(durations, dtype=np.float64), (
                f"Envoy's duration of each request (caller's sidecar access log); the load generator measured "
                f"{slowest} for the slowest, its own scheduling included"
            )
        why = (
            "this context does not read the sidecar's access log"
            if durations is None
            else (f"the sidecar logged {len(durations)} of {result.count} requests")
        )
        return client, f"the load generator's latencies ({why})"

    def errors_before_ejection(self, service: str, end: float | None = None) -> dict[str, EjectionCount] | None:
        """Per instance of ``service`` Envoy ejected since the scenario began, the errors it served before.

        Judged from Envoy's own records: the first EJECT event of each instance, and the per-attempt log of the
        sidecar that ejected it. Errors on attempts dispatched before the ejection are what the detector counted;
        attempts dispatched after it (the ejection not yet on the worker's load balancer) are listed apart.

        Args:
            service: Service name.
            end: Unix time the window ends (default now); both logs are read once Envoy flushed them.

        Returns:
            :class:`~pytest_meshcheck.metrics.outlier_events.EjectionCount` per ejected instance (instances never
            ejected are absent), or ``None`` when the context has no outlier event log or no per-attempt log
            (a cluster): a check then counts at the instance and says so.
        """
        from pytest_meshcheck.metrics.outlier_events import count_before_ejection
        from pytest_meshcheck.report.sample_requests import AttemptSource

        end = end if end is not None else time.time()
        with self.timings.measure(LOG_FLAGS):
            events = self.mesh.outlier_events(service, self.window_start, end)
            if events is None or not isinstance(self.mesh, AttemptSource):
                return None
            records = self.mesh.attempt_records(self.window_start, end)
        return count_before_ejection(events, records)

    # ------------------------------------------------------------------ Prometheus

    def prom(self, start: float | None = None, end: float | None = None) -> Prom:
        """A Prometheus client bound to ``[start, end]`` (default: the scenario so far) and the client proxy.

        It first waits for a scrape taken after ``end``, so counters read at ``end`` are complete.
        """
        from pytest_meshcheck.metrics.prom import Prom

        end = end if end is not None else time.time()
        prom = Prom(
            self.mesh.prometheus_url, start=start or self.window_start, base_labels=self.mesh.client_proxy_labels
        )
        with self.timings.measure(SCRAPE_END):
            prom.end = prom.wait_scraped_after(end, self.mesh.client_proxy_labels, timeout=15.0)
        return prom

    def sleep(self, seconds: float, why: str) -> None:
        """A fixed wait that physics requires, such as Envoy's ejection merge window; the bench reports it."""
        self.timings.sleep(seconds, why)

    def cluster_increase(self, metric: str, service: str, prom: Prom) -> float:
        """Increase of an ``envoy_cluster_*`` counter over every cluster (and subset) of ``service``."""
        fqdn = self.mesh.topology.service(service).fqdn
        return prom.increase(_cluster_selector(metric, [fqdn], prom.base_labels))

    def wait_for_gauge(self, metric: str, service: str, at_least: float, *, timeout: float = 10.0) -> float:
        """Wait until an ``envoy_cluster_*`` gauge of ``service`` reaches ``at_least`` in Prometheus.

        Waits on evidence (each fresh scrape), not a fixed sleep. Returns the last value read, which is
        below ``at_least`` when ``timeout`` passed first: the caller's check then fails on it.
        """
        return self._wait_gauge(
            metric, service, lambda: self.prom(self.window_start, time.time()), at_least, None, timeout
        )

    def _wait_gauge(
        self,
        metric: str,
        service: str,
        fresh_prom: Callable[[], Prom],
        at_least: float | None,
        at_most: float | None,
        timeout: float,
    ) -> float:
        fqdn = self.mesh.topology.service(service).fqdn
        deadline = time.monotonic() + timeout
        while True:
            with self.timings.measure(SCRAPE_GAUGE, absorb=True):
                prom = fresh_prom()
                value = prom.value(f"sum({_cluster_selector(metric, [fqdn], prom.base_labels)})")
            reached = (at_least is None or value >= at_least) and (at_most is None or value <= at_most)
            if reached or time.monotonic() >= deadline:
                return value

    def hop_prom(self, caller: str, end: float | None = None) -> Prom:
        """A Prometheus client over the scenario so far, bound to the sidecars of ``caller``'s pods.

        Those sidecars carry the hops ``caller`` makes (``order-service`` -> ``payment-service``); it first
        waits for a scrape of them taken after ``end``, so counters read at ``end`` are complete.
        """
        from pytest_meshcheck.metrics.prom import Prom

        end = end if end is not None else time.time()
        labels = self.mesh.caller_proxy_labels(caller)
        prom = Prom(self.mesh.prometheus_url, start=self.window_start, base_labels=labels)
        with self.timings.measure(SCRAPE_END):
            prom.end = prom.wait_scraped_after(end, labels, timeout=15.0, latest=True)
        return prom

    def wait_for_hop_gauge(
        self,
        metric: str,
        caller: str,
        service: str,
        *,
        at_least: float | None = None,
        at_most: float | None = None,
        timeout: float = 10.0,
    ) -> float:
        """Like :meth:`wait_for_gauge`, summed over the sidecars of ``caller``'s pods towards ``service``.

        Waits until the gauge is at least ``at_least`` (or at most ``at_most``) in a fresh scrape; returns the
        last value read, which misses the bound when ``timeout`` passed first.
        """
        return self._wait_gauge(metric, service, lambda: self.hop_prom(caller), at_least, at_most, timeout)

    # ------------------------------------------------------------------ recording

    def on_load(self, phase: LoadPhase) -> None:
        """Listener for the load fixture: summarise each phase into the record."""
        r = phase.result
        pct = r.latency_percentiles([50, 90, 99]) if r.count else {}
        lat = r.latencies
        self.target(phase.service)
        self.record.load.append(
            LoadSummary(
                profile={"service": phase.service, "path": phase.path, **_profile_dict(phase.profile)},
                started_at=phase.started_at,
                ended_at=phase.ended_at,
                requests=r.count,
                status_counts={str(k): v for k, v in sorted(r.status_histogram().items())},
                latency_ms={
                    **{f"p{int(k)}": float(v) * 1000 for k, v in pct.items()},
                    "max": float(np.nanmax(lat)) * 1000 if r.count else 0.0,
                },
                instance_counts={str(k): v for k, v in sorted(r.instance_counts().items(), key=lambda kv: str(kv[0]))},
                attempt_counts={str(k): v for k, v in sorted(r.attempt_histogram().items(), key=lambda kv: str(kv[0]))},
                overloaded=r.overloaded_count,
                errors=dict(r.error_histogram()),
            )
        )

    def _timeseries(self) -> dict[str, list[float]]:
        ts: dict[str, list[float]] = {"t": [], "requests": [], "success_ratio": [], "p50_ms": [], "p99_ms": []}
        if not self.load.phases:
            return ts
        times: list[np.ndarray[Any, Any]] = []
        oks: list[np.ndarray[Any, Any]] = []
        lats: list[np.ndarray[Any, Any]] = []
        for ph in self.load.phases:
            rec = ph.result.records
            n = ph.result.count
            if n == 0:
                continue
            times.append(ph.result.started_wall + np.asarray(rec.done[:n]))
            status = np.asarray(rec.status[:n])
            oks.append((status >= 200) & (status < 300))
            lats.append(np.asarray(ph.result.latencies[:n]) * 1000.0)
        if not times:
            return ts
        t = np.concatenate(times)
        ok = np.concatenate(oks)
        lat = np.concatenate(lats)
        bucket = np.floor(t).astype(np.int64)
        for b in np.unique(bucket):
            mask = bucket == b
            ts["t"].append(float(b))
            ts["requests"].append(float(mask.sum()))
            ts["success_ratio"].append(float(ok[mask].mean()))
            ts["p50_ms"].append(float(np.percentile(lat[mask], 50)))
            ts["p99_ms"].append(float(np.percentile(lat[mask], 99)))
        return ts

    @property
    def traffic_ended_at(self) -> float:
        """When the scenario's last request ended: the end of its last load phase (else the scenario's end)."""
        return max((p.ended_at for p in self.load.phases), default=self.record.ended_at or time.time())

    def _prom_evidence(self) -> None:
        if not self.services:
            return
        try:
            # The last request ended with the last load phase; a scrape after it is usually already in.
            prom = self.prom(self.window_start, self.traffic_ended_at)
        except Exception as exc:  # evidence is best effort at teardown; the checks already ran
            self.record.metric_deltas["(prometheus unavailable)"] = 0.0
            self.record.message = self.record.message or f"Prometheus evidence unavailable: {exc}"
            return
        from pytest_meshcheck.metrics.prom import selector

        fqdns = [self.mesh.topology.service(s).fqdn for s in self.services]
        # One query at each end of the window for every counter: 34 round trips to Prometheus were about
        # 0.1 s of every scenario.
        exprs = {metric: _cluster_selector(metric, fqdns, prom.base_labels) for metric in REPORT_COUNTERS}
        for metric in ("envoy_http_fault_aborts_injected", "envoy_http_fault_delays_injected"):
            exprs[metric] = selector(metric, prom.base_labels)
        self.record.metric_deltas.update(prom.increases(exprs))
        start, end = self.started_at - 1, self.record.ended_at + 1
        # One range query for every series, each sum tagged with its name: one round trip instead of four.
        tagged = " or ".join(
            f'label_replace(sum({_cluster_selector(metric, fqdns, prom.base_labels)}), "meshcheck_series", '
            f'"{name}", "", "")'
            for name, (metric, _) in REPORT_SERIES.items()
        )
        by_name = {s.labels.get("meshcheck_series"): s.points for s in prom.range(tagged, start, end, 1.0)}
        for name, (_, is_counter) in REPORT_SERIES.items():
            points = by_name.get(name, [])
            if is_counter and points:
                base = points[0][1]
                points = [(t, v - base) for t, v in points]
            self.record.prom_series[name] = [[t, v] for t, v in points]

    def _policy_records(self) -> list[PolicyRecord]:
        out: list[PolicyRecord] = []
        seen: set[tuple[str, str, str]] = set()
        paths = {line.split(" = ")[0].split(" ")[-1] for line in self._reasons}
        for ps in self.policies.applied:
            items: tuple[VirtualService | DestinationRule, ...] = (*ps.virtual_services, *ps.destination_rules)
            for p in items:
                key = (p.kind, p.namespace or "", p.name)
                if key in seen:
                    continue
                seen.add(key)
                src = p.source
                highlight = sorted({line for path, line in src.field_lines.items() if path in paths})
                out.append(PolicyRecord(p.kind, p.name, p.namespace, src.file, src.line, src.text, highlight))
        return out

    def finish(self, outcome: str, *, error: BaseException | None = None, xfail_reason: str = "") -> ScenarioRecord:
        """Complete the record: chaos, policies, series, counters, outcome; then write JSON and HTML."""
        self.record.ended_at = time.time()
        self.record.outcome = outcome  # type: ignore[assignment]
        self.record.xfail_reason = xfail_reason
        for h in self.chaos.handles:
            self.record.chaos.append(
                ChaosRecord(
                    kind=h.kind,
                    service=h.service,
                    instances=list(h.instances),
                    spec=dict(h.spec),
                    applied_at=h.applied_at,
                    reverted_at=h.reverted_at,
                    proof={p.instance: p.as_dict() for p in h.final_proof},
                )
            )
        self.record.policies = self._policy_records()
        from pytest_meshcheck.report.lint_view import scenario_lint_findings

        self.record.lint_findings = scenario_lint_findings(
            self.policies.applied, self.mesh.topology, self.mesh.istio_version
        )
        self.record.timeseries = self._timeseries()
        if error is not None and not self.record.message:
            self.record.message = f"{type(error).__name__}: {error}"
        if outcome == "error" and error is not None:
            import traceback

            self.record.error = {
                "type": type(error).__name__,
                "message": str(error),
                "traceback": "".join(traceback.format_exception(error))[-4000:],
            }
        with self.timings.measure(REPORT_PROM):
            self._prom_evidence()
        # The client's log holds only the scenario's requests, and the last one ended with the last load phase:
        # read it up to then, so the wait for Envoy's log flush runs from the traffic's end, long past by now,
        # not from this moment.
        logged = self.traffic_ended_at
        with self.timings.measure(LOG_FLAGS):
            for svc in self.services:
                for flag, count in (self.mesh.response_flags(svc, self.started_at, logged) or {}).items():
                    self.record.response_flags[flag] = self.record.response_flags.get(flag, 0) + count
        if not self.record.message and outcome == "passed":
            self.record.message = f"{len(self.record.checks)} check(s) held"
        from pytest_meshcheck.report.sample_requests import collect_sample_requests

        # A pod's own calls can outlive the user request that made them (an outer timeout cuts the request
        # while the inner call goes on), so with calls in play the per-attempt logs are read up to now.
        topology = self.mesh.topology
        chained = any(topology.service(s).calls for s in self.services)
        with self.timings.measure(LOG_SAMPLES):
            self.record.sample_requests = collect_sample_requests(
                self.mesh, self.started_at, self.record.ended_at if chained else logged
            )
        from pytest_meshcheck.report import write_scenario_report
        from pytest_meshcheck.report.graph import collect_graph

        with self.timings.measure(REPORT_PROM):
            self.record.graph = collect_graph(self)
        with self.timings.measure(REPORT_WRITE):
            write_scenario_report(self.record, self.report_dir)
        return self.record


def _profile_dict(profile: Any) -> dict[str, Any]:
    return {k: getattr(profile, k) for k in ("rate", "concurrency", "duration", "max_requests") if hasattr(profile, k)}


def outcome_of(report: Any, error: BaseException | None) -> tuple[str, BaseException | None, str]:
    """Map the call-phase report to a record outcome, the exception and the xfail reason.

    A meshcheck error raised by the test (a fault that was not effective, Prometheus unreachable) is an
    ``error``: the scenario could not judge the policy. An assertion is a ``failed`` claim.
    """
    from pytest_meshcheck.errors import MeshcheckError

    if report is None:
        return "error", error, ""
    if hasattr(report, "wasxfail"):
        return ("xpassed" if report.passed else "xfailed"), error, str(report.wasxfail)
    if report.passed:
        return "passed", None, ""
    if report.skipped:
        return "skipped", None, ""
    if isinstance(error, MeshcheckError):
        return "error", error, ""
    if error is not None and not isinstance(error, AssertionError):
        return "error", error, ""
    return "failed", error, ""
