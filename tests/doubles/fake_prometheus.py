"""A Prometheus look-alike for cluster code: ready or not, and ``up`` with one series per fake pod."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.doubles.fake_kube_api import FakeKubeAPI


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

    def up_series(self, query: str) -> list[dict[str, Any]]:
        """The series ``up{namespace="<ns>"}`` selects: one per pod of that namespace, each with value 1."""
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
                    doc = {"status": "success", "data": {"resultType": "vector", "result": prom.up_series(query)}}
                    body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
