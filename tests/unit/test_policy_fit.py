"""Policies against a topology: empty subsets, undefined subsets and wrong ports fail; unknown hosts warn."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_meshcheck.errors import TopologyError
from pytest_meshcheck.policy import PolicySet, check_policies_fit, load_policies, load_policy_text
from pytest_meshcheck.topology import Topology, load_topology, parse_topology

DATA = Path(__file__).parent.parent / "data" / "policies"

TOPOLOGY = parse_topology(
    {
        "namespace": "platform-core",
        "services": [
            {"name": "order-service", "port": 8084, "versions": [
                {"name": "v1", "replicas": 2},
                {"name": "v2", "replicas": 1, "labels": {"track": "canary"}},
            ]},
            {"name": "payment-service", "port": 8080},
        ],
    },
    source="topo.yaml",
)  # fmt: skip

RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: platform-core}}
spec:
  host: {host}
  subsets:
{subsets}"""

ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: [{host}]
  http:
  - route:
    - destination:
        host: {host}
{extra}"""


def rule(subsets: str, host: str = "order-service", name: str = "orders") -> str:
    return RULE.format(name=name, host=host, subsets=subsets)


def route(extra: str = "", host: str = "order-service", namespace: str = "platform-core", name: str = "r") -> str:
    return ROUTE.format(name=name, host=host, namespace=namespace, extra=extra)


def policies(*docs: str) -> PolicySet:
    return load_policy_text("---\n".join(docs), source="p.yaml")


def fit_error(policy_set: PolicySet, topology: Topology = TOPOLOGY) -> str:
    with pytest.raises(TopologyError) as err:
        check_policies_fit(policy_set, topology)
    return str(err.value)


def test_the_users_policies_fit_the_default_topology() -> None:
    assert check_policies_fit(load_policies(DATA / "user"), load_topology()) == []


@pytest.mark.parametrize(
    "labels",
    ["{version: v1}", "{version: v2}", "{app: order-service}", "{track: canary}", "{version: v2, track: canary}", "{}"],
)
def test_subset_selecting_a_version_fits(labels: str) -> None:
    assert check_policies_fit(policies(rule(f"  - name: s\n    labels: {labels}\n")), TOPOLOGY) == []


@pytest.mark.parametrize("labels", ["{version: v3}", "{app: payment-service}", "{version: v1, track: canary}"])
def test_subset_selecting_no_version_is_an_error(labels: str) -> None:
    text = fit_error(policies(rule(f"  - name: v1\n    labels: {{version: v1}}\n  - name: s\n    labels: {labels}\n")))
    assert text.startswith("1 policy reference(s) do not fit the topology:")
    assert "p.yaml:10 (document 0): spec.subsets[1].labels: subset 's' selects labels" in text
    assert "no version of order-service has" in text
    assert "v1: {'app': 'order-service', 'version': 'v1'}" in text
    assert "503 (no healthy upstream, flag UH)" in text
    assert "Fix: change the labels to those of a version, or add a matching version to the topology (topo.yaml)" in text


def test_route_to_a_defined_subset_fits() -> None:
    docs = (rule("  - name: v2\n    labels: {version: v2}\n"), route("        subset: v2\n"))
    assert check_policies_fit(policies(*docs), TOPOLOGY) == []


def test_route_to_an_undefined_subset_is_a_503_nc_error() -> None:
    docs = (rule("  - name: v1\n    labels: {version: v1}\n"), route("        subset: v2\n"))
    text = fit_error(policies(*docs))
    assert "p.yaml:19 (document 1): spec.http[0].route[0].destination.subset: subset 'v2' of order-service" in text
    assert "(defined: v1)" in text
    assert "outbound|8084|v2|order-service.platform-core.svc.cluster.local" in text
    assert "503 (flag NC, no cluster found)" in text
    assert "add a DestinationRule for order-service.platform-core.svc.cluster.local with subset 'v2'" in text


def test_subset_of_a_rule_for_another_service_does_not_count() -> None:
    docs = (rule("  - name: v2\n    labels: {}\n", host="payment-service"), route("        subset: v2\n"))
    assert "(defined: none)" in fit_error(policies(*docs))


@pytest.mark.parametrize(("port", "fits"), [(8084, True), (8080, False)])
def test_destination_port_must_be_the_services(port: int, fits: bool) -> None:
    policy_set = policies(route(f"        port: {{number: {port}}}\n"))
    if fits:
        assert check_policies_fit(policy_set, TOPOLOGY) == []
    else:
        text = fit_error(policy_set)
        assert "spec.http[0].route[0].destination.port.number: order-service exposes port 8084, not 8080" in text
        assert "Fix: set port: {number: 8084} or remove the port" in text


def test_all_problems_are_reported_together() -> None:
    docs = (
        rule("  - name: gone\n    labels: {version: v9}\n"),
        route("        subset: missing\n        port: {number: 1}\n"),
    )
    text = fit_error(policies(*docs))
    assert text.startswith("3 policy reference(s)")
    for path in ("spec.subsets[0].labels", "destination.port.number", "destination.subset"):
        assert path in text


def test_unknown_hosts_only_warn() -> None:
    docs = (
        rule("  - name: v1\n    labels: {version: v1}\n", host="ledger-service", name="ledger"),
        route(host="ledger-service"),
    )
    warnings = check_policies_fit(policies(*docs), TOPOLOGY)
    assert [(w.document, w.path) for w in warnings] == [
        (0, "spec.host"),
        (1, "spec.hosts[0]"),
        (1, "spec.http[0].route[0].destination.host"),
    ]
    assert "host 'ledger-service' is not a service of topology topo.yaml" in warnings[0].message
    assert "order-service, payment-service" in warnings[0].message


def test_short_hosts_resolve_in_the_policys_namespace() -> None:
    warnings = check_policies_fit(policies(route(namespace="elsewhere")), TOPOLOGY)
    assert len(warnings) == 2  # order-service.elsewhere is not order-service.platform-core
    fqdn = route(host="order-service.platform-core.svc.cluster.local", namespace="elsewhere")
    assert check_policies_fit(policies(fqdn), TOPOLOGY) == []
