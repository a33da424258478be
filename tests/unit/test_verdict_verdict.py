"""Verdict messages: expected vs observed, interval, n, and the slots for policy lines and the report."""

from __future__ import annotations

from pytest_meshcheck.verdict import Verdict, check_proportion


def test_failed_message_states_expected_observed_interval_and_n() -> None:
    v = check_proportion(560, 1000, 0.875)
    assert v.summary == (
        "success rate: expected 0.8750, observed 0.5600 (560/1000); "
        f"99% Wilson interval [{v.interval.low:.4f}, {v.interval.high:.4f}] -> FAILED"  # type: ignore[union-attr]
    )
    assert v.message == v.summary
    assert str(v) == v.message


def test_with_context_fills_the_policy_and_report_slots() -> None:
    v = check_proportion(861, 1000, 0.875, tolerance=0.02, what="share of 2xx").with_context(
        policy_lines=["retry.yaml:21 VirtualService ns/r spec.http[0].retries.attempts = 2: up to 2 retries"],
        report_path="reports/test_retry.html",
    )
    lines = v.message.splitlines()
    assert lines[0].startswith("share of 2xx: expected 0.8750 +-0.02, observed 0.8610 (861/1000); 99% Wilson")
    assert lines[1:] == [
        "policy:",
        "  retry.yaml:21 VirtualService ns/r spec.http[0].retries.attempts = 2: up to 2 retries",
        "report: reports/test_retry.html",
    ]
    # filling one slot keeps the other
    assert v.with_context(report_path="other.html").policy_lines == v.policy_lines


def test_one_sided_and_error_summaries() -> None:
    assert "expected at least 0.9900" in check_proportion(95, 100, 0.99, alternative="at-least").summary
    assert "upper bound" in check_proportion(95, 100, 0.99, alternative="at-least").summary
    assert check_proportion(0, 0, 0.5).summary.endswith("observed nothing (n=0) -> ERROR (no requests were observed)")


def test_verdict_is_a_plain_value() -> None:
    v = Verdict("passed", 0.5, 0.5, 5, 10, None, 0.99, "wilson")
    assert v.passed
    assert v.summary == "success rate: expected 0.5000, observed 0.5000 (5/10) -> passed"
