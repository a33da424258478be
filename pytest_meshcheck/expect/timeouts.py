"""How long a request may take, and how a slow destination ends it (504 ``UT`` or ``URX,UT``).

Envoy rules used (ground truth §2, notes §1.5-§1.6, §2):

* the route timeout covers every attempt and back-off; it is never retried;
* a per-try timeout ``>=`` a non-zero route timeout is ignored;
* a per-try timeout is a local reset, retried only when ``retry_on`` has ``5xx``, ``gateway-error`` or
  ``reset``;
* retry n waits U(0, min(base x 2^(n-1), 10 x base)), base 25 ms unless ``retries.backoff`` is honoured;
* a client-side fault delay happens before the router and so outside the route timeout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.expect.effective import EffectivePolicy, EffectiveRetry
from pytest_meshcheck.expect.model import DestinationFault, LatencyPrediction, Reason

TIMEOUT_RETRY_TOKENS = ("5xx", "gateway-error", "reset")


def effective_per_try_timeout(policy: EffectivePolicy) -> tuple[float | None, Reason | None]:
    """The per-try timeout Envoy applies, and a reason when the configured one is ignored.

    Envoy ignores ``per_try_timeout`` when it is ``>=`` a non-zero route timeout (``FilterUtility::finalTimeout``).
    """
    per_try = policy.retry.per_try_timeout
    if per_try is None:
        return None, None
    if policy.timeout is not None and per_try >= policy.timeout:
        cited = policy.reasons.get("retry.per_try_timeout")
        return None, Reason(
            cited.field if cited else None,
            f"{per_try:g}s",
            f"ignored: perTryTimeout >= route timeout {policy.timeout:g}s, so only the route timeout applies",
            cited.source if cited else "route retry policy",
            cited.location if cited else None,
        )
    return per_try, None


def timeout_retry_token(retry: EffectiveRetry) -> str | None:
    """The ``retry_on`` token that makes Envoy retry a per-try timeout, or ``None``."""
    if retry.num_retries == 0:
        return None
    return next((t for t in retry.retry_on if t in TIMEOUT_RETRY_TOKENS), None)


def backoff_ranges(retry: EffectiveRetry) -> tuple[tuple[float, float], ...]:
    """``(min, max)`` seconds Envoy waits before retry 1, 2, ... (fully jittered exponential back-off)."""
    return tuple(
        (0.0, min(retry.backoff_base * 2 ** (n - 1), retry.backoff_max)) for n in range(1, retry.num_retries + 1)
    )


@dataclass(frozen=True)
class _End:
    time: float
    status: int | None
    flags: str
    attempts: int


def _walk(
    delay: float, per_try: float | None, timeout: float | None, retried: bool, retries: int, waits: list[float]
) -> _End:
    """Follow one request whose every attempt takes ``delay`` seconds, with the given back-off waits."""
    t = 0.0
    for attempt in range(retries + 1):
        if attempt:
            t += waits[attempt - 1]
            if timeout is not None and t >= timeout:
                return _End(timeout, 504, "UT", attempt)
        if per_try is not None and delay >= per_try:
            if timeout is not None and t + per_try >= timeout:
                return _End(timeout, 504, "UT", attempt + 1)
            t += per_try
            if retried and attempt < retries:
                continue
            return _End(t, 504, "URX,UT" if retried and retries else "UT", attempt + 1)
        if timeout is not None and t + delay >= timeout:
            return _End(timeout, 504, "UT", attempt + 1)
        return _End(t + delay, None, "-", attempt + 1)
    raise AssertionError("unreachable: the last attempt always ends the request")  # pragma: no cover


def latency_ceiling(policy: EffectivePolicy) -> float | None:
    """Upper bound on the router's time for any request, or ``None`` when nothing bounds it."""
    per_try, _ = effective_per_try_timeout(policy)
    bound = None
    if per_try is not None:
        bound = (policy.retry.num_retries + 1) * per_try + sum(hi for _, hi in backoff_ranges(policy.retry))
    if policy.timeout is not None:
        bound = policy.timeout if bound is None else min(bound, policy.timeout)
    return None if bound is None else round(bound, 9)


def predict_latency(policy: EffectivePolicy, fault: DestinationFault | None = None) -> LatencyPrediction:
    """Predict the latency bounds of a call, and how a request ends when every attempt it makes is slow.

    Args:
        policy: The effective policy of the call.
        fault: A ``latency`` fault; ``None`` models a destination that never answers.

    Returns:
        The ceiling, the time range and status/flags of a request slowed at every attempt, with reasons.
    """
    retry = policy.retry
    per_try, ignored = effective_per_try_timeout(policy)
    token = timeout_retry_token(retry)
    reasons: list[Reason] = list(policy.reason("timeout", "retry.attempts", "retry.per_try_timeout"))
    warnings: list[Reason] = []
    if ignored is not None:
        reasons.append(ignored)
    if per_try is not None:
        rc = policy.reasons.get("retry.retry_on")
        reasons.append(
            Reason(
                rc.field if rc else None,
                ",".join(retry.retry_on),
                f"per-try timeouts are retried ('{token}' covers them)"
                if token
                else "per-try timeouts are NOT retried: retryOn lacks 5xx, gateway-error and reset; the first one "
                "ends the request with 504 UT",
                rc.source if rc else "route retry policy",
                rc.location if rc else None,
            )
        )
    ranges = backoff_ranges(retry)
    if ranges:
        reasons.extend(policy.reason("retry.backoff"))
    if fault is not None and fault.kind != "latency":
        raise MeshcheckError(
            f"predict_latency needs a DestinationFault of kind 'latency', got kind={fault.kind!r}; "
            "use predict_success for errors, resets and refused connections"
        )
    delay = fault.delay if fault is not None else math.inf
    retried = token is not None
    lo = _walk(delay, per_try, policy.timeout, retried, retry.num_retries, [0.0] * len(ranges))
    hi = _walk(delay, per_try, policy.timeout, retried, retry.num_retries, [h for _, h in ranges])
    if (lo.status, lo.flags) != (hi.status, hi.flags):
        warnings.append(
            Reason(
                None,
                f"{lo.flags} or {hi.flags}",
                "the random back-off decides whether the route timeout or the last per-try timeout fires first",
                "Envoy jittered back-off",
            )
        )
    slow: tuple[float, float] | None = (round(lo.time, 9), round(hi.time, 9))
    if math.isinf(lo.time):
        slow = None
        warnings.append(
            Reason(
                None,
                "none",
                "no timeout bounds the request: it waits as long as the destination does",
                "Istio default timeout 0s",
            )
        )
    if fault is not None and fault.instances is not None and fault.affected(policy.hosts) < policy.hosts:
        reasons.append(
            Reason(
                None,
                fault.describe(),
                "the slow path is for requests whose every attempt lands on a slow "
                "instance; predict_success gives their share",
                "latency model",
            )
        )
    client = None
    if policy.fault.delay_fraction > 0:
        client = (policy.fault.delay, policy.fault.delay_fraction)
        reasons.extend(policy.reason("fault.delay"))
    status = lo.status if lo.status == hi.status else 504
    return LatencyPrediction(
        latency_ceiling(policy),
        per_try,
        policy.timeout,
        max(lo.attempts, hi.attempts),
        slow,
        status,
        lo.flags if lo.flags == hi.flags else f"{lo.flags}|{hi.flags}",
        ranges,
        client,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
    )
