"""Where a scenario's time goes: traffic, and each kind of wait, in seconds.

Every fixture object of one scenario (the ``Scenario``, its ``MeshPolicies``, ``Chaos`` and
``LoadDriver``) shares one :class:`Timings`. Each wait the harness makes is measured under a kind such as
``scrape: window end`` or ``policy push``. Measurements nest: a scrape wait inside the report's evidence
step counts as a scrape wait, not twice, so the kinds partition the time they cover and their sum never
exceeds the scenario's wall time. ``bench/bench_scenarios.py`` prints them per scenario and in total.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

# The kinds, so the bench and the docs use the same names.
TRAFFIC = "traffic"
LOAD_START = "load engine start/stop"
SCRAPE_START = "scrape: window start"
SCRAPE_END = "scrape: window end"
SCRAPE_GAUGE = "scrape: gauge wait"
POLICY = "policy push"
POLICY_RESTORE = "policy restore (teardown)"
CHAOS_APPLY = "chaos apply"
CHAOS_REVERT = "chaos revert"
REPORT_PROM = "report: Prometheus evidence"
LOG_FLAGS = "log flush: response flags"
LOG_SAMPLES = "log flush: sample requests (and join)"
REPORT_WRITE = "report: write JSON/HTML"


def sleep_kind(why: str) -> str:
    """The kind of a fixed sleep a scenario states (``fixed sleep: merge window``)."""
    return f"fixed sleep: {why}"


class Timings:
    """Seconds per kind of work, measured exclusively: time in a nested measure counts only for it.

    Attributes:
        seconds: Kind -> seconds, in order of first use.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        # Per open measure: [start, seconds in nested measures, whether it absorbs nested measures].
        self._stack: list[list[float]] = []

    def add(self, kind: str, seconds: float) -> None:
        """Add ``seconds`` to ``kind`` (for time measured elsewhere, such as the load engine's own)."""
        if self._stack and self._stack[-1][2]:
            return
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds
        if self._stack:
            self._stack[-1][1] += seconds

    @contextmanager
    def measure(self, kind: str, *, absorb: bool = False) -> Iterator[None]:
        """Count the wall time of the ``with`` block under ``kind``, less any nested measure's.

        With ``absorb``, nested measures count under ``kind`` too (a gauge wait is a loop of scrape waits).
        """
        if self._stack and self._stack[-1][2]:
            yield
            return
        frame = [time.monotonic(), 0.0, absorb]
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            total = time.monotonic() - frame[0]
            self.add(kind, total - frame[1])
            if self._stack:
                # The parent already got the nested kinds' share through add(); it must not count the
                # exclusive part of this measure again either.
                self._stack[-1][1] += frame[1]

    def sleep(self, seconds: float, why: str) -> None:
        """A fixed sleep that physics requires (an Envoy timer, say), counted under ``fixed sleep: why``."""
        with self.measure(sleep_kind(why)):
            time.sleep(seconds)

    def as_dict(self) -> dict[str, float]:
        """Kind -> seconds, rounded to milliseconds."""
        return {k: round(v, 3) for k, v in self.seconds.items()}
