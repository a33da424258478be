"""Errors raised by pytest-meshcheck.

The tree::

    MeshcheckError
    ├── PolicyError            a policy file is malformed or rejected as Istio's admission would
    ├── TopologyError          a topology file is malformed, or a policy does not fit it
    ├── MeshSetupError         a binary is missing, a port is busy, a process did not become ready
    │   └── MeshTimeoutError   something did not converge in time (also a ``TimeoutError``)
    ├── ChaosError             a fault could not be applied or reverted
    │   └── ChaosNotEffective  a fault was applied but the destination never saw it
    └── PromQueryError         Prometheus could not answer a query

Every message says what failed, where (file, document, field, option or port) and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class MeshcheckError(Exception):
    """Base class of every error pytest-meshcheck raises on purpose."""


class MeshcheckWarning(UserWarning):
    """A policy that loads but may not do what it says (a deprecated field istiod ignores, for example).

    Issued with :func:`warnings.warn`, so ``-W error::pytest_meshcheck.MeshcheckWarning`` turns it into a
    failure and ``filterwarnings`` can silence it.
    """


@dataclass(frozen=True)
class PolicyIssue:
    """One problem found in one policy document.

    Attributes:
        file: The file the document came from, or ``<string>``.
        document: Zero-based index of the document in a multi-document file.
        path: Dotted field path inside the document, such as ``spec.http[0].retries.attempts``.
        message: What is wrong.
        fix: How to fix it.
        line: One-based line of the offending field when known.
    """

    file: str
    document: int
    path: str
    message: str
    fix: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}" + (f":{self.line}" if self.line else "") + f" (document {self.document})"
        text = f"{where}: {self.path}: {self.message}"
        return f"{text}. Fix: {self.fix}" if self.fix else text


class PolicyError(MeshcheckError):
    """A policy file or document is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues = list(issues)
        lines = [str(i) for i in self.issues]
        super().__init__(f"{len(lines)} policy error(s):\n  " + "\n  ".join(lines) if len(lines) > 1 else lines[0])


class TopologyError(MeshcheckError):
    """A topology file is invalid, or a policy references something the topology lacks."""


class MeshSetupError(MeshcheckError):
    """The mesh could not be started: missing binary, busy port, a process that died or never got ready."""

    def __init__(self, message: str, *, log_tail: str = "", log_path: Path | None = None) -> None:
        self.log_tail = log_tail
        self.log_path = log_path
        text = message
        if log_path is not None:
            text += f"\n  log: {log_path}"
        if log_tail:
            text += "\n  last log lines:\n    " + "\n    ".join(log_tail.splitlines()[-15:])
        super().__init__(text)


class MeshTimeoutError(MeshSetupError, TimeoutError):
    """Something the mesh waited for did not happen in time."""


class ChaosError(MeshcheckError):
    """A fault could not be applied or reverted."""


class ChaosNotEffective(ChaosError):
    """A fault was applied, yet the destination shows it never happened."""


class PromQueryError(MeshcheckError):
    """Prometheus could not answer a query."""

    def __init__(self, message: str, *, query: str = "") -> None:
        self.query = query
        super().__init__(f"{message} (query: {query})" if query else message)
