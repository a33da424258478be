"""The topology's call graph: parsing, line numbers, and every bad graph's error naming file, field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pytest_meshcheck.errors import TopologyError
from pytest_meshcheck.topology import MAX_CALL_DEPTH, Call, load_topology, parse_topology


def test_default_topology_follows_the_readme_graph() -> None:
    topo = load_topology()
    order = topo.service("order-service")
    assert [(c.service, c.method, c.path, c.on_error) for c in order.calls] == [
        ("payment-service", "POST", "/pay", "fail"),
        ("inventory-service", "GET", "/check", "fail"),
    ]
    assert all(c.line > 0 for c in order.calls)
    assert [s.name for s in topo.callers] == ["order-service"]
    assert [s.name for s in topo.callers_of("payment-service")] == ["order-service"]
    assert topo.call_depth("order-service") == 1
    assert topo.call_depth("payment-service") == 0


def test_call_lines_point_at_the_call(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("services:\n  - name: a\n    calls:\n      - service: b\n        method: post\n  - name: b\n")
    (call,) = load_topology(path).service("a").calls
    assert call == Call("b", "POST", "/", "fail", 4)


def chain(n: int) -> dict[str, object]:
    return {
        "services": [
            {"name": f"s{i}", **({"calls": [{"service": f"s{i + 1}"}]} if i < n else {})} for i in range(n + 1)
        ]
    }


def test_a_chain_at_the_depth_limit_loads_and_one_deeper_is_refused() -> None:
    assert parse_topology(chain(MAX_CALL_DEPTH)).call_depth("s0") == MAX_CALL_DEPTH
    with pytest.raises(
        TopologyError,
        match=rf"services\[0\]\.calls: s0 starts a call chain {MAX_CALL_DEPTH + 1} hops deep; "
        rf"the limit is {MAX_CALL_DEPTH}",
    ):
        parse_topology(chain(MAX_CALL_DEPTH + 1))


@pytest.mark.parametrize(
    ("calls", "message"),
    [
        ([{"service": "b", "method": "FETCH"}], r"services\[0\]\.calls\[0\]\.method: 'FETCH' is not one of GET"),
        ([{"service": "b", "path": "pay"}], r"services\[0\]\.calls\[0\]\.path: 'pay' must be a path starting with '/'"),
        ([{"service": "b", "on_error": 200}], r"services\[0\]\.calls\[0\]\.on_error: 200 must be 'fail'"),
        ([{"service": "b", "retries": 3}], r"services\[0\]\.calls\[0\]: unknown field\(s\) \['retries'\]"),
        ([{"method": "GET"}], r"services\[0\]\.calls\[0\]\.service: required"),
        ({"service": "b"}, r"services\[0\]\.calls: expected a list"),
        ([{"service": "a"}], r"cycle \(a -> a\)"),
    ],
)
def test_bad_calls_name_the_field_and_the_fix(calls: object, message: str) -> None:
    doc = {"services": [{"name": "a", "calls": calls}, {"name": "b"}]}
    with pytest.raises(TopologyError, match=message):
        parse_topology(yaml.safe_load(yaml.safe_dump(doc)), source="t.yaml")
