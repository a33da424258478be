"""Benchmark the local mesh at scale: start-to-ready, memory and file descriptors against replicas (issue #10).

Prints, on this machine:

1. the seed topology (the packaged default: 13 instances, the client's Envoy and one per order-service pod):
   ``LocalMesh`` start-to-ready, median of ``--runs`` starts with and without Prometheus, and the memory
   of the workload hosts, the Envoys and Prometheus;
2. the growth curve: 10, 30 and 100 services x 3 replicas, without calls and with every 10th service
   calling the next two (so each of its pods gets a sidecar): start-to-ready (median of ``--growth-runs``,
   without Prometheus unless ``--prometheus``) and memory, and the workloads' RSS per added replica;
3. Envoy's memory per sidecar, and what the local sidecars' trimmed stats config saves (start-up CPU per
   Envoy, with Istio's complete tag list and with the trimmed one, same topology), checking that both
   export exactly the same metric names and labels;
4. what ``pytest_meshcheck.local.capacity`` estimates for each topology, next to what was measured.

Memory is read from ``/proc/<pid>/status``: ``VmRSS``, and its private part ``RssAnon``. An Envoy's RSS is
about 50 MB of the Envoy binary's pages that every Envoy shares, plus its own ``RssAnon``; the sum of RSS
therefore counts the binary once per Envoy. Start-up CPU is ``utime + stime`` of ``/proc/<pid>/stat``.

Run from the repository root: ``.venv/bin/python bench/bench_scale.py [--runs 5] [--growth-runs 3] [--prometheus]``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest_meshcheck.local.sidecar as sidecar_mod
from pytest_meshcheck.local.capacity import estimate
from pytest_meshcheck.local.mesh import LocalMesh
from pytest_meshcheck.topology import Topology, load_topology, parse_topology
from pytest_meshcheck.translate import istio_stats_config

SIZES = (10, 30, 100)
REPLICAS = 3


def scale_topology(services: int, *, calls: bool, replicas: int = REPLICAS) -> Topology:
    """``services`` services of ``replicas`` each; with ``calls``, every 10th calls the next two."""
    raw = []
    for i in range(services):
        svc: dict[str, object] = {
            "name": f"svc-{i:03d}",
            "port": 8080,
            "versions": [{"name": "v1", "replicas": replicas}],
        }
        if calls and i % 10 == 0 and services > 2:
            svc["calls"] = [{"service": f"svc-{(i + k) % services:03d}"} for k in (1, 2)]
        raw.append(svc)
    kind = "every 10th calls 2" if calls else "no calls"
    return parse_topology({"namespace": "scale", "services": raw}, source=f"<{services} x {replicas}, {kind}>")


def proc_status(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``RssAnon`` of ``pid`` in MB, and its open file descriptors."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            out[key] = int(value.split()[0]) / 1024
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    """One start of one topology."""

    seconds: float
    workloads: list[dict[str, float]] = field(default_factory=list)
    envoys: list[dict[str, float]] = field(default_factory=list)
    envoy_cpu: list[float] = field(default_factory=list)
    prometheus: dict[str, float] | None = None
    metric_keys: set[str] = field(default_factory=set)

    def total(self, group: str, key: str = "VmRSS") -> float:
        procs: list[dict[str, float]] = getattr(self, group)
        return sum(p[key] for p in procs)


def _metric_keys(url: str) -> set[str]:
    """Every ``name{labels}`` the Envoy at ``url`` exports, without values and help lines."""
    text = httpx.get(f"{url}/stats/prometheus", timeout=10.0).text
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def start_once(topology: Topology | None, *, prometheus: bool, keys: bool = False) -> Sample:
    """Start a mesh, measure it, stop it."""
    t0 = time.monotonic()
    with LocalMesh(topology=topology, prometheus=prometheus) as mesh:
        sample = Sample(time.monotonic() - t0)
        assert mesh.workloads is not None
        sample.workloads = [proc_status(p.pid) for p in mesh.workloads.processes]
        pids = [sc.process.pid for sc in mesh.sidecars if sc.process is not None]
        sample.envoys = [proc_status(pid) for pid in pids]
        sample.envoy_cpu = [cpu_seconds(pid) for pid in pids]
        if mesh.prometheus is not None and mesh.prometheus.process is not None:
            sample.prometheus = proc_status(mesh.prometheus.process.pid)
        if keys:
            sample.metric_keys = _metric_keys(mesh.envoy_admin_url)
    return sample


@contextmanager
def complete_stats_tags() -> Iterator[None]:
    """Make the local sidecars use Istio's complete tag list (what they did before the trim)."""
    original = sidecar_mod.istio_stats_config
    sidecar_mod.istio_stats_config = partial(istio_stats_config, complete=True)
    try:
        yield
    finally:
        sidecar_mod.istio_stats_config = original


def median_start(runs: int, start: Callable[[], Sample]) -> tuple[float, Sample]:
    samples = [start() for _ in range(runs)]
    return statistics.median(s.seconds for s in samples), samples[-1]


def mb(value: float) -> str:
    return f"{value:.1f}"


def table(title: str, rows: list[list[object]], headers: list[str]) -> None:
    print(f"\n## {title}")
    print(tabulate(rows, headers=headers), flush=True)


def bench_seed(runs: int) -> None:
    seed = load_topology()
    rows: list[list[object]] = []
    for prometheus in (True, False):
        med, s = median_start(runs, partial(start_once, seed, prometheus=prometheus))
        prom = mb(s.prometheus["VmRSS"]) if s.prometheus else "-"
        rows.append([
            "with Prometheus" if prometheus else "without Prometheus", f"{med:.2f}", len(s.workloads),
            mb(s.total("workloads")), len(s.envoys), mb(s.total("envoys")), mb(s.total("envoys", "RssAnon")), prom,
        ])  # fmt: skip
    table(
        f"Seed topology ({seed.instance_count} instances), target start <= 0.7 s",
        rows,
        [f"LocalMesh, median of {runs}", "start s", "hosts", "hosts RSS MB", "Envoys", "Envoys RSS MB",
         "Envoys RssAnon MB", "Prometheus RSS MB"],
    )  # fmt: skip


def bench_growth(runs: int, prometheus: bool) -> dict[tuple[int, bool], Sample]:
    samples: dict[tuple[int, bool], Sample] = {}
    rows: list[list[object]] = []
    for calls in (False, True):
        for n in SIZES:
            topology = scale_topology(n, calls=calls)
            med, s = median_start(runs, partial(start_once, topology, prometheus=prometheus))
            samples[(n, calls)] = s
            est = estimate(topology, prometheus=prometheus)
            rows.append([
                topology.source, topology.instance_count, f"{med:.2f}", mb(s.total("workloads")),
                mb(s.total("workloads", "RssAnon")), len(s.envoys), mb(s.total("envoys")),
                mb(s.total("envoys", "RssAnon")), f"{statistics.mean(s.envoy_cpu):.2f}",
                int(max(p["fds"] for p in s.workloads)), f"{est.memory_mb:.0f}", est.max_fds,
            ])  # fmt: skip
    table(
        f"Growth ({'with' if prometheus else 'without'} Prometheus; start is the median of {runs}); "
        "targets for 100 x 3: start <= 3 s, workloads RSS <= 300 MB",
        rows,
        ["topology", "replicas", "start s", "hosts RSS MB", "hosts RssAnon MB", "Envoys", "Envoys RSS MB",
         "Envoys RssAnon MB", "CPU s / Envoy", "max fds / host", "capacity est. MB", "est. max fds"],
    )  # fmt: skip
    small, large = samples[(SIZES[0], False)], samples[(SIZES[-1], False)]
    added = (SIZES[-1] - SIZES[0]) * REPLICAS
    per_rss = (large.total("workloads") - small.total("workloads")) / added
    per_anon = (large.total("workloads", "RssAnon") - small.total("workloads", "RssAnon")) / added
    print(f"\nworkload RSS per added replica ({SIZES[0]} -> {SIZES[-1]} services, no calls): "
          f"{per_rss * 1024:.1f} kB RSS, {per_anon * 1024:.1f} kB RssAnon (target <= 1 MB)")  # fmt: skip
    return samples


def bench_sidecars(samples: dict[tuple[int, bool], Sample]) -> None:
    rows = []
    for (n, calls), s in sorted(samples.items()):
        if not calls:
            continue
        pods = s.envoys[1:]
        rows.append([
            f"{n} x {REPLICAS}", len(pods), mb(statistics.mean(p["VmRSS"] for p in pods)),
            mb(statistics.mean(p["RssAnon"] for p in pods)), int(statistics.mean(p["fds"] for p in pods)),
        ])  # fmt: skip
    table("Envoy per pod sidecar (the clusters of its calls only, as an Istio Sidecar resource scopes them)", rows,
          ["services", "pod sidecars", "RSS MB", "RssAnon MB (its own)", "fds"])  # fmt: skip


def bench_trim(runs: int) -> None:
    rows: list[list[object]] = []
    for n, calls in ((100, False), (100, True)):
        topology = scale_topology(n, calls=calls)
        measured: dict[str, tuple[float, Sample]] = {}
        for label in ("Istio's complete tag list", "trimmed (default)"):
            samples = []
            for _ in range(runs):
                if label.startswith("Istio"):
                    with complete_stats_tags():
                        samples.append(start_once(topology, prometheus=False, keys=True))
                else:
                    samples.append(start_once(topology, prometheus=False, keys=True))
            measured[label] = (statistics.median(s.seconds for s in samples), samples[-1])
            cpu = statistics.median(statistics.mean(s.envoy_cpu) for s in samples)
            s = samples[-1]
            rows.append([topology.source, label, f"{measured[label][0]:.2f}", f"{cpu:.2f}",
                         mb(statistics.mean(p["RssAnon"] for p in s.envoys)), len(s.metric_keys)])  # fmt: skip
        full, trimmed = (m[1].metric_keys for m in measured.values())
        # Ports are OS-assigned per start, so listener addresses differ; compare everything else.
        strip = partial(re.sub, r"127\.0\.0\.1_\d+", "127.0.0.1_PORT")
        same = {strip(k) for k in full} == {strip(k) for k in trimmed}
        rows.append(["", "same metric names and labels", "yes" if same else "NO", "", "", ""])
    headers = ["topology", "stats config", "start s", "CPU s / Envoy at ready", "RssAnon MB / Envoy", "series"]
    table(f"Stats tags: what the trim saves (median of {runs}, without Prometheus)", rows, headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="starts of the seed topology per variant")
    parser.add_argument("--growth-runs", type=int, default=3, help="starts per growth-curve topology")
    parser.add_argument("--prometheus", action="store_true", help="growth curve with Prometheus")
    parser.add_argument("--skip-trim", action="store_true", help="skip the stats-tags comparison")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    bench_seed(args.runs)
    samples = bench_growth(args.growth_runs, args.prometheus)
    bench_sidecars(samples)
    if not args.skip_trim:
        bench_trim(args.growth_runs)
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
