"""A calling pod's sidecar, as far as plumbing needs one: forwards each request to a pod of the ``Host``'s service.

The echo of a service with calls sends every call to ``--outbound`` with ``Host: <service FQDN>:<port>``,
as Istio's iptables send it to the pod's sidecar. :class:`HostRouter` stands in for that sidecar in the
fake cluster: it takes the service from the ``Host`` (its first DNS label), sends the request to that
service's local echo processes in turn, and adds an ``x-request-id`` when the request has none, as Envoy
does. It enforces no policy: behaviour tests use real Envoys, this only carries bytes.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Headers that belong to one connection, never forwarded.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class HostRouter:
    """Forwards requests by ``Host`` service to the addresses ``upstreams(service)`` returns, round robin.

    Args:
        upstreams: Returns the ``(host, port)`` addresses of a service's pods (read on every request, so pods
            started later are reached).
    """

    def __init__(self, upstreams: Callable[[str], list[tuple[str, int]]]) -> None:
        self.upstreams = upstreams
        self.forwarded: dict[str, int] = {}
        #: Service -> the request paths sent to it, in order.
        self.paths: dict[str, list[str]] = {}
        self._turn = itertools.count()
        self._lock = threading.Lock()
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

    def pick(self, host: str, path: str) -> tuple[str, tuple[str, int] | None]:
        """The service a ``Host`` names, and the next of its addresses (``None`` when it has none)."""
        service = host.rpartition(":")[0].split(".")[0] if ":" in host else host.split(".")[0]
        addresses = self.upstreams(service)
        if not addresses:
            return service, None
        with self._lock:
            self.forwarded[service] = self.forwarded.get(service, 0) + 1
            self.paths.setdefault(service, []).append(path)
            return service, addresses[next(self._turn) % len(addresses)]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        router = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                service, target = router.pick(self.headers.get("host", ""), self.path)
                if target is None:
                    # What Envoy answers for a cluster without endpoints.
                    self._reply(503, [("content-type", "text/plain")], f"no healthy upstream for {service}".encode())
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if not any(k.lower() == "x-request-id" for k in headers):
                    headers["x-request-id"] = str(uuid.uuid4())
                conn = http.client.HTTPConnection(*target, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    self._reply(resp.status, resp.getheaders(), resp.read())
                except OSError as exc:
                    self._reply(503, [("content-type", "text/plain")], f"upstream connect error: {exc}".encode())
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        return Handler
