"""The values a scenario declares before anything runs: the fault, the load, and what it expects.

One :class:`Fault` drives four things (the model's prediction, the injection, the proof that the fault
was live, and the sample-size plan), and one load value drives the model and the load generator, so a
scenario never states them twice. Expectations are plain values too; :mod:`~pytest_meshcheck.harness.plan`
turns them into decision rules with stated error rates, without a mesh.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pytest_meshcheck.chaos.kinds import FaultKind
from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.expect import DestinationFault, Load

if TYPE_CHECKING:
    from pytest_meshcheck.load import LoadResult

Role = Literal["claim", "model", "evidence"]


@dataclass(frozen=True)
class Fault:
    """A fault at the destination's instances, as the workloads inject it.

    Build it with :meth:`error`, :meth:`latency` or :meth:`reset`.

    Attributes:
        kind: ``error``, ``latency`` or ``reset``.
        rate: Share of requests reaching an affected instance that get the fault.
        status: HTTP status of an ``error``.
        delay: Seconds of ``latency``.
        instances: How many instances are affected (the first by instance name), ``None`` for all.
        limit: An ``error`` ends after that many errors at each instance, which then serves; ``None``
            for no end. For ejection thresholds: with ``limit`` equal to ``consecutive5xxErrors``, an
            attempt that reaches the instance while Envoy's ejection is on its way to the worker is
            served, so the count before the ejection is exact.
    """

    kind: FaultKind
    rate: float = 1.0
    status: int = 503
    delay: float = 0.0
    instances: int | None = None
    limit: int | None = None

    @classmethod
    def error(cls, rate: float, status: int = 503, *, instances: int | None = None, limit: int | None = None) -> Fault:
        """Answer ``status`` to a share ``rate`` of requests; with ``limit``, to the first ``limit`` only."""
        return cls("error", rate=rate, status=status, instances=instances, limit=limit)

    @classmethod
    def latency(cls, delay: float, *, probability: float = 1.0, instances: int | None = None) -> Fault:
        """Delay a share ``probability`` of responses by ``delay`` seconds."""
        return cls("latency", rate=probability, delay=delay, instances=instances)

    @classmethod
    def reset(cls, rate: float, *, instances: int | None = None) -> Fault:
        """Reset the connection for a share ``rate`` of requests."""
        return cls("reset", rate=rate, instances=instances)

    def model(self) -> DestinationFault:
        """The same fault, as the expectation model reads it."""
        return DestinationFault(
            self.kind, rate=self.rate, status=self.status, delay=self.delay, instances=self.instances
        )


@dataclass(frozen=True)
class ClosedLoop:
    """Closed-loop load: ``concurrency`` requests in flight; ``requests`` planned from the checks if ``None``."""

    concurrency: int = 4
    requests: int | None = None

    def model(self) -> Load:
        """The load as the expectation model reads it."""
        return Load(concurrency=self.concurrency)


@dataclass(frozen=True)
class OpenLoop:
    """Open-loop load at ``rate`` requests per second for ``duration`` seconds."""

    rate: float
    duration: float

    def model(self) -> Load:
        """The load as the expectation model reads it (about one request in flight per rate x latency)."""
        return Load(concurrency=1, rate=self.rate)


LoadShape = ClosedLoop | OpenLoop


@dataclass(frozen=True)
class Drive:
    """Where the load goes."""

    service: str
    load: LoadShape
    headers: Mapping[str, str] | None = None
    path: str = "/"


# What a rate expectation counts in a load result: (requests that meet it, requests observed).
Counter = Callable[["LoadResult"], tuple[int, int]]


@dataclass(frozen=True)
class RateExpectation:
    """A declared rate: the share of requests meeting a condition is at least, at most or about a value.

    Attributes:
        name: The check's name in messages and reports.
        role: ``claim`` (the user's number) or ``model`` (the model's number for the active policy).
        alternative: ``at-least``, ``at-most`` or ``two-sided``.
        expected: The claimed rate; ``None`` for a model role (the model fills it in).
        delta: Smallest violation that matters; ``None`` for the default.
        measure: Which model rate the expectation is about (``success``, ``status:503``...).
        count: Counts the successes and requests in a load result.
        of_requests: The share of requests that ``count`` counts at all (its denominator), when it is
            below 1, such as the retried requests: the sample is planned so the denominator alone is big
            enough, except with probability alpha.
    """

    name: str
    role: Role
    alternative: Literal["at-least", "at-most", "two-sided"]
    expected: float | None
    delta: float | None
    measure: str
    count: Counter = field(compare=False, repr=False)
    of_requests: float = 1.0


@dataclass(frozen=True)
class CounterExpectation:
    """An Envoy counter read through Prometheus equals, or is bounded by, a value or a client-side count."""

    metric: str
    equals: float | str | None = None
    at_least: float | None = None
    at_most: float | None = None
    role: Role = "evidence"


@dataclass(frozen=True)
class EveryRequest:
    """An exact claim about every request: its status and how many upstream tries it took."""

    status: int | None = None
    max_attempts: int | None = None
    attempts: int | None = None
    role: Role = "claim"


@dataclass(frozen=True)
class LatencyExpectation:
    """An exact claim on latency (seconds): the slowest request (or a percentile) and the fastest one."""

    at_most: float | None = None
    at_least: float | None = None
    percentile: float | None = None
    slack: float = 0.0
    role: Role = "claim"


@dataclass(frozen=True)
class OverflowExpectation:
    """A claim on connection-pool overflow: the ``503 UO`` answers (``x-envoy-overloaded``) a load gets."""

    equals: int | None = None
    at_least: int | None = None
    role: Role = "claim"


@dataclass(frozen=True)
class EjectionExpectation:
    """A claim on outlier ejection of the faulted instances.

    Attributes:
        after_errors: The fewest errors a faulted instance served before Envoy ejected it, exactly.
        within: Seconds into the load after which no request reaches a faulted instance any more.
        instances: At least this many instances were ejected (Envoy's enforced-ejection counter).
    """

    after_errors: int | None = None
    within: float | None = None
    instances: int | None = None
    role: Role = "claim"


Expectation = (
    RateExpectation | CounterExpectation | EveryRequest | LatencyExpectation | OverflowExpectation | EjectionExpectation
)


def bounds(at_least: float | None, at_most: float | None, about: float | None) -> tuple[str, float]:
    """The alternative and value of a rate expectation given as exactly one of three keywords.

    Raises:
        MeshcheckError: None or more than one was given.
    """
    given = [(k, v) for k, v in (("at-least", at_least), ("at-most", at_most), ("two-sided", about)) if v is not None]
    if len(given) != 1:
        raise MeshcheckError("give exactly one of at_least=, at_most= or about= (a rate between 0 and 1)")
    alternative, value = given[0]
    if not 0.0 <= value <= 1.0:
        raise MeshcheckError(f"{alternative}={value!r} must be a rate between 0 and 1, such as 0.875")
    return alternative, float(value)


def success(result: LoadResult) -> tuple[int, int]:
    """2xx answers out of all requests."""
    return result.success_count, result.count


def status_share(status: int) -> Counter:
    """Answers with ``status`` out of all requests."""

    def count(result: LoadResult) -> tuple[int, int]:
        return result.status_histogram().get(status, 0), result.count

    return count
