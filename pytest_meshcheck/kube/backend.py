"""``KubeBackend``: the mesh of a real cluster with Istio (``--mesh-context kind`` or any kube context).

It implements :class:`pytest_meshcheck.backend.MeshBackend` like ``LocalMesh`` does, so scenarios run
unchanged. Usage without pytest::

    from pytest_meshcheck.kube import KubeBackend, KubeSettings

    with KubeBackend(KubeSettings(context="kind"), policies=load_policies("policies/")) as mesh:
        result = mesh.run_load("order-service", OpenLoop(rate=50, duration="5s", max_requests=250))

Design (docs/kind.md): one namespace per run; echo Deployments per service and version; an in-mesh
agent pod whose sidecar is the caller that enforces the policies. Load, chaos and proxy-config reads
all go through the agent, reached by a Kubernetes port-forward. The pods of services with calls make
their calls through their own sidecars; each of those is read through a port-forward to its Envoy admin
port (:mod:`pytest_meshcheck.kube.callers`), so a policy change counts as applied only once they run it
too. Everything is removed on stop (also
after a failed start or Ctrl-C), unless ``keep``.
"""

from __future__ import annotations

import atexit
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from pytest_meshcheck.backend import WorkloadInstance
from pytest_meshcheck.chaos.destination import DestinationChaos
from pytest_meshcheck.errors import ChaosError, MeshSetupError
from pytest_meshcheck.istio_version import IstioVersion, parse_istio_version
from pytest_meshcheck.kube import bootstrap, cleanup, preflight
from pytest_meshcheck.kube.callers import CallerSidecars
from pytest_meshcheck.kube.client import KubeClient, KubeConflict, KubeForbidden
from pytest_meshcheck.kube.converge import Proxy, SidecarView, endpoints_pending
from pytest_meshcheck.kube.generations import PolicyGenerations, all_policies
from pytest_meshcheck.kube.manifests import (
    AGENT_NAME,
    AGENT_PORT,
    agent_deployment,
    check_topology_ports,
    namespace_manifest,
    workload_instances,
    workload_manifests,
)
from pytest_meshcheck.kube.portforward import PortForward
from pytest_meshcheck.kube.rewrite import HostRewriter, rewrite_topology
from pytest_meshcheck.kube.scrape import POD_LABELS, wait_scraped
from pytest_meshcheck.kube.settings import MANAGED_BY, MANAGED_BY_LABEL, RUN_ID_LABEL, KubeSettings
from pytest_meshcheck.kube.wait import wait_for_value, wait_until
from pytest_meshcheck.kube.wire import load_job, result_from_wire, run_job
from pytest_meshcheck.load.profile import LoadError
from pytest_meshcheck.policy.model import Policy, PolicySet
from pytest_meshcheck.topology import Topology, load_topology

if TYPE_CHECKING:
    from pytest_meshcheck.load import ClosedLoop, LoadResult, OpenLoop

_AGENT_LABELS = {"app": AGENT_NAME, "version": "v1"}


class KubeBackend:
    """A run namespace on a cluster with Istio; a context manager, :meth:`stop` is idempotent.

    Args:
        settings: Where and how (:class:`KubeSettings`).
        topology: Services to run; the packaged default when ``None``. Services move into the run namespace.
        policies: Policies active from the start (rewritten into the run namespace).
        istio_version: Istio release to expect; ``None`` reads it from istiod (the normal case).
        log: Receives progress lines (leftovers removed, what was created, clean-up).
    """

    def __init__(
        self,
        settings: KubeSettings,
        *,
        topology: Topology | None = None,
        policies: PolicySet | None = None,
        istio_version: str | IstioVersion | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.context = settings.context
        self.user_topology = topology or load_topology()
        check_topology_ports(self.user_topology)
        self.topology = rewrite_topology(self.user_topology, settings.namespace)
        self.hosts = HostRewriter(self.user_topology, settings.namespace)
        self._istio_override = (
            istio_version if isinstance(istio_version, IstioVersion) or istio_version is None
            else parse_istio_version(istio_version)
        )  # fmt: skip
        self.istio_version = self._istio_override or parse_istio_version(None)
        self.istio: preflight.IstioFacts | None = None
        self._initial = policies
        self._log = log or (lambda _m: None)
        self._agent_proxy = Proxy(
            "the caller's sidecar",
            {**_AGENT_LABELS, **settings.labels},
            self.sidecar_view,
            tuple(svc.name for svc in self.topology.services),
        )
        self._callers = CallerSidecars(self._client, settings.namespace, self._log)
        self._policies = PolicyGenerations(settings, self.hosts, self.topology, self._client, self.proxies)
        self.client: KubeClient | None = None
        self._created_namespace = False
        self._heartbeat: cleanup.Heartbeat | None = None
        self._agent_forward: PortForward | None = None
        self._prom_forward: PortForward | None = None
        self._prom_url = settings.prometheus_url or ""
        self._prom_labels = POD_LABELS[0]
        self._http: httpx.Client | None = None
        self.agent_pod = ""
        self._instances: list[WorkloadInstance] = []
        self._chaos = DestinationChaos()
        self.server_version = ""
        self.envoy_version = ""
        self.leftovers_removed: list[str] = []
        self.removed: list[str] = []
        self.startup_seconds = 0.0

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> KubeBackend:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Check the cluster, create the run namespace and workloads, and wait until the caller's sidecar is ready.

        Raises:
            MeshSetupError: A preflight check failed (nothing was created), or setting up failed (what
                was created has been removed again).
        """
        if self.settings.dry_run:
            raise MeshSetupError(
                "--mesh-dry-run touches no cluster: print dry_run_plan(...) instead of starting a backend"
            )
        t0 = time.monotonic()
        atexit.register(self.stop)
        try:
            self._preflight()
            self._create_namespace()
            self._create_workloads()
            self._connect_agent()
            pods = self._pods(f"{RUN_ID_LABEL}={self.settings.run_id}")
            self._callers.track(self.topology, pods)
            self._wait_endpoints()
            self._check_stats()
            self._instances = self._read_instances(pods)
            if self._initial is not None and len(self._initial):
                self.replace_all(self._initial)
        except BaseException:
            # KeyboardInterrupt included: a failed start leaves nothing behind.
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        self._log(f"meshcheck: namespace {self.settings.namespace} ready in {self.startup_seconds:.1f}s")

    def _preflight(self) -> None:
        s = self.settings
        if s.create and s.context == "kind":
            bootstrap.ensure_kind_cluster(s.kind_cluster, self._log, kubeconfig=s.kubeconfig)
        client = self.client = KubeClient.connect(s.kube_context, s.kubeconfig)
        self.server_version = preflight.check_api_server(client)
        needed = sorted(
            {p.api_version.split("/")[-1] for p in self._initial_policies()} if self._initial is not None else set()
        )
        try:
            istio = preflight.check_istio(client, s, needed)
        except preflight.IstioNotInstalled:
            if not s.create:
                raise
            bootstrap.install_istio(s.kube_context, self._log, kubeconfig=s.kubeconfig)
            istio = wait_for_value(lambda: preflight.check_istio(client, s, needed), s.ready_timeout, "istiod ready")
        self.istio = istio
        self.istio_version = self._istio_override or istio.version
        self._connect_prometheus(client)
        unknown = preflight.check_permissions(client, s.namespace)
        if unknown:
            self._log(f"meshcheck: could not verify permissions ({', '.join(unknown)}); trying anyway")
        self.leftovers_removed = cleanup.sweep_leftovers(
            client, current_run_id=s.run_id, stale_after=s.stale_after, log=self._log
        )

    def _initial_policies(self) -> list[Policy]:
        return all_policies(self._initial or PolicySet())

    def _connect_prometheus(self, client: KubeClient) -> None:
        s = self.settings
        if s.prometheus_url:
            preflight.check_prometheus_ready(s.prometheus_url, "--mesh-prometheus-url")
            self._prom_url = s.prometheus_url
            return
        try:
            target = preflight.find_prometheus(client, s, self.istio)
        except preflight.PrometheusNotInstalled:
            if not s.create:
                raise
            bootstrap.install_prometheus_addon(client.api_client, bootstrap.prometheus_addon_path(), self._log)
            target = wait_for_value(
                lambda: preflight.find_prometheus(client, s, self.istio), s.ready_timeout, "Prometheus"
            )
        forward = self._prom_forward = client.port_forward(target.namespace, target.pod, target.port, self._log)
        self._prom_url = forward.url
        try:
            preflight.check_prometheus_ready(self._prom_url, f"port-forward to {target.namespace}/{target.pod}")
        except MeshSetupError as exc:
            if forward.errors:
                raise MeshSetupError(f"{exc}\n  port-forward: {forward.errors[0]}") from exc
            raise

    def _create_namespace(self) -> None:
        client = self._client()
        s = self.settings
        manifest = namespace_manifest(s, owner=cleanup.owner_tag(), heartbeat=time.time())
        try:
            client.create(manifest)
        except KubeForbidden as exc:
            raise KubeForbidden(f"cannot create the run namespace {s.namespace}: {exc}; nothing was created") from exc
        except KubeConflict as exc:
            raise MeshSetupError(
                f"namespace {s.namespace} already exists; another run uses run id {s.run_id!r}. Use a fresh run id"
            ) from exc
        self._created_namespace = True
        self._heartbeat = cleanup.Heartbeat(client, s.namespace).start()
        self._log(f"meshcheck: created namespace {s.namespace}")
        preflight.check_injection(client, agent_deployment(s)["spec"]["template"], s.namespace)

    def _create_workloads(self) -> None:
        client = self._client()
        for manifest in workload_manifests(self.settings, self.topology):
            client.create(manifest)
        wait_until(
            self._deployments_ready,
            timeout=self.settings.ready_timeout,
            description=f"the Deployments of namespace {self.settings.namespace} to be ready",
            interval=1.0,
            fix=self._pods_diagnosis(),
        )

    def _deployments_ready(self) -> tuple[bool, object]:
        deployments = self._client().list_deployments(self.settings.namespace, f"{MANAGED_BY_LABEL}={MANAGED_BY}")
        waiting = [
            f"{d['metadata']['name']} {int((d.get('status') or {}).get('readyReplicas') or 0)}/{d['spec']['replicas']}"
            for d in deployments
            if int((d.get("status") or {}).get("readyReplicas") or 0) < int(d["spec"]["replicas"])
        ]
        return (bool(deployments) and not waiting), ", ".join(waiting) or "no Deployments yet"

    def _pods_diagnosis(self) -> str:
        return (
            f"Inspect with 'kubectl --context {self.settings.kube_context} -n {self.settings.namespace} get pods' "
            "and 'describe pod'; check that --mesh-echo-image "
            f"({self.settings.echo_image}) can be pulled by the cluster (for Kind: 'kind load docker-image')"
        )

    def _pods(self, selector: str) -> list[dict[str, Any]]:
        return self._client().list_pods(self.settings.namespace, selector)

    def _connect_agent(self) -> None:
        pods = [p for p in self._pods(f"app={AGENT_NAME}") if (p.get("status") or {}).get("phase") == "Running"]
        if not pods:
            raise MeshSetupError(f"no running agent pod in {self.settings.namespace}. {self._pods_diagnosis()}")
        pod = pods[0]
        if not preflight.has_sidecar(pod):
            raise MeshSetupError(
                f"the agent pod {pod['metadata']['name']} has no istio-proxy sidecar although the namespace has "
                "istio-injection=enabled; check the injector webhook"
            )
        self.agent_pod = pod["metadata"]["name"]
        self._agent_forward = self._client().port_forward(
            self.settings.namespace, self.agent_pod, AGENT_PORT, self._log
        )
        self._http = httpx.Client(base_url=self._agent_forward.url, timeout=30.0)
        health = self._agent_get("/healthz")
        if not health.get("engine"):
            raise MeshSetupError(f"the agent cannot run the load engine: {health.get('engine_error')}")
        info = self._agent_get("/sidecar/server_info")
        parts = str(info.get("version", "")).split("/")
        self.envoy_version = parts[1] if len(parts) > 1 else str(info.get("version", ""))

    def _agent_get(self, path: str) -> dict[str, Any]:
        if self._http is None:
            raise MeshSetupError("the cluster mesh is not running; use it inside 'with KubeBackend(...)'")
        try:
            resp = self._http.get(path)
        except httpx.HTTPError as exc:
            raise MeshSetupError(
                f"the agent ({self.agent_pod}) is unreachable through its port-forward: {exc}"
            ) from exc
        if resp.status_code != 200:
            raise MeshSetupError(f"agent GET {path} answered {resp.status_code}: {resp.text.strip()[:300]}")
        doc = resp.json()
        return doc if isinstance(doc, dict) else {}

    def sidecar_view(self) -> SidecarView:
        """What the caller's sidecar runs now (Istio configs, endpoints), read from its admin API."""
        return SidecarView.from_json(self._agent_get("/sidecar/config"))

    def proxies(self) -> list[Proxy]:
        """The sidecars a policy change must reach: the agent's, then every calling pod's (by pod name)."""
        return [self._agent_proxy, *self._callers.proxies]

    def caller_sidecar_view(self, pod: str) -> SidecarView:
        """What the sidecar of the calling pod ``pod`` runs now, read through a port-forward to its admin API."""
        return self._callers.view(pod)

    def _wait_endpoints(self) -> None:
        waiting = self.proxies()

        def check() -> tuple[bool, object]:
            lines: list[str] = []
            for proxy in list(waiting):
                missing = endpoints_pending(proxy.view(), self.topology, proxy.services)
                if missing:
                    lines += [f"{proxy.where}: {line}" for line in missing]
                else:
                    waiting.remove(proxy)
            return not lines, "; ".join(lines)

        wait_until(
            check,
            timeout=self.settings.converge_timeout,
            description="the caller's sidecar and every calling pod's sidecar to have every replica they send to "
            "as a healthy endpoint",
            fix="Check 'istioctl proxy-status' and istiod's logs",
        )

    def _check_stats(self) -> None:
        doc = self._agent_get("/sidecar/stats?filter=" + "|".join(f"{stat}$" for stat in preflight.REQUIRED_STATS))
        missing = preflight.missing_stats(doc, self.topology)
        if missing:
            raise MeshSetupError(
                f"the caller's sidecar does not expose counters the assertions need: {', '.join(missing[:4])}"
                f"{' ...' if len(missing) > 4 else ''}. {preflight.stats_fix()}"
            )

    def _read_instances(self, pods: list[dict[str, Any]]) -> list[WorkloadInstance]:
        assert self._agent_forward is not None
        return workload_instances(self.topology, pods, self._agent_forward.url)

    def stop(self) -> None:
        """Revert chaos, close the port-forwards and remove the namespace and every object of the run.

        With ``keep`` the namespace stays (marked so the leftover sweep leaves it) and how to remove it is logged.
        """
        atexit.unregister(self.stop)
        if self._http is not None and self._chaos.active():
            with contextlib.suppress(ChaosError):
                self._chaos.clear_all()
        if self._http is not None:
            self._http.close()
            self._http = None
        self._callers.close()
        for fwd in (self._agent_forward, self._prom_forward):
            if fwd is not None:
                fwd.close()
        self._agent_forward = self._prom_forward = None
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if self._created_namespace:
                self._finish_namespace(client)
        finally:
            self._created_namespace = False
            client.close()

    def _finish_namespace(self, client: KubeClient) -> None:
        ns = self.settings.namespace
        if self.settings.keep:
            with contextlib.suppress(MeshSetupError):
                client.patch_namespace_annotations(ns, {cleanup.KEEP_ANNOTATION: "true"})
            self._log(
                f"meshcheck: kept namespace {ns} (--mesh-keep); inspect with 'kubectl --context "
                f"{self.settings.kube_context} -n {ns} get all', remove with 'kubectl delete namespace {ns}'"
            )
            return
        try:
            self.removed = cleanup.delete_run(client, self.settings.run_id, ns, self._log)
        except MeshSetupError as exc:
            self._log(
                f"meshcheck: could not remove namespace {ns}: {exc}. Remove it with 'kubectl delete namespace {ns}'; "
                "the next run also removes it once its heartbeat is stale"
            )
            return
        self._log(f"meshcheck: removed {', '.join(self.removed) or 'nothing (already gone)'}")

    def _client(self) -> KubeClient:
        if self.client is None:
            raise MeshSetupError("the cluster mesh is not running; use it inside 'with KubeBackend(...)'")
        return self.client

    # ------------------------------------------------------------------ policies

    @property
    def generation(self) -> int:
        """The policy generation in force: 0 before any policy, +1 per apply, remove or replace_all."""
        return self._policies.generation

    @property
    def policies(self) -> PolicySet:
        """The policies in force, as they run in the cluster (namespaces and hosts rewritten)."""
        return self._policies.policies

    def apply(self, policies: PolicySet) -> float:
        """Add or replace (by kind, namespace and name) policies.

        Returns:
            Seconds until the caller's sidecar, and the sidecar of every pod that makes calls, were seen running
            them (from their config dumps).
        """
        return self._policies.change(policies)

    def remove(self, policies: PolicySet | Iterable[tuple[str, str, str]]) -> float:
        """Remove policies (objects or ``(kind, namespace, name)`` keys); return the convergence time."""
        return self._policies.change(PolicySet(), remove=self._policies.keys(policies))

    def replace_all(self, policies: PolicySet) -> float:
        """Make ``policies`` the only ones in force; return the convergence time."""
        return self._policies.change(policies, replace=True)

    # ------------------------------------------------------------------ workloads, chaos, load

    def instances(self, service: str | None = None, *, version: str | None = None) -> list[WorkloadInstance]:
        """Running instances (pods), optionally of one service (short name or FQDN) and version."""
        if service is not None:
            service = self.topology.service(self.hosts.host(service)).name
        return [
            i
            for i in self._instances
            if (service is None or i.service == service) and (version is None or i.version == version)
        ]

    @property
    def chaos(self) -> DestinationChaos:
        """Faults at the echo pods, through the agent; every fault is reverted by :meth:`stop`."""
        return self._chaos

    def run_load(
        self,
        service: str,
        profile: OpenLoop | ClosedLoop,
        *,
        path: str = "/",
        headers: Mapping[str, str] | None = None,
    ) -> LoadResult:
        """Send load to ``service`` from the agent pod, through its sidecar.

        Raises:
            LoadError: The profile or request is invalid.
            MeshSetupError: The agent failed.
        """
        svc = self.topology.service(self.hosts.host(service))
        if not path.startswith("/"):
            raise LoadError(f"path: {path!r} must start with '/'")
        authority = f"{svc.name}:{svc.port}"
        job = load_job(f"http://{authority}{path}", profile, host=authority, headers=headers)
        if self._http is None:
            raise MeshSetupError("the cluster mesh is not running; use it inside 'with KubeBackend(...)'")
        budget = profile.duration + job["grace"] + 60.0
        answer = run_job(self._http, job, budget=budget)
        return result_from_wire(profile, answer)

    # ------------------------------------------------------------------ Prometheus

    @property
    def prometheus_url(self) -> str:
        """Prometheus holding the sidecars' and workloads' metrics (a local port-forward, or the given URL)."""
        if not self._prom_url:
            raise MeshSetupError("the cluster mesh is not running; Prometheus is connected by start()")
        return self._prom_url

    @property
    def client_proxy_labels(self) -> dict[str, str]:
        """Prometheus labels of the agent pod, whose sidecar enforces the policies."""
        ns_label, pod_label = self._prom_labels
        return {ns_label: self.settings.namespace, pod_label: self.agent_pod}

    def caller_proxy_labels(self, service: str) -> dict[str, str]:
        """Prometheus labels of ``service``'s pods, whose Istio sidecars make its calls.

        Istio's Prometheus addon copies the pod's ``app`` label onto every series it scrapes from the pod.
        """
        ns_label, _ = self._prom_labels
        return {ns_label: self.settings.namespace, "app": self.topology.service(service).name}

    def wait_for_metrics(self, timeout: float = 60.0) -> float:
        """Wait until Prometheus has scraped the agent pod and every echo pod (``up == 1``).

        The addon scrapes every 15 s, so the first wait takes up to that long.
        """
        pods = {self.agent_pod, *(i.name for i in self._instances)}
        waited, self._prom_labels = wait_scraped(self.prometheus_url, self.settings.namespace, pods, timeout=timeout)
        return waited

    def describe(self) -> dict[str, str]:
        """Facts for reports and the session header."""
        facts = {
            "context": self.context,
            "kube_context": self.settings.kube_context,
            "namespace": self.settings.namespace,
            "run_id": self.settings.run_id,
            "istio_version": str(self.istio_version),
            "topology": self.user_topology.source,
            "instances": str(len(self._instances)),
            "echo_image": self.settings.echo_image,
        }
        if self.istio is not None:
            facts["istio_release"] = self.istio.release
        if self.server_version:
            facts["kubernetes_version"] = self.server_version
        if self.envoy_version:
            facts["envoy_version"] = self.envoy_version
        if self._prom_url:
            facts["prometheus"] = self._prom_url
        if self.agent_pod:
            facts["agent_pod"] = self.agent_pod
        return facts

    # ------------------------------------------------------------------ capabilities a cluster lacks

    def response_flags(self, service: str, start: float, end: float) -> None:
        """``None``: the sidecar's access log stays in the cluster, so the flags cannot be told here."""
        return None

    def live_counts(self, service: str) -> None:
        """``None``: nothing is read from the agent's sidecar while its load job runs."""
        return None

    def request_durations(self, service: str, start: float, end: float) -> None:
        """``None``: the sidecar's access log stays in the cluster; checks use the load agent's latencies."""
        return None

    def outlier_events(self, service: str, start: float, end: float) -> None:
        """``None``: istiod configures no outlier event log on its sidecars, so there is none to read."""
        return None
