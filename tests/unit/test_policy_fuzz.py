"""Fuzz the loader: whatever it is given, it returns a PolicySet or raises PolicyError, nothing else."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_meshcheck.errors import PolicyError
from pytest_meshcheck.policy import PolicySet, load_policy_text, parse_policy_documents, schema

DATA = Path(__file__).parent.parent / "data" / "policies"
BASE_TEXTS = [p.read_text() for p in sorted((DATA / "full").glob("*.yaml")) + sorted((DATA / "user").glob("*.yaml"))]
BASE_DOCS = [yaml.safe_load(t) for t in BASE_TEXTS]
FIELD_NAMES = sorted(set().union(*schema.CRD_FIELDS.values(), *schema.K8S_FIELDS.values()))
INTERESTING = [
    "1s", "0s", "-1ms", "1.5us", "1d", "5xx,reset", "5xx, reset", "v1", "*", "UPGRADE", "LEAST_CONN", "mesh",
    "order-service", "networking.istio.io/v1", "VirtualService", "DestinationRule", "(", "a/b", "",
]  # fmt: skip

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([10**400, -(10**400)]),  # too large for a float
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(INTERESTING),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)), inner, max_size=4),
    ),
    max_leaves=12,
)


def check(load: Any, *args: Any) -> None:
    """``load(*args)`` returns a PolicySet or raises a well-formed PolicyError; any other exception fails."""
    error: PolicyError | None = None
    try:
        result = load(*args)
    except PolicyError as err:
        error = err
    if error is None:
        assert isinstance(result, PolicySet)
        return
    assert error.issues
    assert all(isinstance(i.path, str) and i.path and isinstance(i.document, int) for i in error.issues)
    assert str(error)


def _slots(node: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) pair in ``node``, so a mutation can target any value."""
    out: list[tuple[Any, Any]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((node, k))
            out.extend(_slots(v))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append((node, i))
            out.extend(_slots(v))
    return out


@st.composite
def mutated_policies(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(BASE_DOCS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        container, key = draw(st.sampled_from(_slots(doc)))
        action = draw(st.sampled_from(["replace", "delete", "insert"]))
        if action == "replace":
            container[key] = draw(values)
        elif action == "delete":
            del container[key]
        elif isinstance(container[key], dict):
            container[key][draw(st.sampled_from(FIELD_NAMES))] = draw(values)
        elif isinstance(container[key], list):
            container[key].append(draw(values))
        if not _slots(doc):
            break
    return doc


@SETTINGS
@given(st.text(max_size=400))
def test_arbitrary_text(text: str) -> None:
    check(load_policy_text, text)


@SETTINGS
@given(st.sampled_from(BASE_TEXTS), st.integers(min_value=0, max_value=2000), st.text(max_size=6))
def test_valid_yaml_with_characters_spliced_in(text: str, at: int, insert: str) -> None:
    at %= len(text) + 1
    check(load_policy_text, text[:at] + insert + text[at:])


@SETTINGS
@given(st.lists(values, max_size=3))
def test_arbitrary_yaml_structures(docs: list[Any]) -> None:
    check(load_policy_text, yaml.safe_dump_all(docs))
    check(parse_policy_documents, docs)


@SETTINGS
@given(st.lists(mutated_policies(), min_size=1, max_size=2))
def test_mutated_valid_policies(docs: list[Any]) -> None:
    check(load_policy_text, yaml.safe_dump_all(docs, sort_keys=False))
    check(parse_policy_documents, docs)
