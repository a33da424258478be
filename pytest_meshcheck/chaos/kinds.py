"""The kinds of fault at a destination: one vocabulary for the model, the controller and the chaos API."""

from __future__ import annotations

from typing import Literal, get_args

FaultKind = Literal["error", "latency", "reset", "refused"]
"""``error`` answers a status; ``latency`` delays the answer; ``reset`` resets the connection after the
request arrived; ``refused`` refuses connections, like a stopped process."""

FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

INJECTED_KINDS: frozenset[FaultKind] = frozenset({"error", "latency", "reset"})
"""The kinds the echo workload injects itself (its ``/chaos`` sections). ``refused`` is modelled only: a
refused connection comes from an instance that is not listening, which no chaos state can fake."""
