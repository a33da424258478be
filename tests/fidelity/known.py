"""Counterexamples judged and still open: the suite steps around them so a night explores something new.

Each entry names its ``found/*.yaml`` file and a predicate matching the examples that show the same
bug. While the file's status is ``open``, the property test rejects matching examples (counted as
``rejected_known_open`` in the summary) and ``test_found.py`` keeps the file as a strict expected
failure. When the fix lands, that test XPASSes: set the file's status to ``fixed`` and delete the entry
here, so the suite explores those examples again.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.fidelity.cases import Case


def _pool_queueing(case: Case) -> bool:
    # More requests than connections wait in the pool: a closed loop above maxConnections, any open loop.
    connections = case.traffic_policy.get("connectionPool", {}).get("tcp", {}).get("maxConnections")
    return connections is not None and (case.load.kind == "open" or case.load.concurrency > connections)


KNOWN_OPEN: dict[str, Callable[[Case], bool]] = {
    # The wait for a connection counts against the route timeout but not the per-try timeout; the model
    # counts neither (success ratio and latency ceiling).
    "9def1b64423c": _pool_queueing,
    "b9deb6042eb9": _pool_queueing,
}


def known_open(case: Case) -> str | None:
    """The found file whose open bug ``case`` would show again, or ``None``."""
    return next((name for name, matches in KNOWN_OPEN.items() if matches(case)), None)
