"""istiod's own translation tests, run through our loader and translator.

Each ``translation/*.yaml`` file ports one Go test function of istio/istio ``pilot/pkg/networking/core`` (see
``NOTICE``). A case gives the policies as Istio YAML (``http`` routes of a VirtualService for the service
``example``, and/or a DestinationRule ``spec``), the Envoy object Istio's test inspects (``subject``), and what
Istio's test asserts about it, field by field:

* ``equals``: ``{path: value}``; the field must be present and equal. An expected empty list also matches a
  missing field, because repeated proto3 fields have no presence (Go's ``[]uint32{}`` and ``nil`` serialise
  alike).
* ``exactly``: the whole subject (or ``{path: value}``) must equal the value, as Go's ``Equal`` on a message.
* ``absent``: ``[path, ...]``; unset: missing, ``None``, or a proto3 zero value (``[]``, ``False``), which
  Go's getters return for an unset field too.
* ``count``: ``{path: n}``; a list of that length.

Some Go tests build routes from structs that never went through admission, with values Istio's webhook or
CRD (and our loader) refuse: ``retryOn: some,fake,conditions``, ``timeout: 0s``, a header ``regex: "*"``. Such a
case loads an admitted stand-in and lists the real value under ``unadmitted``: ``{model path: value}``, put on
the loaded VirtualService afterwards (``http.0.retries.retry_on``, ``http.0.match.0.headers.x.value``), so
only the translation sees it, as in Go. A case marked ``known_difference`` is one we do not translate as
istiod does; ``ours: refused`` states our answer (the loader refuses it, naming the field), and the case is
held to it (documented in docs/explanation/known-limitations.md).

Paths are ``/``-separated keys and list indexes of the Envoy JSON (``retry_host_predicate/0/name``). The
policies are loaded from YAML text exactly as a user's file is, against Istio 1.30 (the release the ported
tests belong to), and translated by :func:`build_route_config` / :func:`build_clusters`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_meshcheck.errors import PolicyError
from pytest_meshcheck.istio_version import DEFAULT_ISTIO_VERSION, IstioVersion
from pytest_meshcheck.policy import PolicySet, load_policy_text
from pytest_meshcheck.topology import Topology, parse_topology
from pytest_meshcheck.translate import build_clusters, build_route_config
from pytest_meshcheck.translate.common import FAULT_FILTER_NAME

DATA = Path(__file__).parent / "translation"
VERSION = IstioVersion.parse(DEFAULT_ISTIO_VERSION)
NAMESPACE = "default"
SERVICE = "example"
PORT = 8080
FQDN = f"{SERVICE}.{NAMESPACE}.svc.cluster.local"
TOPOLOGY: Topology = parse_topology(
    {
        "namespace": NAMESPACE,
        "services": [{"name": SERVICE, "port": PORT, "versions": [{"name": "v1", "replicas": 1}]}],
    },
    source="test_translation_conformance.py",
)
ENDPOINTS = {(SERVICE, "v1"): [("127.0.0.1", 20000)]}
_MISSING = object()


@dataclass(frozen=True)
class Case:
    """One ported table case."""

    file: str
    function: str
    name: str
    policies: str
    subject: str
    equals: dict[str, Any]
    exactly: Any
    absent: list[str]
    count: dict[str, int]
    unadmitted: dict[str, Any]
    known_difference: str | None
    ours: str | None


def _documents(entry: dict[str, Any]) -> str:
    docs: list[dict[str, Any]] = []
    if "http" in entry:
        http = copy.deepcopy(entry["http"])
        for rule in http:
            rule.setdefault("route", [{"destination": {"host": SERVICE}}])
        docs.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": "conformance", "namespace": NAMESPACE},
                "spec": {"hosts": [SERVICE], "http": http},
            }
        )
    if "destination_rule" in entry:
        docs.append(
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": "conformance", "namespace": NAMESPACE},
                "spec": {"host": SERVICE, **copy.deepcopy(entry["destination_rule"])},
            }
        )
    return yaml.safe_dump_all(docs, sort_keys=False)


def _cases() -> list[Case]:
    out: list[Case] = []
    for file in sorted(DATA.glob("*.yaml")):
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
        for entry in data["cases"]:
            out.append(
                Case(
                    file=file.name,
                    function=data["source"]["function"],
                    name=entry["name"],
                    policies=_documents(entry),
                    subject=entry.get("subject", data.get("subject", "route")),
                    equals=entry.get("equals", {}),
                    exactly=entry.get("exactly", _MISSING),
                    absent=entry.get("absent", []),
                    count=entry.get("count", {}),
                    unadmitted=entry.get("unadmitted", {}),
                    known_difference=entry.get("known_difference"),
                    ours=entry.get("ours"),
                )
            )
    return out


CASES = _cases()


def _replace(node: Any, steps: list[str], value: Any) -> Any:
    """A copy of ``node`` (frozen dataclasses, tuples, dicts) with ``value`` at ``steps``."""
    if not steps:
        return value
    head, rest = steps[0], steps[1:]
    if isinstance(node, tuple):
        index = int(head)
        return (*node[:index], _replace(node[index], rest, value), *node[index + 1 :])
    if isinstance(node, dict):
        return {**node, head: _replace(node[head], rest, value)}
    assert dataclasses.is_dataclass(node), f"cannot step into {node!r} at {head!r}"
    assert not isinstance(node, type), f"cannot step into the class {node!r}"
    return dataclasses.replace(node, **{head: _replace(getattr(node, head), rest, value)})


def _without_admission(policies: PolicySet, values: dict[str, Any]) -> PolicySet:
    """``policies`` with the first VirtualService's ``values`` put in after loading (see the module docstring)."""
    vs = policies.virtual_services[0]
    for path, value in values.items():
        vs = _replace(vs, path.split("."), value)
    return dataclasses.replace(policies, virtual_services=(vs, *policies.virtual_services[1:]))


def _subject(policies: PolicySet, subject: str) -> Any:
    """The Envoy object a case inspects: ``route``, ``routes``, ``retry_policy``, ``fault`` or ``cluster[:subset]``."""
    if subject.startswith("cluster"):
        _, _, subset = subject.partition(":")
        name = f"outbound|{PORT}|{subset}|{FQDN}"
        clusters = {c["name"]: c for c in build_clusters(policies, TOPOLOGY, ENDPOINTS, VERSION)}
        return clusters[name]
    config = build_route_config(policies, TOPOLOGY, VERSION)
    (vhost,) = [vh for vh in config["virtual_hosts"] if vh["name"] == f"{FQDN}:{PORT}"]
    routes = vhost["routes"]
    if subject == "routes":
        return routes
    route = routes[0]
    if subject == "route":
        return route
    if subject == "retry_policy":
        return route["route"].get("retry_policy")
    if subject == "fault":
        fault = route.get("typed_per_filter_config", {}).get(FAULT_FILTER_NAME)
        return None if fault is None else {k: v for k, v in fault.items() if k != "@type"}
    raise AssertionError(f"unknown subject {subject!r}")


def _get(node: Any, path: str) -> Any:
    for step in path.split("/") if path else []:
        if isinstance(node, list):
            index = int(step)
            if index >= len(node):
                return _MISSING
            node = node[index]
        elif isinstance(node, dict):
            if step not in node:
                return _MISSING
            node = node[step]
        else:
            return _MISSING
    return node


@pytest.mark.parametrize("case", CASES, ids=[f"{c.function}/{c.name}" for c in CASES])
def test_translation_agrees_with_istiod(case: Case) -> None:
    """Our translation has every field value istiod's own test asserts."""
    if case.ours == "refused":
        assert case.known_difference, "a case where we differ from istiod must say why"
        with pytest.raises(PolicyError) as raised:
            load_policy_text(case.policies, source=f"{case.file}:{case.name}")
        for issue in raised.value.issues:
            assert issue.path, f"no field path: {issue}"
            assert issue.message, f"no message: {issue}"
            assert issue.fix, f"no fix: {issue}"
        return
    policies = load_policy_text(case.policies, source=f"{case.file}:{case.name}")
    if case.unadmitted:
        policies = _without_admission(policies, case.unadmitted)
    subject = _subject(policies, case.subject)
    if case.exactly is not _MISSING:
        assert subject == case.exactly
    for path, expected in case.equals.items():
        actual = _get(subject, path)
        if expected == [] and actual is _MISSING:
            continue
        assert actual is not _MISSING, f"{path}: missing, istiod sets {expected!r}\nsubject: {subject}"
        assert actual == expected, f"{path}: {actual!r}, istiod gives {expected!r}"
    for path in case.absent:
        actual = _get(subject, path)
        assert actual is _MISSING or actual in (None, [], False), f"{path}: {actual!r}, istiod leaves it unset"
    for path, n in case.count.items():
        actual = _get(subject, path)
        assert isinstance(actual, list), f"{path}: {actual!r} is not a list"
        assert len(actual) == n, f"{path}: {len(actual)} entries, istiod gives {n}: {actual}"


def test_every_source_function_is_named() -> None:
    """Each data file names the Go file, commit and function it ports, and every case has a name."""
    for file in sorted(DATA.glob("*.yaml")):
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
        source = data["source"]
        assert source["file"].startswith("pilot/pkg/networking/core/"), file.name
        assert len(source["commit"]) == 40, file.name
        assert source["function"].startswith("Test"), file.name
        names = [c["name"] for c in data["cases"]]
        assert len(names) == len(set(names)), f"{file.name}: duplicate case names"
