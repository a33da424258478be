"""Traffic management: weighted canary splits and header-matched routing to a subset."""

from __future__ import annotations

from pytest_meshcheck.harness.scenario import Scenario

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


def _v2_share(scenario: Scenario, headers: dict[str, str] | None, n: int) -> tuple[int, int]:
    result = scenario.load.closed(SERVICE, concurrency=4, requests=n, headers=headers)
    counts = result.instance_counts()
    v2 = sum(c for inst, c in counts.items() if inst and "-v2-" in inst)
    return v2, result.count


def test_canary_split_sends_ten_percent_to_v2(scenario: Scenario) -> None:
    """Weights 90/10 between subsets v1 and v2 send a binomially consistent 10 % of requests to v2."""
    scenario.policies.apply(SUBSETS + "---" + CANARY)
    route = scenario.effective(SERVICE, subset="v2", route=1)
    scenario.explain(route.reason("route", "subset", "hosts"))
    expected = 10 / 100
    v2, n = _v2_share(scenario, None, scenario.requests_for(expected, 0.03))
    scenario.check_rate("share of requests served by v2", v2, n, expected, tolerance=0.03,
                        reasons=["spec.http[1].route[1].weight = 10 of a total of 100"])  # fmt: skip


def test_header_match_routes_to_v2(scenario: Scenario) -> None:
    """A request with x-version: v2 matches the first rule and always reaches subset v2."""
    scenario.policies.apply(SUBSETS + "---" + CANARY)
    scenario.target(SERVICE)
    v2, n = _v2_share(scenario, {"x-version": "v2"}, 200)
    scenario.check_value("requests with x-version: v2 served by v2", float(v2), expected=float(n),
                         reasons=["spec.http[0].match[0].headers.x-version.exact = v2"])  # fmt: skip
