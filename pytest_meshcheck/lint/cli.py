"""``meshcheck lint FILES|DIRS``: argument parsing and exit codes (0 clean, 1 findings, 4 usage)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pytest_meshcheck.lint.finding import Severity
from pytest_meshcheck.lint.formats import FORMATS
from pytest_meshcheck.lint.rules import RULES
from pytest_meshcheck.lint.run import LintOptions, LintUsageError, lint_paths

EXIT_CLEAN = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 4


def _statuses(text: str) -> tuple[int, ...]:
    try:
        codes = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of HTTP statuses") from None
    if not codes or any(not 100 <= c <= 599 for c in codes):
        raise argparse.ArgumentTypeError(f"{text!r}: statuses must be 100-599")
    return codes


def _severity(text: str) -> Severity:
    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add lint's arguments to ``parser``."""
    parser.add_argument("paths", nargs="*", metavar="FILE|DIR", help="Policy files or directories (recursive)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="text", help="Output format. Default: text")
    parser.add_argument(
        "--fail-on",
        type=_severity,
        default=Severity.ERROR,
        metavar="SEVERITY",
        help="Exit 1 when a finding is at or above this severity (error, warning, note). Default: error",
    )
    parser.add_argument("--topology", metavar="FILE", help="Topology YAML (replicas, versions). Default: the platform")
    parser.add_argument("--istio-version", metavar="X.Y", help="Istio release whose behaviour to assume")
    parser.add_argument(
        "--returns",
        type=_statuses,
        default=(500, 503),
        metavar="CODES",
        help="Statuses the destinations fail with, for retry and outlier rules. Default: 500,503",
    )
    parser.add_argument("--non-idempotent", metavar="REGEX", help="Hosts/paths never to retry once sent")
    parser.add_argument("--output", "-o", metavar="FILE", help="Write the report to FILE instead of stdout")
    parser.add_argument("--list-rules", action="store_true", help="Print the rules and exit")
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``lint`` on a ``meshcheck`` subparsers object and return its parser."""
    parser = subparsers.add_parser("lint", help="Lint policies for resilience mistakes no other analyzer finds")
    return configure(parser)


def _list_rules() -> str:
    rows = [f"{r.code}  {r.severity!s:<7}  {r.name}: {r.summary}" for r in RULES.values()]
    return "\n".join(rows) + "\n"


def run(args: argparse.Namespace) -> int:
    """Run lint for parsed ``args``; returns the exit code."""
    if args.list_rules:
        sys.stdout.write(_list_rules())
        return EXIT_CLEAN
    if not args.paths:
        sys.stderr.write("meshcheck lint: give at least one policy file or directory\n")
        return EXIT_USAGE
    opts = LintOptions(args.topology, args.istio_version, args.returns)
    if args.non_idempotent:
        opts = LintOptions(args.topology, args.istio_version, args.returns, args.non_idempotent)
    try:
        result = lint_paths(args.paths, opts)
    except LintUsageError as exc:
        sys.stderr.write(f"meshcheck lint: {exc}\n")
        return EXIT_USAGE
    report = FORMATS[args.format](result)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(report)
        except OSError as exc:
            sys.stderr.write(f"meshcheck lint: cannot write {args.output}: {exc.strerror or exc}\n")
            return EXIT_USAGE
    else:
        sys.stdout.write(report)
    if result.notes and args.format != "text":
        for note in result.notes:
            sys.stderr.write(f"meshcheck lint: {note}\n")
    return EXIT_FINDINGS if result.at_or_above(args.fail_on) else EXIT_CLEAN


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pytest_meshcheck.lint``; argparse usage errors exit 4, not 2."""
    parser = configure(argparse.ArgumentParser(prog="meshcheck lint", description=__doc__))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_CLEAN if exc.code == 0 else EXIT_USAGE
    return run(args)
