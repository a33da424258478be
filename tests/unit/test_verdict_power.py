"""Exact two-error-rate rate checks: planned sizes, acceptance regions, outcomes, what a check detects.

Every error rate is recomputed here from scratch by summing ``scipy.stats.binom.pmf`` over the
acceptance region; the module's own ``pass_probability``, ``false_fail_rate`` and ``miss_rate`` are never
used to check themselves. Nothing here is random.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom, norm

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.verdict import RateRule, acceptance_region, decide, detectable
from pytest_meshcheck.verdict.power import RateAlternative

ALPHA = 0.001

# (claim, alternative, delta, beta): every claimed rate of the brief, each alternative it admits, deltas from
# 0.0189 to 0.125 and both miss rates. Kept to sizes a scan plans in well under a second each.
TABLE: list[tuple[float, RateAlternative, float, float]] = [
    (0.5, "two-sided", 0.125, 0.05),
    (0.5, "at-least", 0.0625, 0.05),
    (0.5, "at-most", 0.1, 0.001),
    (0.875, "at-least", 0.125, 0.05),
    (0.875, "at-least", 0.0625, 0.001),
    (0.875, "two-sided", 0.1, 0.05),
    (0.875, "at-most", 0.1, 0.05),
    (0.9919, "at-least", 0.0189, 0.05),
    (0.9919, "at-least", 0.0189, 0.001),
    (0.9919, "two-sided", 0.0189, 0.05),  # only the rate below fits in [0, 1]; both tails still cost alpha
    (0.99, "at-least", 0.017, 0.05),
    (0.99, "at-least", 0.0189, 0.001),
    (0.99, "two-sided", 0.02, 0.05),
    (1.0, "at-least", 0.125, 0.05),
    (1.0, "at-least", 0.05, 0.05),
    (1.0, "at-least", 0.0189, 0.05),
    (1.0, "at-least", 0.0189, 0.001),
    (0.1, "at-most", 0.05, 0.05),
    (0.1, "at-least", 0.05, 0.001),
    (0.1, "two-sided", 0.0625, 0.05),
]
IDS = [f"{p0}-{alt}-d{delta}-b{beta}" for p0, alt, delta, beta in TABLE]
ONE_SIDED = [row for row in TABLE if row[1] != "two-sided"]
ONE_SIDED_IDS = [f"{p0}-{alt}-d{delta}-b{beta}" for p0, alt, delta, beta in ONE_SIDED]


def _region_mass(n: int, low: int, high: int, p: float) -> float:
    """P(low <= X <= high) for X ~ Binomial(n, p), as a plain sum of probability masses."""
    if low > high:
        return 0.0
    return float(binom.pmf(np.arange(low, high + 1), n, p).sum())


def _tails(n: int, low: int, high: int, p: float) -> tuple[float, float]:
    """P(X < low) and P(X > high), each summed from the masses outside the region (no 1 - x cancellation)."""
    below = float(binom.pmf(np.arange(0, low), n, p).sum())
    above = float(binom.pmf(np.arange(high + 1, n + 1), n, p).sum())
    return below, above


def _alternates(p0: float, alternative: RateAlternative, delta: float) -> list[float]:
    out = []
    if alternative in ("at-least", "two-sided") and p0 - delta >= 0.0:
        out.append(p0 - delta)
    if alternative in ("at-most", "two-sided") and p0 + delta <= 1.0:
        out.append(p0 + delta)
    return out


def _textbook_n(p0: float, alternative: RateAlternative, delta: float, alpha: float, beta: float) -> float:
    """n = ((z_a sqrt(p0 q0) + z_b sqrt(p1 q1)) / delta)^2, alpha split in two for a two-sided claim."""
    za = float(norm.ppf(1 - (alpha / 2 if alternative == "two-sided" else alpha)))
    zb = float(norm.ppf(1 - beta))
    return max(
        ((za * math.sqrt(p0 * (1 - p0)) + zb * math.sqrt(p1 * (1 - p1))) / delta) ** 2
        for p1 in _alternates(p0, alternative, delta)
    )


@pytest.mark.parametrize(("p0", "alternative", "delta", "beta"), TABLE, ids=IDS)
def test_planned_n_meets_both_error_rates_exactly(
    p0: float, alternative: RateAlternative, delta: float, beta: float
) -> None:
    plan = RateRule(p0, alternative, delta, ALPHA, beta).plan()
    low, high = plan.region
    below, above = _tails(plan.n, low, high, p0)
    false_fail = below + above
    misses = [_region_mass(plan.n, low, high, p1) for p1 in _alternates(p0, alternative, delta)]
    assert false_fail <= ALPHA
    assert max(misses) <= beta
    # the plan's reported figures are the same exact sums
    assert plan.alpha == pytest.approx(false_fail, abs=1e-12)
    assert plan.beta == pytest.approx(max(misses), abs=1e-12)


@pytest.mark.parametrize(("p0", "alternative", "delta", "beta"), TABLE, ids=IDS)
def test_planned_n_is_close_to_the_normal_approximation(
    p0: float, alternative: RateAlternative, delta: float, beta: float
) -> None:
    # Exact sizes move in a saw-tooth, so n - 1 may pass too; but the plan must stay within a small factor
    # of the textbook sample size (here 0.73x .. 1.21x over the table; the bounds are 0.7x .. 1.3x).
    n = RateRule(p0, alternative, delta, ALPHA, beta).plan().n
    approx = _textbook_n(p0, alternative, delta, ALPHA, beta)
    assert 0.7 * approx <= n <= 1.3 * approx


@pytest.mark.parametrize(("p0", "alternative", "delta", "beta"), TABLE, ids=IDS)
def test_acceptance_region_is_the_largest_that_keeps_alpha(
    p0: float, alternative: RateAlternative, delta: float, beta: float
) -> None:
    n = RateRule(p0, alternative, delta, ALPHA, beta).plan().n
    low, high = acceptance_region(n, p0, alternative, ALPHA)
    tail = ALPHA / 2 if alternative == "two-sided" else ALPHA
    below, above = _tails(n, low, high, p0)
    if alternative == "at-least":
        assert high == n
    if alternative == "at-most":
        assert low == 0
    assert below <= tail
    assert above <= tail
    # Rejecting one more success count at either end (widening a tail) pushes that tail over its share of
    # alpha; an end at 0 or n has no tail to widen unless the claim rejects there.
    if alternative in ("at-least", "two-sided"):
        assert _tails(n, low + 1, high, p0)[0] > tail
    if alternative in ("at-most", "two-sided"):
        assert _tails(n, low, high - 1, p0)[1] > tail


@pytest.mark.parametrize(("p0", "alternative", "delta", "beta"), ONE_SIDED, ids=ONE_SIDED_IDS)
def test_false_fail_is_worst_at_the_claim_and_miss_worst_at_delta(
    p0: float, alternative: RateAlternative, delta: float, beta: float
) -> None:
    # Monotone likelihood ratio: rates that hold a one-sided claim more comfortably fail even less often, and
    # rates farther than delta pass even less often.
    n = RateRule(p0, alternative, delta, ALPHA, beta).plan().n
    low, high = acceptance_region(n, p0, alternative, ALPHA)
    sign = 1 if alternative == "at-least" else -1
    holding = [p0 + sign * step for step in (0.0, 0.001, 0.005, 0.01, 0.03, 0.1, 0.3)]
    holding = [p for p in holding if 0.0 <= p <= 1.0]
    ff = [1.0 - _region_mass(n, low, high, p) for p in holding]
    assert all(x <= ALPHA + 1e-12 for x in ff)
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(ff))  # non-increasing away from p0
    broken = [p0 - sign * (delta + step) for step in (0.0, 0.002, 0.01, 0.05, 0.2)]
    broken = [p for p in broken if 0.0 <= p <= 1.0]
    miss = [_region_mass(n, low, high, p) for p in broken]
    assert all(x <= beta + 1e-12 for x in miss)
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(miss))


def test_decide_gives_each_of_the_three_outcomes() -> None:
    # Claim 87.5 % at least, delta 12.5 points, 200 requests. Independently of the module:
    # pass  iff P(X <= s | 0.875) > alpha   (s is inside the region),
    # fail  iff P(X <= s | 0.75)  <= alpha  (the rule shifted by delta rejects s too),
    # inconclusive in between.
    rule = RateRule(0.875, "at-least", 0.125, ALPHA, 0.05)
    n = 200
    low = next(s for s in range(n + 1) if binom.cdf(s, n, 0.875) > ALPHA)
    low_shifted = next(s for s in range(n + 1) if binom.cdf(s, n, 0.75) > ALPHA)
    assert low_shifted + 1 < low  # there is a gap for an inconclusive outcome
    assert acceptance_region(n, 0.875, "at-least", ALPHA) == (low, n)

    for s in (low, low + 5, n):
        assert decide(rule, s, n).outcome == "passed"
    for s in (low - 1, low_shifted + 1, low_shifted):
        d = decide(rule, s, n)
        assert d.outcome == "inconclusive"
        assert not d.passed
        assert "INCONCLUSIVE (not a pass)" in d.summary
    for s in (low_shifted - 1, low_shifted - 10, 0):
        d = decide(rule, s, n)
        assert d.outcome == "failed"
        assert "FAILED: off by at least delta" in d.summary


def test_decide_outcomes_for_a_rate_that_must_stay_low() -> None:
    rule = RateRule(0.1, "at-most", 0.05, ALPHA, 0.05, what="share of 503s")
    n = 500
    high = next(s for s in range(n + 1) if binom.sf(s, n, 0.1) <= ALPHA)
    high_shifted = next(s for s in range(n + 1) if binom.sf(s, n, 0.15) <= ALPHA)
    assert high < high_shifted
    assert decide(rule, high, n).outcome == "passed"
    assert decide(rule, high + 1, n).outcome == "inconclusive"
    assert decide(rule, high_shifted, n).outcome == "inconclusive"
    assert decide(rule, high_shifted + 1, n).outcome == "failed"
    assert decide(rule, 0, n).outcome == "passed"


def test_decision_reports_exact_rates_and_an_interval_around_the_observation() -> None:
    rule = RateRule(0.9919, "at-least", 0.0189, ALPHA, 0.05)
    plan = rule.plan()
    low, high = plan.region
    d = decide(rule, plan.n - 3, plan.n)
    assert d.region == (low, high)
    assert d.alpha == pytest.approx(sum(_tails(plan.n, low, high, 0.9919)), abs=1e-12)
    assert d.beta == pytest.approx(_region_mass(plan.n, low, high, 0.9919 - 0.0189), abs=1e-12)
    assert d.interval[0] <= d.observed <= d.interval[1]


@pytest.mark.parametrize(
    ("rule", "n"),
    [
        (RateRule(0.875, "at-least", 0.125), 211),
        (RateRule(0.9919, "at-least", 0.0189), 941),
        (RateRule(0.1, "at-most", 0.05), 957),
        (RateRule(0.5, "two-sided", 0.125, beta=0.001), 600),
    ],
)
def test_detects_names_the_rate_caught_with_power_one_minus_beta(rule: RateRule, n: int) -> None:
    power = 1 - rule.beta
    d = decide(rule, n // 2, n)
    below, above = detectable(rule, n, power)
    assert (d.caught_below, d.caught_above) == (below, above)
    low, high = acceptance_region(n, rule.expected, rule.alternative, rule.alpha)
    for caught, side in ((below, -1), (above, 1)):
        if caught is None:
            continue
        # The sentence shows that rate, and it really is caught with probability 1 - beta (within the solver's
        # tolerance) and no closer than delta at the planned n.
        assert f"{caught * 100:.4g} %" in d.detects
        assert _region_mass(n, low, high, caught) == pytest.approx(rule.beta, abs=1e-4)
        if n >= rule.plan().n:
            assert side * (caught - rule.expected) <= rule.delta + 1e-6
    assert f"{power * 100:g} % probability" in d.detects
    assert "fails with probability" in d.detects
    if rule.alternative == "at-least":
        assert above is None
    if rule.alternative == "at-most":
        assert below is None


def test_detects_says_when_too_few_requests_catch_nothing() -> None:
    d = decide(RateRule(0.875, "at-least", 0.125), 1, 1)
    assert (d.caught_below, d.caught_above) == (None, None)
    assert d.detects.startswith("too few requests (1) to catch any success ratio with 95 % probability")


def test_a_claim_of_exactly_one_passes_only_when_every_request_succeeds() -> None:
    rule = RateRule(1.0, "at-least", 0.05, ALPHA, 0.05)
    plan = rule.plan()
    assert plan.n == math.ceil(math.log(0.05) / math.log(0.95))  # smallest n with 0.95^n <= beta
    assert plan.region == (plan.n, plan.n)
    assert plan.alpha == 0.0
    assert decide(rule, plan.n, plan.n).outcome == "passed"
    assert decide(rule, plan.n - 1, plan.n).outcome != "passed"
    assert decide(rule, 0, plan.n).outcome == "failed"


def test_a_claim_of_exactly_zero_passes_only_when_no_request_matches() -> None:
    rule = RateRule(0.0, "at-most", 0.05, ALPHA, 0.05, what="share of 5xx")
    plan = rule.plan()
    assert plan.region == (0, 0)
    assert decide(rule, 0, plan.n).passed
    assert not decide(rule, 1, plan.n).passed


@pytest.mark.parametrize(
    ("successes", "n", "message"),
    [
        (0, 0, r"no requests were observed \(n=0\); a rate check needs at least one"),
        (6, 5, "successes=6 must be between 0 and n=5"),
        (-1, 5, "successes=-1 must be between 0 and n=5"),
        (True, 5, "must be integers"),
        (2.0, 5, "must be integers"),
    ],
)
def test_decide_rejects_impossible_counts(successes: int, n: int, message: str) -> None:
    with pytest.raises(MeshcheckError, match=message):
        decide(RateRule(0.9), successes, n)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"expected": 0.9, "alpha": 0.0}, r"alpha=0.0 must be in \(0, 0.5\)"),
        ({"expected": 0.9, "alpha": 0.5}, r"alpha=0.5 must be in \(0, 0.5\)"),
        ({"expected": 0.9, "beta": -0.1}, r"beta=-0.1 must be in \(0, 0.5\)"),
        ({"expected": 0.9, "beta": 0.9}, r"beta=0.9 must be in \(0, 0.5\)"),
        ({"expected": 0.9, "delta": 0.0}, "delta=0.0 leaves no rate to detect around 0.9"),
        ({"expected": 0.9, "delta": 1.0}, "delta=1.0 leaves no rate to detect"),
        ({"expected": 0.1, "delta": 0.2}, r"delta=0.2 leaves no rate to detect around 0.1 \(at-least\)"),
        ({"expected": 0.99, "alternative": "at-most", "delta": 0.0189}, "pick a delta"),
        ({"expected": 1.5}, "expected=1.5 must be a proportion between 0 and 1"),
        ({"expected": 0.5, "alternative": "sideways"}, "alternative='sideways' is unknown"),
    ],
)
def test_bad_rules_are_rejected_with_a_clear_message(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(MeshcheckError, match=message):
        RateRule(**kwargs)  # type: ignore[arg-type]


def test_acceptance_region_needs_at_least_one_request() -> None:
    with pytest.raises(MeshcheckError, match="n=0 must be at least 1"):
        acceptance_region(0, 0.9, "at-least", ALPHA)


def test_a_delta_too_small_to_plan_says_to_widen_it() -> None:
    # the scan gives up beyond two million requests; 1e-4 around 0.5 would need about 1.5 billion
    with pytest.raises(MeshcheckError, match="widen delta"):
        RateRule(0.5, "at-least", 1e-4, ALPHA, 0.05).plan()


def test_a_tail_with_no_rate_delta_away_fails_as_inconclusive_not_off_by_delta() -> None:
    # The flake-bench case: a model predicting 99.19 % (delta 0.05, two-sided) saw 941 of 941. No rate 0.05 above
    # exists, so the observation cannot be off by delta; it is still off the claim (never a pass).
    rule = RateRule(0.9919, "two-sided", 0.05, ALPHA, 0.05)
    n = 941
    low, high = acceptance_region(n, 0.9919, "two-sided", ALPHA)
    assert high < n  # the upper tail still rejects: the stated alpha covers it
    top = decide(rule, n, n)
    assert top.outcome == "inconclusive"
    assert not top.passed
    assert decide(rule, low - 1, n).outcome in ("failed", "inconclusive")
    # Mirrored near 0.
    near_zero = RateRule(0.0081, "two-sided", 0.05, ALPHA, 0.05)
    assert decide(near_zero, 0, n).outcome == "inconclusive"


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    n=st.integers(1, 4000),
    p0=st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.875, 0.9919]), st.floats(0.0, 1.0)),
    alternative=st.sampled_from(["at-least", "at-most", "two-sided"]),
    alpha=st.sampled_from([2e-5, 3.3e-5, 0.001, 0.05, 1e-9]),
)
def test_acceptance_region_equals_the_sums_over_every_success_count(
    n: int, p0: float, alternative: RateAlternative, alpha: float
) -> None:
    # The region is searched from the binomial quantile; its definition counts over all n + 1 outcomes.
    k = np.arange(n + 1)
    tail = alpha / 2 if alternative == "two-sided" else alpha
    low = int(np.count_nonzero(binom.cdf(k, n, p0) <= tail)) if alternative != "at-most" else 0
    high = int(k[binom.sf(k, n, p0) <= tail].min()) if alternative != "at-least" else n
    assert acceptance_region(n, p0, alternative, alpha) == (low, high)
