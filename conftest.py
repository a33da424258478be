"""Repository-level test configuration: tiers only. The plugin itself is loaded through its entry point."""

from __future__ import annotations

import shutil

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests that need a binary which is not installed, naming the binary and how to get it."""
    missing = {
        "prometheus": None if shutil.which("prometheus") else "Prometheus not installed: run ./dev setup "
        "(apt-get install prometheus)",
    }
    for item in items:
        for marker, reason in missing.items():
            if reason and item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))
