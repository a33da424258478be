"""Settings of a cluster run (``--mesh-context kind`` or any kubeconfig context), and the labels we own.

Every object a run creates carries :data:`MANAGED_BY_LABEL` and :data:`RUN_ID_LABEL`; clean-up and the
leftover sweep select on exactly these labels, so objects we did not create are never touched.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "pytest-meshcheck"
RUN_ID_LABEL = "meshcheck.io/run-id"
COMPONENT_LABEL = "app.kubernetes.io/component"
POLICY_NAME_LABEL = "meshcheck.io/policy-name"
GENERATION_LABEL = "meshcheck.io/generation"
OWNER_ANNOTATION = "meshcheck.io/owner"
HEARTBEAT_ANNOTATION = "meshcheck.io/heartbeat"
SOURCE_ANNOTATION = "meshcheck.io/source"
NAMESPACE_PREFIX = "meshcheck-"
DEFAULT_ECHO_IMAGE = "python:3.12-slim"
ISTIO_NAMESPACE = "istio-system"

_RUN_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


def new_run_id() -> str:
    """A fresh run id: 8 lower-case hex digits (DNS-label safe, unique enough per cluster)."""
    return secrets.token_hex(4)


@dataclass(frozen=True)
class KubeSettings:
    """Where and how a cluster run happens.

    Usage::

        settings = KubeSettings(context="kind", kind_cluster="meshcheck")
        settings.kube_context   # 'kind-meshcheck'
        settings.namespace      # 'meshcheck-1a2b3c4d'

    Attributes:
        context: ``kind`` (the Kind cluster named ``kind_cluster``) or a kubeconfig context name.
        kind_cluster: Kind cluster name; the kube context is ``kind-<name>``.
        kubeconfig: kubeconfig file; ``None`` means ``$KUBECONFIG`` or ``~/.kube/config``.
        prometheus_url: Prometheus to query; ``None`` means a port-forward to ``istio-system/prometheus``.
        echo_image: Image that runs the echo workload and the agent (any image with ``python3`` >= 3.11).
        create: Create the Kind cluster and install Istio and Prometheus when missing (``--mesh-create``).
        keep: Leave the run namespace in place after the run (``--mesh-keep``).
        dry_run: Print the plan only (``--mesh-dry-run``); nothing is contacted.
        run_id: Id of this run; names the namespace ``meshcheck-<run_id>``.
        istio_namespace: Namespace of istiod and the Prometheus addon.
        ready_timeout: Seconds allowed for pods to become ready (image pulls included).
        converge_timeout: Seconds allowed for the caller's sidecar to run new policies.
        stale_after: A run namespace whose heartbeat is older than this many seconds is a leftover.
    """

    context: str = "kind"
    kind_cluster: str = "kind"
    kubeconfig: Path | None = None
    prometheus_url: str | None = None
    echo_image: str = DEFAULT_ECHO_IMAGE
    create: bool = False
    keep: bool = False
    dry_run: bool = False
    run_id: str = field(default_factory=new_run_id)
    istio_namespace: str = ISTIO_NAMESPACE
    ready_timeout: float = 300.0
    converge_timeout: float = 60.0
    stale_after: float = 600.0

    def __post_init__(self) -> None:
        if not _RUN_ID.match(self.run_id):
            raise ValueError(f"run_id {self.run_id!r} must be a DNS label of at most 40 characters (a-z, 0-9, '-')")

    @property
    def kube_context(self) -> str:
        """The kubeconfig context: ``kind-<kind_cluster>`` for ``kind``, else ``context`` itself."""
        return f"kind-{self.kind_cluster}" if self.context == "kind" else self.context

    @property
    def namespace(self) -> str:
        """The run's namespace, ``meshcheck-<run_id>``."""
        return NAMESPACE_PREFIX + self.run_id

    @property
    def labels(self) -> dict[str, str]:
        """The labels every object of this run carries."""
        return {MANAGED_BY_LABEL: MANAGED_BY, RUN_ID_LABEL: self.run_id}

    @classmethod
    def from_mesh_settings(cls, settings: Any, **overrides: Any) -> KubeSettings:
        """Build from the plugin's ``MeshSettings`` (same field names); ``overrides`` win.

        Args:
            settings: A :class:`pytest_meshcheck.settings.MeshSettings`.
            **overrides: Any field of this class, such as ``run_id``.
        """
        values: dict[str, Any] = {
            "context": settings.context,
            "kind_cluster": settings.kind_cluster,
            "kubeconfig": settings.kubeconfig,
            "prometheus_url": settings.prometheus_url,
            "echo_image": settings.echo_image,
            "create": settings.create,
            "keep": settings.keep,
            "dry_run": settings.dry_run,
        }
        values.update(overrides)
        return cls(**values)
