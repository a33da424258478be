"""The run index: links, run summary, regressions, index.json; reading records back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_report_samples import (
    T0,
    Tags,
    error_record,
    failing_record,
    inconclusive_record,
    passing_record,
    remote_references,
)

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.report.baseline import Regression
from pytest_meshcheck.report.index import INDEX_JSON, load_records, write_index
from pytest_meshcheck.report.record import CheckRecord, ScenarioRecord
from pytest_meshcheck.report.render import write_scenario_report


def _run(tmp_path: Path) -> list[ScenarioRecord]:
    records = [passing_record(), failing_record(), error_record()]
    records[1].started_at += 1  # a distinct start time per scenario, as in a real run
    records[2].started_at += 2
    for rec in records:
        write_scenario_report(rec, tmp_path)
    return records


def test_index_links_every_scenario_to_an_existing_report(tmp_path: Path) -> None:
    records = _run(tmp_path)
    index = write_index(tmp_path, records)
    assert index == tmp_path / "index.html"
    html = index.read_text()
    page = Tags(html)
    links = [a["href"] for a in page.find("a")]
    scenario_links = [h for h in links if h.endswith(".html")]
    assert sorted(scenario_links) == sorted(r.report_path for r in records)
    for href in links:
        target, _, anchor = href.partition("#")
        assert (tmp_path / target).is_file(), href
        if anchor:  # a check that did not hold links to where its page explains it
            assert f'id="{anchor}"' in (tmp_path / target).read_text(), href
    assert f"{records[1].report_path}#failed-0" in links
    outcomes = [tr["data-outcome"] for tr in page.find("tr") if "data-outcome" in tr]
    assert outcomes == ["passed", "failed", "error"]
    assert remote_references(html) == []


def test_index_summarises_the_run(tmp_path: Path) -> None:
    records = _run(tmp_path)
    html = write_index(
        tmp_path, records, run_info={"started_at": T0, "ended_at": T0 + 125.0, "profile": "ci"}
    ).read_text()
    text = " ".join(Tags(html).text)
    assert "2 of 3 scenarios did not hold." in text
    assert "1 failed, 1 error, 1 passed" in text
    assert str(sum(r.load[0].requests for r in records[:2])) in text
    assert "2m05s" in text
    assert "local" in text
    assert "1.30" in text
    assert "ci" in text
    assert "regressions" not in html.lower()


def test_index_lists_the_mesh_context_once_and_the_resolved_istio_version(tmp_path: Path) -> None:
    records = _run(tmp_path)
    records[2].context["istio_version"] = "default"  # a scenario that broke before its mesh resolved one
    # What the session passes (harness/session.py); older callers said "context".
    for info in ({"mesh_context": "local", "profile": "ci"}, {"context": "local", "profile": "ci"}):
        html = write_index(tmp_path, records, run_info=info).read_text()
        run = re.search(r'<section id="run">(.*?)</section>', html, re.S)
        assert run is not None
        rows = dict(re.findall(r"<tr><th>([^<]*)</th><td>([^<]*)</td></tr>", run.group(1)))
        assert rows["Mesh context"] == "local"
        assert "context" not in rows
        assert list(rows.values()).count("local") == 1, rows
        assert rows["Istio version"] == "1.30"  # not "1.30, default"
        assert rows["profile"] == "ci"


def test_index_shows_every_check_that_did_not_hold(tmp_path: Path) -> None:
    rec = failing_record()
    model = CheckRecord(
        "model: retry share", False, 0.3, 0.36, [0.34, 0.38], n=4000, role="model", alternative="two-sided",
        outcome="inconclusive", alpha=0.01, beta=0.05, delta=0.05,
        detects="would have caught a retry share below 25 % or above 35 % with 95 % probability",
    )  # fmt: skip
    rec.checks.insert(1, model)
    write_scenario_report(rec, tmp_path)
    html = write_index(tmp_path, [rec]).read_text()
    items = re.findall(r'<li data-check="(\w+)">(.*?)</li>', html, re.S)
    assert [outcome for outcome, _ in items] == ["failed", "inconclusive"]
    failed, inconclusive = (Tags(body) for _, body in items)
    assert "success rate" in " ".join(failed.text)
    assert [a["href"] for a in inconclusive.find("a")] == [f"{rec.report_path}#failed-1"]
    text = " ".join(inconclusive.text)
    assert "INCONCLUSIVE" in text
    assert "would have caught a retry share below 25 % or above 35 % with 95 % probability" in text
    assert "alpha 0.01, beta 0.05, delta 0.05" in text
    assert "1 held, 1 failed, 1 inconclusive" in html
    # The headline claim sits in its own cells; the message's first line (the title again) is not repeated.
    assert html.count(rec.title) == 1


def test_an_inconclusive_scenario_is_not_shown_as_passed(tmp_path: Path) -> None:
    records = [passing_record(), inconclusive_record()]
    for rec in records:
        write_scenario_report(rec, tmp_path)
    records[1].outcome = "passed"  # even if pytest's outcome said so
    html = write_index(tmp_path, records).read_text()
    verdicts = [tr["data-verdict"] for tr in Tags(html).find("tr") if "data-verdict" in tr]
    assert verdicts == ["passed", "inconclusive"]
    assert '<span class="badge inconclusive">INCONCLUSIVE</span>' in html
    text = " ".join(Tags(html).text)
    assert "1 of 2 scenarios did not hold." in text
    assert "1 inconclusive, 1 passed" in text
    data = json.loads((tmp_path / INDEX_JSON).read_text())
    assert [s["verdict"] for s in data["scenarios"]] == ["passed", "inconclusive"]


def test_index_shows_regressions(tmp_path: Path) -> None:
    records = _run(tmp_path)
    reg = Regression(records[1].nodeid, "verdict", "", "PASSED", "FAILED", "verdict flipped from PASSED to FAILED")
    html = write_index(tmp_path, records, regressions=[reg]).read_text()
    section = re.search(r'<section id="regressions" class="failure">(.*?)</section>', html, re.S)
    assert section is not None
    assert f"{records[1].nodeid}: verdict flipped from PASSED to FAILED" in section.group(1)


def test_index_marks_a_missing_report(tmp_path: Path) -> None:
    rec = passing_record()
    rec.report_path = "gone.html"
    html = write_index(tmp_path, [rec]).read_text()
    assert "(report missing)" in html
    assert 'href="gone.html"' not in html


def test_index_json_is_small_and_complete(tmp_path: Path) -> None:
    records = _run(tmp_path)
    reg = Regression(records[1].nodeid, "verdict", "", "PASSED", "FAILED", "flipped")
    write_index(tmp_path, records, regressions=[reg], run_info={"profile": "ci"})
    data = json.loads((tmp_path / INDEX_JSON).read_text())
    assert data["kind"] == "meshcheck-run"
    assert data["run_info"] == {"profile": "ci"}
    assert [s["nodeid"] for s in data["scenarios"]] == [r.nodeid for r in records]
    first = data["scenarios"][0]
    assert "timeseries" not in first
    assert "prom_series" not in first
    assert first["checks"][0]["observed"] == records[0].checks[0].observed
    assert first["requests"] == records[0].load[0].requests
    assert data["regressions"][0]["kind"] == "verdict"


def test_load_records_reads_back_what_was_written(tmp_path: Path) -> None:
    records = _run(tmp_path)
    write_index(tmp_path, records)
    (tmp_path / "notes.json").write_text('{"unrelated": true}')
    loaded = load_records(tmp_path)
    assert [r.nodeid for r in loaded] == [r.nodeid for r in records]  # ordered by start time
    assert loaded[0].checks == records[0].checks
    assert loaded[2].error["type"] == "MeshSetupError"


def test_load_records_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(MeshcheckError, match="does not exist"):
        load_records(tmp_path / "nope")
    (tmp_path / "broken.json").write_text('{"nodeid": ')
    with pytest.raises(MeshcheckError, match=r"cannot read scenario record .*broken\.json.*delete it"):
        load_records(tmp_path)


def test_empty_run_still_gets_an_index(tmp_path: Path) -> None:
    html = write_index(tmp_path, []).read_text()
    assert "No scenario produced a record" in html


def test_the_sessions_index_names_the_mesh_context_once(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pytest_meshcheck.harness.session import SUMMARY_KEY, write_run_index
    from pytest_meshcheck.settings import MeshSettings

    records = _run(tmp_path)
    for rec in records:
        rec.context["run_id"] = "run-1"
        write_scenario_report(rec, tmp_path)
    config = SimpleNamespace(stash=pytest.Stash())
    settings = MeshSettings(context="local", report_dir=tmp_path, seed=1234)
    write_run_index(config, settings, "run-1")  # type: ignore[arg-type]
    run = re.search(r'<section id="run">(.*?)</section>', (tmp_path / "index.html").read_text(), re.S)
    assert run is not None
    rows = re.findall(r"<tr><th>([^<]*)</th><td>([^<]*)</td></tr>", run.group(1))
    labels = [label for label, _ in rows]
    assert labels.count("Mesh context") == 1
    assert "context" not in labels
    assert [value for _, value in rows].count("local") == 1
    assert dict(rows)["Istio version"] == "1.30"
    assert config.stash[SUMMARY_KEY][-1].startswith("meshcheck: 3 scenario reports -> ")
