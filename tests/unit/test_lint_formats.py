"""Lint output formats: text grouped by file, JSON, and SARIF 2.1.0 validated against the vendored schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pytest_meshcheck.cli import platform_policies_dir
from pytest_meshcheck.lint import RULES, lint_paths
from pytest_meshcheck.lint.formats import render_json, render_sarif, render_text
from pytest_meshcheck.lint.run import LintResult

SCHEMA = Path(__file__).resolve().parents[1] / "data" / "sarif" / "sarif-2.1.0-rtm.5.json"


@pytest.fixture(scope="module")
def platform() -> LintResult:
    return lint_paths([platform_policies_dir()])


@pytest.fixture
def broken(tmp_path: Path) -> LintResult:
    (tmp_path / "bad.yaml").write_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\n  oops: [\n")
    (tmp_path / "nolines.yaml").write_bytes(b"\xff\xfe")
    return lint_paths([tmp_path])


def validate_sarif(doc: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft4Validator.check_schema(schema)
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    validator.validate(doc)


def test_sarif_is_valid_against_the_sarif_2_1_0_schema(platform: LintResult, broken: LintResult) -> None:
    for result in (platform, broken):
        validate_sarif(json.loads(render_sarif(result)))


def test_schema_rejects_an_invalid_log() -> None:
    # Proves the validation is not vacuous: a result without a message is not SARIF.
    doc = json.loads(render_sarif(lint_paths([platform_policies_dir()])))
    del doc["runs"][0]["results"][0]["message"]
    with pytest.raises(jsonschema.ValidationError):
        validate_sarif(doc)


def test_sarif_meets_github_code_scanning_needs(platform: LintResult, broken: LintResult) -> None:
    for result in (platform, broken):
        run = json.loads(render_sarif(result))["runs"][0]
        rules = run["tool"]["driver"]["rules"]
        assert [r["id"] for r in rules] == list(RULES)
        for res in run["results"]:
            assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
            loc = res["locations"][0]["physicalLocation"]
            assert loc["region"]["startLine"] >= 1  # code scanning rejects results without a line
            assert not loc["artifactLocation"]["uri"].startswith("/")
            assert res["level"] in ("error", "warning", "note")
            assert res["partialFingerprints"]
    levels = {r["id"]: r["defaultConfiguration"]["level"] for r in rules}
    assert levels["MC120"] == "error"
    assert levels["MC103"] == "warning"


def test_sarif_results_match_findings(platform: LintResult) -> None:
    results = json.loads(render_sarif(platform))["runs"][0]["results"]
    assert [(r["ruleId"], r["locations"][0]["physicalLocation"]["region"]["startLine"]) for r in results] == [
        (f.code, f.line) for f in platform.findings
    ]


def test_json_lists_findings_with_rule_metadata(platform: LintResult) -> None:
    doc = json.loads(render_json(platform))
    assert doc["summary"] == {"note": 0, "warning": 9, "error": 0}
    first = doc["findings"][0]
    assert first["code"] == "MC121"
    assert first["line"] == 20
    assert first["issue"] == "https://github.com/istio/istio/issues/8846"
    assert first["scenario"].startswith("scenarios/test_platform_policies.py::")
    assert first["fix"]
    assert first["istio_versions"] == ">=1.7"


def test_text_groups_findings_by_file(platform: LintResult) -> None:
    text = render_text(platform)
    lines = text.splitlines()
    headers = [line for line in lines if line and not line.startswith(" ")][:-1]
    assert [Path(h).name for h in headers] == ["circuit-breaker.yaml", "retry-timeout.yaml"]
    assert "  20: warning MC121 " in text
    assert "fix: " in text
    assert lines[-1].startswith("9 finding(s): 0 error, 9 warning, 0 note")


def test_invalid_files_render_in_every_format(broken: LintResult) -> None:
    assert {f.code for f in broken.findings} == {"MC001"}
    assert "bad.yaml" in render_text(broken)
    assert json.loads(render_json(broken))["summary"]["error"] == len(broken.findings)
