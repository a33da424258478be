from __future__ import annotations

from typing import Any

import pytest
from translate_cases import (
    NS,
    ORDER,
    ORDER_SUBSETS,
    README_CANARY,
    README_RETRY,
    README_TIMEOUT,
    TOPOLOGY,
    VARIANTS,
    dest,
    dr,
    exact,
    http,
    ps,
    vs,
)

from pytest_meshcheck.errors import PolicyError
from pytest_meshcheck.istio_version import IstioVersion
from pytest_meshcheck.policy.model import (
    ConsistentHash,
    FaultAbort,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRetry,
    LoadBalancer,
    PolicySet,
    StringMatch,
    Subset,
    TrafficPolicy,
)
from pytest_meshcheck.topology import parse_topology
from pytest_meshcheck.translate import build_route_config, default_retry_policy
from pytest_meshcheck.translate.retries import previous_hosts_predicate

V = IstioVersion.parse
PAYMENT = f"payment-service.{NS}.svc.cluster.local"
CATALOG = f"catalog-service.{NS}.svc.cluster.local"
INVENTORY = f"inventory-service.{NS}.svc.cluster.local"


def vhosts(policies: PolicySet, version: str = "1.30") -> dict[str, dict[str, Any]]:
    rc = build_route_config(policies, TOPOLOGY, V(version))
    return {vh["name"]: vh for vh in rc["virtual_hosts"]}


def routes(policies: PolicySet, host: str = ORDER, port: int = 8084, version: str = "1.30") -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = vhosts(policies, version)[f"{host}:{port}"]["routes"]
    return routes


def test_route_configuration_envelope() -> None:
    rc = build_route_config(ps(), TOPOLOGY, V("1.30"), name="15001")
    assert rc["name"] == "15001"
    assert rc["validate_clusters"] is False
    assert [vh["name"] for vh in rc["virtual_hosts"]] == [
        f"{CATALOG}:8080",
        f"{ORDER}:8084",
        f"{PAYMENT}:8080",
        f"{INVENTORY}:8080",
    ]
    assert build_route_config(ps(), TOPOLOGY, V("1.30"))["name"] == "meshcheck-outbound"


def test_virtual_host_domains_and_attempt_count() -> None:
    vh = vhosts(ps())[f"{ORDER}:8084"]
    assert sorted(vh["domains"]) == sorted(
        [
            ORDER,
            f"{ORDER}:8084",
            "order-service",
            "order-service:8084",
            "order-service.platform-core",
            "order-service.platform-core:8084",
            "order-service.platform-core.svc",
            "order-service.platform-core.svc:8084",
        ]
    )
    assert vh["domains"][0] == ORDER
    assert vh["include_request_attempt_count"] is True
    assert vh["include_attempt_count_in_response"] is True


def test_duplicate_short_names_across_namespaces_are_listed_once() -> None:
    topo = parse_topology(
        {"services": [{"name": "api", "namespace": "a"}, {"name": "api", "namespace": "b"}]}, source="t"
    )
    rc = build_route_config(ps(), topo, V("1.30"))
    first, second = rc["virtual_hosts"]
    assert "api" in first["domains"]
    assert "api" not in second["domains"]
    assert "api.b.svc.cluster.local" in second["domains"]


@pytest.mark.parametrize("version", ["1.23", "1.24", "1.30"])
def test_service_without_virtual_service_gets_default_route(version: str) -> None:
    assert routes(ps(), version=version) == [
        {
            "name": "default",
            "match": {"prefix": "/"},
            "route": {
                "cluster": f"outbound|8084||{ORDER}",
                "timeout": "0s",
                "max_grpc_timeout": "0s",
                "retry_policy": default_retry_policy(V(version)),
            },
            "decorator": {"operation": f"{ORDER}:8084/*"},
        }
    ]


def test_readme_retry_virtual_service() -> None:
    (r,) = routes(ps(README_RETRY))
    assert r == {
        "match": {"prefix": "/"},
        "route": {
            "timeout": "10s",
            "max_grpc_timeout": "10s",
            "cluster": f"outbound|8084||{ORDER}",
            "retry_policy": {
                "retry_on": "5xx,reset,connect-failure,refused-stream",
                "num_retries": 3,
                "retry_host_predicate": [previous_hosts_predicate()],
                "host_selection_retry_max_attempts": 5,
                "per_try_timeout": "2s",
            },
        },
        "decorator": {"operation": f"{ORDER}:8084/*"},
    }
    # Other services keep their default routes.
    assert routes(ps(README_RETRY), CATALOG, 8080)[0]["name"] == "default"


def test_readme_timeout_with_zero_attempts_has_no_retry_policy() -> None:
    (r,) = routes(ps(README_TIMEOUT), PAYMENT, 8080)
    assert r["route"] == {
        "timeout": "15s",
        "max_grpc_timeout": "15s",
        "cluster": f"outbound|8080||{PAYMENT}",
    }


def test_readme_canary_has_no_fallback_route() -> None:
    got = routes(ps(README_CANARY, dr("order-service", None, *ORDER_SUBSETS)))
    assert len(got) == 2  # istiod adds no catch-all after a VirtualService's own rules
    header, split = got
    assert header["match"] == {
        "prefix": "/",
        "case_sensitive": True,
        "headers": [{"name": "x-version", "string_match": {"exact": "v2"}}],
    }
    assert header["route"]["cluster"] == f"outbound|8084|v2|{ORDER}"
    assert split["match"] == {"prefix": "/"}
    assert split["route"]["weighted_clusters"] == {
        "clusters": [
            {"name": f"outbound|8084|v1|{ORDER}", "weight": 90},
            {"name": f"outbound|8084|v2|{ORDER}", "weight": 10},
        ]
    }
    assert "total_weight" not in split["route"]["weighted_clusters"]
    assert "cluster" not in split["route"]
    # A split names no single host, so the decorator uses the VirtualService name.
    assert split["decorator"] == {"operation": "order-canary:8084/*"}


def test_weight_zero_destinations_are_dropped() -> None:
    (r,) = routes(VARIANTS["weighted-with-zero"])
    assert r["route"]["weighted_clusters"] == {"clusters": [{"name": f"outbound|8084|v1|{ORDER}", "weight": 100}]}


def test_single_destination_ignores_weight() -> None:
    (r,) = routes(ps(vs(http(dest("order-service", "v1", weight=30)))))
    assert r["route"]["cluster"] == f"outbound|8084|v1|{ORDER}"


def test_all_weights_zero_is_a_policy_error() -> None:
    bad = vs(http(dest("order-service", "v1", weight=0), dest("order-service", "v2")), http(dest("order-service")))
    with pytest.raises(PolicyError, match=r"spec\.http\[0\]\.route: every destination has weight 0"):
        build_route_config(ps(bad), TOPOLOGY, V("1.30"))


def test_match_translation() -> None:
    got = routes(VARIANTS["matches"])
    assert [r.get("name") for r in got] == ["canary.get-api", "canary", "canary", None]
    first, health, regex, fallback = got
    assert first["match"] == {
        "prefix": "/api",
        "case_sensitive": False,
        "headers": [
            {"name": "x-any", "present_match": True},  # regex "*" means "present"
            {"name": "x-user", "string_match": {"safe_regex": {"regex": "a.*"}}},
            {"name": ":method", "string_match": {"exact": "GET"}},  # after the sorted headers
        ],
        "query_parameters": [{"name": "debug", "string_match": {"exact": "1"}}],
    }
    assert first["decorator"] == {"operation": f"{ORDER}:8084/api*"}
    assert health["match"] == {
        "path": "/health",
        "case_sensitive": True,
        "headers": [
            {
                "name": "x-skip",
                "string_match": {"prefix": "y"},
                "invert_match": True,
                "treat_missing_header_as_empty": True,
            }
        ],
    }
    assert health["decorator"] == {"operation": f"{ORDER}:8084/health"}
    assert regex["match"] == {"safe_regex": {"regex": "/v[0-9]+/.*"}, "case_sensitive": True}
    assert regex["decorator"] == {"operation": f"{ORDER}:8084/v[0-9]+/.*"}
    assert fallback["match"] == {"prefix": "/"}
    assert fallback["route"]["cluster"] == f"outbound|8084|v1|{ORDER}"


def test_without_header_present_match_has_no_treat_missing() -> None:
    m = HTTPMatchRequest(without_headers={"x-debug": StringMatch("regex", "*")})
    (r, _) = routes(ps(vs(http(dest("order-service"), match=(m,)), http(dest("order-service")))))
    assert r["match"]["headers"] == [{"name": "x-debug", "present_match": True, "invert_match": True}]


def test_rules_after_a_catch_all_are_dropped() -> None:
    policies = ps(
        vs(
            http(
                dest("order-service", "v1"),
                match=(HTTPMatchRequest(uri=StringMatch("prefix", "/")), HTTPMatchRequest(uri=exact("/never"))),
            ),
            http(dest("order-service", "v2")),
        )
    )
    got = routes(policies)
    assert len(got) == 1
    assert got[0]["match"] == {"prefix": "/", "case_sensitive": True}
    catch_all_rule = ps(vs(http(dest("order-service", "v1")), http(dest("order-service", "v2"))))
    assert [r["route"]["cluster"] for r in routes(catch_all_rule)] == [f"outbound|8084|v1|{ORDER}"]
    regex_all = ps(
        vs(
            http(dest("order-service", "v1"), match=(HTTPMatchRequest(uri=StringMatch("regex", ".*")),)),
            http(dest("order-service", "v2")),
        )
    )
    assert len(routes(regex_all)) == 1


def test_route_names_combine_rule_and_match_names() -> None:
    policies = ps(
        vs(
            http(dest("order-service"), match=(HTTPMatchRequest(name="m", uri=exact("/a")),)),
            http(dest("order-service"), name="r", match=(HTTPMatchRequest(uri=exact("/b")),)),
            http(dest("order-service")),
        )
    )
    got = routes(policies)
    assert got[0]["name"] == ".m"  # istiod joins an empty rule name too
    assert got[1]["name"] == "r"
    assert "name" not in got[2]


def test_explicit_zero_timeout_and_unset_timeout_both_write_zero() -> None:
    assert routes(VARIANTS["timeout-zero"])[0]["route"]["timeout"] == "0s"
    assert routes(ps(vs(http(dest("order-service")))))[0]["route"]["timeout"] == "0s"
    assert routes(ps(vs(http(dest("order-service"), timeout=0.5))))[0]["route"]["max_grpc_timeout"] == "0.5s"


def test_fault_goes_to_typed_per_filter_config() -> None:
    (r,) = routes(VARIANTS["fault-delay-abort"])
    assert r["typed_per_filter_config"] == {
        "envoy.filters.http.fault": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "delay": {"fixed_delay": "2s", "percentage": {"numerator": 125000, "denominator": "MILLION"}},
            "abort": {"http_status": 503, "percentage": {"numerator": 1000, "denominator": "MILLION"}},
        }
    }
    # The route keeps its retry policy and timeout; Envoy simply never retries an injected abort.
    assert r["route"]["retry_policy"] == default_retry_policy(V("1.30"))


def test_bad_grpc_status_points_at_the_rule() -> None:
    bad = vs(
        http(dest("order-service"), match=(HTTPMatchRequest(uri=exact("/x")),)),
        http(dest("order-service"), fault=HTTPFaultInjection(abort=FaultAbort(grpc_status="NOPE"))),
    )
    with pytest.raises(PolicyError, match=r"spec\.http\[1\]\.fault\.abort\.grpcStatus: unknown gRPC status 'NOPE'"):
        build_route_config(ps(bad), TOPOLOGY, V("1.30"))


def test_gateway_only_virtual_service_does_not_touch_sidecars() -> None:
    assert routes(VARIANTS["gateway-only-vs"]) == routes(ps())
    mesh_too = vs(http(dest("order-service"), timeout=1), gateways=("istio-system/ingress", "mesh"))
    assert routes(ps(mesh_too))[0]["route"]["timeout"] == "1s"


def test_first_virtual_service_for_a_host_wins() -> None:
    first = vs(http(dest("order-service"), timeout=1), name="first")
    second = vs(http(dest("order-service"), timeout=2), name="second", hosts=(ORDER,))
    assert routes(ps(first, second))[0]["route"]["timeout"] == "1s"
    assert routes(ps(second, first))[0]["route"]["timeout"] == "2s"


def test_virtual_service_with_several_hosts() -> None:
    both = vs(http(dest("inventory-service"), timeout=3), hosts=("order-service", "payment-service"))
    assert routes(ps(both))[0]["route"]["cluster"] == f"outbound|8080||{INVENTORY}"
    assert routes(ps(both), PAYMENT, 8080)[0]["route"]["timeout"] == "3s"


def test_destinations_resolve_relative_to_the_virtual_service_namespace() -> None:
    (r,) = routes(VARIANTS["cross-service-route"], CATALOG, 8080)
    assert r["route"]["cluster"] == f"outbound|8080||{INVENTORY}"
    # Unknown hosts still get a cluster name (Envoy answers 503 NC): FQDN from the short name, listener port.
    (r,) = routes(ps(vs(http(dest("ghost")), hosts=("catalog-service",))), CATALOG, 8080)
    assert r["route"]["cluster"] == f"outbound|8080||ghost.{NS}.svc.cluster.local"
    (r,) = routes(ps(vs(http(dest("ghost", port=9000)), hosts=("catalog-service",))), CATALOG, 8080)
    assert r["route"]["cluster"] == f"outbound|9000||ghost.{NS}.svc.cluster.local"


def test_undefined_subset_still_names_a_cluster() -> None:
    (r,) = routes(VARIANTS["undefined-subset"])
    assert r["route"]["cluster"] == f"outbound|8084|v9|{ORDER}"


@pytest.mark.parametrize(("version", "predicate"), [("1.22", True), ("1.23", False)])
def test_consistent_hash_routes(version: str, predicate: bool) -> None:
    policies = VARIANTS["consistent-hash"]
    (order,) = routes(policies, version=version)
    assert order["route"]["hash_policy"] == [{"header": {"header_name": "x-user"}}]
    assert ("retry_host_predicate" in order["route"]["retry_policy"]) is predicate
    (split,) = routes(policies, PAYMENT, 8080, version)
    assert split["route"]["hash_policy"] == [
        {"cookie": {"name": "sid", "ttl": "60s", "path": "/"}},
        {"connection_properties": {"source_ip": True}},
    ]
    # Several destinations: not a "consistent hash route", so the predicate stays.
    assert "retry_host_predicate" in split["route"]["retry_policy"]
    # Without a VirtualService the hash policy is still added, with the plain default retry policy.
    (default,) = routes(policies, INVENTORY, 8080, version)
    assert default["name"] == "default"
    assert default["route"]["hash_policy"] == [{"query_parameter": {"name": "k"}}]
    assert default["route"]["retry_policy"] == default_retry_policy(V(version))


def test_subset_consistent_hash_overrides_top_level_on_the_route() -> None:
    rule = dr(
        "order-service",
        TrafficPolicy(load_balancer=LoadBalancer(consistent_hash=ConsistentHash("x-top"))),
        Subset(
            "v1", {"version": "v1"}, TrafficPolicy(load_balancer=LoadBalancer(consistent_hash=ConsistentHash("x-v1")))
        ),
        Subset("v2", {"version": "v2"}, TrafficPolicy(load_balancer=LoadBalancer(simple="RANDOM"))),
    )
    (v1,) = routes(ps(rule, vs(http(dest("order-service", "v1")))))
    assert v1["route"]["hash_policy"] == [{"header": {"header_name": "x-v1"}}]
    (v2,) = routes(ps(rule, vs(http(dest("order-service", "v2")))))
    assert v2["route"]["hash_policy"] == [{"header": {"header_name": "x-top"}}]


def test_retry_policy_per_version_on_routes() -> None:
    policies = ps(vs(http(dest("order-service"), retries=HTTPRetry(2, backoff=0.2))))
    assert "retry_back_off" not in routes(policies, version="1.25")[0]["route"]["retry_policy"]
    assert routes(policies, version="1.26")[0]["route"]["retry_policy"]["retry_back_off"] == {"base_interval": "0.2s"}
    assert routes(ps(), version="1.23")[0]["route"]["retry_policy"]["retriable_status_codes"] == [503]
    assert "retriable_status_codes" not in routes(ps(), version="1.24")[0]["route"]["retry_policy"]
