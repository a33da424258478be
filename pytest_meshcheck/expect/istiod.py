"""istiod's translation of each policy block into what Envoy enforces, with a reason for every value.

Each function takes one block (a route's ``retries``, ``timeout`` and ``fault``; a merged ``connectionPool``,
``outlierDetection`` or ``loadBalancer``) and returns the Envoy-side values with Istio's and Envoy's defaults
filled in (notes ``istio-translation.md`` §1-§6), plus a :class:`~pytest_meshcheck.expect.model.Reason` per
value naming the YAML field or the default used.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import TypeVar

from pytest_meshcheck.expect.model import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_RETRY_ON,
    ENVOY_MAX_EJECTION_TIME,
    MAX_UINT32,
    EffectiveFault,
    EffectiveOutlier,
    EffectivePool,
    EffectiveRetry,
    LbPolicy,
    Reason,
)
from pytest_meshcheck.istio_version import IstioVersion
from pytest_meshcheck.policy.model import (
    ConnectionPool,
    DestinationRule,
    HTTPRoute,
    LoadBalancer,
    OutlierDetection,
    SourceRef,
    Subset,
    TrafficPolicy,
)

# Go's net/http.StatusText knows the same codes as Python's HTTPStatus; istiod keeps a numeric retryOn
# token as a status code only when Go knows it (retry.go: parseRetryOn).
_KNOWN_STATUS = frozenset(int(s) for s in HTTPStatus)
_T = TypeVar("_T")


class Recorder:
    """Builds :class:`Reason` objects for one resource, with the field's line when the loader knew it."""

    def __init__(self, kind: str, name: str, namespace: str | None, source: SourceRef) -> None:
        self.label = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
        self.source = source

    def __call__(self, path: str, value: object, effect: str) -> Reason:
        """A reason for the field at dotted ``path``, holding ``value``."""
        line = self.source.field_lines.get(path)
        location = f"{self.source.file}:{line}" if line else f"{self.source.file}:{self.source.line}"
        return Reason(path, _render(value), effect, self.label, location)


def _render(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}s" if value else "0s"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value) or "[]"
    return str(value)


def default_reason(value: object, effect: str, source: str) -> Reason:
    """A reason for a value no field set: ``source`` names the default (``Istio 1.30 default ...``)."""
    return Reason(None, _render(value), effect, source)


# --- retries --------------------------------------------------------------------------------------


def parse_retry_on(text: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Split a ``retryOn`` string as istiod's ``parseRetryOn`` does.

    Tokens are trimmed, numeric tokens that are known HTTP statuses become retriable status codes, and
    ``retriable-status-codes`` is appended when codes were found without it.

    Returns:
        The ``retry_on`` tokens and the retriable status codes.
    """
    tokens: list[str] = []
    codes: list[int] = []
    for raw in text.split(","):
        token = raw.strip()
        if not token:
            continue
        if token.isdigit() and int(token) in _KNOWN_STATUS:
            codes.append(int(token))
        else:
            tokens.append(token)
    if codes and "retriable-status-codes" not in tokens:
        tokens.append("retriable-status-codes")
    return tuple(tokens), tuple(codes)


def _default_codes(istio: IstioVersion) -> tuple[int, ...]:
    return (503,) if istio.default_retries_503 else ()


def translate_retry(
    route: HTTPRoute | None, rec: Recorder | None, istio: IstioVersion, consistent_hash: bool
) -> tuple[EffectiveRetry, dict[str, Reason]]:
    """The route's Envoy retry policy (istiod ``ConvertPolicy``), or Istio's default when ``retries`` is absent."""
    default_src = f"Istio {istio} default retry policy"
    # From 1.23 a consistent-hash route drops the previous_hosts predicate (retry.go: DefaultConsistentHashPolicy).
    default_predicate = not (consistent_hash and istio.at_least(23))
    codes_note = "retries 503" if istio.default_retries_503 else "retries no status code (since Istio 1.24)"
    reasons: dict[str, Reason] = {}
    retries = route.retries if route is not None else None
    if retries is None or rec is None or route is None:
        reasons["retry.attempts"] = default_reason(2, "no retries block: up to 2 retries (3 attempts)", default_src)
        reasons["retry.retry_on"] = default_reason(
            DEFAULT_RETRY_ON + _default_codes(istio),
            f"retries connection failures, refused streams and gRPC unavailable/cancelled; {codes_note}",
            default_src,
        )
        reasons["retry.previous_hosts"] = default_reason(
            default_predicate,
            "retries avoid hosts already tried"
            if default_predicate
            else "consistent-hash route: no previous_hosts predicate, retries may hit the same host",
            default_src,
        )
        return (
            EffectiveRetry(2, DEFAULT_RETRY_ON, _default_codes(istio), None, default_predicate, is_default=True),
            reasons,
        )
    base = f"spec.http[{route.index}].retries"
    if retries.attempts <= 0:
        reasons["retry.attempts"] = rec(
            f"{base}.attempts", retries.attempts, "attempts 0: istiod emits no retry policy, nothing is retried"
        )
        return EffectiveRetry(0, previous_hosts=False), reasons
    reasons["retry.attempts"] = rec(
        f"{base}.attempts", retries.attempts, f"up to {retries.attempts} retries ({retries.attempts + 1} attempts)"
    )
    if retries.retry_on and retries.retry_on.strip():
        retry_on, codes = parse_retry_on(retries.retry_on)
        reasons["retry.retry_on"] = rec(f"{base}.retryOn", retries.retry_on, "replaces Istio's default retry_on")
    else:
        retry_on, codes = DEFAULT_RETRY_ON, _default_codes(istio)
        reasons["retry.retry_on"] = default_reason(
            DEFAULT_RETRY_ON + codes,
            f"retryOn absent: the default conditions apply; {codes_note}",
            default_src,
        )
    per_try = retries.per_try_timeout
    if per_try is not None:
        reasons["retry.per_try_timeout"] = rec(f"{base}.perTryTimeout", per_try, "timeout of each attempt")
    predicate = default_predicate
    if retries.retry_ignore_previous_hosts is not None:
        path = f"{base}.retryIgnorePreviousHosts"
        if istio.honours_retry_backoff:
            predicate = retries.retry_ignore_previous_hosts
            reasons["retry.previous_hosts"] = rec(
                path, predicate, "retries avoid hosts already tried" if predicate else "retries may reuse a host"
            )
        else:
            reasons["retry.previous_hosts"] = rec(
                path, retries.retry_ignore_previous_hosts, f"ignored: honoured only from Istio 1.26 (modelling {istio})"
            )
    if "retry.previous_hosts" not in reasons:
        reasons["retry.previous_hosts"] = default_reason(
            predicate,
            "retries avoid hosts already tried"
            if predicate
            else "consistent-hash route: no previous_hosts predicate, retries may hit the same host",
            default_src,
        )
    backoff = DEFAULT_BACKOFF_BASE
    if retries.backoff is not None:
        if istio.honours_retry_backoff:
            backoff = retries.backoff
            reasons["retry.backoff"] = rec(f"{base}.backoff", backoff, "base of the jittered exponential back-off")
        else:
            reasons["retry.backoff"] = rec(
                f"{base}.backoff", retries.backoff, f"ignored: honoured only from Istio 1.26 (modelling {istio})"
            )
    if "retry.backoff" not in reasons:
        reasons["retry.backoff"] = default_reason(
            DEFAULT_BACKOFF_BASE, "retry n waits U(0, 25 ms x 2^(n-1)), at most 250 ms", "Envoy default retry back-off"
        )
    return EffectiveRetry(retries.attempts, retry_on, codes, per_try, predicate, backoff), reasons


# --- route-level pieces ---------------------------------------------------------------------------


def translate_timeout(route: HTTPRoute | None, rec: Recorder | None) -> tuple[float | None, Reason]:
    """The route timeout (``setTimeout``): ``None`` when absent or 0, as Istio writes ``0s``."""
    if route is None or rec is None or route.timeout is None:
        return None, default_reason(
            0.0, "no route timeout: Istio writes timeout 0s (disabled)", "Istio default route timeout"
        )
    path = f"spec.http[{route.index}].timeout"
    if route.timeout == 0:
        return None, rec(path, route.timeout, "0s disables the route timeout")
    return route.timeout, rec(path, route.timeout, "bounds the whole request, retries and back-offs included")


def translate_fault(route: HTTPRoute | None, rec: Recorder | None) -> tuple[EffectiveFault, dict[str, Reason]]:
    """The route's client-side fault (``TranslateFault``); an absent percentage means 0 %."""
    reasons: dict[str, Reason] = {}
    if route is None or rec is None or route.fault is None:
        return EffectiveFault(), reasons
    base = f"spec.http[{route.index}].fault"
    abort_fraction = delay_fraction = delay = 0.0
    abort_status: int | None = None
    abort_grpc: str | None = None
    if (a := route.fault.abort) is not None:
        abort_status, abort_grpc = a.http_status, a.grpc_status
        if a.percentage is None:
            reasons["fault.abort"] = rec(
                f"{base}.abort.percentage", "absent", "Istio treats it as 0 %: nothing is aborted"
            )
        else:
            abort_fraction = a.percentage / 100
            what = f"HTTP {abort_status}" if abort_status is not None else f"gRPC {abort_grpc}"
            reasons["fault.abort"] = rec(
                f"{base}.abort.percentage",
                f"{a.percentage:g} %",
                f"the client's fault filter answers {what} before the router: never retried",
            )
    if (d := route.fault.delay) is not None:
        delay = d.fixed_delay
        if d.percentage is not None:
            delay_fraction = d.percentage / 100
            reasons["fault.delay"] = rec(
                f"{base}.delay.percentage",
                f"{d.percentage:g} %",
                f"adds {delay:g} s before the router (outside the route timeout)",
            )
        elif d.percent is not None:
            delay_fraction = d.percent / 100
            reasons["fault.delay"] = rec(
                f"{base}.delay.percent", f"{d.percent} %", f"deprecated form; adds {delay:g} s before the router"
            )
        else:
            reasons["fault.delay"] = rec(
                f"{base}.delay.percentage", "absent", "Istio treats it as 0 %: nothing is delayed"
            )
    return EffectiveFault(abort_fraction, abort_status, abort_grpc, delay_fraction, delay), reasons


# --- destination rule pieces ----------------------------------------------------------------------


@dataclass(frozen=True)
class Blocks:
    """The merged traffic-policy blocks, each with the dotted path it came from."""

    pool: tuple[ConnectionPool, str] | None = None
    outlier: tuple[OutlierDetection, str] | None = None
    lb: tuple[LoadBalancer, str] | None = None


def merge_traffic_policy(dr: DestinationRule | None, subset: Subset | None, subset_index: int | None) -> Blocks:
    """Block-by-block merge (MergeTrafficPolicy): a subset block replaces the whole top-level block."""
    top: TrafficPolicy = (dr.traffic_policy if dr else None) or TrafficPolicy()
    sub: TrafficPolicy = (subset.traffic_policy if subset else None) or TrafficPolicy()
    sub_path = f"spec.subsets[{subset_index}].trafficPolicy"
    top_path = "spec.trafficPolicy"

    def pick(sub_block: _T | None, top_block: _T | None, camel: str) -> tuple[_T, str] | None:
        if sub_block is not None:
            return sub_block, f"{sub_path}.{camel}"
        if top_block is not None:
            return top_block, f"{top_path}.{camel}"
        return None

    return Blocks(
        pick(sub.connection_pool, top.connection_pool, "connectionPool"),
        pick(sub.outlier_detection, top.outlier_detection, "outlierDetection"),
        pick(sub.load_balancer, top.load_balancer, "loadBalancer"),
    )


def translate_pool(
    block: tuple[ConnectionPool, str] | None, rec: Recorder | None
) -> tuple[EffectivePool, dict[str, Reason]]:
    """Circuit-breaker thresholds (``applyConnectionPool``): 0 or absent means 4294967295."""
    src = "Istio default circuit breakers"
    unlimited = "4294967295 (Istio writes MaxUint32)"
    reasons = {
        "pool.max_connections": default_reason(unlimited, "no connection limit", src),
        "pool.max_pending_requests": default_reason(unlimited, "no pending-request limit", src),
        "pool.max_requests": default_reason(unlimited, "no active-request limit", src),
        "pool.max_retries": default_reason(
            unlimited, "no limit on concurrent retries (Envoy's own default would be 3)", src
        ),
    }
    if block is None or rec is None:
        return EffectivePool(), reasons
    pool, path = block
    values: dict[str, int | None] = {}
    tcp, http = pool.tcp, pool.http
    spec: list[tuple[str, object, str, str, str]] = [
        ("max_connections", tcp, "max_connections", "tcp.maxConnections", "connections to the cluster"),
        (
            "max_pending_requests",
            http,
            "http1_max_pending_requests",
            "http.http1MaxPendingRequests",
            "requests waiting for a connection",
        ),
        ("max_requests", http, "http2_max_requests", "http.http2MaxRequests", "requests in flight"),
        ("max_retries", http, "max_retries", "http.maxRetries", "retries in flight across the cluster"),
    ]
    for key, obj, attr, sub, meaning in spec:
        v = getattr(obj, attr, None) if obj is not None else None
        if v is not None and v > 0:
            values[key] = v
            reasons[f"pool.{key}"] = rec(f"{path}.{sub}", v, f"at most {v} {meaning}")
        elif v is not None:
            reasons[f"pool.{key}"] = rec(f"{path}.{sub}", v, "0 means unset: Istio writes 4294967295")
    mrpc = http.max_requests_per_connection if http is not None else None
    if mrpc is not None and mrpc > 0:
        reasons["pool.max_requests_per_connection"] = rec(
            f"{path}.http.maxRequestsPerConnection", mrpc, f"connections close after {mrpc} request(s)"
        )
    else:
        mrpc = None
    h2 = http is not None and http.h2_upgrade_policy == "UPGRADE"
    return (
        EffectivePool(
            max_connections=values.get("max_connections") or MAX_UINT32,
            max_pending_requests=values.get("max_pending_requests") or MAX_UINT32,
            max_requests=values.get("max_requests") or MAX_UINT32,
            max_retries=values.get("max_retries") or MAX_UINT32,
            max_requests_per_connection=mrpc,
            http2=h2,
        ),
        reasons,
    )


def translate_outlier(
    block: tuple[OutlierDetection, str] | None, rec: Recorder | None, istio: IstioVersion
) -> tuple[EffectiveOutlier | None, float, dict[str, Reason]]:
    """Outlier detection with Envoy's defaults (``applyOutlierDetection``) and the panic threshold."""
    reasons: dict[str, Reason] = {}
    if block is None or rec is None:
        panic = 0.0 if istio.panic_threshold_zero_without_outlier else 50.0
        src = f"Istio {istio} without outlierDetection"
        reasons["outlier"] = default_reason("absent", "no outlier detection: no instance is ever ejected", src)
        reasons["outlier.panic_threshold"] = default_reason(
            f"{panic:g} %",
            "Istio >= 1.31 sets healthy_panic_threshold 0" if panic == 0 else "Envoy default healthy_panic_threshold",
            src,
        )
        return None, panic, reasons
    od, path = block
    reasons["outlier"] = rec(path, "present", "Envoy runs outlier detection on this cluster")
    c5 = od.consecutive_5xx_errors
    if c5 is None:
        n5, enforce5 = 5, True
        reasons["outlier.consecutive_5xx"] = default_reason(
            5,
            "consecutive5xxErrors absent: 5 consecutive 5xx (any 5xx, resets, connect failures) eject",
            "Envoy default consecutive_5xx 5",
        )
    else:
        n5, enforce5 = c5, c5 > 0
        reasons["outlier.consecutive_5xx"] = rec(
            f"{path}.consecutive5xxErrors",
            c5,
            f"{c5} consecutive 5xx eject a host" if c5 > 0 else "0 disables the 5xx detector",
        )
    cg = od.consecutive_gateway_errors
    if cg is None:
        ng, enforceg = 5, False
    else:
        ng, enforceg = cg, cg > 0
        reasons["outlier.consecutive_gateway"] = rec(
            f"{path}.consecutiveGatewayErrors",
            cg,
            f"{cg} consecutive 502/503/504 (or resets, connect failures, timeouts) eject a host"
            if cg > 0
            else "0 disables the gateway-error detector",
        )
    if od.consecutive_errors is not None:
        reasons["outlier.consecutive_errors"] = rec(
            f"{path}.consecutiveErrors",
            od.consecutive_errors,
            "deprecated and ignored by istiod since 1.7: Envoy's default of 5 consecutive 5xx applies instead"
            if c5 is None
            else "deprecated and ignored by istiod since 1.7",
        )
    interval = od.interval if od.interval is not None else 10.0
    reasons["outlier.interval"] = (
        rec(f"{path}.interval", interval, "sweep period; un-ejection waits for a sweep")
        if od.interval is not None
        else default_reason(10.0, "sweep period; un-ejection waits for a sweep", "Envoy default interval 10s")
    )
    base = od.base_ejection_time if od.base_ejection_time is not None else 30.0
    reasons["outlier.base_ejection_time"] = (
        rec(f"{path}.baseEjectionTime", base, "the n-th consecutive ejection lasts n x this")
        if od.base_ejection_time is not None
        else default_reason(
            30.0, "the n-th consecutive ejection lasts n x this", "Envoy default base_ejection_time 30s"
        )
    )
    mep = od.max_ejection_percent
    if mep is not None and mep > 0:
        reasons["outlier.max_ejection_percent"] = rec(
            f"{path}.maxEjectionPercent", f"{mep} %", "a host is ejected only if (ejected + 1) / hosts x 100 <= this"
        )
    else:
        reasons["outlier.max_ejection_percent"] = default_reason(
            "10 %",
            "a host is ejected only if (ejected + 1) / hosts x 100 <= 10: nothing is ejected with fewer than 10 hosts",
            "Envoy default max_ejection_percent 10",
        )
        mep = 10
    mhp = od.min_health_percent
    panic = float(mhp) if mhp is not None else 0.0
    reasons["outlier.panic_threshold"] = (
        rec(f"{path}.minHealthPercent", f"{mhp} %", "below this share of healthy hosts Envoy balances over all hosts")
        if mhp is not None
        else default_reason(
            "0 %", "panic mode disabled: with every host ejected requests get 503 UH", "Istio default minHealthPercent"
        )
    )
    outlier = EffectiveOutlier(n5, enforce5, ng, enforceg, interval, base, mep, max(ENVOY_MAX_EJECTION_TIME, base))
    return outlier, panic, reasons


def translate_lb(block: tuple[LoadBalancer, str] | None, rec: Recorder | None) -> tuple[LbPolicy, bool, Reason]:
    """Envoy's lb_policy (``applyLoadBalancer``), and whether it hashes consistently."""
    if block is None or rec is None:
        return (
            "LEAST_REQUEST",
            False,
            default_reason(
                "LEAST_REQUEST", "Istio's default since 1.14 (not round robin)", "Istio default load balancer"
            ),
        )
    lb, path = block
    if lb.consistent_hash is not None:
        kind: LbPolicy = "MAGLEV" if lb.consistent_hash.maglev_table_size else "RING_HASH"
        return kind, True, rec(f"{path}.consistentHash", kind, "requests with the same key go to the same host")
    simple = lb.simple or "UNSPECIFIED"
    mapped: dict[str, LbPolicy] = {
        "UNSPECIFIED": "LEAST_REQUEST",
        "LEAST_CONN": "LEAST_REQUEST",
        "LEAST_REQUEST": "LEAST_REQUEST",
        "ROUND_ROBIN": "ROUND_ROBIN",
        "RANDOM": "RANDOM",
        "PASSTHROUGH": "CLUSTER_PROVIDED",
    }
    effect = "deprecated alias of LEAST_REQUEST" if simple == "LEAST_CONN" else f"Envoy lb_policy {mapped[simple]}"
    return mapped[simple], False, rec(f"{path}.simple", simple, effect)
