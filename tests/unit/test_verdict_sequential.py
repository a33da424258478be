"""Wald SPRT with Ville's boundaries: decisions, refusal to continue after a decision, error rates, savings.

The boundaries are Ville's: fail once the log-likelihood ratio of H1 over H0 reaches log(1 / alpha), pass
once it falls to log(beta). (Wald's approximations, which this module used before, are log((1 - beta) /
alpha) and log(beta / (1 - alpha)); several tests below pick alpha and beta large enough that the two give
different stopping times, so they tell the two apart.)

The simulations use fixed seeds, so they are deterministic: they cannot flake and only change when the
code does. Each error-rate bound is the count that a Binomial(2000, target) exceeds with probability below
1e-6, so a correct SPRT (whose true error rate is at most the target) fails it with probability below
1e-6 for any seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.verdict import RateRule, SequentialTest

STREAMS = 2000
HORIZON = 3000  # far beyond the longest run seen (under 2000 requests); asserted below that all decide


def _steps_to_pass_on_all_successes(p0: float, p1: float, beta: float) -> int:
    # each success adds log(p1 / p0) < 0; H0 is accepted once the sum reaches log(beta) (Ville)
    return math.ceil(math.log(beta) / math.log(p1 / p0))


def _steps_to_fail_on_all_failures(p0: float, p1: float, alpha: float) -> int:
    # each failure adds log((1 - p1) / (1 - p0)) > 0; H1 is accepted once the sum reaches log(1 / alpha)
    return math.ceil(math.log(1 / alpha) / math.log((1 - p1) / (1 - p0)))


def test_all_successes_accept_the_expected_rate_at_the_boundary() -> None:
    test = SequentialTest(0.875, 0.1)
    assert test.update_many([True] * 500) == "pass"
    assert test.n == _steps_to_pass_on_all_successes(0.875, 0.775, 0.01)
    v = test.verdict()
    assert v.passed
    assert v.method == "sprt"
    assert v.n == test.n
    assert "SPRT accepted p = 0.8750 over p = 0.7750" in v.detail
    assert "alpha = 0.01, beta = 0.01" in v.detail


@pytest.mark.parametrize(("alpha", "beta"), [(0.3, 0.3), (0.2, 0.4), (0.01, 0.05), (0.001, 0.05)])
def test_boundaries_are_ville_not_wald(alpha: float, beta: float) -> None:
    p0, p1 = 0.875, 0.775
    passing = SequentialTest(p0, p0 - p1, alpha=alpha, beta=beta)
    assert passing.update_many([True] * 1000) == "pass"
    assert passing.n == _steps_to_pass_on_all_successes(p0, p1, beta)
    assert passing.llr[0] <= math.log(beta) < passing.llr[0] - math.log(p1 / p0)
    failing = SequentialTest(p0, p0 - p1, alpha=alpha, beta=beta)
    assert failing.update_many([False] * 1000) == "fail"
    assert failing.n == _steps_to_fail_on_all_failures(p0, p1, alpha)
    assert failing.llr[0] >= math.log(1 / alpha)


def test_ville_boundaries_need_more_evidence_than_walds() -> None:
    # with alpha = beta = 0.3, Wald's boundaries would pass after 7 successes and fail after 2 failures
    wald_pass = math.ceil(math.log(0.3 / 0.7) / math.log(0.775 / 0.875))
    wald_fail = math.ceil(math.log(0.7 / 0.3) / math.log(0.225 / 0.125))
    assert (wald_pass, wald_fail) == (7, 2)
    test = SequentialTest(0.875, 0.1, alpha=0.3, beta=0.3)
    test.update_many([True] * 100)
    assert test.n == 10
    test = SequentialTest(0.875, 0.1, alpha=0.3, beta=0.3)
    test.update_many([False] * 100)
    assert test.n == 3


def test_alpha_and_beta_override_the_confidence() -> None:
    test = SequentialTest(0.9, 0.05, confidence=0.99, alpha=0.2)
    assert test.alpha == 0.2
    assert test.beta == pytest.approx(0.01)
    test = SequentialTest(0.9, 0.05, confidence=0.95)
    assert test.alpha == pytest.approx(0.05)
    assert test.beta == pytest.approx(0.05)


def test_a_two_sided_test_spends_half_of_alpha_on_each_side() -> None:
    # all failures: the lower side (p1 = 0.3) climbs by log(0.7 / 0.5) per request up to log(2 / alpha)
    test = SequentialTest(0.5, 0.2, direction="both", alpha=0.3, beta=0.3)
    assert test.update_many([False] * 100) == "fail"
    assert test.n == math.ceil(math.log(2 / 0.3) / math.log(0.7 / 0.5)) == 6
    assert test.alternatives == pytest.approx((0.3, 0.7))


def test_a_broken_policy_fails_early() -> None:
    test = SequentialTest(0.875, 0.1)
    assert test.update_many([True, False] * 500) == "fail"  # 50 % success
    assert test.n < 60
    assert test.verdict().status == "failed"


def test_updates_after_a_decision_are_refused() -> None:
    for outcome, feed in (("pass", [True] * 100), ("fail", [False] * 100)):
        test = SequentialTest(0.875, 0.1)
        assert test.update_many(feed) == outcome
        n, successes = test.n, test.successes
        with pytest.raises(MeshcheckError, match="must not be extended or rerun until it passes"):
            test.update(True)
        assert (test.n, test.successes, test.decision) == (n, successes, outcome)


def test_update_many_stops_consuming_at_the_decision() -> None:
    test = SequentialTest(0.875, 0.1)
    feed = iter([True] * 500)
    test.update_many(feed)
    assert len(list(feed)) == 500 - test.n


def test_truncation_gives_an_error_verdict_that_forbids_a_rerun() -> None:
    test = SequentialTest(0.875, 0.1, max_n=10)
    assert test.update_many([True] * 10) == "undecided"
    assert test.n == 10
    v = test.verdict()
    assert v.status == "error"
    assert "SPRT undecided after 10 observations (max_n 10)" in v.detail
    assert "do not rerun it" in v.detail
    with pytest.raises(MeshcheckError, match="already decided 'undecided'"):
        test.update(True)


def test_a_test_that_has_not_started_is_not_a_verdict() -> None:
    test = SequentialTest(0.875, 0.1)
    assert test.decision == "continue"
    assert test.verdict().status == "error"


def test_above_direction_catches_a_too_high_error_share() -> None:
    test = SequentialTest(0.05, 0.1, direction="above", what="share of 503 UO")
    assert test.update_many([True] * 200) == "fail"  # every request overflowed
    quiet = SequentialTest(0.05, 0.1, direction="above")
    assert quiet.update_many([False] * 200) == "pass"


def test_both_directions_fail_on_either_side_and_pass_only_when_both_accept() -> None:
    assert SequentialTest(0.5, 0.2, direction="both").update_many([True] * 200) == "fail"
    assert SequentialTest(0.5, 0.2, direction="both").update_many([False] * 200) == "fail"
    assert SequentialTest(0.5, 0.2, direction="both").update_many([True, False] * 200) == "pass"


def _simulate(draws: np.ndarray, p0: float, p1: float, alpha: float, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """The one-sided SPRT on every row of ``draws`` at once.

    Returns:
        Decision per row (1 pass, -1 fail, 0 undecided within the row) and the number of draws it used.
    """
    steps = np.where(draws, math.log(p1 / p0), math.log((1 - p1) / (1 - p0)))
    llr = np.cumsum(steps, axis=1)  # sequential sums, bit for bit what SequentialTest accumulates
    fail = llr >= math.log(1 / alpha)
    crossed = fail | (llr <= math.log(beta))
    first = crossed.argmax(axis=1)
    decided = crossed.any(axis=1)
    decision = np.where(decided, np.where(fail[np.arange(len(draws)), first], -1, 1), 0)
    return decision, np.where(decided, first + 1, draws.shape[1])


P0, DELTA, S_ALPHA, S_BETA = 0.9, 0.05, 0.01, 0.05


def _streams(p_true: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    draws = np.random.default_rng(seed).random((STREAMS, HORIZON)) < p_true
    decision, n = _simulate(draws, P0, P0 - DELTA, S_ALPHA, S_BETA)
    # the vectorised walk is the module's test: same decision after the same number of requests
    for row in range(150):
        test = SequentialTest(P0, DELTA, alpha=S_ALPHA, beta=S_BETA)
        outcome = test.update_many(draws[row].tolist())
        assert ({"pass": 1, "fail": -1}.get(outcome, 0), test.n) == (decision[row], n[row])
    assert np.all(decision != 0)  # every stream decided well within the horizon
    return decision, n


@pytest.fixture(scope="module")
def under_h0() -> tuple[np.ndarray, np.ndarray]:
    return _streams(P0, seed=20240612)


@pytest.fixture(scope="module")
def under_h1() -> tuple[np.ndarray, np.ndarray]:
    return _streams(P0 - DELTA, seed=20240613)


def test_a_policy_at_the_claim_fails_at_most_alpha_of_the_time(under_h0: tuple[np.ndarray, np.ndarray]) -> None:
    decision, _ = under_h0
    limit = binom.isf(1e-6, STREAMS, S_ALPHA)  # 41 of 2000, i.e. 0.0205
    assert np.count_nonzero(decision == -1) <= limit


def test_a_policy_off_by_delta_passes_at_most_beta_of_the_time(under_h1: tuple[np.ndarray, np.ndarray]) -> None:
    decision, _ = under_h1
    limit = binom.isf(1e-6, STREAMS, S_BETA)  # 149 of 2000, i.e. 0.0745
    assert np.count_nonzero(decision == 1) <= limit


def test_the_sprt_needs_fewer_requests_on_average_than_the_fixed_sample_check(
    under_h0: tuple[np.ndarray, np.ndarray], under_h1: tuple[np.ndarray, np.ndarray]
) -> None:
    fixed = RateRule(P0, "at-least", DELTA, S_ALPHA, S_BETA).plan().n  # 685
    test = SequentialTest(P0, DELTA, alpha=S_ALPHA, beta=S_BETA)
    for (_, n), under in ((under_h0, "h0"), (under_h1, "h1")):
        # the saving is large: a mean under 60 % of the fixed n (observed: about 40 % and 54 %)
        assert n.mean() < 0.6 * fixed
        # Wald's approximation of the mean ignores the overshoot past the boundary; it is close here
        assert n.mean() == pytest.approx(test.average_sample_number(under), rel=0.1)  # type: ignore[arg-type]


def _exact(p0: float, p1: float, alpha: float, beta: float, p: float) -> tuple[float, float, float]:
    """Exact P(pass), P(fail) and mean requests of the one-sided SPRT at true rate ``p``, by dynamic programming.

    After n requests the log-likelihood ratio depends only on the failures f so far, so the still-running
    probability mass is a vector over f; each step moves it, and the mass past a boundary is absorbed.
    """
    up, down = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    running = np.array([1.0])
    passed = failed = mean_n = 0.0
    n = 0
    while running.sum() > 1e-11:
        n += 1
        step = np.zeros(running.size + 1)
        step[:-1] += running * p
        step[1:] += running * (1 - p)
        f = np.arange(step.size)
        llr = (n - f) * up + f * down
        fail, accept = llr >= math.log(1 / alpha), llr <= math.log(beta)
        failed += step[fail].sum()
        passed += step[accept].sum()
        mean_n += n * step[fail | accept].sum()
        step[fail | accept] = 0.0
        running = step
    return passed, failed, mean_n


def test_exact_error_rates_and_mean_sizes_by_dynamic_programming() -> None:
    p1 = P0 - DELTA
    fixed = RateRule(P0, "at-least", DELTA, S_ALPHA, S_BETA).plan().n
    _, false_fail, mean_h0 = _exact(P0, p1, S_ALPHA, S_BETA, P0)
    miss, _, mean_h1 = _exact(P0, p1, S_ALPHA, S_BETA, p1)
    assert false_fail <= S_ALPHA  # exact: 0.0082
    assert miss <= S_BETA  # exact: 0.0482
    assert mean_h0 < 0.6 * fixed  # exact: 272 of 685
    assert mean_h1 < 0.6 * fixed  # exact: 358 of 685
    # a rate that holds the claim comfortably fails less often, a rate farther off passes less often
    assert _exact(P0, p1, S_ALPHA, S_BETA, 0.93)[1] < false_fail
    assert _exact(P0, p1, S_ALPHA, S_BETA, 0.8)[0] < miss


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"expected": 1.0, "tolerance": 0.1}, "strictly between 0 and 1"),
        ({"expected": 0.05, "tolerance": 0.1}, "p1 = expected - tolerance > 0"),
        ({"expected": 0.95, "tolerance": 0.1, "direction": "above"}, "p1 = expected \\+ tolerance < 1"),
        ({"expected": 0.5, "tolerance": 0.1, "direction": "sideways"}, "direction='sideways'"),
        ({"expected": 0.5, "tolerance": 0.1, "max_n": 0}, "max_n=0"),
        ({"expected": 0.5, "tolerance": 0.1, "confidence": 1.0}, "confidence=1.0 must be between 0 and 1"),
        ({"expected": 0.5, "tolerance": 0.1, "alpha": 0.5}, r"SPRT alpha=0.5 must be in \(0, 0.5\)"),
        ({"expected": 0.5, "tolerance": 0.1, "beta": 0.0}, r"SPRT beta=0.0 must be in \(0, 0.5\)"),
        ({"expected": 0.5, "tolerance": 0.1, "confidence": 0.4}, r"SPRT alpha=0.6"),
    ],
)
def test_bad_parameters_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(MeshcheckError, match=message):
        SequentialTest(**kwargs)  # type: ignore[arg-type]
