"""The report's "Sample requests" section: stored data from real records, its HTML, and the kube context.

Records come from ``tests/data/attempts/retries_70pct.json`` (a real local mesh run; see
``tests/unit/test_metrics_attempts.py``). The router's upstream log itself is checked in the local
bootstrap (added there only, never by the istiod-faithful translation).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pytest_meshcheck.local import bootstrap as bs
from pytest_meshcheck.metrics.attempts import AttemptRecords, parse_record
from pytest_meshcheck.report.record import ScenarioRecord
from pytest_meshcheck.report.render import render_scenario
from pytest_meshcheck.report.sample_requests import NOT_AVAILABLE, collect_sample_requests, sample_section
from pytest_meshcheck.translate import http_filters
from pytest_meshcheck.translate.common import ROUTER_FILTER_NAME

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "attempts" / "retries_70pct.json"


class _Recorded:
    """A mesh whose ``attempt_records`` replays the captured lines (plumbing: the lines are real)."""

    def __init__(self) -> None:
        capture = json.loads(FIXTURE.read_text())
        records = []
        for sidecar, logs in capture["sidecars"].items():
            records += [parse_record(line, "call", sidecar) for line in logs["access"]]
            records += [parse_record(line, "attempt", sidecar) for line in logs["attempts"]]
        self.data = AttemptRecords(
            records=tuple(r for r in records if r is not None),
            client="envoy",
            pods={name: logs["pod"] for name, logs in capture["sidecars"].items() if logs["pod"]},
            hosts={f"{i['address']}:{i['port']}": i["name"] for i in capture["instances"]},
        )
        self.statuses: list[int] = capture["statuses"]
        self.window: tuple[float, float] | None = None

    def attempt_records(self, start: float, end: float) -> AttemptRecords:
        self.window = (start, end)
        return self.data


@pytest.fixture(scope="module")
def section() -> dict[str, Any]:
    return collect_sample_requests(_Recorded(), 1.0, 2.0)


def _page(section: dict[str, Any]) -> str:
    record = ScenarioRecord(nodeid="scenarios/test_chain.py::test_retries", title="retries per hop")
    # The record's field (see the report of issue 9 item 6); set here so the template section renders.
    record.sample_requests = section  # type: ignore[attr-defined]
    return render_scenario(record)


def _walk_attempts(call: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for attempt in call["attempts"]:
        out.append(attempt)
        for child in attempt["calls"]:
            out += _walk_attempts(child)
    return out


def test_the_section_holds_a_failed_the_slowest_and_a_retried_request(section: dict[str, Any]) -> None:
    assert section["available"] is True
    assert section["requests"] == len(_Recorded().statuses)
    reasons = [r for s in section["samples"] for r in s["reasons"]]
    assert sorted(reasons) == ["failed", "retried", "slowest"]
    for sample in section["samples"]:
        attempts = _walk_attempts(sample["call"])
        assert sample["total_attempts"] == len(attempts)
        assert sample["complete"] is True
        assert sample["call"]["offset_ms"] == 0.0
        assert all(a["offset_ms"] >= 0 and a["instance"] for a in attempts)
    failed = next(s for s in section["samples"] if "failed" in s["reasons"])
    assert failed["status"] == 503
    assert json.loads(json.dumps(section)) == section


def test_the_html_shows_every_attempt_of_every_sample_per_hop(section: dict[str, Any]) -> None:
    html = _page(section)
    assert '<section id="samples">' in html
    for sample in section["samples"]:
        start = html.index(f'data-request-id="{sample["request_id"]}"')
        table = html[start : html.index("</table>", start)]
        attempts = _walk_attempts(sample["call"])
        assert table.count("data-attempt=") == len(attempts)
        assert [
            int(x)
            for x in re.findall(r'class="attempt[^"]*" data-hop="\d" data-attempt="\d" data-status="(\d+)"', table)
        ] == [a["status"] for a in attempts]
        for attempt in attempts:
            assert attempt["instance"] in table
        assert 'data-hop="2"' in table
    # Self-contained: no script and no remote resource.
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_the_kube_context_says_the_section_is_not_available() -> None:
    section = collect_sample_requests(object(), 1.0, 2.0)
    assert section == {"available": False, "note": NOT_AVAILABLE, "requests": 0, "samples": []}
    html = _page(section)
    assert 'data-samples="unavailable"' in html
    assert "not available in this context" in html


def test_an_unreadable_mesh_gives_the_reason_not_an_error() -> None:
    class Stopped:
        def attempt_records(self, start: float, end: float) -> AttemptRecords:
            raise OSError("work directory removed")

    section = collect_sample_requests(Stopped(), 1.0, 2.0)
    assert section["available"] is False
    assert "work directory removed" in section["note"]


def test_no_requests_in_the_window_is_said_plainly() -> None:
    section = sample_section(AttemptRecords((), "envoy", {}, {}))
    assert section["samples"] == []
    assert "No request was served in the scenario window" in _page(section)


def test_a_record_without_the_field_renders_without_the_section() -> None:
    html = render_scenario(ScenarioRecord(nodeid="a::b", title="t"))
    assert ('id="samples"' in html) == hasattr(ScenarioRecord(nodeid="a::b", title="t"), "sample_requests")


# ------------------------------------------------------------------------------------------------ bootstrap


def test_local_listeners_add_a_per_attempt_log_to_the_router_only(tmp_path: Path) -> None:
    translated = http_filters()
    before = json.dumps(translated, sort_keys=True)
    listener = bs.http_listener(
        "outbound", 0, "routes", {"path": "x"}, translated, tmp_path / "access.log", "outbound_0.0.0.0_0"
    )
    # The translation stays as istiod makes it: the upstream log is added to a copy, locally.
    assert json.dumps(translated, sort_keys=True) == before
    assert all("upstream_log" not in f["typed_config"] for f in translated)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    filters = hcm["http_filters"]
    assert [f["name"] for f in filters] == [f["name"] for f in translated]
    (router,) = [f for f in filters if f["name"] == ROUTER_FILTER_NAME]
    (log,) = router["typed_config"]["upstream_log"]
    assert log["typed_config"]["path"] == str(tmp_path / bs.ATTEMPTS_LOG_NAME)
    assert log["typed_config"]["log_format"]["json_format"]["listener"] == "outbound"
    assert {"start", "request_id", "upstream_host", "response_code", "response_flags"} <= set(
        log["typed_config"]["log_format"]["json_format"]
    )
    assert all("upstream_log" not in f["typed_config"] for f in filters if f["name"] != ROUTER_FILTER_NAME)


def test_a_filter_chain_without_a_router_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"no envoy\.filters\.http\.router entry"):
        bs.with_attempt_log([{"name": "envoy.filters.http.fault", "typed_config": {}}], Path("a.log"), "outbound")
