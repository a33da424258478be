"""The end-of-session terminal table, and the value formatting every report surface shares."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tabulate import tabulate

from pytest_meshcheck.report.record import CheckRecord, LoadSummary, ScenarioRecord

if TYPE_CHECKING:
    from pytest_meshcheck.report.baseline import Regression

VERDICT_LABELS = {
    "passed": "PASSED",
    "failed": "FAILED",
    "error": "ERROR",
    "xfailed": "XFAIL",
    "xpassed": "XPASS",
    "skipped": "SKIPPED",
}


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
    # One-sided checks store [0, upper] or [lower, 1]: show them as the bound they are.
    if "at-least" in check.detail and check.unit == "ratio":
        return f"<= {high}{level}"
    if "at-most" in check.detail and check.unit == "ratio":
        return f">= {low}{level}"
    return f"[{low}, {high}]{unit}{level}"


def format_duration(seconds: float) -> str:
    """``850 ms``, ``12.3 s``, ``4m05s`` or ``2h03m``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def primary_check(record: ScenarioRecord) -> CheckRecord | None:
    """The check that best stands for the scenario.

    The first failing one; else the scenario's claim (a check named ``claim: ...``), preferring a
    statistical one; else the first check that is not the chaos-liveness proof.
    """
    failing = [c for c in record.checks if not c.passed]
    if failing:
        return failing[0]
    claims = [c for c in record.checks if c.name.lower().startswith("claim")]
    other = [c for c in record.checks if not c.name.lower().startswith("chaos live")]
    for group in (claims, other, record.checks):
        statistical = [c for c in group if c.interval]
        if statistical or group:
            return (statistical or group)[0]
    return None


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


def summary_rows(records: Sequence[ScenarioRecord]) -> list[list[str]]:
    """One row per scenario: scenario, verdict, expected, observed, interval, requests, duration."""
    rows = []
    for record in records:
        check = primary_check(record)
        # With several checks, say which one the numbers belong to.
        name = short_name(record.nodeid) + (f" ({check.name})" if check and len(record.checks) > 1 else "")
        rows.append(
            [
                name,
                VERDICT_LABELS.get(record.outcome, record.outcome.upper()),
                format_value(check.expected, check.unit) if check else "-",
                format_value(check.observed, check.unit) if check else "-",
                format_interval(check) if check else "-",
                str(total_requests(record)) if load_phases(record) else "-",
                format_duration(scenario_duration(record)) if scenario_duration(record) else "-",
            ]
        )
    return rows


def summary_lines(
    records: Sequence[ScenarioRecord], index_path: Path | None, regressions: Sequence[Regression] = ()
) -> list[str]:
    """The terminal summary: a table of scenarios, the regressions, and the index line.

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
        headers = ["scenario", "verdict", "expected", "observed", "interval", "requests", "duration"]
        lines += tabulate(summary_rows(records), headers=headers, tablefmt="simple", disable_numparse=True).splitlines()
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
