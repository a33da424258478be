"""Validate ``http[].fault`` of a VirtualService as Istio's admission does, and build the model.

Rules follow istiod's ``validateHTTPFaultInjection``, ``validateHTTPFaultInjectionDelay`` and
``validateHTTPFaultInjectionAbort``, plus the CRD's oneOf constraints. Warnings say when a fault would do
nothing, because Istio injects a fault into 0 % of requests when no percentage is given.
"""

from __future__ import annotations

from pytest_meshcheck.policy.model import FaultAbort, FaultDelay, HTTPFaultInjection
from pytest_meshcheck.policy.reader import Fields
from pytest_meshcheck.policy.validation import GRPC_STATUS_NAMES, percentage_error


def _percentage(f: Fields) -> float | None:
    pct_f = f.obj("percentage", "Percent")
    if pct_f is None:
        return None
    value = pct_f.number("value")
    pct_f.finish()
    if value is not None and (err := percentage_error(value)) is not None:
        f.ctx.error(pct_f.at("value"), err, "use a percentage from 0 to 100, e.g. percentage: {value: 100}")
    return value if value is not None else 0.0


def build_fault(f: Fields) -> HTTPFaultInjection:
    """Read and validate ``http[].fault`` (istiod: ``validateHTTPFaultInjection``)."""
    delay_f, abort_f = f.obj("delay", "Delay"), f.obj("abort", "Abort")
    f.finish()
    if delay_f is None and abort_f is None:
        f.ctx.error(
            f.path, "HTTP fault injection must have an abort and/or a delay", "add delay or abort, or remove fault"
        )
    return HTTPFaultInjection(_delay(delay_f) if delay_f else None, _abort(abort_f) if abort_f else None)


def _warn_no_percentage(f: Fields, what: str) -> None:
    f.ctx.warn(
        f.path,
        f"no percentage (or 0): Istio injects this {what} into 0% of requests, so nothing "
        "happens; set percentage: {value: 100} to affect every request",
    )


def _delay(f: Fields) -> FaultDelay:
    # validateHTTPFaultInjectionDelay; the CRD allows at most one of fixedDelay and exponentialDelay.
    fixed = f.duration("fixedDelay")
    percentage = _percentage(f)
    percent = f.integer("percent")
    if f.present("exponentialDelay"):
        f.duration("exponentialDelay")
        f.ctx.error(
            f.at("exponentialDelay"),
            "exponentialDelay is rejected by Istio ('exponentialDelay not supported yet')",
            "use fixedDelay",
        )
    f.finish()
    if not f.present("fixedDelay") and not f.present("exponentialDelay"):
        f.ctx.error(f.at("fixedDelay"), "delay needs fixedDelay", "add fixedDelay, e.g. fixedDelay: 2s")
    if percent is not None:
        if not 0 <= percent <= 100:
            f.ctx.error(f.at("percent"), f"percent {percent} is not in range 0..100", "use percentage: {value: 0..100}")
        elif percentage is None:
            f.ctx.warn(
                f.at("percent"),
                f"percent is the deprecated integer form; Istio still delays {percent}% of "
                "requests, but use percentage: {value: N} instead",
            )
        else:
            f.ctx.warn(f.at("percent"), "percent is deprecated and ignored because percentage is set")
    elif not percentage:
        _warn_no_percentage(f, "delay")
    return FaultDelay(fixed_delay=fixed or 0.0, percentage=percentage, percent=percent)


def _abort(f: Fields) -> FaultAbort:
    # validateHTTPFaultInjectionAbort; the CRD allows at most one of httpStatus, grpcStatus, http2Error.
    status = f.integer("httpStatus")
    grpc = f.string("grpcStatus")
    percentage = _percentage(f)
    if f.present("http2Error"):
        f.string("http2Error")
        f.ctx.error(
            f.at("http2Error"),
            "Istio rejects http2Error ('HTTP/2 abort fault injection not supported yet')",
            "use httpStatus or grpcStatus",
        )
    f.finish()
    kinds = [k for k in ("httpStatus", "grpcStatus", "http2Error") if f.present(k)]
    if len(kinds) > 1:
        f.ctx.error(f.path, f"sets {' and '.join(kinds)}; an abort takes exactly one", "keep httpStatus or grpcStatus")
    elif not kinds:
        # validateHTTPFaultInjectionAbort only warns ("abort configured, but error type not set").
        f.ctx.warn(
            f.path,
            "abort sets neither httpStatus nor grpcStatus, so Istio configures no abort and nothing is aborted; "
            "add httpStatus, e.g. httpStatus: 503",
        )
    # validateHTTPStatus admits 200..600, but Envoy's HTTPFault rejects 600 (http_status < 600), which would
    # make the proxy refuse the whole route table; so 600 is rejected here too.
    if status is not None and not 200 <= status <= 599:
        f.ctx.error(f.at("httpStatus"), f"HTTP status {status} is not in range 200-599", "use a status from 200 to 599")
    if grpc is not None and grpc not in GRPC_STATUS_NAMES:
        f.ctx.error(
            f.at("grpcStatus"),
            f"gRPC status {grpc!r} is not supported",
            f"use one of {', '.join(sorted(GRPC_STATUS_NAMES))}",
        )
    if not percentage:
        _warn_no_percentage(f, "abort")
    return FaultAbort(http_status=status, grpc_status=grpc, percentage=percentage)
