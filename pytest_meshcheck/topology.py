"""Services, their versions and replica counts: what the mesh runs.

A topology file looks like the packaged default (``pytest_meshcheck/topology.yaml``)::

    namespace: platform-core          # default namespace of services below
    services:
      - name: order-service
        port: 8084
        versions:
          - {name: v1, replicas: 3}   # labels default to {app: <name>, version: <name>}
          - {name: v2, replicas: 1, labels: {version: v2, track: canary}}
        calls:                        # the call graph: per request, in order, through the pod's sidecar
          - {service: payment-service, method: POST, path: /pay}
          - {service: inventory-service, method: GET, path: /check, on_error: ignore}

A call whose dependency answers non-2xx (after the caller's own sidecar retried) makes the caller answer
with that status, naming the failed hop, unless its ``on_error`` says otherwise: ``fail`` (the default),
``ignore`` (go on as if it succeeded) or a status code 400-599 to answer with instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pytest_meshcheck.errors import TopologyError

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
CLUSTER_DOMAIN = "svc.cluster.local"
#: The longest chain of calls a topology may declare (user request to the deepest leaf, in hops).
MAX_CALL_DEPTH = 6
#: HTTP methods a call may use.
CALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Call:
    """One dependency call a service makes for every request it serves.

    Attributes:
        service: The called service's short name (in this topology).
        method: HTTP method, such as ``POST``.
        path: Request path, such as ``/pay``.
        on_error: What the caller does when the call fails (non-2xx after its sidecar's retries, or no
            response): ``"fail"`` answers with the dependency's status (``502`` when there was none),
            ``"ignore"`` goes on, and a status code answers with that code.
        line: Line of the call in the topology file (0 when not from a file).
    """

    service: str
    method: str = "GET"
    path: str = "/"
    on_error: str | int = "fail"
    line: int = 0


@dataclass(frozen=True)
class VersionSpec:
    """One version of a service: a label set and how many replicas run it."""

    name: str
    replicas: int
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceSpec:
    """One service: name, namespace, HTTP port and versions."""

    name: str
    namespace: str
    port: int
    versions: tuple[VersionSpec, ...]
    calls: tuple[Call, ...] = ()

    @property
    def fqdn(self) -> str:
        """The Kubernetes FQDN, ``name.namespace.svc.cluster.local``."""
        return f"{self.name}.{self.namespace}.{CLUSTER_DOMAIN}"

    @property
    def replicas(self) -> int:
        """Total replicas over all versions."""
        return sum(v.replicas for v in self.versions)

    def instance_labels(self, version: VersionSpec) -> dict[str, str]:
        """Labels of every pod of ``version``, as a Deployment would set them."""
        return {"app": self.name, "version": version.name, **version.labels}

    def host_aliases(self) -> tuple[str, ...]:
        """Every host name a client in the mesh may use for this service."""
        return (
            self.name,
            f"{self.name}.{self.namespace}",
            f"{self.name}.{self.namespace}.svc",
            self.fqdn,
        )


@dataclass(frozen=True)
class GatewayRoute:
    """An ingress route: requests whose path starts with ``prefix`` go to ``service``."""

    prefix: str
    service: str


@dataclass(frozen=True)
class Topology:
    """The set of services a mesh runs, and the ingress routes in front of them."""

    services: tuple[ServiceSpec, ...]
    source: str = "<default>"
    gateway_routes: tuple[GatewayRoute, ...] = ()

    def service(self, name: str) -> ServiceSpec:
        """Return the service called ``name`` (short name or FQDN).

        Raises:
            TopologyError: No such service.
        """
        for svc in self.services:
            if name in (svc.name, svc.fqdn):
                return svc
        known = ", ".join(s.name for s in self.services)
        raise TopologyError(f"unknown service {name!r} in topology {self.source}; known services: {known}")

    def resolve_host(self, host: str, namespace: str | None) -> ServiceSpec | None:
        """Resolve a VirtualService/DestinationRule host as istiod does.

        A short name is relative to the resource's namespace (``order-service`` in ``platform-core`` is
        ``order-service.platform-core.svc.cluster.local``). Returns ``None`` when no service matches.
        """
        if "." not in host and namespace:
            host = f"{host}.{namespace}.{CLUSTER_DOMAIN}"
        for svc in self.services:
            if host in (svc.fqdn, f"{svc.name}.{svc.namespace}", f"{svc.name}.{svc.namespace}.svc"):
                return svc
            if "." not in host and namespace is None and host == svc.name:
                return svc
        return None

    @property
    def instance_count(self) -> int:
        """Number of workload instances (pods) this topology runs."""
        return sum(s.replicas for s in self.services)

    @property
    def callers(self) -> tuple[ServiceSpec, ...]:
        """Services that call others: each of their pods gets its own sidecar."""
        return tuple(s for s in self.services if s.calls)

    def callers_of(self, service: str) -> tuple[ServiceSpec, ...]:
        """Services with a call to ``service``, in topology order."""
        name = self.service(service).name
        return tuple(s for s in self.services if any(c.service == name for c in s.calls))

    def call_depth(self, service: str) -> int:
        """Hops below ``service`` on its longest call chain (0 for a leaf)."""
        svc = self.service(service)
        return max((1 + self.call_depth(c.service) for c in svc.calls), default=0)


def default_topology_path() -> Path:
    """Path of the packaged default topology (the user's platform)."""
    return Path(str(resources.files("pytest_meshcheck").joinpath("topology.yaml")))


def load_topology(path: str | Path | None = None) -> Topology:
    """Load a topology file, or the packaged default when ``path`` is ``None``.

    Raises:
        TopologyError: The file is missing, not YAML, or has a bad or unknown field.
    """
    p = Path(path) if path is not None else default_topology_path()
    try:
        text = p.read_text(encoding="utf-8")
        try:
            data, node = _parse(text, _Loader)
        except yaml.YAMLError:
            # libyaml's messages are terser (no "found character '\t'"): report the pure loader's.
            data, node = _parse(text, yaml.SafeLoader)
        lines = _call_lines(node)
    except OSError as exc:
        raise TopologyError(f"cannot read topology file {p}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise TopologyError(f"{p}: not valid YAML: {exc}") from exc
    return parse_topology(data, source=str(p), call_lines=lines)


# libyaml's loader when PyYAML was built with it (about 10x faster on a 1000-service file).
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse(text: str, loader_class: Any) -> tuple[Any, yaml.Node | None]:
    """One parse: the node tree gives the call lines, and constructing it gives the data."""
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    finally:
        loader.dispose()


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v  # type: ignore[no-any-return]
    return None


def _call_lines(root: yaml.Node | None) -> dict[tuple[int, int], int]:
    """1-based line of each ``services[i].calls[k]``, so the model can cite the call graph as it cites policies."""
    lines: dict[tuple[int, int], int] = {}
    services = _child(root, "services")
    if isinstance(services, yaml.SequenceNode):
        for i, svc in enumerate(services.value):
            calls = _child(svc, "calls")
            if isinstance(calls, yaml.SequenceNode):
                for k, call in enumerate(calls.value):
                    lines[(i, k)] = call.start_mark.line + 1
    return lines


def _require(cond: bool, source: str, where: str, message: str) -> None:
    if not cond:
        raise TopologyError(f"{source}: {where}: {message}")


def parse_topology(
    data: Any, *, source: str = "<string>", call_lines: dict[tuple[int, int], int] | None = None
) -> Topology:
    """Build a :class:`Topology` from already-parsed YAML data.

    Args:
        data: The parsed YAML.
        source: The file name errors and reasons cite.
        call_lines: Line of each ``services[i].calls[k]`` in ``source``, when known.

    Raises:
        TopologyError: Naming the file and field at fault.
    """
    _require(isinstance(data, dict), source, "top level", "expected a mapping with 'services'")
    unknown = set(data) - {"namespace", "services", "gateway"}
    _require(
        not unknown,
        source,
        "top level",
        f"unknown field(s) {sorted(unknown)}; allowed: namespace, services, gateway",
    )
    default_ns = data.get("namespace", "default")
    _require(
        isinstance(default_ns, str) and bool(_DNS_LABEL.match(default_ns)),
        source,
        "namespace",
        f"{default_ns!r} is not a DNS-1123 label",
    )
    raw_services = data.get("services")
    _require(
        isinstance(raw_services, list) and bool(raw_services),
        source,
        "services",
        "expected a non-empty list of services",
    )
    services: list[ServiceSpec] = []
    seen: set[tuple[str, str]] = set()
    for i, raw in enumerate(raw_services):
        where = f"services[{i}]"
        _require(isinstance(raw, dict), source, where, "expected a mapping with name, port, versions")
        unknown = set(raw) - {"name", "namespace", "port", "versions", "calls"}
        _require(
            not unknown,
            source,
            where,
            f"unknown field(s) {sorted(unknown)}; allowed: name, namespace, port, versions, calls",
        )
        name, ns, port = raw.get("name"), raw.get("namespace", default_ns), raw.get("port", 8080)
        _require(
            isinstance(name, str) and bool(_DNS_LABEL.match(name)),
            source,
            f"{where}.name",
            f"{name!r} is not a DNS-1123 label (lower-case letters, digits, '-')",
        )
        _require(
            isinstance(ns, str) and bool(_DNS_LABEL.match(ns)),
            source,
            f"{where}.namespace",
            f"{ns!r} is not a DNS-1123 label",
        )
        _require(
            isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536,
            source,
            f"{where}.port",
            f"{port!r} is not a port number 1-65535",
        )
        _require((name, ns) not in seen, source, f"{where}.name", f"duplicate service {name!r} in {ns!r}")
        seen.add((name, ns))
        raw_versions = raw.get("versions", [{"name": "v1", "replicas": 1}])
        _require(
            isinstance(raw_versions, list) and bool(raw_versions),
            source,
            f"{where}.versions",
            "expected a non-empty list",
        )
        versions: list[VersionSpec] = []
        for j, rv in enumerate(raw_versions):
            vw = f"{where}.versions[{j}]"
            _require(isinstance(rv, dict), source, vw, "expected a mapping with name and replicas")
            unknown = set(rv) - {"name", "replicas", "labels"}
            _require(
                not unknown,
                source,
                vw,
                f"unknown field(s) {sorted(unknown)}; allowed: name, replicas, labels",
            )
            vname, replicas, labels = rv.get("name"), rv.get("replicas", 1), rv.get("labels", {})
            _require(
                isinstance(vname, str) and bool(_DNS_LABEL.match(vname)),
                source,
                f"{vw}.name",
                f"{vname!r} is not a DNS-1123 label",
            )
            _require(
                isinstance(replicas, int) and not isinstance(replicas, bool) and 1 <= replicas <= 20,
                source,
                f"{vw}.replicas",
                f"{replicas!r} must be an integer from 1 to 20",
            )
            _require(
                isinstance(labels, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()),
                source,
                f"{vw}.labels",
                "expected a mapping of string to string",
            )
            _require(vname not in {v.name for v in versions}, source, f"{vw}.name", f"duplicate version {vname!r}")
            versions.append(VersionSpec(vname, replicas, dict(labels)))
        calls = _parse_calls(raw.get("calls"), f"{where}.calls", source, i, call_lines or {})
        services.append(ServiceSpec(name, ns, port, tuple(versions), calls))
    topology = Topology(
        tuple(services),
        source=source,
        gateway_routes=_parse_gateway(data.get("gateway"), {s.name for s in services}, source),
    )
    _check_call_graph(topology, source)
    return topology


def _parse_calls(
    raw: Any, where: str, source: str, service_index: int, lines: dict[tuple[int, int], int]
) -> tuple[Call, ...]:
    if raw is None:
        return ()
    _require(isinstance(raw, list), source, where, "expected a list of {service, method, path, on_error}")
    out: list[Call] = []
    for k, rc in enumerate(raw):
        cw = f"{where}[{k}]"
        _require(isinstance(rc, dict), source, cw, "expected a mapping with service, method, path, on_error")
        unknown = set(rc) - {"service", "method", "path", "on_error"}
        _require(
            not unknown,
            source,
            cw,
            f"unknown field(s) {sorted(unknown)}; allowed: service, method, path, on_error",
        )
        target, method = rc.get("service"), rc.get("method", "GET")
        path, on_error = rc.get("path", "/"), rc.get("on_error", "fail")
        _require(isinstance(target, str) and bool(target), source, f"{cw}.service", "required: the called service")
        _require(
            isinstance(method, str) and method.upper() in CALL_METHODS,
            source,
            f"{cw}.method",
            f"{method!r} is not one of {', '.join(CALL_METHODS)}",
        )
        _require(
            isinstance(path, str) and path.startswith("/") and path.isprintable() and " " not in path,
            source,
            f"{cw}.path",
            f"{path!r} must be a path starting with '/' with no spaces",
        )
        valid_status = isinstance(on_error, int) and not isinstance(on_error, bool) and 400 <= on_error <= 599
        _require(
            on_error in ("fail", "ignore") or valid_status,
            source,
            f"{cw}.on_error",
            f"{on_error!r} must be 'fail' (answer with the dependency's status), 'ignore' or a status 400-599",
        )
        out.append(Call(target, method.upper(), path, on_error, lines.get((service_index, k), 0)))
    return tuple(out)


def _check_call_graph(topology: Topology, source: str) -> None:
    names = {s.name for s in topology.services}
    for i, svc in enumerate(topology.services):
        for k, call in enumerate(svc.calls):
            # Checked before the message is built: joining every name per call made large topologies quadratic.
            if call.service not in names:
                _require(
                    False,
                    source,
                    f"services[{i}].calls[{k}].service",
                    f"{call.service!r} is not a service of this topology; known: {', '.join(sorted(names))}",
                )
    # Depth-first search with colours finds a cycle and names it in call order.
    state: dict[str, int] = {}
    index = {s.name: i for i, s in enumerate(topology.services)}

    def visit(name: str, path: list[str]) -> int:
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise TopologyError(
                f"{source}: services[{index[name]}].calls: the call graph has a cycle "
                f"({' -> '.join(cycle)}); a request would never finish. Remove one of these calls"
            )
        if state.get(name) == 2:
            return depth[name]
        state[name] = 1
        svc = topology.services[index[name]]
        d = max((1 + visit(c.service, [*path, name]) for c in svc.calls), default=0)
        state[name] = 2
        depth[name] = d
        return d

    depth: dict[str, int] = {}
    for svc in topology.services:
        d = visit(svc.name, [])
        _require(
            d <= MAX_CALL_DEPTH,
            source,
            f"services[{index[svc.name]}].calls",
            f"{svc.name} starts a call chain {d} hops deep; the limit is {MAX_CALL_DEPTH}. Shorten the chain",
        )


def _parse_gateway(raw: Any, names: set[str], source: str) -> tuple[GatewayRoute, ...]:
    if raw is None:
        return ()
    _require(
        isinstance(raw, dict) and set(raw) <= {"routes"},
        source,
        "gateway",
        "expected a mapping with 'routes'",
    )
    routes = raw.get("routes") or []
    _require(isinstance(routes, list), source, "gateway.routes", "expected a list of {prefix, service}")
    out: list[GatewayRoute] = []
    for i, r in enumerate(routes):
        where = f"gateway.routes[{i}]"
        _require(
            isinstance(r, dict) and set(r) == {"prefix", "service"},
            source,
            where,
            "expected exactly the fields prefix and service",
        )
        _require(
            isinstance(r["prefix"], str) and r["prefix"].startswith("/"),
            source,
            f"{where}.prefix",
            f"{r['prefix']!r} must be a path starting with '/'",
        )
        if r["service"] not in names:
            _require(
                False,
                source,
                f"{where}.service",
                f"{r['service']!r} is not a service of this topology; known: {', '.join(sorted(names))}",
            )
        out.append(GatewayRoute(r["prefix"], r["service"]))
    return tuple(out)
