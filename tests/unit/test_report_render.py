"""Scenario pages: files, names, content, self-containment, failure and error pages, size limits."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest
from test_report_samples import (
    Tags,
    error_record,
    failing_record,
    long_record,
    passing_record,
    remote_references,
)

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.report.charts import CHART_POINTS
from pytest_meshcheck.report.record import ScenarioRecord, report_stem
from pytest_meshcheck.report.render import STORED_POINTS, render_scenario, rerender, write_scenario_report

TWO_MB = 2 * 1024 * 1024


def test_long_node_ids_get_distinct_capped_files(tmp_path: Path) -> None:
    base = "scenarios/test_x.py::test_" + "y" * 300
    paths = [write_scenario_report(ScenarioRecord(nodeid=f"{base}[{c}]", title=c), tmp_path) for c in "ab"]
    assert paths[0] != paths[1]
    assert all(len(p.name) < 120 for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [p.name for p in paths] + [p.with_suffix(".json").name for p in paths]
    )


def test_write_scenario_report_writes_json_and_html_and_sets_path(tmp_path: Path) -> None:
    rec = passing_record()
    html_path = write_scenario_report(rec, tmp_path)
    name = report_stem(rec.nodeid)
    assert html_path == tmp_path / f"{name}.html"
    assert rec.report_path == f"{name}.html"
    stored = ScenarioRecord.from_dict(json.loads((tmp_path / f"{name}.json").read_text()))
    assert asdict(stored) == asdict(rec)  # nothing to redact or shorten here: stored as given


def test_page_is_self_contained(tmp_path: Path) -> None:
    for rec in (passing_record(), failing_record(), error_record()):
        html = write_scenario_report(rec, tmp_path).read_text()
        assert remote_references(html) == []
        assert "http://" not in html
        assert "https://" not in html
        assert "<style>" in html


def test_page_shows_verdict_checks_policy_chaos_and_context() -> None:
    rec = passing_record()
    html = render_scenario(rec)
    page = Tags(html)
    text = " ".join(page.text)
    assert page.find("span", **{"data-outcome": "passed"})
    assert "The policy held: all 2 checks passed." in text
    check = rec.checks[0]
    assert check.observed is not None
    assert check.interval is not None
    for value in (
        f"{check.expected:.4f}",
        f"{check.observed:.4f}",
        f"[{check.interval[0]:.4f}, {check.interval[1]:.4f}] @99%",
    ):
        assert value in text
    assert str(check.n) in text
    assert "wilson" in text
    assert "99%" in text
    assert "retryOn: 5xx (line 14): the injected 503s are retried" in text
    # The policy: every line numbered from the file, and exactly the highlighted ones marked.
    policy = rec.policies[0]
    marked = re.findall(r'<tr class="mark"><td class="ln">(\d+)</td>', html)
    assert [int(n) for n in marked] == policy.highlight_lines
    numbered = [int(n) for n in re.findall(r'<td class="ln">(\d+)</td>', html)]
    assert numbered == list(range(policy.line, policy.line + len(policy.text.splitlines())))
    assert "policies/reviews.yaml:1" in text
    # Chaos: when, and the proof that it was live.
    assert "2024-05-01 10:40:20.000 UTC" in text
    assert "+20.0 s" in text
    assert "+60.0 s" in text
    assert "faults_injected" in text
    assert "1198" in text
    # Tables and context.
    assert "cluster.outbound|9080||reviews.upstream_rq_retry" in text
    assert "upstream_rq_pending_overflow" not in text  # unchanged counters are left out
    assert "URX" in text
    assert "retry limit exceeded" in text
    assert "1.30" in text
    assert "1234" in text
    assert "local" in text
    assert not page.find("section", id="failure")


def test_charts_are_inline_svg_with_the_data(tmp_path: Path) -> None:
    rec = passing_record()
    html = render_scenario(rec)
    figures = re.findall(
        r'<figure class="chart" id="chart-(\w+)" data-chart="\w+" data-points="(\d+)">(.*?)</figure>',
        html,
        re.S,
    )
    by_key = {key: (int(points), body) for key, points, body in figures}
    assert set(by_key) == {
        "success_ratio",
        "latency",
        "requests",
        "retries",
        "ejections_active",
        "overflow",
        "upstream_requests",
    }
    seconds = len(rec.timeseries["t"])
    assert by_key["success_ratio"][0] == seconds
    assert by_key["latency"][0] == 2 * seconds
    assert by_key["retries"][0] == len(rec.prom_series["retries"])
    for _key, (points, body) in by_key.items():
        assert points > 0
        assert "<svg" in body
        assert "chaos on" in body  # the fault's band is drawn on every chart


def test_failing_page_has_a_failure_section_with_the_failed_check() -> None:
    rec = failing_record()
    html = render_scenario(rec)
    section = re.search(r'<section id="failure" class="failure failed">(.*?)</section>', html, re.S)
    assert section is not None
    body = section.group(1)
    assert "Why it failed" in body
    assert "success rate" in body
    assert "p99 latency" not in body
    observed = rec.checks[0].observed
    assert observed is not None
    assert f"{observed:.4f}" in body
    assert "The policy did not hold: 1 of 2 checks failed." in html


def test_errored_scenario_without_data_says_what_broke(tmp_path: Path) -> None:
    rec = error_record()
    html = write_scenario_report(rec, tmp_path).read_text()
    section = re.search(r'<section id="failure" class="failure error">(.*?)</section>', html, re.S)
    assert section is not None
    assert "What broke" in section.group(1)
    assert "MeshSetupError" in section.group(1)
    assert "exited with status 1 before becoming ready" in section.group(1)
    assert "Traceback" in section.group(1)
    assert html.count('class="nodata"') == 7  # every chart says there is no data instead of an empty axis
    assert "no data: the load generator recorded no per-second samples" in html
    assert "No load was sent." in html
    assert "No fault was applied" in html


def test_user_text_is_escaped() -> None:
    rec = passing_record()
    rec.title = "<script>alert(1)</script>"
    rec.policies[0].text = 'x: "<img src=x onerror=alert(1)>"'
    html = render_scenario(rec)
    assert "<script>" not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_html_is_rendered_from_the_json_record(tmp_path: Path) -> None:
    rec = passing_record()
    html_path = write_scenario_report(rec, tmp_path)
    json_path = html_path.with_suffix(".json")
    data = json.loads(json_path.read_text())
    data["title"] = "Title edited in the JSON"
    json_path.write_text(json.dumps(data))
    assert rerender(json_path) == html_path
    assert "Title edited in the JSON" in html_path.read_text()


def test_unwritable_report_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "reports"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(MeshcheckError, match=r"cannot write report file .*reports.*--mesh-report-dir"):
        write_scenario_report(passing_record(), blocker)


def test_long_run_stays_under_two_megabytes(tmp_path: Path) -> None:
    rec = long_record(20_000)
    assert len(rec.timeseries["t"]) == 20_000
    html_path = write_scenario_report(rec, tmp_path)
    json_path = html_path.with_suffix(".json")
    assert html_path.stat().st_size < TWO_MB
    assert json_path.stat().st_size < TWO_MB
    stored = json.loads(json_path.read_text())
    assert len(stored["timeseries"]["t"]) <= STORED_POINTS
    assert stored["context"]["timeseries_merged"] == 5  # 20,000 per-second samples -> 4,000 points of 5 s
    assert stored["context"]["prom_series_decimated"] == dict.fromkeys(stored["prom_series"], 10_000)
    html = html_path.read_text()
    for points in re.findall(r'data-points="(\d+)"', html):
        assert 0 < int(points) <= 3 * CHART_POINTS  # latency holds two series of at most CHART_POINTS
    # The chaos window (t = 20 s .. 15,000 s) is still visible after merging.
    assert html.count("chaos on") >= 7
    # How long this takes is a figure of bench/bench_timings.py (report_render_20000_points_s), not a test.


def test_unreverted_fault_and_missing_times_render(tmp_path: Path) -> None:
    rec = passing_record()
    rec.chaos[0].reverted_at = None
    rec.chaos[0].proof = {}
    html = render_scenario(rec)
    assert "not reverted" in html
    assert "No proof was recorded that this fault reached the destination." in html
    bare = ScenarioRecord(nodeid="t.py::test_bare", title="bare")
    bare_html = write_scenario_report(bare, tmp_path).read_text()
    assert "The policy held" in bare_html
    assert "Started -" in bare_html
