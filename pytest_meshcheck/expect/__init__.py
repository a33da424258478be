"""What a policy should do under chaos and load: success rate, latency bounds, ejection, overflow.

Pure functions of an :class:`EffectivePolicy` (resolved from the loaded policies as istiod would), the
destination faults and the load. Every prediction carries the reasons (policy fields or defaults) it rests
on. Typical use::

    policy = effective_policy(policies, topology, "order-service", istio="1.30")
    pred = predict_success(policy, DestinationFault("error", rate=0.5, status=503), Load(concurrency=2))
    pred.p_success, pred.explain()
"""

from __future__ import annotations

from pytest_meshcheck.expect.effective import (
    EffectiveFault,
    EffectiveOutlier,
    EffectivePolicy,
    EffectivePool,
    EffectiveRetry,
    default_policy,
    effective_policy,
    parse_retry_on,
)
from pytest_meshcheck.expect.ejection import expected_attempts_to_eject, max_ejectable, predict_ejection
from pytest_meshcheck.expect.model import (
    DestinationFault,
    EjectionPrediction,
    LatencyPrediction,
    Load,
    Outcome,
    OverflowPrediction,
    Prediction,
    Reason,
    SuccessPrediction,
)
from pytest_meshcheck.expect.overflow import pool_capacity, predict_overflow
from pytest_meshcheck.expect.retries import predict_success, retry_token
from pytest_meshcheck.expect.routing import RoutedDestination, RoutingPrediction, predict_routing
from pytest_meshcheck.expect.timeouts import (
    backoff_ranges,
    effective_per_try_timeout,
    latency_ceiling,
    predict_latency,
)

__all__ = [
    "DestinationFault",
    "EffectiveFault",
    "EffectiveOutlier",
    "EffectivePolicy",
    "EffectivePool",
    "EffectiveRetry",
    "EjectionPrediction",
    "LatencyPrediction",
    "Load",
    "Outcome",
    "OverflowPrediction",
    "Prediction",
    "Reason",
    "RoutedDestination",
    "RoutingPrediction",
    "SuccessPrediction",
    "backoff_ranges",
    "default_policy",
    "effective_per_try_timeout",
    "effective_policy",
    "expected_attempts_to_eject",
    "latency_ceiling",
    "max_ejectable",
    "parse_retry_on",
    "pool_capacity",
    "predict_ejection",
    "predict_latency",
    "predict_overflow",
    "predict_routing",
    "predict_success",
    "retry_token",
]
