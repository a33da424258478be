"""Bad clusters end the run before any scenario, with one clear message and the fix, and create nothing.

Each case runs the real ``kubernetes`` client against a fake API server at the HTTP level (or against a
closed port), through a generated kubeconfig.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.kube.backend import KubeBackend
from pytest_meshcheck.kube.client import KubeClient, KubeForbidden, list_contexts, select_context_error
from pytest_meshcheck.kube.preflight import IstioNotInstalled, PrometheusNotInstalled, istio_release_of
from pytest_meshcheck.kube.settings import KubeSettings
from pytest_meshcheck.topology import parse_topology
from tests.doubles.fake_cluster import FakeCluster, free_port_kubeconfig

TOPOLOGY = parse_topology({"namespace": "shop", "services": [{"name": "orders", "port": 8084}]}, source="t.yaml")
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def _writes(cluster: FakeCluster) -> list[tuple[str, str]]:
    return [(m, p) for m, p in cluster.api.requests if m in WRITES and "selfsubjectaccessreviews" not in p]


def _start(settings: KubeSettings) -> KubeBackend:
    backend = KubeBackend(settings, topology=TOPOLOGY)
    backend.start()
    return backend


@pytest.fixture
def kubeconfig_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_unknown_context_lists_the_available_ones(tmp_path: Path) -> None:
    with FakeCluster(tmp_path, context="kind-dev") as cluster:
        cluster.api.write_kubeconfig(cluster.kubeconfig, context="kind-dev", extra_contexts=("staging",))
        assert list_contexts(cluster.kubeconfig) == ["kind-dev", "staging"]
        assert select_context_error("staging", cluster.kubeconfig) is None
        message = select_context_error("kind-kind", cluster.kubeconfig)
        assert message is not None
        assert f"kube context 'kind-kind' not found in kubeconfig {cluster.kubeconfig}" in message
        assert "available: kind-dev, staging" in message
        assert "kind create cluster --name kind" in message
        with pytest.raises(MeshSetupError, match="available: kind-dev, staging"):
            _start(KubeSettings(kubeconfig=cluster.kubeconfig))
        assert cluster.api.requests == []


def test_no_kubeconfig_at_all_names_the_fix(kubeconfig_env: Path) -> None:
    message = select_context_error("kind-kind", None)
    assert message is not None
    assert message.startswith("no kubeconfig found at ~/.kube/config")
    assert "--mesh-dry-run needs no cluster" in message


def test_kubeconfig_env_var_is_honoured(kubeconfig_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = free_port_kubeconfig(kubeconfig_env / "k.yaml", context="ci")
    monkeypatch.setenv("KUBECONFIG", f"{kubeconfig_env / 'missing.yaml'}:{path}")
    assert select_context_error("ci", None) is None


def test_unreachable_cluster_fails_fast(tmp_path: Path) -> None:
    kubeconfig = free_port_kubeconfig(tmp_path / "kubeconfig")
    t0 = time.monotonic()
    with pytest.raises(MeshSetupError) as info:
        _start(KubeSettings(kubeconfig=kubeconfig))
    assert time.monotonic() - t0 < 10
    text = str(info.value)
    assert "cannot reach the Kubernetes API server http://127.0.0.1:" in text
    assert "kube context 'kind-kind'" in text
    assert "kubectl --context kind-kind cluster-info" in text


def test_no_istio(tmp_path: Path) -> None:
    with FakeCluster(tmp_path, istio_version=None) as cluster:
        with pytest.raises(IstioNotInstalled) as info:
            _start(cluster.settings())
        assert "Istio is not installed in kube context 'kind-kind'" in str(info.value)
        assert "istioctl install" in str(info.value)
        assert "--mesh-create" in str(info.value)
        assert _writes(cluster) == []


def test_istiod_not_ready(tmp_path: Path) -> None:
    with FakeCluster(tmp_path, istiod_ready=False) as cluster:
        with pytest.raises(MeshSetupError, match=r"istiod \(istiod in istio-system\) has no ready replica"):
            _start(cluster.settings())
        assert _writes(cluster) == []


def test_istio_without_prometheus(tmp_path: Path) -> None:
    with FakeCluster(tmp_path, prometheus=False) as cluster:
        with pytest.raises(PrometheusNotInstalled) as info:
            _start(cluster.settings())
        text = str(info.value)
        assert "Istio is installed but Prometheus is not" in text
        assert "release-1.30/samples/addons/prometheus.yaml" in text
        assert "--mesh-prometheus-url" in text
        assert _writes(cluster) == []


def test_prometheus_url_that_does_not_answer(tmp_path: Path) -> None:
    with FakeCluster(tmp_path) as cluster:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with pytest.raises(
            MeshSetupError, match=r"Prometheus \(--mesh-prometheus-url, http://127.0.0.1:\d+\) is unreachable"
        ):
            _start(cluster.settings(prometheus_url=f"http://127.0.0.1:{port}"))
        assert _writes(cluster) == []


def test_forbidden_namespace_creation_is_reported_before_anything_is_created(tmp_path: Path) -> None:
    with FakeCluster(tmp_path, forbidden={("create", "namespaces"), ("create", "pods/portforward")}) as cluster:
        # Prometheus is given by URL: a port-forward into istio-system is forbidden too.
        url = f"http://{cluster.prometheus.address[0]}:{cluster.prometheus.address[1]}"
        with pytest.raises(KubeForbidden) as info:
            _start(cluster.settings(prometheus_url=url))
        text = str(info.value)
        assert "kube context 'kind-kind' may not: create namespaces, create pods/portforward" in text
        assert "nothing was created" in text
        assert _writes(cluster) == []
        assert cluster.api.namespaces() == ["default", "istio-system", "kube-system"]


def test_403_on_namespace_creation_when_access_reviews_are_unavailable(tmp_path: Path) -> None:
    with FakeCluster(tmp_path, forbidden={("create", "namespaces")}, access_reviews=False) as cluster:
        with pytest.raises(KubeForbidden) as info:
            _start(cluster.settings(run_id="deny0001"))
        text = str(info.value)
        assert "cannot create the run namespace meshcheck-deny0001" in text
        assert "HTTP 403" in text
        assert 'cannot create resource "namespaces"' in text
        assert "nothing was created" in text
        assert [w for w in _writes(cluster) if w[0] == "POST"] == [("POST", "/api/v1/namespaces")]
        assert "meshcheck-deny0001" not in cluster.api.namespaces()


def test_no_sidecar_injection_removes_the_namespace_again(tmp_path: Path) -> None:
    with FakeCluster(tmp_path, inject=False) as cluster:
        with pytest.raises(MeshSetupError, match="did not inject into namespace meshcheck-noinj001"):
            _start(cluster.settings(run_id="noinj001"))
        assert "meshcheck-noinj001" not in cluster.api.namespaces()
        created = [p for m, p in cluster.api.requests if m == "POST" and "selfsubject" not in p]
        # Only the namespace and the dry-run probe pod were ever sent.
        assert created == ["/api/v1/namespaces", "/api/v1/namespaces/meshcheck-noinj001/pods"]


def test_missing_stats_fail_with_the_annotation_hint_and_clean_up(tmp_path: Path) -> None:
    with FakeCluster(tmp_path, hide_stats=True) as cluster:
        with pytest.raises(MeshSetupError) as info:
            _start(cluster.settings(run_id="nostat01"))
        text = str(info.value)
        assert "does not expose counters the assertions need" in text
        assert "cluster.outbound|8084||orders.meshcheck-nostat01.svc.cluster.local.upstream_rq_retry" in text
        assert "proxyStatsMatcher" in text
        assert "meshcheck-nostat01" not in cluster.api.namespaces()


@pytest.mark.parametrize(
    ("image", "labels", "release"),
    [
        ("docker.io/istio/pilot:1.30.3", {}, "1.30.3"),
        ("gcr.io/istio-release/pilot:1.24.0-distroless", {}, "1.24.0"),
        ("registry.local/pilot@sha256:abc", {"app.kubernetes.io/version": "1.29.1"}, "1.29.1"),
        ("registry.local/pilot:latest", {}, ""),
    ],
)
def test_istio_release_is_read_from_istiod(image: str, labels: dict[str, str], release: str) -> None:
    deployment = {
        "metadata": {"labels": labels},
        "spec": {"template": {"spec": {"containers": [{"name": "discovery", "image": image}]}}},
    }
    assert istio_release_of(deployment) == (release, image)


def test_the_cluster_istio_version_drives_expectations(tmp_path: Path) -> None:
    with FakeCluster(tmp_path, istio_version="1.23.4") as cluster:
        client = KubeClient.connect("kind-kind", cluster.kubeconfig)
        try:
            from pytest_meshcheck.kube.preflight import check_istio

            facts = check_istio(client, cluster.settings())
        finally:
            client.close()
        assert str(facts.version) == "1.23"
        assert facts.version.default_retries_503
        assert facts.release == "1.23.4"
