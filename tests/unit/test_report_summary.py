"""The terminal summary table, the shared value formatting, and how checks are read (role, outcome)."""

from __future__ import annotations

import re
from pathlib import Path

from test_report_samples import (
    error_record,
    failing_record,
    inconclusive_record,
    legacy_record_data,
    passing_record,
)

from pytest_meshcheck.report.baseline import Regression
from pytest_meshcheck.report.record import CheckRecord, ScenarioRecord, check_outcome, check_role
from pytest_meshcheck.report.summary import (
    SUMMARY_HEADERS,
    check_counts,
    format_duration,
    format_expected,
    format_interval,
    format_power,
    format_value,
    headline_check,
    istio_version_shown,
    not_held_checks,
    scenario_verdict,
    summary_lines,
)


def _cells(line: str) -> list[str]:
    """A table row's cells: tabulate separates columns by two or more spaces."""
    return [c for c in re.split(r"\s{2,}", line.strip()) if c]


def _many_checks() -> ScenarioRecord:
    """A failed scenario with a held claim, and a failed, an inconclusive and an errored check."""
    rec = failing_record()
    claim = CheckRecord(
        "claim: success rate at least 87.5%", True, 0.875, 0.88, [0.87, 0.89], n=4000, confidence=0.99,
        role="claim", alternative="at-least", outcome="passed", alpha=0.01, beta=0.05, delta=0.02,
        detects="would have caught a success rate below 85.5 % with 95 % probability",
    )  # fmt: skip
    model = CheckRecord(
        "model: retry share", False, 0.3, 0.36, [0.34, 0.38], n=4000, confidence=0.99, role="model",
        alternative="two-sided", outcome="failed", alpha=0.01, beta=0.05, delta=0.05,
        detects="would have caught a retry share below 25 % or above 35 % with 95 % probability",
    )  # fmt: skip
    ejections = CheckRecord(
        "model: ejection share", False, 0.5, 0.47, [0.44, 0.5], n=4000, confidence=0.99, role="model",
        alternative="at-least", outcome="inconclusive", alpha=0.01, beta=0.1, delta=0.1,
        detects="would have caught an ejection share below 40 % with 90 % probability",
    )  # fmt: skip
    live = CheckRecord(
        "chaos live: error on reviews", False, 1.0, None, method="exact", role="evidence", outcome="error"
    )
    rec.checks = [live, claim, model, ejections]
    return rec


def test_table_has_one_row_per_scenario_with_its_claim_and_check_counts(tmp_path: Path) -> None:
    records = [passing_record(), failing_record(), error_record()]
    index = tmp_path / "index.html"
    lines = summary_lines(records, index)
    assert lines[0].split() == SUMMARY_HEADERS
    rows = lines[2:5]
    failing = records[1].checks[0]
    assert failing.observed is not None
    assert failing.interval is not None
    cells = _cells(rows[1])
    assert cells[:4] == ["test_retry_masks_5xx[broken-retry-on]", "FAILED", "success rate", "FAILED"]
    assert "0.8750" in cells
    assert f"{failing.observed:.4f}" in cells
    assert f"[{failing.interval[0]:.4f}, {failing.interval[1]:.4f}] @99%" in cells
    assert "1 held, 1 failed" in cells
    assert str(records[1].load[0].requests) in cells
    assert "1m30s" in cells
    assert _cells(rows[0])[:4] == ["test_retry_masks_5xx[50%]", "PASSED", "success rate", "held"]
    assert "2 held" in _cells(rows[0])
    assert rows[2].split()[:2] == ["test_ejects_failing_host", "ERROR"]
    assert lines[-1] == f"meshcheck: 3 scenario reports -> {index.resolve().as_uri()}"


def test_every_check_that_did_not_hold_gets_a_row_not_only_the_first() -> None:
    rec = _many_checks()
    lines = summary_lines([rec], None)
    table = lines[: lines.index("meshcheck: what the checks that did not hold could detect:")]
    head = _cells(table[2])
    # The headline is the claim (it held); the counts say what happened to the others.
    assert head[:4] == ["test_retry_masks_5xx[broken-retry-on]", "FAILED", "claim: success rate at least 87.5%", "held"]
    assert ">= 0.8750" in head
    assert "1 held, 1 failed, 1 inconclusive, 1 error" in head
    subrows = [_cells(line) for line in table[3:]]
    assert [row[:2] for row in subrows] == [
        ["- chaos live: error on reviews", "ERROR"],
        ["- model: retry share", "FAILED"],
        ["- model: ejection share", "INCONCLUSIVE"],
    ]


def test_failure_summary_says_what_each_rate_verdict_could_detect() -> None:
    lines = summary_lines([_many_checks(), passing_record()], None)
    start = lines.index("meshcheck: what the checks that did not hold could detect:")
    power = lines[start + 1 : -1]
    assert power == [
        "  test_retry_masks_5xx[broken-retry-on]: model: retry share: FAILED; would have caught a retry share "
        "below 25 % or above 35 % with 95 % probability (alpha 0.01, beta 0.05, delta 0.05)",
        "  test_retry_masks_5xx[broken-retry-on]: model: ejection share: INCONCLUSIVE; would have caught an "
        "ejection share below 40 % with 90 % probability (alpha 0.01, beta 0.1, delta 0.1)",
    ]  # the errored exact check has no power to state; the passing scenario none to explain
    assert lines[-1].startswith("meshcheck: 4 rate checks; a run whose policies all hold fails one")


def _rate_checks(*alphas: float) -> ScenarioRecord:
    rec = passing_record()
    rec.checks = [
        CheckRecord(f"claim {i}", True, 0.9, 0.95, [0.9, 1.0], n=100, role="claim", alternative="at-least", alpha=a)
        for i, a in enumerate(alphas)
    ]
    return rec


def test_the_summary_adds_up_the_runs_false_fail_rate() -> None:
    within = summary_lines([_rate_checks(*[2e-5] * 43), _rate_checks()], None)
    assert within[-1] == (
        "meshcheck: 43 rate checks; a run whose policies all hold fails one of them with probability at most "
        "0.00086 (the sum of their alphas)"
    )
    over = summary_lines([_rate_checks(*[0.001] * 43)], None)[-1]
    assert over.endswith(
        "at most 0.043 (the sum of their alphas), above the 0.001 per run the defaults are planned for: set "
        "--mesh-alpha to 2.3e-05 or less"
    )
    # Exact checks state no alpha and add nothing; a run without rate checks gets no line.
    assert not any("rate checks" in line for line in summary_lines([_rate_checks()], None))


def test_an_inconclusive_scenario_is_never_shown_as_passed() -> None:
    rec = inconclusive_record()
    assert scenario_verdict(rec) == "inconclusive"
    row = _cells(summary_lines([rec], None)[2])
    assert row[1:4] == ["INCONCLUSIVE", "success rate", "INCONCLUSIVE"]
    assert "1 held, 1 inconclusive" in row
    # A record that says "passed" while holding an inconclusive check is not shown as a pass either.
    rec.outcome = "passed"
    assert scenario_verdict(rec) == "inconclusive"
    rec.checks[1].outcome = "failed"
    rec.checks[1].passed = False
    assert scenario_verdict(rec) == "failed"
    # pytest's own word stands for everything else.
    for outcome in ("error", "xfailed", "xpassed", "skipped"):
        rec.outcome = outcome
        assert scenario_verdict(rec) == outcome
    assert scenario_verdict(passing_record()) == "passed"
    assert scenario_verdict(failing_record()) == "failed"


def test_regressions_are_listed_before_the_index_line(tmp_path: Path) -> None:
    reg = Regression("a.py::t", "verdict", "", "PASSED", "FAILED", "verdict flipped from PASSED to FAILED")
    lines = summary_lines([passing_record()], tmp_path / "index.html", [reg])
    assert lines[-3:-1] == [
        "meshcheck: 1 regression(s) against the baseline:",
        "  a.py::t: verdict flipped from PASSED to FAILED",
    ]


def test_no_records_and_no_index() -> None:
    assert summary_lines([], None) == ["meshcheck: no scenario produced a record"]


def test_headline_is_the_claim_by_role_not_by_name() -> None:
    rec = passing_record()
    chaos = CheckRecord("chaos live: error on catalog-service", True, observed=40.0, method="exact", unit="count")
    model = CheckRecord("retry share", True, 0.875, 0.88, [0.85, 0.9], n=800, confidence=0.99, role="model")
    claim = CheckRecord("success ratio", True, 0.875, 0.88, [0.87, 0.9], n=800, confidence=0.99, role="claim")
    rec.checks = [chaos, model, claim]
    assert headline_check(rec) is claim
    claim.passed, claim.outcome = False, "failed"
    assert headline_check(rec) is claim  # a failed claim is still the headline; it is not listed twice
    assert not_held_checks(rec) == [claim]
    rec.checks = [chaos, model]
    assert headline_check(rec) is model
    rec.checks = [chaos]
    assert headline_check(rec) is chaos
    rec.checks = []
    assert headline_check(rec) is None
    assert check_counts(rec) == "-"


def test_records_without_roles_or_outcomes_still_read_right() -> None:
    legacy = ScenarioRecord.from_dict(legacy_record_data())
    _chaos, model, claim, _latency = legacy.checks
    # Defaults apply to the fields such records lack...
    assert (claim.role, claim.outcome, claim.alpha, claim.detects) == ("evidence", "passed", None, "")
    # ...and the helpers read them as those versions meant them.
    assert [check_role(c) for c in legacy.checks] == ["evidence", "model", "claim", "evidence"]
    assert [check_outcome(c) for c in legacy.checks] == ["passed", "failed", "failed", "passed"]
    assert headline_check(legacy) is claim
    assert not_held_checks(legacy) == [model, claim]
    assert format_power(claim) == ""
    # A role given is never second-guessed from the name.
    assert check_role(CheckRecord("claim-like name", True, role="model")) == "model"
    assert check_outcome(CheckRecord("x", False, outcome="inconclusive")) == "inconclusive"


def test_istio_version_is_the_resolved_one() -> None:
    assert istio_version_shown({"mesh_context": "local", "istio_version": "1.28"}) == "1.28"
    assert istio_version_shown({"mesh_context": "local", "istio_version": "default"}) == "1.30"
    assert istio_version_shown({}) == "1.30"
    assert istio_version_shown({"mesh_context": "kind", "istio_version": "default"}) == (
        "unknown (not read from istiod)"
    )


def test_formatting() -> None:
    assert format_value(0.87512, "ratio") == "0.8751"
    assert format_value(0.25, "s") == "0.25 s"
    assert format_value(3.0, "count") == "3"
    assert format_value(None) == "-"
    check = CheckRecord("p99", True, 0.5, 0.061, [0.05, 0.07], confidence=0.95, unit="s")
    assert format_interval(check) == "[0.05, 0.07] s @95%"
    assert format_interval(CheckRecord("x", True)) == "-"
    # The interval is shown as stored, whatever the detail text says.
    one_sided = CheckRecord("r", True, 0.9, 0.95, [0.93, 0.97], confidence=0.99, detail="at-least, tolerance 0.02")
    assert format_interval(one_sided) == "[0.9300, 0.9700] @99%"
    assert format_expected(CheckRecord("r", True, 0.975, alternative="at-least")) == ">= 0.9750"
    assert format_expected(CheckRecord("r", True, 0.01, alternative="at-most")) == "<= 0.0100"
    assert format_expected(CheckRecord("r", True, 0.875, alternative="two-sided")) == "0.8750"
    assert format_expected(CheckRecord("r", True, None, alternative="at-least")) == "-"
    assert format_power(CheckRecord("r", True, alpha=0.0098, beta=0.05, delta=0.021)) == (
        "alpha 0.0098, beta 0.05, delta 0.021"
    )
    assert [format_duration(s) for s in (0.25, 12.34, 245.0, 7380.0)] == [
        "250 ms",
        "12.3 s",
        "4m05s",
        "2h03m",
    ]
