"""Regressions against a previous run: verdict flips, and claimed rates that moved the wrong way beyond noise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_report_samples import error_record, failing_record, inconclusive_record, legacy_record_data, passing_record

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.report.baseline import compare_to_baseline, find_regressions, load_baseline
from pytest_meshcheck.report.index import write_index
from pytest_meshcheck.report.record import CheckRecord, ScenarioRecord
from pytest_meshcheck.report.render import write_scenario_report


def _rec(
    outcome: str,
    observed: float,
    interval: tuple[float, float] | None = None,
    *,
    role: str = "claim",
    alternative: str = "at-least",
    expected: float = 0.9,
) -> ScenarioRecord:
    check = CheckRecord(
        "success rate",
        outcome != "failed",
        expected,
        observed,
        list(interval) if interval else None,
        n=1000,
        role=role,  # type: ignore[arg-type]
        alternative=alternative,  # type: ignore[arg-type]
        outcome="failed" if outcome == "failed" else "passed",
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
        assert "success rate dropped from 0.9500" in found[0].detail


def test_an_inconclusive_run_is_a_verdict_regression() -> None:
    now, before = inconclusive_record(), passing_record()
    now.nodeid = before.nodeid
    (flip,) = [r for r in find_regressions([now], [before]) if r.kind == "verdict"]
    assert flip.detail == "verdict flipped from PASSED to INCONCLUSIVE"
    # Even when pytest recorded it as passed, an inconclusive check is not a pass.
    now.outcome = "passed"
    assert [r.kind for r in find_regressions([now], [before]) if r.kind == "verdict"] == ["verdict"]


@pytest.mark.parametrize(
    ("alternative", "before", "after", "kind", "verb"),
    [
        # an error rate claimed at most 5 %: a rise is worse, a drop is not
        ("at-most", (0.02, (0.01, 0.03)), (0.08, (0.07, 0.09)), "rate", "rose"),
        ("at-most", (0.08, (0.07, 0.09)), (0.02, (0.01, 0.03)), None, ""),
        # a share claimed about 50 %: moving away from it is worse, either way
        ("two-sided", (0.50, (0.48, 0.52)), (0.40, (0.38, 0.42)), "rate", "dropped away from the expected value"),
        ("two-sided", (0.50, (0.48, 0.52)), (0.60, (0.58, 0.62)), "rate", "rose away from the expected value"),
        ("two-sided", (0.40, (0.38, 0.42)), (0.50, (0.48, 0.52)), None, ""),
    ],
)
def test_the_claims_alternative_says_which_way_is_worse(
    alternative: str,
    before: tuple[float, tuple[float, float]],
    after: tuple[float, tuple[float, float]],
    kind: str | None,
    verb: str,
) -> None:
    expected = 0.05 if alternative == "at-most" else 0.5
    found = find_regressions(
        [_rec("passed", *after, alternative=alternative, expected=expected)],
        [_rec("passed", *before, alternative=alternative, expected=expected)],
    )
    assert [r.kind for r in found] == ([kind] if kind else [])
    if kind:
        assert f"success rate {verb} from" in found[0].detail


def test_only_claim_and_model_rates_of_known_scenarios_are_compared() -> None:
    for role in ("claim", "model"):
        old, new = _rec("passed", 0.95, (0.94, 0.96), role=role), _rec("passed", 0.5, (0.45, 0.55), role=role)
        assert [r.kind for r in find_regressions([new], [old])] == ["success_ratio"], role
    # Evidence (a fault's live share, counters that agree) is no claim: a change there is no regression,
    # whatever its name says.
    old, new = _rec("passed", 0.95, (0.94, 0.96), role="evidence"), _rec("passed", 0.5, (0.45, 0.55), role="evidence")
    assert find_regressions([new], [old]) == []
    other = _rec("failed", 0.1, (0.0, 0.2))
    other.nodeid = "s.py::new_test"
    assert find_regressions([other], [_rec("passed", 0.95, (0.94, 0.96))]) == []


def test_a_baseline_written_before_check_roles_is_read() -> None:
    legacy = ScenarioRecord.from_dict(legacy_record_data())
    legacy.outcome = "passed"
    for check in legacy.checks:
        check.passed = True
    now = ScenarioRecord.from_dict(legacy_record_data())
    # Same observations: only the verdict flipped.
    assert [r.kind for r in find_regressions([now], [passing_record(), legacy])] == ["verdict"]
    # Its claim is known by its name's prefix (the records had no role): its drop is found.
    legacy.checks[2].observed = 0.87
    legacy.checks[2].interval = [0.86, 0.88]
    found = find_regressions([now], [legacy])
    assert [(r.kind, r.check) for r in found] == [("verdict", ""), ("rate", "claim: success ratio about 87.50%")]


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
        # The sample's claim is two-sided: it moved away from its expected value.
        assert [r.kind for r in regs] == ["verdict", "rate"], source
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
