"""The terminal summary table and the shared value formatting."""

from __future__ import annotations

from pathlib import Path

from test_report_samples import error_record, failing_record, passing_record

from pytest_meshcheck.report.baseline import Regression
from pytest_meshcheck.report.record import CheckRecord
from pytest_meshcheck.report.summary import (
    format_duration,
    format_interval,
    format_value,
    primary_check,
    summary_lines,
)


def test_table_has_one_row_per_scenario_with_the_primary_check(tmp_path: Path) -> None:
    records = [passing_record(), failing_record(), error_record()]
    index = tmp_path / "index.html"
    lines = summary_lines(records, index)
    header = lines[0].split()
    assert header == ["scenario", "verdict", "expected", "observed", "interval", "requests", "duration"]
    rows = lines[2:5]
    failing = records[1].checks[0]
    assert failing.observed is not None
    assert failing.interval is not None
    assert "test_retry_masks_5xx[broken-retry-on] (success rate)" in rows[1]
    assert "FAILED" in rows[1]
    assert "0.8750" in rows[1]
    assert f"{failing.observed:.4f}" in rows[1]
    assert f"[{failing.interval[0]:.4f}, {failing.interval[1]:.4f}] @99%" in rows[1]
    assert str(records[1].load[0].requests) in rows[1]
    assert "1m30s" in rows[1]
    assert rows[2].split()[:2] == ["test_ejects_failing_host", "ERROR"]
    assert lines[-1] == f"meshcheck: 3 scenario reports -> {index.resolve().as_uri()}"


def test_regressions_are_listed_before_the_index_line(tmp_path: Path) -> None:
    reg = Regression("a.py::t", "verdict", "", "PASSED", "FAILED", "verdict flipped from PASSED to FAILED")
    lines = summary_lines([passing_record()], tmp_path / "index.html", [reg])
    assert lines[-3:-1] == [
        "meshcheck: 1 regression(s) against the baseline:",
        "  a.py::t: verdict flipped from PASSED to FAILED",
    ]


def test_no_records_and_no_index() -> None:
    assert summary_lines([], None) == ["meshcheck: no scenario produced a record"]


def test_primary_check_prefers_a_failure_then_success() -> None:
    rec = passing_record()
    latency, success = rec.checks[1], rec.checks[0]
    rec.checks = [latency, success]
    assert primary_check(rec) is success
    success.passed = False
    latency.passed = False
    assert primary_check(rec) is latency


def test_primary_check_prefers_the_claim_over_chaos_proof_and_model_checks() -> None:
    rec = passing_record()
    chaos = CheckRecord("chaos live: error on catalog-service", True, observed=40.0, method="exact", unit="count")
    model = CheckRecord("model: success ratio", True, 0.875, 0.88, [0.85, 0.9], n=800, confidence=0.99)
    claim = CheckRecord("claim: success ratio at least 87.50%", True, 0.875, 0.88, [0.0, 0.9], n=800, confidence=0.99)
    rec.checks = [chaos, model, claim]
    assert primary_check(rec) is claim
    rec.checks = [chaos, model]
    assert primary_check(rec) is model


def test_formatting() -> None:
    assert format_value(0.87512, "ratio") == "0.8751"
    assert format_value(0.25, "s") == "0.25 s"
    assert format_value(3.0, "count") == "3"
    assert format_value(None) == "-"
    check = CheckRecord("p99", True, 0.5, 0.061, [0.05, 0.07], confidence=0.95, unit="s")
    assert format_interval(check) == "[0.05, 0.07] s @95%"
    assert format_interval(CheckRecord("x", True)) == "-"
    assert [format_duration(s) for s in (0.25, 12.34, 245.0, 7380.0)] == [
        "250 ms",
        "12.3 s",
        "4m05s",
        "2h03m",
    ]
