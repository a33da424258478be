"""Have the callers' sidecars got the config yet? Decided from what each proxy itself reports.

istiod stamps every Envoy route it builds from a VirtualService, and every cluster it builds with a
DestinationRule, with ``metadata.filter_metadata.istio.config`` =
``/apis/networking.istio.io/<version>/namespaces/<ns>/<virtual-service|destination-rule>/<name>``
(``pilot/pkg/networking/util: AddConfigInfoMetadata``). Each policy generation is applied as a new
object (``<name>-g<N>``), and the previous one is deleted, so "the proxy runs generation N" is exactly
"the proxy's routes/clusters reference ``<name>-g<N>`` and no longer ``<name>-g<N-1>``". No sleeping,
no guessing from traffic.

Every sidecar that enforces a hop is asked: the agent's (the load's first hop) and the sidecar of every
pod of a service with ``calls`` (``order-service`` -> ``payment-service`` is enforced by the order pods'
sidecars). Each is a :class:`Proxy`: where to read its view, and its pod labels (a DestinationRule's
``workloadSelector`` decides which of them get it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_meshcheck.topology import Topology

_KEBAB = {"VirtualService": "virtual-service", "DestinationRule": "destination-rule"}


@dataclass(frozen=True)
class ObjectKey:
    """A policy object in the cluster: kind, namespace, name (``order-retry-g2``)."""

    kind: str
    namespace: str
    name: str

    @property
    def config_suffix(self) -> str:
        """The tail of the ``istio.config`` metadata that names this object."""
        return f"/namespaces/{self.namespace}/{_KEBAB[self.kind]}/{self.name}"

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @classmethod
    def of(cls, manifest: Mapping[str, Any]) -> ObjectKey:
        """The key of a policy manifest."""
        meta = manifest["metadata"]
        return cls(str(manifest["kind"]), str(meta["namespace"]), str(meta["name"]))


@dataclass(frozen=True)
class SidecarView:
    """The agent's ``/sidecar/config`` answer.

    Attributes:
        configs: Istio config path -> the routes and clusters built from it.
        clusters: Cluster name -> ``(hosts, healthy hosts)``.
    """

    configs: dict[str, list[str]] = field(default_factory=dict)
    clusters: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SidecarView:
        """Parse the agent's answer."""
        configs = {str(k): [str(x) for x in v] for k, v in dict(doc.get("configs") or {}).items()}
        clusters = {
            str(k): (int(v.get("hosts", 0)), int(v.get("healthy", 0)))
            for k, v in dict(doc.get("clusters") or {}).items()
        }
        return cls(configs, clusters)

    def runs(self, key: ObjectKey) -> bool:
        """Whether any route or cluster of the proxy was built from ``key``."""
        return any(path.endswith(key.config_suffix) for path in self.configs)


@dataclass(frozen=True)
class Proxy:
    """One sidecar whose config a policy change must reach.

    Attributes:
        where: How messages name it (``the caller's sidecar``, ``the sidecar of pod order-service-v1-abc``).
        labels: Its pod's labels (DestinationRule ``workloadSelector`` matching).
        view: Reads what it runs now.
        services: Short names of the services whose endpoints it must have (its calls; every service for the
            agent, which sends the load).
    """

    where: str
    labels: Mapping[str, str]
    view: Callable[[], SidecarView]
    services: tuple[str, ...] = ()


def _visible_here(spec: Mapping[str, Any], namespace: str) -> bool:
    export = spec.get("exportTo")
    return not export or any(e in (".", "*", namespace) for e in export)


def _host_known(host: str, namespace: str, topology: Topology) -> bool:
    if host.startswith("*."):
        return any(s.fqdn.endswith(host[1:]) for s in topology.services)
    return host == "*" or topology.resolve_host(host, namespace) is not None


def reaches_caller(manifest: Mapping[str, Any], topology: Topology, caller_labels: Mapping[str, str]) -> bool:
    """Whether istiod puts this policy into the caller's sidecar, so its arrival can be observed there.

    A VirtualService does when it binds to the mesh (no ``gateways``, or ``mesh`` among them), has HTTP
    routes and names a topology host; a DestinationRule when its host is a topology service and its
    ``workloadSelector`` (if any) selects the caller. Both must be exported to the namespace.
    """
    spec = manifest.get("spec") or {}
    ns = str(manifest["metadata"]["namespace"])
    if not _visible_here(spec, ns):
        return False
    if manifest["kind"] == "VirtualService":
        gateways = spec.get("gateways") or []
        if gateways and "mesh" not in gateways:
            return False
        if not spec.get("http"):
            return False
        return any(_host_known(str(h), ns, topology) for h in spec.get("hosts") or [])
    selector = (spec.get("workloadSelector") or {}).get("matchLabels") or {}
    if any(caller_labels.get(k) != v for k, v in selector.items()):
        return False
    return _host_known(str(spec.get("host", "")), ns, topology)


def pending(
    view: SidecarView,
    present: Iterable[ObjectKey],
    absent: Iterable[ObjectKey],
    where: str = "the caller's sidecar",
) -> list[str]:
    """What the proxy does not run yet: objects still missing, and removed objects still in force.

    Args:
        view: What the proxy runs.
        present: Objects it must run.
        absent: Deleted objects it must no longer run.
        where: How messages name the proxy.

    Returns:
        One line per discrepancy; empty once the proxy has converged.
    """
    out = [f"{k} not yet in {where}" for k in present if not view.runs(k)]
    out += [f"{k} still in {where} after its deletion" for k in absent if view.runs(k)]
    return out


def proxy_pending(
    proxy: Proxy,
    topology: Topology,
    created: Sequence[Mapping[str, Any]],
    deleted: Sequence[Mapping[str, Any]],
) -> list[str]:
    """What ``proxy`` does not run yet of a change that ``created`` and ``deleted`` policy manifests.

    The proxy is held only to the policies istiod puts into it (:func:`reaches_caller` with its labels), and
    is not read at all when the change holds none of them.

    Returns:
        One line per discrepancy, naming the proxy; empty once it runs the change.
    """
    present = [ObjectKey.of(m) for m in created if reaches_caller(m, topology, proxy.labels)]
    absent = [ObjectKey.of(m) for m in deleted if reaches_caller(m, topology, proxy.labels)]
    if not present and not absent:
        return []
    return pending(proxy.view(), present, absent, proxy.where)


def endpoints_pending(view: SidecarView, topology: Topology, services: Iterable[str] | None = None) -> list[str]:
    """Services whose cluster in a sidecar lacks ready endpoints (one per replica).

    Args:
        view: What the sidecar runs.
        topology: The run's topology (services in the run namespace).
        services: Short names of the services to check; ``None`` checks every service.

    Returns:
        One line per service not yet complete; empty once every replica is a healthy endpoint.
    """
    wanted = None if services is None else set(services)
    out: list[str] = []
    for svc in topology.services:
        if wanted is not None and svc.name not in wanted:
            continue
        name = f"outbound|{svc.port}||{svc.fqdn}"
        hosts, healthy = view.clusters.get(name, (0, 0))
        if healthy != svc.replicas or hosts != svc.replicas:
            out.append(f"{name}: {healthy} healthy of {hosts} endpoints, want {svc.replicas}")
    return out
