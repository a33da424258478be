"""The data of one scenario run, written as JSON beside its HTML report.

Reports are rendered from this record alone, so a record from another machine (CI artifact, a
baseline run) renders the same. Every field is JSON-native; times are unix seconds (float).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

SCHEMA_VERSION = 1
_STEM_MAX = 100


def report_stem(nodeid: str) -> str:
    """File name (without extension) of a scenario's JSON and HTML: the node id, sanitised and capped.

    A capped name gets a short hash of the full node id so two long ids never collide.
    """
    stem = re.sub(r"[^\w.-]+", "_", nodeid).strip("_") or "scenario"
    if len(stem) > _STEM_MAX:
        stem = stem[: _STEM_MAX - 9] + "-" + hashlib.sha1(nodeid.encode()).hexdigest()[:8]
    return stem


Outcome = Literal["passed", "failed", "error", "xfailed", "xpassed", "skipped"]
# What a check is for: the scenario's claim (what the user promised), the model's prediction (what
# Istio's semantics imply for the active policy), or evidence (a fault was live, two counters agree).
CheckRole = Literal["claim", "model", "evidence"]
CheckAlternative = Literal["two-sided", "at-least", "at-most", "exact"]
# ``inconclusive``: the rate is below (or off) what a holding policy gives, but not clearly broken by the
# claim's delta; never a pass. ``error``: the check could not be evaluated (no requests, chaos not live).
CheckOutcome = Literal["passed", "failed", "inconclusive", "error"]


@dataclass
class CheckRecord:
    """One statistical or exact check inside a scenario's verdict.

    Attributes:
        name: What is checked, e.g. ``success ratio`` or ``max latency``.
        passed: Whether it held.
        expected: Predicted value (ratio, seconds, count).
        observed: Measured value.
        interval: Confidence interval of ``observed`` (``[low, high]``), when statistical.
        n: Sample size behind ``observed``.
        confidence: Confidence level of the interval.
        method: How it was decided (``wilson``, ``clopper-pearson``, ``sprt``, ``exact``, ``bound``).
        unit: ``ratio``, ``s``, ``ms``, ``count``.
        reasons: Why the expectation is what it is: the policy fields and defaults involved.
        detail: Free text (a tolerance, a rule).
        role: ``claim``, ``model`` or ``evidence``.
        alternative: ``two-sided``, ``at-least``, ``at-most`` or ``exact``.
        outcome: ``passed``, ``failed``, ``inconclusive`` or ``error`` (``passed`` mirrors it).
        alpha: Planned false-fail rate of a rate check (chance a holding policy fails it).
        beta: Planned miss rate at ``delta`` (chance a policy off by ``delta`` passes it).
        delta: The smallest violation the check is planned to detect.
        detects: What the verdict could detect, in one sentence, such as "would have caught a success
            rate below 97.9 % with 95 % probability".
    """

    name: str
    passed: bool
    expected: float | None = None
    observed: float | None = None
    interval: list[float] | None = None
    n: int | None = None
    confidence: float | None = None
    method: str = ""
    unit: str = "ratio"
    reasons: list[str] = field(default_factory=list)
    detail: str = ""
    role: CheckRole = "evidence"
    alternative: CheckAlternative = "exact"
    outcome: CheckOutcome = "passed"
    alpha: float | None = None
    beta: float | None = None
    delta: float | None = None
    detects: str = ""


def check_role(check: CheckRecord) -> CheckRole:
    """What ``check`` is for: its ``role``, or for a record older than that field, its name's prefix.

    Records written before checks had a role read back with the default ``evidence``; their claim and
    model checks were named ``claim: ...`` and ``model: ...``. This is the only place where a check's
    name is read for its meaning: every report surface asks here.
    """
    if check.role != "evidence":
        return check.role
    name = check.name.strip().lower()
    if name.startswith("claim"):
        return "claim"
    if name.startswith("model"):
        return "model"
    return "evidence"


def check_outcome(check: CheckRecord) -> CheckOutcome:
    """The check's outcome, also for a record older than the ``outcome`` field.

    Such a record reads back with the default ``passed``; its ``passed`` flag is then what decided.
    """
    if check.outcome == "passed" and not check.passed:
        return "failed"
    return check.outcome


@dataclass
class PolicyRecord:
    """A policy under test, with the YAML lines that matter."""

    kind: str
    name: str
    namespace: str | None
    file: str
    line: int
    text: str
    highlight_lines: list[int] = field(default_factory=list)


@dataclass
class ChaosRecord:
    """One fault: what, where, when, and the destination's proof that it happened."""

    kind: str  # error | latency | reset | istio-abort | istio-delay
    service: str
    instances: list[str]
    spec: dict[str, Any]
    applied_at: float
    reverted_at: float | None = None
    proof: dict[str, Any] = field(default_factory=dict)  # per instance: served, faults injected


@dataclass
class LoadSummary:
    """What the load generator sent and saw."""

    profile: dict[str, Any]
    started_at: float
    ended_at: float
    requests: int
    status_counts: dict[str, int]
    latency_ms: dict[str, float]  # p50, p90, p99, max
    instance_counts: dict[str, int] = field(default_factory=dict)
    attempt_counts: dict[str, int] = field(default_factory=dict)
    overloaded: int = 0
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class ScenarioRecord:
    """Everything a report shows about one scenario.

    Attributes:
        nodeid: pytest node id.
        title: One line: what the policy promises.
        description: Longer text: the claim, and why it should hold.
        outcome: pytest outcome.
        message: The failure or error message, or the pass summary.
        checks: The verdict's checks.
        context: ``mesh_context``, ``istio_version``, ``envoy_version``, ``seed``, ``profile``, ``confidence``.
        policies: Policies under test.
        chaos: Faults applied.
        load: Load phases (one per ``load`` call), in order.
        timeseries: Per-second series from the load records: ``t`` (unix seconds) and named value lists
            (``success_ratio``, ``p50_ms``, ``p99_ms``, ``requests``), same length as ``t``.
        prom_series: Prometheus range series by name (``retries``, ``ejections_active``, ``overflow``):
            lists of ``[t, value]``.
        metric_deltas: Envoy counter increases over the scenario window, by metric name.
        response_flags: Access-log response flags (``URX``, ``UO``...) with counts.
        sample_requests: A few user requests (failed, slowest, retried) with every attempt on every hop,
            from the sidecars' per-attempt logs (:mod:`pytest_meshcheck.report.sample_requests`).
        graph: The service graph with each edge's counters over the scenario (:mod:`pytest_meshcheck.report.graph`).
        lint_findings: ``meshcheck lint`` findings of the policies the scenario applied, judged with the run's
            topology and Istio version (:mod:`pytest_meshcheck.report.lint_view`).
        started_at: Scenario start.
        ended_at: Scenario end.
        xfail_reason: For strict expected failures: why the claim cannot hold.
        error: For scenarios that broke before producing data: ``type``, ``message``, ``traceback``.
        report_path: Path of the HTML report, relative to the report directory.
    """

    nodeid: str
    title: str
    description: str = ""
    outcome: Outcome = "passed"
    message: str = ""
    checks: list[CheckRecord] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    policies: list[PolicyRecord] = field(default_factory=list)
    chaos: list[ChaosRecord] = field(default_factory=list)
    load: list[LoadSummary] = field(default_factory=list)
    timeseries: dict[str, list[float]] = field(default_factory=dict)
    prom_series: dict[str, list[list[float]]] = field(default_factory=dict)
    metric_deltas: dict[str, float] = field(default_factory=dict)
    response_flags: dict[str, int] = field(default_factory=dict)
    sample_requests: dict[str, Any] = field(default_factory=dict)
    graph: dict[str, Any] = field(default_factory=dict)
    lint_findings: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = 0.0
    ended_at: float = 0.0
    xfail_reason: str = ""
    error: dict[str, str] = field(default_factory=dict)
    report_path: str = ""
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        """Serialise to JSON text."""
        return json.dumps(asdict(self), indent=1, sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScenarioRecord:
        """Rebuild a record from :meth:`to_json`'s output (unknown keys are ignored)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["checks"] = [CheckRecord(**c) for c in known.get("checks", [])]
        known["policies"] = [PolicyRecord(**p) for p in known.get("policies", [])]
        known["chaos"] = [ChaosRecord(**c) for c in known.get("chaos", [])]
        known["load"] = [LoadSummary(**x) for x in known.get("load", [])]
        return cls(**known)

    @classmethod
    def read(cls, path: Path) -> ScenarioRecord:
        """Read a record written by :meth:`to_json`."""
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
