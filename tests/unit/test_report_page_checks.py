"""A scenario page's checks: reasons said once and linked, inconclusive checks, what rate verdicts detect."""

from __future__ import annotations

import re
from pathlib import Path

from test_report_samples import Tags, failing_record, inconclusive_record, passing_record

from pytest_meshcheck.report.record import CheckRecord
from pytest_meshcheck.report.render import render_scenario

STYLE = Path(__file__).parents[2] / "pytest_meshcheck" / "report" / "templates" / "style.css"


def _section(html: str, section: str) -> str:
    found = re.search(rf'<section id="{section}"[^>]*>(.*?)</section>', html, re.S)
    assert found is not None, section
    return found.group(1)


def _message(html: str) -> str:
    found = re.search(r'<pre class="message">(.*?)</pre>', html, re.S)
    assert found is not None
    return found.group(1)


def test_a_failed_pages_reasons_are_said_once_and_linked_from_elsewhere() -> None:
    rec = failing_record()
    claim = rec.checks[0]
    assert claim.reasons
    assert all(reason in rec.message for reason in claim.reasons)  # the message repeats them
    html = render_scenario(rec)
    for reason in claim.reasons:
        assert html.count(reason) == 1, reason
    # They are listed in "Why it failed", under an anchor...
    failure = _section(html, "failure")
    listed = re.search(r'<ul class="reasons" id="(reasons-0)">(.*?)</ul>', failure, re.S)
    assert listed is not None
    assert re.findall(r"<li>(.*?)</li>", listed.group(2)) == claim.reasons
    # ...the message box links there instead of repeating them (and keeps what is said nowhere else)...
    message = _message(html)
    assert '<a href="#reasons-0">' in message
    assert "policy lines and defaults involved:" in message
    assert "observed 0.5249" in message
    # ...and the checks table's row of the failed check points to its explanation.
    checks = _section(html, "checks")
    row = re.search(r'<tr class="failed" id="check-0".*?</tr>', checks, re.S)
    assert row is not None
    assert 'href="#failed-0"' in row.group(0)
    assert 'id="failed-0"' in failure
    # The held check's own reason is listed once, in the checks table.
    assert html.count("perTryTimeout: 500ms (line 15)") == 1
    assert 'id="reasons-1"' in checks


def test_checks_that_share_reasons_link_to_the_first_listing() -> None:
    rec = failing_record()
    claim = rec.checks[0]
    twin = CheckRecord(
        "model: success rate", False, 0.875, 0.52, [0.5, 0.54], n=3995, reasons=list(claim.reasons), role="model",
        outcome="failed",
    )  # fmt: skip
    held = CheckRecord("model: retries seen", True, 2400.0, 2401.0, unit="count", reasons=list(claim.reasons))
    rec.checks = [claim, twin, held]
    html = render_scenario(rec)
    for reason in claim.reasons:
        assert html.count(reason) == 1, reason
    failure = _section(html, "failure")
    assert re.search(r'<a href="#reasons-0">same policy lines and defaults as .success rate.</a>', failure)
    checks = _section(html, "checks")
    held_row = re.search(r'<tr class="passed" id="check-2".*?</tr>', checks, re.S)
    assert held_row is not None
    assert 'href="#reasons-0"' in held_row.group(0)


def test_a_passing_page_lists_reasons_in_the_checks_table() -> None:
    rec = passing_record()
    html = render_scenario(rec)
    for reason in rec.checks[0].reasons:
        assert html.count(reason) == 1
    assert 'id="reasons-0"' in _section(html, "checks")
    assert 'id="failure"' not in html


def test_inconclusive_is_shown_distinctly_and_never_as_a_pass() -> None:
    rec = inconclusive_record()
    html = render_scenario(rec)
    page = Tags(html)
    (badge,) = page.find("span", **{"data-verdict": "inconclusive"})
    assert badge["class"] == "badge inconclusive"
    assert badge["data-outcome"] == "failed"  # pytest's outcome stays available
    assert "Not shown to hold: 1 of 2 checks inconclusive" in html
    failure = _section(html, "failure")
    assert "Why it did not pass" in failure
    assert '<a href="#reasons-0">(listed under \u201cWhy it did not pass\u201d below)</a>' in _message(html)
    assert '<td class="res-inconclusive">INCONCLUSIVE</td>' in failure
    row = re.search(r'<tr class="inconclusive" id="check-0".*?</tr>', _section(html, "checks"), re.S)
    assert row is not None
    assert "held" not in row.group(0)
    assert "res-passed" not in row.group(0)
    # Its colours are its own: not the pass green, not the failure red.
    css = STYLE.read_text()
    colours = dict(re.findall(r"--(ok|bad|inc):\s*(#[0-9a-f]{6})", css))
    assert colours["inc"] not in (colours["ok"], colours["bad"])
    assert re.search(r"\.res-inconclusive \{ color: var\(--inc\)", css)
    assert re.search(r"\.badge\.inconclusive \{ background: var\(--inc\)", css)
    # Even a record whose outcome says passed is not shown as a pass.
    rec.outcome = "passed"
    html = render_scenario(rec)
    assert 'data-verdict="inconclusive"' in html
    assert "The policy held" not in html


def test_rate_checks_say_what_they_could_detect() -> None:
    rec = failing_record()
    claim = rec.checks[0]
    html = render_scenario(rec)
    failure = _section(html, "failure")
    assert claim.detects in failure
    power = dict(re.findall(r'data-power="(\w+)">\S+ ([^<]+)</span>', failure))
    assert power == {"alpha": "0.0098", "beta": "0.05", "delta": "0.02"}
    # The held bound has no power to state: a dash, not an empty claim.
    checks = _section(html, "checks")
    latency = re.search(r'<tr class="passed" id="check-1".*?</tr>', checks, re.S)
    assert latency is not None
    assert 'data-power="' not in latency.group(0)
    passing = render_scenario(passing_record())
    assert passing_record().checks[0].detects in _section(passing, "checks")


def test_the_page_shows_the_resolved_istio_version() -> None:
    rec = passing_record()
    rec.context["istio_version"] = "default"
    html = render_scenario(rec)
    assert "Istio 1.30" in html
    context = dict(re.findall(r"<tr><th>([^<]*)</th><td class=\"mono\">([^<]*)</td></tr>", _section(html, "context")))
    assert context["Istio version"] == "1.30"
    assert "default" not in context.values()
