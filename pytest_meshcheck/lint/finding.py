"""The data a lint run produces: rules, severities and findings."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(enum.IntEnum):
    """How bad a finding is; ordered so ``--fail-on`` can compare."""

    NOTE = 1
    WARNING = 2
    ERROR = 3

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Parse ``error``, ``warning`` or ``note`` (any case).

        Raises:
            ValueError: Not a severity name.
        """
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"{text!r} is not a severity; use error, warning or note") from None

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Rule:
    """One lint rule's stable description.

    Attributes:
        code: Stable code such as ``MC101``; never reused for another meaning.
        name: Short kebab-case name (SARIF ``name``).
        severity: Default severity.
        summary: One line: the mistake the rule finds.
        why: What Istio/Envoy really do, so the finding is believable.
        fix: How to fix it.
        versions: Istio versions the rule applies to, as text (``all``, ``>=1.24``).
        issue: URL of an upstream issue where users hit this, or ``""`` when none was found.
        scenario: pytest node id of the scenario demonstrating it on a live mesh, or ``""``.
    """

    code: str
    name: str
    severity: Severity
    summary: str
    why: str
    fix: str
    versions: str = "all"
    issue: str = ""
    scenario: str = ""


@dataclass(frozen=True)
class Finding:
    """One rule firing at one place.

    Attributes:
        rule: The rule.
        message: One-line message specific to this place.
        file: File the policy came from.
        line: One-based line, or ``None`` when unknown (reported as line 1 in SARIF).
        path: Dotted field path inside the document (``spec.http[0].timeout``), or ``""``.
        resource: ``Kind namespace/name`` of the resource, or ``""`` for file-level findings.
        severity: Severity of this finding (a rule may raise it, e.g. a routed empty subset).
    """

    rule: Rule
    message: str
    file: str
    line: int | None = None
    path: str = ""
    resource: str = ""
    severity: Severity | None = None

    @property
    def level(self) -> Severity:
        """The effective severity."""
        return self.severity or self.rule.severity

    @property
    def code(self) -> str:
        """The rule code."""
        return self.rule.code

    def sort_key(self) -> tuple[str, int, str, str]:
        """Stable order: file, line, code, message."""
        return (self.file, self.line or 0, self.rule.code, self.message)
