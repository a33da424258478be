"""Every object a cluster run creates is valid for the API server that would receive it.

Kubernetes objects are validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict:
unknown fields are errors) for a recent and an older release; Istio objects against the
``openAPIV3Schema`` of Istio 1.30.3's CRDs, converted to JSON Schema with unknown fields forbidden.
CEL rules (``x-kubernetes-validations``) cannot be evaluated here; docs/kind.md says so.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs installed
import kubernetes_validate
import pytest
import yaml

from pytest_meshcheck.errors import PolicyError, TopologyError
from pytest_meshcheck.kube.manifests import (
    ECHO_ADMIN_PORT,
    PROXY_STATS_MATCHER,
    agent_deployment,
    calls_argument,
    check_topology_ports,
    namespace_manifest,
    policy_manifest,
    policy_object_name,
    run_namespace_of,
    workload_manifests,
)
from pytest_meshcheck.kube.plan import plan_objects
from pytest_meshcheck.kube.rewrite import HostRewriter, rewrite_document, rewrite_topology
from pytest_meshcheck.kube.settings import MANAGED_BY, MANAGED_BY_LABEL, RUN_ID_LABEL, KubeSettings
from pytest_meshcheck.policy import SourceRef, load_policies, load_policy_text
from pytest_meshcheck.topology import load_topology, parse_topology
from pytest_meshcheck.workload.bundle import AGENT_FILES
from pytest_meshcheck.workload.echo import cli as echo_cli

VS_TEXT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders, namespace: platform-core}
spec:
  hosts: [order-service]
  http:
  - route: [{destination: {host: order-service}}]
"""
REPO = Path(__file__).resolve().parents[2]
# Vendored (tests/data/istio/README.md): the CRDs of the three Istio kinds a cluster run creates.
CRDS = REPO / "tests" / "data" / "istio" / "crd-networking.1.30.3.yaml"
K8S_VERSIONS = ("1.37.0", "1.30.0")
SETTINGS = KubeSettings(run_id="c0ffee01", echo_image="python:3.12-slim")


def _all_objects() -> list[dict[str, Any]]:
    policies = load_policies(REPO / "pytest_meshcheck/examples/platform", REPO / "tests/data/policies/full")
    return plan_objects(SETTINGS, load_topology(), policies)


def _kubernetes_objects() -> list[dict[str, Any]]:
    return [o for o in _all_objects() if not o["apiVersion"].startswith("networking.istio.io/")]


def _istio_objects() -> list[dict[str, Any]]:
    return [o for o in _all_objects() if o["apiVersion"].startswith("networking.istio.io/")]


def _probe_pod() -> dict[str, Any]:
    template = agent_deployment(SETTINGS)["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": "meshcheck-injection-probe", "namespace": SETTINGS.namespace},
        "spec": template["spec"],
    }


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "obj", [*_kubernetes_objects(), _probe_pod()], ids=lambda o: f"{o['kind']}-{o['metadata']['name']}"
)
def test_kubernetes_objects_validate_strictly(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


def test_strict_validation_rejects_a_misspelled_field() -> None:
    # The validator must be able to fail, or the test above proves nothing.
    bad = copy.deepcopy(agent_deployment(SETTINGS))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)


# ---------------------------------------------------------------------------------------------------------
# Istio CRD schemas
# ---------------------------------------------------------------------------------------------------------


def _to_json_schema(node: Any) -> Any:
    """Kubernetes structural schema -> JSON Schema: int-or-string, and no unknown fields unless preserved."""
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


@functools.cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    # The file is part of the checkout: if it is missing, reading it fails the test instead of skipping it.
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for doc in yaml.safe_load_all(CRDS.read_text()):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        kind = doc["spec"]["names"]["kind"]
        group = doc["spec"]["group"]
        for version in doc["spec"]["versions"]:
            schema = _to_json_schema(version["schema"]["openAPIV3Schema"])
            schema["properties"] = {
                **schema["properties"],
                "apiVersion": {"const": f"{group}/{version['name']}"},
                "kind": {"const": kind},
                "metadata": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"},
                        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
                        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
                        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                    "required": ["name", "namespace"],
                    "additionalProperties": False,
                },
            }
            schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


@pytest.mark.parametrize("obj", _istio_objects(), ids=lambda o: f"{o['kind']}-{o['metadata']['name']}")
def test_istio_objects_validate_against_the_crd_schema(obj: dict[str, Any]) -> None:
    schemas = _crd_schemas()
    key = (obj["apiVersion"], obj["kind"])
    assert key in schemas, f"no CRD for {key} in {CRDS.name}; vendor it as tests/data/istio/README.md describes"
    schema = schemas[key]
    jsonschema.validate(obj, schema)


def test_crd_schema_rejects_a_misspelled_field() -> None:
    obj = copy.deepcopy(next(o for o in _istio_objects() if o["kind"] == "VirtualService"))
    obj["spec"]["http"][0]["retries"]["attemps"] = 3
    schema = _crd_schemas()[(obj["apiVersion"], obj["kind"])]
    with pytest.raises(jsonschema.ValidationError, match="attemps"):
        jsonschema.validate(obj, schema)


# ---------------------------------------------------------------------------------------------------------
# What the objects say
# ---------------------------------------------------------------------------------------------------------


def test_every_object_carries_the_run_labels() -> None:
    for obj in _all_objects():
        labels = obj["metadata"]["labels"]
        assert labels[MANAGED_BY_LABEL] == MANAGED_BY, obj["metadata"]["name"]
        assert labels[RUN_ID_LABEL] == "c0ffee01", obj["metadata"]["name"]
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "meshcheck-c0ffee01"


def test_namespace_enables_injection_and_names_the_run() -> None:
    ns = namespace_manifest(SETTINGS, owner="host:12", heartbeat=1700000000.4)
    assert ns["metadata"]["name"] == "meshcheck-c0ffee01"
    assert ns["metadata"]["labels"]["istio-injection"] == "enabled"
    assert ns["metadata"]["annotations"] == {"meshcheck.io/owner": "host:12", "meshcheck.io/heartbeat": "1700000000"}


def test_every_pod_exposes_the_counters_through_proxy_stats_matcher() -> None:
    deployments = [o for o in _all_objects() if o["kind"] == "Deployment"]
    assert len(deployments) == 6  # 5 service versions of the default topology + the agent
    for dep in deployments:
        config = yaml.safe_load(dep["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"])
        assert config["proxyStatsMatcher"] == PROXY_STATS_MATCHER
    matcher = PROXY_STATS_MATCHER
    # istio-translation.md §8.2: these are hidden by default and needed by the assertions.
    stat = "cluster.outbound|8084||order-service.meshcheck-c0ffee01.svc.cluster.local;.upstream_rq_retry"
    assert any(stat.startswith(p) for p in matcher["inclusionPrefixes"])
    assert "http.outbound" in matcher["inclusionPrefixes"]


def test_echo_deployments_follow_the_topology() -> None:
    topo = rewrite_topology(load_topology(), SETTINGS.namespace)
    deployments = {
        o["metadata"]["name"]: o
        for o in workload_manifests(SETTINGS, topo)
        if o["kind"] == "Deployment" and o["metadata"]["name"] != "meshcheck-agent"
    }
    assert sorted(deployments) == sorted(f"{s.name}-{v.name}" for s in topo.services for v in s.versions)
    order_v2 = deployments["order-service-v2"]
    assert order_v2["spec"]["replicas"] == 1
    assert order_v2["spec"]["selector"]["matchLabels"] == {"app": "order-service", "version": "v2"}
    container = order_v2["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "python:3.12-slim"
    args = container["command"]
    assert args[:3] == ["python3", "-I", "-S"]
    assert args[args.index("--port") + 1] == "8084"
    assert args[args.index("--admin-port") + 1] == str(ECHO_ADMIN_PORT)
    # The sidecar must not intercept the chaos/metrics port, and the process must not run as Istio's uid.
    annotations = order_v2["spec"]["template"]["metadata"]["annotations"]
    assert annotations["traffic.sidecar.istio.io/excludeInboundPorts"] == str(ECHO_ADMIN_PORT)
    assert container["securityContext"]["runAsUser"] != 1337


def test_the_image_is_configurable() -> None:
    settings = KubeSettings(run_id="c0ffee01", echo_image="registry.local/python:3.13")
    images = {
        c["image"]
        for o in workload_manifests(settings, rewrite_topology(load_topology(), settings.namespace))
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.local/python:3.13"}


def test_configmaps_fit_the_one_mebibyte_limit() -> None:
    for cm in (o for o in _all_objects() if o["kind"] == "ConfigMap"):
        size = sum(len(k) + len(v.encode()) for k, v in cm["data"].items())
        assert size < 1024 * 1024 - 4096, cm["metadata"]["name"]


def test_agent_configmap_ships_the_engine_byte_for_byte() -> None:
    cm = next(o for o in _all_objects() if o["metadata"]["name"] == "meshcheck-agent")
    for f in AGENT_FILES:
        if f.source.startswith("load/"):
            assert cm["data"][f.key] == (REPO / "pytest_meshcheck" / f.source).read_text()
    assert "numpy" not in cm["data"]["load.records.py"].split('"""')[-1]


def test_policies_are_moved_into_the_run_namespace_and_renamed() -> None:
    policies = load_policy_text(
        """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders, namespace: platform-core, labels: {team: a}, resourceVersion: "7"}
spec:
  hosts: [order-service.platform-core.svc.cluster.local, order-service, external.example.com]
  gateways: [platform-core/edge, mesh]
  http:
  - route:
    - destination: {host: order-service.platform-core, port: {number: 8084}}
      weight: 90
    - destination: {host: order-service.platform-core.svc, port: {number: 8084}}
      weight: 10
status: {observedGeneration: 3}
""",
        source="orders.yaml",
    )
    hosts = HostRewriter(load_topology(), "meshcheck-c0ffee01")
    doc = policy_manifest(policies.virtual_services[0], SETTINGS, hosts, generation=4)
    assert doc["metadata"]["name"] == "orders-g4"
    assert doc["metadata"]["namespace"] == "meshcheck-c0ffee01"
    assert doc["metadata"]["labels"]["team"] == "a"
    assert doc["metadata"]["annotations"]["meshcheck.io/policy-name"] == "orders"
    assert doc["metadata"]["annotations"]["meshcheck.io/source"] == "orders.yaml:2"
    assert "resourceVersion" not in doc["metadata"]
    assert "status" not in doc
    spec = doc["spec"]
    assert spec["hosts"] == [
        "order-service.meshcheck-c0ffee01.svc.cluster.local",
        "order-service",
        "external.example.com",
    ]
    assert spec["gateways"] == ["meshcheck-c0ffee01/edge", "mesh"]
    assert [r["destination"]["host"] for r in spec["http"][0]["route"]] == [
        "order-service.meshcheck-c0ffee01",
        "order-service.meshcheck-c0ffee01.svc",
    ]


def test_fields_the_loader_does_not_model_are_rewritten_too() -> None:
    doc = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "x"},
        "spec": {
            "hosts": ["*.platform-core.svc.cluster.local"],
            "exportTo": [".", "platform-core", "other"],
            "http": [
                {
                    "match": [{"sourceNamespace": "platform-core", "gateways": ["platform-core/gw"]}],
                    "mirror": {"host": "catalog-service.platform-core.svc.cluster.local"},
                    "mirrors": [{"destination": {"host": "payment-service.platform-core"}}],
                    "route": [{"destination": {"host": "unknown-service.platform-core.svc.cluster.local"}}],
                }
            ],
            "tcp": [{"route": [{"destination": {"host": "inventory-service.platform-core.svc.cluster.local"}}]}],
        },
    }
    out = rewrite_document(doc, HostRewriter(load_topology(), "meshcheck-1"))
    assert doc["metadata"] == {"name": "x"}  # the input is not modified
    assert out["metadata"]["namespace"] == "meshcheck-1"
    spec = out["spec"]
    assert spec["hosts"] == ["*.meshcheck-1.svc.cluster.local"]
    assert spec["exportTo"] == [".", "meshcheck-1", "other"]
    http = spec["http"][0]
    assert http["match"][0] == {"sourceNamespace": "meshcheck-1", "gateways": ["meshcheck-1/gw"]}
    assert http["mirror"]["host"] == "catalog-service.meshcheck-1.svc.cluster.local"
    assert http["mirrors"][0]["destination"]["host"] == "payment-service.meshcheck-1"
    # Not a service of the topology: left alone.
    assert http["route"][0]["destination"]["host"] == "unknown-service.platform-core.svc.cluster.local"
    assert spec["tcp"][0]["route"][0]["destination"]["host"] == "inventory-service.meshcheck-1.svc.cluster.local"


def test_a_policy_without_yaml_text_is_refused_before_anything_is_applied() -> None:
    vs = dataclasses.replace(load_policy_text(VS_TEXT).virtual_services[0], source=SourceRef("built.py", 0))
    with pytest.raises(PolicyError, match="cannot be applied to a cluster: it carries no YAML text"):
        policy_manifest(vs, SETTINGS, HostRewriter(load_topology(), "meshcheck-1"), 1)


def test_policy_names_stay_valid_when_long() -> None:
    name = policy_object_name("a" * 253, 12)
    assert len(name) <= 253
    assert name.endswith("-g12")


def test_reserved_ports_and_colliding_names_are_refused() -> None:
    topo = parse_topology({"services": [{"name": "a", "port": ECHO_ADMIN_PORT}]}, source="t.yaml")
    with pytest.raises(TopologyError, match=r"t\.yaml: service 'a' uses port 9901"):
        check_topology_ports(topo)
    topo = parse_topology(
        {"services": [{"name": "a", "namespace": "x"}, {"name": "a", "namespace": "y"}]}, source="t.yaml"
    )
    with pytest.raises(TopologyError, match="exists in namespaces 'x' and 'y'"):
        rewrite_topology(topo, "meshcheck-1")


def test_a_policy_of_another_namespace_is_still_applied_in_the_run_namespace() -> None:
    text = VS_TEXT.replace("namespace: platform-core", "namespace: payments-team")
    vs = load_policy_text(text).virtual_services[0]
    doc = policy_manifest(vs, SETTINGS, HostRewriter(load_topology(), "meshcheck-c0ffee01"), 1)
    assert doc["metadata"]["namespace"] == "meshcheck-c0ffee01"


# ---------------------------------------------------------------------------------------------------------
# The call graph: callers' echo pods call their dependencies through their own sidecar
# ---------------------------------------------------------------------------------------------------------


def _echo_args(objects: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each echo Deployment's command line, by Deployment name."""
    return {
        o["metadata"]["name"]: o["spec"]["template"]["spec"]["containers"][0]["command"]
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["labels"]["app.kubernetes.io/component"] == "echo"
    }


def _calls_of(args: list[str]) -> list[dict[str, Any]]:
    assert args.count("--calls") == 1, args
    calls: list[dict[str, Any]] = json.loads(args[args.index("--calls") + 1])
    return calls


def test_order_service_calls_payment_then_inventory_in_the_run_namespace() -> None:
    args = _echo_args(_all_objects())
    expected = [
        {
            "service": "payment-service",
            "authority": "payment-service.meshcheck-c0ffee01.svc.cluster.local:8080",
            "method": "POST",
            "path": "/pay",
            "on_error": "fail",
        },
        {
            "service": "inventory-service",
            "authority": "inventory-service.meshcheck-c0ffee01.svc.cluster.local:8080",
            "method": "GET",
            "path": "/check",
            "on_error": "fail",
        },
    ]
    # Both versions of the caller run the same graph; platform-core never appears.
    assert _calls_of(args["order-service-v1"]) == expected
    assert _calls_of(args["order-service-v2"]) == expected


def test_leaf_services_get_no_calls() -> None:
    args = _echo_args(_all_objects())
    leaves = {name: a for name, a in args.items() if not name.startswith("order-service-")}
    assert sorted(leaves) == ["catalog-service-v1", "inventory-service-v1", "payment-service-v1"]
    for name, a in leaves.items():
        assert "--calls" not in a, name


def test_every_call_authority_names_a_service_the_run_creates() -> None:
    objects = _all_objects()
    services = {
        f"{o['metadata']['name']}.{o['metadata']['namespace']}.svc.cluster.local:{p['port']}"
        for o in objects
        if o["kind"] == "Service"
        for p in o["spec"]["ports"]
    }
    authorities = [c["authority"] for a in _echo_args(objects).values() if "--calls" in a for c in _calls_of(a)]
    assert authorities
    assert set(authorities) <= services


def test_authorities_follow_the_run_namespace_even_from_the_user_topology() -> None:
    # workload_manifests creates every Service in the run namespace; calls must not keep platform-core.
    args = _echo_args(workload_manifests(SETTINGS, load_topology()))
    assert [c["authority"] for c in _calls_of(args["order-service-v1"])] == [
        "payment-service.meshcheck-c0ffee01.svc.cluster.local:8080",
        "inventory-service.meshcheck-c0ffee01.svc.cluster.local:8080",
    ]


def test_calls_argument_keeps_order_ports_and_on_error() -> None:
    topo = parse_topology(
        {
            "namespace": "shop",
            "services": [
                {
                    "name": "front",
                    "calls": [
                        {"service": "stock", "method": "put", "path": "/s/$(POD_NAME)", "on_error": 503},
                        {"service": "audit", "path": "/log", "on_error": "ignore"},
                        {"service": "stock", "method": "DELETE", "path": "/hold"},
                    ],
                },
                {"name": "stock", "port": 9090},
                {"name": "audit", "port": 7000},
            ],
        },
        source="shop.yaml",
    )
    calls = json.loads(calls_argument(topo.service("front"), topo, lambda s: f"ns-{s.name}"))
    assert [(c["method"], c["authority"], c["path"], c["on_error"]) for c in calls] == [
        ("PUT", "stock.ns-stock.svc.cluster.local:9090", "/s/$(POD_NAME)", 503),
        ("GET", "audit.ns-audit.svc.cluster.local:7000", "/log", "ignore"),
        ("DELETE", "stock.ns-stock.svc.cluster.local:9090", "/hold", "fail"),
    ]
    assert json.loads(calls_argument(topo.service("stock"), topo, run_namespace_of(SETTINGS))) == []
    # In the Deployment, '$' is escaped so the kubelet does not expand $(POD_NAME) inside the path.
    args = _echo_args(workload_manifests(SETTINGS, rewrite_topology(topo, SETTINGS.namespace)))["front-v1"]
    raw = args[args.index("--calls") + 1]
    assert "/s/$$(POD_NAME)" in raw
    assert json.loads(raw.replace("$$", "$"))[0]["authority"] == "stock.meshcheck-c0ffee01.svc.cluster.local:9090"


def _kubelet_expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of a container command argument: ``$$`` is ``$``, ``$(NAME)`` a defined variable."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, arg)


def test_the_echo_accepts_the_callers_command_line() -> None:
    # The contract with the echo workload: its own parser reads the calls back, in order, unchanged.
    env = {"POD_NAME": "order-service-v1-abc12", "POD_NAMESPACE": SETTINGS.namespace}
    command = _echo_args(_all_objects())["order-service-v1"]
    argv = [_kubelet_expand(a, env) for a in command[4:]]  # after python3 -I -S echo.py
    options = echo_cli.parse_args(argv)
    (instance,) = options.spec.instances
    assert instance.outbound is None  # kube: connect to the authority; Istio's iptables do the rest
    assert [(c.service, c.authority, c.method, c.path, c.on_error) for c in instance.calls] == [
        ("payment-service", "payment-service.meshcheck-c0ffee01.svc.cluster.local:8080", "POST", "/pay", "fail"),
        ("inventory-service", "inventory-service.meshcheck-c0ffee01.svc.cluster.local:8080", "GET", "/check", "fail"),
    ]


def test_caller_pods_get_a_sidecar_and_every_hop_is_http_to_istio() -> None:
    objects = _all_objects()
    for dep in (o for o in objects if o["metadata"]["name"].startswith("order-service-")):
        if dep["kind"] != "Deployment":
            continue
        assert dep["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        # Outbound calls must be intercepted: only the admin port is excluded, and only inbound.
        assert "traffic.sidecar.istio.io/excludeOutboundPorts" not in annotations
        assert "traffic.sidecar.istio.io/excludeOutboundIPRanges" not in annotations
        assert annotations["traffic.sidecar.istio.io/excludeInboundPorts"] == str(ECHO_ADMIN_PORT)
    ns = next(o for o in objects if o["kind"] == "Namespace")
    assert ns["metadata"]["labels"]["istio-injection"] == "enabled"
    # Istio's explicit protocol selection: port name "<protocol>[-<suffix>]" or appProtocol. HTTP routing and
    # retries apply only to hops Istio treats as HTTP.
    for svc in (o for o in objects if o["kind"] == "Service"):
        for port in svc["spec"]["ports"]:
            assert port["name"] == "http" or port["name"].startswith("http-"), svc["metadata"]["name"]
            assert port["appProtocol"] == "http", svc["metadata"]["name"]
