"""``meshcheck lint``: static checks for Istio resilience mistakes that no other analyzer reports.

Each rule has a stable code (``MC1xx``), a severity, a fix, the Istio versions it applies to, an upstream
issue showing users hitting it and, where one exists, the scenario that demonstrates it on a live mesh.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_meshcheck.lint.finding import Finding, Rule, Severity
    from pytest_meshcheck.lint.rules import RULES
    from pytest_meshcheck.lint.run import LintOptions, LintResult, lint_paths, lint_policies

# Lazy, so the plugin can register --mesh-lint (lint.options) without importing the linter.
_EXPORTS = {
    "Finding": "pytest_meshcheck.lint.finding",
    "Rule": "pytest_meshcheck.lint.finding",
    "Severity": "pytest_meshcheck.lint.finding",
    "RULES": "pytest_meshcheck.lint.rules",
    "LintOptions": "pytest_meshcheck.lint.run",
    "LintResult": "pytest_meshcheck.lint.run",
    "lint_paths": "pytest_meshcheck.lint.run",
    "lint_policies": "pytest_meshcheck.lint.run",
}
__all__ = ["RULES", "Finding", "LintOptions", "LintResult", "Rule", "Severity", "lint_paths", "lint_policies"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pytest_meshcheck.lint' has no attribute {name!r}")
