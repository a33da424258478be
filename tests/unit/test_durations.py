"""Go-duration parsing (as Istio reads YAML) and protobuf-JSON formatting (as Envoy wants it)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_meshcheck.durations import DurationError, format_duration, parse_duration, parse_duration_ns
from pytest_meshcheck.errors import MeshcheckError

S = 1_000_000_000


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("1s", S),
        ("0.5s", S // 2),
        ("100ms", S // 10),
        ("1m", 60 * S),
        ("1h", 3600 * S),
        ("1h2m3.5s", 3723 * S + S // 2),
        ("1.5us", 1500),
        ("1.5\u00b5s", 1500),  # micro sign
        ("1.5\u03bcs", 1500),  # Greek mu
        ("7ns", 7),
        ("+2s", 2 * S),
        ("-1.5s", -3 * S // 2),
        ("0", 0),
        ("-0", 0),
        ("0s", 0),
        (".5s", S // 2),
        ("5.s", 5 * S),
        ("1m30s", 90 * S),
        ("2h45m", (2 * 3600 + 45 * 60) * S),
        ("1s500ms", 3 * S // 2),
        ("0.1234567891s", 123_456_789),  # fraction beyond ns is truncated, as Go does
        ("9223372036854775807ns", 2**63 - 1),
        ("-9223372036854775808ns", -(2**63)),
    ],
)
def test_parse_accepts_go_duration_syntax(text: str, nanos: int) -> None:
    assert parse_duration_ns(text) == nanos
    assert parse_duration(text) == pytest.approx(nanos / S, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("1", "missing unit"),
        ("1d", "unknown unit 'd'"),
        ("1S", "unknown unit 'S'"),
        ("1 s", "unknown unit ' s'"),
        (" 1s", "expected a number"),
        ("s", "expected a number"),
        (".s", "a '.' needs digits"),
        ("1.5", "missing unit"),
        ("--1s", "expected a number"),
        ("1e3s", "unknown unit 'e'"),
        ("1..5s", "missing unit"),
        ("1\u0663s", "unknown unit"),  # an Arabic-Indic digit is not a digit to Go
        ("9223372036854775808ns", "too large"),
        ("2562048h", "too large"),
        ("-", "empty"),
    ],
)
def test_parse_rejects_what_go_rejects(text: str, reason: str) -> None:
    with pytest.raises(DurationError) as err:
        parse_duration(text)
    message = str(err.value)
    assert repr(text) in message
    assert reason in message
    assert "'250ms'" in message  # the message shows valid forms


def test_parse_rejects_non_strings_clearly() -> None:
    with pytest.raises(DurationError, match="expected a string"):
        parse_duration(10)  # type: ignore[arg-type]


def test_duration_error_is_a_meshcheck_error_and_value_error() -> None:
    with pytest.raises(MeshcheckError):
        parse_duration("x")
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("x")


@given(
    st.integers(min_value=0, max_value=9 * 10**9), st.sampled_from([("ns", 1), ("us", 1000), ("ms", 10**6), ("s", S)])
)
def test_integer_amounts_of_each_unit(amount: int, unit: tuple[str, int]) -> None:
    assert parse_duration_ns(f"{amount}{unit[0]}") == amount * unit[1]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1, "1s"),
        (1.5, "1.500s"),
        (0.1, "0.100s"),
        (0.0001, "0.000100s"),
        (1e-9, "0.000000001s"),
        (3723.5, "3723.500s"),
        (-1.5, "-1.500s"),
        (10.0, "10s"),
        (0.25, "0.250s"),
    ],
)
def test_format_uses_protobuf_json_form(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), True, "1s", 1e12])
def test_format_rejects_what_protobuf_cannot_hold(bad: object) -> None:
    with pytest.raises(DurationError):
        format_duration(bad)  # type: ignore[arg-type]


# Up to 10**14 ns a decimal ns value has at most 15 significant digits, which a float always round-trips.
@given(st.integers(min_value=-(10**14), max_value=10**14))
def test_format_then_parse_round_trips_nanoseconds(nanos: int) -> None:
    assert parse_duration_ns(format_duration(nanos / S)) == nanos
