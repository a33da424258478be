"""An Envoy admin API look-alike for a pod's sidecar, whose config follows the fake API server.

:class:`FakeSidecarAdmin` reports, from the fake API server's objects, what istiod would have pushed: a
route per VirtualService and a cluster per Service (stamped with the DestinationRule), endpoints per
ready pod, and the stats. ``lag`` delays what it reports, so callers must really wait for convergence;
``frozen`` never updates (istiod down).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.doubles.fake_kube_api import ISTIO_GROUP, FakeKubeAPI, selector_matches

_STATS = ("upstream_rq_retry", "upstream_rq_pending_overflow")


class FakeSidecarAdmin:
    """An Envoy-admin look-alike whose config follows the fake API server's objects (see the module docstring).

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
        self.address = ("127.0.0.1", int(self._server.server_address[1]))
        self.url = f"http://127.0.0.1:{self.address[1]}"
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
        return [o for (g, p, _, _), o in snap["objects"].items() if g == ISTIO_GROUP and p == plural]

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
                path = f"/apis/{ISTIO_GROUP}/v1/namespaces/{meta['namespace']}/virtual-service/{meta['name']}"
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
                            f"/apis/{ISTIO_GROUP}/v1/namespaces/{dmeta['namespace']}/destination-rule/{dmeta['name']}"
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
