"""The sidecars of the pods that make calls, read through a port-forward to each one's Envoy admin API.

A hop such as ``order-service -> payment-service`` is enforced by the order pods' own sidecars, so a
policy change is in force only once those run it too. What Istio offers on a pod's IP cannot tell that:
pilot-agent's port 15020 serves ``/healthz/ready``, ``/stats/prometheus`` (merged), the app probes and
``/debug/ndsz``; Envoy's 15090 serves ``/stats/prometheus`` only. Stats carry version hashes of xDS
pushes, not which VirtualService or DestinationRule a route or cluster was built from. The admin API
(``/config_dump`` with istiod's ``istio.config`` metadata) listens on the pod's loopback, 127.0.0.1:15000,
and a Kubernetes port-forward reaches the pod's loopback, which is how ``istioctl proxy-config`` reads it.
So the test process reads each calling pod's sidecar exactly as the agent reads its own (the same
:func:`~pytest_meshcheck.workload.agent.sidecar_summary`), one port-forward per pod, opened on first use
and kept for the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.kube.client import KubeClient
from pytest_meshcheck.kube.converge import Proxy, SidecarView
from pytest_meshcheck.kube.portforward import PortForward
from pytest_meshcheck.topology import Topology
from pytest_meshcheck.workload.agent import AgentError, sidecar_summary

#: Envoy's admin port in an Istio pod (bound to the pod's loopback).
ENVOY_ADMIN_PORT = 15000


def caller_pods(topology: Topology, pods: list[dict[str, Any]]) -> list[tuple[str, dict[str, str], tuple[str, ...]]]:
    """``(pod name, pod labels, called services)`` of every running pod of a service with calls, by name.

    Args:
        topology: The run's topology (services in the run namespace).
        pods: The run's pods, as the API returns them.
    """
    out: list[tuple[str, dict[str, str], tuple[str, ...]]] = []
    for svc in topology.services:
        if not svc.calls:
            continue
        called = tuple(dict.fromkeys(c.service for c in svc.calls))
        for pod in pods:
            labels = dict(pod["metadata"].get("labels") or {})
            if labels.get("app") != svc.name or pod["metadata"].get("deletionTimestamp"):
                continue
            if (pod.get("status") or {}).get("phase") != "Running":
                continue
            out.append((str(pod["metadata"]["name"]), labels, called))
    return sorted(out, key=lambda item: item[0])


class CallerSidecars:
    """Port-forwards to the Envoy admin API of each calling pod's sidecar.

    Args:
        client: Returns the cluster's client (raises when the run is not started).
        namespace: The run namespace.
        log: Receives a line per failed port-forward stream.
    """

    def __init__(self, client: Callable[[], KubeClient], namespace: str, log: Callable[[str], None]) -> None:
        self._client = client
        self.namespace = namespace
        self._log = log
        self._forwards: dict[str, PortForward] = {}
        self.proxies: list[Proxy] = []

    def track(self, topology: Topology, pods: list[dict[str, Any]]) -> list[Proxy]:
        """Make the calling pods among ``pods`` the proxies a policy change waits for; return them."""
        self.proxies = [
            Proxy(f"the sidecar of pod {name}", labels, self._reader(name), called)
            for name, labels, called in caller_pods(topology, pods)
        ]
        return self.proxies

    def _reader(self, pod: str) -> Callable[[], SidecarView]:
        return lambda: self.view(pod)

    def view(self, pod: str) -> SidecarView:
        """What ``pod``'s sidecar runs now (Istio configs, endpoints), read from its admin API.

        Raises:
            MeshSetupError: The admin API cannot be read through the port-forward.
        """
        forward = self._forwards.get(pod)
        if forward is None:
            forward = self._forwards[pod] = self._client().port_forward(
                self.namespace, pod, ENVOY_ADMIN_PORT, self._log
            )
        try:
            return SidecarView.from_json(sidecar_summary(forward.url))
        except AgentError as exc:
            detail = f" (port-forward: {forward.errors[-1]})" if forward.errors else ""
            raise MeshSetupError(
                f"cannot read the sidecar of pod {self.namespace}/{pod} through a port-forward to its Envoy admin "
                f"port {ENVOY_ADMIN_PORT}: {exc}{detail}. Check 'kubectl -n {self.namespace} get pod {pod}' and "
                f"that you may create pods/portforward there"
            ) from exc

    def close(self) -> None:
        """Close every port-forward."""
        for forward in self._forwards.values():
            forward.close()
        self._forwards.clear()
        self.proxies = []
