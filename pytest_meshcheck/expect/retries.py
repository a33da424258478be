"""Success probability of a call under destination faults, given the route's retry policy.

The model follows one downstream request through its attempts (ground truth §1, notes §1):

* each attempt lands on an instance chosen by the load balancer; with the ``previous_hosts`` predicate a
  retry re-picks (up to 5 more times) when it lands on a host already tried;
* the attempt fails as the faults at that instance dictate, and the failure is retried only when a
  ``retry_on`` token covers it (:func:`retry_token`);
* the route timeout cuts the request (using the mean back-off), a client-side abort never reaches the
  router, and a missing subset cluster answers ``503 NC``.

With failures independent per attempt at rate p on every instance this reduces to
``1 - p ** (attempts + 1)``. Per-instance faults are exact for LEAST_REQUEST and RANDOM at equal load
(Envoy's power-of-two-choices picks uniformly when no host is busier) and for ROUND_ROBIN at concurrency
1 (a Markov chain over the round-robin pointer).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from pytest_meshcheck.expect.effective import HOST_SELECTION_RETRY_MAX_ATTEMPTS, MAX_UINT32, EffectivePolicy
from pytest_meshcheck.expect.model import DestinationFault, Load, Outcome, Reason, SuccessPrediction
from pytest_meshcheck.expect.timeouts import backoff_ranges, effective_per_try_timeout

Failure = Literal["status", "reset", "refused", "per-try timeout"]
_SELECTIONS = HOST_SELECTION_RETRY_MAX_ATTEMPTS + 1
_GATEWAY = frozenset({502, 503, 504})
_RESET_TOKENS = ("5xx", "gateway-error", "reset")
_TOKEN_MEANING = {
    "5xx": "any 5xx, resets, connect failures and per-try timeouts",
    "gateway-error": "502/503/504, resets, connect failures and per-try timeouts",
    "reset": "resets, connect failures and per-try timeouts",
    "connect-failure": "connection failures",
    "reset-before-request": "resets before the request was sent, such as refused connections",
    "retriable-4xx": "409",
    "retriable-status-codes": "the listed status codes",
}


def retry_token(policy: EffectivePolicy, failure: Failure, status: int | None = None) -> str | None:
    """The first ``retry_on`` token that makes Envoy retry ``failure``, or ``None`` when it is not retried.

    Args:
        policy: The effective policy (its retry part).
        failure: ``status`` (an upstream response with ``status``), ``reset`` (the connection closed after
            the request was sent), ``refused`` (connection refused) or ``per-try timeout``.
        status: The HTTP status, for ``status``.
    """
    retry = policy.retry
    if retry.num_retries == 0:
        return None
    for token in retry.retry_on:
        if failure == "status" and status is not None:
            if (
                (token == "5xx" and 500 <= status <= 599)
                or (token == "gateway-error" and status in _GATEWAY)
                or (token == "retriable-4xx" and status == 409)
                or (token == "retriable-status-codes" and status in retry.retriable_status_codes)
            ):
                return token
        elif failure in ("reset", "per-try timeout"):
            if token in _RESET_TOKENS:
                return token
        elif failure == "refused" and token in (*_RESET_TOKENS, "connect-failure", "reset-before-request"):
            return token
    return None


# --- per-instance attempt outcomes -----------------------------------------------------------------


@dataclass(frozen=True)
class _Attempt:
    """What one attempt at an instance produces, before timeouts are applied."""

    delay: float
    failure: Failure | None
    status: int = 200


@dataclass(frozen=True)
class _Class:
    """A group of instances with the same faults: ``count`` hosts, attempt outcome distribution."""

    count: int
    outcomes: tuple[tuple[float, _Attempt], ...]


def _attempt_outcomes(faults: Sequence[DestinationFault]) -> tuple[tuple[float, _Attempt], ...]:
    """Faults fire independently, decided in the echo workload's order: refused, then reset, then error.

    A refused connection or a reset ends the attempt at once, with no delay (the echo resets before it
    sleeps); otherwise the delays add up and the first firing error decides the status. Found by the
    fidelity suite (``tests/fidelity/found/86847ca13c81.yaml``): list order used to decide, and a reset
    carried the delay.
    """
    dist: dict[_Attempt, float] = defaultdict(float)
    for fired in itertools.product((False, True), repeat=len(faults)):
        p = 1.0
        for f, on in zip(faults, fired, strict=True):
            p *= f.rate if on else 1.0 - f.rate
        if p == 0.0:
            continue
        active = [f for f, on in zip(faults, fired, strict=True) if on]
        kinds = {f.kind for f in active}
        terminal = next((f for f in active if f.kind not in ("latency", "refused", "reset")), None)
        delay = sum(f.delay for f in active if f.kind == "latency")
        if "refused" in kinds:
            dist[_Attempt(0.0, "refused", 503)] += p
        elif "reset" in kinds:
            dist[_Attempt(0.0, "reset", 503)] += p
        elif terminal is None:
            dist[_Attempt(delay, None)] += p
        else:
            ok = 200 <= terminal.status < 300
            dist[_Attempt(delay, None if ok else "status", terminal.status)] += p
    return tuple((p, a) for a, p in dist.items())


def _classes(hosts: int, faults: Sequence[DestinationFault]) -> list[_Class]:
    """Group instances by the faults touching them; a fault touches the first ``instances`` hosts."""
    cuts = sorted({0, hosts, *(f.affected(hosts) for f in faults)})
    classes = []
    for lo, hi in itertools.pairwise(cuts):
        if hi > lo:
            here = [f for f in faults if f.affected(hosts) > lo]
            classes.append(_Class(hi - lo, _attempt_outcomes(here)))
    return classes


# --- one attempt against the timeouts --------------------------------------------------------------


@dataclass(frozen=True)
class _Timing:
    """Per-try and route timeouts, and the mean and longest wait before each retry."""

    per_try: float | None
    timeout: float | None
    wait_mean: tuple[float, ...]
    wait_max: tuple[float, ...]


@dataclass
class _Tally:
    outcomes: dict[Outcome, float]
    attempts: float = 0.0
    racy: bool = False

    def end(self, outcome: Outcome, p: float) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0.0) + p


_FAILURE_OUTCOME = {"reset": (503, "UC"), "refused": (503, "UF"), "per-try timeout": (504, "UT")}


def _final(attempt: _Attempt, failure: Failure, exhausted: bool) -> Outcome:
    if failure == "status":
        return Outcome(attempt.status, "URX" if exhausted else "-")
    status, flag = _FAILURE_OUTCOME[failure]
    return Outcome(status, f"URX,{flag}" if exhausted else flag)


def _resolve(
    policy: EffectivePolicy, timing: _Timing, attempt: _Attempt, j: int, spent: float, tally: _Tally, p: float
) -> float | None:
    """Settle attempt ``j`` started after ``spent`` seconds of attempts (plus back-offs).

    Returns the attempt's duration when it fails in a way that is retried, else ``None`` (request over).
    """
    failure: Failure | None = attempt.failure
    duration = attempt.delay
    if failure != "refused" and timing.per_try is not None and attempt.delay >= timing.per_try:
        failure, duration = "per-try timeout", timing.per_try
    if timing.timeout is not None:
        end = spent + duration
        cut = end + sum(timing.wait_mean[:j]) >= timing.timeout
        if (end >= timing.timeout) != (end + sum(timing.wait_max[:j]) >= timing.timeout):
            tally.racy = True
        if cut:
            tally.end(Outcome(504, "UT"), p)
            return None
    if failure is None:
        tally.end(Outcome(attempt.status), p)
        return None
    retried = retry_token(policy, failure, attempt.status) is not None
    if retried and j < policy.retry.num_retries:
        return duration
    tally.end(_final(attempt, failure, retried and policy.retry.num_retries > 0), p)
    return None


# --- host selection --------------------------------------------------------------------------------

_State = tuple[tuple[int, ...], float, int]  # hosts tried per class, seconds spent, class of the last host


def _select(classes: list[_Class], tried: tuple[int, ...], last: int, mode: str) -> list[tuple[float, int, bool]]:
    """Probability of the next attempt landing on each class: ``(p, class, new host)``."""
    n = sum(c.count for c in classes)
    t = sum(tried)
    if mode == "sticky" and t:
        return [(1.0, last, False)]
    if mode != "predicate" or t == 0:
        return [(c.count / n, i, True) for i, c in enumerate(classes)]
    if t >= n:
        return [(k / t, i, False) for i, k in enumerate(tried) if k]
    stuck = (t / n) ** _SELECTIONS  # every re-pick landed on a tried host: Envoy keeps the last one
    out = [
        ((1 - stuck) * (c.count - k) / (n - t), i, True) for i, (c, k) in enumerate(zip(classes, tried, strict=True))
    ]
    out += [(stuck * k / t, i, False) for i, k in enumerate(tried) if k]
    return [s for s in out if s[0] > 0]


def _random_lb(policy: EffectivePolicy, classes: list[_Class], timing: _Timing, mode: str) -> _Tally:
    tally = _Tally({})
    level: dict[_State, float] = {((0,) * len(classes), 0.0, -1): 1.0}
    for j in range(policy.retry.num_retries + 1):
        nxt: dict[_State, float] = defaultdict(float)
        for (tried, spent, last), mass in level.items():
            for p_sel, c, new in _select(classes, tried, last, mode):
                now = tuple(k + (1 if new and i == c else 0) for i, k in enumerate(tried))
                for p_out, attempt in classes[c].outcomes:
                    p = mass * p_sel * p_out
                    tally.attempts += p
                    took = _resolve(policy, timing, attempt, j, spent, tally, p)
                    if took is not None:
                        nxt[(now, spent + took, c)] += p
        level = nxt
    return tally


def _round_robin(policy: EffectivePolicy, classes: list[_Class], timing: _Timing, predicate: bool) -> _Tally:
    """Exact round robin at concurrency 1: each request consumes consecutive hosts from a shared pointer."""
    hosts = [i for i, c in enumerate(classes) for _ in range(c.count)]
    n = len(hosts)

    def host(start: int, j: int) -> int:
        # Round robin yields untried hosts for the first n attempts; after that, with the predicate,
        # Envoy re-picks 6 times and keeps the last one.
        offset = j if j < n or not predicate else n - 1 + _SELECTIONS * (j - n + 1)
        return hosts[(start + offset) % n]

    def advance(used: int) -> int:
        return used if used <= n or not predicate else n + _SELECTIONS * (used - n)

    per_start: list[_Tally] = []
    moves = np.zeros((n, n))
    for start in range(n):
        tally = _Tally({})
        level: dict[float, float] = {0.0: 1.0}
        for j in range(policy.retry.num_retries + 1):
            nxt: dict[float, float] = defaultdict(float)
            for spent, mass in level.items():
                for p_out, attempt in classes[host(start, j)].outcomes:
                    p = mass * p_out
                    tally.attempts += p
                    took = _resolve(policy, timing, attempt, j, spent, tally, p)
                    if took is None:
                        moves[start, (start + advance(j + 1)) % n] += p
                    else:
                        nxt[spent + took] += p
            level = nxt
        per_start.append(tally)
    # Long-run share of requests starting at each pointer position, from a uniformly random start
    # (Envoy randomises the first index); the lazy chain converges even when the chain is periodic.
    lazy = (np.eye(n) + moves) / 2
    for _ in range(64):
        squared = lazy @ lazy
        squared /= squared.sum(axis=1, keepdims=True)  # rounding would otherwise compound over the squarings
        converged = np.allclose(squared, lazy, rtol=0.0, atol=1e-15)
        lazy = squared
        if converged:
            break
    share = np.full(n, 1 / n) @ lazy
    total = _Tally({})
    for w, tally in zip(share, per_start, strict=True):
        total.attempts += float(w) * tally.attempts
        total.racy |= tally.racy
        for o, p in tally.outcomes.items():
            total.end(o, float(w) * p)
    return total


# --- the prediction --------------------------------------------------------------------------------


def _coverage(policy: EffectivePolicy, faults: Sequence[DestinationFault]) -> tuple[dict[str, bool], list[Reason]]:
    per_try, _ = effective_per_try_timeout(policy)
    seen: dict[str, tuple[Failure, int | None]] = {}
    for f in faults:
        if f.kind == "error" and not 200 <= f.status < 300:
            seen[f"HTTP {f.status}"] = ("status", f.status)
        elif f.kind in ("reset", "refused"):
            seen["connection reset" if f.kind == "reset" else "connection refused"] = (f.kind, None)
        elif f.kind == "latency" and per_try is not None and f.delay >= per_try:
            seen["per-try timeout"] = ("per-try timeout", None)
    covered: dict[str, bool] = {}
    reasons: list[Reason] = []
    cited = policy.reasons.get("retry.retry_on")
    for label, (failure, status) in seen.items():
        token = retry_token(policy, failure, status)
        covered[label] = token is not None
        if policy.retry.num_retries == 0:
            effect = f"{label} is not retried: the route has no retry policy"
        elif token is None:
            effect = f"{label} is NOT retried: no retryOn condition covers it"
        else:
            extra = ""
            if token == "retriable-status-codes":
                extra = f" {list(policy.retry.retriable_status_codes)}"
            effect = f"{label} is retried: '{token}' covers {_TOKEN_MEANING.get(token, token)}{extra}"
        reasons.append(
            Reason(
                cited.field if cited else None,
                ",".join(policy.retry.retry_on)
                + (
                    f" codes {list(policy.retry.retriable_status_codes)}" if policy.retry.retriable_status_codes else ""
                ),
                effect,
                cited.source if cited else "route retry policy",
                cited.location if cited else None,
            )
        )
    return covered, reasons


def _mode(policy: EffectivePolicy, load: Load, faults: Sequence[DestinationFault]) -> tuple[str, list[Reason]]:
    warnings: list[Reason] = []
    partial = any(f.instances is not None and f.affected(policy.hosts) < policy.hosts for f in faults)
    if policy.lb in ("RING_HASH", "MAGLEV"):
        warnings.append(
            Reason(
                None,
                policy.lb,
                "assumes requests carry varying hash keys, spread evenly over hosts",
                "consistent-hash model",
            )
        )
        return ("predicate" if policy.retry.previous_hosts else "sticky"), warnings
    if policy.lb == "ROUND_ROBIN" and load.concurrency == 1 and partial:
        return "round-robin", warnings
    if partial and load.concurrency > 1:
        effect = (
            "round robin interleaves concurrent requests; modelled as a uniform pick"
            if policy.lb == "ROUND_ROBIN"
            else "hosts that fail fast finish sooner and attract more requests under least-request balancing; "
            "the model assumes equal load"
        )
        warnings.append(Reason(None, f"{policy.lb} at concurrency {load.concurrency}", effect, "load-balancer model"))
    return ("predicate" if policy.retry.previous_hosts else "uniform"), warnings


def _abort_outcome(policy: EffectivePolicy) -> Outcome:
    fault = policy.fault
    if fault.abort_grpc is not None:
        return Outcome(200, "FI", f"grpc-status {fault.abort_grpc}")
    return Outcome(fault.abort_status or 503, "FI")


def _run(policy: EffectivePolicy, faults: Sequence[DestinationFault], load: Load) -> tuple[_Tally, list[Reason]]:
    if not policy.cluster_exists:
        return _Tally({Outcome(503, "NC"): 1.0}), []
    if policy.hosts == 0:
        return _Tally({Outcome(503, "UH", "no_healthy_upstream"): 1.0}), []
    per_try, _ = effective_per_try_timeout(policy)
    ranges = backoff_ranges(policy.retry)
    timing = _Timing(per_try, policy.timeout, tuple(h / 2 for _, h in ranges), tuple(h for _, h in ranges))
    classes = _classes(policy.hosts, faults)
    mode, warnings = _mode(policy, load, faults)
    if mode == "round-robin":
        return _round_robin(policy, classes, timing, policy.retry.previous_hosts), warnings
    return _random_lb(policy, classes, timing, mode), warnings


def predict_success(
    policy: EffectivePolicy, faults: Sequence[DestinationFault] | DestinationFault = (), load: Load | None = None
) -> SuccessPrediction:
    """Predict the share of requests that succeed, and how the others end.

    Args:
        policy: The effective policy of the call.
        faults: Destination faults active during the run (a single fault is accepted too).
        load: The load; its concurrency decides retry-breaker and load-balancer warnings.

    Returns:
        The success probability with the outcome distribution, reasons and warnings.
    """
    load = load or Load()
    faults = (faults,) if isinstance(faults, DestinationFault) else tuple(faults)
    tally, warnings = _run(policy, faults, load)
    abort = policy.fault.abort_fraction
    outcomes: dict[Outcome, float] = defaultdict(float)
    for o, p in tally.outcomes.items():
        outcomes[o] += (1 - abort) * p
    if abort:
        outcomes[_abort_outcome(policy)] += abort
    outcomes = defaultdict(float, {o: p for o, p in outcomes.items() if p > 0})
    p_success = sum(p for o, p in outcomes.items() if o.ok)
    covered, coverage_reasons = _coverage(policy, faults)
    reasons = list(policy.reason("route", "hosts", "subset", "retry.attempts", "retry.retry_on"))
    reasons += coverage_reasons
    if any(f.instances is not None for f in faults) and policy.retry.num_retries:
        reasons += policy.reason("retry.previous_hosts", "lb")
    if any(f.kind == "latency" for f in faults):
        reasons += policy.reason("retry.per_try_timeout", "timeout")
    reasons += policy.reason("fault.abort")
    if abort:
        reasons.append(
            Reason(
                None,
                f"{abort * 100:g} %",
                "aborted by the client's fault filter: never retried, never reaches the destination",
                "Envoy fault filter",
            )
        )
    if faults:
        reasons.append(Reason(None, "; ".join(f.describe() for f in faults), "destination faults modelled", "chaos"))
    warnings = list(warnings)
    lower_bound = None
    pool = policy.pool
    retry_cb = policy.reasons.get("pool.max_retries")
    if policy.retry.num_retries and retry_cb is not None:
        reasons.append(retry_cb)
        if load.concurrency > pool.max_retries:
            no_retry = _run(replace(policy, retry=replace(policy.retry, num_retries=0)), faults, load)[0]
            lower_bound = (1 - abort) * sum(p for o, p in no_retry.outcomes.items() if o.ok)
            warnings.append(
                Reason(
                    retry_cb.field,
                    str(pool.max_retries),
                    f"concurrency {load.concurrency} exceeds the {pool.max_retries} concurrent retries the cluster "
                    f"allows: refused retries return the upstream's error with flag UO; success may fall to "
                    f"{lower_bound:.4f}",
                    retry_cb.source,
                    retry_cb.location,
                )
            )
        elif pool.max_retries == MAX_UINT32 and load.concurrency > 3:
            reasons.append(
                Reason(
                    None,
                    "3",
                    f"an Envoy left at its own default would refuse retries beyond 3 in "
                    f"flight (concurrency {load.concurrency}); Istio's 4294967295 does not",
                    "Envoy default max_retries 3",
                )
            )
    if tally.racy:
        warnings.append(
            Reason(
                None,
                "back-off",
                "the random back-off decides whether the route timeout cuts some "
                "requests; the prediction uses the mean back-off",
                "Envoy jittered back-off",
            )
        )
    if policy.outlier is not None and any(f.instances is not None for f in faults):
        warnings.append(
            Reason(
                None,
                "outlier detection",
                "ejecting failing hosts raises success above this prediction while they are out; see predict_ejection",
                "model scope",
            )
        )
    return SuccessPrediction(
        p_success,
        dict(outcomes),
        tally.attempts,
        lower_bound,
        covered,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
    )
