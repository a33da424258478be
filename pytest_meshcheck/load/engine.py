"""The load engine inside one event loop: schedules requests, drives connections, fills the records.

Everything here runs from callbacks (connection events, ``call_at`` timers, a periodic sweep) rather than
a task per request, because the per-request cost is what limits a Python client on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

from pytest_meshcheck.load.http1 import Http1Connection
from pytest_meshcheck.load.profile import ClosedLoop, OpenLoop
from pytest_meshcheck.load.records import CANCELLED, CONNECT, RESET, TIMEOUT, LoadRecords
from pytest_meshcheck.load.request import RequestSpec

_now = time.monotonic  # loop.time() is millisecond-coarse under uvloop; latencies need better
_Connecting = asyncio.Task[tuple[asyncio.Transport, Http1Connection]]
_INITIAL_CAPACITY = 65536  # records grow by doubling past this, so a huge max_requests costs nothing up front
# Shortest open-loop timer: event-loop timers have millisecond resolution, so a shorter wait would only spin
# the loop; requests due within it are sent together, and their latency still counts from the intended time.
_MIN_TICK = 0.001


class _Run:
    """State of one run; also the :class:`~pytest_meshcheck.load.http1.ResponseSink` of its connections."""

    def __init__(
        self,
        spec: RequestSpec,
        profile: OpenLoop | ClosedLoop,
        *,
        timeout: float,
        grace: float,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.spec = spec
        self.data = spec.encode()
        self.profile = profile
        self.open_loop = isinstance(profile, OpenLoop)
        planned = profile.planned_requests if isinstance(profile, OpenLoop) else profile.max_requests
        self.records = LoadRecords(
            min(planned, _INITIAL_CAPACITY), open_loop=self.open_loop, selected_headers=spec.record_headers
        )
        self.timeout = timeout
        self.grace = grace
        self.max_connections = profile.max_connections if isinstance(profile, OpenLoop) else profile.concurrency
        self.connections: set[Http1Connection] = set()  # connected or connecting
        self.idle: list[Http1Connection] = []
        self.busy: dict[Http1Connection, int] = {}  # request index by connection
        self.connecting: dict[_Connecting, int] = {}
        self.waiting: deque[int] = deque()  # open loop: due requests waiting for a connection
        self.started = 0.0
        self.started_wall = 0.0
        self.deadline = 0.0
        self.issuing = True
        self.finished: asyncio.Future[None] = self.loop.create_future()

    # ---------------------------------------------------------------- run
    async def run(self) -> None:
        self.started = _now()
        self.started_wall = time.time()
        self.deadline = self.started + self.profile.duration
        sweep = self.loop.call_later(self._sweep_interval(), self._sweep)
        hard_stop = self.loop.call_at(self.loop.time() + self.profile.duration + self.grace, self._cancel_all)
        try:
            if isinstance(self.profile, OpenLoop):
                self._tick()
            else:
                for _ in range(self.profile.concurrency):
                    self._next_closed(None)
            self._check_finished()
            await self.finished
        finally:
            sweep.cancel()
            hard_stop.cancel()
            self._cancel_all()
            self.records.trim()

    def _sweep_interval(self) -> float:
        return min(0.02, self.timeout / 4)

    def _check_finished(self) -> None:
        idle = not (self.issuing or self.busy or self.connecting or self.waiting)
        if idle and not self.finished.done():
            self.finished.set_result(None)

    # ---------------------------------------------------------------- issuing
    def _tick(self) -> None:
        """Open loop: issue every request whose intended time has come, then sleep until the next one."""
        assert isinstance(self.profile, OpenLoop)
        records = self.records
        planned = self.profile.planned_requests
        period = 1.0 / self.profile.rate
        now = _now()
        elapsed = now - self.started
        while records.count < planned and records.count * period <= elapsed:
            self._issue(records.add(records.count * period), now)
        if records.count >= planned or now >= self.deadline:
            self.issuing = False
            self._check_finished()
            return
        due = self.started + records.count * period
        self.loop.call_later(max(due - now, _MIN_TICK), self._tick)

    def _issue(self, i: int, now: float) -> None:
        while self.idle:
            conn = self.idle.pop()
            if conn.connected and conn.reusable:
                self._send(conn, i, now)
                return
            self.connections.discard(conn)
        if len(self.connections) + len(self.connecting) < self.max_connections:
            self._connect(i, now)
        else:
            self.waiting.append(i)

    def _next_closed(self, conn: Http1Connection | None) -> None:
        """Closed loop: start the next request on ``conn`` (or a new connection) while budget and time remain."""
        assert isinstance(self.profile, ClosedLoop)
        now = _now()
        if not self.issuing or now >= self.deadline or self.records.count >= self.profile.max_requests:
            self.issuing = False
            if conn is not None:
                self._retire(conn)
            self._check_finished()
            return
        i = self.records.add(now - self.started)
        if conn is not None and conn.connected and conn.reusable:
            self._send(conn, i, now)
        else:
            if conn is not None:
                self._retire(conn)
            self._connect(i, now)

    def _send(self, conn: Http1Connection, i: int, now: float) -> None:
        self.records.sent[i] = now - self.started
        self.busy[conn] = i
        conn.send(i, self.data)

    def _connect(self, i: int, now: float) -> None:
        self.records.sent[i] = now - self.started
        future = self.loop.create_task(
            self.loop.create_connection(
                lambda: Http1Connection(self, self.spec.record_headers, self.spec.head_only),
                self.spec.address,
                self.spec.port,
            )
        )
        self.connecting[future] = i
        future.add_done_callback(self._connected)

    def _connected(self, future: _Connecting) -> None:
        i = self.connecting.pop(future, -1)
        if i < 0:  # cancelled by the sweep or the hard stop, already recorded
            if not future.cancelled() and future.exception() is None:
                future.result()[0].abort()
            return
        if future.cancelled() or future.exception() is not None:
            self.records.set_error(i, _now() - self.started, CONNECT)
            self._after(None)
            return
        conn = future.result()[1]
        if not conn.connected:  # the peer closed it before this callback ran
            self.records.set_error(i, _now() - self.started, RESET)
            self._after(None)
            return
        self.connections.add(conn)
        self.busy[conn] = i
        conn.send(i, self.data)

    def _retire(self, conn: Http1Connection) -> None:
        self.connections.discard(conn)
        if conn.connected:
            conn.abort()

    def _after(self, conn: Http1Connection | None) -> None:
        """A request finished on ``conn`` (None: it failed and the connection is gone); keep traffic going."""
        if not self.open_loop:
            self._next_closed(conn)
            return
        if conn is not None and not (conn.connected and conn.reusable):
            self._retire(conn)
            conn = None
        if self.waiting:
            i = self.waiting.popleft()
            if conn is not None:
                self._send(conn, i, _now())
            else:
                self._connect(i, _now())
        elif conn is not None:
            self.idle.append(conn)
        self._check_finished()

    # ---------------------------------------------------------------- ResponseSink
    def on_response(
        self,
        conn: Http1Connection,
        status: int,
        instance: bytes | None,
        attempts: bytes | None,
        overloaded: bool,
        extra: Sequence[bytes | None],
    ) -> None:
        """Record a response and reuse the connection."""
        i = self.busy.pop(conn)
        conn.request = -1
        self.records.set_response(i, _now() - self.started, status, instance, attempts, overloaded, extra)
        self._after(conn)

    def on_failure(self, conn: Http1Connection, kind: int) -> None:
        """Record a broken request; the connection is dropped."""
        i = self.busy.pop(conn, -1)
        self.connections.discard(conn)
        if i >= 0:
            self.records.set_error(i, _now() - self.started, kind)
            self._after(None)

    # ---------------------------------------------------------------- timeouts and the hard stop
    def _sweep(self) -> None:
        """Fail requests older than ``timeout`` (from intended time in open loop, from send in closed loop)."""
        now = _now()
        limit = now - self.started - self.timeout
        for conn, i in list(self.busy.items()):
            if self._start_of(i) <= limit:
                self._drop(i, now, TIMEOUT, conn)
        for future, i in list(self.connecting.items()):
            if self._start_of(i) <= limit:
                self.connecting.pop(future)
                future.cancel()
                self.records.set_error(i, now - self.started, TIMEOUT)
                self._after(None)
        while self.waiting and self._start_of(self.waiting[0]) <= limit:
            self.records.set_error(self.waiting.popleft(), now - self.started, TIMEOUT)
        self._check_finished()
        if not self.finished.done():
            self.loop.call_later(self._sweep_interval(), self._sweep)

    def _start_of(self, i: int) -> float:
        """Where request ``i``'s latency (and so its timeout) starts."""
        return float(self.records.intended[i] if self.open_loop else self.records.sent[i])

    def _drop(self, i: int, now: float, kind: int, conn: Http1Connection) -> None:
        del self.busy[conn]
        self.records.set_error(i, now - self.started, kind)
        self._retire(conn)
        self._after(None)

    def _cancel_all(self) -> None:
        """Past the deadline and the grace period: record what is still pending as cancelled and stop."""
        self.issuing = False
        now = _now()
        for conn, i in list(self.busy.items()):
            del self.busy[conn]
            self.records.set_error(i, now - self.started, CANCELLED)
            self._retire(conn)
        for future, i in list(self.connecting.items()):
            future.cancel()
            self.records.set_error(i, now - self.started, CANCELLED)
        self.connecting.clear()
        while self.waiting:
            self.records.set_error(self.waiting.popleft(), now - self.started, CANCELLED)
        for conn in list(self.connections):
            self._retire(conn)
        self.idle.clear()
        self._check_finished()


class RunOutcome(NamedTuple):
    """What one run produced: the records and where they sit in time."""

    records: LoadRecords
    started_monotonic: float
    started_wall: float
    event_loop: str


async def run_in_loop(spec: RequestSpec, profile: OpenLoop | ClosedLoop, *, timeout: float, grace: float) -> RunOutcome:
    """Run one load profile in the running event loop.

    Returns:
        The records, the start on ``time.monotonic()`` and ``time.time()`` (record times are relative to
        it), and the event loop's class (``uvloop.Loop`` or asyncio's).
    """
    run = _Run(spec, profile, timeout=timeout, grace=grace)
    await run.run()
    loop_type = type(run.loop)
    return RunOutcome(run.records, run.started, run.started_wall, f"{loop_type.__module__}.{loop_type.__qualname__}")
