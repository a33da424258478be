"""Run one case on a running local mesh and decide every check the model's prediction supports.

Evidence comes from the load results (client-side statuses and latencies, ``x-envoy-attempt-count``
that Envoy adds to each response, ``x-envoy-overloaded``) and from the sidecar's admin ``/stats``
read just before and just after the load (retries, overflow, ejections): no Prometheus, so an example
costs about a second. Between examples every fault is cleared and the policies are replaced by none
and then by the case's, so Envoy rebuilds the cluster and no ejection or connection survives from the
previous example.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pytest_meshcheck.chaos.destination import error_spec, latency_spec, reset_spec
from pytest_meshcheck.load import LoadResult
from pytest_meshcheck.local.mesh import LocalMesh
from pytest_meshcheck.policy import PolicySet
from pytest_meshcheck.verdict.power import decide
from tests.fidelity.cases import NAMESPACE, SERVICE, Case
from tests.fidelity.known import known_open
from tests.fidelity.predict import Prediction, predict
from tests.fidelity.strategies import bounded, too_slow

# A timeout can fire only after its time, and a request can end only after its delays; a request on
# this shared two-core machine may also be served up to this much later than the model's bound.
LATENCY_SLACK = 0.25
CLOCK_GRANULARITY = 0.01
_STATS = (
    "upstream_rq_retry",
    "upstream_rq_pending_overflow",
    "upstream_rq_active_overflow",
    "outlier_detection.ejections_enforced_total",
)
_STATS_RE = (
    rf"^cluster\.outbound\|[0-9]+\|\|{SERVICE}\.{NAMESPACE}\.svc\.cluster\.local;?\."
    rf"({'|'.join(re.escape(s) for s in _STATS)})$"
)


@dataclass(frozen=True)
class Check:
    """One decided check.

    Attributes:
        name: What was checked.
        statistical: A rate check (part of the Bonferroni family); otherwise exact.
        passed: The mesh did what the model predicts.
        detail: Observed and expected values.
    """

    name: str
    statistical: bool
    passed: bool
    detail: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.passed else 'FAIL'} {self.name}: {self.detail}"


def _stats(mesh: LocalMesh) -> dict[str, int]:
    assert mesh.admin is not None
    out = dict.fromkeys(_STATS, 0)
    for key, value in mesh.admin.stats(_STATS_RE).items():
        out[next(s for s in _STATS if key.endswith("." + s))] += int(value)
    return out


def prepare(mesh: LocalMesh, case: Case) -> None:
    """Clear faults and put the case's policies in force on a freshly built cluster."""
    mesh.chaos.clear_all()
    mesh.replace_all(PolicySet())
    mesh.replace_all(case.policies())


def execute(mesh: LocalMesh, case: Case, n: int) -> tuple[LoadResult, dict[str, int]]:
    """Inject the case's faults, send ``n`` requests, revert the faults; return the load and counter deltas."""
    instances = mesh.instances(SERVICE)
    try:
        for f in case.faults:
            targets = instances if f.instances is None else instances[: f.instances]
            if f.kind == "error":
                mesh.chaos.apply("error", error_spec(f.rate, f.status), targets)
            elif f.kind == "latency":
                mesh.chaos.apply("latency", latency_spec(f.delay * 1000.0, f.rate), targets)
            else:
                mesh.chaos.apply("reset", reset_spec(f.rate), targets)
        before = _stats(mesh)
        result = mesh.run_load(SERVICE, case.load.profile(n))
        after = _stats(mesh)
    finally:
        mesh.chaos.clear_all()
    return result, {k: after[k] - before[k] for k in _STATS}


def decide_all(pred: Prediction, result: LoadResult, counters: dict[str, int]) -> list[Check]:
    """Every check the prediction supports, decided on one sample."""
    n = result.count
    recs = result.records
    status = np.asarray(recs.status[:n])
    attempts = np.asarray(recs.attempts[:n])
    # Router time: from the moment the request was sent (an open loop's queueing is not the mesh's).
    took = np.asarray(recs.done[:n]) - np.asarray(recs.sent[:n])
    checks: list[Check] = []
    for rc in pred.rates:
        hits = (
            int(np.count_nonzero((status >= 200) & (status < 300)))
            if rc.status is None
            else int(np.count_nonzero(status == rc.status))
        )
        d = decide(rc.rule, hits, n)
        checks.append(Check(f"model: {rc.name}", True, d.passed, d.summary))
    checks += _support(pred, status, int(np.count_nonzero(np.asarray(recs.overloaded[:n]))))
    checks += _attempts(pred, status, attempts, counters)
    checks += _latency(pred, status, took)
    checks += _overflow(pred, result, counters)
    checks += _ejection(pred, result, counters)
    return checks


def _support(pred: Prediction, status: np.ndarray, overloaded: int) -> list[Check]:
    """Every final status the mesh gave has a non-zero probability in the model."""
    allowed = {o.status for o, p in pred.success.outcomes.items() if p > 0}
    if pred.overflow_possible or any(e.no_healthy_upstream for e in pred.ejections):
        allowed.add(503)
    if any(w.source == "Envoy jittered back-off" for w in pred.success.warnings):
        # The model then uses the mean back-off, so its outcomes name only one side of the race between
        # the route timeout and the last try: either may end a request (found/5eede89b2508.yaml).
        allowed.add(504)
        allowed |= {f.status if f.kind == "error" else 503 for f in pred.case.faults if f.kind != "latency"}
    seen = {int(s): int(c) for s, c in zip(*np.unique(status, return_counts=True), strict=True)}
    extra = {s: c for s, c in seen.items() if s not in allowed}
    detail = f"observed {seen} ({overloaded} with x-envoy-overloaded), model allows {sorted(allowed)}"
    return [Check("model: final statuses", False, not extra, detail)]


def _attempts(pred: Prediction, status: np.ndarray, attempts: np.ndarray, counters: dict[str, int]) -> list[Check]:
    checks: list[Check] = []
    known = attempts >= 0
    hist = {int(a): int(c) for a, c in zip(*np.unique(attempts, return_counts=True), strict=True)}
    most = 1 + pred.policy.retry.num_retries
    over = int(np.count_nonzero(attempts > most))
    checks.append(Check(f"model: at most {most} upstream tries per request", False, over == 0, f"attempts {hist}"))
    # Only responses from the router carry x-envoy-attempt-count; a client-side abort never reaches it.
    if bool(known.all()):
        client = int((attempts[known] - 1).sum())
        envoy = counters["upstream_rq_retry"]
        checks.append(
            Check("upstream_rq_retry = client retries", False, envoy == client, f"Envoy {envoy}, client {client}")
        )
    return checks


def _latency(pred: Prediction, status: np.ndarray, took: np.ndarray) -> list[Check]:
    lat = pred.latency
    checks: list[Check] = []
    client = pred.policy.fault.delay if pred.policy.fault.delay_fraction > 0 else 0.0
    if lat.ceiling is not None:
        bound = lat.ceiling + client + LATENCY_SLACK
        worst = float(took.max())
        checks.append(
            Check(
                "model: latency ceiling",
                False,
                worst <= bound,
                f"slowest {worst:.3f} s, ceiling {lat.ceiling:.3f} s + client delay {client:g} s + slack",
            )
        )
    slow = [f for f in pred.case.faults if f.kind == "latency"]
    only_slow = len(pred.case.faults) == 1 and slow and slow[0].rate == 1.0 and slow[0].instances is None
    if only_slow and lat.status is not None and lat.slow_range is not None and pred.policy.fault.abort_fraction == 0:
        low, high = lat.slow_range
        ends = int(np.count_nonzero(status == lat.status))
        checks.append(
            Check(f"model: every request ends in {lat.status}", False, ends == len(status), f"{ends}/{len(status)}")
        )
        fastest = float(took.min())
        checks.append(
            Check(
                "model: fastest request not before the slow range",
                False,
                fastest >= low - CLOCK_GRANULARITY,
                f"fastest {fastest:.3f} s, range starts {low:.3f} s",
            )
        )
        slowest = float(took.max())
        checks.append(
            Check(
                "model: slowest request within the slow range",
                False,
                slowest <= high + client + LATENCY_SLACK,
                f"slowest {slowest:.3f} s, range ends {high:.3f} s",
            )
        )
    return checks


def _overflow(pred: Prediction, result: LoadResult, counters: dict[str, int]) -> list[Check]:
    level = pred.overflow.level
    overloaded = result.overloaded_count
    counted = counters["upstream_rq_pending_overflow"] + counters["upstream_rq_active_overflow"]
    detail = f"{overloaded} x-envoy-overloaded responses, Envoy overflow counters {counted}"
    if pred.case.load.kind != "closed":
        # The overflow model is stated for a closed-loop concurrency.
        return []
    if level == "never":
        return [Check("model: no overflow", False, overloaded == 0 and counted == 0, detail)]
    if level == "always":
        return [Check("model: overflow happens", False, overloaded > 0, detail)]
    return []


def _ejection(pred: Prediction, result: LoadResult, counters: dict[str, int]) -> list[Check]:
    enforced = counters["outlier_detection.ejections_enforced_total"]
    if not pred.ejection_possible:
        return [Check("model: no ejection", False, enforced == 0, f"ejections enforced {enforced}")]
    sure = [
        e
        for e, f in zip(pred.ejections, pred.case.faults, strict=True)
        if e.will_eject and f.rate == 1.0 and e.failures_to_eject is not None
    ]
    # A fault that fails every request ejects its first instance after failures_to_eject tries there, and
    # each instance gets about a third of the attempts.
    if sure and result.count >= 3 * 4 * max(e.failures_to_eject or 0 for e in sure):
        return [Check("model: an instance is ejected", False, enforced >= 1, f"ejections enforced {enforced}")]
    return []


class MeshSource(Protocol):
    """Gives the running mesh for an Istio version (``conftest.Meshes``)."""

    def get(self, istio: str) -> LocalMesh:
        """The mesh whose translation follows ``istio``."""
        ...


class OutOfBounds(Exception):
    """The example is outside the suite's bounds (it would take too long); it is not run."""


class KnownOpen(Exception):
    """The example would show a judged bug that is still open (``known.py``); it is not run."""


def run_example(
    meshes: MeshSource,
    case: Case,
    *,
    alpha_check: float,
    beta: float,
    delta: float,
    skip_known: bool = True,
) -> tuple[list[Check], str]:
    """Predict, bound, run and decide one example; return its checks and why rate checks were skipped.

    Raises:
        OutOfBounds: The example would take more than ``strategies.MAX_SECONDS``.
        KnownOpen: With ``skip_known``, the example matches a judged, still open counterexample.
    """
    first = predict(case, alpha_check=alpha_check, beta=beta, delta=delta)
    case = bounded(case, first.n)
    pred = predict(case, alpha_check=alpha_check, beta=beta, delta=delta) if case != first.case else first
    if too_slow(case, pred.n):
        raise OutOfBounds(f"{case} would take more than the bound")
    if skip_known and (name := known_open(case)):
        raise KnownOpen(name)
    mesh = meshes.get(case.istio)
    prepare(mesh, case)
    result, counters = execute(mesh, case, pred.n)
    return decide_all(pred, result, counters), pred.skipped
