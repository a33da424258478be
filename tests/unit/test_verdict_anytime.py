"""The beta-binomial mixture confidence sequence: time-uniform coverage, and why a fixed-n interval lacks it.

The simulations use fixed seeds, so every assertion is deterministic: it cannot flake and only changes if
the code under test changes. The bounds are not tuned to the seeds; they come from binomial counts:

* Coverage. 2000 independent streams of 1000 draws; a stream *escapes* when the true rate is outside the
  level-0.95 confidence sequence at any n in 1..1000. Ville's inequality bounds the escape probability
  by alpha = 0.05, so the escape count is at most Binomial(2000, 0.05), and the test allows up to
  ``binom.isf(1e-6, 2000, 0.05)`` = 149 escapes. A correct implementation therefore fails this test with
  probability below 1e-6 per rate (the seed is fixed, so in practice it never does).
* Peeking. The same streams with the naive 95 % Clopper-Pearson interval recomputed at 20 looks (n = 10 ..
  1000). If looking repeatedly kept its coverage, more than 149 escapes would happen with probability
  below 1e-6; the test asserts more than 149, which it gets by a wide margin (a tenth to a quarter of the
  streams escape).
"""

from __future__ import annotations

import itertools
import math
from functools import cache

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import beta as beta_dist
from scipy.stats import binom

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.verdict import confidence_sequence
from pytest_meshcheck.verdict.anytime import consistent, log_mixture

ALPHA = 0.05
STREAMS = 2000
HORIZON = 1000
# Escape count a level-(1 - ALPHA) procedure exceeds with probability < 1e-6 (Binomial(2000, 0.05) tail).
LIMIT = int(binom.isf(1e-6, STREAMS, ALPHA))
LOOKS = np.unique(np.geomspace(10, HORIZON, 20).round().astype(int))
RATES = [0.5, 0.9, 0.99]


@cache
def _running_successes(p: float) -> np.ndarray:
    """Cumulative successes, shape (streams, horizon): column j holds S after j + 1 draws."""
    rng = np.random.default_rng([20240611, round(p * 10_000)])
    draws = rng.random((STREAMS, HORIZON)) < p
    return np.cumsum(draws, axis=1, dtype=np.int64)


def test_the_escape_limit_is_what_the_docstring_says() -> None:
    assert LIMIT == 149
    assert len(LOOKS) == 20
    assert binom.sf(LIMIT, STREAMS, ALPHA) < 1e-6


@pytest.mark.parametrize("p", RATES)
def test_the_true_rate_stays_in_the_sequence_at_every_n(p: float) -> None:
    successes = _running_successes(p)
    escaped = np.zeros(STREAMS, dtype=bool)
    for j in range(HORIZON):
        # consistent() is scalar: ask once per distinct count at this n, then map back to the streams
        counts, index = np.unique(successes[:, j], return_inverse=True)
        inside = np.array([consistent(int(s), j + 1, p, ALPHA) for s in counts])
        escaped |= ~inside[index]
    assert int(escaped.sum()) <= LIMIT


@pytest.mark.parametrize("p", RATES)
def test_a_fixed_n_interval_checked_at_every_look_loses_its_coverage(p: float) -> None:
    successes = _running_successes(p)[:, LOOKS - 1]
    n = np.broadcast_to(LOOKS, successes.shape)
    failures = n - successes
    # the textbook two-sided Clopper-Pearson interval at level 1 - ALPHA, from beta quantiles
    with np.errstate(invalid="ignore"):
        low = np.where(successes > 0, beta_dist.ppf(ALPHA / 2, successes, failures + 1), 0.0)
        high = np.where(failures > 0, beta_dist.ppf(1 - ALPHA / 2, successes + 1, failures), 1.0)
    # at any single look it covers (it is exact and conservative) ...
    per_look = np.mean((low <= p) & (p <= high), axis=0)
    assert per_look.min() >= 1 - ALPHA - 0.015  # 0.015 is 3 SE of a 0.95 proportion over 2000 streams
    # ... but the chance that some look excludes p is far above ALPHA
    escaped = int(np.any((p < low) | (p > high), axis=1).sum())
    assert escaped > LIMIT


def _cp(successes: int, n: int, alpha: float) -> tuple[float, float]:
    low = beta_dist.ppf(alpha / 2, successes, n - successes + 1) if successes > 0 else 0.0
    high = beta_dist.ppf(1 - alpha / 2, successes + 1, n - successes) if successes < n else 1.0
    return float(low), float(high)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.9, 0.99, 1.0])
def test_the_interval_holds_the_observed_rate_and_shrinks_as_n_grows(rate: float) -> None:
    widths = []
    for n in (10, 30, 100, 300, 1000, 3000, 10_000):
        successes = round(rate * n)
        low, high = confidence_sequence(successes, n, ALPHA)
        assert 0.0 <= low <= successes / n <= high <= 1.0
        # the price of peeking: it holds the fixed-n interval at the same level, at most 2.5 times as wide
        cp_low, cp_high = _cp(successes, n, ALPHA)
        assert low <= cp_low + 1e-9
        assert high >= cp_high - 1e-9
        assert high - low <= 2.5 * (cp_high - cp_low)
        widths.append(high - low)
    assert all(a > b for a, b in itertools.pairwise(widths))
    if rate == 0.0:
        assert confidence_sequence(0, 100, ALPHA)[0] == 0.0
    if rate == 1.0:
        assert confidence_sequence(100, 100, ALPHA)[1] == 1.0


@pytest.mark.parametrize(("successes", "n"), [(900, 1000), (50, 100), (0, 40), (40, 40), (9, 10), (1, 1), (993, 1000)])
@pytest.mark.parametrize("alpha", [0.05, 0.001])
def test_consistent_agrees_with_the_bounds(successes: int, n: int, alpha: float) -> None:
    low, high = confidence_sequence(successes, n, alpha)
    for p in np.linspace(0.0, 1.0, 401):
        if min(abs(p - low), abs(p - high)) < 1e-7:
            continue  # the bounds are roots found to 1e-9
        assert consistent(successes, n, float(p), alpha) == (low <= p <= high), p
    # each finite bound is where M_n(p) crosses 1 / alpha, located to within 1e-8
    if low > 0.0:
        assert not consistent(successes, n, low - 1e-8, alpha)
        assert consistent(successes, n, low + 1e-8, alpha)
    if high < 1.0:
        assert consistent(successes, n, high - 1e-8, alpha)
        assert not consistent(successes, n, high + 1e-8, alpha)


@pytest.mark.parametrize(("successes", "n", "p"), [(7, 20, 0.3), (0, 5, 0.5), (12, 12, 0.8), (3, 40, 0.02)])
def test_the_mixture_is_the_integral_the_docstring_states(successes: int, n: int, p: float) -> None:
    # M_n(p) = integral of theta^S (1 - theta)^F under the Beta(1/2, 1/2) prior, over p^S (1 - p)^F
    failures = n - successes
    mixture, _ = quad(
        lambda t: t**successes * (1 - t) ** failures * beta_dist.pdf(t, 0.5, 0.5), 0, 1, epsabs=0, epsrel=1e-10
    )
    expected = math.log(mixture) - successes * math.log(p) - failures * math.log(1 - p)
    assert log_mixture(successes, n, p) == pytest.approx(expected, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize(("successes", "n", "p"), [(7, 20, 0.3), (0, 5, 0.5), (12, 12, 0.8), (300, 400, 0.75)])
def test_the_mixture_is_a_martingale_under_the_true_rate(successes: int, n: int, p: float) -> None:
    # E[M_{n+1} | S_n] = p M_{n+1}(S + 1) + (1 - p) M_{n+1}(S) must equal M_n(S): what Ville's inequality needs
    now = math.exp(log_mixture(successes, n, p))
    then = p * math.exp(log_mixture(successes + 1, n + 1, p)) + (1 - p) * math.exp(log_mixture(successes, n + 1, p))
    assert then == pytest.approx(now, rel=1e-9)


def test_rates_of_exactly_zero_and_one() -> None:
    assert log_mixture(1, 10, 0.0) == math.inf
    assert log_mixture(9, 10, 1.0) == math.inf
    assert consistent(10, 10, 1.0, ALPHA)
    assert consistent(0, 10, 0.0, ALPHA)
    assert not consistent(10, 10, 0.5, ALPHA)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: confidence_sequence(0, 0, ALPHA), "needs at least one observation"),
        (lambda: confidence_sequence(3, 10, 0.0), r"alpha=0.0 must be in \(0, 1\)"),
        (lambda: confidence_sequence(3, 10, 1.0), r"alpha=1.0 must be in \(0, 1\)"),
        (lambda: log_mixture(5, 3, 0.5), "successes=5 must be between 0 and n=3"),
        (lambda: consistent(-1, 3, 0.5, ALPHA), "successes=-1 must be between 0 and n=3"),
    ],
)
def test_bad_inputs_are_rejected(call: object, message: str) -> None:
    with pytest.raises(MeshcheckError, match=message):
        call()  # type: ignore[operator]
