"""Faults at the destination: errors, latency and connection resets applied by the workloads themselves.

These are the faults a real outage produces, seen by the caller's sidecar exactly like real failures,
so retries, timeouts and outlier detection react to them (unlike Istio's client-side fault injection,
which never reaches the router's retry logic). Each instance keeps one chaos state; this controller
holds the desired state per instance and pushes it whole, so an error fault and a latency fault on the
same service combine, and clearing one kind leaves the other in place.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from pytest_meshcheck.chaos.kinds import INJECTED_KINDS, FaultKind
from pytest_meshcheck.errors import ChaosError

# Re-exported for importers written before FaultKind moved to chaos.kinds.
__all__ = ["AppliedFault", "ChaosTarget", "DestinationChaos", "FaultKind", "error_spec", "latency_spec", "reset_spec"]


class ChaosTarget(Protocol):
    """What the controller needs to know about one workload instance."""

    @property
    def service(self) -> str:
        """Service name."""
        ...

    @property
    def name(self) -> str:
        """Instance name, unique in the mesh."""
        ...

    @property
    def admin_url(self) -> str:
        """Base URL of the instance's admin (chaos) endpoint."""
        ...


@dataclass(frozen=True)
class AppliedFault:
    """One fault as applied, with when, for the report's chaos timeline."""

    kind: FaultKind
    service: str
    instances: tuple[str, ...]
    spec: dict[str, Any]
    applied_at: float
    reverted_at: float | None = None


@dataclass
class DestinationChaos:
    """Applies and reverts faults on workload instances through their admin endpoints.

    Args:
        timeout: Seconds allowed for each admin call.
    """

    timeout: float = 5.0
    _client: httpx.Client | None = field(default=None, repr=False)
    _state: dict[str, dict[str, Any]] = field(default_factory=dict)
    _targets: dict[str, ChaosTarget] = field(default_factory=dict)
    timeline: list[AppliedFault] = field(default_factory=list)

    @property
    def client(self) -> httpx.Client:
        """One keep-alive client for every admin call (a new connection per call costs ~10 ms each)."""
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout)
        return self._client

    def close(self) -> None:
        """Close the HTTP client (faults stay as they are; see :meth:`clear_all`)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _push(self, target: ChaosTarget) -> None:
        state = self._state.get(target.name, {})
        try:
            if state:
                resp = self.client.put(f"{target.admin_url}/chaos", json=state)
            else:
                resp = self.client.delete(f"{target.admin_url}/chaos")
        except httpx.HTTPError as exc:
            raise ChaosError(
                f"cannot reach the chaos endpoint of {target.name} ({target.admin_url}): {exc}; "
                "is the workload running?"
            ) from exc
        if resp.status_code >= 300:
            raise ChaosError(f"{target.name} refused chaos {state}: HTTP {resp.status_code} {resp.text.strip()}")

    def apply(self, kind: FaultKind, spec: dict[str, Any], targets: Sequence[ChaosTarget]) -> AppliedFault:
        """Set fault ``kind`` with ``spec`` (the echo admin's JSON for that kind) on every target.

        Raises:
            ChaosError: ``kind`` is not one the workloads inject, or an instance refused or could not be
                reached; instances already changed are reverted.
        """
        if not targets:
            raise ChaosError("no workload instances to apply the fault to; check the service name and instance filter")
        if kind not in INJECTED_KINDS:
            raise ChaosError(
                f"fault kind {kind!r} is not injected by the workloads; use one of {', '.join(sorted(INJECTED_KINDS))}"
            )
        done: list[ChaosTarget] = []
        try:
            for t in targets:
                self._targets[t.name] = t
                self._state.setdefault(t.name, {})[kind] = dict(spec)
                self._push(t)
                done.append(t)
        except BaseException:
            for t in [*done, targets[len(done)]]:
                self._state.get(t.name, {}).pop(kind, None)
                with contextlib.suppress(ChaosError):
                    self._push(t)
            raise
        fault = AppliedFault(kind, targets[0].service, tuple(t.name for t in targets), dict(spec), time.time())
        self.timeline.append(fault)
        return fault

    def clear(self, targets: Sequence[ChaosTarget], kind: FaultKind | None = None) -> None:
        """Remove fault ``kind`` (or every fault) from the targets."""
        errors: list[str] = []
        for t in targets:
            state = self._state.get(t.name, {})
            if kind is None:
                state.clear()
            else:
                state.pop(kind, None)
            try:
                self._push(t)
            except ChaosError as exc:
                errors.append(str(exc))
        now = time.time()
        names = {t.name for t in targets}
        self.timeline = [
            f
            if f.reverted_at is not None or (kind is not None and f.kind != kind) or not names & set(f.instances)
            else AppliedFault(f.kind, f.service, f.instances, f.spec, f.applied_at, now)
            for f in self.timeline
        ]
        if errors:
            raise ChaosError("could not revert every fault:\n  " + "\n  ".join(errors))

    def clear_all(self) -> None:
        """Revert every fault this controller applied (teardown, Ctrl-C, failures)."""
        self.clear(list(self._targets.values()))

    def active(self) -> dict[str, dict[str, Any]]:
        """The desired chaos state per instance (only instances with a fault)."""
        return {name: dict(s) for name, s in self._state.items() if s}

    @contextmanager
    def fault(self, kind: FaultKind, spec: dict[str, Any], targets: Sequence[ChaosTarget]) -> Iterator[AppliedFault]:
        """Apply a fault for the duration of a ``with`` block; always reverted, also on errors."""
        applied = self.apply(kind, spec, targets)
        try:
            yield applied
        finally:
            self.clear(targets, kind)


def error_spec(rate: float, status: int = 503, limit: int | None = None) -> dict[str, Any]:
    """Echo admin JSON for an error fault: respond ``status`` with probability ``rate``, ``limit`` times at most."""
    _check_rate(rate, "error rate")
    if not 200 <= status <= 599:
        raise ChaosError(f"error status {status} is not an HTTP status 200-599")
    spec: dict[str, Any] = {"status": status, "probability": rate}
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ChaosError(
                f"error limit {limit!r} is not a whole number of errors (at least 1); omit it for no limit"
            )
        if rate < 1.0:
            raise ChaosError(
                f"error limit={limit} with rate={rate:g}: a limited fault fails the first {limit} requests each "
                "instance receives, so it needs rate=1.0"
            )
        spec["limit"] = limit
    return spec


def latency_spec(delay_ms: float, probability: float = 1.0) -> dict[str, Any]:
    """Echo admin JSON for a latency fault."""
    _check_rate(probability, "latency probability")
    if delay_ms < 0:
        raise ChaosError(f"delay {delay_ms} ms is negative")
    return {"delay_ms": delay_ms, "probability": probability}


def reset_spec(rate: float) -> dict[str, Any]:
    """Echo admin JSON for a connection-reset fault."""
    _check_rate(rate, "reset rate")
    return {"probability": rate}


def _check_rate(value: float, what: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ChaosError(f"{what} {value} is outside 0.0-1.0")
