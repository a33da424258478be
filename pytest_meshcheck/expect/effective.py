"""The policy Envoy really enforces for calls to one service (and subset), resolved as istiod would.

istiod fills every gap with a default, and several of them differ from Envoy's own defaults: the default
retry policy (which changed in 1.24), ``timeout: 0s``, circuit-breaker thresholds of 4294967295, and the
outlier-detection fields left to Envoy. :func:`effective_policy` applies those rules (notes
``istio-translation.md`` §1-§7) and records a :class:`~pytest_meshcheck.expect.model.Reason` for each value,
so a prediction can cite the field or default it used.
"""

from __future__ import annotations

import fnmatch
from dataclasses import replace

from pytest_meshcheck.errors import MeshcheckError, TopologyError
from pytest_meshcheck.expect.istiod import (
    Recorder,
    default_reason,
    merge_traffic_policy,
    parse_retry_on,
    translate_fault,
    translate_lb,
    translate_outlier,
    translate_pool,
    translate_retry,
    translate_timeout,
)
from pytest_meshcheck.expect.model import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_RETRY_ON,
    ENVOY_MAX_EJECTION_TIME,
    HOST_SELECTION_RETRY_MAX_ATTEMPTS,
    MAX_UINT32,
    EffectiveFault,
    EffectiveOutlier,
    EffectivePolicy,
    EffectivePool,
    EffectiveRetry,
    LbPolicy,
    Reason,
)
from pytest_meshcheck.istio_version import IstioVersion, parse_istio_version
from pytest_meshcheck.policy.model import (
    DestinationRule,
    HTTPRoute,
    HTTPRouteDestination,
    PolicySet,
    Subset,
    VirtualService,
)
from pytest_meshcheck.topology import ServiceSpec, Topology

__all__ = [
    "DEFAULT_BACKOFF_BASE",
    "DEFAULT_RETRY_ON",
    "ENVOY_MAX_EJECTION_TIME",
    "HOST_SELECTION_RETRY_MAX_ATTEMPTS",
    "MAX_UINT32",
    "EffectiveFault",
    "EffectiveOutlier",
    "EffectivePolicy",
    "EffectivePool",
    "EffectiveRetry",
    "LbPolicy",
    "default_policy",
    "effective_policy",
    "parse_retry_on",
]


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
    vrec: Recorder | None = None
    target, dest_subset = svc, subset
    single_destination = True
    if vs is not None:
        vrec = Recorder("VirtualService", vs.name, vs.namespace, vs.source)
        chosen, why = _pick_route(vs, route)
        dest, target = _pick_destination(chosen, vs, subset, topology)
        dest_subset = dest.destination.subset
        single_destination = len(chosen.route) == 1
        reasons["route"] = vrec(f"spec.http[{chosen.index}]", chosen.name or f"http[{chosen.index}]", why)
    else:
        reasons["route"] = default_reason(
            f"{svc.name} (no VirtualService)",
            "Istio's default route: default retries, no timeout",
            "istiod default route",
        )
    dr, sub, sub_index, dr_notes = _pick_dr(policies, target, topology, dest_subset)
    notes += dr_notes
    drec = Recorder("DestinationRule", dr.name, dr.namespace, dr.source) if dr is not None else None
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
    blocks = merge_traffic_policy(dr, sub, sub_index)
    lb, consistent, reasons["lb"] = translate_lb(blocks.lb, drec)
    retry, retry_reasons = translate_retry(chosen, vrec, ver, consistent and single_destination)
    reasons.update(retry_reasons)
    timeout, reasons["timeout"] = translate_timeout(chosen, vrec)
    fault, fault_reasons = translate_fault(chosen, vrec)
    reasons.update(fault_reasons)
    pool, pool_reasons = translate_pool(blocks.pool, drec)
    reasons.update(pool_reasons)
    outlier, panic, od_reasons = translate_outlier(blocks.outlier, drec, ver)
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
