"""A minimal HTTP/1.1 keep-alive client connection on an asyncio Protocol, one request at a time.

Why hand-written instead of aiohttp: through one Envoy ``--concurrency 1`` with a ``direct_response`` route on
this 2-core machine, closed loop with 8 connections, ``wrk -t1`` did 35-45k req/s and aiohttp 7-15k (25-35 %
of it, with or without uvloop), while a bare Protocol client kept up with ``wrk``. The target is 80 % of
``wrk`` (bench/bench_load.py measures it; this client on uvloop had medians of 0.73-0.92). What a general
client costs per request is futures, tasks and header dictionaries, so this one has none: the engine is
called back directly when a response completes.

Scope: the peer is Envoy (or another HTTP/1.1 server we start), requests carry no body, responses are
framed by ``content-length``, ``transfer-encoding: chunked`` or connection close. Only the headers the
engine asked for are extracted, by searching the lower-cased header block; nothing else is parsed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, cast

from pytest_meshcheck.load.records import PROTOCOL, RESET

_MAX_HEAD = 65536
_UNTIL_CLOSE = -2  # body framing: read until the server closes
_CHUNKED = -3
_NO_RESPONSE = -1


class ResponseSink(Protocol):
    """What a connection reports to; implemented by the engine."""

    def on_response(
        self,
        conn: Http1Connection,
        status: int,
        instance: bytes | None,
        attempts: bytes | None,
        overloaded: bool,
        extra: Sequence[bytes | None],
    ) -> None:
        """A full response to ``conn.request`` arrived; ``conn.reusable`` tells if keep-alive holds."""

    def on_failure(self, conn: Http1Connection, kind: int) -> None:
        """``conn.request`` failed with error ``kind``; the connection is unusable."""


def _header(head: bytes, low: bytes, key: bytes) -> bytes | None:
    """Value of the first header ``key`` (CRLF, name, colon) in ``head``, or None; ``low`` is ``head.lower()``."""
    pos = low.find(key)
    if pos < 0:
        return None
    start = pos + len(key)
    return head[start : head.find(b"\r\n", start)].strip()


class Http1Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; the engine sets ``request`` and calls :meth:`send`.

    Attributes:
        request: Index of the request in flight, or -1 when idle.
        reusable: False once the server asked to close or the connection broke.
        connected: True between ``connection_made`` and ``connection_lost``.
    """

    def __init__(self, sink: ResponseSink, extra_headers: Sequence[str], head_only: bool) -> None:
        self.sink = sink
        self.request = -1
        self.reusable = True
        self.connected = False
        self.transport: asyncio.Transport | None = None
        self._keys = tuple(b"\r\n" + h.lower().encode("latin-1") + b":" for h in extra_headers)
        self._head_only = head_only
        self._buf = b""
        self._body_left = _NO_RESPONSE
        self._chunk_left = 0  # chunked: bytes of chunk data (+2 for its CRLF) still to skip; -1 in trailers
        self._pending: tuple[int, bytes | None, bytes | None, bool, tuple[bytes | None, ...]] | None = None

    # ---------------------------------------------------------------- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        # A cast, not an isinstance check: uvloop's transports do not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.connected = True

    def send(self, request: int, data: bytes) -> None:
        """Write one request; the response is reported to the sink."""
        self.request = request
        assert self.transport is not None
        self.transport.write(data)

    def abort(self) -> None:
        """Drop the connection at once without reporting the request in flight (the engine already did)."""
        self.request = -1
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:  # noqa: D102
        if self._buf:
            data = self._buf + data
            self._buf = b""
        while data:
            if self._body_left == _NO_RESPONSE:
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    if len(data) > _MAX_HEAD:
                        self._fail(PROTOCOL)
                    else:
                        self._buf = data
                    return
                if not self._head(data[: end + 2]):
                    return
                data = data[end + 4 :]
            elif self._body_left >= 0:
                if len(data) < self._body_left:
                    self._body_left -= len(data)
                    return
                data = data[self._body_left :]
                self._complete()
            elif self._body_left == _CHUNKED:
                rest = self._chunks(data)
                if rest is None:
                    return
                data = rest
            else:  # until close: the body is whatever arrives
                return
        if self._body_left == 0:
            self._complete()

    def eof_received(self) -> bool | None:  # noqa: D102
        if self._body_left == _UNTIL_CLOSE:
            self.reusable = False
            self._complete()
        return None

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self.connected = False
        self.reusable = False
        if self.request >= 0:
            if self._body_left == _UNTIL_CLOSE:
                self._complete()
            else:
                self.sink.on_failure(self, RESET)
                self.request = -1

    # ---------------------------------------------------------------- parsing
    def _head(self, head: bytes) -> bool:
        """Parse a response head; False when the connection was failed."""
        if self.request < 0 or not head.startswith(b"HTTP/1.") or len(head) < 12:
            self._fail(PROTOCOL)
            return False
        try:
            status = int(head[9:12])
        except ValueError:
            self._fail(PROTOCOL)
            return False
        if status < 200:  # 1xx: an interim response, the real one follows
            return True
        low = head.lower()
        if head.startswith(b"HTTP/1.0") or b"close" in (_header(head, low, b"\r\nconnection:") or b"").lower():
            self.reusable = False
        if self._head_only or status in (204, 304):
            self._body_left = 0
        else:
            encoding = _header(head, low, b"\r\ntransfer-encoding:")
            length = _header(head, low, b"\r\ncontent-length:")
            if encoding is not None and b"chunked" in encoding.lower():
                self._body_left = _CHUNKED
                self._chunk_left = 0
            elif length is not None:
                try:
                    self._body_left = int(length)
                except ValueError:
                    self._fail(PROTOCOL)
                    return False
            else:
                self._body_left = _UNTIL_CLOSE
        self._pending = (
            status,
            _header(head, low, b"\r\nx-meshcheck-instance:"),
            _header(head, low, b"\r\nx-envoy-attempt-count:"),
            low.find(b"\r\nx-envoy-overloaded:") >= 0,
            tuple(_header(head, low, k) for k in self._keys),
        )
        return True

    def _chunks(self, data: bytes) -> bytes | None:
        """Consume chunked body bytes; return what follows the body, or None when more data is needed."""
        while True:
            if self._chunk_left > 0:
                if len(data) < self._chunk_left:
                    self._chunk_left -= len(data)
                    return None
                data = data[self._chunk_left :]
                self._chunk_left = 0
            line_end = data.find(b"\r\n")
            if line_end < 0:
                if len(data) > _MAX_HEAD:
                    self._fail(PROTOCOL)
                    return None
                self._buf = data
                return None
            line = data[:line_end]
            data = data[line_end + 2 :]
            if self._chunk_left < 0:  # in trailers: an empty line ends the message
                if not line:
                    self._complete()
                    return data
                continue
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                self._fail(PROTOCOL)
                return None
            if size == 0:
                self._chunk_left = -1
            else:
                self._chunk_left = size + 2

    def _complete(self) -> None:
        pending = self._pending
        self._body_left = _NO_RESPONSE
        self._pending = None
        if pending is None or self.request < 0:
            return
        self.sink.on_response(self, *pending)

    def _fail(self, kind: int) -> None:
        self.reusable = False
        self._body_left = _NO_RESPONSE
        if self.request >= 0:
            self.sink.on_failure(self, kind)
        self.abort()
