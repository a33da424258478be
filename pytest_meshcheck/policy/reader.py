"""Typed, path-aware reading of one parsed policy document that records every problem it meets.

Builders read a YAML mapping through :class:`Fields`: each getter checks the JSON type the CRD declares,
records an issue (with dotted path, line and fix) when it is wrong, and returns ``None`` so the builder can
carry on and find the next problem. :meth:`Fields.finish` then classifies whatever the builder did not read
(ignored, unsupported, unknown) using :mod:`pytest_meshcheck.policy.schema`.
"""

from __future__ import annotations

import datetime
import difflib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_meshcheck.durations import SYNTAX_HINT, DurationError, parse_duration_ns
from pytest_meshcheck.errors import PolicyIssue
from pytest_meshcheck.policy.model import PolicyWarning
from pytest_meshcheck.policy.schema import IGNORED, MASTER_ONLY, PASSTHROUGH, UNSUPPORTED, JsonType, known_fields

IntKind = Literal["int32", "uint32", "uint64"]
DurationRule = Literal["istio", "istio-or-zero", "non-negative"]

_INT_RANGES: dict[IntKind, tuple[int, int]] = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
_JSON_TYPE_NAMES: dict[JsonType, str] = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "object": "a mapping",
    "array": "a list",
}
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_MS = 1_000_000


def child(path: str, key: str) -> str:
    """Dotted path of ``key`` under ``path``; keys that are not identifier-like are quoted in brackets."""
    if _PLAIN_KEY.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def item(path: str, index: int) -> str:
    """Path of the ``index``-th list element under ``path``."""
    return f"{path}[{index}]"


def parent(path: str) -> str:
    """The path one level up (``""`` for the document itself)."""
    if path.endswith('"]'):
        start = path.rfind('["')
        while start >= 0:
            try:
                json.loads(path[start + 1 : -1])
                return path[:start]
            except ValueError:
                start = path.rfind('["', 0, start)
        return ""
    if path.endswith("]"):
        return path[: path.rfind("[")]
    dot = path.rfind(".")
    return path[:dot] if dot >= 0 else ""


def _text(value: Any) -> str:
    # str() of an int with more than 4300 digits raises ValueError (CPython's conversion limit).
    try:
        return str(value).lower() if isinstance(value, bool) else str(value)
    except ValueError:
        return "<a number with thousands of digits>"


def describe(value: Any) -> str:
    """A user-facing description of a YAML value's type, with the value when it is short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({_text(value)})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, datetime.date):
        return f"a date ({value.isoformat()}); quote it to make it a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _json_type(value: Any) -> JsonType | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "array"
    return None


@dataclass
class DocContext:
    """Where one document came from, and the issues and warnings found in it so far."""

    file: str
    document: int
    field_lines: dict[str, int] = field(default_factory=dict)
    issues: list[PolicyIssue] = field(default_factory=list)
    warnings: list[PolicyWarning] = field(default_factory=list)

    def line_of(self, path: str) -> int | None:
        """Line of ``path``, or of its nearest ancestor that has one."""
        p = path
        while True:
            if p in self.field_lines:
                return self.field_lines[p]
            if not p:
                return None
            p = parent(p)

    def error(self, path: str, message: str, fix: str, line: int | None = None) -> None:
        """Record a problem that stops the load; ``line`` overrides the line looked up for ``path``."""
        where = line if line is not None else self.line_of(path)
        self.issues.append(PolicyIssue(self.file, self.document, path or "(document)", message, fix, where))

    def warn(self, path: str, message: str) -> None:
        """Record a finding that does not stop the load."""
        line = self.line_of(path)
        where = f" (line {line})" if line else ""
        self.warnings.append(PolicyWarning(self.file, self.document, path or "(document)", message + where))


class Fields:
    """Reads the fields of one YAML mapping, typed as the CRD declares them.

    Every getter returns ``None`` when the field is absent (or explicitly null, which Kubernetes drops) and
    when the value is invalid, in which case an issue has been recorded.
    """

    def __init__(self, ctx: DocContext, path: str, data: Mapping[str, Any], obj: str) -> None:
        self.ctx, self.path, self.data, self.schema_name = ctx, path, data, obj
        self._used: set[str] = set()

    def at(self, name: str) -> str:
        """Dotted path of field ``name``."""
        return child(self.path, name)

    def present(self, name: str) -> bool:
        """True when ``name`` is set to a non-null value (does not count as reading it)."""
        return self.data.get(name) is not None

    def _take(self, name: str) -> Any:
        self._used.add(name)
        if name in self.data and self.data[name] is None:
            self.ctx.warn(self.at(name), "has no value (null); Kubernetes drops it, so it is treated as absent")
        return self.data.get(name)

    def _type_error(self, name: str, value: Any, expected: str, fix: str) -> None:
        self.ctx.error(self.at(name), f"expected {expected}, got {describe(value)}", fix)

    def require(self, name: str, fix: str) -> bool:
        """Record an issue if ``name`` is absent; True when it is present."""
        if self.present(name):
            return True
        self.ctx.error(self.at(name), f"{name} is required in {self.schema_name}", fix)
        return False

    def string(self, name: str) -> str | None:
        """A string field."""
        value = self._take(name)
        if value is None or isinstance(value, str):
            return value
        self._type_error(name, value, "a string", f"quote the value: {name}: {json.dumps(_text(value))}")
        return None

    def integer(self, name: str, kind: IntKind = "int32") -> int | None:
        """An integer field whose range is that of the proto type ``kind``."""
        value = self._take(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            hint = (
                f"write {name}: {value.strip()} without quotes"
                if isinstance(value, str) and value.strip().lstrip("+-").isdigit()
                else f"set {name} to a whole number"
            )
            self._type_error(name, value, "an integer", hint)
            return None
        low, high = _INT_RANGES[kind]
        if not low <= value <= high:
            self.ctx.error(
                self.at(name),
                f"{_text(value)} is out of range for {kind} ({low}..{high})",
                f"use a value in {low}..{high}",
            )
            return None
        return value

    def number(self, name: str) -> float | None:
        """A finite floating-point field (integers are accepted, as JSON does)."""
        value = self._take(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._type_error(name, value, "a number", f"set {name} to a number such as 100 or 0.5")
            return None
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            self.ctx.error(self.at(name), f"{_text(value)} is not a finite number", f"set {name} to a finite number")
            return None
        return number

    def boolean(self, name: str) -> bool | None:
        """A boolean field."""
        value = self._take(name)
        if value is None or isinstance(value, bool):
            return value
        self._type_error(name, value, "a boolean", f"set {name} to true or false, without quotes")
        return None

    def enum(self, name: str, allowed: tuple[str, ...]) -> str | None:
        """A string field restricted to ``allowed``."""
        value = self.string(name)
        if value is None or value in allowed:
            return value
        self.ctx.error(
            self.at(name), f"{value!r} is not one of {', '.join(allowed)}", f"set {name} to one of {', '.join(allowed)}"
        )
        return None

    def duration(self, name: str, rule: DurationRule = "istio", *, zero_fix: str = "") -> float | None:
        """A duration in Go syntax, in seconds.

        With ``rule="istio"`` it must also pass the CRD's CEL rule (``>= 1ms``) and istiod's
        ``ValidateDuration`` (millisecond precision); ``"istio-or-zero"`` also admits ``0s`` (fields without
        the CEL rule, where 0 disables the timeout); ``zero_fix`` overrides the fix for too-small values.
        """
        value = self._take(name)
        if value is None:
            return None
        if not isinstance(value, str):
            self._type_error(name, value, "a duration string", f"write it with a unit, for example {name}: 2s")
            return None
        try:
            nanos = parse_duration_ns(value)
        except DurationError as exc:
            self.ctx.error(self.at(name), str(exc).split("; ")[0], SYNTAX_HINT)
            return None
        if rule == "istio-or-zero" and nanos == 0:
            return 0.0
        if rule in ("istio", "istio-or-zero"):
            if nanos < _MS:
                self.ctx.error(
                    self.at(name),
                    f"{value!r} is below 1ms; Istio rejects it (CRD rule 'must be a valid duration greater than 1ms')",
                    zero_fix or f"set {name} to at least 1ms",
                )
                return None
            if nanos % _MS:
                self.ctx.error(
                    self.at(name),
                    f"{value!r} is finer than a millisecond; istiod rejects it "
                    "('only durations to ms precision are supported')",
                    f"round {name} to whole milliseconds",
                )
                return None
        elif nanos < 0:
            self.ctx.error(self.at(name), f"{value!r} is negative", f"set {name} to 0s or more")
            return None
        return nanos / 1e9

    def string_list(self, name: str) -> list[tuple[str, str]] | None:
        """A list of strings, as ``(path, value)`` pairs."""
        value = self._take(name)
        if value is None:
            return None
        if not isinstance(value, list):
            self._type_error(name, value, "a list of strings", f"write {name} as a YAML list:\n  {name}:\n  - value")
            return None
        out: list[tuple[str, str]] = []
        for i, v in enumerate(value):
            if isinstance(v, str):
                out.append((item(self.at(name), i), v))
            else:
                self.ctx.error(item(self.at(name), i), f"expected a string, got {describe(v)}", "quote the value")
        return out

    def string_map(self, name: str) -> dict[str, str] | None:
        """A mapping of string to string (labels)."""
        value = self._take(name)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self._type_error(name, value, "a mapping of string to string", f"write {name} as key: value lines")
            return None
        out: dict[str, str] = {}
        for k, v in value.items():
            if isinstance(v, str):
                out[k] = v
            else:
                self.ctx.error(
                    child(self.at(name), k),
                    f"expected a string, got {describe(v)}",
                    f"quote the value: {k}: {json.dumps(_text(v))}",
                )
        return out

    def obj(self, name: str, obj: str) -> Fields | None:
        """A nested object read as CRD object ``obj``."""
        value = self._take(name)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self._type_error(name, value, f"a mapping ({obj})", f"write {name} as a mapping of fields")
            return None
        return Fields(self.ctx, self.at(name), value, obj)

    def obj_list(self, name: str, obj: str) -> list[Fields] | None:
        """A list of objects of type ``obj``; null or non-mapping elements are issues."""
        value = self._take(name)
        if value is None:
            return None
        if not isinstance(value, list):
            self._type_error(name, value, f"a list of {obj}", f"write {name} as a YAML list (lines starting with '- ')")
            return None
        out: list[Fields] = []
        for i, v in enumerate(value):
            p = item(self.at(name), i)
            if isinstance(v, Mapping):
                out.append(Fields(self.ctx, p, v, obj))
            else:
                self.ctx.error(
                    p, f"expected a mapping ({obj}), got {describe(v)}", "remove the element or fill in its fields"
                )
        return out

    def obj_map(self, name: str, obj: str) -> dict[str, Fields] | None:
        """A mapping of string keys to objects of type ``obj`` (header matches)."""
        value = self._take(name)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self._type_error(
                name, value, f"a mapping of name to {obj}", f"write {name} as name: {{exact: value}} lines"
            )
            return None
        out: dict[str, Fields] = {}
        for k, v in value.items():
            p = child(self.at(name), k)
            if isinstance(v, Mapping):
                out[k] = Fields(self.ctx, p, v, obj)
            else:
                self.ctx.error(p, f"expected a mapping ({obj}), got {describe(v)}", f"write it as {k}: {{exact: ...}}")
        return out

    def finish(self) -> None:
        """Classify every field the builder did not read: ignored, unsupported or unknown."""
        for name, value in self.data.items():
            if name in self._used:
                continue
            path = self.at(name)
            if name in PASSTHROUGH.get(self.schema_name, ()):
                continue
            ignored = IGNORED.get(self.schema_name, {}).get(name)
            if ignored is not None:
                expected, note = ignored
                if value is not None and _json_type(value) != expected:
                    self.ctx.error(
                        path,
                        f"expected {_JSON_TYPE_NAMES[expected]}, got {describe(value)}",
                        f"fix the type of {name} or remove it",
                    )
                else:
                    self.ctx.warn(path, f"{name} is {note}")
                continue
            reason = UNSUPPORTED.get(self.schema_name, {}).get(name)
            if reason is not None:
                self.ctx.error(
                    path,
                    f"{name} is not supported by pytest-meshcheck ({reason}), so the local mesh would not behave "
                    "like Istio",
                    f"remove {name} from the policies under test, or test this route in a real cluster",
                )
                continue
            if name in MASTER_ONLY.get(self.schema_name, ()):
                self.ctx.error(
                    path,
                    f"{name} exists only in unreleased Istio (master), not in the releases pytest-meshcheck models "
                    "(up to 1.30)",
                    f"remove {name}",
                )
                continue
            self._unknown(name, path)

    def _unknown(self, name: str, path: str) -> None:
        allowed = sorted(known_fields(self.schema_name))
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        self.ctx.error(
            path,
            f"unknown field {name!r}: Istio's {self.schema_name} has no such field, so the API server would reject it",
            f"{hint}{self.schema_name} fields are: {', '.join(allowed)}",
        )
