from __future__ import annotations

import pytest

from pytest_meshcheck.errors import PolicyError
from pytest_meshcheck.policy.model import FaultAbort, FaultDelay, HTTPFaultInjection, SourceRef
from pytest_meshcheck.translate import fault_filter, http_filters, router_filter, translate_fault
from pytest_meshcheck.translate.common import duration

FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


@pytest.mark.parametrize(
    ("delay", "want"),
    [
        (FaultDelay(7, percentage=100), {"numerator": 1000000, "denominator": "MILLION"}),
        (FaultDelay(7, percentage=12.5), {"numerator": 125000, "denominator": "MILLION"}),
        # Go's uint32(0.57 * 10000) truncates 5699.999... to 5699; so must we.
        (FaultDelay(7, percentage=0.57), {"numerator": 5699, "denominator": "MILLION"}),
        (FaultDelay(7, percent=30), {"numerator": 30, "denominator": "HUNDRED"}),
        (FaultDelay(7, percentage=50, percent=30), {"numerator": 500000, "denominator": "MILLION"}),
        # Neither given: istiod falls back to the integer field, which is 0: nothing is delayed.
        (FaultDelay(7), {"numerator": 0, "denominator": "HUNDRED"}),
    ],
)
def test_delay_percentage(delay: FaultDelay, want: dict[str, object]) -> None:
    out = translate_fault(HTTPFaultInjection(delay=delay))
    assert out == {"@type": FAULT_TYPE, "delay": {"fixed_delay": "7s", "percentage": want}}


@pytest.mark.parametrize(
    ("abort", "want"),
    [
        (
            FaultAbort(http_status=503, percentage=0.1),
            {"http_status": 503, "percentage": {"numerator": 1000, "denominator": "MILLION"}},
        ),
        (FaultAbort(http_status=418), {"http_status": 418}),  # no percentage: Envoy aborts 0 %
        (
            FaultAbort(grpc_status="UNAVAILABLE", percentage=100),
            {
                "grpc_status": 14,
                "percentage": {"numerator": 1000000, "denominator": "MILLION"},
            },
        ),
        (FaultAbort(grpc_status="OK"), {"grpc_status": 0}),
    ],
)
def test_abort(abort: FaultAbort, want: dict[str, object]) -> None:
    assert translate_fault(HTTPFaultInjection(abort=abort)) == {"@type": FAULT_TYPE, "abort": want}


def test_abort_without_error_type_is_dropped_and_empty_fault_is_none() -> None:
    assert translate_fault(HTTPFaultInjection(abort=FaultAbort(percentage=50))) is None
    assert translate_fault(HTTPFaultInjection()) is None


def test_unknown_grpc_status_names_file_field_and_fix() -> None:
    src = SourceRef("vs.yaml", 2, field_lines={"spec.http[1].fault.abort.grpcStatus": 17})
    with pytest.raises(PolicyError) as err:
        translate_fault(
            HTTPFaultInjection(abort=FaultAbort(grpc_status="UNAVAILABEL")), source=src, path="spec.http[1].fault"
        )
    text = str(err.value)
    assert "vs.yaml:17 (document 2): spec.http[1].fault.abort.grpcStatus" in text
    assert "'UNAVAILABEL'" in text
    assert "UNAVAILABLE" in text


def test_filter_chain_is_fault_then_router() -> None:
    assert http_filters() == [fault_filter(), router_filter()]
    assert fault_filter() == {"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT_TYPE}}
    assert router_filter() == {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(10, "10s"), (0, "0s"), (0.25, "0.25s"), (1.5, "1.5s"), (0.001, "0.001s"), (0.1 + 0.2, "0.3s"), (1800, "1800s")],
)
def test_duration_format(seconds: float, text: str) -> None:
    assert duration(seconds) == text
