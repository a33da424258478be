"""What every rule needs: the loaded policies, the topology, the Istio version and the assumptions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pytest_meshcheck.istio_version import IstioVersion
from pytest_meshcheck.lint.finding import Finding, Severity
from pytest_meshcheck.lint.rules import RULES
from pytest_meshcheck.policy.model import DestinationRule, Policy, PolicySet, Subset, VirtualService
from pytest_meshcheck.topology import CLUSTER_DOMAIN, ServiceSpec, Topology

# Hosts or paths that name money-moving APIs: retrying them after the request was sent can charge twice.
DEFAULT_NON_IDEMPOTENT = r"payment|checkout|billing|charge"


@dataclass
class LintContext:
    """Inputs shared by the rules, plus the findings they report.

    Attributes:
        policies: Every policy that loaded.
        topology: Services, replicas and versions (for N hosts and subset labels).
        istio: The Istio release whose behaviour to assume.
        returns: HTTP statuses the destinations are assumed to fail with (``--returns``).
        non_idempotent: Regex matched against hosts and URI matches of non-idempotent APIs.
        findings: Collected findings.
    """

    policies: PolicySet
    topology: Topology
    istio: IstioVersion
    returns: tuple[int, ...] = (500, 503)
    non_idempotent: re.Pattern[str] = field(default_factory=lambda: re.compile(DEFAULT_NON_IDEMPOTENT, re.I))
    findings: list[Finding] = field(default_factory=list)
    _rules_by_host: dict[str, list[DestinationRule]] | None = field(default=None, repr=False)

    def report(self, code: str, policy: Policy, path: str, message: str, severity: Severity | None = None) -> None:
        """Record a finding of rule ``code`` at ``path`` of ``policy`` (the nearest known line is used)."""
        src = policy.source
        self.findings.append(
            Finding(
                RULES[code],
                message,
                src.file,
                nearest_line(src.field_lines, path, src.line),
                path,
                f"{policy.kind} {policy.namespace or '-'}/{policy.name}",
                severity,
            )
        )

    def service(self, host: str, namespace: str | None) -> ServiceSpec | None:
        """The topology service a host names, or ``None``."""
        return self.topology.resolve_host(host, namespace)

    def host_key(self, host: str, namespace: str | None) -> str:
        """A host normalised as istiod would (short names are relative to the namespace)."""
        svc = self.service(host, namespace)
        if svc is not None:
            return svc.fqdn
        if "." not in host and namespace:
            return f"{host}.{namespace}.{CLUSTER_DOMAIN}"
        if host.count(".") == 1 and not host.startswith("*"):
            return f"{host}.{CLUSTER_DOMAIN}"  # name.namespace
        return host

    def rules_for(self, host: str, namespace: str | None) -> list[DestinationRule]:
        """DestinationRules whose host is the same as ``host``."""
        if self._rules_by_host is None:
            # Built once: a per-route scan of every DestinationRule is quadratic on large repositories.
            self._rules_by_host = {}
            for dr in self.policies.destination_rules:
                self._rules_by_host.setdefault(self.host_key(dr.host, dr.namespace), []).append(dr)
        return self._rules_by_host.get(self.host_key(host, namespace), [])


def nearest_line(lines: dict[str, int], path: str, default: int) -> int:
    """Line of ``path``, or of its closest enclosing field, or the document start."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return default


def subset_hosts(svc: ServiceSpec, subset: Subset | None) -> int:
    """Pods of ``svc`` a subset (or the whole service, for ``None``) selects."""
    if subset is None:
        return svc.replicas
    return sum(v.replicas for v in svc.versions if subset.labels.items() <= svc.instance_labels(v).items())


def is_mesh_bound(vs: VirtualService) -> bool:
    """True when the VirtualService applies to sidecars (no gateways, or the reserved ``mesh``)."""
    return not vs.gateways or "mesh" in vs.gateways
