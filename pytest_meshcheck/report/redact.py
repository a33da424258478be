"""Mask values that look like secrets before a record leaves the process.

Reports end up as CI artifacts that many people can open, and records carry free text (error messages,
tracebacks, request specs, command lines) that may quote a header or a URL. Redaction works on text
and on nested JSON-like data; it never changes the number of lines, so policy line numbers stay right.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[REDACTED]"

# Mapping keys whose whole value is a secret, compared after lower-casing and mapping "_" to "-".
_SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "apikey",
        "token",
        "access-token",
        "refresh-token",
        "id-token",
        "password",
        "passwd",
        "secret",
        "client-secret",
    }
)

_SECRET_SUFFIXES = ("-password", "-passwd", "-secret", "-token", "-api-key", "-apikey")

# Order matters: header values go first so that "Authorization: Bearer x" becomes one marker, not two.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # "Authorization: Basic abc", "'authorization': 'Bearer x'", "Proxy-Authorization=..." up to the
    # end of the quoted value or line; never across a newline.
    (
        re.compile(r"""(?i)\b((?:proxy-)?authorization["']?[ \t]*[:=][ \t]*["']?)[^"'\r\n,}]+"""),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer[ \t]+)[A-Za-z0-9\-._~+/]+=*"), rf"\1{REDACTED}"),
    # token=..., access_token=..., password=..., client_secret=..., api_key=... in URLs and text.
    (
        re.compile(r"(?i)\b([\w-]*(?:token|password|passwd|secret|api[-_]?key)=)[^&\s#'\"<>,;]+"),
        rf"\1{REDACTED}",
    ),
    # The same names written as a key in YAML, JSON or a Python repr: "password: x", "'token': 'x'".
    (
        re.compile(r"""(?i)\b([\w-]*(?:token|password|passwd|secret|api[-_]?key)["']?[ \t]*:[ \t]*["']?)[^"'\s,}]+"""),
        rf"\1{REDACTED}",
    ),
    # Credentials in a URL's user-info part: scheme://user:password@host.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@"), rf"\1{REDACTED}@"),
    # JSON Web Tokens wherever they appear.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
)


def redact_text(text: str) -> str:
    """Return ``text`` with secret-looking values replaced by ``[REDACTED]``.

    Covers ``Authorization``/``Proxy-Authorization`` header values, bearer tokens, ``token=``,
    ``password=``, ``secret=`` and ``api_key=`` parameters (with any prefix, such as ``access_token=``),
    passwords in URLs (``https://user:pw@host``) and JSON Web Tokens.
    """
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def is_secret_key(key: str) -> bool:
    """True when a mapping key names a secret, or ends in one (``admin_password``, ``auth-token``)."""
    name = key.strip().lower().replace("_", "-")
    return name in _SECRET_KEYS or name.endswith(_SECRET_SUFFIXES)


def redact_data(value: Any) -> Any:
    """Return a copy of JSON-like ``value`` with secrets masked.

    Strings are passed through :func:`redact_text`; a mapping entry whose key names a secret (see
    :func:`is_secret_key`) has its whole value replaced. Keys themselves are kept (they are metric names,
    header names and field names, which a reader needs).
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) and v not in (None, "") else redact_data(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    return value
