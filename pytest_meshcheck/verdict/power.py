"""Rate claims decided with both error rates stated: the false-fail rate alpha and the miss rate beta.

A claim about a rate ("the success ratio is at least 87.5 %", "at most 1 %", "about 10 %") names the
smallest violation that matters, ``delta``. The rule is planned before any request is sent:

* ``alpha``: the chance that a policy which holds the claim exactly fails the check;
* ``beta``: the chance that a policy off by ``delta`` (or more) passes it.

Both are exact binomial sums, not normal approximations: for ``n`` requests the rule accepts the
successes in ``[low, high]``, the largest region whose probability under the claimed rate is at least
``1 - alpha``, and ``n`` is the smallest sample for which the probability of that region under the rate
``delta`` away is at most ``beta``. Because the binomial family has a monotone likelihood ratio, the
error rate at the claimed rate is the worst case over every rate that holds the claim, and the miss
rate at ``delta`` the worst case over every rate farther off.

There is one tolerance concept: ``delta``. An observation outside the acceptance region fails. It is
called *inconclusive* when it is also consistent (at ``alpha``) with a rate within ``delta`` of the
claim: a rate below the claim but not clearly broken by ``delta``. Inconclusive is never a pass.

Why by hand: scipy gives the binomial sums and intervals, but no library plans a two-error-rate exact
binomial test with this acceptance-region form (statsmodels' power functions use normal approximations,
which are off by a factor of several at alpha = 0.001 and rates near 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy.optimize import brentq
from scipy.special import bdtr, bdtrc, bdtrik
from scipy.stats import binomtest, norm

from pytest_meshcheck.error_budget import CHECK_ALPHA
from pytest_meshcheck.errors import MeshcheckError

RateAlternative = Literal["at-least", "at-most", "two-sided"]
RateOutcome = Literal["passed", "failed", "inconclusive"]
DEFAULT_ALPHA = CHECK_ALPHA  # a run's budget over its rate checks (error_budget.py)
DEFAULT_BETA = 0.05
DEFAULT_DELTA = 0.05
_MAX_N = 2_000_000


@lru_cache(maxsize=4096)
def acceptance_region(n: int, p0: float, alternative: RateAlternative, alpha: float) -> tuple[int, int]:
    """The successes ``[low, high]`` a check of ``n`` requests accepts for a claim at rate ``p0``.

    The region is the largest one whose tails under ``p0`` add up to at most ``alpha`` (split equally
    between both tails for a two-sided claim), so a policy at exactly ``p0`` fails with probability
    at most ``alpha``.
    """
    if n < 1:
        raise MeshcheckError(f"n={n} must be at least 1")
    tail = alpha / 2 if alternative == "two-sided" else alpha
    low, high = 0, n
    # Each bound is found from the binomial quantile and then confirmed on the exact sums next to it: the
    # planner's scan asks for thousands of regions, and summing all n + 1 terms for each one made planning
    # a check at alpha 2e-5 take seconds (quadratic in n). ``bdtr``/``bdtrc`` are the functions
    # ``scipy.stats.binom.cdf``/``sf`` evaluate, without their per-call argument handling.
    if alternative in ("at-least", "two-sided"):
        # P(X < c) = cdf(c - 1) <= tail exactly for c up to the first k with cdf(k) > tail.
        c = _quantile_guess(tail, n, p0)
        while c < n and bdtr(c, n, p0) <= tail:
            c += 1
        while c > 0 and bdtr(c - 1, n, p0) > tail:
            c -= 1
        low = c
    if alternative in ("at-most", "two-sided"):
        # P(X > h) = sf(h) <= tail from the smallest such h on.
        h = _quantile_guess(1.0 - tail, n, p0)
        while h < n and bdtrc(h, n, p0) > tail:
            h += 1
        while h > 0 and bdtrc(h - 1, n, p0) <= tail:
            h -= 1
        high = h
    return low, high


def _quantile_guess(q: float, n: int, p: float) -> int:
    """A starting point within a few successes of the ``q`` quantile of Binomial(n, p), inside [0, n]."""
    if p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    k = float(bdtrik(q, n, p))
    return min(n, max(0, math.ceil(k))) if math.isfinite(k) else round(n * p)


def pass_probability(n: int, low: int, high: int, p: float) -> float:
    """Probability that ``n`` requests at true rate ``p`` land in ``[low, high]`` (the check passes)."""
    if low > high:
        return 0.0
    return float(bdtr(high, n, p) - (bdtr(low - 1, n, p) if low > 0 else 0.0))


@dataclass(frozen=True)
class RateRule:
    """A rate claim and the error rates its check must meet.

    Attributes:
        expected: The claimed rate ``p0``.
        alternative: ``at-least`` (fails when the rate is below), ``at-most`` or ``two-sided``.
        delta: The smallest violation that matters: the check must catch a rate ``delta`` away.
        alpha: False-fail rate at ``expected``.
        beta: Miss rate at ``delta`` away.
        what: What the rate measures (``success ratio``, ``share of requests served by v2``).
    """

    expected: float
    alternative: RateAlternative = "at-least"
    delta: float = DEFAULT_DELTA
    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA
    what: str = "success ratio"

    def __post_init__(self) -> None:
        if not 0.0 <= self.expected <= 1.0:
            raise MeshcheckError(f"{self.what}: expected={self.expected!r} must be a proportion between 0 and 1")
        if self.alternative not in ("at-least", "at-most", "two-sided"):
            raise MeshcheckError(f"alternative={self.alternative!r} is unknown; use at-least, at-most or two-sided")
        for name, value in (("alpha", self.alpha), ("beta", self.beta)):
            if not 0.0 < value < 0.5:
                raise MeshcheckError(f"{self.what}: {name}={value!r} must be in (0, 0.5), such as 0.001 or 0.05")
        if not 0.0 < self.delta < 1.0 or not self.alternates():
            raise MeshcheckError(
                f"{self.what}: delta={self.delta!r} leaves no rate to detect around {self.expected:g} "
                f"({self.alternative}); pick a delta such that the rate {self.delta:g} away is still in [0, 1]"
            )

    def alternates(self) -> tuple[float, ...]:
        """The rates ``delta`` away that the check must catch (one or two, inside [0, 1])."""
        out: list[float] = []
        if self.alternative in ("at-least", "two-sided") and self.expected - self.delta >= 0.0:
            out.append(self.expected - self.delta)
        if self.alternative in ("at-most", "two-sided") and self.expected + self.delta <= 1.0:
            out.append(self.expected + self.delta)
        return tuple(out)

    def miss_rate(self, n: int) -> float:
        """Exact chance, with ``n`` requests, that a rate ``delta`` away passes (the worse side)."""
        low, high = acceptance_region(n, self.expected, self.alternative, self.alpha)
        return max(pass_probability(n, low, high, p) for p in self.alternates())

    def false_fail_rate(self, n: int) -> float:
        """Exact chance, with ``n`` requests, that a policy at exactly the claimed rate fails."""
        low, high = acceptance_region(n, self.expected, self.alternative, self.alpha)
        return 1.0 - pass_probability(n, low, high, self.expected)

    def _normal_n(self) -> int:
        p0 = self.expected
        za = float(norm.ppf(1 - (self.alpha / 2 if self.alternative == "two-sided" else self.alpha)))
        zb = float(norm.ppf(1 - self.beta))
        worst = 1
        for p1 in self.alternates():
            n = ((za * math.sqrt(p0 * (1 - p0)) + zb * math.sqrt(p1 * (1 - p1))) / self.delta) ** 2
            worst = max(worst, math.ceil(n))
        return worst

    def plan(self) -> RatePlan:
        """The smallest ``n`` whose exact miss rate at ``delta`` is at most ``beta``.

        Raises:
            MeshcheckError: No sample up to two million requests reaches it (delta far too small).
        """
        return _plan(self)

    def scaled(self, factor: float) -> RateRule:
        """The same claim with ``delta`` multiplied by ``factor`` (a profile's trade of power for time)."""
        if factor == 1.0:
            return self
        room = min(
            self.expected if self.alternative != "at-most" else 1.0,
            1.0 - self.expected if self.alternative != "at-least" else 1.0,
        )
        return replace(self, delta=min(self.delta * factor, room if room > 0 else self.delta))


@lru_cache(maxsize=1024)
def _plan(rule: RateRule) -> RatePlan:
    # beta(n) is a saw-tooth in n (the region moves by whole successes), so a bisection can skip the
    # first n that works; scan upward from well below the normal approximation instead.
    guess = rule._normal_n()
    n = max(1, guess // 3)
    while n <= _MAX_N:
        if rule.miss_rate(n) <= rule.beta:
            return RatePlan(rule, n)
        n += 1 if n < 4 * guess + 200 else max(1, n // 100)
    raise MeshcheckError(
        f"{rule.what}: catching a rate {rule.delta:g} away from {rule.expected:g} with beta={rule.beta:g} needs more "
        f"than {_MAX_N} requests; widen delta"
    )


@dataclass(frozen=True)
class RatePlan:
    """A rule with its planned sample size.

    Attributes:
        rule: The claim and its error-rate targets.
        n: Requests to send.
    """

    rule: RateRule
    n: int

    @property
    def region(self) -> tuple[int, int]:
        """Accepted successes at the planned ``n``."""
        return acceptance_region(self.n, self.rule.expected, self.rule.alternative, self.rule.alpha)

    @property
    def alpha(self) -> float:
        """Exact false-fail rate at the planned ``n``."""
        return self.rule.false_fail_rate(self.n)

    @property
    def beta(self) -> float:
        """Exact miss rate at ``delta``, at the planned ``n``."""
        return self.rule.miss_rate(self.n)

    def at_least(self, n: int) -> RatePlan:
        """This plan, or one with more requests when another check on the same sample needs them."""
        return self if n <= self.n else RatePlan(self.rule, n)


def detectable(rule: RateRule, n: int, power: float) -> tuple[float | None, float | None]:
    """The rates (below, above the claim) that ``n`` requests catch with probability ``power``.

    ``None`` for a side the claim does not test, or when even the farthest rate is caught less often.
    """
    low, high = acceptance_region(n, rule.expected, rule.alternative, rule.alpha)

    def miss(p: float) -> float:
        return pass_probability(n, low, high, p) - (1 - power)

    below = above = None
    if rule.alternative in ("at-least", "two-sided") and rule.expected > 0 and miss(0.0) < 0 < miss(rule.expected):
        below = float(brentq(miss, 0.0, rule.expected, xtol=1e-6))
    if rule.alternative in ("at-most", "two-sided") and rule.expected < 1 and miss(1.0) < 0 < miss(rule.expected):
        above = float(brentq(miss, rule.expected, 1.0, xtol=1e-6))
    return below, above


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one rate check, with what it could have detected.

    Attributes:
        rule: The claim and its targets.
        successes: Requests that met the condition.
        n: Requests observed.
        outcome: ``passed``, ``failed`` (off by at least ``delta``) or ``inconclusive`` (off, but not
            clearly by ``delta``; never a pass).
        region: Accepted successes for this ``n``.
        interval: Clopper-Pearson interval of the observed rate at level ``1 - alpha``.
        alpha: Exact false-fail rate at this ``n``.
        beta: Exact miss rate at ``delta`` at this ``n``.
        caught_below: The rate below the claim caught with probability ``1 - rule.beta`` (or ``None``).
        caught_above: The rate above the claim caught with probability ``1 - rule.beta`` (or ``None``).
    """

    rule: RateRule
    successes: int
    n: int
    outcome: RateOutcome
    region: tuple[int, int]
    interval: tuple[float, float]
    alpha: float
    beta: float
    caught_below: float | None
    caught_above: float | None

    @property
    def passed(self) -> bool:
        """True only for ``passed``."""
        return self.outcome == "passed"

    @property
    def observed(self) -> float:
        """``successes / n``."""
        return self.successes / self.n

    @property
    def detects(self) -> str:
        """What this verdict could detect, in one sentence."""
        what = self.rule.what
        power = f"{(1 - self.rule.beta) * 100:g} %"
        parts = []
        if self.caught_below is not None:
            parts.append(f"a {what} below {_pct(self.caught_below)}")
        if self.caught_above is not None:
            parts.append(f"a {what} above {_pct(self.caught_above)}")
        if not parts:
            return f"too few requests ({self.n}) to catch any {what} with {power} probability"
        return (
            f"would have caught {' or '.join(parts)} with {power} probability; a policy at exactly "
            f"{_pct(self.rule.expected)} fails with probability {self.alpha:.2g}"
        )

    @property
    def summary(self) -> str:
        """One line: claim, observation, interval, outcome."""
        claim = {"at-least": "at least ", "at-most": "at most ", "two-sided": "about "}[self.rule.alternative]
        low, high = self.region
        text = (
            f"{self.rule.what}: claimed {claim}{_pct(self.rule.expected)} (delta {self.rule.delta:.4g}), observed "
            f"{_pct(self.observed)} ({self.successes}/{self.n}), {(1 - self.rule.alpha) * 100:g} % interval "
            f"[{_pct(self.interval[0])}, {_pct(self.interval[1])}]; passes with {low}..{high} successes"
        )
        if self.outcome == "passed":
            return f"{text} -> passed"
        if self.outcome == "failed":
            return f"{text} -> FAILED: off by at least delta"
        return f"{text} -> INCONCLUSIVE (not a pass): off the claim, but not clearly by delta {self.rule.delta:.4g}"


def _pct(p: float) -> str:
    return f"{p * 100:.4g} %"


def decide(rule: RateRule, successes: int, n: int) -> RateDecision:
    """Decide a rate claim on ``successes`` out of ``n`` requests, once.

    Raises:
        MeshcheckError: ``n`` is 0 or the counts are inconsistent.
    """
    if (
        isinstance(successes, bool)
        or not isinstance(successes, int | np.integer)
        or not isinstance(n, int | np.integer)
    ):
        raise MeshcheckError(f"successes={successes!r} and n={n!r} must be integers")
    successes, n = int(successes), int(n)
    if n < 1:
        raise MeshcheckError(f"{rule.what}: no requests were observed (n={n}); a rate check needs at least one")
    if not 0 <= successes <= n:
        raise MeshcheckError(f"successes={successes} must be between 0 and n={n}")
    low, high = acceptance_region(n, rule.expected, rule.alternative, rule.alpha)
    outcome: RateOutcome = "passed"
    if not low <= successes <= high:
        # Off by delta when the observation is also rejected by the same rule shifted by delta. A two-sided
        # claim near 0 or 1 has no rate delta away on one side (99.19 % + 0.05 > 1): an observation beyond
        # that tail (941/941 against 99.19 %) is off the claim, but cannot be off by delta.
        rejected: RateAlternative = "at-least" if successes < low else "at-most"
        shifted = [p for p in rule.alternates() if ("at-least" if p < rule.expected else "at-most") == rejected]
        outcome = "failed" if shifted else "inconclusive"
        for p in shifted:
            lo2, hi2 = acceptance_region(n, p, rejected, rule.alpha)
            if lo2 <= successes <= hi2:
                outcome = "inconclusive"
    ci = binomtest(successes, n).proportion_ci(confidence_level=1 - rule.alpha, method="exact")
    below, above = detectable(rule, n, 1 - rule.beta)
    return RateDecision(
        rule,
        successes,
        n,
        outcome,
        (low, high),
        (float(ci.low), float(ci.high)),
        rule.false_fail_rate(n),
        rule.miss_rate(n),
        below,
        above,
    )
