"""Which VirtualService and DestinationRule apply to a service, as istiod picks them for a sidecar.

Host resolution goes through :meth:`Topology.resolve_host`. Choices istiod makes that matter here:

* A VirtualService applies to sidecars only when ``gateways`` is empty or lists ``mesh``. When
  several list the same host, the oldest wins (istiod keeps the first virtual host of a name and
  drops the duplicates); load order stands in for creation order.
* Several DestinationRules for one host in one namespace are merged
  (``pilot/pkg/model/push_context.go: mergeDestinationRule``): the first rule is kept, later rules
  only add subsets with new names, and lend their top-level ``trafficPolicy`` only if the merged
  rule has none. Across namespaces istiod prefers the client's namespace, then the service's; a
  meshcheck client has no namespace of its own, so the service's namespace is preferred, then the
  namespace of the first rule loaded.
* A subset's traffic policy replaces the top-level one block by block
  (``pilot/pkg/model/destination_rule.go: MergeTrafficPolicy``), never field by field.
"""

from __future__ import annotations

import dataclasses

from pytest_meshcheck.policy.model import (
    ConsistentHash,
    Destination,
    DestinationRule,
    PolicySet,
    TrafficPolicy,
    VirtualService,
)
from pytest_meshcheck.topology import CLUSTER_DOMAIN, ServiceSpec, Topology

MESH_GATEWAY = "mesh"


def applies_to_sidecars(vs: VirtualService) -> bool:
    """True when ``vs`` configures sidecars (no ``gateways`` or ``mesh`` among them)."""
    return not vs.gateways or MESH_GATEWAY in vs.gateways


def virtual_service_for(policies: PolicySet, topology: Topology, svc: ServiceSpec) -> VirtualService | None:
    """The VirtualService a client sidecar uses for ``svc``, or ``None``."""
    for vs in policies.virtual_services:
        if not applies_to_sidecars(vs):
            continue
        if any(topology.resolve_host(h, vs.namespace) == svc for h in vs.hosts):
            return vs
    return None


def destination_rule_for(policies: PolicySet, topology: Topology, svc: ServiceSpec) -> DestinationRule | None:
    """The (merged) DestinationRule that shapes ``svc``'s clusters, or ``None``."""
    rules = [dr for dr in policies.destination_rules if topology.resolve_host(dr.host, dr.namespace) == svc]
    if not rules:
        return None
    preferred = [dr for dr in rules if dr.namespace in (None, svc.namespace)]
    group = preferred or [dr for dr in rules if dr.namespace == rules[0].namespace]
    merged = group[0]
    for dr in group[1:]:
        names = {s.name for s in merged.subsets}
        merged = dataclasses.replace(
            merged,
            subsets=merged.subsets + tuple(s for s in dr.subsets if s.name not in names),
            traffic_policy=merged.traffic_policy if merged.traffic_policy is not None else dr.traffic_policy,
        )
    return merged


def merge_subset_policy(top: TrafficPolicy | None, subset: TrafficPolicy | None) -> TrafficPolicy | None:
    """A subset's effective policy: each block it sets replaces the whole top-level block."""
    if subset is None:
        return top
    if top is None:
        return subset
    return TrafficPolicy(
        connection_pool=subset.connection_pool or top.connection_pool,
        outlier_detection=subset.outlier_detection or top.outlier_detection,
        load_balancer=subset.load_balancer or top.load_balancer,
    )


def istio_fqdn(host: str, namespace: str | None) -> str:
    """``ResolveShortnameToFQDN``: a dot-less host is relative to the resource's namespace."""
    if "." not in host and namespace:
        return f"{host}.{namespace}.{CLUSTER_DOMAIN}"
    return host


def resolve_destination(
    dest: Destination, namespace: str | None, topology: Topology, listen_port: int
) -> tuple[str, ServiceSpec | None]:
    """``GetDestinationCluster``: the cluster name a route destination points at, and its service.

    The port is the destination's, else the service's only port, else the listener port. A host
    or subset nobody defines still yields a name; Envoy then answers ``503 NC`` (no cluster).
    """
    svc = topology.resolve_host(dest.host, namespace)
    fqdn = svc.fqdn if svc else istio_fqdn(dest.host, namespace)
    port = dest.port if dest.port is not None else (svc.port if svc else listen_port)
    return f"outbound|{port}|{dest.subset or ''}|{fqdn}", svc


def consistent_hash_for(dr: DestinationRule | None, subset: str | None) -> ConsistentHash | None:
    """``hashForHTTPDestination``: the subset's consistentHash if it has one, else the top-level one.

    Unlike cluster building this looks at the hash alone: a subset ``loadBalancer`` without
    ``consistentHash`` does not cancel the top-level hash policy on the route.
    """
    if dr is None:
        return None
    top = dr.traffic_policy.load_balancer if dr.traffic_policy else None
    chosen = top.consistent_hash if top else None
    for s in dr.subsets:
        if s.name == subset:
            lb = s.traffic_policy.load_balancer if s.traffic_policy else None
            if lb is not None and lb.consistent_hash is not None:
                chosen = lb.consistent_hash
            break
    return chosen
