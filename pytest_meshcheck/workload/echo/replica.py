"""Who a replica is, and what it counts: every response, metric and ``/stats`` document carries both."""

from __future__ import annotations

from dataclasses import dataclass

from pytest_meshcheck.workload.echo.overrides import OVERRIDES

#: Fault counter names, in the order counters and metrics list them (``delay`` counts chaos latency).
FAULTS = ("error", "delay", "reset")


@dataclass(frozen=True)
class Identity:
    """Who this replica is; every response and metric carries it."""

    service: str
    version: str
    instance: str
    namespace: str


class Counters:
    """Everything the echo app counts; read by ``GET /stats`` and ``GET /metrics``."""

    def __init__(self) -> None:
        self.received = 0
        self.by_status: dict[int, int] = {200: 0}
        self.faults = dict.fromkeys(FAULTS, 0)
        self.overrides = dict.fromkeys(OVERRIDES, 0)
        self.override_requests = 0
        self.abandoned = 0
        self.connections = 0
        self.executed = 0
        self.calls_failed = 0
