"""Binomial intervals, coverage, sample sizes and fixed-sample checks.

Every simulation here uses a fixed seed, so each assertion is deterministic: it cannot flake, and it
can only change if the code under test changes. The bounds are chosen from the exact coverage (computed
below), not tuned to the seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta, binom, norm

from pytest_meshcheck.verdict import (
    clopper_pearson_interval,
    one_sided_bound,
    proportion_interval,
    wilson_interval,
)

Z99 = float(norm.ppf(0.995))
CASES = [(200, 0.875), (1000, 0.5), (500, 0.99), (100, 0.9), (300, 0.1), (50, 0.5)]


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(861, 1000), (0, 20), (20, 20), (7, 9), (500, 1000)])
def test_wilson_matches_the_textbook_formula(k: int, n: int) -> None:
    low, high = _wilson(k, n, Z99)
    iv = wilson_interval(k, n)
    assert (iv.low, iv.high) == pytest.approx((max(low, 0.0), min(high, 1.0)), abs=1e-12)
    assert iv.confidence == 0.99
    assert iv.method == "wilson"


@pytest.mark.parametrize(("k", "n"), [(861, 1000), (0, 20), (20, 20), (7, 9)])
def test_clopper_pearson_matches_beta_quantiles(k: int, n: int) -> None:
    low = beta.ppf(0.005, k, n - k + 1) if k > 0 else 0.0
    high = beta.ppf(0.995, k + 1, n - k) if k < n else 1.0
    iv = clopper_pearson_interval(k, n)
    assert (iv.low, iv.high) == pytest.approx((low, high), abs=1e-9)


def _exact_coverage(n: int, p: float, method: str) -> float:
    # counts outside the 1e-12 tails carry negligible mass, so skipping them changes the sum by < 1e-11
    ks = np.arange(int(binom.ppf(1e-12, n, p)), int(binom.isf(1e-12, n, p)) + 1)
    inside = [proportion_interval(int(k), n, method=method).contains(p) for k in ks]  # type: ignore[arg-type]
    return float(binom.pmf(ks, n, p)[inside].sum())


@pytest.mark.parametrize(("n", "p"), CASES)
def test_clopper_pearson_coverage_is_never_below_the_confidence(n: int, p: float) -> None:
    assert _exact_coverage(n, p, "clopper-pearson") >= 0.99  # a theorem for Clopper-Pearson


@pytest.mark.parametrize(("n", "p"), CASES)
def test_wilson_coverage_by_simulation(n: int, p: float) -> None:
    # Exact coverage of the 99 % Wilson interval is 0.9867-0.9934 for these (n, p) (checked below); in 2000
    # draws its standard error is about 0.0026, so the bound 0.98 sits >= 2.5 SE under the lowest true value.
    # The seed is fixed, so the result is the same on every run: this test cannot flake.
    assert _exact_coverage(n, p, "wilson") >= 0.985
    draws = np.random.default_rng(20240601).binomial(n, p, size=2000)
    intervals = {int(k): wilson_interval(int(k), n) for k in np.unique(draws)}
    covered = np.mean([intervals[int(k)].contains(p) for k in draws])
    assert covered >= 0.98


def test_one_sided_bound_is_the_end_of_a_wider_two_sided_interval() -> None:
    upper = one_sided_bound(95, 100, "upper", confidence=0.99)
    assert upper.high == pytest.approx(proportion_interval(95, 100, confidence=0.98).high)
    assert upper.low == 0.0
