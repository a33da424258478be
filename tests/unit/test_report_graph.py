"""Service graph data: edges from the topology's calls, run totals, layout (report/graph.py)."""

from __future__ import annotations

from pytest_meshcheck.report.graph import CLIENT, graph_edges, layout, merge_graphs


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
