"""Traffic management: weighted canary splits and header-matched routing to a subset."""

from __future__ import annotations

from pytest_meshcheck import ClosedLoop, Scenario
from pytest_meshcheck.expect.routing import predict_routing
from pytest_meshcheck.load import LoadResult

SERVICE = "order-service"
SUBSETS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: order-subsets, namespace: platform-core}
spec:
  host: order-service
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""
CANARY = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: order-canary, namespace: platform-core}
spec:
  hosts: [order-service]
  http:
  - match:
    - headers:
        x-version: {exact: v2}
    route:
    - destination: {host: order-service, subset: v2}
  - route:
    - destination: {host: order-service, subset: v1}
      weight: 90
    - destination: {host: order-service, subset: v2}
      weight: 10
"""


def served_by_v2(result: LoadResult) -> tuple[int, int]:
    """Requests answered by a v2 instance, out of all requests."""
    v2 = sum(c for inst, c in result.instance_counts().items() if inst and "-v2-" in inst)
    return v2, result.count


def v2_share(mesh_scenario: Scenario, headers: dict[str, str] | None = None) -> float:
    """The share of requests the routing model sends to order-service v2, with its reasons recorded."""
    mesh = mesh_scenario.mesh
    routing = predict_routing(mesh.policies, mesh.topology, SERVICE, headers=headers, istio=mesh.istio_version)
    mesh_scenario.explain(routing.explain())
    return routing.versions.get((SERVICE, "v2"), 0.0)


def test_canary_split_sends_ten_percent_to_v2(mesh_scenario: Scenario) -> None:
    """Weights 90/10 between subsets v1 and v2 send 10 % of requests to v2."""
    mesh_scenario.apply(SUBSETS + "---" + CANARY)
    # 16 in flight: Envoy draws each request's subset by weight on its own, whatever else is in flight.
    mesh_scenario.drive(SERVICE, ClosedLoop(concurrency=16))
    # 85/15 is off by 0.05 and must fail.
    model = v2_share(mesh_scenario)
    mesh_scenario.expect_share("share of requests served by v2", served_by_v2, about=0.10, delta=0.05, model=model)


def test_header_match_routes_to_v2(mesh_scenario: Scenario) -> None:
    """A request with x-version: v2 matches the first rule and always reaches subset v2."""
    mesh_scenario.apply(SUBSETS + "---" + CANARY)
    headers = {"x-version": "v2"}
    mesh_scenario.drive(SERVICE, ClosedLoop(concurrency=16), headers=headers)
    model = v2_share(mesh_scenario, headers)
    # at least 100 %: every request; the sample catches a 2 % leak to v1 with 95 % probability.
    mesh_scenario.expect_share(
        "requests with x-version: v2 served by v2", served_by_v2, at_least=1.0, delta=0.02, model=model
    )
