"""A minimal HTTP/1.1 server connection, shared by the serving port and the admin port.

Keep-alive, pipelining, ``Content-Length`` and chunked bodies (discarded on the serving port, kept on the
admin port up to 1 MiB), one request at a time. Malformed requests get a status and a closed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import re
import socket
import struct
from collections.abc import Callable
from typing import Protocol

_MAX_HEAD = 64 * 1024
_MAX_ADMIN_BODY = 1024 * 1024
_MAX_CHUNK_LINE = 4096


class Request:
    """One parsed request; ``body`` is kept only on the admin port."""

    __slots__ = ("attempt", "body", "http10", "keep_alive", "method", "request_id", "target")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        keep_alive: bool,
        http10: bool,
        attempt: bytes | None,
        request_id: bytes | None = None,
    ):
        self.method = method
        self.target = target
        self.keep_alive = keep_alive
        self.http10 = http10
        self.attempt = attempt
        self.request_id = request_id
        self.body = b""


class Handler(Protocol):
    """What a connection calls; the echo app and the admin app implement it."""

    def handle(self, conn: HttpConnection, req: Request) -> None:
        """Answer ``req`` by calling ``conn.respond``, ``conn.defer`` or ``conn.reset``."""

    def on_connection(self) -> None:
        """A connection was accepted."""

    def on_abandoned(self) -> None:
        """A connection closed while its response was still being delayed."""

    def on_protocol_error(self, status: int) -> None:
        """A malformed request was answered with ``status`` and the connection closed."""


def _status_line(status: int) -> bytes:
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Status"
    return f"HTTP/1.1 {status} {reason}\r\n".encode("ascii")


_STATUS_LINES = {code: _status_line(code) for code in range(100, 600)}
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER = range(6)
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_WATCHED = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"expect", b"x-envoy-attempt-count", b"x-request-id"}
)


class HttpConnection(asyncio.Protocol):
    """A minimal HTTP/1.1 server connection: keep-alive, pipelining, body discard, one request at a time.

    A Protocol rather than streams: no task per connection and no per-request coroutine, which is most of
    the per-request cost that matters when 13 replicas share two cores with Envoy and the load generator.
    """

    def __init__(self, app: Handler, *, keep_body: bool, registry: set[HttpConnection]) -> None:
        self._app = app
        self._keep_body = keep_body
        self._registry = registry
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._state = _HEAD
        self._left = 0
        self._req: Request | None = None
        self._body = bytearray()
        self._busy = False
        self._processing = False
        self._closed = False
        self._eof = False
        self._timer: asyncio.TimerHandle | None = None

    # asyncio callbacks -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        if not isinstance(transport, asyncio.Transport):
            raise TypeError("HttpConnection needs a stream transport")
        self._transport = transport
        self._registry.add(self)
        self._app.on_connection()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self._closed = True
        self._registry.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._busy = False
            self._app.on_abandoned()
        elif self._busy:
            # A response still being worked on (dependency calls in flight): the client gave up on it.
            self._busy = False
            self._app.on_abandoned()

    def data_received(self, data: bytes) -> None:  # noqa: D102
        self._buf += data
        if not self._busy and not self._processing:
            self._process()

    def eof_received(self) -> bool:  # noqa: D102
        # A client that hangs up while its response is delayed has abandoned it (Envoy closing on a per-try
        # timeout looks just like this); as in Go's net/http, cancel instead of answering into a closed pipe.
        # Requests already complete in the buffer are still answered before closing.
        self._eof = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._busy = False
            self._app.on_abandoned()
            self.close()
        elif self._busy and not self._processing:
            # Dependency calls in flight: they go on (the work is not cancelled, as in a real service), but
            # nobody will read the answer.
            self._busy = False
            self._app.on_abandoned()
            self.close()
        elif not self._busy and not self._processing:
            self._process()
        return True

    def pause_writing(self) -> None:  # noqa: D102
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:  # noqa: D102
        if self._transport is not None and not self._closed:
            self._transport.resume_reading()

    # API for handlers --------------------------------------------------------------------------------

    def respond(self, status: int, headers: bytes, body: bytes) -> None:
        """Send the response to the current request; ``headers`` are complete header lines with CRLF."""
        req = self._req
        transport = self._transport
        if req is None or transport is None or self._closed:
            return
        parts = [_STATUS_LINES.get(status) or _status_line(status), headers, b"content-length: %d\r\n" % len(body)]
        if not req.keep_alive:
            parts.append(b"connection: close\r\n")
        elif req.http10:
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if req.method != b"HEAD":
            parts.append(body)
        transport.write(b"".join(parts))
        self._req = None
        self._busy = False
        if not req.keep_alive:
            self.close()
        elif not self._processing:
            self._process()

    def defer(self, delay_s: float, then: Callable[[], None]) -> None:
        """Run ``then`` (which must respond) after ``delay_s`` seconds, unless the connection closes first."""
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._fire, then)

    def reset(self) -> None:
        """Abort with a TCP RST: SO_LINGER(on, 0) makes close() send RST instead of FIN."""
        transport = self._transport
        if transport is None or self._closed:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._closed = True
        self._busy = False
        transport.abort()

    @property
    def closed(self) -> bool:
        """True once the connection is closed or abandoned; a late response is then dropped."""
        return self._closed

    def close(self) -> None:
        """Close after flushing what was written."""
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    # internals ---------------------------------------------------------------------------------------

    def _fire(self, then: Callable[[], None]) -> None:
        self._timer = None
        then()

    def _process(self) -> None:
        self._processing = True
        try:
            while not self._busy and not self._closed and self._step():
                pass
        finally:
            self._processing = False
        if self._eof and not self._busy and not self._closed:
            self.close()

    def _step(self) -> bool:
        """Advance the parser by one state; False when more bytes are needed."""
        buf = self._buf
        state = self._state
        if state == _HEAD:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self._fail(431, f"request head is larger than {_MAX_HEAD} bytes")
                return False
            head = bytes(buf[:end])
            del buf[: end + 4]
            self._start(head)
            return True
        if state in (_BODY, _CHUNK_DATA):
            if not buf:
                return False
            n = min(len(buf), self._left)
            if self._keep_body:
                if len(self._body) + n > _MAX_ADMIN_BODY:
                    self._fail(413, f"request body is larger than {_MAX_ADMIN_BODY} bytes")
                    return False
                self._body += buf[:n]
            del buf[:n]
            self._left -= n
            if self._left == 0:
                if state == _BODY:
                    self._dispatch()
                else:
                    self._state = _CHUNK_END
            return True
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) > _MAX_CHUNK_LINE:
                self._fail(400, "chunked body: line too long")
            return False
        line = bytes(buf[:end])
        del buf[: end + 2]
        if state == _CHUNK_SIZE:
            size_text = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                self._fail(400, "chunked body: invalid chunk size")
                return False
            self._left = int(size_text, 16)
            self._state = _CHUNK_DATA if self._left else _TRAILER
        elif state == _CHUNK_END:
            if line:
                self._fail(400, "chunked body: chunk data longer than its size")
                return False
            self._state = _CHUNK_SIZE
        elif not line:  # _TRAILER: an empty line ends the trailers and the request
            self._dispatch()
        return True

    def _start(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
            self._fail(400, "malformed request line; want METHOD TARGET HTTP/1.1")
            return
        http10 = parts[2] == b"HTTP/1.0"
        length = b""
        chunked = False
        connection = b""
        expect = False
        attempt: bytes | None = None
        request_id: bytes | None = None
        for i in range(1, len(lines)):
            name, sep, value = lines[i].partition(b":")
            if not sep:
                self._fail(400, "malformed header line")
                return
            name = name.lower()
            if name in _WATCHED:
                value = value.strip()
                if name == b"content-length":
                    if length and length != value:
                        self._fail(400, "conflicting content-length headers")
                        return
                    length = value
                elif name == b"transfer-encoding":
                    chunked = value.lower().endswith(b"chunked")
                    if not chunked:
                        self._fail(501, "transfer-encoding other than chunked is not supported")
                        return
                elif name == b"connection":
                    connection = value.lower()
                elif name == b"expect":
                    expect = value.lower() == b"100-continue"
                elif name == b"x-request-id":
                    request_id = value
                else:
                    attempt = value
        keep_alive = b"keep-alive" in connection if http10 else b"close" not in connection
        self._req = Request(parts[0], parts[1], keep_alive, http10, attempt, request_id)
        self._body.clear()
        if chunked:
            # A body framed both ways is a smuggling vector; answer it, then drop the connection.
            self._req.keep_alive = keep_alive and not length
            self._state = _CHUNK_SIZE
        elif length:
            if not length.isdigit():
                self._fail(400, "invalid content-length")
                return
            self._left = int(length)
            if self._keep_body and self._left > _MAX_ADMIN_BODY:
                self._fail(413, f"request body is larger than {_MAX_ADMIN_BODY} bytes")
                return
            self._state = _BODY if self._left else _HEAD
        if expect and self._state != _HEAD and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self._state == _HEAD:
            self._dispatch()

    def _dispatch(self) -> None:
        self._state = _HEAD
        req = self._req
        if req is None:
            return
        if self._keep_body:
            req.body = bytes(self._body)
        self._busy = True
        self._app.handle(self, req)

    def _fail(self, status: int, message: str) -> None:
        self._app.on_protocol_error(status)
        if self._req is None:
            self._req = Request(b"GET", b"", False, False, None)
        self._req.keep_alive = False
        self._busy = True
        body = json.dumps({"error": message}).encode()
        self.respond(status, b"content-type: application/json\r\n", body)
