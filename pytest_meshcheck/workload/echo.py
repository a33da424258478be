#!/usr/bin/env python3
"""Echo workload: one process per replica of a service in a meshcheck test mesh.

Standard library only, Python 3.11+. The same file runs locally behind Envoy and in a Kubernetes pod
from a ConfigMap (``python3 echo.py --service reviews --version v1 --instance reviews-v1-0 --namespace default``).

Serving port (HTTP/1.1, keep-alive, any method and path):
    Answers ``200`` with ``x-meshcheck-service/-version/-instance`` headers and a small JSON body naming the
    replica, the method, the path and the request's ``x-envoy-attempt-count``. Request bodies are read and
    discarded (``Content-Length`` or chunked). Query overrides, as in Istio's echo app:
    ``?codes=503:1,200:3`` (weighted status), ``?delay=250ms`` (Go duration), ``?headers=name:value,...``.
    An invalid override gets ``400`` with a message naming the parameter.

Admin port (separate listener, loopback by default):
    ``GET /healthz``; ``GET|PUT|DELETE /chaos``; ``GET /stats`` (JSON); ``GET /metrics`` (Prometheus text).
    The chaos document is ``{"error": {"status": 503, "probability": 0.5}, "latency": {"delay_ms": 200,
    "probability": 1.0}, "reset": {"probability": 0.3}}``; any subset, ``probability`` defaults to 1.0, and a
    PUT replaces the whole state.

Per request, in this order: chaos reset (TCP RST before any response byte), else chaos latency, then chaos
error (its status), else the query overrides, else 200. Every random draw comes from one ``random.Random``
seeded by ``--seed``, so a run with the same seed, chaos and traffic order repeats exactly.

Lifetime: prints ``MESHCHECK_READY {"port": P, "admin_port": A, "pid": N}`` once both ports listen; from then
on it exits 0 on SIGTERM/SIGINT, and within about 0.25 s after the process named by ``--parent-pid`` is gone
(a SIGTERM during the ~0.1 s start-up ends it by the signal's default action).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import http
import ipaddress
import json
import math
import os
import random
import re
import signal
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs

READY_PREFIX = "MESHCHECK_READY "
_T = TypeVar("_T")
MAX_DELAY_S = 3600.0
PARENT_POLL_S = 0.2
_MAX_HEAD = 64 * 1024
_MAX_ADMIN_BODY = 1024 * 1024
_MAX_CHUNK_LINE = 4096
# create_server(sock=...) calls listen() again, so the backlog must be passed there too.
_BACKLOG = 1024
FAULTS = ("error", "delay", "reset")
OVERRIDES = ("codes", "delay", "headers")

# ---------------------------------------------------------------------------------------------------------
# Parsing helpers (pure functions; unit-tested)
# ---------------------------------------------------------------------------------------------------------

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# Longer units first so that "ms" is not read as "m" followed by garbage.
_GO_COMPONENT = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
# Headers the connection layer owns; letting a query set them would break keep-alive framing.
_RESERVED_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.ParseDuration`` string such as ``250ms``, ``1.5s`` or ``1h2m3s`` into seconds.

    Args:
        text: The duration; a sign is allowed, ``0`` needs no unit, every other number needs one of
            ``ns``, ``us`` (``µs``), ``ms``, ``s``, ``m``, ``h``.

    Returns:
        The duration in seconds (negative if the text starts with ``-``).

    Raises:
        ValueError: The text is not a Go duration.
    """
    body = text
    sign = 1.0
    if body[:1] in ("+", "-") and body:
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"invalid duration {text!r}: empty; use a number and a unit, such as 250ms or 1.5s")
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _GO_COMPONENT.match(body, pos)
        if match is None:
            raise ValueError(
                f"invalid duration {text!r}: each number needs a unit (ns, us, ms, s, m, h), "
                "such as 250ms, 1.5s or 1m30s"
            )
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def parse_codes(spec: str) -> list[tuple[int, int]]:
    """Parse Istio echo's ``codes`` spec ``code[:weight][,code[:weight]]...`` (weight defaults to 1).

    Args:
        spec: Such as ``503:1,200:3``.

    Returns:
        ``(status, weight)`` pairs in the given order.

    Raises:
        ValueError: A code is not an integer in 200-599, a weight is not a non-negative integer, or all
            weights are zero.
    """
    pairs: list[tuple[int, int]] = []
    for item in spec.split(","):
        parts = item.split(":")
        if len(parts) > 2:
            raise ValueError(f"invalid {item!r}: want code or code:weight, such as 503:1")
        try:
            code = int(parts[0])
        except ValueError:
            raise ValueError(f"invalid {item!r}: the code must be an integer, such as 503") from None
        if not 200 <= code <= 599:
            raise ValueError(f"invalid {item!r}: the code must be an HTTP status in 200-599")
        weight = 1
        if len(parts) == 2:
            try:
                weight = int(parts[1])
            except ValueError:
                raise ValueError(f"invalid {item!r}: the weight must be an integer, such as 503:1") from None
            if weight < 0:
                raise ValueError(f"invalid {item!r}: the weight must be 0 or more")
        pairs.append((code, weight))
    if sum(weight for _, weight in pairs) == 0:
        raise ValueError(f"invalid {spec!r}: at least one weight must be above 0")
    return pairs


def pick_code(pairs: list[tuple[int, int]], rng: random.Random) -> int:
    """Pick a status from ``(status, weight)`` pairs with probability weight / total weight."""
    roll = rng.randrange(sum(weight for _, weight in pairs))
    for code, weight in pairs:
        if roll < weight:
            return code
        roll -= weight
    raise AssertionError("unreachable: roll is below the total weight")


def parse_response_headers(spec: str) -> list[tuple[str, str]]:
    """Parse ``name:value[,name:value]...`` into headers to add to the response.

    The value is everything after the first colon, so it may itself contain colons but not commas.

    Args:
        spec: Such as ``x-a:1,cache-control:no-store``.

    Returns:
        ``(name, value)`` pairs.

    Raises:
        ValueError: A name is missing or not an HTTP token, a value holds control or non-ASCII characters,
            or a name is one the connection layer owns (content-length, transfer-encoding, connection).
    """
    headers: list[tuple[str, str]] = []
    for item in spec.split(","):
        name, sep, value = item.partition(":")
        if not sep:
            raise ValueError(f"invalid {item!r}: want name:value, such as x-test:1")
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}: use letters, digits and -, such as x-test")
        if not _HEADER_VALUE.fullmatch(value):
            raise ValueError(f"invalid value for header {name!r}: use printable ASCII only")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {name!r} cannot be set: the server manages it")
        headers.append((name, value))
    return headers


@dataclass(frozen=True)
class Overrides:
    """Per-request behaviour asked for in the query string; ``None`` means not asked for."""

    codes: list[tuple[int, int]] | None = None
    delay_s: float | None = None
    headers: list[tuple[str, str]] | None = None

    def used(self) -> list[str]:
        """Names of the overrides present, in ``OVERRIDES`` order."""
        present = (self.codes is not None, self.delay_s is not None, self.headers is not None)
        return [name for name, on in zip(OVERRIDES, present, strict=True) if on]


def parse_overrides(query: str) -> Overrides:
    """Read ``codes``, ``delay`` and ``headers`` from a URL query string.

    Like Go's ``FormValue``, the first value of a parameter wins, an empty value counts as absent and other
    parameters are ignored.

    Args:
        query: The part of the request target after ``?``, still percent-encoded.

    Returns:
        The overrides found.

    Raises:
        ValueError: An override is invalid; the message names the query parameter.
    """
    params = parse_qs(query, keep_blank_values=False)
    codes = _param(params, "codes", parse_codes)
    delay = _param(params, "delay", _parse_delay)
    headers = _param(params, "headers", parse_response_headers)
    return Overrides(codes=codes, delay_s=delay, headers=headers)


def _parse_delay(text: str) -> float:
    seconds = parse_go_duration(text)
    if not 0.0 <= seconds <= MAX_DELAY_S:
        raise ValueError(f"delay {text!r} must be between 0 and 1h")
    return seconds


def _param(params: dict[str, list[str]], name: str, parse: Callable[[str], _T]) -> _T | None:
    if name not in params:
        return None
    try:
        return parse(params[name][0])
    except ValueError as exc:
        raise ValueError(f"query parameter {name!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------------------
# Chaos state
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorFault:
    """Answer with ``status`` instead of serving, with the given probability."""

    status: int
    probability: float = 1.0


@dataclass(frozen=True)
class LatencyFault:
    """Sleep ``delay_ms`` milliseconds before answering, with the given probability."""

    delay_ms: float
    probability: float = 1.0


@dataclass(frozen=True)
class ResetFault:
    """Reset the TCP connection (RST) instead of answering, with the given probability."""

    probability: float = 1.0


@dataclass(frozen=True)
class Chaos:
    """The whole chaos state of one replica; a section that is ``None`` is off."""

    error: ErrorFault | None = None
    latency: LatencyFault | None = None
    reset: ResetFault | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON document ``PUT /chaos`` accepts and ``GET /chaos`` returns (absent sections omitted)."""
        doc: dict[str, Any] = {}
        if self.error is not None:
            doc["error"] = {"status": self.error.status, "probability": self.error.probability}
        if self.latency is not None:
            doc["latency"] = {"delay_ms": self.latency.delay_ms, "probability": self.latency.probability}
        if self.reset is not None:
            doc["reset"] = {"probability": self.reset.probability}
        return doc

    def active(self) -> dict[str, float]:
        """Probability per fault name (``error``, ``delay``, ``reset``); 0 when the section is off."""
        return {
            "error": self.error.probability if self.error else 0.0,
            "delay": self.latency.probability if self.latency else 0.0,
            "reset": self.reset.probability if self.reset else 0.0,
        }


_SECTION_FIELDS = {
    "error": ("status", "probability"),
    "latency": ("delay_ms", "probability"),
    "reset": ("probability",),
}


def _number(section: dict[str, Any], key: str, where: str, low: float, high: float) -> float:
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"chaos field '{where}.{key}': must be a number, got {json.dumps(value)}")
    if not low <= value <= high:
        raise ValueError(f"chaos field '{where}.{key}': must be between {low:g} and {high:g}, got {value}")
    return value


def parse_chaos(doc: object) -> Chaos:
    """Validate a decoded ``PUT /chaos`` document.

    Args:
        doc: The decoded JSON body.

    Returns:
        The chaos state it describes.

    Raises:
        ValueError: The document is invalid; the message names the field (such as ``error.status``).
    """
    if not isinstance(doc, dict):
        raise ValueError("chaos body must be a JSON object with any of the fields error, latency, reset")
    for key in doc:
        if key not in _SECTION_FIELDS:
            raise ValueError(f"chaos field '{key}': unknown field; allowed: error, latency, reset")
    sections: dict[str, dict[str, Any]] = {}
    for name, fields in _SECTION_FIELDS.items():
        if name not in doc:
            continue
        section = doc[name]
        if not isinstance(section, dict):
            raise ValueError(f"chaos field '{name}': must be an object with fields {', '.join(fields)}")
        for key in section:
            if key not in fields:
                raise ValueError(f"chaos field '{name}.{key}': unknown field; allowed: {', '.join(fields)}")
        for key in fields:
            if key != "probability" and key not in section:
                raise ValueError(f"chaos field '{name}.{key}': required")
        sections[name] = section
    error = latency = reset = None
    if "error" in sections:
        section = sections["error"]
        status = section["status"]
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(
                f"chaos field 'error.status': must be an integer HTTP status in 400-599, got {json.dumps(status)}"
            )
        error = ErrorFault(status, _probability(section, "error"))
    if "latency" in sections:
        section = sections["latency"]
        delay_ms = _number(section, "delay_ms", "latency", 0.0, MAX_DELAY_S * 1000.0)
        latency = LatencyFault(delay_ms, _probability(section, "latency"))
    if "reset" in sections:
        reset = ResetFault(_probability(sections["reset"], "reset"))
    return Chaos(error=error, latency=latency, reset=reset)


def _probability(section: dict[str, Any], where: str) -> float:
    if "probability" not in section:
        return 1.0
    return _number(section, "probability", where, 0.0, 1.0)


def decode_chaos_body(body: bytes) -> Chaos:
    """Decode and validate a ``PUT /chaos`` body; NaN and Infinity are rejected."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"chaos body: {name} is not allowed; use a finite number")

    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=no_constants)
    except UnicodeDecodeError:
        raise ValueError("chaos body must be UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"chaos body is not valid JSON: {exc}") from None
    return parse_chaos(doc)


def _roll(rng: random.Random, probability: float) -> bool:
    # Certain outcomes draw nothing, which keeps the hot path cheap and the seeded stream unaffected by them.
    return probability >= 1.0 or (probability > 0.0 and rng.random() < probability)


# ---------------------------------------------------------------------------------------------------------
# Prometheus text format
# ---------------------------------------------------------------------------------------------------------


def escape_label_value(value: str) -> str:
    """Escape a label value for the Prometheus text format (backslash, double quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(base: dict[str, str], **extra: str) -> str:
    merged = {**base, **extra}
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in merged.items()) + "}"


# ---------------------------------------------------------------------------------------------------------
# HTTP/1.1 connection
# ---------------------------------------------------------------------------------------------------------


class Request:
    """One parsed request; ``body`` is kept only on the admin port."""

    __slots__ = ("attempt", "body", "http10", "keep_alive", "method", "target")

    def __init__(self, method: bytes, target: bytes, keep_alive: bool, http10: bool, attempt: bytes | None):
        self.method = method
        self.target = target
        self.keep_alive = keep_alive
        self.http10 = http10
        self.attempt = attempt
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
_WATCHED = frozenset({b"content-length", b"transfer-encoding", b"connection", b"expect", b"x-envoy-attempt-count"})


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
        transport.abort()

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
                else:
                    attempt = value
        keep_alive = b"keep-alive" in connection if http10 else b"close" not in connection
        self._req = Request(parts[0], parts[1], keep_alive, http10, attempt)
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


# ---------------------------------------------------------------------------------------------------------
# Applications
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who this replica is; every response and metric carries it."""

    service: str
    version: str
    instance: str
    namespace: str


class Counters:
    """Everything the echo app counts; read by ``GET /stats`` and ``GET /metrics``."""

    def __init__(self) -> None:
        self.received = 0
        self.by_status: dict[int, int] = {200: 0}
        self.faults = dict.fromkeys(FAULTS, 0)
        self.overrides = dict.fromkeys(OVERRIDES, 0)
        self.override_requests = 0
        self.abandoned = 0
        self.connections = 0


class EchoApp:
    """The serving-port handler: chaos, query overrides, identity response."""

    def __init__(self, identity: Identity, rng: random.Random, seed: int) -> None:
        self.identity = identity
        self.rng = rng
        self.seed = seed
        self.counters = Counters()
        self.chaos = Chaos()
        self.generation = 0
        self._headers = (
            f"x-meshcheck-service: {identity.service}\r\n"
            f"x-meshcheck-version: {identity.version}\r\n"
            f"x-meshcheck-instance: {identity.instance}\r\n"
            "content-type: application/json\r\n"
        ).encode()
        ident = json.dumps(
            {
                "service": identity.service,
                "version": identity.version,
                "instance": identity.instance,
                "namespace": identity.namespace,
            },
            separators=(",", ":"),
        )
        self._body_prefix = ident[:-1] + ',"method":'

    def set_chaos(self, chaos: Chaos) -> None:
        """Replace the chaos state; every call is a new generation."""
        self.chaos = chaos
        self.generation += 1

    # Handler -----------------------------------------------------------------------------------------

    def on_connection(self) -> None:  # noqa: D102
        self.counters.connections += 1

    def on_abandoned(self) -> None:  # noqa: D102
        self.counters.abandoned += 1

    def on_protocol_error(self, status: int) -> None:  # noqa: D102
        self._count(status)

    def handle(self, conn: HttpConnection, req: Request) -> None:  # noqa: D102
        counters = self.counters
        counters.received += 1
        chaos = self.chaos
        rng = self.rng
        if chaos.reset is not None and _roll(rng, chaos.reset.probability):
            counters.faults["reset"] += 1
            conn.reset()
            return
        delay = 0.0
        fault = b""
        if chaos.latency is not None and _roll(rng, chaos.latency.probability):
            counters.faults["delay"] += 1
            delay = chaos.latency.delay_ms / 1000.0
            fault = b"delay"
        target = req.target
        path, qmark, query = target.partition(b"?")
        extra = b""
        error: str | None = None
        status = 200
        if chaos.error is not None and _roll(rng, chaos.error.probability):
            counters.faults["error"] += 1
            status = chaos.error.status
            fault = fault + b",error" if fault else b"error"
        elif qmark and query:
            status, extra, error, more_delay = self._apply_overrides(query)
            delay += more_delay
        if fault:
            extra += b"x-meshcheck-fault: " + fault + b"\r\n"
        body = self._body(req, path, fault, error)
        if delay > 0.0:
            conn.defer(delay, lambda: self._send(conn, status, extra, body))
        else:
            self._send(conn, status, extra, body)

    # internals ---------------------------------------------------------------------------------------

    def _apply_overrides(self, query: bytes) -> tuple[int, bytes, str | None, float]:
        """Status, extra header lines, error message and delay from the query overrides."""
        try:
            overrides = parse_overrides(query.decode("latin-1"))
        except ValueError as exc:
            return 400, b"", str(exc), 0.0
        used = overrides.used()
        if not used:
            return 200, b"", None, 0.0
        counters = self.counters
        counters.override_requests += 1
        for name in used:
            counters.overrides[name] += 1
        status = pick_code(overrides.codes, self.rng) if overrides.codes is not None else 200
        extra = b"".join(f"{k}: {v}\r\n".encode("ascii") for k, v in overrides.headers or ())
        return status, extra, None, overrides.delay_s or 0.0

    def _body(self, req: Request, path: bytes, fault: bytes, error: str | None) -> bytes:
        text = (
            self._body_prefix
            + encode_basestring_ascii(req.method.decode("latin-1"))
            + ',"path":'
            + encode_basestring_ascii(path.decode("utf-8", "replace"))
        )
        if req.attempt is not None:
            text += ',"x-envoy-attempt-count":' + encode_basestring_ascii(req.attempt.decode("latin-1"))
        if fault:
            text += ',"fault":"' + fault.decode() + '"'
        if error is not None:
            text += ',"error":' + encode_basestring_ascii(error)
        return (text + "}").encode()

    def _send(self, conn: HttpConnection, status: int, extra: bytes, body: bytes) -> None:
        self._count(status)
        conn.respond(status, self._headers + extra, body)

    def _count(self, status: int) -> None:
        by_status = self.counters.by_status
        by_status[status] = by_status.get(status, 0) + 1

    # reports -----------------------------------------------------------------------------------------

    def chaos_doc(self) -> dict[str, Any]:
        """Body of ``GET /chaos``."""
        return {"chaos": self.chaos.to_json(), "generation": self.generation}

    def stats_doc(self) -> dict[str, Any]:
        """Body of ``GET /stats``."""
        c = self.counters
        return {
            **{k: getattr(self.identity, k) for k in ("service", "version", "instance", "namespace")},
            "pid": os.getpid(),
            "seed": self.seed,
            "requests_received": c.received,
            "responses_total": sum(c.by_status.values()),
            "responses_by_status": {str(k): v for k, v in sorted(c.by_status.items())},
            "faults_injected": dict(c.faults),
            "query_overrides": dict(c.overrides),
            "override_requests": c.override_requests,
            "abandoned": c.abandoned,
            "connections": c.connections,
            "chaos_generation": self.generation,
            "chaos": self.chaos.to_json(),
        }

    def metrics_text(self) -> str:
        """Body of ``GET /metrics`` in the Prometheus text exposition format 0.0.4."""
        c = self.counters
        base = {
            "service": self.identity.service,
            "version": self.identity.version,
            "instance": self.identity.instance,
            "namespace": self.identity.namespace,
        }
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(
                f"{name}{labels} {value:g}" if isinstance(value, float) else f"{name}{labels} {value}"
                for labels, value in samples
            )

        family(
            "meshcheck_echo_requests_received_total",
            "counter",
            "Requests read on the serving port, before any fault.",
            [(_labels(base), c.received)],
        )
        family(
            "meshcheck_echo_requests_total",
            "counter",
            "Responses sent on the serving port, by status code (resets are not responses).",
            [(_labels(base, code=str(k)), v) for k, v in sorted(c.by_status.items())],
        )
        family(
            "meshcheck_echo_faults_injected_total",
            "counter",
            "Chaos faults injected, by kind.",
            [(_labels(base, fault=k), c.faults[k]) for k in FAULTS],
        )
        family(
            "meshcheck_echo_query_overrides_total",
            "counter",
            "Requests that used a query override, by override.",
            [(_labels(base, override=k), c.overrides[k]) for k in OVERRIDES],
        )
        family(
            "meshcheck_echo_requests_abandoned_total",
            "counter",
            "Delayed requests whose connection closed before the response was sent.",
            [(_labels(base), c.abandoned)],
        )
        family(
            "meshcheck_echo_connections_total",
            "counter",
            "Connections accepted on the serving port.",
            [(_labels(base), c.connections)],
        )
        active = self.chaos.active()
        family(
            "meshcheck_echo_chaos_active",
            "gauge",
            "1 while the chaos fault is configured with a probability above 0.",
            [(_labels(base, fault=k), 1 if active[k] > 0.0 else 0) for k in FAULTS],
        )
        family(
            "meshcheck_echo_chaos_probability",
            "gauge",
            "Configured probability of each chaos fault.",
            [(_labels(base, fault=k), float(active[k])) for k in FAULTS],
        )
        family(
            "meshcheck_echo_chaos_generation",
            "gauge",
            "Increments on every chaos change (PUT or DELETE /chaos).",
            [(_labels(base), self.generation)],
        )
        return "\n".join(out) + "\n"


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


# ---------------------------------------------------------------------------------------------------------
# Process: CLI, listeners, signals, parent watch
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """Parsed command line."""

    identity: Identity
    host: str
    port: int
    admin_host: str
    admin_port: int
    parent_pid: int | None
    seed: int | None


def _name(text: str) -> str:
    if not text or not text.isprintable():
        raise argparse.ArgumentTypeError(f"must be non-empty printable text, got {text!r}")
    return text


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer 0-65535 (0 = any free port), got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be an integer 0-65535 (0 = any free port), got {text!r}")
    return value


def _pid(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive process id, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive process id, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (exit status 2 and a message naming the option on bad input)."""
    parser = argparse.ArgumentParser(prog="echo.py", description="meshcheck echo workload (one replica).")
    parser.add_argument("--service", required=True, type=_name, help="service name, such as reviews")
    parser.add_argument("--version", required=True, type=_name, help="version label, such as v1")
    parser.add_argument("--instance", required=True, type=_name, help="replica id, such as reviews-v1-0")
    parser.add_argument("--namespace", required=True, type=_name, help="namespace, such as default")
    parser.add_argument("--host", default="127.0.0.1", help="serving address (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=0, help="serving port (default 0 = any free port)")
    parser.add_argument("--admin-host", default="127.0.0.1", help="admin address (default 127.0.0.1)")
    parser.add_argument("--admin-port", type=_port, default=0, help="admin port (default 0 = any free port)")
    parser.add_argument("--parent-pid", type=_pid, default=None, help="exit once this process is gone")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random generator (default: random)")
    return parser


def parse_args(argv: list[str] | None = None) -> Options:
    """Parse the command line; exits with status 2 and a message on bad input."""
    ns = build_parser().parse_args(argv)
    return Options(
        identity=Identity(ns.service, ns.version, ns.instance, ns.namespace),
        host=ns.host,
        port=ns.port,
        admin_host=ns.admin_host,
        admin_port=ns.admin_port,
        parent_pid=ns.parent_pid,
        seed=ns.seed,
    )


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """State letter and start time (clock ticks since boot) from /proc, or None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return ("X", 0) if os.path.isdir("/proc/self") else None
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[19])


def parent_alive(pid: int, start_ticks: int | None) -> bool:
    """Whether process ``pid`` still runs: not gone, not a zombie, and not a new process reusing the pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, start = stat
    # A SIGKILLed parent stays a zombie until its own parent reaps it; kill(pid, 0) still succeeds then.
    if state in ("Z", "X"):
        return False
    return start_ticks is None or start == start_ticks


def _set_parent_death_signal(parent_pid: int) -> None:
    # PR_SET_PDEATHSIG fires when the *thread* that forked us exits, and only for our direct parent; the
    # /proc poll in _watch_parent is the guarantee, this just makes the common case immediate.
    if not sys.platform.startswith("linux") or os.getppid() != parent_pid:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


async def _watch_parent(pid: int, start_ticks: int | None, stop: asyncio.Event) -> None:
    while parent_alive(pid, start_ticks):
        await asyncio.sleep(PARENT_POLL_S)
    print(f"echo: parent process {pid} is gone; exiting", file=sys.stderr, flush=True)
    stop.set()


def _listen(host: str, port: int) -> socket.socket:
    family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return socket.create_server(addr[:2], family=family, backlog=_BACKLOG)


async def serve(opts: Options) -> int:
    """Run until SIGTERM/SIGINT or parent death; the exit status."""
    loop = asyncio.get_running_loop()
    start_ticks: int | None = None
    if opts.parent_pid is not None:
        stat = _proc_stat(opts.parent_pid)
        start_ticks = stat[1] if stat is not None else None
        if not parent_alive(opts.parent_pid, start_ticks):
            print(f"echo: --parent-pid {opts.parent_pid} is not running; exiting", file=sys.stderr)
            return 1
        _set_parent_death_signal(opts.parent_pid)
    seed = opts.seed if opts.seed is not None else random.SystemRandom().getrandbits(63)
    echo = EchoApp(opts.identity, random.Random(seed), seed)
    admin = AdminApp(echo)
    connections: set[HttpConnection] = set()
    sockets: list[socket.socket] = []
    for option, host, port in (
        ("--host/--port", opts.host, opts.port),
        ("--admin-host/--admin-port", opts.admin_host, opts.admin_port),
    ):
        try:
            sockets.append(_listen(host, port))
        except OSError as exc:
            print(f"echo: cannot listen on {host}:{port} ({option}): {exc}", file=sys.stderr)
            for sock in sockets:
                sock.close()
            return 1
    admin_ip = ipaddress.ip_address(sockets[1].getsockname()[0])
    if not admin_ip.is_loopback:
        print(
            f"echo: warning: the admin API listens on {admin_ip}, not loopback; anyone who reaches it can "
            "change chaos (use --admin-host 127.0.0.1 and port-forward instead)",
            file=sys.stderr,
        )
    server = await loop.create_server(
        lambda: HttpConnection(echo, keep_body=False, registry=connections), sock=sockets[0], backlog=_BACKLOG
    )
    admin_server = await loop.create_server(
        lambda: HttpConnection(admin, keep_body=True, registry=connections), sock=sockets[1], backlog=_BACKLOG
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = None
    if opts.parent_pid is not None:
        watcher = asyncio.create_task(_watch_parent(opts.parent_pid, start_ticks, stop))
    ready = {"port": sockets[0].getsockname()[1], "admin_port": sockets[1].getsockname()[1], "pid": os.getpid()}
    try:
        sys.stdout.write(READY_PREFIX + json.dumps(ready) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        pass  # nobody reads the ready line; keep serving
    await stop.wait()
    server.close()
    admin_server.close()
    for conn in list(connections):
        conn.close()
    if watcher is not None:
        watcher.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python3 echo.py --service S --version V --instance I --namespace N``."""
    opts = parse_args(argv)
    try:
        return asyncio.run(serve(opts))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
