"""The ``chaos`` fixture: faults at the destination, and (separately named) Istio's client-side faults.

Destination faults (:meth:`Chaos.error`, :meth:`Chaos.latency`, :meth:`Chaos.reset`) are applied by
the workloads, so the caller's sidecar sees real failures and its retries, timeouts and outlier
detection react. Istio fault injection (:meth:`Chaos.istio_abort`, :meth:`Chaos.istio_delay`) patches
the service's VirtualService, as ``fault:`` does in Istio: the caller's own sidecar answers, and the
router never sees the request. Every fault is a handle that also works as a context manager, and the
fixture reverts whatever is still active at teardown, also when the test failed or was interrupted.

Each destination fault snapshots the workloads' counters when applied, so :meth:`FaultHandle.proof`
tells how many requests each instance served and how many faults it really injected: a scenario
refuses to judge a policy on a fault that never happened (:class:`ChaosNotEffective`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from pytest_meshcheck.chaos.destination import FaultKind, error_spec, latency_spec, reset_spec
from pytest_meshcheck.errors import ChaosError, ChaosNotEffective
from pytest_meshcheck.harness.timing import CHAOS_APPLY, CHAOS_REVERT, Timings

if TYPE_CHECKING:
    from pytest_meshcheck.backend import MeshBackend, WorkloadInstance
    from pytest_meshcheck.harness.policies import MeshPolicies

# Counter names in the echo workload's /stats for each fault kind.
_COUNTER = {"error": "error", "latency": "delay", "reset": "reset"}


def _stats(inst: WorkloadInstance, client: httpx.Client | None = None) -> dict[str, Any]:
    try:
        resp = (client or httpx).get(f"{inst.admin_url}/stats", timeout=5.0)
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data
    except (httpx.HTTPError, ValueError) as exc:
        raise ChaosError(f"cannot read the counters of {inst.name} at {inst.admin_url}/stats: {exc}") from exc


@dataclass
class InstanceProof:
    """What one instance did while a fault was active."""

    instance: str
    served: int
    injected: int

    def as_dict(self) -> dict[str, int]:
        """JSON form for reports."""
        return {"served": self.served, "injected": self.injected}


@dataclass
class FaultHandle:
    """An applied fault; ``with`` reverts it on exit, :meth:`revert` does so explicitly.

    Attributes:
        kind: ``error``, ``latency``, ``reset``, ``istio-abort`` or ``istio-delay``.
        service: Target service.
        instances: Names of the instances it applies to (all of the service's for Istio faults).
        spec: The fault's parameters.
        applied_at: Unix time it was applied.
        reverted_at: Unix time it was reverted, or ``None`` while active.
    """

    kind: str
    service: str
    instances: tuple[str, ...]
    spec: dict[str, Any]
    applied_at: float
    _chaos: Chaos = field(repr=False)
    _targets: tuple[WorkloadInstance, ...] = field(default=(), repr=False)
    _baseline: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _final: list[InstanceProof] | None = field(default=None, repr=False)
    _restore: Any = field(default=None, repr=False)
    reverted_at: float | None = None

    def __enter__(self) -> FaultHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.revert()

    @property
    def active(self) -> bool:
        """True until reverted."""
        return self.reverted_at is None

    @property
    def is_destination_fault(self) -> bool:
        """True for faults the workloads apply (as opposed to Istio's client-side fault injection)."""
        return not self.kind.startswith("istio-")

    def proof(self) -> list[InstanceProof]:
        """Per instance: requests served and faults injected since the fault was applied.

        After :meth:`revert` this is frozen at the revert time.
        """
        if self._final is not None:
            return list(self._final)
        if not self.is_destination_fault:
            return []
        out: list[InstanceProof] = []
        for t in self._targets:
            now = _stats(t, self._chaos.mesh.chaos.client)
            before = self._baseline.get(t.name, {})
            counter = _COUNTER[self.kind]
            out.append(
                InstanceProof(
                    t.name,
                    int(now["requests_received"]) - int(before.get("requests_received", 0)),
                    int(now["faults_injected"].get(counter, 0))
                    - int(before.get("faults_injected", {}).get(counter, 0)),
                )
            )
        return out

    @property
    def final_proof(self) -> list[InstanceProof]:
        """The proof frozen when the fault was reverted (empty while it is active)."""
        return list(self._final or [])

    def require_effective(self) -> list[InstanceProof]:
        """Confirm at the destination that the fault happened at least once.

        Raises:
            ChaosNotEffective: The instances served traffic but injected nothing, or served nothing at all.
        """
        __tracebackhide__ = True
        proof = self.proof()
        if not self.is_destination_fault:
            return proof
        injected = sum(p.injected for p in proof)
        served = sum(p.served for p in proof)
        if injected == 0 and self.spec.get("probability", 1.0) > 0:
            detail = ", ".join(f"{p.instance}: served {p.served}, injected {p.injected}" for p in proof)
            raise ChaosNotEffective(
                f"chaos not effective: {self.kind} fault {self.spec} on {self.service} was applied but the "
                f"destination injected nothing ({'it served no request' if served == 0 else detail}); "
                "the verdict would not be about this fault, so the scenario is an error, not a pass. "
                "Check that traffic reaches these instances (routing, subsets) and that the fault probability "
                "is not tiny"
            )
        return proof

    def revert(self) -> None:
        """Remove the fault (idempotent); the proof is frozen first."""
        if not self.active:
            return
        with self._chaos.timings.measure(CHAOS_REVERT):
            if self.is_destination_fault:
                try:
                    self._final = self.proof()
                except ChaosError:
                    self._final = []
            self._chaos._revert(self)
        self.reverted_at = time.time()


class Chaos:
    """The ``chaos`` fixture's object. See the module docstring.

    Args:
        mesh: The mesh backend.
        policies: The test's policy fixture (Istio faults patch VirtualServices through it).
    """

    def __init__(self, mesh: MeshBackend, policies: MeshPolicies) -> None:
        self._mesh = mesh
        self.mesh = mesh
        self._policies = policies
        self.handles: list[FaultHandle] = []
        self.timings = Timings()

    # ------------------------------------------------------------ destination faults

    def _targets(
        self, service: str, instances: int | Sequence[str] | None, version: str | None
    ) -> tuple[WorkloadInstance, ...]:
        pool = sorted(self._mesh.instances(service, version=version), key=lambda i: i.name)
        if not pool:
            raise ChaosError(f"service {service!r} (version {version or 'any'}) has no running instance")
        if instances is None:
            return tuple(pool)
        if isinstance(instances, int):
            if not 1 <= instances <= len(pool):
                raise ChaosError(f"instances={instances} but {service} has {len(pool)} instance(s); use 1-{len(pool)}")
            return tuple(pool[:instances])
        by_name = {i.name: i for i in pool}
        unknown = [n for n in instances if n not in by_name]
        if unknown:
            raise ChaosError(f"unknown instance(s) {unknown} of {service}; known: {sorted(by_name)}")
        return tuple(by_name[n] for n in instances)

    def _apply(
        self,
        kind: FaultKind,
        spec: dict[str, Any],
        service: str,
        instances: int | Sequence[str] | None,
        version: str | None,
    ) -> FaultHandle:
        targets = self._targets(service, instances, version)
        with self.timings.measure(CHAOS_APPLY):
            baseline = {t.name: _stats(t, self._mesh.chaos.client) for t in targets}
            applied = self._mesh.chaos.apply(kind, spec, targets)
        handle = FaultHandle(
            kind, targets[0].service, applied.instances, dict(spec), applied.applied_at, self, targets, baseline
        )
        self.handles.append(handle)
        return handle

    def error(
        self,
        service: str,
        rate: float,
        status: int = 503,
        *,
        instances: int | Sequence[str] | None = None,
        version: str | None = None,
        limit: int | None = None,
    ) -> FaultHandle:
        """Respond ``status`` with probability ``rate`` at the destination (all instances, or some).

        ``limit``: each instance injects at most that many errors, then serves. An ejection threshold
        (``consecutive5xxErrors: N``) is exact with ``limit=N``: an attempt that reaches the instance while
        Envoy's ejection is still on its way to the worker is served instead of adding an N + 1st error.
        """
        return self._apply("error", error_spec(rate, status, limit), service, instances, version)

    def latency(
        self,
        service: str,
        delay: float,
        probability: float = 1.0,
        *,
        instances: int | Sequence[str] | None = None,
        version: str | None = None,
    ) -> FaultHandle:
        """Delay responses by ``delay`` seconds with ``probability`` at the destination."""
        return self._apply("latency", latency_spec(delay * 1000.0, probability), service, instances, version)

    def reset(
        self,
        service: str,
        rate: float,
        *,
        instances: int | Sequence[str] | None = None,
        version: str | None = None,
    ) -> FaultHandle:
        """Reset the TCP connection (RST, no response) with probability ``rate`` at the destination."""
        return self._apply("reset", reset_spec(rate), service, instances, version)

    # ------------------------------------------------------------ Istio client-side faults

    def _istio_fault(self, kind: str, service: str, fault: Any, spec: dict[str, Any]) -> FaultHandle:
        from pytest_meshcheck.policy.model import (
            Destination,
            HTTPRoute,
            HTTPRouteDestination,
            PolicySet,
            VirtualService,
        )

        svc = self._mesh.topology.service(service)
        current = self._mesh.policies
        existing = next(
            (
                vs
                for vs in current.virtual_services
                if any(self._mesh.topology.resolve_host(h, vs.namespace) == svc for h in vs.hosts)
            ),
            None,
        )
        if existing is not None:
            patched = dataclasses.replace(
                existing, http=tuple(dataclasses.replace(r, fault=fault) for r in existing.http)
            )
            restore: Any = ("replace", existing)
        else:
            patched = VirtualService(
                name=f"meshcheck-fault-{svc.name}",
                namespace=svc.namespace,
                api_version="networking.istio.io/v1",
                hosts=(svc.name,),
                http=(HTTPRoute(route=(HTTPRouteDestination(Destination(svc.name)),), fault=fault),),
            )
            restore = ("remove", patched)
        with self.timings.measure(CHAOS_APPLY):
            self._policies.apply(PolicySet(virtual_services=(patched,)), builtin=False)
        names = tuple(i.name for i in self._mesh.instances(svc.name))
        handle = FaultHandle(kind, svc.name, names, spec, time.time(), self, _restore=restore)
        self.handles.append(handle)
        return handle

    def istio_abort(self, service: str, status: int = 503, percent: float = 100.0) -> FaultHandle:
        """Istio fault injection (``fault.abort``) on every route of the service's VirtualService."""
        from pytest_meshcheck.policy.model import FaultAbort, HTTPFaultInjection

        fault = HTTPFaultInjection(abort=FaultAbort(http_status=status, percentage=percent))
        return self._istio_fault("istio-abort", service, fault, {"status": status, "percent": percent})

    def istio_delay(self, service: str, delay: float, percent: float = 100.0) -> FaultHandle:
        """Istio fault injection (``fault.delay``, ``delay`` seconds) on the service's routes."""
        from pytest_meshcheck.policy.model import FaultDelay, HTTPFaultInjection

        fault = HTTPFaultInjection(delay=FaultDelay(fixed_delay=delay, percentage=percent))
        return self._istio_fault("istio-delay", service, fault, {"delay_s": delay, "percent": percent})

    # ------------------------------------------------------------ reverting

    def _revert(self, handle: FaultHandle) -> None:
        from pytest_meshcheck.policy.model import PolicySet

        if handle.is_destination_fault:
            self._mesh.chaos.clear(list(handle._targets), handle.kind)  # type: ignore[arg-type]
            return
        action, vs = handle._restore
        if action == "replace":
            self._policies.apply(PolicySet(virtual_services=(vs,)), builtin=False)
        else:
            self._policies.remove(PolicySet(virtual_services=(vs,)))

    def revert_all(self) -> None:
        """Revert every fault still active, newest first; raise the first error after trying them all."""
        errors: list[BaseException] = []
        for handle in reversed(self.handles):
            try:
                handle.revert()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise ChaosError(f"could not revert {len(errors)} fault(s): {errors[0]}") from errors[0]
