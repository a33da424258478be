"""DestinationRules to Envoy clusters, as ``pilot/pkg/networking/core/cluster_traffic_policy.go`` builds them.

Every service gets ``outbound|PORT||FQDN`` with all its endpoints, plus one
``outbound|PORT|SUBSET|FQDN`` per DestinationRule subset. istiod uses EDS; meshcheck writes the same
endpoints inline (``type: STATIC``), which Envoy load-balances identically. Istio's defaults are applied
to every cluster, with or without a DestinationRule (``applyTrafficPolicy`` always runs).

Not translated, because the local mesh is plain-text HTTP/1.1: TLS settings, ``h2UpgradePolicy``,
``useClientProtocol`` and ``maxConcurrentStreams`` (the latter only applies to HTTP/2 clusters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pytest_meshcheck.errors import TopologyError
from pytest_meshcheck.istio_version import IstioVersion
from pytest_meshcheck.policy.model import (
    ConnectionPool,
    DestinationRule,
    LoadBalancer,
    OutlierDetection,
    PolicySet,
    TrafficPolicy,
)
from pytest_meshcheck.topology import ServiceSpec, Topology
from pytest_meshcheck.translate.common import (
    HTTP_PROTOCOL_OPTIONS,
    ISTIO_CONNECT_TIMEOUT,
    JSON,
    UINT32_MAX,
    cluster_name,
    duration,
    type_url,
)
from pytest_meshcheck.translate.lookup import destination_rule_for, merge_subset_policy
from pytest_meshcheck.translate.stats import delimited_stat_prefix

Endpoint = tuple[str, int]
"""Address and port of one workload instance."""

EndpointMap = Mapping[tuple[str, str], Sequence[Endpoint]]
"""Endpoints per (service name, version name)."""


def build_clusters(
    policies: PolicySet, topology: Topology, endpoints: EndpointMap, version: IstioVersion
) -> list[JSON]:
    """Build every outbound cluster a client sidecar would get for ``topology``.

    Args:
        policies: Validated policies; only DestinationRules matter here.
        topology: The services, versions and labels.
        endpoints: Instances per (service name, version name); a missing key means no instances.
        version: The Istio release whose defaults to reproduce.

    Returns:
        ``envoy.config.cluster.v3.Cluster`` dicts: per service the default cluster, then its subsets.

    Raises:
        TopologyError: ``endpoints`` names a service or version the topology does not have.
    """
    _check_endpoint_keys(topology, endpoints)
    out: list[JSON] = []
    for svc in topology.services:
        dr = destination_rule_for(policies, topology, svc)
        top = dr.traffic_policy if dr else None
        unhealthy = _sends_unhealthy_endpoints(dr, version)
        every = [ep for v in svc.versions for ep in endpoints.get((svc.name, v.name), ())]
        out.append(_cluster(cluster_name(svc.port, None, svc.fqdn), every, top, version, unhealthy))
        for subset in dr.subsets if dr else ():
            members = [
                ep
                for v in svc.versions
                if subset.labels.items() <= svc.instance_labels(v).items()
                for ep in endpoints.get((svc.name, v.name), ())
            ]
            policy = merge_subset_policy(top, subset.traffic_policy)
            out.append(_cluster(cluster_name(svc.port, subset.name, svc.fqdn), members, policy, version, unhealthy))
    return out


def _check_endpoint_keys(topology: Topology, endpoints: EndpointMap) -> None:
    known = {(s.name, v.name) for s in topology.services for v in s.versions}
    unknown = sorted(set(endpoints) - known)
    if unknown:
        raise TopologyError(
            f"endpoints given for {unknown}, which topology {topology.source} does not define; "
            f"known (service, version) pairs: {sorted(known)}"
        )


def _sends_unhealthy_endpoints(dr: DestinationRule | None, version: IstioVersion) -> bool:
    """Whether istiod zeroes every panic threshold of this service because it sends unhealthy endpoints.

    Istio >= 1.31 does so unless the service's DestinationRule configures ``minHealthPercent``; the
    field is a proto3 int32, so 0 counts as "not configured".
    """
    if not version.sends_unhealthy_endpoints:
        return False
    policies = [dr.traffic_policy] + [s.traffic_policy for s in dr.subsets] if dr else []
    return not any(p and p.outlier_detection and p.outlier_detection.min_health_percent for p in policies)


def _cluster(
    name: str,
    endpoints: Sequence[Endpoint],
    policy: TrafficPolicy | None,
    version: IstioVersion,
    sends_unhealthy: bool,
) -> JSON:
    c: JSON = {"name": name, "type": "STATIC"}
    if version.stat_prefix_delimiter:
        c["alt_stat_name"] = delimited_stat_prefix(name, version)
    c["connect_timeout"] = duration(ISTIO_CONNECT_TIMEOUT)
    c["load_assignment"] = {
        "cluster_name": name,
        "endpoints": [
            {
                "lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": addr, "port_value": port}}}}
                    for addr, port in endpoints
                ]
            }
        ],
    }
    policy = policy or TrafficPolicy()
    _apply_connection_pool(c, policy.connection_pool or ConnectionPool(), version)
    _apply_outlier_detection(c, policy.outlier_detection, sends_unhealthy)
    _apply_load_balancer(c, policy.load_balancer, sends_unhealthy)
    return c


def _apply_connection_pool(c: JSON, pool: ConnectionPool, version: IstioVersion) -> None:
    """``applyConnectionPool``: zero means unset, so only positive limits override MaxUint32."""
    threshold: JSON = {
        "max_connections": UINT32_MAX,
        "max_pending_requests": UINT32_MAX,
        "max_requests": UINT32_MAX,
        "max_retries": UINT32_MAX,
    }
    if version.track_remaining:
        threshold["track_remaining"] = True
    idle_timeout: float | None = None
    max_requests_per_connection = 0
    max_connection_duration: float | None = None
    if (http := pool.http) is not None:
        if http.http2_max_requests:
            threshold["max_requests"] = http.http2_max_requests
        if http.http1_max_pending_requests:
            threshold["max_pending_requests"] = http.http1_max_pending_requests
        if http.max_retries:
            threshold["max_retries"] = http.max_retries
        idle_timeout = http.idle_timeout
        max_requests_per_connection = http.max_requests_per_connection or 0
    if (tcp := pool.tcp) is not None:
        if tcp.connect_timeout is not None:
            c["connect_timeout"] = duration(tcp.connect_timeout)
        if tcp.max_connections:
            threshold["max_connections"] = tcp.max_connections
        max_connection_duration = tcp.max_connection_duration
        if idle_timeout is None:
            idle_timeout = tcp.idle_timeout
        keepalive = _tcp_keepalive(tcp.tcp_keepalive_time, tcp.tcp_keepalive_interval, tcp.tcp_keepalive_probes)
        if keepalive is not None:
            c["upstream_connection_options"] = {"tcp_keepalive": keepalive}
    c["circuit_breakers"] = {"thresholds": [threshold]}

    common: JSON = {}
    if idle_timeout is not None:
        common["idle_timeout"] = duration(idle_timeout)
    if max_requests_per_connection > 0:
        common["max_requests_per_connection"] = max_requests_per_connection
    if max_connection_duration is not None:
        common["max_connection_duration"] = duration(max_connection_duration)
    if common:
        # clusterWrapper.build(): upstream_protocol_options is required, so istiod fills in plain HTTP/1.1.
        c["typed_extension_protocol_options"] = {
            HTTP_PROTOCOL_OPTIONS: {
                "@type": type_url(HTTP_PROTOCOL_OPTIONS),
                "common_http_protocol_options": common,
                "explicit_http_config": {"http_protocol_options": {}},
            }
        }


def _tcp_keepalive(time: float | None, interval: float | None, probes: int | None) -> JSON | None:
    """``setKeepAliveSettings``: times are truncated to whole seconds; unset ones keep OS defaults."""
    if time is None and interval is None and probes is None:
        return None
    keepalive: JSON = {}
    if probes:
        keepalive["keepalive_probes"] = probes
    if time is not None:
        keepalive["keepalive_time"] = int(time)
    if interval is not None:
        keepalive["keepalive_interval"] = int(interval)
    return keepalive


def _apply_outlier_detection(c: JSON, od: OutlierDetection | None, sends_unhealthy: bool) -> None:
    """``applyOutlierDetection``. ``consecutiveErrors`` is ignored, as istiod has done since 1.7."""
    if od is None:
        return
    out: JSON = {"enforcing_success_rate": 0}
    if od.consecutive_5xx_errors is not None:
        out["consecutive_5xx"] = od.consecutive_5xx_errors
        out["enforcing_consecutive_5xx"] = 100 if od.consecutive_5xx_errors > 0 else 0
    if od.consecutive_gateway_errors is not None:
        out["consecutive_gateway_failure"] = od.consecutive_gateway_errors
        out["enforcing_consecutive_gateway_failure"] = 100 if od.consecutive_gateway_errors > 0 else 0
    if od.interval is not None:
        out["interval"] = duration(od.interval)
    if od.base_ejection_time is not None:
        out["base_ejection_time"] = duration(od.base_ejection_time)
    if od.max_ejection_percent:
        out["max_ejection_percent"] = od.max_ejection_percent
    if od.split_external_local_origin_errors:
        out["split_external_local_origin_errors"] = True
        if od.consecutive_local_origin_failures:
            out["consecutive_local_origin_failure"] = od.consecutive_local_origin_failures
            out["enforcing_consecutive_local_origin_failure"] = 100
        out["enforcing_local_origin_success_rate"] = 0
    c["outlier_detection"] = out
    # Written even when 0: Envoy's own default of 50 % would otherwise apply.
    panic = 0 if sends_unhealthy else (od.min_health_percent or 0)
    c.setdefault("common_lb_config", {})["healthy_panic_threshold"] = {"value": float(panic)}


def _apply_load_balancer(c: JSON, lb: LoadBalancer | None, sends_unhealthy: bool) -> None:
    """``applyLoadBalancer`` plus ``ApplyRingHashLoadBalancer``."""
    if sends_unhealthy:
        c.setdefault("common_lb_config", {})["healthy_panic_threshold"] = {"value": 0.0}
    simple = lb.simple if lb else None
    slow_start = (
        {"slow_start_config": {"slow_start_window": duration(lb.warmup_duration)}}
        if (lb and lb.warmup_duration is not None)
        else None
    )
    if simple == "RANDOM":
        c["lb_policy"] = "RANDOM"
    elif simple == "ROUND_ROBIN":
        c["lb_policy"] = "ROUND_ROBIN"
        if slow_start:
            c["round_robin_lb_config"] = slow_start
    elif simple == "PASSTHROUGH":
        # Istio sends the request to the address the client dialled; EDS endpoints are dropped.
        c["type"] = "ORIGINAL_DST"
        c["lb_policy"] = "CLUSTER_PROVIDED"
        del c["load_assignment"]
        return
    else:
        # LEAST_REQUEST, deprecated LEAST_CONN, UNSPECIFIED and unset: Istio's default since 1.14,
        # written out because Envoy's own default is ROUND_ROBIN.
        c["lb_policy"] = "LEAST_REQUEST"
        if slow_start:
            c["least_request_lb_config"] = slow_start
    ch = lb.consistent_hash if lb else None
    if ch is None:
        return
    c.pop("least_request_lb_config", None)
    c.pop("round_robin_lb_config", None)
    if ch.maglev_table_size is not None:
        c["lb_policy"] = "MAGLEV"
        if ch.maglev_table_size:
            c["maglev_lb_config"] = {"table_size": ch.maglev_table_size}
    else:
        c["lb_policy"] = "RING_HASH"
        c["ring_hash_lb_config"] = {"minimum_ring_size": ch.minimum_ring_size or 1024}


def service_clusters(policies: PolicySet, topology: Topology, svc: ServiceSpec) -> list[str]:
    """Names of the clusters :func:`build_clusters` makes for ``svc``: the default one, then its subsets."""
    dr = destination_rule_for(policies, topology, svc)
    return [cluster_name(svc.port, None, svc.fqdn)] + [
        cluster_name(svc.port, s.name, svc.fqdn) for s in (dr.subsets if dr else ())
    ]
