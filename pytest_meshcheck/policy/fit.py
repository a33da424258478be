"""Check that loaded policies fit a topology, the way istiod would resolve them against a cluster.

Mismatches that make Istio route requests into nothing are errors: a subset whose labels select no
instance (an empty cluster, so 503 ``UH``), a route to a subset no DestinationRule defines (no cluster at
all, so 503 ``NC``), a destination port the service does not expose. Hosts the topology does not know only
warn: in a real mesh they may well be services that are simply not part of this test.
"""

from __future__ import annotations

from pytest_meshcheck.errors import PolicyIssue, TopologyError
from pytest_meshcheck.policy.model import DestinationRule, PolicySet, PolicyWarning, SourceRef
from pytest_meshcheck.topology import ServiceSpec, Topology

__all__ = ["check_policies_fit"]


def check_policies_fit(policies: PolicySet, topology: Topology) -> list[PolicyWarning]:
    """Check every host, subset and port the policies reference against ``topology``.

    Returns:
        Warnings for hosts that are not services of the topology (the policy has no effect locally).

    Raises:
        TopologyError: Listing every reference that would make Istio fail requests, each with file,
            document, field, line and fix.
    """
    problems: list[PolicyIssue] = []
    warnings: list[PolicyWarning] = []

    def issue(src: SourceRef, path: str, message: str, fix: str) -> None:
        problems.append(PolicyIssue(src.file, src.document, path, message, fix, src.field_lines.get(path)))

    def unknown_host(src: SourceRef, path: str, host: str) -> None:
        known = ", ".join(s.name for s in topology.services)
        warnings.append(
            PolicyWarning(
                src.file,
                src.document,
                path,
                f"host {host!r} is not a service of topology {topology.source} (services: {known}); the policy has no "
                "effect in the local mesh",
            )
        )

    rules_by_service: dict[str, list[DestinationRule]] = {}
    for dr in policies.destination_rules:
        svc = topology.resolve_host(dr.host, dr.namespace)
        if svc is None:
            unknown_host(dr.source, "spec.host", dr.host)
            continue
        rules_by_service.setdefault(svc.fqdn, []).append(dr)
        for i, subset in enumerate(dr.subsets):
            if not any(subset.labels.items() <= svc.instance_labels(ver).items() for ver in svc.versions):
                issue(
                    dr.source,
                    f"spec.subsets[{i}].labels",
                    f"subset {subset.name!r} selects labels {subset.labels}, which no version of {svc.name} has "
                    f"({_versions(svc)}); Istio would build an empty cluster, so every request routed to it fails "
                    "with 503 (no healthy upstream, flag UH)",
                    f"change the labels to those of a version, or add a matching version to the topology "
                    f"({topology.source})",
                )

    for vs in policies.virtual_services:
        for j, host in enumerate(vs.hosts):
            if topology.resolve_host(host, vs.namespace) is None:
                unknown_host(vs.source, f"spec.hosts[{j}]", host)
        for route in vs.http:
            for k, rd in enumerate(route.route):
                path = f"spec.http[{route.index}].route[{k}].destination"
                dest = rd.destination
                svc = topology.resolve_host(dest.host, vs.namespace)
                if svc is None:
                    unknown_host(vs.source, f"{path}.host", dest.host)
                    continue
                if dest.port is not None and dest.port != svc.port:
                    issue(
                        vs.source,
                        f"{path}.port.number",
                        f"{svc.name} exposes port {svc.port}, not {dest.port}; Istio has no cluster for that port, "
                        "so requests fail with 503 (flag NC)",
                        f"set port: {{number: {svc.port}}} or remove the port",
                    )
                if dest.subset is not None:
                    defined = {s.name for dr in rules_by_service.get(svc.fqdn, []) for s in dr.subsets}
                    if dest.subset not in defined:
                        shown = ", ".join(sorted(defined)) or "none"
                        issue(
                            vs.source,
                            f"{path}.subset",
                            f"subset {dest.subset!r} of {svc.name} is defined by no loaded DestinationRule "
                            f"(defined: {shown}); Istio still routes to cluster "
                            f"outbound|{svc.port}|{dest.subset}|{svc.fqdn}, which does not exist, so every request "
                            "fails with 503 (flag NC, no cluster found)",
                            f"add a DestinationRule for {svc.fqdn} with subset {dest.subset!r}, or load the file "
                            "that has it",
                        )
    if problems:
        lines = "\n  ".join(str(p) for p in problems)
        raise TopologyError(f"{len(problems)} policy reference(s) do not fit the topology:\n  {lines}")
    return warnings


def _versions(svc: ServiceSpec) -> str:
    return "; ".join(f"{v.name}: {svc.instance_labels(v)}" for v in svc.versions)
