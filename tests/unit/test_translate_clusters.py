from __future__ import annotations

from typing import Any

import pytest
from translate_cases import (
    ORDER,
    ORDER_SUBSETS,
    README_CIRCUIT_BREAKER,
    TOPOLOGY,
    VARIANTS,
    dr,
    endpoints,
    ps,
    subset,
)

from pytest_meshcheck.errors import TopologyError
from pytest_meshcheck.istio_version import IstioVersion
from pytest_meshcheck.policy.model import (
    ConnectionPool,
    ConsistentHash,
    HTTPSettings,
    LoadBalancer,
    OutlierDetection,
    PolicySet,
    TCPSettings,
    TrafficPolicy,
)
from pytest_meshcheck.translate import build_clusters, service_clusters

V = IstioVersion.parse
U = 4294967295
HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def clusters(policies: PolicySet, version: str = "1.30") -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in build_clusters(policies, TOPOLOGY, endpoints(), V(version))}


def order(policies: PolicySet, version: str = "1.30", subset_name: str = "") -> dict[str, Any]:
    return clusters(policies, version)[f"outbound|8084|{subset_name}|{ORDER}"]


def addresses(c: dict[str, Any]) -> list[int]:
    return [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in c["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]


def test_istio_defaults_without_any_policy() -> None:
    out = build_clusters(ps(), TOPOLOGY, endpoints(), V("1.30"))
    assert [c["name"] for c in out] == [
        "outbound|8080||catalog-service.platform-core.svc.cluster.local",
        f"outbound|8084||{ORDER}",
        "outbound|8080||payment-service.platform-core.svc.cluster.local",
        "outbound|8080||inventory-service.platform-core.svc.cluster.local",
    ]
    c = out[1]
    assert c == {
        "name": f"outbound|8084||{ORDER}",
        "type": "STATIC",
        "alt_stat_name": f"outbound|8084||{ORDER};",
        "connect_timeout": "10s",
        "load_assignment": {
            "cluster_name": f"outbound|8084||{ORDER}",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
                        for p in (21003, 21004, 21005, 21006)
                    ]
                }
            ],
        },
        "circuit_breakers": {
            "thresholds": [{"max_connections": U, "max_pending_requests": U, "max_requests": U, "max_retries": U}]
        },
        "lb_policy": "LEAST_REQUEST",
    }


@pytest.mark.parametrize(("version", "alt"), [("1.20", False), ("1.23", False), ("1.24", True), ("1.31", True)])
def test_alt_stat_name_from_1_24(version: str, alt: bool) -> None:
    c = order(ps(), version)
    assert c.get("alt_stat_name") == (f"outbound|8084||{ORDER};" if alt else None)


@pytest.mark.parametrize(("version", "track"), [("1.28", True), ("1.29", False)])
def test_track_remaining_until_1_28(version: str, track: bool) -> None:
    threshold = order(ps(), version)["circuit_breakers"]["thresholds"][0]
    assert threshold.get("track_remaining", False) is track


@pytest.mark.parametrize(("version", "panic"), [("1.30", None), ("1.31", {"healthy_panic_threshold": {"value": 0.0}})])
def test_panic_threshold_without_outlier_detection(version: str, panic: dict[str, Any] | None) -> None:
    assert order(ps(), version).get("common_lb_config") == panic


def test_subset_endpoints_are_versions_whose_labels_are_a_superset() -> None:
    policies = ps(
        dr(
            "order-service",
            None,
            *ORDER_SUBSETS,
            subset("canary", track="canary"),
            subset("all", app="order-service"),
            subset("none", version="v3"),
        )
    )
    got = clusters(policies)
    assert addresses(got[f"outbound|8084||{ORDER}"]) == [21003, 21004, 21005, 21006]
    assert addresses(got[f"outbound|8084|v1|{ORDER}"]) == [21003, 21004, 21005]
    assert addresses(got[f"outbound|8084|v2|{ORDER}"]) == [21006]
    assert addresses(got[f"outbound|8084|canary|{ORDER}"]) == [21006]
    assert addresses(got[f"outbound|8084|all|{ORDER}"]) == [21003, 21004, 21005, 21006]
    assert addresses(got[f"outbound|8084|none|{ORDER}"]) == []
    # Subset clusters carry all Istio defaults too.
    assert got[f"outbound|8084|v2|{ORDER}"]["alt_stat_name"] == f"outbound|8084|v2|{ORDER};"
    assert got[f"outbound|8084|v2|{ORDER}"]["lb_policy"] == "LEAST_REQUEST"


@pytest.mark.parametrize("version", ["1.30", "1.31"])
def test_readme_circuit_breaker(version: str) -> None:
    c = order(ps(README_CIRCUIT_BREAKER), version)
    assert c["circuit_breakers"]["thresholds"][0] == {
        "max_connections": 100,
        "max_pending_requests": 50,
        "max_requests": 100,
        "max_retries": U,
    }
    assert c["typed_extension_protocol_options"] == {
        HPO: {
            "@type": f"type.googleapis.com/{HPO}",
            "common_http_protocol_options": {"max_requests_per_connection": 2},
            "explicit_http_config": {"http_protocol_options": {}},
        }
    }
    # consecutiveErrors: 5 is ignored; Envoy's consecutive_5xx default (5, enforced) applies instead.
    assert c["outlier_detection"] == {
        "enforcing_success_rate": 0,
        "interval": "30s",
        "base_ejection_time": "30s",
        "max_ejection_percent": 50,
    }
    # minHealthPercent is configured, so even 1.31 keeps it rather than sending unhealthy endpoints.
    assert c["common_lb_config"] == {"healthy_panic_threshold": {"value": 50.0}}


def test_connection_pool_full_mapping() -> None:
    c = order(VARIANTS["connection-pool-full"])
    assert c["connect_timeout"] == "0.25s"
    assert c["circuit_breakers"]["thresholds"][0] == {
        "max_connections": 1,
        "max_pending_requests": 1,
        "max_requests": 1,
        "max_retries": 1,
    }
    assert c["typed_extension_protocol_options"][HPO]["common_http_protocol_options"] == {
        "idle_timeout": "30s",  # tcp.idleTimeout, since http.idleTimeout is unset
        "max_connection_duration": "60s",
    }
    # Keepalive time and interval are truncated to whole seconds.
    assert c["upstream_connection_options"] == {
        "tcp_keepalive": {"keepalive_probes": 9, "keepalive_time": 7200, "keepalive_interval": 75}
    }


@pytest.mark.parametrize(
    ("pool", "common"),
    [
        (ConnectionPool(http=HTTPSettings(idle_timeout=5), tcp=TCPSettings(idle_timeout=30)), {"idle_timeout": "5s"}),
        (ConnectionPool(http=HTTPSettings(idle_timeout=0)), {"idle_timeout": "0s"}),
        (ConnectionPool(http=HTTPSettings(max_requests_per_connection=1)), {"max_requests_per_connection": 1}),
        (ConnectionPool(http=HTTPSettings(max_requests_per_connection=0)), None),
        (ConnectionPool(tcp=TCPSettings(max_connections=0)), None),
    ],
)
def test_http_protocol_options(pool: ConnectionPool, common: dict[str, Any] | None) -> None:
    c = order(ps(dr("order-service", TrafficPolicy(connection_pool=pool))))
    got = c.get("typed_extension_protocol_options", {}).get(HPO, {}).get("common_http_protocol_options")
    assert got == common
    if common is None:
        assert c["circuit_breakers"]["thresholds"][0]["max_connections"] == U  # zero means unset


def test_outlier_detection_full_mapping() -> None:
    c = order(VARIANTS["outlier-full"])
    assert c["outlier_detection"] == {
        "enforcing_success_rate": 0,
        "consecutive_5xx": 0,
        "enforcing_consecutive_5xx": 0,
        "consecutive_gateway_failure": 3,
        "enforcing_consecutive_gateway_failure": 100,
        "interval": "1s",
        "base_ejection_time": "2s",
        "max_ejection_percent": 100,
        "split_external_local_origin_errors": True,
        "consecutive_local_origin_failure": 2,
        "enforcing_consecutive_local_origin_failure": 100,
        "enforcing_local_origin_success_rate": 0,
    }
    assert c["common_lb_config"] == {"healthy_panic_threshold": {"value": 0.0}}


@pytest.mark.parametrize(
    ("od", "want"),
    [
        (OutlierDetection(), {"enforcing_success_rate": 0}),
        (OutlierDetection(consecutive_errors=1), {"enforcing_success_rate": 0}),
        (OutlierDetection(max_ejection_percent=0), {"enforcing_success_rate": 0}),
        (
            OutlierDetection(consecutive_5xx_errors=7),
            {"enforcing_success_rate": 0, "consecutive_5xx": 7, "enforcing_consecutive_5xx": 100},
        ),
        # Local-origin failures only count in split mode.
        (OutlierDetection(consecutive_local_origin_failures=3), {"enforcing_success_rate": 0}),
        (
            OutlierDetection(split_external_local_origin_errors=True),
            {
                "enforcing_success_rate": 0,
                "split_external_local_origin_errors": True,
                "enforcing_local_origin_success_rate": 0,
            },
        ),
    ],
)
def test_outlier_detection_fields(od: OutlierDetection, want: dict[str, Any]) -> None:
    c = order(ps(dr("order-service", TrafficPolicy(outlier_detection=od))), "1.30")
    assert c["outlier_detection"] == want
    assert c["common_lb_config"] == {"healthy_panic_threshold": {"value": 0.0}}


@pytest.mark.parametrize(
    ("version", "min_health", "order_panic", "catalog_panic"),
    [
        ("1.30", None, 0.0, None),  # outlierDetection present: minHealthPercent, default 0
        ("1.30", 25, 25.0, None),
        ("1.31", None, 0.0, 0.0),  # unhealthy endpoints are sent: panic mode off on every cluster
        ("1.31", 25, 25.0, 0.0),  # minHealthPercent configured: that service keeps it
    ],
)
def test_panic_threshold_rules(
    version: str, min_health: int | None, order_panic: float, catalog_panic: float | None
) -> None:
    od = OutlierDetection(consecutive_5xx_errors=1, min_health_percent=min_health)
    got = clusters(ps(dr("order-service", TrafficPolicy(outlier_detection=od))), version)
    order_lb = got[f"outbound|8084||{ORDER}"]["common_lb_config"]
    assert order_lb == {"healthy_panic_threshold": {"value": order_panic}}
    catalog = got["outbound|8080||catalog-service.platform-core.svc.cluster.local"]
    want = None if catalog_panic is None else {"healthy_panic_threshold": {"value": catalog_panic}}
    assert catalog.get("common_lb_config") == want


def test_subset_policy_merges_block_by_block() -> None:
    got = clusters(VARIANTS["subset-policy-merge"])
    top = got[f"outbound|8084||{ORDER}"]
    v1 = got[f"outbound|8084|v1|{ORDER}"]
    v2 = got[f"outbound|8084|v2|{ORDER}"]
    assert top["circuit_breakers"] == v1["circuit_breakers"]
    assert v1["circuit_breakers"]["thresholds"][0]["max_connections"] == 10
    # v2's connectionPool replaces the whole block: tcp.maxConnections 10 is NOT inherited.
    assert v2["circuit_breakers"]["thresholds"][0] == {
        "max_connections": U,
        "max_pending_requests": U,
        "max_requests": U,
        "max_retries": 5,
    }
    # outlierDetection is not overridden, so v2 inherits it whole.
    assert (
        v2["outlier_detection"]
        == top["outlier_detection"]
        == {
            "enforcing_success_rate": 0,
            "consecutive_5xx": 3,
            "enforcing_consecutive_5xx": 100,
        }
    )
    assert v2["common_lb_config"] == {"healthy_panic_threshold": {"value": 20.0}}


@pytest.mark.parametrize(
    ("lb", "want"),
    [
        (LoadBalancer(simple="LEAST_CONN"), {"lb_policy": "LEAST_REQUEST"}),
        (LoadBalancer(simple="UNSPECIFIED"), {"lb_policy": "LEAST_REQUEST"}),
        (LoadBalancer(simple="RANDOM"), {"lb_policy": "RANDOM"}),
        (LoadBalancer(simple="ROUND_ROBIN"), {"lb_policy": "ROUND_ROBIN"}),
        (
            LoadBalancer(simple="ROUND_ROBIN", warmup_duration=30),
            {"lb_policy": "ROUND_ROBIN", "round_robin_lb_config": {"slow_start_config": {"slow_start_window": "30s"}}},
        ),
        (
            LoadBalancer(warmup_duration=1.5),
            {
                "lb_policy": "LEAST_REQUEST",
                "least_request_lb_config": {"slow_start_config": {"slow_start_window": "1.5s"}},
            },
        ),
        (
            LoadBalancer(consistent_hash=ConsistentHash("x-user")),
            {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 1024}},
        ),
        (
            LoadBalancer(consistent_hash=ConsistentHash("x-user", minimum_ring_size=4096), warmup_duration=3),
            {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 4096}},
        ),
        (
            LoadBalancer(consistent_hash=ConsistentHash(use_source_ip=True, maglev_table_size=65537)),
            {"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 65537}},
        ),
    ],
)
def test_load_balancer(lb: LoadBalancer, want: dict[str, Any]) -> None:
    c = order(ps(dr("order-service", TrafficPolicy(load_balancer=lb))))
    lb_keys = {k: v for k, v in c.items() if k == "lb_policy" or k.endswith("_lb_config")}
    assert lb_keys == want
    assert c["type"] == "STATIC"


def test_passthrough_becomes_original_dst_without_endpoints() -> None:
    c = order(ps(dr("order-service", TrafficPolicy(load_balancer=LoadBalancer(simple="PASSTHROUGH")))))
    assert c["type"] == "ORIGINAL_DST"
    assert c["lb_policy"] == "CLUSTER_PROVIDED"
    assert "load_assignment" not in c


def test_destination_rules_for_one_host_are_merged_like_istiod() -> None:
    got = clusters(VARIANTS["two-drs-merged"])
    names = [n for n in got if "order-service" in n]
    assert names == [f"outbound|8084||{ORDER}", f"outbound|8084|v1|{ORDER}", f"outbound|8084|v2|{ORDER}"]
    # The first rule's v1 (labels version=v1) wins over the second's (track=x).
    assert addresses(got[f"outbound|8084|v1|{ORDER}"]) == [21003, 21004, 21005]
    # The first rule has no traffic policy, so the second one's is used.
    assert got[f"outbound|8084||{ORDER}"]["outlier_detection"] == {"enforcing_success_rate": 0}


def test_destination_rule_in_service_namespace_is_preferred() -> None:
    elsewhere = dr(ORDER, TrafficPolicy(load_balancer=LoadBalancer(simple="RANDOM")), name="a", namespace="team-b")
    home = dr("order-service", TrafficPolicy(load_balancer=LoadBalancer(simple="ROUND_ROBIN")), name="b")
    assert order(ps(elsewhere, home))["lb_policy"] == "ROUND_ROBIN"
    assert order(ps(elsewhere))["lb_policy"] == "RANDOM"


def test_destination_rule_for_unknown_host_is_ignored() -> None:
    assert clusters(ps(dr("ghost-service", TrafficPolicy(load_balancer=LoadBalancer(simple="RANDOM"))))) == clusters(
        ps()
    )


def test_unknown_endpoint_key_is_a_clear_error() -> None:
    eps = endpoints()
    eps[("order-service", "v3")] = [("127.0.0.1", 1)]
    with pytest.raises(TopologyError, match=r"\('order-service', 'v3'\).*known \(service, version\) pairs"):
        build_clusters(ps(), TOPOLOGY, eps, V("1.30"))


def test_missing_endpoints_mean_no_instances() -> None:
    eps = endpoints()
    del eps[("order-service", "v2")]
    out = {
        c["name"]: c for c in build_clusters(ps(dr("order-service", None, *ORDER_SUBSETS)), TOPOLOGY, eps, V("1.30"))
    }
    assert addresses(out[f"outbound|8084|v2|{ORDER}"]) == []
    assert addresses(out[f"outbound|8084||{ORDER}"]) == [21003, 21004, 21005]


def test_service_clusters_lists_what_build_clusters_makes() -> None:
    policies = VARIANTS["two-drs-merged"]
    built = [c["name"] for c in build_clusters(policies, TOPOLOGY, endpoints(), V("1.30"))]
    listed = [n for svc in TOPOLOGY.services for n in service_clusters(policies, TOPOLOGY, svc)]
    assert listed == built
    assert len(built) == 6
