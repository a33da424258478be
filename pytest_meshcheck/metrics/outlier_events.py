"""Envoy's outlier-detection event log, and the errors a host served before Envoy ejected it.

Each local sidecar writes one JSON line per ejection and return of a host
(``cluster_manager.outlier_detection.event_log_path``, see ``pytest_meshcheck/local/bootstrap.py``), an
``OutlierDetectionEvent`` as Envoy 1.40 prints it::

    {"type":"CONSECUTIVE_5XX","timestamp":"2026-12-03T14:45:21.030Z","cluster_name":"outbound|8080||payment-...",
     "upstream_url":"127.0.0.1:34213","action":"EJECT","num_ejections":1,"enforced":true,
     "eject_consecutive_event":{}}

The timestamp has milliseconds only. Envoy's detector counts the N-th consecutive error on the worker and
ejects on the main thread, which then updates the worker's load balancer: an attempt the worker dispatches
in between still reaches the ejected host. :func:`count_before_ejection` tells those apart with the event's
time: attempts started before it are what the detector counted, attempts started after it are the ejection
on its way to the worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pytest_meshcheck.metrics.attempts import AttemptRecords, LogRecord
from pytest_meshcheck.metrics.log_offsets import open_log

#: Envoy stamps events to the millisecond (truncated): the ejection happened within this after ``time``.
STAMP_RESOLUTION = 0.001
#: How many attempts dispatched after an ejection :meth:`EjectionCount.describe` lists by their delay.
DESCRIBED_LATE = 5


@dataclass(frozen=True)
class OutlierEvent:
    """One line of a sidecar's outlier event log.

    Attributes:
        sidecar: Name of the sidecar that wrote it (its detector made the decision).
        time: Unix seconds Envoy stamped it with (to the millisecond; the event lies in ``[time, time + 1 ms)``).
        cluster: The cluster (``outbound|8080||payment-service.platform-core.svc.cluster.local``).
        upstream_host: The host's address (``127.0.0.1:34213``).
        action: ``EJECT`` or ``UNEJECT``.
        kind: Envoy's detector type (``CONSECUTIVE_5XX``, ``CONSECUTIVE_GATEWAY_FAILURE``...); an UNEJECT says
            ``CONSECUTIVE_5XX`` whatever ejected the host.
        enforced: Whether the host was really ejected (a detection below the enforcing percentage is not).
        num_ejections: Envoy's lifetime count of this host's ejections (not the back-off multiplier).
    """

    sidecar: str
    time: float
    cluster: str
    upstream_host: str
    action: str
    kind: str
    enforced: bool
    num_ejections: int

    @property
    def ejects(self) -> bool:
        """Whether the host left the load-balancing set here (an enforced EJECT)."""
        return self.action == "EJECT" and self.enforced


def _unix(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_event(line: str, sidecar: str) -> OutlierEvent | None:
    """Parse one line of the event log; ``None`` for a line that is not a complete event (a torn last line)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    when = _unix(entry.get("timestamp"))
    action = entry.get("action")
    host = entry.get("upstream_url")
    if when is None or action not in ("EJECT", "UNEJECT") or not isinstance(host, str):
        return None
    count = entry.get("num_ejections")
    return OutlierEvent(
        sidecar=sidecar,
        time=when,
        cluster=str(entry.get("cluster_name") or ""),
        upstream_host=host,
        action=action,
        kind=str(entry.get("type") or ""),
        enforced=entry.get("enforced") is True,
        num_ejections=int(count) if isinstance(count, int | float) else 0,
    )


def read_events(path: Path, sidecar: str, start: float, end: float) -> Iterator[OutlierEvent]:
    """The events of one log file stamped within ``[start, end]``; nothing when the file is absent."""
    handle = open_log(path, start - STAMP_RESOLUTION)
    if handle is None:
        return
    with handle:
        for line in handle:
            event = parse_event(line, sidecar)
            # The stamp is truncated to the millisecond: an event at ``start`` may read up to 1 ms earlier.
            if event is not None and start - STAMP_RESOLUTION <= event.time <= end:
                yield event


@dataclass(frozen=True)
class InstanceEvent:
    """An outlier event with the instance its host belongs to.

    Attributes:
        instance: The instance (pod name) serving ``event.upstream_host``.
        event: The event as logged.
    """

    instance: str
    event: OutlierEvent


def instance_events(events: Iterable[OutlierEvent], hosts: Mapping[str, str]) -> list[InstanceEvent]:
    """``events`` of hosts in ``hosts`` (address -> instance), with their instance, in time order."""
    out = [InstanceEvent(hosts[e.upstream_host], e) for e in events if e.upstream_host in hosts]
    return sorted(out, key=lambda x: x.event.time)


@dataclass(frozen=True)
class EjectionCount:
    """What one instance served from the sidecar that ejected it, split at Envoy's first ejection of it.

    Attributes:
        instance: The instance.
        sidecar: The sidecar whose detector ejected it.
        ejected_at: Unix time of the EJECT event (milliseconds).
        errors_before: Attempts that got a 5xx or no response and started before the ejection: what the
            detector counted. Attempts started within the event's millisecond count here (the log cannot
            order them finer); ``same_millisecond`` says how many.
        attempts_before: Every attempt started before the ejection (errors or not).
        same_millisecond: Of ``attempts_before``, those started within the event's millisecond.
        dispatched_after: Start times (unix) of the attempts the sidecar sent the instance after the ejection
            and before its return (or the window's end): dispatched while the ejection had not yet reached
            the worker's load balancer.
        returned_at: Unix time of the UNEJECT that ended this ejection, ``None`` when it outlasted the window.
    """

    instance: str
    sidecar: str
    ejected_at: float
    errors_before: int
    attempts_before: int
    same_millisecond: int
    dispatched_after: tuple[float, ...]
    returned_at: float | None

    def describe(self) -> str:
        """One line for check details."""
        shown = [f"+{(t - self.ejected_at) * 1000:.1f} ms" for t in self.dispatched_after[:DESCRIBED_LATE]]
        more = len(self.dispatched_after) - len(shown)
        late = ", ".join(shown) + (f" and {more} more" if more else "")
        same = f" ({self.same_millisecond} within the event's millisecond)" if self.same_millisecond else ""
        return (
            f"{self.instance}: {self.errors_before} errors before {self.sidecar} ejected it{same}, "
            f"{len(self.dispatched_after)} attempts dispatched after the ejection{f' ({late})' if late else ''}"
        )


def is_error(record: LogRecord) -> bool:
    """Whether an attempt counts towards consecutive 5xx: a 5xx answer, or none (a reset: Envoy logs 0)."""
    return record.status >= 500 or record.status == 0


def count_before_ejection(events: Iterable[InstanceEvent], records: AttemptRecords) -> dict[str, EjectionCount]:
    """Per instance ejected in ``events``, the attempts its ejecting sidecar sent it before and after the ejection.

    The first enforced EJECT of each instance is used, from whichever sidecar made it first; only that
    sidecar's attempts count, since each sidecar has its own detector. Instances never ejected are absent.
    """
    ordered = sorted(events, key=lambda x: x.event.time)
    address = {instance: host for host, instance in records.hosts.items()}
    out: dict[str, EjectionCount] = {}
    for item in ordered:
        if item.instance in out or not item.event.ejects:
            continue
        eject = item.event
        returned = next(
            (
                x.event.time
                for x in ordered
                if x.instance == item.instance
                and x.event.sidecar == eject.sidecar
                and x.event.action == "UNEJECT"
                and x.event.time >= eject.time
            ),
            None,
        )
        host = address.get(item.instance, eject.upstream_host)
        mine = sorted(
            (r for r in records.records if r.kind == "attempt" and r.sidecar == eject.sidecar),
            key=lambda r: r.start,
        )
        mine = [r for r in mine if r.upstream_host == host]
        # The stamp is truncated: the ejection happened in [time, time + 1 ms). An attempt started before its
        # end may have been counted by the detector; one started later was dispatched after the ejection.
        cut = eject.time + STAMP_RESOLUTION
        before = [r for r in mine if r.start < cut]
        after = [r.start for r in mine if r.start >= cut and (returned is None or r.start < returned)]
        out[item.instance] = EjectionCount(
            instance=item.instance,
            sidecar=eject.sidecar,
            ejected_at=eject.time,
            errors_before=sum(1 for r in before if is_error(r)),
            attempts_before=len(before),
            same_millisecond=sum(1 for r in before if r.start >= eject.time),
            dispatched_after=tuple(after),
            returned_at=returned,
        )
    return out
