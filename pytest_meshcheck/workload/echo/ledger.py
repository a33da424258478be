"""The execution ledger: per logical request (``x-request-id``), how many attempts arrived and how many ran.

A service's replicas share one ledger in the workload host, as they would share the payment database that
makes a duplicate payment visible; in a pod the ledger is the pod's own and the test process merges the
pods' ledgers. "Executed" means the request passed the replica's chaos (no injected error or reset) and its
work began: a response delayed past the caller's per-try timeout has still been executed, which is exactly
how a retried ``POST /pay`` charges twice.
"""

from __future__ import annotations

from collections import OrderedDict

#: Request ids a ledger remembers; the oldest are forgotten first, so memory stays bounded.
LEDGER_CAPACITY = 200_000


class Ledger:
    """Attempts and executions per request id, bounded to :data:`LEDGER_CAPACITY` ids."""

    def __init__(self, capacity: int = LEDGER_CAPACITY) -> None:
        self.capacity = capacity
        # request id -> [attempts, executions, sequence number of its last change]
        self._entries: OrderedDict[bytes, list[int]] = OrderedDict()
        self.seq = 0
        self.attempts = 0
        self.executions = 0
        self.repeat_attempts = 0
        self.duplicate_executions = 0
        self.forgotten = 0

    def _entry(self, request_id: bytes) -> list[int]:
        self.seq += 1
        entry = self._entries.get(request_id)
        if entry is None:
            entry = self._entries[request_id] = [0, 0, 0]
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
                self.forgotten += 1
        entry[2] = self.seq
        return entry

    def attempt(self, request_id: bytes | None) -> None:
        """Count an arriving attempt (before any chaos)."""
        self.attempts += 1
        if request_id is None:
            return
        entry = self._entry(request_id)
        if entry[0]:
            self.repeat_attempts += 1
        entry[0] += 1

    def execute(self, request_id: bytes | None) -> None:
        """Count an execution: the attempt passed chaos and its work began."""
        self.executions += 1
        if request_id is None:
            return
        entry = self._entry(request_id)
        if entry[1]:
            self.duplicate_executions += 1
        entry[1] += 1

    def counts(self, since: int = 0) -> dict[str, list[int]]:
        """``{request_id: [attempts, executions]}`` for every remembered id changed after sequence ``since``.

        A test reads the sequence (:meth:`summary`) before its load and only what changed after it, so a
        long session's ledger is never sent whole.
        """
        return {rid.decode("latin-1"): v[:2] for rid, v in self._entries.items() if v[2] > since}

    def summary(self) -> dict[str, int]:
        """The ledger's totals."""
        return {
            "attempts": self.attempts,
            "executions": self.executions,
            "repeat_attempts": self.repeat_attempts,
            "duplicate_executions": self.duplicate_executions,
            "request_ids": len(self._entries),
            "forgotten": self.forgotten,
            "seq": self.seq,
        }
