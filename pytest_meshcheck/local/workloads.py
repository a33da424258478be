"""The local mesh's workload hosts: echo processes that each serve many instances of the topology.

One process per core (at most one per service) replaces one process per replica: each instance keeps its
own socket, identity, chaos state, counters and outbound connections, but a 100-service platform no longer
costs 300 Python interpreters. A service's instances always share a host, so they share one execution
ledger, as replicas share the database that would show a duplicate payment.
"""

from __future__ import annotations

import os
import selectors
import sys
import time
from typing import Any

import httpx

from pytest_meshcheck.backend import WorkloadInstance
from pytest_meshcheck.errors import ChaosError, MeshSetupError, MeshTimeoutError
from pytest_meshcheck.local.process import ManagedProcess, ProcessGroup
from pytest_meshcheck.topology import ServiceSpec, Topology
from pytest_meshcheck.workload.bundle import ECHO_FILES, write_bundle
from pytest_meshcheck.workload.echo.calls import CallSpec
from pytest_meshcheck.workload.echo.host_spec import InstanceSpec, host_spec_json
from pytest_meshcheck.workload.echo.ready import ReadyInfo, parse_ready_line
from pytest_meshcheck.workload.echo.replica import Identity


def local_calls(svc: ServiceSpec, topology: Topology) -> tuple[CallSpec, ...]:
    """The calls of ``svc`` as its instances send them: to the pod's sidecar, ``Host`` naming the service."""
    out = []
    for call in svc.calls:
        target = topology.service(call.service)
        out.append(CallSpec(target.name, f"{target.name}:{target.port}", call.method, call.path, call.on_error))
    return tuple(out)


def _assign(topology: Topology, hosts: int) -> list[list[ServiceSpec]]:
    """Split services over ``hosts`` processes, largest first onto the least loaded, keeping each whole."""
    bins: list[list[ServiceSpec]] = [[] for _ in range(max(1, min(hosts, len(topology.services))))]
    load = [0] * len(bins)
    for svc in sorted(topology.services, key=lambda s: -s.replicas):
        i = load.index(min(load))
        bins[i].append(svc)
        load[i] += svc.replicas
    return [b for b in bins if b]


class WorkloadHosts:
    """Start the hosts, read their ready lines, and talk to their admin ports.

    Args:
        group: Owns the processes.
        topology: The instances to serve.
        seed: Instance ``i`` (topology order) gets ``seed + i``; random when ``None``.
        hosts: How many processes; default one per core.
    """

    def __init__(self, group: ProcessGroup, topology: Topology, seed: int | None, hosts: int | None = None) -> None:
        self.group = group
        self.topology = topology
        self.seed = seed
        self.count = hosts or max(1, os.cpu_count() or 1)
        self.processes: list[ManagedProcess] = []
        self.admin_urls: dict[int, str] = {}
        self._host_of_service: dict[str, int] = {}
        self.instances: list[WorkloadInstance] = []
        self._client = httpx.Client(timeout=5.0)

    def launch(self) -> None:
        """Write the bundle and one spec per host, and start the processes without waiting."""
        script = write_bundle(ECHO_FILES, self.group.work_dir / "echo") / "echo.py"
        order = {
            f"{svc.name}-{v.name}-{i}": n
            for n, (svc, v, i) in enumerate(
                (svc, v, i) for svc in self.topology.services for v in svc.versions for i in range(v.replicas)
            )
        }
        for k, services in enumerate(_assign(self.topology, self.count)):
            specs: list[InstanceSpec] = []
            for svc in services:
                self._host_of_service[svc.name] = k
                calls = local_calls(svc, self.topology)
                for version in svc.versions:
                    for i in range(version.replicas):
                        name = f"{svc.name}-{version.name}-{i}"
                        seed = None if self.seed is None else self.seed + order[name]
                        specs.append(
                            InstanceSpec(Identity(svc.name, version.name, name, svc.namespace), seed=seed, calls=calls)
                        )
            spec_path = self.group.work_dir / f"workloads-{k}.json"
            spec_path.write_text(host_spec_json(specs))
            argv = [
                sys.executable, "-I", "-S", str(script), "--host-spec", str(spec_path),
                "--admin-port", "0", "--parent-pid", str(os.getpid()),
            ]  # fmt: skip
            self.processes.append(self.group.start(f"workloads-{k}", argv, stdout_pipe=True))

    def wait_ready(self, timeout: float = 10.0) -> list[WorkloadInstance]:
        """Wait for every host's ready line; return the instances in topology order."""
        ready = _read_ready_lines(self.processes, timeout)
        ports: dict[str, tuple[int, ManagedProcess, str]] = {}
        for k, proc in enumerate(self.processes):
            info = ready[proc.pid]
            self.admin_urls[k] = f"http://127.0.0.1:{info.admin_port}"
            for name, port in info.instances.items():
                ports[name] = (port, proc, self.admin_urls[k])
        self.instances = []
        for svc in self.topology.services:
            for version in svc.versions:
                for i in range(version.replicas):
                    name = f"{svc.name}-{version.name}-{i}"
                    port, proc, admin = ports[name]
                    self.instances.append(
                        WorkloadInstance(
                            service=svc.name,
                            namespace=svc.namespace,
                            version=version.name,
                            name=name,
                            address="127.0.0.1",
                            port=port,
                            admin_url=f"{admin}/instances/{name}",
                            pid=proc.pid,
                        )
                    )
        return self.instances

    def set_outbound(self, addresses: dict[str, int]) -> None:
        """Point each named instance's calls at its sidecar's outbound port."""
        by_host: dict[str, dict[str, str]] = {}
        for inst in self.instances:
            if inst.name in addresses:
                admin = inst.admin_url.rsplit("/instances/", 1)[0]
                by_host.setdefault(admin, {})[inst.name] = f"127.0.0.1:{addresses[inst.name]}"
        for admin, doc in by_host.items():
            resp = self._client.put(f"{admin}/outbound", json=doc)
            if resp.status_code != 200:
                raise MeshSetupError(f"workload host at {admin} refused the sidecar addresses: {resp.text}")

    def ledger(self, service: str) -> dict[str, Any]:
        """The execution ledger of ``service``: totals and ``{request_id: [attempts, executions]}``.

        Raises:
            ChaosError: The host cannot be reached.
        """
        k = self._host_of_service[self.topology.service(service).name]
        try:
            resp = self._client.get(f"{self.admin_urls[k]}/ledger", params={"service": service})
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise ChaosError(f"cannot read the ledger of {service} from {self.admin_urls[k]}: {exc}") from exc
        doc: dict[str, Any] = resp.json()
        return doc

    def scrape_targets(self) -> dict[str, tuple[str, dict[str, str]]]:
        """One Prometheus target per host; every instance's samples carry its own labels."""
        return {
            f"workloads-{k}": (url.removeprefix("http://"), {"__metrics_path__": "/metrics"})
            for k, url in self.admin_urls.items()
        }

    def close(self) -> None:
        """Close the admin client (the process group stops the processes)."""
        self._client.close()


def _read_ready_lines(procs: list[ManagedProcess], timeout: float) -> dict[int, ReadyInfo]:
    sel = selectors.DefaultSelector()
    buffers: dict[int, bytes] = {}
    for p in procs:
        assert p.popen.stdout is not None
        sel.register(p.popen.stdout, selectors.EVENT_READ, p)
        buffers[p.pid] = b""
    ready: dict[int, ReadyInfo] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(ready) < len(procs):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                late = [p.name for p in procs if p.pid not in ready]
                raise MeshTimeoutError(f"workload hosts not ready after {timeout}s: {', '.join(late)}")
            for key, _ in sel.select(min(remaining, 0.5)):
                proc: ManagedProcess = key.data
                chunk = os.read(key.fd, 4096)
                if not chunk:
                    sel.unregister(key.fileobj)
                    if proc.pid not in ready:
                        proc.popen.wait(2)
                        raise MeshSetupError(
                            f"workload host {proc.name} exited with code {proc.popen.returncode} before ready",
                            log_tail=proc.log_tail(),
                            log_path=proc.log_path,
                        )
                    continue
                buffers[proc.pid] += chunk
                if b"\n" in buffers[proc.pid] and proc.pid not in ready:
                    ready[proc.pid] = parse_ready_line(buffers[proc.pid].split(b"\n", 1)[0])
    finally:
        sel.close()
    return ready
