"""Will a topology fit this machine? Memory and file descriptors, estimated before any process starts.

A topology too large for the machine would otherwise fail half-way: Envoys killed by the OOM killer, or
``accept()`` failing with ``EMFILE`` in a workload host under load. :func:`check_capacity` estimates what
the local mesh needs and compares it with ``MemAvailable`` (``/proc/meminfo``) and the soft
``RLIMIT_NOFILE`` every process of the mesh inherits from this one.

The figures are measured by ``bench/bench_scale.py`` on Envoy 1.40 and CPython 3.11 (2 cores); see
``docs/explanation/architecture.md``. Memory is counted as a process's own pages (``RssAnon``) plus the
pages of a binary once, however many processes share them.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.topology import Topology

# ---- memory, MB. Measured with bench/bench_scale.py (VmRSS and RssAnon of /proc/<pid>/status).
#: One workload host, its interpreter and modules: 23.4 MB VmRSS with 6 instances (seed topology).
HOST_MB = 24.0
#: Each instance it serves: 10 -> 100 services x 3 replicas added 1.6 MB of RSS for 270 instances
#: (6 kB each); rounded up for the connections and counters an instance keeps under load.
INSTANCE_MB = 0.05
#: The Envoy binary's pages, shared by every Envoy (VmRSS minus RssAnon: 50.5 MB), counted once.
ENVOY_SHARED_MB = 51.0
#: One Envoy's own memory with the seed topology's 9 clusters (RssAnon 14.1 MB).
ENVOY_PRIVATE_MB = 14.5
#: Each cluster an Envoy holds, with its ~100 stats: RssAnon 14.1 MB at 9 clusters, 20.6 MB at 100.
ENVOY_PER_CLUSTER_MB = 0.075
#: Prometheus with the seed topology's 7 targets, right after start (VmRSS 41.6 MB).
PROMETHEUS_MB = 45.0
#: Prometheus per series it holds: 100 services x 3 with 31 Envoys gave 550,346 series and 1,738 MB
#: VmRSS 10 s after start (30 x 3 with 10 Envoys: 58,400 and 202 MB); it grows as samples accumulate.
PROMETHEUS_KB_PER_SERIES = 3.2
#: Series one Envoy exports per cluster (550,346 / 31 Envoys / 100 clusters, histogram buckets included).
SERIES_PER_CLUSTER = 180
SERIES_PER_INSTANCE = 20

# ---- file descriptors, per process (each inherits the soft RLIMIT_NOFILE of this one).
#: A workload host's own: stdio, its admin socket, the selector, the parent watch (measured: 12).
HOST_BASE_FDS = 32
#: An instance's listening socket, and the connection the client's sidecar keeps open to it once used
#: (Envoy keeps an idle connection per endpoint).
FDS_PER_INSTANCE = 2
#: An instance that calls others keeps connections to its pod's sidecar: one per call in flight.
FDS_PER_CALLING_INSTANCE = 8
#: Room for connections in flight through one process: accepted from the sidecars by a workload host;
#: downstream plus upstream in an Envoy. The scenarios' closed loops run at most a few dozen.
CONNECTIONS_IN_FLIGHT = 256
#: An Envoy's own: admin and listener sockets, log files, xDS file watches (measured: about 40).
ENVOY_BASE_FDS = 64


@dataclass(frozen=True)
class CapacityEstimate:
    """What a topology needs, and what the machine offers.

    Attributes:
        memory_mb: Memory of every process of the mesh together.
        host_fds: File descriptors of the busiest workload host.
        host_instances: Instances that host serves.
        envoy_fds: File descriptors of the client's Envoy (it keeps a connection to every endpoint).
        memory_available_mb: ``MemAvailable``, or ``None`` where ``/proc/meminfo`` cannot tell.
        nofile_soft: The soft ``RLIMIT_NOFILE``; ``None`` for unlimited.
        nofile_hard: The hard ``RLIMIT_NOFILE``; ``None`` for unlimited.
    """

    memory_mb: float
    host_fds: int
    host_instances: int
    envoy_fds: int
    memory_available_mb: float | None = None
    nofile_soft: int | None = None
    nofile_hard: int | None = None

    @property
    def max_fds(self) -> int:
        """File descriptors of the process that needs the most."""
        return max(self.host_fds, self.envoy_fds)

    @property
    def fds_process(self) -> str:
        """Which process needs :attr:`max_fds`."""
        if self.host_fds >= self.envoy_fds:
            return f"a workload host serving {self.host_instances} instances"
        return "the client's Envoy"


def _largest_host(topology: Topology, hosts: int) -> tuple[int, int]:
    """Instances and calling instances of the busiest workload host (services are split as the mesh does)."""
    from pytest_meshcheck.local.workloads import _assign

    best = (0, 0)
    for services in _assign(topology, hosts):
        instances = sum(s.replicas for s in services)
        calling = sum(s.replicas for s in services if s.calls)
        best = max(best, (instances, calling))
    return best


def estimate(topology: Topology, *, hosts: int | None = None, prometheus: bool = True) -> CapacityEstimate:
    """Estimate the memory and file descriptors the local mesh of ``topology`` needs.

    Args:
        topology: What the mesh would run.
        hosts: Workload host processes; one per core when ``None`` (as :class:`LocalMesh`).
        prometheus: Whether a Prometheus server runs too.
    """
    count = max(1, min(hosts or os.cpu_count() or 1, len(topology.services)))
    instances = topology.instance_count
    # The client's Envoy and one per pod of a calling service; each gets every cluster of the mesh: one
    # per service, and a subset per version where a service has several (a DestinationRule may add them).
    envoys = 1 + sum(s.replicas for s in topology.callers)
    clusters = sum(1 + (len(s.versions) if len(s.versions) > 1 else 0) for s in topology.services)
    memory = count * HOST_MB + instances * INSTANCE_MB
    memory += ENVOY_SHARED_MB + envoys * (ENVOY_PRIVATE_MB + clusters * ENVOY_PER_CLUSTER_MB)
    if prometheus:
        series = envoys * clusters * SERIES_PER_CLUSTER + instances * SERIES_PER_INSTANCE
        memory += PROMETHEUS_MB + series * PROMETHEUS_KB_PER_SERIES / 1024
    host_instances, host_calling = _largest_host(topology, count)
    host_fds = (
        HOST_BASE_FDS
        + host_instances * FDS_PER_INSTANCE
        + host_calling * FDS_PER_CALLING_INSTANCE
        + CONNECTIONS_IN_FLIGHT
    )
    envoy_fds = ENVOY_BASE_FDS + instances + 2 * CONNECTIONS_IN_FLIGHT
    return CapacityEstimate(round(memory, 1), host_fds, host_instances, envoy_fds)


def mem_available_mb(meminfo: str | None = None) -> float | None:
    """``MemAvailable`` in MB, from ``meminfo`` (the text of ``/proc/meminfo``) or the live file."""
    if meminfo is None:
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError:
            return None
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return None


def nofile_limits() -> tuple[int | None, int | None]:
    """The soft and hard ``RLIMIT_NOFILE`` of this process; ``None`` for unlimited."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (
        None if soft == resource.RLIM_INFINITY else soft,
        None if hard == resource.RLIM_INFINITY else hard,
    )


def check_capacity(
    topology: Topology,
    *,
    hosts: int | None = None,
    prometheus: bool = True,
    meminfo: str | None = None,
    nofile: tuple[int | None, int | None] | None = None,
) -> CapacityEstimate:
    """Refuse a topology the machine cannot run, before anything starts.

    Args:
        topology: What the mesh would run.
        hosts: Workload host processes; one per core when ``None``.
        prometheus: Whether a Prometheus server runs too.
        meminfo: Text of ``/proc/meminfo``; read from the machine when ``None``.
        nofile: Soft and hard ``RLIMIT_NOFILE`` (``None`` for unlimited); this process's when ``None``.

    Returns:
        The estimate, with what the machine offers.

    Raises:
        MeshSetupError: The mesh needs more memory than is available, or more file descriptors per
            process than the soft limit; naming the topology file, both needs and the fix.
    """
    need = estimate(topology, hosts=hosts, prometheus=prometheus)
    available = mem_available_mb(meminfo)
    soft, hard = nofile if nofile is not None else nofile_limits()
    result = CapacityEstimate(need.memory_mb, need.host_fds, need.host_instances, need.envoy_fds, available, soft, hard)
    problems = []
    if available is not None and need.memory_mb > available:
        problems.append(
            f"memory: it needs about {need.memory_mb:,.0f} MB and {available:,.0f} MB is available (MemAvailable)"
        )
    if soft is not None and need.max_fds > soft:
        raise_hard = (
            ""
            if hard is None or need.max_fds <= hard
            else f" (above the hard limit {hard}: raise it first, e.g. in "
            "/etc/security/limits.conf or the container's --ulimit nofile)"
        )
        problems.append(
            f"file descriptors: {need.fds_process} needs about {need.max_fds:,} and the limit is {soft:,} "
            f"(ulimit -n); run 'ulimit -n {need.max_fds}' in the shell that starts it{raise_hard}"
        )
    if problems:
        envoys = 1 + sum(s.replicas for s in topology.callers)
        raise MeshSetupError(
            f"{topology.source}: this topology is too large for this machine: {len(topology.services)} services, "
            f"{topology.instance_count} instances, {envoys} Envoys (the client's and one per pod of a service "
            f"with calls). It would need about {need.memory_mb:,.0f} MB of memory and {need.max_fds:,} file "
            f"descriptors per process.\n  " + "\n  ".join(problems) + "\n  Fix: run fewer services or replicas "
            "(services[i].versions[j].replicas), or fewer services with calls (each of their pods gets an Envoy)"
            + (", or raise the file descriptor limit as above" if soft is not None and need.max_fds > soft else "")
        )
    return result
