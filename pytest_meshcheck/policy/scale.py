"""Time-scaling of policies, so a claim about seconds can be checked in tenths of seconds.

A README that promises "times out after 8 s" is verified with every duration of the policy, and of the
injected chaos, divided by the same factor: the ratios that decide the outcome (per-try timeout against
route timeout, delay against timeout, ejection time against interval) are preserved. Envoy's retry
back-off (25 ms base) is not part of the policy and is not scaled, which is why callers should use a
modest factor; expectations are computed from the scaled policy, so they stay exact.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from pytest_meshcheck.policy.model import PolicySet

DURATION_FIELDS = frozenset(
    {
        "per_try_timeout",
        "backoff",
        "timeout",
        "fixed_delay",
        "connect_timeout",
        "max_connection_duration",
        "idle_timeout",
        "tcp_keepalive_time",
        "tcp_keepalive_interval",
        "interval",
        "base_ejection_time",
        "http_cookie_ttl",
        "warmup_duration",
    }
)

_T = TypeVar("_T")


def _scale(value: _T, factor: float) -> _T:
    if isinstance(value, tuple):
        return tuple(_scale(v, factor) for v in value)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {k: _scale(v, factor) for k, v in value.items()}  # type: ignore[return-value]
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return value
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(value):
        if f.name == "source":
            continue
        current = getattr(value, f.name)
        if f.name in DURATION_FIELDS and isinstance(current, int | float) and not isinstance(current, bool):
            changes[f.name] = current * factor
        elif current is not None and not isinstance(current, str | int | float | bool):
            changes[f.name] = _scale(current, factor)
    return dataclasses.replace(value, **changes)


def scale_durations(policies: PolicySet, factor: float) -> PolicySet:
    """Return ``policies`` with every duration multiplied by ``factor`` (``0.2`` makes 10 s into 2 s).

    The source YAML kept in each policy's ``SourceRef`` is left as written, so reports show the user's text.
    """
    if factor <= 0:
        raise ValueError(f"scale factor {factor} must be positive")
    return dataclasses.replace(
        policies,
        virtual_services=tuple(_scale(vs, factor) for vs in policies.virtual_services),
        destination_rules=tuple(_scale(dr, factor) for dr in policies.destination_rules),
    )
