"""``pytest --mesh-lint``: every Istio policy YAML file becomes a test that fails on lint findings.

Wiring (in the plugin): call :func:`add_lint_options` from ``pytest_addoption`` and return
:func:`collect_lint_file` from ``pytest_collect_file`` when it is not ``None``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_meshcheck.lint.finding import Severity
from pytest_meshcheck.lint.formats import render_text
from pytest_meshcheck.lint.options import add_lint_options as add_lint_options  # re-exported
from pytest_meshcheck.lint.run import LintOptions, LintResult, lint_paths
from pytest_meshcheck.policy.loader import YAML_SUFFIXES

_MARKER = "networking.istio.io"
_OPTIONS_KEY = pytest.StashKey[LintOptions]()


def _option(config: pytest.Config, name: str) -> Any:
    # Options registered by the plugin's settings table may be absent when this module is used alone.
    try:
        return config.getoption(name)
    except ValueError:
        return None


def lint_options(config: pytest.Config) -> LintOptions:
    """The topology and Istio version of this run, so that lint and scenarios judge the same platform.

    They come from the run's settings (``--mesh-topology`` / ``$PYTEST_MESHCHECK_TOPOLOGY`` / ini
    ``mesh_topology``, and likewise ``mesh_istio_version``), validated by :func:`settings.resolve`, which
    raises a ``pytest.UsageError`` naming the option and the fix for a bad value. Resolved once per run.
    """
    cached = config.stash.get(_OPTIONS_KEY, None)
    if cached is None:
        from pytest_meshcheck.settings import resolve

        try:
            settings = resolve(config)
        except ValueError:
            # The settings' ini keys are not registered: the lint collector is used without the plugin.
            cached = LintOptions(_option(config, "mesh_topology"), _option(config, "mesh_istio_version"))
        else:
            cached = LintOptions(settings.topology, settings.istio_version)
        config.stash[_OPTIONS_KEY] = cached
    return cached


def collect_lint_file(file_path: Path, parent: pytest.Collector) -> LintFile | None:
    """A :class:`LintFile` for an Istio policy YAML file when ``--mesh-lint`` is on, else ``None``."""
    if not _option(parent.config, "mesh_lint") or file_path.suffix not in YAML_SUFFIXES:
        return None
    if file_path.name.endswith((".meshcheck.yaml", ".meshcheck.yml")):
        return None  # claims files are collected by the claims plugin
    try:
        if _MARKER not in file_path.read_text(encoding="utf-8", errors="replace"):
            return None
    except OSError:
        pass  # unreadable: let the lint item report it as MC001
    return LintFile.from_parent(parent, path=file_path)


class LintFile(pytest.File):
    """One policy file: yields a single :class:`LintItem`."""

    def collect(self) -> Iterator[pytest.Item]:
        """Yield the file's lint item."""
        yield LintItem.from_parent(self, name="mesh-lint")


class LintFailure(Exception):
    """Findings at or above the fail-on severity."""


class LintItem(pytest.Item):
    """Lints its file; fails with the text report when findings reach ``--mesh-lint-fail-on``."""

    def runtest(self) -> None:
        """Lint the file."""
        result: LintResult = lint_paths([self.path], lint_options(self.config))
        fail_on = Severity.parse(_option(self.config, "mesh_lint_fail_on") or "error")
        for f in result.findings:
            self.user_properties.append((f"meshcheck_lint_{f.code}", f"{f.line}: {f.message}"))
        if result.at_or_above(fail_on):
            raise LintFailure(render_text(result))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        """Show the lint report rather than a traceback."""
        if isinstance(excinfo.value, LintFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Location shown in reports."""
        return self.path, None, f"mesh-lint {self.path.name}"
