"""The ``load`` fixture: bounded open- and closed-loop load through the caller's sidecar.

Every call is bounded by a request count and a duration (the profile scales neither bound silently:
scenarios size their samples explicitly). Results are kept so the scenario report can chart them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_meshcheck.load import ClosedLoop, LoadResult, OpenLoop

if TYPE_CHECKING:
    from pytest_meshcheck.backend import MeshBackend


@dataclass
class LoadPhase:
    """One load run: where it went, what was sent, and the result."""

    service: str
    path: str
    profile: OpenLoop | ClosedLoop
    result: LoadResult
    started_at: float
    ended_at: float


class LoadDriver:
    """The ``load`` fixture's object.

    Args:
        mesh: The mesh backend.

    Attributes:
        listeners: Called after every run (the scenario recorder and the progress display listen here).
    """

    def __init__(self, mesh: MeshBackend) -> None:
        self._mesh = mesh
        self.listeners: list[Callable[[LoadPhase], None]] = []
        self.phases: list[LoadPhase] = []

    def run(
        self,
        service: str,
        profile: OpenLoop | ClosedLoop,
        *,
        path: str = "/",
        headers: Mapping[str, str] | None = None,
    ) -> LoadResult:
        """Run one load profile against ``service`` and record it."""
        started = time.time()
        result = self._mesh.run_load(service, profile, path=path, headers=headers)
        phase = LoadPhase(service, path, profile, result, started, time.time())
        self.phases.append(phase)
        for listener in self.listeners:
            listener(phase)
        return result

    def closed(
        self,
        service: str,
        *,
        concurrency: int,
        requests: int,
        duration: float = 60.0,
        path: str = "/",
        headers: Mapping[str, str] | None = None,
    ) -> LoadResult:
        """Closed loop: ``concurrency`` in flight until ``requests`` are done or ``duration`` passed."""
        return self.run(service, ClosedLoop(concurrency, duration, requests), path=path, headers=headers)

    def open(
        self,
        service: str,
        *,
        rate: float,
        duration: float,
        requests: int | None = None,
        path: str = "/",
        headers: Mapping[str, str] | None = None,
    ) -> LoadResult:
        """Open loop at ``rate`` per second for ``duration`` seconds (at most ``requests``)."""
        cap = requests if requests is not None else max(1, round(rate * duration))
        return self.run(service, OpenLoop(rate, duration, cap), path=path, headers=headers)
