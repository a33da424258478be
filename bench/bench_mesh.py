"""Benchmark the local mesh: start-up, memory, live policy convergence and metric freshness.

Prints, for the default topology (13 echo workloads, one Envoy ``--concurrency 1``) with the platform's
policies and a gateway:

1. start-to-ready of ``LocalMesh`` (median, min, max of ``--starts`` starts), with and without Prometheus;
   and of ``meshcheck up`` (what it prints, and spawn to its ready line);
2. Envoy and Prometheus RSS right after start and after ``--requests`` requests through the sidecar;
3. policy convergence of ``--applies`` live changes (route-only changes, and changes that add or remove
   clusters), as returned by ``LocalMesh.apply`` / ``replace_all``, which return once Envoy runs them;
4. time from the first request to Prometheus answering ``envoy_cluster_upstream_rq_total`` for each of
   the 4 services with that traffic counted: right after start ("cold", before Prometheus's first
   scrape) and once the mesh has been scraped ("warm").

Run from the repository root: ``.venv/bin/python bench/bench_mesh.py [--starts 5] [--applies 50] [--requests 10000]``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_meshcheck.cli import platform_policies_dir
from pytest_meshcheck.load import ClosedLoop
from pytest_meshcheck.local.mesh import LocalMesh
from pytest_meshcheck.policy import PolicySet, load_policies, load_policy_text

SERVICES = ("catalog-service", "order-service", "payment-service", "inventory-service")
FQDN = "order-service.platform-core.svc.cluster.local"


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def summary(values: list[float], scale: float = 1.0, digits: int = 2) -> list[str]:
    return [f"{statistics.median(values) * scale:.{digits}f}", f"{min(values) * scale:.{digits}f}",
            f"{max(values) * scale:.{digits}f}"]  # fmt: skip


def new_mesh(prometheus: bool) -> LocalMesh:
    return LocalMesh(policies=load_policies(platform_policies_dir()), gateway_port=0, prometheus=prometheus)


def upstream_totals(mesh: LocalMesh) -> dict[str, float]:
    """``envoy_cluster_upstream_rq_total`` per service's default cluster, as Prometheus answers it now."""
    data = httpx.get(
        mesh.prometheus_url + "/api/v1/query", params={"query": "envoy_cluster_upstream_rq_total"}, timeout=2.0
    ).json()
    out: dict[str, float] = {}
    for series in data["data"]["result"]:
        cluster = series["metric"].get("cluster_name", "")
        for name in SERVICES:
            svc = mesh.topology.service(name)
            if cluster == f"outbound|{svc.port}||{svc.fqdn}":
                out[name] = float(series["value"][1])
    return out


def traffic_to_prometheus(mesh: LocalMesh, per_service: int = 10, limit: float = 20.0) -> float:
    """Seconds from the first of ``per_service`` requests to each service until Prometheus counts them all."""
    before = upstream_totals(mesh)
    t0 = time.monotonic()
    with httpx.Client(timeout=5.0) as client:
        for name in SERVICES:
            for _ in range(per_service):
                r = client.get(mesh.sidecar_url, headers={"Host": mesh.host_header(name)})
                r.raise_for_status()
    while time.monotonic() - t0 < limit:
        now = upstream_totals(mesh)
        if all(now.get(s, 0.0) >= before.get(s, 0.0) + per_service for s in SERVICES):
            return time.monotonic() - t0
        time.sleep(0.02)
    raise RuntimeError(f"Prometheus did not count the traffic within {limit}s")


def bench_starts(starts: int) -> tuple[list[float], list[float], list[float]]:
    """Start-to-ready with and without Prometheus, and cold traffic-to-Prometheus per start with it."""
    with_prom: list[float] = []
    without: list[float] = []
    cold: list[float] = []
    for _ in range(starts):
        for prometheus in (True, False):
            t0 = time.monotonic()
            with new_mesh(prometheus) as mesh:
                took = time.monotonic() - t0
                if prometheus:
                    with_prom.append(took)
                    cold.append(traffic_to_prometheus(mesh))
                else:
                    without.append(took)
    return with_prom, without, cold


def bench_up(runs: int) -> tuple[list[float], list[float]]:
    """What ``meshcheck up`` prints as its ready time, and spawn to its ready line."""
    printed: list[float] = []
    wall: list[float] = []
    for _ in range(runs):
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_meshcheck.cli", "up", "--gateway-port", "0", "--chaos-port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if m := re.search(r"local mesh ready in (\d+\.\d+)s \(Istio", line):
                    wall.append(time.monotonic() - t0)
                    printed.append(float(m.group(1)))
                    break
            else:
                raise RuntimeError("meshcheck up exited before it was ready")
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return printed, wall


def vs(attempts: int, subsets: bool) -> str:
    dest = f"{{host: {FQDN}, subset: v1}}" if subsets else f"{{host: {FQDN}}}"
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: order-service-retry, namespace: platform-core}}
spec:
  hosts: [{FQDN}]
  http:
  - route:
    - destination: {dest}
    retries: {{attempts: {attempts}, perTryTimeout: 2s, retryOn: 5xx}}
    timeout: 10s
"""


DR = f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: order-service-circuit-breaker, namespace: platform-core}}
spec:
  host: {FQDN}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""


def bench_convergence(mesh: LocalMesh, applies: int) -> dict[str, list[float]]:
    """Convergence of live changes: even ones change only a route, odd ones add or remove subset clusters."""
    base = mesh.policies
    without_order = PolicySet(
        tuple(v for v in base.virtual_services if v.name != "order-service-retry"),
        tuple(d for d in base.destination_rules if d.name != "order-service-circuit-breaker"),
    )
    kinds: dict[str, list[float]] = {"route only": [], "clusters added/removed": []}
    for i in range(applies):
        if i % 2 == 0:
            kinds["route only"].append(mesh.apply(load_policy_text(vs(1 + i % 5, subsets=False))))
        elif i % 4 == 1:
            kinds["clusters added/removed"].append(mesh.apply(load_policy_text(vs(2, subsets=True) + "---" + DR)))
        else:
            kinds["clusters added/removed"].append(mesh.replace_all(without_order))
    mesh.replace_all(base)
    return kinds


def bench_memory(mesh: LocalMesh, requests: int) -> list[list[object]]:
    assert mesh.envoy is not None
    assert mesh.prometheus is not None
    assert mesh.prometheus.process is not None
    envoy_pid, prom_pid = mesh.envoy.pid, mesh.prometheus.process.pid
    echo_pids = [i.pid for i in mesh.instances() if i.pid is not None]
    rows: list[list[object]] = [
        ["after start", f"{rss_mb(envoy_pid):.1f}", f"{rss_mb(prom_pid):.1f}",
         f"{sum(rss_mb(p) for p in echo_pids):.1f}"],
    ]  # fmt: skip
    per_service = requests // len(SERVICES)
    statuses: dict[int, int] = {}
    for name in SERVICES:
        result = mesh.run_load(name, ClosedLoop(concurrency=8, duration=60, max_requests=per_service))
        for status, count in result.status_histogram().items():
            statuses[status] = statuses.get(status, 0) + count
    mesh.wait_for_metrics()
    time.sleep(2.0)  # two more scrapes, so Prometheus has ingested the new samples
    rows.append([f"after {sum(statuses.values())} requests {statuses}", f"{rss_mb(envoy_pid):.1f}",
                 f"{rss_mb(prom_pid):.1f}", f"{sum(rss_mb(p) for p in echo_pids):.1f}"])  # fmt: skip
    return rows


def table(title: str, rows: list[list[object]], headers: list[str]) -> None:
    print(f"\n## {title}")
    print(tabulate(rows, headers=headers), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--up-runs", type=int, default=3)
    parser.add_argument("--applies", type=int, default=50)
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")

    with_prom, without, cold = bench_starts(args.starts)
    stats = ["median", "min", "max"]
    rows: list[list[object]] = [
        ["LocalMesh with Prometheus", *summary(with_prom)],
        ["LocalMesh without Prometheus", *summary(without)],
    ]
    table("Start-up", rows, [f"start to ready, s ({args.starts} starts)", *stats])

    printed, wall = bench_up(args.up_runs)
    rows = [["printed 'ready in'", *summary(printed)], ["spawn to ready line", *summary(wall)]]
    table("meshcheck up", rows, [f"meshcheck up, s ({args.up_runs} runs)", *stats])

    with new_mesh(prometheus=True) as mesh:
        mesh.wait_for_metrics()
        warm = [traffic_to_prometheus(mesh) for _ in range(5)]
        rows = [
            [f"cold: traffic right after start ({len(cold)} starts)", *summary(cold)],
            [f"warm: mesh already scraped ({len(warm)} rounds)", *summary(warm)],
        ]
        table("First traffic to envoy_cluster_upstream_rq_total in Prometheus, all 4 services", rows,
              ["seconds", *stats])  # fmt: skip

        kinds = bench_convergence(mesh, args.applies)
        every = [t for values in kinds.values() for t in values]
        rows = [[k, len(v), *summary(v, 1000, 1)] for k, v in kinds.items()]
        rows.append(["all", len(every), *summary(every, 1000, 1)])
        table("Policy convergence (apply returns once Envoy runs it)", rows, ["live change", "n", "p50 ms", "min ms",
              "max ms"])  # fmt: skip

        table("Memory (RSS, MB)", bench_memory(mesh, args.requests), ["when", "Envoy", "Prometheus",
              "13 echo workloads"])  # fmt: skip
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
