"""Everything the model predicts for one case, and the rate checks planned for it before any request is sent.

The rate checks (success ratio, share of each failure status) are the only statistical ones. Each is a
two-sided :class:`~pytest_meshcheck.verdict.power.RateRule` at the model's value, with the run's
Bonferroni share of the family-wise alpha (``alpha_family / max_rate_checks``) and the profile's delta,
sized by the project's planner (``RateRule.plan``). The sample of an example is the largest any of its
checks needs. A prediction the model marks as uncertain (any warning, a retry breaker that may refuse
retries, possible overflow, ejection that changes who serves) gets no rate check: the model does not
claim a number then, so the suite must not hold it to one.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_meshcheck.expect import (
    EffectivePolicy,
    EjectionPrediction,
    LatencyPrediction,
    Load,
    OverflowPrediction,
    SuccessPrediction,
    effective_policy,
    predict_ejection,
    predict_latency,
    predict_overflow,
    predict_success,
)
from pytest_meshcheck.expect.effective import MAX_UINT32
from pytest_meshcheck.verdict.power import RateRule
from tests.fidelity.cases import SERVICE, Case, topology

RATE_CHECKS_PER_EXAMPLE = 3  # success ratio + up to two failure statuses: the Bonferroni family counts this many
FLOOR_REQUESTS = 200  # even a check that needs fewer gets this many, so rare unmodelled outcomes show up
MAX_REQUESTS = 3000


@dataclass(frozen=True)
class RateCheck:
    """One planned rate check: what is counted, the model's rate and the decision rule."""

    name: str
    status: int | None  # None: 2xx successes; else the share of this final status
    rule: RateRule
    n: int


@dataclass(frozen=True)
class Prediction:
    """The model's view of a case.

    Attributes:
        case: The example.
        policy: The effective policy (what Envoy should enforce).
        load: The model's load.
        success: Success ratio and outcome distribution.
        latency: Latency ceiling, and how a request slowed at every attempt ends.
        overflow: Connection-pool overflow at this concurrency.
        ejections: One ejection prediction per destination fault.
        rates: Planned rate checks.
        skipped: Why a rate check was not planned, if it was not.
        n: Requests to send.
    """

    case: Case
    policy: EffectivePolicy
    load: Load
    success: SuccessPrediction
    latency: LatencyPrediction
    overflow: OverflowPrediction
    ejections: tuple[EjectionPrediction, ...]
    rates: tuple[RateCheck, ...]
    skipped: str
    n: int

    @property
    def overflow_possible(self) -> bool:
        """The pool may answer 503 UO: the model says so, or an open loop meets a finite pool.

        The overflow model is stated for a closed-loop concurrency. An open loop has no bound on requests in
        flight: a burst of arrivals (the engine catching up after a scheduling pause) overflows a small pool
        whatever the mean concurrency (found case ``found/4a117487b76a.yaml``).
        """
        return self.overflow.level != "never" or (self.case.load.kind == "open" and _finite_pool(self.policy))

    @property
    def ejection_possible(self) -> bool:
        """Outlier detection is on and some fault's failures count towards it."""
        return any(e.enabled and e.counts for e in self.ejections)


def mean_request_seconds(case: Case, success: SuccessPrediction | None = None) -> float:
    """A rough mean time per request, to size concurrency so that an example takes about a second."""
    attempts = success.mean_attempts if success is not None else 1.0
    slow = 0.0
    for f in case.faults:
        if f.kind == "latency":
            share = 1.0 if f.instances is None else min(f.instances, 3) / 3
            slow += share * f.rate * f.delay
    per_try = (case.route.get("retries") or {}).get("perTryTimeout")
    if per_try is not None:
        slow = min(slow, float(str(per_try).rstrip("s")))
    client = 0.0
    delay = case.route.get("fault", {}).get("delay")
    if delay:
        client = float(delay["percentage"]["value"]) / 100 * float(str(delay["fixedDelay"]).rstrip("s"))
    # 2 ms of processing per attempt, the attempt's delay, and Envoy's 25 ms-base jittered back-off per retry.
    return 0.002 + attempts * slow + (attempts - 1) * 0.03 + client


def predict(case: Case, *, alpha_check: float, beta: float, delta: float) -> Prediction:
    """Predict ``case`` with the model and plan its rate checks.

    Args:
        case: The example.
        alpha_check: False-fail rate of each rate check (the family-wise alpha's Bonferroni share).
        beta: Miss rate at ``delta``.
        delta: The disagreement between model and mesh each rate check must catch with ``1 - beta``.
    """
    policy = effective_policy(case.policies(), topology(), SERVICE, istio=case.istio)
    faults = [f.model() for f in case.faults]
    load = case.load.model(mean_request_seconds(case))
    success = predict_success(policy, faults, load)
    slow = next((f for f in faults if f.kind == "latency"), None)
    latency = predict_latency(policy, slow) if slow is not None else predict_latency(policy)
    overflow = predict_overflow(policy, load)
    ejections = tuple(predict_ejection(policy, f, load) for f in faults)
    why = _uncertain(success, overflow, ejections)
    if not why and case.load.kind == "open" and _finite_pool(policy):
        why = "an open loop may overflow a finite connection pool (the overflow model is for a closed loop)"
    rates: list[RateCheck] = []
    if not why:
        wanted: list[tuple[str, int | None, float]] = [("success ratio", None, success.p_success)]
        statuses = sorted({o.status for o in success.outcomes if not o.ok}, key=lambda s: -success.p(s))
        if len(statuses) > 1:  # with one failure status its share is 1 - success ratio: already checked
            wanted += [(f"share of final status {s}", s, success.p(s)) for s in statuses[:2]]
        for name, status, p in wanted:
            if not 0.0 < p < 1.0:
                continue  # certain outcomes are exact checks (the status support), not rate checks
            rule = RateRule(p, "two-sided", min(delta, max(p, 1 - p)), alpha=alpha_check, beta=beta, what=name)
            rates.append(RateCheck(name, status, rule, rule.plan().n))
    n = min(MAX_REQUESTS, max([FLOOR_REQUESTS, *(r.n for r in rates)]))
    return Prediction(case, policy, load, success, latency, overflow, ejections, tuple(rates), why, n)


def _finite_pool(policy: EffectivePolicy) -> bool:
    pool = policy.pool
    return min(pool.max_connections, pool.max_pending_requests, pool.max_requests) < MAX_UINT32


def _uncertain(
    success: SuccessPrediction, overflow: OverflowPrediction, ejections: tuple[EjectionPrediction, ...]
) -> str:
    if success.warnings:
        return "the model warns: " + "; ".join(w.effect for w in success.warnings)
    if success.lower_bound is not None:
        return "a retry circuit breaker may refuse retries"
    if overflow.level != "never":
        return f"connection-pool overflow is {overflow.level} at this concurrency"
    if any(e.enabled and e.counts for e in ejections):
        return "outlier ejection changes which instances serve"
    return ""
