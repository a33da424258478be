"""Per-request records, stored column by column so that 100,000 requests cost a few MB, not a dict each.

Times are float seconds relative to the run's start (``LoadResult.started_monotonic``). Strings that repeat
(serving instance, selected header values) are stored as small integer codes into a table of values.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

#: Error kinds; the code stored in ``LoadRecords.error`` is the index into this tuple (0: no error).
ERROR_KINDS: tuple[str, ...] = ("", "connect", "reset", "timeout", "cancelled", "protocol")
NO_ERROR, CONNECT, RESET, TIMEOUT, CANCELLED, PROTOCOL = range(len(ERROR_KINDS))

_COLUMNS: dict[str, npt.DTypeLike] = {
    "intended": np.float64,
    "sent": np.float64,
    "done": np.float64,
    "status": np.uint16,
    "error": np.uint8,
    "instance": np.int32,
    "attempts": np.int16,
    "overloaded": np.bool_,
}


@dataclass(frozen=True)
class LoadRecord:
    """One request, for reporting.

    Attributes:
        index: Sequence number of the request in its run.
        intended: When the request was due (open loop) or started (closed loop), seconds from the start.
        sent: When the client began sending it (including any connect), or ``None`` if never sent.
        done: When it completed or failed, seconds from the start.
        latency: ``done - intended`` for an open loop, ``done - sent`` for a closed loop.
        status: HTTP status, or 0 when no response arrived (see ``error``).
        error: ``connect``, ``reset``, ``timeout``, ``cancelled`` or ``protocol`` when ``status`` is 0.
        instance: Value of ``x-meshcheck-instance``: which instance served it.
        attempt_count: Value of ``x-envoy-attempt-count``, or ``None`` when absent.
        overloaded: Whether ``x-envoy-overloaded`` was present.
        headers: The selected response headers that were present.
    """

    index: int
    intended: float
    sent: float | None
    done: float
    latency: float
    status: int
    error: str | None
    instance: str | None
    attempt_count: int | None
    overloaded: bool
    headers: Mapping[str, str] = field(default_factory=dict)


class LoadRecords:
    """Columnar store of request records: one numpy array per field.

    Columns: ``intended``, ``sent`` (NaN if never sent), ``done`` (float64 seconds); ``status`` (uint16);
    ``error`` (uint8 index into :data:`ERROR_KINDS`); ``instance`` (int32 index into ``instances``, -1 when
    absent); ``attempts`` (int16, -1 when absent); ``overloaded`` (bool). Each selected header has an int32
    column in ``header_codes`` indexing ``header_values[name]`` (-1 when absent).
    """

    def __init__(self, capacity: int, *, open_loop: bool, selected_headers: Sequence[str] = ()) -> None:
        self.open_loop = open_loop
        self.count = 0
        self._capacity = max(1, capacity)
        self.intended: npt.NDArray[np.float64] = np.empty(0)
        self.sent: npt.NDArray[np.float64] = np.empty(0)
        self.done: npt.NDArray[np.float64] = np.empty(0)
        self.status: npt.NDArray[np.uint16] = np.empty(0, np.uint16)
        self.error: npt.NDArray[np.uint8] = np.empty(0, np.uint8)
        self.instance: npt.NDArray[np.int32] = np.empty(0, np.int32)
        self.attempts: npt.NDArray[np.int16] = np.empty(0, np.int16)
        self.overloaded: npt.NDArray[np.bool_] = np.empty(0, np.bool_)
        for name, dtype in _COLUMNS.items():
            setattr(self, name, np.empty(self._capacity, dtype))
        self.sent.fill(np.nan)
        self.done.fill(np.nan)
        self.instances: list[str] = []
        self.header_names: tuple[str, ...] = tuple(h.lower() for h in selected_headers)
        self.header_codes: dict[str, npt.NDArray[np.int32]] = {
            h: np.full(self._capacity, -1, np.int32) for h in self.header_names
        }
        self.header_values: dict[str, list[str]] = {h: [] for h in self.header_names}
        self._instance_codes: dict[bytes, int] = {}
        self._header_value_codes: dict[str, dict[bytes, int]] = {h: {} for h in self.header_names}

    # ---------------------------------------------------------------- writing (engine side)
    def add(self, intended: float) -> int:
        """Append a record due at ``intended`` and return its index; the other fields are set later."""
        i = self.count
        if i == self._capacity:
            self._grow()
        self.intended[i] = intended
        self.count = i + 1
        return i

    def _grow(self) -> None:
        new = self._capacity * 2
        for name in _COLUMNS:
            old = getattr(self, name)
            grown = np.empty(new, old.dtype)
            grown[: self._capacity] = old
            setattr(self, name, grown)
        self.sent[self._capacity :] = np.nan
        self.done[self._capacity :] = np.nan
        for h, codes in self.header_codes.items():
            grown_codes = np.full(new, -1, np.int32)
            grown_codes[: self._capacity] = codes
            self.header_codes[h] = grown_codes
        self._capacity = new

    def set_response(
        self,
        i: int,
        done: float,
        status: int,
        instance: bytes | None,
        attempts: bytes | None,
        overloaded: bool,
        extra: Sequence[bytes | None] = (),
    ) -> None:
        """Record a response to request ``i`` (header values as raw bytes, ``None`` when absent)."""
        self.done[i] = done
        self.status[i] = status
        self.error[i] = NO_ERROR
        if instance is None:
            self.instance[i] = -1
        else:
            code = self._instance_codes.get(instance)
            if code is None:
                code = self._instance_codes[instance] = len(self.instances)
                self.instances.append(instance.decode("latin-1"))
            self.instance[i] = code
        try:
            self.attempts[i] = int(attempts) if attempts is not None else -1
        except (ValueError, OverflowError):
            self.attempts[i] = -1
        self.overloaded[i] = overloaded
        for name, value in zip(self.header_names, extra, strict=False):
            if value is not None:
                table = self._header_value_codes[name]
                code = table.get(value)
                if code is None:
                    code = table[value] = len(self.header_values[name])
                    self.header_values[name].append(value.decode("latin-1"))
                self.header_codes[name][i] = code

    def set_error(self, i: int, done: float, kind: int) -> None:
        """Record that request ``i`` got no response; ``kind`` is an index into :data:`ERROR_KINDS`."""
        self.done[i] = done
        self.status[i] = 0
        self.error[i] = kind
        self.instance[i] = -1
        self.attempts[i] = -1
        self.overloaded[i] = False

    def trim(self) -> None:
        """Drop unused capacity, once the run is over."""
        n = self.count
        for name in _COLUMNS:
            setattr(self, name, getattr(self, name)[:n].copy())
        self.header_codes = {h: c[:n].copy() for h, c in self.header_codes.items()}
        self._capacity = max(1, n)

    # ---------------------------------------------------------------- reading
    @property
    def latency(self) -> npt.NDArray[np.float64]:
        """Latency per request: from the intended time (open loop) or the send time (closed loop)."""
        n = self.count
        start = (
            self.intended[:n] if self.open_loop else np.where(np.isnan(self.sent[:n]), self.intended[:n], self.sent[:n])
        )
        result: npt.NDArray[np.float64] = self.done[:n] - start
        return result

    def __len__(self) -> int:
        return self.count

    def record(self, i: int) -> LoadRecord:
        """Build the :class:`LoadRecord` of request ``i``."""
        if not 0 <= i < self.count:
            raise IndexError(f"record index {i} out of range 0..{self.count - 1}")
        sent = float(self.sent[i])
        start = float(self.intended[i]) if self.open_loop or sent != sent else sent
        instance = int(self.instance[i])
        attempts = int(self.attempts[i])
        error = int(self.error[i])
        headers = {h: self.header_values[h][int(codes[i])] for h, codes in self.header_codes.items() if codes[i] >= 0}
        return LoadRecord(
            index=i,
            intended=float(self.intended[i]),
            sent=None if sent != sent else sent,
            done=float(self.done[i]),
            latency=float(self.done[i]) - start,
            status=int(self.status[i]),
            error=ERROR_KINDS[error] if error else None,
            instance=self.instances[instance] if instance >= 0 else None,
            attempt_count=attempts if attempts >= 0 else None,
            overloaded=bool(self.overloaded[i]),
            headers=headers,
        )

    def __iter__(self) -> Iterator[LoadRecord]:
        return (self.record(i) for i in range(self.count))

    def to_list(self) -> list[LoadRecord]:
        """All records as dataclasses, in request order."""
        return list(self)

    # ---------------------------------------------------------------- transport between processes
    def to_state(self) -> dict[str, Any]:
        """A picklable, compact snapshot (numpy arrays and short string tables)."""
        self.trim()
        state: dict[str, Any] = {name: getattr(self, name) for name in _COLUMNS}
        state.update(
            open_loop=self.open_loop,
            instances=self.instances,
            header_names=self.header_names,
            header_codes=self.header_codes,
            header_values=self.header_values,
        )
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LoadRecords:
        """Rebuild records from :meth:`to_state`."""
        records = cls(len(state["status"]), open_loop=state["open_loop"], selected_headers=state["header_names"])
        for name in _COLUMNS:
            setattr(records, name, state[name])
        records.count = len(state["status"])
        records.instances = list(state["instances"])
        records.header_codes = dict(state["header_codes"])
        records.header_values = {h: list(v) for h, v in state["header_values"].items()}
        return records
