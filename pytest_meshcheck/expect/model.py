"""Value types of the expectation model: reasons, the effective policy, chaos and load inputs, predictions.

Every prediction carries ``reasons``: the policy fields (or defaults) it rests on, so a report can show
*why* a number is expected. ``warnings`` are reasons that make the number less certain, such as a retry
circuit breaker that concurrency may exhaust.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from pytest_meshcheck.chaos.kinds import FaultKind
from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.istio_version import IstioVersion
from pytest_meshcheck.topology import ServiceSpec

OverflowLevel = Literal["never", "rare", "always"]


@dataclass(frozen=True)
class Reason:
    """One fact a prediction rests on.

    Attributes:
        field: Dotted path of the policy field (``spec.http[0].retries.retryOn``), or ``None`` when a
            default applies.
        value: The value in force, rendered for people (``"5xx,reset"``, ``"10 %"``).
        effect: What the value means for this prediction.
        source: Where the value comes from: a resource (``VirtualService platform-core/order-retry``) or a
            default (``Istio 1.30 default retry policy``, ``Envoy default max_ejection_percent 10``).
        location: ``file:line`` of the field when known.
    """

    field: str | None
    value: str
    effect: str
    source: str
    location: str | None = None

    @property
    def is_default(self) -> bool:
        """True when no policy field set this value."""
        return self.field is None

    def __str__(self) -> str:
        where = f"{self.location} " if self.location else ""
        what = f"{self.source} {self.field}" if self.field else self.source
        return f"{where}{what} = {self.value}: {self.effect}"


def _check_fraction(name: str, value: float, fix: str) -> None:
    if not (isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0):
        raise MeshcheckError(f"{name}={value!r} is not a fraction between 0 and 1; {fix}")


# --- the effective policy (what Envoy enforces), built by pytest_meshcheck.expect.effective ---------------

MAX_UINT32 = 4294967295
DEFAULT_RETRY_ON = ("connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes")
DEFAULT_BACKOFF_BASE = 0.025
HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5
ENVOY_MAX_EJECTION_TIME = 300.0
LbPolicy = Literal["LEAST_REQUEST", "ROUND_ROBIN", "RANDOM", "RING_HASH", "MAGLEV", "CLUSTER_PROVIDED"]


@dataclass(frozen=True)
class EffectiveRetry:
    """The Envoy ``RetryPolicy`` of the route.

    Attributes:
        num_retries: Retries after the first attempt; 0 means no retry policy.
        retry_on: ``retry_on`` tokens, in order.
        retriable_status_codes: Codes the ``retriable-status-codes`` token retries.
        per_try_timeout: Seconds, or ``None``; see :func:`~pytest_meshcheck.expect.timeouts.effective_per_try_timeout`.
        previous_hosts: The ``previous_hosts`` predicate is set, so retries avoid hosts already tried.
        backoff_base: Base of the jittered exponential back-off, seconds.
        is_default: No ``retries`` block: Istio's default policy applies.
    """

    num_retries: int
    retry_on: tuple[str, ...] = ()
    retriable_status_codes: tuple[int, ...] = ()
    per_try_timeout: float | None = None
    previous_hosts: bool = True
    backoff_base: float = DEFAULT_BACKOFF_BASE
    is_default: bool = False

    @property
    def backoff_max(self) -> float:
        """Envoy caps each back-off at 10 x base when ``max_interval`` is unset (Istio never sets it)."""
        return 10 * self.backoff_base


@dataclass(frozen=True)
class EffectiveOutlier:
    """Envoy ``outlier_detection`` of the cluster, with Envoy's defaults filled in.

    Attributes:
        consecutive_5xx: Threshold of the 5xx detector.
        enforce_5xx: The 5xx detector ejects (``enforcing_consecutive_5xx`` 100).
        consecutive_gateway: Threshold of the gateway-failure detector.
        enforce_gateway: The gateway-failure detector ejects (Envoy's default enforcement is 0).
        interval: Seconds between sweeps; un-ejection happens only on a sweep.
        base_ejection_time: Seconds.
        max_ejection_percent: Percent of hosts that may be ejected at once.
        max_ejection_time: Cap on one ejection, seconds.
    """

    consecutive_5xx: int = 5
    enforce_5xx: bool = True
    consecutive_gateway: int = 5
    enforce_gateway: bool = False
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10
    max_ejection_time: float = ENVOY_MAX_EJECTION_TIME


@dataclass(frozen=True)
class EffectivePool:
    """Envoy circuit-breaker thresholds and per-connection limits of the cluster."""

    max_connections: int = MAX_UINT32
    max_pending_requests: int = MAX_UINT32
    max_requests: int = MAX_UINT32
    max_retries: int = MAX_UINT32
    max_requests_per_connection: int | None = None
    http2: bool = False


@dataclass(frozen=True)
class EffectiveFault:
    """The route's client-side fault injection, with Istio's absent-means-0 % rule applied."""

    abort_fraction: float = 0.0
    abort_status: int | None = None
    abort_grpc: str | None = None
    delay_fraction: float = 0.0
    delay: float = 0.0


@dataclass(frozen=True)
class EffectivePolicy:
    """Everything Envoy enforces on a call to one (service, subset), with the reason for each value.

    Attributes:
        service: The destination service.
        subset: The subset the traffic lands on, or ``None`` for the service's default cluster.
        hosts: Endpoints in the cluster.
        cluster_exists: ``False`` when the route names a subset no DestinationRule defines (503 ``NC``).
        retry: The route's retry policy.
        timeout: Route timeout in seconds, ``None`` when disabled.
        fault: Client-side fault injection of the route.
        pool: Circuit-breaker thresholds.
        outlier: Outlier detection, ``None`` when ``outlierDetection`` is absent.
        panic_threshold: ``healthy_panic_threshold`` percent.
        lb: Envoy load-balancing policy.
        istio: The Istio release modelled.
        reasons: One :class:`Reason` per concept (``retry.retry_on``, ``outlier.max_ejection_percent``...).
    """

    service: ServiceSpec
    subset: str | None
    hosts: int
    cluster_exists: bool
    retry: EffectiveRetry
    timeout: float | None
    fault: EffectiveFault
    pool: EffectivePool
    outlier: EffectiveOutlier | None
    panic_threshold: float
    lb: LbPolicy
    istio: IstioVersion
    reasons: dict[str, Reason] = field(default_factory=dict, hash=False, compare=False)

    def reason(self, *keys: str) -> tuple[Reason, ...]:
        """The reasons recorded under ``keys``, skipping keys with none."""
        return tuple(self.reasons[k] for k in keys if k in self.reasons)


# --- chaos and load inputs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DestinationFault:
    """A fault applied at the destination's instances (server side), as the chaos module injects it.

    Attributes:
        kind: ``error`` answers ``status``; ``latency`` delays the response by ``delay`` seconds;
            ``reset`` closes the connection after the request arrived (Envoy sees a reset, ``UC``);
            ``refused`` makes the instance refuse connections, like a stopped process (``UF``).
        rate: Fraction (0-1) of requests reaching an affected instance that get the fault.
        status: HTTP status for ``error``.
        delay: Seconds of delay for ``latency``.
        instances: How many instances are affected (the first ``instances`` in topology order), or
            ``None`` for all of them.

    Example::

        DestinationFault("error", rate=0.5, status=503)           # every instance, half the requests
        DestinationFault("error", rate=1.0, status=500, instances=1)  # one instance always fails
    """

    kind: FaultKind
    rate: float = 1.0
    status: int = 503
    delay: float = 0.0
    instances: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("error", "latency", "reset", "refused"):
            raise MeshcheckError(
                f"DestinationFault kind={self.kind!r} is unknown; use 'error', 'latency', 'reset' or 'refused'"
            )
        _check_fraction("DestinationFault rate", self.rate, "pass e.g. rate=0.3 for 30 %")
        if self.kind == "error" and not 100 <= self.status <= 599:
            raise MeshcheckError(f"DestinationFault status={self.status!r} is not an HTTP status 100-599")
        if self.kind == "latency" and not (math.isfinite(self.delay) and self.delay > 0):
            raise MeshcheckError(
                f"DestinationFault delay={self.delay!r} must be a positive number of seconds for kind='latency'"
            )
        if self.instances is not None and self.instances < 1:
            raise MeshcheckError(
                f"DestinationFault instances={self.instances!r} must be at least 1, or None for all instances"
            )

    def affected(self, hosts: int) -> int:
        """Number of the ``hosts`` instances this fault touches."""
        return hosts if self.instances is None else min(self.instances, hosts)

    def describe(self) -> str:
        """A short human description, such as ``503 on 50 % of requests at 1 of 3 instances``."""
        what = {
            "error": f"HTTP {self.status}",
            "latency": f"{self.delay:g} s delay",
            "reset": "connection reset",
            "refused": "connection refused",
        }[self.kind]
        scope = "all instances" if self.instances is None else f"{self.instances} instance(s)"
        return f"{what} on {self.rate * 100:g} % of requests at {scope}"


@dataclass(frozen=True)
class Load:
    """The load a prediction assumes.

    Attributes:
        concurrency: Requests in flight at once: the closed-loop concurrency, or for an open-loop load
            the expected number in flight (rate x latency).
        rate: Requests per second, when known; used for time estimates such as time to ejection.
    """

    concurrency: int = 1
    rate: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise MeshcheckError(f"Load concurrency={self.concurrency!r} must be an integer >= 1")
        if self.rate is not None and not (math.isfinite(self.rate) and self.rate > 0):
            raise MeshcheckError(f"Load rate={self.rate!r} must be a positive number of requests per second")


@dataclass(frozen=True, order=True)
class Outcome:
    """How one downstream request ends, as Envoy's access log would show it.

    Attributes:
        status: Final HTTP status the client sees.
        flags: Envoy response flags (``-``, ``URX``, ``UT``, ``URX,UT``, ``UO``, ``FI``, ``NC``, ``UH``).
            The ``DI`` flag of a client-side fault delay is not included.
        detail: Extra detail, such as ``grpc-status UNAVAILABLE``.
    """

    status: int
    flags: str = "-"
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True for a 2xx answer from the upstream (not a fault-filter gRPC abort)."""
        return 200 <= self.status < 300 and "FI" not in self.flags

    def __str__(self) -> str:
        text = f"{self.status} {self.flags}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True)
class Prediction:
    """Base of all predictions: the facts used and what makes the numbers uncertain."""

    reasons: tuple[Reason, ...] = field(default=(), kw_only=True)
    warnings: tuple[Reason, ...] = field(default=(), kw_only=True)

    def explain(self) -> list[str]:
        """Reasons then warnings, one line each, for reports and failure messages."""
        return [str(r) for r in self.reasons] + [f"warning: {w}" for w in self.warnings]


@dataclass(frozen=True)
class SuccessPrediction(Prediction):
    """Expected success probability of one downstream request.

    Attributes:
        p_success: Probability that a request gets a 2xx from the upstream.
        outcomes: Probability of each final outcome; they sum to 1.
        mean_attempts: Expected upstream attempts per request that reached the router.
        lower_bound: A floor for ``p_success`` when a circuit breaker may refuse retries (the rate with
            no retries at all); ``None`` when the prediction is not at risk.
        covered: For each failure the faults produce (``HTTP 503``, ``reset``, ``per-try timeout``...),
            whether ``retryOn`` retries it.
    """

    p_success: float
    outcomes: dict[Outcome, float] = field(default_factory=dict, hash=False)
    mean_attempts: float = 1.0
    lower_bound: float | None = None
    covered: dict[str, bool] = field(default_factory=dict, hash=False)

    def p(self, status: int, flags: str | None = None) -> float:
        """Probability of ending with ``status`` (and ``flags``, when given)."""
        return sum(v for o, v in self.outcomes.items() if o.status == status and (flags is None or o.flags == flags))


@dataclass(frozen=True)
class LatencyPrediction(Prediction):
    """Latency bounds of a request and how a slow destination ends.

    Attributes:
        ceiling: Upper bound in seconds on the time the router spends on any request (route timeout, or all
            per-try timeouts plus the longest back-offs), not counting a client-side fault delay; ``None``
            when nothing bounds it.
        per_try_timeout: The per-try timeout Envoy applies (``None`` if unset or ignored).
        route_timeout: The route timeout (``None`` when disabled, Istio's default).
        attempts: Upstream attempts a request makes when every attempt is too slow.
        slow_range: ``(min, max)`` seconds a request takes when every attempt it makes is slowed by the
            fault; ``None`` without a latency fault.
        status: Final status of such a request: 504 when a timeout cuts it, else the upstream's.
        flags: Response flags of such a request (``UT``, ``URX,UT`` or ``-``).
        backoff_ranges: ``(min, max)`` seconds of the wait before each retry.
        client_delay: Client-side fault delay added before the router, with the fraction it applies to.
    """

    ceiling: float | None
    per_try_timeout: float | None
    route_timeout: float | None
    attempts: int
    slow_range: tuple[float, float] | None = None
    status: int | None = None
    flags: str | None = None
    backoff_ranges: tuple[tuple[float, float], ...] = ()
    client_delay: tuple[float, float] | None = None


@dataclass(frozen=True)
class EjectionPrediction(Prediction):
    """Whether outlier detection ejects the failing instances, and for how long.

    Attributes:
        enabled: ``outlierDetection`` is present, so Envoy runs outlier detection at all.
        counts: The fault's failures count towards an enforced consecutive-error detector.
        failures_to_eject: Consecutive failures at one instance that trigger an ejection.
        max_ejected: Most instances the ``maxEjectionPercent`` rule lets Envoy eject at once.
        ejected: Failing instances that will be ejected at once.
        hosts: Instances in the cluster.
        failing: Instances the fault touches.
        panic: Envoy enters panic mode once they are ejected and balances over all hosts again.
        no_healthy_upstream: Every host is ejected and panic is disabled, so requests get ``503 UH``.
        expected_attempts_to_eject: Expected attempts at one failing instance before it is ejected.
        ejection_durations: ``(min, max)`` seconds of the 1st, 2nd, ... consecutive ejection.
    """

    enabled: bool
    counts: bool
    failures_to_eject: int | None
    max_ejected: int
    ejected: int
    hosts: int
    failing: int
    panic: bool = False
    no_healthy_upstream: bool = False
    expected_attempts_to_eject: float | None = None
    ejection_durations: tuple[tuple[float, float], ...] = ()

    @property
    def will_eject(self) -> bool:
        """True when at least one failing instance will be ejected."""
        return self.ejected > 0


@dataclass(frozen=True)
class OverflowPrediction(Prediction):
    """Whether the connection-pool circuit breaker answers ``503 UO`` at a closed-loop concurrency.

    Attributes:
        level: ``never``, ``rare`` (a race when connections are recycled at exactly full capacity) or
            ``always`` (more requests in flight than active plus pending slots).
        capacity: Requests the cluster holds at once (active + pending).
        concurrency: The concurrency the prediction is for.
        status: 503 for an overflow.
        flags: ``UO``.
    """

    level: OverflowLevel
    capacity: int
    concurrency: int
    status: int = 503
    flags: str = "UO"

    @property
    def expected(self) -> bool:
        """True when overflow 503s are certain in a long enough run."""
        return self.level == "always"
