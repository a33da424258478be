"""The in-mesh agent, run exactly as the pod runs it: the ConfigMap's files, ``python3 -I -S``, stdlib only.

Load goes through a real Envoy (standing in for the agent's sidecar) to a real echo workload; the
records come back over the agent's HTTP API and must be the same records the local context produces.
The sidecar summary is read from that real Envoy's admin API.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from pytest_meshcheck.chaos.destination import DestinationChaos, error_spec
from pytest_meshcheck.kube.converge import ObjectKey, SidecarView
from pytest_meshcheck.kube.wire import load_job, result_from_wire, run_job
from pytest_meshcheck.load import LoadError, OpenLoop, run_load
from pytest_meshcheck.load import records as real_records
from pytest_meshcheck.workload import agent_records
from pytest_meshcheck.workload.bundle import AGENT_FILES, ECHO_FILES, write_bundle
from tests.doubles.static_envoy import EnvoyProcess, bootstrap

POD_IP = "10.244.7.9"  # a pod address the agent is told (by --resolve) to reach locally
ADMIN_PORT = 9901


@dataclass
class Started:
    proc: subprocess.Popen[bytes]
    ready: dict[str, Any]


def _start(argv: list[str], prefix: bytes) -> Started:
    proc = subprocess.Popen([sys.executable, "-I", "-S", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise AssertionError(f"{argv[0]} did not start: {line!r} {err.decode()[-2000:]}")
    return Started(proc, json.loads(line[len(prefix) :]))


def _stop(started: Started) -> None:
    started.proc.terminate()
    try:
        started.proc.wait(5)
    except subprocess.TimeoutExpired:
        started.proc.kill()
        started.proc.wait(5)
    for stream in (started.proc.stdout, started.proc.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture(scope="module")
def pod_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(AGENT_FILES + ECHO_FILES, tmp_path_factory.mktemp("pod"))


@pytest.fixture(scope="module")
def echo(pod_files: Path) -> Iterator[Started]:
    started = _start(
        [str(pod_files / "echo.py"), "--service", "orders", "--version", "v1", "--instance", "orders-v1-abc",
         "--namespace", "meshcheck-t", "--port", "0", "--admin-port", "0"],
        b"MESHCHECK_READY ",
    )  # fmt: skip
    yield started
    _stop(started)


def _istio_path(kind: str, name: str) -> str:
    return f"/apis/networking.istio.io/v1/namespaces/meshcheck-t/{kind}/{name}"


@pytest.fixture(scope="module")
def sidecar(echo: Started) -> Iterator[EnvoyProcess]:
    config = bootstrap(upstream_port=int(echo.ready["port"]))
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    route["name"] = "orders-route"
    route["metadata"] = {"filter_metadata": {"istio": {"config": _istio_path("virtual-service", "orders-g3")}}}
    cluster = config["static_resources"]["clusters"][0]
    cluster["metadata"] = {"filter_metadata": {"istio": {"config": _istio_path("destination-rule", "orders-g2")}}}
    with EnvoyProcess(config) as envoy:
        yield envoy


@pytest.fixture(scope="module")
def agent(pod_files: Path, echo: Started, sidecar: EnvoyProcess) -> Iterator[str]:
    started = _start(
        [str(pod_files / "agent.py"), "--port", "0", "--envoy-admin", sidecar.admin,
         "--workload-admin-port", str(ADMIN_PORT),
         "--resolve", f"orders:8084=127.0.0.1:{sidecar.port}",
         "--resolve", f"{POD_IP}:{ADMIN_PORT}=127.0.0.1:{echo.ready['admin_port']}"],
        b"MESHCHECK_AGENT_READY ",
    )  # fmt: skip
    yield f"http://127.0.0.1:{started.ready['port']}"
    _stop(started)


def test_the_pod_interpreter_has_no_numpy(pod_files: Path) -> None:
    # The premise of the stand-in record store: with -I -S, only the standard library is importable.
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", "import numpy"], capture_output=True, check=False)
    assert proc.returncode != 0


def test_health_reports_the_engine_importable(agent: str) -> None:
    doc = httpx.get(agent + "/healthz").json()
    assert doc["status"] == "ok"
    assert doc["engine"] is True, doc["engine_error"]


def test_load_through_the_sidecar_gives_the_same_records_as_the_local_engine(agent: str, sidecar: EnvoyProcess) -> None:
    profile = OpenLoop(rate=200, duration=0.5, max_requests=100)
    job = load_job("http://orders:8084/items?x=1", profile, host="orders:8084", record_headers=["x-meshcheck-service"])
    with httpx.Client(base_url=agent) as http:
        remote = result_from_wire(profile, run_job(http, job, budget=30))
    local = run_load(
        sidecar.url + "/items?x=1", profile, host="orders:8084", record_headers=["x-meshcheck-service"], isolate=False
    )
    for result in (remote, local):
        assert result.count == 100
        assert result.status_histogram() == {200: 100}
        assert result.instance_counts() == {"orders-v1-abc": 100}
        assert result.attempt_histogram() == {1: 100}
    # Open loop: request i is due at i / rate, on both sides, to the bit.
    np.testing.assert_array_equal(remote.records.intended, local.records.intended)
    for name in ("intended", "sent", "done", "status", "error", "instance", "attempts", "overloaded"):
        assert getattr(remote.records, name).dtype == getattr(local.records, name).dtype, name
    assert all(0 < r.latency < 5 for r in remote.to_records())
    assert remote.to_records()[0].headers == {"x-meshcheck-service": "orders"}
    assert remote.to_records()[-1].index == 99


def test_a_bad_job_is_refused_naming_the_field(agent: str) -> None:
    job = load_job("http://orders:8084/", OpenLoop(rate=1, duration=1, max_requests=1))
    job["profile"]["rate"] = -5
    resp = httpx.post(agent + "/load", json=job)
    assert resp.status_code == 400
    assert "OpenLoop.rate" in resp.json()["error"]
    resp = httpx.post(agent + "/load", json={"profile": {"kind": "open"}})
    assert resp.status_code == 400
    assert "missing field 'url'" in resp.json()["error"]
    # A 400 becomes the same LoadError the local engine raises.
    with httpx.Client(base_url=agent) as http, pytest.raises(LoadError, match=r"OpenLoop\.rate"):
        run_job(http, job, budget=5)


def test_one_job_at_a_time_and_answers_are_fetched_once(agent: str) -> None:
    profile = OpenLoop(rate=20, duration=1.0, max_requests=20)
    job = load_job("http://orders:8084/", profile, host="orders:8084")
    first = httpx.post(agent + "/load", json=job)
    assert first.status_code == 202
    busy = httpx.post(agent + "/load", json=job)
    assert busy.status_code == 409
    assert "already running" in busy.json()["error"]
    job_id = first.json()["job"]
    assert httpx.get(f"{agent}/load/{job_id}").json()["state"] == "running"
    deadline = time.monotonic() + 30
    while (resp := httpx.get(f"{agent}/load/{job_id}")).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert resp.status_code == 200
    assert result_from_wire(profile, resp.json()).count == 20
    gone = httpx.get(f"{agent}/load/{job_id}")
    assert gone.status_code == 404


@dataclass(frozen=True)
class Target:
    service: str
    name: str
    admin_url: str


def test_chaos_reaches_the_pod_through_the_agent(agent: str) -> None:
    chaos = DestinationChaos()
    target = Target("orders", "orders-v1-abc", f"{agent}/workload/{POD_IP}:{ADMIN_PORT}")
    profile = OpenLoop(rate=100, duration=0.2, max_requests=20)
    job = load_job("http://orders:8084/", profile, host="orders:8084")
    with httpx.Client(base_url=agent) as http:
        with chaos.fault("error", error_spec(1.0, status=503), [target]):
            state = httpx.get(target.admin_url + "/chaos").json()
            assert state["chaos"] == {"error": {"status": 503, "probability": 1.0}}
            faulty = result_from_wire(profile, run_job(http, job, budget=30))
        healthy = result_from_wire(profile, run_job(http, job, budget=30))
    # The bootstrap route has no retry policy, so every 503 reaches the client.
    assert faulty.status_histogram() == {503: 20}
    assert healthy.status_histogram() == {200: 20}
    stats = httpx.get(target.admin_url + "/stats").json()
    assert stats["instance"] == "orders-v1-abc"
    assert stats["faults_injected"]["error"] == 20


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        (f"/workload/{POD_IP}:22/chaos", 403, "only the workload admin port 9901"),
        (f"/workload/{POD_IP}:{ADMIN_PORT}/quit", 404, "is not relayed"),
        ("/workload/orders:9901/chaos", 400, "want <pod ip>:<port>"),
        ("/nothing", 404, "no agent endpoint"),
    ],
)
def test_the_relay_only_reaches_workload_admin_endpoints(agent: str, path: str, status: int, text: str) -> None:
    resp = httpx.get(agent + path)
    assert resp.status_code == status
    assert text in resp.json()["error"]


def test_sidecar_summary_names_the_istio_configs_the_proxy_runs(agent: str) -> None:
    view = SidecarView.from_json(httpx.get(agent + "/sidecar/config").json())
    assert view.runs(ObjectKey("VirtualService", "meshcheck-t", "orders-g3"))
    assert view.runs(ObjectKey("DestinationRule", "meshcheck-t", "orders-g2"))
    assert not view.runs(ObjectKey("VirtualService", "meshcheck-t", "orders-g2"))
    assert view.configs[_istio_path("virtual-service", "orders-g3")] == ["route local_route/all/orders-route"]
    assert view.clusters["outbound|8080||upstream"] == (1, 1)


def test_sidecar_stats_pass_through(agent: str) -> None:
    doc = httpx.get(agent + "/sidecar/stats", params={"filter": "upstream_rq_retry$"}).json()
    names = [s["name"] for s in doc["stats"] if "name" in s]
    assert names == ["cluster.outbound|8080||upstream.upstream_rq_retry"]


def test_the_stand_in_record_store_matches_the_real_one() -> None:
    assert agent_records.ERROR_KINDS == real_records.ERROR_KINDS
    for name in ("NO_ERROR", "CONNECT", "RESET", "TIMEOUT", "CANCELLED", "PROTOCOL"):
        assert getattr(agent_records, name) == getattr(real_records, name)
    stand_in = agent_records.LoadRecords(2, open_loop=False, selected_headers=["x-a"])
    real = real_records.LoadRecords(2, open_loop=False, selected_headers=["x-a"])
    for store in (stand_in, real):
        for i in range(5):  # past the capacity: both grow
            j = store.add(i * 0.5)
            store.sent[j] = i * 0.5 + 0.01
            if i % 2:
                store.set_error(j, i * 0.5 + 0.2, real_records.RESET)
            else:
                store.set_response(j, i * 0.5 + 0.1, 200 + i, b"pod-" + bytes([48 + i % 3]), b"2", i == 4, [b"v"])
        store.trim()
    from pytest_meshcheck.kube.wire import records_from_wire

    rebuilt = records_from_wire(json.loads(json.dumps(stand_in.to_wire())))
    assert rebuilt.to_list() == real.to_list()
