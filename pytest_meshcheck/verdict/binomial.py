"""Binomial confidence intervals, up-front sample sizes and fixed-sample proportion checks.

A scenario counts ``successes`` out of ``n`` requests and compares the rate with the model's expected
rate. Intervals come from scipy (``binomtest(...).proportion_ci``): Wilson (score) intervals by default,
Clopper-Pearson ("exact", conservative) on request. Deciding with an interval is the same as the matching
test: the two-sided check fails when the level-``confidence`` interval excludes every rate within
``tolerance`` of the expected one, so a correct policy fails with probability at most ``1 - confidence``
(Clopper-Pearson guarantees it; Wilson holds it closely for the sample sizes used here).

Decide ``n`` before running (:func:`sample_size`) and run each check once: repeating a failed run until it
passes turns a 1 % false alarm into a near-certain false pass.
"""

from __future__ import annotations

import math
from typing import Literal

from scipy.stats import beta, binomtest, norm

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.verdict.verdict import Alternative, Interval, Method, Status, Verdict

DEFAULT_CONFIDENCE = 0.99
_SCIPY_METHOD = {"wilson": "wilson", "clopper-pearson": "exact"}
_MAX_N = 10**9


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise MeshcheckError(f"confidence={confidence!r} must be between 0 and 1 (exclusive), such as 0.99")


def _check_counts(successes: int, n: int) -> None:
    if isinstance(successes, bool) or isinstance(n, bool) or not isinstance(successes, int) or not isinstance(n, int):
        raise MeshcheckError(f"successes={successes!r} and n={n!r} must be integers")
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise MeshcheckError(f"successes={successes} must be between 0 and n={n}, and n must not be negative")


def _check_method(method: str) -> None:
    if method not in _SCIPY_METHOD:
        raise MeshcheckError(f"method={method!r} is unknown; use 'wilson' or 'clopper-pearson'")


def proportion_interval(
    successes: int, n: int, *, confidence: float = DEFAULT_CONFIDENCE, method: Method = "wilson"
) -> Interval:
    """Two-sided confidence interval for the proportion ``successes / n``.

    Raises:
        MeshcheckError: ``n`` is 0, the counts are inconsistent, or confidence/method is invalid.
    """
    _check_confidence(confidence)
    _check_counts(successes, n)
    _check_method(method)
    if n == 0:
        raise MeshcheckError("no observations (n=0): a confidence interval needs at least one request")
    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method=_SCIPY_METHOD[method])
    return Interval(float(ci.low), float(ci.high), confidence, method)


def wilson_interval(successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Wilson score interval (scipy)."""
    return proportion_interval(successes, n, confidence=confidence, method="wilson")


def clopper_pearson_interval(successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Clopper-Pearson ("exact") interval (scipy); its coverage is never below ``confidence``."""
    return proportion_interval(successes, n, confidence=confidence, method="clopper-pearson")


def one_sided_bound(
    successes: int,
    n: int,
    side: Literal["upper", "lower"],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    method: Method = "wilson",
) -> Interval:
    """A one-sided bound at ``confidence``: one end of the two-sided interval at level ``2 x confidence - 1``."""
    _check_confidence(confidence)
    two = proportion_interval(successes, n, confidence=2 * confidence - 1, method=method)
    if side == "upper":
        return Interval(0.0, two.high, confidence, method, "upper")
    return Interval(two.low, 1.0, confidence, method, "lower")


def half_width_at(
    expected: float, n: int, *, confidence: float = DEFAULT_CONFIDENCE, method: Method = "wilson"
) -> float:
    """Half-width of the interval for an observation exactly at ``expected`` after ``n`` requests.

    ``expected x n`` need not be a whole number: the Wilson formula and the Clopper-Pearson beta quantiles
    are continuous in it, which makes :func:`sample_size` exact rather than dependent on rounding.
    """
    _check_confidence(confidence)
    _check_method(method)
    alpha = 1 - confidence
    x = expected * n
    if method == "wilson":
        z = float(norm.ppf(1 - alpha / 2))
        return float(z / (1 + z * z / n) * math.sqrt(expected * (1 - expected) / n + z * z / (4 * n * n)))
    low = float(beta.ppf(alpha / 2, x, n - x + 1)) if x > 0 else 0.0
    high = float(beta.ppf(1 - alpha / 2, x + 1, n - x)) if x < n else 1.0
    return (high - low) / 2


def sample_size(
    expected: float, tolerance: float, *, confidence: float = DEFAULT_CONFIDENCE, method: Method = "wilson"
) -> int:
    """Smallest ``n`` whose interval, for an observation at ``expected``, has half-width <= ``tolerance``.

    Plan the run with it before starting the load: for example 0.875 +- 0.03 at 99 % needs 809 requests (Wilson).
    The half-width is largest at 0.5, so a rate near 0 or 1 needs fewer requests.

    Raises:
        MeshcheckError: ``expected`` is outside [0, 1] or ``tolerance`` outside (0, 0.5].
    """
    if not 0.0 <= expected <= 1.0:
        raise MeshcheckError(f"expected={expected!r} must be a proportion between 0 and 1")
    if not 0.0 < tolerance <= 0.5:
        raise MeshcheckError(f"tolerance={tolerance!r} must be in (0, 0.5], such as 0.02 for +-2 points")
    hi = 1
    while half_width_at(expected, hi, confidence=confidence, method=method) > tolerance:
        hi *= 2
        if hi > _MAX_N:
            raise MeshcheckError(f"tolerance={tolerance} needs more than {_MAX_N} requests; widen it")
    lo = hi // 2  # half-width(lo) > tolerance, or lo == 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if half_width_at(expected, mid, confidence=confidence, method=method) <= tolerance:
            hi = mid
        else:
            lo = mid
    return hi


def check_proportion(
    successes: int,
    n: int,
    expected: float,
    *,
    alternative: Alternative = "two-sided",
    tolerance: float = 0.0,
    confidence: float = DEFAULT_CONFIDENCE,
    method: Method = "wilson",
    what: str = "success rate",
) -> Verdict:
    """Check an observed proportion against the expected one, once, with a fixed sample.

    Args:
        successes: Requests that met the condition (such as 2xx answers).
        n: Requests observed.
        expected: The model's rate.
        alternative: ``two-sided`` ("consistent with"), ``at-least`` (fails only when the rate is clearly
            below ``expected``) or ``at-most`` (fails only when clearly above).
        tolerance: Slack around ``expected`` for model imprecision: the check passes when the interval
            reaches ``[expected - tolerance, expected + tolerance]``.
        confidence: Confidence level; a correct policy fails with probability about ``1 - confidence``.
        method: ``wilson`` or ``clopper-pearson``.
        what: What the proportion is, for the message.

    Returns:
        A :class:`Verdict`; ``error`` when ``n`` is 0.
    """
    _check_counts(successes, n)
    _check_confidence(confidence)
    _check_method(method)
    if not 0.0 <= expected <= 1.0:
        raise MeshcheckError(f"expected={expected!r} must be a proportion between 0 and 1")
    if tolerance < 0:
        raise MeshcheckError(f"tolerance={tolerance!r} must not be negative")
    if alternative not in ("two-sided", "at-least", "at-most"):
        raise MeshcheckError(f"alternative={alternative!r} is unknown; use 'two-sided', 'at-least' or 'at-most'")

    def verdict(status: Status, interval: Interval | None, detail: str = "") -> Verdict:
        return Verdict(
            status,
            expected,
            successes / n if n else None,
            successes,
            n,
            interval,
            confidence,
            method,
            alternative=alternative,
            tolerance=tolerance,
            what=what,
            detail=detail,
        )

    if n == 0:
        return verdict("error", None, "no requests were observed")
    low_ok, high_ok = expected - tolerance, expected + tolerance
    if alternative == "two-sided":
        interval = proportion_interval(successes, n, confidence=confidence, method=method)
        passed = interval.low <= high_ok and interval.high >= low_ok
    elif alternative == "at-least":
        interval = one_sided_bound(successes, n, "upper", confidence=confidence, method=method)
        passed = interval.high >= low_ok
    else:
        interval = one_sided_bound(successes, n, "lower", confidence=confidence, method=method)
        passed = interval.low <= high_ok
    detail = ""
    if passed and tolerance > 0:
        needed = sample_size(expected, tolerance, confidence=confidence, method=method)
        if n < needed:
            detail = f"only {n} requests: +-{tolerance:g} at {confidence * 100:g}% needs {needed}, so this pass is weak"
    return verdict("passed" if passed else "failed", interval, detail)
