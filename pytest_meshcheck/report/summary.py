"""The end-of-session terminal table, and the value formatting every report surface shares."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from pytest_meshcheck.error_budget import RUN_ALPHA
from pytest_meshcheck.istio_version import DEFAULT_ISTIO_VERSION
from pytest_meshcheck.report.record import (
    CheckOutcome,
    CheckRecord,
    LoadSummary,
    ScenarioRecord,
    check_outcome,
    check_role,
)

if TYPE_CHECKING:
    from pytest_meshcheck.report.baseline import Regression

VERDICT_LABELS = {
    "passed": "PASSED",
    "failed": "FAILED",
    "inconclusive": "INCONCLUSIVE",
    "error": "ERROR",
    "xfailed": "XFAIL",
    "xpassed": "XPASS",
    "skipped": "SKIPPED",
}
#: Scenario verdicts that mean "the claim was not shown to hold" (``inconclusive`` is never a pass).
NOT_HELD_VERDICTS = frozenset({"failed", "inconclusive", "error", "xpassed"})
CHECK_LABELS: dict[str, str] = {
    "passed": "held",
    "failed": "FAILED",
    "inconclusive": "INCONCLUSIVE",
    "error": "ERROR",
}
_BAD_CHECKS: frozenset[CheckOutcome] = frozenset({"failed", "inconclusive", "error"})


def format_value(value: float | None, unit: str = "ratio") -> str:
    """A check value for people: ratios with 4 decimals (as verdict messages), times with their unit."""
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value:.4f}"
    if unit == "count":
        return f"{value:g}" if float(value).is_integer() else f"{value:.4g}"
    if unit in ("s", "ms"):
        return f"{value:.4g} {unit}"
    return f"{value:.4g} {unit}".rstrip()


def format_interval(check: CheckRecord) -> str:
    """``[low, high] @99%`` in the check's unit, or ``-`` without an interval."""
    if not check.interval or len(check.interval) != 2:
        return "-"
    low, high = (format_value(v, check.unit).split(" ")[0] for v in check.interval)
    unit = "" if check.unit in ("ratio", "count") else f" {check.unit}"
    level = f" @{check.confidence * 100:g}%" if check.confidence else ""
    return f"[{low}, {high}]{unit}{level}"


def format_expected(check: CheckRecord) -> str:
    """The claimed value with its direction: ``>= 0.9750`` (at least), ``<= 0.0100`` (at most), or the value."""
    value = format_value(check.expected, check.unit)
    if check.expected is None:
        return value
    prefix = {"at-least": ">= ", "at-most": "<= "}.get(check.alternative, "")
    return prefix + value


def format_power(check: CheckRecord) -> str:
    """``alpha 0.01, beta 0.05, delta 0.021``: a rate verdict's planned error rates and detectable size.

    Empty for checks without them (exact checks, bounds, records older than these fields).
    """
    parts = [
        f"{name} {value:.2g}" if name != "delta" else f"{name} {value:.4g}"
        for name, value in (("alpha", check.alpha), ("beta", check.beta), ("delta", check.delta))
        if value is not None
    ]
    return ", ".join(parts)


def has_power(check: CheckRecord) -> bool:
    """True for a rate verdict that says what it could detect (``detects``, or its error rates)."""
    return bool(check.detects) or any(v is not None for v in (check.alpha, check.beta, check.delta))


def format_duration(seconds: float) -> str:
    """``850 ms``, ``12.3 s``, ``4m05s`` or ``2h03m``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def headline_check(record: ScenarioRecord) -> CheckRecord | None:
    """The check that states the scenario's claim, shown first wherever a scenario gets one line.

    The claim check (a statistical one first); else a model check (the same preference); else the first
    check (a statistical one first), which is then evidence such as chaos liveness. Roles come from
    :func:`~pytest_meshcheck.report.record.check_role`. Failed and inconclusive checks are listed
    separately (:func:`not_held_checks`), so the headline stays the claim even when something else broke.
    """
    roles = [(check_role(c), c) for c in record.checks]
    claims = [c for role, c in roles if role == "claim"]
    models = [c for role, c in roles if role == "model"]
    for group in (claims, models, record.checks):
        if group:
            statistical = [c for c in group if c.interval]
            return (statistical or group)[0]
    return None


def not_held_checks(record: ScenarioRecord) -> list[CheckRecord]:
    """Every check that failed, was inconclusive or could not be evaluated, in the record's order."""
    return [c for c in record.checks if check_outcome(c) in _BAD_CHECKS]


def check_counts(record: ScenarioRecord) -> str:
    """``3 held, 1 failed, 1 inconclusive``: how the scenario's checks came out (``-`` without checks)."""
    counts: Counter[str] = Counter(check_outcome(c) for c in record.checks)
    words = {"passed": "held", "failed": "failed", "inconclusive": "inconclusive", "error": "error"}
    return ", ".join(f"{counts[o]} {w}" for o, w in words.items() if counts[o]) or "-"


def scenario_verdict(record: ScenarioRecord) -> str:
    """The verdict the reports show: pytest's outcome, except that inconclusive evidence is named.

    A failed scenario whose only bad checks are inconclusive is ``inconclusive`` (it failed, but no check
    showed the policy broken); a record that says ``passed`` while holding an inconclusive check is not
    shown as a pass (``inconclusive``, or ``failed`` when a check also failed).
    """
    if record.outcome not in ("passed", "failed"):
        return record.outcome
    bad = {check_outcome(c) for c in record.checks} & _BAD_CHECKS
    if "inconclusive" not in bad:
        return record.outcome
    return "inconclusive" if bad == {"inconclusive"} else "failed"


def verdict_label(record: ScenarioRecord) -> str:
    """The scenario's verdict as a word: ``PASSED``, ``FAILED``, ``INCONCLUSIVE``..."""
    verdict = scenario_verdict(record)
    return VERDICT_LABELS.get(verdict, verdict.upper())


def istio_version_shown(context: Mapping[str, Any]) -> str:
    """The Istio version a scenario ran with, as resolved, never the placeholder ``default``.

    Records of scenarios that broke before the mesh started may hold ``default`` (no version was given,
    none was resolved yet): the local mesh then follows the default release, a cluster's was never read.
    """
    value = context.get("istio_version")
    if value not in (None, "", "default"):
        return str(value)
    if context.get("mesh_context", "local") in ("local", None, ""):
        return DEFAULT_ISTIO_VERSION
    return "unknown (not read from istiod)"


def load_phases(record: ScenarioRecord) -> list[LoadSummary]:
    """The record's load phases.

    ``ScenarioRecord.load`` is also the name of a classmethod, which becomes the field's default: a
    record built without ``load=`` holds that method instead of a list. Read the field through here.
    """
    return record.load if isinstance(record.load, list) else []


def total_requests(record: ScenarioRecord) -> int:
    """Requests sent over every load phase of the scenario."""
    return sum(phase.requests for phase in load_phases(record))


def scenario_duration(record: ScenarioRecord) -> float:
    """Wall-clock seconds of the scenario (0 when its times are unknown)."""
    return max(0.0, record.ended_at - record.started_at) if record.started_at and record.ended_at else 0.0


def short_name(nodeid: str) -> str:
    """The test part of a node id (``test_retry[5xx]``), which is what fits in a terminal column."""
    return nodeid.split("::", 1)[1] if "::" in nodeid else nodeid


def _check_cells(check: CheckRecord | None) -> list[str]:
    if check is None:
        return ["-", "-", "-", "-", "-"]
    return [
        check.name,
        CHECK_LABELS.get(check_outcome(check), check_outcome(check)),
        format_expected(check),
        format_value(check.observed, check.unit),
        format_interval(check),
    ]


SUMMARY_HEADERS = [
    "scenario",
    "verdict",
    "check",
    "result",
    "expected",
    "observed",
    "interval",
    "checks",
    "requests",
    "duration",
]


def summary_rows(records: Sequence[ScenarioRecord]) -> list[list[str]]:
    """Rows of the terminal table (columns: :data:`SUMMARY_HEADERS`).

    Per scenario: one row with its verdict, its headline claim (:func:`headline_check`) and how its
    checks came out; below it, one row per other failed, inconclusive or errored check (every one, not
    just the first), with the scenario cells left blank.
    """
    rows = []
    for record in records:
        headline = headline_check(record)
        rows.append(
            [
                short_name(record.nodeid),
                verdict_label(record),
                *_check_cells(headline),
                check_counts(record),
                str(total_requests(record)) if load_phases(record) else "-",
                format_duration(scenario_duration(record)) if scenario_duration(record) else "-",
            ]
        )
        for check in not_held_checks(record):
            if check is not headline:
                name, *cells = _check_cells(check)
                rows.append(["", "", f"- {name}", *cells, "", "", ""])
    return rows


def power_lines(records: Sequence[ScenarioRecord]) -> list[str]:
    """What each failed or inconclusive rate verdict could detect, one line per check.

    A failed claim reads differently when the check could only have caught a large violation: the line
    gives the check's ``detects`` sentence and its planned alpha, beta and delta.
    """
    lines = []
    for record in records:
        for check in not_held_checks(record):
            if not has_power(check):
                continue
            label = CHECK_LABELS.get(check_outcome(check), check_outcome(check))
            power = format_power(check)
            what = check.detects or "no detection statement was recorded"
            lines.append(
                f"  {short_name(record.nodeid)}: {check.name}: {label}; {what}" + (f" ({power})" if power else "")
            )
    return lines


def false_fail_budget_line(records: Sequence[ScenarioRecord]) -> str | None:
    """How often this run's rate checks together fail policies that hold, against the run's design.

    By Bonferroni the chance that any check fails falsely is at most the sum of the checks' alphas. Every
    check that states an alpha counts: claims, model checks and the proofs that a fault hit at its rate.
    """
    alphas = [c.alpha for r in records for c in r.checks if c.alpha is not None]
    if not alphas:
        return None
    total = sum(alphas)
    line = (
        f"meshcheck: {len(alphas)} rate checks; a run whose policies all hold fails one of them with probability "
        f"at most {total:.2g} (the sum of their alphas)"
    )
    if total > RUN_ALPHA * (1 + 1e-9):
        line += (
            f", above the {RUN_ALPHA:g} per run the defaults are planned for: set --mesh-alpha to "
            f"{RUN_ALPHA / len(alphas):.2g} or less"
        )
    return line


def summary_lines(
    records: Sequence[ScenarioRecord], index_path: Path | None, regressions: Sequence[Regression] = ()
) -> list[str]:
    """The terminal summary: a table of scenarios, what failed verdicts could detect, regressions, index.

    Args:
        records: Scenario records, in the order to show.
        index_path: Where ``index.html`` was written, or ``None`` when it was not.
        regressions: Regressions against a baseline run, from
            :func:`~pytest_meshcheck.report.baseline.find_regressions`.

    Returns:
        Lines without trailing newlines, ready for ``terminalreporter.write_line``.
    """
    lines: list[str] = []
    if records:
        lines += tabulate(
            summary_rows(records), headers=SUMMARY_HEADERS, tablefmt="simple", disable_numparse=True
        ).splitlines()
        power = power_lines(records)
        if power:
            lines.append("meshcheck: what the checks that did not hold could detect:")
            lines += power
        budget = false_fail_budget_line(records)
        if budget:
            lines.append(budget)
    else:
        lines.append("meshcheck: no scenario produced a record")
    if regressions:
        lines.append(f"meshcheck: {len(regressions)} regression(s) against the baseline:")
        lines += [f"  {r}" for r in regressions]
    if index_path is not None:
        count = len(records)
        plural = "s" if count != 1 else ""
        lines.append(f"meshcheck: {count} scenario report{plural} -> {index_path.resolve().as_uri()}")
    return lines
