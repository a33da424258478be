"""The admin-port handlers: chaos, stats, metrics and health of one replica, or of every instance of a host.

A pod's replica answers at the root; a workload host answers for each instance below ``/instances/<name>``.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from pytest_meshcheck.workload.echo.app import EchoApp
from pytest_meshcheck.workload.echo.chaos import Chaos, decode_chaos_body
from pytest_meshcheck.workload.echo.connection import HttpConnection, Request
from pytest_meshcheck.workload.echo.metrics import metrics_text

if TYPE_CHECKING:
    from pytest_meshcheck.workload.echo.listeners import Listeners

_JSON = b"content-type: application/json\r\n"
_ADMIN_ROUTES = {
    b"/healthz": "GET",
    b"/chaos": "GET, PUT, DELETE",
    b"/stats": "GET",
    b"/metrics": "GET",
    b"/ledger": "GET",
}


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
        self.handle_at(conn, req, req.target.partition(b"?")[0])

    def handle_at(self, conn: HttpConnection, req: Request, path: bytes) -> None:
        """Answer ``req`` as if its path were ``path`` (a workload host strips ``/instances/<name>``)."""
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
        elif path == b"/ledger":
            since = _since(req.target.partition(b"?")[2])
            doc = {"scope": echo.ledger_scope, "ledger": echo.ledger.summary(), "requests": echo.ledger.counts(since)}
            self._json(conn, 200, doc)
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
        json_response(conn, status, doc)


def _since(query: bytes) -> int:
    """``?since=N`` of a ledger request: only ids changed after sequence N (0, everything, when absent)."""
    value = (parse_qs(query.decode("latin-1")).get("since") or ["0"])[0]
    return int(value) if value.isdigit() else 0


def json_response(conn: HttpConnection, status: int, doc: dict[str, Any]) -> None:
    """Answer with ``doc`` as JSON."""
    conn.respond(status, _JSON, json.dumps(doc).encode())


_HOST_ROUTES = {
    b"/healthz": "GET",
    b"/metrics": "GET",
    b"/instances": "GET",
    b"/ledger": "GET",
    b"/outbound": "PUT",
}


class HostAdmin:
    """The admin port of a workload host.

    ``/instances/<name>/{chaos,stats,metrics,healthz,ledger}`` is that instance's own admin API, so a client
    that knows an instance's admin base URL works the same against a pod or a host. At the root:
    ``GET /metrics`` (every instance, one scrape target), ``GET /instances``, ``GET /ledger?service=S`` (the
    service's shared ledger) and ``PUT /outbound`` (``{"<instance>": "HOST:PORT"}``: where each instance's
    calls go, set once its pod's sidecar listens). ``GET|PUT /instances/<name>/serving`` (``{"serving": false}``
    kills the instance as a dead pod: its port refuses connections and its connections are reset; ``true``
    listens on the same port again).
    """

    def __init__(self, apps: dict[str, EchoApp], ports: dict[str, int], listeners: Listeners | None = None) -> None:
        self.apps = apps
        self.ports = ports
        self.listeners = listeners
        self._admins = {name: AdminApp(app) for name, app in apps.items()}

    def on_connection(self) -> None:  # noqa: D102
        pass

    def on_abandoned(self) -> None:  # noqa: D102
        pass

    def on_protocol_error(self, status: int) -> None:  # noqa: D102
        pass

    def handle(self, conn: HttpConnection, req: Request) -> None:  # noqa: D102
        path, _, query = req.target.partition(b"?")
        if path.startswith(b"/instances/"):
            name, _, rest = path[len(b"/instances/") :].partition(b"/")
            instance = unquote(name.decode("latin-1"))
            admin = self._admins.get(instance)
            if admin is None:
                json_response(conn, 404, {"error": f"no instance {name.decode('latin-1')!r} in this host"})
                return
            if rest == b"serving" and self.listeners is not None:
                self._serving(conn, req, instance, self.listeners)
                return
            admin.handle_at(conn, req, b"/" + rest)
            return
        allowed = _HOST_ROUTES.get(path)
        method = b"GET" if req.method == b"HEAD" else req.method
        if allowed is None:
            names = ", ".join(p.decode() for p in (*_HOST_ROUTES, b"/instances/<name>/chaos"))
            json_response(conn, 404, {"error": f"no admin endpoint {path.decode('latin-1')!r}; try {names}"})
            return
        if method.decode("latin-1") not in allowed.split(", "):
            conn.respond(
                405,
                _JSON + f"allow: {allowed}\r\n".encode(),
                json.dumps({"error": f"{path.decode()} accepts {allowed}"}).encode(),
            )
            return
        if path == b"/healthz":
            json_response(conn, 200, {"status": "ok", "instances": len(self.apps)})
        elif path == b"/metrics":
            body = metrics_text(list(self.apps.values())).encode()
            conn.respond(200, b"content-type: text/plain; version=0.0.4; charset=utf-8\r\n", body)
        elif path == b"/instances":
            doc = {name: {**app.stats_doc(), "port": self.ports[name]} for name, app in self.apps.items()}
            json_response(conn, 200, {"instances": doc})
        elif path == b"/ledger":
            self._ledger(conn, query)
        else:
            self._outbound(conn, req.body)

    @staticmethod
    def _serving(conn: HttpConnection, req: Request, instance: str, listeners: Listeners) -> None:
        if req.method in (b"GET", b"HEAD"):
            json_response(conn, 200, {"instance": instance, "serving": listeners.serving(instance)})
            return
        if req.method != b"PUT":
            conn.respond(405, _JSON + b"allow: GET, PUT\r\n", b'{"error": "serving accepts GET, PUT"}')
            return
        try:
            doc = json.loads(req.body.decode("utf-8"))
            if not isinstance(doc, dict) or set(doc) != {"serving"} or not isinstance(doc["serving"], bool):
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            json_response(conn, 400, {"error": 'body must be {"serving": true} or {"serving": false}'})
            return
        if not doc["serving"]:
            listeners.kill(instance)
            json_response(conn, 200, {"instance": instance, "serving": False})
            return

        def revived(task: asyncio.Task[None]) -> None:
            exc = task.exception()
            if exc is not None:
                json_response(conn, 409, {"error": f"cannot listen on {instance}'s port again: {exc}"})
            else:
                json_response(conn, 200, {"instance": instance, "serving": True})

        asyncio.ensure_future(listeners.revive(instance)).add_done_callback(revived)

    def _ledger(self, conn: HttpConnection, query: bytes) -> None:
        service = (parse_qs(query.decode("latin-1")).get("service") or [""])[0]
        since = _since(query)
        for app in self.apps.values():
            if app.identity.service == service:
                ledger = app.ledger
                doc = {"scope": app.ledger_scope, "ledger": ledger.summary(), "requests": ledger.counts(since)}
                json_response(conn, 200, doc)
                return
        known = sorted({a.identity.service for a in self.apps.values()})
        json_response(conn, 404, {"error": f"no service {service!r} in this host; ?service= one of {known}"})

    def _outbound(self, conn: HttpConnection, body: bytes) -> None:
        try:
            doc = json.loads(body.decode("utf-8"))
            if not isinstance(doc, dict):
                raise ValueError("expected an object {instance: HOST:PORT}")
            updates: dict[str, tuple[str, int]] = {}
            for name, value in doc.items():
                if name not in self.apps:
                    raise ValueError(f"no instance {name!r} in this host")
                host, sep, port = str(value).rpartition(":")
                if not sep or not port.isdigit():
                    raise ValueError(f"{name}: {value!r} is not HOST:PORT")
                updates[name] = (host, int(port))
        except (ValueError, UnicodeDecodeError) as exc:
            json_response(conn, 400, {"error": str(exc)})
            return
        for name, address in updates.items():
            self.apps[name].outbound.set_address(address)
        json_response(conn, 200, {"outbound": {n: f"{h}:{p}" for n, (h, p) in updates.items()}})
