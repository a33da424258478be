"""Rules on VirtualService HTTP routes: faults, timeouts, retry conditions, idempotency, subsets."""

from __future__ import annotations

import math

from pytest_meshcheck.expect.istiod import parse_retry_on
from pytest_meshcheck.expect.model import DEFAULT_BACKOFF_BASE, DEFAULT_RETRY_ON
from pytest_meshcheck.lint.context import LintContext
from pytest_meshcheck.lint.finding import Severity
from pytest_meshcheck.policy.model import HTTPRoute, VirtualService

# retry_on tokens that make Envoy retry a per-try timeout (retry_state_impl.cc: wouldRetryFromReset).
_TIMEOUT_RETRY_TOKENS = frozenset({"5xx", "gateway-error", "reset"})
# Tokens that retry after the upstream may have processed the request. connect-failure, refused-stream,
# reset-before-request and envoy-ratelimited fire only before the request reached the application; the gRPC
# conditions need a grpc-status response header, which plain HTTP services never send.
_UNSAFE_TOKENS = frozenset({"5xx", "gateway-error", "reset", "retriable-4xx", "retriable-headers"})
_STATUS_TOKENS = frozenset({"5xx", "gateway-error", "retriable-4xx", "retriable-status-codes"})
_NON_IDEMPOTENT_METHODS = ("POST", "PATCH")


def check_routes(ctx: LintContext) -> None:
    """Run every route rule on every VirtualService."""
    for vs in ctx.policies.virtual_services:
        for route in vs.http:
            base = f"spec.http[{route.index}]"
            _fault(ctx, vs, route, base)
            _timing(ctx, vs, route, base)
            _retry_conditions(ctx, vs, route, base)
            _idempotency(ctx, vs, route, base)
            _subsets(ctx, vs, route, base)


def retries_status(tokens: tuple[str, ...], codes: tuple[int, ...], status: int) -> bool:
    """Whether Envoy's retry_on (``tokens`` + retriable ``codes``) retries a response with ``status``."""
    if "5xx" in tokens and status >= 500:
        return True
    if "gateway-error" in tokens and status in (502, 503, 504):
        return True
    if "retriable-4xx" in tokens and status == 409:
        return True
    return "retriable-status-codes" in tokens and status in codes


def _effective_retry_on(route: HTTPRoute, ctx: LintContext) -> tuple[tuple[str, ...], tuple[int, ...], bool]:
    """(tokens, codes, explicit) of the route's retry_on, with Istio's version-dependent default."""
    retries = route.retries
    if retries is not None and retries.retry_on and retries.retry_on.strip():
        tokens, codes = parse_retry_on(retries.retry_on)
        return tokens, codes, True
    return DEFAULT_RETRY_ON, ((503,) if ctx.istio.default_retries_503 else ()), False


def _fault(ctx: LintContext, vs: VirtualService, route: HTTPRoute, base: str) -> None:
    fault = route.fault
    if fault is None:
        return
    if fault.delay is not None and fault.delay.percentage is None and fault.delay.percent is None:
        ctx.report("MC140", vs, f"{base}.fault.delay", "fault.delay has no percentage: istiod delays 0 % of requests")
    if fault.abort is not None and fault.abort.percentage is None:
        ctx.report("MC140", vs, f"{base}.fault.abort", "fault.abort has no percentage: istiod aborts 0 % of requests")
    retried = route.retries is not None and route.retries.attempts > 0
    if retried or route.timeout is not None:
        parts = [p for p, on in (("retries", retried), ("timeout", route.timeout is not None)) if on]
        ctx.report(
            "MC101",
            vs,
            f"{base}.fault",
            f"route injects a client-side fault and sets {' and '.join(parts)}: aborts are never retried and "
            "injected delays do not count against the route timeout",
        )


def _max_backoff_total(route: HTTPRoute, ctx: LintContext, attempts: int) -> float:
    """Longest total back-off before ``attempts`` retries: retry i waits < base x 2^(i-1), capped at 10 x base.

    Envoy's ``JitteredExponentialBackOffStrategy`` returns ``random() % next_interval`` with ``next_interval``
    starting at base and doubling (to at most ``max_interval``, 10 x base by default) after each retry: 25, 50,
    100, 200, 250 ms. The ``(2^i - 1) x base`` of Envoy's router docs is the pre-2020 rule (25, 75, 175 ms);
    ``expect.timeouts.backoff_ranges`` uses the same rule as here, measured in ``scenarios/test_readme_claims.py``.
    """
    base = DEFAULT_BACKOFF_BASE
    if route.retries is not None and route.retries.backoff is not None and ctx.istio.honours_retry_backoff:
        base = route.retries.backoff
    return float(sum(min(base * 2 ** (i - 1), 10 * base) for i in range(1, attempts + 1)))


def _timing(ctx: LintContext, vs: VirtualService, route: HTTPRoute, base: str) -> None:
    retries = route.retries
    if retries is None or retries.attempts <= 0 or retries.per_try_timeout is None:
        return
    per_try, attempts, timeout = retries.per_try_timeout, retries.attempts, route.timeout
    tokens, _, _ = _effective_retry_on(route, ctx)
    if timeout is not None and per_try >= timeout:
        ctx.report(
            "MC102",
            vs,
            f"{base}.retries.perTryTimeout",
            f"perTryTimeout {per_try:g}s >= timeout {timeout:g}s: Envoy ignores the per-try timeout, so one slow "
            f"try uses the whole timeout and none of the {attempts} retries runs",
        )
        return
    if not _TIMEOUT_RETRY_TOKENS.intersection(tokens):
        ctx.report(
            "MC104",
            vs,
            f"{base}.retries.perTryTimeout",
            f"perTryTimeout {per_try:g}s is not retried: retryOn ({','.join(tokens)}) has none of 5xx, "
            "gateway-error, reset, so the first slow try ends the request with 504",
        )
        return
    if timeout is None:
        return
    tries = attempts + 1
    budget = per_try * tries
    if timeout < budget - 1e-9:
        fit = math.ceil(timeout / per_try - 1e-9)
        ctx.report(
            "MC102",
            vs,
            f"{base}.timeout",
            f"timeout {timeout:g}s < perTryTimeout {per_try:g}s x {tries} tries = {budget:g}s: only {fit} of "
            f"{tries} tries can start before the route timeout ends the request",
        )
        return
    latest = budget + _max_backoff_total(route, ctx, attempts)
    if timeout > latest + 1e-9:
        ctx.report(
            "MC103",
            vs,
            f"{base}.timeout",
            f"timeout {timeout:g}s can never fire: {tries} tries x perTryTimeout {per_try:g}s end by "
            f"{latest:.3g}s (with back-off), so slow requests fail earlier than the timeout says",
        )


def _retry_conditions(ctx: LintContext, vs: VirtualService, route: HTTPRoute, base: str) -> None:
    retries = route.retries
    if retries is not None and retries.attempts <= 0:
        return
    tokens, codes, explicit = _effective_retry_on(route, ctx)
    failing = [s for s in ctx.returns if s >= 500]
    if explicit:
        if not _STATUS_TOKENS.intersection(tokens):
            return  # retries only connection failures, by choice: nothing to say about statuses
        missed = [s for s in failing if not retries_status(tokens, codes, s)]
        if missed:
            ctx.report(
                "MC110",
                vs,
                f"{base}.retries.retryOn",
                f"retryOn {retries.retry_on if retries else ''!r} does not retry {', '.join(map(str, missed))}, which "
                "the destination returns",
            )
        return
    if 503 not in failing or ctx.istio.default_retries_503:
        return
    if retries is not None:
        ctx.report(
            "MC111",
            vs,
            f"{base}.retries",
            f"retries.attempts {retries.attempts} without retryOn: on Istio {ctx.istio} the default conditions "
            "retry no status code, so 503 responses are not retried",
        )
    else:
        ctx.report(
            "MC111",
            vs,
            base,
            f"no retries block: Istio {ctx.istio}'s default retries only connection failures, not 503",
            Severity.NOTE,
        )


def _non_idempotent_reason(ctx: LintContext, vs: VirtualService, route: HTTPRoute) -> str | None:
    for m in route.match:
        if m.method is not None and any(meth in m.method.value.upper() for meth in _NON_IDEMPOTENT_METHODS):
            return f"matches method {m.method.value}"
    names = list(vs.hosts) + [d.destination.host for d in route.route]
    names += [m.uri.value for m in route.match if m.uri is not None]
    for name in names:
        if ctx.non_idempotent.search(name):
            return f"serves {name!r}"
    return None


def _idempotency(ctx: LintContext, vs: VirtualService, route: HTTPRoute, base: str) -> None:
    retries = route.retries
    if retries is not None and retries.attempts <= 0:
        return
    reason = _non_idempotent_reason(ctx, vs, route)
    if reason is None:
        return
    tokens, codes, explicit = _effective_retry_on(route, ctx)
    unsafe = sorted(_UNSAFE_TOKENS.intersection(tokens))
    if "retriable-status-codes" in tokens and codes:
        unsafe.append("status " + "/".join(map(str, codes)))
    if not unsafe:
        return
    if retries is None:
        ctx.report(
            "MC151",
            vs,
            base,
            f"route {reason} and has no retries block: Istio {ctx.istio}'s default retries {', '.join(unsafe)} twice",
        )
        return
    what = "retryOn" if explicit else "the default retryOn"
    ctx.report(
        "MC150",
        vs,
        f"{base}.retries.retryOn" if explicit else f"{base}.retries",
        f"route {reason} but {what} retries {', '.join(unsafe)} up to {retries.attempts} times after the request "
        "was sent",
    )


def _subsets(ctx: LintContext, vs: VirtualService, route: HTTPRoute, base: str) -> None:
    for j, rd in enumerate(route.route):
        dest = rd.destination
        if dest.subset is None or rd.weight == 0:
            continue
        rules = ctx.rules_for(dest.host, vs.namespace)
        if any(s.name == dest.subset for dr in rules for s in dr.subsets):
            continue
        where = "no DestinationRule in the linted files" if not rules else "its DestinationRule"
        ctx.report(
            "MC171",
            vs,
            f"{base}.route[{j}].destination.subset",
            f"route sends traffic to subset {dest.subset!r} of {dest.host}, which {where} defines: 503 NC",
            None if rules else Severity.WARNING,
        )
