"""A fake Kubernetes API server at the HTTP level, for testing cluster code without a cluster.

It speaks enough of the REST API for :class:`~pytest_meshcheck.kube.client.KubeClient`: discovery,
namespaces, ConfigMaps, Services, Pods (with server-side dry run), Deployments (a tiny controller turns
each into ready pods, with an ``istio-proxy`` container where injection is on), Istio custom objects,
SelfSubjectAccessReviews, and pod port-forward over a real ``v4.channel.k8s.io`` websocket, relayed to
a local TCP address per pod. The real ``kubernetes`` client talks to it through a generated kubeconfig,
so every request, serialisation and error path of the code under test runs for real.

Usage::

    with FakeKubeAPI(istio_version="1.30.3", prometheus=True) as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", context="kind-kind")
        api.forward_to("meshcheck-agent", 8070, ("127.0.0.1", agent_port))
        ...
        assert ("POST", "/api/v1/namespaces") in api.requests
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from aiohttp import WSMsgType, web

Key = tuple[str, str, str, str]  # group, plural, namespace ("" for cluster-scoped), name

_CORE_PLURALS = {"namespaces", "configmaps", "services", "pods", "events"}
ISTIO_GROUP = "networking.istio.io"


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selector (``a=b,c!=d,e,!f``)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


class FakeKubeAPI:
    """The fake API server (see the module docstring); a context manager that starts and stops it.

    Args:
        istio_version: Image tag of istiod in ``istio-system`` (``None``: Istio is not installed).
        istiod_ready: Whether istiod's Deployment reports a ready replica.
        prometheus: Whether the ``prometheus`` addon (Service and a ready pod) is in ``istio-system``.
        inject: Whether pods in namespaces labelled ``istio-injection=enabled`` get an ``istio-proxy``.
        forbidden: ``(verb, resource)`` pairs the caller may not do (``("create", "namespaces")``): such
            requests get 403 and access reviews say no.
        access_reviews: Whether SelfSubjectAccessReviews are served (an old or locked-down server: 404).
    """

    def __init__(
        self,
        *,
        istio_version: str | None = "1.30.3",
        istiod_ready: bool = True,
        prometheus: bool = True,
        inject: bool = True,
        forbidden: set[tuple[str, str]] | None = None,
        access_reviews: bool = True,
    ) -> None:
        self.istio_version = istio_version
        self.istiod_ready = istiod_ready
        self.prometheus = prometheus
        self.inject = inject
        self.forbidden = set(forbidden or ())
        self.access_reviews = access_reviews
        self.objects: dict[Key, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.forwards: dict[tuple[str, int], tuple[str, int]] = {}
        self.pod_forwards: dict[tuple[str, int], tuple[str, int]] = {}
        self.forward_log: list[tuple[str, str, int]] = []
        #: Called (on the server's thread) with every object created, after it is stored.
        self.on_created: list[Callable[[dict[str, Any]], None]] = []
        self._lock = threading.Lock()
        self._ips = itertools.count(10)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self._seed_cluster()

    # ------------------------------------------------------------------ set-up helpers

    def _put(self, group: str, plural: str, obj: dict[str, Any]) -> None:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{len(self.objects)}")
        meta.setdefault("resourceVersion", "1")
        meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.objects[(group, plural, meta.get("namespace", ""), meta["name"])] = obj

    def _seed_cluster(self) -> None:
        for ns in ("default", "kube-system", "istio-system"):
            self._put("", "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        if self.istio_version is not None:
            ready = 1 if self.istiod_ready else 0
            self._put(
                "apps",
                "deployments",
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "istiod", "namespace": "istio-system", "labels": {"app": "istiod"}},
                    "spec": {
                        "replicas": 1,
                        "selector": {"matchLabels": {"app": "istiod"}},
                        "template": {
                            "metadata": {"labels": {"app": "istiod"}},
                            "spec": {
                                "containers": [
                                    {"name": "discovery", "image": f"docker.io/istio/pilot:{self.istio_version}"}
                                ]
                            },
                        },
                    },
                    "status": {"replicas": 1, "readyReplicas": ready, "availableReplicas": ready},
                },
            )
        if self.prometheus:
            labels = {"app.kubernetes.io/name": "prometheus"}
            self._put(
                "",
                "services",
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "prometheus", "namespace": "istio-system"},
                    "spec": {"selector": labels, "ports": [{"name": "http", "port": 9090, "targetPort": 9090}]},
                },
            )
            self._put("", "pods", self._pod("istio-system", "prometheus-7f9c-abcde", labels, inject=False))

    def _pod(self, ns: str, name: str, labels: dict[str, str], *, inject: bool, spec: Any = None) -> dict[str, Any]:
        pod_spec = copy.deepcopy(spec) if spec else {"containers": [{"name": "main", "image": "fake"}]}
        if inject:
            pod_spec.setdefault("containers", []).append({"name": "istio-proxy", "image": "docker.io/istio/proxyv2"})
        statuses = [{"name": c["name"], "ready": True, "restartCount": 0} for c in pod_spec.get("containers", [])]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
            "spec": pod_spec,
            "status": {
                "phase": "Running",
                "podIP": f"10.244.0.{next(self._ips)}",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": statuses,
            },
        }

    def forward_to(self, app: str, port: int, address: tuple[str, int]) -> None:
        """Relay port-forwards to ``port`` of pods labelled ``app=<app>`` (or named ``<app>-...``) to ``address``."""
        self.forwards[(app, port)] = address

    def forward_pod(self, pod: str, port: int, address: tuple[str, int]) -> None:
        """Relay port-forwards to ``port`` of the pod named ``pod`` to ``address`` (before any ``forward_to``)."""
        self.pod_forwards[(pod, port)] = address

    def write_kubeconfig(self, path: Path, *, context: str = "kind-kind", extra_contexts: tuple[str, ...] = ()) -> Path:
        """Write a kubeconfig whose ``context`` (and ``extra_contexts``) point at this server."""
        contexts = [context, *extra_contexts]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": c, "context": {"cluster": "fake", "user": "fake"}} for c in contexts],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def namespaced(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        """Objects of a kind in a namespace (a copy, for assertions)."""
        with self._lock:
            return [copy.deepcopy(o) for (g, p, ns, _), o in self.objects.items() if p == plural and ns == namespace]

    def snapshot(self) -> dict[Key, dict[str, Any]]:
        """A deep copy of every stored object."""
        with self._lock:
            return copy.deepcopy(self.objects)

    def namespaces(self) -> list[str]:
        """Names of the namespaces that exist."""
        with self._lock:
            return sorted(n for (g, p, _, n) in self.objects if p == "namespaces")

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FakeKubeAPI:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start serving on ``127.0.0.1`` (OS-assigned port); ``url`` is set on return."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                app = web.Application()
                app.router.add_route("*", "/{tail:.*}", self._handle)
                self._runner = web.AppRunner(app, handle_signals=False)
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, "127.0.0.1", 0)
                loop.run_until_complete(site.start())
                host, port = self._runner.addresses[0][:2]
                self.url = f"http://{host}:{port}"
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-kube-api", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = None
        self._thread = None

    # ------------------------------------------------------------------ routing

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        parts = [p for p in request.path.split("/") if p]
        if parts == ["version"]:
            return web.json_response({"major": "1", "minor": "33", "gitVersion": "v1.33.1-fake"})
        if parts == ["apis"]:
            return web.json_response(self._discovery())
        if parts == ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] and self.access_reviews:
            return await self._access_review(request)
        if parts[:2] == ["api", "v1"]:
            return await self._resource(request, "", parts[2:])
        if parts[:3] == ["apis", "apps", "v1"]:
            return await self._resource(request, "apps", parts[3:])
        if parts[:2] == ["apis", ISTIO_GROUP] and self.istio_version is not None and len(parts) > 2:
            return await self._resource(request, ISTIO_GROUP, parts[3:], version=parts[2])
        return _status(404, "NotFound", f"the server could not find the requested resource {request.path}")

    def _discovery(self) -> dict[str, Any]:
        groups = [
            {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}]},
            {
                "name": "authorization.k8s.io",
                "versions": [{"groupVersion": "authorization.k8s.io/v1", "version": "v1"}],
            },
        ]
        if self.istio_version is not None:
            versions = [{"groupVersion": f"{ISTIO_GROUP}/{v}", "version": v} for v in ("v1", "v1beta1", "v1alpha3")]
            groups.append({"name": ISTIO_GROUP, "versions": versions})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _denied(self, verb: str, resource: str) -> bool:
        return (verb, resource) in self.forbidden

    async def _access_review(self, request: web.Request) -> web.Response:
        body = await request.json()
        attrs = body.get("spec", {}).get("resourceAttributes", {})
        resource = attrs.get("resource", "")
        if attrs.get("subresource"):
            resource += "/" + attrs["subresource"]
        body["status"] = {"allowed": not self._denied(attrs.get("verb", ""), resource)}
        return web.json_response(body, status=201)

    async def _resource(
        self, request: web.Request, group: str, rest: list[str], version: str = "v1"
    ) -> web.StreamResponse:
        ns = ""
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        if not rest:
            return _status(404, "NotFound", "no resource")
        plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else ""), (rest[2] if len(rest) > 2 else "")
        if plural == "namespaces" and name == "" and ns:
            plural, name, ns = "namespaces", ns, ""
        if sub == "portforward" and plural == "pods":
            return await self._portforward(request, ns, name)
        verb = {"GET": "get" if name else "list", "POST": "create", "DELETE": "delete", "PATCH": "patch"}.get(
            request.method, "unknown"
        )
        if self._denied(verb, plural):
            user = "system:serviceaccount:ci:meshcheck"
            return _status(
                403,
                "Forbidden",
                f'{plural} is forbidden: User "{user}" cannot {verb} resource "{plural}" in API group "{group}"'
                + (f' in the namespace "{ns}"' if ns else " at the cluster scope"),
            )
        # Bodies are read before the lock is taken: awaiting while holding it would block the event loop.
        patch = await request.json() if request.method == "PATCH" else {}
        with self._lock:
            if request.method == "GET" and name:
                obj = self.objects.get((group, plural, ns, name))
                if obj is None:
                    return _status(404, "NotFound", f'{plural} "{name}" not found')
                return web.json_response(obj)
            if request.method == "GET":
                selector = request.query.get("labelSelector", "")
                items = [
                    o
                    for (g, p, n, _), o in self.objects.items()
                    if g == group and p == plural and (not ns or n == ns)
                    and selector_matches(selector, o["metadata"].get("labels", {}))
                ]  # fmt: skip
                return web.json_response({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})
            if request.method == "DELETE":
                return self._delete(group, plural, ns, name)
            if request.method == "PATCH":
                obj = self.objects.get((group, plural, ns, name))
                if obj is None:
                    return _status(404, "NotFound", f'{plural} "{name}" not found')
                kind = request.content_type
                if kind not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                    # What a real API server says to an object body sent as a JSON Patch (a list of operations).
                    return _status(
                        400, "BadRequest", f"unsupported patch for {kind}: json: cannot unmarshal object into Go value"
                    )
                for field in ("labels", "annotations"):
                    for key, value in (patch.get("metadata", {}).get(field) or {}).items():
                        target = obj["metadata"].setdefault(field, {})
                        if value is None:
                            target.pop(key, None)
                        else:
                            target[key] = value
                return web.json_response(obj)
        if request.method == "POST":
            return self._create(group, plural, ns, await request.json(), request.query.get("dryRun") == "All")
        return _status(405, "MethodNotAllowed", request.method)

    def _create(self, group: str, plural: str, ns: str, body: dict[str, Any], dry_run: bool) -> web.Response:
        with self._lock:
            name = body.get("metadata", {}).get("name", "")
            if ns and ("", "namespaces", "", ns) not in self.objects:
                return _status(404, "NotFound", f'namespaces "{ns}" not found')
            if (group, plural, ns, name) in self.objects:
                return _status(409, "AlreadyExists", f'{plural} "{name}" already exists')
            obj = copy.deepcopy(body)
            if ns:
                obj["metadata"]["namespace"] = ns
            injected = self.inject and self._injection_enabled(ns)
            if plural == "pods":
                obj = self._pod(ns, name, obj["metadata"].get("labels", {}), inject=injected, spec=obj.get("spec"))
            if dry_run:
                return web.json_response(obj, status=201)
            self._put(group, plural, obj)
            if plural == "deployments":
                self._run_deployment(ns, obj, injected)
            created = copy.deepcopy(obj)
        for hook in self.on_created:
            hook(created)
        return web.json_response(created, status=201)

    def _injection_enabled(self, ns: str) -> bool:
        obj = self.objects.get(("", "namespaces", "", ns)) or {}
        return bool(obj.get("metadata", {}).get("labels", {}).get("istio-injection") == "enabled")

    def _run_deployment(self, ns: str, deployment: dict[str, Any], injected: bool) -> None:
        template = deployment["spec"]["template"]
        replicas = int(deployment["spec"].get("replicas", 1))
        base = deployment["metadata"]["name"]
        for i in range(replicas):
            pod = self._pod(ns, f"{base}-5d8f7c-{i:05d}", template["metadata"].get("labels", {}), inject=injected,
                            spec=template.get("spec"))  # fmt: skip
            self._put("", "pods", pod)
        deployment["status"] = {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}

    def _delete(self, group: str, plural: str, ns: str, name: str) -> web.Response:
        key = (group, plural, ns, name)
        if key not in self.objects:
            return _status(404, "NotFound", f'{plural} "{name}" not found')
        obj = self.objects.pop(key)
        if plural == "namespaces":
            for k in [k for k in self.objects if k[2] == name]:
                del self.objects[k]
        return web.json_response(
            {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": obj["metadata"]}
        )

    # ------------------------------------------------------------------ port-forward

    def _target(self, ns: str, pod: str, port: int) -> tuple[str, int] | None:
        if (pod, port) in self.pod_forwards:
            return self.pod_forwards[(pod, port)]
        obj = self.objects.get(("", "pods", ns, pod))
        labels = obj["metadata"].get("labels", {}) if obj else {}
        for (app, p), address in self.forwards.items():
            if p == port and (labels.get("app") == app or labels.get("app.kubernetes.io/name") == app):
                return address
        return None

    async def _portforward(self, request: web.Request, ns: str, pod: str) -> web.StreamResponse:
        if self._denied("create", "pods/portforward"):
            return _status(403, "Forbidden", f'pods "{pod}" is forbidden: cannot create resource "pods/portforward"')
        with self._lock:
            exists = ("", "pods", ns, pod) in self.objects
        if not exists:
            return _status(404, "NotFound", f'pods "{pod}" not found')
        port = int(request.query.get("ports", "0"))
        self.forward_log.append((ns, pod, port))
        ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io",))
        await ws.prepare(request)
        header = port.to_bytes(2, "little")
        await ws.send_bytes(b"\x00" + header)
        await ws.send_bytes(b"\x01" + header)
        target = self._target(ns, pod, port)
        try:
            if target is None:
                raise ConnectionRefusedError(f"nothing forwarded for pod {pod} port {port}")
            reader, writer = await asyncio.open_connection(*target)
        except OSError as exc:
            message = f"error forwarding port {port} to pod {pod}: dial tcp 127.0.0.1:{port}: {exc}"
            await ws.send_bytes(b"\x01" + message.encode())
            await ws.close()
            return ws
        await self._pump(ws, reader, writer)
        return ws

    async def _pump(
        self, ws: web.WebSocketResponse, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        async def upstream() -> None:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await ws.send_bytes(b"\x00" + data)
            await ws.close()

        task = asyncio.ensure_future(upstream())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY and msg.data[:1] == b"\x00":
                    writer.write(msg.data[1:])
                    await writer.drain()
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
