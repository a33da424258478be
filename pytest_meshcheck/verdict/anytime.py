"""A confidence sequence for a proportion: valid however the sample size was chosen, even after peeking.

A sequential test stops when its own evidence is clear, so a fixed-sample interval computed on the same
stream afterwards no longer has its stated coverage. The model-consistency check of a sequential run uses
this instead: Robbins' beta-binomial mixture martingale. For a candidate rate ``p``,

    M_n(p) = B(a + S, b + n - S) / B(a, b) / (p^S (1 - p)^(n - S)),

is a nonnegative martingale with mean 1 when ``p`` is the true rate, so by Ville's inequality the chance
that it ever reaches ``1 / alpha`` is at most ``alpha``: ``{p : M_n(p) < 1 / alpha}`` covers the true
rate at every ``n`` at once with probability at least ``1 - alpha`` (Howard, Ramdas et al., "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021, section 3.2).

Why by hand: the formula is three log-beta calls. The packages that implement confidence sequences
(``confseq``, last released in 2023; ``expectation`` and ``sequential-analysis``, young single-author
packages outside PyPI's 15,000 most downloaded) would be a heavier and riskier dependency than that.
"""

from __future__ import annotations

import math

from scipy.optimize import brentq
from scipy.special import betaln

from pytest_meshcheck.errors import MeshcheckError

# Jeffreys' prior: the mixture favours neither end, and its interval is close to the fixed-sample one.
_A = _B = 0.5


def log_mixture(successes: int, n: int, p: float) -> float:
    """``log M_n(p)``: how strongly ``successes`` out of ``n`` speak against the rate ``p``."""
    if not 0 <= successes <= n:
        raise MeshcheckError(f"successes={successes} must be between 0 and n={n}")
    failures = n - successes
    if p <= 0.0:
        return math.inf if successes else betaln(_A, _B + n) - betaln(_A, _B)
    if p >= 1.0:
        return math.inf if failures else betaln(_A + n, _B) - betaln(_A, _B)
    return float(
        betaln(_A + successes, _B + failures) - betaln(_A, _B) - successes * math.log(p) - failures * math.log1p(-p)
    )


def consistent(successes: int, n: int, p: float, alpha: float) -> bool:
    """True when ``p`` lies in the level-``1 - alpha`` confidence sequence after ``n`` observations."""
    return log_mixture(successes, n, p) < math.log(1 / alpha)


def confidence_sequence(successes: int, n: int, alpha: float) -> tuple[float, float]:
    """The confidence sequence's interval ``[low, high]`` after ``n`` observations.

    Raises:
        MeshcheckError: ``n`` is 0 or ``alpha`` is outside (0, 1).
    """
    if n < 1:
        raise MeshcheckError("a confidence sequence needs at least one observation")
    if not 0.0 < alpha < 1.0:
        raise MeshcheckError(f"alpha={alpha!r} must be in (0, 1)")
    bound = math.log(1 / alpha)
    mle = successes / n

    def over(p: float) -> float:
        return log_mixture(successes, n, p) - bound

    low = 0.0 if over(0.0) < 0 else float(brentq(over, 0.0, mle, xtol=1e-9)) if mle > 0 else 0.0
    high = 1.0 if over(1.0) < 0 else float(brentq(over, mle, 1.0, xtol=1e-9)) if mle < 1 else 1.0
    return low, high
