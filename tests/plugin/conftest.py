"""Plugin-level tests: pytester runs of small test files against the installed ``meshcheck`` plugin.

``pytester`` is registered from ``pytest_configure`` instead of ``pytest_plugins = ["pytester"]``:
pytest refuses ``pytest_plugins`` in a conftest that is not top-level, and with ``testpaths = ["tests"]``
this one is not, so the list form would abort collection of the whole suite when run from the repo root.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


@pytest.fixture(autouse=True)
def _no_outer_meshcheck_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runs under test see only the settings a test gives them, never the developer's own."""
    for name in list(os.environ):
        if name.startswith("PYTEST_MESHCHECK_"):
            monkeypatch.delenv(name)
