#!/usr/bin/env python3
"""In-mesh agent: runs the load engine, reads its sidecar's config and relays chaos, inside the mesh.

Standard library only, Python 3.11+. It runs in the ``meshcheck-agent`` pod from a ConfigMap, beside
the load engine modules (``pytest_meshcheck/load/*.py``, with a standard-library record store), so the
requests it sends leave through the pod's own Istio sidecar: the proxy that enforces the policies
under test, exactly as a caller's sidecar does in production. It listens on the pod's loopback only;
the test process reaches it through a Kubernetes port-forward.

HTTP API (JSON bodies)::

    GET  /healthz                       {"status": "ok", "engine": true, "python": "3.12.7"}
    POST /load                          start one load job: 202 {"job": id} (400 invalid, 409 one runs)
    GET  /load/<id>                     202 while it runs; then its records (200) or error (500), once
    GET  /sidecar/config                Istio configs the sidecar runs, and endpoints per cluster
    GET  /sidecar/stats?filter=RE       the sidecar's counters matching RE (Envoy /stats?format=json)
    GET  /sidecar/server_info           the sidecar's Envoy /server_info
    ANY  /workload/<ip>:<port>/<ep>     relayed to a workload's admin endpoint <ep> (chaos, stats,
                                        metrics, healthz, ledger), query string included, on
                                        --workload-admin-port only

A load job is ``{"url": "http://order-service:8084/", "host": "order-service:8084", "headers": {},
"method": "GET", "profile": {"kind": "open", "rate": 50, "duration": 2, "max_requests": 100,
"max_connections": 256}, "timeout": 30, "grace": 5, "record_headers": []}``; the service name is
resolved once, then every request goes to its cluster IP, so the sidecar routes it by ``Host``.

``/sidecar/config`` answers ``{"configs": {"<istio config path>": ["route <vhost>/<route>" | "cluster
<name>", ...]}, "clusters": {"<name>": {"hosts": N, "healthy": M}}}``. The config path is the
``istio.config`` metadata istiod puts on every route and cluster built from a VirtualService or
DestinationRule (``/apis/networking.istio.io/v1/namespaces/<ns>/virtual-service/<name>``).

Run: ``python3 -I -S agent.py --port 8070 --envoy-admin http://127.0.0.1:15000 --workload-admin-port 9901``;
``--resolve HOST:PORT=ADDRESS:PORT`` (repeatable, like curl's) overrides where a service or pod address
connects, for running the agent outside a cluster.
It prints ``MESHCHECK_AGENT_READY {"port": P}`` once listening and exits on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import ipaddress
import itertools
import json
import os
import platform
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

READY_PREFIX = "MESHCHECK_AGENT_READY "
#: The echo admin endpoints relayed; ``ledger`` is the pod's execution ledger (``scope: instance``), which the
#: harness sums over a service's pods.
WORKLOAD_ENDPOINTS = ("chaos", "stats", "metrics", "healthz", "ledger")
_MAX_BODY = 1024 * 1024
_ENVOY_TIMEOUT = 5.0
_WORKLOAD_TIMEOUT = 5.0


class AgentError(Exception):
    """A request the agent cannot serve; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------------------


class Engine:
    """The load engine modules beside this file, imported once; ``error`` says why they are unusable."""

    def __init__(self, resolve: dict[str, tuple[str, int]] | None = None) -> None:
        self.resolve = dict(resolve or {})
        here = os.path.dirname(os.path.abspath(__file__))
        if here not in sys.path:
            sys.path.insert(0, here)
        self.error = ""
        self.modules: dict[str, Any] = {}
        try:
            from pytest_meshcheck.load import engine, profile, request

            self.modules = {"engine": engine, "profile": profile, "request": request}
        except Exception as exc:  # any import failure makes /load unusable, not the whole agent
            self.error = f"{type(exc).__name__}: {exc}"
        self.lock = threading.Lock()
        self.jobs: dict[str, tuple[str, dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    def profile(self, doc: Any) -> Any:
        """Build an ``OpenLoop`` or ``ClosedLoop`` from the job's ``profile``."""
        mod = self.modules["profile"]
        if not isinstance(doc, dict) or doc.get("kind") not in ("open", "closed"):
            raise AgentError(400, "profile: expected an object with kind 'open' or 'closed'")
        fields = {k: v for k, v in doc.items() if k != "kind"}
        cls = mod.OpenLoop if doc["kind"] == "open" else mod.ClosedLoop
        try:
            return cls(**fields)
        except TypeError as exc:
            raise AgentError(400, f"profile: {exc}") from None

    def start(self, job: Any) -> str:
        """Validate a job and start it on a thread; return its id.

        Raises:
            AgentError: 400 for an invalid job, 409 while another job runs, 500 without an engine.
        """
        if self.error:
            raise AgentError(500, f"the load engine modules cannot be imported: {self.error}")
        if not isinstance(job, dict):
            raise AgentError(400, "load job: expected a JSON object")
        with self.lock:
            if any(state == "running" for state, _ in self.jobs.values()):
                raise AgentError(409, "a load job is already running; run one at a time")
            run = self._prepare(job)
            job_id = str(next(self._ids))
            self.jobs[job_id] = ("running", {"started": time.monotonic()})
        threading.Thread(target=self._run, args=(job_id, run), name=f"load job {job_id}", daemon=True).start()
        return job_id

    def poll(self, job_id: str) -> tuple[int, dict[str, Any]]:
        """``(202, progress)`` while a job runs; its answer (200) or error (500) once, then it is forgotten."""
        with self.lock:
            if job_id not in self.jobs:
                raise AgentError(404, f"no load job {job_id!r} (answers are kept until fetched once)")
            state, doc = self.jobs[job_id]
            if state == "running":
                return 202, {"state": "running", "elapsed": time.monotonic() - doc["started"]}
            del self.jobs[job_id]
        return (200 if state == "done" else 500), doc

    def _run(self, job_id: str, run: Callable[[], dict[str, Any]]) -> None:
        try:
            result: tuple[str, dict[str, Any]] = ("done", run())
        except Exception as exc:  # reported to the caller through poll(), never lost on this thread
            result = ("failed", {"error": f"load job {job_id} failed: {type(exc).__name__}: {exc}"})
        with self.lock:
            self.jobs[job_id] = result

    def _prepare(self, job: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        load_error = self.modules["profile"].LoadError
        try:
            url = str(job["url"])
            profile = self.profile(job.get("profile"))
            target, address = resolve_url(url, self.resolve)
            spec = self.modules["request"].build_request(
                target,
                method=str(job.get("method", "GET")),
                headers=job.get("headers") or {},
                host=job.get("host") or urllib.parse.urlsplit(url).netloc,
                record_headers=list(job.get("record_headers") or ()),
            )
            timeout = float(job.get("timeout", 30.0))
            grace = float(job.get("grace", min(timeout, 5.0)))
        except KeyError as exc:
            raise AgentError(400, f"load job: missing field {exc}") from None
        except (load_error, ValueError) as exc:
            raise AgentError(400, f"load job: {exc}") from None
        run_in_loop: Callable[..., Any] = self.modules["engine"].run_in_loop

        def run() -> dict[str, Any]:
            outcome = asyncio.run(run_in_loop(spec, profile, timeout=timeout, grace=grace))
            return {
                "records": outcome.records.to_wire(),
                "started_monotonic": outcome.started_monotonic,
                "started_wall": outcome.started_wall,
                "event_loop": outcome.event_loop,
                "target": {"address": address, "port": spec.port, "host": spec.host},
            }

        return run


def parse_resolve(entries: list[str]) -> dict[str, tuple[str, int]]:
    """``--resolve HOST:PORT=ADDRESS:PORT`` entries (like curl's) as a mapping."""
    out: dict[str, tuple[str, int]] = {}
    for entry in entries:
        source, sep, target = entry.partition("=")
        address, _, port = target.rpartition(":")
        if not sep or not address or not port.isdigit() or ":" not in source:
            raise SystemExit(f"agent: --resolve {entry!r}: want HOST:PORT=ADDRESS:PORT")
        out[source] = (address, int(port))
    return out


def resolve_url(url: str, overrides: dict[str, tuple[str, int]] | None = None) -> tuple[str, str]:
    """Resolve the URL's host name once; return the URL with the IP in its place, and the IP."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise AgentError(400, f"load job: url {url!r} must be http://<service>:<port>/<path>")
    try:
        port = parts.port or 80
    except ValueError:
        raise AgentError(400, f"load job: url {url!r} has an invalid port") from None
    mapped = (overrides or {}).get(f"{parts.hostname}:{port}")
    if mapped is not None:
        address, port = mapped
        return urllib.parse.urlunsplit(("http", f"{address}:{port}", parts.path, parts.query, "")), address
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise AgentError(
            400, f"load job: cannot resolve {parts.hostname!r} ({exc}); is it a Service of this namespace?"
        ) from None
    address = str(infos[0][4][0])
    host = f"[{address}]" if ":" in address else address
    return urllib.parse.urlunsplit(("http", f"{host}:{port}", parts.path, parts.query, "")), address


# ---------------------------------------------------------------------------------------------------------
# Sidecar (Envoy admin on the pod's loopback)
# ---------------------------------------------------------------------------------------------------------


def envoy_get(base: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` from the sidecar's admin API."""
    try:
        with urllib.request.urlopen(base + path, timeout=_ENVOY_TIMEOUT) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, urllib.error.URLError) as exc:
        raise AgentError(
            502, f"the sidecar's admin API at {base} is unreachable ({exc}); is istio-proxy running?"
        ) from None


def _configs(base: str, resource: str) -> list[dict[str, Any]]:
    status, body = envoy_get(base, f"/config_dump?resource={resource}")
    if status == 404:  # Envoy answers 404 when no resource of that type exists
        return []
    if status != 200:
        raise AgentError(502, f"sidecar /config_dump?resource={resource} answered {status}: {body[:200]!r}")
    configs = json.loads(body).get("configs", [])
    return [c for c in configs if isinstance(c, dict)]


def _istio_config(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    value = obj.get("metadata", {}).get("filter_metadata", {}).get("istio", {}).get("config")
    return value if isinstance(value, str) else None


def sidecar_summary(base: str) -> dict[str, Any]:
    """Which Istio configs the sidecar runs (by route and cluster), and the endpoints of each cluster."""
    configs: dict[str, list[str]] = {}
    for resource in ("dynamic_route_configs", "static_route_configs"):
        for entry in _configs(base, resource):
            rc = entry.get("route_config", {})
            for vhost in rc.get("virtual_hosts", []):
                for route in vhost.get("routes", []):
                    path = _istio_config(route)
                    if path:
                        configs.setdefault(path, []).append(
                            f"route {rc.get('name', '')}/{vhost.get('name', '')}/{route.get('name', '')}"
                        )
    for resource in ("dynamic_active_clusters", "static_clusters"):
        for entry in _configs(base, resource):
            cluster = entry.get("cluster", {})
            path = _istio_config(cluster)
            if path:
                configs.setdefault(path, []).append(f"cluster {cluster.get('name', '')}")
    status, body = envoy_get(base, "/clusters?format=json")
    if status != 200:
        raise AgentError(502, f"sidecar /clusters answered {status}: {body[:200]!r}")
    clusters: dict[str, dict[str, int]] = {}
    for cs in json.loads(body).get("cluster_statuses", []):
        hosts = cs.get("host_statuses", [])
        healthy = sum(1 for h in hosts if h.get("health_status", {}).get("eds_health_status", "HEALTHY") == "HEALTHY")
        clusters[str(cs.get("name", ""))] = {"hosts": len(hosts), "healthy": healthy}
    return {"configs": configs, "clusters": clusters}


# ---------------------------------------------------------------------------------------------------------
# Workload admin relay
# ---------------------------------------------------------------------------------------------------------


def relay(
    method: str,
    target: str,
    body: bytes,
    content_type: str,
    admin_port: int,
    overrides: dict[str, tuple[str, int]] | None = None,
    query: str = "",
) -> tuple[int, bytes, str]:
    """Relay a request to ``<ip>:<port>/<endpoint>`` (``target``) with its ``query``; only workload admin endpoints."""
    address, _, endpoint = target.partition("/")
    ip_text, _, port_text = address.rpartition(":")
    try:
        ip = ipaddress.ip_address(ip_text.strip("[]"))
        port = int(port_text)
    except ValueError:
        raise AgentError(400, f"workload address {address!r}: want <pod ip>:<port>") from None
    if port != admin_port:
        raise AgentError(403, f"only the workload admin port {admin_port} is relayed, not {port}")
    if endpoint not in WORKLOAD_ENDPOINTS:
        raise AgentError(
            404, f"workload endpoint {endpoint!r} is not relayed; use one of {', '.join(WORKLOAD_ENDPOINTS)}"
        )
    host, connect_port = (overrides or {}).get(f"{ip}:{port}", (str(ip), port))
    conn = http.client.HTTPConnection(host, connect_port, timeout=_WORKLOAD_TIMEOUT)
    try:
        headers = {"content-type": content_type} if content_type else {}
        # The query goes along: ``/ledger?since=N`` asks for the ids changed after sequence N only.
        conn.request(method, "/" + endpoint + (f"?{query}" if query else ""), body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("content-type", "application/json")
    except OSError as exc:
        raise AgentError(502, f"workload admin {ip}:{port} is unreachable from the agent: {exc}") from None
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------------------
# HTTP server
# ---------------------------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """Routes the API; the server object carries the agent's options and engine."""

    protocol_version = "HTTP/1.1"
    server: AgentServer

    def log_message(self, format: str, *args: Any) -> None:
        """One line per request on stderr (``kubectl logs``)."""
        sys.stderr.write(f"agent: {self.command} {self.path} {format % args}\n")

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc: Any) -> None:
        self._send(status, json.dumps(doc).encode())

    def _body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        if length > _MAX_BODY:
            raise AgentError(413, f"request body of {length} bytes is over the {_MAX_BODY} byte limit")
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        try:
            body = self._body()
            path, _, query = self.path.partition("?")
            agent = self.server
            if path.startswith("/workload/"):
                status, data, ctype = relay(
                    self.command,
                    path[len("/workload/") :],
                    body,
                    self.headers.get("content-type", ""),
                    agent.workload_admin_port,
                    agent.engine.resolve,
                    query,
                )
                self._send(status, data, ctype)
            elif self.command not in ("GET", "HEAD", "POST"):
                raise AgentError(405, f"{self.command} is not allowed on {path}")
            elif path == "/healthz":
                self._json(
                    200,
                    {
                        "status": "ok",
                        "engine": not agent.engine.error,
                        "engine_error": agent.engine.error,
                        "python": platform.python_version(),
                    },
                )
            elif path == "/load" and self.command == "POST":
                try:
                    job = json.loads(body or b"null")
                except ValueError as exc:
                    raise AgentError(400, f"load job is not JSON: {exc}") from None
                self._json(202, {"job": agent.engine.start(job), "state": "running"})
            elif path.startswith("/load/") and self.command in ("GET", "HEAD"):
                self._json(*agent.engine.poll(path[len("/load/") :]))
            elif path == "/sidecar/config":
                self._json(200, sidecar_summary(agent.envoy_admin))
            elif path == "/sidecar/stats":
                params = urllib.parse.parse_qs(query)
                flt = urllib.parse.quote(params.get("filter", [""])[0])
                status, data = envoy_get(agent.envoy_admin, f"/stats?format=json&filter={flt}")
                self._send(status, data)
            elif path == "/sidecar/server_info":
                status, data = envoy_get(agent.envoy_admin, "/server_info")
                self._send(status, data)
            else:
                raise AgentError(404, f"no agent endpoint {self.command} {path}")
        except AgentError as exc:
            self._json(exc.status, {"error": str(exc)})

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch


class AgentServer(ThreadingHTTPServer):
    """The HTTP server plus the agent's state."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        envoy_admin: str,
        workload_admin_port: int,
        resolve: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        super().__init__(address, Handler)
        self.envoy_admin = envoy_admin.rstrip("/")
        self.workload_admin_port = workload_admin_port
        self.engine = Engine(resolve)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(prog="agent.py", description="meshcheck in-mesh load and chaos agent")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8070, help="listen port (0 = any free port)")
    parser.add_argument("--envoy-admin", default="http://127.0.0.1:15000", help="the sidecar's admin API")
    parser.add_argument("--workload-admin-port", type=int, default=9901, help="the echo workloads' admin port")
    parser.add_argument(
        "--resolve",
        action="append",
        default=[],
        metavar="HOST:PORT=ADDRESS:PORT",
        help="connect to ADDRESS:PORT for HOST:PORT (load targets and workload addresses), like curl --resolve",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    opts = build_parser().parse_args(argv)
    server = AgentServer(
        (opts.host, opts.port), opts.envoy_admin, opts.workload_admin_port, parse_resolve(opts.resolve)
    )

    def stop(_signum: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if server.engine.error:
        print(f"agent: load engine unavailable: {server.engine.error}", file=sys.stderr, flush=True)
    print(READY_PREFIX + json.dumps({"port": server.server_address[1]}), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
