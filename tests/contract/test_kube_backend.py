"""A whole cluster run against the fake API server, with real local processes for the pods.

The code under test is the real ``KubeBackend`` with the real ``kubernetes`` client; only the cluster is
fake: the API server speaks HTTP (and the port-forward websocket protocol), the pods are the echo and agent
files from the ConfigMaps the backend created, run locally with ``python3 -I -S``, and the agent's
sidecar admin API reports what istiod would push, ``lag`` seconds late.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_meshcheck.backend import MeshBackend
from pytest_meshcheck.chaos.destination import error_spec
from pytest_meshcheck.errors import MeshSetupError, MeshTimeoutError, PolicyError
from pytest_meshcheck.kube.backend import KubeBackend
from pytest_meshcheck.load import LoadError, OpenLoop
from pytest_meshcheck.policy import SourceRef, load_policy_text
from pytest_meshcheck.topology import parse_topology
from tests.doubles.fake_cluster import FakeCluster

LAG = 0.4
TOPOLOGY = parse_topology(
    {
        "namespace": "shop",
        "services": [
            {
                "name": "orders",
                "port": 8084,
                "versions": [{"name": "v1", "replicas": 2}, {"name": "v2", "replicas": 1}],
            },
            {"name": "payments", "port": 8080},
        ],
    },
    source="shop.yaml",
)
RETRY = load_policy_text(
    """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders-retry, namespace: shop}
spec:
  hosts: [orders.shop.svc.cluster.local]
  http:
  - route: [{destination: {host: orders.shop.svc.cluster.local}}]
    retries: {attempts: 2, retryOn: 5xx}
""",
    source="retry.yaml",
)
BREAKER = load_policy_text(
    """
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: orders-breaker, namespace: shop}
spec:
  host: orders
  trafficPolicy: {connectionPool: {http: {http1MaxPendingRequests: 1}}}
""",
    source="breaker.yaml",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCluster]:
    with FakeCluster(tmp_path_factory.mktemp("cluster"), lag=LAG) as c:
        yield c


@pytest.fixture(scope="module")
def started(cluster: FakeCluster) -> Iterator[tuple[KubeBackend, dict[Any, Any]]]:
    settings = cluster.settings(run_id="run00001", converge_timeout=2.0)
    with KubeBackend(settings, topology=TOPOLOGY, policies=RETRY) as backend:
        yield backend, cluster.api.snapshot()


@pytest.fixture
def mesh(started: tuple[KubeBackend, dict[Any, Any]]) -> KubeBackend:
    return started[0]


def _objects(cluster: FakeCluster, plural: str, ns: str = "meshcheck-run00001") -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in cluster.api.namespaced(plural, ns)}


def test_it_is_a_mesh_backend(mesh: KubeBackend) -> None:
    assert isinstance(mesh, MeshBackend)


def test_capabilities_a_cluster_lacks_answer_none(mesh: KubeBackend) -> None:
    # Declared on the protocol, so callers ask instead of probing; a cluster cannot read the access log.
    assert mesh.response_flags("orders", 0.0, 1.0) is None
    assert mesh.live_counts("orders") is None


def test_the_run_namespace_is_labelled_and_holds_every_object(cluster: FakeCluster, mesh: KubeBackend) -> None:
    ns = cluster.api.snapshot()[("", "namespaces", "", "meshcheck-run00001")]["metadata"]
    assert ns["labels"] == {
        "app.kubernetes.io/managed-by": "pytest-meshcheck",
        "meshcheck.io/run-id": "run00001",
        "istio-injection": "enabled",
    }
    assert ns["annotations"]["meshcheck.io/owner"].endswith(f":{os.getpid()}")
    assert sorted(_objects(cluster, "deployments")) == ["meshcheck-agent", "orders-v1", "orders-v2", "payments-v1"]
    assert sorted(_objects(cluster, "services")) == ["orders", "payments"]
    assert sorted(_objects(cluster, "configmaps")) == ["meshcheck-agent", "meshcheck-echo"]
    assert sorted(_objects(cluster, "sidecars")) == ["default"]


def test_initial_policies_go_through_custom_objects_api_rewritten(
    cluster: FakeCluster, started: tuple[KubeBackend, dict[Any, Any]]
) -> None:
    mesh, initial = started
    assert (
        "POST",
        "/apis/networking.istio.io/v1/namespaces/meshcheck-run00001/virtualservices",
    ) in cluster.api.requests
    vs = {k[3]: o for k, o in initial.items() if k[1] == "virtualservices"}
    assert list(vs) == ["orders-retry-g1"]
    assert vs["orders-retry-g1"]["spec"]["hosts"] == ["orders.meshcheck-run00001.svc.cluster.local"]
    assert vs["orders-retry-g1"]["metadata"]["labels"]["meshcheck.io/run-id"] == "run00001"
    # What scenarios see is the cluster's view: hosts and topology in the run namespace.
    mesh.replace_all(RETRY)
    assert mesh.policies.virtual_services[0].hosts == ("orders.meshcheck-run00001.svc.cluster.local",)
    assert mesh.topology.service("orders").fqdn == "orders.meshcheck-run00001.svc.cluster.local"
    assert mesh.user_topology.service("orders").namespace == "shop"


def test_instances_are_the_pods(mesh: KubeBackend) -> None:
    orders = mesh.instances("orders")
    assert [(i.version, i.port) for i in orders] == [("v1", 8084), ("v1", 8084), ("v2", 8084)]
    assert [i.name for i in mesh.instances("orders", version="v2")] == ["orders-v2-5d8f7c-00000"]
    assert all(i.admin_url.endswith(f"/workload/{i.address}:9901") for i in orders)
    assert all(i.pid is None for i in orders)
    assert mesh.instances("orders.shop.svc.cluster.local") == orders


def test_load_from_the_agent_returns_load_records(mesh: KubeBackend) -> None:
    result = mesh.run_load("orders", OpenLoop(rate=100, duration=0.4, max_requests=40), path="/x", headers={"x-t": "1"})
    assert result.count == 40
    assert result.status_histogram() == {200: 40}
    (instance,) = result.instance_counts()
    assert instance is not None
    assert instance.startswith("orders-v")
    # The start is placed on this process's clocks.
    assert abs(result.started_wall - time.time()) < 30
    assert abs(result.started_monotonic - time.monotonic()) < 30


def test_bad_load_requests_are_refused_before_sending(mesh: KubeBackend) -> None:
    with pytest.raises(LoadError, match="path"):
        mesh.run_load("orders", OpenLoop(rate=1, duration=1, max_requests=1), path="x")
    with pytest.raises(LoadError, match="CR or LF"):
        mesh.run_load("orders", OpenLoop(rate=1, duration=1, max_requests=1), headers={"x": "a\nb"})


def test_chaos_goes_through_the_agent_to_each_pod(mesh: KubeBackend) -> None:
    profile = OpenLoop(rate=100, duration=0.3, max_requests=30)
    with mesh.chaos.fault("error", error_spec(1.0, status=503), mesh.instances("orders")):
        assert mesh.run_load("orders", profile).status_histogram() == {503: 30}
    assert mesh.run_load("orders", profile).status_histogram() == {200: 30}


def test_apply_waits_until_the_sidecar_runs_the_new_generation(cluster: FakeCluster, mesh: KubeBackend) -> None:
    mesh.replace_all(RETRY)
    before = mesh.generation
    seconds = mesh.apply(RETRY.merged(BREAKER))
    g = mesh.generation
    assert g == before + 1
    # The fake proxy reports changes LAG seconds late; returning earlier would mean no real wait.
    assert seconds >= LAG
    assert sorted(_objects(cluster, "virtualservices")) == [f"orders-retry-g{g}"]
    assert sorted(_objects(cluster, "destinationrules")) == [f"orders-breaker-g{g}"]
    dr = _objects(cluster, "destinationrules")[f"orders-breaker-g{g}"]
    assert dr["apiVersion"] == "networking.istio.io/v1beta1"
    assert dr["spec"]["host"] == "orders"
    view = mesh.sidecar_view()
    assert any(p.endswith(f"/virtual-service/orders-retry-g{g}") for p in view.configs)
    assert any(p.endswith(f"/destination-rule/orders-breaker-g{g}") for p in view.configs)
    assert not any(p.endswith(f"/virtual-service/orders-retry-g{before}") for p in view.configs)
    assert [p.name for p in mesh.policies.virtual_services] == ["orders-retry"]
    assert [p.name for p in mesh.policies.destination_rules] == ["orders-breaker"]


def test_remove_and_replace_all(cluster: FakeCluster, mesh: KubeBackend) -> None:
    mesh.replace_all(RETRY.merged(BREAKER))
    assert mesh.remove([("DestinationRule", "shop", "orders-breaker")]) >= LAG
    assert _objects(cluster, "destinationrules") == {}
    assert [p.name for p in mesh.policies.virtual_services] == ["orders-retry"]
    assert mesh.replace_all(BREAKER) >= LAG
    assert sorted(_objects(cluster, "virtualservices")) == []
    assert sorted(_objects(cluster, "destinationrules")) == [f"orders-breaker-g{mesh.generation}"]
    assert [p.name for p in mesh.policies.destination_rules] == ["orders-breaker"]
    assert mesh.policies.virtual_services == ()
    assert mesh.remove(BREAKER) >= LAG
    assert mesh.policies.destination_rules == ()


def test_a_policy_without_yaml_fails_before_the_cluster_changes(cluster: FakeCluster, mesh: KubeBackend) -> None:
    import dataclasses

    bare = dataclasses.replace(RETRY.virtual_services[0], source=SourceRef("code.py", 0))
    before = len(cluster.api.requests)
    with pytest.raises(PolicyError, match="carries no YAML text"):
        mesh.apply(type(RETRY)(virtual_services=(bare,)))
    assert cluster.api.requests[before:] == []


def test_convergence_timeout_names_what_is_missing(cluster: FakeCluster, mesh: KubeBackend) -> None:
    mesh.replace_all(BREAKER)
    cluster.admin.frozen = True
    try:
        with pytest.raises(MeshTimeoutError) as info:
            mesh.apply(RETRY)
    finally:
        cluster.admin.frozen = False
    g = mesh.generation
    text = str(info.value)
    assert f"waiting for the caller's sidecar to run policy generation {g}" in text
    assert f"VirtualService meshcheck-run00001/orders-retry-g{g} not yet in the caller's sidecar" in text
    assert "istioctl analyze -n meshcheck-run00001" in text


def test_prometheus_and_metrics(cluster: FakeCluster, mesh: KubeBackend) -> None:
    assert mesh.prometheus_url.startswith("http://127.0.0.1:")
    assert mesh.wait_for_metrics(timeout=5) < 5
    assert mesh.client_proxy_labels == {"namespace": "meshcheck-run00001", "pod": mesh.agent_pod}
    assert 'up{namespace="meshcheck-run00001"} == 1' in cluster.prometheus.queries


def test_describe(mesh: KubeBackend) -> None:
    facts = mesh.describe()
    assert facts["istio_version"] == "1.30"
    assert facts["istio_release"] == "1.30.3"
    assert facts["namespace"] == "meshcheck-run00001"
    assert facts["envoy_version"] == "1.34.1"
    assert facts["kube_context"] == "kind-kind"
    assert facts["instances"] == "4"


# ---------------------------------------------------------------------------------------------------------
# Clean-up
# ---------------------------------------------------------------------------------------------------------


def test_stop_removes_the_namespace_and_says_so(tmp_path: Path) -> None:
    lines: list[str] = []
    with FakeCluster(tmp_path) as cluster:
        backend = KubeBackend(cluster.settings(run_id="stop0001"), topology=TOPOLOGY, log=lines.append)
        with backend:
            assert "meshcheck-stop0001" in cluster.api.namespaces()
        assert "meshcheck-stop0001" not in cluster.api.namespaces()
        assert ("DELETE", "/api/v1/namespaces/meshcheck-stop0001") in cluster.api.requests
        assert "meshcheck: removed namespace meshcheck-stop0001" in lines
        backend.stop()  # idempotent
        assert cluster.api.requests.count(("DELETE", "/api/v1/namespaces/meshcheck-stop0001")) == 1


def test_ctrl_c_during_start_cleans_up(tmp_path: Path) -> None:
    def interrupt(line: str) -> None:
        if line.startswith("meshcheck: created namespace"):
            raise KeyboardInterrupt

    with FakeCluster(tmp_path) as cluster:
        with pytest.raises(KeyboardInterrupt):
            KubeBackend(cluster.settings(run_id="ctrlc001"), topology=TOPOLOGY, log=interrupt).start()
        assert "meshcheck-ctrlc001" not in cluster.api.namespaces()
        assert ("DELETE", "/api/v1/namespaces/meshcheck-ctrlc001") in cluster.api.requests


def test_keep_leaves_the_namespace_and_says_how_to_remove_it(tmp_path: Path) -> None:
    lines: list[str] = []
    with FakeCluster(tmp_path) as cluster:
        with KubeBackend(cluster.settings(run_id="keep0001", keep=True), topology=TOPOLOGY, log=lines.append):
            pass
        ns = cluster.api.snapshot()[("", "namespaces", "", "meshcheck-keep0001")]
        assert ns["metadata"]["annotations"]["meshcheck.io/keep"] == "true"
        assert any("kubectl delete namespace meshcheck-keep0001" in line for line in lines)


def test_dry_run_plan_matches_what_a_run_creates(tmp_path: Path) -> None:
    from pytest_meshcheck.kube.plan import dry_run_plan

    with FakeCluster(tmp_path) as cluster:
        settings = cluster.settings(run_id="plan0001")
        plan = dry_run_plan(settings, TOPOLOGY, RETRY, "1.30", full_files=True)
        planned = [d for d in yaml.safe_load_all(plan) if d]
        with KubeBackend(settings, topology=TOPOLOGY, policies=RETRY):
            created = cluster.api.snapshot()
    planned_refs = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in planned}
    created_refs = {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
        for o in created.values()
        if o["metadata"].get("labels", {}).get("meshcheck.io/run-id") == "plan0001" and o["kind"] != "Pod"
    }
    assert planned_refs == created_refs


def test_a_dry_run_never_touches_the_cluster(tmp_path: Path) -> None:
    with FakeCluster(tmp_path) as cluster:
        with pytest.raises(MeshSetupError, match="--mesh-dry-run touches no cluster"):
            KubeBackend(cluster.settings(dry_run=True), topology=TOPOLOGY).start()
        assert cluster.api.requests == []
