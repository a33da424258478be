"""Every calling pod has its own sidecar, and a live policy change reaches all of them before apply returns.

Real Envoys (the default topology: order-service's 4 pods call payment-service and inventory-service), no
traffic needed: each sidecar's own ``/config_dump`` says what it runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.local.mesh import LocalMesh
from pytest_meshcheck.local.sidecar import Sidecar
from pytest_meshcheck.policy import PolicySet, load_policy_text

pytestmark = pytest.mark.envoy

PAYMENT_FQDN = "payment-service.platform-core.svc.cluster.local"


def payment_vs(attempts: int, regex: str | None = None) -> PolicySet:
    match = (
        f'\n  - match: [{{uri: {{regex: "{regex}"}}}}]\n    route: [{{destination: {{host: payment-service}}}}]'
        if regex
        else ""
    )
    return load_policy_text(
        f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: payment-retries, namespace: platform-core}}
spec:
  hosts: [payment-service]
  http:{match}
  - route: [{{destination: {{host: payment-service}}}}]
    retries: {{attempts: {attempts}, retryOn: 5xx}}
""",
        source="<test>",
    )


def payment_retries(sidecar: Sidecar) -> int:
    assert sidecar.admin is not None
    dump = sidecar.admin.get("/config_dump", resource="dynamic_route_configs").json()["configs"]
    for rc in dump:
        for vh in rc["route_config"]["virtual_hosts"]:
            if PAYMENT_FQDN in vh["domains"]:
                return int(vh["routes"][-1]["route"]["retry_policy"]["num_retries"])
    raise AssertionError(f"{sidecar.name} has no route to {PAYMENT_FQDN}")


def clusters(sidecar: Sidecar) -> set[str]:
    assert sidecar.admin is not None
    dump = sidecar.admin.get("/config_dump", resource="dynamic_active_clusters").json()["configs"]
    return {c["cluster"]["name"] for c in dump}


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalMesh]:
    with LocalMesh(prometheus=False, seed=3) as m:
        yield m


def test_a_pod_sidecar_holds_only_the_services_its_pod_calls(mesh: LocalMesh) -> None:
    assert len(mesh.pod_sidecars) == len(mesh.instances("order-service")) == 4
    for sidecar in mesh.pod_sidecars.values():
        hosts = {name.rsplit("|", 1)[1].split(".")[0] for name in clusters(sidecar)}
        assert hosts == {"payment-service", "inventory-service"}
    assert mesh.client is not None
    client_hosts = {name.rsplit("|", 1)[1].split(".")[0] for name in clusters(mesh.client) if "|" in name}
    assert client_hosts == {"catalog-service", "order-service", "payment-service", "inventory-service"}


def test_apply_returns_once_every_pod_sidecar_runs_the_change(mesh: LocalMesh) -> None:
    mesh.apply(payment_vs(5))
    # No waiting here: apply returned, so every sidecar already runs it.
    assert {name: payment_retries(sc) for name, sc in mesh.pod_sidecars.items()} == dict.fromkeys(mesh.pod_sidecars, 5)
    assert mesh.client is not None
    assert payment_retries(mesh.client) == 5


def test_an_update_envoy_refuses_is_rolled_back_in_every_sidecar(mesh: LocalMesh) -> None:
    mesh.apply(payment_vs(2))
    # Admitted by Istio, refused by Envoy (RE2 program too large): nothing of it may stay anywhere.
    with pytest.raises(MeshSetupError, match="refused the new config"):
        mesh.apply(payment_vs(4, regex="/pay/[a-z]{1,200}"))
    assert [payment_retries(sc) for sc in mesh.sidecars] == [2] * len(mesh.sidecars)
    mesh.apply(payment_vs(3))  # not wedged
    assert [payment_retries(sc) for sc in mesh.sidecars] == [3] * len(mesh.sidecars)


def test_a_killed_replica_is_a_dead_pod_to_every_sidecar_and_comes_back(mesh: LocalMesh) -> None:
    import httpx

    mesh.replace_all(PolicySet())
    victim = mesh.instances("payment-service")[0]
    with mesh.killed(victim.name):
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{victim.port}/", timeout=5)
        # Through the client's sidecar, Istio's default retry policy retries a refused connection on
        # another replica, so payment-service still answers, never from the dead one.
        served = {
            httpx.get(mesh.sidecar_url, headers={"Host": mesh.host_header("payment-service")}, timeout=5).headers[
                "x-meshcheck-instance"
            ]
            for _ in range(20)
        }
        assert victim.name not in served
    assert httpx.get(f"http://127.0.0.1:{victim.port}/", timeout=5).json()["instance"] == victim.name
    with pytest.raises(MeshSetupError, match="no instance 'nope'"), mesh.killed("nope"):
        pass
