"""Validate a VirtualService spec as Istio's admission does, and build the model.

Rules follow istiod's ``ValidateVirtualService`` (``pkg/config/validation/validation.go`` and
``virtualservice.go``) and the CRD schema; comments name the istiod function each rule comes from.
"""

from __future__ import annotations

from pytest_meshcheck.policy.fault import build_fault
from pytest_meshcheck.policy.model import (
    Destination,
    HTTPMatchRequest,
    HTTPRetry,
    HTTPRoute,
    HTTPRouteDestination,
    StringMatch,
    StringMatchKind,
    VirtualService,
)
from pytest_meshcheck.policy.reader import Fields, child
from pytest_meshcheck.policy.unreachable import warn_unreachable
from pytest_meshcheck.policy.validation import (
    JWT_CLAIM_PREFIX,
    RETRY_ON_RESET,
    fqdn_error,
    header_name_error,
    hosts_overlap,
    is_ip,
    is_istio_dns_label,
    legacy_gateway_name,
    port_error,
    regex_error,
    retry_on_conditions,
    retry_on_errors,
    wildcard_domain_error,
)

_MATCH_KINDS: tuple[StringMatchKind, ...] = ("exact", "prefix", "regex")


def build_virtual_service(spec: Fields, name: str, namespace: str | None, api_version: str) -> VirtualService:
    """Read and validate ``spec`` of a VirtualService; problems go to ``spec.ctx``."""
    ctx = spec.ctx
    hosts = spec.string_list("hosts")
    gateways = spec.string_list("gateways")
    http = spec.obj_list("http", "HTTPRoute")
    has_l4_routes = spec.present("tcp") or spec.present("tls")
    spec.finish()

    gateway_names = [g for _, g in gateways or []]
    for path, gateway in gateways or []:
        _check_gateway_name(spec, path, gateway)
    applies_to_mesh = not gateway_names or "mesh" in gateway_names
    if gateway_names and not applies_to_mesh:
        ctx.warn(
            spec.at("gateways"),
            "this VirtualService binds only to gateways, not to sidecars ('mesh' is not listed), so it does not "
            "govern service-to-service calls; pytest-meshcheck will not apply it to them",
        )
    if not hosts and not (spec.present("hosts") and hosts is None):  # None after a type error: reported
        ctx.error(
            spec.at("hosts"),
            "hosts is missing or empty; a VirtualService without hosts is a delegate, which pytest-meshcheck does "
            "not model",
            "list the service the rules apply to, e.g. hosts: [order-service.platform-core.svc.cluster.local]",
        )
    _check_hosts(spec, hosts or [], applies_to_mesh)
    if not http and not has_l4_routes and not (spec.present("http") and http is None):
        # ValidateVirtualService: "http, tcp or tls must be provided in virtual service"
        ctx.error(spec.at("http"), "http routes are missing or empty", "add at least one http route with a destination")
    routes = tuple(_route(r, i, applies_to_mesh) for i, r in enumerate(http or []))
    warn_unreachable(spec, http or [])
    return VirtualService(
        name=name,
        namespace=namespace,
        api_version=api_version,
        hosts=tuple(h for _, h in hosts or []),
        gateways=tuple(gateway_names),
        http=routes,
    )


def _check_gateway_name(spec: Fields, path: str, gateway: str) -> None:
    # validateGatewayNames
    ns, slash, gw_name = gateway.partition("/")
    if not slash:
        recommended = legacy_gateway_name(gateway)
        if recommended is not None:
            spec.ctx.warn(
                path,
                f"using legacy gatewayName format {gateway!r}; prefer the <namespace>/<name> format: {recommended!r}",
            )
        err = fqdn_error(gateway)
        if err:
            spec.ctx.error(path, f"invalid gateway name: {err}", "use 'mesh' or <namespace>/<gateway-name>")
        return
    if not (is_istio_dns_label(ns) and is_istio_dns_label(gw_name)):
        spec.ctx.error(
            path, f"invalid gateway reference {gateway!r}", "use <namespace>/<gateway-name>, both DNS labels"
        )


def _check_hosts(spec: Fields, hosts: list[tuple[str, str]], applies_to_mesh: bool) -> None:
    valid: list[str] = []
    for path, host in hosts:
        err = wildcard_domain_error(host)
        if err and not is_ip(host):
            spec.ctx.error(path, f"invalid host: {err}", "use a service name such as order-service or its FQDN")
        elif host == "*" and applies_to_mesh:
            spec.ctx.error(
                path, "wildcard host * is not allowed for VirtualServices bound to the mesh", "name the service"
            )
        else:
            valid.append(host)
    if len(valid) != len(hosts):
        return
    for i, a in enumerate(valid):
        for b in valid[i + 1 :]:
            if hosts_overlap(a, b):
                spec.ctx.error(
                    spec.at("hosts"), f"duplicate hosts in virtual service: {a} & {b}", "list each host once"
                )


def _route(f: Fields, index: int, applies_to_mesh: bool) -> HTTPRoute:
    ctx = f.ctx
    name = f.string("name")
    matches = tuple(_match(m, applies_to_mesh) for m in f.obj_list("match", "HTTPMatchRequest") or [])
    route_list = f.obj_list("route", "HTTPRouteDestination")
    destinations = tuple(_route_destination(d) for d in route_list or [])
    retries_f = f.obj("retries", "HTTPRetry")
    retries = _retry(retries_f) if retries_f else None
    timeout = f.duration("timeout", zero_fix="omit timeout to disable the route timeout (Istio writes 0s, i.e. none)")
    fault_f = f.obj("fault", "HTTPFaultInjection")
    fault = build_fault(fault_f) if fault_f else None
    replaced = any(f.present(k) for k in ("redirect", "directResponse", "delegate"))
    f.finish()
    if not destinations and not replaced:
        # validateHTTPRouteConflict: "HTTP route or redirect is required"
        ctx.error(f.at("route"), "route is missing or empty", "add route: [{destination: {host: <service>}}]")
    # validateHTTPRouteDestinations: weights may not be negative; several destinations may not all be 0.
    if len(destinations) > 1 and sum(d.weight or 0 for d in destinations) == 0:
        ctx.error(f.at("route"), "total destination weight = 0", "give at least one destination a positive weight")
    if retries is not None and retries_f is not None:
        _warn_retry_semantics(retries_f, retries, timeout)
    return HTTPRoute(
        name=name, match=matches, route=destinations, retries=retries, timeout=timeout, fault=fault, index=index
    )


def _string_match(f: Fields, what: str) -> StringMatch | None:
    # CRD oneOf on exact/prefix/regex; validateStringMatch (validateStringMatchRegexp alone for the uri).
    set_kinds = [k for k in _MATCH_KINDS if f.present(k)]
    values = {k: f.string(k) for k in _MATCH_KINDS}
    f.finish()
    if len(set_kinds) > 1:
        f.ctx.error(
            f.path,
            f"sets {' and '.join(set_kinds)}; a StringMatch takes exactly one",
            "keep one of exact, prefix, regex",
        )
        return None
    if not set_kinds:
        if what in ("header", "without header"):
            message = "an empty match ({}) tests only that the header is present, which pytest-meshcheck does not model"
        else:
            message = "sets none of exact, prefix, regex"
        f.ctx.error(f.path, message, "set exactly one of exact, prefix or regex")
        return None
    kind = set_kinds[0]
    value = values[kind]
    if value is None:
        return None
    if kind == "prefix" and not value and what != "uri":
        # Envoy's StringMatcher requires a non-empty prefix; only the path matcher takes "".
        f.ctx.error(
            f.at("prefix"),
            f"prefix string match should not be empty (Istio rejects it for {what} matches)",
            "remove the match to accept any value, or use regex: '.*' for a present value",
        )
        return None
    if kind == "regex" and value == "*" and what == "without header":
        # validateHTTPRouteMatchRequest: withoutHeaders regex "*" is a presence match, not RE2.
        return StringMatch(kind, value)
    if kind == "regex":
        err = regex_error(value)
        if err:
            f.ctx.error(
                f.at("regex"), err, "write an RE2 regular expression (https://github.com/google/re2/wiki/Syntax)"
            )
            return None
    return StringMatch(kind, value)


_MAP_KINDS = {"headers": "header", "withoutHeaders": "without header", "queryParams": "query parameter"}


def _string_match_map(f: Fields, name: str, applies_to_mesh: bool) -> dict[str, StringMatch]:
    out: dict[str, StringMatch] = {}
    for key, sub in (f.obj_map(name, "StringMatch") or {}).items():
        path = child(f.at(name), key)
        if name != "queryParams":
            # ValidateHTTPHeaderNameOrJwtClaimRoute; claim routes only work on gateways (ValidateVirtualService).
            if key.startswith(JWT_CLAIM_PREFIX):
                if applies_to_mesh:
                    f.ctx.error(
                        path,
                        f"JWT claim based routing (key: {key}) is only supported for gateways",
                        "match on a plain request header, or bind the VirtualService to a gateway",
                    )
            elif (err := header_name_error(key)) is not None:
                f.ctx.error(path, err, "use a header name of letters, digits and -_.!#$%&'*+^`|~ (':' may lead)")
        sm = _string_match(sub, _MAP_KINDS[name])
        if sm is not None:
            out[key] = sm
    return out


def _match(f: Fields, applies_to_mesh: bool) -> HTTPMatchRequest:
    name = f.string("name")
    uri_f, method_f = f.obj("uri", "StringMatch"), f.obj("method", "StringMatch")
    uri = _string_match(uri_f, "uri") if uri_f else None
    method = _string_match(method_f, "method") if method_f else None
    headers = _string_match_map(f, "headers", applies_to_mesh)
    without = _string_match_map(f, "withoutHeaders", applies_to_mesh)
    query = _string_match_map(f, "queryParams", applies_to_mesh)
    ignore_case = f.boolean("ignoreUriCase")
    f.finish()
    return HTTPMatchRequest(
        name=name,
        uri=uri,
        method=method,
        headers=headers,
        without_headers=without,
        query_params=query,
        ignore_uri_case=bool(ignore_case),
    )


def _route_destination(f: Fields) -> HTTPRouteDestination:
    dest_f = f.obj("destination", "Destination")
    weight = f.integer("weight")
    f.finish()
    if weight is not None and weight < 0:
        f.ctx.error(f.at("weight"), f"weight {weight} < 0", "use a weight of 0 or more")
    if dest_f is None:
        f.require("destination", "add destination: {host: <service>}")
        return HTTPRouteDestination(Destination(""), weight)
    return HTTPRouteDestination(_destination(dest_f), weight)


def _destination(f: Fields) -> Destination:
    # validateDestination
    host = f.string("host")
    subset = f.string("subset")
    port_f = f.obj("port", "PortSelector")
    number = None
    if port_f is not None:
        number = port_f.integer("number", "uint32")
        port_f.finish()
        err = port_error(number or 0)
        if err:
            f.ctx.error(port_f.at("number"), err, "set port: {number: <service port>}")
    f.finish()
    if host is None:
        f.require("host", "set host to the service name, e.g. order-service")
    elif host == "*":
        f.ctx.error(f.at("host"), "invalid destination host *", "name the service")
    elif (err := wildcard_domain_error(host)) is not None:
        f.ctx.error(f.at("host"), f"invalid destination host: {err}", "use a service name or FQDN")
    if subset is not None and not is_istio_dns_label(subset):
        f.ctx.error(f.at("subset"), f"subset name {subset!r} is not a DNS-1123 label", "use letters, digits and '-'")
    return Destination(host or "", subset, number)


def _retry(f: Fields) -> HTTPRetry:
    # validateHTTPRetry
    attempts_given = f.present("attempts")
    attempts = f.integer("attempts")
    per_try = f.duration("perTryTimeout")
    retry_on = f.string("retryOn")
    remote = f.boolean("retryRemoteLocalities")
    ignore_previous = f.boolean("retryIgnorePreviousHosts")
    backoff = f.duration("backoff")
    f.finish()
    count = attempts or 0
    if count < 0:
        f.ctx.error(f.at("attempts"), f"attempts {count} cannot be negative", "set attempts to 0 (no retries) or more")
    attempts_ok = attempts is not None or not attempts_given  # a type error was reported already
    configured = f.present("perTryTimeout") or f.data.get("retryOn") or f.present("retryRemoteLocalities")
    if count == 0 and attempts_ok and configured:
        where = "attempts is 0" if attempts_given else "attempts is not set, so it is 0"
        f.ctx.error(
            f.at("attempts"),
            f"{where} (retries disabled) but perTryTimeout, retryOn or retryRemoteLocalities is set; Istio rejects "
            "this ('http retry policy configured when attempts are set to 0')",
            "set attempts to the number of retries you want, e.g. attempts: 3",
        )
    elif not attempts_given and not configured:
        f.ctx.warn(
            f.path,
            "attempts is not set, so it is 0: this route gets no retry policy at all, not even "
            "Istio's default of 2 retries",
        )
    if retry_on:
        for token in retry_on_errors(retry_on):
            shown = repr(token) + (" (istiod splits on ',' without trimming spaces)" if token != token.strip() else "")
            f.ctx.error(
                f.at("retryOn"),
                f"{shown} is not a valid retryOn policy",
                "use comma-separated conditions without spaces, e.g. 5xx,reset,connect-failure,503",
            )
    return HTTPRetry(
        attempts=count,
        per_try_timeout=per_try,
        retry_on=retry_on,
        retry_remote_localities=remote,
        retry_ignore_previous_hosts=ignore_previous,
        backoff=backoff,
    )


def _warn_retry_semantics(f: Fields, retries: HTTPRetry, timeout: float | None) -> None:
    if retries.attempts <= 0 or retries.per_try_timeout is None:
        return
    conditions = retry_on_conditions(retries.retry_on) if retries.retry_on else set()
    if not conditions & RETRY_ON_RESET:
        f.ctx.warn(
            f.at("perTryTimeout"),
            "retryOn has none of 5xx, gateway-error, reset: Envoy does not retry an attempt that hits perTryTimeout, "
            "so the first slow attempt fails the request with 504 (flag UT)",
        )
    if timeout is not None and retries.per_try_timeout >= timeout:
        f.ctx.warn(f.at("perTryTimeout"), "perTryTimeout is not shorter than the route timeout, so Envoy ignores it")
