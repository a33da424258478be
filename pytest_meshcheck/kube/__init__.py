"""The cluster contexts: ``--mesh-context kind`` and any kubeconfig context, with Istio.

Public API (imported lazily, so ``import pytest_meshcheck.kube`` loads neither ``kubernetes`` nor numpy)::

    KubeSettings                                  where and how (context, image, keep, dry run...)
    KubeBackend(settings, topology=, policies=)   the MeshBackend of a cluster
    dry_run_plan(settings, topology, policies, istio_version) -> str
    select_context_error(context, kubeconfig) -> str | None
    list_contexts(kubeconfig) -> list[str]

See docs/kind.md for the design and the runbook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_meshcheck.kube.settings import KubeSettings

if TYPE_CHECKING:
    from pytest_meshcheck.kube.backend import KubeBackend
    from pytest_meshcheck.kube.client import list_contexts, select_context_error
    from pytest_meshcheck.kube.plan import dry_run_plan

__all__ = ["KubeBackend", "KubeSettings", "dry_run_plan", "list_contexts", "select_context_error"]

_LAZY = {
    "KubeBackend": "pytest_meshcheck.kube.backend",
    "dry_run_plan": "pytest_meshcheck.kube.plan",
    "list_contexts": "pytest_meshcheck.kube.client",
    "select_context_error": "pytest_meshcheck.kube.client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
