"""A Kiali-like service graph for the reports: who called whom, and what each hop's sidecar counted.

Nodes are ``client`` and the topology's services; edges are ``client -> <service>`` for every service the
scenario targeted, and ``<caller> -> <callee>`` for every call of the topology below them. Each edge carries
what the calling sidecar's Envoy counted over the scenario window, from the same Prometheus counters the
verdicts read: the client sidecar (``meshcheck_target="envoy"``, :attr:`MeshBackend.client_proxy_labels`) for
client edges, the caller's pod sidecars (``source_app="<caller>"``, ``caller_proxy_labels``) for the others:

* requests: ``upstream_rq_total - upstream_rq_retry`` (tries that were not retries);
* errors: Envoy's ``upstream_rq_5xx`` (final 5xx answers), which Istio's tags export as
  ``envoy_cluster_upstream_rq{response_code_class="5xx"}`` and Envoy's default tags as
  ``envoy_cluster_upstream_rq_xx{envoy_response_code_class="5"}``;
* retries: ``upstream_rq_retry``; timeouts: ``upstream_rq_timeout + upstream_rq_per_try_timeout``;
* ejected: ``outlier_detection_ejections_enforced_total``; breaker: ``upstream_rq_pending_overflow +
  upstream_rq_active_overflow`` (requests a full connection pool refused: its circuit was open).

Service nodes may carry Kiali's "CB" badge, which means *configured*, not open: as Kiali's
``applyCircuitBreakers`` (``graph/telemetry/istio/appender/istio_details.go``) and ``IsCB``
(``models/destination_rule.go``), a DestinationRule for the service sets ``connectionPool`` or
``outlierDetection`` in its ``trafficPolicy`` or in a subset's. Whether a breaker acted is the edges' business:
``ejected`` and ``breaker``.

The graph is stored as ``<report>.graph.json`` beside the scenario record and drawn as inline SVG (no
script) into the scenario page and, summed over the run, into ``index.html``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pytest_meshcheck.report.render import template_env

if TYPE_CHECKING:
    from pytest_meshcheck.harness.scenario import Scenario
    from pytest_meshcheck.metrics.prom import Prom
    from pytest_meshcheck.policy.model import PolicySet, TrafficPolicy
    from pytest_meshcheck.topology import Topology

CLIENT = "client"
#: Edge counters: name -> (metric, extra label matchers per label convention).
COUNTERS: dict[str, tuple[str, ...]] = {
    "attempts": ("envoy_cluster_upstream_rq_total",),
    "retries": ("envoy_cluster_upstream_rq_retry",),
    "timeouts": ("envoy_cluster_upstream_rq_timeout", "envoy_cluster_upstream_rq_per_try_timeout"),
    "ejected": ("envoy_cluster_outlier_detection_ejections_enforced_total",),
    "breaker": ("envoy_cluster_upstream_rq_pending_overflow", "envoy_cluster_upstream_rq_active_overflow"),
}
FIELDS = ("requests", "errors", "retries", "timeouts", "ejected", "breaker")


#: Final 5xx answers: (metric, cluster label, class matcher) per tag convention. Istio's tags cut the class out of
#: ``upstream_rq_5xx`` into the ``envoy_cluster_upstream_rq`` family; Envoy's default tags keep ``_xx`` in the name.
ERRORS = (
    ("envoy_cluster_upstream_rq", "cluster_name", ',response_code_class="5xx"'),
    ("envoy_cluster_upstream_rq_xx", "envoy_cluster_name", ',envoy_response_code_class="5"'),
)
LABEL_NAMES = ("cluster_name", "envoy_cluster_name")


def _selector(
    metric: str, fqdn: str, base: Mapping[str, str], extra: str = "", names: Sequence[str] = LABEL_NAMES
) -> str:
    regex = "outbound\\\\|[0-9]+\\\\|[^|]*\\\\|" + fqdn.replace(".", "\\\\.")
    labels = "".join(f',{k}="{v}"' for k, v in sorted(base.items())) + extra
    return " or ".join(f'{metric}{{{name}=~"{regex}"{labels}}}' for name in names)


def edge_counts(prom: Prom, fqdn: str) -> dict[str, float]:
    """What one sidecar (``prom``'s base labels) counted towards the service ``fqdn`` over ``prom``'s window."""
    raw = {k: sum(prom.increase(_selector(m, fqdn, prom.base_labels)) for m in ms) for k, ms in COUNTERS.items()}
    errors = prom.increase(
        " or ".join(_selector(m, fqdn, prom.base_labels, extra, (name,)) for m, name, extra in ERRORS)
    )
    counts = {
        "requests": max(raw["attempts"] - raw["retries"], 0.0),
        "errors": errors,
        **{k: raw[k] for k in ("retries", "timeouts", "ejected", "breaker")},
    }
    return {k: round(v) for k, v in counts.items()}


def _is_cb(policy: TrafficPolicy | None) -> bool:
    return policy is not None and (policy.connection_pool is not None or policy.outlier_detection is not None)


def has_circuit_breaker(policies: PolicySet, topology: Topology, service: str) -> bool:
    """Kiali's "CB" badge: some DestinationRule for ``service`` configures a circuit breaker (open or not).

    Kiali badges a service node when a DestinationRule whose host is the service has ``connectionPool`` or
    ``outlierDetection`` in its ``trafficPolicy`` or in any subset's (``IsCB``); port-level settings do not count.
    """
    svc = topology.service(service)
    return any(
        topology.resolve_host(dr.host, dr.namespace) == svc
        and (_is_cb(dr.traffic_policy) or any(_is_cb(s.traffic_policy) for s in dr.subsets))
        for dr in policies.destination_rules
    )


def graph_nodes(edges: Iterable[tuple[str, str]], policies: PolicySet, topology: Topology) -> list[dict[str, Any]]:
    """The services of ``edges`` in order of appearance, each with its "CB" badge (``circuit_breaker``)."""
    names = [n for e in edges for n in e if n != CLIENT]
    return [{"name": n, "circuit_breaker": has_circuit_breaker(policies, topology, n)} for n in dict.fromkeys(names)]


def graph_edges(entries: Iterable[str], calls: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """Edges from the client to each entry service, then down the topology's calls (each edge once)."""
    edges: list[tuple[str, str]] = []
    stack = [(CLIENT, e) for e in reversed(list(entries))]
    while stack:
        edge = stack.pop()
        if edge in edges:
            continue
        edges.append(edge)
        stack.extend((edge[1], callee) for callee in reversed(list(calls.get(edge[1], ()))))
    return edges


def collect_graph(scenario: Scenario) -> dict[str, Any]:
    """The scenario's service graph with each edge's counters; ``{"available": False, ...}`` when unreadable."""
    topology = scenario.mesh.topology
    entries = [s for s in scenario.services if not topology.callers_of(s)] or list(scenario.services)
    calls = {s.name: [c.service for c in s.calls] for s in topology.services}
    edges = graph_edges(entries, calls)
    if not edges:
        return {"available": False, "note": "no service was called", "edges": []}
    nodes = graph_nodes(edges, scenario.mesh.policies, topology)
    try:
        # The client's counters are complete at the traffic's end, as for the report's evidence (whose scrape
        # wait this shares); a pod's calls can outlive the user request, so its hops are read up to now.
        client = scenario.prom(scenario.window_start, scenario.traffic_ended_at)
        hops: dict[str, Prom] = {}
        out = []
        for src, dst in edges:
            if src != CLIENT and src not in hops:
                hops[src] = scenario.hop_prom(src)
            prom = client if src == CLIENT else hops[src]
            out.append({"source": src, "target": dst, **edge_counts(prom, topology.service(dst).fqdn)})
    except Exception as exc:  # the graph is evidence shown to people; the verdict never depends on it
        return {"available": False, "note": f"Prometheus evidence unavailable: {exc}", "edges": [], "nodes": nodes}
    return {"available": True, "note": "", "edges": out, "nodes": nodes}


def merge_graphs(graphs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One graph for a run: every scenario's edges, counters summed; a node is badged if any scenario badged it."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    badged: dict[str, bool] = {}
    for g in graphs:
        for n in g.get("nodes", []):
            badged[str(n["name"])] = badged.get(str(n["name"]), False) or bool(n.get("circuit_breaker"))
        for e in g.get("edges", []):
            key = (str(e["source"]), str(e["target"]))
            into = merged.setdefault(key, {"source": key[0], "target": key[1], **dict.fromkeys(FIELDS, 0)})
            for f in FIELDS:
                into[f] += int(e.get(f, 0))
    return {
        "available": bool(merged),
        "note": "" if merged else "no scenario recorded a graph",
        "edges": list(merged.values()),
        "nodes": [{"name": n, "circuit_breaker": cb} for n, cb in badged.items()],
    }


def layout(edges: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """Node centres: the client on the left, each service one column right of its deepest caller."""
    depth = {CLIENT: 0}
    for _ in range(len(edges) + 1):  # longest path by relaxation; the call graph is acyclic
        for e in edges:
            depth[e["target"]] = max(depth.get(e["target"], 0), depth.get(e["source"], 0) + 1)
    columns: dict[int, list[str]] = {}
    for node, d in depth.items():
        columns.setdefault(d, []).append(node)
    pos = {}
    for d, nodes in columns.items():
        for i, node in enumerate(nodes):
            pos[node] = (90.0 + d * 260.0, 70.0 + i * 120.0)
    return pos


def _edge_label(e: Mapping[str, Any]) -> list[str]:
    first = f"{e['requests']} req · {e['errors']} err · {e['retries']} retry · {e['timeouts']} timeout"
    second = f"{e['ejected']} ejected · {e['breaker']} breaker-open"
    return [first, second]


def graph_view(graph: Mapping[str, Any]) -> dict[str, Any]:
    """What ``graph.html.j2`` draws: nodes, edges with label positions, and the SVG size."""
    edges = list(graph.get("edges", []))
    pos = layout(edges)
    badged = {str(n["name"]) for n in graph.get("nodes", []) if n.get("circuit_breaker")}
    nodes = [
        {"name": n, "x": x, "y": y, "client": n == CLIENT, "circuit_breaker": n in badged} for n, (x, y) in pos.items()
    ]
    drawn = []
    for e in edges:
        (x1, y1), (x2, y2) = pos[e["source"]], pos[e["target"]]
        length = math.hypot(x2 - x1, y2 - y1) or 1.0
        # Stop the line at the target node's edge (radius 34) so the arrowhead shows.
        ex, ey = x2 - (x2 - x1) * 36 / length, y2 - (y2 - y1) * 36 / length
        bad = e["errors"] or e["timeouts"] or e["ejected"] or e["breaker"]
        drawn.append(
            {
                **e,
                "x1": x1,
                "y1": y1,
                "x2": ex,
                "y2": ey,
                "lx": (x1 + x2) / 2,
                "ly": (y1 + y2) / 2 - 14,
                "label": _edge_label(e),
                "state": "bad" if bad else "ok",
            }
        )
    width = max((x for x, _ in pos.values()), default=0) + 150
    height = max((y for _, y in pos.values()), default=0) + 80
    return {
        "graph": graph,
        "nodes": nodes,
        "edges": drawn,
        "width": width,
        "height": height,
        "badged": [n["name"] for n in nodes if n["circuit_breaker"]],
    }


def render_graph(graph: Mapping[str, Any], title: str = "Service graph") -> str:
    """The graph section: inline SVG and a table of the same numbers (no script)."""
    return str(template_env().get_template("graph.html.j2").render(title=title, **graph_view(graph)))
