"""Validate a DestinationRule spec as Istio's admission does, and build the model.

Rules follow istiod's ``ValidateDestinationRule`` and ``validateTrafficPolicy`` (``pkg/config/validation/
validation.go``) plus the CRD schema's oneOf constraints; comments name the istiod function.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from pytest_meshcheck.policy.model import (
    ConnectionPool,
    ConsistentHash,
    DestinationRule,
    HTTPSettings,
    LoadBalancer,
    LoadBalancerSimple,
    OutlierDetection,
    Subset,
    TCPSettings,
    TrafficPolicy,
)
from pytest_meshcheck.policy.reader import Fields, child, describe, item
from pytest_meshcheck.policy.validation import is_istio_dns_label, label_errors, wildcard_domain_error

_SIMPLE: tuple[LoadBalancerSimple, ...] = (
    "UNSPECIFIED",
    "LEAST_CONN",
    "RANDOM",
    "PASSTHROUGH",
    "ROUND_ROBIN",
    "LEAST_REQUEST",
)
_H2_UPGRADE = ("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE")
_HASH_KEYS = ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName")
# Maglev table sizes must be prime and below this (validateLoadBalancer, mirroring Envoy).
_MAGLEV_LIMIT = 5_000_011


def build_destination_rule(spec: Fields, name: str, namespace: str | None, api_version: str) -> DestinationRule:
    """Read and validate ``spec`` of a DestinationRule; problems go to ``spec.ctx``."""
    host = spec.string("host")
    tp_f = spec.obj("trafficPolicy", "TrafficPolicy")
    policy = _traffic_policy(tp_f) if tp_f else None
    subsets_f = spec.obj_list("subsets", "Subset")
    subsets = [_subset(s) for s in subsets_f or []]
    spec.finish()
    if host is None:
        spec.require("host", "set host to the service, e.g. host: order-service.platform-core.svc.cluster.local")
    elif (err := wildcard_domain_error(host)) is not None:
        spec.ctx.error(spec.at("host"), f"invalid host: {err}", "use a service name or FQDN")
    seen: set[str] = set()
    for s_f, subset in zip(subsets_f or [], subsets, strict=True):
        if subset.name and subset.name in seen:
            spec.ctx.error(s_f.at("name"), f"duplicate subset names: {subset.name}", "give each subset a unique name")
        seen.add(subset.name)
    return DestinationRule(
        name=name,
        namespace=namespace,
        api_version=api_version,
        host=host or "",
        traffic_policy=policy,
        subsets=tuple(subsets),
    )


def _subset(f: Fields) -> Subset:
    # validateSubset: name required, a DNS-1123 label; labels are valid label keys and values.
    name = f.string("name")
    labels = f.string_map("labels")
    tp_f = f.obj("trafficPolicy", "TrafficPolicy")
    policy = _traffic_policy(tp_f) if tp_f else None
    f.finish()
    if name is None:
        f.require("name", "name the subset, e.g. name: v1")
    elif not is_istio_dns_label(name):
        f.ctx.error(f.at("name"), f"subset name {name!r} is not a DNS-1123 label", "use letters, digits and '-'")
    for key, message in label_errors(labels or {}):
        f.ctx.error(child(f.at("labels"), key), message, "use Kubernetes label syntax for keys and values")
    if not f.data.get("labels"):
        f.ctx.warn(f.path, "subset has no labels, so it selects every instance of the service")
    return Subset(name=name or "", labels=labels or {}, traffic_policy=policy)


def _traffic_policy(f: Fields) -> TrafficPolicy:
    # validateTrafficPolicy
    if not any(f.present(k) for k in f.data):
        f.ctx.error(f.path, "traffic policy must have at least one field", "remove the empty trafficPolicy")
    pool_f = f.obj("connectionPool", "ConnectionPoolSettings")
    outlier_f = f.obj("outlierDetection", "OutlierDetection")
    lb_f = f.obj("loadBalancer", "LoadBalancerSettings")
    f.finish()
    return TrafficPolicy(
        connection_pool=_connection_pool(pool_f) if pool_f else None,
        outlier_detection=_outlier(outlier_f) if outlier_f else None,
        load_balancer=_load_balancer(lb_f) if lb_f else None,
    )


def _count(f: Fields, name: str, istio_default: str) -> int | None:
    # validateConnectionPool: non-negative; applyConnectionPool treats 0 as unset.
    value = f.integer(name)
    if value is not None and value < 0:
        f.ctx.error(f.at(name), f"{name} must be non-negative", f"set {name} to a positive number")
    elif value == 0:
        f.ctx.warn(f.at(name), f"{name}: 0 means unset in Istio, so {istio_default} applies, not a limit of 0")
    return value


def _connection_pool(f: Fields) -> ConnectionPool:
    tcp_f, http_f = f.obj("tcp", "TCPSettings"), f.obj("http", "HTTPSettings")
    f.finish()
    if tcp_f is None and http_f is None:
        f.ctx.error(f.path, "connection pool must have at least one field (tcp or http)", "add tcp or http settings")
    return ConnectionPool(tcp=_tcp(tcp_f) if tcp_f else None, http=_http(http_f) if http_f else None)


def _tcp(f: Fields) -> TCPSettings:
    max_conn = _count(f, "maxConnections", "Istio's default of 4294967295")
    connect = f.duration("connectTimeout")
    max_duration = f.duration("maxConnectionDuration")
    # validateConnectionPool admits tcp.idleTimeout: 0s (idle timeout disabled); the CRD has no >= 1ms rule here.
    idle = f.duration("idleTimeout", "istio-or-zero")
    ka_time = ka_interval = None
    ka_probes = None
    ka_f = f.obj("tcpKeepalive", "TcpKeepalive")
    if ka_f is not None:
        ka_time, ka_interval = ka_f.duration("time"), ka_f.duration("interval")
        ka_probes = ka_f.integer("probes", "uint32")
        ka_f.finish()
    f.finish()
    return TCPSettings(
        max_connections=max_conn,
        connect_timeout=connect,
        max_connection_duration=max_duration,
        idle_timeout=idle,
        tcp_keepalive_time=ka_time,
        tcp_keepalive_interval=ka_interval,
        tcp_keepalive_probes=ka_probes,
    )


def _http(f: Fields) -> HTTPSettings:
    unlimited = "Istio's default of 4294967295"
    pending = _count(f, "http1MaxPendingRequests", unlimited)
    h2_max = _count(f, "http2MaxRequests", unlimited)
    per_conn = _count(f, "maxRequestsPerConnection", "Envoy's default (unlimited)")
    retries = _count(f, "maxRetries", unlimited)
    streams = _count(f, "maxConcurrentStreams", "Envoy's default")
    idle = f.duration("idleTimeout")
    upgrade = f.enum("h2UpgradePolicy", _H2_UPGRADE)
    client_protocol = f.boolean("useClientProtocol")
    f.finish()
    if upgrade == "UPGRADE" and client_protocol:
        f.ctx.error(
            f.at("useClientProtocol"),
            "use client protocol must not be true when h2UpgradePolicy is UPGRADE",
            "drop one of the two",
        )
    return HTTPSettings(
        http1_max_pending_requests=pending,
        http2_max_requests=h2_max,
        max_requests_per_connection=per_conn,
        max_retries=retries,
        idle_timeout=idle,
        h2_upgrade_policy=upgrade,
        use_client_protocol=client_protocol,
        max_concurrent_streams=streams,
    )


def _outlier(f: Fields) -> OutlierDetection:
    # validateOutlierDetection
    consecutive_errors = f.integer("consecutiveErrors")
    c5xx = f.integer("consecutive5xxErrors", "uint32")
    gateway = f.integer("consecutiveGatewayErrors", "uint32")
    local = f.integer("consecutiveLocalOriginFailures", "uint32")
    split = f.boolean("splitExternalLocalOriginErrors")
    interval = f.duration("interval")
    base = f.duration("baseEjectionTime")
    max_eject = f.integer("maxEjectionPercent")
    min_health = f.integer("minHealthPercent")
    f.finish()
    if consecutive_errors is not None:
        instead = (
            f"consecutive5xxErrors: {c5xx} applies instead"
            if c5xx is not None
            else "Envoy's default consecutive_5xx=5 applies, so any 5xx including 500 counts"
        )
        f.ctx.warn(
            f.at("consecutiveErrors"),
            f"consecutiveErrors: {consecutive_errors} is deprecated and ignored by istiod since Istio 1.7; {instead} "
            "(and locally-originated failures such as resets and timeouts count too); use consecutive5xxErrors or "
            "consecutiveGatewayErrors",
        )
    if local and not split:
        f.ctx.error(
            f.at("consecutiveLocalOriginFailures"),
            "consecutiveLocalOriginFailures is set, but splitExternalLocalOriginErrors is not true",
            "add splitExternalLocalOriginErrors: true, or remove consecutiveLocalOriginFailures",
        )
    for name, value in (("maxEjectionPercent", max_eject), ("minHealthPercent", min_health)):
        if value is not None and not 0 <= value <= 100:
            f.ctx.error(f.at(name), f"percentage {value} is not in range 0..100", f"set {name} between 0 and 100")
    if max_eject == 0:
        f.ctx.warn(
            f.at("maxEjectionPercent"), "maxEjectionPercent: 0 means unset in Istio, so Envoy's default of 10% applies"
        )
    return OutlierDetection(
        consecutive_errors=consecutive_errors,
        consecutive_5xx_errors=c5xx,
        consecutive_gateway_errors=gateway,
        consecutive_local_origin_failures=local,
        split_external_local_origin_errors=split,
        interval=interval,
        base_ejection_time=base,
        max_ejection_percent=max_eject,
        min_health_percent=min_health,
    )


def _load_balancer(f: Fields) -> LoadBalancer:
    # CRD oneOf: at most one of simple and consistentHash; validateLoadBalancer for the rest.
    simple = cast("LoadBalancerSimple | None", f.enum("simple", _SIMPLE))
    hash_f = f.obj("consistentHash", "ConsistentHashLB")
    consistent = _consistent_hash(hash_f) if hash_f else None
    warmup_secs = f.duration("warmupDurationSecs")
    warmup = None
    warmup_f = f.obj("warmup", "Warmup")
    if warmup_f is not None:
        warmup = warmup_f.duration("duration")
        if not warmup_f.present("duration"):
            warmup_f.require("duration", "set warmup: {duration: 60s}")
        warmup_f.finish()
    f.finish()
    if f.present("simple") and f.present("consistentHash"):
        f.ctx.error(f.path, "sets both simple and consistentHash; a load balancer takes one", "keep one of the two")
    if simple == "LEAST_CONN":
        f.ctx.warn(f.at("simple"), "LEAST_CONN is deprecated; Istio configures Envoy's LEAST_REQUEST for it")
    if warmup_secs is not None:
        extra = "; warmup.duration is used" if warmup is not None else ""
        f.ctx.warn(f.at("warmupDurationSecs"), f"warmupDurationSecs is superseded by warmup.duration{extra}")
    return LoadBalancer(
        simple=simple, consistent_hash=consistent, warmup_duration=warmup if warmup is not None else warmup_secs
    )


def _consistent_hash(f: Fields) -> ConsistentHash:
    header = f.string("httpHeaderName")
    query = f.string("httpQueryParameterName")
    source_ip = f.boolean("useSourceIp")
    cookie_name = cookie_path = cookie_ttl = None
    cookie_f = f.obj("httpCookie", "HTTPCookie")
    if cookie_f is not None:
        cookie_name, cookie_path = cookie_f.string("name"), cookie_f.string("path")
        cookie_ttl = cookie_f.duration("ttl", "non-negative")
        _cookie_attributes(cookie_f)
        cookie_f.finish()
        if not cookie_name:
            cookie_f.ctx.error(cookie_f.at("name"), "name required for HttpCookie", "set httpCookie: {name: <cookie>}")
    legacy_ring = f.integer("minimumRingSize", "uint64")
    ring_f, maglev_f = f.obj("ringHash", "RingHash"), f.obj("maglev", "MagLev")
    ring = table = None
    if ring_f is not None:
        ring = ring_f.integer("minimumRingSize", "uint64")
        ring_f.finish()
    if maglev_f is not None:
        table = maglev_f.integer("tableSize", "uint64")
        maglev_f.finish()
        if not table:
            f.ctx.error(
                maglev_f.at("tableSize"), "tableSize must be set for maglev", "set tableSize to a prime, e.g. 65537"
            )
        elif table >= _MAGLEV_LIMIT or not _is_prime(table):
            f.ctx.error(
                maglev_f.at("tableSize"),
                f"tableSize {table} must be a prime below {_MAGLEV_LIMIT}",
                "use a prime such as 65537",
            )
    f.finish()
    keys = [k for k in _HASH_KEYS if f.present(k)]
    if len(keys) > 1:
        f.ctx.error(f.path, f"sets {' and '.join(keys)}; consistentHash takes exactly one hash key", "keep one")
    elif not keys or (keys == ["useSourceIp"] and source_ip is False):
        # Istio admits it (the CRD's oneOf allows no key) and sends no hash policy, so hosts are picked
        # without affinity.
        f.ctx.warn(
            f.path,
            "consistentHash has no hash key, so requests are not hashed to a stable host (no session affinity); "
            "set one of httpHeaderName, httpCookie, useSourceIp: true, httpQueryParameterName",
        )
    if ring_f is not None and maglev_f is not None:
        f.ctx.error(f.path, "sets both ringHash and maglev; take one", "keep one of ringHash and maglev")
    if legacy_ring is not None:
        if ring_f is not None or maglev_f is not None:
            f.ctx.error(
                f.at("minimumRingSize"),
                "only one of minimumRingSize or maglev/ringHash can be specified",
                "move the value to ringHash: {minimumRingSize: N}",
            )
        elif legacy_ring:
            f.ctx.warn(
                f.at("minimumRingSize"),
                "minimumRingSize is deprecated (Istio still honours it); use ringHash: {minimumRingSize: N}",
            )
    return ConsistentHash(
        http_header_name=header,
        http_cookie_name=cookie_name,
        http_cookie_path=cookie_path,
        http_cookie_ttl=cookie_ttl,
        use_source_ip=source_ip,
        http_query_parameter_name=query,
        minimum_ring_size=ring if ring is not None else legacy_ring,
        maglev_table_size=table,
    )


def _cookie_attributes(f: Fields) -> None:
    # CRD: each attributes[] item is an object with a required string name and an optional string value.
    # The list itself is then ignored with a warning (schema.IGNORED) by f.finish().
    attributes = f.data.get("attributes")
    for i, attribute in enumerate(attributes if isinstance(attributes, list) else []):
        path = item(f.at("attributes"), i)
        fix = "write each attribute as {name: SameSite, value: Strict}"
        if not isinstance(attribute, Mapping):
            f.ctx.error(
                path, f"a cookie attribute must be a mapping with name and value, got {describe(attribute)}", fix
            )
            continue
        for key in sorted(set(attribute) - {"name", "value"}):
            f.ctx.error(
                child(path, str(key)), f"unknown field {key!r}: a cookie attribute has only name and value", fix
            )
        name, value = attribute.get("name"), attribute.get("value")
        if not isinstance(name, str) or not name:
            f.ctx.error(child(path, "name"), f"a cookie attribute needs a name (a string), got {describe(name)}", fix)
        if value is not None and not isinstance(value, str):
            f.ctx.error(child(path, "value"), f"expected a string, got {describe(value)}", fix)


def _is_prime(x: int) -> bool:
    # The same trial division istiod copied from Envoy.
    if 0 < x < 4:
        return True
    if x % 2 == 0:
        return False
    factor = 3
    while factor * factor <= x:
        if x % factor == 0:
            return False
        factor += 2
    return True
