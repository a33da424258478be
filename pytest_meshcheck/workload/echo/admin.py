"""The admin-port handler: chaos control, stats, metrics and health of one replica."""

from __future__ import annotations

import json
from typing import Any

from pytest_meshcheck.workload.echo.app import EchoApp
from pytest_meshcheck.workload.echo.chaos import Chaos, decode_chaos_body
from pytest_meshcheck.workload.echo.connection import HttpConnection, Request

_JSON = b"content-type: application/json\r\n"
_ADMIN_ROUTES = {b"/healthz": "GET", b"/chaos": "GET, PUT, DELETE", b"/stats": "GET", b"/metrics": "GET"}


class AdminApp:
    """The admin-port handler: chaos control, stats, metrics, health."""

    def __init__(self, echo: EchoApp) -> None:
        self.echo = echo

    def on_connection(self) -> None:  # noqa: D102
        pass

    def on_abandoned(self) -> None:  # noqa: D102
        pass

    def on_protocol_error(self, status: int) -> None:  # noqa: D102
        pass

    def handle(self, conn: HttpConnection, req: Request) -> None:  # noqa: D102
        path = req.target.partition(b"?")[0]
        method = b"GET" if req.method == b"HEAD" else req.method
        allowed = _ADMIN_ROUTES.get(path)
        if allowed is None:
            names = ", ".join(p.decode() for p in _ADMIN_ROUTES)
            self._json(conn, 404, {"error": f"no admin endpoint {path.decode('latin-1')!r}; try {names}"})
            return
        if method.decode("latin-1") not in allowed.split(", "):
            body = json.dumps({"error": f"{path.decode()} accepts {allowed}"}).encode()
            conn.respond(405, _JSON + f"allow: {allowed}\r\n".encode(), body)
            return
        echo = self.echo
        if path == b"/healthz":
            self._json(conn, 200, {"status": "ok"})
        elif path == b"/stats":
            self._json(conn, 200, echo.stats_doc())
        elif path == b"/metrics":
            conn.respond(
                200, b"content-type: text/plain; version=0.0.4; charset=utf-8\r\n", echo.metrics_text().encode()
            )
        elif method == b"GET":
            self._json(conn, 200, echo.chaos_doc())
        elif method == b"DELETE":
            echo.set_chaos(Chaos())
            self._json(conn, 200, echo.chaos_doc())
        else:
            try:
                chaos = decode_chaos_body(req.body)
            except ValueError as exc:
                self._json(conn, 400, {"error": str(exc)})
                return
            echo.set_chaos(chaos)
            self._json(conn, 200, echo.chaos_doc())

    @staticmethod
    def _json(conn: HttpConnection, status: int, doc: dict[str, Any]) -> None:
        conn.respond(status, _JSON, json.dumps(doc).encode())
