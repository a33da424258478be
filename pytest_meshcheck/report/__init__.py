"""Scenario reports: a JSON record and a self-contained HTML page per scenario, an index, a summary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_meshcheck.report.record import ScenarioRecord

if TYPE_CHECKING:
    from pytest_meshcheck.report.baseline import Regression

__all__ = [
    "ScenarioRecord",
    "compare_baseline",
    "junit_properties",
    "load_records",
    "summary_lines",
    "write_index",
    "write_scenario_report",
]


def write_scenario_report(record: ScenarioRecord, report_dir: Path | str) -> Path:
    """Write ``<stem>.json`` and ``<stem>.html`` for one scenario; return the HTML path."""
    from pytest_meshcheck.report.render import write_scenario_report as write

    return write(record, report_dir)


def load_records(report_dir: Path | str) -> list[ScenarioRecord]:
    """Every scenario record found in ``report_dir``."""
    from pytest_meshcheck.report.index import load_records as load

    return load(report_dir)


def write_index(
    report_dir: Path | str,
    records: list[ScenarioRecord],
    *,
    regressions: list[Regression] | tuple[()] = (),
    run_info: dict[str, Any] | None = None,
) -> Path:
    """Write ``index.html`` (and its JSON) linking every scenario; return its path."""
    from pytest_meshcheck.report.index import write_index as write

    return write(report_dir, records, regressions=regressions, run_info=run_info or {})


def summary_lines(records: list[ScenarioRecord], index_path: Path, regressions: list[Regression]) -> list[str]:
    """The terminal summary table and the index path line."""
    from pytest_meshcheck.report.summary import summary_lines as lines

    return lines(records, index_path, regressions)


def compare_baseline(records: list[ScenarioRecord], baseline: Path | str) -> list[Regression]:
    """Regressions of ``records`` against a previous run (report directory or index JSON)."""
    from pytest_meshcheck.report.baseline import compare_to_baseline

    return compare_to_baseline(records, baseline)


def junit_properties(record: ScenarioRecord, report_dir: Path | str) -> list[tuple[str, str]]:
    """JUnit ``<property>`` pairs: expected, observed, interval, report path."""
    from pytest_meshcheck.report.junit import junit_properties as props

    return props(record, report_dir)
