"""What one user request did along the call graph, read from the services' execution ledgers.

Every echo instance records, per ``x-request-id``, how many attempts reached it and how many it executed
(:mod:`pytest_meshcheck.workload.echo.ledger`). The client's sidecar gives each user request its id and
every caller propagates it, so the entry service's ledger names the user requests of a load window and
each dependency's ledger says how many calls each of them caused there: retry amplification, and a
non-idempotent call executed twice, are counted per request, exactly, in both contexts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import httpx
import numpy as np
import numpy.typing as npt

from pytest_meshcheck.backend import MeshBackend
from pytest_meshcheck.errors import ChaosError

Counts = dict[str, tuple[int, int]]


Marks = dict[str, int]
# Larger than any ledger's sequence: asks for the sequence numbers only, no request ids.
_NOTHING = 2**62


def read_ledger(
    mesh: MeshBackend, service: str, *, client: httpx.Client | None = None, since: Marks | None = None
) -> tuple[Counts, Marks]:
    """``{request_id: (attempts, executions)}`` of ``service``, merged over its instances, and each ledger's mark.

    A workload host answers every instance of a service with one shared ledger (``scope: service``), read
    once; pods each keep their own (``scope: instance``), summed here. With ``since`` (the marks of an
    earlier read) only the request ids changed after it are sent.

    Raises:
        ChaosError: An instance's admin endpoint cannot be read.
    """
    http = client or httpx.Client(timeout=10.0)
    merged: Counts = {}
    marks: Marks = {}
    shared_read = False
    try:
        for inst in mesh.instances(service):
            mark = _NOTHING if since is None else since.get(inst.name, 0)
            try:
                resp = http.get(f"{inst.admin_url}/ledger", params={"since": str(mark)})
                resp.raise_for_status()
            except httpx.HTTPError as exc:
                raise ChaosError(f"cannot read the execution ledger of {inst.name} at {inst.admin_url}: {exc}") from exc
            doc = resp.json()
            if doc.get("scope") == "service":
                if shared_read:
                    continue
                shared_read = True
            marks[inst.name] = int(doc["ledger"]["seq"])
            for rid, (attempts, executions) in doc["requests"].items():
                a, e = merged.get(rid, (0, 0))
                merged[rid] = (a + int(attempts), e + int(executions))
    finally:
        if client is None:
            http.close()
    return merged, marks


@dataclass(frozen=True)
class ChainCounts:
    """Per user request of a window: attempts and executions at every watched service.

    Attributes:
        entry: The service the user requests entered.
        requests: The ids of the user requests (those that reached the entry during the window).
        attempts: Per service, attempts per user request (0 when none reached it), in ``requests`` order.
        executions: Per service, executions per user request.
    """

    entry: str
    requests: tuple[str, ...]
    attempts: dict[str, npt.NDArray[np.int64]]
    executions: dict[str, npt.NDArray[np.int64]]

    def worst(self, service: str) -> int:
        """The most attempts one user request caused at ``service``."""
        a = self.attempts[service]
        return int(a.max()) if a.size else 0

    def mean(self, service: str) -> float:
        """Mean attempts per user request at ``service``."""
        a = self.attempts[service]
        return float(a.mean()) if a.size else 0.0

    def executed_twice(self, service: str) -> int:
        """User requests that ``service`` executed more than once."""
        return int((self.executions[service] > 1).sum())

    def summary(self, service: str) -> str:
        """One line for check details."""
        a, e = self.attempts[service], self.executions[service]
        hist = dict(zip(*np.unique(a, return_counts=True), strict=True)) if a.size else {}
        return (
            f"{len(self.requests)} user requests; {service} attempts per request: mean {self.mean(service):.3f}, "
            f"max {self.worst(service)}, histogram {{{', '.join(f'{int(k)}: {int(v)}' for k, v in hist.items())}}}; "
            f"executed more than once: {int((e > 1).sum())}"
        )


class LedgerWindow:
    """Snapshot the ledgers before a load, then count per user request what happened during it.

    Example::

        window = LedgerWindow(mesh, "order-service", ["payment-service"])
        mesh_scenario.load.open("order-service", rate=50, duration=2)
        counts = window.close()
        counts.worst("payment-service")
    """

    def __init__(self, mesh: MeshBackend, entry: str, services: Iterable[str]) -> None:
        self.mesh = mesh
        self.entry = entry
        self.services = [s for s in services if s != entry]
        self._client = httpx.Client(timeout=10.0)
        # Only the ledgers' sequence marks: request ids are new per user request (Envoy's UUIDs), so
        # whatever changed after the marks belongs to this window, and nothing before it is sent.
        self._marks = {s: read_ledger(mesh, s, client=self._client)[1] for s in (entry, *self.services)}

    def close(self) -> ChainCounts:
        """Read the ledgers again; count the user requests that reached the entry since the snapshot."""
        try:
            now = {
                s: read_ledger(self.mesh, s, client=self._client, since=self._marks[s])[0]
                for s in (self.entry, *self.services)
            }
        finally:
            self._client.close()

        def delta(service: str, rid: str) -> tuple[int, int]:
            return now[service].get(rid, (0, 0))

        requests = tuple(rid for rid in now[self.entry] if delta(self.entry, rid)[0] > 0)
        attempts: dict[str, npt.NDArray[np.int64]] = {}
        executions: dict[str, npt.NDArray[np.int64]] = {}
        for service in (self.entry, *self.services):
            pairs = [delta(service, rid) for rid in requests]
            attempts[service] = np.array([p[0] for p in pairs], dtype=np.int64)
            executions[service] = np.array([p[1] for p in pairs], dtype=np.int64)
        return ChainCounts(self.entry, requests, attempts, executions)
