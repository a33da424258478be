"""Verdict messages: expected vs observed, interval, n, and the slots for policy lines and the report."""

from __future__ import annotations

from pytest_meshcheck.verdict import Interval, Verdict


def test_failed_message_states_expected_observed_interval_and_n() -> None:
    v = Verdict("failed", 0.875, 0.56, 560, 1000, Interval(0.519, 0.600, 0.99, "wilson"), 0.99, "wilson")
    assert v.summary == (
        "success rate: expected 0.8750, observed 0.5600 (560/1000); 99% Wilson interval [0.5190, 0.6000] -> FAILED"
    )
    assert v.message == v.summary
    assert str(v) == v.message


def test_with_context_fills_the_policy_and_report_slots() -> None:
    v = Verdict("passed", 0.875, 0.861, 861, 1000, None, 0.99, "sprt", what="share of 2xx").with_context(
        policy_lines=["retry.yaml:21 VirtualService ns/r spec.http[0].retries.attempts = 2: up to 2 retries"],
        report_path="reports/test_retry.html",
    )
    lines = v.message.splitlines()
    assert lines[0] == "share of 2xx: expected 0.8750, observed 0.8610 (861/1000) -> passed"
    assert lines[1:] == [
        "policy:",
        "  retry.yaml:21 VirtualService ns/r spec.http[0].retries.attempts = 2: up to 2 retries",
        "report: reports/test_retry.html",
    ]
    # filling one slot keeps the other
    assert v.with_context(report_path="other.html").policy_lines == v.policy_lines


def test_one_sided_and_error_summaries() -> None:
    bound = Interval(0.0, 0.985, 0.99, "wilson", "upper")
    at_least = Verdict("failed", 0.99, 0.95, 95, 100, bound, 0.99, "wilson", alternative="at-least")
    assert "expected at least 0.9900" in at_least.summary
    assert "upper bound" in at_least.summary
    nothing = Verdict("error", 0.5, None, 0, 0, None, 0.99, "sprt", detail="no requests were observed")
    assert nothing.summary.endswith("observed nothing (n=0) -> ERROR (no requests were observed)")


def test_verdict_is_a_plain_value() -> None:
    v = Verdict("passed", 0.5, 0.5, 5, 10, None, 0.99, "wilson")
    assert v.passed
    assert v.summary == "success rate: expected 0.5000, observed 0.5000 (5/10) -> passed"
