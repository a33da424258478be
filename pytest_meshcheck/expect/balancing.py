"""How Envoy's load balancer shares a closed-loop load between instances of unequal latency.

``predict_routing`` splits a cluster's share evenly over its instances, which is what every policy gives
when the instances answer alike. With one slow instance under concurrency the policies differ:

* ``ROUND_ROBIN`` (unweighted): Envoy hands out hosts in turn (``hosts[rr_index++ % n]``), whatever they are
  busy with, so every instance gets 1/n of the requests;
* ``LEAST_REQUEST``, Istio's default since 1.14 (and what istiod writes for ``LEAST_CONN`` and unset):
  with equal weights Envoy draws ``choice_count`` (2) hosts at random, with replacement, and keeps the one
  with fewer active requests, the first on a tie (``LeastRequestLoadBalancer::unweightedHostPick``). A slow
  instance holds its requests longer, so it loses most draws;
* ``RANDOM``: 1/n each.

The shares of ``LEAST_REQUEST`` depend on how many requests each instance holds at each pick, which a closed
loop feeds back: the model is a small discrete-event simulation of exactly that (``concurrency`` clients,
each sending its next request when the previous one answers; instance ``i`` answers after
``latencies[i]`` seconds, +-5 %; Envoy's pick rule above), long enough that its own sampling error is far below
the checks' delta. It leaves out what the scenario keeps small: the client's time between requests and
Envoy's per-request work (both add to every instance's latency alike).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.expect.model import LbPolicy

#: Envoy's default ``choice_count`` for LEAST_REQUEST (istiod does not set it).
CHOICE_COUNT = 2
#: Relative spread of each answer's latency around its instance's latency (uniform, +-5 %).
JITTER = 0.05
#: Simulated requests per prediction; the share's standard error is then below 0.3 points.
SIMULATED_REQUESTS = 40_000


@dataclass(frozen=True)
class BalancePrediction:
    """Each instance's share of the requests, and why.

    Attributes:
        policy: The Envoy ``lb_policy`` modelled.
        latencies: Seconds each instance takes to answer, in the order of ``shares``.
        concurrency: Requests in flight (closed loop).
        shares: Share of requests each instance gets.
        reason: One sentence on the rule behind the shares.
    """

    policy: LbPolicy
    latencies: tuple[float, ...]
    concurrency: int
    shares: tuple[float, ...]
    reason: str


def _pick(policy: LbPolicy, active: list[int], turn: int, rng: np.random.Generator) -> int:
    n = len(active)
    if policy == "ROUND_ROBIN":
        return turn % n
    if policy == "RANDOM":
        return int(rng.integers(n))
    candidate = int(rng.integers(n))
    for _ in range(CHOICE_COUNT - 1):
        sampled = int(rng.integers(n))
        if active[sampled] < active[candidate]:  # a tie keeps the first draw, as Envoy does
            candidate = sampled
    return candidate


def predict_balance(
    policy: LbPolicy,
    latencies: Sequence[float],
    concurrency: int,
    *,
    requests: int = SIMULATED_REQUESTS,
    seed: int = 14,
) -> BalancePrediction:
    """The share of requests each instance gets under ``policy`` with a closed loop of ``concurrency``.

    Args:
        policy: ``LEAST_REQUEST``, ``ROUND_ROBIN`` or ``RANDOM`` (Envoy's ``lb_policy`` after istiod).
        latencies: Seconds each instance takes to answer (its fault delay plus its normal latency).
        concurrency: Requests in flight at once.
        requests: Simulated requests (the first tenth warms up and is not counted).
        seed: Seed of the simulation's random draws.

    Raises:
        MeshcheckError: An unsupported policy, no instance, a latency that is not positive, or concurrency < 1.
    """
    if policy not in ("LEAST_REQUEST", "ROUND_ROBIN", "RANDOM"):
        raise MeshcheckError(f"predict_balance: lb policy {policy!r} is not modelled; use LEAST_REQUEST, ROUND_ROBIN "
                             "or RANDOM")  # fmt: skip
    if not latencies or min(latencies) <= 0:
        raise MeshcheckError(
            f"predict_balance: latencies={list(latencies)!r} must be positive seconds, one per instance"
        )
    if concurrency < 1:
        raise MeshcheckError(f"predict_balance: concurrency={concurrency!r} must be at least 1")
    rng = np.random.default_rng(seed)
    active = [0] * len(latencies)
    counts = [0] * len(latencies)
    warmup = requests // 10
    events: list[tuple[float, int]] = []
    sent = 0

    def send(now: float) -> None:
        nonlocal sent
        host = _pick(policy, active, sent, rng)
        active[host] += 1
        if sent >= warmup:
            counts[host] += 1
        sent += 1
        # Real answers vary a little; without it, equal latencies finish in lockstep and the order in which
        # simultaneous answers are handled (not the policy) decides the picks.
        heapq.heappush(events, (now + latencies[host] * (1 + JITTER * (2 * rng.random() - 1)), host))

    for _ in range(concurrency):
        send(0.0)
    while sent < requests:
        now, host = heapq.heappop(events)
        active[host] -= 1
        send(now)
    total = sum(counts)
    shares = tuple(c / total for c in counts)
    reason = {
        "ROUND_ROBIN": "Envoy ROUND_ROBIN hands out instances in turn: 1/n each, whatever their latency",
        "RANDOM": "Envoy RANDOM picks uniformly: 1/n each",
        "LEAST_REQUEST": f"Envoy LEAST_REQUEST draws {CHOICE_COUNT} instances and keeps the one with fewer active "
        f"requests; simulated with {concurrency} requests in flight and latencies "
        f"{', '.join(f'{x * 1000:.1f}' for x in latencies)} ms",
    }[policy]
    return BalancePrediction(policy, tuple(latencies), concurrency, shares, reason)
