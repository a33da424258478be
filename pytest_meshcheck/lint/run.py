"""Run every rule over policy files or policies in memory; invalid input becomes findings, never a traceback."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pytest_meshcheck.errors import MeshcheckError, PolicyError
from pytest_meshcheck.istio_version import IstioVersion, parse_istio_version
from pytest_meshcheck.lint.chains import check_chains
from pytest_meshcheck.lint.context import DEFAULT_NON_IDEMPOTENT, LintContext
from pytest_meshcheck.lint.destinations import check_destination_rules
from pytest_meshcheck.lint.finding import Finding, Severity
from pytest_meshcheck.lint.hosts import check_hosts
from pytest_meshcheck.lint.routes import check_routes
from pytest_meshcheck.lint.rules import RULES
from pytest_meshcheck.policy.loader import load_policies, unique_files, yaml_files
from pytest_meshcheck.policy.model import PolicySet
from pytest_meshcheck.topology import Topology, load_topology


@dataclass(frozen=True)
class LintOptions:
    """What to assume while linting.

    Attributes:
        topology: Topology file, or ``None`` for the packaged default (the platform).
        istio: Istio version (``1.30``), or ``None`` for the default.
        returns: Statuses the destinations fail with, for the retry and outlier rules.
        non_idempotent: Regex of hosts and paths whose requests must not be retried once sent.
    """

    topology: str | Path | None = None
    istio: str | None = None
    returns: tuple[int, ...] = (500, 503)
    non_idempotent: str = DEFAULT_NON_IDEMPOTENT


@dataclass
class LintResult:
    """Findings of one run, in stable order, with what was read."""

    findings: list[Finding]
    files: list[str]
    policies: int
    istio: IstioVersion
    topology: str
    notes: list[str] = field(default_factory=list)

    def at_or_above(self, level: Severity) -> list[Finding]:
        """Findings whose severity is ``level`` or worse."""
        return [f for f in self.findings if f.level >= level]


class LintUsageError(ValueError):
    """A path that does not exist, or options that cannot be used (exit code 4)."""


def collect_files(paths: Iterable[str | Path]) -> list[Path]:
    """YAML files named or found (recursively, sorted) under the given paths.

    Raises:
        LintUsageError: A path does not exist.
    """
    out: list[Path] = []
    for given in paths:
        found = yaml_files(Path(given))
        if found is None:
            raise LintUsageError(f"{given}: no such file or directory")
        out += found
    return unique_files(out)


def _load(files: list[Path]) -> tuple[PolicySet, list[Finding]]:
    """Load file by file, so one broken file does not hide the policies of the others."""
    policies = PolicySet()
    findings: list[Finding] = []
    for file in files:
        try:
            policies = policies.merged(load_policies(file))
        except PolicyError as exc:
            for issue in exc.issues:
                where = f"{issue.path}: " if issue.path not in ("(file)", "(document)", "") else ""
                text = f"document {issue.document}: {where}{issue.message}"
                if issue.fix:
                    text += f" (fix: {issue.fix})"
                findings.append(Finding(RULES["MC001"], text, issue.file, issue.line, issue.path))
    return policies, findings


def lint_paths(paths: Iterable[str | Path], options: LintOptions | None = None) -> LintResult:
    """Lint every policy in ``paths`` with every rule.

    Raises:
        LintUsageError: A path does not exist, or the options are invalid.
    """
    opts = options or LintOptions()
    given = [str(p) for p in paths]
    files = collect_files(given)
    try:
        istio = parse_istio_version(opts.istio)
        topology: Topology = load_topology(opts.topology)
        pattern = re.compile(opts.non_idempotent, re.IGNORECASE)
    # A bad --istio-version, --topology or pattern is the caller's input, not a crash.
    except (MeshcheckError, OSError, re.error) as exc:
        raise LintUsageError(str(exc)) from exc
    policies, load_findings = _load(files)
    findings = lint_policies(
        policies, topology, istio, returns=tuple(opts.returns), non_idempotent=pattern, findings=load_findings
    )
    notes: list[str] = []
    if not len(policies) and not findings:
        notes.append(f"{RULES['MC002'].code}: no VirtualService or DestinationRule found in {', '.join(given)}")
    return LintResult(findings, [str(f) for f in files], len(policies), istio, topology.source, notes)


def lint_policies(
    policies: PolicySet,
    topology: Topology,
    istio: IstioVersion,
    *,
    returns: tuple[int, ...] = (500, 503),
    non_idempotent: str | re.Pattern[str] = DEFAULT_NON_IDEMPOTENT,
    findings: Iterable[Finding] = (),
) -> list[Finding]:
    """Lint policies already in memory (a scenario's applied set) with every rule.

    Findings point at each resource's ``SourceRef`` (file and line as loaded), exactly as for files.

    Args:
        policies: The policies to judge together (cross-resource rules see all of them).
        topology: Services, replicas and versions the policies run against.
        istio: The Istio release whose behaviour to assume.
        returns: Statuses the destinations fail with, for the retry and outlier rules.
        non_idempotent: Regex (text or compiled; text is case-insensitive) of non-idempotent hosts and paths.
        findings: Findings already made (load errors), kept in the result.

    Returns:
        Every finding, in stable order (file, line, code, message).
    """
    pattern = re.compile(non_idempotent, re.IGNORECASE) if isinstance(non_idempotent, str) else non_idempotent
    ctx = LintContext(policies, topology, istio, tuple(returns), pattern, list(findings))
    check_routes(ctx)
    check_destination_rules(ctx)
    check_hosts(ctx)
    check_chains(ctx)
    return sorted(ctx.findings, key=Finding.sort_key)
