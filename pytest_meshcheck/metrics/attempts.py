"""Envoy's per-request and per-attempt records from every sidecar, joined into one tree per user request.

Each local sidecar writes two JSON-lines logs (``pytest_meshcheck/local/bootstrap.py``): ``access.log``,
one record per request its listener served (a *call*: status, flags, Envoy's attempt count), and
``attempts.log``, the router's upstream log, one record per upstream attempt (retries included). All
records of one user request share its ``x-request-id``: Envoy keeps it on retries and the echo workloads
forward it on their calls.

The tree of a user request (:func:`join`) is: the call the client sidecar served, its attempts in start
order, and under each attempt the calls the attempted instance made through its own pod's sidecar,
with their attempts, and so on down the call graph. A call is placed under the latest attempt that
reached its pod with the same request id and started before it: an attempt cut by a per-try timeout can
leave its pod working, and the calls that pod still makes belong to that attempt, not to the retry that
went elsewhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pytest_meshcheck.metrics.log_offsets import open_log

#: Records carry their start time with microseconds; an attempt's child call can start a little
#: before the attempt's own stamp says (both are taken on different processes), so placing allows this.
CLOCK_SLACK_S = 0.002

RecordKind = Literal["call", "attempt"]

_START = re.compile(r'"start":\s*"?([0-9]+(?:\.[0-9]*)?)')


@dataclass(frozen=True)
class LogRecord:
    """One line of a sidecar's ``access.log`` (a call) or ``attempts.log`` (an attempt).

    Attributes:
        kind: ``call`` (the listener served a request) or ``attempt`` (the router sent one upstream try).
        sidecar: Name of the sidecar that wrote it (``envoy`` for the client, ``envoy-<pod>``).
        listener: ``outbound`` or ``gateway``.
        start: Unix seconds the call or attempt started.
        duration_ms: Its duration (``None`` when Envoy logged none).
        request_id: ``x-request-id``.
        method: HTTP method.
        path: Request path.
        authority: ``Host`` of the request: the destination service (``payment-service:8080``).
        cluster: Upstream cluster (``outbound|8080||payment-service...``).
        upstream_host: The upstream address the attempt went to (for a call, the last attempt's).
        status: Response code; 0 when no response came (a reset, a timeout cut).
        flags: Envoy response flags (``-``, ``URX``, ``UT``, ``UO``...).
        details: Envoy's response code details, when it logged them.
        attempts: For a call, Envoy's attempt count (``x-envoy-attempt-count``); ``None`` for an attempt.
    """

    kind: RecordKind
    sidecar: str
    listener: str
    start: float
    duration_ms: float | None
    request_id: str
    method: str
    path: str
    authority: str
    cluster: str
    upstream_host: str
    status: int
    flags: str
    details: str
    attempts: int | None = None

    @property
    def end(self) -> float:
        """Unix seconds it ended (its start when no duration was logged)."""
        return self.start + (self.duration_ms or 0.0) / 1000.0

    @property
    def service(self) -> str:
        """The destination service: the authority without its port."""
        return self.authority.rsplit(":", 1)[0] if ":" in self.authority else self.authority


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def parse_record(line: str, kind: RecordKind, sidecar: str) -> LogRecord | None:
    """Parse one JSON log line; ``None`` for a line that is not a complete record (a torn last line).

    Args:
        line: The line as Envoy wrote it (``ACCESS_LOG_FORMAT`` or ``ATTEMPT_LOG_FORMAT``).
        kind: ``call`` for ``access.log``, ``attempt`` for ``attempts.log``.
        sidecar: The sidecar that wrote it.
    """
    try:
        entry = json.loads(line)
        start = float(entry["start"])
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(entry, dict):
        return None
    duration = entry.get("duration_ms")
    code = entry.get("response_code")
    attempts = entry.get("attempts")
    return LogRecord(
        kind=kind,
        sidecar=sidecar,
        listener=_text(entry.get("listener")),
        start=start,
        duration_ms=float(duration) if isinstance(duration, int | float) else None,
        request_id=_text(entry.get("request_id")),
        method=_text(entry.get("method")),
        path=_text(entry.get("path")),
        authority=_text(entry.get("authority")),
        cluster=_text(entry.get("upstream_cluster")).rstrip(";"),
        upstream_host=_text(entry.get("upstream_host")),
        status=int(code) if isinstance(code, int | float) else 0,
        flags=_text(entry.get("response_flags")) or "-",
        details=_text(entry.get("response_code_details")),
        attempts=int(attempts) if kind == "call" and isinstance(attempts, int | float) else None,
    )


def _start_of(line: str) -> float | None:
    """The ``start`` field of a line without parsing all of it (logs grow over a session)."""
    match = _START.search(line)
    return float(match.group(1)) if match else None


def read_records(path: Path, kind: RecordKind, sidecar: str, start: float, end: float) -> Iterator[LogRecord]:
    """The records of one log file that started within ``[start, end]``; nothing when the file is absent."""
    handle = open_log(path, start)
    if handle is None:
        return
    with handle:
        for line in handle:
            when = _start_of(line)
            if when is None or not start <= when <= end:
                continue
            record = parse_record(line, kind, sidecar)
            if record is not None:
                yield record


@dataclass(frozen=True)
class AttemptRecords:
    """Every sidecar's records over a window, and what is needed to join them.

    Attributes:
        records: Calls and attempts of every sidecar.
        client: Name of the client sidecar (where user requests enter).
        pods: The pod each pod sidecar belongs to, by sidecar name.
        hosts: The instance serving each upstream address (``127.0.0.1:43865``).
    """

    records: tuple[LogRecord, ...]
    client: str
    pods: Mapping[str, str]
    hosts: Mapping[str, str]


@dataclass
class AttemptNode:
    """One upstream attempt, with the calls its instance made while serving it.

    Attributes:
        number: 1 for the first try, 2 for the first retry...
        record: The attempt's record.
        instance: The instance it reached (its pod name), or ``None`` for an address no instance has.
        calls: The calls that instance made for this attempt, in start order.
    """

    number: int
    record: LogRecord
    instance: str | None
    calls: list[CallNode] = field(default_factory=list)


@dataclass
class CallNode:
    """One request as a sidecar's listener served it, with every attempt its router made.

    Attributes:
        source: The pod whose sidecar served it, or ``None`` for the client sidecar.
        record: The listener's record.
        attempts: Its attempts in start order (none when it failed before the router: a fault
            injection, no route).
    """

    source: str | None
    record: LogRecord
    attempts: list[AttemptNode] = field(default_factory=list)

    def walk(self) -> Iterator[tuple[int, CallNode]]:
        """This call and every call below it, with its hop (1 for the client sidecar's)."""
        stack: list[tuple[int, CallNode]] = [(1, self)]
        while stack:
            hop, call = stack.pop()
            yield hop, call
            for attempt in reversed(call.attempts):
                stack.extend((hop + 1, child) for child in reversed(attempt.calls))

    @property
    def total_attempts(self) -> int:
        """Attempts made at every hop of this call's tree."""
        return sum(len(call.attempts) for _, call in self.walk())

    @property
    def retried(self) -> bool:
        """Whether any hop of the tree made more than one attempt."""
        return any(len(call.attempts) > 1 for _, call in self.walk())

    @property
    def hops(self) -> int:
        """The deepest hop the request reached."""
        return max(hop for hop, _ in self.walk())


def _attempts_of(call: LogRecord, attempts: list[LogRecord]) -> list[LogRecord]:
    """The attempts ``call``'s router made: same listener and destination, within the call's time."""
    low, high = call.start - CLOCK_SLACK_S, call.end + CLOCK_SLACK_S
    return [
        a for a in attempts if a.listener == call.listener and a.authority == call.authority and low <= a.start <= high
    ]


def join(data: AttemptRecords) -> list[CallNode]:
    """One tree per user request: the client sidecar's outbound calls, each with its attempts and below.

    Calls of the client's ``gateway`` listener are left out: the gateway forwards to the outbound
    listener, whose call is the user request with every policy applied.

    Returns:
        The trees, in start order.
    """
    calls: dict[tuple[str, str], list[LogRecord]] = {}
    attempts: dict[tuple[str, str], list[LogRecord]] = {}
    for r in sorted(data.records, key=lambda r: r.start):
        (calls if r.kind == "call" else attempts).setdefault((r.sidecar, r.request_id), []).append(r)

    def build(call: LogRecord) -> CallNode:
        pod = data.pods.get(call.sidecar)
        node = CallNode(pod, call)
        mine = _attempts_of(call, attempts.get((call.sidecar, call.request_id), []))
        for number, rec in enumerate(mine, start=1):
            node.attempts.append(AttemptNode(number, rec, data.hosts.get(rec.upstream_host)))
        return node

    def place_children(node: CallNode) -> None:
        for attempt in node.attempts:
            if attempt.instance is None:
                continue
            sidecar = pod_sidecars.get(attempt.instance)
            if sidecar is None:
                continue
            # The attempts that reached the same pod for the same request, in start order: a child call
            # belongs to the latest of them that started before it.
            same_pod = reached.get((attempt.instance, attempt.record.request_id), [])
            for child in calls.get((sidecar, attempt.record.request_id), []):
                if child.listener != "outbound":
                    continue
                owner = None
                for candidate in same_pod:
                    if candidate.record.start - CLOCK_SLACK_S <= child.start:
                        owner = candidate
                if owner is attempt:
                    child_node = build(child)
                    attempt.calls.append(child_node)
                    register(child_node)
                    place_children(child_node)

    pod_sidecars = {pod: sidecar for sidecar, pod in data.pods.items()}
    reached: dict[tuple[str, str], list[AttemptNode]] = {}

    def register(node: CallNode) -> None:
        for attempt in node.attempts:
            if attempt.instance is not None:
                bucket = reached.setdefault((attempt.instance, attempt.record.request_id), [])
                bucket.append(attempt)
                bucket.sort(key=lambda a: a.record.start)

    roots: list[CallNode] = []
    for (sidecar, _rid), records in calls.items():
        if sidecar != data.client:
            continue
        for call in records:
            if call.listener != "outbound":
                continue
            root = build(call)
            register(root)
            roots.append(root)
    # Children are placed once every hop-1 attempt is registered, so "the latest attempt before it"
    # sees all of them; deeper hops register as they are built, parents before children.
    for root in roots:
        place_children(root)
    return sorted(roots, key=lambda n: n.record.start)


Pick = Literal["failed", "slowest", "retried"]


def is_failure(call: CallNode) -> bool:
    """Whether the user request failed: no 2xx answer."""
    return not 200 <= call.record.status < 300


def pick_samples(trees: Iterable[CallNode]) -> list[tuple[list[Pick], CallNode]]:
    """A few telling requests: a failed one, the slowest one, and one with retries, when they exist.

    * failed: the failed request with the most attempts over all hops (it shows how retries were used up);
    * slowest: the longest request as the client sidecar timed it;
    * retried: among requests with a retry at any hop, not already picked, the one with the most attempts,
      a successful one first (the failed one shows retries that did not help).

    Ties go to the earliest request. A request that fits several picks is shown once, with every reason.

    Returns:
        ``(reasons, tree)`` pairs, in the order failed, slowest, retried.
    """
    items = list(trees)
    chosen: list[tuple[list[Pick], CallNode]] = []

    def add(reason: Pick, node: CallNode | None) -> None:
        if node is None:
            return
        for reasons, seen in chosen:
            if seen is node:
                reasons.append(reason)
                return
        chosen.append(([reason], node))

    def best(candidates: list[CallNode], key: Any) -> CallNode | None:
        # max() keeps the first of equal keys; items are in start order, so ties go to the earliest.
        return max(candidates, key=key) if candidates else None

    add("failed", best([t for t in items if is_failure(t)], lambda t: t.total_attempts))
    add("slowest", best(items, lambda t: t.record.duration_ms or 0.0))
    picked = {id(node) for _, node in chosen}
    retried = [t for t in items if t.retried]
    fresh = [t for t in retried if id(t) not in picked]
    add("retried", best(fresh or retried, lambda t: (not is_failure(t), t.total_attempts)))
    return chosen
