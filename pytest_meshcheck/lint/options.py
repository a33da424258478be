"""The ``--mesh-lint`` options, in a module of their own.

The plugin registers them at start-up, and an unrelated run must not import the linter
(``tests/plugin/test_inert.py``).
"""

from __future__ import annotations

import pytest

__all__ = ["add_lint_options"]


def add_lint_options(parser: pytest.Parser) -> None:
    """Register ``--mesh-lint`` and ``--mesh-lint-fail-on``."""
    group = parser.getgroup("meshcheck")
    group.addoption(
        "--mesh-lint",
        action="store_true",
        default=False,
        dest="mesh_lint",
        help="Collect Istio policy YAML files and fail each one with lint findings (see docs/reference/lint.md)",
    )
    group.addoption(
        "--mesh-lint-fail-on",
        default="error",
        dest="mesh_lint_fail_on",
        choices=("error", "warning", "note"),
        help="Lowest finding severity that fails a --mesh-lint item. Default: error",
    )
