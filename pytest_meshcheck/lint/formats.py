"""Render a :class:`LintResult` as human text (grouped by file), JSON, or SARIF 2.1.0 for code scanning."""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import groupby
from pathlib import Path
from typing import Any

from pytest_meshcheck.lint.finding import Finding, Rule, Severity
from pytest_meshcheck.lint.rules import RULES
from pytest_meshcheck.lint.run import LintResult

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL_URI = "https://github.com/pytest-meshcheck/pytest-meshcheck"
_SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "note"}


def render_text(result: LintResult) -> str:
    """Findings grouped by file, one line each with the fix, then a summary line."""
    lines: list[str] = []
    for file, group in groupby(result.findings, key=lambda f: f.file):
        lines.append(file)
        for f in group:
            lines.append(f"  {f.line or 1}: {f.level} {f.code} {f.message}")
            lines.append(f"      fix: {f.rule.fix}")
            if f.rule.issue:
                lines.append(f"      see: {f.rule.issue}")
        lines.append("")
    lines.extend(result.notes)
    counts = {s: sum(1 for f in result.findings if f.level == s) for s in Severity}
    lines.append(
        f"{len(result.findings)} finding(s): {counts[Severity.ERROR]} error, {counts[Severity.WARNING]} warning, "
        f"{counts[Severity.NOTE]} note; {result.policies} polic(ies) in {len(result.files)} file(s); "
        f"Istio {result.istio}, topology {result.topology}"
    )
    return "\n".join(lines) + "\n"


def _rule_json(rule: Rule) -> dict[str, Any]:
    return {
        "code": rule.code,
        "name": rule.name,
        "severity": str(rule.severity),
        "summary": rule.summary,
        "why": rule.why,
        "fix": rule.fix,
        "istio_versions": rule.versions,
        "issue": rule.issue,
        "scenario": rule.scenario,
    }


def render_json(result: LintResult) -> str:
    """A stable JSON document: findings (with their rule's code, fix, versions, issue, scenario) and a summary."""
    doc = {
        "version": 1,
        "istio": str(result.istio),
        "topology": result.topology,
        "files": result.files,
        "policies": result.policies,
        "notes": result.notes,
        "findings": [
            {
                "code": f.code,
                "severity": str(f.level),
                "message": f.message,
                "file": f.file,
                "line": f.line,
                "path": f.path,
                "resource": f.resource,
                "fix": f.rule.fix,
                "istio_versions": f.rule.versions,
                "issue": f.rule.issue,
                "scenario": f.rule.scenario,
            }
            for f in result.findings
        ],
        "summary": {str(s): sum(1 for f in result.findings if f.level == s) for s in Severity},
    }
    return json.dumps(doc, indent=2) + "\n"


def _uri(file: str) -> str:
    # Code scanning resolves relative URIs against the checkout root; absolute paths become file:// URIs.
    path = Path(file)
    if path.is_absolute():
        try:
            return path.relative_to(Path.cwd()).as_posix()
        except ValueError:
            return path.as_uri()
    return path.as_posix()


def _sarif_rule(rule: Rule) -> dict[str, Any]:
    help_lines = [rule.why, f"Fix: {rule.fix}", f"Istio versions: {rule.versions}."]
    if rule.issue:
        help_lines.append(f"Upstream issue: {rule.issue}")
    if rule.scenario:
        help_lines.append(f"Scenario: {rule.scenario}")
    out: dict[str, Any] = {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": rule.why},
        "help": {"text": "\n".join(help_lines)},
        "defaultConfiguration": {"level": _SARIF_LEVEL[rule.severity]},
        "properties": {"tags": ["istio", "resilience"], "istioVersions": rule.versions},
    }
    if rule.issue:
        out["helpUri"] = rule.issue
    return out


def _sarif_result(f: Finding, index: dict[str, int]) -> dict[str, Any]:
    return {
        "ruleId": f.code,
        "ruleIndex": index[f.code],
        "level": _SARIF_LEVEL[f.level],
        "message": {"text": f"{f.message}. Fix: {f.rule.fix}"},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": _uri(f.file)},
                    "region": {"startLine": f.line or 1},
                },
                **({"logicalLocations": [{"fullyQualifiedName": f"{f.resource}:{f.path}"}]} if f.resource else {}),
            }
        ],
        "partialFingerprints": {"meshcheckFinding/v1": f"{f.code}:{f.resource}:{f.path}"},
    }


def render_sarif(result: LintResult) -> str:
    """SARIF 2.1.0 with every rule in the driver, as GitHub code scanning accepts it."""
    rules = list(RULES.values())
    index = {r.code: i for i, r in enumerate(rules)}
    doc = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "meshcheck-lint",
                        "informationUri": TOOL_URI,
                        "rules": [_sarif_rule(r) for r in rules],
                    }
                },
                "results": [_sarif_result(f, index) for f in result.findings],
                "properties": {"istio": str(result.istio), "topology": result.topology, "notes": result.notes},
            }
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


FORMATS: dict[str, Callable[[LintResult], str]] = {"text": render_text, "json": render_json, "sarif": render_sarif}
