"""A pytest plugin the scenario benches load (``-p scenario_timing_plugin``): where each scenario's time went.

For every test it appends one JSON line to ``$MESHCHECK_TIMINGS_FILE``: the node id, pytest's own
setup/call/teardown durations, and the scenario's :class:`pytest_meshcheck.harness.timing.Timings`
(traffic and each kind of wait, measured by the harness itself). It reads the ``mesh_scenario`` fixture
object after teardown, so the policy restore of the teardown is in it. Under pytest-xdist every worker
loads it and appends to the same file (one short ``write`` per line, opened in append mode).
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from typing import Any

import pytest

ENV = "MESHCHECK_TIMINGS_FILE"
_durations: dict[str, dict[str, float]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember pytest's duration of each phase (setup includes the session mesh start for the first test)."""
    if getattr(report, "node", None) is not None:
        return  # the xdist controller's copy of a worker's report: the worker writes it
    _durations.setdefault(report.nodeid, {})[report.when] = report.duration


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, None]:
    """After the fixtures are torn down, write the scenario's timings."""
    yield
    path = os.environ.get(ENV)
    scenario = getattr(item, "funcargs", {}).get("mesh_scenario")
    if not path or scenario is None:
        return
    line = {
        "nodeid": item.nodeid,
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
        "waits": scenario.timings.as_dict(),
        "requests": sum(p.result.count for p in scenario.load.phases),
        "outcome": scenario.record.outcome,
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    """Append pytest's phase durations once the teardown report exists."""
    path = os.environ.get(ENV)
    if path and nodeid in _durations:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"nodeid": nodeid, "phases": _durations.pop(nodeid)}) + "\n")
