"""The report's lint findings: what ``meshcheck lint`` says about the policies a scenario ran.

A scenario verifies a claim on a live mesh; lint says, without running anything, which resilience mistakes
the same policies contain. Both on one page tell a reader whether a failed claim was a known mistake.

The findings are judged with the run's topology and Istio version, and stored in the scenario record as
JSON-native data (``ScenarioRecord.lint_findings``), so a record from CI renders the same. Shape of one
stored finding::

    {"code": "MC103", "name": "...", "severity": "warning", "message": "...", "file": ".../retry-timeout.yaml",
     "line": 24, "path": "spec.http[0].timeout", "resource": "VirtualService ns/name", "fix": "...",
     "issue": "https://github.com/istio/istio/issues/..."}

A lint crash is stored as one entry with an empty ``code`` whose message starts with
:data:`LINT_FAILED`: the scenario's verdict never depends on lint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pytest_meshcheck.policy.model import DestinationRule, PolicySet, VirtualService

if TYPE_CHECKING:
    from pytest_meshcheck.istio_version import IstioVersion
    from pytest_meshcheck.lint.finding import Finding
    from pytest_meshcheck.topology import Topology

#: How a stored entry says that lint itself failed (not a finding about the policies).
LINT_FAILED = "lint could not run"
#: Worst first, for the section's summary line.
_SEVERITY_ORDER = ("error", "warning", "note")


def states_in_force(applied: Sequence[PolicySet]) -> list[PolicySet]:
    """The policies in force after each apply, as the mesh keeps them.

    Each apply adds resources or replaces the same-named one (kind, namespace, name), later ones winning, also
    within one set (a set built with ``PolicySet.merged`` may name a resource twice). Linting every state, not
    only the last, keeps the findings of policies the scenario ran and then replaced; linting each state whole
    keeps cross-resource rules right (a VirtualService's subsets are defined by a DestinationRule applied
    before it).
    """
    store: dict[tuple[str, str, str], VirtualService | DestinationRule] = {}
    states: list[PolicySet] = []
    for ps in applied:
        resources: tuple[VirtualService | DestinationRule, ...] = (*ps.virtual_services, *ps.destination_rules)
        for p in resources:
            store[(p.kind, p.namespace or "", p.name)] = p
        items = list(store.values())
        states.append(
            PolicySet(
                tuple(p for p in items if isinstance(p, VirtualService)),
                tuple(p for p in items if isinstance(p, DestinationRule)),
            )
        )
    return states


def finding_dict(finding: Finding) -> dict[str, Any]:
    """One finding as the record stores it."""
    return {
        "code": finding.code,
        "name": finding.rule.name,
        "severity": str(finding.level),
        "message": finding.message,
        "file": finding.file,
        "line": finding.line,
        "path": finding.path,
        "resource": finding.resource,
        "fix": finding.rule.fix,
        "issue": finding.rule.issue,
    }


def lint_failure(exc: BaseException) -> dict[str, Any]:
    """The one entry stored when lint raised: it names the error and where to see the findings instead."""
    return {
        "code": "",
        "name": "",
        "severity": "",
        "message": f"{LINT_FAILED}: {type(exc).__name__}: {exc}",
        "file": "",
        "line": None,
        "path": "",
        "resource": "",
        "fix": "run `meshcheck lint` on the policy files to see their findings, and report this error",
        "issue": "",
    }


def scenario_lint_findings(
    applied: Sequence[PolicySet], topology: Topology, istio: IstioVersion
) -> list[dict[str, Any]]:
    """Lint findings of every policy set a scenario applied, as stored in its record.

    Args:
        applied: ``MeshPolicies.applied``: the sets in the order they were applied.
        topology: The run's topology (``mesh.topology``).
        istio: The run's Istio version (``mesh.istio_version``).

    Returns:
        The findings of every state the scenario ran (see :func:`states_in_force`), each once, in lint's order
        (file, line, code, message); or one :data:`LINT_FAILED` entry when lint raised.
    """
    try:
        # Imported here so that importing the harness does not load the linter, and so that a linter that
        # cannot even be imported is reported like any other lint failure.
        from pytest_meshcheck.lint.finding import Finding
        from pytest_meshcheck.lint.run import lint_policies

        found: dict[tuple[str, str, int | None, str, str], Finding] = {}
        for state in states_in_force(applied):
            for f in lint_policies(state, topology, istio):
                found.setdefault((f.code, f.file, f.line, f.path, f.message), f)
        return [finding_dict(f) for f in sorted(found.values(), key=Finding.sort_key)]
    # Lint is evidence beside the verdict, never part of it: whatever it raises is reported on the page instead
    # of failing a scenario whose claim was verified.
    except Exception as exc:
        return [lint_failure(exc)]


def lint_section(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the report's lint section shows: finding rows, lint failures and a summary line."""
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for e in entries:
        if not e.get("code"):
            failures.append(str(e.get("message", LINT_FAILED)))
            continue
        file, line = str(e.get("file", "")), e.get("line")
        rows.append(
            {
                "code": e["code"],
                "name": e.get("name", ""),
                "severity": e.get("severity", ""),
                "message": e.get("message", ""),
                "where": f"{file}:{line}" if line is not None else file,
                "resource": e.get("resource", ""),
                "path": e.get("path", ""),
                "fix": e.get("fix", ""),
                "issue": e.get("issue", ""),
            }
        )
    counts = [(s, sum(1 for r in rows if r["severity"] == s)) for s in _SEVERITY_ORDER]
    summary = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts if n)
    return {"rows": rows, "failures": failures, "summary": summary}
