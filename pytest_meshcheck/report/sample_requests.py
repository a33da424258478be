"""The report's "Sample requests": a failed, the slowest and a retried request, with every attempt per hop.

This is the platform README's Jaeger check ("shows multiple spans for retries") made from Envoy's own
records instead of traces: every sidecar's per-attempt log, joined by ``x-request-id``
(:mod:`pytest_meshcheck.metrics.attempts`). The section is stored in the scenario record as JSON-native
data (``ScenarioRecord.sample_requests``), so a record from CI renders the same.

Shape of the stored section::

    {"available": true, "note": "...", "requests": 1218, "samples": [
        {"reasons": ["failed"], "request_id": "...", "started_at": 1714560000.5, "status": 503,
         "flags": "URX", "duration_ms": 31.0, "total_attempts": 7, "hops": 2, "complete": true,
         "call": {CALL}}]}

    CALL    = {"source": "client" | pod, "service": ..., "method": ..., "path": ..., "status": ...,
               "flags": ..., "duration_ms": ..., "offset_ms": ..., "envoy_attempts": ..., "attempts": [ATTEMPT]}
    ATTEMPT = {"number": 1, "instance": pod | null, "host": "127.0.0.1:43865", "offset_ms": ...,
               "duration_ms": ..., "status": ..., "flags": ..., "details": ..., "calls": [CALL]}

``offset_ms`` is the time since the user request started.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.metrics.attempts import AttemptNode, AttemptRecords, CallNode, join, pick_samples

#: Why the section is empty where no sidecar writes per-attempt records pytest-meshcheck can read.
NOT_AVAILABLE = (
    "not available in this context: Istio's sidecars in the cluster write no per-attempt log that "
    "pytest-meshcheck reads (the local mesh's sidecars do)"
)


@runtime_checkable
class AttemptSource(Protocol):
    """A mesh whose sidecars log every request and attempt (the local mesh)."""

    def attempt_records(self, start: float, end: float) -> AttemptRecords:
        """Every sidecar's calls and attempts that started in ``[start, end]``."""
        ...


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _attempt_view(node: AttemptNode, t0: float) -> dict[str, Any]:
    r = node.record
    return {
        "number": node.number,
        "instance": node.instance,
        "host": r.upstream_host,
        "offset_ms": _ms(r.start - t0),
        "duration_ms": r.duration_ms,
        "status": r.status,
        "flags": r.flags,
        "details": r.details,
        "calls": [_call_view(c, t0) for c in node.calls],
    }


def _call_view(node: CallNode, t0: float) -> dict[str, Any]:
    r = node.record
    return {
        "source": node.source or "client",
        "service": r.service,
        "method": r.method,
        "path": r.path,
        "status": r.status,
        "flags": r.flags,
        "duration_ms": r.duration_ms,
        "offset_ms": _ms(r.start - t0),
        "envoy_attempts": r.attempts,
        "attempts": [_attempt_view(a, t0) for a in node.attempts],
    }


def _complete(tree: CallNode) -> bool:
    """Whether every call has as many attempt records as Envoy counted attempts (nothing lost or misplaced)."""
    return all(call.record.attempts is None or call.record.attempts == len(call.attempts) for _, call in tree.walk())


def sample_section(data: AttemptRecords) -> dict[str, Any]:
    """The stored section for the records of one scenario window (see the module docstring)."""
    trees = join(data)
    samples = []
    for reasons, tree in pick_samples(trees):
        r = tree.record
        samples.append(
            {
                "reasons": list(reasons),
                "request_id": r.request_id,
                "started_at": r.start,
                "status": r.status,
                "flags": r.flags,
                "duration_ms": r.duration_ms,
                "total_attempts": tree.total_attempts,
                "hops": tree.hops,
                "complete": _complete(tree),
                "call": _call_view(tree, r.start),
            }
        )
    note = (
        f"Picked from {len(trees)} requests the client sidecar served in the scenario window."
        if trees
        else "No request reached the client sidecar in the scenario window."
    )
    return {"available": True, "note": note, "requests": len(trees), "samples": samples}


def collect_sample_requests(mesh: object, start: float, end: float) -> dict[str, Any]:
    """The "Sample requests" section of a scenario run on ``mesh`` from ``start`` to ``end``.

    A mesh without per-attempt records (a cluster) gets ``{"available": false, "note": ...}``; so does a
    local mesh whose logs cannot be read (stopped, removed), with the reason.
    """
    if not isinstance(mesh, AttemptSource):
        return {"available": False, "note": NOT_AVAILABLE, "requests": 0, "samples": []}
    try:
        data = mesh.attempt_records(start, end)
    except (OSError, MeshcheckError) as exc:
        # A report section must not turn a verdict into an error: say why it is empty instead.
        return {
            "available": False,
            "note": f"the per-attempt records could not be read: {type(exc).__name__}: {exc}",
            "requests": 0,
            "samples": [],
        }
    return sample_section(data)
