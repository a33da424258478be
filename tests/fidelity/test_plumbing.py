"""The suite's own plumbing, without a mesh: strategies, planning, profiles, found files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from tests.fidelity.cases import Case, FaultSpec, LoadSpec, save_found
from tests.fidelity.predict import FLOOR_REQUESTS, MAX_REQUESTS, RATE_CHECKS_PER_EXAMPLE, predict
from tests.fidelity.profile import FAMILY_ALPHA, ProfileError, load_profile
from tests.fidelity.strategies import MAX_CONCURRENCY, bounded, cases

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(case=cases())
def test_every_drawn_case_passes_admission_and_plans_within_bounds(case: Case) -> None:
    # load_policy_text validates as Istio's admission does and raises on any rejected field.
    pred = predict(case, alpha_check=FAMILY_ALPHA / 75, beta=0.05, delta=0.15)
    assert FLOOR_REQUESTS <= pred.n <= MAX_REQUESTS
    assert len(pred.rates) <= RATE_CHECKS_PER_EXAMPLE
    assert all(0.0 < r.rule.expected < 1.0 and r.rule.alternative == "two-sided" for r in pred.rates)
    if pred.skipped:
        assert not pred.rates
    grown = bounded(case, pred.n)
    assert grown.load.concurrency <= MAX_CONCURRENCY
    assert grown.load.concurrency >= case.load.concurrency
    assert grown.load.rate >= case.load.rate


@FAST
@given(case=cases())
def test_cases_round_trip_through_found_files(case: Case) -> None:
    assert Case.from_data(yaml.safe_load(yaml.safe_dump(case.to_data()))) == case


def test_rate_checks_split_the_family_alpha(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHCHECK_FIDELITY", "nightly")
    monkeypatch.setenv("MESHCHECK_FIDELITY_MINUTES", "2")
    profile = load_profile()
    assert profile is not None
    assert profile.max_examples == 120
    assert profile.alpha_check * profile.max_rate_checks == pytest.approx(FAMILY_ALPHA)
    # The planner sizes each check for its share: the exact false-fail rate at the planned n stays below it.
    case = Case("1.30", {"retries": {"attempts": 0}}, {}, (FaultSpec("error", 0.5, 503),), LoadSpec("closed", 8))
    pred = predict(case, alpha_check=profile.alpha_check, beta=0.05, delta=profile.delta)
    assert [(r.name, r.rule.expected) for r in pred.rates] == [("success ratio", 0.5)]
    for r in pred.rates:
        plan = r.rule.plan()
        assert plan.alpha <= profile.alpha_check
        assert plan.beta <= 0.05


def test_ci_is_the_default_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHCHECK_FIDELITY", raising=False)
    profile = load_profile()
    assert profile is not None
    assert (profile.name, profile.max_examples, profile.shrink) == ("ci", 25, False)
    assert profile.seconds <= 120


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("MESHCHECK_FIDELITY", "weekly", "MESHCHECK_FIDELITY='weekly' is unknown"),
        ("MESHCHECK_FIDELITY_SEED", "abc", "MESHCHECK_FIDELITY_SEED='abc' is not an integer"),
    ],
)
def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ProfileError, match=message):
        load_profile()


def test_bad_budget_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHCHECK_FIDELITY", "nightly")
    monkeypatch.setenv("MESHCHECK_FIDELITY_MINUTES", "-5")
    with pytest.raises(ProfileError, match="MESHCHECK_FIDELITY_MINUTES"):
        load_profile()


def test_found_file_holds_the_policy_and_the_failures(tmp_path: Path) -> None:
    case = Case("1.23", {"timeout": "0.5s"}, {}, (FaultSpec("latency", 1.0, delay=0.3),), LoadSpec("closed", 4))
    path = save_found(tmp_path, case, ["FAIL model: latency ceiling: ..."], seed=7)
    doc = yaml.safe_load(path.read_text())
    assert Case.from_data(doc["case"]) == case
    assert doc["policy_yaml"] == case.policy_yaml()
    assert "timeout: 0.5s" in path.read_text()
    assert doc["judgement"] == "unjudged"


def test_nightly_job_runs_the_nightly_profile_and_keeps_database_and_found_cases() -> None:
    workflow = Path(__file__).parents[2] / "docs" / "ci" / "nightly.yml"
    job = yaml.safe_load(workflow.read_text())["jobs"]["fidelity"]
    assert job["env"]["MESHCHECK_FIDELITY"] == "nightly"
    assert job["env"]["MESHCHECK_FIDELITY_MINUTES"] == "30"
    assert any("pytest tests/fidelity" in s.get("run", "") for s in job["steps"])
    uploads = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert len(uploads) == 1
    assert uploads[0]["if"] == "${{ !cancelled() }}"
    paths = uploads[0]["with"]["path"].split()
    assert job["env"]["MESHCHECK_FIDELITY_DB"] + "/" in paths
    assert "tests/fidelity/found/" in paths
