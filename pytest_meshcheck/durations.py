"""Durations as Istio reads them from YAML, and as Envoy's JSON config wants them.

Istio's resources reach istiod as JSON and are decoded with ``github.com/golang/protobuf/jsonpb``, whose
``google.protobuf.Duration`` decoder calls Go's ``time.ParseDuration`` (the CRD's CEL rules call the same
function). So Istio YAML accepts Go duration syntax, not only the protobuf ``"1.5s"`` form: ``"100ms"``,
``"1m"``, ``"1h2m3.5s"``, ``"1.5us"``, ``"+2s"``, ``".5s"``, ``"0"``. :func:`parse_duration_ns` is a
faithful port of ``time.ParseDuration`` (same grammar, same units, same overflow limits, same truncation of
fractions), so a value is accepted here exactly when Istio would decode it. Istio's own range rules (at
least 1 ms, millisecond precision) are checked by the policy validator, not here.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

from pytest_meshcheck.errors import MeshcheckError

__all__ = ["DurationError", "format_duration", "parse_duration", "parse_duration_ns"]

NANOS_PER_SECOND = 1_000_000_000
# Go's time.Duration is an int64 of nanoseconds; its parser compares against 1<<63 before applying the sign.
_LIMIT = 1 << 63
# Both the micro sign U+00B5 and the Greek mu U+03BC are accepted by Go.
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": NANOS_PER_SECOND,
    "m": 60 * NANOS_PER_SECOND,
    "h": 3600 * NANOS_PER_SECOND,
}
SYNTAX_HINT = (
    "use Go duration syntax: a number followed by a unit (ns, us, ms, s, m, h), "
    "for example '2s', '0.5s', '250ms', '1m30s'"
)
# protobuf's Duration range: +-10,000 years.
_PROTO_MAX_SECONDS = 315_576_000_000


class DurationError(MeshcheckError, ValueError):
    """A duration string Istio would not accept, or a number Envoy's JSON cannot express."""


def _is_digit(c: str) -> bool:
    return "0" <= c <= "9"


def _invalid(orig: str, why: str = "") -> DurationError:
    detail = f" ({why})" if why else ""
    return DurationError(f"invalid duration {orig!r}{detail}; {SYNTAX_HINT}")


def _leading_int(s: str, orig: str) -> tuple[int, str]:
    x, i = 0, 0
    while i < len(s) and _is_digit(s[i]):
        if x > _LIMIT // 10:
            raise _invalid(orig, "too large")
        x = x * 10 + ord(s[i]) - ord("0")
        if x > _LIMIT:
            raise _invalid(orig, "too large")
        i += 1
    return x, s[i:]


def _leading_fraction(s: str) -> tuple[int, float, str]:
    # Digits past what fits are consumed and dropped, as Go does.
    x, scale, i, overflow = 0, 1.0, 0, False
    while i < len(s) and _is_digit(s[i]):
        if not overflow:
            if x > (_LIMIT - 1) // 10:
                overflow = True
            else:
                y = x * 10 + ord(s[i]) - ord("0")
                if y > _LIMIT:
                    overflow = True
                else:
                    x, scale = y, scale * 10
        i += 1
    return x, scale, s[i:]


def parse_duration_ns(text: str) -> int:
    """Parse a Go duration string into integer nanoseconds (may be negative).

    Raises:
        DurationError: ``text`` is not Go duration syntax, or overflows int64 nanoseconds.
    """
    orig, s, neg = text, text, False
    if s and s[0] in "+-":
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0
    if not s:
        raise _invalid(orig, "empty")
    total = 0
    while s:
        if not (s[0] == "." or _is_digit(s[0])):
            raise _invalid(orig, f"expected a number at {s!r}")
        before = len(s)
        whole, s = _leading_int(s, orig)
        pre = len(s) != before
        frac, scale, post = 0, 1.0, False
        if s and s[0] == ".":
            s = s[1:]
            before = len(s)
            frac, scale, s = _leading_fraction(s)
            post = len(s) != before
        if not pre and not post:
            raise _invalid(orig, "a '.' needs digits")
        i = 0
        while i < len(s) and not (s[i] == "." or _is_digit(s[i])):
            i += 1
        if i == 0:
            raise _invalid(orig, "missing unit")
        unit_name, s = s[:i], s[i:]
        unit = _UNIT_NS.get(unit_name)
        if unit is None:
            raise _invalid(orig, f"unknown unit {unit_name!r}")
        if whole > _LIMIT // unit:
            raise _invalid(orig, "too large")
        value = whole * unit
        if frac > 0:
            # Go computes the fraction in float64 and truncates; doing the same keeps results identical.
            value += int(float(frac) * (float(unit) / scale))
            if value > _LIMIT:
                raise _invalid(orig, "too large")
        total += value
        if total > _LIMIT:
            raise _invalid(orig, "too large")
    if neg:
        return -total
    if total > _LIMIT - 1:
        raise _invalid(orig, "too large")
    return total


def parse_duration(text: str) -> float:
    """Parse a Go duration string (as Istio accepts it in YAML) into float seconds.

    Examples: ``"1s"`` -> 1.0, ``"100ms"`` -> 0.1, ``"1h2m3.5s"`` -> 3723.5, ``"1.5us"`` -> 1.5e-06.

    Raises:
        DurationError: The text is not a valid duration; the message says why and shows valid forms.
    """
    if not isinstance(text, str):
        raise DurationError(f"invalid duration {text!r}: expected a string; {SYNTAX_HINT}")
    return parse_duration_ns(text) / NANOS_PER_SECOND


def format_duration(seconds: float) -> str:
    """Format seconds in protobuf JSON form for Envoy: ``"1s"``, ``"1.500s"``, ``"0.000100s"``.

    As protobuf's canonical JSON does, the fraction has 0, 3, 6 or 9 digits, whichever is enough; the value
    is rounded to whole nanoseconds.

    Raises:
        DurationError: ``seconds`` is not finite or is outside protobuf's +-10,000-year range.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise DurationError(f"cannot format {seconds!r} as a duration: expected a finite number of seconds")
    try:
        # str() gives the shortest repr, so 0.1 becomes exactly 100000000 ns rather than a float artefact.
        nanos = int((Decimal(str(seconds)) * NANOS_PER_SECOND).to_integral_value())
    except InvalidOperation as exc:  # pragma: no cover - finite floats always convert
        raise DurationError(f"cannot format {seconds!r} as a duration") from exc
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), NANOS_PER_SECOND)
    if whole > _PROTO_MAX_SECONDS:
        raise DurationError(f"duration {seconds!r}s is outside protobuf's range of +-{_PROTO_MAX_SECONDS}s")
    if frac == 0:
        return f"{sign}{whole}s"
    if frac % 1_000_000 == 0:
        return f"{sign}{whole}.{frac // 1_000_000:03d}s"
    if frac % 1_000 == 0:
        return f"{sign}{whole}.{frac // 1_000:06d}s"
    return f"{sign}{whole}.{frac:09d}s"
