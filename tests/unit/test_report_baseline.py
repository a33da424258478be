"""Regressions against a previous run: verdict flips and success ratios that dropped beyond noise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_report_samples import error_record, failing_record, passing_record

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.report.baseline import compare_to_baseline, find_regressions, load_baseline
from pytest_meshcheck.report.index import write_index
from pytest_meshcheck.report.record import CheckRecord, ScenarioRecord
from pytest_meshcheck.report.render import write_scenario_report


def _rec(outcome: str, observed: float, interval: tuple[float, float] | None = None) -> ScenarioRecord:
    check = CheckRecord(
        "success rate", outcome != "failed", 0.9, observed, list(interval) if interval else None, n=1000
    )
    return ScenarioRecord(nodeid="s.py::t", title="t", outcome=outcome, checks=[check])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("before", "after", "flagged"),
    [
        ("passed", "failed", True),
        ("passed", "error", True),
        ("xfailed", "xpassed", True),
        ("failed", "passed", False),
        ("failed", "error", False),
        ("passed", "skipped", False),
        ("skipped", "failed", False),
        ("passed", "passed", False),
    ],
)
def test_verdict_flips(before: str, after: str, flagged: bool) -> None:
    found = [r for r in find_regressions([_rec(after, 0.9)], [_rec(before, 0.9)]) if r.kind == "verdict"]
    assert bool(found) is flagged


@pytest.mark.parametrize(
    ("before", "after", "flagged"),
    [
        # baseline 0.95 lies above this run's interval: a real drop
        ((0.95, (0.94, 0.96)), (0.90, (0.88, 0.92)), True),
        # this run is below the baseline's interval, though its own interval (wide) reaches the old value
        ((0.95, (0.94, 0.96)), (0.90, (0.80, 0.99)), True),
        # within both intervals: noise
        ((0.95, (0.93, 0.97)), (0.94, (0.92, 0.96)), False),
        # an improvement is never a regression
        ((0.90, (0.88, 0.92)), (0.99, (0.98, 1.0)), False),
        # without intervals, nothing can be said about noise
        ((0.95, None), (0.90, None), False),
    ],
)
def test_success_ratio_drops(
    before: tuple[float, tuple[float, float] | None],
    after: tuple[float, tuple[float, float] | None],
    flagged: bool,
) -> None:
    found = find_regressions([_rec("passed", *after)], [_rec("passed", *before)])
    assert [r.kind for r in found] == (["success_ratio"] if flagged else [])
    if flagged:
        assert found[0].check == "success rate"
        assert "dropped from 0.9500" in found[0].detail


def test_only_success_checks_and_known_scenarios_are_compared() -> None:
    old, new = _rec("passed", 0.95, (0.94, 0.96)), _rec("passed", 0.5, (0.45, 0.55))
    old.checks[0].name = new.checks[0].name = "share of 503 UO"
    assert find_regressions([new], [old]) == []
    other = _rec("failed", 0.1, (0.0, 0.2))
    other.nodeid = "s.py::new_test"
    assert find_regressions([other], [_rec("passed", 0.95, (0.94, 0.96))]) == []


def test_previous_run_from_its_index_json_or_directory(tmp_path: Path) -> None:
    previous = tmp_path / "previous"
    old = [passing_record(), error_record()]
    for rec in old:
        write_scenario_report(rec, previous)
    write_index(previous, old)
    now = failing_record()
    now.nodeid = old[0].nodeid
    for source in (previous, previous / "index.json"):
        regs = compare_to_baseline([now], source)
        assert [r.kind for r in regs] == ["verdict", "success_ratio"], source
    # a directory without index.json: its scenario records
    (previous / "index.json").unlink()
    assert sorted(r.nodeid for r in load_baseline(previous)) == sorted(r.nodeid for r in old)
    # one scenario's JSON
    assert load_baseline(previous / old[0].report_path.replace(".html", ".json"))[0].nodeid == old[0].nodeid


def test_bad_baselines_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(
        MeshcheckError, match=r"baseline .*missing.* does not exist; pass the report directory or index.json"
    ):
        load_baseline(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MeshcheckError, match=r"holds no index\.json and no scenario record"):
        load_baseline(tmp_path / "empty")
    junk = tmp_path / "junk.json"
    junk.write_text(json.dumps([1, 2]))
    with pytest.raises(MeshcheckError, match=r"neither a run's index\.json nor a scenario record"):
        load_baseline(junk)
    junk.write_text("{not json")
    with pytest.raises(MeshcheckError, match="not readable JSON"):
        load_baseline(junk)
