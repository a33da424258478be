"""The policy Envoy really enforces for calls to one service (and subset), resolved as istiod would.

istiod fills every gap with a default, and several of them differ from Envoy's own defaults: the default
retry policy (which changed in 1.24), ``timeout: 0s``, circuit-breaker thresholds of 4294967295, and the
outlier-detection fields left to Envoy. :func:`effective_policy` applies those rules (notes
``istio-translation.md`` §1-§7) and records a :class:`~pytest_meshcheck.expect.model.Reason` for each value,
so a prediction can cite the field or default it used.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Literal, TypeVar

from pytest_meshcheck.errors import MeshcheckError, TopologyError
from pytest_meshcheck.expect.model import Reason
from pytest_meshcheck.istio_version import IstioVersion, parse_istio_version
from pytest_meshcheck.policy.model import (
    ConnectionPool,
    DestinationRule,
    HTTPRoute,
    HTTPRouteDestination,
    LoadBalancer,
    OutlierDetection,
    PolicySet,
    SourceRef,
    Subset,
    TrafficPolicy,
    VirtualService,
)
from pytest_meshcheck.topology import ServiceSpec, Topology

MAX_UINT32 = 4294967295
DEFAULT_RETRY_ON = ("connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes")
DEFAULT_BACKOFF_BASE = 0.025
HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5
ENVOY_MAX_EJECTION_TIME = 300.0
# Go's net/http.StatusText knows the same codes as Python's HTTPStatus; istiod keeps a numeric retryOn
# token as a status code only when Go knows it (retry.go: parseRetryOn).
_KNOWN_STATUS = frozenset(int(s) for s in HTTPStatus)

_T = TypeVar("_T")
LbPolicy = Literal["LEAST_REQUEST", "ROUND_ROBIN", "RANDOM", "RING_HASH", "MAGLEV", "CLUSTER_PROVIDED"]


@dataclass(frozen=True)
class EffectiveRetry:
    """The Envoy ``RetryPolicy`` of the route.

    Attributes:
        num_retries: Retries after the first attempt; 0 means no retry policy.
        retry_on: ``retry_on`` tokens, in order.
        retriable_status_codes: Codes the ``retriable-status-codes`` token retries.
        per_try_timeout: Seconds, or ``None``; see :func:`~pytest_meshcheck.expect.timeouts.effective_per_try_timeout`.
        previous_hosts: The ``previous_hosts`` predicate is set, so retries avoid hosts already tried.
        backoff_base: Base of the jittered exponential back-off, seconds.
        is_default: No ``retries`` block: Istio's default policy applies.
    """

    num_retries: int
    retry_on: tuple[str, ...] = ()
    retriable_status_codes: tuple[int, ...] = ()
    per_try_timeout: float | None = None
    previous_hosts: bool = True
    backoff_base: float = DEFAULT_BACKOFF_BASE
    is_default: bool = False

    @property
    def backoff_max(self) -> float:
        """Envoy caps each back-off at 10 x base when ``max_interval`` is unset (Istio never sets it)."""
        return 10 * self.backoff_base


@dataclass(frozen=True)
class EffectiveOutlier:
    """Envoy ``outlier_detection`` of the cluster, with Envoy's defaults filled in.

    Attributes:
        consecutive_5xx: Threshold of the 5xx detector.
        enforce_5xx: The 5xx detector ejects (``enforcing_consecutive_5xx`` 100).
        consecutive_gateway: Threshold of the gateway-failure detector.
        enforce_gateway: The gateway-failure detector ejects (Envoy's default enforcement is 0).
        interval: Seconds between sweeps; un-ejection happens only on a sweep.
        base_ejection_time: Seconds.
        max_ejection_percent: Percent of hosts that may be ejected at once.
        max_ejection_time: Cap on one ejection, seconds.
    """

    consecutive_5xx: int = 5
    enforce_5xx: bool = True
    consecutive_gateway: int = 5
    enforce_gateway: bool = False
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10
    max_ejection_time: float = ENVOY_MAX_EJECTION_TIME


@dataclass(frozen=True)
class EffectivePool:
    """Envoy circuit-breaker thresholds and per-connection limits of the cluster."""

    max_connections: int = MAX_UINT32
    max_pending_requests: int = MAX_UINT32
    max_requests: int = MAX_UINT32
    max_retries: int = MAX_UINT32
    max_requests_per_connection: int | None = None
    http2: bool = False


@dataclass(frozen=True)
class EffectiveFault:
    """The route's client-side fault injection, with Istio's absent-means-0 % rule applied."""

    abort_fraction: float = 0.0
    abort_status: int | None = None
    abort_grpc: str | None = None
    delay_fraction: float = 0.0
    delay: float = 0.0


@dataclass(frozen=True)
class EffectivePolicy:
    """Everything Envoy enforces on a call to one (service, subset), with the reason for each value.

    Attributes:
        service: The destination service.
        subset: The subset the traffic lands on, or ``None`` for the service's default cluster.
        hosts: Endpoints in the cluster.
        cluster_exists: ``False`` when the route names a subset no DestinationRule defines (503 ``NC``).
        retry: The route's retry policy.
        timeout: Route timeout in seconds, ``None`` when disabled.
        fault: Client-side fault injection of the route.
        pool: Circuit-breaker thresholds.
        outlier: Outlier detection, ``None`` when ``outlierDetection`` is absent.
        panic_threshold: ``healthy_panic_threshold`` percent.
        lb: Envoy load-balancing policy.
        istio: The Istio release modelled.
        reasons: One :class:`Reason` per concept (``retry.retry_on``, ``outlier.max_ejection_percent``...).
    """

    service: ServiceSpec
    subset: str | None
    hosts: int
    cluster_exists: bool
    retry: EffectiveRetry
    timeout: float | None
    fault: EffectiveFault
    pool: EffectivePool
    outlier: EffectiveOutlier | None
    panic_threshold: float
    lb: LbPolicy
    istio: IstioVersion
    reasons: dict[str, Reason] = field(default_factory=dict, hash=False, compare=False)

    def reason(self, *keys: str) -> tuple[Reason, ...]:
        """The reasons recorded under ``keys``, skipping keys with none."""
        return tuple(self.reasons[k] for k in keys if k in self.reasons)


class _Recorder:
    """Builds :class:`Reason` objects for one resource, with the field's line when the loader knew it."""

    def __init__(self, kind: str, name: str, namespace: str | None, source: SourceRef) -> None:
        self.label = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
        self.source = source

    def __call__(self, path: str, value: object, effect: str) -> Reason:
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


def _default(value: object, effect: str, source: str) -> Reason:
    return Reason(None, _render(value), effect, source)


# --- host matching -------------------------------------------------------------------------------


def _host_matches(host: str, namespace: str | None, svc: ServiceSpec, topology: Topology) -> bool:
    if "*" in host:
        return host == "*" or fnmatch.fnmatchcase(svc.fqdn, host)
    return topology.resolve_host(host, namespace) is svc


def _applies_to_sidecars(vs: VirtualService) -> bool:
    # A VirtualService bound to gateways only (no "mesh") does not program sidecars.
    return not vs.gateways or "mesh" in vs.gateways


def _is_catch_all(route: HTTPRoute) -> bool:
    if not route.match:
        return True
    for m in route.match:
        plain = not (m.method or m.headers or m.without_headers or m.query_params)
        if plain and (m.uri is None or (m.uri.kind == "prefix" and m.uri.value == "/")):
            return True
    return False


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


def _retry(
    route: HTTPRoute | None, rec: _Recorder | None, istio: IstioVersion, consistent_hash: bool
) -> tuple[EffectiveRetry, dict[str, Reason]]:
    default_src = f"Istio {istio} default retry policy"
    # From 1.23 a consistent-hash route drops the previous_hosts predicate (retry.go: DefaultConsistentHashPolicy).
    default_predicate = not (consistent_hash and istio.at_least(23))
    codes_note = "retries 503" if istio.default_retries_503 else "retries no status code (since Istio 1.24)"
    reasons: dict[str, Reason] = {}
    retries = route.retries if route is not None else None
    if retries is None or rec is None or route is None:
        reasons["retry.attempts"] = _default(2, "no retries block: up to 2 retries (3 attempts)", default_src)
        reasons["retry.retry_on"] = _default(
            DEFAULT_RETRY_ON + _default_codes(istio),
            f"retries connection failures, refused streams and gRPC unavailable/cancelled; {codes_note}",
            default_src,
        )
        reasons["retry.previous_hosts"] = _default(
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
        reasons["retry.retry_on"] = _default(
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
        reasons["retry.previous_hosts"] = _default(
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
        reasons["retry.backoff"] = _default(
            DEFAULT_BACKOFF_BASE, "retry n waits U(0, 25 ms x 2^(n-1)), at most 250 ms", "Envoy default retry back-off"
        )
    return EffectiveRetry(retries.attempts, retry_on, codes, per_try, predicate, backoff), reasons


# --- route-level pieces ---------------------------------------------------------------------------


def _timeout(route: HTTPRoute | None, rec: _Recorder | None) -> tuple[float | None, Reason]:
    if route is None or rec is None or route.timeout is None:
        return None, _default(
            0.0, "no route timeout: Istio writes timeout 0s (disabled)", "Istio default route timeout"
        )
    path = f"spec.http[{route.index}].timeout"
    if route.timeout == 0:
        return None, rec(path, route.timeout, "0s disables the route timeout")
    return route.timeout, rec(path, route.timeout, "bounds the whole request, retries and back-offs included")


def _fault(route: HTTPRoute | None, rec: _Recorder | None) -> tuple[EffectiveFault, dict[str, Reason]]:
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
class _Blocks:
    """The merged traffic-policy blocks, each with the dotted path it came from."""

    pool: tuple[ConnectionPool, str] | None = None
    outlier: tuple[OutlierDetection, str] | None = None
    lb: tuple[LoadBalancer, str] | None = None


def _merge(dr: DestinationRule | None, subset: Subset | None, subset_index: int | None) -> _Blocks:
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

    return _Blocks(
        pick(sub.connection_pool, top.connection_pool, "connectionPool"),
        pick(sub.outlier_detection, top.outlier_detection, "outlierDetection"),
        pick(sub.load_balancer, top.load_balancer, "loadBalancer"),
    )


def _pool(block: tuple[ConnectionPool, str] | None, rec: _Recorder | None) -> tuple[EffectivePool, dict[str, Reason]]:
    src = "Istio default circuit breakers"
    unlimited = "4294967295 (Istio writes MaxUint32)"
    reasons = {
        "pool.max_connections": _default(unlimited, "no connection limit", src),
        "pool.max_pending_requests": _default(unlimited, "no pending-request limit", src),
        "pool.max_requests": _default(unlimited, "no active-request limit", src),
        "pool.max_retries": _default(unlimited, "no limit on concurrent retries (Envoy's own default would be 3)", src),
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


def _outlier(
    block: tuple[OutlierDetection, str] | None, rec: _Recorder | None, istio: IstioVersion
) -> tuple[EffectiveOutlier | None, float, dict[str, Reason]]:
    reasons: dict[str, Reason] = {}
    if block is None or rec is None:
        panic = 0.0 if istio.panic_threshold_zero_without_outlier else 50.0
        src = f"Istio {istio} without outlierDetection"
        reasons["outlier"] = _default("absent", "no outlier detection: no instance is ever ejected", src)
        reasons["outlier.panic_threshold"] = _default(
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
        reasons["outlier.consecutive_5xx"] = _default(
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
        else _default(10.0, "sweep period; un-ejection waits for a sweep", "Envoy default interval 10s")
    )
    base = od.base_ejection_time if od.base_ejection_time is not None else 30.0
    reasons["outlier.base_ejection_time"] = (
        rec(f"{path}.baseEjectionTime", base, "the n-th consecutive ejection lasts n x this")
        if od.base_ejection_time is not None
        else _default(30.0, "the n-th consecutive ejection lasts n x this", "Envoy default base_ejection_time 30s")
    )
    mep = od.max_ejection_percent
    if mep is not None and mep > 0:
        reasons["outlier.max_ejection_percent"] = rec(
            f"{path}.maxEjectionPercent", f"{mep} %", "a host is ejected only if (ejected + 1) / hosts x 100 <= this"
        )
    else:
        reasons["outlier.max_ejection_percent"] = _default(
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
        else _default(
            "0 %", "panic mode disabled: with every host ejected requests get 503 UH", "Istio default minHealthPercent"
        )
    )
    outlier = EffectiveOutlier(n5, enforce5, ng, enforceg, interval, base, mep, max(ENVOY_MAX_EJECTION_TIME, base))
    return outlier, panic, reasons


def _lb(block: tuple[LoadBalancer, str] | None, rec: _Recorder | None) -> tuple[LbPolicy, bool, Reason]:
    if block is None or rec is None:
        return (
            "LEAST_REQUEST",
            False,
            _default("LEAST_REQUEST", "Istio's default since 1.14 (not round robin)", "Istio default load balancer"),
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


# --- the resolver ---------------------------------------------------------------------------------


def _pick_vs(policies: PolicySet, svc: ServiceSpec, topology: Topology) -> tuple[VirtualService | None, list[Reason]]:
    found = [
        vs
        for vs in policies.virtual_services
        if _applies_to_sidecars(vs) and any(_host_matches(h, vs.namespace, svc, topology) for h in vs.hosts)
    ]
    notes: list[Reason] = []
    if len(found) > 1:
        names = ", ".join(f"{v.namespace}/{v.name}" for v in found)
        notes.append(
            Reason(
                None,
                names,
                f"{len(found)} VirtualServices for {svc.name}: sidecars use only one; the first "
                "in load order is modelled",
                "istiod VirtualService selection",
            )
        )
    return (found[0] if found else None), notes


def _pick_route(vs: VirtualService, route: int | None) -> tuple[HTTPRoute, str]:
    if not vs.http:
        raise TopologyError(f"VirtualService {vs.namespace}/{vs.name} ({vs.source.file}) has no http routes")
    if route is not None:
        if not 0 <= route < len(vs.http):
            raise MeshcheckError(
                f"route={route} is out of range: VirtualService {vs.namespace}/{vs.name} has "
                f"{len(vs.http)} http route(s); pass route=0..{len(vs.http) - 1}"
            )
        return vs.http[route], f"spec.http[{route}] chosen by the caller"
    for r in vs.http:
        if _is_catch_all(r):
            return r, f"spec.http[{r.index}] is the first route a plain request matches; pass route= to pick another"
    return vs.http[0], "no route lacks match conditions; spec.http[0] is modelled; pass route= to pick another"


def _pick_destination(
    route: HTTPRoute, vs: VirtualService, subset: str | None, topology: Topology
) -> tuple[HTTPRouteDestination, ServiceSpec]:
    dests = [d for d in route.route if d.weight != 0] or list(route.route)
    if not dests:
        raise TopologyError(f"VirtualService {vs.namespace}/{vs.name} spec.http[{route.index}] has no destination")
    if subset is not None:
        dests = [d for d in dests if d.destination.subset == subset]
        if not dests:
            offered = ", ".join(repr(d.destination.subset) for d in route.route)
            raise MeshcheckError(
                f"subset={subset!r} is not a destination of VirtualService {vs.namespace}/{vs.name} "
                f"spec.http[{route.index}] (destinations: {offered}); pass one of those or route="
            )
    elif len({(d.destination.host, d.destination.subset) for d in dests}) > 1:
        split = ", ".join(f"{d.destination.subset or '(default)'} ({d.weight})" for d in dests)
        raise MeshcheckError(
            f"VirtualService {vs.namespace}/{vs.name} spec.http[{route.index}] splits traffic over {split}; "
            "a retry stays in the cluster chosen first, so predict per destination: pass subset="
        )
    dest = dests[0]
    target = topology.resolve_host(dest.destination.host, vs.namespace)
    if target is None:
        raise TopologyError(
            f"VirtualService {vs.namespace}/{vs.name} spec.http[{route.index}] routes to "
            f"{dest.destination.host!r}, which is not a service of topology {topology.source}"
        )
    return dest, target


def _pick_dr(
    policies: PolicySet, svc: ServiceSpec, topology: Topology, subset: str | None
) -> tuple[DestinationRule | None, Subset | None, int | None, list[Reason]]:
    drs = [dr for dr in policies.destination_rules if _host_matches(dr.host, dr.namespace, svc, topology)]
    notes: list[Reason] = []
    if len(drs) > 1:
        names = ", ".join(f"{d.namespace}/{d.name}" for d in drs)
        notes.append(
            Reason(
                None,
                names,
                "several DestinationRules for one host: istiod keeps the first one's trafficPolicy and merges subsets",
                "istiod DestinationRule merge",
            )
        )
    dr = drs[0] if drs else None
    if subset is None:
        return dr, None, None, notes
    for d in drs:
        for i, s in enumerate(d.subsets):
            if s.name == subset:
                return d, s, i, notes
    return dr, None, None, notes


def _count_hosts(svc: ServiceSpec, subset: Subset | None) -> int:
    if subset is None:
        return svc.replicas
    return sum(v.replicas for v in svc.versions if subset.labels.items() <= svc.instance_labels(v).items())


def effective_policy(
    policies: PolicySet,
    topology: Topology,
    service: str,
    *,
    subset: str | None = None,
    route: int | None = None,
    istio: IstioVersion | str | None = None,
) -> EffectivePolicy:
    """Resolve what Envoy enforces on a call to ``service`` from a sidecar, as istiod would configure it.

    Args:
        policies: The loaded VirtualServices and DestinationRules.
        topology: The services and their instances.
        service: The called service (short name or FQDN).
        subset: The subset the traffic lands on. Needed only when the route splits traffic.
        route: Index of the VirtualService ``http`` route to model; by default the first route a request
            without headers matches.
        istio: The Istio release to model; the current default when ``None``.

    Raises:
        TopologyError: The service, or a route's destination, is not in the topology.
        MeshcheckError: ``route`` or ``subset`` does not fit the VirtualService.
    """
    ver = istio if isinstance(istio, IstioVersion) else parse_istio_version(istio)
    svc = topology.service(service)
    reasons: dict[str, Reason] = {}
    vs, notes = _pick_vs(policies, svc, topology)
    chosen: HTTPRoute | None = None
    vrec: _Recorder | None = None
    target, dest_subset = svc, subset
    single_destination = True
    if vs is not None:
        vrec = _Recorder("VirtualService", vs.name, vs.namespace, vs.source)
        chosen, why = _pick_route(vs, route)
        dest, target = _pick_destination(chosen, vs, subset, topology)
        dest_subset = dest.destination.subset
        single_destination = len(chosen.route) == 1
        reasons["route"] = vrec(f"spec.http[{chosen.index}]", chosen.name or f"http[{chosen.index}]", why)
    else:
        reasons["route"] = _default(
            f"{svc.name} (no VirtualService)",
            "Istio's default route: default retries, no timeout",
            "istiod default route",
        )
    dr, sub, sub_index, dr_notes = _pick_dr(policies, target, topology, dest_subset)
    notes += dr_notes
    drec = _Recorder("DestinationRule", dr.name, dr.namespace, dr.source) if dr is not None else None
    cluster_exists = dest_subset is None or sub is not None
    if not cluster_exists:
        reasons["subset"] = Reason(
            None,
            str(dest_subset),
            "no DestinationRule defines this subset: Envoy has no such cluster and answers 503 NC",
            "istiod cluster naming",
        )
    hosts = _count_hosts(target, sub) if cluster_exists else 0
    if sub is not None and drec is not None:
        reasons["hosts"] = drec(
            f"spec.subsets[{sub_index}].labels", sub.labels, f"selects {hosts} instance(s) of {target.name}"
        )
    else:
        reasons["hosts"] = Reason(None, str(hosts), f"instances of {target.name}", f"topology {topology.source}")
    blocks = _merge(dr, sub, sub_index)
    lb, consistent, reasons["lb"] = _lb(blocks.lb, drec)
    retry, retry_reasons = _retry(chosen, vrec, ver, consistent and single_destination)
    reasons.update(retry_reasons)
    timeout, reasons["timeout"] = _timeout(chosen, vrec)
    fault, fault_reasons = _fault(chosen, vrec)
    reasons.update(fault_reasons)
    pool, pool_reasons = _pool(blocks.pool, drec)
    reasons.update(pool_reasons)
    outlier, panic, od_reasons = _outlier(blocks.outlier, drec, ver)
    reasons.update(od_reasons)
    for i, note in enumerate(notes):
        reasons[f"note.{i}"] = note
    return EffectivePolicy(
        target, dest_subset, hosts, cluster_exists, retry, timeout, fault, pool, outlier, panic, lb, ver, reasons
    )


def default_policy(
    service: ServiceSpec, *, hosts: int | None = None, istio: IstioVersion | str | None = None
) -> EffectivePolicy:
    """The policy of a service with no VirtualService and no DestinationRule (Istio's defaults only)."""
    topo = Topology((service,), source="<default>")
    policy = effective_policy(PolicySet(), topo, service.name, istio=istio)
    return policy if hosts is None else replace(policy, hosts=hosts)
