"""A cluster run without a cluster: the fake API server plus real local processes for its pods.

:class:`LocalPods` watches a :class:`~pytest_meshcheck.kube.fakeapi.FakeKubeAPI`: when a Deployment is
created, it starts a real process for each of its pods from the files of the ConfigMap that the
Deployment mounts (what the code under test shipped): the echo workload for echo pods, the agent for
the agent pod. Port-forwards to the agent reach the local agent process, and the agent's
``--resolve`` entries send its load and chaos to the local echo processes.

:class:`FakeSidecarAdmin` stands in for the agent's Envoy admin API: it reports, from the fake API
server's objects, what istiod would have pushed: a route per VirtualService and a cluster per Service
(stamped with the DestinationRule), endpoints per ready pod, and the stats. ``lag`` delays what it
reports, so callers must really wait for convergence; ``frozen`` never updates (istiod down).

Processes are stopped by PID on :meth:`LocalPods.close`; echo processes also exit with this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.kube.fakeapi import FakeKubeAPI, selector_matches
from pytest_meshcheck.kube.manifests import AGENT_NAME, AGENT_PORT, ECHO_ADMIN_PORT

_ISTIO_GROUP = "networking.istio.io"
_STATS = ("upstream_rq_retry", "upstream_rq_pending_overflow")


def _read_ready(proc: subprocess.Popen[bytes], prefix: bytes, timeout: float = 10.0) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return dict(json.loads(line[len(prefix) :]))
        if not line and proc.poll() is not None:
            break
    raise MeshSetupError(f"local pod process {proc.args!r} did not print {prefix!r} (last line {line!r})")


class LocalPods:
    """Runs the fake API server's pods as local processes (see the module docstring).

    Args:
        api: The fake API server to watch.
        envoy_admin: URL the agent uses as its sidecar's admin API (a :class:`FakeSidecarAdmin`).
    """

    def __init__(self, api: FakeKubeAPI, envoy_admin: str) -> None:
        self.api = api
        self.envoy_admin = envoy_admin
        self.work = Path(tempfile.mkdtemp(prefix="meshcheck-localpods-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.resolve: dict[str, str] = {}
        self.agent_port = 0
        api.on_created.append(self._created)

    def __enter__(self) -> LocalPods:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _files(self, ns: str, template: dict[str, Any], pod: str) -> Path:
        volume = next(v for v in template["spec"]["volumes"] if "configMap" in v)
        cm_name = volume["configMap"]["name"]
        cm = next(c for c in self.api.namespaced("configmaps", ns) if c["metadata"]["name"] == cm_name)
        root = self.work / pod
        for item in volume["configMap"]["items"]:
            target = root / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(cm["data"][item["key"]], encoding="utf-8")
        return root

    def _start(self, argv: list[str], prefix: bytes) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
        # -I -S: the pod's interpreter has no site-packages either, so the shipped files must be enough.
        proc = subprocess.Popen([sys.executable, "-I", "-S", *argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc, _read_ready(proc, prefix)

    def _created(self, obj: dict[str, Any]) -> None:
        if obj.get("kind") != "Deployment":
            return
        ns = obj["metadata"]["namespace"]
        template = obj["spec"]["template"]
        labels = template["metadata"].get("labels", {})
        container = template["spec"]["containers"][0]
        pods = [
            p
            for p in self.api.namespaced("pods", ns)
            if selector_matches(",".join(f"{k}={v}" for k, v in obj["spec"]["selector"]["matchLabels"].items()),
                                p["metadata"].get("labels", {}))
        ]  # fmt: skip
        for pod in pods:
            name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
            root = self._files(ns, template, name)
            if labels.get("app") == AGENT_NAME:
                argv = [str(root / "agent.py"), "--port", "0", "--envoy-admin", self.envoy_admin,
                        "--workload-admin-port", str(ECHO_ADMIN_PORT)]  # fmt: skip
                for source, target in self.resolve.items():
                    argv += ["--resolve", f"{source}={target}"]
                _, ready = self._start(argv, b"MESHCHECK_AGENT_READY ")
                self.agent_port = int(ready["port"])
                self.api.forward_to(AGENT_NAME, AGENT_PORT, ("127.0.0.1", self.agent_port))
                continue
            args = [a.replace("$(POD_NAME)", name).replace("$(POD_NAMESPACE)", ns) for a in container["command"][3:]]
            port = args[args.index("--port") + 1]
            args[args.index("--port") + 1] = "0"
            args[args.index("--admin-port") + 1] = "0"
            args[args.index("--host") + 1] = "127.0.0.1"
            args[args.index("--admin-host") + 1] = "127.0.0.1"
            args[0] = str(root / "echo.py")
            _, ready = self._start([*args, "--parent-pid", str(os.getpid())], b"MESHCHECK_READY ")
            self.resolve[f"{ip}:{port}"] = f"127.0.0.1:{ready['port']}"
            self.resolve[f"{ip}:{ECHO_ADMIN_PORT}"] = f"127.0.0.1:{ready['admin_port']}"
            self.resolve.setdefault(f"{labels['app']}:{port}", f"127.0.0.1:{ready['port']}")

    def close(self) -> None:
        """Stop every process by PID and remove the files."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
        import shutil

        shutil.rmtree(self.work, ignore_errors=True)


class FakeSidecarAdmin:
    """An Envoy-admin look-alike whose config follows the fake API server's objects (module docstring).

    Args:
        api: The fake API server.
        lag: Seconds between an object change and the fake proxy reporting it.
        frozen: Never report anything newer than the state at start (istiod not pushing).
        hide_stats: Report no cluster stats (as if proxyStatsMatcher were ignored).
    """

    def __init__(self, api: FakeKubeAPI, *, lag: float = 0.0, frozen: bool = False, hide_stats: bool = False) -> None:
        self.api = api
        self.lag = lag
        self.frozen = frozen
        self.hide_stats = hide_stats
        self._history: list[tuple[float, dict[str, Any]]] = [(0.0, self._snapshot())]
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True),
            threading.Thread(target=self._watch, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def __enter__(self) -> FakeSidecarAdmin:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving."""
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for t in self._threads:
            t.join(5)

    def _snapshot(self) -> dict[str, Any]:
        return {"objects": self.api.snapshot()}

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            if not self.frozen:
                self._history.append((time.monotonic(), self._snapshot()))
                self._history = self._history[-200:]

    def _current(self) -> dict[str, Any]:
        cutoff = time.monotonic() - self.lag
        visible = [snap for t, snap in self._history if t <= cutoff]
        return visible[-1] if visible else self._history[0][1]

    # ------------------------------------------------------------------ what istiod would push

    def _services(self, snap: dict[str, Any]) -> list[dict[str, Any]]:
        return [o for (g, p, _, _), o in snap["objects"].items() if g == "" and p == "services"]

    def _policies(self, snap: dict[str, Any], plural: str) -> list[dict[str, Any]]:
        return [o for (g, p, _, _), o in snap["objects"].items() if g == _ISTIO_GROUP and p == plural]

    @staticmethod
    def _fqdn(host: str, ns: str) -> str:
        return host if "." in host else f"{host}.{ns}.svc.cluster.local"

    def config_dump(self, resource: str) -> tuple[int, dict[str, Any]]:
        """``/config_dump?resource=...`` of the current snapshot."""
        snap = self._current()
        if resource == "dynamic_route_configs":
            routes = []
            for vs in self._policies(snap, "virtualservices"):
                meta = vs["metadata"]
                path = f"/apis/{_ISTIO_GROUP}/v1/namespaces/{meta['namespace']}/virtual-service/{meta['name']}"
                for i, _ in enumerate(vs["spec"].get("http") or []):
                    routes.append({"name": f"r{i}", "metadata": {"filter_metadata": {"istio": {"config": path}}}})
            config = {"name": "8080", "virtual_hosts": [{"name": "vh", "routes": routes}]}
            return 200, {"configs": [{"version_info": "1", "route_config": config}]}
        if resource == "dynamic_active_clusters":
            out = []
            rules = self._policies(snap, "destinationrules")
            for svc in self._services(snap):
                meta = svc["metadata"]
                fqdn = f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
                cluster: dict[str, Any] = {"name": f"outbound|{svc['spec']['ports'][0]['port']}||{fqdn}"}
                for dr in rules:
                    dmeta = dr["metadata"]
                    if self._fqdn(str(dr["spec"].get("host")), dmeta["namespace"]) == fqdn:
                        path = (
                            f"/apis/{_ISTIO_GROUP}/v1/namespaces/{dmeta['namespace']}/destination-rule/{dmeta['name']}"
                        )
                        cluster["metadata"] = {"filter_metadata": {"istio": {"config": path}}}
                out.append({"cluster": cluster})
            return 200, {"configs": out}
        return 404, {}

    def clusters(self) -> dict[str, Any]:
        """``/clusters?format=json``: one HEALTHY host per ready pod a Service selects."""
        snap = self._current()
        pods = [o for (g, p, _, _), o in snap["objects"].items() if g == "" and p == "pods"]
        statuses = []
        for svc in self._services(snap):
            meta = svc["metadata"]
            selector = ",".join(f"{k}={v}" for k, v in (svc["spec"].get("selector") or {}).items())
            port = svc["spec"]["ports"][0]["port"]
            hosts = [
                {"address": {"socket_address": {"address": p["status"]["podIP"], "port_value": port}},
                 "health_status": {"eds_health_status": "HEALTHY"}}
                for p in pods
                if p["metadata"].get("namespace") == meta["namespace"] and selector
                and selector_matches(selector, p["metadata"].get("labels", {}))
            ]  # fmt: skip
            statuses.append(
                {
                    "name": f"outbound|{port}||{meta['name']}.{meta['namespace']}.svc.cluster.local",
                    "host_statuses": hosts,
                }
            )
        return {"cluster_statuses": statuses}

    def stats(self) -> dict[str, Any]:
        """``/stats?format=json``: the counters a run checks for, per Service cluster."""
        if self.hide_stats:
            return {"stats": []}
        stats = []
        for svc in self._services(self._current()):
            meta = svc["metadata"]
            cluster = (
                f"outbound|{svc['spec']['ports'][0]['port']}||{meta['name']}.{meta['namespace']}.svc.cluster.local"
            )
            stats += [{"name": f"cluster.{cluster};.{s}", "value": 0} for s in _STATS]
        return {"stats": stats}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        admin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                status: int = 200
                doc: dict[str, Any] = {}
                if parts.path == "/config_dump":
                    status, doc = admin.config_dump(query.get("resource", [""])[0])
                elif parts.path == "/clusters":
                    doc = admin.clusters()
                elif parts.path == "/stats":
                    doc = admin.stats()
                elif parts.path == "/server_info":
                    doc = {"version": "fake0000/1.34.1/Clean/RELEASE/BoringSSL", "state": "LIVE"}
                else:
                    status = 404
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def free_port_kubeconfig(path: Path, context: str = "kind-kind") -> Path:
    """A kubeconfig whose API server is a closed local port (an unreachable cluster)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The port is closed again when the socket is; nothing listens there.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gone", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": context, "context": {"cluster": "gone", "user": "u"}}],
        "current-context": context,
    }
    import yaml

    path.write_text(yaml.safe_dump(config))
    with contextlib.suppress(OSError):
        path.chmod(0o600)
    return path


class FakePrometheus:
    """Answers ``/-/ready`` and ``up{namespace="<ns>"} == 1`` with one series per pod of the fake API server."""

    def __init__(self, api: FakeKubeAPI, *, ready: bool = True) -> None:
        self.api = api
        self.ready = ready
        self.queries: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.address = ("127.0.0.1", int(self._server.server_address[1]))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _up(self, query: str) -> list[dict[str, Any]]:
        import re

        match = re.search(r'up\{(\w+)="([^"]+)"\}', query)
        if not match or match.group(1) != "namespace":
            return []
        pods = self.api.namespaced("pods", match.group(2))
        return [
            {"metric": {"namespace": match.group(2), "pod": p["metadata"]["name"]}, "value": [0, "1"]} for p in pods
        ]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        prom = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                status, body = 200, b"Prometheus Server is Ready.\n"
                if parts.path == "/-/ready" and not prom.ready:
                    status, body = 503, b"Service Unavailable"
                elif parts.path == "/api/v1/query":
                    query = parse_qs(parts.query).get("query", [""])[0]
                    prom.queries.append(query)
                    doc = {"status": "success", "data": {"resultType": "vector", "result": prom._up(query)}}
                    body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


class FakeCluster:
    """Fake API server, fake sidecar admin, local pod processes, fake Prometheus and a kubeconfig, together.

    Usage::

        with FakeCluster(tmp_path, lag=0.3) as cluster:
            with KubeBackend(cluster.settings(), topology=topo) as mesh:
                ...

    Args:
        workdir: Where the kubeconfig is written.
        context: The kube context the kubeconfig names.
        lag: :class:`FakeSidecarAdmin` lag.
        hide_stats: :class:`FakeSidecarAdmin` hides the cluster stats.
        **api_options: Passed to :class:`FakeKubeAPI` (``istio_version``, ``prometheus``, ``forbidden``...).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        context: str = "kind-kind",
        lag: float = 0.0,
        hide_stats: bool = False,
        **api_options: Any,
    ) -> None:
        self.workdir = workdir
        self.context = context
        self.api = FakeKubeAPI(**api_options)
        self._lag = lag
        self._hide_stats = hide_stats
        self.kubeconfig = workdir / "kubeconfig"

    def __enter__(self) -> FakeCluster:
        self.api.start()
        self.admin = FakeSidecarAdmin(self.api, lag=self._lag, hide_stats=self._hide_stats)
        self.pods = LocalPods(self.api, self.admin.url)
        self.prometheus = FakePrometheus(self.api)
        self.api.forward_to("prometheus", 9090, self.prometheus.address)
        self.api.write_kubeconfig(self.kubeconfig, context=self.context)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.pods.close()
        self.prometheus.close()
        self.admin.close()
        self.api.stop()

    def settings(self, **overrides: Any) -> Any:
        """:class:`~pytest_meshcheck.kube.settings.KubeSettings` for this cluster, with short time-outs."""
        from pytest_meshcheck.kube.settings import KubeSettings

        values: dict[str, Any] = {
            "context": "kind" if self.context.startswith("kind-") else self.context,
            "kind_cluster": self.context.removeprefix("kind-"),
            "kubeconfig": self.kubeconfig,
            "ready_timeout": 10.0,
            "converge_timeout": 5.0,
        }
        values.update(overrides)
        return KubeSettings(**values)
