"""junit properties: the pairs themselves, and that pytest's --junit-xml carries them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

from test_report_samples import error_record, inconclusive_record, legacy_record_data, passing_record

from pytest_meshcheck.report.junit import junit_properties
from pytest_meshcheck.report.record import CheckRecord, ScenarioRecord


def test_properties_of_a_scenario() -> None:
    rec = passing_record()
    rec.report_path = "s.html"
    props = dict(junit_properties(rec, "reports"))
    check = rec.checks[0]
    assert check.observed is not None
    assert check.interval is not None
    assert props["meshcheck.verdict"] == "passed"
    assert props["meshcheck.success_rate.expected"] == "0.875"
    assert abs(float(props["meshcheck.success_rate.observed"]) - check.observed) < 1e-6
    low, high = (float(x) for x in props["meshcheck.success_rate.interval"].split(","))
    assert abs(low - check.interval[0]) < 1e-6
    assert abs(high - check.interval[1]) < 1e-6
    assert props["meshcheck.success_rate.n"] == str(check.n)
    assert props["meshcheck.success_rate.confidence"] == "0.99"
    assert props["meshcheck.p99_latency.passed"] == "true"
    assert "meshcheck.p99_latency.interval" not in props  # a bound has no interval: left out, not empty
    assert props["meshcheck.report"] == "reports/s.html"


def test_properties_say_each_checks_outcome_role_and_power() -> None:
    rec = inconclusive_record()
    claim = rec.checks[0]
    props = dict(junit_properties(rec))
    assert props["meshcheck.verdict"] == "inconclusive"  # pytest failed it; no check showed it broken
    assert props["meshcheck.success_rate.outcome"] == "inconclusive"
    assert props["meshcheck.success_rate.passed"] == "false"
    assert props["meshcheck.success_rate.role"] == "claim"
    assert props["meshcheck.success_rate.alternative"] == "two-sided"
    assert props["meshcheck.success_rate.alpha"] == "0.0098"
    assert props["meshcheck.success_rate.beta"] == "0.05"
    assert props["meshcheck.success_rate.delta"] == "0.02"
    assert props["meshcheck.success_rate.detects"] == claim.detects
    assert props["meshcheck.p99_latency.role"] == "model"
    assert "meshcheck.p99_latency.alpha" not in props  # a bound has no error rates: left out
    # Records older than these fields: outcome from ``passed``, role from the name's prefix.
    legacy = dict(junit_properties(ScenarioRecord.from_dict(legacy_record_data())))
    assert legacy["meshcheck.claim_success_ratio_about_87_50.outcome"] == "failed"
    assert legacy["meshcheck.claim_success_ratio_about_87_50.role"] == "claim"
    assert legacy["meshcheck.model_success_ratio.role"] == "model"


def test_duplicate_check_names_and_errors() -> None:
    rec = error_record()
    rec.checks = [CheckRecord("success rate", False, 0.9, 0.5), CheckRecord("success rate", True, 0.9, 0.91)]
    names = [name for name, _ in junit_properties(rec)]
    assert "meshcheck.success_rate.expected" in names
    assert "meshcheck.success_rate_2.expected" in names
    assert "meshcheck.report" not in names  # no report written yet
    assert dict(junit_properties(rec))["meshcheck.verdict"] == "error"


def test_junit_xml_carries_the_properties(tmp_path: Path) -> None:
    test_file = tmp_path / "test_prop.py"
    test_file.write_text(
        textwrap.dedent(
            """
            from pytest_meshcheck.report.junit import junit_properties
            from pytest_meshcheck.report.record import CheckRecord, ScenarioRecord

            def test_claim(record_property):
                check = CheckRecord("success rate", True, 0.875, 0.861, [0.83, 0.89], 1000, 0.99)
                rec = ScenarioRecord(nodeid="x", title="t", report_path="x.html", checks=[check])
                for name, value in junit_properties(rec, "reports"):
                    record_property(name, value)
            """
        )
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\njunit_family = xunit1\n")
    xml = tmp_path / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junit-xml={xml}", str(test_file)],
        cwd=tmp_path,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTEST_ADDOPTS": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    props = {p.get("name"): p.get("value") for p in ET.parse(xml).iter("property")}
    assert props["meshcheck.success_rate.expected"] == "0.875"
    assert props["meshcheck.success_rate.observed"] == "0.861"
    assert props["meshcheck.success_rate.interval"] == "0.83,0.89"
    assert props["meshcheck.success_rate.n"] == "1000"
    assert props["meshcheck.report"] == "reports/x.html"
