"""A cluster run whose topology has calls: every calling pod's sidecar converges, calls and ledgers flow.

The real ``KubeBackend`` against the fake cluster. The pods of ``orders`` (which calls ``payments``) run
the shipped echo with its ``--calls`` argument, expanded as the kubelet expands it, and call through a
stand-in for their sidecar. Each of their sidecars has a fake admin API of its own that reports config
changes ``CALLER_LAG`` seconds late, far behind the agent's, so a run that waited for the agent's
sidecar alone would return while the order pods still enforce the previous policy.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from pytest_meshcheck.errors import MeshTimeoutError
from pytest_meshcheck.harness.chain import read_ledger
from pytest_meshcheck.kube.backend import KubeBackend
from pytest_meshcheck.kube.callers import ENVOY_ADMIN_PORT
from pytest_meshcheck.kube.converge import ObjectKey
from pytest_meshcheck.load import OpenLoop
from pytest_meshcheck.metrics.prom import Prom, selector
from pytest_meshcheck.policy import load_policy_text
from pytest_meshcheck.topology import parse_topology
from tests.doubles.fake_cluster import FakeCluster

AGENT_LAG = 0.05
CALLER_LAG = 1.5
NS = "meshcheck-calls001"
# A '$' in a call path: the Deployment must escape it for the kubelet, which must hand it back as written.
PAY_PATH = "/pay$(POD_NAME)"
TOPOLOGY = parse_topology(
    {
        "namespace": "shop",
        "services": [
            {
                "name": "orders",
                "port": 8084,
                "versions": [{"name": "v1", "replicas": 2}],
                "calls": [{"service": "payments", "method": "POST", "path": PAY_PATH}],
            },
            {"name": "payments", "port": 8080, "versions": [{"name": "v1", "replicas": 2}]},
        ],
    },
    source="calls.yaml",
)
BREAKER = load_policy_text(
    """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payments-breaker, namespace: shop}
spec:
  host: payments
  trafficPolicy: {connectionPool: {http: {http1MaxPendingRequests: 1}}}
""",
    source="breaker.yaml",
)
RETRY = load_policy_text(
    """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payments-retry, namespace: shop}
spec:
  hosts: [payments]
  http:
  - route: [{destination: {host: payments}}]
    retries: {attempts: 2, retryOn: 5xx}
""",
    source="retry.yaml",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCluster]:
    with FakeCluster(tmp_path_factory.mktemp("calls"), lag=AGENT_LAG, caller_lag=CALLER_LAG) as c:
        yield c


@pytest.fixture(scope="module")
def mesh(cluster: FakeCluster) -> Iterator[KubeBackend]:
    settings = cluster.settings(run_id="calls001", converge_timeout=4.0)
    with KubeBackend(settings, topology=TOPOLOGY) as backend:
        yield backend


def _callers(mesh: KubeBackend) -> list[str]:
    return [i.name for i in mesh.instances("orders")]


def test_every_calling_pod_is_a_sidecar_a_change_must_reach(cluster: FakeCluster, mesh: KubeBackend) -> None:
    proxies = mesh.proxies()
    assert [p.where for p in proxies] == [
        "the caller's sidecar",
        *(f"the sidecar of pod {pod}" for pod in _callers(mesh)),
    ]
    assert proxies[0].services == ("orders", "payments")
    assert [p.services for p in proxies[1:]] == [("payments",), ("payments",)]
    assert [p.labels["app"] for p in proxies] == ["meshcheck-agent", "orders", "orders"]
    # Start waited for the order pods' endpoints through a port-forward to each one's Envoy admin port.
    assert {(NS, pod, ENVOY_ADMIN_PORT) for pod in _callers(mesh)} <= set(cluster.api.forward_log)


def test_apply_returns_only_once_every_calling_pods_sidecar_runs_it(mesh: KubeBackend) -> None:
    mesh.apply(BREAKER)
    g = mesh.generation
    key = ObjectKey("DestinationRule", NS, f"payments-breaker-g{g}")
    # Read right after apply returned: the order pods' sidecars report changes CALLER_LAG late, so these hold
    # only if apply waited for them (the agent's sidecar alone was done CALLER_LAG - AGENT_LAG earlier).
    assert all(mesh.caller_sidecar_view(pod).runs(key) for pod in _callers(mesh))
    mesh.remove(BREAKER)
    assert not any(mesh.caller_sidecar_view(pod).runs(key) for pod in _callers(mesh))


def test_a_calling_pods_sidecar_that_never_gets_the_change_is_named(cluster: FakeCluster, mesh: KubeBackend) -> None:
    stuck, fine = _callers(mesh)
    cluster.pods.caller_admins[stuck].frozen = True
    try:
        with pytest.raises(MeshTimeoutError) as info:
            mesh.apply(RETRY)
    finally:
        cluster.pods.caller_admins[stuck].frozen = False
        mesh.remove(RETRY)
    text = str(info.value)
    g = mesh.generation - 1
    assert f"the sidecars of the agent and of 2 calling pod(s) to run policy generation {g}" in text
    assert f"VirtualService {NS}/payments-retry-g{g} not yet in the sidecar of pod {stuck}" in text
    assert fine not in text
    assert "istioctl proxy-status" in text


def test_calls_leave_through_the_pods_sidecar_and_pod_ledgers_are_summed(
    cluster: FakeCluster, mesh: KubeBackend
) -> None:
    _, marks = read_ledger(mesh, "payments")
    _, order_marks = read_ledger(mesh, "orders")
    before = cluster.pods.router.forwarded.get("payments", 0)
    result = mesh.run_load(
        "orders", OpenLoop(rate=100, duration=0.3, max_requests=20), headers={"x-request-id": "calls-ledger-1"}
    )
    assert result.status_histogram() == {200: 20}
    assert cluster.pods.router.forwarded["payments"] - before == 20
    assert set(cluster.pods.router.paths["payments"]) == {PAY_PATH}
    # Each payments pod keeps its own ledger (scope: instance), read through the agent's relay.
    per_pod = [httpx.get(f"{i.admin_url}/ledger").json() for i in mesh.instances("payments")]
    assert [doc["scope"] for doc in per_pod] == ["instance", "instance"]
    assert [doc["requests"]["calls-ledger-1"] for doc in per_pod] == [[10, 10], [10, 10]]
    counts, _ = read_ledger(mesh, "payments", since=marks)
    assert counts == {"calls-ledger-1": (20, 20)}
    assert read_ledger(mesh, "orders", since=order_marks)[0] == {"calls-ledger-1": (20, 20)}


def test_a_ledger_read_since_a_mark_gets_only_later_ids_through_the_relay(mesh: KubeBackend) -> None:
    profile = OpenLoop(rate=100, duration=0.1, max_requests=4)
    # Without marks only the marks come back ('?since=' past every sequence): no ids at all.
    nothing, marks = read_ledger(mesh, "payments")
    assert nothing == {}
    assert sorted(marks) == [i.name for i in mesh.instances("payments")]
    mesh.run_load("orders", profile, headers={"x-request-id": "calls-since-1"})
    first, marks = read_ledger(mesh, "payments", since=marks)
    assert first == {"calls-since-1": (4, 4)}
    mesh.run_load("orders", profile, headers={"x-request-id": "calls-since-2"})
    later, _ = read_ledger(mesh, "payments", since=marks)
    # The agent passes '?since=' on to each pod; dropped, every id ever seen would come back each time.
    assert later == {"calls-since-2": (4, 4)}


def test_hop_labels_select_the_calling_pods_as_the_addon_labels_them(mesh: KubeBackend) -> None:
    mesh.wait_for_metrics(timeout=5)
    labels = mesh.caller_proxy_labels("orders")
    assert labels == {"namespace": NS, "app": "orders"}
    samples = Prom(mesh.prometheus_url).query(selector("up", labels))
    assert sorted(s.labels["pod"] for s in samples) == _callers(mesh)
