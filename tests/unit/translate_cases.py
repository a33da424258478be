"""Model builders for translation tests, and a catalogue of policy variants.

The loader is written in parallel, so tests build ``policy.model`` objects directly. ``VARIANTS`` holds
named policy sets (the README examples first); unit tests pick from it and the integration test
feeds every one, at several Istio versions, to ``envoy --mode validate``.
"""

from __future__ import annotations

import dataclasses

from pytest_meshcheck.policy.model import (
    ConnectionPool,
    ConsistentHash,
    Destination,
    DestinationRule,
    FaultAbort,
    FaultDelay,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRetry,
    HTTPRoute,
    HTTPRouteDestination,
    HTTPSettings,
    LoadBalancer,
    OutlierDetection,
    PolicySet,
    StringMatch,
    Subset,
    TCPSettings,
    TrafficPolicy,
    VirtualService,
)
from pytest_meshcheck.topology import Topology, parse_topology
from pytest_meshcheck.translate import Endpoint

NS = "platform-core"
ORDER = f"order-service.{NS}.svc.cluster.local"

# The packaged default topology, inlined so tests do not depend on that file's contents.
TOPOLOGY: Topology = parse_topology(
    {
        "namespace": NS,
        "services": [
            {"name": "catalog-service", "port": 8080, "versions": [{"name": "v1", "replicas": 3}]},
            {
                "name": "order-service",
                "port": 8084,
                "versions": [
                    {"name": "v1", "replicas": 3},
                    {"name": "v2", "replicas": 1, "labels": {"track": "canary"}},
                ],
            },
            {"name": "payment-service", "port": 8080, "versions": [{"name": "v1", "replicas": 3}]},
            {"name": "inventory-service", "port": 8080, "versions": [{"name": "v1", "replicas": 3}]},
        ],
    },
    source="translate_cases",
)


def endpoints(topology: Topology = TOPOLOGY, base_port: int = 21000) -> dict[tuple[str, str], list[Endpoint]]:
    """One 127.0.0.1 endpoint per replica, on consecutive ports."""
    out: dict[tuple[str, str], list[Endpoint]] = {}
    port = base_port
    for svc in topology.services:
        for v in svc.versions:
            out[(svc.name, v.name)] = [("127.0.0.1", port + i) for i in range(v.replicas)]
            port += v.replicas
    return out


def dest(
    host: str, subset: str | None = None, *, port: int | None = None, weight: int | None = None
) -> HTTPRouteDestination:
    return HTTPRouteDestination(Destination(host, subset, port), weight)


def exact(value: str) -> StringMatch:
    return StringMatch("exact", value)


def http(*route: HTTPRouteDestination, **kw: object) -> HTTPRoute:
    return HTTPRoute(route=route, **kw)  # type: ignore[arg-type]


def vs(
    *rules: HTTPRoute,
    hosts: tuple[str, ...] = ("order-service",),
    name: str = "vs",
    namespace: str | None = NS,
    gateways: tuple[str, ...] = (),
) -> VirtualService:
    indexed = tuple(dataclasses.replace(r, index=i) for i, r in enumerate(rules))
    return VirtualService(name, namespace, "networking.istio.io/v1", hosts, gateways, indexed)


def dr(
    host: str = "order-service",
    policy: TrafficPolicy | None = None,
    *subsets: Subset,
    name: str = "dr",
    namespace: str | None = NS,
) -> DestinationRule:
    return DestinationRule(name, namespace, "networking.istio.io/v1", host, policy, subsets)


def subset(name: str, policy: TrafficPolicy | None = None, **labels: str) -> Subset:
    return Subset(name, labels or {"version": name}, policy)


def ps(*items: VirtualService | DestinationRule) -> PolicySet:
    return PolicySet(
        tuple(i for i in items if isinstance(i, VirtualService)),
        tuple(i for i in items if isinstance(i, DestinationRule)),
    )


ORDER_SUBSETS = (subset("v1"), subset("v2"))

# --- README examples (seed/istio-resilience-readme.md) -------------------------------------------------
README_CIRCUIT_BREAKER = dr(
    ORDER,
    TrafficPolicy(
        connection_pool=ConnectionPool(
            tcp=TCPSettings(max_connections=100),
            http=HTTPSettings(http1_max_pending_requests=50, http2_max_requests=100, max_requests_per_connection=2),
        ),
        outlier_detection=OutlierDetection(
            consecutive_errors=5, interval=30, base_ejection_time=30, max_ejection_percent=50, min_health_percent=50
        ),
    ),
    name="order-service-circuit-breaker",
)
README_RETRY = vs(
    http(
        dest(ORDER, port=8084),
        retries=HTTPRetry(3, per_try_timeout=2, retry_on="5xx,reset,connect-failure,refused-stream"),
        timeout=10,
    ),
    hosts=(ORDER,),
    name="order-service-retry",
)
# The README's timeout example omits ``attempts``: Istio reads 0, and admission rejects perTryTimeout
# with 0 attempts. The translatable part is the timeout; attempts 0 means "no retry policy".
README_TIMEOUT = vs(http(dest("payment-service"), timeout=15, retries=HTTPRetry(0)), hosts=("payment-service",))
README_LEAST_CONN = dr("catalog-service", TrafficPolicy(load_balancer=LoadBalancer(simple="LEAST_CONN")))
README_CANARY = vs(
    http(dest("order-service", "v2"), match=(HTTPMatchRequest(headers={"x-version": exact("v2")}),)),
    http(dest("order-service", "v1", weight=90), dest("order-service", "v2", weight=10)),
    name="order-canary",
)

VARIANTS: dict[str, PolicySet] = {
    "empty": ps(),
    "readme-circuit-breaker": ps(README_CIRCUIT_BREAKER),
    "readme-retry": ps(README_RETRY),
    "readme-timeout": ps(README_TIMEOUT),
    "readme-least-conn": ps(README_LEAST_CONN),
    "readme-canary": ps(README_CANARY, dr("order-service", None, *ORDER_SUBSETS)),
    "readme-all": ps(README_CIRCUIT_BREAKER, README_RETRY, README_TIMEOUT, README_LEAST_CONN),
    "retry-codes-and-conditions": ps(
        vs(http(dest("order-service"), retries=HTTPRetry(2, retry_on="503,gateway-error")))
    ),
    "retry-everything": ps(
        vs(
            http(
                dest("order-service"),
                retries=HTTPRetry(
                    4,
                    per_try_timeout=0.25,
                    retry_on="5xx,retriable-4xx,409,unavailable,deadline-exceeded",
                    retry_remote_localities=True,
                    retry_ignore_previous_hosts=False,
                    backoff=0.05,
                ),
            )
        )
    ),
    "retry-disabled": ps(vs(http(dest("order-service"), retries=HTTPRetry(0)))),
    "timeout-zero": ps(vs(http(dest("order-service"), timeout=0))),
    "fault-delay-abort": ps(
        vs(
            http(
                dest("order-service"),
                fault=HTTPFaultInjection(FaultDelay(2, percentage=12.5), FaultAbort(http_status=503, percentage=0.1)),
            )
        )
    ),
    "fault-grpc-and-percent": ps(
        vs(
            http(
                dest("order-service"),
                fault=HTTPFaultInjection(FaultDelay(0.5, percent=30), FaultAbort(grpc_status="UNAVAILABLE")),
            )
        )
    ),
    "matches": ps(
        vs(
            http(
                dest("order-service", "v2"),
                name="canary",
                match=(
                    HTTPMatchRequest(
                        name="get-api",
                        uri=StringMatch("prefix", "/api"),
                        method=exact("GET"),
                        headers={"x-user": StringMatch("regex", "a.*"), "x-any": StringMatch("regex", "*")},
                        query_params={"debug": exact("1")},
                        ignore_uri_case=True,
                    ),
                    HTTPMatchRequest(uri=exact("/health"), without_headers={"x-skip": StringMatch("prefix", "y")}),
                    HTTPMatchRequest(uri=StringMatch("regex", "/v[0-9]+/.*")),
                ),
            ),
            http(dest("order-service", "v1")),
        ),
        dr("order-service", None, *ORDER_SUBSETS),
    ),
    "undefined-subset": ps(vs(http(dest("order-service", "v9")))),
    "weighted-with-zero": ps(
        vs(http(dest("order-service", "v1", weight=100), dest("order-service", "v2", weight=0))),
        dr("order-service", None, *ORDER_SUBSETS),
    ),
    "cross-service-route": ps(vs(http(dest("inventory-service", port=8080)), hosts=("catalog-service",))),
    "connection-pool-full": ps(
        dr(
            "order-service",
            TrafficPolicy(
                connection_pool=ConnectionPool(
                    tcp=TCPSettings(
                        max_connections=1,
                        connect_timeout=0.25,
                        max_connection_duration=60,
                        idle_timeout=30,
                        tcp_keepalive_time=7200.9,
                        tcp_keepalive_interval=75,
                        tcp_keepalive_probes=9,
                    ),
                    http=HTTPSettings(http1_max_pending_requests=1, http2_max_requests=1, max_retries=1),
                )
            ),
        )
    ),
    "outlier-full": ps(
        dr(
            "order-service",
            TrafficPolicy(
                outlier_detection=OutlierDetection(
                    consecutive_5xx_errors=0,
                    consecutive_gateway_errors=3,
                    consecutive_local_origin_failures=2,
                    split_external_local_origin_errors=True,
                    interval=1,
                    base_ejection_time=2,
                    max_ejection_percent=100,
                )
            ),
        )
    ),
    "outlier-empty": ps(dr("order-service", TrafficPolicy(outlier_detection=OutlierDetection()))),
    "subset-policy-merge": ps(
        dr(
            "order-service",
            TrafficPolicy(
                connection_pool=ConnectionPool(tcp=TCPSettings(max_connections=10)),
                outlier_detection=OutlierDetection(consecutive_5xx_errors=3, min_health_percent=20),
            ),
            subset("v1"),
            subset("v2", TrafficPolicy(connection_pool=ConnectionPool(http=HTTPSettings(max_retries=5)))),
        )
    ),
    "lb-variants": ps(
        dr("order-service", TrafficPolicy(load_balancer=LoadBalancer(simple="ROUND_ROBIN", warmup_duration=30))),
        dr("payment-service", TrafficPolicy(load_balancer=LoadBalancer(simple="RANDOM"))),
        dr("inventory-service", TrafficPolicy(load_balancer=LoadBalancer(simple="PASSTHROUGH"))),
        dr("catalog-service", TrafficPolicy(load_balancer=LoadBalancer(warmup_duration=10))),
    ),
    "consistent-hash": ps(
        dr("order-service", TrafficPolicy(load_balancer=LoadBalancer(consistent_hash=ConsistentHash("x-user")))),
        dr(
            "payment-service",
            TrafficPolicy(
                load_balancer=LoadBalancer(
                    consistent_hash=ConsistentHash(http_cookie_name="sid", http_cookie_path="/", http_cookie_ttl=60)
                )
            ),
        ),
        dr(
            "catalog-service",
            TrafficPolicy(load_balancer=LoadBalancer(consistent_hash=ConsistentHash(use_source_ip=True))),
        ),
        dr(
            "inventory-service",
            TrafficPolicy(
                load_balancer=LoadBalancer(
                    consistent_hash=ConsistentHash(http_query_parameter_name="k", maglev_table_size=65537)
                )
            ),
        ),
        vs(http(dest("order-service"))),
        vs(
            http(dest("payment-service", weight=50), dest("catalog-service", weight=50)),
            hosts=("payment-service",),
            name="split",
        ),
    ),
    "gateway-only-vs": ps(vs(http(dest("order-service"), timeout=1), gateways=("istio-system/ingress",))),
    "two-drs-merged": ps(
        dr("order-service", None, subset("v1"), name="first"),
        dr(
            "order-service",
            TrafficPolicy(outlier_detection=OutlierDetection()),
            subset("v1", track="x"),
            subset("v2"),
            name="second",
        ),
    ),
}
