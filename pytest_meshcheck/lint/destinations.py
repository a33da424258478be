"""Rules on DestinationRules: outlier detection, connection pools and subsets, per Envoy cluster."""

from __future__ import annotations

from dataclasses import dataclass

from pytest_meshcheck.expect.ejection import max_ejectable
from pytest_meshcheck.lint.context import LintContext, subset_hosts
from pytest_meshcheck.lint.finding import Severity
from pytest_meshcheck.policy.model import ConnectionPool, DestinationRule, OutlierDetection, Subset
from pytest_meshcheck.topology import ServiceSpec

ENVOY_DEFAULT_MAX_EJECTION_PERCENT = 10


@dataclass(frozen=True)
class _Cluster:
    """One Envoy cluster a DestinationRule produces: the default one, or one per subset."""

    label: str
    subset: Subset | None
    outlier: tuple[OutlierDetection, str] | None
    pool: tuple[ConnectionPool, str] | None


def check_destination_rules(ctx: LintContext) -> None:
    """Run every DestinationRule rule."""
    for dr in ctx.policies.destination_rules:
        svc = ctx.service(dr.host, dr.namespace)
        clusters = _clusters(dr)
        seen_blocks: set[str] = set()
        for cluster in clusters:
            if cluster.outlier is not None:
                od, path = cluster.outlier
                if path not in seen_blocks:
                    _outlier_static(ctx, dr, od, path)
                if svc is not None:
                    _outlier_hosts(ctx, dr, od, path, cluster, subset_hosts(svc, cluster.subset))
            if cluster.pool is not None and cluster.pool[1] not in seen_blocks:
                _pool(ctx, dr, *cluster.pool)
            seen_blocks.update(b[1] for b in (cluster.outlier, cluster.pool) if b is not None)
        if svc is not None:
            _empty_subsets(ctx, dr, svc)


def _clusters(dr: DestinationRule) -> list[_Cluster]:
    """The clusters and the policy block each uses; a subset block replaces the top-level block whole."""
    top = dr.traffic_policy
    top_od = (top.outlier_detection, "spec.trafficPolicy.outlierDetection") if top and top.outlier_detection else None
    top_pool = (top.connection_pool, "spec.trafficPolicy.connectionPool") if top and top.connection_pool else None
    out = [_Cluster("the default cluster", None, top_od, top_pool)]
    for i, subset in enumerate(dr.subsets):
        tp = subset.traffic_policy
        base = f"spec.subsets[{i}].trafficPolicy"
        od = (tp.outlier_detection, f"{base}.outlierDetection") if tp and tp.outlier_detection else top_od
        pool = (tp.connection_pool, f"{base}.connectionPool") if tp and tp.connection_pool else top_pool
        out.append(_Cluster(f"subset {subset.name}", subset, od, pool))
    return out


def _outlier_static(ctx: LintContext, dr: DestinationRule, od: OutlierDetection, path: str) -> None:
    if od.consecutive_errors is not None:
        ctx.report(
            "MC121",
            dr,
            f"{path}.consecutiveErrors",
            f"consecutiveErrors: {od.consecutive_errors} is ignored since Istio 1.7; Envoy's default of 5 consecutive "
            "5xx (any 5xx, 500 included) applies instead",
        )
    gateway_only = od.consecutive_5xx_errors == 0 and (od.consecutive_gateway_errors or 0) > 0
    non_gateway = [s for s in ctx.returns if s >= 500 and s not in (502, 503, 504)]
    if gateway_only and non_gateway:
        ctx.report(
            "MC122",
            dr,
            f"{path}.consecutive5xxErrors",
            f"only gateway errors eject (consecutive5xxErrors: 0), but the destination returns "
            f"{', '.join(map(str, non_gateway))}, which never counts",
        )


def _outlier_hosts(
    ctx: LintContext, dr: DestinationRule, od: OutlierDetection, path: str, cluster: _Cluster, hosts: int
) -> None:
    if hosts <= 0 or (od.consecutive_5xx_errors == 0 and not od.consecutive_gateway_errors):
        return  # empty cluster (MC170) or a detector switched off on purpose
    mep = od.max_ejection_percent or ENVOY_DEFAULT_MAX_EJECTION_PERCENT
    ejectable = max_ejectable(hosts, mep)
    if ejectable == 0:
        given = f"maxEjectionPercent {mep}" if od.max_ejection_percent else "maxEjectionPercent unset (Envoy's 10 %)"
        ctx.report(
            "MC120",
            dr,
            f"{path}.maxEjectionPercent" if od.max_ejection_percent else path,
            f"{given} with {hosts} host(s) in {cluster.label}: ejecting one host would exceed it "
            f"(100/{hosts} = {100 / hosts:.3g} %), so nothing is ever ejected",
        )
        return
    mhp = od.min_health_percent or 0
    if mhp <= 0:
        return
    for ejected in range(1, ejectable + 1):
        healthy = 100 * (hosts - ejected) / hosts
        if healthy < mhp:
            ctx.report(
                "MC123",
                dr,
                f"{path}.minHealthPercent",
                f"minHealthPercent {mhp}: after {ejected} of {hosts} host(s) in {cluster.label} are ejected only "
                f"{healthy:.3g} % are healthy, so Envoy panics and sends traffic to the ejected hosts again",
            )
            return


def _pool(ctx: LintContext, dr: DestinationRule, pool: ConnectionPool, path: str) -> None:
    if pool.tcp is None or pool.tcp.max_connections is None:
        return
    if pool.http is not None and pool.http.http1_max_pending_requests is not None:
        return
    ctx.report(
        "MC130",
        dr,
        f"{path}.tcp.maxConnections",
        f"maxConnections {pool.tcp.max_connections} without http.http1MaxPendingRequests: requests beyond it wait "
        "in an unbounded queue (4294967295) instead of failing fast with 503 UO",
    )


def _empty_subsets(ctx: LintContext, dr: DestinationRule, svc: ServiceSpec) -> None:
    for i, subset in enumerate(dr.subsets):
        if subset_hosts(svc, subset) > 0:
            continue
        routed = [
            vs.name
            for vs in ctx.policies.virtual_services
            for route in vs.http
            for rd in route.route
            if rd.destination.subset == subset.name
            and rd.weight != 0
            and ctx.host_key(rd.destination.host, vs.namespace) == svc.fqdn
        ]
        versions = ", ".join(f"{v.name}: {svc.instance_labels(v)}" for v in svc.versions)
        tail = f"; VirtualService {', '.join(sorted(set(routed)))} routes to it: 503 UH" if routed else ""
        ctx.report(
            "MC170",
            dr,
            f"spec.subsets[{i}].labels",
            f"subset {subset.name!r} selects {subset.labels}, which no pod of {svc.name} has ({versions}){tail}",
            Severity.ERROR if routed else None,
        )
