"""``HTTPRoute.retries`` to an Envoy ``RetryPolicy``: ``pilot/pkg/networking/core/route/retry/retry.go``."""

from __future__ import annotations

import re

from pytest_meshcheck.istio_version import IstioVersion
from pytest_meshcheck.policy.model import HTTPRetry
from pytest_meshcheck.translate.common import (
    JSON,
    PREVIOUS_HOSTS_PREDICATE,
    PREVIOUS_PRIORITIES_CONFIG,
    duration,
    type_url,
)

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"

# Every code Go's net/http.StatusText knows: istiod treats only these numeric retryOn tokens as codes.
GO_STATUS_CODES = frozenset(
    {100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226}
    | {300, 301, 302, 303, 304, 305, 307, 308}
    | set(range(400, 419))
    | {421, 422, 423, 424, 425, 426, 428, 429, 431, 451}
    | {500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511}
)

_GO_ATOI = re.compile(r"[+-]?[0-9]+")


def previous_hosts_predicate() -> JSON:
    """``xdsfilters.RetryPreviousHosts``: prefer hosts not tried yet for this request."""
    return {
        "name": "envoy.retry_host_predicates.previous_hosts",
        "typed_config": {"@type": type_url(PREVIOUS_HOSTS_PREDICATE)},
    }


def default_retry_policy(version: IstioVersion, *, consistent_hash: bool = False) -> JSON:
    """``DefaultPolicy`` / ``DefaultConsistentHashPolicy``: what a route gets without ``retries``.

    Args:
        version: Before 1.24 the default also retries 503; before 1.23 consistent-hash routes
            kept the ``previous_hosts`` predicate.
        consistent_hash: The route has one destination whose DestinationRule hashes.
    """
    policy: JSON = {"retry_on": DEFAULT_RETRY_ON, "num_retries": 2}
    if not consistent_hash or version.consistent_hash_keeps_previous_hosts:
        policy["retry_host_predicate"] = [previous_hosts_predicate()]
    policy["host_selection_retry_max_attempts"] = 5
    if version.default_retries_503:
        policy["retriable_status_codes"] = [503]
    return policy


def convert_retry_policy(retry: HTTPRetry | None, version: IstioVersion, *, consistent_hash: bool) -> JSON | None:
    """``ConvertPolicy``: the route's ``retry_policy``, or ``None`` for ``attempts: 0`` (no retries).

    A given ``retryOn`` replaces the default string and codes entirely; the other fields start from
    the default policy. ``backoff`` and ``retryIgnorePreviousHosts`` are honoured from Istio 1.26.
    """
    policy = default_retry_policy(version, consistent_hash=consistent_hash)
    if retry is None:
        return policy
    if retry.attempts <= 0:
        return None
    policy["num_retries"] = retry.attempts
    if retry.retry_on:
        retry_on, codes = parse_retry_on(retry.retry_on)
        if codes and "retriable-status-codes" not in retry_on:
            retry_on += ",retriable-status-codes"
        policy["retry_on"] = retry_on
        if codes:
            policy["retriable_status_codes"] = codes
        else:
            policy.pop("retriable_status_codes", None)
    if retry.per_try_timeout is not None:
        policy["per_try_timeout"] = duration(retry.per_try_timeout)
    if version.honours_retry_backoff and retry.retry_ignore_previous_hosts is not None:
        if retry.retry_ignore_previous_hosts:
            policy["retry_host_predicate"] = [previous_hosts_predicate()]
        else:
            policy.pop("retry_host_predicate", None)
    if retry.retry_remote_localities:
        policy["retry_priority"] = {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {"@type": type_url(PREVIOUS_PRIORITIES_CONFIG), "update_frequency": 2},
        }
    if version.honours_retry_backoff and retry.backoff is not None:
        # Only the base: Envoy caps the fully-jittered exponential back-off at 10x base.
        policy["retry_back_off"] = {"base_interval": duration(retry.backoff)}
    return policy


def parse_retry_on(text: str) -> tuple[str, list[int]]:
    """``parseRetryOn``: split on ``,``, trim, and move known HTTP status codes to their own list.

    Returns:
        The remaining conditions joined by ``,`` (in order) and the status codes (in order).
    """
    conditions: list[str] = []
    codes: list[int] = []
    for raw in text.split(","):
        token = raw.strip()
        if not token:
            continue
        if _GO_ATOI.fullmatch(token) and int(token) in GO_STATUS_CODES:
            codes.append(int(token))
        else:
            conditions.append(token)
    return ",".join(conditions), codes
