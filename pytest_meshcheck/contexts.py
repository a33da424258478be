"""Choosing the mesh backend for ``--mesh-context``: ``local``, ``kind`` or any kubeconfig context."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_meshcheck.backend import MeshBackend
    from pytest_meshcheck.settings import MeshSettings


def make_backend(settings: MeshSettings, *, log: Callable[[str], None] | None = None) -> MeshBackend:
    """The (not yet started) backend for the selected context."""
    from pytest_meshcheck.topology import load_topology

    topology = load_topology(settings.topology)
    if settings.is_local:
        from pytest_meshcheck.local.mesh import LocalMesh

        return LocalMesh(
            topology=topology,
            istio_version=settings.istio_version,
            envoy_bin=settings.envoy_bin,
            keep=settings.keep,
            log=log,
            seed=settings.seed,
        )
    from pytest_meshcheck.kube.backend import KubeBackend
    from pytest_meshcheck.kube.settings import KubeSettings

    # Without --mesh-istio-version the backend reads the version from istiod's image.
    return KubeBackend(
        KubeSettings.from_mesh_settings(settings), topology=topology, istio_version=settings.istio_version, log=log
    )


def check_kube_context(settings: MeshSettings) -> str | None:
    """Why the kube context cannot be used (missing kubeconfig, unknown context), or ``None``."""
    from pytest_meshcheck.kube.client import select_context_error

    return select_context_error(settings.kube_context, settings.kubeconfig)


def dry_run_plan(settings: MeshSettings, scenarios: Sequence[str] = ()) -> str:
    """What a run would create and check, without creating anything (no cluster needed)."""
    from pytest_meshcheck.istio_version import parse_istio_version
    from pytest_meshcheck.policy import PolicySet, load_policies
    from pytest_meshcheck.topology import load_topology

    topology = load_topology(settings.topology)
    policies = load_policies(settings.policies) if settings.policies else PolicySet()
    version = parse_istio_version(settings.istio_version)
    if not settings.is_local:
        from pytest_meshcheck.kube.plan import dry_run_plan as kube_plan
        from pytest_meshcheck.kube.settings import KubeSettings

        return kube_plan(
            KubeSettings.from_mesh_settings(settings), topology, policies, settings.istio_version, scenarios=scenarios
        )
    from pytest_meshcheck.translate import build_clusters, build_route_config

    endpoints = {(s.name, v.name): [("127.0.0.1", 0)] * v.replicas for s in topology.services for v in s.versions}
    lines = [
        *(f"scenario: {s}" for s in scenarios),
        f"meshcheck dry run: local context, Istio {version} translation, topology {topology.source}",
        f"would start: 1 Prometheus, {topology.instance_count} echo workloads, 1 Envoy (--concurrency 1)",
        "Envoy clusters and routes (workload ports are assigned at start):",
        json.dumps(
            {
                "clusters": build_clusters(policies, topology, endpoints, version),
                "routes": build_route_config(policies, topology, version),
            },
            indent=1,
        ),
    ]
    return "\n".join(lines)
