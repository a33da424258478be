"""The one request a run repeats: target address, encoded bytes, and which response headers to keep."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from pytest_meshcheck.load.profile import LoadError

_TOKEN_FORBIDDEN = set(' \t\r\n:()<>@,;\\"/[]?={}')
_BODY_METHODS = {"POST", "PUT", "PATCH"}


@dataclass(frozen=True)
class RequestSpec:
    """A validated request: where to connect and the exact bytes to send.

    Attributes:
        address: IP address or host name to connect to.
        port: TCP port.
        target: Request target (path and query).
        method: HTTP method.
        host: ``Host`` header value.
        headers: Extra request headers.
        record_headers: Lower-case names of response headers to keep per request.
    """

    address: str
    port: int
    target: str
    method: str
    host: str
    headers: tuple[tuple[str, str], ...]
    record_headers: tuple[str, ...]

    @property
    def head_only(self) -> bool:
        """Whether responses have no body (``HEAD``)."""
        return self.method == "HEAD"

    def encode(self) -> bytes:
        """The request as HTTP/1.1 bytes, sent unchanged for every request of a run."""
        lines = [f"{self.method} {self.target} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        if self.method in _BODY_METHODS:
            lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _check_token(value: str, what: str) -> None:
    if not value or any(c in _TOKEN_FORBIDDEN or not 32 < ord(c) < 127 for c in value):
        raise LoadError(f"{what}: {value!r} is not a valid HTTP token (letters, digits and !#$%&'*+-.^_`|~)")


def _check_value(value: str, what: str) -> None:
    if "\r" in value or "\n" in value:
        raise LoadError(f"{what}: header values must not contain CR or LF, got {value!r}")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise LoadError(f"{what}: header values must be Latin-1 text, got {value!r}") from None


def build_request(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    host: str | None = None,
    record_headers: Sequence[str] = (),
) -> RequestSpec:
    """Validate the request arguments of ``run_load``.

    Args:
        url: ``http://address:port/path?query`` of the Envoy listener.
        method: HTTP method.
        headers: Extra request headers; a ``Host`` here is used unless ``host`` is given.
        host: ``Host`` header, selecting the service (``order-service``); defaults to the URL's authority.
        record_headers: Response headers to keep per request (besides the three always kept).

    Returns:
        The validated request.

    Raises:
        LoadError: An argument is invalid; the message names it.
    """
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise LoadError(f"url: {url!r} must start with http:// (the engine speaks plain HTTP/1.1 to Envoy)")
    try:
        port = parts.port or 80
    except ValueError:
        raise LoadError(f"url: {url!r} has an invalid port") from None
    if not parts.hostname:
        raise LoadError(f"url: {url!r} has no host; use e.g. http://127.0.0.1:15001/")
    _check_token(method, "method")
    extra: list[tuple[str, str]] = []
    host_header = host
    for name, value in (headers or {}).items():
        _check_token(name, f"headers[{name!r}]")
        _check_value(value, f"headers[{name!r}]")
        if name.lower() == "host":
            host_header = host_header or value
        elif name.lower() in ("content-length", "transfer-encoding", "connection"):
            raise LoadError(f"headers[{name!r}]: set by the engine itself; remove it")
        else:
            extra.append((name, value))
    if host_header is None:
        host_header = parts.netloc.rpartition("@")[2]
    _check_value(host_header, "host")
    for name in record_headers:
        _check_token(name, f"record_headers[{name!r}]")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return RequestSpec(
        address=parts.hostname,
        port=port,
        target=target,
        method=method.upper(),
        host=host_header,
        headers=tuple(extra),
        record_headers=tuple(h.lower() for h in record_headers),
    )
