"""Service graph data: edges from the topology's calls, run totals, layout (report/graph.py)."""

from __future__ import annotations

import re

import pytest

from pytest_meshcheck.istio_version import parse_istio_version
from pytest_meshcheck.policy import PolicySet, load_policy_text
from pytest_meshcheck.report.graph import (
    CLIENT,
    edge_counts,
    graph_edges,
    graph_nodes,
    graph_view,
    has_circuit_breaker,
    layout,
    merge_graphs,
    render_graph,
)
from pytest_meshcheck.topology import load_topology
from pytest_meshcheck.translate.stats import istio_stats_config


def test_edges_follow_the_calls_below_each_entry_once() -> None:
    calls = {"order-service": ["payment-service", "inventory-service"], "payment-service": ["inventory-service"]}
    assert graph_edges(["order-service", "catalog-service"], calls) == [
        (CLIENT, "order-service"),
        ("order-service", "payment-service"),
        ("payment-service", "inventory-service"),
        ("order-service", "inventory-service"),
        (CLIENT, "catalog-service"),
    ]


def test_run_graph_sums_each_edge_and_layout_puts_callees_right_of_callers() -> None:
    e = {"source": CLIENT, "target": "order-service", "requests": 2, "errors": 1, "retries": 0, "timeouts": 0,
         "ejected": 0, "breaker": 1}  # fmt: skip
    merged = merge_graphs(
        [{"edges": [e]}, {"edges": [e, {**e, "source": "order-service", "target": "payment-service"}]}]
    )
    assert merged["available"]
    first = merged["edges"][0]
    assert (first["requests"], first["errors"], first["breaker"]) == (4, 2, 2)
    pos = layout(merged["edges"])
    assert pos[CLIENT][0] < pos["order-service"][0] < pos["payment-service"][0]
    assert not merge_graphs([])["available"]


def _rules(traffic_policy: str, subsets: str = "", host: str = "payment-service") -> PolicySet:
    return load_policy_text(
        f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: cb, namespace: platform-core}}
spec:
  host: {host}
{traffic_policy}{subsets}
""",
        source="<test>",
    )


@pytest.mark.parametrize(
    ("traffic_policy", "subsets", "badged"),
    [
        ("  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3}}", "", True),
        ("  trafficPolicy: {connectionPool: {tcp: {maxConnections: 1}}}", "", True),
        ("  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}", "", False),
        (
            "",
            "  subsets:\n  - {name: v1, labels: {version: v1},\n"
            "     trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3}}}",
            True,
        ),
        ("", "  subsets:\n  - {name: v1, labels: {version: v1}}", False),
    ],
)
def test_cb_badge_means_a_circuit_breaker_is_configured_as_kiali_draws_it(
    traffic_policy: str, subsets: str, badged: bool
) -> None:
    topology = load_topology()
    assert has_circuit_breaker(_rules(traffic_policy, subsets), topology, "payment-service") is badged
    # Another service's DestinationRule never badges this one.
    assert not has_circuit_breaker(_rules(traffic_policy, subsets), topology, "inventory-service")


def test_graph_nodes_carry_the_badge_and_the_run_graph_keeps_any_scenario_badge() -> None:
    topology = load_topology()
    edges = [(CLIENT, "order-service"), ("order-service", "payment-service"), ("order-service", "inventory-service")]
    nodes = graph_nodes(edges, _rules("  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3}}"), topology)
    assert nodes == [
        {"name": "order-service", "circuit_breaker": False},
        {"name": "payment-service", "circuit_breaker": True},
        {"name": "inventory-service", "circuit_breaker": False},
    ]
    counts = {"requests": 1, "errors": 0, "retries": 0, "timeouts": 0, "ejected": 0, "breaker": 0}
    drawn = [{"source": src, "target": dst, **counts} for src, dst in edges]
    unbadged = [{**n, "circuit_breaker": False} for n in nodes]
    merged = merge_graphs([{"edges": drawn, "nodes": unbadged}, {"edges": drawn, "nodes": nodes}])
    assert {n["name"]: n["circuit_breaker"] for n in merged["nodes"]} == {
        "order-service": False,
        "payment-service": True,
        "inventory-service": False,
    }
    # Drawn: the badge is on payment-service's node only, and the edge's own counts stay separate from it.
    view = graph_view(merged)
    assert [n["name"] for n in view["nodes"] if n["circuit_breaker"]] == ["payment-service"]
    html = render_graph(merged)
    assert html.count('class="badge-cb"') == 1
    assert "0 ejected · 0 breaker-open" in html


def test_errors_are_read_from_the_family_istio_tags_give_upstream_rq_5xx() -> None:
    """Istio's tags turn ``cluster.<name>;.upstream_rq_5xx`` into ``envoy_cluster_upstream_rq{response_code_class}``."""
    tags = {t["tag_name"]: re.compile(t["regex"]) for t in istio_stats_config(parse_istio_version(None))["stats_tags"]}
    fqdn = "payment-service.platform-core.svc.cluster.local"
    stat = f"cluster.outbound|8080||{fqdn};.upstream_rq_5xx"
    labels: dict[str, str] = {}
    for name in ("cluster_name", "response_code_class"):
        m = tags[name].search(stat)
        assert m is not None
        labels[name] = m.group(2)
        stat = stat.replace(m.group(1), "", 1)
    metric = "envoy_" + stat.replace(".", "_")
    assert (metric, labels["response_code_class"]) == ("envoy_cluster_upstream_rq", "5xx")

    class OneSeries:
        """A Prometheus stand-in holding that one series at 7: matches a selector term by name and labels."""

        base_labels: dict[str, str] = {}

        def increase(self, promql: str) -> float:
            for term in promql.split(" or "):
                name, _, matchers = term.partition("{")
                pairs = re.findall(r'(\w+)(=~?)"((?:[^"\\]|\\.)*)"', matchers)
                if name == metric and all(
                    k in labels and (re.fullmatch(v.replace("\\\\", "\\"), labels[k]) if op == "=~" else labels[k] == v)
                    for k, op, v in pairs
                ):
                    return 7.0
            return 0.0

    counts = edge_counts(OneSeries(), fqdn)  # type: ignore[arg-type]
    assert counts["errors"] == 7
