"""Where requests to a service go: the http route they match, the weighted split, the instances behind it.

istiod turns a VirtualService's ``http`` rules into Envoy routes in order, one per ``match`` entry, and
Envoy takes the first route whose conditions all hold. When none holds Envoy answers ``404 NR``: istiod
adds no fallback route. A service without a VirtualService gets a catch-all route to its default cluster.
The chosen rule's destinations become (notes ``istio-translation.md`` §7, ``applyHTTPRouteDestination``):

* one destination: a plain cluster that gets every request, whatever its ``weight`` says;
* several: ``weighted_clusters`` without ``total_weight``, so Envoy divides each weight by their sum.
  ``weight`` is an int32 with no default, so an absent weight is 0, and istiod drops weight-0
  destinations. Istio's validation rejects only negative weights and an all-zero split; weights need
  not add up to 100.

A subset's cluster holds the instances whose labels include all the subset's labels. A subset no
DestinationRule defines has no cluster (``503 NC``); one whose labels select no instance has an empty
cluster (``503 UH``, no healthy upstream). A retry stays in the cluster the split chose, so a retry
rescues neither. Within a cluster the load balancer spreads requests evenly over equal instances in the
long run, which gives the per-version and per-instance shares.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.expect.effective import _pick_dr, _pick_vs
from pytest_meshcheck.expect.istiod import Recorder, default_reason, merge_traffic_policy, translate_lb
from pytest_meshcheck.expect.model import Outcome, Prediction, Reason
from pytest_meshcheck.istio_version import IstioVersion, parse_istio_version
from pytest_meshcheck.policy.model import (
    Destination,
    HTTPMatchRequest,
    HTTPRoute,
    HTTPRouteDestination,
    PolicySet,
    StringMatch,
    VirtualService,
)
from pytest_meshcheck.policy.reader import child
from pytest_meshcheck.topology import CLUSTER_DOMAIN, ServiceSpec, Topology

__all__ = ["RoutedDestination", "RoutingPrediction", "predict_routing"]

NO_ROUTE = Outcome(404, "NR")
NO_CLUSTER = Outcome(503, "NC")
NO_HEALTHY_UPSTREAM = Outcome(503, "UH", "no_healthy_upstream")


@dataclass(frozen=True)
class RoutedDestination:
    """One destination the matched route sends requests to, and what those requests meet.

    Attributes:
        index: Position in the rule's ``route`` list (``spec.http[i].route[index]``); ``None`` for the
            default route of a service without a VirtualService.
        host: The destination host as written (the service's FQDN for the default route).
        service: The topology service the host resolves to, or ``None`` when it is not in the topology.
        subset: The subset, or ``None`` for the service's default cluster.
        weight: The weight as written, ``None`` when absent.
        share: Fraction of the requests (of the kind predicted) that go to this destination.
        cluster: The Envoy cluster name, ``outbound|<port>|<subset>|<fqdn>``.
        instances: Names of the instances in the cluster, as the local mesh names them
            (``<service>-<version>-<i>``).
        versions: ``(version, replicas)`` of each version the cluster holds.
        failure: How every request sent here ends when it cannot reach an instance (``503 NC`` without a
            cluster, ``503 UH`` with an empty one); ``None`` when it reaches one.
    """

    index: int | None
    host: str
    service: ServiceSpec | None
    subset: str | None
    weight: int | None
    share: float
    cluster: str
    instances: tuple[str, ...] = ()
    versions: tuple[tuple[str, int], ...] = ()
    failure: Outcome | None = None

    def describe(self) -> str:
        """A short label, such as ``order-service subset v2 (1 instance: v2 x1)``."""
        name = self.service.name if self.service is not None else self.host
        where = f"{name} subset {self.subset}" if self.subset else name
        if self.failure is not None:
            return f"{where} ({self.failure})"
        n = len(self.instances)
        versions = ", ".join(f"{v} x{r}" for v, r in self.versions)
        return f"{where} ({n} instance{'s' if n != 1 else ''}: {versions})"


@dataclass(frozen=True)
class RoutingPrediction(Prediction):
    """Where requests of one kind (path, method, headers) to a service end up.

    Attributes:
        service: The called service.
        istio: The Istio release modelled.
        virtual_service: ``namespace/name`` of the VirtualService that routes the call, or ``None`` when
            istiod's default route applies.
        route_index: Index of the matched ``spec.http`` rule; ``None`` when no rule matches (404) or there
            is no VirtualService.
        match_index: Index of the ``match`` entry that held; ``None`` when the rule has no ``match``.
        destinations: The rule's destinations that get requests, in rule order (weight-0 ones dropped).
        failures: Share of requests that end at the client's sidecar without reaching an instance, by
            outcome (``404 NR``, ``503 NC``, ``503 UH``).
        instances: Share of requests each instance receives, keyed by instance name.
        versions: Share of requests each version receives, keyed by ``(service, version)``.
        subsets: Share of requests each destination receives, keyed by ``(service or host, subset)``;
            subset ``None`` is the service's default cluster.
    """

    service: ServiceSpec
    istio: IstioVersion
    virtual_service: str | None
    route_index: int | None
    match_index: int | None
    destinations: tuple[RoutedDestination, ...] = ()
    failures: dict[Outcome, float] = field(default_factory=dict, hash=False)
    instances: dict[str, float] = field(default_factory=dict, hash=False)
    versions: dict[tuple[str, str], float] = field(default_factory=dict, hash=False)
    subsets: dict[tuple[str, str | None], float] = field(default_factory=dict, hash=False)

    @property
    def matched(self) -> bool:
        """False when the service has a VirtualService and none of its rules matches (``404 NR``)."""
        return self.virtual_service is None or self.route_index is not None

    @property
    def p_routed(self) -> float:
        """Share of requests that reach an instance."""
        return sum(self.instances.values(), 0.0)

    def p(self, status: int, flags: str | None = None) -> float:
        """Share of requests that end at the sidecar with ``status`` (and ``flags``, when given)."""
        return sum(v for o, v in self.failures.items() if o.status == status and (flags is None or o.flags == flags))

    def subset_share(self, subset: str | None, service: str | None = None) -> float:
        """Share of requests routed to ``subset`` (``None``: the default cluster) of ``service``.

        Includes requests that then fail because the subset has no cluster or no instance.

        Args:
            subset: The subset name, or ``None`` for the service's default cluster.
            service: Short name of the destination service; the called service when ``None``.
        """
        name = service or self.service.name
        return self.subsets.get((name, subset), 0.0)

    def version_share(self, version: str, service: str | None = None) -> float:
        """Share of requests served by ``version`` of ``service`` (the called service when ``None``)."""
        return self.versions.get((service or self.service.name, version), 0.0)

    def instance_share(self, instance: str) -> float:
        """Share of requests served by the instance named ``instance`` (``order-service-v2-0``)."""
        return self.instances.get(instance, 0.0)

    def summary(self) -> str:
        """One line: the route taken and where its requests go."""
        if not self.matched:
            return f"{self.service.name}: no http route of VirtualService {self.virtual_service} matches: 100 % 404 NR"
        if self.virtual_service is None:
            head = f"{self.service.name}: default route (no VirtualService)"
        else:
            head = f"{self.service.name}: VirtualService {self.virtual_service} spec.http[{self.route_index}]"
        split = ", ".join(f"{d.share * 100:g} % to {d.describe()}" for d in self.destinations)
        return f"{head}: {split}"

    def explain(self) -> list[str]:
        """The summary, then reasons and warnings, one line each."""
        return [self.summary(), *super().explain()]


# --- the request and match conditions -------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    path: str
    query: dict[str, str]
    method: str
    headers: dict[str, str]

    def describe(self) -> str:
        heads = ", ".join(f"{k}: {v}" for k, v in sorted(self.headers.items()))
        return f"{self.method} {self.path}" + (f" with {heads}" if heads else " without headers")


def _request(path: str, method: str, headers: Mapping[str, str] | None) -> _Request:
    if not path.startswith("/"):
        raise MeshcheckError(f"path={path!r} must start with '/', e.g. path='/api/orders?id=1'")
    parts = urlsplit(path)
    query: dict[str, str] = {}
    # Envoy's query-parameter matcher looks at the first value of a repeated parameter.
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(key, value)
    # Header names are case-insensitive; Envoy compares them lower-cased.
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    return _Request(parts.path or "/", query, method.upper(), lowered)


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise MeshcheckError(
            f"regex {pattern!r} uses RE2 syntax that the routing model (Python's re) cannot evaluate: {exc}; "
            "rewrite it with syntax common to both, or predict with headers that avoid this rule"
        ) from None


def _string_matches(m: StringMatch, value: str, ignore_case: bool = False) -> bool:
    if m.kind == "regex":
        # Envoy's safe_regex must match the whole value (RE2 full match); case_sensitive does not apply.
        return _regex(m.value).fullmatch(value) is not None
    expected = m.value
    if ignore_case:
        value, expected = value.lower(), expected.lower()
    return value == expected if m.kind == "exact" else value.startswith(expected)


@dataclass(frozen=True)
class _Condition:
    path: str
    value: str
    holds: bool
    seen: str


def _conditions(match: HTTPMatchRequest, base: str, req: _Request) -> list[_Condition]:
    """Every condition of one ``match`` entry, in istiod's order, with what the request had."""
    out: list[_Condition] = []
    if match.uri is not None:
        holds = _string_matches(match.uri, req.path, match.ignore_uri_case)
        case = " (ignoreUriCase)" if match.ignore_uri_case and match.uri.kind != "regex" else ""
        out.append(_Condition(f"{base}.uri.{match.uri.kind}", match.uri.value + case, holds, f"path {req.path}"))
    if match.method is not None:
        holds = _string_matches(match.method, req.method)
        out.append(_Condition(f"{base}.method.{match.method.kind}", match.method.value, holds, f"method {req.method}"))
    for name, m in match.headers.items():
        value = req.headers.get(name.lower())
        holds = value is not None and _string_matches(m, value)
        seen = f"header {name}: {value}" if value is not None else f"no header {name}"
        out.append(_Condition(f"{child(f'{base}.headers', name)}.{m.kind}", m.value, holds, seen))
    for name, m in match.without_headers.items():
        value = req.headers.get(name.lower())
        # istiod inverts the matcher and sets treat_missing_header_as_empty: a missing header is "".
        holds = not _string_matches(m, value if value is not None else "")
        seen = f"header {name}: {value}" if value is not None else f"no header {name}"
        out.append(_Condition(f"{child(f'{base}.withoutHeaders', name)}.{m.kind}", f"not {m.value}", holds, seen))
    for name, m in match.query_params.items():
        qv = req.query.get(name)
        holds = qv is not None and _string_matches(m, qv)
        seen = f"query {name}={qv}" if qv is not None else f"no query parameter {name}"
        out.append(_Condition(f"{child(f'{base}.queryParams', name)}.{m.kind}", m.value, holds, seen))
    return out


def _first_match(
    vs: VirtualService, req: _Request, rec: Recorder, reasons: list[Reason]
) -> tuple[HTTPRoute, int | None] | None:
    """The first rule (and match entry) the request satisfies, noting why each earlier entry did not."""
    for route in vs.http:
        if not route.match:
            label = route.name or f"http[{route.index}]"
            reasons.append(rec(f"spec.http[{route.index}]", label, "has no match block: takes every request"))
            return route, None
        for j, match in enumerate(route.match):
            base = f"spec.http[{route.index}].match[{j}]"
            conds = _conditions(match, base, req)
            failed = next((c for c in conds if not c.holds), None)
            if failed is not None:
                skipped = "rule skipped" if j == len(route.match) - 1 else "next match entry tried"
                reasons.append(rec(failed.path, failed.value, f"does not hold (request has {failed.seen}): {skipped}"))
                continue
            if not conds:
                reasons.append(rec(base, "{}", "empty match entry: takes every request"))
            for c in conds:
                reasons.append(rec(c.path, c.value, f"holds (request has {c.seen})"))
            return route, j
    return None


# --- the split and the clusters -------------------------------------------------------------------


def _split(vs: VirtualService, route: HTTPRoute, rec: Recorder, reasons: list[Reason]) -> list[tuple[int, float]]:
    """``(destination index, share)`` of each destination that gets requests, as istiod writes the route."""
    base = f"spec.http[{route.index}]"
    if not route.route:
        raise MeshcheckError(f"VirtualService {vs.namespace}/{vs.name} {base} has no destination; add route[]")
    if len(route.route) == 1:
        w = route.route[0].weight
        ignored = f"; its weight {w} is ignored" if w is not None and w != 100 else ""
        path = f"{base}.route[0].weight" if w is not None else f"{base}.route[0]"
        value = w if w is not None else "single destination"
        reasons.append(rec(path, value, f"the only destination: istiod writes a plain cluster, so 100 %{ignored}"))
        return [(0, 1.0)]
    total = sum(rd.weight or 0 for rd in route.route)
    if total <= 0:
        raise MeshcheckError(
            f"VirtualService {vs.namespace}/{vs.name} {base} gives every destination weight 0, which Istio rejects "
            "('total destination weight = 0'); give at least one destination a positive weight"
        )
    kept = [(k, rd.weight / total) for k, rd in enumerate(route.route) if rd.weight]
    alone = " (the only one left, so istiod writes a plain cluster)" if len(kept) == 1 else ""
    for k, rd in enumerate(route.route):
        if rd.weight:
            reasons.append(
                rec(
                    f"{base}.route[{k}].weight",
                    rd.weight,
                    f"{rd.weight} of a total of {total}: {rd.weight / total * 100:g} % to {_label(rd)}{alone}",
                )
            )
        elif rd.weight == 0:
            reasons.append(
                rec(f"{base}.route[{k}].weight", 0, f"istiod drops weight-0 destinations: {_label(rd)} gets nothing")
            )
        else:
            reasons.append(
                rec(
                    f"{base}.route[{k}]",
                    "no weight",
                    f"weight is absent, so 0 (an int32 with no default): istiod drops {_label(rd)} from the split",
                )
            )
    if total != 100:
        reasons.append(
            default_reason(
                total,
                f"the weights add up to {total}, not 100: Envoy divides each weight by their sum "
                "(istiod sets no total_weight)",
                "istiod weighted_clusters",
            )
        )
    return kept


def _label(rd: HTTPRouteDestination) -> str:
    d = rd.destination
    return f"{d.host} subset {d.subset}" if d.subset else d.host


def _fqdn(host: str, namespace: str | None) -> str:
    return f"{host}.{namespace}.{CLUSTER_DOMAIN}" if "." not in host and namespace else host


@dataclass
class _Landing:
    reasons: list[Reason]
    warnings: list[Reason]
    lbs: dict[str, tuple[str, bool]]  # cluster -> (lb policy, hashes)


def _land(
    policies: PolicySet,
    topology: Topology,
    vs: VirtualService | None,
    at: tuple[Recorder, int, int] | None,
    listen_port: int,
    rd: HTTPRouteDestination,
    share: float,
    out: _Landing,
) -> RoutedDestination:
    """Resolve one destination to its cluster and instances, or to the failure it meets.

    ``at`` is the VirtualService's recorder with the rule and destination index, ``None`` for the default route.
    ``listen_port`` is the called service's port, which names the cluster of a host outside the topology.
    """
    dest = rd.destination
    namespace = vs.namespace if vs is not None else None
    target = topology.resolve_host(dest.host, namespace)
    index = at[2] if at is not None else None
    # GetDestinationCluster: the destination's port, else the service's only port, else the listener's.
    port = dest.port if dest.port is not None else (target.port if target else listen_port)
    fqdn = target.fqdn if target is not None else _fqdn(dest.host, namespace)
    cluster = f"outbound|{port}|{dest.subset or ''}|{fqdn}"

    def fail(outcome: Outcome, leaf: str, value: object, why: str) -> RoutedDestination:
        effect = f"{why}, so its {share * 100:g} % of requests get {outcome}"
        if at is not None:
            rec, i, k = at
            out.reasons.append(rec(f"spec.http[{i}].route[{k}].destination.{leaf}", value, effect))
        else:
            out.reasons.append(default_reason(value, effect, f"topology {topology.source}"))
        return RoutedDestination(index, dest.host, target, dest.subset, rd.weight, share, cluster, failure=outcome)

    if target is None:
        out.warnings.append(
            Reason(
                None,
                dest.host,
                "a real cluster may run this host; the prediction follows the topology, as the local mesh does",
                "model scope",
            )
        )
        return fail(NO_CLUSTER, "host", dest.host, f"{dest.host!r} is not a service of topology {topology.source}")
    if dest.port is not None and dest.port != target.port:
        why = f"{target.name} exposes port {target.port}, not {dest.port}: Istio builds no cluster for that port"
        return fail(NO_CLUSTER, "port.number", dest.port, why)
    dr, sub, sub_index, notes = _pick_dr(policies, target, topology, dest.subset)
    out.warnings.extend(n for n in notes if n not in out.warnings)
    drec = Recorder("DestinationRule", dr.name, dr.namespace, dr.source) if dr is not None else None
    if dest.subset is not None and sub is None:
        why = f"no DestinationRule for {target.name} defines subset {dest.subset!r}: cluster {cluster} does not exist"
        return fail(NO_CLUSTER, "subset", dest.subset, why)
    chosen = [v for v in target.versions if sub is None or sub.labels.items() <= target.instance_labels(v).items()]
    if sub is not None and drec is not None:
        if not chosen:
            out.reasons.append(
                drec(f"spec.subsets[{sub_index}].labels", sub.labels, f"selects no instance of {target.name}")
            )
            pods = "; ".join(f"{v.name}: {target.instance_labels(v)}" for v in target.versions)
            why = (
                f"{drec.label} spec.subsets[{sub_index}].labels {sub.labels} select no instance of {target.name} "
                f"({pods}): the cluster is empty and Envoy has no healthy upstream; a retry stays in that cluster"
            )
            return fail(NO_HEALTHY_UPSTREAM, "subset", dest.subset, why)
        picked = ", ".join(f"{v.name} x{v.replicas}" for v in chosen)
        out.reasons.append(drec(f"spec.subsets[{sub_index}].labels", sub.labels, f"selects {picked} of {target.name}"))
    lb, hashes, _ = translate_lb(merge_traffic_policy(dr, sub, sub_index).lb, drec)
    out.lbs[cluster] = (lb, hashes)
    return RoutedDestination(
        index,
        dest.host,
        target,
        dest.subset,
        rd.weight,
        share,
        cluster,
        tuple(f"{target.name}-{v.name}-{i}" for v in chosen for i in range(v.replicas)),
        tuple((v.name, v.replicas) for v in chosen),
    )


def _resource_name(vs: VirtualService | None) -> str | None:
    if vs is None:
        return None
    return f"{vs.namespace}/{vs.name}" if vs.namespace else vs.name


def _assemble(
    svc: ServiceSpec,
    istio: IstioVersion,
    vs: VirtualService | None,
    route_index: int | None,
    match_index: int | None,
    dests: list[RoutedDestination],
    failures: dict[Outcome, float],
    landing: _Landing,
) -> RoutingPrediction:
    instances: dict[str, float] = {}
    versions: dict[tuple[str, str], float] = {}
    subsets: dict[tuple[str, str | None], float] = {}
    for d in dests:
        key = (d.service.name if d.service is not None else d.host, d.subset)
        subsets[key] = subsets.get(key, 0.0) + d.share
        if d.failure is not None or d.service is None:
            # Only a destination the topology does not know has no service, and it fails with 503 NC.
            outcome = d.failure or NO_CLUSTER
            failures[outcome] = failures.get(outcome, 0.0) + d.share
            continue
        for name in d.instances:
            instances[name] = instances.get(name, 0.0) + d.share / len(d.instances)
        for version, replicas in d.versions:
            vkey = (d.service.name, version)
            versions[vkey] = versions.get(vkey, 0.0) + d.share * replicas / len(d.instances)
    reasons, warnings = landing.reasons, landing.warnings
    if instances:
        policies = sorted({lb for lb, _ in landing.lbs.values()})
        reasons.append(
            default_reason(
                "/".join(policies),
                "a cluster's load balancer spreads its requests evenly over its instances in the long run, so "
                "each instance gets the cluster's share divided by its instance count",
                "Envoy load balancing",
            )
        )
    for cluster, (lb, hashes) in landing.lbs.items():
        if hashes:
            warnings.append(
                Reason(
                    None,
                    lb,
                    f"{cluster} hashes requests to hosts: the per-instance shares assume varying hash keys; requests "
                    "with one key all go to one instance",
                    "consistent-hash model",
                )
            )
    return RoutingPrediction(
        svc,
        istio,
        _resource_name(vs),
        route_index,
        match_index,
        tuple(dests),
        {o: p for o, p in failures.items() if p > 0},
        instances,
        versions,
        subsets,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
    )


def predict_routing(
    policies: PolicySet,
    topology: Topology,
    service: str,
    *,
    headers: Mapping[str, str] | None = None,
    path: str = "/",
    method: str = "GET",
    istio: IstioVersion | str | None = None,
) -> RoutingPrediction:
    """Predict which route requests to ``service`` take and how they split over subsets, versions and instances.

    The prediction is for requests like the one described (same path, method and headers): they all take
    the same rule, so a header-matched rule gets 100 % of them and a weighted rule splits them.

    Args:
        policies: The loaded VirtualServices and DestinationRules.
        topology: The services and their instances.
        service: The called service (short name or FQDN).
        headers: Request headers (names are case-insensitive); none by default.
        path: Request path, with an optional query string for ``queryParams`` matches.
        method: HTTP method.
        istio: The Istio release to model; the current default when ``None``. Routing is the same in every
            supported release.

    Returns:
        The matched rule, each destination's share, the per-version and per-instance shares and the share
        of requests that fail at the sidecar (``404 NR``, ``503 NC``, ``503 UH``), with the reasons.

    Raises:
        TopologyError: ``service`` is not in the topology.
        MeshcheckError: ``path`` does not start with ``/``, the matched rule has no usable destination, or a
            regex uses RE2 syntax Python cannot evaluate.

    Example::

        pred = predict_routing(policies, topology, "order-service", headers={"x-version": "v2"})
        pred.route_index, pred.subset_share("v2"), pred.version_share("v2"), pred.explain()
    """
    ver = istio if isinstance(istio, IstioVersion) else parse_istio_version(istio)
    svc = topology.service(service)
    req = _request(path, method, headers)
    vs, notes = _pick_vs(policies, svc, topology)
    landing = _Landing([], list(notes), {})
    route_index = match_index = None
    failures: dict[Outcome, float] = {}
    dests: list[RoutedDestination] = []
    if vs is None:
        landing.reasons.append(
            default_reason(
                f"{svc.name} (no VirtualService)",
                "istiod's default route sends every request to the service's cluster (all versions)",
                "istiod default route",
            )
        )
        default = HTTPRouteDestination(Destination(svc.fqdn))
        dests.append(_land(policies, topology, None, None, svc.port, default, 1.0, landing))
    else:
        rec = Recorder("VirtualService", vs.name, vs.namespace, vs.source)
        landing.reasons.append(rec("spec.hosts", list(vs.hosts), f"routes every call to {svc.name}"))
        found = _first_match(vs, req, rec, landing.reasons)
        if found is None:
            failures[NO_ROUTE] = 1.0
            landing.reasons.append(
                rec(
                    "spec.http",
                    f"{len(vs.http)} rule(s)",
                    f"no rule matches {req.describe()}: istiod adds no fallback route, so Envoy answers 404 NR "
                    "to every such request",
                )
            )
        else:
            route, match_index = found
            route_index = route.index
            for k, share in _split(vs, route, rec, landing.reasons):
                at = (rec, route.index, k)
                dests.append(_land(policies, topology, vs, at, svc.port, route.route[k], share, landing))
    return _assemble(svc, ver, vs, route_index, match_index, dests, failures, landing)
