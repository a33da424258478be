"""Fault injection (``route.go: TranslateFault``) and the HTTP filter entries Istio places around it.

Istio's HTTP connection manager runs ``envoy.filters.http.fault`` (an empty ``HTTPFault`` at listener
level, configured per route) before the router, so aborts are local replies: never retried, never seen
by the cluster, and delays happen before the route timeout starts.
"""

from __future__ import annotations

from pytest_meshcheck.errors import PolicyError, PolicyIssue
from pytest_meshcheck.policy.model import HTTPFaultInjection, SourceRef
from pytest_meshcheck.translate.common import (
    FAULT_FILTER_NAME,
    HTTP_FAULT,
    JSON,
    ROUTER,
    ROUTER_FILTER_NAME,
    duration,
    hundred_percent,
    million_percent,
    type_url,
)

# pkg/util/grpc/codes.go: SupportedGRPCStatus.
GRPC_STATUS = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}


def translate_fault(fault: HTTPFaultInjection, *, source: SourceRef | None = None, path: str = "") -> JSON | None:
    """Build the per-route ``HTTPFault``, or ``None`` when neither a delay nor an abort remains.

    An absent ``percentage`` means 0 %: a delay then gets ``0/HUNDRED`` (istiod falls back to the
    deprecated integer ``percent``), an abort gets no percentage, which Envoy also reads as 0 %.

    Args:
        fault: The VirtualService ``fault`` block.
        source: Where the VirtualService came from, for error messages.
        path: Dotted path of ``fault`` in the document, for error messages.

    Raises:
        PolicyError: ``abort.grpcStatus`` is not a gRPC status name.
    """
    out: JSON = {"@type": type_url(HTTP_FAULT)}
    if (delay := fault.delay) is not None:
        percentage = (
            million_percent(delay.percentage) if delay.percentage is not None else hundred_percent(delay.percent or 0)
        )
        out["delay"] = {"fixed_delay": duration(delay.fixed_delay), "percentage": percentage}
    if (abort := fault.abort) is not None:
        error: JSON | None = None
        if abort.http_status is not None:
            error = {"http_status": abort.http_status}
        elif abort.grpc_status is not None:
            if abort.grpc_status not in GRPC_STATUS:
                src = source or SourceRef("<string>", 0)
                raise PolicyError(
                    [
                        PolicyIssue(
                            src.file,
                            src.document,
                            f"{path}.abort.grpcStatus",
                            f"unknown gRPC status {abort.grpc_status!r}",
                            f"use one of {', '.join(GRPC_STATUS)}",
                            src.field_lines.get(f"{path}.abort.grpcStatus"),
                        )
                    ]
                )
            error = {"grpc_status": GRPC_STATUS[abort.grpc_status]}
        if error is not None:
            out["abort"] = error
            if abort.percentage is not None:
                out["abort"]["percentage"] = million_percent(abort.percentage)
    if "delay" not in out and "abort" not in out:
        return None
    return out


def fault_filter() -> JSON:
    """The HCM ``http_filters`` entry for the fault filter: empty, so routes decide."""
    return {"name": FAULT_FILTER_NAME, "typed_config": {"@type": type_url(HTTP_FAULT)}}


def router_filter() -> JSON:
    """The HCM ``http_filters`` entry for the router, which must come last."""
    return {"name": ROUTER_FILTER_NAME, "typed_config": {"@type": type_url(ROUTER)}}


def http_filters() -> list[JSON]:
    """The resilience-relevant part of Istio's HTTP filter chain, in Istio's order: fault, router."""
    return [fault_filter(), router_filter()]
