"""Query overrides, as in Istio's echo app: ``?codes=503:1,200:3``, ``?delay=250ms``, ``?headers=x-a:1``.

Pure functions; each raises ``ValueError`` with a message naming what is wrong and a valid form.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qs

from pytest_meshcheck.durations import parse_duration
from pytest_meshcheck.workload.echo.chaos import MAX_DELAY_S

_T = TypeVar("_T")
#: Override names, in the order counters and metrics list them.
OVERRIDES = ("codes", "delay", "headers")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
# Headers the connection layer owns; letting a query set them would break keep-alive framing.
_RESERVED_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


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
    seconds = parse_duration(text)
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
