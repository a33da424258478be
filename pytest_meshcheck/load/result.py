"""The outcome of one load run, with the summaries scenarios assert on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pytest_meshcheck.load.profile import ClosedLoop, OpenLoop
from pytest_meshcheck.load.records import ERROR_KINDS, LoadRecord, LoadRecords

_COLUMN_NAMES = ("intended", "sent", "done", "status", "error", "instance", "attempts", "overloaded")


def _index(table: list[str], name: str) -> int:
    if name not in table:
        table.append(name)
    return table.index(name)


def _histogram(values: npt.NDArray[np.integer]) -> dict[int, int]:
    keys, counts = np.unique(values, return_counts=True)
    return {int(k): int(c) for k, c in zip(keys, counts, strict=True)}


@dataclass(frozen=True, eq=False)
class LoadResult:
    """Records of every request of one run, and summaries of them.

    Record times are seconds from the start; add ``started_monotonic`` (``time.monotonic()``, the same clock in
    every process of the machine) or ``started_wall`` (``time.time()``) to place them on a timeline.

    Usage::

        result = run_load("http://127.0.0.1:15001/", OpenLoop(rate=200, duration=2, max_requests=400),
                          host="order-service")
        assert result.success_count == result.count
        p99 = result.latency_percentiles([99])[99]

    Attributes:
        profile: The load profile that ran.
        records: The columnar records (see :class:`~pytest_meshcheck.load.records.LoadRecords`).
        started_monotonic: Start of the run on ``time.monotonic()``.
        started_wall: Start of the run on ``time.time()``.
        event_loop: The engine's event loop class, such as ``uvloop.Loop``.
    """

    profile: OpenLoop | ClosedLoop
    records: LoadRecords
    started_monotonic: float
    started_wall: float
    event_loop: str = ""

    @property
    def count(self) -> int:
        """Number of requests recorded (every one that was due or started, whatever its outcome)."""
        return self.records.count

    @property
    def latencies(self) -> npt.NDArray[np.float64]:
        """Latency of each request in seconds (from intended time in open loop, from send in closed loop)."""
        return self.records.latency

    def status_histogram(self) -> dict[int, int]:
        """Requests per HTTP status; 0 counts requests that got no response."""
        return _histogram(self.records.status[: self.count])

    def error_histogram(self) -> dict[str, int]:
        """Requests per error kind (``connect``, ``reset``, ``timeout``, ``cancelled``, ``protocol``)."""
        return {ERROR_KINDS[k]: c for k, c in _histogram(self.records.error[: self.count]).items() if k}

    @property
    def success_count(self) -> int:
        """Requests answered with a 2xx status."""
        status = self.records.status[: self.count]
        return int(np.count_nonzero((status >= 200) & (status < 300)))

    @property
    def overloaded_count(self) -> int:
        """Responses carrying ``x-envoy-overloaded``."""
        return int(np.count_nonzero(self.records.overloaded[: self.count]))

    def latency_percentiles(
        self, percentiles: Iterable[float] = (50, 90, 99), *, statuses: Iterable[int] | None = None
    ) -> dict[float, float]:
        """Latency percentiles in seconds (numpy's linear interpolation).

        Args:
            percentiles: Percentiles between 0 and 100.
            statuses: Only requests with these statuses (e.g. ``[200]``); default: every request, including
                failures, whose latency is the time until the failure was seen.

        Returns:
            Percentile to seconds; NaN when no request qualifies.
        """
        wanted = list(percentiles)
        latency = self.latencies
        if statuses is not None:
            latency = latency[np.isin(self.records.status[: self.count], list(statuses))]
        if latency.size == 0:
            return {p: float("nan") for p in wanted}
        values = np.percentile(latency, wanted)
        return {p: float(v) for p, v in zip(wanted, values, strict=True)}

    @property
    def achieved_rate(self) -> float:
        """Requests sent per second: ``(sent - 1) / (last send - first send)``; 0.0 with fewer than 2 sent."""
        sent = self.records.sent[: self.count]
        sent = sent[~np.isnan(sent)]
        if sent.size < 2:
            return 0.0
        span = float(sent.max() - sent.min())
        return (sent.size - 1) / span if span > 0 else float("inf")

    @property
    def elapsed(self) -> float:
        """Seconds from the start to the last completion."""
        return float(self.records.done[: self.count].max()) if self.count else 0.0

    def responses_from(self, instance: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.integer]]:
        """Wall times and statuses of the responses ``instance`` sent, in time order (for ejection timelines)."""
        n = self.count
        if instance not in self.records.instances:
            return np.empty(0), np.empty(0, dtype=np.int64)
        mask = np.asarray(self.records.instance[:n]) == self.records.instances.index(instance)
        times = self.started_wall + np.asarray(self.records.done[:n], dtype=np.float64)[mask]
        order = np.argsort(times)
        return times[order], np.asarray(self.records.status[:n])[mask][order]

    def instance_counts(self) -> dict[str | None, int]:
        """Requests per serving instance (``x-meshcheck-instance``); ``None`` counts those without one."""
        names = self.records.instances
        return {
            (names[code] if code >= 0 else None): c
            for code, c in _histogram(self.records.instance[: self.count]).items()
        }

    def attempt_histogram(self) -> dict[int | None, int]:
        """Requests per ``x-envoy-attempt-count``; ``None`` counts those without the header."""
        return {(k if k >= 0 else None): c for k, c in _histogram(self.records.attempts[: self.count]).items()}

    def to_records(self) -> list[LoadRecord]:
        """Every request as a :class:`~pytest_meshcheck.load.records.LoadRecord`, in request order."""
        return self.records.to_list()

    def summary(self) -> dict[str, object]:
        """A small JSON-ready summary for reports and messages."""
        p = self.latency_percentiles((50, 90, 99))
        return {
            "count": self.count,
            "success": self.success_count,
            "status": self.status_histogram(),
            "errors": self.error_histogram(),
            "achieved_rate": round(self.achieved_rate, 1),
            "latency_ms": {f"p{k:g}": round(v * 1000, 3) for k, v in p.items()},
            "instances": self.instance_counts(),
            "attempts": self.attempt_histogram(),
            "overloaded": self.overloaded_count,
        }

    @classmethod
    def concat(cls, results: Iterable[LoadResult]) -> LoadResult:
        """One result holding several consecutive runs (such as the batches of a sequential test).

        Times are shifted onto the first run's clock and instance codes merged; the profile is the first
        run's. Selected-header columns are not carried over.

        Raises:
            ValueError: No results given.
        """
        runs = list(results)
        if not runs:
            raise ValueError("LoadResult.concat needs at least one result")
        first = runs[0]
        instances: list[str] = []
        columns: dict[str, list[npt.NDArray[np.generic]]] = {name: [] for name in _COLUMN_NAMES}
        for run in runs:
            rec, n = run.records, run.count
            shift = run.started_monotonic - first.started_monotonic
            remap = np.array([_index(instances, name) for name in rec.instances] + [-1], np.int32)
            for name in _COLUMN_NAMES:
                column = np.asarray(getattr(rec, name)[:n])
                if name in ("intended", "sent", "done"):
                    column = column + shift
                elif name == "instance":
                    column = remap[column]  # -1 indexes the appended -1
                columns[name].append(column)
        state: dict[str, object] = {name: np.concatenate(parts) for name, parts in columns.items()}
        state.update(open_loop=first.records.open_loop, instances=instances, header_names=(), header_codes={},
                     header_values={})  # fmt: skip
        return cls(first.profile, LoadRecords.from_state(state), first.started_monotonic, first.started_wall,
                   first.event_loop)  # fmt: skip

    def __repr__(self) -> str:
        p = self.latency_percentiles((50, 99))
        return (
            f"LoadResult({self.profile!r}, count={self.count}, success={self.success_count}, "
            f"status={self.status_histogram()}, p50={p[50] * 1000:.2f}ms, p99={p[99] * 1000:.2f}ms)"
        )
