"""Whether connection-pool circuit breakers answer ``503 UO`` at a closed-loop concurrency.

With HTTP/1.1 upstreams each connection carries one request, so a cluster holds
``min(maxConnections, http2MaxRequests)`` active requests plus ``http1MaxPendingRequests`` waiting ones;
one more in flight overflows at once (ground truth §4, Envoy ``--concurrency 1``: limits 1/1/1 never
overflow at concurrency 1, rarely at 2, always from 3). At exactly full capacity the only overflow comes
from a race when ``maxRequestsPerConnection`` closes connections: a queued request waits for a new
connection while the client's next request arrives.
"""

from __future__ import annotations

from pytest_meshcheck.expect.effective import EffectivePolicy
from pytest_meshcheck.expect.model import Load, OverflowLevel, OverflowPrediction, Reason

_POOL_KEYS = (
    "pool.max_connections",
    "pool.max_pending_requests",
    "pool.max_requests",
    "pool.max_requests_per_connection",
)


def pool_capacity(policy: EffectivePolicy) -> int:
    """Requests the cluster holds at once: active plus pending slots."""
    pool = policy.pool
    active = pool.max_requests if pool.http2 else min(pool.max_connections, pool.max_requests)
    return active + pool.max_pending_requests


def predict_overflow(policy: EffectivePolicy, load: Load) -> OverflowPrediction:
    """Predict pool overflow (``503 UO``, ``x-envoy-overloaded: true``) at ``load.concurrency``.

    Args:
        policy: The effective policy of the call.
        load: Its ``concurrency`` is the closed-loop concurrency (or the expected requests in flight).

    Returns:
        ``never``, ``rare`` or ``always``, with the capacity and the reasons.
    """
    capacity = pool_capacity(policy)
    c = load.concurrency
    churn = policy.pool.max_requests_per_connection is not None and not policy.pool.http2
    level: OverflowLevel
    if c < capacity:
        level, effect = "never", f"concurrency {c} stays below the {capacity} active + pending slots"
    elif c == capacity:
        level = "rare" if churn else "never"
        effect = (
            f"concurrency {c} fills all {capacity} slots; connections closed by maxRequestsPerConnection open a "
            "race where a queued request still waits when the next one arrives"
            if churn
            else f"concurrency {c} fills all {capacity} slots exactly; a freed connection takes the queued request"
        )
    else:
        level, effect = (
            "always",
            f"concurrency {c} exceeds the {capacity} active + pending slots: the excess is refused at once",
        )
    pending = policy.pool.max_pending_requests
    if level == "never" and not policy.pool.http2 and pending < c and pending < policy.pool.max_connections:
        # Measured by the fidelity suite (tests/fidelity/found/c3fe38d065b4.yaml): while a cold pool's
        # connections are being established, the requests waiting for them count as pending, so more than
        # http1MaxPendingRequests arriving at once overflow, however many connections are allowed. (With no
        # more connections than pending slots the steady-state rule holds: ground truth §4, 1 / 1 at 2.)
        level = "rare"
        effect += (
            f"; but {c} requests arriving at a cold pool wait for connections being set up, and more than "
            f"{policy.pool.max_pending_requests} waiting at once overflow"
        )
    reasons = [*policy.reason(*_POOL_KEYS), Reason(None, str(capacity), effect, "connection-pool model")]
    reasons.append(
        Reason(
            None,
            "1 worker",
            "connection pools are per Envoy worker while thresholds are cluster-wide; the "
            "prediction assumes Envoy --concurrency 1",
            "local mesh",
        )
    )
    if policy.pool.http2:
        reasons.append(
            Reason(
                None,
                "HTTP/2",
                "requests share connections, so only http2MaxRequests limits active requests",
                "h2UpgradePolicy UPGRADE",
            )
        )
    return OverflowPrediction(level, capacity, c, reasons=tuple(reasons))
