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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_meshcheck.harness.chaos import Chaos, FaultHandle
from pytest_meshcheck.harness.load import LoadDriver, LoadPhase
from pytest_meshcheck.harness.policies import MeshPolicies
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
    from pytest_meshcheck.load import LoadResult
    from pytest_meshcheck.metrics.prom import Prom
    from pytest_meshcheck.policy.model import DestinationRule, VirtualService
    from pytest_meshcheck.settings import MeshSettings

# Envoy cluster counters summarised in every report (names as Prometheus exposes them).
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
    """A resilience claim did not hold; the message says what was expected, what was seen, and where to look."""


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
        # Counters are diffed from a scrape taken after the scenario began and before any of its traffic,
        # so the tail of an earlier test's traffic never leaks into this window.
        from pytest_meshcheck.metrics.prom import Prom

        baseline = Prom(mesh.prometheus_url, base_labels=mesh.client_proxy_labels)
        self.window_start = baseline.wait_scraped_after(self.started_at, mesh.client_proxy_labels, timeout=15.0)

    # ------------------------------------------------------------------ set-up helpers

    @property
    def confidence(self) -> float:
        """Confidence level of every statistical check."""
        return self.settings.confidence

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

    def requests_for(self, expected: float, tolerance: float) -> int:
        """Requests needed so the interval's half-width is at most the (profile-scaled) tolerance."""
        from pytest_meshcheck.verdict import sample_size

        return sample_size(expected, self.tolerance(tolerance), confidence=self.confidence)

    def tolerance(self, tolerance: float) -> float:
        """The tolerance after the profile's scale: ``smoke`` widens it, ``nightly`` tightens it."""
        return min(0.5, tolerance / math.sqrt(self.settings.scale))

    def explain(self, reasons: Iterable[Reason | str]) -> list[str]:
        """Remember the reasons behind the expectation (they go into messages and the report)."""
        lines = [str(r) for r in reasons]
        for line in lines:
            if line not in self._reasons:
                self._reasons.append(line)
        return lines

    # ------------------------------------------------------------------ checks

    def _fail(self, check: CheckRecord, message: str) -> ScenarioFailed:
        policy_lines = "\n    ".join(check.reasons or self._reasons) or "(none recorded)"
        detail = message if message.startswith(check.name) else f"{check.name}: {message}"
        text = (
            f"{self.record.title}\n  {detail}\n"
            f"  policy lines and defaults involved:\n    {policy_lines}\n"
            f"  report: {self.report_file}"
        )
        self.record.message = text
        return ScenarioFailed(text)

    def _add(self, check: CheckRecord) -> CheckRecord:
        self.record.checks.append(check)
        return check

    def check_rate(
        self,
        name: str,
        successes: int,
        n: int,
        expected: float,
        *,
        tolerance: float = 0.0,
        alternative: str = "two-sided",
        reasons: Iterable[Reason | str] = (),
    ) -> CheckRecord:
        """Check a proportion against the expected rate with a binomial confidence interval.

        Raises:
            ScenarioFailed: The interval excludes ``[expected - tolerance, expected + tolerance]``.
        """
        from pytest_meshcheck.verdict import check_proportion

        tol = self.tolerance(tolerance) if tolerance else 0.0
        verdict = check_proportion(
            successes, n, expected, alternative=alternative, tolerance=tol,  # type: ignore[arg-type]
            confidence=self.confidence, what=name,
        )  # fmt: skip
        check = self._add(
            CheckRecord(
                name=name,
                passed=verdict.passed,
                expected=expected,
                observed=verdict.observed,
                interval=[verdict.interval.low, verdict.interval.high] if verdict.interval else None,
                n=n,
                confidence=self.confidence,
                method=verdict.method,
                unit="ratio",
                reasons=self.explain(reasons),
                detail=f"tolerance ±{tol:.3f}, {alternative}",
            )
        )
        if not verdict.passed:
            raise self._fail(check, verdict.message)
        return check

    def sequential_rate(
        self,
        name: str,
        service: str,
        expected: float,
        *,
        tolerance: float,
        concurrency: int,
        max_requests: int,
        batch: int = 100,
        headers: dict[str, str] | None = None,
        reasons: Iterable[Reason | str] = (),
    ) -> list[LoadResult]:
        """Drive closed-loop batches and decide "success ratio at least ``expected``" with Wald's SPRT.

        The test is declared before the first request (H0: ``expected``; H1: ``expected - tolerance``;
        alpha = beta = 1 - confidence) and stops at the first clear decision, so a clearly healthy or clearly
        broken policy needs far fewer requests than the fixed-sample check. It is one experiment: a failed
        or undecided run is reported as such, never continued or retried.

        Returns:
            The load results of the batches, in order.

        Raises:
            ScenarioFailed: The SPRT accepted H1 (the claim does not hold).
            MeshcheckError: Still undecided after ``max_requests``.
        """
        from pytest_meshcheck.errors import MeshcheckError
        from pytest_meshcheck.verdict import SequentialTest

        tol = self.tolerance(tolerance)
        test = SequentialTest(
            expected, tol, direction="below", confidence=self.confidence, max_n=max_requests, what=name
        )
        results: list[LoadResult] = []
        decision = "continue"
        while decision == "continue":
            result = self.load.closed(service, concurrency=concurrency, requests=batch, headers=headers)
            results.append(result)
            status = np.asarray(result.records.status[: result.count])
            order = np.argsort(np.asarray(result.records.done[: result.count]), kind="stable")
            decision = test.update_many(bool(200 <= s < 300) for s in status[order])
        verdict = test.verdict()
        check = self._add(
            CheckRecord(
                name=name,
                passed=decision == "pass",
                expected=expected,
                observed=verdict.observed,
                interval=[verdict.interval.low, verdict.interval.high] if verdict.interval else None,
                n=test.n,
                confidence=self.confidence,
                method="sprt",
                reasons=self.explain(reasons),
                detail=f"sequential: H0 {expected:.4f} vs H1 {expected - tol:.4f}, decided {decision} after {test.n}",
            )
        )
        if decision == "fail":
            raise self._fail(check, verdict.message)
        if decision != "pass":
            raise MeshcheckError(f"{name}: the sequential test was still undecided after {test.n} requests")
        return results

    def check_value(
        self,
        name: str,
        observed: float,
        *,
        expected: float | None = None,
        at_most: float | None = None,
        at_least: float | None = None,
        unit: str = "count",
        reasons: Iterable[Reason | str] = (),
        detail: str = "",
    ) -> CheckRecord:
        """An exact check: ``observed`` equals ``expected`` or lies within the given bounds.

        Raises:
            ScenarioFailed: It does not.
        """
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
        check = self._add(
            CheckRecord(
                name=name,
                passed=passed,
                expected=shown,
                observed=observed,
                method="exact",
                unit=unit,
                reasons=self.explain(reasons),
                detail=(detail + "; " if detail else "") + "expected " + " and ".join(rule),
            )
        )
        if not passed:
            raise self._fail(check, f"observed {observed:g} {unit}, expected {' and '.join(rule)}")
        return check

    def require_chaos(self, *handles: FaultHandle) -> None:
        """Confirm at the destination that every fault really happened (else :class:`ChaosNotEffective`)."""
        for h in handles:
            proof = h.require_effective()
            if proof:
                self.record.checks.append(
                    CheckRecord(
                        name=f"chaos live: {h.kind} on {h.service}",
                        passed=True,
                        observed=float(sum(p.injected for p in proof)),
                        method="exact",
                        unit="count",
                        detail="faults injected at the destination: "
                        + ", ".join(f"{p.instance} {p.injected}/{p.served}" for p in proof),
                    )
                )

    def mesh_response_flags(self, service: str) -> dict[str, int] | None:
        """Response flags of the caller's sidecar for ``service`` since the scenario began (``None`` if unknown)."""
        flags_for = getattr(self.mesh, "response_flags", None)
        if not callable(flags_for):
            return None
        result: dict[str, int] = flags_for(service, self.window_start, time.time())
        return result

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
        prom.end = prom.wait_scraped_after(end, self.mesh.client_proxy_labels, timeout=15.0)
        return prom

    def cluster_increase(self, metric: str, service: str, prom: Prom) -> float:
        """Increase of an ``envoy_cluster_*`` counter over every cluster (and subset) of ``service``."""
        fqdn = self.mesh.topology.service(service).fqdn
        return prom.increase(_cluster_selector(metric, [fqdn], prom.base_labels))

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

    def _prom_evidence(self) -> None:
        if not self.services:
            return
        try:
            # The last request ended with the last load phase; a scrape after it is usually already in.
            last = max((p.ended_at for p in self.load.phases), default=self.record.ended_at)
            prom = self.prom(self.window_start, last)
        except Exception as exc:  # evidence is best effort at teardown; the checks already ran
            self.record.metric_deltas["(prometheus unavailable)"] = 0.0
            self.record.message = self.record.message or f"Prometheus evidence unavailable: {exc}"
            return
        fqdns = [self.mesh.topology.service(s).fqdn for s in self.services]
        for metric in REPORT_COUNTERS:
            self.record.metric_deltas[metric] = prom.increase(_cluster_selector(metric, fqdns, prom.base_labels))
        for metric in ("envoy_http_fault_aborts_injected", "envoy_http_fault_delays_injected"):
            self.record.metric_deltas[metric] = prom.counter_increase(metric)
        start, end = self.started_at - 1, self.record.ended_at + 1
        for name, (metric, is_counter) in REPORT_SERIES.items():
            series = prom.range(f"sum({_cluster_selector(metric, fqdns, prom.base_labels)})", start, end, 1.0)
            points = series[0].points if series else []
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
                    proof={p.instance: p.as_dict() for p in (h._final or [])},
                )
            )
        self.record.policies = self._policy_records()
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
        self._prom_evidence()
        flags_for = getattr(self.mesh, "response_flags", None)
        if callable(flags_for):
            for svc in self.services:
                for flag, count in flags_for(svc, self.started_at, self.record.ended_at).items():
                    self.record.response_flags[flag] = self.record.response_flags.get(flag, 0) + count
        if not self.record.message and outcome == "passed":
            self.record.message = f"{len(self.record.checks)} check(s) held"
        from pytest_meshcheck.report import write_scenario_report

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
