"""Inline YAML joined from several constants reports line numbers within each document."""

from __future__ import annotations

import pytest

from pytest_meshcheck.errors import PolicyError
from pytest_meshcheck.harness.policies import as_policy_set

SUBSETS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: order-subsets, namespace: platform-core}
spec:
  host: order-service
  subsets:
  - {name: v1, labels: {version: v1}}
"""
ROUTE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: order-route, namespace: platform-core}
spec:
  hosts: [order-service]
  http:
  - route:
    - destination: {host: order-service, subset: v1}
"""


def test_each_document_counts_lines_from_its_own_start() -> None:
    ps = as_policy_set(SUBSETS + "---" + ROUTE, source="t.py::test (inline YAML)")

    (dr,) = ps.destination_rules
    (vs,) = ps.virtual_services
    assert (dr.source.file, dr.source.line) == ("t.py::test (inline YAML), document 1", 2)
    assert (vs.source.file, vs.source.line) == ("t.py::test (inline YAML), document 2", 2)
    # The field lines point into the document, as the user's constant shows it.
    assert vs.source.field_lines["spec.http[0].route[0].destination"] == 9


def test_errors_of_every_document_are_reported_together() -> None:
    broken = SUBSETS.replace("host: order-service", "host: 42") + "---" + ROUTE.replace("hosts:", "hostz:")

    with pytest.raises(PolicyError) as info:
        as_policy_set(broken, source="inline")

    files = {issue.file for issue in info.value.issues}
    assert files == {"inline, document 1", "inline, document 2"}


def test_a_single_document_keeps_its_source_name() -> None:
    (vs,) = as_policy_set(ROUTE, source="inline").virtual_services
    assert vs.source.file == "inline"
