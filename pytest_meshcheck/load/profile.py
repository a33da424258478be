"""Load profiles: how much traffic to send and for how long, as validated immutable values.

Both profiles are bounded twice, by ``duration`` and by ``max_requests``; a run stops at whichever comes first.

Usage::

    OpenLoop(rate=500, duration="2s", max_requests=1000)     # 500 req/s arrivals, whatever the latency
    ClosedLoop(concurrency=8, duration=2.0, max_requests=5000)  # 8 requests in flight at all times
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pytest_meshcheck.durations import DurationError
from pytest_meshcheck.durations import parse_duration as parse_go_duration
from pytest_meshcheck.errors import MeshcheckError


class LoadError(MeshcheckError, ValueError):
    """A load profile or a load request is invalid; the message names the field and the fix."""


def parse_duration(value: float | int | str, *, field: str) -> float:
    """Normalise a duration to float seconds.

    Args:
        value: Seconds as a number, or a Go duration string as in Istio YAML, such as ``"500ms"``, ``"2s"``
            or ``"1m30s"`` (:func:`pytest_meshcheck.durations.parse_duration`).
        field: The field name to show in an error, such as ``OpenLoop.duration``.

    Returns:
        The duration in seconds, finite and greater than zero.

    Raises:
        LoadError: The value is not a positive, finite duration.
    """
    seconds: float
    if isinstance(value, bool):
        raise LoadError(f"{field}: expected seconds (number) or a string like '2s' or '500ms', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_go_duration(value)
        except DurationError as exc:
            raise LoadError(f"{field}: {exc}") from None
    else:
        raise LoadError(f"{field}: expected seconds (number) or a string like '2s', got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise LoadError(f"{field}: must be a finite duration greater than 0, got {value!r}")
    return seconds


def _positive_int(value: object, field: str, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LoadError(f"{field}: must be an integer greater than 0, got {value!r}. {fix}")
    return value


@dataclass(frozen=True, init=False)
class OpenLoop:
    """Open loop: requests arrive at a constant ``rate`` whether or not earlier ones have finished.

    Request ``i`` is intended to be sent at ``i / rate`` seconds after the start, and its latency is measured
    from that intended time, so a stalled server shows up in the latencies (no coordinated omission).
    Requests wait for a free connection when ``max_connections`` are busy; that wait counts as latency.

    Attributes:
        rate: Arrivals per second, greater than 0.
        duration: Seconds (or a string such as ``"2s"``) during which requests are started.
        max_requests: Hard cap on the number of requests.
        max_connections: Cap on simultaneous connections (and so on requests in flight).

    Raises:
        LoadError: A field is out of range; the message names it.
    """

    rate: float
    duration: float
    max_requests: int
    max_connections: int = 256

    def __init__(self, rate: float, duration: float | str, max_requests: int, max_connections: int = 256) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0:
            raise LoadError(f"OpenLoop.rate: must be a finite number of requests per second > 0, got {rate!r}")
        object.__setattr__(self, "rate", float(rate))
        object.__setattr__(self, "duration", parse_duration(duration, field="OpenLoop.duration"))
        fix = "Set the cap on requests, e.g. rate * duration."
        object.__setattr__(self, "max_requests", _positive_int(max_requests, "OpenLoop.max_requests", fix))
        fix = "The default is 256."
        object.__setattr__(self, "max_connections", _positive_int(max_connections, "OpenLoop.max_connections", fix))

    @property
    def planned_requests(self) -> int:
        """How many requests the schedule holds: those due before ``duration``, capped by ``max_requests``."""
        return min(self.max_requests, math.ceil(self.rate * self.duration - 1e-9))


@dataclass(frozen=True, init=False)
class ClosedLoop:
    """Closed loop: ``concurrency`` requests in flight, each followed at once by the next one.

    Latency is measured from the actual send time. Each of the ``concurrency`` workers keeps one keep-alive
    connection.

    Attributes:
        concurrency: Requests (and connections) in flight at once.
        duration: Seconds (or a string such as ``"2s"``) during which requests are started.
        max_requests: Hard cap on the number of requests.

    Raises:
        LoadError: A field is out of range; the message names it.
    """

    concurrency: int
    duration: float
    max_requests: int

    def __init__(self, concurrency: int, duration: float | str, max_requests: int) -> None:
        fix = "Use the number of simultaneous clients, e.g. 8."
        object.__setattr__(self, "concurrency", _positive_int(concurrency, "ClosedLoop.concurrency", fix))
        object.__setattr__(self, "duration", parse_duration(duration, field="ClosedLoop.duration"))
        fix = "Set the cap on requests, e.g. 10000."
        object.__setattr__(self, "max_requests", _positive_int(max_requests, "ClosedLoop.max_requests", fix))


LoadProfile = OpenLoop | ClosedLoop
