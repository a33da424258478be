"""Standard-library stand-in for :mod:`pytest_meshcheck.load.records`, shipped to the in-mesh agent.

The agent pod runs a stock Python image without numpy, so it cannot import the numpy record store.
This module is mounted as ``pytest_meshcheck/load/records.py`` there: it offers the part of
``LoadRecords`` the engine writes to (``add``, ``sent``/``intended`` item access, ``set_response``,
``set_error``, ``trim``, ``count``), with the same columns and types stored in :mod:`array` arrays, and
:meth:`LoadRecords.to_wire` ships them as raw column bytes. The test process rebuilds numpy columns
from those bytes (:func:`pytest_meshcheck.kube.wire.records_from_wire`), so records from the agent are
the same ``LoadRecords`` the local context produces.

Standard library only, Python 3.11+.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Sequence
from typing import Any

#: Error kinds; identical to :data:`pytest_meshcheck.load.records.ERROR_KINDS` (a test checks).
ERROR_KINDS: tuple[str, ...] = ("", "connect", "reset", "timeout", "cancelled", "protocol")
NO_ERROR, CONNECT, RESET, TIMEOUT, CANCELLED, PROTOCOL = range(len(ERROR_KINDS))

#: Column name -> (array typecode, numpy dtype name of the same width).
COLUMNS: dict[str, tuple[str, str]] = {
    "intended": ("d", "f8"),
    "sent": ("d", "f8"),
    "done": ("d", "f8"),
    "status": ("H", "u2"),
    "error": ("B", "u1"),
    "instance": ("i", "i4"),
    "attempts": ("h", "i2"),
    "overloaded": ("B", "b1"),
}
_NAN = float("nan")


def _column(typecode: str, size: int, fill: float | int) -> array[Any]:
    return array(typecode, [fill]) * size


class LoadRecords:
    """Columnar request records in :mod:`array` arrays (see the module docstring)."""

    def __init__(self, capacity: int, *, open_loop: bool, selected_headers: Sequence[str] = ()) -> None:
        self.open_loop = open_loop
        self.count = 0
        self._capacity = max(1, capacity)
        for typecode, dtype in COLUMNS.values():
            if array(typecode).itemsize != int(dtype[1]):
                raise RuntimeError(f"array typecode {typecode!r} is not {dtype[1]} bytes wide on this platform")
        self.intended = _column("d", self._capacity, 0.0)
        self.sent = _column("d", self._capacity, _NAN)
        self.done = _column("d", self._capacity, _NAN)
        self.status = _column("H", self._capacity, 0)
        self.error = _column("B", self._capacity, 0)
        self.instance = _column("i", self._capacity, -1)
        self.attempts = _column("h", self._capacity, -1)
        self.overloaded = _column("B", self._capacity, 0)
        self.instances: list[str] = []
        self.header_names: tuple[str, ...] = tuple(h.lower() for h in selected_headers)
        self.header_codes: dict[str, array[Any]] = {h: _column("i", self._capacity, -1) for h in self.header_names}
        self.header_values: dict[str, list[str]] = {h: [] for h in self.header_names}
        self._instance_codes: dict[bytes, int] = {}
        self._header_value_codes: dict[str, dict[bytes, int]] = {h: {} for h in self.header_names}

    def add(self, intended: float) -> int:
        """Append a record due at ``intended`` and return its index."""
        i = self.count
        if i == self._capacity:
            self._grow()
        self.intended[i] = intended
        self.count = i + 1
        return i

    def _grow(self) -> None:
        extra = self._capacity
        fills: dict[str, float | int] = {"sent": _NAN, "done": _NAN, "instance": -1, "attempts": -1}
        for name, (typecode, _) in COLUMNS.items():
            getattr(self, name).extend(_column(typecode, extra, fills.get(name, 0)))
        for codes in self.header_codes.values():
            codes.extend(_column("i", extra, -1))
        self._capacity += extra

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
            value = int(attempts) if attempts is not None else -1
            self.attempts[i] = value if -1 <= value < 32768 else -1
        except ValueError:
            self.attempts[i] = -1
        self.overloaded[i] = 1 if overloaded else 0
        for name, raw in zip(self.header_names, extra, strict=False):
            if raw is not None:
                table = self._header_value_codes[name]
                code = table.get(raw)
                if code is None:
                    code = table[raw] = len(self.header_values[name])
                    self.header_values[name].append(raw.decode("latin-1"))
                self.header_codes[name][i] = code

    def set_error(self, i: int, done: float, kind: int) -> None:
        """Record that request ``i`` got no response; ``kind`` indexes :data:`ERROR_KINDS`."""
        self.done[i] = done
        self.status[i] = 0
        self.error[i] = kind
        self.instance[i] = -1
        self.attempts[i] = -1
        self.overloaded[i] = 0

    def trim(self) -> None:
        """Drop unused capacity, once the run is over."""
        n = self.count
        for name in COLUMNS:
            setattr(self, name, getattr(self, name)[:n])
        self.header_codes = {h: c[:n] for h, c in self.header_codes.items()}
        self._capacity = max(1, n)

    def __len__(self) -> int:
        return self.count

    def to_wire(self) -> dict[str, Any]:
        """A JSON-safe snapshot: each column as base64 bytes with its numpy dtype and byte order."""
        self.trim()

        def pack(column: array[Any], dtype: str) -> dict[str, str]:
            return {"dtype": dtype, "data": base64.b64encode(column.tobytes()).decode("ascii")}

        return {
            "byteorder": sys.byteorder,
            "count": self.count,
            "open_loop": self.open_loop,
            "columns": {name: pack(getattr(self, name), dtype) for name, (_, dtype) in COLUMNS.items()},
            "instances": list(self.instances),
            "header_names": list(self.header_names),
            "header_codes": {h: pack(c, "i4") for h, c in self.header_codes.items()},
            "header_values": {h: list(v) for h, v in self.header_values.items()},
        }
