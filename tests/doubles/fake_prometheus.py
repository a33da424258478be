"""A Prometheus look-alike for cluster code: ready or not, and ``up`` per fake pod, labelled as Istio's addon does."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.doubles.fake_kube_api import FakeKubeAPI


class FakePrometheus:
    """Answers ``/-/ready`` and ``up{namespace="<ns>",...}`` with one series per matching pod of the fake API server."""

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

    def up_series(self, query: str) -> list[dict[str, Any]]:
        """The series ``up{...}`` selects (exact matchers), one per pod of the fake API server, each with value 1.

        Each pod's labels are those Istio's Prometheus addon gives the targets of its ``kubernetes-pods`` job:
        every pod label (``labelmap`` of ``__meta_kubernetes_pod_label_(.+)``, names sanitised to ``[a-zA-Z0-9_]``),
        then ``namespace`` and ``pod``. A query without a ``namespace`` matcher selects nothing.
        """
        match = re.search(r"up\{([^}]*)\}", query)
        if not match:
            return []
        wanted = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if "namespace" not in wanted:
            return []
        out = []
        for pod in self.api.namespaced("pods", wanted["namespace"]):
            labels = {re.sub(r"[^a-zA-Z0-9_]", "_", k): v for k, v in (pod["metadata"].get("labels") or {}).items()}
            labels.update(namespace=wanted["namespace"], pod=pod["metadata"]["name"])
            if all(labels.get(k) == v for k, v in wanted.items()):
                out.append({"metric": labels, "value": [0, "1"]})
        return out

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
                    doc = {"status": "success", "data": {"resultType": "vector", "result": prom.up_series(query)}}
                    body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
