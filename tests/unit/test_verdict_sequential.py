"""Wald SPRT: decisions on clear-cut sequences, refusal to continue after a decision, error rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.verdict import SequentialTest


def _steps_to_accept_h0_on_all_successes(p0: float, p1: float, alpha: float, beta: float) -> int:
    # each success adds log(p1/p0) < 0; H0 is accepted once the sum reaches log(beta / (1 - alpha))
    return math.ceil(math.log(beta / (1 - alpha)) / math.log(p1 / p0))


def test_all_successes_accept_the_expected_rate_at_the_wald_boundary() -> None:
    test = SequentialTest(0.875, 0.1)
    assert test.update_many([True] * 500) == "pass"
    assert test.n == _steps_to_accept_h0_on_all_successes(0.875, 0.775, 0.01, 0.01)
    v = test.verdict()
    assert v.passed
    assert v.method == "sprt"
    assert v.n == test.n
    assert "SPRT accepted p = 0.8750 over p = 0.7750" in v.detail


def test_a_broken_policy_fails_early() -> None:
    test = SequentialTest(0.875, 0.1)
    assert test.update_many([True, False] * 500) == "fail"  # 50 % success
    assert test.n < 60
    assert test.verdict().status == "failed"


def test_updates_after_a_decision_are_refused() -> None:
    test = SequentialTest(0.875, 0.1)
    test.update_many([True] * 100)
    with pytest.raises(MeshcheckError, match="must not be extended or rerun until it passes"):
        test.update(True)


def test_update_many_stops_consuming_at_the_decision() -> None:
    test = SequentialTest(0.875, 0.1)
    feed = iter([True] * 500)
    test.update_many(feed)
    assert len(list(feed)) == 500 - test.n


def test_truncation_gives_an_error_verdict_that_forbids_a_rerun() -> None:
    test = SequentialTest(0.875, 0.1, max_n=10)
    assert test.update_many([True] * 10) == "undecided"
    v = test.verdict()
    assert v.status == "error"
    assert "do not rerun it" in v.detail


def test_above_direction_catches_a_too_high_error_share() -> None:
    test = SequentialTest(0.05, 0.1, direction="above", what="share of 503 UO")
    assert test.update_many([True] * 200) == "fail"  # every request overflowed
    quiet = SequentialTest(0.05, 0.1, direction="above")
    assert quiet.update_many([False] * 200) == "pass"


def test_both_directions_fail_on_either_side_and_pass_only_when_both_accept() -> None:
    assert SequentialTest(0.5, 0.2, direction="both").update_many([True] * 200) == "fail"
    assert SequentialTest(0.5, 0.2, direction="both").update_many([False] * 200) == "fail"
    assert SequentialTest(0.5, 0.2, direction="both").update_many([True, False] * 200) == "pass"


def _run(p_true: float, seed: int, runs: int) -> tuple[int, int, float]:
    rng = np.random.default_rng(seed)
    fails = passes = 0
    total_n = 0
    for _ in range(runs):
        test = SequentialTest(0.875, 0.1, confidence=0.95, max_n=5000)
        decision = test.update_many(bool(x) for x in rng.random(5000) < p_true)
        fails += decision == "fail"
        passes += decision == "pass"
        total_n += test.n
    return fails, passes, total_n / runs


def test_error_rates_by_simulation() -> None:
    # alpha = beta = 0.05; Wald's bounds give true rates <= alpha / (1 - beta) = 0.0526. 1000 runs per side
    # with a fixed seed (deterministic, so no flake); the bound 0.08 is 3.9 standard errors above 0.0526.
    fails, _, mean_n = _run(0.875, seed=11, runs=1000)
    assert fails / 1000 <= 0.08
    test = SequentialTest(0.875, 0.1, confidence=0.95)
    assert mean_n == pytest.approx(test.average_sample_number("h0"), rel=0.1)  # Wald's approximation
    _, passes, _ = _run(0.775, seed=12, runs=1000)
    assert passes / 1000 <= 0.08


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"expected": 1.0, "tolerance": 0.1}, "strictly between 0 and 1"),
        ({"expected": 0.05, "tolerance": 0.1}, "p1 = expected - tolerance > 0"),
        ({"expected": 0.95, "tolerance": 0.1, "direction": "above"}, "p1 = expected \\+ tolerance < 1"),
        ({"expected": 0.5, "tolerance": 0.1, "direction": "sideways"}, "direction='sideways'"),
        ({"expected": 0.5, "tolerance": 0.1, "max_n": 0}, "max_n=0"),
    ],
)
def test_bad_parameters_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(MeshcheckError, match=message):
        SequentialTest(**kwargs)  # type: ignore[arg-type]
