"""Binomial confidence intervals for a proportion (scipy's ``binomtest(...).proportion_ci``).

Wilson (score) intervals by default, Clopper-Pearson ("exact", conservative) on request. They describe an
observation; rate claims are decided by :mod:`pytest_meshcheck.verdict.power`, which plans the sample for
both error rates.
"""

from __future__ import annotations

from typing import Literal

from scipy.stats import binomtest

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.verdict.verdict import Interval, Method

DEFAULT_CONFIDENCE = 0.99
_SCIPY_METHOD = {"wilson": "wilson", "clopper-pearson": "exact"}


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
