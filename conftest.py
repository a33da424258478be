"""Repository-level test configuration: the binaries some tests need, and what a missing one does.

The plugin itself is loaded through its entry point. A test marked ``envoy``, ``prometheus`` or
``chromium`` needs that binary. When it is missing, the test is skipped with a reason naming the binary
and how to install it; in CI (``CI=true``) or with ``--mesh-require-binaries`` it fails with the same
message instead, so a CI job without the binaries cannot go green by skipping what it was meant to run.
An explicit ``--mesh-require-binaries`` setting (``PYTEST_MESHCHECK_REQUIRE_BINARIES=0`` too) wins over
``CI``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.settings import MeshSettings

TRUTHY = ("1", "true", "yes", "on")  # as the plugin reads flag environment variables
FAILURE_KEY = pytest.StashKey[str]()


@dataclass(frozen=True)
class Binary:
    """A binary that tests carrying ``marker`` need.

    Attributes:
        marker: The marker naming the need.
        name: How messages call the binary.
        locate: Returns the path, or raises :class:`MeshSetupError` saying what is wrong and how to fix it.
        install: How to get it, added to every message.
    """

    marker: str
    name: str
    locate: Callable[[MeshSettings | None], str]
    install: str


def _envoy(settings: MeshSettings | None) -> str:
    from pytest_meshcheck.local.envoy import find_envoy

    # The same lookup as the tests' own (find_envoy), so "found" here means they can start it.
    return str(find_envoy(settings.envoy_bin if settings else None))


def _prometheus(_settings: MeshSettings | None) -> str:
    from pytest_meshcheck.local.prometheus import find_prometheus

    return str(find_prometheus())


def _chromium(_settings: MeshSettings | None) -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise MeshSetupError("neither chromium nor chromium-browser is on PATH")
    return found


BINARIES = (
    Binary("envoy", "Envoy", _envoy, "Or run ./dev setup"),
    Binary("prometheus", "Prometheus", _prometheus, "Or run ./dev setup"),
    Binary("chromium", "Chromium", _chromium, "Install it: apt-get install chromium (./dev test does)"),
)


def _settings(config: pytest.Config) -> MeshSettings | None:
    from pytest_meshcheck.plugin import SETTINGS_KEY

    # Absent with -p no:meshcheck: then only CI decides.
    return config.stash.get(SETTINGS_KEY, None)


def binaries_required(config: pytest.Config) -> str | None:
    """Why a missing binary fails the run (``"CI=true"``, ``"--mesh-require-binaries"``), or ``None`` to skip."""
    settings = _settings(config)
    if settings is not None and "require_binaries" in settings.given:
        return "--mesh-require-binaries" if settings.require_binaries else None
    ci = os.environ.get("CI", "")
    return f"CI={ci}" if ci.strip().lower() in TRUTHY else None


def missing_binaries(config: pytest.Config, markers: set[str]) -> dict[str, str]:
    """For each binary of ``markers`` that cannot be found: marker -> message naming it and how to install it."""
    settings = _settings(config)
    missing: dict[str, str] = {}
    for binary in BINARIES:
        if binary.marker not in markers:
            continue
        try:
            binary.locate(settings)
        except MeshSetupError as exc:
            missing[binary.marker] = f"{binary.name} is not installed: {exc}. {binary.install}"
    return missing


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too, not only in pyproject.toml: chromium is not there, and a pytester run of this
    # file has no pyproject.toml.
    registered = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    for binary in BINARIES:
        if binary.marker not in registered:
            config.addinivalue_line("markers", f"{binary.marker}: needs the real {binary.name} binary")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, or mark to fail, every test that needs a binary which is not installed."""
    needed = {b.marker for b in BINARIES for item in items if item.get_closest_marker(b.marker) is not None}
    missing = missing_binaries(config, needed)
    if not missing:
        return
    required = binaries_required(config)
    for item in items:
        reasons = [reason for marker, reason in missing.items() if item.get_closest_marker(marker) is not None]
        if not reasons:
            continue
        if required:
            item.stash[FAILURE_KEY] = (
                f"{' '.join(reasons)} (failing instead of skipping because {required} is set; "
                "PYTEST_MESHCHECK_REQUIRE_BINARIES=0 skips instead)"
            )
        else:
            item.add_marker(pytest.mark.skip(reason=" ".join(reasons)))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # tryfirst, and registered after pytest's skipping plugin, so this runs before a test module's own
    # skipif for the same binary could turn the failure back into a skip.
    failure = item.stash.get(FAILURE_KEY, None)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
