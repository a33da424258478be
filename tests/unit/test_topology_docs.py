"""docs/reference/topology.md stays true: its examples load, its error messages are the loader's own.

The doc marks each example with an HTML comment (``<!-- topology: loads name=... -->``,
``<!-- topology: error -->``, ...) followed by fenced blocks; this test reads them from the doc itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_meshcheck.errors import TopologyError
from pytest_meshcheck.expect import predict_routing
from pytest_meshcheck.policy import check_policies_fit, load_policy_text
from pytest_meshcheck.topology import Topology, default_topology_path, load_topology, parse_topology

DOC = Path(__file__).resolve().parents[2] / "docs" / "reference" / "topology.md"
TEXT = DOC.read_text(encoding="utf-8")
FILE = "my-topology.yaml"

_MARKER = re.compile(r"<!-- topology: (?P<kind>[a-z-]+)(?P<args>(?: [a-z]+=[\w-]+)*) -->\n")
_FENCE = re.compile(r"\s*```(?P<lang>\w+)\n(?P<body>.*?)\n```", re.S)


@dataclass(frozen=True)
class Example:
    kind: str
    args: dict[str, str]
    blocks: tuple[tuple[str, str], ...]  # (language, body)
    line: int

    @property
    def id(self) -> str:
        return f"line{self.line}-" + "-".join(self.args.values() or [self.kind])


def _examples() -> list[Example]:
    out = []
    for m in _MARKER.finditer(TEXT):
        blocks = []
        pos = m.end()
        while (fence := _FENCE.match(TEXT, pos)) is not None:
            blocks.append((fence["lang"], fence["body"]))
            pos = fence.end()
        args = dict(a.split("=", 1) for a in m["args"].split())
        out.append(Example(m["kind"], args, tuple(blocks), TEXT.count("\n", 0, m.start()) + 1))
    return out


EXAMPLES = _examples()
LOADS = [e for e in EXAMPLES if e.kind == "loads"]
ERRORS = [e for e in EXAMPLES if e.kind == "error"]


def _one(kind: str, **args: str) -> str:
    found = [e for e in EXAMPLES if e.kind == kind and all(e.args.get(k) == v for k, v in args.items())]
    assert len(found) == 1, f"expected one '{kind}' example with {args} in {DOC}"
    ((lang, body),) = found[0].blocks
    assert lang == "yaml"
    return body


def _load(tmp_path: Path, yaml_text: str) -> Topology:
    path = tmp_path / FILE
    path.write_text(yaml_text + "\n", encoding="utf-8")
    return load_topology(path)


def _error(tmp_path: Path, yaml_text: str) -> str:
    with pytest.raises(TopologyError) as info:
        _load(tmp_path, yaml_text)
    return str(info.value).replace(str(tmp_path / FILE), FILE)


def test_the_doc_has_the_examples_this_test_relies_on() -> None:
    # Guards against a marker typo silently turning the checks below into no-ops.
    assert {e.args.get("name") for e in LOADS} == {"annotated", "bookinfo"}
    assert len(ERRORS) >= 15
    kinds = {e.kind for e in EXAMPLES}
    assert kinds == {"loads", "error", "policies", "packaged-default"}
    assert TEXT.count("<!-- topology:") == len(EXAMPLES)


@pytest.mark.parametrize("example", LOADS, ids=lambda e: e.id)
def test_example_loads_with_the_real_loader(example: Example, tmp_path: Path) -> None:
    ((lang, body),) = example.blocks
    assert lang == "yaml"
    topo = _load(tmp_path, body)
    assert topo.services


@pytest.mark.parametrize("example", ERRORS, ids=lambda e: e.id)
def test_error_example_gives_exactly_the_documented_message(example: Example, tmp_path: Path) -> None:
    assert [lang for lang, _ in example.blocks] == ["yaml", "text"], f"{DOC}:{example.line}"
    (_, bad), (_, message) = example.blocks
    assert _error(tmp_path, bad) == message


def test_annotated_example_means_what_its_comments_say(tmp_path: Path) -> None:
    topo = _load(tmp_path, _one("loads", name="annotated"))
    orders, payments, catalog = topo.services
    assert (orders.name, orders.namespace, orders.port) == ("orders", "shop", 8084)
    assert [(v.name, v.replicas) for v in orders.versions] == [("v1", 3), ("v2", 1)]
    assert orders.instance_labels(orders.versions[1]) == {"app": "orders", "version": "v2", "track": "canary"}
    # "no port: 8080; no versions: one version v1 with 1 replica", in its own namespace
    assert (payments.namespace, payments.port) == ("billing", 8080)
    assert [(v.name, v.replicas, v.labels) for v in payments.versions] == [("v1", 1, {})]
    assert [(v.name, v.replicas) for v in catalog.versions] == [("v1", 2)]
    assert (catalog.namespace, catalog.port) == ("shop", 8080)
    assert [(r.prefix, r.service) for r in topo.gateway_routes] == [
        ("/api/orders", "orders"),
        ("/api/payments", "payments"),
    ]
    # "This runs 3 + 1 instances of orders, 1 of payments and 2 of catalog"
    assert [s.replicas for s in topo.services] == [4, 1, 2]
    # "a subset {version: v2} and a subset {track: canary} both select orders v2"
    for subset in ({"version": "v2"}, {"track": "canary"}):
        chosen = [v.name for v in orders.versions if subset.items() <= orders.instance_labels(v).items()]
        assert chosen == ["v2"]


def test_documented_defaults_hold() -> None:
    topo = parse_topology({"services": [{"name": "orders"}]})
    (svc,) = topo.services
    assert (svc.namespace, svc.port) == ("default", 8080)
    assert [(v.name, v.replicas, v.labels) for v in svc.versions] == [("v1", 1, {})]
    assert topo.gateway_routes == ()
    assert parse_topology({"services": [{"name": "a"}], "gateway": {"routes": None}}).gateway_routes == ()
    # labels override the automatic app/version labels
    labelled = parse_topology({"services": [{"name": "a", "versions": [{"name": "v1", "labels": {"version": "s"}}]}]})
    a = labelled.services[0]
    assert a.instance_labels(a.versions[0]) == {"app": "a", "version": "s"}


@pytest.mark.parametrize(
    ("section", "provoke"),
    [
        ("### Top level", {"services": [{"name": "a"}], "bogus": 1}),
        ("### `services[]`", {"services": [{"name": "a", "bogus": 1}]}),
        ("### `services[].versions[]`", {"services": [{"name": "a", "versions": [{"name": "v1", "bogus": 1}]}]}),
    ],
)
def test_key_tables_list_exactly_the_keys_the_loader_allows(section: str, provoke: dict[str, object]) -> None:
    with pytest.raises(TopologyError, match="allowed: ") as info:
        parse_topology(provoke)
    allowed = set(str(info.value).split("allowed: ")[1].split(", "))
    body = TEXT.split(section + "\n", 1)[1].split("\n#", 1)[0]
    documented = set(re.findall(r"^\| `([a-z]+)` \|", body, re.M))
    assert documented == allowed


def test_gateway_table_lists_the_route_keys() -> None:
    body = TEXT.split("### `gateway`\n", 1)[1].split("\n#", 1)[0]
    assert set(re.findall(r"^\| `([a-z.\[\]]+)` \|", body, re.M)) == {"routes", "routes[].prefix", "routes[].service"}
    with pytest.raises(TopologyError, match="expected exactly the fields prefix and service"):
        parse_topology({"services": [{"name": "a"}], "gateway": {"routes": [{"prefix": "/a", "service": "a", "x": 1}]}})


def test_bookinfo_example_is_bookinfo(tmp_path: Path) -> None:
    topo = _load(tmp_path, _one("loads", name="bookinfo"))
    assert [s.name for s in topo.services] == ["productpage", "details", "reviews", "ratings"]
    assert {s.namespace for s in topo.services} == {"bookinfo"}
    assert {s.port for s in topo.services} == {9080}
    reviews = topo.service("reviews")
    assert [(v.name, v.replicas) for v in reviews.versions] == [("v1", 2), ("v2", 1), ("v3", 1)]
    assert {r.service for r in topo.gateway_routes} == {"productpage"}
    # The doc quotes what a shipped scenario gets with this topology.
    with pytest.raises(TopologyError) as info:
        topo.service("order-service")
    assert str(info.value).replace(str(tmp_path / FILE), "bookinfo.yaml") == (
        "unknown service 'order-service' in topology bookinfo.yaml; known services: "
        "productpage, details, reviews, ratings"
    )


def test_bookinfo_policies_fit_and_split_as_the_doc_says(tmp_path: Path) -> None:
    topo = _load(tmp_path, _one("loads", name="bookinfo"))
    policies = load_policy_text(_one("policies", **{"for": "bookinfo"}))
    assert check_policies_fit(policies, topo) == []
    pred = predict_routing(policies, topo, "reviews")
    assert pred.instances == pytest.approx({"reviews-v1-0": 0.25, "reviews-v1-1": 0.25, "reviews-v3-0": 0.5})


def test_packaged_default_is_quoted_verbatim() -> None:
    assert _one("packaged-default") + "\n" == default_topology_path().read_text(encoding="utf-8")


def test_the_other_documented_errors(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as info:
        load_topology(tmp_path / "nope.yaml")
    assert str(info.value).replace(str(tmp_path / "nope.yaml"), "nope.yaml") in TEXT.replace("\n  ", " ")
    message = _error(tmp_path, "services:\n\t- name: a")
    assert message.startswith(f"{FILE}: not valid YAML: while scanning for the next token\n")
    assert "found character '\\t' that cannot start any token" in message
    assert "found character '\\t' that cannot start any token" in TEXT


def test_documented_fit_error_is_the_real_one(tmp_path: Path) -> None:
    topo = _load(tmp_path, _one("loads", name="bookinfo"))
    bad = (
        _one("policies", **{"for": "bookinfo"})
        .split("---")[0]
        .replace("{name: v2, labels: {version: v2}}", "{name: v4, labels: {version: v4}}")
    )
    with pytest.raises(TopologyError) as info:
        check_policies_fit(load_policy_text(bad), topo)
    real = str(info.value)
    flat = TEXT.replace("\n  ", " ")
    quoted = flat.split("is refused: `... ", 1)[1].split("`", 1)[0]
    head, tail = quoted.split("; ...);")
    assert head in real
    assert tail in real
