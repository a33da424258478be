"""Whether outlier detection ejects failing instances, how many at once, and for how long.

Envoy 1.40 rules (ground truth §3, notes §5):

* the 5xx detector is on with 5 consecutive errors unless ``consecutive5xxErrors: 0``; it counts every 5xx,
  resets, refused connections and timeouts (local-origin errors share the bucket);
* the gateway detector counts 502/503/504 and local-origin errors, but only ejects when
  ``consecutiveGatewayErrors`` > 0 (Envoy's enforcement default is 0);
* the deprecated ``consecutiveErrors`` is ignored by istiod since 1.7;
* a host is ejected only if ``(ejected + 1) / hosts x 100 <= max_ejection_percent`` (default 10), so a
  cluster of fewer than 10 hosts ejects nothing at the default;
* below ``healthy_panic_threshold`` (``minHealthPercent``, 0 by default when ``outlierDetection`` is set)
  Envoy balances over all hosts again; with 0 and every host ejected, requests get ``503 UH``;
* the n-th consecutive ejection lasts base x n, capped by ``max_ejection_time`` (300 s), plus up to one
  ``interval`` because un-ejection happens on the sweep.
"""

from __future__ import annotations

from pytest_meshcheck.expect.effective import EffectivePolicy
from pytest_meshcheck.expect.model import DestinationFault, EjectionPrediction, Load, Reason
from pytest_meshcheck.expect.timeouts import effective_per_try_timeout

_GATEWAY = frozenset({502, 503, 504})
_OD_KEYS = (
    "outlier",
    "outlier.consecutive_5xx",
    "outlier.consecutive_gateway",
    "outlier.consecutive_errors",
    "outlier.max_ejection_percent",
    "outlier.panic_threshold",
    "outlier.base_ejection_time",
    "outlier.interval",
)


def _counted_status(policy: EffectivePolicy, fault: DestinationFault) -> int | None:
    """The status outlier detection records for one failed attempt, or ``None`` when it is no error."""
    if fault.kind == "error":
        return fault.status if fault.status >= 500 else None
    if fault.kind in ("reset", "refused"):
        return 503  # local-origin failure, folded into the 5xx and gateway buckets
    per_try, _ = effective_per_try_timeout(policy)
    limits = [t for t in (per_try, policy.timeout) if t is not None]
    return 504 if limits and fault.delay >= min(limits) else None


# Envoy's default common_lb_config.update_merge_window; istiod does not set the field.
MERGE_WINDOW = 1.0


def max_ejectable(hosts: int, max_ejection_percent: int) -> int:
    """Most hosts Envoy ejects at once: the largest e with e / hosts x 100 <= max_ejection_percent."""
    return max_ejection_percent * hosts // 100 if hosts else 0


def expected_attempts_to_eject(rate: float, threshold: int) -> float:
    """Expected attempts at one host until ``threshold`` consecutive failures, each failing at ``rate``."""
    if rate >= 1.0:
        return float(threshold)
    if rate <= 0.0:
        return float("inf")
    return (1 - rate**threshold) / ((1 - rate) * rate**threshold)


def predict_ejection(
    policy: EffectivePolicy, fault: DestinationFault | None, load: Load | None = None, *, ejections: int = 3
) -> EjectionPrediction:
    """Predict whether the instances ``fault`` touches are ejected.

    Args:
        policy: The effective policy of the call.
        fault: The destination fault (``None``: healthy instances).
        load: The load; with a rate, a time-to-ejection estimate is added to the reasons.
        ejections: How many consecutive ejection durations to list.

    Returns:
        How many failing instances are ejected at once, panic and no-healthy-upstream flags, durations.
    """
    hosts = policy.hosts
    failing = fault.affected(hosts) if fault is not None else 0
    od = policy.outlier
    reasons = list(policy.reason("hosts", *_OD_KEYS))
    warnings: list[Reason] = []
    if od is None:
        return EjectionPrediction(False, False, None, 0, 0, hosts, failing, reasons=tuple(reasons))
    status = _counted_status(policy, fault) if fault is not None and fault.rate > 0 else None
    thresholds: list[int] = []
    if status is not None:
        if od.enforce_5xx:
            thresholds.append(od.consecutive_5xx)
        if od.enforce_gateway and status in _GATEWAY:
            thresholds.append(od.consecutive_gateway)
        if not thresholds:
            reasons.append(
                Reason(
                    None,
                    f"{status}",
                    "detected but never enforced: the 5xx detector is off and Envoy's "
                    "enforcing_consecutive_gateway_failure defaults to 0"
                    if status in _GATEWAY
                    else "the 5xx detector is off and the gateway detector ignores this status",
                    "Envoy outlier detection default",
                )
            )
    elif fault is not None:
        reasons.append(
            Reason(
                None,
                fault.describe(),
                "outlier detection does not count it: no 5xx, reset, refusal or timeout reaches Envoy",
                "Envoy outlier detection",
            )
        )
    counts = bool(thresholds)
    threshold = min(thresholds) if thresholds else None
    limit = max_ejectable(hosts, od.max_ejection_percent)
    reasons.append(
        Reason(
            None,
            f"{limit} of {hosts}",
            f"(ejected + 1) / {hosts} x 100 <= {od.max_ejection_percent} allows {limit} host(s) out at once",
            "Envoy >= 1.28 max_ejection_percent rule",
        )
    )
    ejected = min(failing, limit) if counts else 0
    if counts and failing > limit:
        warnings.append(
            Reason(
                None,
                f"{failing - limit}",
                f"{failing - limit} failing host(s) stay in rotation: each blocked "
                "ejection only bumps outlier_detection.ejections_overflow",
                "Envoy max_ejection_percent rule",
            )
        )
    healthy = hosts - ejected
    panic = ejected > 0 and healthy * 100 < policy.panic_threshold * hosts
    no_healthy = ejected > 0 and healthy == 0 and not panic
    if panic:
        reasons.append(
            Reason(
                None,
                f"{healthy} of {hosts} healthy",
                f"below the {policy.panic_threshold:g} % panic "
                "threshold: Envoy balances over all hosts, ejected ones included",
                "Envoy panic mode",
            )
        )
    elif no_healthy:
        reasons.append(
            Reason(
                None,
                "0 healthy",
                "panic disabled: requests get 503 UH no_healthy_upstream while every host is ejected",
                "Envoy panic threshold 0",
            )
        )
    durations = (
        tuple(
            (
                min(od.base_ejection_time * n, od.max_ejection_time),
                min(od.base_ejection_time * n, od.max_ejection_time) + od.interval,
            )
            for n in range(1, ejections + 1)
        )
        if ejected
        else ()
    )
    attempts = expected_attempts_to_eject(fault.rate, threshold) if fault is not None and threshold else None
    if attempts is not None and ejected:
        text = f"about {attempts:.3g} attempts at a failing host before it is ejected (immediately, not on a sweep)"
        if load is not None and load.rate is not None and hosts:
            text += f"; about {attempts * hosts / load.rate:.3g} s at {load.rate:g} req/s spread over {hosts} hosts"
        reasons.append(Reason(None, f"{threshold} consecutive", text, "Envoy consecutive-error detector"))
    if ejected > 1:
        # Measured on Envoy 1.40: all hosts flagged failed_outlier_check within 0.3 s, yet traffic reached
        # them until ~1.1 s, when the merged update landed (istiod leaves update_merge_window unset).
        reasons.append(
            Reason(
                None,
                f"{MERGE_WINDOW:g} s",
                "the first ejection reaches the load balancer at once; health changes after it are merged and "
                f"delivered when the window closes, so {ejected} ejections can take up to {MERGE_WINDOW:g} s longer "
                "to stop traffic than the first",
                "Envoy default common_lb_config.update_merge_window",
            )
        )
    return EjectionPrediction(
        True,
        counts,
        threshold,
        limit,
        ejected,
        hosts,
        failing,
        panic,
        no_healthy,
        attempts,
        durations,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
    )
