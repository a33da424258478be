"""VirtualServices to a client sidecar's outbound ``RouteConfiguration``.

Source: ``pilot/pkg/networking/core/route/route.go``.

One virtual host per service. A service with a VirtualService gets exactly that VirtualService's
routes: when no rule matches, Envoy answers ``404 NR``, because istiod adds no fallback route. A
service without one gets ``BuildDefaultHTTPOutboundRoute``: a catch-all to its default cluster with
the default retry policy and ``timeout: 0s``.
"""

from __future__ import annotations

from typing import NoReturn

from pytest_meshcheck.errors import PolicyError, PolicyIssue
from pytest_meshcheck.istio_version import IstioVersion
from pytest_meshcheck.policy.model import (
    ConsistentHash,
    HTTPMatchRequest,
    HTTPRoute,
    PolicySet,
    StringMatch,
    VirtualService,
)
from pytest_meshcheck.topology import ServiceSpec, Topology
from pytest_meshcheck.translate.common import (
    FAULT_FILTER_NAME,
    JSON,
    cluster_name,
    duration,
    parse_cluster_name,
)
from pytest_meshcheck.translate.faults import translate_fault
from pytest_meshcheck.translate.lookup import (
    consistent_hash_for,
    destination_rule_for,
    resolve_destination,
    virtual_service_for,
)
from pytest_meshcheck.translate.retries import convert_retry_policy

DEFAULT_ROUTE_CONFIG_NAME = "meshcheck-outbound"


def build_route_config(
    policies: PolicySet, topology: Topology, version: IstioVersion, *, name: str = DEFAULT_ROUTE_CONFIG_NAME
) -> JSON:
    """Build the ``envoy.config.route.v3.RouteConfiguration`` a client sidecar uses for every service.

    Args:
        policies: Validated policies.
        topology: The services; each gets one virtual host.
        version: The Istio release whose translation to reproduce.
        name: The route configuration's name.

    Raises:
        PolicyError: A rule cannot be expressed in Envoy (no destinations, all weights zero, bad gRPC status).
    """
    used: set[str] = set()
    vhosts = [_virtual_host(policies, topology, svc, version, used) for svc in topology.services]
    # validate_clusters off, as istiod sets it: a route to an undefined subset gives 503 NC at request
    # time instead of rejecting the whole configuration.
    return {"name": name, "virtual_hosts": vhosts, "validate_clusters": False}


def _virtual_host(
    policies: PolicySet, topology: Topology, svc: ServiceSpec, version: IstioVersion, used: set[str]
) -> JSON:
    vs = virtual_service_for(policies, topology, svc)
    routes = _virtual_service_routes(vs, policies, topology, svc, version) if vs else []
    if not routes:
        routes = [default_route(policies, topology, svc, version)]
    # Envoy rejects a domain listed twice in one route configuration; a later service loses the name.
    aliases = [svc.fqdn, *(a for a in svc.host_aliases() if a != svc.fqdn)]
    domains = [d for a in aliases for d in (a, f"{a}:{svc.port}") if d not in used]
    used.update(domains)
    return {
        "name": f"{svc.fqdn}:{svc.port}",
        "domains": domains,
        "routes": routes,
        "include_request_attempt_count": True,
        # meshcheck addition, not istiod's: lets clients see x-envoy-attempt-count on responses.
        "include_attempt_count_in_response": True,
    }


def default_route(policies: PolicySet, topology: Topology, svc: ServiceSpec, version: IstioVersion) -> JSON:
    """``BuildDefaultHTTPOutboundRoute`` for ``svc``, with the DestinationRule's hash policy if any.

    The retry policy is the plain default even when the service hashes (istiod passes ``false``).
    """
    cluster = cluster_name(svc.port, None, svc.fqdn)
    action: JSON = {"cluster": cluster, **_timeouts(None)}
    retry = convert_retry_policy(None, version, consistent_hash=False)
    if retry is not None:
        action["retry_policy"] = retry
    hash_policy = _hash_policy(consistent_hash_for(destination_rule_for(policies, topology, svc), None))
    if hash_policy is not None:
        action["hash_policy"] = [hash_policy]
    return {
        "name": "default",
        "match": {"prefix": "/"},
        "route": action,
        "decorator": {"operation": f"{svc.fqdn}:{svc.port}/*"},
    }


def _virtual_service_routes(
    vs: VirtualService, policies: PolicySet, topology: Topology, svc: ServiceSpec, version: IstioVersion
) -> list[JSON]:
    """``BuildHTTPRoutesForVirtualService``: rules in order, stopping after the first catch-all."""
    out: list[JSON] = []
    for http in vs.http:
        if not http.match:
            out.append(_route(vs, http, None, policies, topology, svc, version))
            break
        caught_all = False
        for match in http.match:
            r = _route(vs, http, match, policies, topology, svc, version)
            out.append(r)
            if _is_catch_all(r["match"]):
                caught_all = True
                break
        if caught_all:
            break
    return out


def _route(
    vs: VirtualService,
    http: HTTPRoute,
    match: HTTPMatchRequest | None,
    policies: PolicySet,
    topology: Topology,
    svc: ServiceSpec,
    version: IstioVersion,
) -> JSON:
    path = f"spec.http[{http.index}]"
    name = http.name or ""
    if match is not None and match.name:
        name = f"{name}.{match.name}"
    action: JSON = _timeouts(http.timeout)
    if not http.route:
        _fail(vs, f"{path}.route", "has no destinations", "give at least one route[].destination")
    hashes: list[JSON] = []
    consistent_hash = False
    if len(http.route) == 1:
        dest = http.route[0].destination
        cluster, dest_svc = resolve_destination(dest, vs.namespace, topology, svc.port)
        action["cluster"] = cluster
        ch = _destination_hash(policies, topology, dest_svc, dest.subset)
        consistent_hash = ch is not None
        hashes += [h for h in [_hash_policy(ch)] if h is not None]
    else:
        weighted: list[JSON] = []
        for rd in http.route:
            if not rd.weight:
                continue  # istiod drops weight-0 destinations of a split
            cluster, dest_svc = resolve_destination(rd.destination, vs.namespace, topology, svc.port)
            weighted.append({"name": cluster, "weight": rd.weight})
            ch = _destination_hash(policies, topology, dest_svc, rd.destination.subset)
            hashes += [h for h in [_hash_policy(ch)] if h is not None]
        if not weighted:
            _fail(vs, f"{path}.route", "every destination has weight 0", "give at least one destination a weight")
        action["weighted_clusters"] = {"clusters": weighted}
    if hashes:
        action["hash_policy"] = hashes
    retry = convert_retry_policy(http.retries, version, consistent_hash=consistent_hash)
    if retry is not None:
        action["retry_policy"] = retry
    route_match = _route_match(match)
    out: JSON = {}
    if name:
        out["name"] = name
    out["match"] = route_match
    out["route"] = action
    out["decorator"] = {"operation": _operation(action, route_match, vs.name, svc.port)}
    if http.fault is not None:
        fault = translate_fault(http.fault, source=vs.source, path=f"{path}.fault")
        if fault is not None:
            out["typed_per_filter_config"] = {FAULT_FILTER_NAME: fault}
    return out


def _fail(vs: VirtualService, path: str, message: str, fix: str) -> NoReturn:
    src = vs.source
    raise PolicyError([PolicyIssue(src.file, src.document, path, message, fix, src.field_lines.get(path))])


def _timeouts(timeout: float | None) -> JSON:
    """``setTimeout``: an explicit ``0s`` (disabled) when unset, never Envoy's 15 s default.

    ``max_grpc_timeout`` follows: ``0s`` honours any ``grpc-timeout`` header, otherwise it caps it.
    """
    value = duration(timeout or 0.0)
    return {"timeout": value, "max_grpc_timeout": value}


def _destination_hash(
    policies: PolicySet, topology: Topology, dest_svc: ServiceSpec | None, subset: str | None
) -> ConsistentHash | None:
    if dest_svc is None:
        return None
    return consistent_hash_for(destination_rule_for(policies, topology, dest_svc), subset)


def _hash_policy(ch: ConsistentHash | None) -> JSON | None:
    """``consistentHashToHashPolicy``: the route-level key for RING_HASH / MAGLEV clusters."""
    if ch is None:
        return None
    if ch.http_header_name is not None:
        return {"header": {"header_name": ch.http_header_name}}
    if ch.http_cookie_name is not None:
        cookie: JSON = {"name": ch.http_cookie_name}
        if ch.http_cookie_ttl is not None:
            cookie["ttl"] = duration(ch.http_cookie_ttl)
        if ch.http_cookie_path:
            cookie["path"] = ch.http_cookie_path
        return {"cookie": cookie}
    if ch.use_source_ip is not None:
        return {"connection_properties": {"source_ip": ch.use_source_ip}}
    if ch.http_query_parameter_name is not None:
        return {"query_parameter": {"name": ch.http_query_parameter_name}}
    return None


def _route_match(match: HTTPMatchRequest | None) -> JSON:
    """``TranslateRouteMatch`` for sidecars (prefix matches stay plain prefixes)."""
    out: JSON = {"prefix": "/"}
    if match is None:
        return out
    headers = [_header_matcher(n, m) for n, m in match.headers.items()]
    for n, m in match.without_headers.items():
        h = _header_matcher(n, m)
        h["invert_match"] = True
        if "present_match" not in h:
            h["treat_missing_header_as_empty"] = True
        headers.append(h)
    headers.sort(key=lambda h: str(h["name"]))
    if match.uri is not None:
        del out["prefix"]
        if match.uri.kind == "exact":
            out["path"] = match.uri.value
        elif match.uri.kind == "prefix":
            out["prefix"] = match.uri.value
        else:
            out["safe_regex"] = {"regex": match.uri.value}
    out["case_sensitive"] = not match.ignore_uri_case
    if match.method is not None:
        headers.append(_header_matcher(":method", match.method))
    if headers:
        out["headers"] = headers
    if match.query_params:
        out["query_parameters"] = [_present_or(n, m, "string_match") for n, m in match.query_params.items()]
    return out


def _header_matcher(name: str, m: StringMatch) -> JSON:
    return _present_or(name, m, "string_match")


def _present_or(name: str, m: StringMatch, key: str) -> JSON:
    """A regex of ``*`` is istiod's spelling of "present" (``canBeConvertedToPresentMatch``)."""
    if m.kind == "regex" and m.value == "*":
        return {"name": name, "present_match": True}
    value: JSON = {"safe_regex": {"regex": m.value}} if m.kind == "regex" else {m.kind: m.value}
    return {"name": name, key: value}


def _is_catch_all(match: JSON) -> bool:
    """``IsCatchAllRoute``: prefix ``/`` or regex ``.*`` with no header or query conditions."""
    path_all = match.get("prefix") == "/" or match.get("safe_regex", {}).get("regex") == ".*"
    return path_all and not match.get("headers") and not match.get("query_parameters")


def _operation(action: JSON, match: JSON, vs_name: str, port: int) -> str:
    """``GetRouteOperation``: the tracing decorator, ``host:port/path`` or ``vs-name:port/path``."""
    if "prefix" in match:
        path = f"{match['prefix']}*"
    elif "path" in match:
        path = str(match["path"])
    else:
        path = str(match["safe_regex"]["regex"])
    parsed = parse_cluster_name(str(action.get("cluster", "")))
    if parsed is not None:
        cport, _, host = parsed
        return f"{host}:{cport}{path}"
    return f"{vs_name}:{port}{path}"
