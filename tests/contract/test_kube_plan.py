"""``--mesh-dry-run``: the full plan, printed on a machine with no cluster and no kubeconfig."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
import yaml

from pytest_meshcheck.kube.plan import dry_run_plan
from pytest_meshcheck.kube.settings import KubeSettings
from pytest_meshcheck.policy import load_policies
from pytest_meshcheck.settings import MeshSettings
from pytest_meshcheck.topology import load_topology, parse_topology

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No kubeconfig anywhere, and any attempt to open a connection fails the test."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))

    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"the dry run tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def _plan(**settings: object) -> str:
    policies = load_policies(REPO / "pytest_meshcheck/examples/platform")
    return dry_run_plan(
        KubeSettings(run_id="dry00001", **settings),  # type: ignore[arg-type]
        load_topology(),
        policies,
        None,
        scenarios=["scenarios/test_retries.py::test_order_retries"],
    )


def test_plan_needs_no_cluster_and_lists_every_object(no_cluster: None) -> None:
    plan = _plan()
    docs = [d for d in yaml.safe_load_all(plan) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Namespace") == 1
    assert kinds.count("Deployment") == 6  # five service versions + the agent
    assert kinds.count("Service") == 4
    assert kinds.count("ConfigMap") == 2
    assert kinds.count("Sidecar") == 1
    assert kinds.count("VirtualService") == 4
    assert kinds.count("DestinationRule") == 1
    assert docs[0]["metadata"]["name"] == "meshcheck-dry00001"
    listed = [line for line in plan.splitlines() if line.startswith("#   - ")]
    assert "#   - Namespace meshcheck-dry00001" in listed
    assert len(listed) == len(docs) + 1  # every object, plus the one scenario
    assert "#   - DestinationRule meshcheck-dry00001/order-service-circuit-breaker-g1" in plan


def test_plan_lists_every_check_in_order(no_cluster: None) -> None:
    plan = _plan()
    checks = [line for line in plan.splitlines() if re.match(r"^#\s+\d+\. ", line)]
    assert len(checks) == 16
    text = "\n".join(checks)
    order = [
        "has kube context 'kind-kind'",
        "GET /version",
        "Istio is installed",
        "Prometheus: Service istio-system/prometheus",
        "permissions, by SelfSubjectAccessReview",
        "leftovers:",
        "create Namespace meshcheck-dry00001",
        "sidecar injection",
        "wait until every Deployment",
        "port-forward to pod meshcheck-agent:8070",
        "healthy endpoint",
        "upstream_rq_retry",
        "Prometheus has scraped",
        "<name>-g<generation>",
        "load: POST /load",
        "teardown",
    ]
    positions = [text.index(item) for item in order]
    assert positions == sorted(positions)
    assert "# Scenarios (1):" in plan
    assert "#   - scenarios/test_retries.py::test_order_retries" in plan


def test_plan_follows_the_settings(no_cluster: None) -> None:
    plan = _plan(context="staging", echo_image="registry.local/py:3.12", prometheus_url="http://prom:9090", keep=True)
    assert "# context: staging -> kube context staging" in plan
    assert "Prometheus at --mesh-prometheus-url http://prom:9090" in plan
    assert "--mesh-keep: keep the namespace" in plan
    images = {
        c["image"]
        for d in yaml.safe_load_all(plan)
        if d and d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.local/py:3.12"}


def test_configmap_files_are_digests_unless_asked_for_in_full(no_cluster: None) -> None:
    plan = _plan()
    echo_cm = next(d for d in yaml.safe_load_all(plan) if d and d["metadata"]["name"] == "meshcheck-echo")
    assert echo_cm["data"]["echo.py"].startswith("<")
    assert "from pytest_meshcheck/workload/echo/__main__.py" in echo_cm["data"]["echo.py"]
    full = dry_run_plan(KubeSettings(run_id="dry00001"), load_topology(), None, "1.24", full_files=True)
    echo_cm = next(d for d in yaml.safe_load_all(full) if d and d["metadata"]["name"] == "meshcheck-echo")
    assert echo_cm["data"]["echo.py"] == (REPO / "pytest_meshcheck/workload/echo/__main__.py").read_text()
    assert "this plan assumes 1.24" in full


def test_settings_come_from_the_plugin_settings() -> None:
    mesh = MeshSettings(context="kind", kind_cluster="ci", echo_image="python:3.13-slim", keep=True, dry_run=True)
    settings = KubeSettings.from_mesh_settings(mesh, run_id="abc")
    assert settings.kube_context == "kind-ci"
    assert settings.namespace == "meshcheck-abc"
    assert (settings.echo_image, settings.keep, settings.dry_run, settings.create) == (
        "python:3.13-slim",
        True,
        True,
        False,
    )
    assert KubeSettings(context="prod-eu").kube_context == "prod-eu"
    with pytest.raises(ValueError, match="run_id"):
        KubeSettings(run_id="Not_A_Label")


def test_plan_shows_the_call_graph_in_order(no_cluster: None) -> None:
    plan = _plan()
    lines = plan.splitlines()
    start = lines.index(
        "# Call graph (echo --calls; Istio's iptables send each call through the caller pod's sidecar):"
    )
    graph = lines[start + 1 : start + 6]
    assert graph == [
        "#   order-service (Deployments order-service-v1, order-service-v2), for every request it serves:",
        "#     [1] POST payment-service.meshcheck-dry00001.svc.cluster.local:8080 /pay (on_error: fail)",
        "#     [2] GET inventory-service.meshcheck-dry00001.svc.cluster.local:8080 /check (on_error: fail)",
        "#   leaf services (no calls): catalog-service, payment-service, inventory-service",
        "#   policy changes and endpoints are awaited in the agent's sidecar only; the callers' sidecars get the "
        "same istiod push, but a run does not wait for them",
    ]
    # The graph shown is the one the Deployment runs.
    order = next(d for d in yaml.safe_load_all(plan) if d and d["metadata"]["name"] == "order-service-v1")
    command = order["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "payment-service.meshcheck-dry00001.svc.cluster.local:8080" in command[command.index("--calls") + 1]
    # The call lines are not counted as checks.
    assert len([line for line in lines if re.match(r"^#\s+\d+\. ", line)]) == 16


def test_plan_says_when_nothing_calls(no_cluster: None) -> None:
    topo = parse_topology({"services": [{"name": "a"}, {"name": "b"}]}, source="t.yaml")
    plan = dry_run_plan(KubeSettings(run_id="dry00001"), topo, None, None)
    assert "#   none: no service of the topology calls another" in plan
    commands = [
        d["spec"]["template"]["spec"]["containers"][0]["command"]
        for d in yaml.safe_load_all(plan)
        if d and d["kind"] == "Deployment"
    ]
    assert len(commands) == 3
    assert not any("--calls" in c for c in commands)
