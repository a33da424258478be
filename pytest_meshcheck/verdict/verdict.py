"""The outcome of one statistical check, with the message a failing test shows.

A :class:`Verdict` says what was expected, what was observed, the interval, the sample size and the
confidence. Callers add the policy lines the expectation rests on and the report path with
:meth:`Verdict.with_context`; the message then carries them too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Status = Literal["passed", "failed", "error"]
Alternative = Literal["two-sided", "at-least", "at-most"]
Method = Literal["wilson", "clopper-pearson", "confidence-sequence"]
Side = Literal["two-sided", "upper", "lower"]
_NAMES = {"wilson": "Wilson", "clopper-pearson": "Clopper-Pearson", "confidence-sequence": "anytime-valid"}


@dataclass(frozen=True)
class Interval:
    """A confidence interval (or one-sided bound) for a proportion.

    Attributes:
        low: Lower end (0 for an upper bound).
        high: Upper end (1 for a lower bound).
        confidence: Confidence level, such as 0.99.
        method: ``wilson`` or ``clopper-pearson``.
        side: ``two-sided``, or ``upper``/``lower`` for a one-sided bound.
    """

    low: float
    high: float
    confidence: float
    method: Method
    side: Side = "two-sided"

    @property
    def half_width(self) -> float:
        """Half the width of the interval."""
        return (self.high - self.low) / 2

    def contains(self, p: float) -> bool:
        """True when ``p`` lies in the interval (ends included)."""
        return self.low <= p <= self.high

    def __str__(self) -> str:
        level = f"{self.confidence * 100:g}% {_NAMES[self.method]}"
        if self.side == "upper":
            return f"{level} upper bound {self.high:.4f}"
        if self.side == "lower":
            return f"{level} lower bound {self.low:.4f}"
        return f"{level} interval [{self.low:.4f}, {self.high:.4f}]"


@dataclass(frozen=True)
class Verdict:
    """Result of comparing an observed proportion with an expected one.

    Attributes:
        status: ``passed``, ``failed``, or ``error`` when the check could not be evaluated.
        expected: The expected proportion.
        observed: ``successes / n``, or ``None`` without observations.
        successes: Requests that met the condition.
        n: Requests observed.
        interval: The confidence interval or one-sided bound the decision used.
        confidence: Confidence level, such as 0.99.
        method: ``wilson``, ``clopper-pearson`` or ``sprt``.
        alternative: ``two-sided``, ``at-least`` or ``at-most``.
        tolerance: Slack allowed around ``expected``.
        what: What the proportion measures (``success rate``, ``share of 503 UO``).
        detail: One more sentence, such as a warning that the sample was small.
        policy_lines: The policy fields the expectation rests on (filled by the caller).
        report_path: Where the scenario report was written (filled by the caller).

    Example::

        v = SequentialTest(0.875, 0.1, alpha=0.001, beta=0.05).verdict()
        v = v.with_context(policy_lines=pred.explain(), report_path="reports/test_retry.html")
        assert v.passed, v.message
    """

    status: Status
    expected: float
    observed: float | None
    successes: int
    n: int
    interval: Interval | None
    confidence: float
    method: str
    alternative: Alternative = "two-sided"
    tolerance: float = 0.0
    what: str = "success rate"
    detail: str = ""
    policy_lines: tuple[str, ...] = ()
    report_path: str | None = None

    @property
    def passed(self) -> bool:
        """True only for ``passed``."""
        return self.status == "passed"

    @property
    def summary(self) -> str:
        """One line: expected vs observed, the interval, n and the outcome."""
        claim = {"two-sided": "", "at-least": "at least ", "at-most": "at most "}[self.alternative]
        slack = f" +-{self.tolerance:g}" if self.tolerance else ""
        text = f"{self.what}: expected {claim}{self.expected:.4f}{slack}, "
        if self.observed is None:
            text += f"observed nothing (n={self.n})"
        else:
            text += f"observed {self.observed:.4f} ({self.successes}/{self.n})"
        if self.interval is not None:
            text += f"; {self.interval}"
        text += f" -> {self.status.upper() if self.status != 'passed' else self.status}"
        return text + (f" ({self.detail})" if self.detail else "")

    @property
    def message(self) -> str:
        """The summary, then the policy lines and the report path when the caller gave them."""
        lines = [self.summary]
        if self.policy_lines:
            lines.append("policy:")
            lines += [f"  {line}" for line in self.policy_lines]
        if self.report_path:
            lines.append(f"report: {self.report_path}")
        return "\n".join(lines)

    def with_context(
        self, *, policy_lines: list[str] | tuple[str, ...] | None = None, report_path: str | None = None
    ) -> Verdict:
        """Return a copy with the policy lines and/or report path filled in."""
        return replace(
            self,
            policy_lines=tuple(policy_lines) if policy_lines is not None else self.policy_lines,
            report_path=report_path if report_path is not None else self.report_path,
        )

    def __str__(self) -> str:
        return self.message
