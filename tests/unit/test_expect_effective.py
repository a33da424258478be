"""Resolving the effective policy of a (service, subset) as istiod would."""

from __future__ import annotations

import pytest

from pytest_meshcheck.errors import MeshcheckError, TopologyError
from pytest_meshcheck.expect import default_policy, effective_policy, parse_retry_on
from pytest_meshcheck.expect.effective import DEFAULT_RETRY_ON, MAX_UINT32
from pytest_meshcheck.policy.model import (
    ConnectionPool,
    ConsistentHash,
    Destination,
    DestinationRule,
    HTTPMatchRequest,
    HTTPRetry,
    HTTPRoute,
    HTTPRouteDestination,
    HTTPSettings,
    LoadBalancer,
    OutlierDetection,
    PolicySet,
    SourceRef,
    StringMatch,
    Subset,
    TCPSettings,
    TrafficPolicy,
    VirtualService,
)
from pytest_meshcheck.topology import parse_topology

TOPO = parse_topology(
    {
        "namespace": "shop",
        "services": [
            {
                "name": "orders",
                "port": 8084,
                "versions": [{"name": "v1", "replicas": 3}, {"name": "v2", "replicas": 1}],
            },
            {"name": "pay", "versions": [{"name": "v1", "replicas": 2}]},
        ],
    }
)
V1 = "networking.istio.io/v1"


def _route(
    *dests: tuple[str | None, int | None],
    index: int = 0,
    retries: HTTPRetry | None = None,
    match: tuple[HTTPMatchRequest, ...] = (),
) -> HTTPRoute:
    return HTTPRoute(
        match=match,
        route=tuple(HTTPRouteDestination(Destination("orders", subset=s), weight=w) for s, w in dests),
        retries=retries,
        index=index,
    )


def _vs(*routes: HTTPRoute, hosts: tuple[str, ...] = ("orders",), gateways: tuple[str, ...] = ()) -> VirtualService:
    return VirtualService("orders", "shop", V1, hosts, gateways, routes)


def _dr(top: TrafficPolicy | None = None, subsets: tuple[Subset, ...] = (), name: str = "orders") -> DestinationRule:
    return DestinationRule(name, "shop", V1, "orders", top, subsets)


SUBSETS = (Subset("v1", {"version": "v1"}), Subset("v2", {"version": "v2"}))


@pytest.mark.parametrize(
    ("text", "tokens", "codes"),
    [
        # istiod retry_test.go examples
        ("gateway-error,retriable-status-codes,503", ("gateway-error", "retriable-status-codes"), (503,)),
        (
            "some,fake,5xx,404,conditions,503",
            ("some", "fake", "5xx", "conditions", "retriable-status-codes"),
            (404, 503),
        ),
        ("5xx,1000", ("5xx", "1000"), ()),  # 1000 is not a known HTTP status
        (" 5xx , reset ,,", ("5xx", "reset"), ()),
    ],
)
def test_parse_retry_on_like_istiod(text: str, tokens: tuple[str, ...], codes: tuple[int, ...]) -> None:
    assert parse_retry_on(text) == (tokens, codes)


def test_no_policies_gives_istio_defaults() -> None:
    pol = effective_policy(PolicySet(), TOPO, "orders")
    assert pol.hosts == 4
    assert (pol.retry.num_retries, pol.retry.retry_on, pol.retry.is_default) == (2, DEFAULT_RETRY_ON, True)
    assert pol.timeout is None
    assert pol.outlier is None
    assert pol.pool.max_retries == MAX_UINT32
    assert pol.pool.max_connections == MAX_UINT32
    assert pol.lb == "LEAST_REQUEST"
    assert pol.reasons["lb"].effect.startswith("Istio's default since 1.14")


@pytest.mark.parametrize(("istio", "panic"), [("1.30", 50.0), ("1.31", 0.0)])
def test_panic_threshold_without_outlier_detection_changed_in_1_31(istio: str, panic: float) -> None:
    assert effective_policy(PolicySet(), TOPO, "orders", istio=istio).panic_threshold == panic


def test_subset_block_replaces_the_whole_top_level_block() -> None:
    top = TrafficPolicy(
        connection_pool=ConnectionPool(TCPSettings(max_connections=10), HTTPSettings(http1_max_pending_requests=5)),
        outlier_detection=OutlierDetection(consecutive_5xx_errors=3),
    )
    v2 = Subset("v2", {"version": "v2"}, TrafficPolicy(connection_pool=ConnectionPool(TCPSettings(max_connections=1))))
    ps = PolicySet((), (_dr(top, (SUBSETS[0], v2)),))
    pol = effective_policy(ps, TOPO, "orders", subset="v2")
    assert pol.hosts == 1
    assert pol.pool.max_connections == 1
    assert pol.pool.max_pending_requests == MAX_UINT32  # not inherited from the top-level block
    assert (
        pol.reasons["pool.max_connections"].field == "spec.subsets[1].trafficPolicy.connectionPool.tcp.maxConnections"
    )
    assert pol.outlier is not None
    assert pol.outlier.consecutive_5xx == 3
    assert pol.reasons["outlier.consecutive_5xx"].field == "spec.trafficPolicy.outlierDetection.consecutive5xxErrors"
    v1 = effective_policy(ps, TOPO, "orders", subset="v1")
    assert (v1.hosts, v1.pool.max_connections, v1.pool.max_pending_requests) == (3, 10, 5)


def test_route_destination_decides_the_subset() -> None:
    ps = PolicySet((_vs(_route(("v2", None))),), (_dr(None, SUBSETS),))
    pol = effective_policy(ps, TOPO, "orders")
    assert (pol.subset, pol.hosts, pol.cluster_exists) == ("v2", 1, True)


def test_weighted_route_needs_a_subset() -> None:
    ps = PolicySet((_vs(_route(("v1", 90), ("v2", 10))),), (_dr(None, SUBSETS),))
    with pytest.raises(MeshcheckError, match=r"splits traffic over v1 \(90\), v2 \(10\).*pass subset="):
        effective_policy(ps, TOPO, "orders")
    assert effective_policy(ps, TOPO, "orders", subset="v2").hosts == 1
    with pytest.raises(MeshcheckError, match="subset='v3' is not a destination"):
        effective_policy(ps, TOPO, "orders", subset="v3")


def test_undefined_subset_means_no_cluster() -> None:
    ps = PolicySet((_vs(_route(("v3", None))),), (_dr(None, SUBSETS),))
    pol = effective_policy(ps, TOPO, "orders")
    assert (pol.cluster_exists, pol.hosts) == (False, 0)
    assert "503 NC" in pol.reasons["subset"].effect


def test_first_plain_route_is_modelled_unless_chosen() -> None:
    header = HTTPMatchRequest(headers={"x-version": StringMatch("exact", "v2")})
    canary = _route(("v2", None), index=0, match=(header,), retries=HTTPRetry(5, retry_on="5xx"))
    main = _route(("v1", None), index=1, retries=HTTPRetry(1, retry_on="5xx"))
    ps = PolicySet((_vs(canary, main),), (_dr(None, SUBSETS),))
    pol = effective_policy(ps, TOPO, "orders")
    assert (pol.retry.num_retries, pol.subset) == (1, "v1")
    assert pol.reasons["retry.attempts"].field == "spec.http[1].retries.attempts"
    chosen = effective_policy(ps, TOPO, "orders", route=0)
    assert (chosen.retry.num_retries, chosen.subset) == (5, "v2")
    with pytest.raises(MeshcheckError, match="route=2 is out of range"):
        effective_policy(ps, TOPO, "orders", route=2)


def test_gateway_only_virtual_service_does_not_apply_to_sidecars() -> None:
    ps = PolicySet((_vs(_route((None, None), retries=HTTPRetry(4)), gateways=("shop/ingress",)),))
    assert effective_policy(ps, TOPO, "orders").retry.is_default
    mesh = PolicySet((_vs(_route((None, None), retries=HTTPRetry(4)), gateways=("shop/ingress", "mesh")),))
    assert effective_policy(mesh, TOPO, "orders").retry.num_retries == 4


@pytest.mark.parametrize("host", ["orders", "orders.shop", "orders.shop.svc.cluster.local"])
def test_virtual_service_hosts_are_matched_like_istiod(host: str) -> None:
    ps = PolicySet((_vs(_route((None, None), retries=HTTPRetry(4)), hosts=(host,)),))
    assert effective_policy(ps, TOPO, "orders").retry.num_retries == 4
    assert effective_policy(ps, TOPO, "pay").retry.is_default  # another service is untouched


def test_wildcard_host_captures_every_matching_service() -> None:
    ps = PolicySet((_vs(_route((None, None), retries=HTTPRetry(4)), hosts=("*.shop.svc.cluster.local",)),))
    pol = effective_policy(ps, TOPO, "pay")
    # calls to pay match the wildcard VirtualService, whose route sends them to orders
    assert (pol.retry.num_retries, pol.service.name) == (4, "orders")
    other = PolicySet((_vs(_route((None, None), retries=HTTPRetry(4)), hosts=("*.other.svc.cluster.local",)),))
    assert effective_policy(other, TOPO, "pay").retry.is_default


def test_several_virtual_services_for_one_host_are_noted() -> None:
    a = _vs(_route((None, None), retries=HTTPRetry(4)))
    b = VirtualService("orders-2", "shop", V1, ("orders",), http=(_route((None, None), retries=HTTPRetry(1)),))
    pol = effective_policy(PolicySet((a, b)), TOPO, "orders")
    assert pol.retry.num_retries == 4
    assert any("VirtualServices for orders" in r.effect for r in pol.reasons.values())


def test_consistent_hash_drops_previous_hosts_from_1_23_on_single_destination_routes() -> None:
    top = TrafficPolicy(load_balancer=LoadBalancer(consistent_hash=ConsistentHash(http_header_name="x-user")))
    ps = PolicySet((_vs(_route((None, None), retries=HTTPRetry(2, retry_on="5xx"))),), (_dr(top),))
    assert effective_policy(ps, TOPO, "orders", istio="1.23").retry.previous_hosts is False
    assert effective_policy(ps, TOPO, "orders", istio="1.22").retry.previous_hosts is True
    assert effective_policy(ps, TOPO, "orders").lb == "RING_HASH"
    default_route = PolicySet((), (_dr(top),))
    assert effective_policy(default_route, TOPO, "orders").retry.previous_hosts is False


def test_retry_ignore_previous_hosts_is_honoured_from_1_26() -> None:
    ps = PolicySet((_vs(_route((None, None), retries=HTTPRetry(2, retry_ignore_previous_hosts=False))),))
    assert effective_policy(ps, TOPO, "orders", istio="1.26").retry.previous_hosts is False
    old = effective_policy(ps, TOPO, "orders", istio="1.25")
    assert old.retry.previous_hosts is True
    assert "1.26" in old.reasons["retry.previous_hosts"].effect


def test_zero_pool_values_mean_unset() -> None:
    top = TrafficPolicy(connection_pool=ConnectionPool(TCPSettings(max_connections=0), HTTPSettings(max_retries=0)))
    pol = effective_policy(PolicySet((), (_dr(top),)), TOPO, "orders")
    assert pol.pool.max_connections == MAX_UINT32
    assert pol.pool.max_retries == MAX_UINT32
    assert "0 means unset" in pol.reasons["pool.max_connections"].effect


def test_outlier_defaults_fill_an_empty_block() -> None:
    pol = effective_policy(PolicySet((), (_dr(TrafficPolicy(outlier_detection=OutlierDetection())),)), TOPO, "orders")
    od = pol.outlier
    assert od is not None
    assert (od.consecutive_5xx, od.enforce_5xx, od.enforce_gateway) == (5, True, False)
    assert (od.interval, od.base_ejection_time, od.max_ejection_percent) == (10.0, 30.0, 10)
    assert pol.panic_threshold == 0.0  # Istio writes minHealthPercent (default 0) when outlierDetection is set


def test_reasons_point_at_the_yaml_line_when_known() -> None:
    src = SourceRef("policies.yaml", 0, 1, {"spec.http[0].retries.attempts": 12})
    vs = VirtualService(
        "orders", "shop", V1, ("orders",), http=(_route((None, None), retries=HTTPRetry(3)),), source=src
    )
    reason = effective_policy(PolicySet((vs,)), TOPO, "orders").reasons["retry.attempts"]
    assert reason.location == "policies.yaml:12"
    assert reason.source == "VirtualService shop/orders"
    assert str(reason).startswith("policies.yaml:12 VirtualService shop/orders spec.http[0].retries.attempts = 3")


def test_unknown_service_is_a_topology_error() -> None:
    with pytest.raises(TopologyError, match="unknown service 'nope'"):
        effective_policy(PolicySet(), TOPO, "nope")


def test_route_to_a_service_outside_the_topology_is_a_topology_error() -> None:
    route = HTTPRoute(route=(HTTPRouteDestination(Destination("elsewhere")),))
    with pytest.raises(TopologyError, match="'elsewhere'"):
        effective_policy(PolicySet((_vs(route),)), TOPO, "orders")


def test_default_policy_helper() -> None:
    pol = default_policy(TOPO.service("pay"), hosts=5, istio="1.23")
    assert pol.hosts == 5
    assert pol.retry.retriable_status_codes == (503,)
