"""Compile validated claims to the calls a Python scenario makes on the ``mesh_scenario`` fixture.

A compiled claim is a list of :class:`Call` values (``apply``, ``inject``, ``drive``, ``expect_*``) run in
order on a :class:`~pytest_meshcheck.harness.scenario.Scenario`, followed by ``verify()``. The engine that
predicts, plans, injects, drives and decides is the scenario's own: a claim and the Python scenario it
mirrors make the same calls, so they reach the same verdict.

Policies are resolved here, at collection time, so a policy file that does not load is reported before any
mesh starts, with the claims file's line next to the policy file's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_meshcheck.claims.schema import (
    SCALED,
    ClaimIssue,
    ClaimsError,
    ClaimSpec,
    FaultSpec,
    PolicyRef,
    Where,
    XfailSpec,
    parse_claims,
)
from pytest_meshcheck.errors import MeshcheckError, PolicyError
from pytest_meshcheck.harness.declare import ClosedLoop, Fault, OpenLoop
from pytest_meshcheck.policy import PolicySet, load_policies, load_policy_text
from pytest_meshcheck.policy.model import DestinationRule, VirtualService

if TYPE_CHECKING:
    from pytest_meshcheck.harness.scenario import Scenario

# Expectation key -> the Scenario method it compiles to.
METHODS = {
    "success_ratio": "expect_success_ratio",
    "status_share": "expect_status_share",
    "model_consistency": "expect_model_consistency",
    "counters": "expect_counter",
    "every_request": "expect_every_request",
    "latency": "expect_latency",
    "overflow": "expect_overflow",
    "ejection": "expect_ejection",
}
# Options passed positionally (the scenario API takes them first, without a keyword).
POSITIONAL = {"status_share": "status", "counters": "metric"}


class ClaimNotSupported(MeshcheckError):
    """A claim uses a key that compiles to a scenario method this version of pytest-meshcheck lacks."""


@dataclass(frozen=True)
class Call:
    """One call on the scenario: ``scenario.<method>(*args, **kwargs)``, from the claim key at ``where``."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    where: Where | None = None

    def python(self) -> str:
        """The call as Python source (what the equivalent scenario would write)."""
        parts = [_py(a) for a in self.args] + [f"{k}={_py(v)}" for k, v in self.kwargs.items()]
        return f"mesh_scenario.{self.method}({', '.join(parts)})"


def _py(value: Any) -> str:
    if isinstance(value, PolicySet):
        objects: list[VirtualService | DestinationRule] = [*value.virtual_services, *value.destination_rules]
        names = [f"{p.kind} {p.name}" for p in objects]
        return f"<PolicySet: {', '.join(names) or 'empty'}>"
    if isinstance(value, Fault):
        if value.kind == "error":
            limit = f", limit={value.limit}" if value.limit is not None else ""
            return f"Fault.error(rate={value.rate:g}, status={value.status}" + _instances(value) + limit + ")"
        if value.kind == "latency":
            return f"Fault.latency({value.delay:g}, probability={value.rate:g}" + _instances(value) + ")"
        return f"Fault.reset(rate={value.rate:g}" + _instances(value) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    if is_dataclass(value):
        return repr(value)
    return repr(value)


def _instances(fault: Fault) -> str:
    return f", instances={fault.instances}" if fault.instances is not None else ""


@dataclass(frozen=True)
class CompiledClaim:
    """A claim ready to run: its validated spec and the scenario calls it compiles to."""

    spec: ClaimSpec
    calls: tuple[Call, ...]

    @property
    def name(self) -> str:
        """The item's name (the last part of its node id)."""
        return self.spec.name

    @property
    def doc(self) -> str:
        """The generated test function's docstring: the title, then the description."""
        return self.spec.title + (f"\n\n{self.spec.description.strip()}" if self.spec.description.strip() else "")

    @property
    def xfail(self) -> XfailSpec | None:
        """Set when the claim is expected to fail."""
        return self.spec.xfail

    def python(self) -> str:
        """The claim as the Python scenario body it is equivalent to."""
        return "\n".join([*(c.python() for c in self.calls), "mesh_scenario.verify()"])

    def missing(self, scenario: object) -> list[Call]:
        """Calls ``scenario`` has no method for (keys compiled for an API still being added)."""
        return [c for c in self.calls if not callable(getattr(scenario, c.method, None))]

    def run(self, scenario: Scenario) -> None:
        """Declare everything on ``scenario``, then verify it once.

        Raises:
            ClaimNotSupported: The claim uses a key whose scenario method does not exist yet; nothing ran.
            ScenarioFailed: A claim or model check failed or was inconclusive.
        """
        __tracebackhide__ = True
        missing = self.missing(scenario)
        if missing:
            lines = [
                f"{c.where}: compiles to Scenario.{c.method}(), which this version of pytest-meshcheck does not "
                "have yet; the key is valid and runs once the scenario API has it"
                for c in missing
            ]
            raise ClaimNotSupported(
                "\n".join(lines) + "\nfix: remove the key to run the rest of the claim; nothing was injected or sent"
            )
        for call in self.calls:
            getattr(scenario, call.method)(*call.args, **call.kwargs)
        scenario.verify()


# ---------------------------------------------------------------------------------------------- policies


def _same(a: VirtualService | DestinationRule, b: VirtualService | DestinationRule) -> bool:
    """Same object as ``kubectl apply`` sees it (a missing namespace matches any)."""
    return a.kind == b.kind and a.name == b.name and (a.namespace == b.namespace or None in (a.namespace, b.namespace))


def overlay(base: PolicySet, new: PolicySet) -> PolicySet:
    """``base`` with ``new`` added; an object of ``new`` replaces the same-named object of ``base``.

    The warnings of a replaced object go with it (a deprecation in the replaced VirtualService no longer
    describes what is applied).
    """
    incoming: list[VirtualService | DestinationRule] = [*new.virtual_services, *new.destination_rules]
    existing: list[VirtualService | DestinationRule] = [*base.virtual_services, *base.destination_rules]
    replaced = {id(p) for p in existing if any(_same(p, n) for n in incoming)}
    gone = {(p.source.file, p.source.document) for p in existing if id(p) in replaced}
    return PolicySet(
        tuple(vs for vs in base.virtual_services if id(vs) not in replaced) + new.virtual_services,
        tuple(dr for dr in base.destination_rules if id(dr) not in replaced) + new.destination_rules,
        tuple(w for w in base.warnings if (w.file, w.document) not in gone) + new.warnings,
        base.skipped + new.skipped,
    )


class PolicyCache:
    """Policy files loaded once per collection, however many claims name them."""

    def __init__(self) -> None:
        self._sets: dict[Path, PolicySet | PolicyError] = {}

    def load(self, path: Path) -> PolicySet:
        """Load a file or directory, or raise the error its first load raised.

        Raises:
            PolicyError: The policies do not load.
        """
        if path not in self._sets:
            try:
                self._sets[path] = load_policies(path)
            except PolicyError as exc:
                self._sets[path] = exc
        got = self._sets[path]
        if isinstance(got, PolicyError):
            raise got
        return got


def resolve_policies(refs: tuple[PolicyRef, ...], file: str, cache: PolicyCache) -> PolicySet:
    """The policies a claim applies: every entry in order, later objects replacing same-named earlier ones.

    Raises:
        ClaimsError: An entry does not load; each policy problem is named with the claims file's line.
    """
    issues: list[ClaimIssue] = []
    result = PolicySet()
    for ref in refs:
        try:
            if ref.path is not None:
                loaded = cache.load(ref.path)
            else:
                source = file if ref.exact_lines else f"{file} {ref.where.path} (inline)"
                loaded = load_policy_text(ref.text, source=source)
                if not len(loaded):
                    issues.append(
                        ClaimIssue(
                            ref.where,
                            "an inline policy must be a VirtualService or DestinationRule of networking.istio.io",
                            "write apiVersion: networking.istio.io/v1 and kind: VirtualService or DestinationRule",
                        )
                    )
                    continue
        except PolicyError as exc:
            issues += [_policy_issue(ref, i) for i in exc.issues]
            continue
        result = overlay(result, loaded)
    if issues:
        raise ClaimsError(issues)
    return result


def _policy_issue(ref: PolicyRef, issue: Any) -> ClaimIssue:
    fix = issue.fix or "fix the policy"
    if ref.path is None and ref.exact_lines:
        # Inline text keeps the claims file's lines, so the issue points into the claims file itself.
        return ClaimIssue(Where(ref.where.file, issue.line, f"{ref.where.path}.{issue.path}"), issue.message, fix)
    at = f"{issue.file}:{issue.line}" if issue.line else issue.file
    return ClaimIssue(ref.where, f"policy {at} (document {issue.document}) {issue.path}: {issue.message}", fix)


# ---------------------------------------------------------------------------------------------- claims


def _fault(spec: FaultSpec, scale: float) -> Fault:
    if spec.kind == "error":
        return Fault.error(spec.rate, spec.status, instances=spec.instances, limit=spec.limit)
    if spec.kind == "latency":
        return Fault.latency(spec.delay * scale, probability=spec.rate, instances=spec.instances)
    return Fault.reset(spec.rate, instances=spec.instances)


def compile_claim(spec: ClaimSpec, policies: PolicySet | None) -> CompiledClaim:
    """The scenario calls of one claim; ``policies`` are its resolved policies (``None``: none named)."""
    scale = spec.time_scale if spec.time_scale is not None else 1.0
    calls: list[Call] = []
    if policies is not None:
        kwargs = {"time_scale": spec.time_scale} if spec.time_scale is not None else {}
        calls.append(Call("apply", (policies,), kwargs, spec.policies[0].where if spec.policies else spec.where))
    calls += [Call("inject", (f.service, _fault(f, scale)), {}, f.where) for f in spec.faults]
    load = spec.load
    shape: ClosedLoop | OpenLoop
    if load.is_open:
        assert load.rate is not None
        assert load.duration is not None
        shape = OpenLoop(load.rate, load.duration)
    else:
        shape = ClosedLoop(load.concurrency, load.requests)
    drive_kwargs: dict[str, Any] = {}
    if load.headers is not None:
        drive_kwargs["headers"] = dict(load.headers)
    if load.path is not None:
        drive_kwargs["path"] = load.path
    calls.append(Call("drive", (spec.service, shape), drive_kwargs, load.where))
    for e in spec.expect:
        options = {k: (v * scale if (e.key, k) in SCALED else v) for k, v in e.options.items()}
        first = POSITIONAL.get(e.key)
        args = (options.pop(first),) if first is not None else ()
        calls.append(Call(METHODS[e.key], args, options, e.where))
    return CompiledClaim(spec, tuple(calls))


def compile_file(path: Path, *, display: str, services: Collection[str] | None = None) -> list[CompiledClaim]:
    """Read, validate and compile every claim of a claims file.

    Args:
        path: The claims file.
        display: How messages name the file (relative to the rootdir, say).
        services: Service names of the topology, to check ``service:`` keys; ``None`` skips the check.

    Raises:
        ClaimsError: Every problem of the file: schema, policies, services.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        issue = ClaimIssue(Where(display, None, ""), f"cannot be read: {exc}", "save it as UTF-8 text")
        raise ClaimsError([issue]) from exc
    document = parse_claims(text, file=display, base_dir=path.parent, services=services)
    cache = PolicyCache()
    issues: list[ClaimIssue] = []
    out: list[CompiledClaim] = []
    for spec in document.claims:
        policies = None
        if spec.policies:
            try:
                policies = resolve_policies(spec.policies, display, cache)
            except ClaimsError as exc:
                issues += exc.issues
                continue
        out.append(compile_claim(spec, policies))
    if issues:
        raise ClaimsError(issues)
    return out
