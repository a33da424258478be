"""``LocalMesh``: the embedded mesh of real Envoy, echo workloads and Prometheus, with no Kubernetes.

Usage without pytest::

    from pytest_meshcheck.local.mesh import LocalMesh
    from pytest_meshcheck.policy import load_policies

    with LocalMesh(policies=load_policies("policies/")) as mesh:
        print(mesh.sidecar_url, mesh.prometheus_url)
        mesh.apply(load_policies("retry.yaml"))       # live, converged on return

Start order matters for speed: Prometheus first (its first scrape comes ~5.5 s after start whatever we
do), workloads in parallel, then Envoy once the workloads' ports are known.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pytest_meshcheck.backend import WorkloadInstance
from pytest_meshcheck.chaos.destination import DestinationChaos
from pytest_meshcheck.errors import ChaosError, MeshSetupError, MeshTimeoutError
from pytest_meshcheck.istio_version import IstioVersion, parse_istio_version
from pytest_meshcheck.local import bootstrap as bs
from pytest_meshcheck.local.envoy import CDS_FILE, EnvoyAdmin, XdsFiles, XdsSnapshot, find_envoy, rds_file
from pytest_meshcheck.local.process import ManagedProcess, ProcessGroup, new_work_dir, sweep_leftovers
from pytest_meshcheck.local.prometheus import PrometheusServer, find_prometheus
from pytest_meshcheck.policy.fit import check_policies_fit
from pytest_meshcheck.policy.model import PolicySet
from pytest_meshcheck.topology import ServiceSpec, Topology, load_topology
from pytest_meshcheck.translate import (
    build_clusters,
    build_route_config,
    delimited_stat_prefix,
    http_filters,
    istio_stats_config,
)
from pytest_meshcheck.workload.bundle import ECHO_FILES, write_bundle
from pytest_meshcheck.workload.echo.ready import ReadyInfo, parse_ready_line

if TYPE_CHECKING:
    from pytest_meshcheck.load import ClosedLoop, LoadResult, OpenLoop


def _policy_key(p: Any) -> tuple[str, str, str]:
    return (p.kind, p.namespace or "", p.name)


def _check_port_free(port: int, what: str, option: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise MeshSetupError(
                f"{what} port 127.0.0.1:{port} is busy ({exc.strerror}); stop whatever listens there "
                f"(ss -ltnp 'sport = :{port}') or choose another port with {option}"
            ) from exc


class LocalMesh:
    """A running local mesh (the ``local`` context). Use as a context manager; :meth:`stop` is idempotent.

    It implements :class:`pytest_meshcheck.backend.MeshBackend`, so scenarios run on it unchanged.

    Args:
        topology: Services to run; the packaged default (the user's platform) when ``None``.
        policies: VirtualServices and DestinationRules active from the start.
        istio_version: Istio release whose translation to follow (``"1.30"``); the default current release.
        gateway_port: Port of the ingress listener; ``None`` for no gateway, ``0`` for an OS-assigned one.
        prometheus: Start a Prometheus server scraping Envoy and the workloads every second.
        envoy_bin: Envoy binary; found automatically when ``None``.
        prometheus_bin: Prometheus binary; found on ``PATH`` when ``None``.
        keep: Keep the work directory (configs, logs) after stopping.
        log: Receives progress and clean-up messages (such as leftovers removed).
        seed: Seeds each workload's chaos randomness (instance ``i`` gets ``seed + i``); random when ``None``.
    """

    def __init__(
        self,
        *,
        topology: Topology | None = None,
        policies: PolicySet | None = None,
        istio_version: str | IstioVersion | None = None,
        gateway_port: int | None = None,
        prometheus: bool = True,
        envoy_bin: str | None = None,
        prometheus_bin: str | None = None,
        keep: bool = False,
        log: Callable[[str], None] | None = None,
        seed: int | None = None,
    ) -> None:
        self.topology = topology or load_topology()
        self.istio_version = (
            istio_version if isinstance(istio_version, IstioVersion) else parse_istio_version(istio_version)
        )
        self._policies: dict[tuple[str, str, str], Any] = {}
        self._warnings: tuple[Any, ...] = ()
        if policies is not None:
            self._store(policies)
        self.gateway_port = gateway_port
        self.with_prometheus = prometheus
        self._envoy_bin_opt = envoy_bin
        self._prom_bin_opt = prometheus_bin
        self.keep = keep
        self._log = log or (lambda _msg: None)
        self.group: ProcessGroup | None = None
        self.prometheus: PrometheusServer | None = None
        self.envoy: ManagedProcess | None = None
        self.admin: EnvoyAdmin | None = None
        self.xds: XdsFiles | None = None
        self._instances: list[WorkloadInstance] = []
        self.ports: dict[str, int] = {}
        self.startup_seconds = 0.0
        self.leftovers_removed: list[str] = []
        self.context = "local"
        self.seed = seed
        self._chaos = DestinationChaos()

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> LocalMesh:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start Prometheus, the workloads and the sidecar Envoy; return once all are ready.

        Raises:
            MeshSetupError: A binary is missing, a port is busy, or a process failed; nothing is left running.
        """
        t0 = time.monotonic()
        # Fail on missing binaries and busy ports before starting anything.
        envoy_bin = find_envoy(self._envoy_bin_opt)
        prom_bin = find_prometheus(self._prom_bin_opt) if self.with_prometheus else None
        if self.gateway_port:
            _check_port_free(
                self.gateway_port, "gateway", "--gateway-port (LocalMesh(gateway_port=...); 0 picks a free one)"
            )
        # A policy that does not fit the topology (a subset no version matches) fails before any process starts.
        check_policies_fit(self.policies, self.topology)
        self.leftovers_removed = sweep_leftovers(self._log)
        try:
            # Inside the try: a Ctrl-C right after the directory is made must still remove it.
            work_dir = new_work_dir()
            self.group = ProcessGroup("local mesh", work_dir, keep=self.keep)
            if prom_bin is not None:
                self.prometheus = PrometheusServer(self.group, binary=prom_bin)
                self.prometheus.start()
            self._start_workloads()
            self._start_envoy(envoy_bin, work_dir)
            if self.prometheus is not None:
                self.prometheus.set_targets(self._scrape_targets())
                self.prometheus.wait_ready()
            if self.gateway_port is not None:
                # The gateway's routes get their cluster last: until every part of the mesh is ready the
                # ingress answers 503, so a script that waits for a 200 from it finds everything up.
                self._push()
        except BaseException:
            # KeyboardInterrupt included: nothing may outlive a failed start.
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        self._log(f"local mesh ready in {self.startup_seconds:.2f}s ({work_dir})")

    def stop(self) -> None:
        """Revert chaos, stop every process by PID and remove the work directory (unless ``keep``)."""
        if self.group is not None and self._chaos.active():
            with contextlib.suppress(ChaosError):
                self._chaos.clear_all()
        self._chaos.close()
        if self.admin is not None:
            self.admin.close()
            self.admin = None
        if self.group is not None:
            self.group.close()
            self.group = None

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self.group is not None and self.admin is not None

    # ----------------------------------------------------------------- workloads

    def _start_workloads(self) -> None:
        assert self.group is not None
        # The same files a pod mounts, run the same way (-I -S): a local run proves what a cluster run ships.
        script = write_bundle(ECHO_FILES, self.group.work_dir / "echo") / "echo.py"
        pending: list[tuple[ServiceSpec, str, str, ManagedProcess]] = []
        for svc in self.topology.services:
            for version in svc.versions:
                for i in range(version.replicas):
                    name = f"{svc.name}-{version.name}-{i}"
                    argv = [
                        sys.executable, "-I", "-S", str(script),
                        "--service", svc.name, "--version", version.name, "--instance", name,
                        "--namespace", svc.namespace, "--port", "0", "--admin-port", "0",
                        "--parent-pid", str(os.getpid()),
                    ]  # fmt: skip
                    if self.seed is not None:
                        argv += ["--seed", str(self.seed + len(pending))]
                    proc = self.group.start(name, argv, stdout_pipe=True)
                    pending.append((svc, version.name, name, proc))
        ready = self._read_ready_lines([p for *_, p in pending], timeout=10.0)
        self._instances = []
        for svc, version_name, name, proc in pending:
            info = ready[proc.pid]
            self._instances.append(
                WorkloadInstance(
                    service=svc.name,
                    namespace=svc.namespace,
                    version=version_name,
                    name=name,
                    address="127.0.0.1",
                    port=info.port,
                    admin_url=f"http://127.0.0.1:{info.admin_port}",
                    pid=proc.pid,
                )
            )

    @staticmethod
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
                    raise MeshTimeoutError(f"echo workloads not ready after {timeout}s: {', '.join(late)}")
                for key, _ in sel.select(min(remaining, 0.5)):
                    proc: ManagedProcess = key.data
                    chunk = os.read(key.fd, 4096)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        if proc.pid not in ready:
                            proc.popen.wait(2)
                            raise MeshSetupError(
                                f"echo workload {proc.name} exited with code {proc.popen.returncode} before ready",
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

    def instances(self, service: str | None = None, *, version: str | None = None) -> list[WorkloadInstance]:
        """Running instances, optionally of one service (short name or FQDN) and version."""
        if service is not None:
            service = self.topology.service(service).name
        return [
            i
            for i in self._instances
            if (service is None or i.service == service) and (version is None or i.version == version)
        ]

    # ----------------------------------------------------------------- envoy

    def _endpoints(self) -> dict[tuple[str, str], list[tuple[str, int]]]:
        eps: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for inst in self._instances:
            eps.setdefault((inst.service, inst.version), []).append((inst.address, inst.port))
        return eps

    def _resources(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        policies = self.policies
        clusters = build_clusters(policies, self.topology, self._endpoints(), self.istio_version)
        routes = [build_route_config(policies, self.topology, self.istio_version, name=bs.OUTBOUND_ROUTES)]
        if self.gateway_port is not None:
            routes.append(bs.gateway_route_config(self.topology))
            if bs.OUTBOUND_LISTENER in self.ports:
                clusters.append(bs.gateway_cluster(self.ports[bs.OUTBOUND_LISTENER]))
        return clusters, routes

    def _start_envoy(self, binary: Path, work_dir: Path) -> None:
        assert self.group is not None
        self.xds = XdsFiles(work_dir / "xds")
        clusters, routes = self._resources()
        version = self.xds.write(clusters=clusters, routes=routes)
        access_log = work_dir / "access.log"
        filters = http_filters()
        # istiod's outbound prefix is outbound_0.0.0.0_<port>; one listener serves every port here.
        listeners = [
            bs.http_listener(
                bs.OUTBOUND_LISTENER,
                0,
                bs.OUTBOUND_ROUTES,
                self.xds.source(rds_file(bs.OUTBOUND_ROUTES)),
                filters,
                access_log,
                delimited_stat_prefix("outbound_0.0.0.0_0", self.istio_version),
            )
        ]
        if self.gateway_port is not None:
            gw_prefix = delimited_stat_prefix(f"gateway_0.0.0.0_{self.gateway_port}", self.istio_version)
            listeners.append(
                bs.http_listener(
                    bs.GATEWAY_LISTENER,
                    self.gateway_port,
                    bs.GATEWAY_ROUTES,
                    self.xds.source(rds_file(bs.GATEWAY_ROUTES)),
                    filters,
                    access_log,
                    gw_prefix,
                )
            )
        config = bs.bootstrap(
            node_id=f"sidecar~127.0.0.1~meshcheck-client-{os.getpid()}.meshcheck~meshcheck.svc.cluster.local",
            cds_source=self.xds.source(CDS_FILE),
            listeners=listeners,
            stats_config=istio_stats_config(self.istio_version),
        )
        config_path = work_dir / "envoy.json"
        config_path.write_text(json.dumps(config, indent=1))
        admin_path = work_dir / "envoy-admin.address"
        self.envoy = self.group.start(
            "envoy",
            [
                str(binary), "-c", str(config_path), "--concurrency", "1", "--disable-hot-restart",
                "--admin-address-path", str(admin_path), "-l", "warning", "--file-flush-interval-msec", "250",
            ],
        )  # fmt: skip
        address = self._wait_envoy_ready(admin_path, timeout=10.0)
        self.admin = EnvoyAdmin(address)
        self.admin.wait_converged(version, rejected_before=0, log_path=self.envoy.log_path)
        self.ports = self.admin.listener_ports()

    def _wait_envoy_ready(self, admin_path: Path, timeout: float) -> str:
        assert self.envoy is not None
        deadline = time.monotonic() + timeout
        address = ""
        probe: EnvoyAdmin | None = None
        try:
            while time.monotonic() < deadline:
                if not self.envoy.running():
                    raise MeshSetupError(
                        f"Envoy exited with code {self.envoy.popen.returncode} during start-up",
                        log_tail=self.envoy.log_tail(),
                        log_path=self.envoy.log_path,
                    )
                if not address and admin_path.exists():
                    address = admin_path.read_text().strip()
                    if address:
                        probe = EnvoyAdmin(address)
                if probe is not None and probe.ready():
                    return address
                time.sleep(0.005)
        finally:
            if probe is not None:
                probe.close()
        raise MeshTimeoutError(
            f"Envoy not ready after {timeout}s", log_tail=self.envoy.log_tail(), log_path=self.envoy.log_path
        )

    def _push(self) -> float:
        """Write the current policies as a new xDS version and wait until Envoy runs it."""
        if self.xds is None or self.admin is None:
            raise MeshSetupError("the local mesh is not running; use it inside 'with LocalMesh(...)'")
        clusters, routes = self._resources()
        t0 = time.monotonic()
        rejected = self.admin.rejected_updates()
        log_path = self.envoy.log_path if self.envoy is not None else None
        names = {c["name"] for c in clusters}
        union = [*clusters, *(c for c in self.xds.current_clusters() if c["name"] not in names)]
        # Envoy re-reads every file of the watched directory on any change, in no set order, so a route
        # could run before the cluster it names exists, or after the cluster it still names is gone: both
        # fail requests with 503 NC. Hence three steps, each waiting for Envoy: add and change clusters
        # (keeping the old ones), switch the routes, then remove the clusters no route names any more.
        # istiod gets the same ordering from ADS.
        for step_clusters, step_routes in ((union, []), (union, routes), (clusters, [])):
            before = dict(self.xds.expected)
            expected = self.xds.write(clusters=step_clusters, routes=step_routes)
            if expected != before:
                self.admin.wait_converged(expected, rejected_before=rejected, log_path=log_path)
        return time.monotonic() - t0

    def _rollback(self, snapshot: XdsSnapshot) -> None:
        """Make Envoy run the config of ``snapshot`` again after a refused or interrupted update."""
        assert self.xds is not None
        assert self.admin is not None
        expected = self.xds.restore(snapshot)
        self.admin.wait_converged(expected)

    # ----------------------------------------------------------------- policies

    def _store(self, policies: PolicySet) -> None:
        for p in (*policies.virtual_services, *policies.destination_rules):
            self._policies[_policy_key(p)] = p

    @property
    def policies(self) -> PolicySet:
        """The policies Envoy runs now."""
        items = list(self._policies.values())
        return PolicySet(
            tuple(p for p in items if p.kind == "VirtualService"),
            tuple(p for p in items if p.kind == "DestinationRule"),
        )

    def apply(self, policies: PolicySet) -> float:
        """Add or replace (by kind, namespace and name) policies while traffic flows.

        Returns:
            Seconds until Envoy reported the new config active (verified from ``/config_dump``).
        """
        before = dict(self._policies)
        self._store(policies)
        return self._push_or_restore(before, check=True)

    def remove(self, policies: PolicySet | Iterable[tuple[str, str, str]]) -> float:
        """Remove policies (objects or ``(kind, namespace, name)`` keys); return the convergence time."""
        before = dict(self._policies)
        keys = (
            [_policy_key(p) for p in (*policies.virtual_services, *policies.destination_rules)]
            if isinstance(policies, PolicySet)
            else list(policies)
        )
        for key in keys:
            self._policies.pop(key, None)
        return self._push_or_restore(before)

    def replace_all(self, policies: PolicySet) -> float:
        """Make ``policies`` the only active ones; return the convergence time."""
        before = dict(self._policies)
        self._policies.clear()
        self._store(policies)
        return self._push_or_restore(before, check=True)

    def _push_or_restore(self, before: dict[tuple[str, str, str], Any], *, check: bool = False) -> float:
        """Push the stored policies; on any failure put back ``before``, in memory and in Envoy.

        Raises:
            TopologyError: With ``check``, the policies reference a subset or port the topology lacks.
            PolicyError: The policies cannot be translated.
            MeshSetupError: Envoy refused the update or did not converge; the previous config runs.
        """
        # No failure may leave a half-applied state: a translation error writes nothing, and a refused
        # or interrupted update is rolled back to the files (and versions) Envoy ran before.
        snapshot = self.xds.snapshot() if self.xds is not None else None
        try:
            if check:
                check_policies_fit(self.policies, self.topology)
            return self._push()
        except BaseException:
            self._policies = before
            if snapshot is not None and self.admin is not None:
                self._rollback(snapshot)
            raise

    # ----------------------------------------------------------------- endpoints

    @property
    def sidecar_url(self) -> str:
        """URL of the caller's sidecar listener; set ``Host`` to the service name."""
        return f"http://127.0.0.1:{self.ports[bs.OUTBOUND_LISTENER]}"

    @property
    def gateway_url(self) -> str:
        """URL of the ingress listener (``gateway_port`` must not be ``None``)."""
        if bs.GATEWAY_LISTENER not in self.ports:
            raise MeshSetupError("this mesh has no gateway; pass gateway_port=0 (or a port) to LocalMesh")
        return f"http://127.0.0.1:{self.ports[bs.GATEWAY_LISTENER]}"

    @property
    def envoy_admin_url(self) -> str:
        """URL of the sidecar's admin API."""
        if self.admin is None:
            raise MeshSetupError("the local mesh is not running")
        return self.admin.url

    @property
    def prometheus_url(self) -> str:
        """URL of the mesh's Prometheus."""
        if self.prometheus is None:
            raise MeshSetupError("this mesh runs without Prometheus; pass prometheus=True")
        return self.prometheus.url

    @property
    def access_log_path(self) -> Path:
        """The sidecar's JSON access log (flushed every 250 ms)."""
        assert self.group is not None
        return self.group.work_dir / "access.log"

    def host_header(self, service: str) -> str:
        """The ``Host`` header that selects ``service`` on the sidecar listener."""
        svc = self.topology.service(service)
        return f"{svc.name}:{svc.port}"

    def _scrape_targets(self) -> dict[str, tuple[str, dict[str, str]]]:
        assert self.admin is not None
        targets: dict[str, tuple[str, dict[str, str]]] = {
            "envoy": (self.admin.url.removeprefix("http://"), {"__metrics_path__": "/stats/prometheus"}),
        }
        for inst in self._instances:
            targets[inst.name] = (inst.admin_url.removeprefix("http://"), {"__metrics_path__": "/metrics"})
        return targets

    def wait_for_metrics(self, timeout: float = 15.0, *, cancel: threading.Event | None = None) -> float:
        """Wait until Prometheus has scraped Envoy and every workload once; return the seconds waited.

        Args:
            timeout: Seconds to wait at most.
            cancel: Set from another thread to stop waiting within 0.1 s (see
                :meth:`PrometheusServer.wait_scraped`).
        """
        if self.prometheus is None:
            raise MeshSetupError("this mesh runs without Prometheus; pass prometheus=True")
        return self.prometheus.wait_scraped(list(self._scrape_targets()), timeout=timeout, cancel=cancel)

    # ----------------------------------------------------------------- MeshBackend

    @property
    def chaos(self) -> DestinationChaos:
        """Controller for faults at the workloads; every fault is reverted by :meth:`stop`."""
        return self._chaos

    def run_load(
        self,
        service: str,
        profile: OpenLoop | ClosedLoop,
        *,
        path: str = "/",
        headers: Mapping[str, str] | None = None,
    ) -> LoadResult:
        """Send load to ``service`` through the sidecar listener (the load generator is the sidecar's app)."""
        from pytest_meshcheck.load import run_load

        return run_load(self.sidecar_url + path, profile, host=self.host_header(service), headers=headers)

    @property
    def client_proxy_labels(self) -> dict[str, str]:
        """Prometheus labels of the sidecar Envoy's scrape target."""
        return {"meshcheck_target": "envoy"}

    def describe(self) -> dict[str, str]:
        """Context facts for reports and the session header."""
        from pytest_meshcheck.local.envoy import envoy_version

        facts = {
            "context": "local",
            "istio_version": str(self.istio_version),
            "envoy_version": envoy_version(find_envoy(self._envoy_bin_opt)),
            "topology": self.topology.source,
            "instances": str(len(self._instances)),
        }
        if self.group is not None:
            facts["work_dir"] = str(self.group.work_dir)
        if self.admin is not None:
            facts["envoy_admin"] = self.admin.url
        if self.prometheus is not None:
            facts["prometheus"] = self.prometheus.url
        return facts

    def response_flags(self, service: str, start: float, end: float) -> dict[str, int]:
        """Envoy response flags (``-``, ``URX``, ``UO``, ``UT``...) of the sidecar's requests to ``service``.

        Read from the JSON access log, which Envoy flushes every 250 ms.
        """
        from datetime import datetime

        wait = end + 0.3 - time.time()
        if wait > 0:
            time.sleep(wait)
        aliases = set(self.topology.service(service).host_aliases())
        counts: dict[str, int] = {}
        try:
            lines = self.access_log_path.read_text(errors="replace").splitlines()
        except OSError:
            return counts
        for line in lines:
            try:
                entry = json.loads(line)
                when = datetime.fromisoformat(entry["start_time"].replace("Z", "+00:00")).timestamp()
            except (ValueError, KeyError, TypeError):
                continue
            if entry.get("listener") != bs.OUTBOUND_LISTENER or not start <= when <= end:
                continue
            if str(entry.get("authority", "")).rsplit(":", 1)[0] not in aliases:
                continue
            flag = str(entry.get("response_flags") or "-")
            counts[flag] = counts.get(flag, 0) + 1
        return counts

    def live_counts(self, service: str) -> tuple[int, int]:
        """Requests the sidecar completed towards ``service`` so far, and how many got a 2xx (for progress)."""
        assert self.admin is not None
        fqdn = self.topology.service(service).fqdn.replace(".", r"\.")
        stats = self.admin.stats(rf"^cluster\.outbound\|[0-9]+\|[^|]*\|{fqdn}\.upstream_rq_(completed|2xx)$")
        done = sum(v for k, v in stats.items() if k.endswith("_completed"))
        ok = sum(v for k, v in stats.items() if k.endswith("_2xx"))
        return done, ok
