"""What a policy set does to a user request that travels a call chain (topology ``calls``).

A chain prediction composes single-hop predictions; it never re-derives Envoy's semantics:

* each hop (the client's sidecar to the entry service, then each calling pod's sidecar to a dependency) is
  the single-hop model (:func:`~pytest_meshcheck.expect.retries.predict_success`) on that hop's
  :func:`~pytest_meshcheck.expect.effective.effective_policy`;
* the faults a hop sees are the callee's own destination faults plus what its dependencies look like from
  the callee's side (:func:`_presentation`): a dependency that fails with status S after its own sidecar's
  retries makes the callee answer S (``on_error: fail``), the given status, or nothing (``ignore``); a slow
  dependency makes the callee slow;
* call counts compose as a branching process: the attempts of a hop are the single-hop model's attempt
  distribution (:func:`_attempts_pmf`), and every attempt that gets as far as a call makes it once.

Assumptions (``docs/explanation/call-chains.md``): hops fail independently; a caller does not cancel its
in-flight calls when its own caller gives up (the echo workload does not); a dependency's latency and its
failures are independent after its sidecar's retries. Typical use::

    pred = predict_chain(topology, policies, "1.30", "order-service",
                         {"payment-service": [DestinationFault("error", rate=0.3, status=503)]})
    print(pred.describe())
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.expect.effective import EffectivePolicy, effective_policy
from pytest_meshcheck.expect.model import DestinationFault, Load, Outcome, Prediction, Reason, SuccessPrediction
from pytest_meshcheck.expect.retries import Failure, predict_success, retry_token
from pytest_meshcheck.expect.timeouts import backoff_ranges, effective_per_try_timeout
from pytest_meshcheck.istio_version import IstioVersion, parse_istio_version
from pytest_meshcheck.policy.model import PolicySet
from pytest_meshcheck.topology import Call, Topology

#: Methods treated as non-idempotent. RFC 9110 §9.2.2 defines PUT and DELETE as idempotent (repeating them
#: leaves the same state), while POST and PATCH may change state on every delivery. Lint's MC150 uses the same set.
NON_IDEMPOTENT_METHODS = ("POST", "PATCH")
#: Count distributions are kept up to this many calls; the rest is lumped into the last bin (a lower bound).
PMF_CAP = 64
#: Statuses that stand for "the callee failed after it received the request" when asking whether a hop's
#: retryOn can multiply calls (retriable-4xx covers 409; listed codes are added per policy).
_POST_SEND_STATUSES = (409, 500, 502, 503, 504)

Pmf = tuple[float, ...]


# --- predictions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hop(Prediction):
    """One hop of the chain: a sidecar calling ``service`` for ``caller`` (``None``: the test's client).

    Attributes:
        caller: The calling service, or ``None`` for the client's sidecar (the entry hop).
        service: The called service.
        call: The topology call, or ``None`` for the entry hop.
        policy: What the caller's sidecar enforces on this hop.
        success: The single-hop prediction given the faults the callee presents (``faults``).
        faults: The faults the callee presents: its own, then its dependencies' failures and delays.
        tries: Most attempts the sidecar makes per call (``attempts + 1``).
        worst_tries: Attempts that can reach the callee's application per call: ``tries`` when retryOn
            retries a failure that happens after the request was sent (a status, a reset, a per-try
            timeout), else 1.
        attempts_pmf: Probability of 0, 1, 2... attempts per call.
        ceiling: Longest time the hop may take, or ``None`` when nothing bounds it.
        binding: What sets ``ceiling``.
    """

    caller: str | None
    service: str
    call: Call | None
    policy: EffectivePolicy = field(repr=False, compare=False)
    success: SuccessPrediction = field(repr=False, compare=False)
    faults: tuple[DestinationFault, ...] = ()
    tries: int = 1
    worst_tries: int = 1
    attempts_pmf: Pmf = (0.0, 1.0)
    ceiling: float | None = None
    binding: str = ""

    @property
    def label(self) -> str:
        """``client -> order-service`` or ``order-service -> payment-service POST /pay``."""
        head = f"{self.caller or 'client'} -> {self.service}"
        return f"{head} {self.call.method} {self.call.path}" if self.call else head

    @property
    def mean_attempts(self) -> float:
        """Expected attempts per call."""
        return _mean(self.attempts_pmf)


@dataclass(frozen=True)
class CallCount(Prediction):
    """Calls (attempts) reaching a service for one user request.

    Attributes:
        service: The service.
        expected: Expected attempts reaching it per user request.
        worst: Most attempts that can reach its application per user request (product of ``worst_tries``
            along each path, summed over paths).
        pmf: Probability of 0, 1, 2... attempts per user request (summed over every call edge to it).
    """

    service: str
    expected: float
    worst: int
    pmf: Pmf = ()


@dataclass(frozen=True)
class WastedWork(Prediction):
    """Inner work that can go on after the outer hop gave up.

    Attributes:
        caller: The service whose attempt was cut.
        callee: The dependency it was calling.
        outer_limit: Seconds after which the caller's own caller gives up on one attempt (per-try or route timeout).
        inner_ceiling: Longest time the call to ``callee`` may take (``None``: unbounded).
        excess: Seconds the call may run on after the caller gave up (``None``: unbounded).
        retried: The outer hop retries after the cut, so the same work starts again while the first runs on.
    """

    caller: str
    callee: str
    outer_limit: float
    inner_ceiling: float | None
    excess: float | None
    retried: bool


@dataclass(frozen=True)
class Duplicates(Prediction):
    """How often one call is delivered twice or more for one user request.

    Attributes:
        caller: The calling service.
        call: The topology call.
        idempotent: ``False`` for POST and PATCH (:data:`NON_IDEMPOTENT_METHODS`).
        p_twice: Probability that two or more attempts of this call reach the callee for one user request.
        p_inner: Probability that the callee's own hop (the caller's sidecar) sends one call twice or more.
        p_outer: Probability that the caller itself runs twice or more and so makes the call again.
    """

    caller: str
    call: Call
    idempotent: bool
    p_twice: float
    p_inner: float
    p_outer: float


@dataclass(frozen=True)
class ChainPrediction(Prediction):
    """What one user request at ``entry`` does along the call graph.

    Attributes:
        entry: The service the client calls.
        hops: Every hop, depth first in call order (the entry hop first).
        p_success: Probability that the user request gets a 2xx.
        calls: Calls per user request for each service reached.
        ceiling: End-to-end latency ceiling in seconds, ``None`` when unbounded.
        binding: What sets the ceiling.
        wasted: Inner work that can outlive its caller's attempt.
        duplicates: Per call, how often it is delivered twice or more.
    """

    entry: str
    hops: tuple[Hop, ...]
    p_success: float
    calls: dict[str, CallCount] = field(default_factory=dict, hash=False)
    ceiling: float | None = None
    binding: str = ""
    wasted: tuple[WastedWork, ...] = ()
    duplicates: tuple[Duplicates, ...] = ()

    def hop(self, service: str, caller: str | None = None) -> Hop:
        """The hop to ``service`` (from ``caller``, when several services call it)."""
        for h in self.hops:
            if h.service == service and (caller is None or h.caller == caller):
                return h
        raise MeshcheckError(f"no hop to {service!r} in the chain from {self.entry}; hops: {self._hop_names()}")

    def duplicate(self, service: str) -> Duplicates:
        """The duplicate prediction of the call to ``service``."""
        for d in self.duplicates:
            if d.call.service == service:
                return d
        raise MeshcheckError(f"no call to {service!r} in the chain from {self.entry}; hops: {self._hop_names()}")

    def _hop_names(self) -> str:
        return ", ".join(h.label for h in self.hops)

    def describe(self) -> str:
        """Hops and per-hop numbers, then calls, latency and duplicates: a few lines for reports."""
        lines = [f"chain from {self.entry}: P(success) {self.p_success:.4f}"]
        for h in self.hops:
            depth = 1 + sum(1 for _ in _ancestors(self.hops, h))
            ceiling = "unbounded" if h.ceiling is None else f"{h.ceiling:g}s"
            lines.append(
                f"{'  ' * depth}{h.label}: P(ok) {h.success.p_success:.4f}, tries {h.tries} "
                f"(worst {h.worst_tries} reach the app), attempts/call {h.mean_attempts:.3f}, ceiling {ceiling}"
            )
        calls = ", ".join(f"{c.service} {c.expected:.3f} (worst {c.worst})" for c in self.calls.values())
        lines.append(f"calls per user request: {calls}")
        ceiling = "unbounded" if self.ceiling is None else f"{self.ceiling:g}s"
        lines.append(f"latency ceiling: {ceiling} ({self.binding})")
        for w in self.wasted:
            more = "unbounded" if w.excess is None else f"up to {w.excess:g}s"
            lines.append(
                f"wasted work: {w.caller} -> {w.callee} runs {more} after {w.caller}'s attempt is cut at "
                f"{w.outer_limit:g}s" + (" (and the attempt is retried)" if w.retried else "")
            )
        for d in self.duplicates:
            kind = "idempotent" if d.idempotent else "NON-idempotent"
            lines.append(
                f"duplicates: {d.caller} -> {d.call.service} {d.call.method} {d.call.path} ({kind}): "
                f"P(>=2 deliveries) {d.p_twice:.4f} (own hop {d.p_inner:.4f}, caller re-run {d.p_outer:.4f})"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


def _ancestors(hops: tuple[Hop, ...], hop: Hop) -> list[Hop]:
    out: list[Hop] = []
    caller = hop.caller
    while caller is not None:
        parent = next((h for h in hops if h.service == caller), None)
        if parent is None:
            break
        out.append(parent)
        caller = parent.caller
    return out


# --- count distributions -------------------------------------------------------------------------------


def _mean(pmf: Pmf) -> float:
    return sum(i * p for i, p in enumerate(pmf))


def _cap(values: Sequence[float]) -> Pmf:
    if len(values) <= PMF_CAP:
        return tuple(values)
    return (*values[: PMF_CAP - 1], sum(values[PMF_CAP - 1 :]))


def _convolve(a: Pmf, b: Pmf) -> Pmf:
    out = [0.0] * (len(a) + len(b) - 1)
    for i, p in enumerate(a):
        if p:
            for j, q in enumerate(b):
                out[i + j] += p * q
    return _cap(out)


def _compound(outer: Pmf, inner: Pmf) -> Pmf:
    """Distribution of ``K_1 + ... + K_E``: ``E ~ outer``, each ``K_i ~ inner`` independently (Wald's setting)."""
    total = [0.0]
    power: Pmf = (1.0,)
    for count, p in enumerate(outer):
        if count:
            power = _convolve(power, inner)
        if p:
            total += [0.0] * (len(power) - len(total))
            for k, q in enumerate(power):
                total[k] += p * q
    return _cap(total)


def _thin(pmf: Pmf, keep: float) -> Pmf:
    """Distribution of how many of ``N ~ pmf`` trials go on, each with probability ``keep``."""
    out = [0.0] * len(pmf)
    for n, p in enumerate(pmf):
        for k in range(n + 1):
            out[k] += p * math.comb(n, k) * keep**k * (1 - keep) ** (n - k)
    return tuple(out)


def _add(a: Pmf, b: Pmf) -> Pmf:
    """Distribution of the sum of two independent counts."""
    return _convolve(a, b) if a and b else a or b


# --- per-hop pieces ------------------------------------------------------------------------------------


def _failure_of(policy: EffectivePolicy, outcome: Outcome) -> tuple[Failure, int | None] | None:
    """The failure a single-attempt outcome stands for, or ``None`` when it could never be retried."""
    flags = set(outcome.flags.split(","))
    if flags & {"FI", "NC", "UH", "UO"}:
        return None
    if "UC" in flags:
        return "reset", None
    if "UF" in flags:
        return "refused", None
    if "UT" in flags:
        # On a first attempt a UT is the per-try timeout whenever one applies (it is below the route timeout).
        return ("per-try timeout", None) if effective_per_try_timeout(policy)[0] is not None else None
    return ("status", outcome.status) if not outcome.ok else None


def _attempts_pmf(policy: EffectivePolicy, faults: Sequence[DestinationFault], load: Load) -> Pmf:
    """P(0, 1, 2... attempts) per call, from the single-hop model run with fewer retries.

    P(K >= j + 1) is the share of requests that a policy allowing only j attempts ends on a retried failure
    of its last attempt: exactly the requests the real policy sends an attempt j + 1 for.
    """
    retry = policy.retry
    at_least = [1.0 - policy.fault.abort_fraction]  # an injected abort never reaches the router
    for allowed in range(1, retry.num_retries + 1):
        truncated = replace(policy, retry=replace(retry, num_retries=allowed - 1))
        pred = predict_success(truncated, faults, load)
        if allowed == 1:
            p_more = 0.0
            for outcome, p in pred.outcomes.items():
                failure = _failure_of(policy, outcome)
                if failure is not None and retry_token(policy, failure[0], failure[1]) is not None:
                    p_more += p
        else:
            p_more = sum(p for o, p in pred.outcomes.items() if "URX" in o.flags.split(","))
        at_least.append(min(p_more, at_least[-1]))
    at_least.append(0.0)
    pmf = [1.0 - at_least[0]] + [at_least[j] - at_least[j + 1] for j in range(len(at_least) - 1)]
    return tuple(max(p, 0.0) for p in pmf)


def worst_tries(policy: EffectivePolicy) -> int:
    """Attempts per call that can reach the callee's application: retries of post-send failures only.

    connect-failure, refused-stream and reset-before-request retry attempts that never reached the
    application, so they cannot multiply the work below it.
    """
    retry = policy.retry
    if retry.num_retries == 0:
        return 1
    statuses = (*_POST_SEND_STATUSES, *retry.retriable_status_codes)
    post_send = any(retry_token(policy, "status", s) for s in statuses) or retry_token(policy, "reset") is not None
    return retry.num_retries + 1 if post_send else 1


def attempt_limit(policy: EffectivePolicy) -> tuple[float | None, str]:
    """Seconds one attempt may take before the sidecar gives up on it, and which field says so."""
    per_try, _ = effective_per_try_timeout(policy)
    if per_try is not None:
        return per_try, "perTryTimeout"
    if policy.timeout is not None:
        return policy.timeout, "timeout"
    return None, ""


def hop_ceiling(policy: EffectivePolicy, work: float | None) -> tuple[float | None, str]:
    """Longest time a hop may take when one attempt's work at the callee takes at most ``work`` seconds.

    Returns the ceiling and what binds it: the route timeout, the per-try timeouts of every try, or the
    callee's own calls (``work``) times the tries.
    """
    per_try, _ = effective_per_try_timeout(policy)
    tries = policy.retry.num_retries + 1
    backoff = sum(hi for _, hi in backoff_ranges(policy.retry))
    per_attempt, what = per_try, f"perTryTimeout {per_try:g}s x {tries} tries + back-off" if per_try else ""
    if work is not None and (per_attempt is None or work < per_attempt):
        per_attempt, what = work, f"the calls below take at most {work:g}s, x {tries} tries + back-off"
    by_tries = None if per_attempt is None else round(tries * per_attempt + backoff, 9)
    if policy.timeout is not None and (by_tries is None or policy.timeout <= by_tries):
        return policy.timeout, f"route timeout {policy.timeout:g}s of {policy.service.name}"
    if by_tries is None:
        return None, f"nothing bounds calls to {policy.service.name}"
    return by_tries, f"{policy.service.name}: {what}"


# --- the composition -----------------------------------------------------------------------------------


def _call_reason(topology: Topology, caller: str, index: int, call: Call) -> Reason:
    service_index = next(i for i, s in enumerate(topology.services) if s.name == caller)
    where = f"{topology.source}:{call.line}" if call.line else None
    effect = {
        "fail": "a failure makes the caller answer with the dependency's status",
        "ignore": "failures are ignored",
    }
    return Reason(
        f"services[{service_index}].calls[{index}]",
        f"{call.method} {call.path} -> {call.service}, on_error {call.on_error}",
        effect.get(str(call.on_error), f"a failure makes the caller answer {call.on_error}"),
        f"topology {topology.source}",
        where,
    )


class _Composer:
    """Memoised hop predictions for one (topology, policies, Istio, faults, load)."""

    def __init__(
        self,
        topology: Topology,
        policies: PolicySet,
        istio: IstioVersion,
        faults: Mapping[str, Sequence[DestinationFault]],
        load: Load,
    ) -> None:
        self.topology = topology
        self.policies = policies
        self.istio = istio
        self.faults = faults
        self.load = load
        self.warnings: list[Reason] = []
        self._policy: dict[str, EffectivePolicy] = {}
        self._faults: dict[str, tuple[DestinationFault, ...]] = {}
        self._success: dict[str, SuccessPrediction] = {}
        self._pmf: dict[str, Pmf] = {}

    def policy(self, service: str) -> EffectivePolicy:
        if service not in self._policy:
            self._policy[service] = effective_policy(self.policies, self.topology, service, istio=self.istio)
        return self._policy[service]

    def success(self, service: str) -> SuccessPrediction:
        if service not in self._success:
            self._success[service] = predict_success(self.policy(service), self.presentation(service), self.load)
        return self._success[service]

    def attempts(self, service: str) -> Pmf:
        if service not in self._pmf:
            self._pmf[service] = _attempts_pmf(self.policy(service), self.presentation(service), self.load)
        return self._pmf[service]

    def own_failure(self, service: str) -> float:
        """Probability that the service's own fault ends an attempt before it makes any call."""
        hosts = self.policy(service).hosts or 1
        ok = 1.0
        for f in self.faults.get(service, ()):
            if f.kind != "latency" and not (f.kind == "error" and 200 <= f.status < 300):
                ok *= 1 - f.rate * f.affected(hosts) / hosts
        return 1 - ok

    def presentation(self, service: str, single: int | None = None) -> tuple[DestinationFault, ...]:
        """The faults a caller's sidecar sees at ``service``: its own, then its calls' failures and delays.

        Args:
            service: The callee.
            single: Index of a call whose first attempt is known to be its last (used to condition duplicates).
        """
        if single is None and service in self._faults:
            return self._faults[service]
        own = tuple(self.faults.get(service, ()))
        # Own resets, refusals and errors come first: the workload answers them before making any call.
        out = [f for f in own if f.kind != "latency"] + [f for f in own if f.kind == "latency"]
        limit, _ = attempt_limit(self.policy(service))
        for k, call in enumerate(self.topology.service(service).calls):
            out += self._derived(call, limit, single == k)
        if single is not None:
            return tuple(out)
        self._faults[service] = tuple(out)
        return self._faults[service]

    def _first_final(self, service: str) -> tuple[dict[Outcome, float], bool]:
        """Outcomes of a call whose first attempt ends it (renormalised), and whether slow attempts are retried."""
        policy = self.policy(service)
        one = replace(policy, retry=replace(policy.retry, num_retries=0))
        final: dict[Outcome, float] = {}
        for outcome, p in predict_success(one, self.presentation(service), self.load).outcomes.items():
            failure = _failure_of(policy, outcome)
            if failure is None or retry_token(policy, failure[0], failure[1]) is None:
                final[outcome] = p
        total = sum(final.values()) or 1.0
        slow_retried = effective_per_try_timeout(policy)[0] is not None and bool(retry_token(policy, "per-try timeout"))
        return {o: p / total for o, p in final.items()}, slow_retried

    def _derived(self, call: Call, caller_limit: float | None, single: bool = False) -> list[DestinationFault]:
        """What a dependency's hop looks like from inside the caller, as destination faults of the caller.

        With ``single``, the call is conditioned on its first attempt being its last.
        """
        policy = self.policy(call.service)
        inner = self.presentation(call.service)
        per_try, _ = effective_per_try_timeout(policy)
        cut = min(x for x in (per_try, policy.timeout, math.inf) if x is not None)
        outcomes = self.success(call.service).outcomes
        slow_retried = False
        if single:
            outcomes, slow_retried = self._first_final(call.service)
        slow: list[DestinationFault] = []
        for f in inner:
            if f.kind == "latency":
                if single and slow_retried and per_try is not None and f.delay >= per_try:
                    continue  # a slow first attempt would have been retried: excluded by the condition
                if f.instances is not None:
                    self.warnings.append(
                        Reason(
                            None,
                            f.describe(),
                            "a partial latency fault is passed up as if on every instance",
                            "chain model",
                        )
                    )
                # The call lasts at least as long as its first attempt: the delay, or the timeout cutting it.
                slow.append(DestinationFault("latency", f.rate, delay=min(f.delay, cut)))
        swallowed = caller_limit is not None and bool(slow) and all(f.delay >= caller_limit for f in slow)
        out: list[DestinationFault] = []
        if call.on_error != "ignore":
            by_status: dict[int, float] = defaultdict(float)
            for outcome, p in outcomes.items():
                if outcome.ok or outcome.status < 400:
                    continue
                if swallowed and "UT" in outcome.flags.split(","):
                    continue  # the caller's own caller gives up on the slow attempt before this 504 arrives
                status = outcome.status if call.on_error == "fail" else int(call.on_error)
                by_status[status] += p
            taken = 0.0
            # Independent faults where the first firing one decides: conditional rates give each status its share.
            for status, p in sorted(by_status.items()):
                rate = min(1.0, p / (1.0 - taken)) if taken < 1.0 else 0.0
                if rate > 0:
                    out.append(DestinationFault("error", rate=rate, status=status))
                taken += p
        return out + slow


def _walk(topology: Topology, entry: str) -> list[tuple[str | None, str, Call | None, int]]:
    """Hops depth first in call order: (caller, callee, call, call index)."""
    out: list[tuple[str | None, str, Call | None, int]] = [(None, entry, None, -1)]

    def visit(service: str) -> None:
        for k, call in enumerate(topology.service(service).calls):
            out.append((service, call.service, call, k))
            visit(call.service)

    visit(entry)
    return out


def _check_inputs(
    topology: Topology, entry: str, faults: Mapping[str, Sequence[DestinationFault]]
) -> tuple[str, dict[str, tuple[DestinationFault, ...]]]:
    """The entry's short name and the faults keyed by short service name; clear errors for bad input."""
    name = topology.service(entry).name
    out: dict[str, tuple[DestinationFault, ...]] = {}
    known = ", ".join(s.name for s in topology.services)
    for key, items in faults.items():
        try:
            svc = topology.service(key)
        except MeshcheckError:
            raise MeshcheckError(
                f"faults names {key!r}, which is not a service of topology {topology.source}; known services: {known}"
            ) from None
        if isinstance(items, DestinationFault) or not all(isinstance(f, DestinationFault) for f in items):
            raise MeshcheckError(f"faults[{key!r}] must be a list of DestinationFault, got {items!r}")
        out[svc.name] = out.get(svc.name, ()) + tuple(items)
    return name, out


def _duplicates(
    comp: _Composer, caller: str, call: Call, reasons: list[Reason], total: Pmf, reaching: Pmf, per_call: Pmf
) -> Duplicates:
    """P(a call reaches its callee twice or more for one user request), split by which hop re-sends it."""
    warnings = []
    if any(f.kind == "refused" for f in comp.presentation(call.service)):
        warnings.append(
            Reason(
                None, "connection refused", "refused attempts are counted: an upper bound on deliveries", "chain model"
            )
        )
    caller_policy = comp.policy(caller)
    p_le1 = sum(total[:2])
    runs_once = comp.attempts(caller)[1] if len(comp.attempts(caller)) > 1 else 0.0
    if runs_once > 0 and len(reaching) > 1 and len(per_call) > 1:
        # The caller re-runs (and calls again) mostly when this very call went badly: condition the caller's
        # attempt count on the call's first attempt being its last instead of treating them as independent.
        index = comp.topology.service(caller).calls.index(call)
        given = _attempts_pmf(caller_policy, comp.presentation(caller, single=index), comp.load)
        once_given = given[1] if len(given) > 1 else 0.0
        both = min(reaching[1] * once_given / runs_once, 1.0) * per_call[1]
        p_le1 = reaching[0] + min(both, reaching[1], per_call[1])
    return Duplicates(
        caller,
        call,
        call.method not in NON_IDEMPOTENT_METHODS,
        max(1 - p_le1, 0.0),
        max(1 - sum(per_call[:2]), 0.0),
        max(1 - sum(reaching[:2]), 0.0),
        reasons=(*reasons, *caller_policy.reason("retry.attempts", "retry.retry_on", "retry.per_try_timeout")),
        warnings=tuple(warnings),
    )


def _wasted(comp: _Composer, caller: str, callee: EffectivePolicy, inner: float | None) -> WastedWork | None:
    """Work on ``callee`` that can go on after ``caller``'s own caller gave up on the attempt."""
    outer = comp.policy(caller)
    limit, what = attempt_limit(outer)
    if limit is None or (inner is not None and inner <= limit):
        return None
    retried = what == "perTryTimeout" and retry_token(outer, "per-try timeout") is not None
    field_key = "retry.per_try_timeout" if what == "perTryTimeout" else "timeout"
    return WastedWork(
        caller,
        callee.service.name,
        limit,
        inner,
        None if inner is None else round(inner - limit, 9),
        retried,
        reasons=(*outer.reason(field_key), *callee.reason("timeout", "retry.per_try_timeout", "retry.attempts")),
    )


def predict_chain(
    topology: Topology,
    policies: PolicySet,
    istio: IstioVersion | str | None,
    entry: str,
    faults: Mapping[str, Sequence[DestinationFault]] | None = None,
    load: Load | None = None,
) -> ChainPrediction:
    """Predict success, calls per service, latency ceiling and duplicate calls of a user request at ``entry``.

    Args:
        topology: Services and their call graph.
        policies: The VirtualServices and DestinationRules in force.
        istio: The Istio release to model (``"1.30"``), ``None`` for the default.
        entry: The service the test's client calls through its sidecar.
        faults: Destination faults per service (short name), such as
            ``{"payment-service": [DestinationFault("latency", 0.2, delay=3.0)]}``.
        load: The load at the entry; each hop is predicted at the same concurrency.

    Raises:
        MeshcheckError: An unknown service in ``entry`` or ``faults``, or a hop the single-hop model cannot
            predict (a route splitting traffic over subsets).
    """
    entry, by_service = _check_inputs(topology, entry, faults or {})
    ver = istio if isinstance(istio, IstioVersion) else parse_istio_version(istio)
    comp = _Composer(topology, policies, ver, by_service, load or Load())
    walk = _walk(topology, entry)

    # Ceilings bottom-up: one attempt at a caller lasts at most the sum of its calls' ceilings.
    ceilings: dict[str, tuple[float | None, str]] = {}

    def ceiling(service: str) -> tuple[float | None, str]:
        if service not in ceilings:
            calls = topology.service(service).calls
            work: float | None = None
            if calls:
                inner = [ceiling(c.service)[0] for c in calls]
                work = None if any(x is None for x in inner) else sum(x for x in inner if x is not None)
            ceilings[service] = hop_ceiling(comp.policy(service), work)
        return ceilings[service]

    # Counts top-down: how many attempts of each hop happen per user request (keyed by position in the walk,
    # since one caller may call the same service twice).
    runs: list[Pmf] = []
    worst: list[int] = []
    hops: list[Hop] = []
    duplicates: list[Duplicates] = []
    wasted: list[WastedWork] = []
    call_reasons: dict[str, list[Reason]] = defaultdict(list)
    parent: dict[str, int] = {}
    path_reasons: list[list[Reason]] = []  # per hop: the reasons of every hop from the entry down to it
    for position, (caller, service, call, index) in enumerate(walk):
        policy = comp.policy(service)
        pmf = comp.attempts(service)
        reasons = list(policy.reason("route", "retry.attempts", "retry.retry_on", "retry.per_try_timeout", "timeout"))
        reaching: Pmf = (0.0, 1.0)
        worst_reaching = 1
        above: list[Reason] = []
        if caller is not None and call is not None:
            reasons.insert(0, _call_reason(topology, caller, index, call))
            up = parent[caller]
            keep = 1 - comp.own_failure(caller)
            for earlier in topology.service(caller).calls[:index]:
                if earlier.on_error != "ignore":
                    keep *= comp.success(earlier.service).p_success
            reaching = _thin(runs[up], keep)
            worst_reaching = worst[up]
            above = path_reasons[up]
        runs.append(_compound(reaching, pmf))
        worst.append(worst_reaching * worst_tries(policy))
        parent[service] = position
        path_reasons.append([*above, *reasons])
        call_reasons[service] += [r for r in path_reasons[-1] if r not in call_reasons[service]]
        top, binding = ceiling(service)
        success = comp.success(service)
        hops.append(
            Hop(
                caller,
                service,
                call,
                policy,
                success,
                comp.presentation(service),
                policy.retry.num_retries + 1,
                worst_tries(policy),
                pmf,
                top,
                binding,
                reasons=tuple(reasons),
                warnings=success.warnings,
            )
        )
        if caller is not None and call is not None:
            duplicates.append(_duplicates(comp, caller, call, reasons, runs[position], reaching, pmf))
            cut = _wasted(comp, caller, policy, top)
            if cut is not None:
                wasted.append(cut)

    calls: dict[str, CallCount] = {}
    totals: dict[str, Pmf] = {}
    worst_total: dict[str, int] = defaultdict(int)
    for (_, service, _, _), pmf, w in zip(walk, runs, worst, strict=True):
        totals[service] = _add(totals.get(service, ()), pmf)
        worst_total[service] += w
    for service, pmf in totals.items():
        calls[service] = CallCount(service, _mean(pmf), worst_total[service], pmf, reasons=tuple(call_reasons[service]))
    top, binding = ceiling(entry)
    entry_success = comp.success(entry)
    all_reasons = tuple(r for h in hops for r in h.reasons)
    return ChainPrediction(
        entry,
        tuple(hops),
        entry_success.p_success,
        calls,
        top,
        binding,
        tuple(wasted),
        tuple(duplicates),
        reasons=all_reasons,
        warnings=(*tuple(w for h in hops for w in h.warnings), *comp.warnings),
    )
