"""The workload host: many echo instances in one process, each with its own socket, chaos and counters.

Real processes, run from the shipped bundle as the local mesh runs them (``python3 -I -S echo.py
--host-spec FILE``). The caller instance calls its dependency directly (``PUT /outbound`` points it at the
dependency's own port), which is plumbing for what the local mesh does through a pod's sidecar.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pytest_meshcheck.workload.bundle import ECHO_FILES, write_bundle
from pytest_meshcheck.workload.echo.calls import CallSpec
from pytest_meshcheck.workload.echo.host_spec import InstanceSpec, host_spec_json
from pytest_meshcheck.workload.echo.ready import ReadyInfo, parse_ready_line
from pytest_meshcheck.workload.echo.replica import Identity


@dataclass
class Host:
    proc: subprocess.Popen[bytes]
    info: ReadyInfo

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.info.admin_port}"

    def url(self, instance: str) -> str:
        return f"http://127.0.0.1:{self.info.instances[instance]}"


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    root = Path(tempfile.mkdtemp(prefix="meshcheck-echo-host-"))
    script = write_bundle(ECHO_FILES, root) / "echo.py"
    calls = (
        CallSpec("pay", "pay:8080", "POST", "/pay"),
        # Without a sidecar to route by Host, every call goes to the one outbound address: both reach pay.
        CallSpec("pay", "pay:8080", "GET", "/check", on_error="ignore"),
    )
    spec = [
        InstanceSpec(Identity("orders", "v1", "orders-v1-0", "shop"), seed=1, calls=calls),
        InstanceSpec(Identity("pay", "v1", "pay-v1-0", "shop"), seed=2),
        InstanceSpec(Identity("pay", "v1", "pay-v1-1", "shop"), seed=3),
        InstanceSpec(Identity("stock", "v1", "stock-v1-0", "shop"), seed=4),
    ]
    (root / "spec.json").write_text(host_spec_json(spec))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-S",
            str(script),
            "--host-spec",
            str(root / "spec.json"),
            "--parent-pid",
            str(os.getpid()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        info = parse_ready_line(proc.stdout.readline())
        assert set(info.instances) == {"orders-v1-0", "pay-v1-0", "pay-v1-1", "stock-v1-0"}
        yield Host(proc, info)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def test_each_instance_has_its_own_port_identity_and_chaos(host: Host) -> None:
    assert len(set(host.info.instances.values())) == 4
    with httpx.Client(timeout=5) as c:
        assert c.get(host.url("pay-v1-1")).json()["instance"] == "pay-v1-1"
        c.put(f"{host.admin}/instances/pay-v1-0/chaos", json={"error": {"status": 503}})
        assert c.get(host.url("pay-v1-0")).status_code == 503
        assert c.get(host.url("pay-v1-1")).status_code == 200  # the other replica keeps its own chaos state
        c.delete(f"{host.admin}/instances/pay-v1-0/chaos")
        assert c.get(f"{host.admin}/instances/nope/chaos").status_code == 404


def test_calls_go_in_order_propagate_the_request_id_and_name_the_failed_hop(host: Host) -> None:
    with httpx.Client(timeout=5) as c:
        # Both pay replicas answer; point the caller at one of them (its pod's sidecar in the local mesh).
        assert (
            c.put(
                f"{host.admin}/outbound", json={"orders-v1-0": f"127.0.0.1:{host.info.instances['pay-v1-0']}"}
            ).status_code
            == 200
        )
        ok = c.get(host.url("orders-v1-0") + "/api/orders", headers={"x-request-id": "req-ok"})
        assert ok.status_code == 200
        assert ok.json()["calls"] == [{"service": "pay", "status": 200}, {"service": "pay", "status": 200}]
        c.put(f"{host.admin}/instances/pay-v1-0/chaos", json={"error": {"status": 503}})
        failed = c.get(host.url("orders-v1-0"), headers={"x-request-id": "req-failed"})
        c.delete(f"{host.admin}/instances/pay-v1-0/chaos")
        assert failed.status_code == 503
        assert failed.headers["x-meshcheck-failed-hop"] == "orders -> pay"
        assert failed.json()["calls"] == [{"service": "pay", "status": 503}]  # stopped at the first failure
        ledger = c.get(f"{host.admin}/ledger", params={"service": "pay"}).json()
        assert ledger["scope"] == "service"
        # Both logical requests reached pay with the caller's request id: the first twice (two calls, both
        # executed: a duplicate), the second once, refused by the chaos before it ran.
        assert ledger["requests"]["req-ok"] == [2, 2]
        assert ledger["requests"]["req-failed"] == [1, 0]
        assert ledger["ledger"]["duplicate_executions"] >= 1
        orders = c.get(f"{host.admin}/instances/orders-v1-0/ledger").json()["requests"]
        assert orders["req-ok"] == [1, 1]


def test_a_dependency_that_does_not_answer_is_a_502(host: Host) -> None:
    with httpx.Client(timeout=5) as c:
        c.put(f"{host.admin}/outbound", json={"orders-v1-0": "127.0.0.1:1"})  # nothing listens on port 1
        r = c.get(host.url("orders-v1-0"))
        c.put(f"{host.admin}/outbound", json={"orders-v1-0": f"127.0.0.1:{host.info.instances['pay-v1-0']}"})
        assert r.status_code == 502
        assert r.json()["calls"] == [{"service": "pay", "status": None}]


def test_one_scrape_target_exports_every_instance(host: Host) -> None:
    text = httpx.get(f"{host.admin}/metrics", timeout=5).text
    instances = set(re.findall(r'meshcheck_echo_requests_received_total\{[^}]*instance="([^"]+)"', text))
    assert instances == set(host.info.instances)
    assert text.count("# TYPE meshcheck_echo_requests_received_total counter") == 1
    assert 'meshcheck_echo_duplicate_executions_total{service="pay",namespace="shop"}' in text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1]", "expected an object"),
        (b'{"nope": "127.0.0.1:1"}', "no instance 'nope'"),
        (b'{"orders-v1-0": "x"}', "HOST:PORT"),
    ],
)
def test_bad_outbound_is_a_400_and_changes_nothing(host: Host, body: bytes, message: str) -> None:
    r = httpx.put(f"{host.admin}/outbound", content=body, timeout=5)
    assert r.status_code == 400
    assert message in r.json()["error"]


def test_a_bad_host_spec_exits_2_naming_the_entry(tmp_path: Path) -> None:
    root = write_bundle(ECHO_FILES, tmp_path / "b")
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "instances": [
                    {"service": "a", "version": "v1", "instance": "a-0", "namespace": "n", "calls": [{"service": "b"}]}
                ]
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(root / "echo.py"), "--host-spec", str(spec)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "instances[0].calls[0].authority: required" in done.stderr


def test_a_killed_instance_refuses_connections_until_revived_on_the_same_port(host: Host) -> None:
    with httpx.Client(timeout=5) as c:
        kept = httpx.Client(timeout=5)
        assert kept.get(host.url("pay-v1-1")).status_code == 200  # a keep-alive connection to the victim
        r = c.put(f"{host.admin}/instances/pay-v1-1/serving", json={"serving": False})
        assert r.json() == {"instance": "pay-v1-1", "serving": False}
        with pytest.raises(httpx.TransportError):
            httpx.get(host.url("pay-v1-1"), timeout=5)  # refused: nothing listens on its port
        with pytest.raises(httpx.TransportError):
            kept.get(host.url("pay-v1-1"))  # its open connection was dropped too
        kept.close()
        assert c.get(host.url("pay-v1-0")).status_code == 200  # its neighbours in the host never noticed
        assert c.get(f"{host.admin}/instances/pay-v1-1/serving").json()["serving"] is False
        r = c.put(f"{host.admin}/instances/pay-v1-1/serving", json={"serving": True})
        assert r.json() == {"instance": "pay-v1-1", "serving": True}
        assert c.get(host.url("pay-v1-1")).json()["instance"] == "pay-v1-1"
        assert c.put(f"{host.admin}/instances/pay-v1-1/serving", json={"serving": "no"}).status_code == 400
