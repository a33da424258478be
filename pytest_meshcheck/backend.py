"""The interface every mesh context implements, so scenarios run unchanged on any of them.

``local`` (:class:`pytest_meshcheck.local.mesh.LocalMesh`) runs real Envoy, echo workloads and
Prometheus as processes; a kube context (``kind`` or any kubeconfig context) runs the same echo
workload in pods behind Istio's sidecars. Scenario, chaos, load-record and verdict code only ever
talks to this protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pytest_meshcheck.chaos.destination import DestinationChaos
    from pytest_meshcheck.istio_version import IstioVersion
    from pytest_meshcheck.load import ClosedLoop, LoadResult, OpenLoop
    from pytest_meshcheck.metrics.outlier_events import InstanceEvent
    from pytest_meshcheck.policy.model import PolicySet
    from pytest_meshcheck.topology import Topology


@dataclass(frozen=True)
class WorkloadInstance:
    """One replica of a service: where it serves and where its admin (chaos, counters) endpoint is.

    Attributes:
        service: Service name (short form).
        namespace: Namespace of the service.
        version: Version name (``v1``).
        name: Instance name, unique in the mesh (the pod name in a cluster).
        address: IP the caller's sidecar connects to.
        port: Serving port.
        admin_url: Base URL of the admin endpoint, reachable from the test process (``/chaos``,
            ``/stats``, ``/metrics`` below it); in a cluster this goes through the load agent's proxy.
        pid: Process id in the local context, ``None`` in a cluster.
    """

    service: str
    namespace: str
    version: str
    name: str
    address: str
    port: int
    admin_url: str
    pid: int | None = None


@runtime_checkable
class MeshBackend(Protocol):
    """What scenarios need from a mesh, whatever runs it."""

    context: str
    topology: Topology
    istio_version: IstioVersion

    def start(self) -> None:
        """Bring the mesh up; return once workloads, proxies and Prometheus are ready."""
        ...

    def stop(self) -> None:
        """Tear everything down (processes, or namespace and objects); idempotent."""
        ...

    @property
    def policies(self) -> PolicySet:
        """The policies in force now."""
        ...

    def apply(self, policies: PolicySet) -> float:
        """Add or replace policies; return seconds until the proxies were seen running them."""
        ...

    def remove(self, policies: PolicySet) -> float:
        """Remove policies; return seconds until the proxies converged."""
        ...

    def replace_all(self, policies: PolicySet) -> float:
        """Make ``policies`` the only ones in force; return the convergence time."""
        ...

    def instances(self, service: str | None = None, *, version: str | None = None) -> list[WorkloadInstance]:
        """Running instances, optionally of one service and version."""
        ...

    @property
    def chaos(self) -> DestinationChaos:
        """The controller for faults at the destination workloads."""
        ...

    def run_load(
        self,
        service: str,
        profile: OpenLoop | ClosedLoop,
        *,
        path: str = "/",
        headers: Mapping[str, str] | None = None,
    ) -> LoadResult:
        """Send load to ``service`` through the caller's sidecar, from inside the mesh."""
        ...

    @property
    def prometheus_url(self) -> str:
        """Prometheus holding the proxies' and workloads' metrics."""
        ...

    @property
    def client_proxy_labels(self) -> dict[str, str]:
        """Prometheus labels that select the caller's sidecar (the proxy that enforces the policies)."""
        ...

    def caller_proxy_labels(self, service: str) -> dict[str, str]:
        """Prometheus labels that select the sidecars of ``service``'s pods (the hops it calls through)."""
        ...

    def wait_for_metrics(self, timeout: float = 30.0) -> float:
        """Wait until Prometheus has scraped the client proxy and every workload at least once."""
        ...

    def describe(self) -> dict[str, str]:
        """Facts for reports and the session header: context, Istio version, Envoy version, URLs."""
        ...

    # Capabilities a context may lack: each answers ``None`` when the context cannot tell, so callers
    # ask the protocol rather than probing the object.

    def response_flags(self, service: str, start: float, end: float) -> dict[str, int] | None:
        """Envoy response flags of the caller's sidecar towards ``service`` between two unix times.

        Args:
            service: Service name (short name or FQDN).
            start: Unix time the window starts.
            end: Unix time the window ends.

        Returns:
            Count per flag (``-`` for none, ``URX``, ``UO``, ``UT``...), or ``None`` when the context
            cannot tell (it does not read the sidecar's access log).
        """
        ...

    def request_durations(self, service: str, start: float, end: float) -> list[float] | None:
        """How long the caller's sidecar took over each request to ``service`` that started between two unix times.

        Envoy's own ``%DURATION%`` (seconds), the clock the mesh's timeouts run on: the load generator's
        latency adds its own scheduling, which on a busy machine is tenths of a second.

        Returns:
            One duration per request, or ``None`` when the context does not read the sidecar's access log.
        """
        ...

    def live_counts(self, service: str) -> tuple[int, int] | None:
        """Requests the caller's sidecar completed towards ``service`` so far, and how many got a 2xx.

        Cheap enough to poll while load runs (progress lines). ``None`` when the context cannot tell.
        """
        ...

    def outlier_events(self, service: str, start: float, end: float) -> list[InstanceEvent] | None:
        """Outlier-detection events (ejections and returns) of ``service``'s instances between two unix times.

        Args:
            service: Service name (short name or FQDN).
            start: Unix time the window starts.
            end: Unix time the window ends.

        Returns:
            Every sidecar's events for the service's instances, in time order, or ``None`` when the context
            has no outlier event log to read.
        """
        ...
