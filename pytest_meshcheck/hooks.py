"""Hooks other pytest plugins implement to extend pytest-meshcheck.

Implement them in a ``conftest.py`` or a plugin, as for any pytest hook::

    def pytest_meshcheck_scenario_finished(record, item):
        for check in record.checks:
            if check.outcome != "passed":
                send_to_dashboard(item.nodeid, check.name, check.detail)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_meshcheck.report.record import ScenarioRecord

hookspec = pytest.hookspec


@hookspec
def pytest_meshcheck_scenario_finished(record: ScenarioRecord, item: pytest.Item) -> None:
    """A scenario finished and its record (every check, its outcome and error rates) was written.

    Called once per scenario test, after its verdict, on the process that ran it (an xdist worker too).

    Args:
        record: The scenario's record, as its JSON and HTML report show it.
        item: The test item.
    """
