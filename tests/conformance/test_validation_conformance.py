"""Istio's own validation table tests, run through our loader.

Each ``validation/*.yaml`` file ports one Go test function of istio/istio ``pkg/config/validation`` (see
``NOTICE``): a template document, the path where each case's input goes, and Istio's verdict. Every case
is loaded from YAML text exactly as a user's file is (:func:`load_policy_text`) and must get Istio's
verdict: ``valid`` loads without error, ``invalid`` is refused with an issue that names the field and the
fix, ``warning`` loads with at least one warning. A case marked ``known_difference`` states our own,
stricter verdict in ``ours`` (documented in docs/explanation/known-limitations.md), and is held to it.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_meshcheck.errors import PolicyError
from pytest_meshcheck.policy import PolicySet, load_policy_text

DATA = Path(__file__).parent / "validation"
VERDICTS = ("valid", "invalid", "warning")
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Case:
    """One ported table case."""

    file: str
    function: str
    name: str
    document: dict[str, Any]
    istio: str
    ours: str
    known_difference: str | None
    warning_contains: str | None


def _steps(path: str) -> list[str | int]:
    return [key if key else int(index) for key, index in _STEP.findall(path)]


def _place(document: dict[str, Any], path: str, value: Any, as_key: Any) -> None:
    """Put ``value`` at ``path`` (``spec.http[0].retries``); with ``as_key``, ``value`` is a mapping key."""
    steps = _steps(path)
    node: Any = document
    for step in steps[:-1]:
        node = node[step]
    last = steps[-1]
    if as_key is not None:
        node[last][value] = as_key
    elif isinstance(last, int) and last == len(node):
        node.append(value)
    else:
        node[last] = value


def _cases() -> list[Case]:
    out: list[Case] = []
    for file in sorted(DATA.glob("*.yaml")):
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
        template = data["template"]
        for entry in data["cases"]:
            document = {
                "apiVersion": "networking.istio.io/v1",
                "kind": template["kind"],
                "metadata": {"name": "conformance", "namespace": "default"},
                "spec": copy.deepcopy(template["spec"]),
            }
            _place(document, template["at"], copy.deepcopy(entry["input"]), template.get("as_key"))
            difference = entry.get("known_difference")
            out.append(
                Case(
                    file=file.name,
                    function=data["source"]["function"],
                    name=entry["name"],
                    document=document,
                    istio=entry["verdict"],
                    ours=entry.get("ours", entry["verdict"]),
                    known_difference=difference,
                    warning_contains=entry.get("warning_contains"),
                )
            )
    return out


CASES = _cases()


def _load(case: Case) -> PolicySet:
    return load_policy_text(yaml.safe_dump(case.document, sort_keys=False), source=f"{case.file}:{case.name}")


@pytest.mark.parametrize("case", CASES, ids=[f"{c.function}/{c.name}" for c in CASES])
def test_loader_agrees_with_istio(case: Case) -> None:
    """The loader gives Istio's verdict (or, for a documented known difference, our stated one)."""
    if case.ours == "invalid":
        with pytest.raises(PolicyError) as raised:
            _load(case)
        for issue in raised.value.issues:
            assert issue.path, f"no field path: {issue}"
            assert issue.message, f"no message: {issue}"
            assert issue.fix, f"no fix: {issue}"
        return
    try:
        policies = _load(case)
    except PolicyError as exc:
        pytest.fail(f"Istio says {case.istio}, but the loader refused it:\n{exc}")
    messages = [w.message for w in policies.warnings]
    if case.ours == "warning":
        assert messages, "Istio warns about this, but the loader gave no warning"
        if case.warning_contains:
            assert any(case.warning_contains in m for m in messages), messages


def test_every_case_is_well_formed() -> None:
    """Verdicts are known words, and a known difference always says what we do instead, and why."""
    assert len(CASES) > 100
    for case in CASES:
        assert case.istio in VERDICTS, case
        assert case.ours in VERDICTS, case
        assert (case.known_difference is None) == (case.ours == case.istio), case
