"""Typed model of the Istio ``networking.istio.io`` resources pytest-meshcheck understands.

The loader (:mod:`pytest_meshcheck.policy.loader`) builds these objects only from documents that passed
validation, so every consumer (translation, expectations, reports) can trust them. Field names are the
snake_case forms of Istio's camelCase fields; durations are float seconds. ``None`` always means "the
field was absent", which matters because Istio treats absent and zero differently in several places.

``v1alpha3``, ``v1beta1`` and ``v1`` share one schema (istio/api declares the latter two as Go type
aliases of the first), so one model serves all three.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

StringMatchKind = Literal["exact", "prefix", "regex"]
LoadBalancerSimple = Literal["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"]


@dataclass(frozen=True)
class SourceRef:
    """Where a resource came from, so errors and reports can point at the YAML.

    Attributes:
        file: Path of the file as given (``<string>`` for text).
        document: Zero-based index of the document in the file.
        line: One-based line where the document starts.
        field_lines: One-based line of each field, keyed by dotted path
            (``spec.http[0].retries.attempts``).
        text: The document's YAML text, for reports.
    """

    file: str
    document: int
    line: int = 1
    field_lines: dict[str, int] = field(default_factory=dict, compare=False, hash=False)
    text: str = field(default="", compare=False, hash=False)


@dataclass(frozen=True)
class StringMatch:
    """Istio ``StringMatch``: exactly one of exact, prefix or regex (RE2 syntax)."""

    kind: StringMatchKind
    value: str


@dataclass(frozen=True)
class HTTPMatchRequest:
    """One ``http[].match[]`` entry; all set conditions must hold."""

    name: str | None = None
    uri: StringMatch | None = None
    method: StringMatch | None = None
    headers: dict[str, StringMatch] = field(default_factory=dict)
    without_headers: dict[str, StringMatch] = field(default_factory=dict)
    query_params: dict[str, StringMatch] = field(default_factory=dict)
    ignore_uri_case: bool = False


@dataclass(frozen=True)
class Destination:
    """``route[].destination``: the service host, optional subset and port."""

    host: str
    subset: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class HTTPRouteDestination:
    """One weighted destination of an HTTP route."""

    destination: Destination
    weight: int | None = None


@dataclass(frozen=True)
class HTTPRetry:
    """``http[].retries``.

    Attributes:
        attempts: Number of retries (``num_retries`` in Envoy), not total tries.
        per_try_timeout: Seconds, or ``None`` when absent.
        retry_on: The raw ``retryOn`` string, or ``None`` when absent.
        retry_remote_localities: ``retryRemoteLocalities``.
        retry_ignore_previous_hosts: ``retryIgnorePreviousHosts`` (honoured from Istio 1.26), ``None`` if absent.
        backoff: ``backoff`` in seconds (honoured from Istio 1.26), ``None`` if absent.
    """

    attempts: int
    per_try_timeout: float | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None
    retry_ignore_previous_hosts: bool | None = None
    backoff: float | None = None


@dataclass(frozen=True)
class FaultDelay:
    """``fault.delay``. ``percentage`` is 0-100; ``None`` means absent, which Istio treats as 0 %."""

    fixed_delay: float
    percentage: float | None = None
    percent: int | None = None  # deprecated integer form


@dataclass(frozen=True)
class FaultAbort:
    """``fault.abort``: an HTTP status or a gRPC status name, with a 0-100 percentage."""

    http_status: int | None = None
    grpc_status: str | None = None
    percentage: float | None = None


@dataclass(frozen=True)
class HTTPFaultInjection:
    """``http[].fault``: client-side fault injection, applied before the router."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


@dataclass(frozen=True)
class HTTPRoute:
    """One ``http[]`` rule of a VirtualService."""

    name: str | None = None
    match: tuple[HTTPMatchRequest, ...] = ()
    route: tuple[HTTPRouteDestination, ...] = ()
    retries: HTTPRetry | None = None
    timeout: float | None = None
    fault: HTTPFaultInjection | None = None
    index: int = 0


@dataclass(frozen=True)
class VirtualService:
    """A validated VirtualService."""

    name: str
    namespace: str | None
    api_version: str
    hosts: tuple[str, ...]
    gateways: tuple[str, ...] = ()
    http: tuple[HTTPRoute, ...] = ()
    source: SourceRef = field(default_factory=lambda: SourceRef("<string>", 0), compare=False)

    kind: Literal["VirtualService"] = "VirtualService"


@dataclass(frozen=True)
class TCPSettings:
    """``connectionPool.tcp``. Durations in seconds."""

    max_connections: int | None = None
    connect_timeout: float | None = None
    max_connection_duration: float | None = None
    idle_timeout: float | None = None
    tcp_keepalive_time: float | None = None
    tcp_keepalive_interval: float | None = None
    tcp_keepalive_probes: int | None = None


@dataclass(frozen=True)
class HTTPSettings:
    """``connectionPool.http``. Durations in seconds."""

    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout: float | None = None
    h2_upgrade_policy: str | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: int | None = None


@dataclass(frozen=True)
class ConnectionPool:
    """``trafficPolicy.connectionPool``."""

    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


@dataclass(frozen=True)
class OutlierDetection:
    """``trafficPolicy.outlierDetection``; every field ``None`` when absent.

    ``consecutive_errors`` is the deprecated field that istiod ignores since 1.7; it is kept so
    expectations and reports can say so.
    """

    consecutive_errors: int | None = None
    consecutive_5xx_errors: int | None = None
    consecutive_gateway_errors: int | None = None
    consecutive_local_origin_failures: int | None = None
    split_external_local_origin_errors: bool | None = None
    interval: float | None = None
    base_ejection_time: float | None = None
    max_ejection_percent: int | None = None
    min_health_percent: int | None = None


@dataclass(frozen=True)
class ConsistentHash:
    """``loadBalancer.consistentHash``: exactly one hash key, plus ring options."""

    http_header_name: str | None = None
    http_cookie_name: str | None = None
    http_cookie_path: str | None = None
    http_cookie_ttl: float | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    minimum_ring_size: int | None = None
    maglev_table_size: int | None = None


@dataclass(frozen=True)
class LoadBalancer:
    """``trafficPolicy.loadBalancer``: ``simple`` or ``consistent_hash``."""

    simple: LoadBalancerSimple | None = None
    consistent_hash: ConsistentHash | None = None
    warmup_duration: float | None = None


@dataclass(frozen=True)
class TrafficPolicy:
    """``trafficPolicy`` of a DestinationRule or of one of its subsets."""

    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    load_balancer: LoadBalancer | None = None


@dataclass(frozen=True)
class Subset:
    """``subsets[]``: a named version selected by labels, with an optional own policy."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


@dataclass(frozen=True)
class DestinationRule:
    """A validated DestinationRule."""

    name: str
    namespace: str | None
    api_version: str
    host: str
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] = ()
    source: SourceRef = field(default_factory=lambda: SourceRef("<string>", 0), compare=False)

    kind: Literal["DestinationRule"] = "DestinationRule"


Policy = VirtualService | DestinationRule


@dataclass(frozen=True)
class PolicyWarning:
    """A non-fatal finding, such as a deprecated field, with what Istio really does with it."""

    file: str
    document: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file} (document {self.document}): {self.path}: {self.message}"


@dataclass(frozen=True)
class PolicySet:
    """Everything loaded from one or more files.

    Attributes:
        virtual_services: Validated VirtualServices in load order.
        destination_rules: Validated DestinationRules in load order.
        warnings: Deprecations and other findings that do not stop the load.
        skipped: Notes about documents of other kinds that were skipped.
    """

    virtual_services: tuple[VirtualService, ...] = ()
    destination_rules: tuple[DestinationRule, ...] = ()
    warnings: tuple[PolicyWarning, ...] = ()
    skipped: tuple[str, ...] = ()

    def merged(self, other: PolicySet) -> PolicySet:
        """Return the union of two sets, ``other`` after ``self``."""
        return PolicySet(
            self.virtual_services + other.virtual_services,
            self.destination_rules + other.destination_rules,
            self.warnings + other.warnings,
            self.skipped + other.skipped,
        )

    def __len__(self) -> int:
        return len(self.virtual_services) + len(self.destination_rules)
