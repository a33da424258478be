"""Read and validate a claims file (``*.meshcheck.yaml``) into plain, checked values.

The file is read through :func:`pytest_meshcheck.policy.yamlsource.read_documents`, the same walk the policy
loader uses, so every key path has its line and the same YAML hazards (duplicate keys, non-string keys,
alias bombs) are rejected. Validation is explicit code rather than a JSON Schema: ``jsonschema`` is only a
development dependency, and hand-written checks can say what the value should be and suggest the key that
was meant. Every problem of the file is collected before anything is raised, and each one names the file,
line, key path and a fix::

    claims.meshcheck.yaml:14 claims[2].fault.rate: 1.5 is not a rate between 0 and 1; fix: use e.g. 0.5

Nothing here needs a mesh or imports the engine; :mod:`~pytest_meshcheck.claims.compile` turns the values
into scenario calls.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from pytest_meshcheck.durations import DurationError, parse_duration
from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.policy.reader import child, describe, item, parent
from pytest_meshcheck.policy.yamlsource import RawDocument, read_documents

API_VERSION = "meshcheck/v1alpha1"
KIND = "Claims"

TOP_KEYS = ("apiVersion", "kind", "defaults", "claims")
DEFAULT_KEYS = ("policies", "time_scale", "service", "fault", "load", "expect")
CLAIM_KEYS = ("name", "title", "description", *DEFAULT_KEYS, "call_path", "xfail")
FAULT_KEYS = ("kind", "service", "rate", "status", "delay", "instances", "limit")
LOAD_KEYS = ("concurrency", "requests", "rate", "duration", "path", "headers")
BOUND_KEYS = ("at_least", "at_most", "about")
EXPECT_KEYS = (
    "success_ratio",
    "status_share",
    "model_consistency",
    "counters",
    "every_request",
    "latency",
    "overflow",
    "ejection",
    "no_duplicate_execution",
    "calls_per_request",
)
# Claims about what happens behind the called service, along the topology's call graph: claims files cannot
# state them yet; Python scenarios can (scenarios/test_call_graph.py, pytest_meshcheck.harness.chain).
CALL_GRAPH_KEYS = ("no_duplicate_execution", "calls_per_request")
CALL_GRAPH_MESSAGE = (
    "is a call-graph claim, which claims files do not support yet (write it in Python with "
    "pytest_meshcheck.harness.chain.LedgerWindow, as scenarios/test_call_graph.py does)"
)
FAULT_KINDS = ("error", "latency", "reset")
ROLES = ("claim", "model", "evidence")
# Client-side counts an Envoy counter may be compared with (see Scenario.expect_counter).
CLIENT_COUNTS = ("client_retries", "overloaded", "requests", "successes", "aborted", "not_aborted")
# Durations in a claim that are mesh time, so ``time_scale`` scales them like the policies' durations.
# ejection.within is not scaled: it is a time into the load, and Envoy's 1 s update_merge_window, which
# delays every ejection after the first, is not part of the policy and does not scale with it.
SCALED = frozenset({("latency", "at_most"), ("latency", "at_least")})

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_NAME_MAX = 100


# ---------------------------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Where:
    """A place in a claims file: the file as shown, the 1-based line (when known) and the key path."""

    file: str
    line: int | None
    path: str

    def __str__(self) -> str:
        at = f"{self.file}:{self.line}" if self.line else self.file
        return f"{at} {self.path}" if self.path else at


@dataclass(frozen=True)
class ClaimIssue:
    """One problem in a claims file: where, what is wrong, and how to fix it."""

    where: Where
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}; fix: {self.fix}"


class ClaimsError(MeshcheckError):
    """A claims file is invalid; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: Iterable[ClaimIssue]) -> None:
        # A mistake in ``defaults`` is seen once per claim; report it once.
        unique = list(dict.fromkeys(issues))
        self.issues = tuple(sorted(unique, key=lambda i: (i.where.file, i.where.line or 0)))
        lines = [str(i) for i in self.issues]
        text = lines[0] if len(lines) == 1 else f"{len(lines)} problems in the claims file:\n  " + "\n  ".join(lines)
        super().__init__(text)


# ---------------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class PolicyRef:
    """One entry of ``policies``: a file or directory, or an inline VirtualService or DestinationRule.

    Attributes:
        where: The entry in the claims file.
        path: The file or directory (resolved against the claims file's directory).
        text: The inline object's YAML, preceded by blank lines so its lines are the claims file's lines.
        exact_lines: False when the inline text had to be re-dumped (lines then count from 1).
    """

    where: Where
    path: Path | None = None
    text: str = ""
    exact_lines: bool = True


@dataclass(frozen=True)
class FaultSpec:
    """A fault at a service's instances; ``delay`` in seconds before ``time_scale``."""

    where: Where
    service: str
    kind: Literal["error", "latency", "reset"]
    rate: float = 1.0
    status: int = 503
    delay: float = 0.0
    instances: int | None = None
    limit: int | None = None


@dataclass(frozen=True)
class LoadSpec:
    """The load: a closed loop (``concurrency``, ``requests``) or an open loop (``rate``, ``duration``)."""

    where: Where
    concurrency: int = 4
    requests: int | None = None
    rate: float | None = None
    duration: float | None = None
    path: str | None = None
    headers: Mapping[str, str] | None = None

    @property
    def is_open(self) -> bool:
        """An open loop (fixed rate) rather than a closed one."""
        return self.rate is not None


@dataclass(frozen=True)
class ExpectSpec:
    """One expectation: its key under ``expect`` and its checked options (durations unscaled, in seconds)."""

    key: str
    where: Where
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class XfailSpec:
    """A claim expected to fail: the reason, and whether an unexpected pass fails the run."""

    reason: str
    strict: bool = True


@dataclass(frozen=True)
class ClaimSpec:
    """One validated claim, with ``defaults`` applied."""

    name: str
    title: str
    description: str
    where: Where
    service: str
    load: LoadSpec
    expect: tuple[ExpectSpec, ...]
    policies: tuple[PolicyRef, ...] = ()
    time_scale: float | None = None
    faults: tuple[FaultSpec, ...] = ()
    xfail: XfailSpec | None = None


@dataclass(frozen=True)
class ClaimsDocument:
    """A validated claims file."""

    file: str
    base_dir: Path
    claims: tuple[ClaimSpec, ...]


# ---------------------------------------------------------------------------------------------- reading


def _shown(value: Any) -> str:
    """A value as a message quotes it: strings quoted, numbers as written, other things described."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, bool) or value is None:
        return describe(value)
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return describe(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


class _Spans:
    """The source text of inline policy objects, found on the composed YAML nodes.

    An inline VirtualService keeps its comments and its line numbers: its text is cut out of the claims file
    and preceded by as many blank lines as come before it, so the policy loader's errors and the report's
    policy excerpts point at the claims file's own lines.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._root: Node | None = None
        self._composed = False

    def root(self) -> Node | None:
        if not self._composed:
            self._composed = True
            try:
                self._root = yaml.compose(self.text, Loader=yaml.SafeLoader)
            except yaml.YAMLError:  # already reported by read_documents
                self._root = None
        return self._root

    def node(self, parts: Sequence[str | int]) -> Node | None:
        node = self.root()
        for part in parts:
            if isinstance(part, int) and isinstance(node, SequenceNode) and part < len(node.value):
                node = node.value[part]
            elif isinstance(part, str) and isinstance(node, MappingNode):
                node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            else:
                return None
        return node

    def source(self, parts: Sequence[str | int]) -> str | None:
        """The object's text at its own lines, or ``None`` when it cannot be cut out cleanly."""
        node = self.node(parts)
        if not isinstance(node, MappingNode):
            return None
        start, end = node.start_mark, node.end_mark
        segment = self.text[start.index : end.index].rstrip()
        lines = segment.split("\n")
        out = [lines[0]]
        for line in lines[1:]:
            head = line[: start.column]
            if line.lstrip().startswith("#") and head.strip():
                out.append("")  # a comment left of the object (before the next key) is not part of it
            elif head.strip():
                return None  # a flow mapping continued left of its start: no clean cut
            else:
                out.append(line[start.column :])
        return "\n" * start.line + "\n".join(out) + "\n"


class _Ctx:
    """Where issues go, and the line of each key path."""

    def __init__(self, file: str, raw: RawDocument, spans: _Spans) -> None:
        self.file = file
        self.lines = raw.field_lines
        self.spans = spans
        self.issues: list[ClaimIssue] = []

    def where(self, path: str) -> Where:
        probe = path
        while probe and probe not in self.lines:
            probe = parent(probe)
        return Where(self.file, self.lines.get(probe), path)

    def error(self, path: str, message: str, fix: str) -> None:
        self.issues.append(ClaimIssue(self.where(path), message, fix))

    def unknown_keys(self, data: Mapping[str, Any], path: str, allowed: Sequence[str], what: str) -> None:
        for key in data:
            if key in allowed:
                continue
            close = _did_you_mean(key, allowed)
            fix = f"did you mean {close!r}?" if close else f"remove it; {what} takes {', '.join(allowed)}"
            self.error(child(path, key), f"unknown key {key!r} in {what}", fix)

    # -- typed values; each returns None (after recording an issue) when the value is wrong

    def string(self, value: Any, path: str, example: str) -> str | None:
        if isinstance(value, str) and value.strip():
            return value
        self.error(path, f"{_shown(value)} is not a non-empty string", f"write e.g. {example}")
        return None

    def integer(self, value: Any, path: str, low: int, example: int, what: str = "") -> int | None:
        if _is_int(value) and value >= low:
            return int(value)
        what = what or ("a positive integer" if low == 1 else f"an integer of at least {low}")
        self.error(path, f"{_shown(value)} is not {what}", f"use e.g. {example}")
        return None

    def rate(self, value: Any, path: str, example: float, *, positive: bool = False) -> float | None:
        if _is_number(value) and (0.0 < value <= 1.0 if positive else 0.0 <= value <= 1.0):
            return float(value)
        what = "a rate above 0 and at most 1" if positive else "a rate between 0 and 1"
        self.error(path, f"{_shown(value)} is not {what}", f"use e.g. {example:g}")
        return None

    def number(self, value: Any, path: str, example: str, *, above: float | None = None) -> float | None:
        if _is_number(value) and (above is None or value > above):
            return float(value)
        what = "a number" if above is None else f"a number above {above:g}"
        self.error(path, f"{_shown(value)} is not {what}", f"use e.g. {example}")
        return None

    def duration(self, value: Any, path: str, example: str, *, zero: bool = False) -> float | None:
        """Seconds from a number or a Go duration string (``'8s'``, ``'250ms'``)."""
        seconds: float | None = None
        if _is_number(value):
            seconds = float(value)
        elif isinstance(value, str):
            try:
                seconds = parse_duration(value.strip())
            except DurationError:
                seconds = None
        if seconds is not None and (seconds > 0 or (zero and seconds == 0)):
            return seconds
        what = "a duration" + ("" if zero else " above 0")
        self.error(path, f"{_shown(value)} is not {what}", f"write seconds or a duration, e.g. {example}")
        return None

    def boolean(self, value: Any, path: str) -> bool | None:
        if isinstance(value, bool):
            return value
        self.error(path, f"{_shown(value)} is not true or false", "write true or false (unquoted)")
        return None

    def choice(self, value: Any, path: str, choices: Sequence[str], what: str) -> str | None:
        if isinstance(value, str) and value in choices:
            return value
        close = _did_you_mean(value, choices) if isinstance(value, str) else None
        fix = f"did you mean {close!r}?" if close else f"use one of {', '.join(choices)}"
        self.error(path, f"{_shown(value)} is not {what}", fix)
        return None

    def mapping(self, value: Any, path: str, example: str) -> Mapping[str, Any] | None:
        if isinstance(value, Mapping):
            return value
        self.error(path, f"expected a mapping, got {describe(value)}", f"write e.g. {example}")
        return None

    def entries(self, value: Any, path: str, example: str) -> list[tuple[Mapping[str, Any], str]]:
        """A mapping, or a list of mappings (where a claim may state several)."""
        if isinstance(value, Mapping):
            return [(value, path)]
        if isinstance(value, list) and value:
            out = []
            for i, entry in enumerate(value):
                got = self.mapping(entry, item(path, i), example)
                if got is not None:
                    out.append((got, item(path, i)))
            return out
        self.error(path, f"expected a mapping or a list of mappings, got {describe(value)}", f"write e.g. {example}")
        return []


# ---------------------------------------------------------------------------------------------- parsing


def parse_claims(text: str, *, file: str, base_dir: Path, services: Collection[str] | None = None) -> ClaimsDocument:
    """Read and validate a claims file.

    Args:
        text: The file's text.
        file: The file as messages show it.
        base_dir: Where relative policy paths start (the claims file's directory).
        services: Service names the topology knows; ``None`` skips that check.

    Raises:
        ClaimsError: Listing every problem found.
    """
    docs = list(read_documents(text))
    raws = [d for d in docs if isinstance(d, RawDocument)]
    issues: list[ClaimIssue] = []
    for d in docs:
        if not isinstance(d, RawDocument):
            _index, line, message = d
            issues.append(
                ClaimIssue(Where(file, line, ""), message, "fix the YAML syntax (check indentation and quoting)")
            )
    raws = [r for r in raws if r.data is not None]
    if issues:
        raise ClaimsError(issues)
    if not raws:
        where = Where(file, None, "")
        raise ClaimsError([ClaimIssue(where, "the claims file is empty", f"start it with apiVersion: {API_VERSION}")])
    if len(raws) > 1:
        where = Where(file, raws[1].line, "")
        raise ClaimsError(
            [ClaimIssue(where, "a claims file holds one YAML document", "put every claim in one claims: list")]
        )
    raw = raws[0]
    ctx = _Ctx(file, raw, _Spans(text))
    for path, message, fix, line in raw.problems:
        ctx.issues.append(ClaimIssue(Where(file, line or ctx.where(path).line, path), message, fix))
    claims = _document(ctx, raw.data, base_dir, services)
    if ctx.issues:
        raise ClaimsError(ctx.issues)
    return ClaimsDocument(file, base_dir, tuple(claims))


def _document(ctx: _Ctx, data: Any, base_dir: Path, services: Collection[str] | None) -> list[ClaimSpec]:
    top = ctx.mapping(data, "", f"apiVersion: {API_VERSION}, kind: {KIND}, claims: [...]")
    if top is None:
        return []
    ctx.unknown_keys(top, "", TOP_KEYS, "a claims file")
    header = "; the header also makes the policy loader skip this file next to policies"
    if top.get("apiVersion") != API_VERSION:
        got = "is missing" if "apiVersion" not in top else f"is {_shown(top['apiVersion'])}"
        ctx.error("apiVersion", f"apiVersion {got}", f"write apiVersion: {API_VERSION}{header}")
    if top.get("kind") != KIND:
        got = "is missing" if "kind" not in top else f"is {_shown(top['kind'])}"
        ctx.error("kind", f"kind {got}", f"write kind: {KIND}{header}")
    defaults: Mapping[str, Any] | None = None
    if "defaults" in top:
        defaults = ctx.mapping(top["defaults"], "defaults", "defaults: {policies: [retry-timeout.yaml]}")
        if defaults is not None:
            ctx.unknown_keys(defaults, "defaults", DEFAULT_KEYS, "defaults")
    entries = top.get("claims")
    if not isinstance(entries, list) or not entries:
        got = "is missing" if "claims" not in top else f"is {describe(entries)}"
        ctx.error("claims", f"claims {got}; it must be a non-empty list", "add claims: with one mapping per claim")
        return []
    out: list[ClaimSpec] = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(entries):
        path = item("claims", i)
        claim = ctx.mapping(entry, path, "- {name: ..., title: ..., service: ..., expect: {...}}")
        if claim is None:
            continue
        spec = _claim(ctx, claim, path, defaults or {}, base_dir, services)
        if spec is None:
            continue
        if spec.name in seen:
            ctx.error(
                child(path, "name"),
                f"name {spec.name!r} is also the name of {seen[spec.name]}",
                "give every claim its own name (it is the test's node id)",
            )
            continue
        seen[spec.name] = path
        out.append(spec)
    return out


def _layered(claim: Mapping[str, Any], path: str, defaults: Mapping[str, Any], key: str) -> tuple[Any, str] | None:
    """The claim's own value of ``key``, else the default's, with the path it came from."""
    if key in claim:
        return claim[key], child(path, key)
    if key in defaults:
        return defaults[key], child("defaults", key)
    return None


def _claim(
    ctx: _Ctx,
    claim: Mapping[str, Any],
    path: str,
    defaults: Mapping[str, Any],
    base_dir: Path,
    services: Collection[str] | None,
) -> ClaimSpec | None:
    before = len(ctx.issues)
    ctx.unknown_keys(claim, path, CLAIM_KEYS, "a claim")
    name = _name(ctx, claim, path)
    title = _title(ctx, claim, path)
    description = ""
    if "description" in claim:
        description = ctx.string(claim["description"], child(path, "description"), "'Why the claim holds.'") or ""
    if "call_path" in claim:
        ctx.error(
            child(path, "call_path"),
            f"a call path through several services {CALL_GRAPH_MESSAGE}",
            "name the service the client calls with service: (its sidecar applies the policies)",
        )
    service = None
    got = _layered(claim, path, defaults, "service")
    if got is None:
        ctx.error(
            child(path, "service"),
            "service is missing",
            "name the service the load calls, e.g. service: catalog-service",
        )
    else:
        service = _service(ctx, got[0], got[1], services)
    policies: tuple[PolicyRef, ...] = ()
    if (got := _layered(claim, path, defaults, "policies")) is not None:
        policies = _policies(ctx, got[0], got[1], base_dir)
    time_scale = None
    if (got := _layered(claim, path, defaults, "time_scale")) is not None:
        time_scale = ctx.number(got[0], got[1], "0.2 (every policy duration x 0.2)", above=0.0)
    faults: tuple[FaultSpec, ...] = ()
    if (got := _layered(claim, path, defaults, "fault")) is not None:
        faults = tuple(
            f
            for value, p in ctx.entries(got[0], got[1], "{kind: error, rate: 0.5, status: 500}")
            if (f := _fault(ctx, value, p, service or "", services)) is not None
        )
    load = LoadSpec(ctx.where(child(path, "load")))
    if (got := _layered(claim, path, defaults, "load")) is not None:
        load = _load(ctx, got[0], got[1]) or load
    expect = _expect(ctx, claim, path, defaults)
    xfail = _xfail(ctx, claim["xfail"], child(path, "xfail")) if "xfail" in claim else None
    if len(ctx.issues) > before or name is None or title is None or service is None:
        return None
    return ClaimSpec(
        name=name,
        title=title,
        description=description,
        where=ctx.where(path),
        service=service,
        load=load,
        expect=expect,
        policies=policies,
        time_scale=time_scale,
        faults=faults,
        xfail=xfail,
    )


def _name(ctx: _Ctx, claim: Mapping[str, Any], path: str) -> str | None:
    p = child(path, "name")
    if "name" not in claim:
        ctx.error(p, "name is missing", "add name: e.g. catalog-retries-hide-errors (the test's node id)")
        return None
    value = ctx.string(claim["name"], p, "catalog-retries-hide-errors")
    if value is not None and (not _NAME.match(value) or len(value) > _NAME_MAX):
        ctx.error(
            p,
            f"{_shown(value)} is not a valid claim name",
            f"use letters, digits, '_', '-' and '.' (at most {_NAME_MAX}), e.g. catalog-retries-hide-errors",
        )
        return None
    return value


def _title(ctx: _Ctx, claim: Mapping[str, Any], path: str) -> str | None:
    p = child(path, "title")
    if "title" not in claim:
        ctx.error(p, "title is missing", "add title: the claim in one line (reports show it)")
        return None
    value = ctx.string(claim["title"], p, "'Two retries hide most 503s.'")
    if value is not None and "\n" in value.strip():
        ctx.error(p, "title spans several lines", "keep the title to one line and put the rest in description:")
        return None
    return value.strip() if value is not None else None


def _service(ctx: _Ctx, value: Any, path: str, services: Collection[str] | None) -> str | None:
    name = ctx.string(value, path, "catalog-service")
    if name is None or services is None or name in services:
        return name
    close = _did_you_mean(name, sorted(services))
    fix = (
        f"did you mean {close!r}?" if close else f"use one of {', '.join(sorted(s for s in services if '.' not in s))}"
    )
    ctx.error(path, f"unknown service {name!r} (not in the topology)", fix)
    return None


def _parts(path: str) -> list[str | int]:
    """``claims[2].policies[1]`` -> ``["claims", 2, "policies", 1]`` (claims paths use plain keys only)."""
    out: list[str | int] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        out.append(int(token[1:-1]) if token.startswith("[") else token)
    return out


def _policies(ctx: _Ctx, value: Any, path: str, base_dir: Path) -> tuple[PolicyRef, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        ctx.error(
            path,
            f"expected a list of policy files or inline objects, got {describe(value)}",
            "write e.g. policies: [retry-timeout.yaml, circuit-breaker.yaml]",
        )
        return ()
    refs: list[PolicyRef] = []
    for i, entry in enumerate(value):
        p = item(path, i)
        if isinstance(entry, str) and entry.strip():
            target = (base_dir / entry.strip()).resolve()
            if not target.exists():
                ctx.error(
                    p,
                    f"policy path {entry!r} does not exist (looked at {target})",
                    "give a file or directory relative to the claims file",
                )
                continue
            refs.append(PolicyRef(ctx.where(p), path=target))
        elif isinstance(entry, Mapping):
            text = ctx.spans.source(_parts(p))
            exact = text is not None
            if text is None:
                text = yaml.safe_dump(dict(entry), sort_keys=False)
            refs.append(PolicyRef(ctx.where(p), text=text, exact_lines=exact))
        else:
            ctx.error(
                p,
                f"a policy entry is {describe(entry)}",
                "give a path relative to the claims file, or an inline VirtualService or DestinationRule mapping",
            )
    return tuple(refs)


def _fault(
    ctx: _Ctx, data: Mapping[str, Any], path: str, default_service: str, services: Collection[str] | None
) -> FaultSpec | None:
    before = len(ctx.issues)
    ctx.unknown_keys(data, path, FAULT_KEYS, "a fault")
    kind = None
    if "kind" not in data:
        ctx.error(child(path, "kind"), "kind is missing", f"add kind: one of {', '.join(FAULT_KINDS)}")
    elif data["kind"] == "refused":
        ctx.error(
            child(path, "kind"),
            "'refused' is modelled only: no chaos state makes a listening instance refuse connections",
            f"use one of {', '.join(FAULT_KINDS)}",
        )
    else:
        kind = ctx.choice(data["kind"], child(path, "kind"), FAULT_KINDS, "a fault kind")
    service = default_service
    if "service" in data:
        service = _service(ctx, data["service"], child(path, "service"), services) or default_service
    rate = 1.0
    if "rate" in data:
        rate = ctx.rate(data["rate"], child(path, "rate"), 0.5, positive=True) or 1.0
    status = 503
    if "status" in data:
        if kind is not None and kind != "error":
            ctx.error(child(path, "status"), f"status applies to kind: error, not {kind}", "remove status:")
        elif _is_int(data["status"]) and 200 <= data["status"] <= 599:
            status = int(data["status"])
        else:
            ctx.error(
                child(path, "status"), f"{_shown(data['status'])} is not an HTTP status from 200 to 599", "use e.g. 500"
            )
    delay = 0.0
    if kind == "latency":
        if "delay" not in data:
            ctx.error(child(path, "delay"), "a latency fault needs delay", "add delay: e.g. 20s (scaled by time_scale)")
        else:
            delay = ctx.duration(data["delay"], child(path, "delay"), "20s") or 0.0
    elif "delay" in data and kind is not None:
        ctx.error(child(path, "delay"), f"delay applies to kind: latency, not {kind}", "remove delay:")
    instances = None
    if "instances" in data:
        instances = ctx.integer(data["instances"], child(path, "instances"), 1, 1)
    limit = None
    if "limit" in data:
        if kind is not None and kind != "error":
            ctx.error(child(path, "limit"), f"limit applies to kind: error, not {kind}", "remove limit:")
        elif rate < 1.0:
            ctx.error(
                child(path, "limit"),
                f"limit fails the first requests of each instance, so it needs rate: 1.0, not {rate:g}",
                "remove rate: or limit:",
            )
        else:
            limit = ctx.integer(data["limit"], child(path, "limit"), 1, 3)
    if kind is None or len(ctx.issues) > before:
        return None
    return FaultSpec(ctx.where(path), service, kind, rate, status, delay, instances, limit)  # type: ignore[arg-type]


def _load(ctx: _Ctx, value: Any, path: str) -> LoadSpec | None:
    data = ctx.mapping(value, path, "{concurrency: 4} (closed loop) or {rate: 50, duration: 2s} (open loop)")
    if data is None:
        return None
    before = len(ctx.issues)
    ctx.unknown_keys(data, path, LOAD_KEYS, "load")
    opened = [k for k in ("rate", "duration") if k in data]
    closed = [k for k in ("concurrency", "requests") if k in data]
    spec = LoadSpec(ctx.where(path))
    if opened and closed:
        ctx.error(
            child(path, closed[0]),
            f"{closed[0]} is a closed-loop key, but {opened[0]} makes this an open loop",
            "give concurrency (and requests) for a closed loop, or rate and duration for an open loop",
        )
        return None
    if opened:
        rate = duration = None
        if "rate" not in data:
            ctx.error(child(path, "rate"), "an open loop needs rate", "add rate: requests per second, e.g. 50")
        else:
            rate = ctx.number(data["rate"], child(path, "rate"), "50 (requests per second)", above=0.0)
        if "duration" not in data:
            ctx.error(child(path, "duration"), "an open loop needs duration", "add duration: e.g. 2s (not time-scaled)")
        else:
            duration = ctx.duration(data["duration"], child(path, "duration"), "2s")
        spec = LoadSpec(spec.where, rate=rate, duration=duration)
    else:
        concurrency = 4
        if "concurrency" in data:
            concurrency = ctx.integer(data["concurrency"], child(path, "concurrency"), 1, 4) or 4
        requests = None
        if "requests" in data:
            requests = ctx.integer(data["requests"], child(path, "requests"), 1, 200)
        spec = LoadSpec(spec.where, concurrency=concurrency, requests=requests)
    path_value = None
    if "path" in data:
        path_value = ctx.string(data["path"], child(path, "path"), "/api/orders")
        if path_value is not None and not path_value.startswith("/"):
            ctx.error(child(path, "path"), f"{path_value!r} does not start with '/'", f"write /{path_value}")
    headers = None
    if "headers" in data:
        raw = ctx.mapping(data["headers"], child(path, "headers"), "{x-version: v2}")
        if raw is not None:
            for k, v in raw.items():
                if not isinstance(v, str):
                    ctx.error(
                        child(child(path, "headers"), k),
                        f"header value {_shown(v)} is not a string",
                        f"quote it: '{v}'",
                    )
            headers = {k: v for k, v in raw.items() if isinstance(v, str)}
    if len(ctx.issues) > before:
        return None
    return LoadSpec(spec.where, spec.concurrency, spec.requests, spec.rate, spec.duration, path_value, headers)


def _xfail(ctx: _Ctx, value: Any, path: str) -> XfailSpec | None:
    data = ctx.mapping(value, path, "{reason: 'why the claim cannot hold', strict: true}")
    if data is None:
        return None
    ctx.unknown_keys(data, path, ("reason", "strict"), "xfail")
    reason = None
    if "reason" not in data:
        ctx.error(child(path, "reason"), "xfail needs a reason", "add reason: why the claim cannot hold as written")
    else:
        reason = ctx.string(data["reason"], child(path, "reason"), "'attempts: 3 is four tries, not three'")
    strict = True
    if "strict" in data:
        got = ctx.boolean(data["strict"], child(path, "strict"))
        strict = True if got is None else got
    return XfailSpec(reason.strip(), strict) if reason is not None else None


# ---------------------------------------------------------------------------------------------- expectations


def _expect(ctx: _Ctx, claim: Mapping[str, Any], path: str, defaults: Mapping[str, Any]) -> tuple[ExpectSpec, ...]:
    """The claim's expectations, merged key by key over ``defaults.expect`` (the claim's keys win)."""
    layers: list[tuple[Mapping[str, Any], str]] = []
    for data, base in ((claim, path), (defaults, "defaults")):
        if "expect" in data:
            got = ctx.mapping(data["expect"], child(base, "expect"), "expect: {success_ratio: {at_least: 0.99}}")
            if got is not None:
                ctx.unknown_keys(got, child(base, "expect"), EXPECT_KEYS, "expect")
                layers.append((got, child(base, "expect")))
    merged: dict[str, tuple[Any, str]] = {}
    for data, base in reversed(layers):
        for key, value in data.items():
            merged[key] = (value, child(base, key))
    out: list[ExpectSpec] = []
    for key in EXPECT_KEYS:  # a fixed order: the record lists checks the same way for every claim
        if key not in merged:
            continue
        value, p = merged[key]
        out += _expectation(ctx, key, value, p)
    # Only when nothing is stated: a stated but invalid expectation has its own issue already.
    if not [k for k, (v, _) in merged.items() if not (k == "model_consistency" and v is False)]:
        ctx.error(
            child(path, "expect"),
            "the claim expects nothing",
            "add expect: with at least one of success_ratio, status_share, every_request, latency, counters, ...",
        )
    return tuple(out)


def _expectation(ctx: _Ctx, key: str, value: Any, path: str) -> list[ExpectSpec]:
    if key in CALL_GRAPH_KEYS:
        ctx.error(
            path,
            f"{key} {CALL_GRAPH_MESSAGE}",
            "remove it; what the caller's sidecar sees is claimable now: every_request.max_attempts bounds the "
            "upstream tries of each request",
        )
        return []
    if key == "model_consistency":
        if value is False:
            return []
        if value is True:
            return [ExpectSpec(key, ctx.where(path), {})]
        data = ctx.mapping(value, path, "model_consistency: true, or {delta: 0.05}")
        if data is None:
            return []
        ctx.unknown_keys(data, path, ("delta",), "model_consistency")
        options = _delta(ctx, data, path)
        return [] if options is None else [ExpectSpec(key, ctx.where(path), options)]
    if key in ("status_share", "counters"):
        example = (
            "{status: 503, about: 0.5, delta: 0.1}"
            if key == "status_share"
            else "{metric: upstream_rq_retry, equals: client_retries}"
        )
        return [s for data, p in ctx.entries(value, path, example) if (s := _one(ctx, key, data, p)) is not None]
    data = ctx.mapping(value, path, _EXAMPLES[key])
    if data is None:
        return []
    spec = _one(ctx, key, data, path)
    return [] if spec is None else [spec]


_EXAMPLES = {
    "success_ratio": "{at_least: 0.99, delta: 0.02}",
    "every_request": "{status: 504, max_attempts: 4}",
    "latency": "{at_most: 8s, at_least: 8s, slack: 0.15}",
    "overflow": "{equals: 0}",
    "ejection": "{after_errors: 5, within: 1.5s}",
}
_ALLOWED = {
    "success_ratio": (*BOUND_KEYS, "delta"),
    "status_share": ("status", *BOUND_KEYS, "delta"),
    "counters": ("metric", "equals", "at_least", "at_most", "role"),
    "every_request": ("status", "max_attempts", "attempts"),
    "latency": ("at_most", "at_least", "percentile", "slack"),
    "overflow": ("equals", "at_least"),
    "ejection": ("after_errors", "within", "instances"),
}


def _one(ctx: _Ctx, key: str, data: Mapping[str, Any], path: str) -> ExpectSpec | None:
    before = len(ctx.issues)
    ctx.unknown_keys(data, path, _ALLOWED[key], key)
    options: dict[str, Any] | None = {
        "success_ratio": _rate_bounds,
        "status_share": _status_share,
        "counters": _counter,
        "every_request": _every_request,
        "latency": _latency,
        "overflow": _overflow,
        "ejection": _ejection,
    }[key](ctx, data, path)
    if options is None or len(ctx.issues) > before:
        return None
    return ExpectSpec(key, ctx.where(path), options)


def _delta(ctx: _Ctx, data: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    if "delta" not in data:
        return {}
    value = data["delta"]
    if _is_number(value) and 0.0 < value < 1.0:
        return {"delta": float(value)}
    ctx.error(
        child(path, "delta"),
        f"{_shown(value)} is not a delta between 0 and 1 (exclusive)",
        "use e.g. 0.05: the smallest violation the check must catch",
    )
    return None


def _rate_bounds(ctx: _Ctx, data: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    given = [k for k in BOUND_KEYS if k in data]
    if len(given) != 1:
        ctx.error(
            path,
            "give exactly one of at_least, at_most or about" + (f" (got {', '.join(given)})" if given else ""),
            "e.g. at_least: 0.99 (a rate between 0 and 1)",
        )
        return None
    bound = ctx.rate(data[given[0]], child(path, given[0]), 0.875)
    delta = _delta(ctx, data, path)
    if bound is None or delta is None:
        return None
    return {given[0]: bound, **delta}


def _status_share(ctx: _Ctx, data: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    status = None
    if "status" not in data:
        ctx.error(child(path, "status"), "status_share needs status", "add status: e.g. 503")
    elif _is_int(data["status"]) and 100 <= data["status"] <= 599:
        status = int(data["status"])
    else:
        ctx.error(child(path, "status"), f"{_shown(data['status'])} is not an HTTP status", "use e.g. 503")
    bounds = _rate_bounds(ctx, data, path)
    if status is None or bounds is None:
        return None
    return {"status": status, **bounds}


def _counter(ctx: _Ctx, data: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    if "metric" not in data:
        ctx.error(child(path, "metric"), "a counter needs metric", "add metric: e.g. upstream_rq_retry")
    else:
        out["metric"] = ctx.string(data["metric"], child(path, "metric"), "upstream_rq_retry")
    if "equals" in data:
        value = data["equals"]
        if _is_number(value):
            out["equals"] = float(value)
        else:
            out["equals"] = ctx.choice(value, child(path, "equals"), CLIENT_COUNTS, "a number or a client-side count")
    for bound in ("at_least", "at_most"):
        if bound in data:
            out[bound] = ctx.number(data[bound], child(path, bound), "1")
    if not any(k in data for k in ("equals", "at_least", "at_most")):
        ctx.error(path, "a counter needs equals, at_least or at_most", "e.g. equals: client_retries, or at_least: 1")
    if "role" in data:
        out["role"] = ctx.choice(data["role"], child(path, "role"), ROLES, "a check role")
    return None if any(v is None for v in out.values()) else out


def _every_request(ctx: _Ctx, data: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    if "status" in data:
        value = data["status"]
        if _is_int(value) and 100 <= value <= 599:
            out["status"] = int(value)
        else:
            ctx.error(child(path, "status"), f"{_shown(value)} is not an HTTP status", "use e.g. 504")
            return None
    for key in ("max_attempts", "attempts"):
        if key in data:
            out[key] = ctx.integer(data[key], child(path, key), 1, 4)
    if not any(k in data for k in _ALLOWED["every_request"]):
        ctx.error(path, "every_request needs status, max_attempts or attempts", "e.g. {status: 504, attempts: 4}")
    return None if any(v is None for v in out.values()) else out


def _latency(ctx: _Ctx, data: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for key in ("at_most", "at_least"):
        if key in data:
            out[key] = ctx.duration(data[key], child(path, key), "8s (scaled by time_scale)", zero=True)
    if not any(k in data for k in ("at_most", "at_least")):
        ctx.error(path, "latency needs at_most and/or at_least", "e.g. {at_most: 8s} (scaled by time_scale)")
        return None
    if "percentile" in data:
        value = data["percentile"]
        if not (_is_number(value) and 0 < value <= 100):
            ctx.error(
                child(path, "percentile"), f"{_shown(value)} is not a percentile above 0 and at most 100", "use e.g. 99"
            )
            return None
        if "at_most" not in data:
            ctx.error(
                child(path, "percentile"),
                "percentile bounds at_most only (at_least always bounds the fastest request)",
                "add at_most:, or remove percentile:",
            )
            return None
        out["percentile"] = float(value)
    if "slack" in data:
        out["slack"] = ctx.duration(data["slack"], child(path, "slack"), "0.15 (not time-scaled)", zero=True)
    return None if any(v is None for v in out.values()) else out


def _overflow(ctx: _Ctx, data: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for key in ("equals", "at_least"):
        if key in data:
            out[key] = ctx.integer(data[key], child(path, key), 0, 0, "a count of at least 0")
    if not out:
        ctx.error(path, "overflow needs equals or at_least", "e.g. {equals: 0} or {at_least: 1}")
    return None if any(v is None for v in out.values()) else out


def _ejection(ctx: _Ctx, data: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for key in ("after_errors", "instances"):
        if key in data:
            out[key] = ctx.integer(data[key], child(path, key), 1, 5)
    if "within" in data:
        out["within"] = ctx.duration(data["within"], child(path, "within"), "1.5s (seconds into the load, not scaled)")
    if not out:
        ctx.error(path, "ejection needs after_errors, within or instances", "e.g. {after_errors: 5, within: 1.5s}")
    return None if any(v is None for v in out.values()) else out
