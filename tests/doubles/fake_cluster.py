"""A whole cluster without a cluster: fake API server, fake sidecar admin, local pods, fake Prometheus.

:class:`FakeCluster` wires the doubles together behind one kubeconfig, so ``KubeBackend`` runs against it
unchanged; :func:`free_port_kubeconfig` names an API server that is not there at all.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from pytest_meshcheck.kube.settings import KubeSettings
from tests.doubles.fake_kube_api import FakeKubeAPI
from tests.doubles.fake_prometheus import FakePrometheus
from tests.doubles.fake_sidecar_admin import FakeSidecarAdmin
from tests.doubles.local_pods import LocalPods


def free_port_kubeconfig(path: Path, context: str = "kind-kind") -> Path:
    """A kubeconfig whose API server is a closed local port (an unreachable cluster)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The port is closed again when the socket is; nothing listens there.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gone", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": context, "context": {"cluster": "gone", "user": "u"}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(config))
    with contextlib.suppress(OSError):
        path.chmod(0o600)
    return path


class FakeCluster:
    """Fake API server, fake sidecar admin, local pod processes, fake Prometheus and a kubeconfig, together.

    Usage::

        with FakeCluster(tmp_path, lag=0.3) as cluster:
            with KubeBackend(cluster.settings(), topology=topo) as mesh:
                ...

    Args:
        workdir: Where the kubeconfig is written.
        context: The kube context the kubeconfig names.
        lag: :class:`FakeSidecarAdmin` lag of the agent's sidecar.
        caller_lag: :class:`FakeSidecarAdmin` lag of the sidecar of each pod with calls (default: ``lag``).
        hide_stats: :class:`FakeSidecarAdmin` hides the cluster stats.
        **api_options: Passed to :class:`FakeKubeAPI` (``istio_version``, ``prometheus``, ``forbidden``...).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        context: str = "kind-kind",
        lag: float = 0.0,
        caller_lag: float | None = None,
        hide_stats: bool = False,
        **api_options: Any,
    ) -> None:
        self.workdir = workdir
        self.context = context
        self.api = FakeKubeAPI(**api_options)
        self._lag = lag
        self._caller_lag = lag if caller_lag is None else caller_lag
        self._hide_stats = hide_stats
        self.kubeconfig = workdir / "kubeconfig"

    def __enter__(self) -> FakeCluster:
        self.api.start()
        self.admin = FakeSidecarAdmin(self.api, lag=self._lag, hide_stats=self._hide_stats)
        self.pods = LocalPods(self.api, self.admin.url, caller_lag=self._caller_lag)
        self.prometheus = FakePrometheus(self.api)
        self.api.forward_to("prometheus", 9090, self.prometheus.address)
        self.api.write_kubeconfig(self.kubeconfig, context=self.context)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.pods.close()
        self.prometheus.close()
        self.admin.close()
        self.api.stop()

    def settings(self, **overrides: Any) -> KubeSettings:
        """:class:`~pytest_meshcheck.kube.settings.KubeSettings` for this cluster, with short time-outs."""
        values: dict[str, Any] = {
            "context": "kind" if self.context.startswith("kind-") else self.context,
            "kind_cluster": self.context.removeprefix("kind-"),
            "kubeconfig": self.kubeconfig,
            "ready_timeout": 10.0,
            "converge_timeout": 5.0,
        }
        values.update(overrides)
        return KubeSettings(**values)
