"""Predicting where requests go: the matched http rule, the weighted split, and the instances behind it."""

from __future__ import annotations

import ast
from importlib import resources
from pathlib import Path

import pytest

from pytest_meshcheck.errors import MeshcheckError, TopologyError
from pytest_meshcheck.expect import Outcome, RoutingPrediction, predict_routing
from pytest_meshcheck.istio_version import parse_istio_version
from pytest_meshcheck.policy import PolicySet, load_policies, load_policy_text
from pytest_meshcheck.topology import Topology, load_topology, parse_topology
from pytest_meshcheck.translate import build_clusters, build_route_config

REPO = Path(__file__).resolve().parents[2]


def _scenario_yaml(name: str) -> str:
    """A YAML constant of scenarios/test_traffic_management.py, read without importing the scenario."""
    tree = ast.parse((REPO / "scenarios" / "test_traffic_management.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            value = ast.literal_eval(node.value)
            assert isinstance(value, str)
            return value
    raise AssertionError(f"{name} not found in scenarios/test_traffic_management.py")


@pytest.fixture(scope="module")
def platform() -> Topology:
    return load_topology()


@pytest.fixture(scope="module")
def canary() -> PolicySet:
    return load_policy_text(_scenario_yaml("SUBSETS") + "---" + _scenario_yaml("CANARY"), source="canary.yaml")


REVIEWS = parse_topology(
    {
        "namespace": "bookinfo",
        "services": [
            {
                "name": "reviews",
                "port": 9080,
                "versions": [
                    {"name": "v1", "replicas": 2},
                    {"name": "v2", "replicas": 1},
                    {"name": "v3", "replicas": 1, "labels": {"track": "canary"}},
                ],
            },
            {"name": "ratings", "port": 9080},
        ],
    },
    source="reviews-topology",
)
REVIEWS_DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
  - {name: canary, labels: {track: canary}}
  - {name: v4, labels: {version: v4}}
"""


def _reviews(http: str, *, with_dr: bool = True) -> PolicySet:
    vs = f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: bookinfo}}
spec:
  hosts: [reviews]
  http:
{http}"""
    return load_policy_text((REVIEWS_DR + "---" if with_dr else "") + vs, source="reviews.yaml")


def _reason(pred: RoutingPrediction, field: str) -> str:
    """``effect`` of the reason citing ``field``; fails when there is none."""
    found = [r for r in pred.reasons if r.field == field]
    assert found, f"no reason for {field}: {pred.explain()}"
    return found[0].effect


# --- the canary of scenarios/test_traffic_management.py ------------------------------------------------


def test_canary_without_header_takes_the_weighted_rule(canary: PolicySet, platform: Topology) -> None:
    pred = predict_routing(canary, platform, "order-service")
    assert (pred.virtual_service, pred.route_index, pred.match_index, pred.matched) == (
        "platform-core/order-canary",
        1,
        None,
        True,
    )
    assert pred.subset_share("v1") == pytest.approx(0.9)
    assert pred.subset_share("v2") == pytest.approx(0.1)
    assert pred.version_share("v1") == pytest.approx(0.9)
    assert pred.version_share("v2") == pytest.approx(0.1)
    # v1 has 3 instances sharing 90 %, v2 has 1
    assert pred.instances == pytest.approx(
        {"order-service-v1-0": 0.3, "order-service-v1-1": 0.3, "order-service-v1-2": 0.3, "order-service-v2-0": 0.1}
    )
    assert pred.failures == {}
    assert pred.p_routed == pytest.approx(1.0)
    assert [d.cluster for d in pred.destinations] == [
        "outbound|8084|v1|order-service.platform-core.svc.cluster.local",
        "outbound|8084|v2|order-service.platform-core.svc.cluster.local",
    ]


def test_canary_prediction_agrees_with_the_scenarios_hand_typed_numbers(canary: PolicySet, platform: Topology) -> None:
    # The scenario types `expected = 10 / 100` and the reason "spec.http[1].route[1].weight = 10 of a total of 100"
    pred = predict_routing(canary, platform, "order-service")
    assert pred.subset_share("v2") == 10 / 100
    weight = next(r for r in pred.reasons if r.field == "spec.http[1].route[1].weight")
    assert weight.value == "10"
    assert "10 of a total of 100" in weight.effect
    assert weight.location == "canary.yaml:26"


def test_canary_reasons_cite_the_skipped_match_and_the_weights_with_lines(
    canary: PolicySet, platform: Topology
) -> None:
    pred = predict_routing(canary, platform, "order-service")
    skipped = next(r for r in pred.reasons if r.field == "spec.http[0].match[0].headers.x-version.exact")
    assert (skipped.value, skipped.location) == ("v2", "canary.yaml:19")
    assert "does not hold (request has no header x-version): rule skipped" in skipped.effect
    assert "90 % to order-service subset v1" in _reason(pred, "spec.http[1].route[0].weight")
    labels = [r for r in pred.reasons if r.field == "spec.subsets[1].labels"]
    assert labels[0].source == "DestinationRule platform-core/order-subsets"
    assert "selects v2 x1 of order-service" in labels[0].effect
    lines = pred.explain()
    assert lines[0] == (
        "order-service: VirtualService platform-core/order-canary spec.http[1]: 90 % to order-service subset v1 "
        "(3 instances: v1 x3), 10 % to order-service subset v2 (1 instance: v2 x1)"
    )
    assert "canary.yaml:24 VirtualService platform-core/order-canary spec.http[1].route[0].weight = 90" in "\n".join(
        lines
    )


@pytest.mark.parametrize("name", ["x-version", "X-Version"])
def test_canary_header_match_sends_everything_to_v2(canary: PolicySet, platform: Topology, name: str) -> None:
    pred = predict_routing(canary, platform, "order-service", headers={name: "v2"})
    assert (pred.route_index, pred.match_index) == (0, 0)
    assert pred.subset_share("v2") == 1.0
    assert pred.subset_share("v1") == 0.0
    assert pred.instances == {"order-service-v2-0": 1.0}
    held = next(r for r in pred.reasons if r.field == "spec.http[0].match[0].headers.x-version.exact")
    assert "holds (request has header x-version: v2)" in held.effect
    assert "istiod writes a plain cluster, so 100 %" in _reason(pred, "spec.http[0].route[0]")


@pytest.mark.parametrize("value", ["v3", "V2", "v2 ", ""])
def test_canary_header_values_match_exactly_and_case_sensitively(
    canary: PolicySet, platform: Topology, value: str
) -> None:
    pred = predict_routing(canary, platform, "order-service", headers={"x-version": value})
    assert pred.route_index == 1
    assert pred.subset_share("v2") == pytest.approx(0.1)


# --- the platform README's policies ---------------------------------------------------------------


def test_platform_single_destination_spreads_over_every_version(platform: Topology) -> None:
    folder = Path(str(resources.files("pytest_meshcheck").joinpath("examples/platform")))
    pred = predict_routing(load_policies(folder), platform, "order-service")
    assert (pred.virtual_service, pred.route_index, pred.match_index) == ("platform-core/order-service-retry", 0, None)
    (dest,) = pred.destinations
    assert (dest.subset, dest.share, dest.failure) == (None, 1.0, None)
    assert dest.cluster == "outbound|8084||order-service.platform-core.svc.cluster.local"
    # the default cluster holds all 4 instances (v1 x3, v2 x1), so v2 gets a quarter without any split
    assert pred.version_share("v1") == pytest.approx(0.75)
    assert pred.version_share("v2") == pytest.approx(0.25)
    assert pred.instances == pytest.approx(
        {"order-service-v1-0": 0.25, "order-service-v1-1": 0.25, "order-service-v1-2": 0.25, "order-service-v2-0": 0.25}
    )
    rule = next(r for r in pred.reasons if r.field == "spec.http[0]")
    assert rule.location is not None
    assert rule.location.endswith("retry-timeout.yaml:15")


def test_service_without_virtual_service_takes_the_default_route(platform: Topology) -> None:
    pred = predict_routing(PolicySet(), platform, "catalog-service.platform-core.svc.cluster.local")
    assert (pred.virtual_service, pred.route_index, pred.matched) == (None, None, True)
    assert pred.instances == pytest.approx({f"catalog-service-v1-{i}": 1 / 3 for i in range(3)})
    assert pred.reasons[0].source == "istiod default route"
    assert pred.explain()[0] == (
        "catalog-service: default route (no VirtualService): 100 % to catalog-service (3 instances: v1 x3)"
    )


def test_gateway_only_virtual_service_does_not_route_sidecar_calls(platform: Topology) -> None:
    policies = load_policy_text(
        """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: platform-core}
spec:
  hosts: [order-service]
  gateways: [platform-core/public]
  http:
  - route:
    - destination: {host: order-service, subset: v2}
"""
    )
    pred = predict_routing(policies, platform, "order-service")
    assert pred.virtual_service is None
    assert pred.version_share("v2") == pytest.approx(0.25)


# --- weights ------------------------------------------------------------------------------------


def test_three_way_split_normalises_weights_and_divides_by_instances() -> None:
    http = """
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v2}, weight: 30}
    - {destination: {host: reviews, subset: v3}, weight: 20}
"""
    pred = predict_routing(_reviews(http), REVIEWS, "reviews")
    assert [(d.subset, d.share) for d in pred.destinations] == [
        ("v1", pytest.approx(0.5)),
        ("v2", pytest.approx(0.3)),
        ("v3", pytest.approx(0.2)),
    ]
    assert pred.instances == pytest.approx(
        {"reviews-v1-0": 0.25, "reviews-v1-1": 0.25, "reviews-v2-0": 0.3, "reviews-v3-0": 0.2}
    )
    assert sum(pred.instances.values()) == pytest.approx(1.0)
    assert not any(r.source == "istiod weighted_clusters" for r in pred.reasons)  # they add up to 100


def test_weights_need_not_add_up_to_100() -> None:
    http = """
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 2}
    - {destination: {host: reviews, subset: v2}, weight: 1}
    - {destination: {host: reviews, subset: v3}, weight: 1}
"""
    pred = predict_routing(_reviews(http), REVIEWS, "reviews")
    assert [d.share for d in pred.destinations] == [0.5, 0.25, 0.25]
    total = next(r for r in pred.reasons if r.source == "istiod weighted_clusters")
    assert total.value == "4"
    assert "add up to 4, not 100" in total.effect
    assert "2 of a total of 4: 50 % to reviews subset v1" in _reason(pred, "spec.http[0].route[0].weight")


def test_absent_and_zero_weights_are_dropped_from_a_split() -> None:
    http = """
  - route:
    - {destination: {host: reviews, subset: v1}}
    - {destination: {host: reviews, subset: v2}, weight: 0}
    - {destination: {host: reviews, subset: v3}, weight: 5}
"""
    pred = predict_routing(_reviews(http), REVIEWS, "reviews")
    assert [(d.index, d.subset, d.share) for d in pred.destinations] == [(2, "v3", 1.0)]
    assert pred.subset_share("v1") == 0.0
    assert pred.instances == {"reviews-v3-0": 1.0}
    assert "weight is absent, so 0" in _reason(pred, "spec.http[0].route[0]")
    assert "istiod drops weight-0 destinations" in _reason(pred, "spec.http[0].route[1].weight")
    assert "the only one left" in _reason(pred, "spec.http[0].route[2].weight")


def test_single_destination_ignores_its_weight() -> None:
    http = """
  - route:
    - {destination: {host: reviews, subset: v2}, weight: 30}
"""
    pred = predict_routing(_reviews(http), REVIEWS, "reviews")
    assert pred.subset_share("v2") == 1.0
    assert "its weight 30 is ignored" in _reason(pred, "spec.http[0].route[0].weight")


def test_all_zero_split_built_without_the_loader_is_refused() -> None:
    from dataclasses import replace

    policies = _reviews(
        """
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 1}
    - {destination: {host: reviews, subset: v2}, weight: 1}
"""
    )
    vs = policies.virtual_services[0]
    zeroed = tuple(replace(d, weight=0) for d in vs.http[0].route)
    broken = replace(policies, virtual_services=(replace(vs, http=(replace(vs.http[0], route=zeroed),)),))
    with pytest.raises(MeshcheckError, match="total destination weight = 0"):
        predict_routing(broken, REVIEWS, "reviews")


# --- destinations that cannot be reached ------------------------------------------------------------


def test_subset_selecting_no_instance_fails_its_share_with_503_uh() -> None:
    http = """
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 75}
    - {destination: {host: reviews, subset: v4}, weight: 25}
"""
    pred = predict_routing(_reviews(http), REVIEWS, "reviews")
    assert pred.failures == {Outcome(503, "UH", "no_healthy_upstream"): pytest.approx(0.25)}
    assert pred.p(503, "UH") == pytest.approx(0.25)
    assert pred.p_routed == pytest.approx(0.75)
    assert pred.subset_share("v4") == pytest.approx(0.25)  # routed there, then failed
    assert pred.instances == pytest.approx({"reviews-v1-0": 0.375, "reviews-v1-1": 0.375})
    v4 = pred.destinations[1]
    assert (v4.instances, v4.failure) == ((), Outcome(503, "UH", "no_healthy_upstream"))
    why = _reason(pred, "spec.http[0].route[1].destination.subset")
    assert "spec.subsets[4].labels {'version': 'v4'} select no instance of reviews" in why
    assert "25 % of requests get 503 UH" in why
    assert "a retry stays in that cluster" in why
    labels = next(r for r in pred.reasons if r.field == "spec.subsets[4].labels")
    assert (labels.source, labels.location) == ("DestinationRule bookinfo/reviews", "reviews.yaml:12")
    assert labels.effect == "selects no instance of reviews"


def test_subset_no_destination_rule_defines_fails_with_503_nc() -> None:
    http = """
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
"""
    pred = predict_routing(_reviews(http, with_dr=False), REVIEWS, "reviews")
    assert pred.failures == {Outcome(503, "NC"): pytest.approx(1.0)}
    assert pred.instances == {}
    assert "no DestinationRule for reviews defines subset 'v2'" in _reason(
        pred, "spec.http[0].route[1].destination.subset"
    )


def test_destination_port_the_service_lacks_fails_with_503_nc() -> None:
    http = """
  - route:
    - {destination: {host: reviews, subset: v1, port: {number: 8080}}}
"""
    pred = predict_routing(_reviews(http), REVIEWS, "reviews")
    assert pred.p(503, "NC") == 1.0
    assert pred.destinations[0].cluster == "outbound|8080|v1|reviews.bookinfo.svc.cluster.local"
    assert "exposes port 9080, not 8080" in _reason(pred, "spec.http[0].route[0].destination.port.number")


def test_destination_outside_the_topology_fails_with_503_nc_and_warns() -> None:
    http = """
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: legacy-reviews.other.svc.cluster.local}, weight: 50}
"""
    pred = predict_routing(_reviews(http), REVIEWS, "reviews")
    assert pred.p(503, "NC") == pytest.approx(0.5)
    assert pred.destinations[1].cluster == "outbound|9080||legacy-reviews.other.svc.cluster.local"
    assert pred.subset_share(None, service="legacy-reviews.other.svc.cluster.local") == pytest.approx(0.5)
    assert "not a service of topology reviews-topology" in _reason(pred, "spec.http[0].route[1].destination.host")
    assert any(w.source == "model scope" for w in pred.warnings)


def test_subset_matching_on_extra_labels_selects_by_label_superset() -> None:
    http = """
  - route:
    - {destination: {host: reviews, subset: canary}}
"""
    pred = predict_routing(_reviews(http), REVIEWS, "reviews")
    assert pred.instances == {"reviews-v3-0": 1.0}
    assert pred.destinations[0].versions == (("v3", 1),)


def test_route_to_another_service_counts_that_services_instances() -> None:
    http = """
  - route:
    - {destination: {host: ratings}}
"""
    pred = predict_routing(_reviews(http), REVIEWS, "reviews")
    assert pred.instances == {"ratings-v1-0": 1.0}
    assert pred.version_share("v1", service="ratings") == 1.0
    assert pred.version_share("v1") == 0.0


# --- match evaluation ---------------------------------------------------------------------------------

RULES = """
  - name: admin
    match:
    - uri: {exact: /admin}
      method: {exact: POST}
    - uri: {regex: "/admin/[0-9]+"}
    route:
    - {destination: {host: reviews, subset: v3}}
  - name: beta
    match:
    - headers:
        end-user: {prefix: beta-}
      withoutHeaders:
        x-opt-out: {exact: "yes"}
    - queryParams:
        beta: {exact: "1"}
    route:
    - {destination: {host: reviews, subset: v2}}
  - name: api
    match:
    - uri: {prefix: /API}
      ignoreUriCase: true
    - headers:
        x-build: {regex: "v2(-rc[0-9])?"}
    route:
    - {destination: {host: reviews, subset: v1}}
"""


@pytest.mark.parametrize(
    ("path", "method", "headers", "expected"),
    [
        ("/admin", "POST", {}, (0, 0)),  # uri and method both hold
        ("/admin", "get", {}, None),  # method fails: the whole entry fails (AND)
        ("/admin?x=1", "POST", {}, (0, 0)),  # the query string is not part of the path
        ("/admin/42", "GET", {}, (0, 1)),  # second entry (OR)
        ("/admin/42x", "GET", {}, None),  # regex must match the whole path
        ("/", "GET", {"end-user": "beta-jason"}, (1, 0)),
        ("/", "GET", {"end-user": "jason"}, None),
        ("/", "GET", {"end-user": "beta-jason", "x-opt-out": "yes"}, None),  # withoutHeaders vetoes
        ("/", "GET", {"end-user": "beta-jason", "x-opt-out": "no"}, (1, 0)),
        ("/?beta=1&beta=2", "GET", {}, (1, 1)),  # first value of a repeated parameter
        ("/?beta=2&beta=1", "GET", {}, None),
        ("/api/reviews", "GET", {}, (2, 0)),  # ignoreUriCase
        ("/apix", "GET", {}, (2, 0)),  # prefix, not segment
        ("/", "GET", {"x-build": "v2-rc1"}, (2, 1)),
        ("/", "GET", {"x-build": "v2-rc1-hotfix"}, None),  # regex is a full match
        ("/admin", "POST", {"end-user": "beta-x"}, (0, 0)),  # the first matching rule wins
    ],
)
def test_match_conditions_follow_envoy(
    path: str, method: str, headers: dict[str, str], expected: tuple[int, int] | None
) -> None:
    pred = predict_routing(_reviews(RULES), REVIEWS, "reviews", path=path, method=method, headers=headers)
    if expected is None:
        assert not pred.matched
        assert pred.failures == {Outcome(404, "NR"): 1.0}
        assert (pred.route_index, pred.match_index, pred.destinations, pred.instances) == (None, None, (), {})
    else:
        assert (pred.route_index, pred.match_index) == expected
        assert pred.matched
        assert pred.p_routed == pytest.approx(1.0)


def test_no_matching_rule_answers_404_and_says_why() -> None:
    pred = predict_routing(_reviews(RULES), REVIEWS, "reviews", path="/books", headers={"end-user": "jason"})
    assert pred.p(404, "NR") == 1.0
    assert pred.p(404) == 1.0
    assert pred.explain()[0] == "reviews: no http route of VirtualService bookinfo/reviews matches: 100 % 404 NR"
    why = _reason(pred, "spec.http")
    assert "no rule matches GET /books with end-user: jason" in why
    assert "istiod adds no fallback route, so Envoy answers 404 NR" in why
    # every entry tried is cited with what the request had instead
    assert "request has path /books): next match entry tried" in _reason(pred, "spec.http[0].match[0].uri.exact")
    assert "request has header end-user: jason" in _reason(pred, "spec.http[1].match[0].headers.end-user.prefix")
    assert "request has no query parameter beta): rule skipped" in _reason(
        pred, "spec.http[1].match[1].queryParams.beta.exact"
    )


def test_multiple_virtual_services_for_one_host_warn() -> None:
    extra = load_policy_text(
        """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-late, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v3}}
"""
    )
    policies = _reviews("  - route:\n    - {destination: {host: reviews, subset: v1}}\n").merged(extra)
    pred = predict_routing(policies, REVIEWS, "reviews")
    assert pred.virtual_service == "bookinfo/reviews"
    assert any("sidecars use only one" in w.effect for w in pred.warnings)


def test_consistent_hash_warns_that_instance_shares_need_varying_keys() -> None:
    dr = REVIEWS_DR.replace(
        "  host: reviews\n",
        "  host: reviews\n  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}\n",
    )
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}}
"""
    pred = predict_routing(load_policy_text(dr + "---" + vs), REVIEWS, "reviews")
    assert pred.instances == pytest.approx({"reviews-v1-0": 0.5, "reviews-v1-1": 0.5})
    assert any(w.source == "consistent-hash model" for w in pred.warnings)


# --- arguments ------------------------------------------------------------------------------------------


def test_arguments_are_checked(canary: PolicySet, platform: Topology) -> None:
    with pytest.raises(MeshcheckError, match="must start with '/'"):
        predict_routing(canary, platform, "order-service", path="api")
    with pytest.raises(TopologyError, match="unknown service 'reviews'"):
        predict_routing(canary, platform, "reviews")
    pred = predict_routing(canary, platform, "order-service", istio="1.22")
    assert pred.istio == parse_istio_version("1.22")


# --- the prediction agrees with what the local mesh's translation builds ---------------------------------


@pytest.mark.parametrize(
    "http",
    [
        """
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 7}
    - {destination: {host: reviews, subset: v2}}
    - {destination: {host: reviews, subset: v4}, weight: 3}
""",
        """
  - route:
    - {destination: {host: reviews, subset: canary}, weight: 40}
""",
    ],
)
def test_prediction_matches_the_translated_routes_and_clusters(http: str) -> None:
    policies = _reviews(http)
    version = parse_istio_version(None)
    pred = predict_routing(policies, REVIEWS, "reviews")
    routes = build_route_config(policies, REVIEWS, version)
    vhost = next(v for v in routes["virtual_hosts"] if v["name"].startswith("reviews."))
    action = vhost["routes"][0]["route"]
    if "weighted_clusters" in action:
        weighted = {c["name"]: c["weight"] for c in action["weighted_clusters"]["clusters"]}
        total = sum(weighted.values())
        translated = {name: w / total for name, w in weighted.items()}
    else:
        translated = {action["cluster"]: 1.0}
    assert translated == pytest.approx({d.cluster: d.share for d in pred.destinations})
    endpoints = {(s.name, v.name): [("127.0.0.1", 0)] * v.replicas for s in REVIEWS.services for v in s.versions}
    clusters = {c["name"]: c for c in build_clusters(policies, REVIEWS, endpoints, version)}
    for d in pred.destinations:
        hosts = len(clusters[d.cluster]["load_assignment"]["endpoints"][0]["lb_endpoints"])
        assert hosts == len(d.instances)
        assert (d.failure is None) == (hosts > 0)


@pytest.mark.parametrize(("headers", "taken"), [({}, False), ({"x-debug": "on"}, False), ({"x-debug": "off"}, True)])
def test_without_headers_treats_a_missing_header_as_empty(headers: dict[str, str], taken: bool) -> None:
    # istiod sets treat_missing_header_as_empty on the inverted matcher: a missing header is tested as "",
    # which this regex matches, so the veto applies even without the header.
    http = """
  - match:
    - withoutHeaders:
        x-debug: {regex: "(on)?"}
    route:
    - {destination: {host: reviews, subset: v2}}
"""
    pred = predict_routing(_reviews(http), REVIEWS, "reviews", headers=headers)
    assert pred.matched is taken
