"""The ``load`` fixture: bounded open- and closed-loop load through the caller's sidecar.

Every call is bounded by a request count and a duration (the profile scales neither bound silently:
scenarios size their samples explicitly). Results are kept so the scenario report can chart them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_meshcheck.harness.timing import LOAD_START, TRAFFIC, Timings
from pytest_meshcheck.load import ClosedLoop, LoadResult, OpenLoop

if TYPE_CHECKING:
    from pytest_meshcheck.backend import MeshBackend
    from pytest_meshcheck.report.progress import Progress


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

    def __init__(self, mesh: MeshBackend, progress: Progress | None = None) -> None:
        self._mesh = mesh
        self.progress = progress
        self.listeners: list[Callable[[LoadPhase], None]] = []
        self.phases: list[LoadPhase] = []
        self.timings = Timings()
        self._sent = self._ok = 0

    def _run_with_progress(
        self, service: str, profile: OpenLoop | ClosedLoop, path: str, headers: Mapping[str, str] | None
    ) -> LoadResult:
        # The engine runs in a child process and reports only at the end, so live numbers come from the
        # caller's sidecar (the backend's live_counts) while the load runs in a worker thread.
        assert self.progress is not None
        outcome: dict[str, LoadResult | BaseException] = {}

        def work() -> None:
            try:
                outcome["result"] = self._mesh.run_load(service, profile, path=path, headers=headers)
            except BaseException as exc:
                outcome["error"] = exc

        base = self._mesh.live_counts(service)
        worker = threading.Thread(target=work, name="meshcheck-load", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.5)
            now = self._mesh.live_counts(service) if base is not None else None
            if base is not None and now is not None:
                done, ok = now
                self.progress.update(f"load on {service}", self._sent + done - base[0], self._ok + ok - base[1])
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        result = outcome["result"]
        assert isinstance(result, LoadResult)
        self._sent += result.count
        self._ok += result.success_count
        self.progress.update(f"load on {service}", self._sent, self._ok)
        return result

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
        # The engine's own span (first send to last answer) is traffic; the rest of the phase is the child
        # process starting and handing back its records.
        with self.timings.measure(LOAD_START):
            if self.progress is not None:
                result = self._run_with_progress(service, profile, path, headers)
            else:
                result = self._mesh.run_load(service, profile, path=path, headers=headers)
            self.timings.add(TRAFFIC, result.elapsed)
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
