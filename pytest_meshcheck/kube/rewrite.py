"""Move a topology and its policies into the run namespace, so a run never touches the user's namespaces.

Every service of the topology runs in ``meshcheck-<run id>``. Host names that name a topology service in
its own namespace are rewritten to the same service in the run namespace, in every form Istio accepts
(``svc.ns.svc.cluster.local``, ``svc.ns.svc``, ``svc.ns`` and ``*.ns.svc.cluster.local``); short names stay
as they are, since they resolve relative to the policy's namespace, which becomes the run namespace too:
every policy is applied in the run namespace, whatever namespace its document names, so a run never
writes into a namespace it did not create.
Hosts of other services are left unchanged. The rewritten topology and policies are what a cluster run
reports, so cluster names (``outbound|8084||order-service.meshcheck-1a2b3c4d.svc.cluster.local``) match
what Prometheus holds.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

from pytest_meshcheck.errors import PolicyError, PolicyIssue, TopologyError
from pytest_meshcheck.policy.model import (
    DestinationRule,
    HTTPRoute,
    HTTPRouteDestination,
    Policy,
    PolicySet,
    VirtualService,
)
from pytest_meshcheck.topology import CLUSTER_DOMAIN, Topology

# Fields a cluster adds to objects it returns; a policy exported from a cluster must not carry them back.
_SERVER_METADATA = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink")


class HostRewriter:
    """Maps host names and namespaces of ``topology`` to ``run_namespace``.

    Args:
        topology: The user's topology (services in their own namespaces).
        run_namespace: The namespace every service runs in during the run.
    """

    def __init__(self, topology: Topology, run_namespace: str) -> None:
        self.run_namespace = run_namespace
        self.namespaces = frozenset(s.namespace for s in topology.services)
        self._services = frozenset((s.name, s.namespace) for s in topology.services)

    def namespace(self, ns: str | None) -> str:
        """The run namespace for a topology namespace or ``None``; other namespaces are kept."""
        if ns is None or ns in self.namespaces or ns == self.run_namespace:
            return self.run_namespace
        return ns

    def host(self, host: str) -> str:
        """Rewrite one host name (see the module docstring); unknown hosts are returned unchanged."""
        parts = host.split(".")
        if len(parts) < 2:
            return host
        name, ns, rest = parts[0], parts[1], ".".join(parts[2:])
        if rest not in ("", "svc", CLUSTER_DOMAIN):
            return host
        if ns not in self.namespaces:
            return host
        if name != "*" and (name, ns) not in self._services:
            return host
        return ".".join([name, self.run_namespace, *parts[2:]])

    def gateway(self, ref: str) -> str:
        """Rewrite a ``<namespace>/<gateway>`` reference; ``mesh`` and bare names are kept."""
        ns, sep, name = ref.partition("/")
        if not sep:
            return ref
        return f"{self.namespace(ns)}/{name}"

    def export_to(self, ref: str) -> str:
        """Rewrite an ``exportTo`` entry (``.`` and ``*`` are kept)."""
        return ref if ref in (".", "*", "~") else self.namespace(ref)


def rewrite_topology(topology: Topology, run_namespace: str) -> Topology:
    """The same topology with every service in ``run_namespace``.

    Raises:
        TopologyError: Two services of the same name live in different namespaces; in one run namespace
            they would be the same Kubernetes Service.
    """
    seen: dict[str, str] = {}
    for svc in topology.services:
        if svc.name in seen and seen[svc.name] != svc.namespace:
            raise TopologyError(
                f"{topology.source}: service {svc.name!r} exists in namespaces {seen[svc.name]!r} and "
                f"{svc.namespace!r}; a cluster run puts every service in one namespace ({run_namespace}), so "
                "service names must be unique. Rename one of them in the topology file."
            )
        seen[svc.name] = svc.namespace
    services = tuple(dataclasses.replace(s, namespace=run_namespace) for s in topology.services)
    return dataclasses.replace(topology, services=services)


def _route(route: HTTPRoute, hosts: HostRewriter) -> HTTPRoute:
    dests = tuple(
        HTTPRouteDestination(dataclasses.replace(d.destination, host=hosts.host(d.destination.host)), d.weight)
        for d in route.route
    )
    return dataclasses.replace(route, route=dests)


def rewrite_policy(policy: Policy, hosts: HostRewriter) -> Policy:
    """The typed policy as it runs in the cluster (namespace, hosts and destinations rewritten)."""
    if isinstance(policy, VirtualService):
        return dataclasses.replace(
            policy,
            namespace=hosts.run_namespace,
            hosts=tuple(hosts.host(h) for h in policy.hosts),
            gateways=tuple(hosts.gateway(g) for g in policy.gateways),
            http=tuple(_route(r, hosts) for r in policy.http),
        )
    return dataclasses.replace(policy, namespace=hosts.run_namespace, host=hosts.host(policy.host))


def rewrite_policies(policies: PolicySet, hosts: HostRewriter) -> PolicySet:
    """:func:`rewrite_policy` over a whole set (warnings and notes are kept)."""
    vs = tuple(rewrite_policy(p, hosts) for p in policies.virtual_services)
    dr = tuple(rewrite_policy(p, hosts) for p in policies.destination_rules)
    return PolicySet(
        tuple(p for p in vs if isinstance(p, VirtualService)),
        tuple(p for p in dr if isinstance(p, DestinationRule)),
        policies.warnings,
        policies.skipped,
    )


def _map_list(node: Any, key: str, fn: Callable[[str], str]) -> None:
    if isinstance(node, dict) and isinstance(node.get(key), list):
        node[key] = [fn(v) if isinstance(v, str) else v for v in node[key]]


def _map_value(node: Any, key: str, fn: Callable[[str], str]) -> None:
    if isinstance(node, dict) and isinstance(node.get(key), str):
        node[key] = fn(node[key])


def _destinations(routes: Any, hosts: HostRewriter) -> None:
    if not isinstance(routes, list):
        return
    for rule in routes:
        if not isinstance(rule, dict):
            continue
        for dest in rule.get("route") or []:
            if isinstance(dest, dict):
                _map_value(dest.get("destination"), "host", hosts.host)
        _map_value(rule.get("mirror"), "host", hosts.host)
        for mirror in rule.get("mirrors") or []:
            if isinstance(mirror, dict):
                _map_value(mirror.get("destination"), "host", hosts.host)
        for match in rule.get("match") or []:
            _map_list(match, "gateways", hosts.gateway)
            _map_value(match, "sourceNamespace", hosts.namespace)


def policy_document(policy: Policy) -> dict[str, Any]:
    """The policy's own YAML document (``SourceRef.text``), parsed.

    Raises:
        PolicyError: The policy was built in code rather than loaded from YAML, so its text is unknown.
    """
    import yaml

    try:
        doc = yaml.safe_load(policy.source.text) if policy.source.text else None
    except yaml.YAMLError as exc:
        doc = None
        reason = f"its YAML text does not parse ({exc})"
    else:
        reason = "it carries no YAML text"
    if not isinstance(doc, dict):
        raise PolicyError(
            [
                PolicyIssue(
                    policy.source.file,
                    policy.source.document,
                    "(document)",
                    f"{policy.kind} {policy.name!r} cannot be applied to a cluster: {reason}",
                    "load policies with load_policies() or load_policy_text(), which keep each document's YAML",
                )
            ]
        )
    return doc


def rewrite_document(doc: dict[str, Any], hosts: HostRewriter) -> dict[str, Any]:
    """A copy of a VirtualService or DestinationRule document moved into the run namespace.

    Every field is kept (including ones pytest-meshcheck does not model); server-set metadata and
    ``status`` are dropped. Names, labels and annotations are set by the caller.
    """
    out = copy.deepcopy(doc)
    out.pop("status", None)
    meta = out.setdefault("metadata", {})
    for key in _SERVER_METADATA:
        meta.pop(key, None)
    # Whatever namespace the document names, it is applied in the run namespace: a run never writes elsewhere.
    meta["namespace"] = hosts.run_namespace
    spec = out.get("spec")
    if not isinstance(spec, dict):
        return out
    _map_list(spec, "exportTo", hosts.export_to)
    if out.get("kind") == "VirtualService":
        _map_list(spec, "hosts", hosts.host)
        _map_list(spec, "gateways", hosts.gateway)
        for kind in ("http", "tcp", "tls"):
            _destinations(spec.get(kind), hosts)
    else:
        _map_value(spec, "host", hosts.host)
    return out
