"""Turn a scenario's declared rates into decision rules and one sample size, before any request is sent.

Pure: it needs the model's prediction and the settings, never a mesh, so the power of every shipped
scenario can be computed (and tested) without running one.

Each rate check is a :class:`~pytest_meshcheck.verdict.power.RateRule` with the run's alpha and beta and
the expectation's delta (scaled by the profile). The sample is the largest any check needs. One more
requirement makes strict expected failures trustworthy: when the model, reading the active policy,
predicts a rate that breaks a claim, the claim's check is also planned to fail at that predicted rate
with probability at least ``1 - alpha`` (its miss rate there is ``alpha``, not ``beta``). An as-written
claim that Istio cannot hold then XPASSes with probability at most alpha, under every profile.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from scipy.stats import binom

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.harness.declare import RateExpectation
from pytest_meshcheck.verdict.power import DEFAULT_DELTA, RateRule

# Beyond this the model's value is too close to a claim to plan a decisive check on it.
MAX_REFUTATION_N = 20_000
MAX_REQUESTS = 50_000


@dataclass(frozen=True)
class PlannedRate:
    """One rate check, planned.

    Attributes:
        expectation: What was declared.
        rule: The decision rule (claimed rate, alternative, delta, alpha, beta).
        n_needed: Requests this check needs on its own.
        model_value: The model's rate for the same measure, when known.
        refutation: When the model breaks the claim: the rule planned to fail at the model's rate.
        note: Why the plan is weaker than stated, if it is (empty otherwise).
    """

    expectation: RateExpectation
    rule: RateRule
    n_needed: int
    model_value: float | None = None
    refutation: RateRule | None = None
    note: str = ""


def _room(expected: float, alternative: str) -> float:
    sides = []
    if alternative in ("at-least", "two-sided"):
        sides.append(expected)
    if alternative in ("at-most", "two-sided"):
        sides.append(1.0 - expected)
    return max(sides)


def rate_rule(
    expectation: RateExpectation,
    expected: float,
    *,
    alpha: float,
    beta: float,
    delta_scale: float = 1.0,
    default_delta: float = DEFAULT_DELTA,
) -> RateRule:
    """The decision rule of one declared rate, with the profile's delta scale applied.

    Raises:
        MeshcheckError: The claim leaves no rate to detect (such as ``at_least=0``).
    """
    delta = (expectation.delta if expectation.delta is not None else default_delta) * delta_scale
    room = _room(expected, expectation.alternative)
    if room <= 0.0:
        raise MeshcheckError(
            f"{expectation.name}: {expectation.alternative} {expected:g} holds for every rate; nothing to check"
        )
    return RateRule(
        expected, expectation.alternative, min(delta, room), alpha=alpha, beta=beta, what=measured(expectation)
    )


def measured(expectation: RateExpectation) -> str:
    """What the rate measures, for sentences: ``success ratio`` from ``claim: success ratio at least 87.50%``."""
    text = expectation.name.split(": ", 1)[-1]
    return re.split(r" (?:about|at least|at most|predicted) ", text + " ", maxsplit=1)[0].strip()


def refutes(rule: RateRule, model_value: float) -> float:
    """How far the model's rate lies on the failing side of the claim (0 when it holds the claim)."""
    if rule.alternative == "at-least":
        return max(0.0, rule.expected - model_value)
    if rule.alternative == "at-most":
        return max(0.0, model_value - rule.expected)
    return abs(model_value - rule.expected)


def plan_rate(
    expectation: RateExpectation,
    expected: float,
    model_value: float | None,
    *,
    alpha: float,
    beta: float,
    delta_scale: float = 1.0,
) -> PlannedRate:
    """Plan one rate check (see the module docstring)."""
    rule = rate_rule(expectation, expected, alpha=alpha, beta=beta, delta_scale=delta_scale)
    n = requests_for_denominator(rule.plan().n, expectation.of_requests, alpha)
    planned = PlannedRate(expectation, rule, n, model_value)
    if expectation.role != "claim" or model_value is None:
        return planned
    off = refutes(rule, model_value)
    if off <= 1e-12:
        return planned
    refutation = replace(rule, delta=off, beta=alpha)
    try:
        n_refute = refutation.plan().n
    except MeshcheckError:
        n_refute = MAX_REFUTATION_N + 1
    if n_refute > MAX_REFUTATION_N:
        note = (
            f"the model predicts {model_value:.4%}, only {off:.4g} off the claim: too close to plan a decisive "
            f"check (it would need over {MAX_REFUTATION_N} requests), so the outcome is close to a coin toss"
        )
        return replace(planned, note=note)
    n_refute = requests_for_denominator(n_refute, expectation.of_requests, alpha)
    return replace(planned, refutation=refutation, n_needed=max(n, n_refute))


def requests_for_denominator(needed: int, share: float, alpha: float) -> int:
    """Requests to send so that a check counting only a ``share`` of them gets ``needed``, except w.p. alpha."""
    if share >= 1.0:
        return needed
    total = math.ceil(needed / share)
    while binom.ppf(alpha, total, share) < needed:
        total += max(1, total // 200)
    return total


def sample_size(rates: list[PlannedRate], floor: int = 1) -> int:
    """The requests a scenario sends: the most any of its rate checks needs.

    Raises:
        MeshcheckError: More than :data:`MAX_REQUESTS`; the message names the check and how to fix it.
    """
    n = max([floor, *(r.n_needed for r in rates)])
    if n > MAX_REQUESTS:
        worst = max(rates, key=lambda r: r.n_needed)
        raise MeshcheckError(
            f"{worst.expectation.name}: detecting a rate {worst.rule.delta:g} away from {worst.rule.expected:g} with "
            f"alpha={worst.rule.alpha:g} and beta={worst.rule.beta:g} needs {n} requests (over {MAX_REQUESTS}); "
            "declare a larger delta= for this check"
        )
    return n
