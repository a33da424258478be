"""Rules across resources: duplicate VirtualServices or DestinationRules for a host, unknown hosts."""

from __future__ import annotations

from pytest_meshcheck.lint.context import LintContext, is_mesh_bound, nearest_line
from pytest_meshcheck.policy.model import Policy


def check_hosts(ctx: LintContext) -> None:
    """Report duplicates and hosts the topology does not know."""
    first_vs: dict[str, Policy] = {}
    for vs in ctx.policies.virtual_services:
        if not is_mesh_bound(vs):
            continue  # gateway-bound VirtualServices for one host are merged by Istio
        for i, host in enumerate(vs.hosts):
            _duplicate(ctx, "MC160", first_vs, ctx.host_key(host, vs.namespace), vs, f"spec.hosts[{i}]", host)
    first_dr: dict[str, Policy] = {}
    for dr in ctx.policies.destination_rules:
        _duplicate(ctx, "MC161", first_dr, ctx.host_key(dr.host, dr.namespace), dr, "spec.host", dr.host)
    _unknown_hosts(ctx)


def _duplicate(
    ctx: LintContext, code: str, first: dict[str, Policy], key: str, policy: Policy, path: str, host: str
) -> None:
    other = first.setdefault(key, policy)
    if other is policy:
        return
    src = other.source
    line = nearest_line(src.field_lines, "spec.host" if code == "MC161" else "spec.hosts", src.line)
    ctx.report(
        code,
        policy,
        path,
        f"{policy.kind} {policy.name} also targets {host}, like {other.name} ({src.file}:{line}); only one of "
        "them takes effect",
    )


def _unknown_hosts(ctx: LintContext) -> None:
    seen: set[tuple[str, str]] = set()

    def check(policy: Policy, path: str, host: str) -> None:
        if "*" in host or ctx.service(host, policy.namespace) is not None:
            return
        if (policy.source.file, host) in seen:
            return
        seen.add((policy.source.file, host))
        ctx.report(
            "MC180",
            policy,
            path,
            f"host {host!r} is not a service of topology {ctx.topology.source}; subset, ejection and panic checks "
            "were skipped for it",
        )

    for dr in ctx.policies.destination_rules:
        check(dr, "spec.host", dr.host)
    for vs in ctx.policies.virtual_services:
        for route in vs.http:
            for j, rd in enumerate(route.route):
                check(vs, f"spec.http[{route.index}].route[{j}].destination.host", rd.destination.host)
