"""Dependency calls: what an instance calls for every request it serves, and the HTTP/1.1 client it uses.

A caller sends each call, in order, to its pod's sidecar (``--outbound``, the local mesh) or to the
dependency's own authority (a pod, where Istio's iptables send it to the sidecar anyway), with
``Host: <authority>`` and the request's ``x-request-id``. Retries, timeouts and circuit breaking are the
sidecar's job, so the client itself never retries and has no timeout of its own: a call ends when the
sidecar answers or the connection breaks.

Hand-written rather than ``http.client`` or a third-party client: the workload is standard library only
(it runs from a ConfigMap with ``python3 -I -S``), and ``http.client`` blocks the event loop every instance of
the host shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

#: Header naming the hop that failed (``order-service -> payment-service``), set by the first caller that
#: saw the failure and passed through by every caller above it.
FAILED_HOP_HEADER = "x-meshcheck-failed-hop"
_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024
_IDLE_PER_TARGET = 64


@dataclass(frozen=True)
class CallSpec:
    """One dependency call.

    Attributes:
        service: The called service's short name, for the failed-hop header.
        authority: ``host:port`` of the dependency, sent as ``Host``.
        method: HTTP method.
        path: Request path.
        on_error: ``"fail"``, ``"ignore"`` or a status code to answer with when the call fails.
    """

    service: str
    authority: str
    method: str
    path: str
    on_error: str | int = "fail"


@dataclass(frozen=True)
class CallResult:
    """How one call ended: a status (``None`` when no response came) and the failed hop it reported."""

    status: int | None
    failed_hop: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return self.status is not None and 200 <= self.status < 300


def parse_calls(text: str) -> tuple[CallSpec, ...]:
    """Parse the ``--calls`` JSON list.

    Raises:
        ValueError: Naming the entry and field at fault.
    """
    try:
        doc: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, list):
        raise ValueError("must be a JSON list of {service, authority, method, path, on_error}")
    out: list[CallSpec] = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            raise ValueError(f"[{i}]: must be an object with service, authority, method, path, on_error")
        unknown = set(item) - {"service", "authority", "method", "path", "on_error"}
        if unknown:
            raise ValueError(f"[{i}]: unknown field(s) {sorted(unknown)}")
        for key in ("service", "authority", "method", "path"):
            value = item.get(key)
            if not isinstance(value, str) or not value or not value.isprintable() or " " in value:
                raise ValueError(f"[{i}].{key}: required, non-empty text without spaces")
        if not item["path"].startswith("/"):
            raise ValueError(f"[{i}].path: must start with '/'")
        host, sep, port = item["authority"].rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"[{i}].authority: must be host:port, got {item['authority']!r}")
        on_error = item.get("on_error", "fail")
        valid_status = isinstance(on_error, int) and not isinstance(on_error, bool) and 400 <= on_error <= 599
        if on_error not in ("fail", "ignore") and not valid_status:
            raise ValueError(f"[{i}].on_error: must be 'fail', 'ignore' or a status 400-599, got {on_error!r}")
        out.append(CallSpec(item["service"], item["authority"], item["method"].upper(), item["path"], on_error))
    return tuple(out)


def calls_json(calls: tuple[CallSpec, ...]) -> str:
    """The ``--calls`` argument for ``calls`` (the inverse of :func:`parse_calls`)."""
    return json.dumps(
        [
            {"service": c.service, "authority": c.authority, "method": c.method, "path": c.path, "on_error": c.on_error}
            for c in calls
        ],
        separators=(",", ":"),
    )


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer


class Outbound:
    """Keep-alive connections from one instance to its sidecar (or to each authority), one request each.

    Args:
        address: ``(host, port)`` every call connects to (the pod's sidecar); ``None`` connects to each
            call's authority.
    """

    def __init__(self, address: tuple[str, int] | None = None) -> None:
        self.address = address
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self.calls = 0
        self.failures = 0

    def set_address(self, address: tuple[str, int] | None) -> None:
        """Send later calls to ``address``; idle connections to the old one are closed."""
        self.address = address
        self.close()

    def _target(self, spec: CallSpec) -> tuple[str, int]:
        if self.address is not None:
            return self.address
        host, _, port = spec.authority.rpartition(":")
        return host, int(port)

    async def call(self, spec: CallSpec, request_id: bytes | None) -> CallResult:
        """Send one call and read its answer; never raises for network failures."""
        self.calls += 1
        target = self._target(spec)
        head = [f"{spec.method} {spec.path} HTTP/1.1", f"host: {spec.authority}", "content-length: 0"]
        if request_id is not None:
            head.append("x-request-id: " + request_id.decode("latin-1"))
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        # A pooled connection may have been closed by the sidecar while idle; one fresh retry covers that
        # race (it is the client's connection, not the request: nothing reached the dependency).
        for fresh in (False, True):
            conn = None if fresh else self._take(target)
            reused = conn is not None
            try:
                if conn is None:
                    reader, writer = await asyncio.open_connection(*target)
                    conn = _Connection(reader, writer)
                conn.writer.write(request)
                status, headers, keep = await _read_response(conn.reader, spec.method)
            except (OSError, EOFError, asyncio.IncompleteReadError, ValueError) as exc:
                if conn is not None:
                    conn.writer.close()
                # Only a connection that closed before any answer byte is retried: Envoy answers every request
                # it read (a local reply at worst), so the request never reached it and cannot run twice.
                stale = isinstance(exc, ConnectionResetError | BrokenPipeError) or (
                    isinstance(exc, asyncio.IncompleteReadError) and not exc.partial
                )
                if reused and stale:
                    continue
                self.failures += 1
                return CallResult(None, error=f"{type(exc).__name__}: {exc}")
            if keep:
                self._give(target, conn)
            else:
                conn.writer.close()
            if not 200 <= status < 300:
                self.failures += 1
            return CallResult(status, headers.get(FAILED_HOP_HEADER))
        raise AssertionError("unreachable")  # pragma: no cover

    def _take(self, target: tuple[str, int]) -> _Connection | None:
        pool = self._idle.get(target)
        while pool:
            conn = pool.pop()
            if not conn.writer.is_closing() and not conn.reader.at_eof():
                return conn
            conn.writer.close()
        return None

    def _give(self, target: tuple[str, int], conn: _Connection) -> None:
        pool = self._idle.setdefault(target, [])
        if len(pool) < _IDLE_PER_TARGET:
            pool.append(conn)
        else:
            conn.writer.close()

    def close(self) -> None:
        """Close every idle connection."""
        for pool in self._idle.values():
            for conn in pool:
                with contextlib.suppress(RuntimeError):
                    conn.writer.close()
        self._idle.clear()


async def _read_response(reader: asyncio.StreamReader, method: str) -> tuple[int, dict[str, str], bool]:
    """Read one response; return its status, lower-cased headers and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > _MAX_HEAD:
        raise ValueError("response head too large")
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"malformed status line {lines[0]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    keep = headers.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, headers, keep
    if headers.get("transfer-encoding", "").lower().endswith("chunked"):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip() or b"0", 16)
            if size > _MAX_BODY:
                raise ValueError("response chunk too large")
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length > _MAX_BODY:
            raise ValueError("response body too large")
        await reader.readexactly(length)
    else:
        await reader.read()
        keep = False
    return status, headers, keep
