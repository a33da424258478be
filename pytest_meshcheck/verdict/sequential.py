"""Wald's sequential probability ratio test (SPRT): stop a load run early once the answer is clear.

The test weighs H0 "the rate is the expected p0" against H1 "the rate is p1 = p0 -/+ tolerance" after
every request. A clearly healthy or clearly broken policy is decided after far fewer requests than the
fixed-sample check needs.

The boundaries are Ville's, not Wald's approximations: fail once the likelihood ratio of H1 over H0
reaches ``1 / alpha``, pass once it falls to ``beta``. The likelihood ratio is a martingale under H0 (and
its inverse under H1), so Ville's inequality bounds the false-fail rate by ``alpha`` and the miss rate by
``beta`` exactly, whereas Wald's ``(1 - beta) / alpha`` only bounds it by ``alpha / (1 - beta)``.

It is one pre-declared experiment. It must never be used to rerun until pass: restarting it after a
failure, switching to the fixed-sample check after a failed SPRT, or feeding it more requests after it
decided all inflate the chance of passing a broken policy. :class:`SequentialTest` therefore refuses
updates once decided; a new question needs a new, independent run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.verdict.anytime import confidence_sequence
from pytest_meshcheck.verdict.binomial import DEFAULT_CONFIDENCE
from pytest_meshcheck.verdict.verdict import Alternative, Interval, Status, Verdict

Decision = Literal["continue", "pass", "fail", "undecided"]
Direction = Literal["below", "above", "both"]
_ALTERNATIVE: dict[Direction, Alternative] = {"below": "at-least", "above": "at-most", "both": "two-sided"}


@dataclass
class _Side:
    """One one-sided SPRT: log-likelihood ratio of H1 (p1) over H0 (p0) and its two boundaries."""

    p1: float
    alpha: float
    beta: float
    on_success: float
    on_failure: float
    accept_h0: float
    accept_h1: float
    llr: float = 0.0
    state: Literal["continue", "h0", "h1"] = "continue"

    @classmethod
    def build(cls, p0: float, p1: float, alpha: float, beta: float) -> _Side:
        return cls(
            p1,
            alpha,
            beta,
            math.log(p1 / p0),
            math.log((1 - p1) / (1 - p0)),
            math.log(beta),
            math.log(1 / alpha),
        )

    def update(self, success: bool) -> None:
        if self.state != "continue":
            return
        self.llr += self.on_success if success else self.on_failure
        if self.llr >= self.accept_h1:
            self.state = "h1"
        elif self.llr <= self.accept_h0:
            self.state = "h0"


class SequentialTest:
    """Wald SPRT for a proportion, decided after each observation.

    Args:
        expected: p0, the rate the model predicts, strictly between 0 and 1.
        tolerance: Distance to the alternative p1 = expected - tolerance (``below``), + tolerance
            (``above``), or both sides (``both``: two one-sided tests, each at alpha / 2).
        direction: Which deviation counts as failure; ``below`` suits success rates.
        confidence: alpha = beta = 1 - confidence, unless ``alpha``/``beta`` are given.
        alpha: False-fail rate (the chance a policy at ``expected`` fails).
        beta: Miss rate (the chance a policy at the alternative passes).
        max_n: Stop with ``undecided`` after this many observations (truncation).
        what: What the proportion measures, for the message.

    Example::

        test = SequentialTest(0.875, 0.1, max_n=2000)
        for ok in results:            # booleans, in arrival order
            if test.update(ok) != "continue":
                break
        verdict = test.verdict()

    Raises:
        MeshcheckError: Parameters outside their ranges.
    """

    def __init__(
        self,
        expected: float,
        tolerance: float,
        *,
        direction: Direction = "below",
        confidence: float = DEFAULT_CONFIDENCE,
        max_n: int | None = None,
        what: str = "success rate",
        alpha: float | None = None,
        beta: float | None = None,
    ) -> None:
        if not 0.0 < expected < 1.0:
            raise MeshcheckError(
                f"SPRT expected={expected!r} must be strictly between 0 and 1: a rate of exactly 0 or 1 makes one "
                "outcome impossible; use a fixed-sample RateRule (pytest_meshcheck.verdict.power) instead"
            )
        if not 0.0 < confidence < 1.0:
            raise MeshcheckError(f"confidence={confidence!r} must be between 0 and 1 (exclusive), such as 0.99")
        if direction not in ("below", "above", "both"):
            raise MeshcheckError(f"direction={direction!r} is unknown; use 'below', 'above' or 'both'")
        if max_n is not None and max_n < 1:
            raise MeshcheckError(f"max_n={max_n!r} must be a positive number of observations, or None")
        alpha = alpha if alpha is not None else 1 - confidence
        beta = beta if beta is not None else 1 - confidence
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not 0.0 < value < 0.5:
                raise MeshcheckError(f"SPRT {name}={value!r} must be in (0, 0.5), such as 0.001 or 0.05")
        self.alpha, self.beta = alpha, beta
        side_alpha = alpha / 2 if direction == "both" else alpha  # keeps the overall false-failure rate at alpha
        sides: list[_Side] = []
        if direction in ("below", "both"):
            if not 0.0 < expected - tolerance < expected:
                raise MeshcheckError(
                    f"tolerance={tolerance!r} must be in (0, {expected}) so that p1 = expected - tolerance > 0"
                )
            sides.append(_Side.build(expected, expected - tolerance, side_alpha, beta))
        if direction in ("above", "both"):
            if not expected < expected + tolerance < 1.0:
                raise MeshcheckError(
                    f"tolerance={tolerance!r} must be in (0, {1 - expected:g}) so that p1 = expected + tolerance < 1"
                )
            sides.append(_Side.build(expected, expected + tolerance, side_alpha, beta))
        self.expected = expected
        self.tolerance = tolerance
        self.direction = direction
        self.confidence = confidence
        self.max_n = max_n
        self.what = what
        self.n = 0
        self.successes = 0
        self._sides = sides

    @property
    def decision(self) -> Decision:
        """The state: ``fail``, ``pass``, ``continue``, or ``undecided`` at ``max_n``.

        ``fail`` once any side accepts its H1; ``pass`` once every side accepts H0.
        """
        if any(s.state == "h1" for s in self._sides):
            return "fail"
        if all(s.state == "h0" for s in self._sides):
            return "pass"
        if self.max_n is not None and self.n >= self.max_n:
            return "undecided"
        return "continue"

    @property
    def alternatives(self) -> tuple[float, ...]:
        """The alternative rate of each side (p1)."""
        return tuple(s.p1 for s in self._sides)

    @property
    def llr(self) -> tuple[float, ...]:
        """Current log-likelihood ratio of each side."""
        return tuple(s.llr for s in self._sides)

    def update(self, success: bool) -> Decision:
        """Add one observation and return the decision.

        Raises:
            MeshcheckError: The test has already decided; see the module docstring.
        """
        if self.decision != "continue":
            raise MeshcheckError(
                f"this SPRT already decided '{self.decision}' after {self.n} observations; it is one pre-declared "
                "experiment and must not be extended or rerun until it passes. Report its verdict()."
            )
        self.n += 1
        self.successes += bool(success)
        for side in self._sides:
            side.update(bool(success))
        return self.decision

    def update_many(self, outcomes: Iterable[bool]) -> Decision:
        """Feed observations in order until a decision; later ones are not consumed."""
        for ok in outcomes:
            if self.update(ok) != "continue":
                break
        return self.decision

    def average_sample_number(self, under: Literal["h0", "h1"] = "h0") -> float:
        """Wald's approximate expected number of observations when H0 (or H1) is true.

        Useful to size ``max_n``; for a two-sided test it is the larger of the two sides.
        """
        worst = 0.0
        for s in self._sides:
            rate = self.expected if under == "h0" else s.p1
            drift = rate * s.on_success + (1 - rate) * s.on_failure
            # Wald: E[N] = (P(accept H0) x log B + P(accept H1) x log A) / E[log-likelihood step]
            p_h0 = 1 - s.alpha if under == "h0" else s.beta
            worst = max(worst, (p_h0 * s.accept_h0 + (1 - p_h0) * s.accept_h1) / drift)
        return worst

    def verdict(self) -> Verdict:
        """The verdict so far: passed, failed, or error when undecided (or not run)."""
        decision = self.decision
        # The SPRT chose n by looking at the data, so a fixed-sample interval would overstate its coverage.
        interval = None
        if self.n:
            low, high = confidence_sequence(self.successes, self.n, self.alpha)
            interval = Interval(low, high, 1 - self.alpha, "confidence-sequence")
        alts = {
            "below": f"{self.expected - self.tolerance:.4f}",
            "above": f"{self.expected + self.tolerance:.4f}",
            "both": f"{self.expected - self.tolerance:.4f} or {self.expected + self.tolerance:.4f}",
        }
        h1 = alts[self.direction]
        risk = f"alpha = {self.alpha:g}, beta = {self.beta:g}"
        status: Status
        if decision == "pass":
            status, detail = "passed", f"SPRT accepted p = {self.expected:.4f} over p = {h1} after {self.n} ({risk})"
        elif decision == "fail":
            status, detail = "failed", f"SPRT accepted p = {h1} over p = {self.expected:.4f} after {self.n} ({risk})"
        else:
            status = "error"
            detail = (
                f"SPRT undecided after {self.n} observations"
                + (f" (max_n {self.max_n})" if self.max_n else "")
                + "; do not rerun it: plan a fixed-sample RateRule for the next, independent run"
            )
        return Verdict(
            status,
            self.expected,
            self.successes / self.n if self.n else None,
            self.successes,
            self.n,
            interval,
            self.confidence,
            "sprt",
            alternative=_ALTERNATIVE[self.direction],
            tolerance=self.tolerance,
            what=self.what,
            detail=detail,
        )
