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
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pytest_meshcheck.backend import WorkloadInstance
from pytest_meshcheck.chaos.destination import DestinationChaos
from pytest_meshcheck.errors import ChaosError, MeshSetupError
from pytest_meshcheck.istio_version import IstioVersion, parse_istio_version
from pytest_meshcheck.local import bootstrap as bs
from pytest_meshcheck.local.capacity import check_capacity
from pytest_meshcheck.local.envoy import EnvoyAdmin, XdsFiles, XdsSnapshot, find_envoy
from pytest_meshcheck.local.process import ManagedProcess, ProcessGroup, new_work_dir, sweep_leftovers
from pytest_meshcheck.local.prometheus import FAST_SCRAPE_INTERVAL, PrometheusServer, find_prometheus
from pytest_meshcheck.local.sidecar import Sidecar, scrape_labels, wait_log_flushed
from pytest_meshcheck.local.workloads import WorkloadHosts
from pytest_meshcheck.metrics.log_offsets import open_log
from pytest_meshcheck.policy.fit import check_policies_fit
from pytest_meshcheck.policy.model import PolicySet
from pytest_meshcheck.topology import Topology, load_topology
from pytest_meshcheck.translate import build_clusters, build_route_config

if TYPE_CHECKING:
    from pytest_meshcheck.load import ClosedLoop, LoadResult, OpenLoop
    from pytest_meshcheck.metrics.attempts import AttemptRecords
    from pytest_meshcheck.metrics.outlier_events import InstanceEvent


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
        prometheus: Start a Prometheus server scraping every Envoy and workload host every 250 ms.
        envoy_bin: Envoy binary; found automatically when ``None``.
        prometheus_bin: Prometheus binary; found on ``PATH`` when ``None``.
        keep: Keep the work directory (configs, logs) after stopping.
        log: Receives progress and clean-up messages (such as leftovers removed).
        seed: Seeds each workload's chaos randomness (instance ``i`` gets ``seed + i``); random when ``None``.
        hosts: Workload host processes serving the instances; one per core when ``None``.
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
        hosts: int | None = None,
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
        self.workloads: WorkloadHosts | None = None
        self.hosts = hosts
        self.client: Sidecar | None = None
        self.pod_sidecars: dict[str, Sidecar] = {}
        self._pod_service: dict[str, str] = {}
        self._ready = False
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
        check_capacity(self.topology, hosts=self.hosts, prometheus=self.with_prometheus)
        self.leftovers_removed = sweep_leftovers(self._log)
        try:
            # Inside the try: a Ctrl-C right after the directory is made must still remove it.
            work_dir = new_work_dir()
            self.group = ProcessGroup("local mesh", work_dir, keep=self.keep)
            if prom_bin is not None:
                self.prometheus = PrometheusServer(self.group, binary=prom_bin)
                self.prometheus.start()
            self.workloads = WorkloadHosts(self.group, self.topology, self.seed, self.hosts)
            self.workloads.launch()
            self._instances = self.workloads.wait_ready()
            self._start_sidecars(envoy_bin)
            if self.prometheus is not None:
                self.prometheus.set_targets(self._scrape_targets())
                self.prometheus.wait_ready()
            self._ready = True
            if self.gateway_port is not None:
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
        for sidecar in self.sidecars:
            sidecar.close()
        self.admin = None
        self._ready = False
        if self.workloads is not None:
            self.workloads.close()
        if self.group is not None:
            self.group.close()
            self.group = None

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self.group is not None and self.admin is not None

    # ----------------------------------------------------------------- workloads

    def instances(self, service: str | None = None, *, version: str | None = None) -> list[WorkloadInstance]:
        """Running instances, optionally of one service (short name or FQDN) and version."""
        if service is not None:
            service = self.topology.service(service).name
        return [
            i
            for i in self._instances
            if (service is None or i.service == service) and (version is None or i.version == version)
        ]

    def ledger(self, service: str) -> dict[str, Any]:
        """The execution ledger of ``service``: totals and ``[attempts, executions]`` per ``x-request-id``.

        The service's instances share one ledger, so it shows a logical request executed twice on any replicas.
        """
        if self.workloads is None:
            raise MeshSetupError("the local mesh is not running")
        return self.workloads.ledger(service)

    @contextlib.contextmanager
    def killed(self, *instances: str) -> Iterator[None]:
        """Kill instances as dead pods for the ``with`` block, then bring them back on the same ports.

        A killed instance's port refuses connections and its open connections are reset, while the other
        instances of its workload host go on serving; on leaving the block (error or Ctrl-C included) each
        listens again.

        Raises:
            MeshSetupError: An unknown instance, or the host refused.
        """
        known = {i.name: i for i in self._instances}
        unknown = [n for n in instances if n not in known]
        if unknown:
            raise MeshSetupError(f"no instance {unknown[0]!r} in this mesh; instances: {', '.join(sorted(known))}")
        done: list[str] = []
        try:
            for name in instances:
                self._set_serving(known[name], False)
                done.append(name)
            yield
        finally:
            for name in done:
                self._set_serving(known[name], True)

    @staticmethod
    def _set_serving(inst: WorkloadInstance, serving: bool) -> None:
        import httpx

        resp = httpx.put(f"{inst.admin_url}/serving", json={"serving": serving}, timeout=10.0)
        if resp.status_code != 200:
            raise MeshSetupError(f"workload host refused to set {inst.name} serving={serving}: {resp.text}")

    # ----------------------------------------------------------------- envoy

    def _endpoints(self) -> dict[tuple[str, str], list[tuple[str, int]]]:
        eps: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for inst in self._instances:
            eps.setdefault((inst.service, inst.version), []).append((inst.address, inst.port))
        return eps

    def _resources(self, caller: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """What istiod would send a sidecar: clusters and outbound routes (the client's, plus the gateway's).

        A pod's sidecar gets only the services its calls reach, as an Istio ``Sidecar`` resource whose egress
        hosts are those calls would give it: nothing else ever leaves the pod, and 100 clusters per pod would
        cost each Envoy most of a second of start-up and Prometheus 180 series per cluster.
        """
        policies = self.policies
        topology = self.topology
        if caller is not None:
            called = {c.service for c in topology.service(caller).calls}
            topology = Topology(tuple(s for s in topology.services if s.name in called), source=topology.source)
        names = {s.name for s in topology.services}
        endpoints = {k: v for k, v in self._endpoints().items() if k[0] in names}
        clusters = build_clusters(policies, topology, endpoints, self.istio_version)
        routes = [build_route_config(policies, topology, self.istio_version, name=bs.OUTBOUND_ROUTES)]
        if caller is None and self.gateway_port is not None:
            routes.append(bs.gateway_route_config(self.topology))
            # Until the mesh is ready the gateway's routes name a cluster that does not exist (503 NC), so a
            # script that waits for a 200 from the gateway finds everything up.
            if self._ready and self.client is not None and bs.OUTBOUND_LISTENER in self.client.ports:
                clusters.append(bs.gateway_cluster(self.client.ports[bs.OUTBOUND_LISTENER]))
        return clusters, routes

    def _all_resources(self) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
        """Resources per sidecar name, built once per calling service (its pods all get the same)."""
        by_caller = {svc: self._resources(svc) for svc in {self._pod_service[name] for name in self.pod_sidecars}}
        out = {sc.name: by_caller[self._pod_service[pod]] for pod, sc in self.pod_sidecars.items()}
        if self.client is not None:
            out[self.client.name] = self._resources()
        return out

    def _node_id(self, pod: str, namespace: str) -> str:
        return f"sidecar~127.0.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local"

    def _start_sidecars(self, binary: Path) -> None:
        assert self.group is not None
        self.client = Sidecar(
            self.group,
            "envoy",
            self._node_id(f"meshcheck-client-{os.getpid()}", "meshcheck"),
            self.istio_version,
            gateway_port=self.gateway_port,
        )
        self.pod_sidecars = {}
        for inst in self._instances:
            if self.topology.service(inst.service).calls:
                self._pod_service[inst.name] = inst.service
                self.pod_sidecars[inst.name] = Sidecar(
                    self.group, f"envoy-{inst.name}", self._node_id(inst.name, inst.namespace), self.istio_version
                )
        # All Envoys start at once and are waited for together: start-up costs one Envoy's time, not N.
        resources = self._all_resources()
        for sidecar in self.sidecars:
            sidecar.launch(binary, resources[sidecar.name])
        for sidecar in self.sidecars:
            sidecar.wait_ready()
        self.envoy = self.client.process
        self.admin = self.client.admin
        self.xds = self.client.xds
        self.ports = dict(self.client.ports)
        if self.pod_sidecars:
            assert self.workloads is not None
            self.workloads.set_outbound(
                {name: sc.ports[bs.OUTBOUND_LISTENER] for name, sc in self.pod_sidecars.items()}
            )

    @property
    def sidecars(self) -> list[Sidecar]:
        """Every Envoy of the mesh: the client's first, then one per calling pod."""
        return [*([self.client] if self.client is not None else []), *self.pod_sidecars.values()]

    def _push(self) -> float:
        """Write the current policies to every sidecar and wait until all of them run it."""
        if self.client is None or self.client.admin is None:
            raise MeshSetupError("the local mesh is not running; use it inside 'with LocalMesh(...)'")
        t0 = time.monotonic()
        sidecars = self.sidecars
        resources = self._all_resources()
        if len(sidecars) == 1:
            sidecars[0].push(resources[sidecars[0].name])
        else:
            # Each push waits on its own Envoy; in parallel, a policy change converges as fast as the slowest.
            with ThreadPoolExecutor(max_workers=min(len(sidecars), 16)) as pool:
                futures = [pool.submit(sc.push, resources[sc.name]) for sc in sidecars]
                for future in futures:
                    future.result()
        return time.monotonic() - t0

    def _rollback(self, snapshots: dict[str, XdsSnapshot]) -> None:
        """Make every sidecar run the config of its snapshot again after a refused or interrupted update."""
        for sidecar in self.sidecars:
            if sidecar.name in snapshots:
                sidecar.rollback(snapshots[sidecar.name])

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
        snapshots = {sc.name: sc.snapshot() for sc in self.sidecars}
        try:
            if check:
                check_policies_fit(self.policies, self.topology)
            return self._push()
        except BaseException:
            self._policies = before
            if self.running:
                self._rollback(snapshots)
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
        """The client sidecar's JSON access log (flushed every ``LOG_FLUSH_INTERVAL``)."""
        assert self.client is not None
        return self.client.access_log_path

    def host_header(self, service: str) -> str:
        """The ``Host`` header that selects ``service`` on the sidecar listener."""
        svc = self.topology.service(service)
        return f"{svc.name}:{svc.port}"

    def _scrape_targets(self) -> dict[str, tuple[str, dict[str, str]]]:
        assert self.admin is not None
        assert self.client is not None
        assert self.workloads is not None
        fast = {"__scrape_interval__": FAST_SCRAPE_INTERVAL, "__scrape_timeout__": FAST_SCRAPE_INTERVAL}
        targets: dict[str, tuple[str, dict[str, str]]] = {"envoy": scrape_labels(self.client, fast)}
        by_name = {i.name: i for i in self._instances}
        for pod, sidecar in self.pod_sidecars.items():
            inst = by_name[pod]
            # The labels Istio's standard metrics carry for the source side of a hop.
            targets[sidecar.name] = scrape_labels(
                sidecar,
                {
                    "source_workload": f"{inst.service}-{inst.version}",
                    "source_workload_namespace": inst.namespace,
                    "source_app": inst.service,
                    "source_version": inst.version,
                    "pod": pod,
                },
            )
        targets.update(self.workloads.scrape_targets())
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

    def caller_proxy_labels(self, service: str) -> dict[str, str]:
        """Prometheus labels of the sidecars of ``service``'s pods: Istio's ``source_app`` of the hop."""
        return {"source_app": self.topology.service(service).name}

    def describe(self) -> dict[str, str]:
        """Context facts for reports and the session header."""
        from pytest_meshcheck.local.envoy import envoy_version

        facts = {
            "context": "local",
            "istio_version": str(self.istio_version),
            "envoy_version": envoy_version(find_envoy(self._envoy_bin_opt)),
            "topology": self.topology.source,
            "instances": str(len(self._instances)),
            "sidecars": str(len(self.sidecars)),
        }
        if self.group is not None:
            facts["work_dir"] = str(self.group.work_dir)
        if self.admin is not None:
            facts["envoy_admin"] = self.admin.url
        if self.prometheus is not None:
            facts["prometheus"] = self.prometheus.url
        return facts

    def _client_log(self, service: str, start: float, end: float) -> list[dict[str, Any]]:
        """The client sidecar's access-log entries for requests to ``service`` that started in ``[start, end]``.

        Read once Envoy's flush after ``end`` has passed (:func:`wait_log_flushed`).
        """
        from datetime import datetime

        wait_log_flushed(end)
        aliases = set(self.topology.service(service).host_aliases())
        handle = open_log(self.access_log_path, start)
        if handle is None:
            return []
        with handle:
            lines = handle.read().splitlines()
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
                when = datetime.fromisoformat(entry["start_time"].replace("Z", "+00:00")).timestamp()
            except (ValueError, KeyError, TypeError):
                continue
            if entry.get("listener") != bs.OUTBOUND_LISTENER or not start <= when <= end:
                continue
            if str(entry.get("authority", "")).rsplit(":", 1)[0] in aliases:
                entries.append(entry)
        return entries

    def response_flags(self, service: str, start: float, end: float) -> dict[str, int]:
        """Envoy response flags (``-``, ``URX``, ``UO``, ``UT``...) of the sidecar's requests to ``service``."""
        counts: dict[str, int] = {}
        for entry in self._client_log(service, start, end):
            flag = str(entry.get("response_flags") or "-")
            counts[flag] = counts.get(flag, 0) + 1
        return counts

    def request_durations(self, service: str, start: float, end: float) -> list[float]:
        """Envoy's ``%DURATION%`` (seconds) of each of the sidecar's requests to ``service``."""
        durations = []
        for entry in self._client_log(service, start, end):
            try:
                durations.append(float(entry["duration_ms"]) / 1000.0)
            except (KeyError, TypeError, ValueError):
                continue
        return durations

    def live_counts(self, service: str) -> tuple[int, int]:
        """Requests the sidecar completed towards ``service`` so far, and how many got a 2xx (for progress)."""
        assert self.admin is not None
        fqdn = self.topology.service(service).fqdn.replace(".", r"\.")
        stats = self.admin.stats(rf"^cluster\.outbound\|[0-9]+\|[^|]*\|{fqdn}\.upstream_rq_(completed|2xx)$")
        done = sum(v for k, v in stats.items() if k.endswith("_completed"))
        ok = sum(v for k, v in stats.items() if k.endswith("_2xx"))
        return done, ok

    def attempt_records(self, start: float, end: float) -> AttemptRecords:
        """Every sidecar's calls and attempts that started in ``[start, end]``, ready for ``metrics.attempts.join``.

        Waits until Envoy's log flush after ``end`` has passed, as :meth:`response_flags` does.

        Returns:
            A :class:`pytest_meshcheck.metrics.attempts.AttemptRecords`.
        """
        from pytest_meshcheck.metrics.attempts import AttemptRecords

        if self.client is None:
            raise MeshSetupError("the local mesh is not running; use it inside 'with LocalMesh(...)'")
        wait_log_flushed(end)
        return AttemptRecords(
            records=tuple(r for sc in self.sidecars for r in sc.log_records(start, end)),
            client=self.client.name,
            pods={sc.name: pod for pod, sc in self.pod_sidecars.items()},
            hosts={f"{i.address}:{i.port}": i.name for i in self._instances},
        )

    def outlier_events(self, service: str, start: float, end: float) -> list[InstanceEvent]:
        """Every sidecar's outlier-detection events for ``service``'s instances stamped in ``[start, end]``.

        Waits until Envoy's log flush after ``end`` has passed, as :meth:`attempt_records` does.

        Returns:
            :class:`pytest_meshcheck.metrics.outlier_events.InstanceEvent` items, in time order.
        """
        from pytest_meshcheck.metrics.outlier_events import instance_events

        if self.client is None:
            raise MeshSetupError("the local mesh is not running; use it inside 'with LocalMesh(...)'")
        wait_log_flushed(end)
        hosts = {f"{i.address}:{i.port}": i.name for i in self.instances(service)}
        return instance_events((e for sc in self.sidecars for e in sc.outlier_events(start, end)), hosts)
