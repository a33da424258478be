"""Scenario reports list the lint findings of the policies they ran: computed, stored, rendered."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from test_lint_rules import EXPECTED_PLATFORM, corrected_platform
from test_report_samples import Tags, passing_record, remote_references

from pytest_meshcheck.cli import platform_policies_dir
from pytest_meshcheck.istio_version import parse_istio_version
from pytest_meshcheck.lint import LintOptions, lint_paths
from pytest_meshcheck.policy import PolicySet, load_policies, load_policy_text
from pytest_meshcheck.report.lint_view import LINT_FAILED, lint_section, scenario_lint_findings, states_in_force
from pytest_meshcheck.report.record import ScenarioRecord
from pytest_meshcheck.report.render import render_scenario, rerender, write_scenario_report
from pytest_meshcheck.topology import Topology, load_topology

ISTIO = parse_istio_version(None)

CATALOG_DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: catalog, namespace: platform-core}
spec:
  host: catalog-service
  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3, maxEjectionPercent: 20}}
"""
CATALOG_VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog, namespace: platform-core}
spec:
  hosts: [catalog-service]
  http:
  - route:
    - destination: {host: catalog-service}
"""


def platform() -> PolicySet:
    return load_policies(platform_policies_dir())


def platform_findings() -> list[dict[str, Any]]:
    return scenario_lint_findings([platform()], load_topology(None), ISTIO)


def located(findings: list[dict[str, Any]]) -> list[tuple[str, int | None, str]]:
    return [(Path(f["file"]).name, f["line"], f["code"]) for f in findings]


# ------------------------------------------------------------------------------------------- lint_view


def test_platform_policies_as_written_give_what_meshcheck_lint_gives() -> None:
    found = platform_findings()
    assert located(found) == EXPECTED_PLATFORM
    by_file = lint_paths([platform_policies_dir()]).findings
    assert [(f["code"], f["message"], f["file"], f["line"], f["path"], f["resource"]) for f in found] == [
        (f.code, f.message, f.file, f.line, f.path, f.resource) for f in by_file
    ]
    assert [(f["severity"], f["fix"], f["issue"], f["name"]) for f in found] == [
        (str(f.level), f.rule.fix, f.rule.issue, f.rule.name) for f in by_file
    ]
    assert all(f["issue"].startswith("https://github.com/") for f in found)


def test_corrected_platform_gives_zero_findings(tmp_path: Path) -> None:
    corrected = load_policies(corrected_platform(tmp_path))
    assert scenario_lint_findings([corrected], load_topology(None), ISTIO) == []


def test_every_state_the_scenario_ran_is_linted_and_replaced_resources_are_not(tmp_path: Path) -> None:
    corrected = load_policies(corrected_platform(tmp_path))
    # Applied as written, then corrected: the first state ran, so its findings stay.
    assert located(scenario_lint_findings([platform(), corrected], load_topology(None), ISTIO)) == EXPECTED_PLATFORM
    # One set naming every resource twice (PolicySet.merged): the mesh keeps the later ones, and so does lint.
    merged = platform().merged(corrected)
    assert len(states_in_force([merged])[0]) == len(platform())
    assert scenario_lint_findings([merged], load_topology(None), ISTIO) == []


def test_a_virtual_service_is_judged_with_the_destination_rule_applied_before_it() -> None:
    dr = load_policy_text(CATALOG_DR, source="<dr>")
    vs = load_policy_text(CATALOG_VS, source="<vs>")
    states = states_in_force([dr, vs])
    assert [(len(s.virtual_services), len(s.destination_rules)) for s in states] == [(0, 1), (1, 1)]
    # The DestinationRule's finding is reported once, though both states hold it.
    assert [f["code"] for f in scenario_lint_findings([dr, vs], load_topology(None), ISTIO)].count("MC120") == 1


def test_findings_follow_the_runs_topology_and_istio_version() -> None:
    dr = load_policy_text(CATALOG_DR, source="<dr>")
    vs = load_policy_text(CATALOG_VS, source="<vs>")
    topology = load_topology(None)
    assert located(scenario_lint_findings([dr], topology, ISTIO)) == [("<dr>", 6, "MC120")]
    # maxEjectionPercent 20 can eject one of 5 catalog pods: no finding on a topology with 5 replicas.
    catalog = topology.service("catalog-service")
    five = dataclasses.replace(catalog, versions=(dataclasses.replace(catalog.versions[0], replicas=5),))
    bigger = Topology(tuple(five if s is catalog else s for s in topology.services), "<five catalogs>")
    assert scenario_lint_findings([dr], bigger, ISTIO) == []
    # Istio's default retry conditions stopped retrying 503 in 1.24 (MC111).
    assert located(scenario_lint_findings([vs], topology, parse_istio_version("1.30"))) == [("<vs>", 7, "MC111")]
    assert scenario_lint_findings([vs], topology, parse_istio_version("1.22")) == []


def test_lint_that_raises_becomes_one_entry_and_never_an_exception() -> None:
    found = scenario_lint_findings([platform()], None, ISTIO)  # type: ignore[arg-type]
    assert len(found) == 1
    assert found[0]["code"] == ""
    assert found[0]["message"].startswith(f"{LINT_FAILED}: AttributeError: ")
    assert lint_section(found)["rows"] == []
    assert lint_section(found)["failures"] == [found[0]["message"]]


def test_no_policies_applied_means_no_findings() -> None:
    assert scenario_lint_findings([], load_topology(None), ISTIO) == []


def test_lint_paths_and_lint_policies_agree_on_options(tmp_path: Path) -> None:
    """``lint_paths`` runs the rules through ``lint_policies``; the options still reach them."""
    (tmp_path / "vs.yaml").write_text(CATALOG_VS)
    assert [f.code for f in lint_paths([tmp_path], LintOptions(istio="1.30")).findings] == ["MC111"]
    assert lint_paths([tmp_path], LintOptions(istio="1.22")).findings == []


# ---------------------------------------------------------------------------------------- record, page


def record_with_findings() -> ScenarioRecord:
    rec = passing_record()
    rec.lint_findings = platform_findings()
    return rec


def test_lint_findings_round_trip_through_json(tmp_path: Path) -> None:
    rec = record_with_findings()
    again = ScenarioRecord.from_dict(json.loads(rec.to_json()))
    assert again.lint_findings == rec.lint_findings
    assert asdict(again) == asdict(rec)
    html = write_scenario_report(rec, tmp_path)
    stored = ScenarioRecord.read(html.with_suffix(".json"))
    assert stored.lint_findings == rec.lint_findings
    # A re-render from the JSON alone shows the same findings.
    assert rerender(html.with_suffix(".json")).read_text().count("data-lint-code=") == len(EXPECTED_PLATFORM)


def test_records_written_before_the_field_read_back_without_findings() -> None:
    data = json.loads(passing_record().to_json())
    del data["lint_findings"]
    assert ScenarioRecord.from_dict(data).lint_findings == []


def test_page_lists_every_finding_in_the_policy_section() -> None:
    rec = record_with_findings()
    html = render_scenario(rec)
    claim = html[html.index('<section id="claim">') : html.index('<section id="checks">')]
    page = Tags(claim)
    text = " ".join(" ".join(page.text).split())
    rows = page.find("tr", **{"data-severity": "warning"})
    assert [r["data-lint-code"] for r in rows] == [f["code"] for f in rec.lint_findings]
    for f in rec.lint_findings:
        for shown in (f["message"], f"{f['file']}:{f['line']}", f["fix"], f["issue"], f["resource"]):
            assert " ".join(shown.split()) in text, shown
    assert "9 warnings" in text
    assert f"Istio {ISTIO}" in text
    # The upstream addresses are text: the page still references nothing outside itself.
    assert remote_references(html) == []
    assert not re.search(r"""href=["']https?:""", html)


def test_page_says_when_there_is_no_finding_and_when_lint_could_not_run() -> None:
    rec = passing_record()
    page = Tags(render_scenario(rec))
    assert page.find("p", **{"data-lint": "none"})
    rec.lint_findings = [{"code": "", "message": f"{LINT_FAILED}: ValueError: boom"}]
    html = render_scenario(rec)
    page = Tags(html)
    assert page.find("p", **{"data-lint": "failed"})
    assert not page.find("p", **{"data-lint": "none"})
    assert f"{LINT_FAILED}: ValueError: boom" in " ".join(page.text)
