"""Rules on the call graph (topology ``calls``): chained timeouts and retry amplification (issue #11).

Both rules use the chain model (:mod:`pytest_meshcheck.expect.chain`) on the effective policy of every hop,
so they agree with what the scenarios predict and measure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.expect.chain import attempt_limit, hop_ceiling, worst_tries
from pytest_meshcheck.expect.effective import EffectivePolicy, effective_policy
from pytest_meshcheck.expect.model import Reason
from pytest_meshcheck.lint.context import LintContext
from pytest_meshcheck.lint.finding import Finding
from pytest_meshcheck.lint.rules import RULES
from pytest_meshcheck.topology import Call

#: Worst-case calls at a leaf per user request from which retry amplification is reported (3 tries x 3 tries).
AMPLIFICATION_THRESHOLD = 9


def check_chains(ctx: LintContext) -> None:
    """Report chained timeouts that cannot hold and retry amplification along the topology's call graph."""
    if not ctx.topology.callers:
        return
    policies: dict[str, EffectivePolicy] = {}
    for svc in ctx.topology.services:
        try:
            policies[svc.name] = effective_policy(ctx.policies, ctx.topology, svc.name, istio=ctx.istio)
        except MeshcheckError:
            continue  # a split route or a host outside the topology: other rules report it; skip this service
    _chained_timeouts(ctx, policies)
    _amplification(ctx, policies)


def _report(ctx: LintContext, code: str, reason: Reason | None, message: str) -> None:
    """A finding at a reason's ``file:line`` (the policy field the chain model used)."""
    if reason is None or reason.location is None:
        return  # the value is a default: there is no line to point at, and nothing to edit
    file, _, line = reason.location.rpartition(":")
    ctx.findings.append(
        Finding(RULES[code], message, file, int(line) if line.isdigit() else None, reason.field or "", reason.source)
    )


def _ceilings(ctx: LintContext, policies: dict[str, EffectivePolicy]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}

    def ceiling(name: str) -> float | None:
        if name not in out:
            calls = ctx.topology.service(name).calls
            inner = [ceiling(c.service) for c in calls]
            work = None if not calls or any(x is None for x in inner) else sum(x for x in inner if x is not None)
            out[name] = hop_ceiling(policies[name], work)[0] if name in policies else None
        return out[name]

    for svc in ctx.topology.services:
        ceiling(svc.name)
    return out


def _located(reason: Reason | None) -> bool:
    return reason is not None and reason.location is not None


def _chained_timeouts(ctx: LintContext, policies: dict[str, EffectivePolicy]) -> None:
    ceilings = _ceilings(ctx, policies)
    for caller in ctx.topology.callers:
        outer = policies.get(caller.name)
        if outer is None:
            continue
        limit, what = attempt_limit(outer)
        if limit is None:
            continue
        reason = outer.reasons.get("retry.per_try_timeout" if what == "perTryTimeout" else "timeout")
        started = 0.0  # calls run in order: a later call can start only after the earlier ones
        for call in caller.calls:
            budget = ceilings.get(call.service)
            if budget is None:
                break  # an unbounded dependency is not a conflicting budget; later calls' start is unknown
            end = started + budget
            if end > limit + 1e-9:
                _report(
                    ctx, "MC190", reason, _timeout_message(caller.name, call, what, limit, started, budget, policies)
                )
            started = end


def _timeout_message(
    caller: str,
    call: Call,
    what: str,
    limit: float,
    started: float,
    budget: float,
    policies: dict[str, EffectivePolicy],
) -> str:
    inner = policies[call.service]
    cited = inner.reasons.get("timeout") if inner.timeout is not None else inner.reasons.get("retry.per_try_timeout")
    where = f" ({cited.location})" if cited and cited.location else ""
    after = f" after the earlier calls' {started:g}s" if started else ""
    return (
        f"{caller}'s {what} {limit:g}s gives up before {call.service} ({call.method} {call.path}) may finish: its own "
        f"budget is {budget:g}s{where}{after}; the inner work goes on after {caller}'s attempt is cut"
    )


@dataclass
class _Reach:
    """Worst-case calls reaching one leaf's application from one entry, and the hops that multiply them.

    Attributes:
        calls: Sum over the call paths from the entry to the leaf of the product of each hop's worst-case
            tries: the chain model's :attr:`~pytest_meshcheck.expect.chain.CallCount.worst`.
        paths: Per path, the ``(service, worst-case tries)`` of each hop, entry first.
        depth: Per hop on any path, its greatest distance from the entry (the leaf is the deepest).
    """

    calls: int = 0
    paths: list[list[tuple[str, int]]] = field(default_factory=list)
    depth: dict[str, int] = field(default_factory=dict)


def _amplification(ctx: LintContext, policies: dict[str, EffectivePolicy]) -> None:
    """One finding per leaf whose worst-case calls per user request reach the threshold (issue #11)."""
    called = {c.service for s in ctx.topology.services for c in s.calls}
    worst: dict[str, tuple[str, _Reach]] = {}  # leaf -> (entry, reach) with the most calls over the entries
    for root in ctx.topology.services:
        if root.name in called or not root.calls or root.name not in policies:
            continue
        reaches: dict[str, _Reach] = {}
        _walk_paths(ctx, policies, [root.name], reaches)
        for leaf, reach in reaches.items():
            if leaf not in worst or reach.calls > worst[leaf][1].calls:
                worst[leaf] = (root.name, reach)
    for leaf, (entry, reach) in worst.items():
        if reach.calls >= AMPLIFICATION_THRESHOLD:
            _report_amplification(ctx, policies, leaf, entry, reach)


def _walk_paths(
    ctx: LintContext, policies: dict[str, EffectivePolicy], path: list[str], reaches: dict[str, _Reach]
) -> None:
    """Add every call path from ``path[0]`` through ``path`` to a leaf into ``reaches`` (the graph is acyclic)."""
    svc = ctx.topology.service(path[-1])
    if svc.calls:
        for call in svc.calls:
            _walk_paths(ctx, policies, [*path, call.service], reaches)
        return
    # A hop whose effective policy cannot be computed (a split route: other rules report it) counts as one try.
    hops = [(name, worst_tries(policies[name]) if name in policies else 1) for name in path]
    reach = reaches.setdefault(path[-1], _Reach())
    reach.calls += math.prod(f for _, f in hops)
    reach.paths.append(hops)
    for depth, (name, _) in enumerate(hops):
        reach.depth[name] = max(depth, reach.depth.get(name, 0))


def _report_amplification(
    ctx: LintContext, policies: dict[str, EffectivePolicy], leaf: str, entry: str, reach: _Reach
) -> None:
    """Report at the ``retries.attempts`` line of the hop whose tries multiply the leaf's calls most.

    Ties go to the hop nearest the leaf: the rule's fix keeps retries at the edge and removes them inside.
    A hop on Istio's default retry policy has no line; then the largest contributor a file sets is reported.
    """
    tries = {name: f for hops in reach.paths for name, f in hops}
    ranked = sorted(
        (name for name, f in tries.items() if f > 1 and name in policies),
        key=lambda n: (tries[n], reach.depth[n]),
        reverse=True,
    )
    located = [n for n in ranked if _located(policies[n].reasons.get("retry.attempts"))]
    if not located:
        return  # every multiplying hop is a default: there is no line to point at, and nothing in a file to edit
    name = located[0]
    top = ranked[0]
    chain = " + ".join(" x ".join(f"{n} {f}" for n, f in hops) for hops in reach.paths)
    equal = [n for n in ranked if n != name and tries[n] == tries[name]]
    why = f"{name}'s {tries[name]} tries contribute most"
    if top != name:
        why += f" of those a file sets ({top}'s {tries[top]} come from Istio's default retry policy)"
    elif equal:
        why += f" (as much as {', '.join(equal)}; the hop nearest {leaf} is reported: retry at the edge only)"
    _report(
        ctx,
        "MC191",
        policies[name].reasons.get("retry.attempts"),
        f"up to {reach.calls} calls reach {leaf}'s application for one user request at {entry} ({chain} tries "
        f"that reach the application; the threshold is {AMPLIFICATION_THRESHOLD}): {why}",
    )
