"""Secrets never reach a report file: text patterns, nested data, and the files actually written."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_report_samples import error_record, passing_record

from pytest_meshcheck.report.index import write_index
from pytest_meshcheck.report.redact import REDACTED, redact_data, redact_text
from pytest_meshcheck.report.render import write_scenario_report

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
SECRETS = ("s3cr3t-bearer", "hunter2", "tok-abc-123", "dXNlcjpwYXNz", "key-987", "pw-in-url", JWT)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer s3cr3t-bearer", f"Authorization: {REDACTED}"),
        ("authorization: Basic dXNlcjpwYXNz", f"authorization: {REDACTED}"),
        ("{'Authorization': 'Bearer s3cr3t-bearer', 'x': 1}", f"{{'Authorization': '{REDACTED}', 'x': 1}}"),
        ('"proxy-authorization": "Basic dXNlcjpwYXNz"', f'"proxy-authorization": "{REDACTED}"'),
        ("curl -H 'bearer s3cr3t-bearer' x", f"curl -H 'bearer {REDACTED}' x"),
        ("GET /api?page=2&token=tok-abc-123&x=1", f"GET /api?page=2&token={REDACTED}&x=1"),
        ("https://h/cb?access_token=tok-abc-123#frag", f"https://h/cb?access_token={REDACTED}#frag"),
        ("--password=hunter2 --seed 3", f"--password={REDACTED} --seed 3"),
        ("client_secret=key-987;", f"client_secret={REDACTED};"),
        ("api_key=key-987", f"api_key={REDACTED}"),
        ("password: hunter2", f"password: {REDACTED}"),
        ("{'secret': 'hunter2'}", f"{{'secret': '{REDACTED}'}}"),
        ("https://admin:pw-in-url@prom.example:9090/api", f"https://admin:{REDACTED}@prom.example:9090/api"),
        (f"token {JWT} seen", f"token {REDACTED} seen"),
    ],
)
def test_secret_patterns(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "retryOn: 5xx,reset",
        "cluster.outbound|9080||reviews.upstream_rq_retry",
        "tokens_per_second: 5",
        "https://istio.io/latest/docs/reference/config/networking/virtual-service/",
        "max_tokens=5",
        "success rate: expected 0.8750, observed 0.8610",
    ],
)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert redact_text(text) == text


def test_redaction_never_changes_line_numbers() -> None:
    text = "a: 1\nAuthorization: Bearer x\n  password: y\nz: 2\n"
    assert redact_text(text).count("\n") == text.count("\n")
    assert redact_text(text).splitlines()[3] == "z: 2"


def test_redact_data_masks_secret_keys_and_nested_strings() -> None:
    data = {
        "headers": {"Authorization": "Basic abc", "X-Api-Key": "k", "accept": "json"},
        "spec": [{"password": "p", "url": "http://h/?token=t"}],
        "n": 3,
        "auth": {"token": ""},
    }
    assert redact_data(data) == {
        "headers": {"Authorization": REDACTED, "X-Api-Key": REDACTED, "accept": "json"},
        "spec": [{"password": REDACTED, "url": f"http://h/?token={REDACTED}"}],
        "n": 3,
        "auth": {"token": ""},
    }


def test_written_reports_hold_no_secret(tmp_path: Path) -> None:
    rec = passing_record()
    rec.message += "\nrequest had Authorization: Bearer s3cr3t-bearer"
    rec.description = f"called https://admin:pw-in-url@svc/?token=tok-abc-123 with {JWT}"
    rec.chaos[0].spec["headers"] = {"authorization": "Basic dXNlcjpwYXNz"}
    rec.context["admin_password"] = "hunter2"
    rec.load[0].profile["api_key"] = "key-987"
    err = error_record()
    err.error["traceback"] += "\nenv: PASSWORD=hunter2 SECRET=key-987"
    paths = [write_scenario_report(rec, tmp_path), write_scenario_report(err, tmp_path)]
    index = write_index(tmp_path, [rec, err], run_info={"pytest_args": "--mesh-prometheus-url https://u:pw-in-url@p/"})
    files = [*paths, *(p.with_suffix(".json") for p in paths), index, index.with_suffix(".json")]
    for path in files:
        content = path.read_text()
        leaked = [s for s in SECRETS if s in content]
        assert leaked == [], f"{path.name} leaks {leaked}"
        assert REDACTED in content, f"{path.name} shows no redaction marker"
    assert rec.context["admin_password"] == "hunter2"  # only the files are redacted, not the caller's record
